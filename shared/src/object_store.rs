//! The backup bucket: immutable (Object Lock, COMPLIANCE) writes, reads and listings.

use crate::aws_error::{AwsCallError, classify};
use crate::aws_time::{from_aws, to_aws};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectLockMode};
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
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, AwsCallError>;
    async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, AwsCallError>;
}

pub struct S3Objects {
    client: Client,
    bucket: String,
}

impl S3Objects {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// S3's `x-amz-checksum-sha256` value: the base64 of the raw digest.
fn sha256_base64(bytes: &[u8]) -> String {
    use sha2::Digest;
    aws_smithy_types::base64::encode(sha2::Sha256::digest(bytes))
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
                let bytes = out.body.collect().await.map_err(|e| AwsCallError {
                    operation: "s3:GetObject",
                    code: None,
                    kind: crate::aws_error::AwsFailureKind::Transient,
                    source: Box::new(e),
                })?;
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
}
