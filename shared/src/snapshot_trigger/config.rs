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
    /// Copies in the DR region (`DR_*`); `None` without `DR_REGION`.
    pub dr: Option<DrConfig>,
}

/// Where the run's copies go: snapshot copies in `region` encrypted with `kms_key_arn`, objects
/// in `bucket`, snapshot copies shared with `account_id` when set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrConfig {
    pub region: String,
    pub bucket: String,
    pub kms_key_arn: String,
    pub account_id: Option<String>,
}

impl DrConfig {
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(region) = env.text(&settings::DR_REGION) else {
            return Ok(None);
        };
        if region.is_empty()
            || !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(ConfigError::Invalid {
                var: settings::DR_REGION.name,
                reason: format!("{region:?} is not an AWS region name"),
            });
        }
        let bucket = env.require(&settings::DR_BUCKET)?;
        let kms_key_arn = env.require(&settings::DR_KMS_KEY_ARN)?;
        // RDS encrypts the copy with a key of the region it lands in.
        if !kms_key_arn.starts_with("arn:")
            || kms_key_arn.split(':').nth(3) != Some(region.as_str())
        {
            return Err(ConfigError::Invalid {
                var: settings::DR_KMS_KEY_ARN.name,
                reason: format!("must be the ARN of a KMS key in {region} (DR_REGION)"),
            });
        }
        let account_id = env.text(&settings::DR_ACCOUNT_ID);
        if let Some(account) = &account_id
            && (account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(ConfigError::Invalid {
                var: settings::DR_ACCOUNT_ID.name,
                reason: format!("{account:?} is not a 12-digit account id"),
            });
        }
        Ok(Some(Self {
            region,
            bucket,
            kms_key_arn,
            account_id,
        }))
    }
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
            dr: DrConfig::from_env(&env)?,
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
    fn dr_copies_are_optional_and_checked_when_configured() {
        let base = [("BACKUP_BUCKET", "b"), ("RDS_INSTANCE_ID", "db")];
        let env: HashMap<&str, &str> = base.into_iter().collect();
        assert_eq!(SnapshotTriggerConfig::from_env(&env).unwrap().dr, None);
        let key = "arn:aws:kms:us-west-2:123456789012:key/k";
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut env: HashMap<&str, &str> = base.into_iter().collect();
            env.extend(extra.iter().copied());
            SnapshotTriggerConfig::from_env(&env)
        };
        let dr = with(&[
            ("DR_REGION", "us-west-2"),
            ("DR_BUCKET", "dr"),
            ("DR_KMS_KEY_ARN", key),
        ])
        .unwrap()
        .dr
        .unwrap();
        assert_eq!((dr.region.as_str(), dr.account_id), ("us-west-2", None));
        let cases: [(&[(&str, &str)], &str); 4] = [
            (
                &[("DR_REGION", "us-west-2"), ("DR_KMS_KEY_ARN", key)],
                "DR_BUCKET",
            ),
            (
                &[("DR_REGION", "us-west-2"), ("DR_BUCKET", "dr")],
                "DR_KMS_KEY_ARN",
            ),
            (
                &[
                    ("DR_REGION", "eu-west-1"),
                    ("DR_BUCKET", "dr"),
                    ("DR_KMS_KEY_ARN", key),
                ],
                "DR_KMS_KEY_ARN",
            ),
            (
                &[
                    ("DR_REGION", "us-west-2"),
                    ("DR_BUCKET", "dr"),
                    ("DR_KMS_KEY_ARN", key),
                    ("DR_ACCOUNT_ID", "12345"),
                ],
                "DR_ACCOUNT_ID",
            ),
        ];
        for (vars, expected) in cases {
            let mut env: HashMap<&str, &str> = base.into_iter().collect();
            env.extend(vars.iter().copied());
            let var = match SnapshotTriggerConfig::from_env(&env).unwrap_err() {
                ConfigError::Missing { var } | ConfigError::Invalid { var, .. } => var,
            };
            assert_eq!(var, expected, "{vars:?}");
        }
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
