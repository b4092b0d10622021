//! Copies of a run's objects in the DR bucket (another region, possibly another account), locked
//! in COMPLIANCE mode until the run's retain-until, and their verification. Copies go through the
//! function: each object is read, its SHA-256 checked against the source's record, and written
//! with that SHA-256, which S3 checks on receipt. An object already in the DR bucket with the same
//! SHA-256 is left alone; a different one is an error, never overwritten.

use crate::aws_error::AwsCallError;
use crate::error_kind::ErrorKind;
use crate::input::format_time;
use crate::object_store::{ObjectStore, sha256_hex};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One object of the run, with the SHA-256 its source recorded (a backup manifest's), if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunObject {
    pub key: String,
    pub recorded_sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyOutcome {
    Copied,
    AlreadyPresent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedObject {
    pub key: String,
    pub sha256: String,
    pub size: u64,
    pub outcome: CopyOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedObject {
    pub key: String,
    pub sha256: String,
    pub size: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub retain_until: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum DrCopyError {
    #[error(transparent)]
    Aws(#[from] AwsCallError),
    #[error("{key} is missing from the backup bucket {bucket}: nothing to copy")]
    SourceMissing { key: String, bucket: String },
    #[error(
        "{key} in the backup bucket has SHA-256 {actual}, not the {recorded} its manifest records: not copied"
    )]
    SourceChanged {
        key: String,
        recorded: String,
        actual: String,
    },
    #[error("{key} in the DR bucket {bucket} {reason}; it is never overwritten")]
    Conflict {
        key: String,
        bucket: String,
        reason: String,
    },
    #[error("DR bucket {bucket}: {} of {checked} objects fail verification: {}", problems.len(), problems.join("; "))]
    NotVerified {
        bucket: String,
        checked: usize,
        problems: Vec<String>,
    },
}

impl DrCopyError {
    pub fn error_type(&self) -> ErrorKind {
        match self {
            Self::Aws(e) => e.error_type(),
            Self::SourceMissing { .. } | Self::SourceChanged { .. } => ErrorKind::CorruptBackup,
            Self::Conflict { .. } => ErrorKind::DrCopyConflict,
            Self::NotVerified { .. } => ErrorKind::DrCopyNotVerified,
        }
    }
}

/// The backup bucket and the DR bucket.
pub struct DrObjects {
    pub source: Box<dyn ObjectStore>,
    pub target: Box<dyn ObjectStore>,
    pub region: String,
}

impl DrObjects {
    /// The SHA-256 the object must have: the manifest's record, else the one S3 verified when the
    /// object was written in one part, else (objects written by another service, such as the
    /// ElastiCache export) that of its current content.
    async fn expected_sha256(&self, object: &RunObject) -> Result<String, DrCopyError> {
        if let Some(recorded) = &object.recorded_sha256 {
            return Ok(recorded.to_ascii_lowercase());
        }
        let missing = || DrCopyError::SourceMissing {
            key: object.key.clone(),
            bucket: self.source.bucket().to_owned(),
        };
        let head = self.source.head(&object.key).await?.ok_or_else(missing)?;
        if let Some(sha256) = head.sha256 {
            return Ok(sha256);
        }
        let bytes = self.source.get(&object.key).await?.ok_or_else(missing)?;
        Ok(sha256_hex(&bytes))
    }

    /// Copies every object not yet in the DR bucket, locked until `retain_until`.
    pub async fn copy(
        &self,
        objects: &[RunObject],
        retain_until: OffsetDateTime,
    ) -> Result<Vec<CopiedObject>, DrCopyError> {
        let mut done = Vec::with_capacity(objects.len());
        for object in objects {
            let key = &object.key;
            if let Some(present) = self.target.head(key).await? {
                let expected = self.expected_sha256(object).await?;
                if present.sha256.as_deref() != Some(expected.as_str()) {
                    return Err(DrCopyError::Conflict {
                        key: key.clone(),
                        bucket: self.target.bucket().to_owned(),
                        reason: match present.sha256 {
                            Some(other) => {
                                format!("has SHA-256 {other}, the source's is {expected}")
                            }
                            None => "exists without a SHA-256 checksum".into(),
                        },
                    });
                }
                done.push(CopiedObject {
                    key: key.clone(),
                    sha256: expected,
                    size: present.size,
                    outcome: CopyOutcome::AlreadyPresent,
                });
                continue;
            }
            let bytes = self
                .source
                .get(key)
                .await?
                .ok_or_else(|| DrCopyError::SourceMissing {
                    key: key.clone(),
                    bucket: self.source.bucket().to_owned(),
                })?;
            let actual = sha256_hex(&bytes);
            if let Some(recorded) = &object.recorded_sha256
                && !recorded.eq_ignore_ascii_case(&actual)
            {
                return Err(DrCopyError::SourceChanged {
                    key: key.clone(),
                    recorded: recorded.clone(),
                    actual,
                });
            }
            let size = bytes.len() as u64;
            self.target
                .put_locked(key, bytes, content_type(key), retain_until)
                .await?;
            tracing::info!(%key, bucket = %self.target.bucket(), sha256 = %actual, "copied to the DR bucket");
            done.push(CopiedObject {
                key: key.clone(),
                sha256: actual,
                size,
                outcome: CopyOutcome::Copied,
            });
        }
        Ok(done)
    }

    /// Every object present in the DR bucket with the source's SHA-256, locked in COMPLIANCE
    /// mode until at least `retain_until`; [`DrCopyError::NotVerified`] lists every problem.
    pub async fn verify(
        &self,
        objects: &[RunObject],
        retain_until: OffsetDateTime,
    ) -> Result<Vec<VerifiedObject>, DrCopyError> {
        let mut problems = Vec::new();
        let mut verified = Vec::with_capacity(objects.len());
        for object in objects {
            let key = &object.key;
            let expected = self.expected_sha256(object).await?;
            let Some(present) = self.target.head(key).await? else {
                problems.push(format!("{key} is missing"));
                continue;
            };
            let mut faults = Vec::new();
            match &present.sha256 {
                Some(sha256) if *sha256 == expected => {}
                Some(sha256) => faults.push(format!("SHA-256 {sha256}, expected {expected}")),
                None => faults.push("no SHA-256 checksum".to_owned()),
            }
            if present.lock_mode.as_deref() != Some("COMPLIANCE") {
                faults.push(format!(
                    "lock {}, expected COMPLIANCE",
                    present.lock_mode.as_deref().unwrap_or("none")
                ));
            }
            match present.retain_until {
                Some(until) if until >= retain_until => {}
                other => faults.push(format!(
                    "retained until {}, expected {}",
                    other.map_or_else(|| "never".to_owned(), format_time),
                    format_time(retain_until)
                )),
            }
            if faults.is_empty() {
                verified.push(VerifiedObject {
                    key: key.clone(),
                    sha256: expected,
                    size: present.size,
                    retain_until: present.retain_until.unwrap_or(retain_until),
                });
            } else {
                problems.push(format!("{key}: {}", faults.join(", ")));
            }
        }
        if !problems.is_empty() {
            return Err(DrCopyError::NotVerified {
                bucket: self.target.bucket().to_owned(),
                checked: objects.len(),
                problems,
            });
        }
        Ok(verified)
    }
}

fn content_type(key: &str) -> &'static str {
    if key.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_store::memory::MemoryObjects;
    use time::macros::datetime;

    const UNTIL: OffsetDateTime = datetime!(2026-12-26 03:00 UTC);

    fn buckets() -> (DrObjects, MemoryObjects, MemoryObjects) {
        let source = MemoryObjects::new("backups");
        let target = MemoryObjects::new("dr");
        let dr = DrObjects {
            source: Box::new(source.clone()),
            target: Box::new(target.clone()),
            region: "us-west-2".into(),
        };
        (dr, source, target)
    }

    fn object(key: &str, recorded: Option<&[u8]>) -> RunObject {
        RunObject {
            key: key.into(),
            recorded_sha256: recorded.map(sha256_hex),
        }
    }

    #[tokio::test]
    async fn copies_once_locked_and_verifies() {
        let (dr, source, target) = buckets();
        source
            .put_locked(
                "manifests/r.json",
                b"{}".to_vec(),
                "application/json",
                UNTIL,
            )
            .await
            .unwrap();
        source.put_unlocked("catalyst-dr-c-r-export-0001.rdb", b"REDIS".to_vec());
        let objects = [
            object("manifests/r.json", None),
            object("catalyst-dr-c-r-export-0001.rdb", None),
        ];
        let first = dr.copy(&objects, UNTIL).await.unwrap();
        assert!(first.iter().all(|o| o.outcome == CopyOutcome::Copied));
        let again = dr.copy(&objects, UNTIL).await.unwrap();
        assert!(
            again
                .iter()
                .all(|o| o.outcome == CopyOutcome::AlreadyPresent)
        );
        assert_eq!(target.versions("manifests/r.json").len(), 1);
        let verified = dr.verify(&objects, UNTIL).await.unwrap();
        assert_eq!(verified[1].sha256, sha256_hex(b"REDIS"));
        assert_eq!(verified[1].retain_until, UNTIL);
    }

    #[tokio::test]
    async fn a_source_that_differs_from_its_record_is_not_copied() {
        let (dr, source, target) = buckets();
        source.put_unlocked("logical/r/t/00000.copy.zst", b"changed".to_vec());
        let err = dr
            .copy(
                &[object("logical/r/t/00000.copy.zst", Some(b"original"))],
                UNTIL,
            )
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), ErrorKind::CorruptBackup, "{err}");
        assert!(target.keys().is_empty());
    }

    #[tokio::test]
    async fn a_different_or_unlocked_dr_object_is_never_overwritten_and_fails_verification() {
        let (dr, source, target) = buckets();
        source.put_unlocked("logical/r/manifest.json", b"backup".to_vec());
        target.put_unlocked("logical/r/manifest.json", b"tampered".to_vec());
        let objects = [object("logical/r/manifest.json", Some(b"backup"))];
        let err = dr.copy(&objects, UNTIL).await.unwrap_err();
        assert_eq!(err.error_type(), ErrorKind::DrCopyConflict, "{err}");
        assert_eq!(target.versions("logical/r/manifest.json").len(), 1);
        let err = dr.verify(&objects, UNTIL).await.unwrap_err();
        assert_eq!(err.error_type(), ErrorKind::DrCopyNotVerified);
        let text = err.to_string();
        assert!(
            text.contains("no SHA-256") && text.contains("lock none"),
            "{text}"
        );
        // A copy locked too briefly, and one missing.
        let (dr, source, target) = buckets();
        source.put_unlocked("manifests/r.json", b"m".to_vec());
        source.put_unlocked("manifests/r.dr.json", b"d".to_vec());
        target
            .put_locked(
                "manifests/r.json",
                b"m".to_vec(),
                "application/json",
                datetime!(2026-12-01 00:00 UTC),
            )
            .await
            .unwrap();
        let err = dr
            .verify(
                &[
                    object("manifests/r.json", None),
                    object("manifests/r.dr.json", None),
                ],
                UNTIL,
            )
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("retained until 2026-12-01T00:00:00Z"),
            "{text}"
        );
        assert!(text.contains("manifests/r.dr.json is missing"), "{text}");
    }
}
