//! An in-memory backup bucket for unit tests, behaving as a versioned S3 bucket with Object Lock
//! (COMPLIANCE): a put adds a version and never replaces a locked one, a locked version cannot be
//! deleted before its retain-until, and retention can be extended but not shortened. Multipart
//! uploads are held until completed or aborted. Clones share one bucket, so a test keeps a handle
//! to inspect what a feature wrote.
//!
//! Behind the `memory` feature (and `cfg(test)`): it is test support, not something a Lambda
//! function should link.

use super::{
    ObjectBody, ObjectHead, ObjectStore, PendingUpload, PutOutcome, StoredObject, UploadedPart,
    sha256_base64, sha256_hex,
};
use crate::aws_error::{AwsCallError, AwsFailureKind};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use time::OffsetDateTime;

/// One stored version of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub version_id: String,
    pub body: Vec<u8>,
    pub content_type: String,
    pub retain_until: Option<OffsetDateTime>,
    pub last_modified: OffsetDateTime,
    /// Written in one part with its SHA-256 (`put_locked`), as S3 then reports it on HEAD.
    pub whole_sha256: bool,
}

#[derive(Debug)]
struct Upload {
    key: String,
    retain_until: OffsetDateTime,
    parts: BTreeMap<i32, Bytes>,
}

#[derive(Debug)]
struct Bucket {
    /// Oldest version first.
    objects: BTreeMap<String, Vec<ObjectVersion>>,
    uploads: BTreeMap<String, Upload>,
    next_id: u64,
    /// The bucket's clock, for retention checks; tests move it.
    now: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct MemoryObjects {
    bucket: String,
    state: Arc<Mutex<Bucket>>,
}

fn rejected(operation: &'static str, code: &str, message: String) -> AwsCallError {
    AwsCallError {
        operation,
        code: Some(code.to_owned()),
        kind: AwsFailureKind::Rejected,
        source: message.into(),
    }
}

impl MemoryObjects {
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: bucket.into(),
            state: Arc::new(Mutex::new(Bucket {
                objects: BTreeMap::new(),
                uploads: BTreeMap::new(),
                next_id: 1,
                now: OffsetDateTime::now_utc(),
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, Bucket> {
        // A panicking test thread cannot leave the map half-written: every update is one insert.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the bucket's clock, against which retention is checked.
    pub fn set_now(&self, now: OffsetDateTime) {
        self.state().now = now;
    }

    /// Every version of `key`, oldest first.
    pub fn versions(&self, key: &str) -> Vec<ObjectVersion> {
        self.state().objects.get(key).cloned().unwrap_or_default()
    }

    /// Every key with at least one version.
    pub fn keys(&self) -> Vec<String> {
        self.state().objects.keys().cloned().collect()
    }

    /// Writes an unlocked object, as something other than catalyst-dr would (a seeded record, or
    /// an export ElastiCache wrote).
    pub fn put_unlocked(&self, key: &str, body: Vec<u8>) -> String {
        self.add_version(key, body, "application/octet-stream", None, false)
    }

    /// Deletes one version (S3 `DeleteObject` with a version id): refused while it is locked.
    pub fn delete_version(&self, key: &str, version_id: &str) -> Result<(), AwsCallError> {
        let mut state = self.state();
        let now = state.now;
        let versions = state
            .objects
            .get_mut(key)
            .ok_or_else(|| rejected("s3:DeleteObject", "NoSuchKey", format!("no object {key}")))?;
        let index = versions
            .iter()
            .position(|v| v.version_id == version_id)
            .ok_or_else(|| {
                rejected(
                    "s3:DeleteObject",
                    "NoSuchVersion",
                    format!("no version {version_id} of {key}"),
                )
            })?;
        if let Some(until) = versions[index].retain_until.filter(|u| *u > now) {
            return Err(rejected(
                "s3:DeleteObject",
                "AccessDenied",
                format!("{key} version {version_id} is locked until {until}"),
            ));
        }
        versions.remove(index);
        if versions.is_empty() {
            state.objects.remove(key);
        }
        Ok(())
    }

    fn add_version(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        retain_until: Option<OffsetDateTime>,
        whole_sha256: bool,
    ) -> String {
        let mut state = self.state();
        let version_id = format!("v{}", state.next_id);
        state.next_id += 1;
        let last_modified = state.now;
        state
            .objects
            .entry(key.to_owned())
            .or_default()
            .push(ObjectVersion {
                version_id: version_id.clone(),
                body,
                content_type: content_type.to_owned(),
                retain_until,
                last_modified,
                whole_sha256,
            });
        version_id
    }

    fn find(&self, key: &str, version_id: Option<&str>) -> Option<ObjectVersion> {
        let state = self.state();
        let versions = state.objects.get(key)?;
        match version_id {
            Some(id) => versions.iter().find(|v| v.version_id == id).cloned(),
            None => versions.last().cloned(),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for MemoryObjects {
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
        let version_id = self.add_version(key, body, content_type, Some(retain_until), true);
        Ok(PutOutcome {
            version_id: Some(version_id),
            sha256,
        })
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, AwsCallError> {
        Ok(self.find(key, None).map(|v| v.body))
    }

    async fn open(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectBody>, AwsCallError> {
        Ok(self.find(key, version_id).map(|v| ObjectBody::from(v.body)))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectHead>, AwsCallError> {
        Ok(self.find(key, None).map(|v| ObjectHead {
            size: v.body.len() as u64,
            sha256: v.whole_sha256.then(|| sha256_hex(&v.body)),
            lock_mode: v.retain_until.map(|_| "COMPLIANCE".to_owned()),
            retain_until: v.retain_until,
        }))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, AwsCallError> {
        let state = self.state();
        Ok(state
            .objects
            .iter()
            .filter(|(key, _)| key.starts_with(prefix))
            .filter_map(|(key, versions)| {
                let current = versions.last()?;
                Some(StoredObject {
                    key: key.clone(),
                    size: current.body.len() as u64,
                    last_modified: Some(current.last_modified),
                })
            })
            .collect())
    }

    async fn create_upload(
        &self,
        key: &str,
        retain_until: OffsetDateTime,
    ) -> Result<String, AwsCallError> {
        let mut state = self.state();
        let upload_id = format!("u{}", state.next_id);
        state.next_id += 1;
        state.uploads.insert(
            upload_id.clone(),
            Upload {
                key: key.to_owned(),
                retain_until,
                parts: BTreeMap::new(),
            },
        );
        Ok(upload_id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<UploadedPart, AwsCallError> {
        let mut state = self.state();
        let upload = state
            .uploads
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| {
                rejected(
                    "s3:UploadPart",
                    "NoSuchUpload",
                    format!("no upload {upload_id} of {key}"),
                )
            })?;
        let sha256_base64 = sha256_base64(&body);
        upload.parts.insert(number, body);
        Ok(UploadedPart {
            number,
            etag: Some(format!("\"{upload_id}-{number}\"")),
            sha256_base64,
        })
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<UploadedPart>,
    ) -> Result<Option<String>, AwsCallError> {
        const OP: &str = "s3:CompleteMultipartUpload";
        let (body, retain_until) = {
            let mut state = self.state();
            let upload = state
                .uploads
                .get(upload_id)
                .filter(|u| u.key == key)
                .ok_or_else(|| {
                    rejected(
                        OP,
                        "NoSuchUpload",
                        format!("no upload {upload_id} of {key}"),
                    )
                })?;
            // S3 checks each listed part against what it stored; a mismatch fails the upload.
            let mut body = Vec::new();
            for part in &parts {
                match upload.parts.get(&part.number) {
                    Some(bytes) if sha256_base64(bytes) == part.sha256_base64 => {
                        body.extend_from_slice(bytes)
                    }
                    _ => {
                        return Err(rejected(
                            OP,
                            "InvalidPart",
                            format!("part {} of {key} does not match the upload", part.number),
                        ));
                    }
                }
            }
            if parts.is_empty() {
                return Err(rejected(OP, "MalformedXML", format!("no parts for {key}")));
            }
            let retain_until = upload.retain_until;
            state.uploads.remove(upload_id);
            (body, retain_until)
        };
        let version_id = self.add_version(key, body, "application/zstd", Some(retain_until), false);
        Ok(Some(version_id))
    }

    async fn lock_version(
        &self,
        key: &str,
        version_id: Option<&str>,
        retain_until: OffsetDateTime,
    ) -> Result<(), AwsCallError> {
        const OP: &str = "s3:PutObjectRetention";
        let mut state = self.state();
        let version = state
            .objects
            .get_mut(key)
            .and_then(|versions| match version_id {
                Some(id) => versions.iter_mut().find(|v| v.version_id == id),
                None => versions.last_mut(),
            });
        let Some(version) = version else {
            return Err(rejected(OP, "NoSuchKey", format!("no object {key}")));
        };
        if version.retain_until.is_some_and(|u| u > retain_until) {
            return Err(rejected(
                OP,
                "AccessDenied",
                format!("COMPLIANCE retention of {key} cannot be shortened"),
            ));
        }
        version.retain_until = Some(retain_until);
        Ok(())
    }

    async fn abort_upload(&self, _key: &str, upload_id: &str) -> Result<(), AwsCallError> {
        self.state().uploads.remove(upload_id);
        Ok(())
    }

    async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, AwsCallError> {
        Ok(self
            .state()
            .uploads
            .iter()
            .filter(|(_, u)| u.key.starts_with(prefix))
            .map(|(id, u)| PendingUpload {
                key: u.key.clone(),
                upload_id: id.clone(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-01 00:00 UTC);

    fn bucket() -> MemoryObjects {
        let objects = MemoryObjects::new("backups");
        objects.set_now(NOW);
        objects
    }

    #[tokio::test]
    async fn a_locked_version_survives_a_put_and_cannot_be_deleted_before_its_retain_until() {
        let objects = bucket();
        let until = NOW + time::Duration::days(1);
        let first = objects
            .put_locked("k", b"one".to_vec(), "text/plain", until)
            .await
            .unwrap();
        objects
            .put_locked("k", b"two".to_vec(), "text/plain", until)
            .await
            .unwrap();
        assert_eq!(objects.get("k").await.unwrap(), Some(b"two".to_vec()));
        let first_id = first.version_id.unwrap();
        let err = objects.delete_version("k", &first_id).unwrap_err();
        assert_eq!(err.code.as_deref(), Some("AccessDenied"));
        assert_eq!(objects.versions("k").len(), 2);

        objects.set_now(until + time::Duration::seconds(1));
        objects.delete_version("k", &first_id).unwrap();
        let left: Vec<Vec<u8>> = objects.versions("k").into_iter().map(|v| v.body).collect();
        assert_eq!(left, [b"two".to_vec()]);
    }

    #[tokio::test]
    async fn compliance_retention_can_be_extended_but_not_shortened() {
        let objects = bucket();
        let until = NOW + time::Duration::days(2);
        let put = objects
            .put_locked("k", b"x".to_vec(), "text/plain", until)
            .await
            .unwrap();
        let id = put.version_id.as_deref();
        assert!(
            objects
                .lock_version("k", id, until - time::Duration::days(1))
                .await
                .is_err()
        );
        objects
            .lock_version("k", id, until + time::Duration::days(1))
            .await
            .unwrap();
        assert_eq!(
            objects.versions("k")[0].retain_until,
            Some(until + time::Duration::days(1))
        );
    }

    #[tokio::test]
    async fn a_multipart_upload_is_invisible_until_completed_and_locked_as_created() {
        let objects = bucket();
        let key = "logical/r/a.zst";
        let until = NOW + time::Duration::days(3);
        let id = objects.create_upload(key, until).await.unwrap();
        let first = objects
            .upload_part(key, &id, 1, Bytes::from_static(b"hello "))
            .await
            .unwrap();
        let last = objects
            .upload_part(key, &id, 2, Bytes::from_static(b"world"))
            .await
            .unwrap();
        assert_eq!(objects.get(key).await.unwrap(), None);
        assert_eq!(objects.pending_uploads("logical/").await.unwrap().len(), 1);

        let mut tampered = last.clone();
        tampered.sha256_base64 = first.sha256_base64.clone();
        let refused = objects
            .complete_upload(key, &id, vec![first.clone(), tampered])
            .await
            .unwrap_err();
        assert_eq!(refused.code.as_deref(), Some("InvalidPart"));

        let version = objects
            .complete_upload(key, &id, vec![first, last])
            .await
            .unwrap();
        let versions = objects.versions(key);
        assert_eq!(versions.len(), 1);
        assert_eq!(Some(&versions[0].version_id), version.as_ref());
        assert_eq!(versions[0].body, b"hello world");
        assert_eq!(versions[0].retain_until, Some(until));
        assert!(
            objects
                .pending_uploads("logical/")
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn an_aborted_upload_leaves_nothing() {
        let objects = bucket();
        let key = "logical/r/b.zst";
        let id = objects.create_upload(key, NOW).await.unwrap();
        objects
            .upload_part(key, &id, 1, Bytes::from_static(b"part"))
            .await
            .unwrap();
        objects.abort_upload(key, &id).await.unwrap();
        objects.abort_upload(key, &id).await.unwrap();
        assert!(objects.pending_uploads("").await.unwrap().is_empty());
        assert!(objects.keys().is_empty());
        assert!(
            objects
                .upload_part(key, &id, 2, Bytes::from_static(b"late"))
                .await
                .is_err()
        );
    }
}
