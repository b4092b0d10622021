//! pitr-restore's configuration, read once at cold start.

use super::smoke::HealthCheck;
use crate::cache_engine::CacheEngineConfig;
use crate::config::{ConfigError, Env, EnvSource, validate_identifier};
#[cfg(feature = "local-engine")]
use crate::local_pg::LocalPgConfig;
use crate::pitr::rds::StagingPlacement;
#[cfg(feature = "local-engine")]
use crate::postgres::DbCredentials;
use crate::postgres::{PgBounds, TlsMode};
use crate::rds::DbSource;
use crate::settings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineConfig {
    Rds {
        source: DbSource,
        placement: StagingPlacement,
    },
    #[cfg(feature = "local-engine")]
    Local {
        source_id: String,
        local: LocalPgConfig,
        /// The local source cluster, read directly as RDS reads its own storage.
        source: DbCredentials,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PitrConfig {
    pub engine: EngineConfig,
    /// Every staging target id starts with this; nothing else is ever restored into or deleted.
    pub staging_prefix: String,
    /// The secret that receives the staging database's credentials and `DATABASE_URL`.
    pub staging_secret_id: String,
    /// The database the staging copy serves. pitr-restore reads no source secret: the staging
    /// instance's master user comes from the restore itself.
    pub database_name: String,
    pub tls: TlsMode,
    /// `PG_CONNECT_TIMEOUT_MS`, `PG_HANDSHAKE_TIMEOUT_MS`, `PG_STATEMENT_TIMEOUT_MS` (default 0: none),
    /// `PG_KEEPALIVE_IDLE_SECONDS`.
    pub pg_bounds: PgBounds,
    pub health_checks: Vec<HealthCheck>,
    pub smoke_min_users: u64,
    /// Where drills restore the cache, and the secret that receives the staging cache's URL.
    pub cache_engine: CacheEngineConfig,
    pub staging_cache_secret_id: Option<String>,
}

impl PitrConfig {
    pub fn from_env(source: &dyn EnvSource) -> Result<Self, ConfigError> {
        let env = Env(source);
        let engine = match env.text_or_default(&settings::RESTORE_ENGINE)?.as_str() {
            "rds" => {
                let source =
                    match env.either(&settings::RDS_INSTANCE_ID, &settings::RDS_CLUSTER_ID)? {
                        Some((var, id)) if var == settings::RDS_INSTANCE_ID.name => {
                            DbSource::Instance(checked(var, id)?)
                        }
                        Some((var, id)) => DbSource::Cluster(checked(var, id)?),
                        None => {
                            return Err(ConfigError::Missing {
                                var: settings::RDS_INSTANCE_ID.name,
                            });
                        }
                    };
                let security_group_ids = env.list(&settings::STAGING_SECURITY_GROUP_IDS);
                if security_group_ids.is_empty() {
                    // Set but blank (only commas) is invalid; unset is missing.
                    env.require(&settings::STAGING_SECURITY_GROUP_IDS)?;
                    return Err(ConfigError::Invalid {
                        var: settings::STAGING_SECURITY_GROUP_IDS.name,
                        reason: "no security group id".into(),
                    });
                }
                let placement = StagingPlacement {
                    subnet_group: env.require(&settings::STAGING_SUBNET_GROUP)?,
                    security_group_ids,
                    parameter_group: env.text(&settings::STAGING_PARAMETER_GROUP),
                    instance_class: env.text(&settings::STAGING_INSTANCE_CLASS),
                };
                if matches!(source, DbSource::Cluster(_)) && placement.instance_class.is_none() {
                    return Err(ConfigError::Missing {
                        var: settings::STAGING_INSTANCE_CLASS.name,
                    });
                }
                EngineConfig::Rds { source, placement }
            }
            #[cfg(feature = "local-engine")]
            "local" => EngineConfig::Local {
                source_id: checked(
                    settings::LOCAL_SOURCE_ID.name,
                    env.text_or_default(&settings::LOCAL_SOURCE_ID)?,
                )?,
                local: LocalPgConfig::from_env(&env)?,
                source: DbCredentials::from_url(
                    settings::LOCAL_SOURCE_DATABASE_URL.name,
                    &env.require(&settings::LOCAL_SOURCE_DATABASE_URL)?,
                )?,
            },
            #[cfg(not(feature = "local-engine"))]
            "local" => {
                return Err(ConfigError::Invalid {
                    var: settings::RESTORE_ENGINE.name,
                    reason: "local: this build leaves out the local engine (feature local-engine)"
                        .into(),
                });
            }
            other => {
                return Err(ConfigError::Invalid {
                    var: settings::RESTORE_ENGINE.name,
                    reason: format!("{other:?} is not rds or local"),
                });
            }
        };
        let staging_prefix = env.text_or_default(&settings::STAGING_PREFIX)?;
        if staging_prefix.len() < 4
            || validate_identifier(staging_prefix.trim_end_matches('-')).is_err()
        {
            return Err(ConfigError::Invalid {
                var: settings::STAGING_PREFIX.name,
                reason: format!(
                    "{staging_prefix:?} is not an identifier prefix of at least 4 characters"
                ),
            });
        }
        let cache_engine = CacheEngineConfig::from_env(&env, true)?;
        let staging_cache_secret_id = env.text(&settings::STAGING_CACHE_SECRET_ID);
        if !cache_engine.is_none() && staging_cache_secret_id.is_none() {
            return Err(ConfigError::Missing {
                var: settings::STAGING_CACHE_SECRET_ID.name,
            });
        }
        let health_checks = serde_json::from_str(
            &env.text_or_default(&settings::SMOKE_HEALTH_CHECKS)?,
        )
        .map_err(|e| ConfigError::Invalid {
            var: settings::SMOKE_HEALTH_CHECKS.name,
            reason: format!("not a JSON list of {{name, url, expect_status, timeout_ms}}: {e}"),
        })?;
        Ok(Self {
            engine,
            staging_prefix,
            staging_secret_id: env.require(&settings::STAGING_SECRET_ID)?,
            database_name: env.text_or_default(&settings::SOURCE_DATABASE_NAME)?,
            tls: TlsMode::from_env(&env)?,
            pg_bounds: PgBounds::from_env(&env, &settings::PG_STATEMENT_TIMEOUT_MS)?,
            health_checks,
            smoke_min_users: env.count(&settings::SMOKE_MIN_USERS)?,
            staging_cache_secret_id,
            cache_engine,
        })
    }

    pub fn source_id(&self) -> &str {
        match &self.engine {
            EngineConfig::Rds {
                source: DbSource::Instance(id) | DbSource::Cluster(id),
                ..
            } => id,
            #[cfg(feature = "local-engine")]
            EngineConfig::Local { source_id, .. } => source_id,
        }
    }
}

impl EngineConfig {
    /// The local engine restores to an exact time; RDS to the latest it has when none is asked.
    pub fn needs_target_time(&self) -> bool {
        match self {
            Self::Rds { .. } => false,
            #[cfg(feature = "local-engine")]
            Self::Local { .. } => true,
        }
    }
}

fn checked(var: &'static str, value: String) -> Result<String, ConfigError> {
    validate_identifier(&value).map_err(|reason| ConfigError::Invalid { var, reason })?;
    Ok(value)
}
