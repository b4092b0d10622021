//! snapshot-trigger Lambda: wiring only; the behaviour lives in `catalyst_dr::snapshot`.

use catalyst_dr::snapshot::SnapshotTrigger;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    catalyst_dr::telemetry::init();
    catalyst_dr::lambda::serve("snapshot-trigger", SnapshotTrigger::from_env().await).await
}
