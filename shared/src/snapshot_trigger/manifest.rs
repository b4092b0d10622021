//! The backup manifest: one JSON object per run in the backup bucket, locked in COMPLIANCE mode
//! until the run's retain-until date. Listing the manifests is the backup catalog.

use crate::logical::backup::LogicalBackupResult;
use crate::snapshot::ExportResult;
use crate::snapshot::prune::PruneResult;
use crate::snapshot::store::{SnapshotInfo, SnapshotKind, SourceDetails};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub const MANIFEST_FORMAT: &str = "catalyst-dr/backup-manifest/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: String,
    pub run_id: String,
    pub schedule: String,
    #[serde(with = "time::serde::rfc3339")]
    pub scheduled_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub completed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub retain_until: OffsetDateTime,
    pub database: Option<ManifestSnapshot>,
    pub cache: Option<ManifestSnapshot>,
    pub cache_export: Option<ExportResult>,
    pub pruned: Option<PruneResult>,
    /// The run's logical backup (`logical-backup`), when the nightly run made one.
    #[serde(default)]
    pub logical: Option<LogicalBackupResult>,
    /// Set when a later step of the run failed: the snapshots that were taken are still
    /// catalogued, with the step's error, so that a failed night never hides a usable backup.
    #[serde(default)]
    pub failure: Option<RunFailure>,
    /// Where the run's DR copies go (deterministic names); what was verified is in the
    /// record `dr.record_key`, written by `dr-verify`.
    #[serde(default)]
    pub dr: Option<super::dr::DrPlan>,
}

/// A failed step's error, as Step Functions catches it (`Error`, `Cause`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFailure {
    #[serde(rename = "Error")]
    pub error: String,
    #[serde(rename = "Cause", default)]
    pub cause: Option<String>,
}

/// One snapshot as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestSnapshot {
    pub kind: SnapshotKind,
    pub source_id: String,
    pub snapshot_id: String,
    pub arn: Option<String>,
    pub status: String,
    pub engine: Option<String>,
    pub engine_version: Option<String>,
    pub size_bytes: Option<u64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    /// The source's latest restorable time when the manifest was written (RDS only).
    #[serde(with = "time::serde::rfc3339::option")]
    pub latest_restorable_time: Option<OffsetDateTime>,
}

impl ManifestSnapshot {
    pub fn new(snapshot: &SnapshotInfo, source: &SourceDetails) -> Self {
        Self {
            kind: snapshot.kind,
            source_id: snapshot.source_id.clone(),
            snapshot_id: snapshot.id.clone(),
            arn: snapshot.arn.clone(),
            status: snapshot.status.clone(),
            engine: snapshot.engine.clone().or_else(|| source.engine.clone()),
            engine_version: snapshot
                .engine_version
                .clone()
                .or_else(|| source.engine_version.clone()),
            size_bytes: snapshot.size_bytes,
            created_at: snapshot.created_at,
            latest_restorable_time: source.latest_restorable_time,
        }
    }
}

/// Key of a run's manifest; keys sort in run order.
pub fn manifest_key(prefix: &str, run_stamp: &str) -> String {
    format!("{prefix}{run_stamp}.json")
}

/// One line of the backup catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub key: String,
    pub run_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub completed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub retain_until: OffsetDateTime,
    pub database_snapshot: Option<String>,
    pub cache_snapshot: Option<String>,
    /// The manifest key of the run's logical backup.
    #[serde(default)]
    pub logical_manifest: Option<String>,
    /// The failed step's error, when the run did not complete.
    #[serde(default)]
    pub failure: Option<String>,
}

impl CatalogEntry {
    pub fn new(key: String, manifest: &BackupManifest) -> Self {
        Self {
            key,
            run_id: manifest.run_id.clone(),
            completed_at: manifest.completed_at,
            retain_until: manifest.retain_until,
            database_snapshot: manifest.database.as_ref().map(|s| s.snapshot_id.clone()),
            cache_snapshot: manifest.cache.as_ref().map(|s| s.snapshot_id.clone()),
            logical_manifest: manifest.logical.as_ref().map(|l| l.manifest_key.clone()),
            failure: manifest.failure.as_ref().map(|f| f.error.clone()),
        }
    }
}
