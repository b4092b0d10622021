//! Reads one stored segment back: the stored bytes' size and SHA-256, and the decompressed COPY
//! text with its row count and rowset checksum, compared with the manifest. Used by a restore
//! (which also loads the text) and by verify.

use super::LogicalError;
use super::manifest::ManifestSegment;
use super::rowset::{RowsetHasher, RowsetSummary};
use crate::object_store::{ObjectBody, ObjectStore, next_chunk};
use sha2::Digest;
use std::io::Write;

pub struct SegmentReader<'a> {
    entry: &'a ManifestSegment,
    body: ObjectBody,
    object: sha2::Sha256,
    object_bytes: u64,
    decoder: zstd::stream::write::Decoder<'static, Vec<u8>>,
    content: RowsetHasher,
    decode_error: Option<std::io::Error>,
}

/// What reading a segment found.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SegmentRead {
    pub object_sha256: String,
    pub object_bytes: u64,
    /// The decompressed text's checksum and rows; None when the object did not decompress.
    pub content: Option<RowsetSummary>,
    /// Differences from the manifest, each naming the object.
    pub problems: Vec<String>,
}

impl<'a> SegmentReader<'a> {
    /// Opens the segment's object at the version the manifest names; None when it is missing.
    pub async fn open(
        store: &dyn ObjectStore,
        entry: &'a ManifestSegment,
    ) -> Result<Option<Self>, LogicalError> {
        let Some(body) = store.open(&entry.key, entry.version_id.as_deref()).await? else {
            return Ok(None);
        };
        let decoder = zstd::stream::write::Decoder::new(Vec::new()).map_err(|source| {
            LogicalError::Compression {
                key: entry.key.clone(),
                source,
            }
        })?;
        Ok(Some(Self {
            entry,
            body,
            object: sha2::Sha256::new(),
            object_bytes: 0,
            decoder,
            content: RowsetHasher::new(),
            decode_error: None,
        }))
    }

    /// The next piece of decompressed COPY text (possibly empty); None at the end of the object.
    /// After a decompression error it keeps reading, and hashing, the stored bytes and returns
    /// nothing more, so the object's own checksum is still checked.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, LogicalError> {
        let Some(chunk) = next_chunk(&mut self.body).await? else {
            return Ok(None);
        };
        self.object.update(&chunk);
        self.object_bytes += chunk.len() as u64;
        if self.decode_error.is_some() {
            return Ok(Some(Vec::new()));
        }
        match self
            .decoder
            .write_all(&chunk)
            .and_then(|()| self.decoder.flush())
        {
            Ok(()) => {
                let out = std::mem::take(self.decoder.get_mut());
                self.content.update(&out);
                Ok(Some(out))
            }
            Err(e) => {
                self.decode_error = Some(e);
                Ok(Some(Vec::new()))
            }
        }
    }

    /// Reads what is left and compares everything with the manifest.
    pub async fn finish(mut self) -> Result<SegmentRead, LogicalError> {
        while self.next().await?.is_some() {}
        let entry = self.entry;
        let object_sha256 = hex::encode(self.object.finalize());
        let mut problems = Vec::new();
        if self.object_bytes != entry.object_bytes {
            problems.push(format!(
                "{}: {} bytes stored, the manifest has {}",
                entry.key, self.object_bytes, entry.object_bytes
            ));
        }
        if object_sha256 != entry.sha256 {
            problems.push(format!(
                "{}: SHA-256 {object_sha256}, the manifest has {}",
                entry.key, entry.sha256
            ));
        }
        let content = match self.decode_error {
            Some(e) => {
                problems.push(format!("{}: does not decompress: {e}", entry.key));
                None
            }
            None => {
                let content = self.content.finish();
                problems.extend(content.differences(
                    &format!("in {}", entry.key),
                    entry.rows,
                    &entry.content_checksum,
                ));
                Some(content)
            }
        };
        Ok(SegmentRead {
            object_sha256,
            object_bytes: self.object_bytes,
            content,
            problems,
        })
    }
}

/// What reading a segment found when its object is missing.
pub fn missing(entry: &ManifestSegment) -> SegmentRead {
    SegmentRead {
        object_sha256: String::new(),
        object_bytes: 0,
        content: None,
        problems: vec![format!("{}: object is missing", entry.key)],
    }
}
