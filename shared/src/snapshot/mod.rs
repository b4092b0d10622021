//! snapshot-trigger: RDS and ElastiCache snapshots with deterministic ids, their export,
//! retention pruning and the backup manifest (runbook: PostgreSQL step 1, Redis).

pub mod config;
pub mod elasticache;
pub mod manifest;
pub mod naming;
pub mod prune;
pub mod rds;
pub mod store;

use crate::aws_error::AwsCallError;
use crate::error_kind::ErrorKind;
use crate::input::{InputError, decode, format_time, parse_time};
use crate::object_store::ObjectStore;
use crate::output::to_json;
use crate::tags;
use config::SnapshotTriggerConfig;
use manifest::{
    BackupManifest, CatalogEntry, ExportResult, ExportStatus, MANIFEST_FORMAT, ManifestSnapshot,
    manifest_key,
};
use naming::RunId;
use prune::PruneResult;
use serde::{Deserialize, Serialize};
use store::{CacheExporter, Progress, SnapshotInfo, SnapshotStore};
use time::OffsetDateTime;

/// The events snapshot-trigger accepts, one per state of the nightly-backup state machine,
/// selected by the event's `action` field (see [`decode`]).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
// Decoded once per invocation and consumed at once: boxing the manifest step's fields saves nothing.
#[allow(clippy::large_enum_variant)]
pub enum SnapshotTriggerEvent {
    /// Start (or find, on a retry) this run's database and cache snapshots.
    Snapshot { scheduled_time: String },
    /// Poll the run's snapshots; `poll` counts the polls so far and is returned incremented.
    Status {
        scheduled_time: String,
        #[serde(default)]
        poll: u32,
    },
    /// Export the run's cache snapshot to the backup bucket.
    ExportCache { scheduled_time: String },
    /// Delete catalyst-dr's backup snapshots past their retention, keeping the newest N.
    Prune {
        #[serde(default)]
        dry_run: bool,
    },
    /// Write the run's manifest (once; a retry returns the one already written).
    WriteManifest {
        scheduled_time: String,
        started_at: String,
        #[serde(default)]
        export: Option<ExportResult>,
        #[serde(default)]
        prune: Option<PruneResult>,
        /// The `logical-backup` step's result, recorded in the manifest.
        #[serde(default)]
        logical: Option<crate::logical::backup::LogicalBackupResult>,
        /// The failure path: the failed step's error, recorded with what the run did take.
        #[serde(default)]
        failure: Option<manifest::RunFailure>,
    },
    /// Local engine only: a base backup of the source cluster (`pg_basebackup`), the starting
    /// point of point-in-time restores on this machine.
    BaseBackup { scheduled_time: String },
    /// The backup catalog: the manifests in the bucket, newest first.
    ListBackups {
        #[serde(default)]
        limit: Option<usize>,
    },
    /// Logical backup of the source database (`SOURCE_DATABASE_SECRET_ID`) for this run: every
    /// table at one instant, to locked S3 objects, manifest last; a retry returns the finished
    /// backup or redoes an unfinished one.
    LogicalBackup { scheduled_time: String },
    /// Loads the run's logical backup into the empty staging database of `target_secret_id`
    /// and checks row counts, content checksums and sequences against the manifest, as loaded;
    /// with `reread`, also by re-reading every restored table. `reset` lets a rerun drop what
    /// an interrupted restore of the same backup left in the staging database and start over.
    RestoreLogical {
        scheduled_time: String,
        target_secret_id: String,
        #[serde(default)]
        reread: bool,
        #[serde(default)]
        reset: bool,
    },
    /// Re-reads every object of the run's logical backup and checks it against the manifest.
    VerifyLogical { scheduled_time: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Aws(#[from] AwsCallError),
    #[error(
        "snapshot {id} already exists but is not a catalyst-dr backup of {source_id}; refusing to use it"
    )]
    NotOwned { id: String, source_id: String },
    #[error(
        "snapshot {id} was never started; run the snapshot action for this scheduled time first"
    )]
    NotStarted { id: String },
    #[error("base backups need the local engine: set {var}")]
    LocalEngineNotConfigured { var: &'static str },
    #[error(transparent)]
    LocalEngine(#[from] crate::pitr::engine::EngineError),
    #[error(transparent)]
    Connect(#[from] crate::postgres::PgConnectError),
    #[error(transparent)]
    Logical(#[from] crate::logical::LogicalError),
    #[error("manifest {key} in the backup bucket is not a valid backup manifest")]
    CorruptManifest {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl SnapshotError {
    /// Stable names for Step Functions `Retry`/`Catch`.
    pub fn error_type(&self) -> ErrorKind {
        match self {
            Self::Input(_) => ErrorKind::InvalidInput,
            Self::Aws(e) => e.error_type(),
            Self::NotOwned { .. } => ErrorKind::SnapshotNotOwned,
            Self::NotStarted { .. } => ErrorKind::SnapshotNotStarted,
            Self::CorruptManifest { .. } => ErrorKind::CorruptManifest,
            Self::LocalEngineNotConfigured { .. } => ErrorKind::Misconfigured,
            Self::LocalEngine(e) => e.error_type(),
            Self::Connect(e) => e.error_type(),
            Self::Logical(e) => e.error_type(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRef {
    pub snapshot: SnapshotInfo,
    /// False when this invocation started it; true when an earlier attempt had.
    pub reused: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRunResult {
    pub run_id: String,
    pub scheduled_time: String,
    pub started_at: String,
    pub retain_until: String,
    pub database: SnapshotRef,
    pub cache: Option<SnapshotRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResult {
    pub run_id: String,
    /// The least advanced of the run's snapshots: failed, else creating, else available.
    pub state: Progress,
    pub reason: Option<String>,
    pub poll: u32,
    pub database: SnapshotInfo,
    pub cache: Option<SnapshotInfo>,
}

/// The function's dependencies, built once per cold start.
pub struct SnapshotTrigger {
    pub config: SnapshotTriggerConfig,
    pub database: Box<dyn SnapshotStore>,
    pub cache: Option<Box<dyn SnapshotStore>>,
    pub exporter: Option<Box<dyn CacheExporter>>,
    pub objects: Box<dyn ObjectStore>,
    /// Logical backups, restore and verify (`logical-backup`, `restore-logical`, `verify-logical`).
    pub logical: crate::logical::LogicalBackups,
    /// Where the local engine's base backups go, when configured (`LOCAL_BASE_BACKUP_DIR`).
    pub local_base_backups: Option<crate::local_pg::LocalPgConfig>,
}

impl SnapshotTrigger {
    /// Decodes and runs one event. Input is fully validated before any AWS call.
    pub async fn handle(
        &self,
        event: serde_json::Value,
    ) -> Result<serde_json::Value, SnapshotError> {
        let event: SnapshotTriggerEvent = decode(event)?;
        let result = match event {
            SnapshotTriggerEvent::Snapshot { scheduled_time } => {
                let run = RunId::from_scheduled_time("scheduled_time", &scheduled_time)?;
                to_json(self.snapshot(&run).await?)
            }
            SnapshotTriggerEvent::Status {
                scheduled_time,
                poll,
            } => {
                let run = RunId::from_scheduled_time("scheduled_time", &scheduled_time)?;
                to_json(self.status(&run, poll).await?)
            }
            SnapshotTriggerEvent::ExportCache { scheduled_time } => {
                let run = RunId::from_scheduled_time("scheduled_time", &scheduled_time)?;
                to_json(self.export_cache(&run).await?)
            }
            SnapshotTriggerEvent::Prune { dry_run } => {
                to_json(self.prune(dry_run, OffsetDateTime::now_utc()).await?)
            }
            SnapshotTriggerEvent::WriteManifest {
                scheduled_time,
                started_at,
                export,
                prune,
                logical,
                failure,
            } => {
                let run = RunId::from_scheduled_time("scheduled_time", &scheduled_time)?;
                let started_at = parse_time("started_at", &started_at)?;
                to_json(
                    self.write_manifest(&run, started_at, export, prune, logical, failure)
                        .await?,
                )
            }
            SnapshotTriggerEvent::BaseBackup { scheduled_time } => {
                let run = RunId::from_scheduled_time("scheduled_time", &scheduled_time)?;
                let local = self.local_base_backups.as_ref().ok_or(
                    SnapshotError::LocalEngineNotConfigured {
                        var: crate::settings::LOCAL_BASE_BACKUP_DIR.name,
                    },
                )?;
                // The same source connection the logical backups use.
                let source = self.logical.source.as_ref().ok_or(
                    SnapshotError::LocalEngineNotConfigured {
                        var: crate::settings::SOURCE_DATABASE_SECRET_ID_LOGICAL.name,
                    },
                )?;
                to_json(
                    crate::local_pg::base_backup::take(
                        local,
                        &source.credentials().await?,
                        &run.stamp,
                    )
                    .await?,
                )
            }
            SnapshotTriggerEvent::ListBackups { limit } => to_json(self.list_backups(limit).await?),
            SnapshotTriggerEvent::LogicalBackup { scheduled_time } => {
                let run = RunId::from_scheduled_time("scheduled_time", &scheduled_time)?;
                to_json(self.logical.backup(&run).await?)
            }
            SnapshotTriggerEvent::RestoreLogical {
                scheduled_time,
                target_secret_id,
                reread,
                reset,
            } => {
                let run = RunId::from_scheduled_time("scheduled_time", &scheduled_time)?;
                if target_secret_id.trim().is_empty() {
                    return Err(InputError::new("target_secret_id", "must name a secret").into());
                }
                to_json(
                    self.logical
                        .restore(
                            &run,
                            &target_secret_id,
                            crate::logical::restore::RestoreOptions { reread, reset },
                        )
                        .await?,
                )
            }
            SnapshotTriggerEvent::VerifyLogical { scheduled_time } => {
                let run = RunId::from_scheduled_time("scheduled_time", &scheduled_time)?;
                to_json(self.logical.verify(&run).await?)
            }
        };
        Ok(result)
    }

    fn retain_until(&self, run: &RunId) -> OffsetDateTime {
        run.scheduled_time + time::Duration::days(self.config.retention_days.into())
    }

    fn stores(&self) -> impl Iterator<Item = &dyn SnapshotStore> {
        std::iter::once(self.database.as_ref()).chain(self.cache.as_deref())
    }

    /// Starts the snapshot in `store`, or returns the one an earlier attempt started.
    async fn start_one(
        &self,
        store: &dyn SnapshotStore,
        run: &RunId,
    ) -> Result<SnapshotRef, SnapshotError> {
        let id = run.snapshot_id(store.source_id());
        let tags = tags::backup_tags(
            &run.stamp,
            &self.config.schedule_name,
            self.retain_until(run),
        );
        let existing = store.describe(&id).await?;
        let reused = match existing {
            Some(_) => true,
            // Lost a race with a concurrent attempt: what it created is described below.
            None => !store.create(&id, &tags).await?,
        };
        let snapshot = store
            .describe(&id)
            .await?
            .ok_or_else(|| SnapshotError::NotStarted { id: id.clone() })?;
        if !tags::is_ours(&snapshot.tags, tags::ROLE_BACKUP)
            || snapshot.tags.get(tags::RUN_ID) != Some(&run.stamp)
        {
            return Err(SnapshotError::NotOwned {
                id,
                source_id: store.source_id().to_owned(),
            });
        }
        tracing::info!(snapshot_id = %snapshot.id, kind = ?snapshot.kind, reused, "snapshot started");
        Ok(SnapshotRef { snapshot, reused })
    }

    pub async fn snapshot(&self, run: &RunId) -> Result<SnapshotRunResult, SnapshotError> {
        let started_at = OffsetDateTime::now_utc();
        let database = self.start_one(self.database.as_ref(), run).await?;
        let cache = match &self.cache {
            Some(store) => Some(self.start_one(store.as_ref(), run).await?),
            None => None,
        };
        Ok(SnapshotRunResult {
            run_id: run.stamp.clone(),
            scheduled_time: format_time(run.scheduled_time),
            started_at: format_time(started_at),
            retain_until: format_time(self.retain_until(run)),
            database,
            cache,
        })
    }

    async fn describe_started(
        &self,
        store: &dyn SnapshotStore,
        run: &RunId,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let id = run.snapshot_id(store.source_id());
        store
            .describe(&id)
            .await?
            .ok_or(SnapshotError::NotStarted { id })
    }

    pub async fn status(&self, run: &RunId, poll: u32) -> Result<StatusResult, SnapshotError> {
        let database = self.describe_started(self.database.as_ref(), run).await?;
        let cache = match &self.cache {
            Some(store) => Some(self.describe_started(store.as_ref(), run).await?),
            None => None,
        };
        let all: Vec<&SnapshotInfo> = std::iter::once(&database).chain(cache.as_ref()).collect();
        let failed: Vec<String> = all
            .iter()
            .filter(|s| s.progress() == Progress::Failed)
            .map(|s| format!("snapshot {} is {}", s.id, s.status))
            .collect();
        let state = if !failed.is_empty() {
            Progress::Failed
        } else if all.iter().any(|s| s.progress() == Progress::Creating) {
            Progress::Creating
        } else {
            Progress::Available
        };
        let reason = (!failed.is_empty()).then(|| failed.join("; "));
        Ok(StatusResult {
            run_id: run.stamp.clone(),
            state,
            reason,
            poll: poll.saturating_add(1),
            database,
            cache,
        })
    }

    pub async fn export_cache(&self, run: &RunId) -> Result<ExportResult, SnapshotError> {
        let (Some(store), Some(exporter)) = (&self.cache, &self.exporter) else {
            let status = if self.cache.is_none() {
                ExportStatus::NoCacheConfigured
            } else {
                ExportStatus::DisabledByConfiguration
            };
            return Ok(ExportResult {
                status,
                bucket: None,
                target_name: None,
                objects: Vec::new(),
            });
        };
        let snapshot = self.describe_started(store.as_ref(), run).await?;
        let target_name = format!("{}-export", snapshot.id);
        let bucket = self.objects.bucket().to_owned();
        // ElastiCache names the exported objects after the target (`<target>-0001.rdb`).
        let mut objects: Vec<String> = self
            .objects
            .list(&target_name)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let status = if !objects.is_empty()
            || !exporter.export(&snapshot.id, &target_name, &bucket).await?
        {
            ExportStatus::AlreadyExported
        } else {
            ExportStatus::Started
        };
        objects.sort();
        Ok(ExportResult {
            status,
            bucket: Some(bucket),
            target_name: Some(target_name),
            objects,
        })
    }

    pub async fn prune(
        &self,
        dry_run: bool,
        now: OffsetDateTime,
    ) -> Result<PruneResult, SnapshotError> {
        let mut total = PruneResult {
            dry_run,
            ..PruneResult::default()
        };
        for store in self.stores() {
            let plan = prune::plan(&store.list().await?, now, self.config.keep_newest as usize);
            if !dry_run {
                for entry in &plan.deleted {
                    store.delete(&entry.id).await?;
                    tracing::info!(snapshot_id = %entry.id, reason = %entry.reason, "pruned snapshot");
                }
            }
            total.deleted.extend(plan.deleted);
            total.kept.extend(plan.kept);
            total.ignored += plan.ignored;
        }
        Ok(total)
    }

    pub async fn write_manifest(
        &self,
        run: &RunId,
        started_at: OffsetDateTime,
        export: Option<ExportResult>,
        pruned: Option<PruneResult>,
        logical: Option<crate::logical::backup::LogicalBackupResult>,
        failure: Option<manifest::RunFailure>,
    ) -> Result<BackupManifest, SnapshotError> {
        let key = manifest_key(&self.config.manifest_prefix, &run.stamp);
        if let Some(existing) = self.read_manifest(&key).await? {
            return Ok(existing);
        }
        let database = self.describe_started(self.database.as_ref(), run).await?;
        let source = self.database.source_details().await?;
        let cache = match &self.cache {
            Some(store) => Some(ManifestSnapshot::new(
                &self.describe_started(store.as_ref(), run).await?,
                &Default::default(),
            )),
            None => None,
        };
        let manifest = BackupManifest {
            format: MANIFEST_FORMAT.to_owned(),
            run_id: run.stamp.clone(),
            schedule: self.config.schedule_name.clone(),
            scheduled_time: run.scheduled_time,
            started_at,
            completed_at: OffsetDateTime::now_utc(),
            retain_until: self.retain_until(run),
            database: Some(ManifestSnapshot::new(&database, &source)),
            cache,
            cache_export: export,
            pruned,
            logical,
            failure,
        };
        let body = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");
        let put = self
            .objects
            .put_locked(&key, body, "application/json", manifest.retain_until)
            .await?;
        tracing::info!(%key, version_id = ?put.version_id, sha256 = %put.sha256, "manifest written");
        Ok(manifest)
    }

    async fn read_manifest(&self, key: &str) -> Result<Option<BackupManifest>, SnapshotError> {
        match self.objects.get(key).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| {
                SnapshotError::CorruptManifest {
                    key: key.to_owned(),
                    source,
                }
            }),
        }
    }

    pub async fn list_backups(
        &self,
        limit: Option<usize>,
    ) -> Result<Vec<CatalogEntry>, SnapshotError> {
        let mut keys: Vec<String> = self
            .objects
            .list(&self.config.manifest_prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| k.ends_with(".json"))
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
        let rds_client = aws_sdk_rds::Client::new(sdk);
        let cache_client = aws_sdk_elasticache::Client::new(sdk);
        let s3 = crate::aws_clients::s3_client(sdk, config.s3_force_path_style);
        let objects = crate::object_store::S3Objects::new(s3.clone(), &config.backup_bucket);
        let logical = crate::logical::LogicalBackups::new(
            config.logical.clone(),
            std::sync::Arc::new(crate::logical::upload::S3LogicalStore::new(
                s3,
                &config.backup_bucket,
            )),
            std::sync::Arc::new(aws_sdk_secretsmanager::Client::new(sdk)),
        );
        let cache = config
            .cache
            .clone()
            .map(|source| elasticache::ElastiCacheSnapshots::new(cache_client.clone(), source));
        let exporter: Option<Box<dyn CacheExporter>> = match (&config.cache, config.cache_export) {
            (Some(source), true) => Some(Box::new(elasticache::ElastiCacheSnapshots::new(
                cache_client,
                source.clone(),
            ))),
            _ => None,
        };
        Self {
            database: Box::new(rds::RdsSnapshots::new(rds_client, config.database.clone())),
            cache: cache.map(|c| Box::new(c) as Box<dyn SnapshotStore>),
            exporter,
            objects: Box::new(objects),
            local_base_backups: None,
            logical,
            config,
        }
    }
}
