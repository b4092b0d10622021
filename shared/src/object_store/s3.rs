//! The backup bucket on S3.

use super::{
    ObjectBody, ObjectHead, ObjectStore, PendingUpload, PutOutcome, StoredObject, UploadedPart,
    read_error, sha256_base64, sha256_hex,
};
use crate::aws_error::{AwsCallError, AwsFailureKind, classify};
use crate::aws_time::{from_aws, to_aws};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ObjectLockMode,
};
use bytes::Bytes;
use time::OffsetDateTime;

pub struct S3Objects {
    client: Client,
    bucket: String,
    /// Streams take the current version whatever version is asked for (see [`Self::copies`]).
    current_versions: bool,
}

impl S3Objects {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            current_versions: false,
        }
    }

    /// A bucket holding copies of the backups (the DR bucket): a manifest's version ids are the
    /// backup bucket's, so streams take the current version; every logical segment is still
    /// checked against its manifest's SHA-256 as it is read.
    pub fn copies(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            current_versions: true,
            ..Self::new(client, bucket)
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Objects {
    fn bucket(&self) -> &str {
        &self.bucket
    }

    async fn put_locked(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        retain_until: OffsetDateTime,
    ) -> Result<PutOutcome, AwsCallError> {
        let sha256 = sha256_hex(&body);
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(sha256_base64(&body))
            .object_lock_mode(ObjectLockMode::Compliance)
            .object_lock_retain_until_date(to_aws(retain_until))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify("s3:PutObject", e))?;
        Ok(PutOutcome {
            version_id: out.version_id().map(str::to_owned),
            sha256,
        })
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, AwsCallError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let bytes = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| read_error("s3:GetObject", e))?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) => Err(classify("s3:GetObject", e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, AwsCallError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| classify("s3:ListObjectsV2", e))?;
            found.extend(page.contents().iter().map(|o| StoredObject {
                key: o.key().unwrap_or_default().to_owned(),
                size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                last_modified: o.last_modified().and_then(from_aws),
            }));
        }
        Ok(found)
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectHead>, AwsCallError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(out) => {
                let composite = out
                    .checksum_type()
                    .is_some_and(|t| *t == aws_sdk_s3::types::ChecksumType::Composite);
                Ok(Some(ObjectHead {
                    size: out
                        .content_length()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                    sha256: out
                        .checksum_sha256()
                        .filter(|_| !composite)
                        .and_then(super::sha256_hex_of_s3_checksum),
                    lock_mode: out.object_lock_mode().map(|m| m.as_str().to_owned()),
                    retain_until: out.object_lock_retain_until_date().and_then(from_aws),
                }))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(classify("s3:HeadObject", e)),
        }
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
            .set_version_id(
                version_id
                    .filter(|_| !self.current_versions)
                    .map(str::to_owned),
            )
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.body)),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(classify("s3:GetObject", e)),
        }
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
        let sha256_base64 = sha256_base64(&body);
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
}
