//! The local cache engine: `redis-server` processes on this machine standing in for ElastiCache.
//! A snapshot is the source's own `BGSAVE`, taken while its writes are paused (`CLIENT PAUSE
//! WRITE`) from the moment its queue state is read until the save has forked, so the state is
//! exactly the snapshot's; the RDB file is then copied under `LOCAL_CACHE_DIR/snapshots/`. A
//! staging cache is a new `redis-server` on a free loopback port that loads that file.

use super::{CacheEngine, CacheEngineError, CacheSnapshot, SnapshotState, StagingCache};
use crate::cache_state;
use crate::config::{ConfigError, Env};
use crate::restore_engine::{EngineError, StagingState};
use crate::settings;
use crate::tags::Tags;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::process::Command;

/// The longest the source's writes stay paused if this process dies holding the pause.
const PAUSE_LIMIT_MS: u64 = 10_000;
/// How long a save may take before the snapshot gives up.
const SAVE_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCacheConfig {
    pub source_id: String,
    pub dir: PathBuf,
    pub redis_server: PathBuf,
}

impl LocalCacheConfig {
    /// `restores`: the function starts staging caches (pitr-restore).
    pub fn from_env(env: &Env, restores: bool) -> Result<Self, ConfigError> {
        let dir = PathBuf::from(env.require(&settings::LOCAL_CACHE_DIR)?);
        if !dir.is_absolute() {
            return Err(ConfigError::Invalid {
                var: settings::LOCAL_CACHE_DIR.name,
                reason: format!("{} is not an absolute path", dir.display()),
            });
        }
        Ok(Self {
            source_id: super::CacheSource::from_env(env)?
                .map_or_else(|| "local-cache".to_owned(), |s| s.id().to_owned()),
            dir,
            redis_server: if restores {
                PathBuf::from(env.text_or_default(&settings::LOCAL_REDIS_SERVER)?)
            } else {
                PathBuf::new()
            },
        })
    }
}

pub struct LocalCacheEngine {
    config: LocalCacheConfig,
}

/// What the engine keeps beside a snapshot's RDB file.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotMeta {
    snapshot_id: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    tags: Tags,
}

/// What the engine keeps in a staging cache's directory.
#[derive(Debug, Serialize, Deserialize)]
struct StagingMeta {
    target_id: String,
    port: u16,
    snapshot_id: String,
    tags: Tags,
}

fn local(operation: &'static str, reason: impl Into<String>) -> CacheEngineError {
    EngineError::Local {
        operation,
        reason: reason.into(),
    }
    .into()
}

fn io(operation: String) -> impl FnOnce(std::io::Error) -> CacheEngineError {
    move |source| EngineError::Io { operation, source }.into()
}

/// `field:value` of an `INFO` section.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(field)?.strip_prefix(':'))
}

impl LocalCacheEngine {
    pub fn new(config: LocalCacheConfig) -> Self {
        Self { config }
    }

    fn snapshot_dir(&self) -> PathBuf {
        self.config.dir.join("snapshots")
    }

    fn staging_dir(&self, target_id: &str) -> PathBuf {
        self.config.dir.join("staging").join(target_id)
    }

    async fn persistence(
        conn: &mut redis::aio::MultiplexedConnection,
    ) -> Result<(bool, u64, String), CacheEngineError> {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(conn)
            .await?;
        let in_progress = info_field(&info, "rdb_bgsave_in_progress") == Some("1");
        let saves = info_field(&info, "rdb_saves")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| local("read the source's persistence", "no rdb_saves in INFO"))?;
        let status = info_field(&info, "rdb_last_bgsave_status")
            .unwrap_or("unknown")
            .to_owned();
        Ok((in_progress, saves, status))
    }

    /// Reads the state and forks the save with the source's writes paused in between.
    async fn paused_capture(
        conn: &mut redis::aio::MultiplexedConnection,
        db: i64,
        patterns: &[String],
    ) -> Result<(cache_state::CacheState, u64), CacheEngineError> {
        let (in_progress, saves, _) = Self::persistence(conn).await?;
        if in_progress {
            return Err(CacheEngineError::Busy {
                reason: "a save of the source is in progress".into(),
            });
        }
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(PAUSE_LIMIT_MS)
            .arg("WRITE")
            .query_async(conn)
            .await?;
        let captured = async {
            let state = cache_state::capture(conn, db, patterns).await?;
            // Refused while another child (an AOF rewrite) runs: busy, not broken.
            let reply: String = redis::cmd("BGSAVE").query_async(conn).await.map_err(|e| {
                CacheEngineError::Busy {
                    reason: format!("BGSAVE refused: {e}"),
                }
            })?;
            Ok::<_, CacheEngineError>((state, reply))
        }
        .await;
        let unpaused: Result<(), _> = redis::cmd("CLIENT").arg("UNPAUSE").query_async(conn).await;
        let (state, reply) = captured?;
        unpaused?;
        // "scheduled" means the fork comes later, after writes resumed: not this state's.
        if reply != "Background saving started" {
            return Err(CacheEngineError::Busy {
                reason: format!("BGSAVE answered {reply:?}"),
            });
        }
        Ok((state, saves + 1))
    }
}

#[async_trait::async_trait]
impl CacheEngine for LocalCacheEngine {
    fn source_id(&self) -> &str {
        &self.config.source_id
    }

    async fn snapshot_source(
        &self,
        url: &str,
        snapshot_id: &str,
        tags: &Tags,
        patterns: &[String],
    ) -> Result<SnapshotState, CacheEngineError> {
        let rdb = self.snapshot_dir().join(format!("{snapshot_id}.rdb"));
        if rdb.exists() {
            return Err(local(
                "snapshot the source cache",
                format!("snapshot {snapshot_id} exists already"),
            ));
        }
        let (mut conn, db) = cache_state::connect(url).await?;
        let (dir, file): (String, String) = {
            let dir: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("dir")
                .query_async(&mut conn)
                .await?;
            let file: Vec<String> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("dbfilename")
                .query_async(&mut conn)
                .await?;
            match (dir.get(1), file.get(1)) {
                (Some(d), Some(f)) => (d.clone(), f.clone()),
                _ => {
                    return Err(local(
                        "read the source's dump file",
                        "CONFIG GET answered nothing",
                    ));
                }
            }
        };
        let (state, our_save) = Self::paused_capture(&mut conn, db, patterns).await?;

        let deadline = tokio::time::Instant::now() + SAVE_LIMIT;
        loop {
            let (in_progress, saves, status) = Self::persistence(&mut conn).await?;
            if !in_progress && saves >= our_save {
                if status != "ok" {
                    return Err(local(
                        "save the source cache",
                        format!("BGSAVE ended {status}"),
                    ));
                }
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(CacheEngineError::Busy {
                    reason: format!("the save did not finish within {SAVE_LIMIT:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Open the dump, then check no later save replaced it first: the open file is ours
        // even if one replaces it while it is copied.
        let source_path = Path::new(&dir).join(&file);
        let mut dump = tokio::fs::File::open(&source_path)
            .await
            .map_err(io(format!("open {}", source_path.display())))?;
        let (_, saves, _) = Self::persistence(&mut conn).await?;
        if saves != our_save {
            return Err(CacheEngineError::Busy {
                reason: "another save replaced the dump before it was copied".into(),
            });
        }
        let snapshots = self.snapshot_dir();
        tokio::fs::create_dir_all(&snapshots)
            .await
            .map_err(io(format!("create {}", snapshots.display())))?;
        let partial = snapshots.join(format!("{snapshot_id}.rdb.partial"));
        let mut out = tokio::fs::File::create(&partial)
            .await
            .map_err(io(format!("create {}", partial.display())))?;
        tokio::io::copy(&mut dump, &mut out)
            .await
            .map_err(io(format!("copy {}", source_path.display())))?;
        out.sync_all()
            .await
            .map_err(io(format!("sync {}", partial.display())))?;
        let meta = SnapshotMeta {
            snapshot_id: snapshot_id.to_owned(),
            created_at: OffsetDateTime::now_utc(),
            tags: tags.clone(),
        };
        let meta_path = snapshots.join(format!("{snapshot_id}.json"));
        tokio::fs::write(&meta_path, serde_json::to_vec(&meta).expect("plain data"))
            .await
            .map_err(io(format!("write {}", meta_path.display())))?;
        // The RDB file appears last: a snapshot is listed only once it is whole.
        tokio::fs::rename(&partial, &rdb)
            .await
            .map_err(io(format!("rename {}", partial.display())))?;
        Ok(SnapshotState { state, exact: true })
    }

    async fn snapshots(&self) -> Result<Vec<CacheSnapshot>, CacheEngineError> {
        let dir = self.snapshot_dir();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(format!("list {}", dir.display()))(e)),
        };
        let mut found = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(io(format!("list {}", dir.display())))?
        {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") || !path.with_extension("rdb").exists()
            {
                continue;
            }
            let text = tokio::fs::read(&path)
                .await
                .map_err(io(format!("read {}", path.display())))?;
            let meta: SnapshotMeta = serde_json::from_slice(&text).map_err(|e| {
                local(
                    "read a local cache snapshot",
                    format!("{}: {e}", path.display()),
                )
            })?;
            found.push(CacheSnapshot {
                snapshot_id: meta.snapshot_id,
                status: "available".into(),
                created_at: Some(meta.created_at),
                tags: meta.tags,
            });
        }
        Ok(found)
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), CacheEngineError> {
        let dir = self.snapshot_dir();
        for name in [
            format!("{snapshot_id}.rdb"),
            format!("{snapshot_id}.rdb.partial"),
            format!("{snapshot_id}.json"),
        ] {
            match tokio::fs::remove_file(dir.join(&name)).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(format!("remove {name}"))(e)),
            }
        }
        Ok(())
    }

    async fn describe(&self, target_id: &str) -> Result<Option<StagingCache>, CacheEngineError> {
        let dir = self.staging_dir(target_id);
        let meta: StagingMeta = match tokio::fs::read(dir.join("meta.json")).await {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                local(
                    "read a local staging cache",
                    format!("{}: {e}", dir.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(format!("read {}", dir.display()))(e)),
        };
        let (state, status, reason) = match running_pid(&dir) {
            None => (
                StagingState::Failed,
                "stopped".to_owned(),
                Some(log_tail(&dir.join("redis.log"))),
            ),
            Some(_) => match ping(meta.port).await {
                Ok(()) => (StagingState::Available, "available".to_owned(), None),
                Err(e) if e.kind() == redis::ErrorKind::BusyLoadingError => {
                    (StagingState::Creating, "loading".to_owned(), None)
                }
                Err(_) => (StagingState::Creating, "starting".to_owned(), None),
            },
        };
        if let Some(reason) = &reason {
            tracing::warn!(%target_id, %reason, "local staging cache is not running");
        }
        Ok(Some(StagingCache {
            target_id: meta.target_id,
            state,
            status,
            host: Some("127.0.0.1".into()),
            port: Some(meta.port),
            tls: false,
            tags: meta.tags,
        }))
    }

    async fn start_restore(
        &self,
        target_id: &str,
        snapshot: &CacheSnapshot,
        tags: &Tags,
    ) -> Result<(), CacheEngineError> {
        let rdb = self
            .snapshot_dir()
            .join(format!("{}.rdb", snapshot.snapshot_id));
        let dir = self.staging_dir(target_id);
        // A directory left by a start that died half-way: begin again.
        if dir.exists() {
            self.delete(target_id).await?;
        }
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io(format!("create {}", dir.display())))?;
        tokio::fs::copy(&rdb, dir.join("dump.rdb"))
            .await
            .map_err(io(format!("copy {}", rdb.display())))?;
        let port = crate::local_pg::process::free_port()?;
        let meta = StagingMeta {
            target_id: target_id.to_owned(),
            port,
            snapshot_id: snapshot.snapshot_id.clone(),
            tags: tags.clone(),
        };
        tokio::fs::write(
            dir.join("meta.json"),
            serde_json::to_vec(&meta).expect("plain data"),
        )
        .await
        .map_err(io(format!("write {}/meta.json", dir.display())))?;
        let output = Command::new(&self.config.redis_server)
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--dbfilename", "dump.rdb"])
            .arg("--dir")
            .arg(&dir)
            .args(["--appendonly", "no", "--save", "", "--daemonize", "yes"])
            .arg("--pidfile")
            .arg(dir.join("redis.pid"))
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .kill_on_drop(true)
            .output()
            .await
            .map_err(io(format!("start {}", self.config.redis_server.display())))?;
        if !output.status.success() {
            return Err(local(
                "start a staging cache",
                format!(
                    "redis-server exited with {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            ));
        }
        Ok(())
    }

    async fn delete(&self, target_id: &str) -> Result<(), CacheEngineError> {
        let dir = self.staging_dir(target_id);
        if !dir.exists() {
            return Ok(());
        }
        if let Some(pid) = running_pid(&dir) {
            let _ = Command::new("kill").arg(pid.to_string()).status().await;
            for _ in 0..250 {
                if running_pid(&dir).is_none() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if running_pid(&dir).is_some() {
                return Err(local(
                    "stop a staging cache",
                    format!("redis-server {pid} of {target_id} did not stop"),
                ));
            }
        }
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(io(format!("remove {}", dir.display())))
    }
}

async fn ping(port: u16) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    Ok(())
}

/// The staging server's pid, when its pid file names a live process.
fn running_pid(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("redis.pid")).ok()?;
    let pid: u32 = text.trim().parse().ok()?;
    Path::new(&format!("/proc/{pid}")).exists().then_some(pid)
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}
