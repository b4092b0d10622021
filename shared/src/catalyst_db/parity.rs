//! Baseline parity: a fingerprint of every Catalyst Auth table as of one instant, taken on the
//! source before a drill and on the restored copy after it.
//!
//! The instant is made exact by briefly holding SHARE locks on the tables: every writer that
//! touched them has fully committed, none can start, and the snapshot taken then is precisely the
//! state a restore to any moment inside the locked interval reproduces. The instant chosen is the
//! first whole second inside that interval (writers wait at most a second), so a restore engine
//! that only takes whole seconds reproduces it too, and writes in that same second fall either
//! wholly before it or wholly after it.

use super::introspect::BlockRange;
use super::{CatalystDbError, TABLES};
use crate::connection_jobs::on_connections;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;
use tokio_postgres::Client;

/// The block ranges tables are fingerprinted in on several connections: 64 MiB of 8 KiB blocks.
pub const RANGE_BLOCKS: u64 = 8192;

/// One table's fingerprint: rows and an order-independent checksum of their contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableFingerprint {
    pub table: String,
    pub rows: i64,
    /// Sum of the first 64 bits of each row's md5, as decimal text.
    pub checksum: String,
    /// Rows created or changed after the instant given to [`fingerprint`] (a restore that went
    /// past the baseline instant has some).
    pub written_after: i64,
}

/// The column that says when a row was last written, per table.
fn written_column(table: &str) -> &'static str {
    match table {
        "users" | "webhook_subscriptions" => "created_at",
        "entitlements" => "granted_at",
        _ => "updated_at",
    }
}

/// Every table's fingerprint, and the deliveries by status, read in the same scans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprints {
    pub tables: Vec<TableFingerprint>,
    pub deliveries_by_status: BTreeMap<String, i64>,
}

/// The column a table's rows are also counted by (delivery status), if any.
fn status_column(table: &str) -> Option<&'static str> {
    (table == "webhook_deliveries").then_some("status")
}

/// Fingerprints every table in the snapshot `client` is in.
pub async fn fingerprint(
    client: &Client,
    instant: OffsetDateTime,
) -> Result<Fingerprints, CatalystDbError> {
    fingerprint_parallel(client, &[], instant, u64::MAX).await
}

/// [`fingerprint`] on more connections: the snapshot `primary` is in (a REPEATABLE READ
/// transaction) is exported and imported by each of `helpers`, every table is split into block
/// ranges of about `range_blocks` blocks (on servers that scan `ctid` ranges), and the ranges'
/// partial fingerprints are added up: counts and the md5 sum are additive, so the result is the
/// same text one query over the whole table gives.
pub async fn fingerprint_parallel(
    primary: &Client,
    helpers: &[Client],
    instant: OffsetDateTime,
    range_blocks: u64,
) -> Result<Fingerprints, CatalystDbError> {
    let split = !helpers.is_empty();
    let ranges = plan_ranges(primary, if split { range_blocks } else { u64::MAX }).await?;
    let mut clients = vec![primary];
    if split {
        let snapshot: String = primary
            .query_one("SELECT pg_export_snapshot()", &[])
            .await?
            .get(0);
        for helper in helpers {
            import_snapshot(helper, &snapshot).await?;
            clients.push(helper);
        }
    }
    let parts = fingerprint_ranges(clients, ranges, instant).await?;
    for helper in helpers {
        helper.batch_execute("COMMIT").await?;
    }
    Ok(combine(&parts))
}

/// One block range of the table `TABLES[table]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRange {
    pub table: usize,
    pub range: BlockRange,
}

/// What one range holds: its rows, the sum of their md5s' first 64 bits, those written after
/// the instant, and (deliveries) its rows by status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialFingerprint {
    pub table: usize,
    pub rows: i64,
    /// Decimal text in JSON, as in [`TableFingerprint`]: the sum outgrows what JSON numbers
    /// carry exactly.
    #[serde(with = "decimal_text")]
    pub checksum: i128,
    pub written_after: i64,
    /// Rows by status, for a table counted by one (empty for the others).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_status: BTreeMap<String, i64>,
}

impl PartialFingerprint {
    /// Whether a stored part can be added up: its table is one this version fingerprints, and
    /// its statuses account for its rows exactly where the table is counted by status (a part
    /// stored without them would under-count the deliveries).
    pub fn fits(&self) -> bool {
        let Some(table) = TABLES.get(self.table) else {
            return false;
        };
        match status_column(table) {
            Some(_) => self.by_status.values().sum::<i64>() == self.rows,
            None => self.by_status.is_empty(),
        }
    }
}

mod decimal_text {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &i128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i128, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|_| D::Error::custom(format!("not an integer: {text:?}")))
    }
}

/// Every table split into block ranges of about `range_blocks` blocks (one range per table on
/// servers that cannot scan `ctid` ranges, or with `u64::MAX`).
pub async fn plan_ranges(
    client: &Client,
    range_blocks: u64,
) -> Result<Vec<TableRange>, CatalystDbError> {
    let split =
        range_blocks != u64::MAX && super::introspect::supports_block_ranges(client).await?;
    let blocks = if split {
        let names: Vec<String> = TABLES.iter().map(|t| (*t).to_owned()).collect();
        super::introspect::relation_blocks(client, &names)
            .await?
            .blocks
    } else {
        vec![0; TABLES.len()]
    };
    let mut ranges = Vec::new();
    for (t, blocks) in blocks.into_iter().enumerate() {
        ranges.extend(
            super::introspect::block_ranges(blocks, range_blocks, split)
                .into_iter()
                .map(|range| TableRange { table: t, range }),
        );
    }
    Ok(ranges)
}

/// The partial fingerprints of `ranges`, read on `clients` (each in the snapshot it is in, or
/// each statement in its own on a copy nothing writes to).
pub async fn fingerprint_ranges<'c>(
    clients: impl IntoIterator<Item = &'c Client>,
    ranges: Vec<TableRange>,
    instant: OffsetDateTime,
) -> Result<Vec<PartialFingerprint>, CatalystDbError> {
    on_connections(clients, ranges, |client, TableRange { table: t, range }| async move {
        let table = TABLES[t];
        // One row per status where the table is counted by one, else one group for all rows
        // (none for an empty range). Table and column names come from constants, never from
        // input.
        let group = status_column(table).map_or("NULL::text".to_owned(), |c| format!("t.{c}::text"));
        let sql = format!(
            "SELECT {group}, count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text,
                    count(*) FILTER (WHERE t.{column} > $1)
             FROM {table} t{filter} GROUP BY 1",
            column = written_column(table),
            filter = range.ctid_filter("t"),
        );
        let mut part = PartialFingerprint {
            table: t,
            rows: 0,
            checksum: 0,
            written_after: 0,
            by_status: BTreeMap::new(),
        };
        for row in client.query(&sql, &[&instant]).await? {
            let rows: i64 = row.get(1);
            let checksum: String = row.get(2);
            part.rows += rows;
            part.checksum += checksum
                .parse::<i128>()
                .expect("a sum of bigints is an integer far inside i128");
            part.written_after += row.get::<_, i64>(3);
            if let Some(status) = row.get::<_, Option<String>>(0) {
                part.by_status.insert(status, rows);
            }
        }
        Ok::<_, CatalystDbError>(part)
    })
    .await
}

/// Every table's fingerprint and the deliveries by status, the sums of their ranges' (a table
/// without any is empty).
pub fn combine(parts: &[PartialFingerprint]) -> Fingerprints {
    let mut tables: Vec<TableFingerprint> = TABLES
        .iter()
        .map(|table| TableFingerprint {
            table: (*table).to_owned(),
            rows: 0,
            checksum: "0".to_owned(),
            written_after: 0,
        })
        .collect();
    let mut sums = vec![0i128; TABLES.len()];
    let mut deliveries_by_status = BTreeMap::new();
    for part in parts {
        tables[part.table].rows += part.rows;
        tables[part.table].written_after += part.written_after;
        sums[part.table] += part.checksum;
        for (status, rows) in &part.by_status {
            *deliveries_by_status.entry(status.clone()).or_insert(0) += rows;
        }
    }
    for (table, sum) in tables.iter_mut().zip(sums) {
        table.checksum = sum.to_string();
    }
    Fingerprints {
        tables,
        deliveries_by_status,
    }
}

/// The baseline instant and where the WAL stood at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineInstant {
    #[serde(with = "time::serde::rfc3339")]
    pub instant: OffsetDateTime,
    pub wal_lsn: String,
    /// How long writers to the Catalyst Auth tables waited.
    pub writers_paused_ms: u64,
}

/// Whether the setup SQL's `catalyst_dr.lock_baseline_tables()` exists (from the catalog: needs no
/// privilege on the schema).
const LOCK_FUNCTION_EXISTS_SQL: &str = "
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'catalyst_dr' AND p.proname = 'lock_baseline_tables' AND p.pronargs = 0)";

/// Opens the baseline snapshot on `snapshot` (a REPEATABLE READ transaction left open for the
/// caller to fingerprint in, then commit) while `locker` holds the tables still.
pub async fn open_baseline(
    locker: &Client,
    snapshot: &Client,
    lock_timeout: Duration,
) -> Result<BaselineInstant, CatalystDbError> {
    let (instant, ()) = quiet_instant(locker, lock_timeout, async || {
        snapshot
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        // The transaction's snapshot is taken by its first statement, here, under the locks.
        snapshot.query_one("SELECT 1", &[]).await?;
        Ok(())
    })
    .await?;
    Ok(instant)
}

/// Opens the baseline snapshot on `holder` and leaves it held there for other sessions to
/// import (see [`HeldSnapshot`]) while `locker` holds the tables still.
pub async fn open_held_baseline(
    locker: &Client,
    holder: Client,
    tag: &str,
    hold: Duration,
    lock_timeout: Duration,
) -> Result<(BaselineInstant, HeldSnapshot), CatalystDbError> {
    quiet_instant(locker, lock_timeout, async || {
        hold_snapshot(locker, holder, tag, hold).await
    })
    .await
}

/// Runs `take_snapshot` while `locker` holds every table in SHARE mode, then waits for the
/// first whole second after it (the writers wait with it) and releases the tables.
async fn quiet_instant<T>(
    locker: &Client,
    lock_timeout: Duration,
    take_snapshot: impl AsyncFnOnce() -> Result<T, CatalystDbError>,
) -> Result<(BaselineInstant, T), CatalystDbError> {
    locker.batch_execute("BEGIN").await?;
    let result = async {
        locker
            .batch_execute(&format!(
                "SET LOCAL lock_timeout = '{}ms'",
                lock_timeout.as_millis()
            ))
            .await?;
        let locked_at = std::time::Instant::now();
        // A least-privilege drill role may not LOCK in SHARE MODE itself (that needs a write
        // privilege); the database-roles setup SQL gives it a function that does.
        if locker
            .query_one(LOCK_FUNCTION_EXISTS_SQL, &[])
            .await?
            .get::<_, bool>(0)
        {
            locker
                .batch_execute("SELECT catalyst_dr.lock_baseline_tables()")
                .await?;
        } else {
            locker
                .batch_execute(&format!("LOCK TABLE {} IN SHARE MODE", TABLES.join(", ")))
                .await?;
        }
        let taken = take_snapshot().await?;
        let now: OffsetDateTime = locker
            .query_one("SELECT clock_timestamp()", &[])
            .await?
            .get(0);
        let instant = next_whole_second(now);
        let wait = instant - now;
        if wait.is_positive() {
            tokio::time::sleep(wait.unsigned_abs()).await;
        }
        let (server_now, lsn): (OffsetDateTime, String) = {
            let row = locker
                .query_one(
                    "SELECT clock_timestamp(), pg_current_wal_insert_lsn()::text",
                    &[],
                )
                .await?;
            (row.get(0), row.get(1))
        };
        if server_now < instant {
            // The client's clock ran ahead of the server's: wait out the rest.
            tokio::time::sleep((instant - server_now).unsigned_abs()).await;
        }
        Ok::<_, CatalystDbError>((
            BaselineInstant {
                instant,
                wal_lsn: lsn,
                writers_paused_ms: locked_at.elapsed().as_millis() as u64,
            },
            taken,
        ))
    }
    .await;
    // Releasing the locks is all the locker's transaction is for.
    locker.batch_execute("COMMIT").await?;
    result
}

/// The `application_name` of a session holding a baseline snapshot: this, the holder's tag
/// (a drill's), and once exported the snapshot's id (about 20 characters; the whole stays
/// within PostgreSQL's 63 bytes).
const HOLDER_NAME: &str = "catalyst-dr baseline";

/// How long [`hold_snapshot`] waits for the holder to show its snapshot.
const HOLDER_SHOWS_WITHIN: Duration = Duration::from_secs(10);

/// A snapshot exported by a session that keeps its transaction open past the invocation that
/// opened it, so the invocations of a Map can each import it (`SET TRANSACTION SNAPSHOT`) and
/// read the source as of one instant. The session runs one statement, which PostgreSQL carries
/// on with whether or not its client is still there (the session turns
/// `client_connection_check_interval` off): a `DO` block that exports the snapshot, shows its id
/// in the session's `application_name` (after its tag), and sleeps for the hold. It ends when
/// [`release_snapshot`] cancels it, or when the hold is over; a snapshot held open keeps VACUUM
/// from removing the rows it can see, as a long `pg_dump` does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSnapshot {
    /// The exported snapshot's id.
    pub snapshot: String,
    /// Names the holder among the sessions (see [`release_snapshot`]).
    pub tag: String,
    /// The holding session's process id.
    pub pid: i32,
    /// When the holder stops of itself.
    #[serde(with = "time::serde::rfc3339")]
    pub held_until: OffsetDateTime,
}

/// Starts `holder`'s statement (see [`HeldSnapshot`]) and waits until `watcher` sees its
/// snapshot exported.
async fn hold_snapshot(
    watcher: &Client,
    holder: Client,
    tag: &str,
    hold: Duration,
) -> Result<HeldSnapshot, CatalystDbError> {
    let name = format!("{HOLDER_NAME} {tag}");
    let row = holder
        .query_one(
            "SELECT pid, backend_start, clock_timestamp() FROM pg_stat_activity WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    let (pid, backend_start, now): (i32, OffsetDateTime, OffsetDateTime) =
        (row.get(0), row.get(1), row.get(2));
    holder
        .execute(
            "SELECT set_config('application_name', $1, false), set_config('statement_timeout', '0', false), \
               CASE WHEN current_setting('server_version_num')::int >= 140000 \
                 THEN set_config('client_connection_check_interval', '0', false) END",
            &[&name],
        )
        .await?;
    let statement = format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
         DO $hold$ BEGIN \
           PERFORM set_config('application_name', '{name} ' || pg_export_snapshot(), false); \
           PERFORM pg_sleep({seconds}); \
         END $hold$; COMMIT",
        seconds = hold.as_secs()
    );
    let held = tokio::spawn(async move {
        // It ends when released, when the hold is over, or when this process goes; either way
        // the sessions that imported the snapshot have their own transactions.
        if let Err(e) = holder.batch_execute(&statement).await {
            tracing::info!(error = %e, "the baseline snapshot's holder ended");
        }
    });
    let shown_by = tokio::time::Instant::now() + HOLDER_SHOWS_WITHIN;
    let prefix = format!("{name} ");
    loop {
        // Activity is read once per transaction unless the snapshot of it is cleared.
        watcher
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await?;
        let name: Option<String> = watcher
            .query_opt(
                "SELECT application_name FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2",
                &[&pid, &backend_start],
            )
            .await?
            .map(|r| r.get(0));
        if let Some(snapshot) = name.as_deref().and_then(|n| n.strip_prefix(&prefix)) {
            return Ok(HeldSnapshot {
                snapshot: snapshot.to_owned(),
                tag: tag.to_owned(),
                pid,
                held_until: now + hold,
            });
        }
        if held.is_finished() || tokio::time::Instant::now() >= shown_by {
            held.abort();
            return Err(CatalystDbError::invalid(
                "baseline snapshot",
                format!(
                    "the session holding it (pid {pid}) did not export it within {HOLDER_SHOWS_WITHIN:?}"
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ends the holders tagged `tag` that still run (one, or also one an interrupted attempt
/// left); true when there was one. The tag is hex digits, from the caller.
pub async fn release_snapshot(client: &Client, tag: &str) -> Result<bool, CatalystDbError> {
    Ok(client
        .query_one(
            "SELECT coalesce(bool_or(pg_cancel_backend(pid)), false) FROM pg_stat_activity \
             WHERE datname = current_database() AND starts_with(application_name, $1)",
            &[&format!("{HOLDER_NAME} {tag} ")],
        )
        .await?
        .get(0))
}

/// Opens a REPEATABLE READ transaction on `client` in the exported snapshot `snapshot`.
pub async fn import_snapshot(client: &Client, snapshot: &str) -> Result<(), CatalystDbError> {
    // An exported snapshot's id is PostgreSQL's own text: hex digits and dashes.
    if snapshot.is_empty() || !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(CatalystDbError::invalid(
            "snapshot",
            format!("{snapshot:?} is not an exported snapshot's id"),
        ));
    }
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'"
        ))
        .await?;
    Ok(())
}

/// The first whole second strictly after `t`.
pub fn next_whole_second(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).expect("0 ns is valid") + time::Duration::SECOND
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_instant_is_the_next_whole_second() {
        assert_eq!(
            next_whole_second(datetime!(2026-11-26 10:00:00.250 UTC)),
            datetime!(2026-11-26 10:00:01 UTC)
        );
        assert_eq!(
            next_whole_second(datetime!(2026-11-26 10:00:00 UTC)),
            datetime!(2026-11-26 10:00:01 UTC)
        );
    }

    #[test]
    fn partial_fingerprints_carry_sums_past_json_numbers_as_text_and_add_up() {
        let big = i128::from(i64::MAX) * 3;
        let part = |table, checksum| super::PartialFingerprint {
            table,
            rows: 2,
            checksum,
            written_after: 1,
            by_status: BTreeMap::new(),
        };
        let value = serde_json::to_value(part(0, big)).expect("a JSON value");
        assert_eq!(value["checksum"], big.to_string());
        let back: super::PartialFingerprint = serde_json::from_value(value).expect("read back");
        assert_eq!(back, part(0, big));
        assert!(
            serde_json::from_value::<super::PartialFingerprint>(serde_json::json!(
                {"table": 0, "rows": 1, "checksum": "12x", "written_after": 0}
            ))
            .is_err()
        );
        let deliveries = TABLES
            .iter()
            .position(|t| *t == "webhook_deliveries")
            .expect("deliveries");
        let counted = |statuses: &[(&str, i64)]| super::PartialFingerprint {
            by_status: statuses
                .iter()
                .map(|(s, n)| ((*s).to_owned(), *n))
                .collect(),
            ..part(deliveries, 9)
        };
        let all = super::combine(&[
            part(0, big),
            part(0, -5),
            part(1, 7),
            counted(&[("pending", 1), ("failed", 1)]),
            counted(&[("pending", 2)]),
        ]);
        let tables = &all.tables;
        assert_eq!((tables[0].rows, tables[0].written_after), (4, 2));
        assert_eq!(tables[0].checksum, (big - 5).to_string());
        assert_eq!(tables[1].checksum, "7");
        assert_eq!((tables[2].rows, tables[2].checksum.as_str()), (0, "0"));
        assert_eq!(
            (
                tables[deliveries].rows,
                tables[deliveries].checksum.as_str()
            ),
            (4, "18")
        );
        assert_eq!(
            all.deliveries_by_status,
            BTreeMap::from([("failed".to_owned(), 1), ("pending".to_owned(), 3)])
        );

        // What can be added up: statuses that account for the deliveries' rows, none elsewhere.
        assert!(part(0, 1).fits() && counted(&[("pending", 2)]).fits());
        assert!(
            !part(deliveries, 1).fits(),
            "a deliveries part without statuses"
        );
        assert!(
            !counted(&[("pending", 1)]).fits(),
            "statuses short of the rows"
        );
        assert!(
            !super::PartialFingerprint {
                by_status: BTreeMap::from([("pending".to_owned(), 2)]),
                ..part(0, 1)
            }
            .fits()
        );
        assert!(
            !part(TABLES.len(), 1).fits(),
            "a table this version does not know"
        );
    }
}
