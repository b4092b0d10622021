//! `verify-logical`: re-reads every object of a logical backup and checks it against the
//! manifest (what pgBackRest's `verify` does for its repository): the manifest exists and parses,
//! every segment object is there at its recorded version with its size and SHA-256, and its
//! decompressed COPY text has the recorded row count and content checksum, which add up to the
//! table's. Unfinished multipart uploads and objects the manifest does not list (but the
//! fan-out's plan and segment records) are reported too.

use super::layout::{backup_prefix, manifest_key};
use super::manifest::{ManifestSegment, ManifestTable};
use super::rowset::{RowsetChecksum, RowsetSummary};
use super::segment_object::{self, SegmentRead, SegmentReader};
use super::{LogicalBackups, LogicalError};
use crate::run_id::RunId;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

/// The checks of one table (by verify, or by a restore).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableCheck {
    pub schema: String,
    pub name: String,
    pub segments: usize,
    pub rows_expected: u64,
    pub rows: u64,
    pub content_checksum_expected: RowsetChecksum,
    /// None when it could not be computed (an object missing or not decompressing).
    pub content_checksum: Option<RowsetChecksum>,
    pub ok: bool,
    pub problems: Vec<String>,
}

impl TableCheck {
    pub fn new(entry: &ManifestTable) -> Self {
        Self {
            schema: entry.schema.clone(),
            name: entry.name.clone(),
            segments: entry.segments.len(),
            rows_expected: entry.rows,
            rows: 0,
            content_checksum_expected: entry.content_checksum,
            content_checksum: None,
            ok: false,
            problems: Vec::new(),
        }
    }

    /// Records what was read of the whole table (the sum over its parts), with any difference
    /// from the manifest. `what` says where it was read ("stored" objects, the "restored" table).
    pub fn measured(&mut self, what: &str, content: Option<RowsetSummary>) {
        let Some(content) = content else { return };
        self.problems.extend(content.differences(
            what,
            self.rows_expected,
            &self.content_checksum_expected,
        ));
        self.rows = content.rows;
        self.content_checksum = Some(content.checksum);
    }

    pub fn close(&mut self) {
        self.ok = self.problems.is_empty();
    }
}

/// Adds up the content read from a table's segments; None when any of them could not be read.
pub fn sum_of(parts: impl IntoIterator<Item = Option<RowsetSummary>>) -> Option<RowsetSummary> {
    parts
        .into_iter()
        .try_fold(RowsetSummary::default(), |mut sum, part| {
            sum.add(&part?);
            Some(sum)
        })
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
        let pending_uploads: Vec<String> = self
            .store
            .pending_uploads(&prefix)
            .await?
            .into_iter()
            .map(|u| u.key)
            .collect();
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
                report
                    .problems
                    .push(format!("no manifest at {key}: the backup is incomplete"));
                report.unexpected_objects = listed.into_iter().map(|o| o.key).collect();
                return Ok(report);
            }
            Err(LogicalError::CorruptManifest { source, .. }) => {
                report
                    .problems
                    .push(format!("manifest {key} does not parse: {source}"));
                return Ok(report);
            }
            Err(e @ LogicalError::UnsupportedManifestFormat { .. }) => {
                report.problems.push(e.to_string());
                return Ok(report);
            }
            Err(e) => return Err(e),
        };
        report.complete = manifest.complete;
        report.problems.extend(
            manifest
                .not_captured
                .iter()
                .map(|o| format!("{o} is not in the backup: it was not captured")),
        );
        if manifest.run_id != run.stamp {
            report.problems.push(format!(
                "manifest names run {}, expected {}",
                manifest.run_id, run.stamp
            ));
        }
        for table in manifest.schema.stored_tables() {
            if !manifest
                .tables
                .iter()
                .any(|t| t.schema == table.schema && t.name == table.name)
            {
                report.problems.push(format!(
                    "table {}.{} is in the schema but has no data object",
                    table.schema, table.name
                ));
            }
        }
        report.unexpected_objects = listed
            .iter()
            .map(|o| o.key.clone())
            .filter(|k| {
                k != &key
                    && !super::fanout::is_fanout_record(&self.config.prefix, &run.stamp, k)
                    && !manifest
                        .tables
                        .iter()
                        .flat_map(|t| &t.segments)
                        .any(|s| &s.key == k)
            })
            .collect();
        let parallelism = self.config.parallelism as usize;
        let segments = manifest
            .tables
            .iter()
            .enumerate()
            .flat_map(|(t, table)| table.segments.iter().map(move |s| (t, s)));
        let reads: Vec<Result<(usize, SegmentRead), LogicalError>> = futures_util::stream::iter(
            segments.map(|(t, segment)| async move { Ok((t, self.read_segment(segment).await?)) }),
        )
        .buffered(parallelism)
        .collect()
        .await;
        let mut by_table: Vec<Vec<SegmentRead>> =
            manifest.tables.iter().map(|_| Vec::new()).collect();
        for read in reads {
            let (table, read) = read?;
            report.objects_checked += 1;
            report.bytes_read += read.object_bytes;
            by_table[table].push(read);
        }
        for (entry, reads) in manifest.tables.iter().zip(by_table) {
            let mut check = TableCheck::new(entry);
            check
                .problems
                .extend(reads.iter().flat_map(|r| r.problems.iter().cloned()));
            check.measured("stored", sum_of(reads.iter().map(|r| r.content)));
            check.close();
            report.problems.extend(
                check
                    .problems
                    .iter()
                    .map(|p| format!("{}.{}: {p}", check.schema, check.name)),
            );
            report.tables.push(check);
        }
        report.problems.extend(
            report
                .pending_uploads
                .iter()
                .map(|k| format!("unfinished multipart upload of {k}")),
        );
        report.ok = report.complete && report.problems.is_empty();
        tracing::info!(%key, ok = report.ok, problems = report.problems.len(), "logical backup verified");
        Ok(report)
    }

    async fn read_segment(&self, entry: &ManifestSegment) -> Result<SegmentRead, LogicalError> {
        match SegmentReader::open(self.store.as_ref(), entry).await? {
            Some(reader) => reader.finish().await,
            None => Ok(segment_object::missing(entry)),
        }
    }
}
