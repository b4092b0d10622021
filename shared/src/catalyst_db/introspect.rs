//! The SQL of logical backups: the exported snapshot every backup connection reads through, the
//! catalog queries that capture the schema with PostgreSQL's own functions (`format_type`,
//! `pg_get_expr`, `pg_get_constraintdef`, `pg_get_indexdef`), the `COPY` statements that stream
//! table contents, and the DDL a restore replays into an empty staging database.
//!
//! Values travel as bind parameters. Identifiers come from the source catalog and are always
//! double-quoted by [`quote_ident`]; the type, default and constraint texts are the ones
//! PostgreSQL itself renders for its catalog (as `pg_dump` uses them).

use super::CatalystDbError;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

/// Session settings that fix the text `COPY` renders (dates, floats, bytea), so a content
/// checksum computed on the source equals the one computed on a restored copy.
pub const SESSION_SETTINGS: &str = "SET client_encoding = 'UTF8'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; \
     SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET bytea_output = 'hex'; SET statement_timeout = 0; \
     SET lock_timeout = '60s'; SET idle_in_transaction_session_timeout = 0";

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
    client.execute("SELECT set_config('application_name', $1, false)", &[&application_name]).await?;
    Ok(())
}

/// Opens the backup's REPEATABLE READ, read-only transaction and exports its snapshot; the
/// transaction must stay open until every worker has imported it.
pub async fn begin_exported_snapshot(client: &Client) -> Result<SnapshotInstant, CatalystDbError> {
    session(client, BACKUP_APPLICATION_NAME).await?;
    client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
    let row = client
        .query_one(
            "SELECT pg_export_snapshot(), \
                    to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
                    current_database(), current_setting('server_version')",
            &[],
        )
        .await?;
    Ok(SnapshotInstant { snapshot_id: row.get(0), server_time: row.get(1), lsn: row.get(2), database: row.get(3), server_version: row.get(4) })
}

/// Opens a worker's transaction on the snapshot `snapshot_id` exported by [`begin_exported_snapshot`].
pub async fn import_snapshot(client: &Client, snapshot_id: &str) -> Result<(), CatalystDbError> {
    // SET TRANSACTION SNAPSHOT takes no bind parameter; snapshot names are hex digits and dashes.
    if snapshot_id.is_empty() || !snapshot_id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(CatalystDbError::invalid("snapshot_id", "not a PostgreSQL snapshot name"));
    }
    session(client, BACKUP_APPLICATION_NAME).await?;
    client
        .batch_execute(&format!("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT {}", quote_literal(snapshot_id)))
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedColumn {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`.
    pub data_type: String,
    /// `pg_get_expr(adbin)`: the default, or the generation expression of a generated column.
    pub default: Option<String>,
    pub not_null: bool,
    /// `a` (GENERATED ALWAYS) or `d` (BY DEFAULT) for identity columns.
    pub identity: Option<String>,
    /// `s` for a stored generated column (not copied: PostgreSQL computes it).
    pub generated: Option<String>,
    /// The identity sequence, schema-qualified and quoted, for identity columns.
    pub identity_sequence: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedConstraint {
    pub name: String,
    /// `p`, `u`, `c`, `f` or `x`.
    pub kind: String,
    /// `pg_get_constraintdef`.
    pub definition: String,
    /// `pg_get_indexdef` of the index behind a primary key, unique or exclusion constraint, so a
    /// restore can build it (alongside the table's other indexes) before attaching the
    /// constraint to it.
    pub index_definition: Option<String>,
    /// False for a constraint added `NOT VALID` and never validated.
    pub validated: bool,
}

impl CapturedConstraint {
    /// A valid check constraint goes into `CREATE TABLE`, so COPY checks each row as it loads
    /// (as `pg_dump` does) instead of a scan after the load.
    fn is_inline_check(&self) -> bool {
        self.kind == "c" && self.validated
    }

    /// The unique index a primary key or unique constraint can be attached to with `USING
    /// INDEX` (not for deferrable ones, which `USING INDEX` does not take).
    fn attachable_index(&self) -> Option<&str> {
        let attachable = matches!(self.kind.as_str(), "p" | "u") && !self.definition.contains("DEFERRABLE");
        self.index_definition.as_deref().filter(|_| attachable)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedIndex {
    pub name: String,
    /// `pg_get_indexdef`.
    pub definition: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedTable {
    pub schema: String,
    pub name: String,
    pub columns: Vec<CapturedColumn>,
    pub constraints: Vec<CapturedConstraint>,
    pub indexes: Vec<CapturedIndex>,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedEnum {
    pub schema: String,
    pub name: String,
    pub labels: Vec<String>,
}

/// An object in the schema the logical backup does not capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotCaptured {
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedSchema {
    pub schemas: Vec<String>,
    pub enums: Vec<CapturedEnum>,
    pub sequences: Vec<CapturedSequence>,
    pub tables: Vec<CapturedTable>,
    pub not_captured: Vec<NotCaptured>,
}

const USER_NAMESPACE: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'";

fn not_extension_member(classid: &str, oid: &str) -> String {
    format!("NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{classid}'::regclass AND e.objid = {oid} AND e.deptype = 'e')")
}

/// Captures the schema as seen by the connection's transaction.
pub async fn capture_schema(client: &Client) -> Result<CapturedSchema, CatalystDbError> {
    let mut schema = CapturedSchema::default();
    let tables = client
        .query(
            &format!(
                "SELECT c.oid, n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'r' AND NOT c.relispartition AND {USER_NAMESPACE} AND {} ORDER BY 2, 3",
                not_extension_member("pg_class", "c.oid")
            ),
            &[],
        )
        .await?;
    for row in tables {
        let oid: u32 = row.get(0);
        let (table_schema, name): (String, String) = (row.get(1), row.get(2));
        let qualified_name = qualified(&table_schema, &name);
        let columns = client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid), a.attnotnull, \
                        NULLIF(a.attidentity::text, ''), NULLIF(a.attgenerated::text, ''), \
                        CASE WHEN a.attidentity <> '' THEN pg_get_serial_sequence($2, a.attname) END \
                 FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                &[&oid, &qualified_name],
            )
            .await?
            .into_iter()
            .map(|r| CapturedColumn {
                name: r.get(0),
                data_type: r.get(1),
                default: r.get(2),
                not_null: r.get(3),
                identity: r.get(4),
                generated: r.get(5),
                identity_sequence: r.get(6),
            })
            .collect();
        let constraints = client
            .query(
                "SELECT conname::text, contype::text, pg_get_constraintdef(oid), \
                        CASE WHEN conindid <> 0 AND contype IN ('p', 'u', 'x') THEN pg_get_indexdef(conindid) END, convalidated \
                 FROM pg_constraint WHERE conrelid = $1 AND contype IN ('p', 'u', 'c', 'f', 'x') ORDER BY conname",
                &[&oid],
            )
            .await?
            .into_iter()
            .map(|r| CapturedConstraint { name: r.get(0), kind: r.get(1), definition: r.get(2), index_definition: r.get(3), validated: r.get(4) })
            .collect();
        let indexes = client
            .query(
                "SELECT i.relname::text, pg_get_indexdef(x.indexrelid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
                 WHERE x.indrelid = $1 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid \
                   AND c.conrelid = x.indrelid AND c.contype IN ('p', 'u', 'x')) ORDER BY 1",
                &[&oid],
            )
            .await?
            .into_iter()
            .map(|r| CapturedIndex { name: r.get(0), definition: r.get(1) })
            .collect();
        schema.tables.push(CapturedTable { schema: table_schema, name, columns, constraints, indexes });
    }

    schema.enums = client
        .query(
            &format!(
                "SELECT n.nspname::text, t.typname::text, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) \
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid \
                 WHERE {USER_NAMESPACE} AND {} GROUP BY 1, 2 ORDER BY 1, 2",
                not_extension_member("pg_type", "t.oid")
            ),
            &[],
        )
        .await?
        .into_iter()
        .map(|r| CapturedEnum { schema: r.get(0), name: r.get(1), labels: r.get(2) })
        .collect();

    schema.sequences = client
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
                 WHERE {USER_NAMESPACE} AND {} ORDER BY 1, 2",
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
        .collect();

    for s in &mut schema.sequences {
        let row = client.query_one(&format!("SELECT last_value, is_called FROM {}", qualified(&s.schema, &s.name)), &[]).await?;
        s.last_value = row.get(0);
        s.is_called = row.get(1);
    }

    let mut schemas: Vec<String> = schema
        .tables
        .iter()
        .map(|t| t.schema.clone())
        .chain(schema.enums.iter().map(|e| e.schema.clone()))
        .chain(schema.sequences.iter().map(|s| s.schema.clone()))
        .collect();
    schemas.sort();
    schemas.dedup();
    schema.schemas = schemas;

    schema.not_captured = client
        .query(
            &format!(
                "SELECT kind, name FROM ( \
                   SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'f' THEN 'foreign table' \
                               WHEN 'p' THEN 'partitioned table' ELSE 'partition' END AS kind, \
                          n.nspname || '.' || c.relname AS name \
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE (c.relkind IN ('v', 'm', 'f', 'p') OR (c.relkind = 'r' AND c.relispartition)) AND {USER_NAMESPACE} AND {rel} \
                 UNION ALL \
                   SELECT CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' WHEN 'w' THEN 'window function' ELSE 'function' END, \
                          n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' \
                   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {USER_NAMESPACE} AND {proc} \
                 UNION ALL \
                   SELECT 'trigger', t.tgname || ' on ' || n.nspname || '.' || c.relname \
                   FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE NOT t.tgisinternal AND {USER_NAMESPACE} \
                 UNION ALL \
                   SELECT 'policy', p.polname || ' on ' || n.nspname || '.' || c.relname \
                   FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 UNION ALL \
                   SELECT 'rule', r.rulename || ' on ' || n.nspname || '.' || c.relname \
                   FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE r.rulename <> '_RETURN' AND {USER_NAMESPACE} \
                 UNION ALL \
                   SELECT 'row level security', n.nspname || '.' || c.relname \
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relrowsecurity AND {USER_NAMESPACE} \
                 UNION ALL \
                   SELECT 'extension', x.extname FROM pg_extension x WHERE x.extname <> 'plpgsql' \
                 UNION ALL \
                   SELECT CASE t.typtype WHEN 'd' THEN 'domain' WHEN 'r' THEN 'range type' ELSE 'composite type' END, \
                          n.nspname || '.' || t.typname \
                   FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                   WHERE (t.typtype IN ('d', 'r') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')) \
                     AND {USER_NAMESPACE} AND {typ} \
                 ) x ORDER BY 1, 2",
                rel = not_extension_member("pg_class", "c.oid"),
                proc = not_extension_member("pg_proc", "p.oid"),
                typ = not_extension_member("pg_type", "t.oid"),
            ),
            &[],
        )
        .await?
        .into_iter()
        .map(|r| NotCaptured { kind: r.get(0), name: r.get(1) })
        .collect();
    Ok(schema)
}

/// Takes ACCESS SHARE locks on the captured tables for the rest of the backup transaction, so
/// no DDL changes them while their contents are read (as `pg_dump` does).
pub async fn lock_tables(client: &Client, tables: &[CapturedTable]) -> Result<(), CatalystDbError> {
    if tables.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = tables.iter().map(|t| qualified(&t.schema, &t.name)).collect();
    client.batch_execute(&format!("LOCK TABLE {} IN ACCESS SHARE MODE", names.join(", "))).await?;
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
    pub const WHOLE: BlockRange = BlockRange { start: 0, end: None };
}

/// Whether the server scans a `ctid` range by reading only its blocks (TID range scans,
/// PostgreSQL 14 and later). Older servers would scan the whole table once per range.
pub async fn supports_block_ranges(client: &Client) -> Result<bool, CatalystDbError> {
    let version: i32 = client.query_one("SELECT current_setting('server_version_num')::int", &[]).await?.get(0);
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

pub async fn table_blocks(client: &Client, tables: &[&CapturedTable]) -> Result<TableBlocks, CatalystDbError> {
    let block_size: i64 = client.query_one("SELECT current_setting('block_size')::bigint", &[]).await?.get(0);
    let names: Vec<String> = tables.iter().map(|t| t.qualified_name()).collect();
    let rows = client
        .query(
            "SELECT pg_relation_size(n.name::regclass) FROM unnest($1::text[]) WITH ORDINALITY AS n(name, i) ORDER BY n.i",
            &[&names],
        )
        .await?;
    let block_size = block_size.max(1) as u64;
    Ok(TableBlocks { block_size, blocks: rows.into_iter().map(|r| r.get::<_, i64>(0).max(0) as u64 / block_size).collect() })
}

/// The alias of the copied table in `COPY (SELECT ...)`: not a plausible column name, so it
/// cannot be mistaken for one.
const ROW_ALIAS: &str = "catalyst_dr_row";

impl CapturedTable {
    pub fn qualified_name(&self) -> String {
        qualified(&self.schema, &self.name)
    }

    /// The columns a backup copies: all but stored generated columns.
    pub fn copied_columns(&self) -> Vec<&CapturedColumn> {
        self.columns.iter().filter(|c| c.generated.is_none()).collect()
    }

    fn column_list(&self) -> String {
        self.copied_columns().iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ")
    }

    /// `COPY (SELECT <columns> FROM t [WHERE ctid in the block range]) TO STDOUT`: the rows stored in
    /// one range of the table's blocks (all of them for [`BlockRange::WHOLE`]), in storage order.
    /// Their order does not matter: the content checksum is a rowset checksum
    /// ([`crate::logical::rowset`]).
    pub fn copy_out_statement(&self, range: &BlockRange) -> String {
        let columns = self.copied_columns().iter().map(|c| format!("{ROW_ALIAS}.{}", quote_ident(&c.name))).collect::<Vec<_>>().join(", ");
        let filter = match (range.start, range.end) {
            (0, None) => String::new(),
            (start, None) => format!(" WHERE {ROW_ALIAS}.ctid >= '({start},0)'::tid"),
            (start, Some(end)) => format!(" WHERE {ROW_ALIAS}.ctid >= '({start},0)'::tid AND {ROW_ALIAS}.ctid < '({end},0)'::tid"),
        };
        format!("COPY (SELECT {columns} FROM {} AS {ROW_ALIAS}{filter}) TO STDOUT", self.qualified_name())
    }

    /// `COPY t (<columns>) FROM STDIN`.
    pub fn copy_in_statement(&self) -> String {
        let columns = self.column_list();
        if columns.is_empty() {
            format!("COPY {} FROM STDIN", self.qualified_name())
        } else {
            format!("COPY {} ({columns}) FROM STDIN", self.qualified_name())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Restore DDL.

/// Counts the relations and types in user schemas of the connected database: a restore target
/// must have none.
pub async fn user_object_count(client: &Client) -> Result<i64, CatalystDbError> {
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {USER_NAMESPACE}) \
                      + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                          WHERE t.typtype IN ('e', 'd', 'r') AND {USER_NAMESPACE})"
            ),
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// The statements that recreate schemas, enum types, sequences and tables (columns, defaults,
/// NOT NULL, identity), before any data is loaded.
pub fn pre_data_ddl(schema: &CapturedSchema) -> Vec<String> {
    let mut ddl = Vec::new();
    for s in schema.schemas.iter().filter(|s| s.as_str() != "public") {
        ddl.push(format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(s)));
    }
    for e in &schema.enums {
        let labels = e.labels.iter().map(|l| quote_literal(l)).collect::<Vec<_>>().join(", ");
        ddl.push(format!("CREATE TYPE {} AS ENUM ({labels})", qualified(&e.schema, &e.name)));
    }
    for s in schema.sequences.iter().filter(|s| s.ownership != "identity") {
        ddl.push(format!("CREATE SEQUENCE {} {}", qualified(&s.schema, &s.name), sequence_options(s)));
    }
    for t in &schema.tables {
        let columns: Vec<String> = t
            .columns
            .iter()
            .map(|c| {
                let mut def = format!("{} {}", quote_ident(&c.name), c.data_type);
                if c.generated.is_some() {
                    if let Some(expr) = &c.default {
                        def.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
                    }
                } else if let Some(kind) = &c.identity {
                    let mode = if kind == "a" { "ALWAYS" } else { "BY DEFAULT" };
                    let sequence = schema.sequences.iter().find(|s| {
                        s.ownership == "identity"
                            && s.owner.as_ref().is_some_and(|(os, ot, oc)| os == &t.schema && ot == &t.name && oc == &c.name)
                    });
                    match sequence {
                        Some(s) => def.push_str(&format!(
                            " GENERATED {mode} AS IDENTITY (SEQUENCE NAME {} {})",
                            qualified(&s.schema, &s.name),
                            sequence_options(s)
                        )),
                        None => def.push_str(&format!(" GENERATED {mode} AS IDENTITY")),
                    }
                } else if let Some(expr) = &c.default {
                    def.push_str(&format!(" DEFAULT {expr}"));
                }
                if c.not_null {
                    def.push_str(" NOT NULL");
                }
                def
            })
            .chain(t.constraints.iter().filter(|c| c.is_inline_check()).map(|c| format!("CONSTRAINT {} {}", quote_ident(&c.name), c.definition)))
            .collect();
        ddl.push(format!("CREATE TABLE {} ({})", t.qualified_name(), columns.join(", ")));
    }
    ddl
}

/// Sequence options; an identity column's sequence takes its type from the column, so `AS` is
/// only given for the others.
fn sequence_options(s: &CapturedSequence) -> String {
    let data_type = if s.ownership == "identity" { String::new() } else { format!("AS {} ", s.data_type) };
    format!(
        "{data_type}INCREMENT BY {} MINVALUE {} MAXVALUE {} START WITH {} CACHE {} {}",
        s.increment,
        s.min,
        s.max,
        s.start,
        s.cache,
        if s.cycle { "CYCLE" } else { "NO CYCLE" }
    )
}

/// The statements run after the data is loaded, in two steps.
///
/// `indexes`: every index, those behind primary keys and unique constraints included, as
/// `CREATE [UNIQUE] INDEX`. These take SHARE locks, which do not conflict with each other or
/// with reads, so they run on several connections at once, several on one table too, alongside
/// the re-reading of the restored tables. `ordered`, one after the other: the primary keys and
/// unique constraints attached to their built indexes (`USING INDEX`: no second build, no scan),
/// exclusion constraints and deferrable keys built the classic way, check constraints added
/// `NOT VALID` in the source, foreign keys (they need the referenced keys, and two of them could
/// otherwise lock a pair of tables in opposite orders), and sequence ownership.
pub struct PostData {
    pub indexes: Vec<String>,
    pub ordered: Vec<String>,
}

pub fn post_data_ddl(schema: &CapturedSchema) -> PostData {
    let mut indexes = Vec::new();
    let mut ordered = Vec::new();
    for t in &schema.tables {
        let add = |c: &CapturedConstraint| format!("ALTER TABLE {} ADD CONSTRAINT {} {}", t.qualified_name(), quote_ident(&c.name), c.definition);
        for c in t.constraints.iter().filter(|c| matches!(c.kind.as_str(), "p" | "u" | "x")) {
            match c.attachable_index() {
                Some(index) => {
                    indexes.push(index.to_owned());
                    let kind = if c.kind == "p" { "PRIMARY KEY" } else { "UNIQUE" };
                    let name = quote_ident(&c.name);
                    ordered.push(format!("ALTER TABLE {} ADD CONSTRAINT {name} {kind} USING INDEX {name}", t.qualified_name()));
                }
                None => ordered.push(add(c)),
            }
        }
        ordered.extend(t.constraints.iter().filter(|c| c.kind == "c" && !c.is_inline_check()).map(add));
        indexes.extend(t.indexes.iter().map(|i| i.definition.clone()));
    }
    for t in &schema.tables {
        ordered.extend(
            t.constraints
                .iter()
                .filter(|c| c.kind == "f")
                .map(|c| format!("ALTER TABLE {} ADD CONSTRAINT {} {}", t.qualified_name(), quote_ident(&c.name), c.definition)),
        );
    }
    for s in schema.sequences.iter().filter(|s| s.ownership == "owned") {
        if let Some((os, ot, oc)) = &s.owner {
            ordered.push(format!("ALTER SEQUENCE {} OWNED BY {}.{}", qualified(&s.schema, &s.name), qualified(os, ot), quote_ident(oc)));
        }
    }
    PostData { indexes, ordered }
}

/// Runs one statement (in its own transaction).
pub async fn execute_statement(client: &Client, statement: &str) -> Result<(), CatalystDbError> {
    client.batch_execute(statement).await?;
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
pub async fn restore_sequence_values(client: &Client, sequences: &[CapturedSequence]) -> Result<(), CatalystDbError> {
    for s in sequences {
        client.execute("SELECT setval($1::text::regclass, $2, $3)", &[&qualified(&s.schema, &s.name), &s.last_value, &s.is_called]).await?;
    }
    Ok(())
}

/// A sequence's `(last_value, is_called)`, for checks after a restore.
pub async fn sequence_position(client: &Client, schema: &str, name: &str) -> Result<(i64, bool), CatalystDbError> {
    let row = client.query_one(&format!("SELECT last_value, is_called FROM {}", qualified(schema, name)), &[]).await?;
    Ok((row.get(0), row.get(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> CapturedTable {
        CapturedTable {
            schema: "public".into(),
            name: "we\"ird".into(),
            columns: vec![
                CapturedColumn {
                    name: "id".into(),
                    data_type: "bigint".into(),
                    default: None,
                    not_null: true,
                    identity: Some("d".into()),
                    generated: None,
                    identity_sequence: None,
                },
                CapturedColumn {
                    name: "g".into(),
                    data_type: "integer".into(),
                    default: Some("(id * 2)".into()),
                    not_null: false,
                    identity: None,
                    generated: Some("s".into()),
                    identity_sequence: None,
                },
            ],
            constraints: vec![],
            indexes: vec![],
        }
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
        let select = "COPY (SELECT catalyst_dr_row.\"id\" FROM \"public\".\"we\"\"ird\" AS catalyst_dr_row";
        assert_eq!(t.copy_out_statement(&BlockRange::WHOLE), format!("{select}) TO STDOUT"));
        assert_eq!(
            t.copy_out_statement(&BlockRange { start: 8, end: Some(16) }),
            format!("{select} WHERE catalyst_dr_row.ctid >= '(8,0)'::tid AND catalyst_dr_row.ctid < '(16,0)'::tid) TO STDOUT")
        );
        assert_eq!(t.copy_out_statement(&BlockRange { start: 16, end: None }), format!("{select} WHERE catalyst_dr_row.ctid >= '(16,0)'::tid) TO STDOUT"));
        assert_eq!(t.copy_in_statement(), "COPY \"public\".\"we\"\"ird\" (\"id\") FROM STDIN");
    }
}
