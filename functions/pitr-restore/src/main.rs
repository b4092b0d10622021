//! pitr-restore Lambda: wiring only; the behaviour lives in `catalyst_dr::pitr`.

use catalyst_dr::pitr::PitrRestore;

#[tokio::main]
async fn main() -> Result<(), catalyst_dr_edge::Error> {
    catalyst_dr::telemetry::init();
    catalyst_dr_edge::serve("pitr-restore", PitrRestore::from_env().await).await
}
