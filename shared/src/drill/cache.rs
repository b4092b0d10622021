//! The cache in a drill: the snapshot taken with the baseline and its queue state, the restored
//! staging cache's parity with it (checked before the flush empties its queues), and the flush's
//! outcome.

use super::{Baseline, CacheBaseline, CacheCheck, DrillError, DrillValidator};
use crate::cache_state::{self, CacheParity, StagingCacheSecret};
use crate::flush_status::FlushStatus;
use crate::input::format_time;
use crate::tags;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The stored pre-flush comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheParityRecord {
    pub drill_id: String,
    pub snapshot_id: String,
    pub staging_target_id: String,
    pub exact_baseline: bool,
    pub parity: CacheParity,
    pub checked_at: String,
}

/// What `cache-parity` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum CacheParityResult {
    /// The drill leaves the cache out (`CACHE_ENGINE=none`).
    NotConfigured,
    Checked(CacheParityRecord),
}

/// A drill's cache snapshot id: unique per attempt, so a retried baseline never adopts a
/// snapshot whose state it did not read.
pub fn snapshot_id(drill_id: &str, at: OffsetDateTime) -> String {
    format!(
        "cdr-{}-{}",
        drill_id.to_ascii_lowercase(),
        at.unix_timestamp_nanos() / 1_000_000
    )
}

impl DrillValidator {
    async fn source_redis_url(&self) -> Result<String, DrillError> {
        if let Some(url) = &self.config.redis_url {
            return Ok(url.clone());
        }
        let secret_id = self.config.redis_secret_id.as_deref().ok_or_else(|| {
            DrillError::Misconfigured(
                "snapshotting the cache needs DRILL_REDIS_URL or DRILL_REDIS_SECRET_ID".into(),
            )
        })?;
        let text = self.secrets.current(secret_id).await?.unwrap_or_default();
        cache_state::url_from_secret(secret_id, &text).map_err(DrillError::Misconfigured)
    }

    /// Snapshots the cache and reads its queue state (part of the baseline).
    pub(super) async fn cache_baseline(
        &self,
        drill_id: &str,
    ) -> Result<Option<CacheBaseline>, DrillError> {
        let Some(engine) = &self.cache else {
            return Ok(None);
        };
        let url = self.source_redis_url().await?;
        let now = OffsetDateTime::now_utc();
        let snapshot_id = snapshot_id(drill_id, now);
        let snapshot_tags = tags::drill_snapshot_tags(drill_id, engine.source_id());
        let taken = engine
            .snapshot_source(
                &url,
                &snapshot_id,
                &snapshot_tags,
                &self.config.redis_queue_patterns,
            )
            .await?;
        tracing::info!(%drill_id, %snapshot_id, exact = taken.exact, keys = taken.state.keys, "cache snapshot taken");
        Ok(Some(CacheBaseline {
            source_id: engine.source_id().to_owned(),
            snapshot_id,
            state: taken.state,
            exact: taken.exact,
            captured_at: format_time(now),
        }))
    }

    /// The staging cache pitr-restore published for this drill.
    async fn staging_cache(&self, drill_id: &str) -> Result<StagingCacheSecret, DrillError> {
        let secret_id = self
            .config
            .staging_cache_secret_id
            .as_deref()
            .ok_or_else(|| {
                DrillError::Misconfigured("STAGING_CACHE_SECRET_ID is not set".into())
            })?;
        let text = self.secrets.current(secret_id).await?.unwrap_or_default();
        serde_json::from_str::<StagingCacheSecret>(&text)
            .ok()
            .filter(|s| s.drill_id == drill_id)
            .ok_or_else(|| DrillError::NoStagingCache {
                drill_id: drill_id.to_owned(),
            })
    }

    pub async fn cache_parity(&self, drill_id: &str) -> Result<CacheParityResult, DrillError> {
        let key = self.key(drill_id, "cache-parity.json");
        if let Some(stored) = self.load::<CacheParityRecord>(&key).await? {
            return Ok(CacheParityResult::Checked(stored));
        }
        let baseline = self.stored_baseline(drill_id).await?;
        let Some(cache) = &baseline.cache else {
            return Ok(CacheParityResult::NotConfigured);
        };
        let staging = self.staging_cache(drill_id).await?;
        let patterns: Vec<String> = cache.state.patterns.keys().cloned().collect();
        let (mut conn, db) = cache_state::connect(&staging.url).await?;
        let restored = cache_state::capture(&mut conn, db, &patterns).await?;
        let record = CacheParityRecord {
            drill_id: drill_id.to_owned(),
            snapshot_id: cache.snapshot_id.clone(),
            staging_target_id: staging.target_id,
            exact_baseline: cache.exact,
            parity: cache_state::compare(&cache.state, &restored),
            checked_at: format_time(OffsetDateTime::now_utc()),
        };
        self.store(&key, &record).await?;
        tracing::info!(%drill_id, passed = record.parity.passed, "cache parity checked");
        Ok(CacheParityResult::Checked(record))
    }

    /// The cache half of `validate`: the stored parity, and the staging cache's queue keys after
    /// the flush (none unless the queue was preserved).
    pub(super) async fn cache_check(
        &self,
        drill_id: &str,
        baseline: &Baseline,
        flush_status: Option<FlushStatus>,
    ) -> Result<Option<CacheCheck>, DrillError> {
        let Some(cache) = &baseline.cache else {
            return Ok(None);
        };
        let record = match self
            .load::<CacheParityRecord>(&self.key(drill_id, "cache-parity.json"))
            .await?
        {
            Some(record) => record,
            // Parity was never checked: the drill skipped a step, which fails it.
            None => CacheParityRecord {
                drill_id: drill_id.to_owned(),
                snapshot_id: cache.snapshot_id.clone(),
                staging_target_id: String::new(),
                exact_baseline: cache.exact,
                parity: CacheParity {
                    baseline_persistent_keys: cache.state.persistent_keys(),
                    restored_persistent_keys: 0,
                    baseline_volatile_keys: cache.state.volatile_keys,
                    restored_volatile_keys: 0,
                    patterns: Vec::new(),
                    passed: false,
                },
                checked_at: String::new(),
            },
        };
        let staging = self.staging_cache(drill_id).await?;
        let patterns: Vec<String> = cache.state.patterns.keys().cloned().collect();
        let (mut conn, db) = cache_state::connect(&staging.url).await?;
        let after = cache_state::capture(&mut conn, db, &patterns).await?;
        let queue_keys_after_flush: u64 = after.patterns.values().map(|k| k.len() as u64).sum();
        let (flush_status, flush_passed) = match flush_status {
            Some(FlushStatus::Flushed) => ("flushed", queue_keys_after_flush == 0),
            Some(FlushStatus::Preserved) => ("preserved", true),
            Some(other) => (other.as_str(), false),
            None => ("not flushed", false),
        };
        let passed = record.parity.passed && flush_passed;
        Ok(Some(CacheCheck {
            snapshot_id: record.snapshot_id,
            staging_target_id: record.staging_target_id,
            exact_baseline: record.exact_baseline,
            parity: record.parity,
            flush_status: flush_status.to_owned(),
            queue_keys_after_flush,
            flush_passed,
            passed,
        }))
    }
}
