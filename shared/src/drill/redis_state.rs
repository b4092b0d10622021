//! The cache/queue half of the baseline: the Redis's size and the length of each queue key.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedisState {
    pub keys: u64,
    /// Length of each key matching the queue patterns (lists, sorted sets, streams; 0 otherwise).
    pub queues: BTreeMap<String, u64>,
}

/// Reads the Redis at `url`: `DBSIZE`, then `SCAN` (never `KEYS`) for each pattern.
pub async fn capture(url: &str, patterns: &[String]) -> Result<RedisState, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    let mut queues = BTreeMap::new();
    for pattern in patterns {
        let mut cursor: u64 = 0;
        loop {
            let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            for key in found {
                let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut conn).await?;
                let length: u64 = match kind.as_str() {
                    "list" => redis::cmd("LLEN").arg(&key).query_async(&mut conn).await?,
                    "zset" => redis::cmd("ZCARD").arg(&key).query_async(&mut conn).await?,
                    "stream" => redis::cmd("XLEN").arg(&key).query_async(&mut conn).await?,
                    _ => 0,
                };
                queues.insert(key, length);
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
    }
    Ok(RedisState { keys, queues })
}
