//! The streaming part writer of a logical backup: compressed bytes accumulate in one part buffer
//! of bounded size, which is uploaded as a multipart part (with its SHA-256) of a locked object
//! whenever it fills. A whole-object SHA-256 is computed on the way. Nothing is spilled to disk and
//! no table is ever held whole in memory.

use crate::aws_error::AwsCallError;
use crate::object_store::{ObjectStore, UploadedPart};
use bytes::Bytes;
use sha2::Digest;
use time::OffsetDateTime;

/// What a finished object looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenObject {
    pub key: String,
    pub version_id: Option<String>,
    pub bytes: u64,
    pub parts: u32,
    /// Hex SHA-256 of the whole object.
    pub sha256: String,
}

/// Writes one object as a multipart upload, a part at a time, hashing it on the way; the caller
/// fills one bounded part buffer and hands it over when full. [`PartWriter::abort`] (or the caller's cleanup of pending uploads
/// under the backup prefix) removes an unfinished upload.
pub struct PartWriter<'a> {
    store: &'a dyn ObjectStore,
    key: String,
    upload_id: String,
    retain_until: OffsetDateTime,
    parts: Vec<UploadedPart>,
    bytes: u64,
    hasher: sha2::Sha256,
}

impl<'a> PartWriter<'a> {
    pub async fn start(
        store: &'a dyn ObjectStore,
        key: &str,
        retain_until: OffsetDateTime,
    ) -> Result<Self, AwsCallError> {
        let upload_id = store.create_upload(key, retain_until).await?;
        Ok(Self {
            store,
            key: key.to_owned(),
            upload_id,
            retain_until,
            parts: Vec::new(),
            bytes: 0,
            hasher: sha2::Sha256::new(),
        })
    }

    pub fn upload_id(&self) -> &str {
        &self.upload_id
    }

    /// Uploads one full part (every part but the last must be at least 5 MiB).
    pub async fn upload(&mut self, part: Vec<u8>) -> Result<(), AwsCallError> {
        let body = Bytes::from(part);
        self.hasher.update(&body);
        self.bytes += body.len() as u64;
        let number = i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX);
        let part = self
            .store
            .upload_part(&self.key, &self.upload_id, number, body)
            .await?;
        self.parts.push(part);
        Ok(())
    }

    /// Uploads what is left as the last part and completes the upload.
    pub async fn finish(mut self, last: Vec<u8>) -> Result<WrittenObject, AwsCallError> {
        if !last.is_empty() || self.parts.is_empty() {
            self.upload(last).await?;
        }
        let parts = u32::try_from(self.parts.len()).unwrap_or(u32::MAX);
        let version_id = self
            .store
            .complete_upload(&self.key, &self.upload_id, std::mem::take(&mut self.parts))
            .await?;
        self.store
            .lock_version(&self.key, version_id.as_deref(), self.retain_until)
            .await?;
        Ok(WrittenObject {
            key: self.key,
            version_id,
            bytes: self.bytes,
            parts,
            sha256: hex::encode(self.hasher.finalize()),
        })
    }

    pub async fn abort(self) -> Result<(), AwsCallError> {
        self.store.abort_upload(&self.key, &self.upload_id).await
    }
}
