//! The logical backup manifest: written last, it is the backup's commit marker. A backup folder
//! without one is incomplete and is never restored.

use super::rowset::RowsetChecksum;
use crate::catalyst_db::introspect::{BlockRange, CapturedSchema, NotCaptured, SnapshotInstant};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// v3: every schema object with the statements that recreate it, in restore order; partitions
/// and inheritance children as tables of their own; `complete` (v2: block-range segments,
/// rowset content checksums).
pub const LOGICAL_MANIFEST_FORMAT: &str = "catalyst-dr/logical-backup/v3";

/// The instant every table was read at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestInstant {
    /// Server clock when the exported snapshot was taken (UTC).
    pub server_time: String,
    /// WAL position at that moment.
    pub lsn: String,
}

impl From<&SnapshotInstant> for ManifestInstant {
    fn from(s: &SnapshotInstant) -> Self {
        Self {
            server_time: s.server_time.clone(),
            lsn: s.lsn.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTable {
    pub schema: String,
    pub name: String,
    /// The sums over the segments.
    pub rows: u64,
    /// Bytes of COPY text before compression.
    pub copy_bytes: u64,
    /// Bytes of the stored (compressed) objects.
    pub object_bytes: u64,
    /// The rowset checksum of the table's COPY text (see [`super::rowset`]): the sum of its
    /// segments' checksums, and what a restored table must re-read to.
    pub content_checksum: RowsetChecksum,
    /// The table's block ranges, in block order, each stored as one object.
    pub segments: Vec<ManifestSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSegment {
    pub key: String,
    pub version_id: Option<String>,
    /// The blocks of the source table this segment was read from.
    pub blocks: BlockRange,
    pub rows: u64,
    pub copy_bytes: u64,
    pub object_bytes: u64,
    pub parts: u32,
    /// Hex SHA-256 of the stored object.
    pub sha256: String,
    /// The rowset checksum of this segment's COPY text.
    pub content_checksum: RowsetChecksum,
}

impl ManifestTable {
    /// A table's entry from its segments (sorted into block order here).
    pub fn from_segments(schema: &str, name: &str, mut segments: Vec<ManifestSegment>) -> Self {
        segments.sort_by_key(|s| s.blocks.start);
        let mut content_checksum = RowsetChecksum::default();
        for s in &segments {
            content_checksum.add(&s.content_checksum);
        }
        Self {
            schema: schema.to_owned(),
            name: name.to_owned(),
            rows: segments.iter().map(|s| s.rows).sum(),
            copy_bytes: segments.iter().map(|s| s.copy_bytes).sum(),
            object_bytes: segments.iter().map(|s| s.object_bytes).sum(),
            content_checksum,
            segments,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogicalManifest {
    pub format: String,
    pub run_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub scheduled_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub completed_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub retain_until: OffsetDateTime,
    pub database: String,
    pub server_version: String,
    pub instant: ManifestInstant,
    pub compression: String,
    pub zstd_level: i32,
    pub part_size_bytes: u64,
    /// The segment size the large tables were divided by.
    pub segment_bytes: u64,
    /// Every table that stores rows, with the rows read at the instant.
    pub tables: Vec<ManifestTable>,
    /// True when the backup holds every row and every schema object, but those the operator
    /// chose to leave out (`ignored`).
    pub complete: bool,
    /// Schema objects the backup could not capture: a restore lacks them.
    pub not_captured: Vec<NotCaptured>,
    /// Schema objects left out because `LOGICAL_IGNORE_OBJECTS` lists them.
    pub ignored: Vec<NotCaptured>,
    pub schema: CapturedSchema,
    /// How the backup read the database (absent in manifests written before the fan-out path:
    /// those read an exported snapshot).
    #[serde(default)]
    pub read_path: ReadPath,
}

/// How a logical backup read the database: what its instant means.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ReadPath {
    /// One invocation read the live source at a snapshot it exported: the instant is the
    /// source's own clock and WAL position.
    #[default]
    ExportedSnapshot,
    /// Many invocations (a Step Functions Map) read a quiescent copy of the source restored to
    /// the backup instant (`restored_to`); the instant's server time is that restore point.
    ReadSource(ReadSource),
}

/// The quiescent copy a fanned-out backup read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadSource {
    /// The id the copy was restored under (pitr-restore's `drill_id`, `nightly-<run>`).
    pub id: String,
    /// The copy's instance (or local cluster) id.
    pub target_id: String,
    /// The point in time the copy was restored to (RFC 3339, UTC).
    pub restored_to: String,
    /// The invocations the segments were spread over.
    pub batches: usize,
}

impl LogicalManifest {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }

    /// Fails with `SchemaNotCaptured` for a backup that left schema objects out.
    pub fn require_complete(&self) -> Result<(), super::LogicalError> {
        if self.complete {
            return Ok(());
        }
        Err(super::LogicalError::SchemaNotCaptured {
            run_id: self.run_id.clone(),
            objects: self.not_captured.clone(),
        })
    }

    pub fn segment_count(&self) -> usize {
        self.tables.iter().map(|t| t.segments.len()).sum()
    }
}

/// Just the format of a manifest, read before the rest so a manifest of another format is
/// reported as such rather than as unparseable.
#[derive(Debug, Deserialize)]
pub struct ManifestFormat {
    pub format: String,
}
