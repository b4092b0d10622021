//! The capability pitr-restore needs from wherever the database lives: restore to a point in
//! time into a new instance, watch it come up, reset its master password, delete it. Implemented
//! for RDS (instances and Aurora clusters) and for a PostgreSQL cluster on this machine.

use crate::error_kind::ErrorKind;
use crate::tags::Tags;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Times the source can be restored to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreWindow {
    #[serde(with = "time::serde::rfc3339")]
    pub earliest: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub latest: OffsetDateTime,
}

/// A backup snapshot of the source a staging restore can start from: on RDS a DB (cluster)
/// snapshot, on the local engine a base backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupSnapshot {
    pub snapshot_id: String,
    pub source_id: String,
    /// `available` when it can be restored.
    pub status: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    pub engine: Option<String>,
    pub tags: Tags,
}

/// What `start` asks the engine for. The guards have run before an engine ever sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreRequest {
    pub target_id: String,
    /// `None`: the latest restorable time.
    pub target_time: Option<OffsetDateTime>,
    pub tags: Tags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StagingState {
    Available,
    Creating,
    Failed,
}

/// A staging instance as its engine describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagingInstance {
    pub target_id: String,
    pub state: StagingState,
    /// The engine's own status text (`available`, `creating`, `recovering`, ...).
    pub status: String,
    pub reason: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub master_username: Option<String>,
    pub arn: Option<String>,
    pub tags: Tags,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Aws(#[from] crate::aws_error::AwsCallError),
    #[error("source {source_id} not found")]
    SourceNotFound { source_id: String },
    #[error("{operation}: {reason}")]
    Local {
        operation: &'static str,
        reason: String,
    },
    #[error("{operation}")]
    Io {
        operation: String,
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    pub fn error_type(&self) -> ErrorKind {
        match self {
            Self::Aws(e) => e.error_type(),
            Self::SourceNotFound { .. } => ErrorKind::SourceNotFound,
            Self::Local { .. } | Self::Io { .. } => ErrorKind::LocalEngineFailed,
        }
    }
}

#[async_trait::async_trait]
pub trait RestoreEngine: Send + Sync {
    /// The source database's identifier.
    fn source_id(&self) -> &str;
    async fn restore_window(&self) -> Result<RestoreWindow, EngineError>;
    async fn describe(&self, target_id: &str) -> Result<Option<StagingInstance>, EngineError>;
    /// Starts the restore; the instance is then polled with [`RestoreEngine::describe`].
    async fn start_restore(&self, request: &RestoreRequest) -> Result<(), EngineError>;
    /// The source's manual snapshots (RDS) or base backups (local), in no particular order; the
    /// caller decides which are catalyst-dr's.
    async fn backup_snapshots(&self) -> Result<Vec<BackupSnapshot>, EngineError>;
    /// Starts a restore of `snapshot` into `request.target_id` (its `target_time` is ignored).
    async fn start_snapshot_restore(
        &self,
        request: &RestoreRequest,
        snapshot: &BackupSnapshot,
    ) -> Result<(), EngineError>;
    async fn set_master_password(
        &self,
        target_id: &str,
        username: &str,
        password: &str,
    ) -> Result<(), EngineError>;
    /// Deletes the instance and everything the engine created for it. Absent already: `Ok`.
    async fn delete(&self, target_id: &str) -> Result<(), EngineError>;
}
