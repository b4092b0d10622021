//! The snapshot-trigger function: one nightly backup run (database and cache snapshots, the
//! cache export, pruning, the logical backup, the local engine's base backup) and its manifest,
//! plus the backup catalog and the logical restore and verify actions. It composes the snapshot,
//! logical and local-engine features; none of them knows the others.

pub mod config;
pub mod dr;
pub mod manifest;

use crate::aws_error::AwsCallError;
use crate::error_kind::ErrorKind;
use crate::input::{InputError, decode, parse_time};
use crate::logical::backup::LogicalBackupResult;
use crate::logical::fanout::BackupPath;
use crate::logical::restore::{RestoreOptions, RestoreTarget};
use crate::logical::{LogicalBackups, LogicalError};
use crate::object_store::ObjectStore;
use crate::output::to_json;
use crate::restore_engine::EngineError;
use crate::run_id::RunId;
use crate::snapshot::prune::PruneResult;
use crate::snapshot::{ExportResult, SnapshotError, Snapshots};
use config::{LocalEngineConfig, SnapshotTriggerConfig};
use manifest::{
    BackupManifest, CatalogEntry, MANIFEST_FORMAT, ManifestSnapshot, RunFailure, manifest_key,
};
use serde::Deserialize;
use time::OffsetDateTime;

/// The events snapshot-trigger accepts, one per state of the nightly-backup state machine,
/// selected by the event's `action` field (see [`decode`]).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
// Decoded once per invocation and consumed at once: boxing the manifest step's fields saves nothing.
#[allow(clippy::large_enum_variant)]
pub enum SnapshotTriggerEvent {
    /// Start (or find, on a retry) this run's database and cache snapshots.
    Snapshot { scheduled_time: RunId },
    /// Poll the run's snapshots; `poll` counts the polls so far and is returned incremented.
    Status {
        scheduled_time: RunId,
        #[serde(default)]
        poll: u32,
    },
    /// Export the run's cache snapshot to the backup bucket.
    ExportCache { scheduled_time: RunId },
    /// Delete catalyst-dr's backup snapshots past their retention, keeping the newest N.
    Prune {
        #[serde(default)]
        dry_run: bool,
    },
    /// Write the run's manifest (once; a retry returns the one already written).
    WriteManifest {
        scheduled_time: RunId,
        started_at: String,
        #[serde(default)]
        export: Option<ExportResult>,
        #[serde(default)]
        prune: Option<PruneResult>,
        /// The `logical-backup` step's result, recorded in the manifest.
        #[serde(default)]
        logical: Option<LogicalBackupResult>,
        /// The failure path: the failed step's error, recorded with what the run did take.
        #[serde(default)]
        failure: Option<RunFailure>,
    },
    /// Local engine only: a base backup of the source cluster (`pg_basebackup`), the starting
    /// point of point-in-time restores on this machine.
    BaseBackup { scheduled_time: RunId },
    /// The backup catalog: the manifests in the bucket, newest first.
    ListBackups {
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Logical backup of the source database (`SOURCE_DATABASE_SECRET_ID`) for this run: every
    /// table at one instant, to locked S3 objects, manifest last; a retry returns the finished
    /// backup or redoes an unfinished one.
    LogicalBackup { scheduled_time: RunId },
    /// Which way the run's logical backup goes: `single` (`logical-backup`) or `fan-out` (a
    /// read source and the three fan-out steps), by the source's size against
    /// `LOGICAL_FANOUT_THRESHOLD_GIB`, or as `path` asks (null: by size).
    LogicalPath {
        scheduled_time: RunId,
        #[serde(default)]
        path: Option<BackupPath>,
    },
    /// Fan-out: plans the run's segments on the read source (the staging secret's copy,
    /// restored for this run to `restored_to`) and stores the plan; answers the batches.
    LogicalFanoutPlan {
        scheduled_time: RunId,
        restored_to: String,
    },
    /// Fan-out: backs up one batch of the plan (segments finished by an earlier attempt are
    /// skipped).
    LogicalFanoutBatch { scheduled_time: RunId, batch: usize },
    /// Fan-out: writes the manifest once every segment is stored and the read source is
    /// unchanged; a retry returns it.
    LogicalFanoutFinish { scheduled_time: RunId },
    /// Fan-out's failure path: aborts the run's unfinished uploads.
    LogicalFanoutAbort { scheduled_time: RunId },
    /// Loads the run's logical backup into the empty staging database of `target_secret_id`
    /// and checks row counts, content checksums and sequences against the manifest, as loaded;
    /// with `reread`, also by re-reading every restored table. `reset` lets a rerun drop what
    /// an interrupted restore of the same backup left in the staging database and start over.
    RestoreLogical {
        scheduled_time: RunId,
        target_secret_id: String,
        /// Another (empty, staging) database on that secret's server to restore into.
        #[serde(default)]
        database: Option<String>,
        #[serde(default)]
        reread: bool,
        #[serde(default)]
        reset: bool,
    },
    /// `restore-logical` in steps, each its own invocation: checks and marks the empty staging
    /// target, creates the schema and the restore's ledger; answers a restore id and the
    /// batches. A target already being restored from this backup is resumed (unless `reset`).
    RestoreLogicalPrepare {
        scheduled_time: RunId,
        target_secret_id: String,
        #[serde(default)]
        database: Option<String>,
        #[serde(default)]
        reset: bool,
    },
    /// Loads one batch of the run's segments into the target (segments loaded by an earlier
    /// attempt are skipped).
    RestoreLogicalBatch {
        scheduled_time: RunId,
        target_secret_id: String,
        #[serde(default)]
        database: Option<String>,
        restore_id: String,
        batch: usize,
    },
    /// The re-read's block ranges of the restored tables (planned once, stored in the target's
    /// ledger) and their batches.
    RestoreLogicalRereadPlan {
        scheduled_time: RunId,
        target_secret_id: String,
        #[serde(default)]
        database: Option<String>,
        restore_id: String,
    },
    /// Re-reads one batch of those ranges (ranges an earlier attempt read are skipped).
    RestoreLogicalRereadBatch {
        scheduled_time: RunId,
        target_secret_id: String,
        #[serde(default)]
        database: Option<String>,
        restore_id: String,
        batch: usize,
    },
    /// Once every segment is loaded: indexes, constraints, sequences, post-data, validations and
    /// every check (`restore-logical`'s report, stored; a retry answers it). Builds still running
    /// at the invocation's deadline go on (`RestoreStillBuilding`); a retry waits for them.
    RestoreLogicalFinish {
        scheduled_time: RunId,
        target_secret_id: String,
        #[serde(default)]
        database: Option<String>,
        restore_id: String,
        #[serde(default)]
        reread: bool,
    },
    /// Re-reads every object of the run's logical backup and checks it against the manifest.
    VerifyLogical { scheduled_time: RunId },
    /// `verify-logical` in batches, each its own invocation: a verify id and the batches of the
    /// run's segments.
    VerifyLogicalPlan { scheduled_time: RunId },
    /// Reads one batch of the run's segments and stores what it found (a retry returns it).
    VerifyLogicalBatch {
        scheduled_time: RunId,
        verify_id: String,
        batch: usize,
    },
    /// `verify-logical`'s report, from the stored batches of `verify_id`.
    VerifyLogicalFinish {
        scheduled_time: RunId,
        verify_id: String,
    },
    /// Starts (or finds) the copy of the run's database snapshot in the DR region.
    DrCopySnapshots { scheduled_time: RunId },
    /// Polls the DR snapshot copy; shares it with the DR account once available.
    DrStatus {
        scheduled_time: RunId,
        #[serde(default)]
        poll: u32,
    },
    /// Copies the run's objects to the DR bucket, locked until the run's retain-until.
    DrCopyObjects { scheduled_time: RunId },
    /// Verifies every copy of the run and writes the run's DR record.
    DrVerify { scheduled_time: RunId },
    /// Region-loss drill: restores the newest logical backup whose DR copies were verified (or
    /// the run of `scheduled_time`) from the DR bucket alone into the empty staging database of
    /// `target_secret_id`, and reports its RPO, the age of that copy.
    DrRestoreDrill {
        #[serde(default)]
        scheduled_time: Option<RunId>,
        target_secret_id: String,
        #[serde(default)]
        reread: bool,
        #[serde(default)]
        reset: bool,
    },
    /// Retention in the DR region, with the same guard as `prune`.
    DrPrune {
        #[serde(default)]
        dry_run: bool,
    },
    /// The newest complete logical backup (its run and scheduled time): the restore test's.
    NewestLogical {},
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotTriggerError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Aws(#[from] AwsCallError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("base backups need the local engine (the local stack): set {var}")]
    LocalEngineNotConfigured { var: &'static str },
    #[error(transparent)]
    LocalEngine(#[from] EngineError),
    #[error(transparent)]
    Connect(#[from] crate::postgres::PgConnectError),
    #[error(transparent)]
    Logical(#[from] LogicalError),
    #[error(transparent)]
    DrCopy(#[from] crate::dr_copy::DrCopyError),
    #[error("{key} is not in the bucket: no manifest or record to work from")]
    ManifestNotFound { key: String },
    #[error("the DR actions need {var} (no DR region configured)")]
    DrNotConfigured { var: &'static str },
    #[error("the logical backup {key} records its instant as {value:?}, not an RFC 3339 time")]
    BadInstant { key: String, value: String },
    #[error("manifest {key} in the backup bucket is not a valid backup manifest")]
    CorruptManifest {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl SnapshotTriggerError {
    /// Stable names for Step Functions `Retry`/`Catch`.
    pub fn error_type(&self) -> ErrorKind {
        match self {
            Self::Input(_) => ErrorKind::InvalidInput,
            Self::Aws(e) => e.error_type(),
            Self::Snapshot(e) => e.error_type(),
            Self::CorruptManifest { .. } => ErrorKind::CorruptManifest,
            Self::LocalEngineNotConfigured { .. } => ErrorKind::Misconfigured,
            Self::LocalEngine(e) => e.error_type(),
            Self::Connect(e) => e.error_type(),
            Self::Logical(e) => e.error_type(),
            Self::DrCopy(e) => e.error_type(),
            Self::ManifestNotFound { .. } => ErrorKind::ManifestNotFound,
            Self::DrNotConfigured { .. } => ErrorKind::NotConfigured,
            Self::BadInstant { .. } => ErrorKind::CorruptBackup,
        }
    }
}

/// The function's dependencies, built once per cold start.
pub struct SnapshotTrigger {
    pub config: SnapshotTriggerConfig,
    pub snapshots: Snapshots,
    /// The backup bucket, where the manifests are written and listed.
    pub manifests: Box<dyn ObjectStore>,
    /// Logical backups, restore and verify (`logical-backup`, `restore-logical`, `verify-logical`).
    pub logical: LogicalBackups,
    /// Where the local engine's base backups go, when configured (`LOCAL_BASE_BACKUP_DIR`).
    pub local_base_backups: Option<LocalEngineConfig>,
    /// The backup bucket and the DR bucket, when `DR_REGION` is set.
    pub dr_objects: Option<crate::dr_copy::DrObjects>,
    /// The logical backups in the DR bucket (the region-loss drill), when `DR_REGION` is set.
    pub dr_logical: Option<LogicalBackups>,
}

impl SnapshotTrigger {
    /// Decodes and runs one event. Input is fully validated before any AWS call.
    pub async fn handle(
        &self,
        event: serde_json::Value,
    ) -> Result<serde_json::Value, SnapshotTriggerError> {
        let event: SnapshotTriggerEvent = decode(event)?;
        let result = match event {
            SnapshotTriggerEvent::Snapshot {
                scheduled_time: run,
            } => to_json(self.snapshots.snapshot(&run).await?),
            SnapshotTriggerEvent::Status {
                scheduled_time: run,
                poll,
            } => to_json(self.snapshots.status(&run, poll).await?),
            SnapshotTriggerEvent::ExportCache {
                scheduled_time: run,
            } => to_json(self.snapshots.export_cache(&run).await?),
            SnapshotTriggerEvent::Prune { dry_run } => to_json(
                self.snapshots
                    .prune(dry_run, OffsetDateTime::now_utc())
                    .await?,
            ),
            SnapshotTriggerEvent::WriteManifest {
                scheduled_time: run,
                started_at,
                export,
                prune,
                logical,
                failure,
            } => {
                let started_at = parse_time("started_at", &started_at)?;
                to_json(
                    self.write_manifest(&run, started_at, export, prune, logical, failure)
                        .await?,
                )
            }
            SnapshotTriggerEvent::BaseBackup {
                scheduled_time: run,
            } => {
                let local = self.local_base_backups.as_ref().ok_or(
                    SnapshotTriggerError::LocalEngineNotConfigured {
                        var: crate::settings::LOCAL_BASE_BACKUP_DIR.name,
                    },
                )?;
                // The same source connection the logical backups use.
                let source = self.logical.source.as_ref().ok_or(
                    SnapshotTriggerError::LocalEngineNotConfigured {
                        var: crate::settings::SOURCE_DATABASE_SECRET_ID_LOGICAL.name,
                    },
                )?;
                to_json(base_backup(local, &source.credentials().await?, &run).await?)
            }
            SnapshotTriggerEvent::ListBackups { limit } => to_json(self.list_backups(limit).await?),
            SnapshotTriggerEvent::LogicalBackup {
                scheduled_time: run,
            } => to_json(self.logical.backup(&run).await?),
            SnapshotTriggerEvent::LogicalPath {
                scheduled_time: run,
                path,
            } => to_json(self.logical.choose_path(&run, path).await?),
            SnapshotTriggerEvent::LogicalFanoutPlan {
                scheduled_time: run,
                restored_to,
            } => {
                let restored_to = parse_time("restored_to", &restored_to)?;
                to_json(self.logical.plan_fanout(&run, restored_to).await?)
            }
            SnapshotTriggerEvent::LogicalFanoutBatch {
                scheduled_time: run,
                batch,
            } => to_json(self.logical.backup_batch(&run, batch).await?),
            SnapshotTriggerEvent::LogicalFanoutFinish {
                scheduled_time: run,
            } => to_json(self.logical.finish_fanout(&run).await?),
            SnapshotTriggerEvent::LogicalFanoutAbort {
                scheduled_time: run,
            } => to_json(self.logical.abort_fanout(&run).await?),
            SnapshotTriggerEvent::RestoreLogical {
                scheduled_time: run,
                target_secret_id,
                database,
                reread,
                reset,
            } => {
                // Checked before anything is read.
                let target = RestoreTarget::new(&target_secret_id, database)?;
                to_json(
                    self.logical
                        .restore(
                            &run,
                            &target.secret_id,
                            RestoreOptions {
                                database: target.database,
                                reread,
                                reset,
                            },
                        )
                        .await?,
                )
            }
            SnapshotTriggerEvent::RestoreLogicalPrepare {
                scheduled_time: run,
                target_secret_id,
                database,
                reset,
            } => {
                let target = RestoreTarget::new(&target_secret_id, database)?;
                to_json(self.logical.prepare_restore(&run, &target, reset).await?)
            }
            SnapshotTriggerEvent::RestoreLogicalBatch {
                scheduled_time: run,
                target_secret_id,
                database,
                restore_id,
                batch,
            } => {
                let target = RestoreTarget::new(&target_secret_id, database)?;
                to_json(
                    self.logical
                        .restore_batch(&run, &target, &restore_id, batch)
                        .await?,
                )
            }
            SnapshotTriggerEvent::RestoreLogicalRereadPlan {
                scheduled_time: run,
                target_secret_id,
                database,
                restore_id,
            } => {
                let target = RestoreTarget::new(&target_secret_id, database)?;
                to_json(self.logical.plan_reread(&run, &target, &restore_id).await?)
            }
            SnapshotTriggerEvent::RestoreLogicalRereadBatch {
                scheduled_time: run,
                target_secret_id,
                database,
                restore_id,
                batch,
            } => {
                let target = RestoreTarget::new(&target_secret_id, database)?;
                to_json(
                    self.logical
                        .reread_batch(&run, &target, &restore_id, batch)
                        .await?,
                )
            }
            SnapshotTriggerEvent::RestoreLogicalFinish {
                scheduled_time: run,
                target_secret_id,
                database,
                restore_id,
                reread,
            } => {
                let target = RestoreTarget::new(&target_secret_id, database)?;
                to_json(
                    self.logical
                        .finish_restore(&run, &target, &restore_id, reread)
                        .await?,
                )
            }
            SnapshotTriggerEvent::VerifyLogical {
                scheduled_time: run,
            } => to_json(self.logical.verify(&run).await?),
            SnapshotTriggerEvent::VerifyLogicalPlan {
                scheduled_time: run,
            } => to_json(self.logical.plan_verify(&run).await?),
            SnapshotTriggerEvent::VerifyLogicalBatch {
                scheduled_time: run,
                verify_id,
                batch,
            } => to_json(self.logical.verify_batch(&run, &verify_id, batch).await?),
            SnapshotTriggerEvent::VerifyLogicalFinish {
                scheduled_time: run,
                verify_id,
            } => to_json(self.logical.finish_verify(&run, &verify_id).await?),
            SnapshotTriggerEvent::DrCopySnapshots {
                scheduled_time: run,
            } => to_json(self.snapshots.copy_to_dr(&run).await?),
            SnapshotTriggerEvent::DrStatus {
                scheduled_time: run,
                poll,
            } => to_json(self.snapshots.dr_status(&run, poll).await?),
            SnapshotTriggerEvent::DrCopyObjects {
                scheduled_time: run,
            } => to_json(self.dr_copy_objects(&run).await?),
            SnapshotTriggerEvent::DrVerify {
                scheduled_time: run,
            } => to_json(self.dr_verify(&run).await?),
            SnapshotTriggerEvent::DrRestoreDrill {
                scheduled_time: run,
                target_secret_id,
                reread,
                reset,
            } => {
                RestoreTarget::new(&target_secret_id, None)?;
                to_json(
                    self.dr_restore_drill(
                        run.as_ref(),
                        &target_secret_id,
                        RestoreOptions {
                            database: None,
                            reread,
                            reset,
                        },
                    )
                    .await?,
                )
            }
            SnapshotTriggerEvent::DrPrune { dry_run } => to_json(
                self.snapshots
                    .prune_dr(dry_run, OffsetDateTime::now_utc())
                    .await?,
            ),
            SnapshotTriggerEvent::NewestLogical {} => to_json(self.logical.newest().await?),
        };
        Ok(result)
    }

    pub async fn write_manifest(
        &self,
        run: &RunId,
        started_at: OffsetDateTime,
        export: Option<ExportResult>,
        pruned: Option<PruneResult>,
        logical: Option<LogicalBackupResult>,
        failure: Option<RunFailure>,
    ) -> Result<BackupManifest, SnapshotTriggerError> {
        let key = manifest_key(&self.config.manifest_prefix, &run.stamp);
        if let Some(existing) = self.read_manifest(&key).await? {
            return Ok(existing);
        }
        let database = self
            .snapshots
            .describe_started(self.snapshots.database.as_ref(), run)
            .await?;
        let source = self.snapshots.source_details().await?;
        let cache = match &self.snapshots.cache {
            Some(store) => Some(ManifestSnapshot::new(
                &self.snapshots.describe_started(store.as_ref(), run).await?,
                &Default::default(),
            )),
            None => None,
        };
        let manifest = BackupManifest {
            format: MANIFEST_FORMAT.to_owned(),
            run_id: run.stamp.clone(),
            schedule: self.config.snapshot.schedule_name.clone(),
            scheduled_time: run.scheduled_time,
            started_at,
            completed_at: OffsetDateTime::now_utc(),
            retain_until: self.snapshots.retain_until(run),
            database: Some(ManifestSnapshot::new(&database, &source)),
            cache,
            cache_export: export,
            pruned,
            logical,
            failure,
            dr: self.dr_plan(run),
        };
        let body = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");
        let put = self
            .manifests
            .put_locked(&key, body, "application/json", manifest.retain_until)
            .await?;
        tracing::info!(%key, version_id = ?put.version_id, sha256 = %put.sha256, "manifest written");
        Ok(manifest)
    }

    async fn read_manifest(
        &self,
        key: &str,
    ) -> Result<Option<BackupManifest>, SnapshotTriggerError> {
        match self.manifests.get(key).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| {
                SnapshotTriggerError::CorruptManifest {
                    key: key.to_owned(),
                    source,
                }
            }),
        }
    }

    pub async fn list_backups(
        &self,
        limit: Option<usize>,
    ) -> Result<Vec<CatalogEntry>, SnapshotTriggerError> {
        let mut keys: Vec<String> = self
            .manifests
            .list(&self.config.manifest_prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.ends_with(".json") && !dr::is_record_key(k))
            .collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        keys.truncate(limit.unwrap_or(usize::MAX));
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(manifest) = self.read_manifest(&key).await? {
                entries.push(CatalogEntry::new(key, &manifest));
            }
        }
        Ok(entries)
    }
}

#[cfg(feature = "local-engine")]
async fn base_backup(
    local: &LocalEngineConfig,
    source: &crate::postgres::DbCredentials,
    run: &RunId,
) -> Result<crate::local_pg::base_backup::BaseBackupInfo, EngineError> {
    crate::local_pg::base_backup::take(local, source, &run.stamp).await
}

#[cfg(not(feature = "local-engine"))]
async fn base_backup(
    local: &LocalEngineConfig,
    _: &crate::postgres::DbCredentials,
    _: &RunId,
) -> Result<(), EngineError> {
    match *local {}
}

impl SnapshotTrigger {
    /// Wires the function from the process environment and the standard AWS configuration chain.
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        let config = SnapshotTriggerConfig::from_env(&crate::config::ProcessEnv)?;
        let local_base_backups =
            SnapshotTriggerConfig::local_base_backups(&crate::config::ProcessEnv)?;
        let sdk = crate::aws_clients::load_sdk_config().await;
        let mut trigger = Self::new(config, &sdk);
        trigger.local_base_backups = local_base_backups;
        Ok(trigger)
    }

    pub fn new(config: SnapshotTriggerConfig, sdk: &aws_config::SdkConfig) -> Self {
        let s3 = crate::aws_clients::s3_client(sdk, config.s3_force_path_style);
        let objects = || {
            Box::new(crate::object_store::S3Objects::new(
                s3.clone(),
                &config.backup_bucket,
            ))
        };
        let secrets: std::sync::Arc<dyn crate::postgres::SecretSource> =
            std::sync::Arc::new(aws_sdk_secretsmanager::Client::new(sdk));
        let logical = LogicalBackups::new(
            config.logical.clone(),
            std::sync::Arc::new(crate::object_store::S3Objects::new(
                s3.clone(),
                &config.backup_bucket,
            )),
            secrets.clone(),
        );
        let dr_snapshots = config
            .dr
            .as_ref()
            .map(|dr| crate::snapshot::dr::DrSnapshotConfig {
                region: dr.region.clone(),
                kms_key_arn: dr.kms_key_arn.clone(),
                account_id: dr.account_id.clone(),
            });
        Self {
            snapshots: Snapshots::new(config.snapshot.clone(), sdk, objects(), dr_snapshots),
            manifests: objects(),
            dr_objects: dr::dr_objects(&config, sdk, objects()),
            dr_logical: dr::dr_logical(&config, sdk, secrets),
            local_base_backups: None,
            logical,
            config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_store::memory::MemoryObjects;
    use crate::postgres::SecretSource;
    use crate::snapshot::memory::MemorySnapshots;
    use crate::snapshot::store::SnapshotKind;
    use std::collections::HashMap;
    use std::sync::Arc;
    use time::macros::datetime;

    /// The manifest actions read no secret.
    struct NoSecrets;

    #[async_trait::async_trait]
    impl SecretSource for NoSecrets {
        async fn secret_string(&self, secret_id: &str) -> Result<String, AwsCallError> {
            Err(AwsCallError {
                operation: "secretsmanager:GetSecretValue",
                code: Some("ResourceNotFoundException".into()),
                kind: crate::aws_error::AwsFailureKind::Rejected,
                source: format!("no secret {secret_id} in a unit test").into(),
            })
        }
    }

    /// snapshot-trigger over an in-memory database snapshot service and bucket.
    fn trigger() -> (SnapshotTrigger, MemoryObjects) {
        let env = HashMap::from([("BACKUP_BUCKET", "backups"), ("RDS_INSTANCE_ID", "prod-db")]);
        let config = SnapshotTriggerConfig::from_env(&env).unwrap();
        let bucket = MemoryObjects::new("backups");
        let database = MemorySnapshots::new(SnapshotKind::RdsInstance, "prod-db");
        let trigger = SnapshotTrigger {
            snapshots: Snapshots {
                config: config.snapshot.clone(),
                database: Box::new(database),
                cache: None,
                exporter: None,
                objects: Box::new(bucket.clone()),
                dr: None,
            },
            manifests: Box::new(bucket.clone()),
            dr_objects: None,
            dr_logical: None,
            logical: LogicalBackups::new(
                config.logical.clone(),
                Arc::new(bucket.clone()),
                Arc::new(NoSecrets),
            ),
            local_base_backups: None,
            config,
        };
        (trigger, bucket)
    }

    fn run(time: &str) -> RunId {
        RunId::from_scheduled_time("scheduled_time", time).unwrap()
    }

    async fn write(trigger: &SnapshotTrigger, run: &RunId) -> BackupManifest {
        trigger.snapshots.snapshot(run).await.unwrap();
        trigger
            .write_manifest(run, run.scheduled_time, None, None, None, None)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn the_manifest_is_written_once_and_a_retry_returns_it() {
        let (trigger, bucket) = trigger();
        let run = run("2026-11-26T03:00:00Z");
        let first = write(&trigger, &run).await;

        let failure = RunFailure {
            error: "States.Timeout".into(),
            cause: None,
        };
        let retry = trigger
            .write_manifest(
                &run,
                datetime!(2026-11-26 05:00 UTC),
                None,
                None,
                None,
                Some(failure),
            )
            .await
            .unwrap();

        assert_eq!(retry, first);
        let key = manifest_key(&trigger.config.manifest_prefix, &run.stamp);
        let versions = bucket.versions(&key);
        assert_eq!(versions.len(), 1, "no second version");
        assert_eq!(
            versions[0].retain_until,
            Some(datetime!(2026-12-31 03:00 UTC))
        );
        assert_eq!(
            first.database.map(|d| d.snapshot_id),
            Some(run.snapshot_id("prod-db"))
        );
    }

    #[tokio::test]
    async fn a_manifest_is_not_written_for_a_run_that_never_started() {
        let (trigger, bucket) = trigger();
        let run = run("2026-11-26T03:00:00Z");
        let err = trigger
            .write_manifest(&run, run.scheduled_time, None, None, None, None)
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), ErrorKind::SnapshotNotStarted);
        assert!(bucket.keys().is_empty());
    }

    #[tokio::test]
    async fn a_corrupt_manifest_is_reported_and_left_alone() {
        let (trigger, bucket) = trigger();
        let run = run("2026-11-26T03:00:00Z");
        trigger.snapshots.snapshot(&run).await.unwrap();
        let key = manifest_key(&trigger.config.manifest_prefix, &run.stamp);
        bucket.put_unlocked(&key, b"{\"format\": ".to_vec());

        let err = trigger
            .write_manifest(&run, run.scheduled_time, None, None, None, None)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SnapshotTriggerError::CorruptManifest { key: k, .. } if *k == key),
            "{err}"
        );
        assert_eq!(err.error_type(), ErrorKind::CorruptManifest);
        assert_eq!(bucket.versions(&key).len(), 1, "not overwritten");

        let listed = trigger.list_backups(None).await.unwrap_err();
        assert_eq!(listed.error_type(), ErrorKind::CorruptManifest);
    }

    #[tokio::test]
    async fn the_catalog_lists_the_manifests_newest_first() {
        let (trigger, bucket) = trigger();
        for time in [
            "2026-11-25T03:00:00Z",
            "2026-11-27T03:00:00Z",
            "2026-11-26T03:00:00Z",
        ] {
            write(&trigger, &run(time)).await;
        }
        let prefix = trigger.config.manifest_prefix.clone();
        bucket.put_unlocked(&format!("{prefix}README.txt"), b"not a manifest".to_vec());

        let all = trigger.list_backups(None).await.unwrap();
        let runs: Vec<&str> = all.iter().map(|e| e.run_id.as_str()).collect();
        assert_eq!(
            runs,
            ["20261127t030000z", "20261126t030000z", "20261125t030000z"]
        );
        assert_eq!(all[0].key, format!("{prefix}20261127t030000z.json"));

        let newest = trigger.list_backups(Some(1)).await.unwrap();
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].run_id, "20261127t030000z");
    }
}
