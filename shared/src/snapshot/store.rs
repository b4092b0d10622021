//! The capability snapshot-trigger needs from a snapshot service: one trait, implemented for RDS
//! (instances and Aurora clusters) and ElastiCache.

use crate::aws_error::AwsCallError;
use crate::tags::Tags;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotKind {
    RdsInstance,
    RdsCluster,
    ElasticacheReplicationGroup,
    ElasticacheCluster,
}

/// Where a snapshot stands, as the state machine's polling loop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Progress {
    Available,
    Creating,
    Failed,
}

/// A snapshot as described by its service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub kind: SnapshotKind,
    pub id: String,
    pub arn: Option<String>,
    pub source_id: String,
    /// The service's own status string (`available`, `creating`, `failed`, ...).
    pub status: String,
    /// `manual` or `automated` (RDS), `manual` or `automated` (ElastiCache `SnapshotSource`).
    pub snapshot_type: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    pub engine: Option<String>,
    pub engine_version: Option<String>,
    pub size_bytes: Option<u64>,
    pub tags: Tags,
}

impl SnapshotInfo {
    pub fn progress(&self) -> Progress {
        progress_of(&self.status)
    }
}

/// Maps RDS and ElastiCache snapshot statuses onto the three states the state machine acts on.
pub fn progress_of(status: &str) -> Progress {
    match status.to_ascii_lowercase().as_str() {
        "available" => Progress::Available,
        "creating" | "copying" | "pending" | "backing-up" | "exporting" | "restoring"
        | "upgrading" => Progress::Creating,
        _ => Progress::Failed,
    }
}

/// What the source database or cache reports about itself, for the manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceDetails {
    pub engine: Option<String>,
    pub engine_version: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub latest_restorable_time: Option<OffsetDateTime>,
}

#[async_trait::async_trait]
pub trait SnapshotStore: Send + Sync {
    fn kind(&self) -> SnapshotKind;
    /// The configured source (instance, cluster or replication group id).
    fn source_id(&self) -> &str;
    async fn describe(&self, snapshot_id: &str) -> Result<Option<SnapshotInfo>, AwsCallError>;
    /// Starts a snapshot. `Ok(false)` when a snapshot with that id already exists.
    async fn create(&self, snapshot_id: &str, tags: &Tags) -> Result<bool, AwsCallError>;
    /// Every snapshot of the configured source, manual and automated, with its tags.
    async fn list(&self) -> Result<Vec<SnapshotInfo>, AwsCallError>;
    async fn delete(&self, snapshot_id: &str) -> Result<(), AwsCallError>;
    async fn source_details(&self) -> Result<SourceDetails, AwsCallError>;
}

/// Exports a cache snapshot to an S3 bucket (ElastiCache `CopySnapshot` with a target bucket).
#[async_trait::async_trait]
pub trait CacheExporter: Send + Sync {
    /// Starts the export. `Ok(false)` when an export with that name already exists.
    async fn export(
        &self,
        snapshot_id: &str,
        target_name: &str,
        bucket: &str,
    ) -> Result<bool, AwsCallError>;
}
