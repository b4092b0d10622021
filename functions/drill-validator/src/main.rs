//! drill-validator Lambda: wiring only; the behaviour lives in `catalyst_dr::drill`.

use catalyst_dr::drill::DrillValidator;

#[tokio::main]
async fn main() -> Result<(), catalyst_dr_edge::Error> {
    catalyst_dr::telemetry::init();
    catalyst_dr_edge::serve("drill-validator", DrillValidator::from_env().await).await
}
