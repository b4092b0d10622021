//! `flush` (runbook: "During restore, flush the queue to avoid replaying stale deliveries unless
//! required"): purge a staging SQS queue, or remove the queue keys of the staging Redis. Only a
//! target marked staging is touched: the SQS tag `catalyst-dr:role=staging`, or the Redis key
//! `catalyst-dr:role` = `staging` (set by the drill's restore). Redis keys are found with SCAN
//! over the configured patterns and removed with UNLINK; never KEYS, never FLUSHALL.

use super::{DeadLetterReplay, ReplayError};
use crate::flush_status::FlushStatus;
use crate::tags;
use serde::{Deserialize, Serialize};

use crate::cache_state::{STAGING_MARKER_KEY, STAGING_MARKER_VALUE};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushTarget {
    Queue(String),
    Redis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushResult {
    /// The queue URL, or `redis`.
    pub target: String,
    pub status: FlushStatus,
    /// Redis: keys removed per pattern.
    pub keys_removed: Option<std::collections::BTreeMap<String, u64>>,
    pub completed_at: String,
}

pub async fn flush(
    svc: &DeadLetterReplay,
    target: FlushTarget,
    preserve: bool,
) -> Result<FlushResult, ReplayError> {
    let name = match &target {
        FlushTarget::Queue(url) => url.clone(),
        FlushTarget::Redis => "redis".to_owned(),
    };
    if preserve {
        tracing::info!(target = %name, "flush skipped: preserve requested (stale deliveries will be replayed)");
        return Ok(FlushResult {
            target: name,
            status: FlushStatus::Preserved,
            keys_removed: None,
            completed_at: now(),
        });
    }
    match target {
        FlushTarget::Queue(url) => {
            let queue_tags = svc.queues.tags(&url).await?;
            let role = queue_tags.get(tags::ROLE).cloned();
            if role.as_deref() != Some(tags::ROLE_STAGING) {
                return Err(ReplayError::NotStaging {
                    target: url,
                    marker: format!("tag {} = {:?}", tags::ROLE, role),
                });
            }
            let status = if svc.queues.purge(&url).await? {
                FlushStatus::Purged
            } else {
                FlushStatus::PurgeInProgress
            };
            tracing::info!(queue_url = %url, status = status.as_str(), "staging queue flushed");
            Ok(FlushResult {
                target: url,
                status,
                keys_removed: None,
                completed_at: now(),
            })
        }
        FlushTarget::Redis => {
            let url = redis_url(svc).await?;
            let removed = flush_redis(&url, &svc.config.redis_queue_patterns).await?;
            Ok(FlushResult {
                target: name,
                status: FlushStatus::Flushed,
                keys_removed: Some(removed),
                completed_at: now(),
            })
        }
    }
}

async fn redis_url(svc: &DeadLetterReplay) -> Result<String, ReplayError> {
    if let Some(url) = &svc.config.staging_redis_url {
        return Ok(url.clone());
    }
    let Some(secret_id) = &svc.config.staging_redis_secret_id else {
        return Err(ReplayError::Misconfigured(
            "flushing Redis needs STAGING_REDIS_URL or STAGING_REDIS_SECRET_ID".to_owned(),
        ));
    };
    let text = svc.secrets.secret_string(secret_id).await?;
    crate::cache_state::url_from_secret(secret_id, &text).map_err(ReplayError::Misconfigured)
}

/// Removes the keys matching `patterns` from the Redis at `url`, if it is marked staging.
pub async fn flush_redis(
    url: &str,
    patterns: &[String],
) -> Result<std::collections::BTreeMap<String, u64>, ReplayError> {
    if patterns.is_empty() {
        return Err(ReplayError::Misconfigured(
            "REDIS_QUEUE_PATTERNS is empty: no queue keys to flush".to_owned(),
        ));
    }
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let role: Option<String> = redis::cmd("GET")
        .arg(STAGING_MARKER_KEY)
        .query_async(&mut conn)
        .await?;
    if role.as_deref() != Some(STAGING_MARKER_VALUE) {
        return Err(ReplayError::NotStaging {
            target: "redis".to_owned(),
            marker: format!("key {STAGING_MARKER_KEY} = {role:?}"),
        });
    }
    let mut removed = std::collections::BTreeMap::new();
    for pattern in patterns {
        let mut cursor: u64 = 0;
        let mut count = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            let keys: Vec<String> = keys
                .into_iter()
                .filter(|k| k != STAGING_MARKER_KEY)
                .collect();
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async(&mut conn)
                    .await?;
                count += n;
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        tracing::info!(%pattern, removed = count, "staging Redis queue keys removed");
        removed.insert(pattern.clone(), count);
    }
    Ok(removed)
}

fn now() -> String {
    crate::input::format_time(time::OffsetDateTime::now_utc())
}
