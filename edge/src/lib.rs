//! The edge between the Lambda runtime and the domain: errors become `{errorType, errorMessage}`
//! with a stable `errorType` that the state machines' `Retry`/`Catch` match on. The event arrives
//! as raw JSON text, so that even one `serde_json::Value` cannot hold is an `InvalidInput` naming
//! the field, and a panic in a handler becomes `errorType: Panic` rather than a Rust type name.

use catalyst_dr::error_chain::error_chain;
use catalyst_dr::error_kind::ErrorKind;
use futures_util::FutureExt;
use lambda_runtime::LambdaEvent;
use serde_json::Value;
use serde_json::value::RawValue;

// Re-exported so the binaries and tests need no direct dependency on the runtime.
pub use lambda_runtime::{Diagnostic, Error};

/// A domain error as the Lambda runtime reports it.
pub trait FunctionError: std::error::Error {
    fn error_type(&self) -> ErrorKind;
}

/// A Lambda function of this project: one handler over JSON events.
/// The runtime polls one invocation at a time on its own task, so handlers need not be `Send`.
#[async_trait::async_trait(?Send)]
pub trait Function {
    type Error: FunctionError;
    async fn handle(&self, event: Value) -> Result<Value, Self::Error>;
}

/// The whole of a binary's `main`: logging, the function built from its configuration (a bad
/// configuration stops the process with a message naming the variable), then the runtime loop.
pub async fn serve<F: Function>(
    name: &str,
    built: Result<F, catalyst_dr::config::ConfigError>,
) -> Result<(), Error> {
    catalyst_dr::memory::bound_large_allocations();
    let function = match built {
        Ok(function) => function,
        Err(err) => {
            tracing::error!(error = %err, "invalid configuration");
            eprintln!("{name}: {err}");
            std::process::exit(2);
        }
    };
    let function = &function;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<Box<RawValue>>| invoke(event, |payload| function.handle(payload)),
    ))
    .await
}

/// Runs `handle` for one invocation, logging the outcome under the request id.
pub async fn invoke<E, F, Fut>(
    event: LambdaEvent<Box<RawValue>>,
    handle: F,
) -> Result<Value, Diagnostic>
where
    E: FunctionError,
    F: FnOnce(Value) -> Fut,
    Fut: Future<Output = Result<Value, E>>,
{
    let (raw, context) = event.into_parts();
    catalyst_dr::postgres::new_invocation();
    let span = tracing::info_span!("invocation", request_id = %context.request_id, action = tracing::field::Empty);
    let _entered = span.enter();
    let payload = match catalyst_dr::input::parse_event(raw.get()) {
        Ok(payload) => payload,
        Err(err) => return Err(failed(ErrorKind::InvalidInput, err.to_string())),
    };
    if let Some(action) = payload.get("action").and_then(Value::as_str) {
        span.record("action", action);
    }
    // AssertUnwindSafe: after a panic nothing of this invocation is used again; the shared state
    // (clients, cached credentials) is only ever replaced whole.
    // Lambda's deadline is always ahead when an invocation starts. One that is not is no
    // deadline: a test's or a tool's in-process call gives 0, `cargo lambda watch` 600000 (1970).
    let deadline = Some(context.deadline()).filter(|d| *d > std::time::SystemTime::now());
    let handled = std::panic::AssertUnwindSafe(handle(payload)).catch_unwind();
    match catalyst_dr::invocation::with_deadline(deadline, handled).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(err)) => Err(failed(err.error_type(), error_chain(&err))),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned());
            Err(failed(
                ErrorKind::Panic,
                format!(
                    "the function panicked: {}",
                    what.as_deref().unwrap_or("no message")
                ),
            ))
        }
    }
}

/// One invocation of `function` with `payload`, through the same edge the runtime uses (fresh
/// credentials, typed errors, panics caught): for tests and tools that run a function in process.
pub async fn invoke_value<F: Function>(function: &F, payload: &Value) -> Result<Value, Diagnostic> {
    let raw = RawValue::from_string(payload.to_string()).expect("a serialised Value is valid JSON");
    invoke(
        LambdaEvent::new(raw, lambda_runtime::Context::default()),
        |p| function.handle(p),
    )
    .await
}

fn failed(kind: ErrorKind, message: String) -> Diagnostic {
    tracing::error!(error_type = kind.as_str(), error = %message, "invocation failed");
    Diagnostic {
        error_type: kind.as_str().to_owned(),
        error_message: message,
    }
}

// The handlers of the four functions: their impls live with the trait, so the library knows no Lambda.

#[cfg(feature = "snapshot-trigger")]
impl FunctionError for catalyst_dr::snapshot_trigger::SnapshotTriggerError {
    fn error_type(&self) -> ErrorKind {
        catalyst_dr::snapshot_trigger::SnapshotTriggerError::error_type(self)
    }
}

#[cfg(feature = "snapshot-trigger")]
#[async_trait::async_trait(?Send)]
impl Function for catalyst_dr::snapshot_trigger::SnapshotTrigger {
    type Error = catalyst_dr::snapshot_trigger::SnapshotTriggerError;
    async fn handle(&self, event: Value) -> Result<Value, Self::Error> {
        catalyst_dr::snapshot_trigger::SnapshotTrigger::handle(self, event).await
    }
}

#[cfg(feature = "pitr-restore")]
impl FunctionError for catalyst_dr::pitr::PitrError {
    fn error_type(&self) -> ErrorKind {
        catalyst_dr::pitr::PitrError::error_type(self)
    }
}

#[cfg(feature = "pitr-restore")]
#[async_trait::async_trait(?Send)]
impl Function for catalyst_dr::pitr::PitrRestore {
    type Error = catalyst_dr::pitr::PitrError;
    async fn handle(&self, event: Value) -> Result<Value, Self::Error> {
        catalyst_dr::pitr::PitrRestore::handle(self, event).await
    }
}

#[cfg(feature = "drill-validator")]
impl FunctionError for catalyst_dr::drill::DrillError {
    fn error_type(&self) -> ErrorKind {
        catalyst_dr::drill::DrillError::error_type(self)
    }
}

#[cfg(feature = "drill-validator")]
#[async_trait::async_trait(?Send)]
impl Function for catalyst_dr::drill::DrillValidator {
    type Error = catalyst_dr::drill::DrillError;
    async fn handle(&self, event: Value) -> Result<Value, Self::Error> {
        catalyst_dr::drill::DrillValidator::handle(self, event).await
    }
}

#[cfg(feature = "dead-letter-replay")]
impl FunctionError for catalyst_dr::replay::ReplayError {
    fn error_type(&self) -> ErrorKind {
        catalyst_dr::replay::ReplayError::error_type(self)
    }
}

#[cfg(feature = "dead-letter-replay")]
#[async_trait::async_trait(?Send)]
impl Function for catalyst_dr::replay::DeadLetterReplay {
    type Error = catalyst_dr::replay::ReplayError;
    async fn handle(&self, event: Value) -> Result<Value, Self::Error> {
        catalyst_dr::replay::DeadLetterReplay::handle(self, event).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    struct Never;

    impl FunctionError for Never {
        fn error_type(&self) -> ErrorKind {
            unreachable!("never constructed")
        }
    }

    fn event(text: &str) -> LambdaEvent<Box<RawValue>> {
        LambdaEvent::new(
            RawValue::from_string(text.to_owned()).unwrap(),
            lambda_runtime::Context::default(),
        )
    }

    #[tokio::test]
    async fn a_panic_in_the_handler_is_a_typed_error() {
        let outcome = invoke(event(r#"{"action": "snapshot"}"#), |_| async {
            let times: Vec<i64> = Vec::new();
            if times.is_empty() {
                panic!("resulting value is out of range");
            }
            Ok::<_, Never>(Value::Null)
        })
        .await;
        let err = outcome.unwrap_err();
        assert_eq!(err.error_type, ErrorKind::Panic.as_str());
        assert!(
            err.error_message
                .contains("resulting value is out of range"),
            "{}",
            err.error_message
        );
    }

    #[tokio::test]
    async fn an_event_json_cannot_hold_is_invalid_input_naming_the_field() {
        let mut called = false;
        let outcome = invoke(
            event(r#"{"action": "replay", "replay_id": "x", "max_deliveries": 1e309}"#),
            |_| {
                called = true;
                async { Ok::<_, Never>(Value::Null) }
            },
        )
        .await;
        let err = outcome.unwrap_err();
        assert_eq!(err.error_type, ErrorKind::InvalidInput.as_str());
        assert!(
            err.error_message.contains("`max_deliveries`"),
            "{}",
            err.error_message
        );
        assert!(!called, "the handler never sees it");
    }
}
