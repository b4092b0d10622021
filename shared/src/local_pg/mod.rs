//! The local engine: PostgreSQL clusters on this machine standing in for RDS. The "production"
//! cluster archives its WAL; [`base_backup`] takes base backups of it with `pg_basebackup`, and
//! [`restore`] restores one into a new cluster on a free port, replaying archived WAL up to a
//! target time with `restore_command` and `recovery_target_time`, then promoting.

pub mod base_backup;
pub mod process;
pub mod restore;

use crate::config::{ConfigError, Env};
use crate::settings::{self, Setting};
use std::path::PathBuf;

/// Where the local engine finds its tools and keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPgConfig {
    /// Directory with `pg_ctl`, `pg_basebackup`, ... (`LOCAL_PG_BIN`).
    pub bin_dir: PathBuf,
    /// OS user that owns and runs the clusters when we run as root (`LOCAL_PG_RUN_AS`).
    pub run_as: Option<String>,
    /// Base backups, one directory each (`LOCAL_BASE_BACKUP_DIR`).
    pub base_backup_dir: PathBuf,
    /// The source cluster's WAL archive (`LOCAL_WAL_ARCHIVE_DIR`).
    pub wal_archive_dir: PathBuf,
    /// Restored staging clusters, one directory each (`LOCAL_STAGING_DIR`).
    pub staging_dir: PathBuf,
}

impl LocalPgConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let dir = |setting: &'static Setting| -> Result<PathBuf, ConfigError> {
            let path = PathBuf::from(env.require(setting)?);
            if !path.is_absolute() {
                return Err(ConfigError::Invalid {
                    var: setting.name,
                    reason: format!("{} is not an absolute path", path.display()),
                });
            }
            Ok(path)
        };
        let bin_dir = PathBuf::from(env.text_or_default(&settings::LOCAL_PG_BIN)?);
        if !bin_dir.join("pg_ctl").is_file() {
            return Err(ConfigError::Invalid {
                var: settings::LOCAL_PG_BIN.name,
                reason: format!("{} has no pg_ctl", bin_dir.display()),
            });
        }
        Ok(Self {
            bin_dir,
            run_as: env.text(&settings::LOCAL_PG_RUN_AS),
            base_backup_dir: dir(&settings::LOCAL_BASE_BACKUP_DIR)?,
            wal_archive_dir: dir(&settings::LOCAL_WAL_ARCHIVE_DIR)?,
            staging_dir: dir(&settings::LOCAL_STAGING_DIR)?,
        })
    }
}
