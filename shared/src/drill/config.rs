//! drill-validator's configuration, read once at cold start.

use crate::config::{ConfigError, Env, EnvSource};
use crate::postgres::{PgBounds, TlsMode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillConfig {
    pub source_secret_id: String,
    /// Where pitr-restore publishes the restored copy's credentials.
    pub staging_secret_id: String,
    pub tls: TlsMode,
    /// `PG_CONNECT_TIMEOUT_MS`, `PG_HANDSHAKE_TIMEOUT_MS`, `PG_STATEMENT_TIMEOUT_MS` (default 0: none),
    /// `PG_KEEPALIVE_IDLE_SECONDS`.
    pub pg_bounds: PgBounds,
    pub bucket: String,
    pub report_prefix: String,
    pub report_retention_days: u32,
    pub s3_force_path_style: bool,
    /// Production webhook queue and its dead-letter queue: depths go into the baseline.
    pub webhook_queue_url: Option<String>,
    pub webhook_dlq_url: Option<String>,
    /// The staging queue the drill flushes; its depth is checked after the flush.
    pub staging_queue_url: Option<String>,
    /// The production Redis (cache and queue adapter) and its queue key patterns.
    pub redis_url: Option<String>,
    pub redis_queue_patterns: Vec<String>,
    pub rpo_objective_seconds: u32,
    pub rto_objective_seconds: u32,
    pub lock_timeout_ms: u32,
    /// Failed drills are announced here.
    pub alert_topic_arn: Option<String>,
    /// Names the drill kind in metrics (`quarterly`, `monthly`).
    pub drill_kind: String,
}

impl DrillConfig {
    pub fn from_env(source: &dyn EnvSource) -> Result<Self, ConfigError> {
        let env = Env(source);
        let mut report_prefix = env
            .optional("DRILL_REPORT_PREFIX")
            .unwrap_or_else(|| "drills/".into());
        if !report_prefix.ends_with('/') {
            report_prefix.push('/');
        }
        Ok(Self {
            source_secret_id: env.required("SOURCE_DATABASE_SECRET_ID")?,
            staging_secret_id: env.required("STAGING_SECRET_ID")?,
            tls: TlsMode::from_env(&env)?,
            pg_bounds: PgBounds::from_env(&env, 0)?,
            bucket: env.required("BACKUP_BUCKET")?,
            report_prefix,
            report_retention_days: env.bounded("DRILL_REPORT_RETENTION_DAYS", 400, 1..=36_500)?,
            s3_force_path_style: env.flag("S3_FORCE_PATH_STYLE", false)?,
            webhook_queue_url: env.optional("WEBHOOK_QUEUE_URL"),
            webhook_dlq_url: env.optional("WEBHOOK_DLQ_URL"),
            staging_queue_url: env.optional("STAGING_QUEUE_URL"),
            redis_url: env.optional("DRILL_REDIS_URL"),
            redis_queue_patterns: env
                .optional("REDIS_QUEUE_PATTERNS")
                .map(|p| {
                    p.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            rpo_objective_seconds: env.bounded("RPO_OBJECTIVE_SECONDS", 300, 0..=86_400)?,
            rto_objective_seconds: env.bounded("RTO_OBJECTIVE_SECONDS", 3_600, 1..=604_800)?,
            lock_timeout_ms: env.bounded("BASELINE_LOCK_TIMEOUT_MS", 2_000, 100..=60_000)?,
            alert_topic_arn: env.optional("ALERT_TOPIC_ARN"),
            drill_kind: env
                .optional("DRILL_KIND")
                .unwrap_or_else(|| "quarterly".into()),
        })
    }
}
