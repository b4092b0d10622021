//! The one error type of [`crate::catalyst_db`].

use crate::error_kind::ErrorKind;

/// A failed operation on the Catalyst Auth database.
#[derive(Debug, thiserror::Error)]
pub enum CatalystDbError {
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A generator spec (or other caller input) that cannot be honoured; nothing was written.
    #[error("invalid {field}: {reason}")]
    InvalidSpec { field: &'static str, reason: String },
    /// The generator only fills empty tables, so a second run cannot mix two data sets.
    #[error("table {table} already holds rows; the generator only fills an empty schema")]
    TargetNotEmpty { table: &'static str },
    /// A destructive action aimed at a database without the staging marker.
    #[error(
        "database {database} is not marked as a catalyst-dr staging database; refusing to modify it"
    )]
    NotStaging { database: String },
}

impl CatalystDbError {
    /// Stable names for Step Functions `Retry`/`Catch`.
    pub fn error_type(&self) -> ErrorKind {
        match self {
            Self::Postgres(_) => ErrorKind::Postgres,
            Self::InvalidSpec { .. } | Self::TargetNotEmpty { .. } => ErrorKind::InvalidInput,
            Self::NotStaging { .. } => ErrorKind::NotStaging,
        }
    }

    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidSpec {
            field,
            reason: reason.into(),
        }
    }
}
