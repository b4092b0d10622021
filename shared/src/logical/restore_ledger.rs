//! The ledger a logical restore keeps in its target database, so that a restore spread over
//! many invocations (or retried) does each piece of work exactly once.
//!
//! Each piece is claimed and done in one transaction: `restore-logical-prepare` creates the
//! ledger in the transaction that creates the schema; a segment's `COPY` commits with its row in
//! `loaded`, the keys and post-data with their row in `done`. (Index builds and foreign key
//! validations are recorded by the catalog itself, and a materialized view's refresh writes its
//! row in the implicit transaction it runs in: see `catalyst_db::long_ddl`.) A crash
//! leaves either both or neither, and a second attempt at a claimed piece waits on the first
//! one's row lock, then skips it. `restore-logical-finish` drops the ledger with the staging
//! marker's `restoring=`, in one transaction, once its report is stored.
//!
//! ```text
//! catalyst_dr_restore.restore   one row: restore_id, run_id, reset, started_at, prepared_at
//! catalyst_dr_restore.loaded    a row per loaded segment: its rows and what reading it found
//! catalyst_dr_restore.done      a row per finish step done: 'keys', 'post-data before',
//!                               'view <k>' (each materialized view filled and indexed),
//!                               'post-data after', and 'reread-plan' once the re-read's block
//!                               ranges are planned ('schema' and 'post-data' from earlier
//!                               versions, whose post-data took fewer steps)
//! catalyst_dr_restore.phase_end a row per finish phase ended (`indexes`, `keys`, `post-data`,
//!                               `validations`): when a finish first found it done
//! catalyst_dr_restore.reread    a row per block range of the re-read: its table (the manifest's
//!                               index) and blocks, and once read its rows and content checksum
//! ```

use super::LogicalError;
use super::rowset::RowsetSummary;
use super::segment_object::SegmentRead;
use crate::catalyst_db::introspect::BlockRange;
use crate::catalyst_db::long_ddl::{DoneWhen, LongDdl};
use tokio_postgres::Client;

/// The ledger's schema: in the target's user schemas, so that `reset` drops it with the rest.
pub const SCHEMA: &str = "catalyst_dr_restore";

/// The restore a target's ledger belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Ledger {
    pub restore_id: String,
    pub run_id: String,
    /// Whether prepare dropped what an interrupted restore left first.
    pub reset: bool,
    /// Seconds prepare took to create the schema (its transaction's start to its end).
    pub schema_seconds: f64,
}

/// One loaded segment as the ledger holds it.
#[derive(Debug, Clone)]
pub struct LoadedSegment {
    pub segment: usize,
    pub rows: u64,
    pub read: SegmentRead,
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The statements that create the ledger; prepare runs them in the transaction of the schema's
/// own statements, so the ledger exists exactly when the schema does.
pub fn create_statements(restore_id: &str, run_id: &str, reset: bool) -> Vec<String> {
    vec![
        format!("CREATE SCHEMA {SCHEMA}"),
        format!(
            "CREATE TABLE {SCHEMA}.restore (restore_id text NOT NULL, run_id text NOT NULL, reset boolean NOT NULL, \
             started_at timestamptz NOT NULL, prepared_at timestamptz NOT NULL)"
        ),
        // now() is the transaction's start, clock_timestamp() the end of the schema's statements.
        format!(
            "INSERT INTO {SCHEMA}.restore VALUES ({}, {}, {reset}, now(), clock_timestamp())",
            literal(restore_id),
            literal(run_id)
        ),
        format!(
            "CREATE TABLE {SCHEMA}.loaded (segment integer PRIMARY KEY, rows bigint, read text, loaded_at timestamptz)"
        ),
        format!("CREATE TABLE {SCHEMA}.done (step text PRIMARY KEY)"),
        format!(
            "CREATE TABLE {SCHEMA}.reread (range integer PRIMARY KEY, tbl integer NOT NULL, start_block bigint NOT NULL, \
             end_block bigint, content text)"
        ),
    ]
}

/// One block range of the re-read: `table` is the manifest's index of its table; `content` is
/// what reading it found, None until it is read.
#[derive(Debug, Clone)]
pub struct RereadRange {
    pub range: usize,
    pub table: usize,
    pub blocks: BlockRange,
    pub content: Option<RowsetSummary>,
}

/// Stores the re-read's block ranges, in the transaction `claim_step(.., "reread-plan")` opened.
pub async fn store_reread_plan(
    client: &Client,
    ranges: &[(usize, BlockRange)],
) -> Result<(), LogicalError> {
    for (range, (table, blocks)) in ranges.iter().enumerate() {
        let (range, table) = (range as i32, *table as i32);
        let (start, end) = (i64::from(blocks.start), blocks.end.map(i64::from));
        client
            .execute(
                &format!(
                    "INSERT INTO {SCHEMA}.reread (range, tbl, start_block, end_block) VALUES ($1, $2, $3, $4)"
                ),
                &[&range, &table, &start, &end],
            )
            .await?;
    }
    Ok(())
}

/// The re-read's block ranges, in order; empty until they are planned.
pub async fn reread_plan(
    client: &Client,
    database: &str,
) -> Result<Vec<RereadRange>, LogicalError> {
    let rows = client
        .query(
            &format!(
                "SELECT range, tbl, start_block, end_block, content FROM {SCHEMA}.reread ORDER BY range"
            ),
            &[],
        )
        .await?;
    rows.into_iter()
        .map(|r| {
            let content: Option<String> = r.get(4);
            let block = |b: i64| u32::try_from(b).unwrap_or(u32::MAX);
            Ok(RereadRange {
                range: r.get::<_, i32>(0) as usize,
                table: r.get::<_, i32>(1) as usize,
                blocks: BlockRange {
                    start: block(r.get(2)),
                    end: r.get::<_, Option<i64>>(3).map(block),
                },
                content: content
                    .map(|c| serde_json::from_str(&c))
                    .transpose()
                    .map_err(|source| LogicalError::CorruptManifest {
                        key: format!("{SCHEMA}.reread in database {database}"),
                        source,
                    })?,
            })
        })
        .collect()
}

/// Records what re-reading `range` found (a repeated read stores the same).
pub async fn store_reread(
    client: &Client,
    range: usize,
    content: &RowsetSummary,
) -> Result<(), LogicalError> {
    let content = serde_json::to_string(content).expect("a rowset summary always serialises");
    client
        .execute(
            &format!("UPDATE {SCHEMA}.reread SET content = $2 WHERE range = $1"),
            &[&(range as i32), &content],
        )
        .await?;
    Ok(())
}

/// The target's ledger; None when it has none.
pub async fn read(client: &Client) -> Result<Option<Ledger>, LogicalError> {
    let exists: bool = client
        .query_one(
            &format!("SELECT to_regclass('{SCHEMA}.restore') IS NOT NULL"),
            &[],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let row = client
        .query_opt(
            &format!(
                "SELECT restore_id, run_id, reset, extract(epoch FROM prepared_at - started_at)::float8 FROM {SCHEMA}.restore"
            ),
            &[],
        )
        .await?;
    Ok(row.map(|r| Ledger {
        restore_id: r.get(0),
        run_id: r.get(1),
        reset: r.get(2),
        schema_seconds: r.get(3),
    }))
}

/// Opens a transaction and claims `segment`; false (and no transaction) when another attempt
/// loaded it. Waits while another attempt holds the claim.
pub async fn claim_segment(client: &Client, segment: usize) -> Result<bool, LogicalError> {
    let segment = i32::try_from(segment).expect("a manifest has fewer than 2^31 segments");
    claim(
        client,
        &format!("INSERT INTO {SCHEMA}.loaded (segment) VALUES ($1) ON CONFLICT DO NOTHING"),
        &[&segment],
    )
    .await
}

/// Opens a transaction and claims the finish step `step`; false (and no transaction) when it
/// is done already.
pub async fn claim_step(client: &Client, step: &str) -> Result<bool, LogicalError> {
    claim(
        client,
        &format!("INSERT INTO {SCHEMA}.done (step) VALUES ($1) ON CONFLICT DO NOTHING"),
        &[&step],
    )
    .await
}

/// Whether the finish step `step` is done.
pub async fn step_done(client: &Client, step: &str) -> Result<bool, LogicalError> {
    Ok(client
        .query_one(
            &format!("SELECT EXISTS (SELECT 1 FROM {SCHEMA}.done WHERE step = $1)"),
            &[&step],
        )
        .await?
        .get(0))
}

async fn claim(
    client: &Client,
    insert: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<bool, LogicalError> {
    client.batch_execute("BEGIN").await?;
    let claimed = client.execute(insert, params).await? == 1;
    if !claimed {
        client.batch_execute("ROLLBACK").await?;
    }
    Ok(claimed)
}

/// Records what loading the claimed `segment` found and commits it with the segment's rows.
pub async fn commit_segment(
    client: &Client,
    segment: usize,
    rows: u64,
    read: &SegmentRead,
) -> Result<(), LogicalError> {
    let segment = i32::try_from(segment).expect("a manifest has fewer than 2^31 segments");
    let rows = i64::try_from(rows).expect("a segment has fewer than 2^63 rows");
    let read = serde_json::to_string(read).expect("a segment read always serialises");
    client
        .execute(
            &format!(
                "UPDATE {SCHEMA}.loaded SET rows = $2, read = $3, loaded_at = clock_timestamp() WHERE segment = $1"
            ),
            &[&segment, &rows, &read],
        )
        .await?;
    commit(client).await
}

pub async fn commit(client: &Client) -> Result<(), LogicalError> {
    client.batch_execute("COMMIT").await?;
    Ok(())
}

/// Records that the finish reached the end of `phase` now, unless an earlier finish did. The
/// table is created by the first finish that records one (ledgers prepared by earlier versions
/// lack it).
pub async fn phase_ended(client: &Client, phase: &str) -> Result<(), LogicalError> {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {SCHEMA}.phase_end (phase text PRIMARY KEY, at timestamptz NOT NULL)"
        ))
        .await?;
    client
        .execute(
            &format!(
                "INSERT INTO {SCHEMA}.phase_end VALUES ($1, clock_timestamp()) ON CONFLICT DO NOTHING"
            ),
            &[&phase],
        )
        .await?;
    Ok(())
}

/// Seconds from the last segment loaded to the end of each of `phases` (recorded by
/// [`phase_ended`]; 0 for one not recorded).
pub async fn phase_ends(client: &Client, phases: &[&str]) -> Result<Vec<f64>, LogicalError> {
    let mut ends = Vec::with_capacity(phases.len());
    for phase in phases {
        let seconds: Option<f64> = client
            .query_one(
                &format!(
                    "SELECT extract(epoch FROM (SELECT at FROM {SCHEMA}.phase_end WHERE phase = $1) \
                       - (SELECT max(loaded_at) FROM {SCHEMA}.loaded))::float8"
                ),
                &[phase],
            )
            .await?
            .get(0);
        ends.push(seconds.unwrap_or(0.0).max(0.0));
    }
    Ok(ends)
}

/// Every loaded segment, and the seconds from the end of prepare to the last load.
pub async fn loaded(
    client: &Client,
    database: &str,
) -> Result<(Vec<LoadedSegment>, f64), LogicalError> {
    let rows = client
        .query(
            &format!("SELECT segment, rows, read FROM {SCHEMA}.loaded ORDER BY segment"),
            &[],
        )
        .await?;
    let mut segments = Vec::with_capacity(rows.len());
    for r in rows {
        let read: String = r.get(2);
        segments.push(LoadedSegment {
            segment: r.get::<_, i32>(0) as usize,
            rows: r.get::<_, i64>(1) as u64,
            read: serde_json::from_str(&read).map_err(|source| LogicalError::CorruptManifest {
                key: format!("{SCHEMA}.loaded in database {database}"),
                source,
            })?,
        });
    }
    let seconds: Option<f64> = client
        .query_one(
            &format!(
                "SELECT extract(epoch FROM max(l.loaded_at) - min(r.prepared_at))::float8 FROM {SCHEMA}.loaded l, {SCHEMA}.restore r"
            ),
            &[],
        )
        .await?
        .get(0);
    Ok((segments, seconds.unwrap_or(0.0).max(0.0)))
}

/// `statements` as one finish step done outside any claim: sent as one multi-statement query
/// (one implicit transaction) that ends by recording `step`, so the step is done exactly when
/// every statement is, and it can outlast the invocation that sends it
/// (`catalyst_db::long_ddl`).
pub fn step_ddl(step: &str, label: String, statements: &[String]) -> LongDdl {
    let record = format!(
        "INSERT INTO {SCHEMA}.done (step) VALUES ({}) ON CONFLICT DO NOTHING",
        literal(step)
    );
    LongDdl {
        label,
        statement: statements
            .iter()
            .map(String::as_str)
            .chain([record.as_str()])
            .collect::<Vec<_>>()
            .join(";\n"),
        done: DoneWhen::Marked {
            table: format!("{SCHEMA}.done"),
            step: step.to_owned(),
        },
    }
}

/// The statement that drops the ledger (run in the transaction that ends the restore).
pub fn drop_statement() -> String {
    format!("DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
}
