//! The drill's staging cache: restored from the drill's own cache snapshot (taken with the
//! baseline), marked as staging, its URL published for the flush and the parity check, and torn
//! down with the drill's snapshots. Only a cache tagged as this drill's staging is ever touched.

use super::{PitrError, PitrRestore};
use crate::cache_engine::{CacheEngine, StagingCache};
use crate::cache_state::{self, STAGING_MARKER_KEY, STAGING_MARKER_VALUE, StagingCacheSecret};
use crate::drill_id::DrillId;
use crate::input::{InputError, format_time};
use crate::restore_engine::StagingState;
use crate::tags;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Where a drill's staging cache stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheRestoreState {
    /// `CACHE_ENGINE=none`: the drill leaves the cache out.
    NotConfigured,
    /// The drill's snapshot is still being taken.
    SnapshotPending,
    Creating,
    Available,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheRestoreResult {
    pub drill_id: String,
    pub state: CacheRestoreState,
    pub target_id: Option<String>,
    pub snapshot_id: Option<String>,
    /// The engine's status text, or why the restore failed.
    pub detail: String,
    pub poll: u32,
    pub checked_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheTeardown {
    pub target_id: String,
    /// False when there was no staging cache left.
    pub deleted: bool,
    pub snapshots_deleted: Vec<String>,
}

/// The staging cache of a drill: `cdr-<drill id>`, within ElastiCache's 40 characters.
pub fn target_id(drill_id: &str) -> String {
    format!("cdr-{}", drill_id.to_ascii_lowercase())
}

impl PitrRestore {
    fn cache_engine(&self) -> Option<&dyn CacheEngine> {
        self.cache.as_deref()
    }

    /// One step of the staging cache's restore, safe to call again: starts it once the drill's
    /// snapshot is available, and once the cache is up, marks it and publishes its URL.
    pub async fn cache_restore(
        &self,
        drill_id: &str,
        snapshot_id: Option<&str>,
        poll: u32,
    ) -> Result<CacheRestoreResult, PitrError> {
        DrillId::exact(drill_id)?;
        let result = |state, target_id: Option<String>, detail: String| CacheRestoreResult {
            drill_id: drill_id.to_owned(),
            state,
            target_id,
            snapshot_id: snapshot_id.map(str::to_owned),
            detail,
            poll: poll + 1,
            checked_at: format_time(OffsetDateTime::now_utc()),
        };
        let Some(engine) = self.cache_engine() else {
            return Ok(result(
                CacheRestoreState::NotConfigured,
                None,
                "CACHE_ENGINE is none".into(),
            ));
        };
        let snapshot_id = snapshot_id.ok_or_else(|| {
            InputError::new("snapshot_id", "required: the baseline's cache snapshot")
        })?;
        let target = target_id(drill_id);
        let target_some = Some(target.clone());
        match engine.describe(&target).await? {
            Some(cache) => {
                self.require_our_cache(&cache, drill_id)?;
                match cache.state {
                    StagingState::Creating => Ok(result(
                        CacheRestoreState::Creating,
                        target_some,
                        cache.status,
                    )),
                    StagingState::Failed => Ok(result(
                        CacheRestoreState::Failed,
                        target_some,
                        format!("staging cache {target} is {}", cache.status),
                    )),
                    StagingState::Available => {
                        self.publish_cache(drill_id, &cache).await?;
                        Ok(result(
                            CacheRestoreState::Available,
                            target_some,
                            cache.status,
                        ))
                    }
                }
            }
            None => {
                let snapshot = engine
                    .snapshots()
                    .await?
                    .into_iter()
                    .find(|s| s.snapshot_id == snapshot_id)
                    .ok_or_else(|| PitrError::NoBackupSnapshot {
                        source_id: engine.source_id().to_owned(),
                        reason: format!("cache snapshot {snapshot_id} does not exist"),
                    })?;
                if !tags::is_drill_snapshot_of(&snapshot.tags, drill_id) {
                    return Err(PitrError::Refused {
                        target_id: snapshot_id.to_owned(),
                        reason: format!(
                            "it is not a cache snapshot catalyst-dr took for drill {drill_id}"
                        ),
                    });
                }
                if snapshot.status != "available" {
                    return Ok(result(
                        CacheRestoreState::SnapshotPending,
                        target_some,
                        format!("snapshot {snapshot_id} is {}", snapshot.status),
                    ));
                }
                engine
                    .start_restore(
                        &target,
                        &snapshot,
                        &tags::staging_tags(drill_id, engine.source_id()),
                    )
                    .await?;
                tracing::info!(%drill_id, %target, %snapshot_id, "staging cache restore started");
                Ok(result(
                    CacheRestoreState::Creating,
                    target_some,
                    "restore started".into(),
                ))
            }
        }
    }

    fn require_our_cache(&self, cache: &StagingCache, drill_id: &str) -> Result<(), PitrError> {
        if tags::is_staging_of(&cache.tags, drill_id) {
            Ok(())
        } else {
            Err(PitrError::Refused {
                target_id: cache.target_id.clone(),
                reason: format!("it is not tagged as catalyst-dr staging for drill {drill_id}"),
            })
        }
    }

    /// Marks the staging cache (the flush refuses any Redis without the mark) and publishes
    /// its URL for the flush and the parity check.
    async fn publish_cache(&self, drill_id: &str, cache: &StagingCache) -> Result<(), PitrError> {
        let url = cache.url().ok_or_else(|| PitrError::NotReady {
            target_id: cache.target_id.clone(),
            status: "available without an endpoint".into(),
        })?;
        let (mut conn, _) = cache_state::connect(&url)
            .await
            .map_err(|e| PitrError::Cache(e.into()))?;
        let _: () = redis::cmd("SET")
            .arg(STAGING_MARKER_KEY)
            .arg(STAGING_MARKER_VALUE)
            .query_async(&mut conn)
            .await
            .map_err(|e| PitrError::Cache(e.into()))?;
        let secret_id = self
            .config
            .staging_cache_secret_id
            .as_deref()
            .expect("a cache engine is configured with its secret");
        let secret = StagingCacheSecret {
            url,
            drill_id: drill_id.to_owned(),
            target_id: cache.target_id.clone(),
        };
        self.secrets
            .put(
                secret_id,
                &serde_json::to_string(&secret).expect("plain data"),
            )
            .await?;
        Ok(())
    }

    /// The cache half of the teardown: the staging cache and every snapshot taken for the drill.
    pub(super) async fn cache_teardown(
        &self,
        drill_id: &str,
    ) -> Result<Option<CacheTeardown>, PitrError> {
        let Some(engine) = self.cache_engine() else {
            return Ok(None);
        };
        let target = target_id(drill_id);
        let deleted = match engine.describe(&target).await? {
            None => false,
            Some(cache) => {
                self.require_our_cache(&cache, drill_id)?;
                engine.delete(&target).await?;
                true
            }
        };
        let mut snapshots_deleted = Vec::new();
        for snapshot in engine.snapshots().await? {
            if tags::is_drill_snapshot_of(&snapshot.tags, drill_id) {
                engine.delete_snapshot(&snapshot.snapshot_id).await?;
                snapshots_deleted.push(snapshot.snapshot_id);
            }
        }
        tracing::info!(%drill_id, %target, deleted, snapshots = snapshots_deleted.len(), "staging cache torn down");
        Ok(Some(CacheTeardown {
            target_id: target,
            deleted,
            snapshots_deleted,
        }))
    }
}
