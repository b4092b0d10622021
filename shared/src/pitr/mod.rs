//! pitr-restore: restore the source to a point in time into a new staging instance, rotate its
//! credentials, smoke-test it and tear it down (runbook: PostgreSQL steps 2 and 3).

pub mod cache;
pub mod config;
pub mod rds;
pub mod smoke;

use crate::aws_error::AwsCallError;
use crate::catalyst_db::{self, CatalystDbError};
use crate::drill_id::DrillId;
use crate::error_kind::ErrorKind;
use crate::input::{InputError, decode, format_time, parse_time};
use crate::output::to_json;
use crate::postgres::{PgConnectError, SecretStore, TlsMode, connect_bounded};
use crate::restore_engine::{
    BackupSnapshot, EngineError, RestoreEngine, RestoreRequest, RestoreWindow, StagingInstance,
    StagingState,
};
use crate::staging_secret::{self, StagingSecret};
use crate::tags;
use config::{EngineConfig, PitrConfig};
use serde::{Deserialize, Serialize};
use smoke::CheckResult;
use std::sync::Arc;
use time::OffsetDateTime;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum PitrEvent {
    /// Restore the source to `target_time` (RFC 3339; absent: the latest restorable time).
    Start {
        drill_id: DrillId,
        #[serde(default)]
        target_time: Option<String>,
        #[serde(default)]
        target_id: Option<String>,
    },
    /// Restore a catalyst-dr backup snapshot (`snapshot_id`; absent: the newest available one)
    /// into a new staging instance.
    RestoreSnapshot {
        drill_id: DrillId,
        #[serde(default)]
        snapshot_id: Option<String>,
        #[serde(default)]
        target_id: Option<String>,
    },
    /// Create an empty database marked as this drill's staging on its staging instance (after
    /// `rotate-credentials`), the target of a logical restore; the instance's teardown drops it.
    StagingDatabase { drill_id: DrillId, database: String },
    Status {
        drill_id: DrillId,
        #[serde(default)]
        target_id: Option<String>,
        #[serde(default)]
        poll: u32,
    },
    RotateCredentials {
        drill_id: DrillId,
        #[serde(default)]
        target_id: Option<String>,
    },
    Smoke {
        drill_id: DrillId,
        /// Another database of the staging instance (one `staging-database` created).
        #[serde(default)]
        database: Option<String>,
    },
    Teardown {
        drill_id: DrillId,
        #[serde(default)]
        target_id: Option<String>,
    },
    /// One step of the drill's staging cache restore from its cache snapshot (`snapshot_id`, the
    /// baseline's); polled until `available`, when the cache is marked and its URL published.
    CacheRestore {
        drill_id: DrillId,
        #[serde(default)]
        snapshot_id: Option<String>,
        #[serde(default)]
        poll: u32,
    },
    /// The source's restorable window, and whether it already covers `instant` (RDS's latest
    /// restorable time trails the present by minutes: a drill waits for it to pass its baseline).
    Window {
        #[serde(default)]
        instant: Option<String>,
        #[serde(default)]
        poll: u32,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum PitrError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Secret(#[from] AwsCallError),
    #[error(transparent)]
    Connect(#[from] PgConnectError),
    #[error(transparent)]
    Database(#[from] CatalystDbError),
    #[error(transparent)]
    Cache(#[from] crate::cache_engine::CacheEngineError),
    #[error("refusing to act on {target_id}: {reason}")]
    Refused { target_id: String, reason: String },
    #[error("no catalyst-dr backup snapshot of {source_id} to restore: {reason}")]
    NoBackupSnapshot { source_id: String, reason: String },
    #[error("staging instance {target_id} does not exist")]
    NotFound { target_id: String },
    #[error("staging instance {target_id} is {status}, not available yet")]
    NotReady { target_id: String, status: String },
    #[error(
        "the staging secret holds the credentials of drill {holder}, whose staging copy {holder_target} still exists: drill {drill_id} waits until it is torn down"
    )]
    StagingBusy {
        drill_id: String,
        holder: String,
        holder_target: String,
    },
    #[error("the new credentials of {target_id} are not accepted yet")]
    CredentialsNotApplied {
        target_id: String,
        #[source]
        source: PgConnectError,
    },
    #[error("smoke tests failed on {target_id}: {}", failed_summary(.checks))]
    SmokeFailed {
        target_id: String,
        checks: Vec<CheckResult>,
    },
}

fn failed_summary(checks: &[CheckResult]) -> String {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    let detail = serde_json::to_string(checks).unwrap_or_default();
    format!("{}; all checks: {detail}", failed.join("; "))
}

impl PitrError {
    /// Stable names for Step Functions `Retry`/`Catch`. `StagingNotReady` and
    /// `CredentialsNotYetApplied` are worth retrying; `RestoreRefused` never is.
    pub fn error_type(&self) -> ErrorKind {
        match self {
            Self::Input(_) => ErrorKind::InvalidInput,
            Self::Engine(e) => e.error_type(),
            Self::Secret(e) => e.error_type(),
            Self::Connect(e) => e.error_type(),
            Self::Database(e) => e.error_type(),
            Self::Cache(e) => e.error_type(),
            Self::Refused { .. } => ErrorKind::RestoreRefused,
            Self::NotFound { .. } => ErrorKind::StagingNotFound,
            Self::NoBackupSnapshot { .. } => ErrorKind::NoBackupSnapshot,
            Self::NotReady { .. } => ErrorKind::StagingNotReady,
            Self::CredentialsNotApplied { .. } => ErrorKind::CredentialsNotYetApplied,
            Self::StagingBusy { .. } => ErrorKind::StagingBusy,
            Self::SmokeFailed { .. } => ErrorKind::SmokeFailed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartResult {
    pub drill_id: String,
    pub target_id: String,
    pub source_id: String,
    /// What was asked for: a time, or `latest`.
    pub requested: String,
    /// The point in time the staging instance is restored to.
    pub restore_time: String,
    pub window: RestoreWindow,
    pub started_at: String,
    /// True when an earlier attempt had already started this restore.
    pub reused: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotStartResult {
    pub drill_id: String,
    pub target_id: String,
    pub source_id: String,
    /// What was asked for: a snapshot id, or `newest`.
    pub requested: String,
    pub snapshot: BackupSnapshot,
    /// The point in time the staging instance holds: when the snapshot was taken.
    pub restore_time: Option<String>,
    pub started_at: String,
    /// True when an earlier attempt had already started this restore.
    pub reused: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagingDatabaseResult {
    pub drill_id: String,
    pub target_id: String,
    pub database: String,
    /// The staging secret: its credentials reach `database` too.
    pub secret_id: String,
    /// False when a retry found it already created.
    pub created: bool,
    pub completed_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResult {
    pub drill_id: String,
    pub instance: StagingInstance,
    pub state: StagingState,
    pub poll: u32,
    pub checked_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RotateResult {
    pub drill_id: String,
    pub target_id: String,
    pub secret_id: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub dbname: String,
    /// False when a retry found this drill's password already stored and reused it.
    pub new_password: bool,
    pub verified_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmokeResult {
    pub drill_id: String,
    pub target_id: String,
    pub passed: bool,
    pub checks: Vec<CheckResult>,
    pub completed_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowResult {
    pub window: RestoreWindow,
    /// How far the latest restorable time trails the present.
    pub lag_seconds: f64,
    /// Whether the window reaches the instant asked about (true when none was).
    pub covers: bool,
    pub poll: u32,
    pub checked_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeardownResult {
    pub drill_id: String,
    pub target_id: String,
    /// False when there was nothing left to delete.
    pub deleted: bool,
    /// The staging cache and the drill's cache snapshots (absent: the drill leaves the cache out).
    pub cache: Option<cache::CacheTeardown>,
    pub completed_at: String,
}

/// The function's dependencies, built once per cold start.
pub struct PitrRestore {
    pub config: PitrConfig,
    pub engine: Box<dyn RestoreEngine>,
    pub secrets: Arc<dyn SecretStore>,
    /// Where drills restore the cache; `None`: they leave it out.
    pub cache: Option<Box<dyn crate::cache_engine::CacheEngine>>,
}

impl PitrRestore {
    pub async fn handle(&self, event: serde_json::Value) -> Result<serde_json::Value, PitrError> {
        let event: PitrEvent = decode(event)?;
        let value = match event {
            PitrEvent::Start {
                drill_id,
                target_time,
                target_id,
            } => {
                let target_time = target_time
                    .map(|t| parse_time("target_time", &t))
                    .transpose()?;
                to_json(self.start(&drill_id, target_time, target_id).await?)
            }
            PitrEvent::RestoreSnapshot {
                drill_id,
                snapshot_id,
                target_id,
            } => to_json(
                self.restore_snapshot(&drill_id, snapshot_id, target_id)
                    .await?,
            ),
            PitrEvent::StagingDatabase { drill_id, database } => {
                to_json(self.staging_database(&drill_id, &database).await?)
            }
            PitrEvent::Status {
                drill_id,
                target_id,
                poll,
            } => to_json(self.status(&drill_id, target_id, poll).await?),
            PitrEvent::RotateCredentials {
                drill_id,
                target_id,
            } => to_json(self.rotate_credentials(&drill_id, target_id).await?),
            PitrEvent::Smoke { drill_id, database } => {
                to_json(self.smoke(&drill_id, database.as_deref()).await?)
            }
            PitrEvent::Teardown {
                drill_id,
                target_id,
            } => to_json(self.teardown(&drill_id, target_id).await?),
            PitrEvent::CacheRestore {
                drill_id,
                snapshot_id,
                poll,
            } => to_json(
                self.cache_restore(&drill_id, snapshot_id.as_deref(), poll)
                    .await?,
            ),
            PitrEvent::Window { instant, poll } => {
                let instant = instant.map(|t| parse_time("instant", &t)).transpose()?;
                to_json(self.window(instant, poll).await?)
            }
        };
        Ok(value)
    }

    /// The staging target for a drill, after the guards every action shares: a valid drill id,
    /// the staging prefix, and never the source.
    pub fn target_for(
        &self,
        drill_id: &str,
        target_id: Option<String>,
    ) -> Result<String, PitrError> {
        DrillId::exact(drill_id)?;
        let target_id =
            target_id.unwrap_or_else(|| format!("{}{drill_id}", self.config.staging_prefix));
        let refuse = |reason: String| PitrError::Refused {
            target_id: target_id.clone(),
            reason,
        };
        if target_id == self.engine.source_id() {
            return Err(refuse("it is the source database".into()));
        }
        if !target_id.starts_with(&self.config.staging_prefix) {
            return Err(refuse(format!(
                "staging targets must start with {:?}",
                self.config.staging_prefix
            )));
        }
        crate::config::validate_identifier(&target_id)
            .map_err(|reason| InputError::new("target_id", reason))?;
        Ok(target_id)
    }

    /// An existing target must be this drill's staging instance; anything else is never touched.
    fn require_ours(&self, instance: &StagingInstance, drill_id: &str) -> Result<(), PitrError> {
        if tags::is_staging_of(&instance.tags, drill_id) {
            Ok(())
        } else {
            Err(PitrError::Refused {
                target_id: instance.target_id.clone(),
                reason: format!("it is not tagged as catalyst-dr staging for drill {drill_id}"),
            })
        }
    }

    pub async fn start(
        &self,
        drill_id: &str,
        target_time: Option<OffsetDateTime>,
        target_id: Option<String>,
    ) -> Result<StartResult, PitrError> {
        let target_id = self.target_for(drill_id, target_id)?;
        let started_at = OffsetDateTime::now_utc();
        let existing = self.engine.describe(&target_id).await?;
        if let Some(instance) = &existing {
            self.require_ours(instance, drill_id)?;
        }
        let window = self.engine.restore_window().await?;
        if let Some(t) = target_time
            && (t < window.earliest || t > window.latest)
        {
            return Err(InputError::new(
                "target_time",
                format!(
                    "{} is outside the restorable window {} .. {}",
                    format_time(t),
                    format_time(window.earliest),
                    format_time(window.latest)
                ),
            )
            .into());
        }
        let restore_time = target_time.unwrap_or(window.latest);
        let request = RestoreRequest {
            target_id: target_id.clone(),
            target_time: Some(restore_time)
                .filter(|_| target_time.is_some() || self.config.engine.needs_target_time()),
            tags: tags::staging_tags(drill_id, self.engine.source_id()),
        };
        if existing.is_none() {
            self.engine.start_restore(&request).await?;
        }
        tracing::info!(%drill_id, %target_id, restore_time = %format_time(restore_time), reused = existing.is_some(), "staging restore started");
        Ok(StartResult {
            drill_id: drill_id.to_owned(),
            target_id,
            source_id: self.engine.source_id().to_owned(),
            requested: target_time.map_or_else(|| "latest".to_owned(), format_time),
            restore_time: format_time(restore_time),
            window,
            started_at: format_time(started_at),
            reused: existing.is_some(),
        })
    }

    /// The snapshot a restore test starts from: the named one or the newest available, and
    /// only ever a catalyst-dr backup of the source.
    pub async fn choose_snapshot(
        &self,
        snapshot_id: Option<&str>,
    ) -> Result<BackupSnapshot, PitrError> {
        let source_id = self.engine.source_id().to_owned();
        let snapshots = self.engine.backup_snapshots().await?;
        let no_snapshot = |reason: String| PitrError::NoBackupSnapshot {
            source_id: source_id.clone(),
            reason,
        };
        let ours = |s: &BackupSnapshot| {
            s.source_id == source_id && tags::is_ours(&s.tags, tags::ROLE_BACKUP)
        };
        match snapshot_id {
            Some(id) => {
                let snapshot = snapshots
                    .into_iter()
                    .find(|s| s.snapshot_id == id)
                    .ok_or_else(|| no_snapshot(format!("snapshot {id} does not exist")))?;
                if !ours(&snapshot) {
                    return Err(PitrError::Refused {
                        target_id: id.to_owned(),
                        reason: format!(
                            "it is not a catalyst-dr backup snapshot of {source_id} (tags {}={}, {}={})",
                            tags::CREATED_BY,
                            tags::CREATED_BY_VALUE,
                            tags::ROLE,
                            tags::ROLE_BACKUP
                        ),
                    });
                }
                if snapshot.status != "available" {
                    return Err(no_snapshot(format!(
                        "snapshot {id} is {}, not available",
                        snapshot.status
                    )));
                }
                Ok(snapshot)
            }
            None => snapshots
                .into_iter()
                .filter(|s| ours(s) && s.status == "available" && s.created_at.is_some())
                .max_by_key(|s| s.created_at)
                .ok_or_else(|| no_snapshot("none is available".to_owned())),
        }
    }

    pub async fn restore_snapshot(
        &self,
        drill_id: &str,
        snapshot_id: Option<String>,
        target_id: Option<String>,
    ) -> Result<SnapshotStartResult, PitrError> {
        let target_id = self.target_for(drill_id, target_id)?;
        // Only ever compared with the engine's own list (local base backups start with a digit).
        if let Some(id) = &snapshot_id
            && (id.is_empty()
                || id.len() > 255
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(InputError::new(
                "snapshot_id",
                format!("{id:?} must be 1 to 255 letters, digits or hyphens"),
            )
            .into());
        }
        let started_at = OffsetDateTime::now_utc();
        let existing = self.engine.describe(&target_id).await?;
        if let Some(instance) = &existing {
            self.require_ours(instance, drill_id)?;
        }
        let snapshot = self.choose_snapshot(snapshot_id.as_deref()).await?;
        if existing.is_none() {
            let request = RestoreRequest {
                target_id: target_id.clone(),
                target_time: None,
                tags: tags::staging_tags(drill_id, self.engine.source_id()),
            };
            self.engine
                .start_snapshot_restore(&request, &snapshot)
                .await?;
        }
        tracing::info!(%drill_id, %target_id, snapshot_id = %snapshot.snapshot_id, reused = existing.is_some(), "staging restore from snapshot started");
        Ok(SnapshotStartResult {
            drill_id: drill_id.to_owned(),
            target_id,
            source_id: self.engine.source_id().to_owned(),
            requested: snapshot_id.unwrap_or_else(|| "newest".to_owned()),
            restore_time: snapshot.created_at.map(format_time),
            snapshot,
            started_at: format_time(started_at),
            reused: existing.is_some(),
        })
    }

    /// The staging secret of this drill, as `rotate-credentials` stored it.
    async fn staging_secret(&self, drill_id: &str) -> Result<StagingSecret, PitrError> {
        let text = self
            .secrets
            .current(&self.config.staging_secret_id)
            .await?
            .unwrap_or_default();
        let secret: StagingSecret =
            serde_json::from_str(&text).map_err(|_| PitrError::Refused {
                target_id: self.config.staging_secret_id.clone(),
                reason:
                    "the staging secret holds no staging credentials; run rotate-credentials first"
                        .into(),
            })?;
        if secret.drill_id != drill_id {
            return Err(PitrError::Refused {
                target_id: secret.target_id,
                reason: format!("the staging secret belongs to drill {}", secret.drill_id),
            });
        }
        Ok(secret)
    }

    pub async fn staging_database(
        &self,
        drill_id: &str,
        database: &str,
    ) -> Result<StagingDatabaseResult, PitrError> {
        DrillId::exact(drill_id)?;
        let secret = self.staging_secret(drill_id).await?;
        if database == secret.credentials().dbname {
            return Err(InputError::new(
                "database",
                format!("{database} is the restored database itself"),
            )
            .into());
        }
        // Only on this drill's own staging instance.
        let target_id = self.target_for(drill_id, Some(secret.target_id.clone()))?;
        self.describe_ours(drill_id, &target_id).await?;
        let credentials = secret.credentials();
        let client =
            connect_bounded(&credentials, &self.config.tls, &self.config.pg_bounds).await?;
        let created = catalyst_db::staging::create_database(&client, database).await?;
        let fresh = crate::postgres::DbCredentials {
            dbname: database.to_owned(),
            ..credentials
        };
        let client = connect_bounded(&fresh, &self.config.tls, &self.config.pg_bounds).await?;
        match catalyst_db::staging_marker(&client).await? {
            Some(owner) if owner != drill_id => {
                return Err(PitrError::Refused {
                    target_id: format!("{target_id}/{database}"),
                    reason: format!("it is marked as staging of drill {owner}"),
                });
            }
            Some(_) => {}
            None => catalyst_db::mark_staging(&client, drill_id).await?,
        }
        tracing::info!(%drill_id, %target_id, %database, created, "staging database ready");
        Ok(StagingDatabaseResult {
            drill_id: drill_id.to_owned(),
            target_id,
            database: database.to_owned(),
            secret_id: self.config.staging_secret_id.clone(),
            created,
            completed_at: format_time(OffsetDateTime::now_utc()),
        })
    }

    async fn describe_ours(
        &self,
        drill_id: &str,
        target_id: &str,
    ) -> Result<StagingInstance, PitrError> {
        let instance =
            self.engine
                .describe(target_id)
                .await?
                .ok_or_else(|| PitrError::NotFound {
                    target_id: target_id.to_owned(),
                })?;
        self.require_ours(&instance, drill_id)?;
        Ok(instance)
    }

    pub async fn status(
        &self,
        drill_id: &str,
        target_id: Option<String>,
        poll: u32,
    ) -> Result<StatusResult, PitrError> {
        let target_id = self.target_for(drill_id, target_id)?;
        let instance = self.describe_ours(drill_id, &target_id).await?;
        Ok(StatusResult {
            drill_id: drill_id.to_owned(),
            state: instance.state,
            instance,
            poll: poll.saturating_add(1),
            checked_at: format_time(OffsetDateTime::now_utc()),
        })
    }

    pub async fn rotate_credentials(
        &self,
        drill_id: &str,
        target_id: Option<String>,
    ) -> Result<RotateResult, PitrError> {
        let target_id = self.target_for(drill_id, target_id)?;
        let instance = self.describe_ours(drill_id, &target_id).await?;
        // The restored copy keeps the source's master user; only its password is replaced.
        let (Some(host), Some(port), Some(username), StagingState::Available) = (
            instance.host.clone(),
            instance.port,
            instance.master_username.clone(),
            instance.state,
        ) else {
            return Err(PitrError::NotReady {
                target_id,
                status: instance.status,
            });
        };

        let current = match self.secrets.current(&self.config.staging_secret_id).await? {
            Some(text) => serde_json::from_str::<StagingSecret>(&text).ok(),
            None => None,
        };
        // One secret serves every drill, the restore test and the nightly fan-out's read source:
        // while it names another run's copy that still exists, that run is using it, so this
        // one waits (the state machines retry) rather than take its credentials away.
        if let Some(holder) = current.as_ref().filter(|s| s.drill_id != drill_id)
            && self.engine.describe(&holder.target_id).await?.is_some()
        {
            return Err(PitrError::StagingBusy {
                drill_id: drill_id.to_owned(),
                holder: holder.drill_id.clone(),
                holder_target: holder.target_id.clone(),
            });
        }
        // A retry reuses the password this drill already stored, so none is ever lost.
        let stored = current.filter(|s| s.drill_id == drill_id && s.target_id == target_id);
        let new_password = stored.is_none();
        let password = stored.map_or_else(staging_secret::new_password, |s| s.password);
        let credentials = crate::postgres::DbCredentials {
            host,
            port,
            username: username.clone(),
            password,
            dbname: self.config.database_name.clone(),
        };
        let secret = StagingSecret::new(
            &credentials,
            drill_id,
            &target_id,
            matches!(self.config.tls, TlsMode::VerifyFull { .. }),
        );
        if new_password {
            self.secrets
                .put(
                    &self.config.staging_secret_id,
                    &serde_json::to_string(&secret).expect("plain data serialises"),
                )
                .await?;
        }
        self.engine
            .set_master_password(&target_id, &username, &credentials.password)
            .await?;

        let client = connect_bounded(&credentials, &self.config.tls, &self.config.pg_bounds)
            .await
            .map_err(|source| PitrError::CredentialsNotApplied {
                target_id: target_id.clone(),
                source,
            })?;
        catalyst_db::mark_staging(&client, drill_id).await?;
        tracing::info!(%drill_id, %target_id, new_password, "staging credentials rotated and verified");
        Ok(RotateResult {
            drill_id: drill_id.to_owned(),
            target_id,
            secret_id: self.config.staging_secret_id.clone(),
            host: credentials.host,
            port,
            username,
            dbname: credentials.dbname,
            new_password,
            verified_at: format_time(OffsetDateTime::now_utc()),
        })
    }

    pub async fn smoke(
        &self,
        drill_id: &str,
        database: Option<&str>,
    ) -> Result<SmokeResult, PitrError> {
        DrillId::exact(drill_id)?;
        let secret = self.staging_secret(drill_id).await?;
        let mut credentials = secret.credentials();
        if let Some(database) = database {
            credentials.dbname = database.to_owned();
        }
        let client =
            connect_bounded(&credentials, &self.config.tls, &self.config.pg_bounds).await?;
        if database.is_some()
            && catalyst_db::staging_marker(&client).await?.as_deref() != Some(drill_id)
        {
            return Err(PitrError::Refused {
                target_id: format!("{}/{}", secret.target_id, credentials.dbname),
                reason: format!("it is not marked as staging of drill {drill_id}"),
            });
        }
        let checks = smoke::run_checks(
            &client,
            self.config.smoke_min_users,
            &self.config.health_checks,
        )
        .await;
        if checks.iter().any(|c| !c.passed) {
            return Err(PitrError::SmokeFailed {
                target_id: secret.target_id,
                checks,
            });
        }
        Ok(SmokeResult {
            drill_id: drill_id.to_owned(),
            target_id: secret.target_id,
            passed: true,
            checks,
            completed_at: format_time(OffsetDateTime::now_utc()),
        })
    }

    pub async fn window(
        &self,
        instant: Option<OffsetDateTime>,
        poll: u32,
    ) -> Result<WindowResult, PitrError> {
        let window = self.engine.restore_window().await?;
        let now = OffsetDateTime::now_utc();
        Ok(WindowResult {
            covers: instant.is_none_or(|t| t >= window.earliest && t <= window.latest),
            lag_seconds: (now - window.latest).as_seconds_f64().max(0.0),
            window,
            poll: poll.saturating_add(1),
            checked_at: format_time(now),
        })
    }

    pub async fn teardown(
        &self,
        drill_id: &str,
        target_id: Option<String>,
    ) -> Result<TeardownResult, PitrError> {
        let target_id = self.target_for(drill_id, target_id)?;
        let deleted = match self.engine.describe(&target_id).await? {
            None => false,
            Some(instance) => {
                self.require_ours(&instance, drill_id)?;
                self.engine.delete(&target_id).await?;
                true
            }
        };
        tracing::info!(%drill_id, %target_id, deleted, "staging torn down");
        let cache = self.cache_teardown(drill_id).await?;
        Ok(TeardownResult {
            drill_id: drill_id.to_owned(),
            target_id,
            deleted,
            cache,
            completed_at: format_time(OffsetDateTime::now_utc()),
        })
    }
}

impl PitrRestore {
    pub async fn from_env() -> Result<Self, crate::config::ConfigError> {
        let config = PitrConfig::from_env(&crate::config::ProcessEnv)?;
        let sdk = crate::aws_clients::load_sdk_config().await;
        Ok(Self::new(config, &sdk))
    }

    pub fn new(config: PitrConfig, sdk: &aws_config::SdkConfig) -> Self {
        let secrets = Arc::new(aws_sdk_secretsmanager::Client::new(sdk));
        let engine: Box<dyn RestoreEngine> = match &config.engine {
            EngineConfig::Rds { source, placement } => Box::new(rds::RdsRestoreEngine::new(
                aws_sdk_rds::Client::new(sdk),
                source.clone(),
                placement.clone(),
            )),
            #[cfg(feature = "local-engine")]
            EngineConfig::Local {
                source_id,
                local,
                source,
            } => Box::new(crate::local_pg::restore::LocalRestoreEngine::new(
                local.clone(),
                source_id,
                source.clone(),
                config.pg_bounds,
            )),
        };
        Self {
            cache: crate::cache_engine::build(&config.cache_engine, sdk),
            config,
            engine,
            secrets,
        }
    }
}
