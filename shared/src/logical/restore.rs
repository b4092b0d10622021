//! `restore-logical`: loads a finished logical backup into an empty staging database, then checks
//! every table against the manifest.
//!
//! Three steps, each its own invocation when a backup is too large for one (the restore test's
//! Map), or one after the other in one invocation (`restore-logical`):
//!
//! - `restore-logical-prepare` refuses (nothing written) unless the target carries the staging
//!   marker and has no relation or type in a user schema; then marks the target as restoring the
//!   backup and creates, in one transaction, the schemas, enum types, sequences and tables (no
//!   keys yet) with the restore's ledger (`restore_ledger`). It answers a restore id and the
//!   batches of segments: the same batches of about `LOGICAL_FANOUT_BATCH_MIB` of COPY text that
//!   verify reads.
//! - `restore-logical-batch` loads one batch with `COPY ... FROM STDIN` on `parallelism`
//!   connections (largest tables first), each object streamed from S3 through the zstd decoder
//!   with its SHA-256, row count and content checksum checked on the way; each segment commits
//!   with its ledger row, so a retried batch loads only what is missing.
//! - with `reread`, `restore-logical-reread-plan` plans the restored tables' block ranges (stored
//!   in the ledger) and answers their batches, and `restore-logical-reread-batch` reads one batch
//!   of ranges with the backup's own `COPY` for their row counts and rowset checksums, stored in
//!   the ledger (the restore test's second Map); both are optional, finish reads what they left.
//! - `restore-logical-finish` refuses while any segment is not loaded (naming them); then builds
//!   every index (those of primary keys and unique constraints too) on the same connections;
//!   with `reread`, they also read every block range no batch has read (index builds and reads
//!   do not block each other) → keys attached to their
//!   indexes, foreign keys, sequence positions and post-data (triggers, policies, materialized
//!   views, comments, owners, privileges) in one transaction → everything compared with the
//!   manifest: the data, the sequences, and the schema, captured again from the target. Its
//!   report is stored, locked, at `<prefix><run_id>/restore/<restore_id>.json` before the ledger
//!   and the marker's `restoring=` are dropped, so a retry answers the same report.
//!
//! While it runs, the staging marker names the backup being restored; prepare resumes a restore
//! of the same backup it finds there, and with `reset` drops what it left and starts over.

use super::layout::{backup_prefix, checked_work_id, manifest_key, new_work_id};
use super::manifest::{LogicalManifest, ManifestSegment};
use super::restore_ledger::{self as ledger, Ledger, LoadedSegment, RereadRange};
use super::rowset::{RowsetHasher, RowsetSummary};
use super::segment_object::{self, SegmentRead, SegmentReader};
use super::verify::{TableCheck, segments_of, sum_of};
use super::{LogicalBackups, LogicalError, no_such_batch};
use crate::catalyst_db::introspect::{
    self, BlockRange, CapturedTable, MATERIALIZED_VIEW_DATA, NotCaptured, SchemaObject,
};
use crate::catalyst_db::long_ddl::{self, LongDdl};
use crate::catalyst_db::{mark_restoring, require_staging, restoring_backup};
use crate::connection_jobs::on_connections;
use crate::input::InputError;
use crate::postgres::PgConnector;
use crate::run_id::RunId;
use bytes::Bytes;
use futures_util::{SinkExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

/// What a refusal names at most (segments, or statements still running).
const NAMED_AT_MOST: usize = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreResult {
    pub run_id: String,
    pub manifest_key: String,
    pub target_database: String,
    pub drill_id: String,
    /// The restore's id: its ledger's and its stored report's.
    pub restore_id: String,
    pub instant: super::manifest::ManifestInstant,
    /// Every table's checks: the rows and content checksum loaded (re-read from the target
    /// when `reread`).
    pub tables: Vec<TableCheck>,
    /// Whether the restored tables were re-read after the load.
    pub reread: bool,
    pub sequences_restored: usize,
    /// Every difference from the manifest; empty when the restore is faithful.
    pub mismatches: Vec<String>,
    pub consistent: bool,
    /// Schema objects the backup did not capture (not restored; each is also a mismatch).
    pub not_captured: Vec<NotCaptured>,
    /// Schema objects left out of the backup by its `LOGICAL_IGNORE_OBJECTS`.
    pub ignored: Vec<NotCaptured>,
    /// Schema objects restored (pre-data and post-data statements' objects).
    pub schema_objects: usize,
    /// True when the target held what an interrupted restore of this backup left, and `reset`
    /// dropped it first.
    pub reset: bool,
    /// Wall time of each phase, in seconds.
    pub seconds: RestorePhases,
    /// When the restore and its checks finished.
    pub completed_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestorePhases {
    /// Schemas, types, sequences and tables.
    pub schema: f64,
    /// COPY FROM of every segment: from the end of prepare to the last segment loaded.
    pub load: f64,
    /// Every index built, side by side on the restore connections (with `reread`, alongside the
    /// re-read of every table): from the last segment loaded to when a finish first found them
    /// all done (builds that outlast a finish are waited for by the next).
    pub indexes: f64,
    /// Keys attached to their indexes, other constraints, foreign keys and their validations,
    /// sequence positions: up to when a finish first found each part done, as `indexes`.
    pub constraints: f64,
    /// Triggers, policies, materialized views, comments, owners, privileges (as `indexes`), and
    /// the check of the restored schema against the backup's.
    pub post_data: f64,
}

/// How `restore-logical` runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// A database on the target secret's server to restore into, instead of the secret's own.
    pub database: Option<String>,
    /// Read every restored table back and check it again.
    pub reread: bool,
    /// Drop what an interrupted restore of the same backup left in the target, then restore.
    pub reset: bool,
}

/// Where a restore goes: the staging database of a secret, or another database on its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreTarget {
    pub secret_id: String,
    pub database: Option<String>,
}

impl RestoreTarget {
    pub fn new(secret_id: &str, database: Option<String>) -> Result<Self, InputError> {
        if secret_id.trim().is_empty() {
            return Err(InputError::new("target_secret_id", "must name a secret"));
        }
        if database
            .as_deref()
            .is_some_and(|d| d.trim().is_empty() || d.len() > 63)
        {
            return Err(InputError::new(
                "database",
                "must be a database name (1 to 63 bytes)",
            ));
        }
        Ok(Self {
            secret_id: secret_id.to_owned(),
            database,
        })
    }
}

/// `restore-logical-prepare`'s answer: the Map's items are `batches`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePlan {
    pub run_id: String,
    /// Names the restore's ledger and report; the batch and finish steps take it.
    pub restore_id: String,
    pub target_database: String,
    pub segments: usize,
    pub copy_bytes: u64,
    pub batches: Vec<usize>,
    /// True when the target was already being restored from this backup and prepare answered
    /// that restore (its loaded segments stay loaded).
    pub resumed: bool,
    /// True when prepare dropped what an interrupted restore of this backup left first.
    pub reset: bool,
}

/// `restore-logical-batch`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreBatchResult {
    pub restore_id: String,
    pub batch: usize,
    pub segments: usize,
    /// Segments this invocation loaded, and their rows.
    pub loaded: usize,
    pub rows: u64,
    /// Segments an earlier attempt had loaded.
    pub already_loaded: usize,
    /// Segments of tables without a definition in the manifest (the finish step reports them).
    pub not_restorable: usize,
}

/// `restore-logical-reread-plan`'s answer: the Map's items are `batches`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RereadPlan {
    pub restore_id: String,
    /// Block ranges of the restored tables, about `LOGICAL_SEGMENT_MIB` each.
    pub ranges: usize,
    pub batches: Vec<usize>,
}

/// `restore-logical-reread-batch`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RereadBatchResult {
    pub restore_id: String,
    pub batch: usize,
    pub ranges: usize,
    /// Ranges this invocation read, and those an earlier attempt had read.
    pub read: usize,
    pub already_read: usize,
}

/// What loading a set of segments did.
#[derive(Debug, Default)]
struct Loads {
    loaded: usize,
    rows: u64,
    already_loaded: usize,
    not_restorable: usize,
}

/// The work after the load, on one queue: index builds first (the longest jobs), then the
/// block ranges of the re-read, if asked for.
enum AfterLoad<'a> {
    Index(usize, &'a LongDdl),
    Reread(RereadRange),
}

impl AfterLoad<'_> {
    fn label(&self) -> String {
        match self {
            Self::Index(_, build) => build.label.clone(),
            Self::Reread(range) => format!("the re-read of block range {}", range.range),
        }
    }
}

/// `RestoreStillBuilding` while any of `pending` (index builds, validations, ranges of the
/// re-read) is not done.
fn still_building(
    run: &RunId,
    restore_id: &str,
    database: &str,
    pending: Vec<String>,
) -> Result<(), LogicalError> {
    if pending.is_empty() {
        return Ok(());
    }
    Err(LogicalError::RestoreStillBuilding {
        run_id: run.stamp.clone(),
        restore_id: restore_id.to_owned(),
        database: database.to_owned(),
        count: pending.len(),
        first: pending.into_iter().take(NAMED_AT_MOST).collect(),
    })
}

/// The manifest's post-data as the finish runs it: the statements before the materialized
/// views (table settings, policies, triggers) in one transaction, each view's refresh and
/// indexes as a step of its own, in creation order (one may read another), and the statements
/// after them (comments, owners, privileges) in another transaction.
#[derive(Debug, Default)]
struct PostDataSteps {
    before: Vec<String>,
    views: Vec<LongDdl>,
    after: Vec<String>,
}

impl PostDataSteps {
    fn of(objects: &[&SchemaObject]) -> Self {
        let mut steps = Self::default();
        for object in objects {
            if object.kind == MATERIALIZED_VIEW_DATA {
                let step = format!("view {}", steps.views.len());
                let label = format!("materialized view {}", object.name);
                steps
                    .views
                    .push(ledger::step_ddl(&step, label, &object.statements));
            } else if steps.views.is_empty() {
                steps.before.extend(object.statements.iter().cloned());
            } else {
                steps.after.extend(object.statements.iter().cloned());
            }
        }
        steps
    }
}

/// The staging database a restore step works on, as its first connection found it.
struct Target {
    connector: PgConnector,
    admin: Client,
    drill_id: String,
    database: String,
}

/// The manifest table's definition in the manifest's schema; None when it has none (its data
/// cannot be loaded, and the finish step reports it).
fn definitions(manifest: &LogicalManifest) -> Vec<Option<&CapturedTable>> {
    manifest
        .tables
        .iter()
        .map(|entry| {
            manifest
                .schema
                .tables
                .iter()
                .find(|t| t.schema == entry.schema && t.name == entry.name)
        })
        .collect()
}

pub fn restore_record_key(prefix: &str, run_id: &str, restore_id: &str) -> String {
    format!("{}restore/{restore_id}.json", backup_prefix(prefix, run_id))
}

impl LogicalBackups {
    /// Restores the run's backup into the staging database of `target_secret_id` in this
    /// invocation: prepare, every segment, finish. Every segment is checked as it loads
    /// (stored bytes, decompressed rows and content checksum, rows COPY stored). `reread` adds a
    /// second pass: every restored table read back with the backup's own `COPY`, proving what
    /// the database now renders rather than what it was sent (worth it when the target runs
    /// another PostgreSQL version; it costs one more read of every table).
    pub async fn restore(
        &self,
        run: &RunId,
        target_secret_id: &str,
        options: RestoreOptions,
    ) -> Result<RestoreResult, LogicalError> {
        let target = RestoreTarget::new(target_secret_id, options.database)?;
        let plan = self.prepare_restore(run, &target, options.reset).await?;
        let manifest = self.restore_manifest(run).await?;
        let segments = segments_of(&manifest);
        let connector = self.target_connector(&target)?;
        self.load_segments(&connector, &manifest, &segments, 0..segments.len())
            .await?;
        self.finish_restore(run, &target, &plan.restore_id, options.reread)
            .await
    }

    /// `restore-logical-prepare`: the target checked and marked, its schema and ledger created;
    /// answers the batches. A target already being restored from this backup is resumed (unless
    /// `reset`).
    pub async fn prepare_restore(
        &self,
        run: &RunId,
        target: &RestoreTarget,
        reset: bool,
    ) -> Result<RestorePlan, LogicalError> {
        let manifest = self.restore_manifest(run).await?;
        let Target {
            admin,
            drill_id,
            database,
            ..
        } = self.restore_target(target).await?;
        let segments = segments_of(&manifest);
        let plan = |restore_id: String, resumed, reset| RestorePlan {
            run_id: run.stamp.clone(),
            restore_id,
            target_database: database.clone(),
            segments: segments.len(),
            copy_bytes: segments.iter().map(|(_, s)| s.copy_bytes).sum(),
            batches: (0..self.segment_batches(&segments).len()).collect(),
            resumed,
            reset,
        };
        let interrupted = restoring_backup(&admin).await?;
        let restoring_this = interrupted.as_deref() == Some(run.stamp.as_str());
        if let Some(ledger) = ledger::read(&admin).await?
            && restoring_this
            && ledger.run_id == run.stamp
            && !reset
        {
            tracing::info!(%database, restore_id = %ledger.restore_id, "resuming the restore of this backup");
            return Ok(plan(ledger.restore_id, true, ledger.reset));
        }
        let objects = introspect::user_objects(&admin).await?;
        let reset = !objects.is_empty() && reset && restoring_this;
        if reset {
            tracing::warn!(%database, objects = objects.len(), "dropping what an interrupted restore of this backup left");
            introspect::reset_user_schemas(&admin).await?;
        } else if !objects.is_empty() {
            return Err(LogicalError::TargetNotEmpty {
                database,
                objects,
                interrupted,
            });
        }
        mark_restoring(&admin, &drill_id, Some(&run.stamp)).await?;
        let restore_id = new_work_id(time::OffsetDateTime::now_utc());
        tracing::info!(key = %manifest_key(&self.config.prefix, &run.stamp), %database, %restore_id, tables = manifest.tables.len(), "restoring logical backup");
        let statements: Vec<String> = manifest
            .schema
            .pre_data
            .iter()
            .flat_map(|o| o.statements.iter().cloned())
            .chain(ledger::create_statements(&restore_id, &run.stamp, reset))
            .collect();
        introspect::execute_ddl(&admin, &statements).await?;
        Ok(plan(restore_id, false, reset))
    }

    /// `restore-logical-batch`: loads the batch's segments that no attempt has loaded yet.
    pub async fn restore_batch(
        &self,
        run: &RunId,
        target: &RestoreTarget,
        restore_id: &str,
        batch: usize,
    ) -> Result<RestoreBatchResult, LogicalError> {
        let restore_id = checked_restore_id(restore_id)?;
        let manifest = self.restore_manifest(run).await?;
        let segments = segments_of(&manifest);
        let batches = self.segment_batches(&segments);
        let Some(members) = batches.get(batch) else {
            return Err(
                no_such_batch(&format!("run {} restores", run.stamp), batches.len()).into(),
            );
        };
        let target = self.restore_target(target).await?;
        prepared_ledger(&target, run, restore_id).await?;
        let loads = self
            .load_segments(
                &target.connector,
                &manifest,
                &segments,
                members.iter().copied(),
            )
            .await?;
        Ok(RestoreBatchResult {
            restore_id: restore_id.to_owned(),
            batch,
            segments: members.len(),
            loaded: loads.loaded,
            rows: loads.rows,
            already_loaded: loads.already_loaded,
            not_restorable: loads.not_restorable,
        })
    }

    /// `restore-logical-finish`: once every segment is loaded, the indexes, constraints,
    /// sequences, post-data and the foreign keys' validations, then every check; the report is
    /// stored before the restore ends, and a retry answers it. Index builds and validations
    /// still running when the invocation must answer go on in the database
    /// (`RestoreStillBuilding`), and a retry waits for them.
    pub async fn finish_restore(
        &self,
        run: &RunId,
        target: &RestoreTarget,
        restore_id: &str,
        reread: bool,
    ) -> Result<RestoreResult, LogicalError> {
        let restore_id = checked_restore_id(restore_id)?;
        let target = self.restore_target(target).await?;
        let admin = &target.admin;
        let record_key = restore_record_key(&self.config.prefix, &run.stamp, restore_id);
        if let Some(result) = self.read_json::<RestoreResult>(&record_key).await? {
            if result.target_database != target.database {
                return Err(LogicalError::RestoreNotPrepared {
                    run_id: run.stamp.clone(),
                    restore_id: restore_id.to_owned(),
                    database: target.database.clone(),
                    found: Some(format!(
                        "restore {restore_id} went into database {}",
                        result.target_database
                    )),
                });
            }
            // An earlier attempt stored the report; end the restore if it could not.
            if ledger::read(admin)
                .await?
                .is_some_and(|l| l.restore_id == restore_id)
            {
                end_restore(admin, &target.drill_id).await?;
            }
            return Ok(result);
        }
        let manifest = self.restore_manifest(run).await?;
        let ledger = prepared_ledger(&target, run, restore_id).await?;
        let segments = segments_of(&manifest);
        let definitions = definitions(&manifest);
        let (loaded, load_seconds) = ledger::loaded(admin, &target.database).await?;
        let mut loads: Vec<Option<LoadedSegment>> = vec![None; segments.len()];
        for segment in loaded {
            if let Some(slot) = loads.get_mut(segment.segment) {
                *slot = Some(segment);
            }
        }
        let missing: Vec<&str> = segments
            .iter()
            .zip(&loads)
            .filter(|((t, _), load)| definitions[*t].is_some() && load.is_none())
            .map(|((_, s), _)| s.key.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(LogicalError::RestoreIncomplete {
                run_id: run.stamp.clone(),
                restore_id: restore_id.to_owned(),
                database: target.database.clone(),
                missing: missing.len(),
                total: segments.len(),
                first: missing
                    .iter()
                    .take(NAMED_AT_MOST)
                    .map(|k| (*k).to_owned())
                    .collect(),
            });
        }
        let mut mismatches: Vec<String> = manifest
            .tables
            .iter()
            .zip(&definitions)
            .filter(|(_, definition)| definition.is_none())
            .map(|(entry, _)| {
                format!(
                    "{}.{}: has data but no definition in the manifest's schema; not restored",
                    entry.schema, entry.name
                )
            })
            .collect();
        let mut seconds = RestorePhases {
            schema: ledger.schema_seconds,
            load: load_seconds,
            ..RestorePhases::default()
        };

        // Indexes, and the block ranges of the re-read no batch has read yet.
        let post = introspect::post_data_ddl(&manifest.schema);
        let unread: Vec<RereadRange> = if reread {
            self.reread_ranges(&target, &manifest)
                .await?
                .into_iter()
                .filter(|r| r.content.is_none())
                .collect()
        } else {
            Vec::new()
        };
        let definitions = &definitions;
        // Index builds and validations go on in the database when this invocation ends; a
        // finish stops waiting for them in time to answer, and the next one waits on.
        let until = crate::invocation::stop_waiting_at();
        let building = |pending| still_building(run, restore_id, &target.database, pending);
        let jobs: Vec<AfterLoad> = post
            .indexes
            .iter()
            .enumerate()
            .map(|(i, build)| AfterLoad::Index(i, build))
            .chain(unread.into_iter().map(AfterLoad::Reread))
            .collect();
        let clients = self
            .restore_connections(&target.connector, jobs.len())
            .await?;
        let pending = on_connections(&clients, jobs, |client, job| async move {
            // Past `until` a connection may still carry a build: it takes no other statement.
            if until.is_some_and(|u| tokio::time::Instant::now() >= u) {
                return Ok::<_, LogicalError>(Some(job.label()));
            }
            match &job {
                AfterLoad::Index(i, build) => {
                    let key = format!("{restore_id} index {i}");
                    let built = long_ddl::run(client, &key, build, until).await?;
                    Ok((!built).then(|| job.label()))
                }
                AfterLoad::Reread(range) => {
                    reread_range(client, definitions, range).await?;
                    Ok(None)
                }
            }
        })
        .await?;
        building(pending.into_iter().flatten().collect())?;
        ledger::phase_ended(admin, "indexes").await?;

        // A finish of an earlier version ran all of phase 4 in one transaction, its step
        // `schema`: what follows up to the validations is done then.
        let phase_4_done = ledger::step_done(admin, "schema").await?;
        // Keys, foreign keys (NOT VALID) and sequence positions in one transaction.
        if !phase_4_done && ledger::claim_step(admin, "keys").await? {
            introspect::execute_statements(admin, &post.ordered).await?;
            introspect::restore_sequence_values(admin, &manifest.schema.sequences).await?;
            ledger::commit(admin).await?;
        }
        // The foreign keys PostgreSQL validates as they are added (and those made beside them),
        // one after the other (two at once could lock a pair of tables in opposite orders): each
        // scans its tables, so it goes on in the database past this invocation like an index
        // build.
        let mut waiting = Vec::new();
        let added_alone = if phase_4_done {
            &[][..]
        } else {
            &post.added_alone
        };
        for (k, key) in added_alone.iter().enumerate() {
            if !long_ddl::run(&clients[0], &format!("{restore_id} key {k}"), key, until).await? {
                waiting = added_alone[k..]
                    .iter()
                    .map(|key| key.label.clone())
                    .collect();
                break;
            }
        }
        building(waiting)?;
        ledger::phase_ended(admin, "keys").await?;
        // Post-data, only with statements whose roles the target has (the rest is reported):
        // policies and triggers in a transaction, each materialized view's refresh and indexes
        // on its own (they read whole tables), then comments, owners and privileges.
        let missing_roles = introspect::missing_roles(admin, &manifest.schema.post_data).await?;
        let (applicable, skipped): (Vec<_>, Vec<_>) = manifest
            .schema
            .post_data
            .iter()
            .partition(|o| o.roles.iter().all(|r| !missing_roles.contains(r)));
        let post_data = PostDataSteps::of(&applicable);
        // A finish of the previous version ran post-data in one transaction, its step
        // `post-data`.
        let post_data_done = phase_4_done || ledger::step_done(admin, "post-data").await?;
        if !post_data_done && ledger::claim_step(admin, "post-data before").await? {
            introspect::execute_statements(admin, &post_data.before).await?;
            ledger::commit(admin).await?;
        }
        let views = if post_data_done {
            &[][..]
        } else {
            &post_data.views
        };
        for (k, view) in views.iter().enumerate() {
            if !long_ddl::run(&clients[0], &format!("{restore_id} view {k}"), view, until).await? {
                building(views[k..].iter().map(|v| v.label.clone()).collect())?;
            }
        }
        if !post_data_done && ledger::claim_step(admin, "post-data after").await? {
            introspect::execute_statements(admin, &post_data.after).await?;
            ledger::commit(admin).await?;
        }
        ledger::phase_ended(admin, "post-data").await?;
        // Then each foreign key's validation, the tables on several connections at once.
        let pending = on_connections(
            &clients,
            post.validations.iter().enumerate(),
            |client, (t, validations)| async move {
                let mut pending = Vec::new();
                for (v, validation) in validations.iter().enumerate() {
                    let key = format!("{restore_id} validate {t}.{v}");
                    if !long_ddl::run(client, &key, validation, until).await? {
                        pending.push(validation.label.clone());
                    }
                }
                Ok::<_, LogicalError>(pending)
            },
        )
        .await?;
        building(pending.into_iter().flatten().collect())?;
        ledger::phase_ended(admin, "validations").await?;
        // Each phase from where the finish that first got past it ended it: builds that
        // outlast a finish count up to when a later one found them done.
        let checks_start = std::time::Instant::now();
        let [indexes, keys, post_data, validations] =
            ledger::phase_ends(admin, &["indexes", "keys", "post-data", "validations"]).await?[..]
        else {
            unreachable!("one end per phase asked for")
        };
        seconds.indexes = indexes;
        seconds.constraints = (keys - indexes).max(0.0) + (validations - post_data).max(0.0);
        let sequences_restored = manifest.schema.sequences.len();
        for role in &missing_roles {
            let needing: Vec<String> = skipped
                .iter()
                .filter(|o| o.roles.contains(role))
                .map(|o| format!("{} {}", o.kind, o.name))
                .collect();
            mismatches.push(format!(
                "role {role} does not exist in the target: not applied: {}",
                needing.join(", ")
            ));
        }
        mismatches.extend(
            manifest
                .not_captured
                .iter()
                .map(|o| format!("{o} is not in the backup (not captured); it was not restored")),
        );
        let restored_schema = capture_without_ledger(admin).await?;
        mismatches.extend(introspect::extension_differences(
            &manifest.schema.extensions,
            &restored_schema.extensions,
        ));
        // With a role missing, the statements left out would show as differences too; they are
        // reported above instead.
        if missing_roles.is_empty() {
            mismatches.extend(introspect::schema_differences(
                &manifest.schema,
                &restored_schema,
            ));
        }
        seconds.post_data = (post_data - keys).max(0.0) + checks_start.elapsed().as_secs_f64();

        let mut by_table: Vec<Vec<LoadedSegment>> =
            manifest.tables.iter().map(|_| Vec::new()).collect();
        for ((t, _), load) in segments.iter().zip(loads) {
            by_table[*t].extend(load);
        }
        let mut restored: Vec<Vec<Option<RowsetSummary>>> =
            manifest.tables.iter().map(|_| Vec::new()).collect();
        if reread {
            for range in ledger::reread_plan(admin, &target.database).await? {
                restored[range.table].push(range.content);
            }
        }
        let mut checks = Vec::new();
        for t in (0..manifest.tables.len()).filter(|&t| definitions[t].is_some()) {
            let entry = &manifest.tables[t];
            let mut check = TableCheck::new(entry);
            for load in &by_table[t] {
                check.problems.extend(load.read.problems.iter().cloned());
                if load.read.content.is_some_and(|c| c.rows != load.rows) {
                    check.problems.push(format!(
                        "COPY loaded {} rows from a segment of {} rows",
                        load.rows,
                        load.read.content.map_or(0, |c| c.rows)
                    ));
                }
            }
            check.measured("loaded", sum_of(by_table[t].iter().map(|l| l.read.content)));
            if reread {
                let ranges = std::mem::take(&mut restored[t]);
                let unread = ranges.iter().filter(|r| r.is_none()).count();
                if ranges.is_empty() {
                    check.problems.push("it was not re-read".to_owned());
                } else if unread > 0 {
                    check.problems.push(format!(
                        "{unread} of its {} block ranges were not re-read",
                        ranges.len()
                    ));
                }
                check.measured("in the restored table", sum_of(ranges));
            }
            check.close();
            mismatches.extend(
                check
                    .problems
                    .iter()
                    .map(|p| format!("{}.{}: {p}", check.schema, check.name)),
            );
            checks.push(check);
        }
        checks.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
        for s in &manifest.schema.sequences {
            let now = introspect::sequence_position(admin, &s.schema, &s.name).await?;
            if now != (s.last_value, s.is_called) {
                mismatches.push(format!(
                    "sequence {}.{} is at {now:?}, the backup has {:?}",
                    s.schema,
                    s.name,
                    (s.last_value, s.is_called)
                ));
            }
        }
        let consistent = mismatches.is_empty();
        let result = RestoreResult {
            run_id: manifest.run_id.clone(),
            manifest_key: manifest_key(&self.config.prefix, &run.stamp),
            target_database: target.database.clone(),
            drill_id: target.drill_id.clone(),
            restore_id: restore_id.to_owned(),
            instant: manifest.instant.clone(),
            tables: checks,
            reread,
            sequences_restored,
            mismatches,
            consistent,
            not_captured: manifest.not_captured.clone(),
            ignored: manifest.ignored.clone(),
            schema_objects: manifest.schema.pre_data.len() + manifest.schema.post_data.len(),
            reset: ledger.reset,
            seconds,
            completed_at: crate::input::format_time(time::OffsetDateTime::now_utc()),
        };
        let body = serde_json::to_vec(&result).expect("a restore result always serialises");
        self.store
            .put_locked(
                &record_key,
                body,
                "application/json",
                self.retain_until(run),
            )
            .await?;
        end_restore(admin, &target.drill_id).await?;
        tracing::info!(database = %target.database, consistent, mismatches = result.mismatches.len(), "logical restore finished");
        Ok(result)
    }

    /// `restore-logical-reread-plan`: once the load is done, the restored tables' block ranges,
    /// planned on the target and stored in the ledger (a retry answers the stored plan), in
    /// batches of about `LOGICAL_FANOUT_BATCH_MIB`.
    pub async fn plan_reread(
        &self,
        run: &RunId,
        target: &RestoreTarget,
        restore_id: &str,
    ) -> Result<RereadPlan, LogicalError> {
        let restore_id = checked_restore_id(restore_id)?;
        let (_, _, ranges) = self.rereading(run, target, restore_id).await?;
        Ok(RereadPlan {
            restore_id: restore_id.to_owned(),
            ranges: ranges.len(),
            batches: (0..self.reread_batches(&ranges).len()).collect(),
        })
    }

    /// `restore-logical-reread-batch`: reads the batch's block ranges that no attempt has read
    /// and stores each one's rows and content checksum in the ledger.
    pub async fn reread_batch(
        &self,
        run: &RunId,
        target: &RestoreTarget,
        restore_id: &str,
        batch: usize,
    ) -> Result<RereadBatchResult, LogicalError> {
        let restore_id = checked_restore_id(restore_id)?;
        let (manifest, target, ranges) = self.rereading(run, target, restore_id).await?;
        let batches = self.reread_batches(&ranges);
        let Some(members) = batches.get(batch) else {
            return Err(
                no_such_batch(&format!("restore {restore_id} re-reads"), batches.len()).into(),
            );
        };
        let unread: Vec<RereadRange> = members
            .iter()
            .map(|&r| ranges[r].clone())
            .filter(|r| r.content.is_none())
            .collect();
        let read = unread.len();
        let definitions = definitions(&manifest);
        let definitions = &definitions;
        let clients = self.restore_connections(&target.connector, read).await?;
        on_connections(&clients, unread, |client, range| async move {
            reread_range(client, definitions, &range).await
        })
        .await?;
        Ok(RereadBatchResult {
            restore_id: restore_id.to_owned(),
            batch,
            ranges: members.len(),
            read,
            already_read: members.len() - read,
        })
    }

    /// What both re-read steps start from: the manifest, the target being restored with
    /// `restore_id`, and the re-read's block ranges.
    async fn rereading(
        &self,
        run: &RunId,
        target: &RestoreTarget,
        restore_id: &str,
    ) -> Result<(LogicalManifest, Target, Vec<RereadRange>), LogicalError> {
        let manifest = self.restore_manifest(run).await?;
        let target = self.restore_target(target).await?;
        prepared_ledger(&target, run, restore_id).await?;
        let ranges = self.reread_ranges(&target, &manifest).await?;
        Ok((manifest, target, ranges))
    }

    /// The re-read's block ranges from the ledger, planned there first if they are not yet.
    async fn reread_ranges(
        &self,
        target: &Target,
        manifest: &LogicalManifest,
    ) -> Result<Vec<RereadRange>, LogicalError> {
        let admin = &target.admin;
        let planned = ledger::reread_plan(admin, &target.database).await?;
        if !planned.is_empty() {
            return Ok(planned);
        }
        let stored: Vec<(usize, &CapturedTable)> = definitions(manifest)
            .into_iter()
            .enumerate()
            .filter_map(|(t, d)| d.map(|d| (t, d)))
            .collect();
        let tables: Vec<&CapturedTable> = stored.iter().map(|(_, d)| *d).collect();
        let ranges: Vec<(usize, BlockRange)> = self
            .plan_segments(admin, &tables)
            .await?
            .into_iter()
            .map(|s| (stored[s.table].0, s.range))
            .collect();
        if ledger::claim_step(admin, "reread-plan").await? {
            ledger::store_reread_plan(admin, &ranges).await?;
            ledger::commit(admin).await?;
        }
        ledger::reread_plan(admin, &target.database).await
    }

    /// The re-read's ranges in batches of about `LOGICAL_FANOUT_BATCH_MIB` (each range is at most
    /// `LOGICAL_SEGMENT_MIB` of table storage).
    fn reread_batches(&self, ranges: &[RereadRange]) -> Vec<Vec<usize>> {
        super::fanout::batches(
            ranges.iter().map(|_| self.config.segment_bytes),
            self.config.fanout_batch_bytes,
        )
    }

    /// The run's manifest; `BackupIncomplete` when it has none.
    async fn restore_manifest(&self, run: &RunId) -> Result<LogicalManifest, LogicalError> {
        let key = manifest_key(&self.config.prefix, &run.stamp);
        self.read_manifest(&key)
            .await?
            .ok_or_else(|| LogicalError::BackupIncomplete {
                run_id: run.stamp.clone(),
                key,
            })
    }

    fn target_connector(&self, target: &RestoreTarget) -> Result<PgConnector, LogicalError> {
        let tls = self.config.tls.clone().ok_or(LogicalError::NotConfigured {
            var: crate::settings::PG_TLS.name,
        })?;
        Ok(
            PgConnector::new(self.secrets.clone(), &target.secret_id, tls)
                .with_database(target.database.clone()),
        )
    }

    /// Connects to the target; refused unless it carries the staging marker.
    async fn restore_target(&self, target: &RestoreTarget) -> Result<Target, LogicalError> {
        let connector = self.target_connector(target)?;
        let admin = connector.connect().await?;
        introspect::restore_session(&admin).await?;
        let drill_id = require_staging(&admin).await?;
        let database: String = admin
            .query_one("SELECT current_database()", &[])
            .await?
            .get(0);
        Ok(Target {
            connector,
            admin,
            drill_id,
            database,
        })
    }

    /// Up to `LOGICAL_PARALLELISM` restore connections for `jobs` jobs (at least one).
    async fn restore_connections(
        &self,
        connector: &PgConnector,
        jobs: usize,
    ) -> Result<Vec<Client>, LogicalError> {
        let workers = (self.config.parallelism as usize).min(jobs).max(1);
        let mut clients = Vec::with_capacity(workers);
        for _ in 0..workers {
            let client = connector.connect().await?;
            introspect::restore_session(&client).await?;
            clients.push(client);
        }
        Ok(clients)
    }

    /// Loads the segments numbered `members` that no attempt has loaded, largest tables first.
    async fn load_segments(
        &self,
        connector: &PgConnector,
        manifest: &LogicalManifest,
        segments: &[(usize, &ManifestSegment)],
        members: impl IntoIterator<Item = usize>,
    ) -> Result<Loads, LogicalError> {
        let definitions = definitions(manifest);
        let (mut jobs, unrestorable): (Vec<usize>, Vec<usize>) = members
            .into_iter()
            .partition(|&s| definitions[segments[s].0].is_some());
        jobs.sort_by_key(|&s| std::cmp::Reverse(manifest.tables[segments[s].0].object_bytes));
        let clients = self.restore_connections(connector, jobs.len()).await?;
        let definitions = &definitions;
        let done = on_connections(&clients, jobs, |client, s| async move {
            let (t, segment) = segments[s];
            let table = definitions[t].expect("only segments of defined tables are queued");
            if !ledger::claim_segment(client, s).await? {
                return Ok::<_, LogicalError>(None);
            }
            let (read, rows) = self.load_segment(client, table, s, segment).await?;
            ledger::commit_segment(client, s, rows, &read).await?;
            Ok(Some(rows))
        })
        .await?;
        let mut loads = Loads {
            not_restorable: unrestorable.len(),
            ..Loads::default()
        };
        for rows in done {
            match rows {
                Some(rows) => {
                    loads.loaded += 1;
                    loads.rows += rows;
                }
                None => loads.already_loaded += 1,
            }
        }
        Ok(loads)
    }

    /// Streams segment `number` (of the manifest's, in order) into its table; returns what reading it found and the rows
    /// COPY loaded.
    async fn load_segment(
        &self,
        client: &Client,
        table: &CapturedTable,
        number: usize,
        segment: &ManifestSegment,
    ) -> Result<(SegmentRead, u64), LogicalError> {
        let Some(mut reader) = SegmentReader::open(self.store.as_ref(), segment).await? else {
            return Ok((segment_object::missing(segment), 0));
        };
        let sink = client
            .copy_in::<_, Bytes>(&table.copy_in_statement())
            .await?;
        if let Some(observer) = &self.observer {
            let number = u32::try_from(number).expect("a manifest has fewer than 2^32 segments");
            observer
                .segment_copy_started(&table.schema, &table.name, number)
                .await;
        }
        futures_util::pin_mut!(sink);
        while let Some(text) = reader.next().await? {
            if !text.is_empty() {
                sink.send(Bytes::from(text)).await?;
            }
        }
        let loaded = sink.finish().await?;
        tracing::info!(key = %segment.key, rows = loaded, "segment restored");
        Ok((reader.finish().await?, loaded))
    }
}

/// The restore id a later step was given: what `restore-logical-prepare` answered.
fn checked_restore_id(restore_id: &str) -> Result<&str, InputError> {
    checked_work_id("restore_id", restore_id, "restore-logical-prepare")
}

/// The target's ledger, when it belongs to restore `restore_id` of `run` and the target is
/// still marked as restoring that backup.
async fn prepared_ledger(
    target: &Target,
    run: &RunId,
    restore_id: &str,
) -> Result<Ledger, LogicalError> {
    let restoring = restoring_backup(&target.admin).await?;
    let ledger = ledger::read(&target.admin).await?;
    match ledger {
        Some(ledger)
            if ledger.restore_id == restore_id
                && ledger.run_id == run.stamp
                && restoring.as_deref() == Some(run.stamp.as_str()) =>
        {
            Ok(ledger)
        }
        other => Err(LogicalError::RestoreNotPrepared {
            run_id: run.stamp.clone(),
            restore_id: restore_id.to_owned(),
            database: target.database.clone(),
            found: other.map(|l| format!("restore {} of backup {}", l.restore_id, l.run_id)),
        }),
    }
}

/// The restored schema as the backup would capture it: the ledger is dropped inside the
/// capture's transaction, which is rolled back.
async fn capture_without_ledger(
    admin: &Client,
) -> Result<introspect::CapturedSchema, LogicalError> {
    admin
        .batch_execute(&format!("BEGIN; {}", ledger::drop_statement()))
        .await?;
    let captured = introspect::capture_schema(admin).await;
    admin.batch_execute("ROLLBACK").await?;
    Ok(captured?)
}

/// Drops the ledger and the marker's `restoring=` together: the restore is over.
async fn end_restore(admin: &Client, drill_id: &str) -> Result<(), LogicalError> {
    admin
        .batch_execute(&format!("BEGIN; {}", ledger::drop_statement()))
        .await?;
    mark_restoring(admin, drill_id, None).await?;
    ledger::commit(admin).await
}

/// Re-reads one block range of a restored table and stores what it found in the ledger.
async fn reread_range(
    client: &Client,
    definitions: &[Option<&CapturedTable>],
    range: &RereadRange,
) -> Result<(), LogicalError> {
    let table = definitions[range.table].expect("only tables with a definition are planned");
    let content = read_rowset(client, table, &range.blocks).await?;
    ledger::store_reread(client, range.range, &content).await
}

/// The row count and rowset checksum of one block range of a table, read with the backup's own
/// `COPY`.
pub async fn read_rowset(
    client: &Client,
    table: &CapturedTable,
    range: &BlockRange,
) -> Result<RowsetSummary, LogicalError> {
    let stream = client.copy_out(&table.copy_out_statement(range)).await?;
    futures_util::pin_mut!(stream);
    let mut content = RowsetHasher::new();
    while let Some(chunk) = stream.try_next().await? {
        content.update(&chunk);
    }
    Ok(content.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalyst_db::long_ddl::DoneWhen;

    fn object(kind: &str, name: &str, statements: &[&str]) -> SchemaObject {
        SchemaObject {
            kind: kind.to_owned(),
            name: name.to_owned(),
            statements: statements.iter().map(|s| (*s).to_owned()).collect(),
            roles: Vec::new(),
        }
    }

    #[test]
    fn post_data_runs_each_materialized_view_on_its_own_between_the_rest() {
        let objects = [
            object("policy", "p on app.t", &["CREATE POLICY p ON app.t"]),
            object("trigger", "g on app.t", &["CREATE TRIGGER g"]),
            object(
                MATERIALIZED_VIEW_DATA,
                "app.a",
                &[
                    "REFRESH MATERIALIZED VIEW app.a",
                    "CREATE INDEX a_i ON app.a (x)",
                ],
            ),
            object(MATERIALIZED_VIEW_DATA, "app.b", &[]),
            object(
                "comment",
                "index app.a_i",
                &["COMMENT ON INDEX app.a_i IS 'x'"],
            ),
            object(
                "owner",
                "app.a",
                &["ALTER MATERIALIZED VIEW app.a OWNER TO o"],
            ),
        ];
        let steps = PostDataSteps::of(&objects.iter().collect::<Vec<_>>());
        assert_eq!(
            steps.before,
            ["CREATE POLICY p ON app.t", "CREATE TRIGGER g"]
        );
        assert_eq!(
            steps.after,
            [
                "COMMENT ON INDEX app.a_i IS 'x'",
                "ALTER MATERIALIZED VIEW app.a OWNER TO o"
            ]
        );
        let [a, b] = &steps.views[..] else {
            panic!("{:?}", steps.views);
        };
        assert_eq!(a.label, "materialized view app.a");
        // One simple query: one implicit transaction, which records the step last.
        assert_eq!(
            a.statement,
            "REFRESH MATERIALIZED VIEW app.a;\nCREATE INDEX a_i ON app.a (x);\n\
             INSERT INTO catalyst_dr_restore.done (step) VALUES ('view 0') ON CONFLICT DO NOTHING"
        );
        assert_eq!(
            a.done,
            DoneWhen::Marked {
                table: "catalyst_dr_restore.done".to_owned(),
                step: "view 0".to_owned()
            }
        );
        assert!(
            b.statement
                .starts_with("INSERT INTO catalyst_dr_restore.done (step) VALUES ('view 1')")
        );
    }
}
