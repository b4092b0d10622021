//! What the snapshots are taken of and how long they are kept, read once at cold start.

use super::elasticache::CacheSource;
use crate::config::{ConfigError, Env, validate_identifier};
use crate::rds::DbSource;
use crate::settings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotConfig {
    pub database: DbSource,
    pub cache: Option<CacheSource>,
    /// Export the cache snapshot to the backup bucket (ElastiCache `CopySnapshot`).
    pub cache_export: bool,
    pub retention_days: u32,
    pub keep_newest: u32,
    pub schedule_name: String,
}

fn identifier(var: &'static str, value: String) -> Result<String, ConfigError> {
    validate_identifier(&value).map_err(|reason| ConfigError::Invalid { var, reason })?;
    Ok(value)
}

impl SnapshotConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let database = match env.either(&settings::RDS_INSTANCE_ID, &settings::RDS_CLUSTER_ID)? {
            Some((var, id)) if var == settings::RDS_INSTANCE_ID.name => {
                DbSource::Instance(identifier(var, id)?)
            }
            Some((var, id)) => DbSource::Cluster(identifier(var, id)?),
            None => {
                return Err(ConfigError::Missing {
                    var: settings::RDS_INSTANCE_ID.name,
                });
            }
        };
        let cache = CacheSource::from_env(env)?;
        Ok(Self {
            database,
            cache,
            cache_export: env.switch(&settings::ELASTICACHE_EXPORT)?,
            retention_days: env.number(&settings::RETENTION_DAYS)?,
            keep_newest: env.number(&settings::KEEP_NEWEST)?,
            schedule_name: env.text_or_default(&settings::SCHEDULE_NAME)?,
        })
    }
}
