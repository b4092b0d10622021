//! dead-letter-replay Lambda: wiring only; the behaviour lives in `catalyst_dr::replay`.

use catalyst_dr::replay::DeadLetterReplay;

#[tokio::main]
async fn main() -> Result<(), catalyst_dr_edge::Error> {
    catalyst_dr::telemetry::init();
    catalyst_dr_edge::serve("dead-letter-replay", DeadLetterReplay::from_env().await).await
}
