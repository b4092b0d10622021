//! drill-validator: the baseline before a drill, the parity check of the restored environment
//! against it, RPO and RTO, and the drill report (runbook: validation cadence).

pub mod baseline;
pub mod cache;
pub mod config;
pub mod history;
pub mod metrics;
pub mod report;

use crate::aws_error::AwsCallError;
use crate::cache_engine::{CacheEngine, CacheEngineError};
use crate::cache_state::{CacheParity, CacheState};
use crate::catalyst_db::CatalystDbError;
use crate::catalyst_db::parity::{
    self, BaselineInstant, PartialFingerprint, TableFingerprint, TableRange,
};
use crate::drill_id::DrillId;
use crate::error_kind::ErrorKind;
use crate::flush_status::{ExpectedQueue, FlushStatus};
use crate::input::{InputError, decode, format_time, parse_time};
use crate::object_store::ObjectStore;
use crate::output::to_json;
use crate::postgres::{PgConnectError, PgConnector, SecretStore, connect_bounded};
use crate::queues::{QueueDepth, Queues, SqsQueues};
use crate::staging_secret::StagingSecret;
use crate::work_path::WorkPath;
use config::DrillConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use time::OffsetDateTime;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum DrillEvent {
    /// Capture the source's state at one exact instant, before the drill restores it: whole,
    /// or (`path` `fan-out`, or by default a source larger than `BASELINE_FANOUT_THRESHOLD_GIB`)
    /// opened for `baseline-batch` and `baseline-close`.
    Baseline {
        drill_id: DrillId,
        #[serde(default)]
        path: Option<WorkPath>,
    },
    /// Reads one batch of the opened baseline's source ranges in its held snapshot and stores
    /// their partial fingerprints; a retry answers the stored batch.
    BaselineBatch { drill_id: DrillId, batch: usize },
    /// Adds the batches up into the baseline and ends the snapshot's holder; a retry answers
    /// the stored baseline.
    BaselineClose { drill_id: DrillId },
    /// Ends the opened baseline's snapshot holder, if it still runs (the failure path).
    BaselineRelease { drill_id: DrillId },
    /// Compare the restored environment with the baseline; RPO and RTO.
    Validate {
        drill_id: DrillId,
        /// The point in time the staging copy was restored to.
        restore_point: String,
        /// When the drill started and when its smoke tests passed: the RTO.
        drill_started_at: String,
        smoke_passed_at: String,
        /// How far the source's latest restorable time trailed the present, when known.
        #[serde(default)]
        restorable_lag_seconds: Option<f64>,
        /// The flush step's status (`purged`, `purge-in-progress`, `flushed`, `preserved`, or
        /// `skipped` when no staging queue is configured): the staging queue must then be empty,
        /// left as it was, or not configured. Absent: empty.
        #[serde(default)]
        flush_status: Option<FlushStatus>,
        /// The staging cache's flush status (`flushed`, `preserved`; absent when the drill left
        /// the cache out): its queue keys must then be gone, or left as restored.
        #[serde(default)]
        cache_flush_status: Option<FlushStatus>,
    },
    /// The restored copy's tables split into block ranges, planned once and stored (a retry
    /// answers the stored plan), and the batches `parity-batch` reads them in: for a copy one
    /// invocation cannot read. `validate` then adds up what the batches stored.
    ParityPlan { drill_id: DrillId },
    /// Reads one batch of the planned ranges on the restored copy (nothing else writes to it)
    /// and stores their partial fingerprints; a retry answers the stored batch.
    ParityBatch { drill_id: DrillId, batch: usize },
    /// Compare the restored staging cache with the baseline's cache snapshot state, before the
    /// flush empties its queues. Once stored, a retry returns the stored comparison.
    CacheParity { drill_id: DrillId },
    /// Write the drill report (JSON, Markdown, HTML) and its metrics; alert when it failed.
    Report {
        drill_id: DrillId,
        /// The drill kind in metrics (`quarterly`, `monthly`); default from `DRILL_KIND`.
        #[serde(default)]
        kind: Option<String>,
        /// The drill state machine's state: every step's result, and `error` when a step failed.
        state: serde_json::Value,
    },
    /// Every drill's result, RTO, RPO and parity, newest first, read from the locked reports.
    ListDrills {
        /// How many (1..=1000, default 20).
        #[serde(default)]
        limit: Option<usize>,
    },
    /// The dead man's check, started daily by its own schedule: how long since a drill of `kind`
    /// last passed. Emits `DaysSinceLastPassedDrill`; fails (`DrillOverdue`) past `max_age_days`.
    Overdue { kind: String, max_age_days: u32 },
}

/// How many earlier drills the report page's trend shows.
const TREND_DRILLS: usize = 8;

/// Block ranges one `parity-batch` reads: 64 of 64 MiB, 4 GiB.
pub const PARITY_BATCH_RANGES: usize = 64;

/// The block ranges of the restored copy, or of the source for a fanned-out baseline, and
/// their batches (each a list of indexes into `ranges`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParityPlan {
    pub drill_id: String,
    pub ranges: Vec<TableRange>,
    pub batches: Vec<Vec<usize>>,
}

impl ParityPlan {
    fn new(drill_id: &str, ranges: Vec<TableRange>, batch_ranges: usize) -> Self {
        let indexes: Vec<usize> = (0..ranges.len()).collect();
        Self {
            drill_id: drill_id.to_owned(),
            batches: indexes
                .chunks(batch_ranges.max(1))
                .map(<[usize]>::to_vec)
                .collect(),
            ranges,
        }
    }
}

/// Which database a plan's batches read, and where they are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The restored copy: `parity-plan`, `parity-batch` (`drills/<id>/parity/`).
    Restored,
    /// The source, in a fanned-out baseline's held snapshot: `baseline`, `baseline-batch`
    /// (`drills/<id>/baseline/`).
    Source,
}

impl Side {
    fn folder(self) -> &'static str {
        match self {
            Self::Restored => "parity",
            Self::Source => "baseline",
        }
    }

    /// The steps that make the plan and read its batches, for messages.
    fn steps(self) -> (&'static str, &'static str) {
        match self {
            Self::Restored => ("parity-plan", "parity-batch"),
            Self::Source => ("baseline", "baseline-batch"),
        }
    }
}

/// What `parity-plan` answers: the Map's items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParityPlanSummary {
    pub drill_id: String,
    pub ranges: usize,
    pub batches: Vec<usize>,
}

/// One batch's partial fingerprints, stored for `validate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParityBatch {
    pub drill_id: String,
    pub batch: usize,
    pub parts: Vec<PartialFingerprint>,
    pub completed_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Aws(#[from] AwsCallError),
    #[error(transparent)]
    Connect(#[from] PgConnectError),
    #[error(transparent)]
    Database(#[from] CatalystDbError),
    #[error("no baseline for drill {drill_id}: run the baseline action first")]
    NoBaseline { drill_id: String },
    #[error("the staging secret holds no credentials for drill {drill_id}")]
    NoStagingCredentials { drill_id: String },
    #[error("reading a Redis")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Cache(#[from] CacheEngineError),
    #[error("the staging cache secret holds no cache for drill {drill_id}")]
    NoStagingCache { drill_id: String },
    #[error("{0}")]
    Misconfigured(String),
    #[error("no {kind} drill has passed for {age_days:.1} days (at most {max_age_days} allowed)")]
    Overdue {
        kind: String,
        age_days: f64,
        max_age_days: u32,
    },
    #[error("drill {drill_id}'s {folder} plan has {total} batches and {} of them stored no result (batches {}): run {step} for them, then go on", missing.len(), missing.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    ParityIncomplete {
        drill_id: String,
        folder: &'static str,
        step: &'static str,
        total: usize,
        missing: Vec<usize>,
    },
    #[error(
        "the snapshot {snapshot} drill {drill_id}'s baseline held for its batches has ended (released, or held until {held_until}); run the drill again"
    )]
    BaselineSnapshotGone {
        drill_id: String,
        snapshot: String,
        held_until: String,
    },
    #[error("stored {key} is not valid: {reason}")]
    CorruptParity { key: String, reason: String },
    #[error("stored {key} is not valid: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

impl DrillError {
    pub fn error_type(&self) -> ErrorKind {
        match self {
            Self::Input(_) => ErrorKind::InvalidInput,
            Self::Aws(e) => e.error_type(),
            Self::Connect(e) => e.error_type(),
            // A lock wait that timed out is worth another try.
            Self::Database(CatalystDbError::Postgres(e))
                if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
            {
                ErrorKind::BaselineLockTimeout
            }
            Self::Database(e) => e.error_type(),
            Self::Redis(_) => ErrorKind::RedisUnavailable,
            Self::Cache(e) => e.error_type(),
            Self::NoStagingCache { .. } => ErrorKind::NoStagingCredentials,
            Self::Misconfigured(_) => ErrorKind::Misconfigured,
            Self::NoBaseline { .. } => ErrorKind::NoBaseline,
            Self::NoStagingCredentials { .. } => ErrorKind::NoStagingCredentials,
            Self::Corrupt { .. } | Self::CorruptParity { .. } => ErrorKind::CorruptRecord,
            Self::Overdue { .. } => ErrorKind::DrillOverdue,
            Self::ParityIncomplete { .. } => ErrorKind::ParityIncomplete,
            Self::BaselineSnapshotGone { .. } => ErrorKind::BaselineSnapshotGone,
        }
    }
}

/// What the drill's flushes left: the staging queue as expected from its flush status, and the
/// staging cache's flush status (`None` when the drill left the cache out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushes {
    pub queue: ExpectedQueue,
    pub cache: Option<FlushStatus>,
}

/// The source as it stood at the baseline instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub drill_id: String,
    #[serde(flatten)]
    pub instant: BaselineInstant,
    pub tables: Vec<TableFingerprint>,
    pub deliveries_by_status: BTreeMap<String, i64>,
    pub queues: BTreeMap<String, QueueDepth>,
    /// The drill's cache snapshot and the queue state that goes with it (absent when the drill
    /// leaves the cache out: `CACHE_ENGINE=none`).
    pub cache: Option<CacheBaseline>,
    pub captured_at: String,
    /// Whether one invocation read the source, or a Map of them in a held snapshot (absent in
    /// baselines of earlier versions: one invocation).
    #[serde(default = "single")]
    pub path: WorkPath,
}

fn single() -> WorkPath {
    WorkPath::Single
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheBaseline {
    pub source_id: String,
    pub snapshot_id: String,
    pub state: CacheState,
    /// True when the state is the snapshot's own instant (see `SnapshotState::exact`).
    pub exact: bool,
    pub captured_at: String,
}

/// The cache half of the validation: parity before the flush, and the flush's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheCheck {
    pub snapshot_id: String,
    pub staging_target_id: String,
    pub exact_baseline: bool,
    pub parity: CacheParity,
    pub flush_status: String,
    /// Queue keys in the staging cache after the flush.
    pub queue_keys_after_flush: u64,
    pub flush_passed: bool,
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableParity {
    pub table: String,
    pub baseline_rows: i64,
    pub restored_rows: i64,
    pub checksum_matches: bool,
    /// Rows in the restored copy written after the baseline instant.
    pub written_after_baseline: i64,
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    pub seconds: f64,
    pub objective_seconds: u32,
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueCheck {
    pub expected: String,
    pub depth: Option<QueueDepth>,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    pub drill_id: String,
    pub passed: bool,
    pub tables: Vec<TableParity>,
    pub deliveries_baseline: BTreeMap<String, i64>,
    pub deliveries_restored: BTreeMap<String, i64>,
    pub queue: QueueCheck,
    pub baseline_instant: String,
    pub restore_point: String,
    /// Data the restore point misses: how far it lies before the baseline instant.
    pub rpo: Objective,
    pub restorable_lag_seconds: Option<f64>,
    /// From drill start to smoke tests passed.
    pub rto: Objective,
    /// The restored cache (absent when the drill leaves the cache out).
    #[serde(default)]
    pub cache: Option<CacheCheck>,
    pub completed_at: String,
}

pub struct DrillValidator {
    pub config: DrillConfig,
    pub source: PgConnector,
    pub secrets: Arc<dyn SecretStore>,
    pub objects: Box<dyn ObjectStore>,
    pub queues: Box<dyn Queues>,
    pub sns: aws_sdk_sns::Client,
    /// Where the drill snapshots the cache; `None`: the drill leaves it out.
    pub cache: Option<Box<dyn CacheEngine>>,
}

impl DrillValidator {
    pub async fn handle(&self, event: serde_json::Value) -> Result<serde_json::Value, DrillError> {
        let value = match decode::<DrillEvent>(event)? {
            DrillEvent::Baseline { drill_id, path } => {
                to_json(self.baseline(&drill_id, path).await?)
            }
            DrillEvent::BaselineBatch { drill_id, batch } => {
                to_json(self.baseline_batch(&drill_id, batch).await?)
            }
            DrillEvent::BaselineClose { drill_id } => {
                to_json(self.baseline_close(&drill_id).await?)
            }
            DrillEvent::BaselineRelease { drill_id } => {
                to_json(self.baseline_release(&drill_id).await?)
            }
            DrillEvent::Validate {
                drill_id,
                restore_point,
                drill_started_at,
                smoke_passed_at,
                restorable_lag_seconds,
                flush_status,
                cache_flush_status,
            } => {
                let restore_point = parse_time("restore_point", &restore_point)?;
                let started = parse_time("drill_started_at", &drill_started_at)?;
                let smoke = parse_time("smoke_passed_at", &smoke_passed_at)?;
                // Without a flush status the drill expects the flush emptied the queue.
                let expect_queue =
                    flush_status.map_or(ExpectedQueue::Empty, FlushStatus::expected_queue);
                to_json(
                    self.validate(
                        &drill_id,
                        restore_point,
                        started,
                        smoke,
                        restorable_lag_seconds,
                        Flushes {
                            queue: expect_queue,
                            cache: cache_flush_status,
                        },
                    )
                    .await?,
                )
            }
            DrillEvent::CacheParity { drill_id } => to_json(self.cache_parity(&drill_id).await?),
            DrillEvent::ParityPlan { drill_id } => to_json(self.parity_plan(&drill_id).await?),
            DrillEvent::ParityBatch { drill_id, batch } => {
                to_json(self.parity_batch(&drill_id, batch).await?)
            }
            DrillEvent::ListDrills { limit } => {
                let limit = limit.unwrap_or(20);
                if !(1..=1000).contains(&limit) {
                    return Err(InputError::new("limit", "must be 1 to 1000").into());
                }
                to_json(
                    history::list_drills(self.objects.as_ref(), &self.config.report_prefix, limit)
                        .await?,
                )
            }
            DrillEvent::Report {
                drill_id,
                kind,
                state,
            } => {
                let kind = kind.as_deref().unwrap_or(&self.config.drill_kind);
                check_kind(kind)?;
                to_json(self.report(&drill_id, kind, &state).await?)
            }
            DrillEvent::Overdue { kind, max_age_days } => {
                check_kind(&kind)?;
                if max_age_days == 0 {
                    return Err(InputError::new("max_age_days", "must be at least 1").into());
                }
                to_json(
                    self.overdue(&kind, max_age_days, OffsetDateTime::now_utc())
                        .await?,
                )
            }
        };
        Ok(value)
    }

    fn key(&self, drill_id: &str, name: &str) -> String {
        format!("{}{drill_id}/{name}", self.config.report_prefix)
    }

    /// The last passed drill of a kind. `_` cannot occur in a drill id, so no drill's records
    /// share this prefix.
    fn last_passed_key(&self, kind: &str) -> String {
        format!("{}_last-passed/{kind}.json", self.config.report_prefix)
    }

    /// Days since a drill of `kind` last passed, as a metric; an error past `max_age_days`. With
    /// no record yet, the first check starts the clock (a new deployment has run no drill).
    pub async fn overdue(
        &self,
        kind: &str,
        max_age_days: u32,
        now: OffsetDateTime,
    ) -> Result<OverdueResult, DrillError> {
        let key = self.last_passed_key(kind);
        let last = match self.load::<LastPassed>(&key).await? {
            Some(last) => last,
            None => {
                let start = LastPassed {
                    kind: kind.to_owned(),
                    drill_id: None,
                    passed_at: now,
                };
                self.store(&key, &start).await?;
                start
            }
        };
        let age_days = (now - last.passed_at).as_seconds_f64() / 86_400.0;
        println!("{}", metrics::overdue_line(kind, age_days, now));
        if age_days > f64::from(max_age_days) {
            return Err(DrillError::Overdue {
                kind: kind.to_owned(),
                age_days,
                max_age_days,
            });
        }
        Ok(OverdueResult {
            kind: kind.to_owned(),
            last_passed: last,
            age_days,
            max_age_days,
        })
    }

    fn retain_until(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc() + time::Duration::days(self.config.report_retention_days.into())
    }

    async fn load<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<T>, DrillError> {
        match self.objects.get(key).await? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| DrillError::Corrupt {
                        key: key.to_owned(),
                        source,
                    })
            }
        }
    }

    async fn store<T: Serialize>(&self, key: &str, value: &T) -> Result<(), DrillError> {
        let body = serde_json::to_vec_pretty(value).expect("plain data serialises");
        self.objects
            .put_locked(key, body, "application/json", self.retain_until())
            .await?;
        Ok(())
    }

    async fn queue_depths(&self) -> Result<BTreeMap<String, QueueDepth>, DrillError> {
        let mut depths = BTreeMap::new();
        for (name, url) in [
            ("webhook_queue", &self.config.webhook_queue_url),
            ("webhook_dlq", &self.config.webhook_dlq_url),
        ] {
            if let Some(url) = url {
                depths.insert(name.to_owned(), self.queues.depth(url).await?);
            }
        }
        Ok(depths)
    }

    /// The drill's stored baseline, or `NoBaseline`.
    async fn stored_baseline(&self, drill_id: &str) -> Result<Baseline, DrillError> {
        self.load(&self.key(drill_id, "baseline.json"))
            .await?
            .ok_or_else(|| DrillError::NoBaseline {
                drill_id: drill_id.to_owned(),
            })
    }

    pub async fn validate(
        &self,
        drill_id: &str,
        restore_point: OffsetDateTime,
        started: OffsetDateTime,
        smoke_passed: OffsetDateTime,
        restorable_lag_seconds: Option<f64>,
        flushes: Flushes,
    ) -> Result<Validation, DrillError> {
        let Flushes {
            queue: expect_queue,
            cache: cache_flush_status,
        } = flushes;
        let baseline = self.stored_baseline(drill_id).await?;
        // A planned fan-out read the copy in batches: add up what they stored.
        let plan = self
            .load::<ParityPlan>(&self.side_key(Side::Restored, drill_id, "plan"))
            .await?;
        let parity::Fingerprints {
            tables: restored,
            deliveries_by_status: deliveries_restored,
        } = match &plan {
            Some(plan) => {
                parity::combine(&self.stored_parts(Side::Restored, drill_id, plan).await?)
            }
            None => {
                let (staging, helpers) = self
                    .staging_connections(drill_id, self.config.parity_parallelism)
                    .await?;
                staging
                    .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
                    .map_err(CatalystDbError::from)?;
                let found = parity::fingerprint_parallel(
                    &staging,
                    &helpers,
                    baseline.instant.instant,
                    self.config.parity_range_blocks,
                )
                .await?;
                staging
                    .batch_execute("COMMIT")
                    .await
                    .map_err(CatalystDbError::from)?;
                found
            }
        };

        let tables: Vec<TableParity> = baseline
            .tables
            .iter()
            .map(|b| {
                let r = restored.iter().find(|r| r.table == b.table);
                let restored_rows = r.map_or(0, |r| r.rows);
                let checksum_matches = r.is_some_and(|r| r.checksum == b.checksum);
                TableParity {
                    table: b.table.clone(),
                    baseline_rows: b.rows,
                    restored_rows,
                    checksum_matches,
                    written_after_baseline: r.map_or(0, |r| r.written_after),
                    passed: checksum_matches && restored_rows == b.rows,
                }
            })
            .collect();

        let queue = check_staging_queue(
            self.queues.as_ref(),
            self.config.staging_queue_url.as_deref(),
            expect_queue,
        )
        .await?;

        let rpo_seconds = ((baseline.instant.instant - restore_point).as_seconds_f64()).max(0.0);
        let rpo = Objective {
            seconds: rpo_seconds,
            objective_seconds: self.config.rpo_objective_seconds,
            passed: rpo_seconds <= self.config.rpo_objective_seconds.into(),
        };
        let rto_seconds = (smoke_passed - started).as_seconds_f64();
        let rto = Objective {
            seconds: rto_seconds,
            objective_seconds: self.config.rto_objective_seconds,
            passed: rto_seconds <= self.config.rto_objective_seconds.into(),
        };
        let cache = self
            .cache_check(drill_id, &baseline, cache_flush_status)
            .await?;
        let passed = tables.iter().all(|t| t.passed)
            && queue.passed
            && rpo.passed
            && rto.passed
            && cache.as_ref().is_none_or(|c| c.passed);
        let validation = Validation {
            drill_id: drill_id.to_owned(),
            passed,
            tables,
            deliveries_baseline: baseline.deliveries_by_status.clone(),
            deliveries_restored,
            queue,
            baseline_instant: format_time(baseline.instant.instant),
            restore_point: format_time(restore_point),
            rpo,
            restorable_lag_seconds,
            rto,
            cache,
            completed_at: format_time(OffsetDateTime::now_utc()),
        };
        self.store(&self.key(drill_id, "validation.json"), &validation)
            .await?;
        tracing::info!(%drill_id, passed, "drill validated");
        Ok(validation)
    }

    fn side_key(&self, side: Side, drill_id: &str, name: &str) -> String {
        self.key(drill_id, &format!("{}/{name}.json", side.folder()))
    }

    /// `connections` connections to the drill's staging copy, the first apart (the staging
    /// secret must hold this drill's credentials).
    async fn staging_connections(
        &self,
        drill_id: &str,
        connections: u32,
    ) -> Result<(tokio_postgres::Client, Vec<tokio_postgres::Client>), DrillError> {
        let text = self
            .secrets
            .current(&self.config.staging_secret_id)
            .await?
            .unwrap_or_default();
        let secret = serde_json::from_str::<StagingSecret>(&text)
            .ok()
            .filter(|s| s.drill_id == drill_id)
            .ok_or_else(|| DrillError::NoStagingCredentials {
                drill_id: drill_id.to_owned(),
            })?;
        let credentials = secret.credentials();
        let connect = || connect_bounded(&credentials, &self.config.tls, &self.config.pg_bounds);
        let first = connect().await?;
        let mut more = Vec::new();
        for _ in 1..connections {
            more.push(connect().await?);
        }
        Ok((first, more))
    }

    /// `parity-plan`: the restored copy's block ranges, planned once; a retry answers the
    /// stored plan.
    pub async fn parity_plan(&self, drill_id: &str) -> Result<ParityPlanSummary, DrillError> {
        let key = self.side_key(Side::Restored, drill_id, "plan");
        let plan = match self.load::<ParityPlan>(&key).await? {
            Some(plan) => plan,
            None => {
                self.stored_baseline(drill_id).await?;
                let (staging, _) = self.staging_connections(drill_id, 1).await?;
                let ranges = parity::plan_ranges(&staging, self.config.parity_range_blocks).await?;
                let plan = ParityPlan::new(drill_id, ranges, self.config.parity_batch_ranges);
                self.store(&key, &plan).await?;
                plan
            }
        };
        Ok(ParityPlanSummary {
            drill_id: drill_id.to_owned(),
            ranges: plan.ranges.len(),
            batches: (0..plan.batches.len()).collect(),
        })
    }

    /// A side's stored plan; `InvalidInput` naming the step that makes it when there is none.
    async fn plan(&self, side: Side, drill_id: &str) -> Result<ParityPlan, DrillError> {
        self.load::<ParityPlan>(&self.side_key(side, drill_id, "plan"))
            .await?
            .ok_or_else(|| {
                let (planner, _) = side.steps();
                InputError::new(
                    "drill_id",
                    format!(
                        "drill {drill_id} has no {} plan: run {planner} first",
                        side.folder()
                    ),
                )
                .into()
            })
    }

    /// `parity-batch`: one batch of the plan's ranges read on `PARITY_PARALLELISM` connections
    /// to the restored copy (nothing else writes to it, so every statement sees the same rows)
    /// and stored; a retry answers the stored batch.
    pub async fn parity_batch(
        &self,
        drill_id: &str,
        batch: usize,
    ) -> Result<ParityBatch, DrillError> {
        self.read_batch(Side::Restored, drill_id, batch, async || {
            let baseline = self.stored_baseline(drill_id).await?;
            let (first, more) = self
                .staging_connections(drill_id, self.config.parity_parallelism)
                .await?;
            Ok((
                std::iter::once(first).chain(more).collect(),
                baseline.instant.instant,
            ))
        })
        .await
    }

    /// Reads batch `batch` of `side`'s plan on the connections `connect` opens (with the
    /// baseline instant rows are counted as written after), and stores it; a retry answers the
    /// stored batch without connecting.
    async fn read_batch(
        &self,
        side: Side,
        drill_id: &str,
        batch: usize,
        connect: impl AsyncFnOnce() -> Result<(Vec<tokio_postgres::Client>, OffsetDateTime), DrillError>,
    ) -> Result<ParityBatch, DrillError> {
        let plan = self.plan(side, drill_id).await?;
        let Some(members) = plan.batches.get(batch) else {
            return Err(InputError::new(
                "batch",
                format!(
                    "drill {drill_id}'s {} plan has batches 0 to {}",
                    side.folder(),
                    plan.batches.len().saturating_sub(1)
                ),
            )
            .into());
        };
        let key = self.side_key(side, drill_id, &format!("batch-{batch}"));
        if let Some(stored) = self.load::<ParityBatch>(&key).await? {
            return Ok(stored);
        }
        let ranges = members
            .iter()
            .map(|&r| {
                plan.ranges
                    .get(r)
                    .copied()
                    .ok_or_else(|| DrillError::CorruptParity {
                        key: self.side_key(side, drill_id, "plan"),
                        reason: format!("batch {batch} names range {r} of {}", plan.ranges.len()),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (clients, instant) = connect().await?;
        let parts = parity::fingerprint_ranges(&clients, ranges, instant).await?;
        let result = ParityBatch {
            drill_id: drill_id.to_owned(),
            batch,
            parts,
            completed_at: format_time(OffsetDateTime::now_utc()),
        };
        self.store(&key, &result).await?;
        tracing::info!(%drill_id, batch, side = side.folder(), "batch read");
        Ok(result)
    }

    /// Every batch's stored partial fingerprints; `ParityIncomplete` while any is missing.
    async fn stored_parts(
        &self,
        side: Side,
        drill_id: &str,
        plan: &ParityPlan,
    ) -> Result<Vec<PartialFingerprint>, DrillError> {
        let mut parts = Vec::new();
        let mut missing = Vec::new();
        for batch in 0..plan.batches.len() {
            let key = self.side_key(side, drill_id, &format!("batch-{batch}"));
            match self.load::<ParityBatch>(&key).await? {
                // One part per range of the batch, each of a table this version fingerprints
                // (with the deliveries' statuses).
                Some(stored)
                    if stored.parts.len() == plan.batches[batch].len()
                        && stored.parts.iter().all(PartialFingerprint::fits) =>
                {
                    parts.extend(stored.parts)
                }
                Some(stored) => {
                    return Err(DrillError::CorruptParity {
                        key,
                        reason: format!(
                            "{} parts for the batch's {} ranges, or a part of a table this version does not fingerprint, or deliveries without their statuses",
                            stored.parts.len(),
                            plan.batches[batch].len()
                        ),
                    });
                }
                None => missing.push(batch),
            }
        }
        if !missing.is_empty() {
            return Err(DrillError::ParityIncomplete {
                drill_id: drill_id.to_owned(),
                folder: side.folder(),
                step: side.steps().1,
                total: plan.batches.len(),
                missing,
            });
        }
        Ok(parts)
    }

    pub async fn report(
        &self,
        drill_id: &str,
        kind: &str,
        state: &serde_json::Value,
    ) -> Result<report::ReportSummary, DrillError> {
        let past = history::list_drills(
            self.objects.as_ref(),
            &self.config.report_prefix,
            TREND_DRILLS,
        )
        .await?;
        let rendered = report::render(drill_id, kind, state, &past);
        let retain = self.retain_until();
        let mut keys = Vec::new();
        for (name, body, content_type) in [
            (
                "report.json",
                serde_json::to_vec_pretty(&rendered.json).expect("plain data serialises"),
                "application/json",
            ),
            (
                "report.md",
                rendered.markdown.clone().into_bytes(),
                "text/markdown; charset=utf-8",
            ),
            (
                "report.html",
                rendered.html.clone().into_bytes(),
                "text/html; charset=utf-8",
            ),
        ] {
            let key = self.key(drill_id, name);
            self.objects
                .put_locked(&key, body, content_type, retain)
                .await?;
            keys.push(format!("s3://{}/{key}", self.objects.bucket()));
        }
        println!(
            "{}",
            metrics::emf_line(kind, &rendered.summary, OffsetDateTime::now_utc())
        );
        if rendered.summary.passed {
            let last = LastPassed {
                kind: kind.to_owned(),
                drill_id: Some(drill_id.to_owned()),
                passed_at: OffsetDateTime::now_utc(),
            };
            self.store(&self.last_passed_key(kind), &last).await?;
        }
        if !rendered.summary.passed
            && let Some(topic) = &self.config.alert_topic_arn
        {
            self.sns
                .publish()
                .topic_arn(topic)
                .subject(format!("catalyst-dr drill {drill_id} failed"))
                .message(rendered.markdown.clone())
                .send()
                .await
                .map_err(|e| crate::aws_error::classify("sns:Publish", e))?;
        }
        Ok(report::ReportSummary {
            keys,
            ..rendered.summary
        })
    }
}

/// The last drill of a kind that passed (or, before any, when the dead man's check started).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastPassed {
    pub kind: String,
    pub drill_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub passed_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverdueResult {
    pub kind: String,
    pub last_passed: LastPassed,
    pub age_days: f64,
    pub max_age_days: u32,
}

/// Drill kinds name S3 keys and metric dimensions: lowercase letters, digits and hyphens.
/// The parity check of the staging queue after the flush: empty, left as it was, or not
/// configured, as the flush status says.
async fn check_staging_queue(
    queues: &dyn Queues,
    staging_queue_url: Option<&str>,
    expect_queue: ExpectedQueue,
) -> Result<QueueCheck, AwsCallError> {
    Ok(match staging_queue_url {
        None => QueueCheck {
            expected: expect_queue.as_str().to_owned(),
            depth: None,
            passed: true,
            detail: "no staging queue configured".into(),
        },
        // The drill skipped the flush yet this function has a queue: the two disagree.
        Some(url) if expect_queue == ExpectedQueue::None => QueueCheck {
            expected: expect_queue.as_str().to_owned(),
            depth: None,
            passed: false,
            detail: format!(
                "the flush was skipped (no staging queue) but STAGING_QUEUE_URL is {url}"
            ),
        },
        Some(url) => {
            let depth = queues.depth(url).await?;
            let passed = expect_queue == ExpectedQueue::Preserved || depth.total() == 0;
            let detail = format!(
                "{} messages after the flush; expected {}",
                depth.total(),
                expect_queue.as_str()
            );
            QueueCheck {
                expected: expect_queue.as_str().to_owned(),
                depth: Some(depth),
                passed,
                detail,
            }
        }
    })
}

fn check_kind(kind: &str) -> Result<(), InputError> {
    let valid = !kind.is_empty()
        && kind.len() <= 32
        && kind
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(InputError::new(
            "kind",
            format!("{kind:?} must be 1 to 32 lowercase letters, digits or '-'"),
        ))
    }
}

impl DrillValidator {
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        let config = DrillConfig::from_env(&crate::config::ProcessEnv)?;
        let sdk = crate::aws_clients::load_sdk_config().await;
        Ok(Self::new(config, &sdk))
    }

    pub fn new(config: DrillConfig, sdk: &aws_config::SdkConfig) -> Self {
        let secrets = Arc::new(aws_sdk_secretsmanager::Client::new(sdk));
        let objects = crate::object_store::S3Objects::new(
            crate::aws_clients::s3_client(sdk, config.s3_force_path_style),
            &config.bucket,
        );
        Self {
            source: PgConnector::new(
                secrets.clone(),
                &config.source_secret_id,
                config.tls.clone(),
            )
            .with_bounds(config.pg_bounds),
            secrets,
            objects: Box::new(objects),
            queues: Box::new(SqsQueues::new(aws_sdk_sqs::Client::new(sdk))),
            sns: aws_sdk_sns::Client::new(sdk),
            cache: crate::cache_engine::build(&config.cache_engine, sdk),
            config,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queues::memory::MemoryQueues;

    const STAGING: &str = "https://sqs.memory/000000000000/staging-webhooks";

    fn staging_queue(messages: usize) -> MemoryQueues {
        let queues = MemoryQueues::new();
        queues.create(STAGING);
        for n in 0..messages {
            queues.push(STAGING, &format!("{{\"delivery_id\": {n}}}"));
        }
        queues
    }

    async fn check(
        queues: &MemoryQueues,
        url: Option<&str>,
        status: Option<FlushStatus>,
    ) -> QueueCheck {
        let expect = status.map_or(ExpectedQueue::Empty, FlushStatus::expected_queue);
        check_staging_queue(queues, url, expect).await.unwrap()
    }

    #[tokio::test]
    async fn a_flushed_queue_passes_only_when_empty() {
        for status in [
            None,
            Some(FlushStatus::Purged),
            Some(FlushStatus::PurgeInProgress),
        ] {
            let empty = check(&staging_queue(0), Some(STAGING), status).await;
            assert!(empty.passed, "{status:?}: {empty:?}");
            assert_eq!(empty.depth, Some(QueueDepth::default()));

            let left = check(&staging_queue(3), Some(STAGING), status).await;
            assert!(!left.passed, "{status:?}: {left:?}");
            assert_eq!(left.depth.map(|d| d.total()), Some(3));
            assert_eq!(left.detail, "3 messages after the flush; expected empty");
        }
    }

    #[tokio::test]
    async fn messages_in_flight_count_as_left_behind() {
        let queues = staging_queue(2);
        queues.receive(STAGING, 10, 300, 0).await.unwrap();
        let result = check(&queues, Some(STAGING), Some(FlushStatus::Purged)).await;
        assert!(!result.passed);
        assert_eq!(
            result.depth,
            Some(QueueDepth {
                visible: 0,
                in_flight: 2,
                delayed: 0
            })
        );
    }

    #[tokio::test]
    async fn a_preserved_queue_passes_with_its_messages() {
        let result = check(
            &staging_queue(4),
            Some(STAGING),
            Some(FlushStatus::Preserved),
        )
        .await;
        assert!(result.passed, "{result:?}");
        assert_eq!(result.expected, "preserved");
        assert_eq!(result.depth.map(|d| d.total()), Some(4));
    }

    #[tokio::test]
    async fn a_skipped_flush_fails_when_a_staging_queue_is_configured() {
        let queues = staging_queue(0);
        let result = check(&queues, Some(STAGING), Some(FlushStatus::Skipped)).await;
        assert!(!result.passed);
        assert_eq!(result.depth, None, "the queue is not read");

        let unconfigured = check(&queues, None, Some(FlushStatus::Skipped)).await;
        assert!(unconfigured.passed);
        assert_eq!(unconfigured.detail, "no staging queue configured");
    }

    #[tokio::test]
    async fn an_unreadable_queue_is_an_error_not_a_pass() {
        let queues = staging_queue(0);
        queues.fail_next("sqs:GetQueueAttributes");
        let err = check_staging_queue(&queues, Some(STAGING), ExpectedQueue::Empty)
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), ErrorKind::AwsTransient);
    }
}
