//! The fanned-out logical backup, for databases one invocation cannot read in its 15 minutes.
//!
//! No exported snapshot outlives its invocation, so the fan-out reads a quiescent copy of the
//! source restored to the backup instant (the read source, published in the staging secret by
//! pitr-restore), where every invocation sees the same rows:
//!
//! 1. `logical-path` chooses the path by the source's size (`LOGICAL_FANOUT_THRESHOLD_GIB`).
//! 2. `logical-fanout-plan` captures the read source's schema, plans the segments (the same
//!    block ranges as one invocation would), packs them into batches of about
//!    `LOGICAL_FANOUT_BATCH_MIB`, and stores the plan; it answers the batch numbers, the items
//!    of the state machine's Map.
//! 3. `logical-fanout-batch` backs up one batch's segments on `LOGICAL_PARALLELISM`
//!    connections, with the single path's code, and records each finished segment in a marker
//!    object; a retry skips the segments with a marker, so a failed item never redoes the rest.
//! 4. `logical-fanout-finish` writes the manifest only when every segment has its marker and
//!    the read source counted no write since the plan; `logical-fanout-abort` (the failure path)
//!    aborts the unfinished uploads.
//!
//! ```text
//! <prefix><run_id>/fanout/plan.json               the plan: schema, segments, batches
//! <prefix><run_id>/fanout/done/<segment>.json     one per finished segment (its manifest entry)
//! <prefix><run_id>/fanout/void.json               the read source was written to: the run's
//!                                                 segments are never used (every step refuses)
//! ```

use super::backup::{LogicalBackupResult, ManifestSource, SchemaCapture};
use super::layout::backup_prefix;
use super::manifest::{ManifestInstant, ManifestSegment, ReadPath, ReadSource};
use super::segments::Segment;
use super::{LogicalBackups, LogicalError};
use crate::catalyst_db::introspect::{self, BlockRange, ReadSourceState};
use crate::connection_jobs::on_connections;
use crate::input::InputError;
use crate::postgres::PgConnector;
use crate::run_id::RunId;
use crate::staging_secret::StagingSecret;
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub const PLAN_FORMAT: &str = "catalyst-dr/logical-fanout-plan/v1";

/// Markers read at once by `logical-fanout-finish`.
const MARKER_READS: usize = 32;

/// Which way tonight's logical backup goes: `logical-backup` in one invocation, the live
/// source at an exported snapshot, or the plan, batch and finish steps over a quiescent read
/// source.
pub use crate::work_path::WorkPath as BackupPath;

/// `logical-path`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathChoice {
    pub path: BackupPath,
    /// Why: `size`, `requested`, or `finished` (the run's manifest exists: its path).
    pub chosen_by: String,
    /// The source database's size; None when not measured.
    pub database_bytes: Option<u64>,
    pub threshold_bytes: u64,
    /// The id the read source is restored under (pitr-restore's `drill_id`).
    pub read_source_id: String,
}

/// One segment of the plan, with its expected size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedSegment {
    #[serde(flatten)]
    pub segment: Segment,
    /// Bytes of the table's storage the segment covers, as planned.
    pub bytes: u64,
}

/// The stored plan: everything the batches and the finish step need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutPlan {
    pub format: String,
    pub run_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub planned_at: OffsetDateTime,
    pub read_source: ReadSource,
    /// The read source when planned; the finish step requires the same writes count.
    pub state: ReadSourceState,
    pub capture: SchemaCapture,
    pub segments: Vec<PlannedSegment>,
    /// Each batch's segments (indexes into `segments`).
    pub batches: Vec<Vec<usize>>,
}

/// `logical-fanout-plan`'s answer: the Map's items are `batches`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanResult {
    pub run_id: String,
    pub plan_key: String,
    /// True when the run's plan existed and was returned.
    pub reused: bool,
    pub tables: usize,
    pub segments: usize,
    pub planned_bytes: u64,
    pub batches: Vec<usize>,
}

/// `logical-fanout-batch`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResult {
    pub batch: usize,
    pub segments: usize,
    /// Segments backed up by this invocation.
    pub copied: usize,
    /// Segments an earlier attempt finished (their markers exist).
    pub already_done: usize,
    pub rows: u64,
    pub object_bytes: u64,
}

/// `logical-fanout-abort`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortResult {
    pub run_id: String,
    pub aborted_uploads: usize,
}

/// What `logical-fanout-finish` found when the read source was written to, stored so the run's
/// segments are never used afterwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ChangedReadSource {
    target_id: String,
    planned: i64,
    now: i64,
}

impl ChangedReadSource {
    fn error(&self, run: &RunId) -> LogicalError {
        LogicalError::ReadSourceChanged {
            run_id: run.stamp.clone(),
            target_id: self.target_id.clone(),
            planned: self.planned,
            now: self.now,
        }
    }
}

/// A finished segment's marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DoneSegment {
    segment: usize,
    table: usize,
    entry: ManifestSegment,
}

pub fn plan_key(prefix: &str, run_id: &str) -> String {
    format!("{}fanout/plan.json", backup_prefix(prefix, run_id))
}

fn void_key(prefix: &str, run_id: &str) -> String {
    format!("{}fanout/void.json", backup_prefix(prefix, run_id))
}

fn done_prefix(prefix: &str, run_id: &str) -> String {
    format!("{}fanout/done/", backup_prefix(prefix, run_id))
}

fn done_key(prefix: &str, run_id: &str, segment: usize) -> String {
    format!("{}{segment:06}.json", done_prefix(prefix, run_id))
}

/// The read source's id for a run: pitr-restore restores it under this `drill_id`.
pub fn read_source_id(run: &RunId) -> String {
    format!("nightly-{}", run.stamp)
}

/// Packs segments of these sizes, in order (a plan has the largest tables first), into
/// consecutive batches of at most `batch_bytes` each; a segment larger than that is a batch of
/// its own. Answers each batch's segment numbers.
pub fn batches(sizes: impl IntoIterator<Item = u64>, batch_bytes: u64) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current_bytes = 0u64;
    for (i, bytes) in sizes.into_iter().enumerate() {
        match batches.last_mut() {
            Some(batch) if current_bytes + bytes <= batch_bytes => {
                batch.push(i);
                current_bytes += bytes;
            }
            _ => {
                batches.push(vec![i]);
                current_bytes = bytes;
            }
        }
    }
    batches
}

/// The storage a segment covers, from its table's size in blocks.
fn segment_bytes(range: &BlockRange, table_blocks: u64, block_size: u64) -> u64 {
    let end = range.end.map_or(table_blocks, u64::from).min(table_blocks);
    end.saturating_sub(u64::from(range.start)) * block_size
}

impl LogicalBackups {
    /// `logical-path`: the fan-out when `requested` says so or the source is larger than the
    /// threshold; a run whose manifest exists keeps the path it took.
    pub async fn choose_path(
        &self,
        run: &RunId,
        requested: Option<BackupPath>,
    ) -> Result<PathChoice, LogicalError> {
        let choice = |path, chosen_by: &str, database_bytes| PathChoice {
            path,
            chosen_by: chosen_by.to_owned(),
            database_bytes,
            threshold_bytes: self.config.fanout_threshold_bytes,
            read_source_id: read_source_id(run),
        };
        let key = super::layout::manifest_key(&self.config.prefix, &run.stamp);
        if let Some(manifest) = self.read_manifest(&key).await? {
            let path = match manifest.read_path {
                ReadPath::ExportedSnapshot => BackupPath::Single,
                ReadPath::ReadSource(_) => BackupPath::FanOut,
            };
            return Ok(choice(path, "finished", None));
        }
        if let Some(path) = requested {
            return Ok(choice(path, "requested", None));
        }
        let source = self.source()?;
        let bytes = introspect::database_bytes(&source.connect().await?).await?;
        let path = BackupPath::by_size(bytes, self.config.fanout_threshold_bytes);
        Ok(choice(path, "size", Some(bytes)))
    }

    /// `logical-fanout-plan`: plans the run's segments on the read source restored to
    /// `restored_to`; a retry returns the stored plan (refused if it was made on a copy restored
    /// to another instant).
    pub async fn plan_fanout(
        &self,
        run: &RunId,
        restored_to: OffsetDateTime,
    ) -> Result<PlanResult, LogicalError> {
        let restored_to = crate::input::format_time(restored_to);
        let key = plan_key(&self.config.prefix, &run.stamp);
        self.refuse_void(run).await?;
        if let Some(plan) = self.read_plan(run).await? {
            if plan.read_source.restored_to != restored_to {
                return Err(InputError::new(
                    "restored_to",
                    format!(
                        "run {} was planned on a copy restored to {}, not {restored_to}",
                        run.stamp, plan.read_source.restored_to
                    ),
                )
                .into());
            }
            return Ok(plan_result(&plan, key, true));
        }
        let (connector, secret) = self.read_source(run).await?;
        let client = connector.connect().await?;
        let state = introspect::read_source_state(&client).await?;
        introspect::begin_read_only(&client).await?;
        let capture = self.sort_not_captured(introspect::capture_schema(&client).await?);
        let stored = capture.schema.stored_tables();
        let sizes = introspect::table_blocks(&client, &stored).await?;
        let segments: Vec<PlannedSegment> = self
            .plan_segments(&client, &stored)
            .await?
            .into_iter()
            .map(|segment| PlannedSegment {
                bytes: segment_bytes(
                    &segment.range,
                    sizes.blocks[segment.table],
                    sizes.block_size,
                ),
                segment,
            })
            .collect();
        introspect::commit(&client).await?;
        let batches = batches(
            segments.iter().map(|s| s.bytes),
            self.config.fanout_batch_bytes,
        );
        let plan = FanoutPlan {
            format: PLAN_FORMAT.to_owned(),
            run_id: run.stamp.clone(),
            planned_at: OffsetDateTime::now_utc(),
            read_source: ReadSource {
                id: secret.drill_id,
                target_id: secret.target_id,
                restored_to,
                batches: batches.len(),
            },
            state,
            capture,
            segments,
            batches,
        };
        let body = serde_json::to_vec_pretty(&plan).expect("a plan always serialises");
        self.store
            .put_locked(&key, body, "application/json", self.retain_until(run))
            .await?;
        tracing::info!(%key, segments = plan.segments.len(), batches = plan.batches.len(), "fan-out planned");
        Ok(plan_result(&plan, key, false))
    }

    /// `logical-fanout-batch`: backs up batch `batch` of the run's plan; segments with a marker
    /// are skipped.
    pub async fn backup_batch(
        &self,
        run: &RunId,
        batch: usize,
    ) -> Result<BatchResult, LogicalError> {
        let plan = self.require_plan(run).await?;
        let Some(members) = plan.batches.get(batch) else {
            return Err(InputError::new(
                "batch",
                format!(
                    "run {} has batches 0 to {}",
                    run.stamp,
                    plan.batches.len().saturating_sub(1)
                ),
            )
            .into());
        };
        let mut todo = Vec::new();
        for &segment in members {
            let key = done_key(&self.config.prefix, &run.stamp, segment);
            if self.store.head(&key).await?.is_none() {
                todo.push(segment);
            }
        }
        let already_done = members.len() - todo.len();
        let mut result = BatchResult {
            batch,
            segments: members.len(),
            copied: 0,
            already_done,
            rows: 0,
            object_bytes: 0,
        };
        if todo.is_empty() {
            return Ok(result);
        }
        let (connector, _) = self.read_source_of(run, &plan.read_source).await?;
        let workers = (self.config.parallelism as usize).min(todo.len());
        let mut clients = Vec::with_capacity(workers);
        for _ in 0..workers {
            let client = connector.connect().await?;
            introspect::begin_read_only(&client).await?;
            clients.push(client);
        }
        let stored = plan.capture.schema.stored_tables();
        let retain_until = self.retain_until(run);
        let (stored, plan_ref) = (&stored, &plan);
        let written = on_connections(&clients, todo, |client, index| async move {
            let segment = plan_ref.segments[index].segment;
            let key = super::layout::segment_key(
                &self.config.prefix,
                &run.stamp,
                &stored[segment.table].schema,
                &stored[segment.table].name,
                segment.index,
            );
            // An earlier attempt that died mid-segment left its upload open.
            for pending in self.store.pending_uploads(&key).await? {
                if pending.key == key {
                    self.store.abort_upload(&key, &pending.upload_id).await?;
                }
            }
            let (table, entry) = self
                .backup_segment(
                    client,
                    stored[segment.table],
                    segment,
                    &run.stamp,
                    retain_until,
                )
                .await?;
            let marker = DoneSegment {
                segment: index,
                table,
                entry,
            };
            let body = serde_json::to_vec(&marker).expect("a marker always serialises");
            self.store
                .put_locked(
                    &done_key(&self.config.prefix, &run.stamp, index),
                    body,
                    "application/json",
                    retain_until,
                )
                .await?;
            Ok::<_, LogicalError>(marker.entry)
        })
        .await?;
        for client in &clients {
            introspect::commit(client).await?;
        }
        result.copied = written.len();
        result.rows = written.iter().map(|e| e.rows).sum();
        result.object_bytes = written.iter().map(|e| e.object_bytes).sum();
        Ok(result)
    }

    /// `logical-fanout-finish`: the manifest, once every segment has its marker and the read
    /// source is unchanged since the plan.
    pub async fn finish_fanout(&self, run: &RunId) -> Result<LogicalBackupResult, LogicalError> {
        if let Some(finished) = self.finished(run).await? {
            return Ok(finished);
        }
        let plan = self.require_plan(run).await?;
        let markers = self.read_markers(run, &plan).await?;
        let missing: Vec<usize> = (0..plan.segments.len())
            .filter(|i| markers[*i].is_none())
            .collect();
        if !missing.is_empty() {
            let aborted = self
                .abort_pending(&backup_prefix(&self.config.prefix, &run.stamp))
                .await?;
            tracing::error!(missing = missing.len(), aborted, "fan-out incomplete");
            return Err(LogicalError::SegmentsMissing {
                run_id: run.stamp.clone(),
                missing: missing.len(),
                total: plan.segments.len(),
                first: missing
                    .iter()
                    .take(5)
                    .map(|&i| describe(&plan, i))
                    .collect(),
            });
        }
        let (connector, _) = self.read_source_of(run, &plan.read_source).await?;
        let now = introspect::read_source_state(&connector.connect().await?).await?;
        if now.user_table_writes != plan.state.user_table_writes {
            let changed = ChangedReadSource {
                target_id: plan.read_source.target_id.clone(),
                planned: plan.state.user_table_writes,
                now: now.user_table_writes,
            };
            // The stored segments may hold the writes: no later attempt may use them.
            let body = serde_json::to_vec(&changed).expect("a record always serialises");
            self.store
                .put_locked(
                    &void_key(&self.config.prefix, &run.stamp),
                    body,
                    "application/json",
                    self.retain_until(run),
                )
                .await?;
            return Err(changed.error(run));
        }
        let written = markers
            .into_iter()
            .flatten()
            .map(|m| (m.table, m.entry))
            .collect();
        let manifest = self.new_manifest(
            run,
            plan.planned_at,
            ManifestSource {
                instant: ManifestInstant {
                    server_time: plan.read_source.restored_to.clone(),
                    lsn: plan.state.lsn.clone(),
                },
                database: plan.state.database.clone(),
                server_version: plan.state.server_version.clone(),
                read_path: ReadPath::ReadSource(plan.read_source.clone()),
            },
            plan.capture,
            written,
        );
        self.commit_manifest(manifest, 0).await
    }

    /// `logical-fanout-abort`: the failure path's cleanup of the run's unfinished uploads. The
    /// finished segments stay (they are locked), and a later run of the same night reuses them.
    pub async fn abort_fanout(&self, run: &RunId) -> Result<AbortResult, LogicalError> {
        let aborted = self
            .abort_pending(&backup_prefix(&self.config.prefix, &run.stamp))
            .await?;
        Ok(AbortResult {
            run_id: run.stamp.clone(),
            aborted_uploads: aborted,
        })
    }

    /// `ReadSourceChanged` for a run whose finish found its read source written to: its stored
    /// segments are never used, by a retry or a rerun of the night.
    async fn refuse_void(&self, run: &RunId) -> Result<(), LogicalError> {
        let key = void_key(&self.config.prefix, &run.stamp);
        match self.read_json::<ChangedReadSource>(&key).await? {
            None => Ok(()),
            Some(changed) => Err(changed.error(run)),
        }
    }

    async fn read_plan(&self, run: &RunId) -> Result<Option<FanoutPlan>, LogicalError> {
        let key = plan_key(&self.config.prefix, &run.stamp);
        let Some(plan) = self.read_json::<FanoutPlan>(&key).await? else {
            return Ok(None);
        };
        if plan.format != PLAN_FORMAT {
            return Err(LogicalError::UnsupportedManifestFormat {
                key,
                format: plan.format,
            });
        }
        Ok(Some(plan))
    }

    /// The run's plan, unless the run was voided (its read source was written to).
    async fn require_plan(&self, run: &RunId) -> Result<FanoutPlan, LogicalError> {
        self.refuse_void(run).await?;
        self.read_plan(run)
            .await?
            .ok_or_else(|| LogicalError::BackupIncomplete {
                run_id: run.stamp.clone(),
                key: plan_key(&self.config.prefix, &run.stamp),
            })
    }

    /// Every segment's marker, by segment index (None where missing).
    async fn read_markers(
        &self,
        run: &RunId,
        plan: &FanoutPlan,
    ) -> Result<Vec<Option<DoneSegment>>, LogicalError> {
        let keys: Vec<String> = self
            .store
            .list(&done_prefix(&self.config.prefix, &run.stamp))
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let read: Vec<DoneSegment> = futures_util::stream::iter(keys)
            .map(|key| async move {
                let bytes = self.store.get(&key).await?.unwrap_or_default();
                serde_json::from_slice::<DoneSegment>(&bytes)
                    .map_err(|source| LogicalError::CorruptManifest { key, source })
            })
            .buffer_unordered(MARKER_READS)
            .try_collect()
            .await?;
        let mut markers: Vec<Option<DoneSegment>> = vec![None; plan.segments.len()];
        for marker in read {
            if let Some(slot) = markers.get_mut(marker.segment) {
                *slot = Some(marker);
            }
        }
        Ok(markers)
    }

    /// The read source's connector, after checking that the staging secret holds the copy
    /// restored for this run.
    async fn read_source(&self, run: &RunId) -> Result<(PgConnector, StagingSecret), LogicalError> {
        let secret_id =
            self.config
                .read_source_secret_id
                .as_ref()
                .ok_or(LogicalError::NotConfigured {
                    var: crate::settings::STAGING_SECRET_ID_LOGICAL.name,
                })?;
        let tls = self.config.tls.clone().ok_or(LogicalError::NotConfigured {
            var: crate::settings::PG_TLS.name,
        })?;
        let text = self.secrets.secret_string(secret_id).await?;
        let expected = read_source_id(run);
        let secret: StagingSecret = serde_json::from_str(&text)
            .ok()
            .filter(|s: &StagingSecret| s.drill_id == expected)
            .ok_or_else(|| LogicalError::NoReadSource {
                run_id: run.stamp.clone(),
                expected: expected.clone(),
            })?;
        Ok((
            PgConnector::new(self.secrets.clone(), secret_id.clone(), tls),
            secret,
        ))
    }

    /// [`Self::read_source`], also requiring the copy the plan was made on.
    async fn read_source_of(
        &self,
        run: &RunId,
        planned: &ReadSource,
    ) -> Result<(PgConnector, StagingSecret), LogicalError> {
        let (connector, secret) = self.read_source(run).await?;
        if secret.target_id != planned.target_id {
            return Err(LogicalError::NoReadSource {
                run_id: run.stamp.clone(),
                expected: format!("{} on {}", planned.id, planned.target_id),
            });
        }
        Ok((connector, secret))
    }
}

fn plan_result(plan: &FanoutPlan, plan_key: String, reused: bool) -> PlanResult {
    PlanResult {
        run_id: plan.run_id.clone(),
        plan_key,
        reused,
        tables: plan.capture.schema.stored_tables().len(),
        segments: plan.segments.len(),
        planned_bytes: plan.segments.iter().map(|s| s.bytes).sum(),
        batches: (0..plan.batches.len()).collect(),
    }
}

/// A planned segment as `schema.table#index`.
fn describe(plan: &FanoutPlan, segment: usize) -> String {
    let s = plan.segments[segment].segment;
    let table = plan.capture.schema.stored_tables()[s.table];
    format!("{}.{}#{}", table.schema, table.name, s.index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_fill_up_to_the_size_and_an_oversized_segment_goes_alone() {
        assert_eq!(
            batches([60, 60, 30, 200, 10, 0, 5], 100),
            vec![vec![0], vec![1, 2], vec![3], vec![4, 5, 6]]
        );
        assert!(batches([], 100).is_empty());
        // Every segment lands in exactly one batch, in order.
        let all: Vec<usize> = batches([7; 50], 20).concat();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn a_segment_covers_its_blocks_and_the_open_last_one_the_rest() {
        let range = |start, end| BlockRange { start, end };
        assert_eq!(segment_bytes(&range(0, Some(8)), 20, 8192), 8 * 8192);
        assert_eq!(segment_bytes(&range(16, None), 20, 8192), 4 * 8192);
        assert_eq!(segment_bytes(&BlockRange::WHOLE, 0, 8192), 0);
        // A table that shrank since its ranges were planned.
        assert_eq!(segment_bytes(&range(16, Some(24)), 10, 8192), 0);
    }

    #[test]
    fn the_read_source_id_is_a_valid_drill_id() {
        let run = RunId::from_scheduled_time("t", "2026-11-26T03:00:00Z").unwrap();
        let id = read_source_id(&run);
        assert_eq!(id, "nightly-20261126t030000z");
        assert_eq!(
            crate::drill_id::DrillId::from_name(&id).unwrap().as_str(),
            id
        );
    }
}
