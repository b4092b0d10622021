//! The run's copies in the DR region: which objects belong to a run (read from its manifest),
//! copying them, verifying them with the snapshot copy, and the run's record of its copies.
//!
//! The run's manifest is written once and locked, before the copies exist, so it records only
//! where they will be (`dr`: region, bucket, the copy's snapshot id, the record's key, all
//! deterministic). `dr-verify` writes the record of what was verified,
//! `<MANIFEST_PREFIX><run>.dr.json`, locked like the manifest, and copies it to the DR bucket too.

use super::manifest::{BackupManifest, manifest_key};
use super::{SnapshotTrigger, SnapshotTriggerError};
use crate::dr_copy::{CopiedObject, CopyOutcome, DrObjects, RunObject, VerifiedObject};
use crate::input::format_time;
use crate::logical::restore::{RestoreOptions, RestoreResult};
use crate::metrics::{Metric, emf_line};
use crate::run_id::RunId;
use crate::snapshot::dr::DrStatus;
use crate::snapshot::store::{Progress, SnapshotInfo};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub const DR_RECORD_FORMAT: &str = "catalyst-dr/dr-record/v1";

/// Where the run's copies go, recorded in its manifest when it is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrPlan {
    pub region: String,
    pub bucket: String,
    pub account_id: Option<String>,
    pub kms_key_arn: String,
    /// The id of the database snapshot's copy in `region`.
    pub database_snapshot_copy: String,
    /// The record `dr-verify` writes once every copy checks out.
    pub record_key: String,
}

/// The record of a run's verified copies (`<run>.dr.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrRecord {
    pub format: String,
    pub run_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub scheduled_time: OffsetDateTime,
    pub region: String,
    pub bucket: String,
    pub account_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub verified_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub retain_until: OffsetDateTime,
    pub database_snapshot_copy: SnapshotInfo,
    pub shared_with: Vec<String>,
    /// Every object of the run, present in the DR bucket with this SHA-256.
    pub objects: Vec<VerifiedObject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrCopyObjectsResult {
    pub status: DrStatus,
    pub bucket: Option<String>,
    pub region: Option<String>,
    pub copied: usize,
    pub already_present: usize,
    pub objects: Vec<CopiedObject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrVerifyResult {
    pub status: DrStatus,
    pub record_key: Option<String>,
    pub objects_verified: usize,
    pub database_snapshot_copy: Option<String>,
    pub shared_with: Vec<String>,
}

/// A region-loss drill: the latest verified logical backup restored from the DR bucket alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrRestoreDrill {
    pub region: String,
    pub bucket: String,
    pub run_id: String,
    pub record_key: String,
    /// The instant the restored backup holds the database as of.
    pub backup_instant: String,
    #[serde(with = "time::serde::rfc3339")]
    pub restore_started_at: OffsetDateTime,
    /// The age of the copy when the restore started: what a region loss then would have lost.
    pub rpo_seconds: i64,
    pub restore: RestoreResult,
}

/// The key of a run's DR record, beside its manifest.
pub fn record_key(manifest_prefix: &str, run_stamp: &str) -> String {
    format!("{manifest_prefix}{run_stamp}.dr.json")
}

/// True for a key of a DR record (not a run's manifest).
pub fn is_record_key(key: &str) -> bool {
    key.ends_with(".dr.json")
}

impl SnapshotTrigger {
    /// What the manifest records about the copies, before they exist.
    pub fn dr_plan(&self, run: &RunId) -> Option<DrPlan> {
        let dr = self.config.dr.as_ref()?;
        Some(DrPlan {
            region: dr.region.clone(),
            bucket: dr.bucket.clone(),
            account_id: dr.account_id.clone(),
            kms_key_arn: dr.kms_key_arn.clone(),
            database_snapshot_copy: self.snapshots.dr_copy_id(run),
            record_key: record_key(&self.config.manifest_prefix, &run.stamp),
        })
    }

    async fn run_manifest(&self, run: &RunId) -> Result<BackupManifest, SnapshotTriggerError> {
        let key = manifest_key(&self.config.manifest_prefix, &run.stamp);
        self.read_manifest(&key)
            .await?
            .ok_or(SnapshotTriggerError::ManifestNotFound { key })
    }

    /// The run's objects: its manifest, the logical backup's manifest and segments (with the
    /// SHA-256 each segment's entry records), and the cache export's objects.
    pub async fn run_objects(&self, run: &RunId) -> Result<Vec<RunObject>, SnapshotTriggerError> {
        let manifest = self.run_manifest(run).await?;
        let mut objects = vec![RunObject {
            key: manifest_key(&self.config.manifest_prefix, &run.stamp),
            recorded_sha256: None,
        }];
        if let Some(logical) = &manifest.logical {
            let key = &logical.manifest_key;
            let backup = self.logical.read_manifest(key).await?.ok_or_else(|| {
                SnapshotTriggerError::ManifestNotFound {
                    key: key.to_owned(),
                }
            })?;
            objects.push(RunObject {
                key: key.clone(),
                recorded_sha256: None,
            });
            objects.extend(
                backup
                    .tables
                    .iter()
                    .flat_map(|t| &t.segments)
                    .map(|s| RunObject {
                        key: s.key.clone(),
                        recorded_sha256: Some(s.sha256.clone()),
                    }),
            );
        }
        if let Some(target) = manifest
            .cache_export
            .as_ref()
            .and_then(|e| e.target_name.as_ref())
        {
            let mut exported: Vec<String> = self
                .manifests
                .list(target)
                .await?
                .into_iter()
                .map(|o| o.key)
                .collect();
            exported.sort();
            objects.extend(exported.into_iter().map(|key| RunObject {
                key,
                recorded_sha256: None,
            }));
        }
        Ok(objects)
    }

    pub async fn dr_copy_objects(
        &self,
        run: &RunId,
    ) -> Result<DrCopyObjectsResult, SnapshotTriggerError> {
        let Some(dr) = &self.dr_objects else {
            return Ok(DrCopyObjectsResult {
                status: DrStatus::NotConfigured,
                bucket: None,
                region: None,
                copied: 0,
                already_present: 0,
                objects: Vec::new(),
            });
        };
        let objects = self.run_objects(run).await?;
        let copied = dr.copy(&objects, self.snapshots.retain_until(run)).await?;
        let count = |outcome| copied.iter().filter(|o| o.outcome == outcome).count();
        Ok(DrCopyObjectsResult {
            status: DrStatus::Configured,
            bucket: Some(dr.target.bucket().to_owned()),
            region: Some(dr.region.clone()),
            copied: count(CopyOutcome::Copied),
            already_present: count(CopyOutcome::AlreadyPresent),
            objects: copied,
        })
    }

    /// Verifies every copy of the run, then writes the run's DR record (once) and copies it.
    pub async fn dr_verify(&self, run: &RunId) -> Result<DrVerifyResult, SnapshotTriggerError> {
        let (Some(dr), Some(plan)) = (&self.dr_objects, self.dr_plan(run)) else {
            return Ok(DrVerifyResult {
                status: DrStatus::NotConfigured,
                record_key: None,
                objects_verified: 0,
                database_snapshot_copy: None,
                shared_with: Vec::new(),
            });
        };
        let retain_until = self.snapshots.retain_until(run);
        let objects = self.run_objects(run).await?;
        let status = self.snapshots.dr_status(run, 0).await?;
        let verified = dr.verify(&objects, retain_until).await;
        let snapshot_problem = match status.state {
            Progress::Available => None,
            _ => Some(format!(
                "snapshot copy {} is {}",
                plan.database_snapshot_copy,
                status
                    .copy
                    .as_ref()
                    .map_or("missing", |c| c.status.as_str())
            )),
        };
        // Only a verification that ran reports a count; an AWS error is the night's failure.
        let problems = match &verified {
            Ok(_) => Some(0),
            Err(crate::dr_copy::DrCopyError::NotVerified { problems, .. }) => Some(problems.len()),
            Err(_) => None,
        };
        if let Some(problems) = problems {
            let problems = problems + usize::from(snapshot_problem.is_some());
            println!(
                "{}",
                emf_line(
                    ("Action", "dr-verify"),
                    vec![
                        Metric::new("DrCopyProblems", "Count", problems),
                        Metric::new(
                            "DrObjectsVerified",
                            "Count",
                            verified.as_ref().map_or(0, Vec::len)
                        ),
                    ],
                    serde_json::Map::from_iter([("run_id".to_owned(), run.stamp.clone().into())]),
                    OffsetDateTime::now_utc(),
                )
            );
        }
        let verified = match verified {
            Err(crate::dr_copy::DrCopyError::NotVerified {
                bucket,
                checked,
                mut problems,
            }) => {
                problems.extend(snapshot_problem);
                return Err(crate::dr_copy::DrCopyError::NotVerified {
                    bucket,
                    checked,
                    problems,
                }
                .into());
            }
            other => other?,
        };
        if let Some(problem) = snapshot_problem {
            return Err(crate::dr_copy::DrCopyError::NotVerified {
                bucket: dr.target.bucket().to_owned(),
                checked: objects.len(),
                problems: vec![problem],
            }
            .into());
        }
        let Some(copy) = status.copy else {
            return Err(crate::snapshot::SnapshotError::NotStarted {
                id: plan.database_snapshot_copy,
            }
            .into());
        };
        let record = match self.read_record(&plan.record_key).await? {
            Some(existing) => existing,
            None => {
                let record = DrRecord {
                    format: DR_RECORD_FORMAT.to_owned(),
                    run_id: run.stamp.clone(),
                    scheduled_time: run.scheduled_time,
                    region: plan.region.clone(),
                    bucket: plan.bucket.clone(),
                    account_id: plan.account_id.clone(),
                    verified_at: OffsetDateTime::now_utc(),
                    retain_until,
                    database_snapshot_copy: copy,
                    shared_with: status.shared_with.clone(),
                    objects: verified,
                };
                let body = serde_json::to_vec_pretty(&record).expect("a record always serialises");
                self.manifests
                    .put_locked(&plan.record_key, body, "application/json", retain_until)
                    .await?;
                tracing::info!(key = %plan.record_key, verified_at = %format_time(record.verified_at), "DR record written");
                record
            }
        };
        // The record is itself one of the run's copies.
        dr.copy(
            &[RunObject {
                key: plan.record_key.clone(),
                recorded_sha256: None,
            }],
            retain_until,
        )
        .await?;
        Ok(DrVerifyResult {
            status: DrStatus::Configured,
            record_key: Some(plan.record_key),
            objects_verified: record.objects.len(),
            database_snapshot_copy: Some(record.database_snapshot_copy.id),
            shared_with: record.shared_with,
        })
    }

    /// Restores the newest logical backup whose copies were verified (or the run's, with
    /// `run`) into the staging database of `target_secret_id`, reading only the DR bucket.
    pub async fn dr_restore_drill(
        &self,
        run: Option<&RunId>,
        target_secret_id: &str,
        options: RestoreOptions,
    ) -> Result<DrRestoreDrill, SnapshotTriggerError> {
        let (Some(dr), Some(dr_logical), Some(config)) =
            (&self.dr_objects, &self.dr_logical, &self.config.dr)
        else {
            return Err(SnapshotTriggerError::DrNotConfigured {
                var: crate::settings::DR_REGION.name,
            });
        };
        let record_key = match run {
            Some(run) => record_key(&self.config.manifest_prefix, &run.stamp),
            None => dr
                .target
                .list(&self.config.manifest_prefix)
                .await?
                .into_iter()
                .map(|o| o.key)
                .filter(|k| is_record_key(k))
                .max()
                .ok_or_else(|| SnapshotTriggerError::ManifestNotFound {
                    key: format!(
                        "{}*.dr.json in {}",
                        self.config.manifest_prefix, config.bucket
                    ),
                })?,
        };
        let bytes = dr.target.get(&record_key).await?.ok_or_else(|| {
            SnapshotTriggerError::ManifestNotFound {
                key: format!("{record_key} in {}", config.bucket),
            }
        })?;
        let record: DrRecord = serde_json::from_slice(&bytes).map_err(|source| {
            SnapshotTriggerError::CorruptManifest {
                key: record_key.clone(),
                source,
            }
        })?;
        let run =
            RunId::from_scheduled_time("scheduled_time", &format_time(record.scheduled_time))?;
        let logical_key =
            crate::logical::layout::manifest_key(&self.config.logical.prefix, &run.stamp);
        if !record.objects.iter().any(|o| o.key == logical_key) {
            return Err(SnapshotTriggerError::ManifestNotFound {
                key: format!("{logical_key} (run {} copied no logical backup)", run.stamp),
            });
        }
        let restore_started_at = OffsetDateTime::now_utc();
        let restore = dr_logical.restore(&run, target_secret_id, options).await?;
        let instant = OffsetDateTime::parse(
            &restore.instant.server_time,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| SnapshotTriggerError::BadInstant {
            key: logical_key,
            value: restore.instant.server_time.clone(),
        })?;
        let rpo_seconds = (restore_started_at - instant).whole_seconds();
        println!(
            "{}",
            emf_line(
                ("DrillKind", "region-loss"),
                vec![Metric::new("RPOSeconds", "Seconds", rpo_seconds)],
                serde_json::Map::from_iter([("run_id".to_owned(), run.stamp.clone().into())]),
                OffsetDateTime::now_utc(),
            )
        );
        Ok(DrRestoreDrill {
            region: config.region.clone(),
            bucket: config.bucket.clone(),
            run_id: run.stamp.clone(),
            record_key,
            backup_instant: restore.instant.server_time.clone(),
            restore_started_at,
            rpo_seconds,
            restore,
        })
    }

    async fn read_record(&self, key: &str) -> Result<Option<DrRecord>, SnapshotTriggerError> {
        match self.manifests.get(key).await? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| {
                SnapshotTriggerError::CorruptManifest {
                    key: key.to_owned(),
                    source,
                }
            }),
        }
    }
}

/// The logical backups as the DR bucket holds them (the region-loss drill reads only those).
pub(super) fn dr_logical(
    config: &super::config::SnapshotTriggerConfig,
    sdk: &aws_config::SdkConfig,
    secrets: std::sync::Arc<dyn crate::postgres::SecretSource>,
) -> Option<crate::logical::LogicalBackups> {
    let dr = config.dr.as_ref()?;
    Some(crate::logical::LogicalBackups::new(
        config.logical.clone(),
        std::sync::Arc::new(crate::object_store::S3Objects::copies(
            dr_s3(config, sdk, &dr.region),
            &dr.bucket,
        )),
        secrets,
    ))
}

fn dr_s3(
    config: &super::config::SnapshotTriggerConfig,
    sdk: &aws_config::SdkConfig,
    region: &str,
) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .region(aws_config::Region::new(region.to_owned()))
            .force_path_style(config.s3_force_path_style)
            .build(),
    )
}

/// The DR bucket's store, or `None` without DR configured.
pub(super) fn dr_objects(
    config: &super::config::SnapshotTriggerConfig,
    sdk: &aws_config::SdkConfig,
    source: Box<dyn crate::object_store::ObjectStore>,
) -> Option<DrObjects> {
    let dr = config.dr.as_ref()?;
    let s3 = dr_s3(config, sdk, &dr.region);
    Some(DrObjects {
        source,
        target: Box::new(crate::object_store::S3Objects::new(s3, &dr.bucket)),
        region: dr.region.clone(),
    })
}
