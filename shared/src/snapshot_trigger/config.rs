//! snapshot-trigger's configuration, read once at cold start.

use crate::config::{ConfigError, Env, EnvSource};
use crate::logical::config::LogicalConfig;
use crate::settings;
use crate::snapshot::config::SnapshotConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTriggerConfig {
    pub backup_bucket: String,
    /// The database and cache snapshots, their export and retention.
    pub snapshot: SnapshotConfig,
    pub manifest_prefix: String,
    /// Path-style S3 addressing, for S3-compatible local endpoints.
    pub s3_force_path_style: bool,
    /// Logical backups (`LOGICAL_*`, `SOURCE_DATABASE_SECRET_ID`, `PG_TLS`).
    pub logical: LogicalConfig,
}

impl SnapshotTriggerConfig {
    pub fn from_env(source: &dyn EnvSource) -> Result<Self, ConfigError> {
        let env = Env(source);
        let backup_bucket = env.require(&settings::BACKUP_BUCKET)?;
        let snapshot = SnapshotConfig::from_env(&env)?;
        Ok(Self {
            logical: LogicalConfig::from_env(&env, snapshot.retention_days)?,
            backup_bucket,
            snapshot,
            manifest_prefix: env.prefix(&settings::MANIFEST_PREFIX)?,
            s3_force_path_style: env.switch(&settings::S3_FORCE_PATH_STYLE)?,
        })
    }

    /// The local engine's paths, for the `base-backup` action: read only when
    /// `LOCAL_BASE_BACKUP_DIR` is set (the local stack).
    pub fn local_base_backups(
        source: &dyn EnvSource,
    ) -> Result<Option<LocalEngineConfig>, ConfigError> {
        let env = Env(source);
        match env.text(&settings::LOCAL_BASE_BACKUP_DIR) {
            #[cfg(feature = "local-engine")]
            Some(_) => Ok(Some(LocalEngineConfig::from_env(&env)?)),
            #[cfg(not(feature = "local-engine"))]
            Some(_) => Err(ConfigError::Invalid {
                var: settings::LOCAL_BASE_BACKUP_DIR.name,
                reason: "this build leaves out the local engine (feature local-engine)".into(),
            }),
            None => Ok(None),
        }
    }
}

/// Where the local engine keeps its base backups.
#[cfg(feature = "local-engine")]
pub type LocalEngineConfig = crate::local_pg::LocalPgConfig;
/// A build without the local engine: there is never one to configure.
#[cfg(not(feature = "local-engine"))]
pub type LocalEngineConfig = std::convert::Infallible;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rds::DbSource;
    use crate::snapshot::elasticache::CacheSource;
    use std::collections::HashMap;

    #[test]
    fn reads_a_complete_configuration() {
        let env = HashMap::from([
            ("BACKUP_BUCKET", "b"),
            ("RDS_CLUSTER_ID", "aurora-1"),
            ("ELASTICACHE_REPLICATION_GROUP_ID", "cache"),
        ]);
        let config = SnapshotTriggerConfig::from_env(&env).unwrap();
        assert_eq!(
            config.snapshot.database,
            DbSource::Cluster("aurora-1".into())
        );
        assert_eq!(
            config.snapshot.cache,
            Some(CacheSource::ReplicationGroup("cache".into()))
        );
        assert_eq!(
            (config.snapshot.retention_days, config.snapshot.keep_newest),
            (35, 7)
        );
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
