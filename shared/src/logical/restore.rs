//! `restore-logical`: loads a finished logical backup into an empty staging database, then checks
//! every table against the manifest.
//!
//! Refused (nothing written) unless the target carries the staging marker and has no relation or
//! type in a user schema. Then: schemas, enum types, sequences and tables (no keys yet) → every
//! segment loaded with `COPY ... FROM STDIN` on `parallelism` connections (largest tables first,
//! so one large table loads on all of them), each object streamed from S3 through the zstd
//! decoder with its SHA-256, row count and content checksum checked on the way → every index
//! built (those of primary keys and unique constraints too) on the same connections; with
//! `reread`, they also re-read every table in its own block ranges for its row count and rowset
//! checksum (index builds and reads do not block each other) → keys attached to their indexes,
//! foreign keys → sequence positions → post-data (triggers, policies, materialized views,
//! comments, owners, privileges) → everything compared with the manifest: the data, the
//! sequences, and the schema, captured again from the target.
//!
//! While it runs, the staging marker names the backup being restored; a rerun with `reset`
//! finds it there and drops what the interrupted restore left before starting over.

use super::layout::manifest_key;
use super::manifest::{ManifestSegment, ManifestTable};
use super::parallel::on_connections;
use super::rowset::{RowsetHasher, RowsetSummary};
use super::segment_object::{self, SegmentRead, SegmentReader};
use super::segments::Segment;
use super::verify::{TableCheck, sum_of};
use super::{LogicalBackups, LogicalError};
use crate::catalyst_db::introspect::{self, BlockRange, CapturedTable, NotCaptured};
use crate::catalyst_db::require_staging;
use crate::postgres::PgConnector;
use crate::run_id::RunId;
use bytes::Bytes;
use futures_util::{SinkExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreResult {
    pub run_id: String,
    pub manifest_key: String,
    pub target_database: String,
    pub drill_id: String,
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
    /// Parallel COPY FROM of every segment.
    pub load: f64,
    /// Every index built, side by side on the restore connections (with `reread`, alongside the
    /// re-read of every table).
    pub indexes: f64,
    /// Keys attached to their indexes, other constraints, foreign keys, sequence positions.
    pub constraints: f64,
    /// Triggers, policies, materialized views, comments, owners, privileges, and the check of
    /// the restored schema against the backup's.
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

/// The work after the load, on one queue: index builds first (the longest jobs), then the
/// block ranges of the re-read, if asked for.
enum AfterLoad<'a> {
    Index(&'a str),
    Reread(Segment),
}

impl LogicalBackups {
    /// Restores the run's backup into the staging database of `target_secret_id`. Every segment
    /// is checked as it loads (stored bytes, decompressed rows and content checksum, rows COPY
    /// stored). `reread` adds a second pass: every restored table read back with the backup's
    /// own `COPY`, proving what the database now renders rather than what it was sent (worth it
    /// when the target runs another PostgreSQL version; it costs one more read of every table).
    pub async fn restore(
        &self,
        run: &RunId,
        target_secret_id: &str,
        options: RestoreOptions,
    ) -> Result<RestoreResult, LogicalError> {
        let reread = options.reread;
        let tls = self.config.tls.clone().ok_or(LogicalError::NotConfigured {
            var: crate::settings::PG_TLS.name,
        })?;
        let key = manifest_key(&self.config.prefix, &run.stamp);
        let manifest =
            self.read_manifest(&key)
                .await?
                .ok_or_else(|| LogicalError::BackupIncomplete {
                    run_id: run.stamp.clone(),
                    key: key.clone(),
                })?;
        let target = PgConnector::new(self.secrets.clone(), target_secret_id, tls)
            .with_database(options.database.clone());
        let admin = target.connect().await?;
        introspect::restore_session(&admin).await?;
        let drill_id = require_staging(&admin).await?;
        let database: String = admin
            .query_one("SELECT current_database()", &[])
            .await?
            .get(0);
        let objects = introspect::user_objects(&admin).await?;
        let interrupted = crate::catalyst_db::restoring_backup(&admin).await?;
        let reset = !objects.is_empty()
            && options.reset
            && interrupted.as_deref() == Some(run.stamp.as_str());
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
        crate::catalyst_db::mark_restoring(&admin, &drill_id, Some(&run.stamp)).await?;
        tracing::info!(%key, %database, tables = manifest.tables.len(), "restoring logical backup");

        // The manifest's tables with their captured definitions; an entry without one cannot be
        // loaded and is reported.
        let mut mismatches = Vec::new();
        let mut tables: Vec<(&CapturedTable, &ManifestTable)> =
            Vec::with_capacity(manifest.tables.len());
        for entry in &manifest.tables {
            match manifest
                .schema
                .tables
                .iter()
                .find(|t| t.schema == entry.schema && t.name == entry.name)
            {
                Some(table) => tables.push((table, entry)),
                None => mismatches.push(format!(
                    "{}.{}: has data but no definition in the manifest's schema; not restored",
                    entry.schema, entry.name
                )),
            }
        }
        tables.sort_by_key(|(_, entry)| std::cmp::Reverse(entry.object_bytes));

        let mut seconds = RestorePhases::default();
        let clock = std::time::Instant::now();
        let pre_data: Vec<String> = manifest
            .schema
            .pre_data
            .iter()
            .flat_map(|o| o.statements.iter().cloned())
            .collect();
        introspect::execute_ddl(&admin, &pre_data).await?;
        seconds.schema = clock.elapsed().as_secs_f64();

        let segment_jobs: Vec<(usize, &ManifestSegment)> = tables
            .iter()
            .enumerate()
            .flat_map(|(t, (_, entry))| entry.segments.iter().map(move |s| (t, s)))
            .collect();
        let workers = (self.config.parallelism as usize)
            .min(segment_jobs.len())
            .max(1);
        let mut clients = Vec::with_capacity(workers);
        for _ in 0..workers {
            let client = target.connect().await?;
            introspect::restore_session(&client).await?;
            clients.push(client);
        }
        let definitions: Vec<&CapturedTable> = tables.iter().map(|(table, _)| *table).collect();
        let definitions = &definitions;
        let loaded = on_connections(&clients, segment_jobs, |client, (t, segment)| async move {
            Ok((t, self.load_segment(client, definitions[t], segment).await?))
        })
        .await?;
        seconds.load = clock.elapsed().as_secs_f64() - seconds.schema;

        let post = introspect::post_data_ddl(&manifest.schema);
        let ranges = if reread {
            self.plan_segments(&admin, definitions).await?
        } else {
            Vec::new()
        };
        let jobs = post
            .indexes
            .iter()
            .map(|statement| AfterLoad::Index(statement))
            .chain(ranges.into_iter().map(AfterLoad::Reread));
        let read_back = on_connections(&clients, jobs, |client, job| async move {
            match job {
                AfterLoad::Index(statement) => {
                    introspect::execute_statement(client, statement).await?;
                    Ok(None)
                }
                AfterLoad::Reread(range) => Ok(Some((
                    range.table,
                    read_rowset(client, definitions[range.table], &range.range).await?,
                ))),
            }
        })
        .await?;
        seconds.indexes = clock.elapsed().as_secs_f64() - seconds.schema - seconds.load;
        introspect::execute_ddl(&admin, &post.ordered).await?;
        introspect::restore_sequence_values(&admin, &manifest.schema.sequences).await?;
        seconds.constraints =
            clock.elapsed().as_secs_f64() - seconds.schema - seconds.load - seconds.indexes;
        let sequences_restored = manifest.schema.sequences.len();

        // Post-data: only statements whose roles the target has; the rest is reported.
        let missing_roles = introspect::missing_roles(&admin, &manifest.schema.post_data).await?;
        let (applicable, skipped): (Vec<_>, Vec<_>) = manifest
            .schema
            .post_data
            .iter()
            .partition(|o| o.roles.iter().all(|r| !missing_roles.contains(r)));
        let post_data: Vec<String> = applicable
            .iter()
            .flat_map(|o| o.statements.iter().cloned())
            .collect();
        introspect::execute_ddl(&admin, &post_data).await?;
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
        let restored_schema = introspect::capture_schema(&admin).await?;
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
        seconds.post_data = clock.elapsed().as_secs_f64()
            - seconds.schema
            - seconds.load
            - seconds.indexes
            - seconds.constraints;

        let mut loads: Vec<Vec<(SegmentRead, u64)>> = tables.iter().map(|_| Vec::new()).collect();
        for (t, load) in loaded {
            loads[t].push(load);
        }
        let mut restored: Vec<Vec<RowsetSummary>> = tables.iter().map(|_| Vec::new()).collect();
        for (t, content) in read_back.into_iter().flatten() {
            restored[t].push(content);
        }
        let mut checks = Vec::with_capacity(tables.len());
        for (((_, entry), loads), restored) in tables.iter().zip(loads).zip(restored) {
            let mut check = TableCheck::new(entry);
            for (read, rows_loaded) in &loads {
                check.problems.extend(read.problems.iter().cloned());
                if read.content.is_some_and(|c| c.rows != *rows_loaded) {
                    check.problems.push(format!(
                        "COPY loaded {rows_loaded} rows from a segment of {} rows",
                        read.content.map_or(0, |c| c.rows)
                    ));
                }
            }
            check.measured("loaded", sum_of(loads.iter().map(|(read, _)| read.content)));
            if reread {
                check.measured(
                    "in the restored table",
                    sum_of(restored.into_iter().map(Some)),
                );
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
            let now = introspect::sequence_position(&admin, &s.schema, &s.name).await?;
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
        crate::catalyst_db::mark_restoring(&admin, &drill_id, None).await?;
        tracing::info!(%database, consistent, mismatches = mismatches.len(), "logical restore finished");
        Ok(RestoreResult {
            run_id: manifest.run_id.clone(),
            manifest_key: key,
            target_database: database,
            drill_id,
            instant: manifest.instant.clone(),
            tables: checks,
            reread,
            sequences_restored,
            mismatches,
            consistent,
            not_captured: manifest.not_captured.clone(),
            ignored: manifest.ignored.clone(),
            schema_objects: manifest.schema.pre_data.len() + manifest.schema.post_data.len(),
            reset,
            seconds,
            completed_at: crate::input::format_time(time::OffsetDateTime::now_utc()),
        })
    }

    /// Streams one segment's object into its table; returns what reading it found and the rows
    /// COPY loaded.
    async fn load_segment(
        &self,
        client: &Client,
        table: &CapturedTable,
        segment: &ManifestSegment,
    ) -> Result<(SegmentRead, u64), LogicalError> {
        let Some(mut reader) = SegmentReader::open(self.store.as_ref(), segment).await? else {
            return Ok((segment_object::missing(segment), 0));
        };
        let sink = client
            .copy_in::<_, Bytes>(&table.copy_in_statement())
            .await?;
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
