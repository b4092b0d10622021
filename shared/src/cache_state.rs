//! The queue state of a Redis (the cache and queue adapter of Catalyst Auth): how many keys it
//! holds, how many of them expire, and the length of every queue key (lists, sorted sets,
//! streams) matching the configured SCAN patterns. A drill records it at the cache snapshot's
//! instant and compares the restored cache with it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The key whose value `staging` marks a Redis as catalyst-dr's staging copy. The drill's
/// restore sets it; the flush refuses any Redis without it; parity does not count it.
pub const STAGING_MARKER_KEY: &str = "catalyst-dr:role";
pub const STAGING_MARKER_VALUE: &str = "staging";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheState {
    /// Keys in the database (`DBSIZE`), the staging marker left out.
    pub keys: u64,
    /// Of those, keys with a time to live: they may expire between the snapshot and the restore.
    #[serde(default)]
    pub volatile_keys: u64,
    /// Pattern → key → length (lists, sorted sets and streams; 0 for any other type).
    #[serde(default)]
    pub patterns: BTreeMap<String, BTreeMap<String, u64>>,
}

impl CacheState {
    pub fn persistent_keys(&self) -> u64 {
        self.keys.saturating_sub(self.volatile_keys)
    }
}

/// Reads the state of the Redis behind `conn`: `DBSIZE`, the keyspace line of its database, then
/// `SCAN` (never `KEYS`) for each pattern.
pub async fn capture(
    conn: &mut redis::aio::MultiplexedConnection,
    db: i64,
    patterns: &[String],
) -> Result<CacheState, redis::RedisError> {
    let keys: u64 = redis::cmd("DBSIZE").query_async(conn).await?;
    let info: String = redis::cmd("INFO").arg("keyspace").query_async(conn).await?;
    let marker: bool = redis::cmd("EXISTS")
        .arg(STAGING_MARKER_KEY)
        .query_async(conn)
        .await?;
    let mut by_pattern = BTreeMap::new();
    for pattern in patterns {
        let mut lengths = BTreeMap::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await?;
            for key in found.into_iter().filter(|k| k != STAGING_MARKER_KEY) {
                let length = queue_length(conn, &key).await?;
                lengths.insert(key, length);
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        by_pattern.insert(pattern.clone(), lengths);
    }
    Ok(CacheState {
        keys: keys - u64::from(marker),
        volatile_keys: expiring_keys(&info, db),
        patterns: by_pattern,
    })
}

async fn queue_length(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> Result<u64, redis::RedisError> {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(conn).await?;
    let command = match kind.as_str() {
        "list" => "LLEN",
        "zset" => "ZCARD",
        "stream" => "XLEN",
        _ => return Ok(0),
    };
    redis::cmd(command).arg(key).query_async(conn).await
}

/// `expires=N` of `db<db>` in `INFO keyspace` (absent: an empty database).
fn expiring_keys(info: &str, db: i64) -> u64 {
    let prefix = format!("db{db}:");
    info.lines()
        .find_map(|line| line.trim().strip_prefix(prefix.as_str()))
        .and_then(|fields| {
            fields
                .split(',')
                .find_map(|f| f.strip_prefix("expires="))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Opens the Redis at `url`; the database index is the URL's (`redis://host:port/N`).
pub async fn connect(
    url: &str,
) -> Result<(redis::aio::MultiplexedConnection, i64), redis::RedisError> {
    crate::tls::install_provider();
    let client = redis::Client::open(url)?;
    let db = client.get_connection_info().redis.db;
    Ok((client.get_multiplexed_async_connection().await?, db))
}

/// The Redis URL a secret holds: the URL as plain text, or JSON with a `url` field (as the
/// staging cache secret is written). The error says which, never the value.
pub fn url_from_secret(secret_id: &str, text: &str) -> Result<String, String> {
    let text = text.trim();
    if !text.starts_with('{') {
        return Ok(text.to_owned());
    }
    let doc: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| format!("secret {secret_id} is not JSON with a \"url\" field"))?;
    doc.get("url")
        .and_then(|u| u.as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("secret {secret_id} has no \"url\" field"))
}

/// What pitr-restore publishes once a drill's staging cache is up and marked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingCacheSecret {
    pub url: String,
    pub drill_id: String,
    pub target_id: String,
}

/// One key pattern's comparison of the restored cache with the baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatternParity {
    pub pattern: String,
    pub baseline_keys: u64,
    pub restored_keys: u64,
    /// Sum of the matching keys' lengths.
    pub baseline_length: u64,
    pub restored_length: u64,
    /// Keys missing, extra or of another length (at most [`MAX_LISTED`]).
    pub differences: Vec<String>,
    pub passed: bool,
}

/// How many differing keys a pattern's row lists.
pub const MAX_LISTED: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheParity {
    pub baseline_persistent_keys: u64,
    pub restored_persistent_keys: u64,
    /// Informational: keys with a time to live may expire before the restore loads them.
    pub baseline_volatile_keys: u64,
    pub restored_volatile_keys: u64,
    pub patterns: Vec<PatternParity>,
    pub passed: bool,
}

/// The restored cache must hold every persistent key and every queue key at its length.
pub fn compare(baseline: &CacheState, restored: &CacheState) -> CacheParity {
    let empty = BTreeMap::new();
    let patterns: Vec<PatternParity> = baseline
        .patterns
        .iter()
        .map(|(pattern, before)| {
            let after = restored.patterns.get(pattern).unwrap_or(&empty);
            let mut differences = Vec::new();
            for (key, length) in before {
                match after.get(key) {
                    None => differences.push(format!("{key}: missing (length {length})")),
                    Some(l) if l != length => {
                        differences.push(format!("{key}: length {l}, expected {length}"))
                    }
                    Some(_) => {}
                }
            }
            for (key, length) in after {
                if !before.contains_key(key) {
                    differences.push(format!("{key}: not in the baseline (length {length})"));
                }
            }
            let passed = differences.is_empty();
            differences.truncate(MAX_LISTED);
            PatternParity {
                pattern: pattern.clone(),
                baseline_keys: before.len() as u64,
                restored_keys: after.len() as u64,
                baseline_length: before.values().sum(),
                restored_length: after.values().sum(),
                differences,
                passed,
            }
        })
        .collect();
    let keys_match = baseline.persistent_keys() == restored.persistent_keys();
    CacheParity {
        baseline_persistent_keys: baseline.persistent_keys(),
        restored_persistent_keys: restored.persistent_keys(),
        baseline_volatile_keys: baseline.volatile_keys,
        restored_volatile_keys: restored.volatile_keys,
        passed: keys_match && patterns.iter().all(|p| p.passed),
        patterns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(keys: u64, volatile: u64, queues: &[(&str, &str, u64)]) -> CacheState {
        let mut patterns: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for (pattern, key, length) in queues {
            patterns
                .entry((*pattern).to_owned())
                .or_default()
                .insert((*key).to_owned(), *length);
        }
        CacheState {
            keys,
            volatile_keys: volatile,
            patterns,
        }
    }

    #[test]
    fn the_keyspace_line_of_the_connections_database_gives_the_expiring_keys() {
        let info =
            "# Keyspace\r\ndb0:keys=10,expires=3,avg_ttl=100\r\ndb2:keys=4,expires=1,avg_ttl=5\r\n";
        assert_eq!(expiring_keys(info, 0), 3);
        assert_eq!(expiring_keys(info, 2), 1);
        assert_eq!(expiring_keys(info, 1), 0);
        assert_eq!(expiring_keys("# Keyspace\r\n", 0), 0);
    }

    #[test]
    fn an_identical_restore_passes_and_expired_sessions_do_not_fail_it() {
        let baseline = state(100, 40, &[("q:*", "q:a", 5), ("q:*", "q:b", 0)]);
        let restored = state(90, 30, &[("q:*", "q:a", 5), ("q:*", "q:b", 0)]);
        let parity = compare(&baseline, &restored);
        assert!(parity.passed, "{parity:?}");
        assert_eq!(parity.patterns[0].baseline_length, 5);
        assert_eq!(parity.restored_volatile_keys, 30);
    }

    #[test]
    fn a_shorter_queue_a_missing_key_an_extra_key_or_a_lost_key_fails() {
        let baseline = state(100, 0, &[("q:*", "q:a", 5), ("q:*", "q:b", 2)]);
        let shorter = compare(
            &baseline,
            &state(100, 0, &[("q:*", "q:a", 4), ("q:*", "q:b", 2)]),
        );
        assert!(!shorter.passed);
        assert_eq!(
            shorter.patterns[0].differences,
            ["q:a: length 4, expected 5"]
        );

        let missing = compare(&baseline, &state(99, 0, &[("q:*", "q:a", 5)]));
        assert!(!missing.passed);
        assert_eq!(missing.patterns[0].differences, ["q:b: missing (length 2)"]);

        let extra = compare(
            &baseline,
            &state(
                101,
                0,
                &[("q:*", "q:a", 5), ("q:*", "q:b", 2), ("q:*", "q:c", 1)],
            ),
        );
        assert!(!extra.passed);
        assert_eq!(
            extra.patterns[0].differences,
            ["q:c: not in the baseline (length 1)"]
        );

        // The queues match but a persistent key (not a queue) was lost.
        let lost = compare(
            &baseline,
            &state(99, 0, &[("q:*", "q:a", 5), ("q:*", "q:b", 2)]),
        );
        assert!(!lost.passed);
        assert!(lost.patterns.iter().all(|p| p.passed));
    }
}
