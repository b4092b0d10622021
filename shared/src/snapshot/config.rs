//! snapshot-trigger's configuration, read once at cold start.

use super::elasticache::CacheSource;
use super::rds::DbSource;
use crate::config::{ConfigError, Env, EnvSource, validate_identifier};
use crate::local_pg::LocalPgConfig;
use crate::logical::config::LogicalConfig;
use crate::settings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTriggerConfig {
    pub backup_bucket: String,
    pub database: DbSource,
    pub cache: Option<CacheSource>,
    /// Export the cache snapshot to the backup bucket (ElastiCache `CopySnapshot`).
    pub cache_export: bool,
    pub retention_days: u32,
    pub keep_newest: u32,
    pub schedule_name: String,
    pub manifest_prefix: String,
    /// Path-style S3 addressing, for S3-compatible local endpoints.
    pub s3_force_path_style: bool,
    /// Logical backups (`LOGICAL_*`, `SOURCE_DATABASE_SECRET_ID`, `PG_TLS`).
    pub logical: LogicalConfig,
}

fn identifier(var: &'static str, value: String) -> Result<String, ConfigError> {
    validate_identifier(&value).map_err(|reason| ConfigError::Invalid { var, reason })?;
    Ok(value)
}

impl SnapshotTriggerConfig {
    pub fn from_env(source: &dyn EnvSource) -> Result<Self, ConfigError> {
        let env = Env(source);
        let backup_bucket = env.require(&settings::BACKUP_BUCKET)?;
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
        let cache = match env.either(
            &settings::ELASTICACHE_REPLICATION_GROUP_ID,
            &settings::ELASTICACHE_CLUSTER_ID,
        )? {
            Some((var, id)) if var == settings::ELASTICACHE_REPLICATION_GROUP_ID.name => {
                Some(CacheSource::ReplicationGroup(identifier(var, id)?))
            }
            Some((var, id)) => Some(CacheSource::Cluster(identifier(var, id)?)),
            None => None,
        };
        let manifest_prefix = env.prefix(&settings::MANIFEST_PREFIX)?;
        let retention_days = env.number(&settings::RETENTION_DAYS)?;
        Ok(Self {
            logical: LogicalConfig::from_env(&env, retention_days)?,
            backup_bucket,
            database,
            cache,
            cache_export: env.switch(&settings::ELASTICACHE_EXPORT)?,
            retention_days,
            keep_newest: env.number(&settings::KEEP_NEWEST)?,
            schedule_name: env.text_or_default(&settings::SCHEDULE_NAME)?,
            manifest_prefix,
            s3_force_path_style: env.switch(&settings::S3_FORCE_PATH_STYLE)?,
        })
    }

    /// The local engine's paths, for the `base-backup` action: read only when
    /// `LOCAL_BASE_BACKUP_DIR` is set (the local stack).
    pub fn local_base_backups(
        source: &dyn EnvSource,
    ) -> Result<Option<LocalPgConfig>, ConfigError> {
        let env = Env(source);
        match env.text(&settings::LOCAL_BASE_BACKUP_DIR) {
            Some(_) => Ok(Some(LocalPgConfig::from_env(&env)?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn reads_a_complete_configuration() {
        let env = HashMap::from([
            ("BACKUP_BUCKET", "b"),
            ("RDS_CLUSTER_ID", "aurora-1"),
            ("ELASTICACHE_REPLICATION_GROUP_ID", "cache"),
        ]);
        let config = SnapshotTriggerConfig::from_env(&env).unwrap();
        assert_eq!(config.database, DbSource::Cluster("aurora-1".into()));
        assert_eq!(
            config.cache,
            Some(CacheSource::ReplicationGroup("cache".into()))
        );
        assert_eq!((config.retention_days, config.keep_newest), (35, 7));
    }

    #[test]
    fn names_the_bad_variable() {
        let cases: [(&[(&str, &str)], &str); 5] = [
            (&[("RDS_INSTANCE_ID", "db")], "BACKUP_BUCKET"),
            (&[("BACKUP_BUCKET", "b")], "RDS_INSTANCE_ID"),
            (
                &[
                    ("BACKUP_BUCKET", "b"),
                    ("RDS_INSTANCE_ID", "db"),
                    ("RDS_CLUSTER_ID", "c"),
                ],
                "RDS_CLUSTER_ID",
            ),
            (
                &[("BACKUP_BUCKET", "b"), ("RDS_INSTANCE_ID", "db_1")],
                "RDS_INSTANCE_ID",
            ),
            (
                &[
                    ("BACKUP_BUCKET", "b"),
                    ("RDS_INSTANCE_ID", "db"),
                    ("RETENTION_DAYS", "0"),
                ],
                "RETENTION_DAYS",
            ),
        ];
        for (vars, expected) in cases {
            let env: HashMap<&str, &str> = vars.iter().copied().collect();
            let err = SnapshotTriggerConfig::from_env(&env).unwrap_err();
            let var = match err {
                ConfigError::Missing { var } | ConfigError::Invalid { var, .. } => var,
            };
            assert_eq!(var, expected, "{vars:?}");
        }
    }
}
