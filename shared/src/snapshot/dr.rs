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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_store::memory::MemoryObjects;
    use crate::snapshot::config::SnapshotConfig;
    use crate::snapshot::memory::MemorySnapshots;
    use crate::snapshot::store::SnapshotKind;
    use time::macros::datetime;

    const KEY: &str = "arn:aws:kms:us-west-2:123456789012:key/dr";

    fn snapshots(account: Option<&str>) -> (Snapshots, MemorySnapshots, MemorySnapshots) {
        let home = MemorySnapshots::new(SnapshotKind::RdsInstance, "prod-db");
        let dr = MemorySnapshots::new(SnapshotKind::RdsInstance, "prod-db");
        let snapshots = Snapshots {
            config: SnapshotConfig {
                database: crate::rds::DbSource::Instance("prod-db".into()),
                cache: None,
                cache_export: false,
                retention_days: 30,
                keep_newest: 1,
                schedule_name: "nightly".into(),
            },
            database: Box::new(home.clone()),
            cache: None,
            exporter: None,
            objects: Box::new(MemoryObjects::new("backups")),
            dr: Some(DrSnapshots {
                config: DrSnapshotConfig {
                    region: "us-west-2".into(),
                    kms_key_arn: KEY.into(),
                    account_id: account.map(str::to_owned),
                },
                store: Box::new(dr.clone()),
            }),
        };
        (snapshots, home, dr)
    }

    fn run() -> RunId {
        RunId::from_scheduled_time("scheduled_time", "2026-11-26T03:00:00Z").unwrap()
    }

    #[tokio::test]
    async fn copies_once_with_the_dr_key_only_an_available_snapshot_and_shares_when_available() {
        let (snapshots, home, dr) = snapshots(Some("210987654321"));
        let run = run();
        snapshots.snapshot(&run).await.unwrap();
        let err = snapshots.copy_to_dr(&run).await.unwrap_err();
        assert!(matches!(err, SnapshotError::NotAvailable { .. }), "{err}");
        let id = snapshots.dr_copy_id(&run);
        home.set_status(&id, "available");
        let first = snapshots.copy_to_dr(&run).await.unwrap();
        let again = snapshots.copy_to_dr(&run).await.unwrap();
        assert_eq!((first.reused, again.reused), (false, true));
        assert_eq!(
            dr.copies(),
            [(
                format!("arn:memory:snapshot:{id}"),
                id.clone(),
                KEY.to_owned()
            )]
        );
        let copy = first.copy.unwrap();
        assert!(tags::is_ours(&copy.tags, tags::ROLE_BACKUP));
        assert_eq!(copy.tags[tags::RETAIN_UNTIL], "2026-12-26T03:00:00Z");
        // Shared only once the copy is available, and only once.
        let copying = snapshots.dr_status(&run, 0).await.unwrap();
        assert_eq!((copying.state, copying.poll), (Progress::Creating, 1));
        assert!(copying.shared_with.is_empty());
        dr.set_status(&id, "available");
        for _ in 0..2 {
            let status = snapshots.dr_status(&run, 1).await.unwrap();
            assert_eq!(status.state, Progress::Available);
            assert_eq!(status.shared_with, ["210987654321"]);
        }
    }

    #[tokio::test]
    async fn a_copy_id_taken_by_something_not_ours_is_refused() {
        let (snapshots, home, dr) = snapshots(None);
        let run = run();
        snapshots.snapshot(&run).await.unwrap();
        let id = snapshots.dr_copy_id(&run);
        home.set_status(&id, "available");
        dr.insert(dr.info(&id, "manual", "available", Tags::new()));
        let err = snapshots.copy_to_dr(&run).await.unwrap_err();
        assert!(matches!(err, SnapshotError::NotOwned { .. }), "{err}");
        assert!(dr.copies().is_empty());
    }

    #[tokio::test]
    async fn dr_prune_deletes_only_our_expired_copies_and_keeps_the_newest() {
        let (snapshots, _, dr) = snapshots(None);
        let ours = |retain: &str| {
            let mut t = tags::backup_tags("r", "nightly", datetime!(2026-01-01 00:00 UTC));
            t.insert(tags::RETAIN_UNTIL.into(), retain.into());
            t
        };
        dr.set_now(datetime!(2026-01-01 00:00 UTC));
        dr.insert(dr.info(
            "old-ours",
            "manual",
            "available",
            ours("2026-02-01T00:00:00Z"),
        ));
        dr.insert(dr.info("foreign", "manual", "available", Tags::new()));
        dr.insert(dr.info(
            "automated",
            "automated",
            "available",
            ours("2026-02-01T00:00:00Z"),
        ));
        dr.set_now(datetime!(2026-01-02 00:00 UTC));
        dr.insert(dr.info(
            "newest-ours",
            "manual",
            "available",
            ours("2026-02-01T00:00:00Z"),
        ));
        let now = datetime!(2026-03-01 00:00 UTC);
        let dry = snapshots.prune_dr(true, now).await.unwrap();
        assert_eq!(dr.ids().len(), 4, "a dry run deletes nothing");
        assert_eq!(dry.pruned.unwrap().deleted.len(), 1);
        let pruned = snapshots
            .prune_dr(false, now)
            .await
            .unwrap()
            .pruned
            .unwrap();
        assert_eq!(pruned.deleted[0].id, "old-ours");
        assert_eq!(pruned.ignored, 2);
        assert_eq!(dr.ids(), ["automated", "foreign", "newest-ours"]);
    }

    #[tokio::test]
    async fn without_a_dr_region_nothing_is_called() {
        let (mut snapshots, _, dr) = snapshots(None);
        snapshots.dr = None;
        let run = run();
        assert_eq!(
            snapshots.copy_to_dr(&run).await.unwrap().status,
            DrStatus::NotConfigured
        );
        assert_eq!(
            snapshots.dr_status(&run, 3).await.unwrap().status,
            DrStatus::NotConfigured
        );
        assert_eq!(
            snapshots
                .prune_dr(false, OffsetDateTime::now_utc())
                .await
                .unwrap()
                .status,
            DrStatus::NotConfigured
        );
        assert!(dr.ids().is_empty());
    }
}
