//! `verify-logical`: re-reads every object of a logical backup and checks it against the
//! manifest (what pgBackRest's `verify` does for its repository): the manifest exists and parses,
//! every segment object is there at its recorded version with its size and SHA-256, and its
//! decompressed COPY text has the recorded row count and content checksum, which add up to the
//! table's. Unfinished multipart uploads and objects the manifest does not list (but the
//! backup's own records: the fan-out's, verify's and the restores' reports) are reported too.
//!
//! One invocation reads the whole backup (`verify-logical`). A backup too large for that is
//! verified in batches of about `LOGICAL_FANOUT_BATCH_MIB` of COPY text, each its own invocation
//! (the nightly state machine's Map): `verify-logical-plan` answers a verify id and the batches,
//! `verify-logical-batch` reads one batch and stores what it found, and `verify-logical-finish`
//! combines the batches' records into the same report; a batch without a record is a problem
//! there, never a pass. A retried batch returns its stored record.
//!
//! ```text
//! <prefix><run_id>/verify/<verify_id>/<batch>.json   one per verified batch: each segment's read
//! ```

use super::layout::{backup_prefix, checked_work_id, is_record, manifest_key, new_work_id};
use super::manifest::{LogicalManifest, ManifestSegment, ManifestTable};
use super::rowset::{RowsetChecksum, RowsetSummary};
use super::segment_object::{self, SegmentRead, SegmentReader};
use super::{LogicalBackups, LogicalError};
use crate::run_id::RunId;
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Batch records read at once by `verify-logical-finish`.
const RECORD_READS: usize = 32;

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

/// `verify-logical-plan`'s answer: the Map's items are `batches`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyPlan {
    pub run_id: String,
    /// Names this verify's batch records; the batch and finish steps take it.
    pub verify_id: String,
    pub segments: usize,
    pub copy_bytes: u64,
    /// Empty when the run has no readable manifest (the finish step reports why).
    pub batches: Vec<usize>,
}

/// `verify-logical-batch`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyBatchResult {
    pub verify_id: String,
    pub batch: usize,
    pub segments: usize,
    pub bytes_read: u64,
    /// Problems found in the batch's objects (listed by the finish step).
    pub problems: usize,
    /// True when an earlier attempt had verified the batch and its record was returned.
    pub reused: bool,
}

/// One segment as a batch read it; `segment` numbers the manifest's segments in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckedSegment {
    segment: usize,
    read: SegmentRead,
}

/// A verified batch's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BatchRecord {
    verify_id: String,
    batch: usize,
    /// Hex SHA-256 of the manifest the batch checked its segments against.
    manifest_sha256: String,
    segments: Vec<CheckedSegment>,
}

/// Every segment of a manifest, in order, with its table's index.
pub(crate) fn segments_of(manifest: &LogicalManifest) -> Vec<(usize, &ManifestSegment)> {
    manifest
        .tables
        .iter()
        .enumerate()
        .flat_map(|(t, table)| table.segments.iter().map(move |s| (t, s)))
        .collect()
}

fn record_key(prefix: &str, run_id: &str, verify_id: &str, batch: usize) -> String {
    format!(
        "{}verify/{verify_id}/{batch:06}.json",
        backup_prefix(prefix, run_id)
    )
}

impl LogicalBackups {
    /// `verify-logical`: every segment read in this invocation.
    pub async fn verify(&self, run: &RunId) -> Result<VerifyReport, LogicalError> {
        let (mut report, manifest) = self.inventory(run).await?;
        let Some((manifest, _)) = manifest else {
            return Ok(report);
        };
        let segments = segments_of(&manifest);
        let reads = self
            .read_segments(&segments, 0..segments.len())
            .await?
            .into_iter()
            .map(|checked| Some(checked.read))
            .collect();
        conclude(&mut report, &manifest, reads);
        Ok(report)
    }

    /// `verify-logical-plan`: the batches of the run's segments, by COPY text size.
    pub async fn plan_verify(&self, run: &RunId) -> Result<VerifyPlan, LogicalError> {
        let key = manifest_key(&self.config.prefix, &run.stamp);
        let manifest = match self.read_manifest(&key).await {
            Ok(manifest) => manifest,
            // The finish step reports what is wrong with it.
            Err(
                LogicalError::CorruptManifest { .. }
                | LogicalError::UnsupportedManifestFormat { .. },
            ) => None,
            Err(e) => return Err(e),
        };
        let segments = manifest.as_ref().map(segments_of).unwrap_or_default();
        let batches = self.segment_batches(&segments);
        Ok(VerifyPlan {
            run_id: run.stamp.clone(),
            verify_id: new_work_id(OffsetDateTime::now_utc()),
            segments: segments.len(),
            copy_bytes: segments.iter().map(|(_, s)| s.copy_bytes).sum(),
            batches: (0..batches.len()).collect(),
        })
    }

    /// `verify-logical-batch`: reads one batch's segments and stores what it found; a retry
    /// returns the stored record.
    pub async fn verify_batch(
        &self,
        run: &RunId,
        verify_id: &str,
        batch: usize,
    ) -> Result<VerifyBatchResult, LogicalError> {
        let verify_id = checked_work_id("verify_id", verify_id, "verify-logical-plan")?;
        let key = record_key(&self.config.prefix, &run.stamp, verify_id, batch);
        let answer = |record: &BatchRecord, reused| VerifyBatchResult {
            verify_id: verify_id.to_owned(),
            batch,
            segments: record.segments.len(),
            bytes_read: record.segments.iter().map(|s| s.read.object_bytes).sum(),
            problems: record.segments.iter().map(|s| s.read.problems.len()).sum(),
            reused,
        };
        if let Some(record) = self.read_json::<BatchRecord>(&key).await? {
            return Ok(answer(&record, true));
        }
        let manifest_key = manifest_key(&self.config.prefix, &run.stamp);
        let (manifest, manifest_sha256) = self
            .read_manifest_and_digest(&manifest_key)
            .await?
            .ok_or_else(|| LogicalError::BackupIncomplete {
                run_id: run.stamp.clone(),
                key: manifest_key,
            })?;
        let segments = segments_of(&manifest);
        let batches = self.segment_batches(&segments);
        let Some(members) = batches.get(batch) else {
            return Err(super::no_such_batch(
                &format!("run {} verifies", run.stamp),
                batches.len(),
            )
            .into());
        };
        let record = BatchRecord {
            verify_id: verify_id.to_owned(),
            batch,
            manifest_sha256,
            segments: self
                .read_segments(&segments, members.iter().copied())
                .await?,
        };
        let body = serde_json::to_vec(&record).expect("a record always serialises");
        self.store
            .put_locked(&key, body, "application/json", self.retain_until(run))
            .await?;
        Ok(answer(&record, false))
    }

    /// `verify-logical-finish`: the report, from the batches' records; a segment no record
    /// holds is a problem.
    pub async fn finish_verify(
        &self,
        run: &RunId,
        verify_id: &str,
    ) -> Result<VerifyReport, LogicalError> {
        let verify_id = checked_work_id("verify_id", verify_id, "verify-logical-plan")?;
        let (mut report, manifest) = self.inventory(run).await?;
        let Some((manifest, manifest_sha256)) = manifest else {
            return Ok(report);
        };
        let segments = segments_of(&manifest);
        let batches = self.segment_batches(&segments);
        let records: Vec<Option<BatchRecord>> = futures_util::stream::iter(0..batches.len())
            .map(|batch| {
                let key = record_key(&self.config.prefix, &run.stamp, verify_id, batch);
                async move { self.read_json::<BatchRecord>(&key).await }
            })
            .buffered(RECORD_READS)
            .try_collect()
            .await?;
        let mut reads: Vec<Option<SegmentRead>> = vec![None; segments.len()];
        for (batch, (members, record)) in batches.iter().zip(records).enumerate() {
            let covered = record.as_ref().is_some_and(|r| {
                r.segments
                    .iter()
                    .map(|s| s.segment)
                    .eq(members.iter().copied())
            });
            match record {
                // Its reads were compared with another manifest than the one now in the bucket.
                Some(record) if record.manifest_sha256 != manifest_sha256 => {
                    report.problems.push(format!(
                        "verify {verify_id}: batch {batch} checked another version of the manifest (SHA-256 {})",
                        record.manifest_sha256
                    ))
                }
                Some(record) if covered => {
                    for checked in record.segments {
                        reads[checked.segment] = Some(checked.read);
                    }
                }
                Some(_) => report.problems.push(format!(
                    "verify {verify_id}: batch {batch}'s record holds other segments than the manifest's batch {batch}"
                )),
                None => report.problems.push(format!(
                    "verify {verify_id}: batch {batch} ({} segments) was not verified",
                    members.len()
                )),
            }
        }
        conclude(&mut report, &manifest, reads);
        Ok(report)
    }

    /// The report's checks of everything but the segments' content: the manifest with its
    /// SHA-256 (None when there is none to read, with the reason in the report), the open
    /// uploads and the objects it does not list.
    async fn inventory(
        &self,
        run: &RunId,
    ) -> Result<(VerifyReport, Option<(LogicalManifest, String)>), LogicalError> {
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
        let (manifest, manifest_sha256) = match self.read_manifest_and_digest(&key).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                report
                    .problems
                    .push(format!("no manifest at {key}: the backup is incomplete"));
                report.unexpected_objects = listed.into_iter().map(|o| o.key).collect();
                return Ok((report, None));
            }
            Err(LogicalError::CorruptManifest { source, .. }) => {
                report
                    .problems
                    .push(format!("manifest {key} does not parse: {source}"));
                return Ok((report, None));
            }
            Err(e @ LogicalError::UnsupportedManifestFormat { .. }) => {
                report.problems.push(e.to_string());
                return Ok((report, None));
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
        let (prefix, stamp) = (&self.config.prefix, &run.stamp);
        report.unexpected_objects = listed
            .iter()
            .map(|o| o.key.clone())
            .filter(|k| {
                k != &key
                    && !is_record(prefix, stamp, k)
                    && !manifest
                        .tables
                        .iter()
                        .flat_map(|t| &t.segments)
                        .any(|s| &s.key == k)
            })
            .collect();
        Ok((report, Some((manifest, manifest_sha256))))
    }

    /// Reads the segments numbered `members`, `LOGICAL_PARALLELISM` at once.
    async fn read_segments(
        &self,
        segments: &[(usize, &ManifestSegment)],
        members: impl Iterator<Item = usize>,
    ) -> Result<Vec<CheckedSegment>, LogicalError> {
        futures_util::stream::iter(members.map(|segment| async move {
            let read = self.read_segment(segments[segment].1).await?;
            Ok::<_, LogicalError>(CheckedSegment { segment, read })
        }))
        .buffered(self.config.parallelism as usize)
        .try_collect()
        .await
    }

    async fn read_segment(&self, entry: &ManifestSegment) -> Result<SegmentRead, LogicalError> {
        match SegmentReader::open(self.store.as_ref(), entry).await? {
            Some(reader) => reader.finish().await,
            None => Ok(segment_object::missing(entry)),
        }
    }
}

/// Adds the segments' reads (by segment number; None: not read) to the report: each table's
/// checks, then the open uploads; `ok` when nothing is wrong.
fn conclude(
    report: &mut VerifyReport,
    manifest: &LogicalManifest,
    reads: Vec<Option<SegmentRead>>,
) {
    let mut by_table: Vec<Vec<Option<SegmentRead>>> =
        manifest.tables.iter().map(|_| Vec::new()).collect();
    for ((table, _), read) in segments_of(manifest).into_iter().zip(reads) {
        if let Some(read) = &read {
            report.objects_checked += 1;
            report.bytes_read += read.object_bytes;
        }
        by_table[table].push(read);
    }
    for (entry, reads) in manifest.tables.iter().zip(by_table) {
        let mut check = TableCheck::new(entry);
        let unread = reads.iter().filter(|r| r.is_none()).count();
        if unread > 0 {
            check.problems.push(format!(
                "{unread} of its {} segments were not read",
                reads.len()
            ));
        }
        check.problems.extend(
            reads
                .iter()
                .flatten()
                .flat_map(|r| r.problems.iter().cloned()),
        );
        check.measured(
            "stored",
            sum_of(reads.iter().map(|r| r.as_ref().and_then(|r| r.content))),
        );
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
    tracing::info!(key = %report.manifest_key, ok = report.ok, problems = report.problems.len(), "logical backup verified");
}
