//! dead-letter-replay: replay dead-lettered webhook deliveries after probing their endpoints,
//! redrive SQS dead letters, and flush a staging queue on restore (runbook: Webhook replay;
//! Redis (or queue adapter)).

pub mod audit;
pub mod config;
pub mod flush;
pub mod plan;
pub mod probe;
pub mod redrive;
pub mod requeue;
pub mod verify;

use crate::aws_error::AwsCallError;
use crate::catalyst_db::CatalystDbError;
use crate::catalyst_db::deliveries::DeadLetterFilter;
use crate::error_kind::ErrorKind;
use crate::input::{InputError, decode, format_time, parse_time};
use crate::object_store::ObjectStore;
use crate::output::to_json;
use crate::postgres::{PgConnectError, PgConnector, PgTimeout, SecretSource, is_statement_timeout};
use crate::queues::Queues;
use config::ReplayConfig;
use probe::EndpointProbe;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::OffsetDateTime;

/// The window and scope of a replay: the runbook's query, narrowed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterInput {
    /// RFC 3339; `updated_at >= since`. Default: `until - window_hours`.
    #[serde(default)]
    pub since: Option<String>,
    /// RFC 3339; `updated_at < until`. Default: now.
    #[serde(default)]
    pub until: Option<String>,
    /// The window when `since` is not given (default 24, as in the runbook).
    #[serde(default)]
    pub window_hours: Option<u32>,
    #[serde(default)]
    pub subscription_ids: Option<Vec<i64>>,
    #[serde(default)]
    pub limit: Option<u32>,
}

impl FilterInput {
    pub fn resolve(&self, now: OffsetDateTime) -> Result<DeadLetterFilter, InputError> {
        let until = match &self.until {
            Some(t) => parse_time("filter.until", t)?,
            None => now,
        };
        let since = match (&self.since, self.window_hours) {
            (Some(_), Some(_)) => {
                return Err(InputError::new(
                    "filter.window_hours",
                    "give either since or window_hours, not both",
                ));
            }
            (Some(t), None) => parse_time("filter.since", t)?,
            (None, hours) => {
                let hours = hours.unwrap_or(24);
                if hours == 0 || hours > 24 * 366 {
                    return Err(InputError::new("filter.window_hours", "must be 1..=8784"));
                }
                until - time::Duration::hours(hours.into())
            }
        };
        if since >= until {
            return Err(InputError::new("filter.since", "must be before until"));
        }
        if let Some(ids) = &self.subscription_ids
            && ids.is_empty()
        {
            return Err(InputError::new(
                "filter.subscription_ids",
                "must not be empty when given",
            ));
        }
        if self.limit == Some(0) {
            return Err(InputError::new("filter.limit", "must be at least 1"));
        }
        Ok(DeadLetterFilter {
            since,
            until,
            subscription_ids: self.subscription_ids.clone(),
            limit: self.limit.map(i64::from),
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedriveMode {
    /// SQS `StartMessageMoveTask`: every message back to its source queue, rate-limited.
    #[default]
    Native,
    /// Receive, check each delivery, send back only what still needs delivering.
    Filtered,
}

/// The events dead-letter-replay accepts, selected by `action`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum ReplayEvent {
    /// Counts per subscription and endpoint of the matching dead-lettered deliveries. No writes.
    Plan {
        #[serde(default)]
        filter: FilterInput,
        /// A different (read-only) target, such as the drill's staging restore.
        #[serde(default)]
        database_secret_id: Option<String>,
    },
    /// Probe each endpoint, set the deliveries of healthy ones back to `pending`, write the audit.
    Replay {
        replay_id: String,
        #[serde(default)]
        filter: FilterInput,
        #[serde(default)]
        dry_run: bool,
        #[serde(default)]
        max_deliveries: Option<u32>,
        #[serde(default)]
        spread_seconds: u32,
    },
    /// What became of a replay's deliveries, per endpoint.
    Verify {
        replay_id: String,
        #[serde(default)]
        database_secret_id: Option<String>,
    },
    /// Redrive an SQS dead-letter queue.
    Redrive {
        dlq_url: String,
        #[serde(default)]
        mode: RedriveMode,
        /// Filtered mode: the queue to send to (its redrive policy must name the DLQ). Native
        /// mode: optional destination (default: each message's original source).
        #[serde(default)]
        source_queue_url: Option<String>,
        #[serde(default)]
        max_messages: Option<u32>,
        #[serde(default)]
        rate_per_second: Option<u32>,
    },
    /// The DLQ's move tasks (the 10 most recent).
    ListRedriveTasks { dlq_url: String },
    /// Cancel a running move task.
    CancelRedriveTask { task_handle: String },
    /// Flush a staging queue: an SQS queue tagged `catalyst-dr:role=staging`, or the queue keys of
    /// the staging Redis (`redis: true`). `preserve: true` keeps it (replaying stale deliveries is
    /// required).
    Flush {
        #[serde(default)]
        queue_url: Option<String>,
        #[serde(default)]
        redis: bool,
        #[serde(default)]
        preserve: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Aws(#[from] AwsCallError),
    #[error(transparent)]
    Database(#[from] CatalystDbError),
    #[error(transparent)]
    Connect(#[from] PgConnectError),
    #[error(transparent)]
    Timeout(#[from] PgTimeout),
    #[error(
        "{matched} deliveries match, more than max_deliveries {max}; narrow the filter or raise max_deliveries"
    )]
    TooManyDeliveries { matched: u64, max: u32 },
    #[error("no audit record for replay {replay_id} at {key}; run the replay first")]
    AuditNotFound { replay_id: String, key: String },
    #[error("audit record {key} is not a valid replay audit")]
    CorruptAudit {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{target} is not marked as a catalyst-dr staging queue ({marker}); refusing to flush it"
    )]
    NotStaging { target: String, marker: String },
    #[error(
        "the redrive policy of {source_queue} does not name the dead-letter queue {dlq_arn}; refusing to redrive into it"
    )]
    NotTheSourceQueue {
        source_queue: String,
        dlq_arn: String,
    },
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("misconfigured: {0}")]
    Misconfigured(String),
}

impl ReplayError {
    /// Stable names for Step Functions `Retry`/`Catch`.
    pub fn error_type(&self) -> ErrorKind {
        match self {
            Self::Input(_) => ErrorKind::InvalidInput,
            Self::Aws(e) => e.error_type(),
            Self::Database(e) => e.error_type(),
            Self::Connect(e) => e.error_type(),
            Self::Timeout(_) => ErrorKind::DatabaseUnavailable,
            Self::TooManyDeliveries { .. } => ErrorKind::TooManyDeliveries,
            Self::AuditNotFound { .. } => ErrorKind::AuditNotFound,
            Self::CorruptAudit { .. } => ErrorKind::CorruptAudit,
            Self::NotStaging { .. } => ErrorKind::NotStaging,
            Self::NotTheSourceQueue { .. } => ErrorKind::NotTheSourceQueue,
            Self::Redis(_) => ErrorKind::RedisError,
            Self::Misconfigured(_) => ErrorKind::Misconfigured,
        }
    }
}

/// Runs database work under the statement bound: the server cancels a statement at
/// `PG_STATEMENT_TIMEOUT_MS`, and the client stops waiting a little later, for a server that
/// cannot answer at all (frozen, or its host gone without a reset). Either way the error names the
/// bound.
pub(crate) async fn bounded<T, E: Into<ReplayError>>(
    database: &PgConnector,
    operation: &'static str,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, ReplayError> {
    let bounds = *database.bounds();
    let timed_out = || {
        ReplayError::Timeout(PgTimeout::statement(
            operation,
            format!("secret {}", database.secret_id()),
            &bounds,
        ))
    };
    let outcome = match bounds.statement_wait() {
        Some(wait) => tokio::time::timeout(wait, work)
            .await
            .map_err(|_| timed_out())?,
        None => work.await,
    };
    outcome.map_err(|e| match e.into() {
        ReplayError::Database(CatalystDbError::Postgres(pg)) if is_statement_timeout(&pg) => {
            timed_out()
        }
        other => other,
    })
}

/// A replay id: letters, digits, `-` and `_`, 1 to 64 characters (it names S3 keys).
pub fn validate_replay_id(id: &str) -> Result<(), InputError> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(InputError::new(
            "replay_id",
            "must be 1 to 64 letters, digits, '-' or '_'",
        ));
    }
    Ok(())
}

fn validate_secret_id(field: &str, id: &Option<String>) -> Result<(), InputError> {
    match id {
        Some(id) if id.trim().is_empty() => Err(InputError::new(field, "must not be empty")),
        _ => Ok(()),
    }
}

fn validate_queue_url(field: &str, url: &str) -> Result<(), InputError> {
    match url::Url::parse(url) {
        Ok(u)
            if matches!(u.scheme(), "https" | "http")
                && u.path_segments().is_some_and(|s| s.count() >= 2) =>
        {
            Ok(())
        }
        _ => Err(InputError::new(
            field,
            format!("{url:?} is not an SQS queue URL"),
        )),
    }
}

/// The function's dependencies, built once per cold start.
pub struct DeadLetterReplay {
    pub config: ReplayConfig,
    pub secrets: Arc<dyn SecretSource>,
    pub database: PgConnector,
    pub probe: Arc<dyn EndpointProbe>,
    pub objects: Box<dyn ObjectStore>,
    pub queues: Arc<dyn Queues>,
}

impl DeadLetterReplay {
    /// Decodes and runs one event. Input is fully validated before any side effect.
    pub async fn handle(&self, event: serde_json::Value) -> Result<serde_json::Value, ReplayError> {
        let event: ReplayEvent = decode(event)?;
        let now = OffsetDateTime::now_utc();
        Ok(match event {
            ReplayEvent::Plan {
                filter,
                database_secret_id,
            } => {
                let filter = filter.resolve(now)?;
                validate_secret_id("database_secret_id", &database_secret_id)?;
                let other = self.other_database(database_secret_id);
                let connector = other.as_ref().unwrap_or(&self.database);
                let client = connector.connect().await?;
                to_json(
                    bounded(
                        connector,
                        "plan",
                        plan::plan(&client, &filter, connector.secret_id()),
                    )
                    .await?,
                )
            }
            ReplayEvent::Replay {
                replay_id,
                filter,
                dry_run,
                max_deliveries,
                spread_seconds,
            } => {
                validate_replay_id(&replay_id)?;
                let filter = filter.resolve(now)?;
                if spread_seconds > 86_400 {
                    return Err(InputError::new("spread_seconds", "must be at most 86400").into());
                }
                if max_deliveries == Some(0) {
                    return Err(InputError::new("max_deliveries", "must be at least 1").into());
                }
                let request = requeue::ReplayRequest {
                    replay_id,
                    filter,
                    dry_run,
                    max_deliveries: max_deliveries.unwrap_or(self.config.max_deliveries),
                    spread_seconds,
                };
                to_json(requeue::run(self, &request).await?)
            }
            ReplayEvent::Verify {
                replay_id,
                database_secret_id,
            } => {
                validate_replay_id(&replay_id)?;
                validate_secret_id("database_secret_id", &database_secret_id)?;
                let audit = requeue::read_audit(self, &replay_id)
                    .await?
                    .ok_or_else(|| ReplayError::AuditNotFound {
                        key: audit::json_key(&self.config.audit_prefix, &replay_id),
                        replay_id: replay_id.clone(),
                    })?;
                let other = self.other_database(database_secret_id);
                let connector = other.as_ref().unwrap_or(&self.database);
                let client = connector.connect().await?;
                to_json(bounded(connector, "verify", verify::verify(&client, &audit)).await?)
            }
            ReplayEvent::Redrive {
                dlq_url,
                mode,
                source_queue_url,
                max_messages,
                rate_per_second,
            } => {
                validate_queue_url("dlq_url", &dlq_url)?;
                if let Some(url) = &source_queue_url {
                    validate_queue_url("source_queue_url", url)?;
                }
                if rate_per_second.is_some_and(|r| !(1..=500).contains(&r)) {
                    return Err(InputError::new("rate_per_second", "must be 1..=500").into());
                }
                if max_messages == Some(0) {
                    return Err(InputError::new("max_messages", "must be at least 1").into());
                }
                match mode {
                    RedriveMode::Native => {
                        let rate = rate_per_second.unwrap_or(self.config.redrive.rate_per_second);
                        to_json(
                            redrive::start_native(
                                self.queues.as_ref(),
                                &dlq_url,
                                source_queue_url.as_deref(),
                                rate,
                            )
                            .await?,
                        )
                    }
                    RedriveMode::Filtered => {
                        let Some(source) = source_queue_url else {
                            return Err(InputError::new(
                                "source_queue_url",
                                "is required in filtered mode",
                            )
                            .into());
                        };
                        let client = self.database.connect().await?;
                        let options = redrive::FilteredOptions {
                            max_messages: max_messages.unwrap_or(self.config.redrive.max_messages),
                            visibility_timeout_seconds: self
                                .config
                                .redrive
                                .visibility_timeout_seconds,
                            wait_seconds: self.config.redrive.wait_seconds,
                            probe_concurrency: self.config.probe.concurrency,
                            statement_wait: self.database.bounds().statement_wait(),
                        };
                        to_json(
                            redrive::filtered(
                                self.queues.as_ref(),
                                &client,
                                self.probe.clone(),
                                &dlq_url,
                                &source,
                                &options,
                            )
                            .await?,
                        )
                    }
                }
            }
            ReplayEvent::ListRedriveTasks { dlq_url } => {
                validate_queue_url("dlq_url", &dlq_url)?;
                to_json(redrive::list_native(self.queues.as_ref(), &dlq_url).await?)
            }
            ReplayEvent::CancelRedriveTask { task_handle } => {
                if task_handle.trim().is_empty() {
                    return Err(InputError::new("task_handle", "must not be empty").into());
                }
                to_json(redrive::cancel_native(self.queues.as_ref(), &task_handle).await?)
            }
            ReplayEvent::Flush {
                queue_url,
                redis,
                preserve,
            } => {
                if let Some(url) = &queue_url {
                    validate_queue_url("queue_url", url)?;
                }
                let target = match (queue_url, redis) {
                    (Some(url), false) => flush::FlushTarget::Queue(url),
                    (None, true) => flush::FlushTarget::Redis,
                    _ => {
                        return Err(InputError::new(
                            "queue_url",
                            "give exactly one of queue_url or redis: true",
                        )
                        .into());
                    }
                };
                to_json(flush::flush(self, target, preserve).await?)
            }
        })
    }

    /// A connector for another database (read-only actions only), or `None` for the configured one.
    fn other_database(&self, secret_id: Option<String>) -> Option<PgConnector> {
        secret_id
            .filter(|id| id != self.database.secret_id())
            .map(|id| {
                PgConnector::new(self.secrets.clone(), id, self.config.tls.clone())
                    .with_bounds(self.config.pg_bounds)
            })
    }

    pub fn audit_retain_until(&self, now: OffsetDateTime) -> OffsetDateTime {
        now + time::Duration::days(self.config.audit_retention_days.into())
    }
}

pub(crate) fn now_text() -> String {
    format_time(OffsetDateTime::now_utc())
}

impl DeadLetterReplay {
    /// Wires the function from the process environment and the standard AWS configuration chain.
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        let config = ReplayConfig::from_env(&crate::config::ProcessEnv)?;
        let sdk = crate::aws_clients::load_sdk_config().await;
        Self::new(config, &sdk)
    }

    pub fn new(
        config: ReplayConfig,
        sdk: &aws_config::SdkConfig,
    ) -> Result<Self, crate::config::ConfigError> {
        let secrets: Arc<dyn SecretSource> = Arc::new(aws_sdk_secretsmanager::Client::new(sdk));
        let probe = probe::HttpProbe::new(config.probe.clone()).map_err(|e| {
            crate::config::ConfigError::Invalid {
                var: crate::settings::PROBE_TIMEOUT_MS.name,
                reason: format!("HTTP client: {e}"),
            }
        })?;
        let objects = crate::object_store::S3Objects::new(
            crate::aws_clients::s3_client(sdk, config.s3_force_path_style),
            &config.backup_bucket,
        );
        Ok(Self {
            database: PgConnector::new(
                secrets.clone(),
                config.database_secret_id.clone(),
                config.tls.clone(),
            )
            .with_bounds(config.pg_bounds),
            secrets,
            probe: Arc::new(probe),
            objects: Box::new(objects),
            queues: Arc::new(crate::queues::SqsQueues::new(aws_sdk_sqs::Client::new(sdk))),
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_name_the_bad_field() {
        let now = OffsetDateTime::now_utc();
        let ok = decode::<ReplayEvent>(
            json!({"action": "replay", "replay_id": "inc-42", "filter": {"window_hours": 6}}),
        )
        .unwrap();
        assert!(matches!(ok, ReplayEvent::Replay { .. }));
        let err = decode::<ReplayEvent>(
            json!({"action": "replay", "replay_id": "x", "filter": {"hours": 6}}),
        )
        .unwrap_err();
        assert_eq!(err.field, "filter.hours");
        let err =
            decode::<ReplayEvent>(json!({"action": "flush", "queue_url": "q", "preserve": "no"}))
                .unwrap_err();
        assert_eq!(err.field, "preserve");
        let filter = FilterInput {
            since: Some("2026-11-26T00:00:00Z".into()),
            window_hours: Some(3),
            ..Default::default()
        };
        assert_eq!(
            filter.resolve(now).unwrap_err().field,
            "filter.window_hours"
        );
        let filter = FilterInput {
            since: Some("2026-11-26T00:00:00Z".into()),
            until: Some("2026-11-25T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(filter.resolve(now).unwrap_err().field, "filter.since");
        let resolved = FilterInput::default().resolve(now).unwrap();
        assert_eq!(resolved.until - resolved.since, time::Duration::hours(24));
    }

    #[test]
    fn replay_ids_name_s3_keys_safely() {
        assert!(validate_replay_id("INC-2026_11").is_ok());
        for bad in ["", "../x", "a b", "a/b", &"x".repeat(65)] {
            assert!(validate_replay_id(bad).is_err(), "{bad}");
        }
    }
}
