//! Logical backups of the Catalyst Auth database (runbook: PostgreSQL step 1, "nightly logical
//! backups ... in immutable object storage"): every table read at one exported snapshot, large
//! tables in block-range segments on several connections ([`segments`]), streamed with
//! `COPY ... TO STDOUT` through zstd into S3 multipart uploads locked in COMPLIANCE mode, with
//! order-independent content checksums ([`rowset`]), the schema captured from the catalog, and a
//! manifest written last as the commit marker.
//! [`restore`] loads a backup into an empty staging database and checks it against the manifest;
//! [`verify`] re-reads a backup and checks every checksum. The SQL lives in
//! [`crate::catalyst_db::introspect`]. The actions are snapshot-trigger's (`logical-backup`,
//! `restore-logical`, `verify-logical`); see `docs/logical-backups.md`.

pub mod backup;
pub mod config;
pub mod encode;
pub mod fanout;
pub mod layout;
pub mod manifest;
pub mod restore;
pub mod restore_ledger;
pub mod rowset;
pub mod segment_object;
pub mod segments;
pub mod upload;
pub mod verify;

use crate::aws_error::AwsCallError;
use crate::catalyst_db::CatalystDbError;
use crate::catalyst_db::introspect::{self, CapturedTable, NotCaptured};
use crate::error_kind::ErrorKind;
use crate::input::InputError;
use crate::object_store::ObjectStore;
use crate::postgres::{PgConnectError, PgConnector, SecretSource};
use config::LogicalConfig;
use manifest::{LOGICAL_MANIFEST_FORMAT, LogicalManifest, ManifestFormat};
use segments::Segment;
use std::sync::Arc;
use tokio_postgres::Client;

#[derive(Debug, thiserror::Error)]
pub enum LogicalError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Aws(#[from] AwsCallError),
    #[error(transparent)]
    Connect(#[from] PgConnectError),
    #[error(transparent)]
    Db(#[from] CatalystDbError),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("logical backups need configuration variable {var}, which is not set")]
    NotConfigured { var: &'static str },
    #[error("compressing or decompressing {key}")]
    Compression {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("logical backup manifest {key} is not a valid manifest")]
    CorruptManifest {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "logical backup manifest {key} has format {format}; this version reads {LOGICAL_MANIFEST_FORMAT} only"
    )]
    UnsupportedManifestFormat { key: String, format: String },
    #[error(
        "logical backup {run_id} has no manifest ({key}): it never completed and cannot be restored"
    )]
    BackupIncomplete { run_id: String, key: String },
    #[error("no complete logical backup under {prefix} to restore")]
    NoBackup { prefix: String },
    #[error(
        "restore target database {database} is not empty ({}); refusing to restore into it{}",
        summary(objects),
        hint(interrupted)
    )]
    TargetNotEmpty {
        database: String,
        objects: Vec<String>,
        interrupted: Option<String>,
    },
    #[error("logical backup {run_id} left out {} schema object(s) it cannot capture ({}); its data is stored and its manifest says complete: false. \
             To accept that, list them in LOGICAL_IGNORE_OBJECTS as kind:name", objects.len(), objects.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", "))]
    SchemaNotCaptured {
        run_id: String,
        objects: Vec<NotCaptured>,
    },
    #[error(
        "staging database {database} is not being restored with restore {restore_id} of logical backup {run_id} ({}): run restore-logical-prepare and give its restore_id",
        found.as_deref().unwrap_or("it holds no restore in progress")
    )]
    RestoreNotPrepared {
        run_id: String,
        restore_id: String,
        database: String,
        /// The restore the target holds instead, if any.
        found: Option<String>,
    },
    #[error("restore {restore_id} of logical backup {run_id} into {database} has not loaded {missing} of its {total} segments ({}); load their batches, then finish again", first.join(", "))]
    RestoreIncomplete {
        run_id: String,
        restore_id: String,
        database: String,
        missing: usize,
        total: usize,
        first: Vec<String>,
    },
    #[error("restore {restore_id} of logical backup {run_id} into {database} still has {count} index builds, foreign keys, materialized views or re-read ranges to finish ({}); the database goes on with those already sent: finish again to wait for them", first.join(", "))]
    RestoreStillBuilding {
        run_id: String,
        restore_id: String,
        database: String,
        count: usize,
        first: Vec<String>,
    },
    #[error("fanned-out logical backup {run_id} is missing {missing} of its {total} segments ({}); no manifest was written", first.join(", "))]
    SegmentsMissing {
        run_id: String,
        missing: usize,
        total: usize,
        first: Vec<String>,
    },
    #[error(
        "the staging secret does not hold the read source of logical backup {run_id} (expected {expected}): restore it with pitr-restore first, and let no drill share the secret meanwhile"
    )]
    NoReadSource { run_id: String, expected: String },
    #[error(
        "read source {target_id} of logical backup {run_id} was written to while it was read ({planned} user-table writes counted when planned, {now} now): the segments may not be one instant, so no manifest was written"
    )]
    ReadSourceChanged {
        run_id: String,
        target_id: String,
        planned: i64,
        now: i64,
    },
}

fn summary(objects: &[String]) -> String {
    let shown = objects
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if objects.len() > 5 {
        format!("{} objects in user schemas: {shown}, ...", objects.len())
    } else {
        format!("{} objects in user schemas: {shown}", objects.len())
    }
}

fn hint(interrupted: &Option<String>) -> String {
    match interrupted {
        Some(run_id) => format!(
            "; a restore of backup {run_id} was interrupted here: rerun it with reset: true to drop what it left and start over"
        ),
        None => String::new(),
    }
}

impl LogicalError {
    /// Stable names for Step Functions `Retry`/`Catch`.
    pub fn error_type(&self) -> ErrorKind {
        match self {
            Self::Input(_) => ErrorKind::InvalidInput,
            Self::Aws(e) => e.error_type(),
            Self::Connect(e) => e.error_type(),
            Self::Db(e) => e.error_type(),
            Self::Postgres(_) => ErrorKind::Postgres,
            Self::NotConfigured { .. } => ErrorKind::NotConfigured,
            Self::Compression { .. } => ErrorKind::CorruptBackup,
            Self::CorruptManifest { .. } => ErrorKind::CorruptManifest,
            Self::UnsupportedManifestFormat { .. } => ErrorKind::UnsupportedManifestFormat,
            Self::BackupIncomplete { .. } | Self::NoBackup { .. } => ErrorKind::BackupIncomplete,
            Self::TargetNotEmpty { .. } => ErrorKind::TargetNotEmpty,
            Self::SchemaNotCaptured { .. } => ErrorKind::SchemaNotCaptured,
            Self::SegmentsMissing { .. } => ErrorKind::BackupIncomplete,
            Self::NoReadSource { .. } => ErrorKind::NoStagingCredentials,
            Self::ReadSourceChanged { .. } => ErrorKind::ReadSourceChanged,
            Self::RestoreNotPrepared { .. } => ErrorKind::RestoreNotPrepared,
            Self::RestoreIncomplete { .. } => ErrorKind::RestoreIncomplete,
            Self::RestoreStillBuilding { .. } => ErrorKind::RestoreStillBuilding,
        }
    }
}

/// A `batch` the work (e.g. "run X verifies") does not have among its `batches`.
pub(crate) fn no_such_batch(work: &str, batches: usize) -> InputError {
    InputError::new(
        "batch",
        format!("{work} in batches 0 to {}", batches.saturating_sub(1)),
    )
}

/// The newest complete logical backup, as `newest-logical` answers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewestBackup {
    pub run_id: String,
    /// The run's scheduled time: what `restore-logical` takes.
    pub scheduled_time: String,
    pub manifest_key: String,
    pub tables: usize,
    pub rows: u64,
    pub completed_at: String,
}

/// A test hook: called by a backup or restore worker once the `COPY` of a table's segment has
/// started (a backup's snapshot is taken and imported by then), so a test can commit concurrent
/// writes or drop the connection at that point. Production code sets none.
#[async_trait::async_trait]
pub trait BackupObserver: Send + Sync {
    async fn segment_copy_started(&self, schema: &str, table: &str, segment: u32);
}

/// The logical-backup dependencies of snapshot-trigger.
pub struct LogicalBackups {
    pub config: LogicalConfig,
    pub store: Arc<dyn ObjectStore>,
    pub secrets: Arc<dyn SecretSource>,
    /// The source database (`SOURCE_DATABASE_SECRET_ID`); None when not configured.
    pub source: Option<PgConnector>,
    pub observer: Option<Arc<dyn BackupObserver>>,
}

impl LogicalBackups {
    pub fn new(
        config: LogicalConfig,
        store: Arc<dyn ObjectStore>,
        secrets: Arc<dyn SecretSource>,
    ) -> Self {
        let source = match (&config.source_secret_id, &config.tls) {
            (Some(secret_id), Some(tls)) => Some(PgConnector::new(
                secrets.clone(),
                secret_id.clone(),
                tls.clone(),
            )),
            _ => None,
        };
        Self {
            config,
            store,
            secrets,
            source,
            observer: None,
        }
    }

    /// The source database's connector, or `NotConfigured`.
    pub(crate) fn source(&self) -> Result<&PgConnector, LogicalError> {
        self.source.as_ref().ok_or(LogicalError::NotConfigured {
            var: crate::settings::SOURCE_DATABASE_SECRET_ID_LOGICAL.name,
        })
    }

    /// The newest complete logical backup: what a restore test restores.
    pub async fn newest(&self) -> Result<NewestBackup, LogicalError> {
        let mut keys: Vec<String> = self
            .store
            .list(&self.config.prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.ends_with("/manifest.json"))
            .collect();
        // Run ids are UTC stamps: newest sorts last.
        keys.sort_unstable_by(|a, b| b.cmp(a));
        for key in keys {
            if let Some(manifest) = self.read_manifest(&key).await?
                && manifest.complete
            {
                return Ok(NewestBackup {
                    run_id: manifest.run_id.clone(),
                    scheduled_time: crate::input::format_time(manifest.scheduled_time),
                    manifest_key: key,
                    tables: manifest.tables.len(),
                    rows: manifest.total_rows(),
                    completed_at: crate::input::format_time(manifest.completed_at),
                });
            }
        }
        Err(LogicalError::NoBackup {
            prefix: self.config.prefix.clone(),
        })
    }

    pub(crate) async fn read_manifest(
        &self,
        key: &str,
    ) -> Result<Option<LogicalManifest>, LogicalError> {
        Ok(self
            .read_manifest_and_digest(key)
            .await?
            .map(|(manifest, _)| manifest))
    }

    /// A JSON record of the backup's own (a plan, a marker, a verify record); None when it is
    /// not there, `CorruptManifest` naming the key when it does not parse.
    pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, LogicalError> {
        let Some(bytes) = self.store.get(key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| LogicalError::CorruptManifest {
                key: key.to_owned(),
                source,
            })
    }

    /// [`Self::read_manifest`], with the hex SHA-256 of the manifest's bytes.
    pub(crate) async fn read_manifest_and_digest(
        &self,
        key: &str,
    ) -> Result<Option<(LogicalManifest, String)>, LogicalError> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(bytes) => {
                let corrupt = |source| LogicalError::CorruptManifest {
                    key: key.to_owned(),
                    source,
                };
                let ManifestFormat { format } = serde_json::from_slice(&bytes).map_err(corrupt)?;
                if format != LOGICAL_MANIFEST_FORMAT {
                    return Err(LogicalError::UnsupportedManifestFormat {
                        key: key.to_owned(),
                        format,
                    });
                }
                let manifest = serde_json::from_slice(&bytes).map_err(corrupt)?;
                Ok(Some((manifest, crate::object_store::sha256_hex(&bytes))))
            }
        }
    }

    /// The segments of `tables` in the database `client` is connected to, sized by
    /// `LOGICAL_SEGMENT_MIB`.
    pub(crate) async fn plan_segments(
        &self,
        client: &Client,
        tables: &[&CapturedTable],
    ) -> Result<Vec<Segment>, LogicalError> {
        let sizes = introspect::table_blocks(client, tables).await?;
        let ranges_supported = introspect::supports_block_ranges(client).await?;
        Ok(segments::plan(
            &sizes.blocks,
            self.config.segment_bytes / sizes.block_size,
            ranges_supported,
        ))
    }

    /// The manifest's segments in batches of about `LOGICAL_FANOUT_BATCH_MIB` of COPY text:
    /// verify's and the restore's, the same for every step since they depend on the manifest
    /// alone.
    pub(crate) fn segment_batches(
        &self,
        segments: &[(usize, &manifest::ManifestSegment)],
    ) -> Vec<Vec<usize>> {
        fanout::batches(
            segments.iter().map(|(_, s)| s.copy_bytes),
            self.config.fanout_batch_bytes,
        )
    }

    /// Aborts every multipart upload in progress under `prefix`; returns how many.
    pub(crate) async fn abort_pending(&self, prefix: &str) -> Result<usize, LogicalError> {
        let pending = self.store.pending_uploads(prefix).await?;
        for upload in &pending {
            self.store
                .abort_upload(&upload.key, &upload.upload_id)
                .await?;
            tracing::info!(key = %upload.key, "aborted an unfinished multipart upload");
        }
        Ok(pending.len())
    }
}
