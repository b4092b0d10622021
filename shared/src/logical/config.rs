//! Logical backup configuration, read with snapshot-trigger's at cold start.

use crate::catalyst_db::introspect::NotCaptured;
use crate::config::{ConfigError, Env};
use crate::postgres::TlsMode;
use crate::settings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalConfig {
    /// `LOGICAL_BACKUP_PREFIX` (default `logical/`), always ending in `/`.
    pub prefix: String,
    /// `LOGICAL_RETENTION_DAYS` (default `RETENTION_DAYS`).
    pub retention_days: u32,
    /// `LOGICAL_PARALLELISM` (default 4): tables copied (and connections open) at once.
    pub parallelism: u32,
    /// `LOGICAL_PART_SIZE_MIB` (default 8, 5..=512): the multipart part size, and per table the
    /// largest buffer a backup holds.
    pub part_size_bytes: usize,
    /// `LOGICAL_SEGMENT_MIB` (default 64, 1..=65536): a table larger than this is read (and
    /// restored) in block ranges of about this size, each its own object, on several
    /// connections at once.
    pub segment_bytes: u64,
    /// `LOGICAL_FANOUT_THRESHOLD_GIB` (default 32): a larger source is backed up by the fan-out.
    pub fanout_threshold_bytes: u64,
    /// `LOGICAL_FANOUT_BATCH_MIB` (default 4096): the table storage one fan-out invocation reads.
    pub fanout_batch_bytes: u64,
    /// `STAGING_SECRET_ID`: where pitr-restore publishes the fan-out's read source.
    pub read_source_secret_id: Option<String>,
    /// `LOGICAL_ZSTD_LEVEL` (default 3, 1..=19).
    pub zstd_level: i32,
    /// `SOURCE_DATABASE_SECRET_ID`: the database to back up; the logical actions fail with
    /// `NotConfigured` without it.
    pub source_secret_id: Option<String>,
    /// `PG_TLS` / `PG_CA_BUNDLE`, read when a database is configured (or `PG_TLS` is set).
    pub tls: Option<TlsMode>,
    /// `LOGICAL_IGNORE_OBJECTS`: schema objects the backup cannot capture that the operator
    /// accepts leaving out, `kind:name` or `kind:*` (as `not_captured` lists them), separated
    /// by `;` or new lines. Anything else left out makes a backup incomplete.
    pub ignore: Vec<(String, String)>,
}

impl LogicalConfig {
    /// The defaults, with no source database configured.
    pub fn new(retention_days: u32) -> Self {
        Self {
            prefix: const { settings::LOGICAL_BACKUP_PREFIX.default_text() }.to_owned(),
            retention_days,
            parallelism: const { settings::LOGICAL_PARALLELISM.default_number() },
            part_size_bytes: (const { settings::LOGICAL_PART_SIZE_MIB.default_number() } as usize)
                << 20,
            segment_bytes: u64::from(const { settings::LOGICAL_SEGMENT_MIB.default_number() })
                << 20,
            fanout_threshold_bytes: u64::from(
                const { settings::LOGICAL_FANOUT_THRESHOLD_GIB.default_number() },
            ) << 30,
            fanout_batch_bytes: u64::from(
                const { settings::LOGICAL_FANOUT_BATCH_MIB.default_number() },
            ) << 20,
            read_source_secret_id: None,
            zstd_level: const { settings::LOGICAL_ZSTD_LEVEL.default_number() } as i32,
            source_secret_id: None,
            tls: None,
            ignore: Vec::new(),
        }
    }

    /// Whether `LOGICAL_IGNORE_OBJECTS` accepts leaving `object` out.
    pub fn ignores(&self, object: &NotCaptured) -> bool {
        self.ignore
            .iter()
            .any(|(kind, name)| kind == &object.kind && (name == "*" || name == &object.name))
    }

    fn parse_ignore(value: &str) -> Result<Vec<(String, String)>, ConfigError> {
        value
            .split(['\n', ';'])
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| match entry.split_once(':') {
                Some((kind, name)) if !kind.trim().is_empty() && !name.trim().is_empty() => Ok((kind.trim().to_owned(), name.trim().to_owned())),
                _ => Err(ConfigError::Invalid {
                    var: settings::LOGICAL_IGNORE_OBJECTS.name,
                    reason: format!("entry {entry:?} is not kind:name (for example `rule:*` or `foreign table:public.remote`)"),
                }),
            })
            .collect()
    }

    pub fn from_env(env: &Env, default_retention_days: u32) -> Result<Self, ConfigError> {
        let prefix = env.prefix(&settings::LOGICAL_BACKUP_PREFIX)?;
        let source_secret_id = env.text(&settings::SOURCE_DATABASE_SECRET_ID_LOGICAL);
        let read_source_secret_id = env.text(&settings::STAGING_SECRET_ID_LOGICAL);
        let tls = if source_secret_id.is_some()
            || read_source_secret_id.is_some()
            || env.text(&settings::PG_TLS).is_some()
        {
            Some(TlsMode::from_env(env)?)
        } else {
            None
        };
        Ok(Self {
            prefix,
            retention_days: env
                .number_or(&settings::LOGICAL_RETENTION_DAYS, default_retention_days)?,
            parallelism: env.number(&settings::LOGICAL_PARALLELISM)?,
            part_size_bytes: env.number(&settings::LOGICAL_PART_SIZE_MIB)? as usize * 1024 * 1024,
            segment_bytes: u64::from(env.number(&settings::LOGICAL_SEGMENT_MIB)?) << 20,
            fanout_threshold_bytes: u64::from(env.number(&settings::LOGICAL_FANOUT_THRESHOLD_GIB)?)
                << 30,
            fanout_batch_bytes: u64::from(env.number(&settings::LOGICAL_FANOUT_BATCH_MIB)?) << 20,
            read_source_secret_id,
            zstd_level: env.number(&settings::LOGICAL_ZSTD_LEVEL)? as i32,
            source_secret_id,
            tls,
            ignore: Self::parse_ignore(
                &env.text(&settings::LOGICAL_IGNORE_OBJECTS)
                    .unwrap_or_default(),
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_and_bounds() {
        let env: HashMap<&str, &str> = HashMap::from([("LOGICAL_BACKUP_PREFIX", "lb")]);
        let config = LogicalConfig::from_env(&Env(&env), 35).unwrap();
        assert_eq!(
            (
                config.prefix.as_str(),
                config.retention_days,
                config.parallelism
            ),
            ("lb/", 35, 4)
        );
        assert_eq!(
            (
                config.part_size_bytes,
                config.segment_bytes,
                config.zstd_level
            ),
            (8 << 20, 64 << 20, 3)
        );
        assert_eq!((config.source_secret_id, config.tls), (None, None));
        for (var, value) in [
            ("LOGICAL_PART_SIZE_MIB", "4"),
            ("LOGICAL_PARALLELISM", "0"),
            ("LOGICAL_ZSTD_LEVEL", "20"),
            ("LOGICAL_SEGMENT_MIB", "0"),
        ] {
            let env: HashMap<&str, &str> = HashMap::from([(var, value)]);
            assert!(
                matches!(LogicalConfig::from_env(&Env(&env), 35), Err(ConfigError::Invalid { var: v, .. }) if v == var)
            );
        }
        let env: HashMap<&str, &str> =
            HashMap::from([("SOURCE_DATABASE_SECRET_ID", "s"), ("PG_TLS", "disable")]);
        let config = LogicalConfig::from_env(&Env(&env), 35).unwrap();
        assert_eq!(config.tls, Some(TlsMode::Disable));
    }

    #[test]
    fn ignore_list_names_kinds_and_objects() {
        let env: HashMap<&str, &str> = HashMap::from([(
            "LOGICAL_IGNORE_OBJECTS",
            "rule:*; foreign table:public.remote\n",
        )]);
        let config = LogicalConfig::from_env(&Env(&env), 35).unwrap();
        let object = |kind: &str, name: &str| NotCaptured {
            kind: kind.into(),
            name: name.into(),
        };
        assert!(config.ignores(&object("rule", "r on public.t")));
        assert!(config.ignores(&object("foreign table", "public.remote")));
        assert!(!config.ignores(&object("foreign table", "public.other")));
        let env: HashMap<&str, &str> = HashMap::from([("LOGICAL_IGNORE_OBJECTS", "rule")]);
        assert!(
            matches!(LogicalConfig::from_env(&Env(&env), 35), Err(ConfigError::Invalid { var, .. }) if var == "LOGICAL_IGNORE_OBJECTS")
        );
    }
}
