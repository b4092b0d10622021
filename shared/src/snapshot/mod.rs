//! RDS and ElastiCache snapshots with deterministic ids, the export of the cache snapshot and
//! retention pruning (runbook: PostgreSQL step 1, Redis).

pub mod config;
pub mod dr;
pub mod elasticache;
#[cfg(any(test, feature = "memory"))]
pub mod memory;
pub mod prune;
pub mod rds;
pub mod store;

use crate::aws_error::AwsCallError;
use crate::error_kind::ErrorKind;
use crate::input::format_time;
use crate::object_store::ObjectStore;
use crate::run_id::RunId;
use crate::tags;
use config::SnapshotConfig;
use prune::PruneResult;
use serde::{Deserialize, Serialize};
use store::{CacheExporter, Progress, SnapshotInfo, SnapshotStore, SourceDetails};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
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
    #[error("snapshot {id} is {status}, not available: it can be copied only once available")]
    NotAvailable { id: String, status: String },
}

impl SnapshotError {
    /// Stable names for Step Functions `Retry`/`Catch`.
    pub fn error_type(&self) -> ErrorKind {
        match self {
            Self::Aws(e) => e.error_type(),
            Self::NotOwned { .. } => ErrorKind::SnapshotNotOwned,
            Self::NotStarted { .. } => ErrorKind::SnapshotNotStarted,
            Self::NotAvailable { .. } => ErrorKind::SnapshotNotAvailable,
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

/// What happened to the export of the cache snapshot to the backup bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportResult {
    pub status: ExportStatus,
    pub bucket: Option<String>,
    pub target_name: Option<String>,
    /// Export objects already in the bucket (ElastiCache writes them when the copy finishes).
    pub objects: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportStatus {
    Started,
    AlreadyExported,
    NoCacheConfigured,
    DisabledByConfiguration,
}

/// The database and cache snapshots of one configuration, and the bucket the cache export goes to.
pub struct Snapshots {
    pub config: SnapshotConfig,
    pub database: Box<dyn SnapshotStore>,
    pub cache: Option<Box<dyn SnapshotStore>>,
    pub exporter: Option<Box<dyn CacheExporter>>,
    /// The backup bucket, where the cache export lands.
    pub objects: Box<dyn ObjectStore>,
    /// Copies of the database snapshot in the DR region, when configured.
    pub dr: Option<dr::DrSnapshots>,
}

impl Snapshots {
    /// The RDS and ElastiCache stores `config` names; `objects` is the backup bucket; `dr`, the
    /// region and key of the DR copies.
    pub fn new(
        config: SnapshotConfig,
        sdk: &aws_config::SdkConfig,
        objects: Box<dyn ObjectStore>,
        dr: Option<dr::DrSnapshotConfig>,
    ) -> Self {
        let rds_client = aws_sdk_rds::Client::new(sdk);
        let cache_client = aws_sdk_elasticache::Client::new(sdk);
        let cache = config.cache.clone().map(|source| {
            Box::new(elasticache::ElastiCacheSnapshots::new(
                cache_client.clone(),
                source,
            )) as Box<dyn SnapshotStore>
        });
        let exporter: Option<Box<dyn CacheExporter>> = match (&config.cache, config.cache_export) {
            (Some(source), true) => Some(Box::new(elasticache::ElastiCacheSnapshots::new(
                cache_client,
                source.clone(),
            ))),
            _ => None,
        };
        let dr = dr.map(|dr_config| {
            let client = aws_sdk_rds::Client::from_conf(
                aws_sdk_rds::config::Builder::from(sdk)
                    .region(aws_config::Region::new(dr_config.region.clone()))
                    .build(),
            );
            dr::DrSnapshots {
                store: Box::new(rds::RdsSnapshots::new(client, config.database.clone())),
                config: dr_config,
            }
        });
        Self {
            database: Box::new(rds::RdsSnapshots::new(rds_client, config.database.clone())),
            cache,
            exporter,
            objects,
            dr,
            config,
        }
    }

    /// What the source database reports about itself, for the manifest.
    pub async fn source_details(&self) -> Result<SourceDetails, SnapshotError> {
        Ok(self.database.source_details().await?)
    }

    /// When the run's snapshots (and every record of the run) may be deleted.
    pub fn retain_until(&self, run: &RunId) -> OffsetDateTime {
        run.scheduled_time + time::Duration::days(self.config.retention_days.into())
    }

    /// The database's store, then the cache's when one is configured.
    pub fn stores(&self) -> impl Iterator<Item = &dyn SnapshotStore> {
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

    /// The run's snapshot in `store`; [`SnapshotError::NotStarted`] when no attempt started it.
    pub async fn describe_started(
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_store::memory::MemoryObjects;
    use crate::rds::DbSource;
    use crate::tags::Tags;
    use elasticache::CacheSource;
    use memory::MemorySnapshots;
    use store::SnapshotKind;
    use time::macros::datetime;

    struct Fixture {
        snapshots: Snapshots,
        database: MemorySnapshots,
        cache: MemorySnapshots,
        bucket: MemoryObjects,
    }

    fn config(cache_export: bool) -> SnapshotConfig {
        SnapshotConfig {
            database: DbSource::Instance("prod-db".into()),
            cache: Some(CacheSource::ReplicationGroup("prod-cache".into())),
            cache_export,
            retention_days: 35,
            keep_newest: 2,
            schedule_name: "nightly".into(),
        }
    }

    /// The database and a cache, the cache exported to the bucket.
    fn fixture() -> Fixture {
        let database = MemorySnapshots::new(SnapshotKind::RdsInstance, "prod-db");
        let cache = MemorySnapshots::new(SnapshotKind::ElasticacheReplicationGroup, "prod-cache");
        let bucket = MemoryObjects::new("backups");
        Fixture {
            snapshots: Snapshots {
                config: config(true),
                database: Box::new(database.clone()),
                cache: Some(Box::new(cache.clone())),
                exporter: Some(Box::new(cache.clone())),
                objects: Box::new(bucket.clone()),
                dr: None,
            },
            database,
            cache,
            bucket,
        }
    }

    fn run(time: &str) -> RunId {
        RunId::from_scheduled_time("scheduled_time", time).unwrap()
    }

    #[tokio::test]
    async fn a_retry_reuses_the_snapshots_the_first_attempt_started() {
        let f = fixture();
        let run = run("2026-11-26T03:00:00Z");

        let first = f.snapshots.snapshot(&run).await.unwrap();
        let retry = f.snapshots.snapshot(&run).await.unwrap();

        assert!(!first.database.reused && !first.cache.as_ref().unwrap().reused);
        assert!(retry.database.reused && retry.cache.as_ref().unwrap().reused);
        assert_eq!(f.database.ids(), ["catalyst-dr-prod-db-20261126t030000z"]);
        assert_eq!(f.cache.ids(), ["catalyst-dr-prod-cache-20261126t030000z"]);
        let tags = &first.database.snapshot.tags;
        assert_eq!(tags.get(crate::tags::RUN_ID), Some(&run.stamp));
        assert_eq!(
            tags.get(crate::tags::RETAIN_UNTIL).map(String::as_str),
            Some("2026-12-31T03:00:00Z")
        );
    }

    #[tokio::test]
    async fn a_snapshot_with_the_runs_id_that_is_not_ours_is_refused() {
        let run = run("2026-11-26T03:00:00Z");
        let id = run.snapshot_id("prod-db");
        let someone_elses = Tags::from([("owner".to_owned(), "dba".to_owned())]);
        let other_run = tags::backup_tags("20261125t030000z", "nightly", run.scheduled_time);
        let mut copied_tags = tags::backup_tags(&run.stamp, "nightly", run.scheduled_time);
        copied_tags.insert(tags::CREATED_BY.to_owned(), "another-tool".to_owned());
        for foreign in [someone_elses, other_run, copied_tags] {
            let f = fixture();
            f.database
                .insert(f.database.info(&id, "manual", "available", foreign.clone()));

            let err = f.snapshots.snapshot(&run).await.unwrap_err();

            assert!(
                matches!(&err, SnapshotError::NotOwned { id: refused, .. } if *refused == id),
                "{err}"
            );
            assert_eq!(err.error_type(), ErrorKind::SnapshotNotOwned);
            assert_eq!(f.database.ids(), std::slice::from_ref(&id));
            assert_eq!(
                f.database.describe(&id).await.unwrap().unwrap().tags,
                foreign
            );
            assert!(f.cache.ids().is_empty(), "refused before the cache");
        }
    }

    #[tokio::test]
    async fn status_is_the_least_advanced_snapshot() {
        let f = fixture();
        let run = run("2026-11-26T03:00:00Z");
        let not_started = f.snapshots.status(&run, 0).await.unwrap_err();
        assert!(matches!(not_started, SnapshotError::NotStarted { .. }));

        f.snapshots.snapshot(&run).await.unwrap();
        let (db, cache) = (run.snapshot_id("prod-db"), run.snapshot_id("prod-cache"));
        let cases = [
            ("available", "available", Progress::Available),
            ("available", "creating", Progress::Creating),
            ("creating", "available", Progress::Creating),
            ("failed", "creating", Progress::Failed),
            ("available", "incompatible-restore", Progress::Failed),
        ];
        for (db_status, cache_status, expected) in cases {
            f.database.set_status(&db, db_status);
            f.cache.set_status(&cache, cache_status);
            let status = f.snapshots.status(&run, 4).await.unwrap();
            assert_eq!(status.state, expected, "{db_status} + {cache_status}");
            assert_eq!(status.poll, 5);
            match expected {
                Progress::Failed => {
                    let reason = status.reason.unwrap();
                    let failed = if db_status == "failed" { &db } else { &cache };
                    assert!(reason.contains(failed.as_str()), "{reason}");
                }
                _ => assert_eq!(status.reason, None),
            }
        }
    }

    /// Our backups of the database, one a day, all past retention, and others' snapshots.
    fn seed_for_pruning(f: &Fixture, now: OffsetDateTime) {
        for day in 1..=4u8 {
            let run = run(&format!("2026-01-{day:02}T03:00:00Z"));
            f.database.set_now(run.scheduled_time);
            let tags = tags::backup_tags(&run.stamp, "nightly", now - time::Duration::days(1));
            f.database.insert(f.database.info(
                &run.snapshot_id("prod-db"),
                "manual",
                "available",
                tags,
            ));
        }
        f.database.set_now(datetime!(2025-12-01 00:00 UTC));
        let expired = tags::backup_tags("x", "nightly", now - time::Duration::days(1));
        let mut untagged = expired.clone();
        untagged.remove(tags::CREATED_BY);
        f.database.insert(
            f.database
                .info("manual-by-a-dba", "manual", "available", untagged),
        );
        f.database.insert(f.database.info(
            "rds:prod-db-2025-12-01",
            "automated",
            "available",
            expired,
        ));
    }

    #[tokio::test]
    async fn prune_deletes_only_our_expired_backups_beyond_the_newest() {
        let f = fixture();
        let now = datetime!(2026-03-01 00:00 UTC);
        seed_for_pruning(&f, now);

        let result = f.snapshots.prune(false, now).await.unwrap();

        let deleted: Vec<&str> = result.deleted.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            deleted,
            [
                "catalyst-dr-prod-db-20260102t030000z",
                "catalyst-dr-prod-db-20260101t030000z"
            ]
        );
        assert_eq!(
            f.database.ids(),
            [
                "catalyst-dr-prod-db-20260103t030000z",
                "catalyst-dr-prod-db-20260104t030000z",
                "manual-by-a-dba",
                "rds:prod-db-2025-12-01",
            ]
        );
        assert_eq!(result.kept.len(), 2);
        assert_eq!(result.ignored, 2);
    }

    #[tokio::test]
    async fn a_dry_run_prune_deletes_nothing() {
        let f = fixture();
        let now = datetime!(2026-03-01 00:00 UTC);
        seed_for_pruning(&f, now);
        let before = f.database.ids();

        let result = f.snapshots.prune(true, now).await.unwrap();

        assert!(result.dry_run);
        assert_eq!(result.deleted.len(), 2, "reported as it would be");
        assert_eq!(f.database.ids(), before);
    }

    #[tokio::test]
    async fn the_cache_export_runs_once_and_only_when_configured() {
        let run = run("2026-11-26T03:00:00Z");
        let target = format!("{}-export", run.snapshot_id("prod-cache"));

        let mut no_cache = fixture();
        no_cache.snapshots.cache = None;
        no_cache.snapshots.exporter = None;
        let result = no_cache.snapshots.export_cache(&run).await.unwrap();
        assert_eq!(result.status, ExportStatus::NoCacheConfigured);

        let mut disabled = fixture();
        disabled.snapshots.exporter = None;
        disabled.snapshots.snapshot(&run).await.unwrap();
        let result = disabled.snapshots.export_cache(&run).await.unwrap();
        assert_eq!(result.status, ExportStatus::DisabledByConfiguration);
        assert!(disabled.cache.exports().is_empty());

        let f = fixture();
        f.snapshots.snapshot(&run).await.unwrap();
        let started = f.snapshots.export_cache(&run).await.unwrap();
        assert_eq!(started.status, ExportStatus::Started);
        assert_eq!(started.target_name.as_deref(), Some(target.as_str()));
        let again = f.snapshots.export_cache(&run).await.unwrap();
        assert_eq!(again.status, ExportStatus::AlreadyExported);
        assert_eq!(f.cache.exports().len(), 1, "not restarted");
        assert_eq!(f.cache.exports()[0].bucket, "backups");

        // The export's objects are already in the bucket: the export is not asked for again.
        let landed = fixture();
        landed.snapshots.snapshot(&run).await.unwrap();
        landed
            .bucket
            .put_unlocked(&format!("{target}-0001.rdb"), b"REDIS".to_vec());
        let result = landed.snapshots.export_cache(&run).await.unwrap();
        assert_eq!(result.status, ExportStatus::AlreadyExported);
        assert_eq!(result.objects, [format!("{target}-0001.rdb")]);
        assert!(landed.cache.exports().is_empty());
    }
}
