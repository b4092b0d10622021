//! The edge between the Lambda runtime and the domain: errors become `{errorType, errorMessage}`
//! with a stable `errorType` that the state machines' `Retry`/`Catch` match on.

use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::Value;

/// A domain error as the Lambda runtime reports it.
pub trait FunctionError: std::error::Error {
    fn error_type(&self) -> &'static str;
}

impl FunctionError for crate::snapshot::SnapshotError {
    fn error_type(&self) -> &'static str {
        crate::snapshot::SnapshotError::error_type(self)
    }
}

#[async_trait::async_trait(?Send)]
impl Function for crate::snapshot::SnapshotTrigger {
    type Error = crate::snapshot::SnapshotError;
    async fn handle(&self, event: Value) -> Result<Value, Self::Error> {
        crate::snapshot::SnapshotTrigger::handle(self, event).await
    }
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
pub async fn serve<F: Function>(name: &str, built: Result<F, crate::config::ConfigError>) -> Result<(), lambda_runtime::Error> {
    crate::memory::bound_large_allocations();
    let function = match built {
        Ok(function) => function,
        Err(err) => {
            tracing::error!(error = %err, "invalid configuration");
            eprintln!("{name}: {err}");
            std::process::exit(2);
        }
    };
    let function = &function;
    lambda_runtime::run(lambda_runtime::service_fn(move |event: LambdaEvent<Value>| invoke(event, |payload| function.handle(payload)))).await
}

impl FunctionError for crate::replay::ReplayError {
    fn error_type(&self) -> &'static str {
        crate::replay::ReplayError::error_type(self)
    }
}

/// Runs `handle` for one invocation, logging the outcome under the request id.
pub async fn invoke<E, F, Fut>(event: LambdaEvent<Value>, handle: F) -> Result<Value, Diagnostic>
where
    E: FunctionError,
    F: FnOnce(Value) -> Fut,
    Fut: Future<Output = Result<Value, E>>,
{
    let (payload, context) = event.into_parts();
    let action = payload.get("action").and_then(Value::as_str).unwrap_or("").to_owned();
    let span = tracing::info_span!("invocation", request_id = %context.request_id, %action);
    let _entered = span.enter();
    match handle(payload).await {
        Ok(result) => Ok(result),
        Err(err) => {
            let error_type = err.error_type();
            let message = error_chain(&err);
            tracing::error!(error_type, error = %message, "invocation failed");
            Err(Diagnostic { error_type: error_type.to_owned(), error_message: message })
        }
    }
}

/// The error and its causes, one after the other.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

impl FunctionError for crate::pitr::PitrError {
    fn error_type(&self) -> &'static str {
        crate::pitr::PitrError::error_type(self)
    }
}

#[async_trait::async_trait(?Send)]
impl Function for crate::pitr::PitrRestore {
    type Error = crate::pitr::PitrError;
    async fn handle(&self, event: Value) -> Result<Value, Self::Error> {
        crate::pitr::PitrRestore::handle(self, event).await
    }
}

impl FunctionError for crate::drill::DrillError {
    fn error_type(&self) -> &'static str {
        crate::drill::DrillError::error_type(self)
    }
}

#[async_trait::async_trait(?Send)]
impl Function for crate::drill::DrillValidator {
    type Error = crate::drill::DrillError;
    async fn handle(&self, event: Value) -> Result<Value, Self::Error> {
        crate::drill::DrillValidator::handle(self, event).await
    }
}

#[async_trait::async_trait(?Send)]
impl Function for crate::replay::DeadLetterReplay {
    type Error = crate::replay::ReplayError;
    async fn handle(&self, event: Value) -> Result<Value, Self::Error> {
        crate::replay::DeadLetterReplay::handle(self, event).await
    }
}
