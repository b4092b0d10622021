//! snapshot-trigger Lambda: wiring only; the behaviour lives in `catalyst_dr::snapshot`.

use catalyst_dr::snapshot::SnapshotTrigger;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    catalyst_dr::telemetry::init();
    let trigger = match SnapshotTrigger::from_env().await {
        Ok(trigger) => trigger,
        Err(err) => {
            tracing::error!(error = %err, "invalid configuration");
            eprintln!("snapshot-trigger: {err}");
            std::process::exit(2);
        }
    };
    let trigger = &trigger;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| catalyst_dr::lambda::invoke(event, |payload| trigger.handle(payload)))).await
}
