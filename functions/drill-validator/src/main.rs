//! drill-validator Lambda: wiring only; the behaviour lives in `catalyst_dr::drill`.

use catalyst_dr::drill::DrillValidator;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    catalyst_dr::telemetry::init();
    catalyst_dr::lambda::serve("drill-validator", DrillValidator::from_env().await).await
}
