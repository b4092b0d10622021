//! Tables as a logical backup captures them: every table in a user schema, ordinary, unlogged,
//! partitioned (with its key), partitions (with their bounds) and inheritance children, with
//! columns, constraints and indexes as PostgreSQL renders them, and the DDL that recreates each.

use super::{CatalystDbError, qualified, quote_ident};
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

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
    /// False for a column that only comes from an inheritance parent (`attislocal`).
    pub local: bool,
    /// The column's collation when it is not its type's (`COLLATE`).
    pub collation: Option<String>,
    /// `ALTER COLUMN ... SET STATISTICS` target, when set.
    pub statistics: Option<i32>,
    /// `ALTER COLUMN ... SET STORAGE`, when not the type's default.
    pub storage: Option<String>,
    /// `ALTER COLUMN ... SET COMPRESSION`, when set.
    pub compression: Option<String>,
    /// `ALTER COLUMN ... SET (n_distinct ...)`: the planner's attribute options (the only ones
    /// PostgreSQL lets a user set).
    pub options: Vec<String>,
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
    /// False for a check constraint that only comes from an inheritance parent.
    pub local: bool,
    /// The partitioned index this constraint's index is attached to (a partition's key).
    pub parent_index: Option<String>,
    /// A foreign key PostgreSQL cloned onto a partition from its parent's (recreated with it).
    pub cloned: bool,
    /// The constraint's OID in the source: foreign keys are added again in creation order, as
    /// the names PostgreSQL gives their copies on partitions depend on it.
    pub oid: u32,
    /// For a foreign key: whether the table it references is partitioned (its references to
    /// each partition are constraints of their own, which `VALIDATE CONSTRAINT` leaves invalid
    /// before PostgreSQL 18). None for other constraints, and in manifests older than the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references_partitioned: Option<bool>,
}

impl CapturedConstraint {
    /// A valid check constraint goes into `CREATE TABLE`, so COPY checks each row as it loads
    /// (as `pg_dump` does) instead of a scan after the load.
    pub(crate) fn is_inline_check(&self) -> bool {
        self.kind == "c" && self.validated
    }

    /// The unique index a primary key or unique constraint can be attached to with `USING
    /// INDEX` (not for deferrable ones, which `USING INDEX` does not take).
    pub(crate) fn attachable_index(&self) -> Option<&str> {
        let attachable =
            matches!(self.kind.as_str(), "p" | "u") && !self.definition.contains("DEFERRABLE");
        self.index_definition.as_deref().filter(|_| attachable)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedIndex {
    pub name: String,
    /// `pg_get_indexdef`.
    pub definition: String,
    /// The partitioned index this index is attached to.
    pub parent_index: Option<String>,
}

/// What kind of table: one that stores rows, or a partitioned one whose rows live in its
/// partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Ordinary,
    Partitioned,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOf {
    /// The parent, schema-qualified and quoted.
    pub parent: String,
    /// `pg_get_expr(relpartbound)`: `FOR VALUES ...` or `DEFAULT`.
    pub bound: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedTable {
    pub schema: String,
    pub name: String,
    pub kind: TableKind,
    pub unlogged: bool,
    pub columns: Vec<CapturedColumn>,
    pub constraints: Vec<CapturedConstraint>,
    pub indexes: Vec<CapturedIndex>,
    /// `pg_get_partkeydef` of a partitioned table.
    pub partition_key: Option<String>,
    /// A partition's parent and bound.
    pub partition_of: Option<PartitionOf>,
    /// Inheritance parents (not partitioning), in order, schema-qualified and quoted.
    pub inherits: Vec<String>,
    /// Storage parameters (`reloptions`).
    pub options: Vec<String>,
    /// `REPLICA IDENTITY`: `d` default, `n` nothing, `f` full, `i` an index.
    pub replica_identity: String,
    /// The index of `REPLICA IDENTITY USING INDEX`.
    pub replica_identity_index: Option<String>,
    /// The index of `CLUSTER ON`.
    pub clustered_index: Option<String>,
    pub row_security: bool,
    pub force_row_security: bool,
    /// The table's catalog OID in the source (for dependency order; not used on restore).
    pub oid: u32,
}

/// Captures every table in a user schema (not extension members, not temporary ones).
pub async fn capture_tables(client: &Client) -> Result<Vec<CapturedTable>, CatalystDbError> {
    let rows = client
        .query(
            &format!(
                "SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, c.relpersistence = 'u', \
                        CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END, \
                        CASE WHEN c.relispartition THEN (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.oid) END, \
                        CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END, \
                        CASE WHEN c.relispartition THEN ARRAY[]::text[] ELSE ARRAY(SELECT i.inhparent::regclass::text FROM pg_inherits i \
                             WHERE i.inhrelid = c.oid ORDER BY i.inhseqno) END, \
                        coalesce(c.reloptions, ARRAY[]::text[]), c.relreplident::text, c.relrowsecurity, c.relforcerowsecurity, \
                        (SELECT i.relname::text FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid AND x.indisreplident), \
                        (SELECT i.relname::text FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid AND x.indisclustered) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't' AND {} AND {} ORDER BY 2, 3",
                super::USER_NAMESPACE,
                super::not_extension_member("pg_class", "c.oid")
            ),
            &[],
        )
        .await?;
    let mut tables = Vec::with_capacity(rows.len());
    for row in rows {
        let oid: u32 = row.get(0);
        let (schema, name): (String, String) = (row.get(1), row.get(2));
        let relkind: String = row.get(3);
        let parent: Option<String> = row.get(6);
        let bound: Option<String> = row.get(7);
        tables.push(CapturedTable {
            columns: capture_columns(client, oid, &qualified(&schema, &name)).await?,
            constraints: capture_constraints(client, oid).await?,
            indexes: capture_indexes(client, oid).await?,
            schema,
            name,
            kind: if relkind == "p" {
                TableKind::Partitioned
            } else {
                TableKind::Ordinary
            },
            unlogged: row.get(4),
            partition_key: row.get(5),
            partition_of: parent
                .zip(bound)
                .map(|(parent, bound)| PartitionOf { parent, bound }),
            inherits: row.get(8),
            options: row.get(9),
            replica_identity: row.get(10),
            row_security: row.get(11),
            force_row_security: row.get(12),
            replica_identity_index: row.get(13),
            clustered_index: row.get(14),
            oid,
        });
    }
    Ok(tables)
}

async fn capture_columns(
    client: &Client,
    oid: u32,
    qualified_name: &str,
) -> Result<Vec<CapturedColumn>, CatalystDbError> {
    Ok(client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid), a.attnotnull, \
                    NULLIF(a.attidentity::text, ''), NULLIF(a.attgenerated::text, ''), \
                    CASE WHEN a.attidentity <> '' THEN pg_get_serial_sequence($2, a.attname) END, a.attislocal, \
                    CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END, \
                    CASE WHEN a.attstattarget >= 0 THEN a.attstattarget::int END, \
                    CASE WHEN a.attstorage <> t.typstorage THEN CASE a.attstorage WHEN 'p' THEN 'PLAIN' WHEN 'e' THEN 'EXTERNAL' \
                         WHEN 'm' THEN 'MAIN' ELSE 'EXTENDED' END END, \
                    CASE a.attcompression WHEN 'p' THEN 'pglz' WHEN 'l' THEN 'lz4' END, \
                    ARRAY(SELECT o FROM unnest(a.attoptions) o WHERE o ~ '^n_distinct(_inherited)?=') \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
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
            local: r.get(7),
            collation: r.get(8),
            statistics: r.get(9),
            storage: r.get(10),
            compression: r.get(11),
            options: r.get(12),
        })
        .collect())
}

async fn capture_constraints(
    client: &Client,
    oid: u32,
) -> Result<Vec<CapturedConstraint>, CatalystDbError> {
    Ok(client
        .query(
            "SELECT c.conname::text, c.contype::text, pg_get_constraintdef(c.oid), \
                    CASE WHEN c.conindid <> 0 AND c.contype IN ('p', 'u', 'x') THEN pg_get_indexdef(c.conindid) END, c.convalidated, \
                    c.conislocal, \
                    CASE WHEN c.contype IN ('p', 'u', 'x') THEN (SELECT i.inhparent::regclass::text FROM pg_inherits i WHERE i.inhrelid = c.conindid) END, \
                    c.contype = 'f' AND c.conparentid <> 0, c.oid, \
                    CASE WHEN c.contype = 'f' THEN (SELECT r.relkind = 'p' FROM pg_class r WHERE r.oid = c.confrelid) END \
             FROM pg_constraint c WHERE c.conrelid = $1 AND c.contype IN ('p', 'u', 'c', 'f', 'x') ORDER BY c.conname",
            &[&oid],
        )
        .await?
        .into_iter()
        .map(|r| CapturedConstraint {
            name: r.get(0),
            kind: r.get(1),
            definition: r.get(2),
            index_definition: r.get(3),
            validated: r.get(4),
            local: r.get(5),
            parent_index: r.get(6),
            cloned: r.get(7),
            oid: r.get(8),
            references_partitioned: r.get(9),
        })
        .collect())
}

async fn capture_indexes(client: &Client, oid: u32) -> Result<Vec<CapturedIndex>, CatalystDbError> {
    Ok(client
        .query(
            "SELECT i.relname::text, pg_get_indexdef(x.indexrelid), \
                    (SELECT h.inhparent::regclass::text FROM pg_inherits h WHERE h.inhrelid = x.indexrelid) \
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             WHERE x.indrelid = $1 AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid \
               AND c.conrelid = x.indrelid AND c.contype IN ('p', 'u', 'x')) ORDER BY 1",
            &[&oid],
        )
        .await?
        .into_iter()
        .map(|r| CapturedIndex { name: r.get(0), definition: r.get(1), parent_index: r.get(2) })
        .collect())
}

/// The alias of the copied table in `COPY (SELECT ...)`: not a plausible column name, so it
/// cannot be mistaken for one.
const ROW_ALIAS: &str = "catalyst_dr_row";

impl CapturedTable {
    pub fn qualified_name(&self) -> String {
        qualified(&self.schema, &self.name)
    }

    /// Whether the table holds rows of its own (a partitioned table's are in its partitions).
    pub fn stores_rows(&self) -> bool {
        self.kind == TableKind::Ordinary
    }

    /// The columns a backup copies: all but stored generated columns.
    pub fn copied_columns(&self) -> Vec<&CapturedColumn> {
        self.columns
            .iter()
            .filter(|c| c.generated.is_none())
            .collect()
    }

    fn column_list(&self) -> String {
        self.copied_columns()
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `COPY (SELECT <columns> FROM ONLY t [WHERE ctid in the block range]) TO STDOUT`: the rows
    /// stored in one range of this table's own blocks (all of them for
    /// [`super::BlockRange::WHOLE`]), in storage order, never an inheritance child's (each child is
    /// backed up as a table of its own). Their order does not matter: the content checksum is a
    /// rowset checksum ([`crate::logical::rowset`]).
    pub fn copy_out_statement(&self, range: &super::BlockRange) -> String {
        let columns = self
            .copied_columns()
            .iter()
            .map(|c| format!("{ROW_ALIAS}.{}", quote_ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        let filter = range.ctid_filter(ROW_ALIAS);
        format!(
            "COPY (SELECT {columns} FROM ONLY {} AS {ROW_ALIAS}{filter}) TO STDOUT",
            self.qualified_name()
        )
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

    /// The statements that create the table before its data: columns (types, collations,
    /// defaults, identity, generated expressions, NOT NULL), valid check constraints, its
    /// partition key or inheritance parents, storage parameters, per-column settings, and a
    /// partition's attachment to its parent. A partition is created as a table of its own and
    /// then attached (as `pg_dump` does), so its columns keep their own order and defaults;
    /// an inheritance child lists only its own columns and constraints, the rest come from its
    /// parents.
    pub fn create_statements(&self, sequences: &[super::CapturedSequence]) -> Vec<String> {
        let name = self.qualified_name();
        let inheriting = !self.inherits.is_empty();
        let columns = self
            .columns
            .iter()
            .filter(|c| c.local || !inheriting)
            .map(|c| self.column_definition(c, sequences))
            .chain(
                self.constraints
                    .iter()
                    .filter(|c| c.is_inline_check() && (c.local || !inheriting))
                    .map(|c| format!("CONSTRAINT {} {}", quote_ident(&c.name), c.definition)),
            )
            .collect::<Vec<_>>();
        let mut create = format!(
            "CREATE {}TABLE {name} ({})",
            if self.unlogged { "UNLOGGED " } else { "" },
            columns.join(", ")
        );
        if inheriting {
            create.push_str(&format!(" INHERITS ({})", self.inherits.join(", ")));
        }
        if let Some(key) = &self.partition_key {
            create.push_str(&format!(" PARTITION BY {key}"));
        }
        if !self.options.is_empty() {
            create.push_str(&format!(" WITH ({})", self.options.join(", ")));
        }
        let mut statements = vec![create];
        for c in &self.columns {
            let column = format!(
                "ALTER TABLE ONLY {name} ALTER COLUMN {}",
                quote_ident(&c.name)
            );
            if inheriting && !c.local {
                // An inherited column's own default or NOT NULL, where it differs from the parent's.
                if let (Some(default), None, None) = (&c.default, &c.generated, &c.identity) {
                    statements.push(format!("{column} SET DEFAULT {default}"));
                }
                if c.not_null {
                    statements.push(format!("{column} SET NOT NULL"));
                }
            }
            if let Some(target) = c.statistics {
                statements.push(format!("{column} SET STATISTICS {target}"));
            }
            if let Some(storage) = &c.storage {
                statements.push(format!("{column} SET STORAGE {storage}"));
            }
            if let Some(method) = &c.compression {
                statements.push(format!("{column} SET COMPRESSION {method}"));
            }
            if !c.options.is_empty() {
                statements.push(format!("{column} SET ({})", c.options.join(", ")));
            }
        }
        if let Some(partition) = &self.partition_of {
            statements.push(format!(
                "ALTER TABLE ONLY {} ATTACH PARTITION {name} {}",
                partition.parent, partition.bound
            ));
        }
        statements
    }

    fn column_definition(
        &self,
        c: &CapturedColumn,
        sequences: &[super::CapturedSequence],
    ) -> String {
        let mut def = format!("{} {}", quote_ident(&c.name), c.data_type);
        if let Some(collation) = &c.collation {
            def.push_str(&format!(" COLLATE {collation}"));
        }
        if c.generated.is_some() {
            if let Some(expr) = &c.default {
                def.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
            }
        } else if let Some(kind) = &c.identity {
            let mode = if kind == "a" { "ALWAYS" } else { "BY DEFAULT" };
            let sequence = sequences.iter().find(|s| {
                s.ownership == "identity"
                    && s.owner.as_ref().is_some_and(|(os, ot, oc)| {
                        os == &self.schema && ot == &self.name && oc == &c.name
                    })
            });
            match sequence {
                Some(s) => def.push_str(&format!(
                    " GENERATED {mode} AS IDENTITY (SEQUENCE NAME {} {})",
                    qualified(&s.schema, &s.name),
                    s.options()
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
    }

    /// After the data and the keys: replica identity, clustering, row-level security flags.
    pub fn table_settings(&self) -> Vec<String> {
        let name = self.qualified_name();
        let mut statements = Vec::new();
        match self.replica_identity.as_str() {
            "n" => statements.push(format!("ALTER TABLE ONLY {name} REPLICA IDENTITY NOTHING")),
            "f" => statements.push(format!("ALTER TABLE ONLY {name} REPLICA IDENTITY FULL")),
            _ => {}
        }
        if let Some(index) = self
            .replica_identity_index
            .as_ref()
            .filter(|_| self.replica_identity == "i")
        {
            statements.push(format!(
                "ALTER TABLE ONLY {name} REPLICA IDENTITY USING INDEX {}",
                quote_ident(index)
            ));
        }
        if let Some(index) = &self.clustered_index {
            statements.push(format!(
                "ALTER TABLE ONLY {name} CLUSTER ON {}",
                quote_ident(index)
            ));
        }
        if self.row_security {
            statements.push(format!("ALTER TABLE ONLY {name} ENABLE ROW LEVEL SECURITY"));
        }
        if self.force_row_security {
            statements.push(format!("ALTER TABLE ONLY {name} FORCE ROW LEVEL SECURITY"));
        }
        statements
    }
}
