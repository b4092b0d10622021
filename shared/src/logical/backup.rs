//! `logical-backup`: one consistent instant for every table, streamed and compressed into locked
//! S3 objects, the manifest last.
//!
//! 1. A finished manifest for the run id is returned as is (`reused: true`).
//! 2. Multipart uploads left under the backup's prefix by an earlier attempt are aborted.
//! 3. The coordinator opens a REPEATABLE READ transaction, exports its snapshot, records the
//!    instant (server time and LSN), captures the schema, takes ACCESS SHARE locks and plans the
//!    segments (block ranges of the large tables, largest tables first).
//! 4. `parallelism` workers import the snapshot and take segments from a queue: `COPY (SELECT
//!    ... WHERE ctid in range) TO STDOUT` → 1 MiB batches → rowset checksum and row count → one
//!    zstd frame per batch → part buffer → UploadPart ([`super::encode`]). Memory per worker: one
//!    part buffer, one batch and its frame, and the compressor's context.
//! 5. On any failure every pending upload under the prefix is aborted and no manifest is written.
//! 6. The manifest is written last with Object Lock. A schema object the backup cannot capture
//!    (and the operator did not list in `LOGICAL_IGNORE_OBJECTS`) makes it `complete: false`:
//!    the data is still stored and the manifest written, and the action fails with
//!    `SchemaNotCaptured`, every time it is asked for that run.

use super::encode::SegmentEncoder;
use super::layout::{backup_prefix, manifest_key, segment_key};
use super::manifest::{
    LOGICAL_MANIFEST_FORMAT, LogicalManifest, ManifestInstant, ManifestSegment, ManifestTable,
    ReadPath,
};
use super::segments::Segment;
use super::upload::PartWriter;
use super::{LogicalBackups, LogicalError};
use crate::catalyst_db::introspect::{self, CapturedSchema, CapturedTable, NotCaptured};
use crate::connection_jobs::on_connections;
use crate::run_id::RunId;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_postgres::Client;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogicalBackupResult {
    pub run_id: String,
    pub bucket: String,
    pub manifest_key: String,
    /// True when a finished backup for this run id was found and returned.
    pub reused: bool,
    /// Unfinished multipart uploads of an earlier attempt that were aborted first.
    pub aborted_uploads: usize,
    pub instant: ManifestInstant,
    pub tables: usize,
    /// Objects written: one per segment (block range) of each table.
    pub segments: usize,
    pub rows: u64,
    pub object_bytes: u64,
    pub copy_bytes: u64,
    /// Schema objects left out because `LOGICAL_IGNORE_OBJECTS` lists them.
    pub ignored: Vec<NotCaptured>,
}

impl LogicalBackupResult {
    fn new(
        manifest: &LogicalManifest,
        bucket: &str,
        key: String,
        reused: bool,
        aborted_uploads: usize,
    ) -> Self {
        Self {
            run_id: manifest.run_id.clone(),
            bucket: bucket.to_owned(),
            manifest_key: key,
            reused,
            aborted_uploads,
            instant: manifest.instant.clone(),
            tables: manifest.tables.len(),
            segments: manifest.segment_count(),
            rows: manifest.total_rows(),
            object_bytes: manifest.tables.iter().map(|t| t.object_bytes).sum(),
            copy_bytes: manifest.tables.iter().map(|t| t.copy_bytes).sum(),
            ignored: manifest.ignored.clone(),
        }
    }
}

/// The backup's figures as one CloudWatch embedded-metric-format line.
pub fn metrics_line(
    result: &LogicalBackupResult,
    seconds: f64,
    now: OffsetDateTime,
) -> serde_json::Value {
    use crate::metrics::{Metric, emf_line};
    let mut properties = serde_json::Map::new();
    properties.insert("run_id".into(), serde_json::json!(result.run_id));
    emf_line(
        ("Action", "logical-backup"),
        vec![
            Metric::new("LogicalBackupSeconds", "Seconds", seconds),
            Metric::new("LogicalBackupBytes", "Bytes", result.object_bytes),
            Metric::new("LogicalBackupRows", "Count", result.rows),
            Metric::new("LogicalBackupTables", "Count", result.tables),
            Metric::new("LogicalBackupIgnoredObjects", "Count", result.ignored.len()),
        ],
        properties,
        now,
    )
}

/// Where a manifest's instant comes from.
pub(super) struct ManifestSource {
    pub instant: ManifestInstant,
    pub database: String,
    pub server_version: String,
    pub read_path: ReadPath,
}

/// The captured schema, with what it could not capture split into what the operator ignores and
/// what makes the backup incomplete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchemaCapture {
    pub schema: CapturedSchema,
    pub not_captured: Vec<NotCaptured>,
    pub ignored: Vec<NotCaptured>,
}

impl LogicalBackups {
    /// Splits the schema's uncaptured objects by `LOGICAL_IGNORE_OBJECTS`.
    pub(super) fn sort_not_captured(&self, mut schema: CapturedSchema) -> SchemaCapture {
        let (ignored, not_captured): (Vec<NotCaptured>, Vec<NotCaptured>) =
            std::mem::take(&mut schema.not_captured)
                .into_iter()
                .partition(|o| self.config.ignores(o));
        for object in &not_captured {
            tracing::error!(kind = %object.kind, name = %object.name, "schema object not captured; the backup will be incomplete");
        }
        SchemaCapture {
            schema,
            not_captured,
            ignored,
        }
    }

    pub fn retain_until(&self, run: &RunId) -> OffsetDateTime {
        run.scheduled_time + time::Duration::days(self.config.retention_days.into())
    }

    pub async fn backup(&self, run: &RunId) -> Result<LogicalBackupResult, LogicalError> {
        let source = self.source()?;
        if let Some(finished) = self.finished(run).await? {
            return Ok(finished);
        }
        let prefix = backup_prefix(&self.config.prefix, &run.stamp);
        let aborted = self.abort_pending(&prefix).await?;
        let started_at = OffsetDateTime::now_utc();
        match self.run_backup(source, run, started_at).await {
            Ok(manifest) => self.commit_manifest(manifest, aborted).await,
            Err(e) => {
                self.cleanup_after_failure(&prefix).await;
                Err(e)
            }
        }
    }

    /// The existing manifest of `run` as the action's result (`reused: true`), or None.
    pub(super) async fn finished(
        &self,
        run: &RunId,
    ) -> Result<Option<LogicalBackupResult>, LogicalError> {
        let key = manifest_key(&self.config.prefix, &run.stamp);
        let Some(existing) = self.read_manifest(&key).await? else {
            return Ok(None);
        };
        tracing::info!(%key, complete = existing.complete, "logical backup already written");
        existing.require_complete()?;
        Ok(Some(LogicalBackupResult::new(
            &existing,
            self.store.bucket(),
            key,
            true,
            0,
        )))
    }

    /// Writes the manifest, the backup's commit marker, with Object Lock; on failure aborts the
    /// uploads left under the backup's prefix. Fails with `SchemaNotCaptured` (after writing)
    /// when the backup left schema objects out.
    pub(super) async fn commit_manifest(
        &self,
        manifest: LogicalManifest,
        aborted: usize,
    ) -> Result<LogicalBackupResult, LogicalError> {
        let key = manifest_key(&self.config.prefix, &manifest.run_id);
        let body = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");
        let put = self
            .store
            .put_locked(&key, body, "application/json", manifest.retain_until)
            .await;
        if let Err(e) = put {
            self.cleanup_after_failure(&backup_prefix(&self.config.prefix, &manifest.run_id))
                .await;
            return Err(e.into());
        }
        tracing::info!(%key, tables = manifest.tables.len(), rows = manifest.total_rows(), "logical backup complete");
        manifest.require_complete()?;
        let result = LogicalBackupResult::new(&manifest, self.store.bucket(), key, false, aborted);
        let seconds = (manifest.completed_at - manifest.started_at).as_seconds_f64();
        println!(
            "{}",
            metrics_line(&result, seconds, OffsetDateTime::now_utc())
        );
        Ok(result)
    }

    async fn cleanup_after_failure(&self, prefix: &str) {
        if let Err(e) = self.abort_pending(prefix).await {
            tracing::warn!(error = %e, %prefix, "could not abort the failed backup's uploads; a rerun aborts them");
        }
    }

    async fn run_backup(
        &self,
        source: &crate::postgres::PgConnector,
        run: &RunId,
        started_at: OffsetDateTime,
    ) -> Result<LogicalManifest, LogicalError> {
        let coordinator = source.connect().await?;
        let instant = introspect::begin_exported_snapshot(&coordinator).await?;
        let schema = introspect::capture_schema(&coordinator).await?;
        introspect::lock_tables(&coordinator, &schema.tables).await?;
        let SchemaCapture {
            schema,
            not_captured,
            ignored,
        } = self.sort_not_captured(schema);
        let stored = schema.stored_tables();
        let plan = self.plan_segments(&coordinator, &stored).await?;
        tracing::info!(lsn = %instant.lsn, server_time = %instant.server_time, tables = stored.len(), segments = plan.len(), "snapshot exported");

        let workers = (self.config.parallelism as usize).min(plan.len()).max(1);
        let mut clients = Vec::with_capacity(workers);
        for _ in 0..workers {
            let client = source.connect().await?;
            introspect::import_snapshot(&client, &instant.snapshot_id).await?;
            clients.push(client);
        }
        let retain_until = self.retain_until(run);
        let stored = &stored;
        let written = on_connections(&clients, plan, |client, segment| {
            self.backup_segment(
                client,
                stored[segment.table],
                segment,
                &run.stamp,
                retain_until,
            )
        })
        .await?;
        for client in &clients {
            introspect::commit(client).await?;
        }
        introspect::commit(&coordinator).await?;

        Ok(self.new_manifest(
            run,
            started_at,
            ManifestSource {
                instant: ManifestInstant::from(&instant),
                database: instant.database.clone(),
                server_version: instant.server_version.clone(),
                read_path: ReadPath::ExportedSnapshot,
            },
            SchemaCapture {
                schema,
                not_captured,
                ignored,
            },
            written,
        ))
    }

    /// The manifest of a backup whose segments are all `written` (each with its table's index
    /// in `schema.stored_tables()`).
    pub(super) fn new_manifest(
        &self,
        run: &RunId,
        started_at: OffsetDateTime,
        source: ManifestSource,
        capture: SchemaCapture,
        written: Vec<(usize, ManifestSegment)>,
    ) -> LogicalManifest {
        let stored = capture.schema.stored_tables();
        let mut by_table: Vec<Vec<ManifestSegment>> = vec![Vec::new(); stored.len()];
        for (table, segment) in written {
            by_table[table].push(segment);
        }
        let tables: Vec<ManifestTable> = stored
            .iter()
            .zip(by_table)
            .map(|(t, segments)| ManifestTable::from_segments(&t.schema, &t.name, segments))
            .collect();
        LogicalManifest {
            format: LOGICAL_MANIFEST_FORMAT.to_owned(),
            run_id: run.stamp.clone(),
            scheduled_time: run.scheduled_time,
            started_at,
            completed_at: OffsetDateTime::now_utc(),
            retain_until: self.retain_until(run),
            database: source.database,
            server_version: source.server_version,
            instant: source.instant,
            compression: "zstd".to_owned(),
            zstd_level: self.config.zstd_level,
            part_size_bytes: self.config.part_size_bytes as u64,
            segment_bytes: self.config.segment_bytes,
            tables,
            complete: capture.not_captured.is_empty(),
            not_captured: capture.not_captured,
            ignored: capture.ignored,
            schema: capture.schema,
            read_path: source.read_path,
        }
    }

    /// Backs up one segment as one object; returns it with its table's index.
    pub(super) async fn backup_segment(
        &self,
        client: &Client,
        table: &CapturedTable,
        segment: Segment,
        run_id: &str,
        retain_until: OffsetDateTime,
    ) -> Result<(usize, ManifestSegment), LogicalError> {
        let key = segment_key(
            &self.config.prefix,
            run_id,
            &table.schema,
            &table.name,
            segment.index,
        );
        let writer = PartWriter::start(self.store.as_ref(), &key, retain_until).await?;
        let upload_id = writer.upload_id().to_owned();
        match self
            .stream_segment(client, table, segment, &key, writer)
            .await
        {
            Ok(entry) => Ok((segment.table, entry)),
            Err(e) => {
                if let Err(abort) = self.store.abort_upload(&key, &upload_id).await {
                    tracing::warn!(error = %abort, %key, "could not abort the upload");
                }
                Err(e)
            }
        }
    }

    async fn stream_segment(
        &self,
        client: &Client,
        table: &CapturedTable,
        segment: Segment,
        key: &str,
        mut writer: PartWriter<'_>,
    ) -> Result<ManifestSegment, LogicalError> {
        let compression = |source| LogicalError::Compression {
            key: key.to_owned(),
            source,
        };
        let stream = client
            .copy_out(&table.copy_out_statement(&segment.range))
            .await?;
        if let Some(observer) = &self.observer {
            observer
                .segment_copy_started(&table.schema, &table.name, segment.index)
                .await;
        }
        let mut encoder = SegmentEncoder::new(self.config.zstd_level, self.config.part_size_bytes)
            .map_err(compression)?;
        futures_util::pin_mut!(stream);
        while let Some(chunk) = stream.try_next().await? {
            if let Some(part) = encoder.push(&chunk).map_err(compression)? {
                writer.upload(part).await?;
            }
        }
        let (last, content) = encoder.finish().map_err(compression)?;
        let written = writer.finish(last).await?;
        tracing::info!(%key, rows = content.rows, copy_bytes = content.bytes, object_bytes = written.bytes, parts = written.parts, "segment backed up");
        Ok(ManifestSegment {
            key: written.key,
            version_id: written.version_id,
            blocks: segment.range,
            rows: content.rows,
            copy_bytes: content.bytes,
            object_bytes: written.bytes,
            parts: written.parts,
            sha256: written.sha256,
            content_checksum: content.checksum,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_line_is_embedded_metric_format() {
        let result = LogicalBackupResult {
            run_id: "20261126t030000z".into(),
            bucket: "b".into(),
            manifest_key: "logical/20261126t030000z/manifest.json".into(),
            reused: false,
            aborted_uploads: 0,
            instant: ManifestInstant {
                server_time: "2026-11-26T03:00:01.000000Z".into(),
                lsn: "0/16B3748".into(),
            },
            tables: 4,
            segments: 5,
            rows: 10,
            object_bytes: 2048,
            copy_bytes: 4096,
            ignored: vec![NotCaptured {
                kind: "rule".into(),
                name: "r on public.t".into(),
            }],
        };
        let line = metrics_line(&result, 1.5, OffsetDateTime::UNIX_EPOCH);
        let metrics = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        for metric in metrics {
            let name = metric["Name"].as_str().unwrap();
            assert!(line[name].is_number(), "{name} has a value");
        }
        assert_eq!(line["Action"], "logical-backup");
        assert_eq!(line["LogicalBackupBytes"], 2048);
    }
}
