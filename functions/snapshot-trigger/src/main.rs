//! snapshot-trigger Lambda: wiring only; the behaviour lives in `catalyst_dr::snapshot_trigger`.

use catalyst_dr::snapshot_trigger::SnapshotTrigger;

#[tokio::main]
async fn main() -> Result<(), catalyst_dr_edge::Error> {
    catalyst_dr::telemetry::init();
    catalyst_dr_edge::serve("snapshot-trigger", SnapshotTrigger::from_env().await).await
}
