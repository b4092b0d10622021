//! dead-letter-replay Lambda: wiring only; the behaviour lives in `catalyst_dr::replay`.

use catalyst_dr::replay::DeadLetterReplay;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    catalyst_dr::telemetry::init();
    let replay = match DeadLetterReplay::from_env().await {
        Ok(replay) => replay,
        Err(err) => {
            tracing::error!(error = %err, "invalid configuration");
            eprintln!("dead-letter-replay: {err}");
            std::process::exit(2);
        }
    };
    let replay = &replay;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| catalyst_dr::lambda::invoke(event, |payload| replay.handle(payload)))).await
}
