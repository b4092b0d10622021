//! The capability a drill needs from wherever the cache lives: snapshot the source cache while
//! reading its queue state, restore a snapshot into a new staging cache, watch it come up,
//! delete it. Implemented for ElastiCache (Redis OSS replication groups and clusters) and, with
//! the `local-engine` feature, for `redis-server` processes on this machine.

pub mod elasticache;
#[cfg(feature = "local-engine")]
pub mod local;

use crate::cache_state::CacheState;
use crate::config::{ConfigError, Env};
pub use crate::elasticache::CacheSource;
use crate::error_kind::ErrorKind;
use crate::restore_engine::{EngineError, StagingState};
use crate::settings;
use crate::tags::Tags;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A snapshot of the source cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheSnapshot {
    pub snapshot_id: String,
    /// `available` when it can be restored; `creating` before.
    pub status: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    pub tags: Tags,
}

/// The source's queue state that goes with a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotState {
    pub state: CacheState,
    /// True when the state was read at the snapshot's own instant (writes paused from the read
    /// until the snapshot's fork). False when it was read just before the snapshot was requested:
    /// writes in between show up as differences.
    pub exact: bool,
}

/// A staging cache as its engine describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagingCache {
    pub target_id: String,
    pub state: StagingState,
    /// The engine's own status text (`available`, `creating`, `loading`, ...).
    pub status: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// In-transit encryption: connect with `rediss://`.
    pub tls: bool,
    pub tags: Tags,
}

impl StagingCache {
    /// The URL a client opens, once the cache has an endpoint.
    pub fn url(&self) -> Option<String> {
        let scheme = if self.tls { "rediss" } else { "redis" };
        Some(format!(
            "{scheme}://{}:{}",
            self.host.as_deref()?,
            self.port?
        ))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheEngineError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The source is saving already (its own schedule or an earlier attempt): try again.
    #[error("the source cache is busy: {reason}")]
    Busy { reason: String },
    /// The staging cache or a drill snapshot cannot be deleted until it settles: try again.
    #[error("not deletable yet: {reason}")]
    StagingBusy { reason: String },
}

impl From<crate::aws_error::AwsCallError> for CacheEngineError {
    fn from(e: crate::aws_error::AwsCallError) -> Self {
        Self::Engine(EngineError::Aws(e))
    }
}

impl CacheEngineError {
    pub fn error_type(&self) -> ErrorKind {
        match self {
            Self::Engine(e) => e.error_type(),
            Self::Redis(_) => ErrorKind::RedisUnavailable,
            Self::Busy { .. } => ErrorKind::CacheSnapshotBusy,
            Self::StagingBusy { .. } => ErrorKind::StagingCacheBusy,
        }
    }
}

#[async_trait::async_trait]
pub trait CacheEngine: Send + Sync {
    /// The source cache's identifier.
    fn source_id(&self) -> &str;
    /// Snapshots the source (reached at `source_url`) as `snapshot_id` with `tags`, and reads its
    /// state over `patterns`
    /// (see [`SnapshotState::exact`]). A snapshot that exists already is an error: each attempt
    /// takes its own, so the state always belongs to its snapshot.
    async fn snapshot_source(
        &self,
        source_url: &str,
        snapshot_id: &str,
        tags: &Tags,
        patterns: &[String],
    ) -> Result<SnapshotState, CacheEngineError>;
    /// The source's snapshots, in no particular order; the caller decides which are its own.
    async fn snapshots(&self) -> Result<Vec<CacheSnapshot>, CacheEngineError>;
    /// Deletes a snapshot. Absent already: `Ok`.
    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), CacheEngineError>;
    async fn describe(&self, target_id: &str) -> Result<Option<StagingCache>, CacheEngineError>;
    /// Starts restoring `snapshot` into a new cache `target_id`; then polled with `describe`.
    async fn start_restore(
        &self,
        target_id: &str,
        snapshot: &CacheSnapshot,
        tags: &Tags,
    ) -> Result<(), CacheEngineError>;
    /// Deletes the staging cache. Absent already: `Ok`.
    async fn delete(&self, target_id: &str) -> Result<(), CacheEngineError>;
}

/// Where staging caches go in ElastiCache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachePlacement {
    pub subnet_group: String,
    pub security_group_ids: Vec<String>,
    /// Default: the snapshot's node type.
    pub node_type: Option<String>,
}

/// `CACHE_ENGINE` and what the chosen engine needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheEngineConfig {
    /// The drill leaves the cache out.
    None,
    ElastiCache {
        source: CacheSource,
        /// Only pitr-restore, which creates staging caches, reads it.
        placement: Option<CachePlacement>,
    },
    #[cfg(feature = "local-engine")]
    Local(local::LocalCacheConfig),
}

impl CacheEngineConfig {
    /// `restores`: the function creates staging caches (pitr-restore), so it needs placement.
    pub fn from_env(env: &Env, restores: bool) -> Result<Self, ConfigError> {
        match env.text_or_default(&settings::CACHE_ENGINE)?.as_str() {
            "none" => Ok(Self::None),
            "elasticache" => {
                let source = CacheSource::from_env(env)?.ok_or(ConfigError::Missing {
                    var: settings::ELASTICACHE_REPLICATION_GROUP_ID.name,
                })?;
                let placement = if restores {
                    let security_group_ids = env.list(&settings::STAGING_CACHE_SECURITY_GROUP_IDS);
                    if security_group_ids.is_empty() {
                        env.require(&settings::STAGING_CACHE_SECURITY_GROUP_IDS)?;
                        return Err(ConfigError::Invalid {
                            var: settings::STAGING_CACHE_SECURITY_GROUP_IDS.name,
                            reason: "no security group id".into(),
                        });
                    }
                    Some(CachePlacement {
                        subnet_group: env.require(&settings::STAGING_CACHE_SUBNET_GROUP)?,
                        security_group_ids,
                        node_type: env.text(&settings::STAGING_CACHE_NODE_TYPE),
                    })
                } else {
                    None
                };
                Ok(Self::ElastiCache { source, placement })
            }
            #[cfg(feature = "local-engine")]
            "local" => Ok(Self::Local(local::LocalCacheConfig::from_env(
                env, restores,
            )?)),
            #[cfg(not(feature = "local-engine"))]
            "local" => Err(ConfigError::Invalid {
                var: settings::CACHE_ENGINE.name,
                reason: "local: this build leaves out the local engine (feature local-engine)"
                    .into(),
            }),
            other => Err(ConfigError::Invalid {
                var: settings::CACHE_ENGINE.name,
                reason: format!("{other:?} is not none, elasticache or local"),
            }),
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }
}

/// The engine for `config` (`None` when the drill leaves the cache out).
pub fn build(
    config: &CacheEngineConfig,
    sdk: &aws_config::SdkConfig,
) -> Option<Box<dyn CacheEngine>> {
    match config {
        CacheEngineConfig::None => None,
        CacheEngineConfig::ElastiCache { source, placement } => {
            Some(Box::new(elasticache::ElastiCacheEngine::new(
                aws_sdk_elasticache::Client::new(sdk),
                source.clone(),
                placement.clone(),
            )))
        }
        #[cfg(feature = "local-engine")]
        CacheEngineConfig::Local(local) => {
            Some(Box::new(local::LocalCacheEngine::new(local.clone())))
        }
    }
}
