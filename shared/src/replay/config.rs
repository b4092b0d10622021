//! dead-letter-replay's configuration, read once at cold start.

use crate::config::{ConfigError, Env, EnvSource};
use crate::postgres::{PgBounds, TlsMode};
use crate::settings;
use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// `PROBE_METHOD`: HEAD (default), GET or OPTIONS.
    pub method: String,
    /// `PROBE_PATH`: replaces the endpoint URL's path (and drops its query) when set.
    pub path: Option<String>,
    pub timeout_ms: u32,
    pub concurrency: u32,
    /// `PROBE_ALLOW_CIDRS`: addresses probed even though they are not public.
    pub allow: Vec<IpNet>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            method: const { settings::PROBE_METHOD.default_text() }.to_owned(),
            path: None,
            timeout_ms: const { settings::PROBE_TIMEOUT_MS.default_number() },
            concurrency: const { settings::PROBE_CONCURRENCY.default_number() },
            allow: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedriveConfig {
    /// `REDRIVE_RATE_PER_SECOND`: `MaxNumberOfMessagesPerSecond` of a native move task (1..=500).
    pub rate_per_second: u32,
    /// `REDRIVE_VISIBILITY_TIMEOUT_SECONDS`: how long a received DLQ message stays hidden while the
    /// filtered redrive decides on it.
    pub visibility_timeout_seconds: u32,
    /// `REDRIVE_MAX_MESSAGES`: the most messages one filtered redrive invocation handles.
    pub max_messages: u32,
    /// `REDRIVE_WAIT_SECONDS`: long-poll wait of each receive (0..=20).
    pub wait_seconds: u32,
}

impl Default for RedriveConfig {
    fn default() -> Self {
        Self {
            rate_per_second: const { settings::REDRIVE_RATE_PER_SECOND.default_number() },
            visibility_timeout_seconds: const {
                settings::REDRIVE_VISIBILITY_TIMEOUT_SECONDS.default_number()
            },
            max_messages: const { settings::REDRIVE_MAX_MESSAGES.default_number() },
            wait_seconds: const { settings::REDRIVE_WAIT_SECONDS.default_number() },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayConfig {
    pub backup_bucket: String,
    /// `REPLAY_DATABASE_SECRET_ID`, else `SOURCE_DATABASE_SECRET_ID`.
    pub database_secret_id: String,
    pub tls: TlsMode,
    /// `PG_CONNECT_TIMEOUT_MS`, `PG_HANDSHAKE_TIMEOUT_MS`, `PG_STATEMENT_TIMEOUT_MS` (default
    /// 120000 here), `PG_KEEPALIVE_IDLE_SECONDS`.
    pub pg_bounds: PgBounds,
    pub probe: ProbeConfig,
    pub batch_size: u32,
    pub max_deliveries: u32,
    pub audit_retention_days: u32,
    pub audit_prefix: String,
    pub s3_force_path_style: bool,
    pub redrive: RedriveConfig,
    /// `STAGING_REDIS_URL`: the staging Redis that `flush` may empty (no password in it locally;
    /// in AWS, the URL with its AUTH token comes from `STAGING_REDIS_SECRET_ID`).
    pub staging_redis_url: Option<String>,
    pub staging_redis_secret_id: Option<String>,
    /// `REDIS_QUEUE_PATTERNS`: the key patterns (SCAN MATCH) of the queue keys.
    pub redis_queue_patterns: Vec<String>,
}

fn invalid(var: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        reason: reason.into(),
    }
}

pub fn parse_cidrs(var: &'static str, raw: &str) -> Result<Vec<IpNet>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|e| invalid(var, format!("{s:?} is not a CIDR: {e}")))
        })
        .collect()
}

impl ReplayConfig {
    pub fn from_env(source: &dyn EnvSource) -> Result<Self, ConfigError> {
        let env = Env(source);
        let backup_bucket = env.require(&settings::BACKUP_BUCKET)?;
        let database_secret_id = match env.text(&settings::REPLAY_DATABASE_SECRET_ID) {
            Some(id) => id,
            None => env.require(&settings::SOURCE_DATABASE_SECRET_ID_REPLAY)?,
        };
        let method = env
            .text_or_default(&settings::PROBE_METHOD)?
            .to_ascii_uppercase();
        if !matches!(method.as_str(), "HEAD" | "GET" | "OPTIONS") {
            return Err(invalid(
                settings::PROBE_METHOD.name,
                format!("{method:?} is not HEAD, GET or OPTIONS"),
            ));
        }
        let path = env.text(&settings::PROBE_PATH);
        if let Some(p) = &path
            && (!p.starts_with('/') || p.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(invalid(
                settings::PROBE_PATH.name,
                format!("{p:?} must start with '/' and contain no spaces"),
            ));
        }
        let allow = match env.text(&settings::PROBE_ALLOW_CIDRS) {
            Some(raw) => parse_cidrs(settings::PROBE_ALLOW_CIDRS.name, &raw)?,
            None => Vec::new(),
        };
        let probe = ProbeConfig {
            method,
            path,
            timeout_ms: env.number(&settings::PROBE_TIMEOUT_MS)?,
            concurrency: env.number(&settings::PROBE_CONCURRENCY)?,
            allow,
        };
        let redrive = RedriveConfig {
            rate_per_second: env.number(&settings::REDRIVE_RATE_PER_SECOND)?,
            visibility_timeout_seconds: env
                .number(&settings::REDRIVE_VISIBILITY_TIMEOUT_SECONDS)?,
            max_messages: env.number(&settings::REDRIVE_MAX_MESSAGES)?,
            wait_seconds: env.number(&settings::REDRIVE_WAIT_SECONDS)?,
        };
        let redis_queue_patterns = env.list(&settings::REDIS_QUEUE_PATTERNS);
        if redis_queue_patterns.iter().any(|p| p == "*") {
            return Err(invalid(
                settings::REDIS_QUEUE_PATTERNS.name,
                "\"*\" would match every key; name the queue keys",
            ));
        }
        Ok(Self {
            backup_bucket,
            database_secret_id,
            tls: TlsMode::from_env(&env)?,
            pg_bounds: PgBounds::from_env(&env, &settings::PG_STATEMENT_TIMEOUT_MS_REPLAY)?,
            probe,
            batch_size: env.number(&settings::REPLAY_BATCH_SIZE)?,
            max_deliveries: env.number(&settings::REPLAY_MAX_DELIVERIES)?,
            audit_retention_days: env.number(&settings::AUDIT_RETENTION_DAYS)?,
            audit_prefix: "replays/".to_owned(),
            s3_force_path_style: env.switch(&settings::S3_FORCE_PATH_STYLE)?,
            redrive,
            staging_redis_url: env.text(&settings::STAGING_REDIS_URL),
            staging_redis_secret_id: env.text(&settings::STAGING_REDIS_SECRET_ID),
            redis_queue_patterns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn base() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("BACKUP_BUCKET", "b"),
            ("SOURCE_DATABASE_SECRET_ID", "src"),
            ("PG_TLS", "disable"),
        ])
    }

    #[test]
    fn defaults_and_the_database_secret() {
        let config = ReplayConfig::from_env(&base()).unwrap();
        assert_eq!(config.database_secret_id, "src");
        assert_eq!(config.probe, ProbeConfig::default());
        assert_eq!(
            (config.batch_size, config.audit_retention_days),
            (5_000, 365)
        );
        let mut env = base();
        env.insert("REPLAY_DATABASE_SECRET_ID", "replay");
        env.insert("PROBE_ALLOW_CIDRS", "127.0.0.0/8, ::1");
        let config = ReplayConfig::from_env(&env).unwrap();
        assert_eq!(config.database_secret_id, "replay");
        assert_eq!(config.probe.allow.len(), 2);
    }

    #[test]
    fn names_the_bad_variable() {
        for (var, value) in [
            ("PROBE_METHOD", "DELETE"),
            ("PROBE_PATH", "health"),
            ("PROBE_ALLOW_CIDRS", "10.0.0.0/33"),
            ("PROBE_CONCURRENCY", "0"),
            ("REDIS_QUEUE_PATTERNS", "queue:*,*"),
            ("REDRIVE_RATE_PER_SECOND", "501"),
        ] {
            let mut env = base();
            env.insert(var, value);
            match ReplayConfig::from_env(&env) {
                Err(ConfigError::Invalid { var: named, .. }) => assert_eq!(named, var),
                other => panic!("{var}={value}: {other:?}"),
            }
        }
        let env: HashMap<&str, &str> = HashMap::from([("BACKUP_BUCKET", "b")]);
        assert_eq!(
            ReplayConfig::from_env(&env),
            Err(ConfigError::Missing {
                var: "SOURCE_DATABASE_SECRET_ID"
            })
        );
    }
}
