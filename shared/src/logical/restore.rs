//! `restore-logical`: loads a finished logical backup into an empty staging database, then checks
//! every table against the manifest.
//!
//! Refused (nothing written) unless the target carries the staging marker and has no relation or
//! type in a user schema. Then: schemas, enum types, sequences and tables (no keys yet) → the
//! tables loaded in parallel with `COPY ... FROM STDIN`, each object streamed from S3 through the
//! zstd decoder (its SHA-256 checked on the way) → primary keys, unique and check constraints
//! and indexes (in parallel) → foreign keys → sequence positions → per table, the row count and the content checksum
//! recomputed on the target with the same `COPY` the backup used.

use super::layout::manifest_key;
use super::manifest::{LogicalManifest, ManifestTable};
use super::upload::next_chunk;
use super::verify::TableCheck;
use super::{LogicalBackups, LogicalError, count_rows};
use crate::catalyst_db::introspect::{self, CapturedTable};
use crate::catalyst_db::require_staging;
use crate::postgres::PgConnector;
use crate::snapshot::naming::RunId;
use bytes::Bytes;
use futures_util::{SinkExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;
use tokio_postgres::Client;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreResult {
    pub run_id: String,
    pub manifest_key: String,
    pub target_database: String,
    pub drill_id: String,
    pub instant: super::manifest::ManifestInstant,
    /// Every table's checks: rows loaded, and rows and content checksum re-read from the target.
    pub tables: Vec<TableCheck>,
    pub sequences_restored: usize,
    /// Every difference from the manifest; empty when the restore is faithful.
    pub mismatches: Vec<String>,
    pub consistent: bool,
    /// Schema objects the backup did not capture (not restored).
    pub not_captured: usize,
    pub warnings: Vec<String>,
    /// Wall time of each phase, in seconds.
    pub seconds: RestorePhases,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RestorePhases {
    /// Schemas, types, sequences and tables.
    pub schema: f64,
    /// Parallel COPY FROM of every table.
    pub load: f64,
    /// Keys, checks, indexes, foreign keys, sequence positions.
    pub post_data: f64,
    /// Re-reading every table for its row count and content checksum.
    pub check: f64,
}

impl LogicalBackups {
    pub async fn restore(&self, run: &RunId, target_secret_id: &str) -> Result<RestoreResult, LogicalError> {
        let tls = self.config.tls.clone().ok_or(LogicalError::NotConfigured { var: "PG_TLS" })?;
        let key = manifest_key(&self.config.prefix, &run.stamp);
        let manifest = self
            .read_manifest(&key)
            .await?
            .ok_or_else(|| LogicalError::BackupIncomplete { run_id: run.stamp.clone(), key: key.clone() })?;
        let target = PgConnector::new(self.secrets.clone(), target_secret_id, tls);
        let admin = target.connect().await?;
        introspect::restore_session(&admin).await?;
        let drill_id = require_staging(&admin).await?;
        let database: String = admin.query_one("SELECT current_database()", &[]).await?.get(0);
        let objects = introspect::user_object_count(&admin).await?;
        if objects > 0 {
            return Err(LogicalError::TargetNotEmpty { database, objects });
        }
        tracing::info!(%key, %database, tables = manifest.tables.len(), "restoring logical backup");

        let mut seconds = RestorePhases::default();
        let clock = std::time::Instant::now();
        introspect::execute_ddl(&admin, &introspect::pre_data_ddl(&manifest.schema)).await?;
        seconds.schema = clock.elapsed().as_secs_f64();
        let loaded = self.parallel(&target, &manifest, Phase::Load).await?;
        seconds.load = clock.elapsed().as_secs_f64() - seconds.schema;
        let post = introspect::post_data_ddl(&manifest.schema);
        self.run_statements(&target, &post.independent).await?;
        introspect::execute_ddl(&admin, &post.ordered).await?;
        introspect::restore_sequence_values(&admin, &manifest.schema.sequences).await?;
        seconds.post_data = clock.elapsed().as_secs_f64() - seconds.schema - seconds.load;
        let sequences_restored = manifest.schema.sequences.len();
        let rechecked = self.parallel(&target, &manifest, Phase::Recheck).await?;
        seconds.check = clock.elapsed().as_secs_f64() - seconds.schema - seconds.load - seconds.post_data;

        let mut tables = Vec::with_capacity(loaded.len());
        let mut mismatches = Vec::new();
        for mut check in loaded {
            if let Some(after) = rechecked.iter().find(|c| c.schema == check.schema && c.name == check.name) {
                check.problems.extend(after.problems.iter().cloned());
                check.content_sha256 = after.content_sha256.clone();
                check.rows = after.rows;
            }
            check.ok = check.problems.is_empty();
            mismatches.extend(check.problems.iter().map(|p| format!("{}.{}: {p}", check.schema, check.name)));
            tables.push(check);
        }
        for s in &manifest.schema.sequences {
            let now = introspect::sequence_position(&admin, &s.schema, &s.name).await?;
            if now != (s.last_value, s.is_called) {
                mismatches.push(format!("sequence {}.{} is at {now:?}, the backup has {:?}", s.schema, s.name, (s.last_value, s.is_called)));
            }
        }
        let consistent = mismatches.is_empty();
        tracing::info!(%database, consistent, mismatches = mismatches.len(), "logical restore finished");
        Ok(RestoreResult {
            run_id: manifest.run_id.clone(),
            manifest_key: key,
            target_database: database,
            drill_id,
            instant: manifest.instant.clone(),
            tables,
            sequences_restored,
            mismatches,
            consistent,
            not_captured: manifest.not_captured.len(),
            warnings: manifest.warnings.clone(),
            seconds,
        })
    }

    /// Runs one phase over the manifest's tables on `parallelism` connections to the target.
    async fn parallel(&self, target: &PgConnector, manifest: &LogicalManifest, phase: Phase) -> Result<Vec<TableCheck>, LogicalError> {
        let pairs: Vec<(&CapturedTable, &ManifestTable)> = manifest
            .tables
            .iter()
            .filter_map(|entry| manifest.schema.tables.iter().find(|t| t.schema == entry.schema && t.name == entry.name).map(|t| (t, entry)))
            .collect();
        let workers = (self.config.parallelism as usize).min(pairs.len()).max(1);
        let mut clients = Vec::with_capacity(workers);
        for _ in 0..workers {
            let client = target.connect().await?;
            introspect::restore_session(&client).await?;
            clients.push(client);
        }
        let queue = Mutex::new(pairs.into_iter().collect::<VecDeque<_>>());
        let queue = &queue;
        let results = futures_util::future::try_join_all(clients.iter().map(|client| async move {
            let mut done = Vec::new();
            loop {
                let next = queue.lock().expect("the queue lock is never poisoned").pop_front();
                let Some((table, entry)) = next else { return Ok::<_, LogicalError>(done) };
                let check = match phase {
                    Phase::Load => self.load_table(client, table, entry).await?,
                    Phase::Recheck => recheck_table(client, table, entry).await?,
                };
                done.push(check);
            }
        }))
        .await?;
        Ok(results.into_iter().flatten().collect())
    }

    /// Runs independent statements on `parallelism` connections to the target.
    async fn run_statements(&self, target: &PgConnector, statements: &[String]) -> Result<(), LogicalError> {
        let workers = (self.config.parallelism as usize).min(statements.len());
        let mut clients = Vec::with_capacity(workers);
        for _ in 0..workers {
            let client = target.connect().await?;
            introspect::restore_session(&client).await?;
            clients.push(client);
        }
        let queue = Mutex::new(statements.iter().collect::<VecDeque<_>>());
        let queue = &queue;
        futures_util::future::try_join_all(clients.iter().map(|client| async move {
            loop {
                let next = queue.lock().expect("the queue lock is never poisoned").pop_front();
                let Some(statement) = next else { return Ok::<_, LogicalError>(()) };
                introspect::execute_statement(client, statement).await?;
            }
        }))
        .await?;
        Ok(())
    }

    async fn load_table(&self, client: &Client, table: &CapturedTable, entry: &ManifestTable) -> Result<TableCheck, LogicalError> {
        let compression = |source| LogicalError::Compression { key: entry.key.clone(), source };
        let mut check = TableCheck::new(entry);
        let Some(mut body) = self.store.open(&entry.key, entry.version_id.as_deref()).await? else {
            check.problems.push(format!("object {} is missing", entry.key));
            return Ok(check);
        };
        let sink = client.copy_in::<_, Bytes>(&table.copy_in_statement()).await?;
        futures_util::pin_mut!(sink);
        let mut decoder = zstd::stream::write::Decoder::new(Vec::new()).map_err(compression)?;
        let mut object = sha2::Sha256::new();
        let mut content = sha2::Sha256::new();
        let (mut object_bytes, mut rows) = (0u64, 0u64);
        while let Some(chunk) = next_chunk(&mut body).await? {
            object.update(&chunk);
            object_bytes += chunk.len() as u64;
            decoder.write_all(&chunk).map_err(compression)?;
            decoder.flush().map_err(compression)?;
            let out = std::mem::take(decoder.get_mut());
            if !out.is_empty() {
                content.update(&out);
                rows += count_rows(&out);
                sink.send(Bytes::from(out)).await?;
            }
        }
        let loaded = sink.finish().await?;
        let object_sha256 = hex::encode(object.finalize());
        if object_sha256 != entry.sha256 || object_bytes != entry.object_bytes {
            check.problems.push(format!("object checksum {object_sha256} ({object_bytes} bytes) differs from the manifest's {} ({} bytes)", entry.sha256, entry.object_bytes));
        }
        let streamed = hex::encode(content.finalize());
        if streamed != entry.content_sha256 || rows != entry.rows {
            check.problems.push(format!("decompressed content {streamed} ({rows} rows) differs from the manifest's {} ({} rows)", entry.content_sha256, entry.rows));
        }
        if loaded != entry.rows {
            check.problems.push(format!("COPY loaded {loaded} rows, the manifest has {}", entry.rows));
        }
        check.rows = loaded;
        tracing::info!(key = %entry.key, rows = loaded, "table restored");
        Ok(check)
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Load,
    Recheck,
}

/// Re-reads a restored table with the backup's own `COPY` and compares with the manifest.
async fn recheck_table(client: &Client, table: &CapturedTable, entry: &ManifestTable) -> Result<TableCheck, LogicalError> {
    let mut check = TableCheck::new(entry);
    let (content_sha256, rows) = content_checksum(client, table).await?;
    if rows != entry.rows {
        check.problems.push(format!("{rows} rows in the restored table, the manifest has {}", entry.rows));
    }
    if content_sha256 != entry.content_sha256 {
        check.problems.push(format!("content checksum {content_sha256} of the restored table differs from the manifest's {}", entry.content_sha256));
    }
    check.rows = rows;
    check.content_sha256 = content_sha256;
    Ok(check)
}

/// The content checksum and row count of a table, as a backup computes them: SHA-256 of the
/// `COPY` text in primary-key order.
pub async fn content_checksum(client: &Client, table: &CapturedTable) -> Result<(String, u64), LogicalError> {
    let stream = client.copy_out(&table.copy_out_statement()).await?;
    futures_util::pin_mut!(stream);
    let mut content = sha2::Sha256::new();
    let mut rows = 0u64;
    while let Some(chunk) = stream.try_next().await? {
        content.update(&chunk);
        rows += count_rows(&chunk);
    }
    Ok((hex::encode(content.finalize()), rows))
}
