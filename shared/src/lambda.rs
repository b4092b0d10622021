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
