//! The logical backup manifest: written last, it is the backup's commit marker. A backup folder
//! without one is incomplete and is never restored.

use crate::catalyst_db::introspect::{CapturedSchema, NotCaptured, SnapshotInstant};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub const LOGICAL_MANIFEST_FORMAT: &str = "catalyst-dr/logical-backup/v1";

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
        Self { server_time: s.server_time.clone(), lsn: s.lsn.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTable {
    pub schema: String,
    pub name: String,
    pub key: String,
    pub version_id: Option<String>,
    pub rows: u64,
    /// Bytes of COPY text before compression.
    pub copy_bytes: u64,
    /// Bytes of the stored (compressed) object.
    pub object_bytes: u64,
    pub parts: u32,
    /// Hex SHA-256 of the stored object.
    pub sha256: String,
    /// Hex SHA-256 of the COPY text, rows in primary-key order: the content checksum.
    pub content_sha256: String,
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
    pub tables: Vec<ManifestTable>,
    pub schema: CapturedSchema,
    /// Objects in the schema the backup did not capture (also in `warnings`).
    pub not_captured: Vec<NotCaptured>,
    pub warnings: Vec<String>,
}

impl LogicalManifest {
    pub fn total_rows(&self) -> u64 {
        self.tables.iter().map(|t| t.rows).sum()
    }
}
