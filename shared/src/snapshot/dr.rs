//! Copies of the run's RDS snapshots in the DR region: started with the source snapshot's ARN
//! and the DR region's KMS key, named like the source (a retry finds the copy), tagged as ours,
//! shared with the DR account once available, and pruned there with the same guard as at home.

use super::prune::{self, PruneResult};
use super::store::{Progress, SnapshotInfo, SnapshotStore};
use super::{SnapshotError, Snapshots};
use crate::aws_error::AwsCallError;
use crate::input::format_time;
use crate::run_id::RunId;
use crate::tags::{self, Tags};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Where the snapshot copies go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrSnapshotConfig {
    pub region: String,
    pub kms_key_arn: String,
    /// Shared with this account (restore permission) once available.
    pub account_id: Option<String>,
}

/// A snapshot store in the DR region that can also copy a snapshot into it and share one.
#[async_trait::async_trait]
pub trait SnapshotCopier: SnapshotStore {
    /// Starts the copy of `source_arn` as `target_id`, encrypted with `kms_key_arn`.
    /// `Ok(false)` when a snapshot with that id already exists.
    async fn copy(
        &self,
        source_arn: &str,
        target_id: &str,
        kms_key_arn: &str,
        tags: &Tags,
    ) -> Result<bool, AwsCallError>;
    /// Accounts allowed to restore the snapshot.
    async fn shared_with(&self, snapshot_id: &str) -> Result<Vec<String>, AwsCallError>;
    /// Adds `account` to those allowed to restore the snapshot.
    async fn share(&self, snapshot_id: &str, account: &str) -> Result<(), AwsCallError>;
}

pub struct DrSnapshots {
    pub config: DrSnapshotConfig,
    pub store: Box<dyn SnapshotCopier>,
}

/// Whether the DR actions ran; without `DR_REGION` they do nothing and say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrStatus {
    Configured,
    NotConfigured,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrCopyResult {
    pub status: DrStatus,
    pub region: Option<String>,
    /// The database snapshot's copy; `None` when not configured.
    pub copy: Option<SnapshotInfo>,
    /// False when this invocation started the copy.
    pub reused: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrCopyStatus {
    pub status: DrStatus,
    pub region: Option<String>,
    /// `available`, `creating` or `failed`; `available` when not configured.
    pub state: Progress,
    pub reason: Option<String>,
    pub poll: u32,
    pub copy: Option<SnapshotInfo>,
    /// Accounts the copy is shared with (set once it is available).
    pub shared_with: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrPruneResult {
    pub status: DrStatus,
    pub region: Option<String>,
    pub pruned: Option<PruneResult>,
}

impl Snapshots {
    /// The DR copy's id: the source snapshot's, so that a retry and the DR prune find it.
    pub fn dr_copy_id(&self, run: &RunId) -> String {
        run.snapshot_id(self.database.source_id())
    }

    /// Starts (or finds) the copy of the run's database snapshot in the DR region.
    pub async fn copy_to_dr(&self, run: &RunId) -> Result<DrCopyResult, SnapshotError> {
        let Some(dr) = &self.dr else {
            return Ok(DrCopyResult {
                status: DrStatus::NotConfigured,
                region: None,
                copy: None,
                reused: false,
            });
        };
        let source = self.describe_started(self.database.as_ref(), run).await?;
        let id = self.dr_copy_id(run);
        let reused = match dr.store.describe(&id).await? {
            Some(_) => true,
            None => {
                if source.progress() != Progress::Available {
                    return Err(SnapshotError::NotAvailable {
                        id: source.id,
                        status: source.status,
                    });
                }
                let arn = source
                    .arn
                    .clone()
                    .ok_or_else(|| SnapshotError::NotAvailable {
                        id: source.id.clone(),
                        status: "without an ARN".into(),
                    })?;
                let tags = tags::backup_tags(
                    &run.stamp,
                    &self.config.schedule_name,
                    self.retain_until(run),
                );
                !dr.store
                    .copy(&arn, &id, &dr.config.kms_key_arn, &tags)
                    .await?
            }
        };
        let copy = self.owned_copy(dr, run, &id).await?;
        tracing::info!(snapshot_id = %copy.id, region = %dr.config.region, reused, "DR copy started");
        Ok(DrCopyResult {
            status: DrStatus::Configured,
            region: Some(dr.config.region.clone()),
            copy: Some(copy),
            reused,
        })
    }

    /// The run's copy in the DR region, refused unless it is ours and of this run.
    async fn owned_copy(
        &self,
        dr: &DrSnapshots,
        run: &RunId,
        id: &str,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let copy = dr
            .store
            .describe(id)
            .await?
            .ok_or_else(|| SnapshotError::NotStarted { id: id.to_owned() })?;
        if !tags::is_ours(&copy.tags, tags::ROLE_BACKUP)
            || copy.tags.get(tags::RUN_ID) != Some(&run.stamp)
        {
            return Err(SnapshotError::NotOwned {
                id: id.to_owned(),
                source_id: self.database.source_id().to_owned(),
            });
        }
        Ok(copy)
    }

    /// Polls the DR copy; once it is available, shares it with the DR account (idempotent).
    pub async fn dr_status(&self, run: &RunId, poll: u32) -> Result<DrCopyStatus, SnapshotError> {
        let Some(dr) = &self.dr else {
            return Ok(DrCopyStatus {
                status: DrStatus::NotConfigured,
                region: None,
                state: Progress::Available,
                reason: None,
                poll: poll.saturating_add(1),
                copy: None,
                shared_with: Vec::new(),
            });
        };
        let id = self.dr_copy_id(run);
        let copy = self.owned_copy(dr, run, &id).await?;
        let state = copy.progress();
        let mut shared_with = Vec::new();
        if state == Progress::Available {
            shared_with = dr.store.shared_with(&id).await?;
            if let Some(account) = &dr.config.account_id
                && !shared_with.contains(account)
            {
                dr.store.share(&id, account).await?;
                shared_with.push(account.clone());
                tracing::info!(snapshot_id = %id, %account, "DR copy shared");
            }
        }
        Ok(DrCopyStatus {
            status: DrStatus::Configured,
            region: Some(dr.config.region.clone()),
            reason: (state == Progress::Failed)
                .then(|| format!("DR copy {id} in {} is {}", dr.config.region, copy.status)),
            state,
            poll: poll.saturating_add(1),
            copy: Some(copy),
            shared_with,
        })
    }

    /// Retention in the DR region: the same plan as at home (only snapshots tagged as our
    /// backups, never the newest `KEEP_NEWEST`), applied to the copies.
    pub async fn prune_dr(
        &self,
        dry_run: bool,
        now: OffsetDateTime,
    ) -> Result<DrPruneResult, SnapshotError> {
        let Some(dr) = &self.dr else {
            return Ok(DrPruneResult {
                status: DrStatus::NotConfigured,
                region: None,
                pruned: None,
            });
        };
        let mut plan = prune::plan(
            &dr.store.list().await?,
            now,
            self.config.keep_newest as usize,
        );
        plan.dry_run = dry_run;
        if !dry_run {
            for entry in &plan.deleted {
                dr.store.delete(&entry.id).await?;
                tracing::info!(snapshot_id = %entry.id, region = %dr.config.region, reason = %entry.reason, at = %format_time(now), "pruned DR copy");
            }
        }
        Ok(DrPruneResult {
            status: DrStatus::Configured,
            region: Some(dr.config.region.clone()),
            pruned: Some(plan),
        })
    }
}
