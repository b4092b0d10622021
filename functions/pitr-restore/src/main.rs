//! pitr-restore Lambda: wiring only; the behaviour lives in `catalyst_dr::pitr`.

use catalyst_dr::pitr::PitrRestore;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    catalyst_dr::telemetry::init();
    catalyst_dr::lambda::serve("pitr-restore", PitrRestore::from_env().await).await
}
