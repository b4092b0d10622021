//! The backup bucket: immutable (Object Lock, COMPLIANCE) writes, whole or as multipart uploads,
//! reads, listings and the cleanup of unfinished uploads. One trait for every feature; [`S3Objects`]
//! is the real bucket, [`memory::MemoryObjects`] an in-memory one for unit tests.

#[cfg(any(test, feature = "memory"))]
pub mod memory;
mod s3;

pub use s3::S3Objects;

use crate::aws_error::{AwsCallError, AwsFailureKind};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PutOutcome {
    pub version_id: Option<String>,
    /// Hex SHA-256 of the bytes written, which S3 verified on receipt.
    pub sha256: String,
}

/// What S3 says about one object without reading it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectHead {
    pub size: u64,
    /// Hex SHA-256 of the whole object, when S3 holds one (written with a SHA-256 checksum in
    /// one part); `None` for objects without a checksum or with a per-part (composite) one.
    pub sha256: Option<String>,
    /// `COMPLIANCE` or `GOVERNANCE` when the current version is locked.
    pub lock_mode: Option<String>,
    pub retain_until: Option<OffsetDateTime>,
}

/// A multipart upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
}

/// One uploaded part, as CompleteMultipartUpload needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedPart {
    pub number: i32,
    pub etag: Option<String>,
    /// Base64 SHA-256 of the part, which S3 verified on receipt.
    pub sha256_base64: String,
}

/// A stream of an object's bytes.
pub type ObjectBody = ByteStream;

#[async_trait::async_trait]
pub trait ObjectStore: Send + Sync {
    fn bucket(&self) -> &str;
    /// Writes an object that cannot be deleted or overwritten in place before `retain_until`.
    async fn put_locked(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        retain_until: OffsetDateTime,
    ) -> Result<PutOutcome, AwsCallError>;
    /// The current version of an object; None when it does not exist.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, AwsCallError>;
    /// Streams one object (a given version when `version_id` is set); None when it does not exist.
    async fn open(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectBody>, AwsCallError>;
    async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, AwsCallError>;
    /// The current version's size, full-object SHA-256 and lock; `None` when there is none.
    async fn head(&self, key: &str) -> Result<Option<ObjectHead>, AwsCallError>;
    /// Starts a multipart upload whose object is locked (COMPLIANCE) until `retain_until`.
    async fn create_upload(
        &self,
        key: &str,
        retain_until: OffsetDateTime,
    ) -> Result<String, AwsCallError>;
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<UploadedPart, AwsCallError>;
    /// Completes the upload; returns the object's version id.
    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<UploadedPart>,
    ) -> Result<Option<String>, AwsCallError>;
    /// Sets COMPLIANCE retention on one version (PutObjectRetention). S3 already applies the lock
    /// given to CreateMultipartUpload; this makes it explicit on the completed version, and is
    /// what S3-compatible stores that drop the multipart lock headers need.
    async fn lock_version(
        &self,
        key: &str,
        version_id: Option<&str>,
        retain_until: OffsetDateTime,
    ) -> Result<(), AwsCallError>;
    /// Aborts an unfinished upload; one that no longer exists is not an error.
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), AwsCallError>;
    /// Multipart uploads in progress under `prefix` (ListMultipartUploads).
    async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, AwsCallError>;
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Hex of S3's full-object `x-amz-checksum-sha256` (base64); `None` for a composite one
/// (`<base64>-<parts>`) or a value that is not a SHA-256.
pub fn sha256_hex_of_s3_checksum(value: &str) -> Option<String> {
    let raw = aws_smithy_types::base64::decode(value).ok()?;
    (raw.len() == 32).then(|| hex::encode(raw))
}

/// S3's `x-amz-checksum-sha256` value: the base64 of the raw digest.
pub(crate) fn sha256_base64(bytes: &[u8]) -> String {
    use sha2::Digest;
    aws_smithy_types::base64::encode(sha2::Sha256::digest(bytes))
}

fn read_error(
    operation: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> AwsCallError {
    AwsCallError {
        operation,
        code: None,
        kind: AwsFailureKind::Transient,
        source: Box::new(e),
    }
}

/// Reads the next chunk of an object body.
pub async fn next_chunk(body: &mut ObjectBody) -> Result<Option<Bytes>, AwsCallError> {
    body.try_next()
        .await
        .map_err(|e| read_error("s3:GetObject", e))
}
