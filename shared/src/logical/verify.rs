//! `verify-logical`: re-reads every object of a logical backup and checks it against the
//! manifest (what pgBackRest's `verify` does for its repository): the manifest exists and parses,
//! every table object is there at its recorded version with its size and SHA-256, and its
//! decompressed COPY text has the recorded row count and content checksum. Unfinished multipart
//! uploads and objects the manifest does not list are reported too.

use super::layout::{backup_prefix, manifest_key};
use super::manifest::ManifestTable;
use super::upload::next_chunk;
use super::{LogicalBackups, LogicalError, count_rows};
use crate::snapshot::naming::RunId;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::io::Write;

/// The checks of one table (by verify, or by a restore).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableCheck {
    pub schema: String,
    pub name: String,
    pub key: String,
    pub rows_expected: u64,
    pub rows: u64,
    pub content_sha256_expected: String,
    pub content_sha256: String,
    pub ok: bool,
    pub problems: Vec<String>,
}

impl TableCheck {
    pub fn new(entry: &ManifestTable) -> Self {
        Self {
            schema: entry.schema.clone(),
            name: entry.name.clone(),
            key: entry.key.clone(),
            rows_expected: entry.rows,
            rows: 0,
            content_sha256_expected: entry.content_sha256.clone(),
            content_sha256: String::new(),
            ok: false,
            problems: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub run_id: String,
    pub bucket: String,
    pub manifest_key: String,
    /// The manifest exists: the backup finished.
    pub complete: bool,
    /// Complete, and every object matches the manifest.
    pub ok: bool,
    pub tables: Vec<TableCheck>,
    pub objects_checked: usize,
    pub bytes_read: u64,
    /// Multipart uploads still open under the backup's prefix.
    pub pending_uploads: Vec<String>,
    /// Objects under the prefix that the manifest does not list.
    pub unexpected_objects: Vec<String>,
    pub problems: Vec<String>,
}

impl LogicalBackups {
    pub async fn verify(&self, run: &RunId) -> Result<VerifyReport, LogicalError> {
        let key = manifest_key(&self.config.prefix, &run.stamp);
        let prefix = backup_prefix(&self.config.prefix, &run.stamp);
        let pending_uploads: Vec<String> = self.store.pending_uploads(&prefix).await?.into_iter().map(|u| u.key).collect();
        let listed = self.store.list(&prefix).await?;
        let mut report = VerifyReport {
            run_id: run.stamp.clone(),
            bucket: self.store.bucket().to_owned(),
            manifest_key: key.clone(),
            complete: false,
            ok: false,
            tables: Vec::new(),
            objects_checked: 0,
            bytes_read: 0,
            pending_uploads,
            unexpected_objects: Vec::new(),
            problems: Vec::new(),
        };
        let manifest = match self.read_manifest(&key).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                report.problems.push(format!("no manifest at {key}: the backup is incomplete"));
                report.unexpected_objects = listed.into_iter().map(|o| o.key).collect();
                return Ok(report);
            }
            Err(LogicalError::CorruptManifest { source, .. }) => {
                report.problems.push(format!("manifest {key} does not parse: {source}"));
                return Ok(report);
            }
            Err(e) => return Err(e),
        };
        report.complete = true;
        if manifest.run_id != run.stamp {
            report.problems.push(format!("manifest names run {}, expected {}", manifest.run_id, run.stamp));
        }
        for table in &manifest.schema.tables {
            if !manifest.tables.iter().any(|t| t.schema == table.schema && t.name == table.name) {
                report.problems.push(format!("table {}.{} is in the schema but has no data object", table.schema, table.name));
            }
        }
        report.unexpected_objects = listed
            .iter()
            .map(|o| o.key.clone())
            .filter(|k| k != &key && !manifest.tables.iter().any(|t| &t.key == k))
            .collect();
        let parallelism = self.config.parallelism as usize;
        let checks: Vec<Result<(TableCheck, u64), LogicalError>> =
            futures_util::stream::iter(manifest.tables.iter().map(|entry| self.verify_table(entry))).buffered(parallelism).collect().await;
        for check in checks {
            let (check, bytes) = check?;
            report.objects_checked += 1;
            report.bytes_read += bytes;
            report.problems.extend(check.problems.iter().map(|p| format!("{}: {p}", check.key)));
            report.tables.push(check);
        }
        report.problems.extend(report.pending_uploads.iter().map(|k| format!("unfinished multipart upload of {k}")));
        report.ok = report.problems.is_empty();
        tracing::info!(%key, ok = report.ok, problems = report.problems.len(), "logical backup verified");
        Ok(report)
    }

    async fn verify_table(&self, entry: &ManifestTable) -> Result<(TableCheck, u64), LogicalError> {
        let mut check = TableCheck::new(entry);
        let Some(mut body) = self.store.open(&entry.key, entry.version_id.as_deref()).await? else {
            check.problems.push("object is missing".to_owned());
            return Ok((check, 0));
        };
        let mut object = sha2::Sha256::new();
        let mut content = sha2::Sha256::new();
        let mut decoder = zstd::stream::write::Decoder::new(Vec::new()).map_err(|source| LogicalError::Compression { key: entry.key.clone(), source })?;
        let (mut bytes, mut rows) = (0u64, 0u64);
        let mut decode_error = None;
        while let Some(chunk) = next_chunk(&mut body).await? {
            object.update(&chunk);
            bytes += chunk.len() as u64;
            if decode_error.is_none() {
                match decoder.write_all(&chunk).and_then(|()| decoder.flush()) {
                    Ok(()) => {
                        let out = std::mem::take(decoder.get_mut());
                        content.update(&out);
                        rows += count_rows(&out);
                    }
                    Err(e) => decode_error = Some(e),
                }
            }
        }
        let sha256 = hex::encode(object.finalize());
        if bytes != entry.object_bytes {
            check.problems.push(format!("{bytes} bytes, the manifest has {}", entry.object_bytes));
        }
        if sha256 != entry.sha256 {
            check.problems.push(format!("SHA-256 {sha256}, the manifest has {}", entry.sha256));
        }
        match decode_error {
            Some(e) => check.problems.push(format!("does not decompress: {e}")),
            None => {
                check.rows = rows;
                check.content_sha256 = hex::encode(content.finalize());
                if rows != entry.rows {
                    check.problems.push(format!("{rows} rows, the manifest has {}", entry.rows));
                }
                if check.content_sha256 != entry.content_sha256 {
                    check.problems.push(format!("content checksum {}, the manifest has {}", check.content_sha256, entry.content_sha256));
                }
            }
        }
        check.ok = check.problems.is_empty();
        Ok((check, bytes))
    }
}
