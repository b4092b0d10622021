//! drill-validator's configuration, read once at cold start.

use crate::cache_engine::CacheEngineConfig;
use crate::config::{ConfigError, Env, EnvSource};
use crate::postgres::{PgBounds, TlsMode};
use crate::settings;

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
    /// Where the drill snapshots the cache and how it reaches the production Redis (its URL, or
    /// the secret holding it) to read the queue state that goes with the snapshot.
    pub cache_engine: CacheEngineConfig,
    pub redis_url: Option<String>,
    pub redis_secret_id: Option<String>,
    /// Where pitr-restore publishes the staging cache's URL.
    pub staging_cache_secret_id: Option<String>,
    pub redis_queue_patterns: Vec<String>,
    pub rpo_objective_seconds: u32,
    pub rto_objective_seconds: u32,
    pub lock_timeout_ms: u32,
    /// `PARITY_PARALLELISM`: connections that fingerprint the tables at once.
    pub parity_parallelism: u32,
    /// The block ranges `parity-plan` splits the restored tables into (`parity::RANGE_BLOCKS`),
    /// and how many ranges one `parity-batch` reads (`PARITY_BATCH_RANGES`, 4 GiB).
    pub parity_range_blocks: u64,
    pub parity_batch_ranges: usize,
    /// `BASELINE_FANOUT_THRESHOLD_GIB`: a larger source's baseline is read by a Map of
    /// invocations in a held snapshot.
    pub baseline_fanout_threshold_bytes: u64,
    /// `BASELINE_HOLD_MINUTES`: how long a fanned-out baseline's snapshot is held at most.
    pub baseline_hold: std::time::Duration,
    /// Failed drills are announced here.
    pub alert_topic_arn: Option<String>,
    /// Names the drill kind in metrics (`quarterly`, `monthly`).
    pub drill_kind: String,
}

impl DrillConfig {
    pub fn from_env(source: &dyn EnvSource) -> Result<Self, ConfigError> {
        let env = Env(source);
        let report_prefix = env.prefix(&settings::DRILL_REPORT_PREFIX)?;
        let cache_engine = CacheEngineConfig::from_env(&env, false)?;
        let redis_url = env.text(&settings::DRILL_REDIS_URL);
        let redis_secret_id = env.text(&settings::DRILL_REDIS_SECRET_ID);
        let staging_cache_secret_id = env.text(&settings::STAGING_CACHE_SECRET_ID);
        if !cache_engine.is_none() {
            if redis_url.is_none() && redis_secret_id.is_none() {
                return Err(ConfigError::Missing {
                    var: settings::DRILL_REDIS_SECRET_ID.name,
                });
            }
            if staging_cache_secret_id.is_none() {
                return Err(ConfigError::Missing {
                    var: settings::STAGING_CACHE_SECRET_ID.name,
                });
            }
        }
        Ok(Self {
            source_secret_id: env.require(&settings::SOURCE_DATABASE_SECRET_ID)?,
            staging_secret_id: env.require(&settings::STAGING_SECRET_ID)?,
            tls: TlsMode::from_env(&env)?,
            pg_bounds: PgBounds::from_env(&env, &settings::PG_STATEMENT_TIMEOUT_MS)?,
            bucket: env.require(&settings::BACKUP_BUCKET)?,
            report_prefix,
            report_retention_days: env.number(&settings::DRILL_REPORT_RETENTION_DAYS)?,
            s3_force_path_style: env.switch(&settings::S3_FORCE_PATH_STYLE)?,
            webhook_queue_url: env.text(&settings::WEBHOOK_QUEUE_URL),
            webhook_dlq_url: env.text(&settings::WEBHOOK_DLQ_URL),
            staging_queue_url: env.text(&settings::STAGING_QUEUE_URL),
            redis_url,
            redis_secret_id,
            staging_cache_secret_id,
            cache_engine,
            redis_queue_patterns: env.list(&settings::REDIS_QUEUE_PATTERNS),
            rpo_objective_seconds: env.number(&settings::RPO_OBJECTIVE_SECONDS)?,
            rto_objective_seconds: env.number(&settings::RTO_OBJECTIVE_SECONDS)?,
            lock_timeout_ms: env.number(&settings::BASELINE_LOCK_TIMEOUT_MS)?,
            parity_parallelism: env.number(&settings::PARITY_PARALLELISM)?,
            parity_range_blocks: crate::catalyst_db::parity::RANGE_BLOCKS,
            parity_batch_ranges: super::PARITY_BATCH_RANGES,
            baseline_fanout_threshold_bytes: u64::from(
                env.number(&settings::BASELINE_FANOUT_THRESHOLD_GIB)?,
            ) << 30,
            baseline_hold: std::time::Duration::from_secs(
                60 * u64::from(env.number(&settings::BASELINE_HOLD_MINUTES)?),
            ),
            alert_topic_arn: env.text(&settings::ALERT_TOPIC_ARN),
            drill_kind: env.text_or_default(&settings::DRILL_KIND)?,
        })
    }
}
