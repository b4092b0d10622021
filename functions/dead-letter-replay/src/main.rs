//! dead-letter-replay Lambda: wiring only; the behaviour lives in `catalyst_dr::replay`.

use catalyst_dr::replay::DeadLetterReplay;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    catalyst_dr::telemetry::init();
    catalyst_dr::lambda::serve("dead-letter-replay", DeadLetterReplay::from_env().await).await
}
