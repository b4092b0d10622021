//! [`RestoreEngine`] on this machine: a base backup copied into a new cluster, WAL replayed from
//! the archive up to the target time, then promoted. Each staging cluster lives in
//! `<staging_dir>/<target_id>/` with `catalyst-dr.json` (its tags and settings), `data/` and
//! `server.log`.

use super::process::{command, free_port, make_dir, run, write_file};
use super::{LocalPgConfig, base_backup};
use crate::catalyst_db::admin;
use crate::input::format_time;
use crate::postgres::{DbCredentials, PgBounds, TlsMode, connect_bounded};
use crate::restore_engine::{
    BackupSnapshot, EngineError, RestoreEngine, RestoreRequest, RestoreWindow, StagingInstance,
    StagingState,
};
use crate::tags::Tags;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;

const META_FILE: &str = "catalyst-dr.json";
/// Socket paths are limited to about 100 bytes, too few for the staging directory: the clusters
/// share the system's temporary directory, where each port has its own socket.
const SOCKET_DIR: &str = "/tmp";
/// How long a cluster that has not written its pid file yet counts as starting.
const START_GRACE: time::Duration = time::Duration::seconds(60);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StagingMeta {
    target_id: String,
    port: u16,
    master_username: String,
    base_backup: String,
    #[serde(with = "time::serde::rfc3339")]
    target_time: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    started_at: OffsetDateTime,
    tags: Tags,
}

pub struct LocalRestoreEngine {
    config: LocalPgConfig,
    source_id: String,
    /// The local source cluster, read directly (as RDS reads its own storage).
    source: DbCredentials,
    bounds: PgBounds,
}

impl LocalRestoreEngine {
    pub fn new(
        config: LocalPgConfig,
        source_id: impl Into<String>,
        source: DbCredentials,
        bounds: PgBounds,
    ) -> Self {
        Self {
            config,
            source_id: source_id.into(),
            source,
            bounds,
        }
    }

    fn dir(&self, target_id: &str) -> PathBuf {
        self.config.staging_dir.join(target_id)
    }

    async fn meta(&self, target_id: &str) -> Result<Option<StagingMeta>, EngineError> {
        let path = self.dir(target_id).join(META_FILE);
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| EngineError::Local {
                    operation: "read staging metadata",
                    reason: format!("{}: {e}", path.display()),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(EngineError::Io {
                operation: format!("read {}", path.display()),
                source,
            }),
        }
    }

    /// A superuser connection over the cluster's local socket (trusted, as RDS's master reset
    /// needs no password).
    async fn local_client(
        &self,
        meta: &StagingMeta,
        user: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(SOCKET_DIR)
            .port(meta.port)
            .user(user)
            .dbname("postgres");
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// True once the restored cluster has left recovery and takes writes.
    async fn promoted(&self, meta: &StagingMeta) -> bool {
        match self.local_client(meta, &meta.master_username).await {
            Ok(client) => client
                .query_one("SELECT NOT pg_is_in_recovery()", &[])
                .await
                .is_ok_and(|row| row.get::<_, bool>(0)),
            Err(_) => false,
        }
    }

    async fn source_client(&self) -> Result<tokio_postgres::Client, EngineError> {
        connect_bounded(&self.source, &TlsMode::Disable, &self.bounds)
            .await
            .map_err(|e| EngineError::Local {
                operation: "connect to the source",
                reason: crate::error_chain::error_chain(&e),
            })
    }
}

/// The postmaster's pid, when its pid file names a live process.
fn running_pid(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

/// The server log's FATAL and PANIC lines: why a restore stopped.
fn log_failures(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("FATAL") || l.contains("PANIC"))
        .collect();
    (!lines.is_empty()).then(|| {
        lines
            .iter()
            .rev()
            .take(3)
            .rev()
            .copied()
            .collect::<Vec<_>>()
            .join(" | ")
    })
}

/// A timestamp as PostgreSQL's settings parser reads it, to the microsecond, in UTC.
fn postgres_timestamp(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:6]+00"
        ))
        .expect("a UTC time always formats")
}

fn single_quoted(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// How far a restored base backup replays the WAL archive.
enum Recovery {
    /// Up to this time, then promote (point-in-time restore).
    ToTime(OffsetDateTime),
    /// Only as far as the backup needs to be consistent, as a snapshot restore does.
    EndOfBackup,
}

impl LocalRestoreEngine {
    /// Copies `base` into a new cluster for `request.target_id`, configures its recovery and
    /// starts it; [`RestoreEngine::describe`] then watches it come up.
    async fn restore_base(
        &self,
        request: &RestoreRequest,
        base: &base_backup::BaseBackupInfo,
        recovery: Recovery,
    ) -> Result<(), EngineError> {
        let source = &self.source;

        let dir = self.dir(&request.target_id);
        let data = dir.join("data");
        // A directory without metadata is a start that died half-way: begin again.
        if dir.exists() {
            tokio::fs::remove_dir_all(&dir)
                .await
                .map_err(|source| EngineError::Io {
                    operation: format!("remove {}", dir.display()),
                    source,
                })?;
        }
        make_dir(&self.config, &dir).await?;
        let mut copy = command(&self.config, "cp");
        copy.arg("-a").arg(&base.data_dir).arg(&data);
        run(&format!("copy base backup {}", base.id), copy).await?;

        let port = free_port()?;
        let settings = format!(
            "\n# catalyst-dr staging restore {target}\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = {socket}\n\
             archive_mode = off\nrestore_command = {restore}\n{recovery}\nrecovery_target_action = 'promote'\n",
            target = request.target_id,
            socket = single_quoted(SOCKET_DIR),
            restore = single_quoted(&format!(
                "cp {}/%f %p",
                self.config.wal_archive_dir.display()
            )),
            recovery = match recovery {
                Recovery::ToTime(t) => format!(
                    "recovery_target_time = {}\nrecovery_target_inclusive = on",
                    single_quoted(&postgres_timestamp(t))
                ),
                Recovery::EndOfBackup => "recovery_target = 'immediate'".to_owned(),
            },
        );
        write_file(
            &self.config,
            &data.join("postgresql.auto.conf"),
            &settings,
            true,
        )
        .await?;
        write_file(&self.config, &data.join("recovery.signal"), "", false).await?;
        let meta = StagingMeta {
            target_id: request.target_id.clone(),
            port,
            master_username: source.username.clone(),
            base_backup: base.id.clone(),
            target_time: match recovery {
                Recovery::ToTime(t) => t,
                Recovery::EndOfBackup => base.finished_at,
            },
            started_at: OffsetDateTime::now_utc(),
            tags: request.tags.clone(),
        };
        write_file(
            &self.config,
            &dir.join(META_FILE),
            &serde_json::to_string_pretty(&meta).expect("plain data serialises"),
            false,
        )
        .await?;

        let mut start = command(&self.config, "pg_ctl");
        start
            .arg("start")
            .arg("--no-wait")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("server.log"));
        run(&format!("pg_ctl start {}", request.target_id), start).await?;
        tracing::info!(target_id = %request.target_id, base_backup = %base.id, target_time = %format_time(meta.target_time), port, "local restore started");
        Ok(())
    }
}

#[async_trait::async_trait]
impl RestoreEngine for LocalRestoreEngine {
    fn source_id(&self) -> &str {
        &self.source_id
    }

    async fn restore_window(&self) -> Result<RestoreWindow, EngineError> {
        let backups = base_backup::list(&self.config).await?;
        let earliest =
            backups
                .first()
                .map(|b| b.finished_at)
                .ok_or_else(|| EngineError::Local {
                    operation: "restore window",
                    reason: format!(
                        "no base backup in {}; take one with snapshot-trigger's base-backup action",
                        self.config.base_backup_dir.display()
                    ),
                })?;
        let client = self.source_client().await?;
        let latest = admin::archive_up_to_now(&client, Duration::from_secs(30))
            .await
            .map_err(|e| EngineError::Local {
                operation: "archive the source's WAL",
                reason: crate::error_chain::error_chain(&e),
            })?;
        Ok(RestoreWindow { earliest, latest })
    }

    async fn describe(&self, target_id: &str) -> Result<Option<StagingInstance>, EngineError> {
        let Some(meta) = self.meta(target_id).await? else {
            return Ok(None);
        };
        let dir = self.dir(target_id);
        let data = dir.join("data");
        let running = running_pid(&data).is_some();
        let recovering = data.join("recovery.signal").exists();
        let (state, status, reason) = match (running, recovering) {
            // recovery.signal goes a moment before the server accepts writes: ask the server.
            (true, false) if self.promoted(&meta).await => {
                (StagingState::Available, "available".to_owned(), None)
            }
            (true, false) => (StagingState::Creating, "promoting".to_owned(), None),
            (true, true) => (StagingState::Creating, "recovering".to_owned(), None),
            (false, _) => match log_failures(&dir.join("server.log")) {
                Some(failure) => (StagingState::Failed, "failed".to_owned(), Some(failure)),
                None if OffsetDateTime::now_utc() - meta.started_at < START_GRACE => {
                    (StagingState::Creating, "starting".to_owned(), None)
                }
                None => (
                    StagingState::Failed,
                    "stopped".to_owned(),
                    Some("the staging cluster is not running".to_owned()),
                ),
            },
        };
        Ok(Some(StagingInstance {
            target_id: target_id.to_owned(),
            state,
            status,
            reason,
            host: Some("127.0.0.1".to_owned()),
            port: Some(meta.port),
            master_username: Some(meta.master_username),
            arn: None,
            tags: meta.tags,
        }))
    }

    async fn start_restore(&self, request: &RestoreRequest) -> Result<(), EngineError> {
        if self.meta(&request.target_id).await?.is_some() {
            return Ok(());
        }
        let target_time = match request.target_time {
            Some(t) => t,
            None => self.restore_window().await?.latest,
        };
        let backups = base_backup::list(&self.config).await?;
        let base = backups
            .iter()
            .rev()
            .find(|b| b.finished_at <= target_time)
            .ok_or_else(|| EngineError::Local {
                operation: "choose a base backup",
                reason: format!(
                    "no base backup finished before {}",
                    format_time(target_time)
                ),
            })?;
        self.restore_base(request, base, Recovery::ToTime(target_time))
            .await
    }

    async fn backup_snapshots(&self) -> Result<Vec<BackupSnapshot>, EngineError> {
        // Base backups are taken only by snapshot-trigger's base-backup action: all catalyst-dr's.
        Ok(base_backup::list(&self.config)
            .await?
            .into_iter()
            .map(|b| BackupSnapshot {
                snapshot_id: b.id,
                source_id: self.source_id.clone(),
                status: "available".to_owned(),
                created_at: Some(b.finished_at),
                engine: Some("postgres".to_owned()),
                tags: crate::tags::Tags::from([
                    (
                        crate::tags::CREATED_BY.to_owned(),
                        crate::tags::CREATED_BY_VALUE.to_owned(),
                    ),
                    (
                        crate::tags::ROLE.to_owned(),
                        crate::tags::ROLE_BACKUP.to_owned(),
                    ),
                ]),
            })
            .collect())
    }

    async fn start_snapshot_restore(
        &self,
        request: &RestoreRequest,
        snapshot: &BackupSnapshot,
    ) -> Result<(), EngineError> {
        if self.meta(&request.target_id).await?.is_some() {
            return Ok(());
        }
        let backups = base_backup::list(&self.config).await?;
        let base = backups
            .iter()
            .find(|b| b.id == snapshot.snapshot_id)
            .ok_or_else(|| EngineError::Local {
                operation: "choose a base backup",
                reason: format!("no base backup {}", snapshot.snapshot_id),
            })?;
        // The WAL up to the backup's end must be in the archive, as RDS keeps it with a snapshot.
        let client = self.source_client().await?;
        admin::archive_up_to_now(&client, Duration::from_secs(30))
            .await
            .map_err(|e| EngineError::Local {
                operation: "archive the source's WAL",
                reason: crate::error_chain::error_chain(&e),
            })?;
        self.restore_base(request, base, Recovery::EndOfBackup)
            .await
    }

    async fn set_master_password(
        &self,
        target_id: &str,
        username: &str,
        password: &str,
    ) -> Result<(), EngineError> {
        let meta = self
            .meta(target_id)
            .await?
            .ok_or_else(|| EngineError::Local {
                operation: "set master password",
                reason: format!("{target_id} does not exist"),
            })?;
        let failed = |e: &dyn std::error::Error| EngineError::Local {
            operation: "set master password",
            reason: crate::error_chain::error_chain(e),
        };
        let client = self
            .local_client(&meta, username)
            .await
            .map_err(|e| failed(&e))?;
        admin::set_role_password(&client, username, password)
            .await
            .map_err(|e| failed(&e))
    }

    async fn delete(&self, target_id: &str) -> Result<(), EngineError> {
        let dir = self.dir(target_id);
        if !dir.exists() {
            return Ok(());
        }
        let data = dir.join("data");
        if running_pid(&data).is_some() {
            let mut stop = command(&self.config, "pg_ctl");
            stop.arg("stop")
                .arg("-D")
                .arg(&data)
                .arg("-m")
                .arg("immediate")
                .arg("-w");
            run(&format!("pg_ctl stop {target_id}"), stop).await?;
        }
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(|source| EngineError::Io {
                operation: format!("remove {}", dir.display()),
                source,
            })?;
        tracing::info!(%target_id, "local staging cluster deleted");
        Ok(())
    }
}
