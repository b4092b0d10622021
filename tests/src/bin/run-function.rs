//! run-function: one invocation of a catalyst-dr function in this process, configured from the
//! environment exactly as its Lambda binary is, through the same edge. The fault-matrix tests kill
//! this process in the middle of an invocation.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "Run one function invocation in process and print its result")]
struct Args {
    /// dead-letter-replay or snapshot-trigger.
    function: String,
    /// The event, as JSON.
    event: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let event: serde_json::Value = serde_json::from_str(&args.event)?;
    let outcome = match args.function.as_str() {
        "dead-letter-replay" => {
            catalyst_dr_edge::invoke_value(
                &catalyst_dr::replay::DeadLetterReplay::from_env().await?,
                &event,
            )
            .await
        }
        "snapshot-trigger" => {
            catalyst_dr_edge::invoke_value(
                &catalyst_dr::snapshot_trigger::SnapshotTrigger::from_env().await?,
                &event,
            )
            .await
        }
        other => return Err(format!("unknown function {other:?}").into()),
    };
    match outcome {
        Ok(result) => println!("{result}"),
        Err(diagnostic) => {
            println!(
                "{}",
                serde_json::json!({"errorType": diagnostic.error_type, "errorMessage": diagnostic.error_message})
            );
            std::process::exit(1);
        }
    }
    Ok(())
}
