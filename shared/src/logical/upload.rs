//! The object store a logical backup writes to and reads from (a small trait, so tests can wrap
//! the real S3 implementation with one that fails on cue), and the streaming part writer:
//! compressed bytes accumulate in one part buffer of bounded size, which is uploaded as an S3
//! multipart part (with its SHA-256) whenever it fills. A whole-object SHA-256 is computed on the
//! way. Nothing is spilled to disk and no table is ever held whole in memory.

use crate::aws_error::{AwsCallError, AwsFailureKind, classify};
use crate::aws_time::to_aws;
use crate::object_store::{ObjectStore, PutOutcome, S3Objects, StoredObject};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockMode,
};
use bytes::Bytes;
use sha2::Digest;
use time::OffsetDateTime;

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
pub trait LogicalStore: Send + Sync {
    fn bucket(&self) -> &str;
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
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), AwsCallError>;
    /// Multipart uploads in progress under `prefix` (ListMultipartUploads).
    async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, AwsCallError>;
    async fn put_locked(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        retain_until: OffsetDateTime,
    ) -> Result<PutOutcome, AwsCallError>;
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, AwsCallError>;
    /// Streams one object (a given version when `version_id` is set); None when it does not exist.
    async fn open(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectBody>, AwsCallError>;
    async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, AwsCallError>;
}

/// The backup bucket on S3.
pub struct S3LogicalStore {
    client: Client,
    objects: S3Objects,
    bucket: String,
}

impl S3LogicalStore {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        let bucket = bucket.into();
        Self {
            objects: S3Objects::new(client.clone(), bucket.clone()),
            client,
            bucket,
        }
    }
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

#[async_trait::async_trait]
impl LogicalStore for S3LogicalStore {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn create_upload(
        &self,
        key: &str,
        retain_until: OffsetDateTime,
    ) -> Result<String, AwsCallError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/zstd")
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(to_aws(retain_until))
            .send()
            .await
            .map_err(|e| classify("s3:CreateMultipartUpload", e))?;
        out.upload_id()
            .map(str::to_owned)
            .ok_or_else(|| AwsCallError {
                operation: "s3:CreateMultipartUpload",
                code: None,
                kind: AwsFailureKind::Transient,
                source: "the response carried no upload id".into(),
            })
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<UploadedPart, AwsCallError> {
        let sha256_base64 = aws_smithy_types::base64::encode(sha2::Sha256::digest(&body));
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(&sha256_base64)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify("s3:UploadPart", e))?;
        Ok(UploadedPart {
            number,
            etag: out.e_tag().map(str::to_owned),
            sha256_base64,
        })
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<UploadedPart>,
    ) -> Result<Option<String>, AwsCallError> {
        let parts = parts
            .into_iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .set_e_tag(p.etag)
                    .checksum_sha256(p.sha256_base64)
                    .build()
            })
            .collect();
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify("s3:CompleteMultipartUpload", e))?;
        Ok(out.version_id().map(str::to_owned))
    }

    async fn lock_version(
        &self,
        key: &str,
        version_id: Option<&str>,
        retain_until: OffsetDateTime,
    ) -> Result<(), AwsCallError> {
        use aws_sdk_s3::types::{ObjectLockRetention, ObjectLockRetentionMode};
        let retention = ObjectLockRetention::builder()
            .mode(ObjectLockRetentionMode::Compliance)
            .retain_until_date(to_aws(retain_until))
            .build();
        self.client
            .put_object_retention()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .retention(retention)
            .send()
            .await
            .map_err(|e| classify("s3:PutObjectRetention", e))?;
        Ok(())
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), AwsCallError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_upload()) => Ok(()),
            Err(e) => Err(classify("s3:AbortMultipartUpload", e)),
        }
    }

    async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, AwsCallError> {
        let mut found = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let out = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await
                .map_err(|e| classify("s3:ListMultipartUploads", e))?;
            found.extend(out.uploads().iter().filter_map(|u| {
                Some(PendingUpload {
                    key: u.key()?.to_owned(),
                    upload_id: u.upload_id()?.to_owned(),
                })
            }));
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_owned);
            id_marker = out.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(found)
    }

    async fn put_locked(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        retain_until: OffsetDateTime,
    ) -> Result<PutOutcome, AwsCallError> {
        self.objects
            .put_locked(key, body, content_type, retain_until)
            .await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, AwsCallError> {
        self.objects.get(key).await
    }

    async fn open(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectBody>, AwsCallError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_owned))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.body)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(classify("s3:GetObject", e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, AwsCallError> {
        self.objects.list(prefix).await
    }
}

/// Reads the next chunk of an object body.
pub async fn next_chunk(body: &mut ObjectBody) -> Result<Option<Bytes>, AwsCallError> {
    body.try_next()
        .await
        .map_err(|e| read_error("s3:GetObject", e))
}

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
    store: &'a dyn LogicalStore,
    key: String,
    upload_id: String,
    retain_until: OffsetDateTime,
    parts: Vec<UploadedPart>,
    bytes: u64,
    hasher: sha2::Sha256,
}

impl<'a> PartWriter<'a> {
    pub async fn start(
        store: &'a dyn LogicalStore,
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
