//! Classification of AWS SDK failures into what a caller (and Step Functions) can act on:
//! throttled, transient, not found, or rejected.

use crate::error_kind::ErrorKind;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::error::Error as StdError;

pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What kind of failure an AWS call ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsFailureKind {
    /// The service asked us to slow down; retry with backoff.
    Throttled,
    /// Network, timeout or a 5xx answer; safe to retry.
    Transient,
    /// The service answered with a client error: retrying will not help.
    Rejected,
}

/// A failed AWS call, with the operation and the service's error code kept for the message.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed ({}): {source}", code.as_deref().unwrap_or("no error code"))]
pub struct AwsCallError {
    pub operation: &'static str,
    pub code: Option<String>,
    pub kind: AwsFailureKind,
    #[source]
    pub source: BoxError,
}

impl AwsCallError {
    /// Stable error type for Step Functions `Retry`/`Catch`.
    pub fn error_type(&self) -> ErrorKind {
        match self.kind {
            AwsFailureKind::Throttled => ErrorKind::Throttled,
            AwsFailureKind::Transient => ErrorKind::AwsTransient,
            AwsFailureKind::Rejected => ErrorKind::AwsRejected,
        }
    }
}

const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "PriorRequestNotComplete",
];

/// Turns any SDK error into an [`AwsCallError`].
/// A create or copy that a retry may repeat: `Ok(true)` when this call made it, `Ok(false)` when
/// `exists` says the service already had it, any other failure classified.
pub fn created_unless_exists<T, E>(
    operation: &'static str,
    result: Result<T, SdkError<E, HttpResponse>>,
    exists: impl Fn(&E) -> bool,
) -> Result<bool, AwsCallError>
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(&exists) => Ok(false),
        Err(e) => Err(classify(operation, e)),
    }
}

pub fn classify<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> AwsCallError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let code = err.code().map(str::to_owned);
    let kind = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            AwsFailureKind::Transient
        }
        SdkError::ServiceError(_) => match code.as_deref() {
            Some(c) if THROTTLING_CODES.contains(&c) => AwsFailureKind::Throttled,
            Some(
                "InternalFailure"
                | "InternalError"
                | "ServiceUnavailable"
                | "ServiceUnavailableException",
            ) => AwsFailureKind::Transient,
            _ if err
                .raw_response()
                .is_some_and(|r| r.status().is_server_error()) =>
            {
                AwsFailureKind::Transient
            }
            _ => AwsFailureKind::Rejected,
        },
        _ => AwsFailureKind::Rejected,
    };
    let source: BoxError = match err {
        SdkError::ServiceError(service) => Box::new(service.into_err()),
        other => Box::new(other),
    };
    AwsCallError {
        operation,
        code,
        kind,
        source,
    }
}
