//! Base backups of the source cluster with `pg_basebackup`. Each lives in
//! `<base_backup_dir>/<id>/data`; its `base-backup.json` is written last and marks it complete.

use super::LocalPgConfig;
use super::process::{command, make_dir, run, write_file};
use crate::postgres::DbCredentials;
use crate::restore_engine::EngineError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use time::OffsetDateTime;

const META_FILE: &str = "base-backup.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseBackupInfo {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// The backup is consistent from here on: the earliest time it can restore to.
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
    pub data_dir: PathBuf,
}

fn backup_dir(config: &LocalPgConfig, id: &str) -> PathBuf {
    config.base_backup_dir.join(id)
}

/// Takes base backup `id`, or returns it if it was already taken. A partial one (no metadata)
/// left by an interrupted attempt is removed and taken again.
pub async fn take(
    config: &LocalPgConfig,
    source: &DbCredentials,
    id: &str,
) -> Result<BaseBackupInfo, EngineError> {
    let dir = backup_dir(config, id);
    if let Some(done) = read(&dir).await? {
        return Ok(done);
    }
    if dir.exists() {
        tokio::fs::remove_dir_all(&dir)
            .await
            .map_err(|source| EngineError::Io {
                operation: format!("remove partial {}", dir.display()),
                source,
            })?;
    }
    make_dir(config, &dir).await?;
    let data_dir = dir.join("data");
    let started_at = OffsetDateTime::now_utc();
    let mut basebackup = command(config, "pg_basebackup");
    basebackup
        .arg("--pgdata")
        .arg(&data_dir)
        .arg("--host")
        .arg(&source.host)
        .arg("--port")
        .arg(source.port.to_string())
        .arg("--username")
        .arg(&source.username)
        .arg("--no-password")
        .arg("--format=plain")
        // The WAL comes from the archive at restore time, as it would from RDS's.
        .arg("--wal-method=none")
        .arg("--checkpoint=fast")
        .arg("--label")
        .arg(format!("catalyst-dr {id}"))
        .env("PGPASSWORD", &source.password);
    run(&format!("pg_basebackup {id}"), basebackup).await?;
    let info = BaseBackupInfo {
        id: id.to_owned(),
        started_at,
        finished_at: OffsetDateTime::now_utc(),
        data_dir,
    };
    let meta = serde_json::to_string_pretty(&info).expect("plain data serialises");
    write_file(config, &dir.join(META_FILE), &meta, false).await?;
    tracing::info!(base_backup = id, "base backup taken");
    Ok(info)
}

async fn read(dir: &std::path::Path) -> Result<Option<BaseBackupInfo>, EngineError> {
    match tokio::fs::read(dir.join(META_FILE)).await {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| EngineError::Local {
                operation: "read base backup metadata",
                reason: format!("{}: {e}", dir.display()),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(EngineError::Io {
            operation: format!("read {}", dir.display()),
            source,
        }),
    }
}

/// Every complete base backup, oldest first.
pub async fn list(config: &LocalPgConfig) -> Result<Vec<BaseBackupInfo>, EngineError> {
    let mut found = Vec::new();
    let mut entries = match tokio::fs::read_dir(&config.base_backup_dir).await {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(source) => {
            return Err(EngineError::Io {
                operation: format!("list {}", config.base_backup_dir.display()),
                source,
            });
        }
    };
    while let Some(entry) = entries
        .next_entry()
        .await
        .map_err(|source| EngineError::Io {
            operation: "list base backups".into(),
            source,
        })?
    {
        if let Some(info) = read(&entry.path()).await? {
            found.push(info);
        }
    }
    found.sort_by_key(|b| b.finished_at);
    Ok(found)
}
