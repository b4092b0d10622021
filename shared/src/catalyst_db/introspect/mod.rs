//! The SQL of logical backups: the exported snapshot every backup connection reads through, the
//! catalog queries that capture the schema with PostgreSQL's own functions (`format_type`,
//! `pg_get_expr`, `pg_get_constraintdef`, `pg_get_indexdef`), the `COPY` statements that stream
//! table contents, and the DDL a restore replays into an empty staging database.
//!
//! Values travel as bind parameters. Identifiers come from the source catalog and are always
//! double-quoted by [`quote_ident`]; the type, default and constraint texts are the ones
//! PostgreSQL itself renders for its catalog (as `pg_dump` uses them).

use super::CatalystDbError;
use super::long_ddl::{DoneWhen, LongDdl};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

/// Session settings that fix the text `COPY` renders (dates, floats, bytea), so a content
/// checksum computed on the source equals the one computed on a restored copy.
///
/// The server's keepalives end the session of a client that vanished (a Lambda sandbox torn
/// down at its timeout sends no FIN) within about 90 seconds, rather than the system's two
/// hours: its open transaction, a backup's exported snapshot or a restore's claim on a segment,
/// is rolled back, and the retry that waits on it (at most `lock_timeout`, then retried) goes on.
pub const SESSION_SETTINGS: &str = "SET client_encoding = 'UTF8'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
     SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET bytea_output = 'hex'; SET statement_timeout = 0; \
     SET lock_timeout = '60s'; SET idle_in_transaction_session_timeout = 0; \
     SET tcp_keepalives_idle = 60; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3; \
     SET search_path = ''; SET check_function_bodies = off";

/// The application name backup connections identify with (visible in `pg_stat_activity`).
pub const BACKUP_APPLICATION_NAME: &str = "catalyst-dr logical-backup";
/// The application name restore connections identify with.
pub const RESTORE_APPLICATION_NAME: &str = "catalyst-dr logical-restore";

/// The one instant a backup reads every table at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInstant {
    /// The exported snapshot's name (valid only while the exporting transaction is open).
    pub snapshot_id: String,
    /// Server clock when the snapshot was taken (RFC 3339, UTC).
    pub server_time: String,
    /// WAL position when the snapshot was taken (`pg_current_wal_lsn`, or the replay position on a standby).
    pub lsn: String,
    pub database: String,
    pub server_version: String,
}

/// Double-quotes an identifier (doubling embedded quotes), as `quote_ident` would, always.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A schema-qualified, quoted name.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// A SQL string literal (standard_conforming_strings is on in every supported version).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

async fn session(client: &Client, application_name: &str) -> Result<(), CatalystDbError> {
    client.batch_execute(SESSION_SETTINGS).await?;
    client
        .execute(
            "SELECT set_config('application_name', $1, false)",
            &[&application_name],
        )
        .await?;
    Ok(())
}

/// Opens the backup's REPEATABLE READ, read-only transaction and exports its snapshot; the
/// transaction must stay open until every worker has imported it.
pub async fn begin_exported_snapshot(client: &Client) -> Result<SnapshotInstant, CatalystDbError> {
    session(client, BACKUP_APPLICATION_NAME).await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let row = client
        .query_one(
            "SELECT pg_export_snapshot(), \
                    to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
                    current_database(), current_setting('server_version')",
            &[],
        )
        .await?;
    Ok(SnapshotInstant {
        snapshot_id: row.get(0),
        server_time: row.get(1),
        lsn: row.get(2),
        database: row.get(3),
        server_version: row.get(4),
    })
}

/// Opens a REPEATABLE READ, read-only transaction on a quiescent read source: one invocation
/// of a fanned-out backup, which has no exported snapshot to share.
pub async fn begin_read_only(client: &Client) -> Result<(), CatalystDbError> {
    session(client, BACKUP_APPLICATION_NAME).await?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    Ok(())
}

/// What a fanned-out backup records of its read source, and checks again at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadSourceState {
    pub database: String,
    pub server_version: String,
    /// The server's WAL position.
    pub lsn: String,
    /// Rows inserted, updated or deleted in the database's user tables since the server's
    /// statistics began (`pg_stat_user_tables`): on a quiescent copy it never moves.
    pub user_table_writes: i64,
}

/// Reads [`ReadSourceState`]; call it outside a transaction that read statistics already (a
/// transaction keeps the statistics it saw first).
pub async fn read_source_state(client: &Client) -> Result<ReadSourceState, CatalystDbError> {
    let row = client
        .query_one(
            "SELECT current_database(), current_setting('server_version'), \
                    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
                    (SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint FROM pg_stat_user_tables)",
            &[],
        )
        .await?;
    Ok(ReadSourceState {
        database: row.get(0),
        server_version: row.get(1),
        lsn: row.get(2),
        user_table_writes: row.get(3),
    })
}

/// The size of the connected database on disk (`pg_database_size`), in bytes.
pub async fn database_bytes(client: &Client) -> Result<u64, CatalystDbError> {
    let bytes: i64 = client
        .query_one("SELECT pg_database_size(current_database())", &[])
        .await?
        .get(0);
    Ok(bytes.max(0) as u64)
}

/// Opens a worker's transaction on the snapshot `snapshot_id` exported by [`begin_exported_snapshot`].
pub async fn import_snapshot(client: &Client, snapshot_id: &str) -> Result<(), CatalystDbError> {
    // SET TRANSACTION SNAPSHOT takes no bind parameter; snapshot names are hex digits and dashes.
    if snapshot_id.is_empty()
        || !snapshot_id
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == '-')
    {
        return Err(CatalystDbError::invalid(
            "snapshot_id",
            "not a PostgreSQL snapshot name",
        ));
    }
    session(client, BACKUP_APPLICATION_NAME).await?;
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(snapshot_id)
        ))
        .await?;
    Ok(())
}

/// Sets the fixed session settings on a restore connection (and on a connection that
/// recomputes content checksums).
pub async fn restore_session(client: &Client) -> Result<(), CatalystDbError> {
    session(client, RESTORE_APPLICATION_NAME).await
}

pub async fn commit(client: &Client) -> Result<(), CatalystDbError> {
    client.batch_execute("COMMIT").await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The captured schema.

pub mod objects;
pub mod order;
pub mod tables;

pub use objects::{CapturedExtension, MATERIALIZED_VIEW_DATA, NotCaptured, SchemaObject};
pub use tables::{
    CapturedColumn, CapturedConstraint, CapturedIndex, CapturedTable, PartitionOf, TableKind,
};

/// Everything a logical backup knows of the database's schema, and how to recreate it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedSchema {
    /// Extensions with their versions (a restore target may already have them).
    pub extensions: Vec<CapturedExtension>,
    /// Every object created before the data, in restore order (see [`objects`]).
    pub pre_data: Vec<SchemaObject>,
    /// Every table: those that store rows (whose data the backup holds) and partitioned ones.
    pub tables: Vec<CapturedTable>,
    pub sequences: Vec<CapturedSequence>,
    /// Everything recreated after the data, keys and indexes, in order.
    pub post_data: Vec<SchemaObject>,
    /// Objects the backup does not capture (each makes it incomplete unless ignored).
    pub not_captured: Vec<NotCaptured>,
}

impl CapturedSchema {
    /// The tables whose rows the backup holds.
    pub fn stored_tables(&self) -> Vec<&CapturedTable> {
        self.tables.iter().filter(|t| t.stores_rows()).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedSequence {
    pub schema: String,
    pub name: String,
    pub data_type: String,
    pub start: i64,
    pub min: i64,
    pub max: i64,
    pub increment: i64,
    pub cycle: bool,
    pub cache: i64,
    /// The sequence's `last_value` and `is_called`, read from the sequence itself when the
    /// backup runs (sequences are not transactional, so it is never behind the data).
    pub last_value: i64,
    pub is_called: bool,
    /// `identity` (created with its column), `owned` (a serial column's) or `standalone`.
    pub ownership: String,
    /// The owning column, `(schema, table, column)`, for identity and owned sequences.
    pub owner: Option<(String, String, String)>,
}

impl CapturedSequence {
    /// Sequence options; an identity column's sequence takes its type from the column, so `AS`
    /// is only given for the others.
    pub fn options(&self) -> String {
        let data_type = if self.ownership == "identity" {
            String::new()
        } else {
            format!("AS {} ", self.data_type)
        };
        format!(
            "{data_type}INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {}",
            self.increment,
            self.min,
            self.max,
            self.start,
            self.cache,
            if self.cycle { "CYCLE" } else { "NO CYCLE" }
        )
    }
}

const USER_NAMESPACE: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'";

fn not_extension_member(classid: &str, oid: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{classid}'::regclass AND e.objid = {oid} AND e.deptype = 'e')"
    )
}

/// Captures the schema as seen by the connection's transaction (whose `search_path` is empty,
/// so every name PostgreSQL renders is schema-qualified).
pub async fn capture_schema(client: &Client) -> Result<CapturedSchema, CatalystDbError> {
    let tables = tables::capture_tables(client).await?;
    let sequences = capture_sequences(client).await?;
    let extensions = objects::capture_extensions(client).await?;
    let pre_data = objects::pre_data(client, &extensions, &tables, &sequences).await?;
    let post_data = objects::post_data(client, &tables).await?;
    let not_captured = objects::not_captured(client).await?;
    Ok(CapturedSchema {
        extensions,
        pre_data,
        tables,
        sequences,
        post_data,
        not_captured,
    })
}

async fn capture_sequences(client: &Client) -> Result<Vec<CapturedSequence>, CatalystDbError> {
    let mut sequences = sequence_definitions(client).await?;
    read_sequence_positions(client, &mut sequences).await?;
    Ok(sequences)
}

/// Every sequence's definition and owner, its position not yet read.
async fn sequence_definitions(client: &Client) -> Result<Vec<CapturedSequence>, CatalystDbError> {
    Ok(client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, format_type(s.seqtypid, NULL), s.seqstart, s.seqmin, s.seqmax, \
                        s.seqincrement, s.seqcycle, s.seqcache, NULL::bigint, \
                        CASE d.deptype WHEN 'i' THEN 'identity' WHEN 'a' THEN 'owned' ELSE 'standalone' END, \
                        tn.nspname::text, tc.relname::text, ta.attname::text \
                 FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid \
                      AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0 AND d.deptype IN ('a', 'i') \
                 LEFT JOIN pg_class tc ON tc.oid = d.refobjid LEFT JOIN pg_namespace tn ON tn.oid = tc.relnamespace \
                 LEFT JOIN pg_attribute ta ON ta.attrelid = d.refobjid AND ta.attnum = d.refobjsubid \
                 WHERE c.relpersistence <> 't' AND {USER_NAMESPACE} AND {} ORDER BY 1, 2",
                not_extension_member("pg_class", "c.oid")
            ),
            &[],
        )
        .await?
        .into_iter()
        .map(|r| {
            let owner_schema: Option<String> = r.get(11);
            let owner_table: Option<String> = r.get(12);
            let owner_column: Option<String> = r.get(13);
            CapturedSequence {
                schema: r.get(0),
                name: r.get(1),
                data_type: r.get(2),
                start: r.get(3),
                min: r.get(4),
                max: r.get(5),
                increment: r.get(6),
                cycle: r.get(7),
                cache: r.get(8),
                last_value: 0,
                is_called: false,
                ownership: r.get(10),
                owner: match (owner_schema, owner_table, owner_column) {
                    (Some(s), Some(t), Some(c)) => Some((s, t, c)),
                    _ => None,
                },
            }
        })
        .collect())
}

/// Each sequence's `last_value` and `is_called`, which only the sequence itself holds.
async fn read_sequence_positions(
    client: &Client,
    sequences: &mut [CapturedSequence],
) -> Result<(), CatalystDbError> {
    for s in sequences {
        let row = client
            .query_one(
                &format!(
                    "SELECT last_value, is_called FROM {}",
                    qualified(&s.schema, &s.name)
                ),
                &[],
            )
            .await?;
        s.last_value = row.get(0);
        s.is_called = row.get(1);
    }
    Ok(())
}

/// Takes ACCESS SHARE locks on the captured tables for the rest of the backup transaction, so
/// no DDL changes them while their contents are read (as `pg_dump` does).
pub async fn lock_tables(client: &Client, tables: &[CapturedTable]) -> Result<(), CatalystDbError> {
    if tables.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = tables
        .iter()
        .map(|t| qualified(&t.schema, &t.name))
        .collect();
    client
        .batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS SHARE MODE",
            names.join(", ")
        ))
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// COPY.

/// A range of a table's blocks, `[start, end)`; `end: None` runs to the end of the table, rows
/// added after the range was planned included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRange {
    pub start: u32,
    pub end: Option<u32>,
}

impl BlockRange {
    pub const WHOLE: BlockRange = BlockRange {
        start: 0,
        end: None,
    };

    /// ` WHERE <alias>.ctid ...` selecting the rows stored in this range's blocks; empty for the
    /// whole table.
    pub fn ctid_filter(&self, alias: &str) -> String {
        match (self.start, self.end) {
            (0, None) => String::new(),
            (start, None) => format!(" WHERE {alias}.ctid >= '({start},0)'::tid"),
            (start, Some(end)) => format!(
                " WHERE {alias}.ctid >= '({start},0)'::tid AND {alias}.ctid < '({end},0)'::tid"
            ),
        }
    }
}

/// The block ranges of a table of `blocks` blocks: one range for the whole table when it is no
/// larger than `segment_blocks` or when the server cannot scan block ranges.
pub fn block_ranges(blocks: u64, segment_blocks: u64, ranges_supported: bool) -> Vec<BlockRange> {
    let segment_blocks = segment_blocks.max(1);
    if !ranges_supported || blocks <= segment_blocks {
        return vec![BlockRange::WHOLE];
    }
    let count = blocks.div_ceil(segment_blocks);
    (0..count)
        .map(|i| {
            let start = block_number(i * segment_blocks);
            let end = (i + 1 < count).then(|| block_number((i + 1) * segment_blocks));
            BlockRange { start, end }
        })
        .collect()
}

fn block_number(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Whether the server scans a `ctid` range by reading only its blocks (TID range scans,
/// PostgreSQL 14 and later). Older servers would scan the whole table once per range.
pub async fn supports_block_ranges(client: &Client) -> Result<bool, CatalystDbError> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    Ok(version >= 140_000)
}

/// The sizes of tables in blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableBlocks {
    /// The server's block size in bytes.
    pub block_size: u64,
    /// Each table's size in blocks, in the order asked.
    pub blocks: Vec<u64>,
}

pub async fn table_blocks(
    client: &Client,
    tables: &[&CapturedTable],
) -> Result<TableBlocks, CatalystDbError> {
    let names: Vec<String> = tables.iter().map(|t| t.qualified_name()).collect();
    relation_blocks(client, &names).await
}

/// The sizes in blocks of the relations `names` name (as `::regclass` reads them).
pub async fn relation_blocks(
    client: &Client,
    names: &[String],
) -> Result<TableBlocks, CatalystDbError> {
    let block_size: i64 = client
        .query_one("SELECT current_setting('block_size')::bigint", &[])
        .await?
        .get(0);
    let rows = client
        .query(
            "SELECT pg_relation_size(n.name::regclass) FROM unnest($1::text[]) WITH ORDINALITY AS n(name, i) ORDER BY n.i",
            &[&names],
        )
        .await?;
    let block_size = block_size.max(1) as u64;
    Ok(TableBlocks {
        block_size,
        blocks: rows
            .into_iter()
            .map(|r| r.get::<_, i64>(0).max(0) as u64 / block_size)
            .collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// Restore DDL.

/// The objects in user schemas of the connected database that no extension owns (relations,
/// types, functions): a restore target must have none. Extensions alone are allowed, as
/// managed PostgreSQL often has them installed up front.
pub async fn user_objects(client: &Client) -> Result<Vec<String>, CatalystDbError> {
    let rows = client
        .query(
            &format!(
                "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {USER_NAMESPACE} AND {} \
                 UNION ALL SELECT t.oid::regtype::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                   WHERE {} AND {USER_NAMESPACE} AND {} \
                 UNION ALL SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                   WHERE {USER_NAMESPACE} AND {} AND {} ORDER BY 1",
                not_extension_member("pg_class", "c.oid"),
                objects::NAMED_TYPE,
                not_extension_member("pg_type", "t.oid"),
                not_extension_member("pg_proc", "p.oid"),
                objects::NOT_BUILT_IN_TO_A_TYPE,
            ),
            &[],
        )
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// Returns the target's user schemas to an empty database's: drops every user schema (with
/// everything in it, extensions included) and recreates `public`. Only for a staging database a
/// restore of the same backup left half-filled.
pub async fn reset_user_schemas(client: &Client) -> Result<(), CatalystDbError> {
    let schemas: Vec<String> = client
        .query(&format!("SELECT quote_ident(n.nspname) FROM pg_namespace n WHERE {USER_NAMESPACE} ORDER BY 1"), &[])
        .await?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let mut batch = String::from("BEGIN;\n");
    for s in &schemas {
        batch.push_str(&format!("DROP SCHEMA {s} CASCADE;\n"));
    }
    // The backup's owner and privileges of `public` follow with the rest of its post-data.
    batch.push_str("CREATE SCHEMA public;\nCOMMENT ON SCHEMA public IS 'standard public schema';\nGRANT USAGE ON SCHEMA public TO PUBLIC;\nCOMMIT;");
    if let Err(e) = client.batch_execute(&batch).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e.into());
    }
    Ok(())
}

/// The statements run after the data is loaded, in three steps.
///
/// `indexes`: every index, those behind primary keys and unique constraints included, as
/// `CREATE [UNIQUE] INDEX`, each on its own ([`long_ddl`]: a build can outlast the invocation
/// that sends it). These take SHARE locks, which do not conflict with each other or with reads,
/// so they run on several connections at once, several on one table too, alongside the
/// re-reading of the restored tables. `ordered`, one after the other in one transaction: the
/// primary keys and unique constraints attached to their built indexes (`USING INDEX`: no second
/// build, no scan), exclusion constraints and deferrable keys built the classic way, check
/// constraints added `NOT VALID` in the source, foreign keys (they need the referenced keys, and
/// two of them could otherwise lock a pair of tables in opposite orders), and sequence
/// ownership. A foreign key valid in the source is added `NOT VALID` there (no scan inside the
/// transaction) and checked afterwards by `validations`, one list per table (each validation
/// takes a lock on its table that the table's other validations wait for), each on its own too.
/// A partitioned table's foreign keys, and those referencing one, are validated as they are
/// added: PostgreSQL before 18 refuses the first `NOT VALID`, and leaves the second's references
/// to each partition invalid after `VALIDATE CONSTRAINT`. They are `added_alone`: each on its own
/// after the transaction (it scans, so it can outlast an invocation too), one after the other in
/// the source's order, before the post-data objects (a comment on one needs it). Those
/// referencing a partitioned table and `NOT VALID` in the source go there too, in their place:
/// PostgreSQL names each one's copies per referenced partition by the order they were made in. A
/// manifest older than `references_partitioned` keeps them all in the transaction.
///
/// [`long_ddl`]: super::long_ddl
pub struct PostData {
    pub indexes: Vec<LongDdl>,
    pub ordered: Vec<String>,
    pub added_alone: Vec<LongDdl>,
    pub validations: Vec<Vec<LongDdl>>,
}

fn index_build(schema: &str, name: &str, statement: &str) -> LongDdl {
    let relation = qualified(schema, name);
    LongDdl {
        label: format!("index {relation}"),
        statement: statement.to_owned(),
        done: DoneWhen::Exists { relation },
    }
}

pub fn post_data_ddl(schema: &CapturedSchema) -> PostData {
    let mut indexes = Vec::new();
    let mut keys = Vec::new();
    let mut checks = Vec::new();
    let mut attachments = Vec::new();
    let mut foreign_keys = Vec::new();
    let mut added_alone = Vec::new();
    let mut validations = Vec::new();
    for t in &schema.tables {
        let name = t.qualified_name();
        for c in t
            .constraints
            .iter()
            .filter(|c| matches!(c.kind.as_str(), "p" | "u" | "x"))
        {
            let constraint = quote_ident(&c.name);
            match c.attachable_index().filter(|_| t.stores_rows()) {
                Some(index) => {
                    indexes.push(index_build(&t.schema, &c.name, index));
                    let kind = if c.kind == "p" {
                        "PRIMARY KEY"
                    } else {
                        "UNIQUE"
                    };
                    keys.push(format!("ALTER TABLE ONLY {name} ADD CONSTRAINT {constraint} {kind} USING INDEX {constraint}"));
                }
                // A partitioned table's key is added to it alone (an invalid index until its
                // partitions' keys are attached), as are exclusion constraints and deferrable keys.
                None => keys.push(format!(
                    "ALTER TABLE ONLY {name} ADD CONSTRAINT {constraint} {}",
                    c.definition
                )),
            }
            if let Some(parent) = &c.parent_index {
                attachments.push(format!(
                    "ALTER INDEX {parent} ATTACH PARTITION {}",
                    qualified(&t.schema, &c.name)
                ));
            }
        }
        // NOT VALID checks reach inheritance children and partitions from their parent.
        checks.extend(
            t.constraints
                .iter()
                .filter(|c| c.kind == "c" && !c.is_inline_check() && c.local)
                .map(|c| {
                    format!(
                        "ALTER TABLE {name} ADD CONSTRAINT {} {}",
                        quote_ident(&c.name),
                        c.definition
                    )
                }),
        );
        for index in &t.indexes {
            indexes.push(index_build(&t.schema, &index.name, &index.definition));
            if let Some(parent) = &index.parent_index {
                attachments.push(format!(
                    "ALTER INDEX {parent} ATTACH PARTITION {}",
                    qualified(&t.schema, &index.name)
                ));
            }
        }
        // A partition's copy of its parent's foreign key is made again by the parent's.
        let mut table_validations = Vec::new();
        for c in t.constraints.iter().filter(|c| c.kind == "f" && !c.cloned) {
            let constraint = quote_ident(&c.name);
            let added = format!(
                "ALTER TABLE {name} ADD CONSTRAINT {constraint} {}",
                c.definition
            );
            let label = format!("foreign key {constraint} of {name}");
            let (table, constraint_name) = (name.clone(), c.name.clone());
            // Validated later only where PostgreSQL validates all of it (see above).
            match c.references_partitioned {
                Some(false) if c.validated && t.stores_rows() => {
                    foreign_keys.push((c.oid, format!("{added} NOT VALID")));
                    table_validations.push(LongDdl {
                        label,
                        statement: format!("ALTER TABLE {name} VALIDATE CONSTRAINT {constraint}"),
                        done: DoneWhen::Validated {
                            table,
                            constraint: constraint_name,
                        },
                    });
                }
                Some(references_partitioned) if c.validated || references_partitioned => {
                    added_alone.push((
                        c.oid,
                        LongDdl {
                            label,
                            statement: added,
                            done: DoneWhen::Added {
                                table,
                                constraint: constraint_name,
                            },
                        },
                    ))
                }
                _ => foreign_keys.push((c.oid, added)),
            }
        }
        if !table_validations.is_empty() {
            validations.push(table_validations);
        }
    }
    let mut ordered = keys;
    ordered.extend(checks);
    ordered.extend(attachments);
    foreign_keys.sort_by_key(|(oid, _)| *oid);
    ordered.extend(foreign_keys.into_iter().map(|(_, statement)| statement));
    added_alone.sort_by_key(|(oid, _)| *oid);
    for s in schema.sequences.iter().filter(|s| s.ownership == "owned") {
        if let Some((os, ot, oc)) = &s.owner {
            ordered.push(format!(
                "ALTER SEQUENCE {} OWNED BY {}.{}",
                qualified(&s.schema, &s.name),
                qualified(os, ot),
                quote_ident(oc)
            ));
        }
    }
    PostData {
        indexes,
        ordered,
        added_alone: added_alone.into_iter().map(|(_, ddl)| ddl).collect(),
        validations,
    }
}

/// The roles `objects` name that the connected cluster does not have.
pub async fn missing_roles(
    client: &Client,
    objects: &[SchemaObject],
) -> Result<Vec<String>, CatalystDbError> {
    let mut roles: Vec<String> = objects
        .iter()
        .flat_map(|o| o.roles.iter().cloned())
        .collect();
    roles.sort();
    roles.dedup();
    let rows = client
        .query("SELECT r FROM unnest($1::text[]) r WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) ORDER BY 1", &[&roles])
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// The backup's extensions that `actual` (the restored database's) lacks or has at another
/// version or in another schema.
pub fn extension_differences(
    expected: &[CapturedExtension],
    actual: &[CapturedExtension],
) -> Vec<String> {
    expected
        .iter()
        .filter_map(|x| match actual.iter().find(|a| a.name == x.name) {
            None => Some(format!("extension {} is missing", x.name)),
            Some(a) if a.version != x.version || a.schema != x.schema => Some(format!(
                "extension {} is version {} in schema {}, the backup has version {} in schema {}",
                x.name, a.version, a.schema, x.version, x.schema
            )),
            Some(_) => None,
        })
        .collect()
}

/// Every difference between the schema a backup captured and the one captured again from the
/// restored database: objects missing, extra or defined differently (sequence positions and
/// extensions are compared on their own).
pub fn schema_differences(expected: &CapturedSchema, actual: &CapturedSchema) -> Vec<String> {
    fn compare<T: Serialize>(
        what: &str,
        expected: Vec<(String, T)>,
        actual: Vec<(String, T)>,
        out: &mut Vec<String>,
    ) {
        let json = |v: &T| serde_json::to_value(v).unwrap_or_default();
        for (name, e) in &expected {
            match actual.iter().find(|(n, _)| n == name) {
                None => out.push(format!(
                    "{what} {name} is missing from the restored database"
                )),
                Some((_, a)) if json(a) != json(e) => out.push(format!(
                    "{what} {name} is defined differently in the restored database: {}",
                    first_difference(&json(e), &json(a))
                )),
                Some(_) => {}
            }
        }
        for (name, _) in actual
            .iter()
            .filter(|(n, _)| !expected.iter().any(|(e, _)| e == n))
        {
            out.push(format!(
                "{what} {name} is in the restored database but not in the backup"
            ));
        }
    }
    let objects = |list: &[SchemaObject]| {
        list.iter()
            .filter(|o| o.kind != "extension")
            .map(|o| (format!("{} {}", o.kind, o.name), o.statements.clone()))
            .collect::<Vec<_>>()
    };
    let tables = |schema: &CapturedSchema| {
        schema
            .tables
            .iter()
            .map(|t| {
                let constraints = t
                    .constraints
                    .iter()
                    .map(|c| CapturedConstraint {
                        oid: 0,
                        // Known from the referenced table's own kind (and absent from older
                        // manifests).
                        references_partitioned: None,
                        ..c.clone()
                    })
                    .collect();
                (
                    t.qualified_name(),
                    CapturedTable {
                        oid: 0,
                        constraints,
                        ..t.clone()
                    },
                )
            })
            .collect::<Vec<_>>()
    };
    let sequences = |schema: &CapturedSchema| {
        schema
            .sequences
            .iter()
            .map(|s| {
                (
                    qualified(&s.schema, &s.name),
                    CapturedSequence {
                        last_value: 0,
                        is_called: false,
                        ..s.clone()
                    },
                )
            })
            .collect::<Vec<_>>()
    };
    let mut out = Vec::new();
    compare(
        "",
        objects(&expected.pre_data),
        objects(&actual.pre_data),
        &mut out,
    );
    compare("table", tables(expected), tables(actual), &mut out);
    compare("sequence", sequences(expected), sequences(actual), &mut out);
    compare(
        "",
        objects(&expected.post_data),
        objects(&actual.post_data),
        &mut out,
    );
    out.iter_mut().for_each(|d| *d = d.trim_start().to_owned());
    out
}

/// Where two captured definitions first differ, for a mismatch message.
fn first_difference(expected: &serde_json::Value, actual: &serde_json::Value) -> String {
    use serde_json::Value;
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let other = a.get(key).unwrap_or(&Value::Null);
                if other != value {
                    return format!("{key}: {}", first_difference(value, other));
                }
            }
            "fields differ".to_owned()
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            let (i, (value, other)) = e
                .iter()
                .zip(a)
                .enumerate()
                .find(|(_, (x, y))| x != y)
                .unwrap_or((0, (expected, actual)));
            format!("[{i}] {}", first_difference(value, other))
        }
        _ => {
            let cut = |v: &Value| v.to_string().chars().take(300).collect::<String>();
            format!(
                "the backup has {}, the restored database {}",
                cut(expected),
                cut(actual)
            )
        }
    }
}

/// Runs captured DDL statements in the connection's transaction.
pub async fn execute_statements(
    client: &Client,
    statements: &[String],
) -> Result<(), CatalystDbError> {
    if !statements.is_empty() {
        client.batch_execute(&statements.join(";\n")).await?;
    }
    Ok(())
}

/// Runs captured DDL statements in one transaction.
pub async fn execute_ddl(client: &Client, statements: &[String]) -> Result<(), CatalystDbError> {
    if statements.is_empty() {
        return Ok(());
    }
    let batch = format!("BEGIN;\n{};\nCOMMIT;", statements.join(";\n"));
    if let Err(e) = client.batch_execute(&batch).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e.into());
    }
    Ok(())
}

/// Puts every captured sequence back at its captured position.
pub async fn restore_sequence_values(
    client: &Client,
    sequences: &[CapturedSequence],
) -> Result<(), CatalystDbError> {
    for s in sequences {
        client
            .execute(
                "SELECT setval($1::text::regclass, $2, $3)",
                &[&qualified(&s.schema, &s.name), &s.last_value, &s.is_called],
            )
            .await?;
    }
    Ok(())
}

/// A sequence's `(last_value, is_called)`, for checks after a restore.
pub async fn sequence_position(
    client: &Client,
    schema: &str,
    name: &str,
) -> Result<(i64, bool), CatalystDbError> {
    let row = client
        .query_one(
            &format!(
                "SELECT last_value, is_called FROM {}",
                qualified(schema, name)
            ),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, data_type: &str) -> CapturedColumn {
        CapturedColumn {
            name: name.into(),
            data_type: data_type.into(),
            default: None,
            not_null: false,
            identity: None,
            generated: None,
            identity_sequence: None,
            local: true,
            collation: None,
            statistics: None,
            storage: None,
            compression: None,
            options: vec![],
        }
    }

    fn table() -> CapturedTable {
        CapturedTable {
            schema: "public".into(),
            name: "we\"ird".into(),
            kind: TableKind::Ordinary,
            unlogged: false,
            columns: vec![
                CapturedColumn {
                    not_null: true,
                    identity: Some("d".into()),
                    ..column("id", "bigint")
                },
                CapturedColumn {
                    default: Some("(id * 2)".into()),
                    generated: Some("s".into()),
                    ..column("g", "integer")
                },
            ],
            constraints: vec![],
            indexes: vec![],
            partition_key: None,
            partition_of: None,
            inherits: vec![],
            options: vec![],
            replica_identity: "d".into(),
            replica_identity_index: None,
            clustered_index: None,
            row_security: false,
            force_row_security: false,
            oid: 0,
        }
    }

    #[test]
    fn foreign_keys_are_validated_after_their_transaction_only_where_postgres_validates_all_of_it()
    {
        let key = |name: &str, validated: bool, references_partitioned: Option<bool>| {
            CapturedConstraint {
                name: name.into(),
                kind: "f".into(),
                definition: "FOREIGN KEY (id) REFERENCES public.p(id)".into(),
                index_definition: None,
                validated,
                local: true,
                parent_index: None,
                cloned: false,
                oid: 1,
                references_partitioned,
            }
        };
        let mut child = table();
        child.constraints = vec![
            key("plain", true, Some(false)),
            key("to_partitioned", true, Some(true)),
            key("never_validated", false, Some(false)),
            CapturedConstraint {
                oid: 2,
                ..key("to_partitioned_never_validated", false, Some(true))
            },
            // A manifest older than `references_partitioned`.
            key("older", true, None),
        ];
        let mut partitioned = table();
        partitioned.name = "parted".into();
        partitioned.kind = TableKind::Partitioned;
        partitioned.constraints = vec![key("of_partitioned", true, Some(false))];
        let post = post_data_ddl(&CapturedSchema {
            tables: vec![child, partitioned],
            ..Default::default()
        });
        let added = |name: &str| {
            post.ordered
                .iter()
                .find(|s| s.contains(&format!("ADD CONSTRAINT \"{name}\" ")))
                .unwrap_or_else(|| panic!("{name} is added: {:?}", post.ordered))
                .clone()
        };
        assert!(added("plain").ends_with("REFERENCES public.p(id) NOT VALID"));
        assert!(added("older").ends_with("REFERENCES public.p(id)"));
        assert!(added("never_validated").ends_with("REFERENCES public.p(id)"));
        // PostgreSQL validates these as they are added: each on its own, after the transaction,
        // in the source's order with the one never validated that also references a partitioned
        // table.
        for checked in [
            "to_partitioned",
            "of_partitioned",
            "to_partitioned_never_validated",
        ] {
            assert!(
                !post
                    .ordered
                    .iter()
                    .any(|s| s.contains(&format!("\"{checked}\""))),
                "{checked} is not in the transaction: {:?}",
                post.ordered
            );
        }
        let checked: Vec<(&str, &DoneWhen)> = post
            .added_alone
            .iter()
            .map(|c| (c.statement.as_str(), &c.done))
            .collect();
        assert_eq!(
            checked,
            [
                (
                    "ALTER TABLE \"public\".\"we\"\"ird\" ADD CONSTRAINT \"to_partitioned\" FOREIGN KEY (id) REFERENCES public.p(id)",
                    &DoneWhen::Added {
                        table: "\"public\".\"we\"\"ird\"".into(),
                        constraint: "to_partitioned".into()
                    }
                ),
                (
                    "ALTER TABLE \"public\".\"parted\" ADD CONSTRAINT \"of_partitioned\" FOREIGN KEY (id) REFERENCES public.p(id)",
                    &DoneWhen::Added {
                        table: "\"public\".\"parted\"".into(),
                        constraint: "of_partitioned".into()
                    }
                ),
                (
                    "ALTER TABLE \"public\".\"we\"\"ird\" ADD CONSTRAINT \"to_partitioned_never_validated\" FOREIGN KEY (id) REFERENCES public.p(id)",
                    &DoneWhen::Added {
                        table: "\"public\".\"we\"\"ird\"".into(),
                        constraint: "to_partitioned_never_validated".into()
                    }
                ),
            ]
        );
        let validations: Vec<Vec<&str>> = post
            .validations
            .iter()
            .map(|table| table.iter().map(|v| v.statement.as_str()).collect())
            .collect();
        assert_eq!(
            validations,
            [["ALTER TABLE \"public\".\"we\"\"ird\" VALIDATE CONSTRAINT \"plain\""]]
        );
        assert_eq!(
            post.validations[0][0].done,
            DoneWhen::Validated {
                table: "\"public\".\"we\"\"ird\"".into(),
                constraint: "plain".into()
            }
        );
    }

    #[test]
    fn partitions_are_created_whole_then_attached_and_children_list_their_own_columns() {
        let mut partition = table();
        partition.columns[0].local = false;
        partition.partition_of = Some(PartitionOf {
            parent: "public.p".into(),
            bound: "FOR VALUES FROM (1) TO (10)".into(),
        });
        let statements = partition.create_statements(&[]);
        assert!(statements[0].starts_with("CREATE TABLE \"public\".\"we\"\"ird\" (\"id\" bigint GENERATED BY DEFAULT AS IDENTITY NOT NULL, \"g\""), "{statements:?}");
        assert_eq!(
            statements.last().unwrap(),
            "ALTER TABLE ONLY public.p ATTACH PARTITION \"public\".\"we\"\"ird\" FOR VALUES FROM (1) TO (10)"
        );

        let mut child = table();
        child.columns[0].local = false;
        child.columns[1] = CapturedColumn {
            collation: Some("\"C\"".into()),
            statistics: Some(500),
            ..column("note", "text")
        };
        child.inherits = vec!["public.parent".into()];
        child.unlogged = true;
        let statements = child.create_statements(&[]);
        assert_eq!(
            statements[0],
            "CREATE UNLOGGED TABLE \"public\".\"we\"\"ird\" (\"note\" text COLLATE \"C\") INHERITS (public.parent)"
        );
        assert!(
            statements.contains(
                &"ALTER TABLE ONLY \"public\".\"we\"\"ird\" ALTER COLUMN \"id\" SET NOT NULL"
                    .to_owned()
            ),
            "{statements:?}"
        );
        assert!(statements.contains(&"ALTER TABLE ONLY \"public\".\"we\"\"ird\" ALTER COLUMN \"note\" SET STATISTICS 500".to_owned()), "{statements:?}");
    }

    #[test]
    fn schema_differences_name_the_object_and_the_first_difference() {
        let object = |name: &str, statement: &str| SchemaObject {
            kind: "view".into(),
            name: name.into(),
            statements: vec![statement.into()],
            roles: vec![],
        };
        let expected = CapturedSchema {
            tables: vec![table()],
            pre_data: vec![
                object("public.v", "CREATE VIEW a"),
                object("public.w", "CREATE VIEW w"),
            ],
            ..Default::default()
        };
        let mut actual = expected.clone();
        assert!(schema_differences(&expected, &actual).is_empty());
        actual.tables[0].columns[1].statistics = Some(10);
        actual.tables[0].oid = 42;
        actual.pre_data = vec![
            object("public.v", "CREATE VIEW b"),
            object("public.x", "CREATE VIEW x"),
        ];
        let differences = schema_differences(&expected, &actual);
        assert_eq!(
            differences,
            vec![
                "view public.v is defined differently in the restored database: [0] the backup has \"CREATE VIEW a\", the restored database \"CREATE VIEW b\"",
                "view public.w is missing from the restored database",
                "view public.x is in the restored database but not in the backup",
                "table \"public\".\"we\"\"ird\" is defined differently in the restored database: columns: [1] statistics: the backup has null, the restored database 10",
            ]
        );
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(table().qualified_name(), "\"public\".\"we\"\"ird\"");
    }

    #[test]
    fn copy_statements_skip_generated_columns_and_read_block_ranges() {
        let t = table();
        let select = "COPY (SELECT catalyst_dr_row.\"id\" FROM ONLY \"public\".\"we\"\"ird\" AS catalyst_dr_row";
        assert_eq!(
            t.copy_out_statement(&BlockRange::WHOLE),
            format!("{select}) TO STDOUT")
        );
        assert_eq!(
            t.copy_out_statement(&BlockRange {
                start: 8,
                end: Some(16)
            }),
            format!(
                "{select} WHERE catalyst_dr_row.ctid >= '(8,0)'::tid AND catalyst_dr_row.ctid < '(16,0)'::tid) TO STDOUT"
            )
        );
        assert_eq!(
            t.copy_out_statement(&BlockRange {
                start: 16,
                end: None
            }),
            format!("{select} WHERE catalyst_dr_row.ctid >= '(16,0)'::tid) TO STDOUT")
        );
        assert_eq!(
            t.copy_in_statement(),
            "COPY \"public\".\"we\"\"ird\" (\"id\") FROM STDIN"
        );
    }
}
