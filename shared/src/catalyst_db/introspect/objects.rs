//! Every schema object a logical backup captures besides the tables' own structure, with the
//! statements that recreate it, and the census of what it does not capture.
//!
//! Restore order (fixed phases, dependency order inside the first):
//! 1. pre-data, one transaction with `check_function_bodies = off` (as `pg_dump` restores):
//!    schemas, extensions (with their versions), then types (enum, composite, range, domain
//!    with its constraints), functions and procedures, sequences, tables (partitions attached
//!    to their parents), views and materialized views (`WITH NO DATA`), each after everything
//!    it depends on (`pg_depend`; partition and inheritance parents first);
//! 2. the data, then indexes and keys (see [`super::post_data_ddl`]);
//! 3. post-data: table settings (replica identity, clustering, row-level security), policies,
//!    triggers (after the data, so they do not fire on it) and their enable state,
//!    materialized views refreshed and indexed, comments, ownership, privileges.

use super::order::{CatalogKey, dependency_order};
use super::tables::CapturedTable;
use super::{CapturedSequence, CatalystDbError, USER_NAMESPACE, not_extension_member, qualified};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tokio_postgres::Client;

/// OIDs of the system catalogs objects are keyed by (fixed at bootstrap in every version).
const PG_CLASS: u32 = 1259;
const PG_TYPE: u32 = 1247;
const PG_PROC: u32 = 1255;

/// A schema object and the statements that recreate it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaObject {
    /// `schema`, `extension`, `type`, `function`, `sequence`, `table`, `view`, `trigger`, ...
    pub kind: String,
    pub name: String,
    pub statements: Vec<String>,
    /// Roles the statements name (owners, grantees, policy roles): a restore into a cluster
    /// without one of them cannot apply them and says so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl SchemaObject {
    fn new(kind: impl Into<String>, name: impl Into<String>, statements: Vec<String>) -> Self {
        Self {
            kind: kind.into(),
            name: name.into(),
            statements,
            roles: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedExtension {
    pub name: String,
    pub version: String,
    pub schema: String,
}

/// An object in the schema the logical backup does not capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotCaptured {
    pub kind: String,
    pub name: String,
}

impl std::fmt::Display for NotCaptured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

/// The extensions of the connected database (but `plpgsql`, which every database has).
pub async fn capture_extensions(
    client: &Client,
) -> Result<Vec<CapturedExtension>, CatalystDbError> {
    Ok(client
        .query(
            "SELECT x.extname::text, x.extversion, n.nspname::text FROM pg_extension x JOIN pg_namespace n ON n.oid = x.extnamespace \
             WHERE x.extname <> 'plpgsql' ORDER BY x.oid",
            &[],
        )
        .await?
        .into_iter()
        .map(|r| CapturedExtension { name: r.get(0), version: r.get(1), schema: r.get(2) })
        .collect())
}

impl CapturedExtension {
    pub fn create_statement(&self) -> String {
        format!(
            "CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {} VERSION {}",
            super::quote_ident(&self.name),
            super::quote_ident(&self.schema),
            super::quote_literal(&self.version)
        )
    }
}

/// A pre-data object with its catalog key, before ordering.
struct Node {
    key: CatalogKey,
    object: SchemaObject,
}

/// The pre-data objects in restore order: schemas, extensions, then every type, function,
/// sequence, table, view and materialized view after what it depends on.
pub async fn pre_data(
    client: &Client,
    extensions: &[CapturedExtension],
    tables: &[CapturedTable],
    sequences: &[CapturedSequence],
) -> Result<Vec<SchemaObject>, CatalystDbError> {
    // Schemas and extensions first: everything else may live in or depend on them.
    let mut ordered = schemas(client).await?;
    ordered.extend(
        extensions
            .iter()
            .map(|x| SchemaObject::new("extension", x.name.clone(), vec![x.create_statement()])),
    );
    let mut nodes = type_nodes(client).await?;
    nodes.extend(function_nodes(client).await?);
    nodes.extend(sequence_nodes(client, sequences).await?);
    nodes.extend(table_nodes(tables, sequences));
    nodes.extend(view_nodes(client).await?);
    ordered.extend(in_dependency_order(client, nodes).await?);
    Ok(ordered)
}

/// The user schemas but `public`, which every database has.
async fn schemas(client: &Client) -> Result<Vec<SchemaObject>, CatalystDbError> {
    Ok(client
        .query(&format!("SELECT n.nspname::text FROM pg_namespace n WHERE {USER_NAMESPACE} AND n.nspname <> 'public' AND {} ORDER BY 1", not_extension_member("pg_namespace", "n.oid")), &[])
        .await?
        .into_iter()
        .map(|r| {
            let name: String = r.get(0);
            SchemaObject::new("schema", name.clone(), vec![format!("CREATE SCHEMA {}", super::quote_ident(&name))])
        })
        .collect())
}

async fn type_nodes(client: &Client) -> Result<Vec<Node>, CatalystDbError> {
    Ok(client
        .query(&types_query(), &[])
        .await?
        .into_iter()
        .map(|r| Node {
            key: (PG_TYPE, r.get(0)),
            object: SchemaObject::new(r.get::<_, String>(1), r.get::<_, String>(2), r.get(3)),
        })
        .collect())
}

/// Functions, window functions and procedures.
async fn function_nodes(client: &Client) -> Result<Vec<Node>, CatalystDbError> {
    let mut nodes = Vec::new();
    for r in client
        .query(
            &format!(
                "SELECT p.oid, CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END, p.oid::regprocedure::text, pg_get_functiondef(p.oid) \
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.prokind IN ('f', 'p', 'w') AND {USER_NAMESPACE} AND {} AND {NOT_BUILT_IN_TO_A_TYPE}",
                not_extension_member("pg_proc", "p.oid")
            ),
            &[],
        )
        .await?
    {
        nodes.push(Node { key: (PG_PROC, r.get(0)), object: SchemaObject::new(r.get::<_, String>(1), r.get::<_, String>(2), vec![r.get(3)]) });
    }
    Ok(nodes)
}

/// The sequences created on their own; an identity column's is created with its table.
async fn sequence_nodes(
    client: &Client,
    sequences: &[CapturedSequence],
) -> Result<Vec<Node>, CatalystDbError> {
    // The capture keys sequences by schema and name; the dependency graph by OID.
    let sequence_oids: HashMap<(String, String), u32> = client
        .query(&format!("SELECT n.nspname::text, c.relname::text, c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'S' AND {USER_NAMESPACE}"), &[])
        .await?
        .into_iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    let mut nodes = Vec::new();
    for s in sequences.iter().filter(|s| s.ownership != "identity") {
        let name = qualified(&s.schema, &s.name);
        let key = sequence_oids
            .get(&(s.schema.clone(), s.name.clone()))
            .copied()
            .unwrap_or_default();
        nodes.push(Node {
            key: (PG_CLASS, key),
            object: SchemaObject::new(
                "sequence",
                name.clone(),
                vec![format!("CREATE SEQUENCE {name} {}", s.options())],
            ),
        });
    }
    Ok(nodes)
}

fn table_nodes(tables: &[CapturedTable], sequences: &[CapturedSequence]) -> Vec<Node> {
    tables
        .iter()
        .map(|t| Node {
            key: (PG_CLASS, t.oid),
            object: SchemaObject::new("table", t.qualified_name(), t.create_statements(sequences)),
        })
        .collect()
}

/// Views and materialized views; the latter created empty, filled after the data (post-data).
async fn view_nodes(client: &Client) -> Result<Vec<Node>, CatalystDbError> {
    let mut nodes = Vec::new();
    for r in client
        .query(
            &format!(
                "SELECT c.oid, c.relkind::text, c.oid::regclass::text, rtrim(pg_get_viewdef(c.oid), ';'), coalesce(c.reloptions, ARRAY[]::text[]) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND {USER_NAMESPACE} AND {}",
                not_extension_member("pg_class", "c.oid")
            ),
            &[],
        )
        .await?
    {
        let (relkind, name, definition, options): (String, String, String, Vec<String>) = (r.get(1), r.get(2), r.get(3), r.get(4));
        let with = if options.is_empty() { String::new() } else { format!(" WITH ({})", options.join(", ")) };
        let (kind, statement) = if relkind == "m" {
            ("materialized view", format!("CREATE MATERIALIZED VIEW {name}{with} AS\n{definition}\nWITH NO DATA"))
        } else {
            ("view", format!("CREATE VIEW {name}{with} AS\n{definition}"))
        };
        nodes.push(Node { key: (PG_CLASS, r.get(0)), object: SchemaObject::new(kind, name, vec![statement]) });
    }
    Ok(nodes)
}

/// The nodes' objects, each after everything it depends on.
async fn in_dependency_order(
    client: &Client,
    nodes: Vec<Node>,
) -> Result<Vec<SchemaObject>, CatalystDbError> {
    let edges = dependency_edges(client).await?;
    let keys: Vec<CatalogKey> = nodes.iter().map(|n| n.key).collect();
    let mut slots: Vec<Option<SchemaObject>> = nodes.into_iter().map(|n| Some(n.object)).collect();
    Ok(dependency_order(&keys, &edges)
        .into_iter()
        .filter_map(|i| slots[i].take())
        .collect())
}

/// Functions PostgreSQL makes with a type (a range type's multirange constructors) come back
/// with the type.
pub(super) const NOT_BUILT_IN_TO_A_TYPE: &str = "NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.classid = 'pg_proc'::regclass AND i.objid = p.oid AND i.deptype = 'i')";

/// Enum, composite, range and domain types with the statements that create them.
fn types_query() -> String {
    format!(
        "SELECT t.oid, CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END, t.oid::regtype::text, \
           CASE t.typtype \
             WHEN 'e' THEN ARRAY[format('CREATE TYPE %s AS ENUM (%s)', t.oid::regtype, \
               (SELECT coalesce(string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder), '') FROM pg_enum e WHERE e.enumtypid = t.oid))] \
             WHEN 'c' THEN ARRAY[format('CREATE TYPE %s AS (%s)', t.oid::regtype, \
               (SELECT coalesce(string_agg(format('%I %s%s', a.attname, format_type(a.atttypid, a.atttypmod), \
                   CASE WHEN a.attcollation <> at.typcollation THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END), ', ' ORDER BY a.attnum), '') \
                FROM pg_attribute a JOIN pg_type at ON at.oid = a.atttypid WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped))] \
             WHEN 'r' THEN ARRAY[format('CREATE TYPE %s AS RANGE (SUBTYPE = %s%s%s%s, MULTIRANGE_TYPE_NAME = %s)', t.oid::regtype, \
               format_type(r.rngsubtype, NULL), \
               CASE WHEN NOT oc.opcdefault THEN ', SUBTYPE_OPCLASS = ' || quote_ident(ocn.nspname) || '.' || quote_ident(oc.opcname) ELSE '' END, \
               CASE WHEN r.rngcollation <> 0 AND r.rngcollation <> st.typcollation THEN ', COLLATION = ' || r.rngcollation::regcollation::text ELSE '' END, \
               CASE WHEN r.rngsubdiff <> 0 THEN ', SUBTYPE_DIFF = ' || r.rngsubdiff::regproc::text ELSE '' END, \
               r.rngmultitypid::regtype)] \
             ELSE ARRAY[format('CREATE DOMAIN %s AS %s%s%s%s', t.oid::regtype, format_type(t.typbasetype, t.typtypmod), \
               CASE WHEN t.typcollation <> bt.typcollation THEN ' COLLATE ' || t.typcollation::regcollation::text ELSE '' END, \
               CASE WHEN t.typdefault IS NOT NULL THEN ' DEFAULT ' || t.typdefault ELSE '' END, \
               CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END)] \
               || ARRAY(SELECT format('ALTER DOMAIN %s ADD CONSTRAINT %I %s', t.oid::regtype, c.conname, pg_get_constraintdef(c.oid)) \
                        FROM pg_constraint c WHERE c.contypid = t.oid AND c.contype = 'c' ORDER BY c.conname) \
           END \
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
         LEFT JOIN pg_range r ON r.rngtypid = t.oid LEFT JOIN pg_type st ON st.oid = r.rngsubtype \
         LEFT JOIN pg_opclass oc ON oc.oid = r.rngsubopc LEFT JOIN pg_namespace ocn ON ocn.oid = oc.opcnamespace \
         LEFT JOIN pg_type bt ON bt.oid = t.typbasetype \
         WHERE (t.typtype IN ('e', 'd') OR (t.typtype = 'r' AND r.rngcanonical = 0) \
                OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')) \
           AND {USER_NAMESPACE} AND {}",
        not_extension_member("pg_type", "t.oid")
    )
}

/// `(dependent, dependency)` pairs between objects, each end mapped to the object a restore
/// creates: a column default or check constraint to its table or domain, a view's rule to the
/// view, a table's row type to the table, an array or multirange type to its element or range
/// type. Partitions and inheritance children depend on their parents.
async fn dependency_edges(
    client: &Client,
) -> Result<Vec<(CatalogKey, CatalogKey)>, CatalystDbError> {
    let owners: HashMap<CatalogKey, CatalogKey> = client
        .query(
            "SELECT 'pg_attrdef'::regclass::oid, oid, 'pg_class'::regclass::oid, adrelid FROM pg_attrdef \
             UNION ALL SELECT 'pg_constraint'::regclass::oid, oid, \
                    CASE WHEN conrelid <> 0 THEN 'pg_class'::regclass::oid ELSE 'pg_type'::regclass::oid END, \
                    CASE WHEN conrelid <> 0 THEN conrelid ELSE contypid END FROM pg_constraint WHERE contype = 'c' \
             UNION ALL SELECT 'pg_rewrite'::regclass::oid, oid, 'pg_class'::regclass::oid, ev_class FROM pg_rewrite \
             UNION ALL SELECT 'pg_type'::regclass::oid, t.oid, 'pg_class'::regclass::oid, t.typrelid FROM pg_type t \
                    JOIN pg_class c ON c.oid = t.typrelid WHERE c.relkind <> 'c' \
             UNION ALL SELECT 'pg_class'::regclass::oid, c.oid, 'pg_type'::regclass::oid, c.reltype FROM pg_class c WHERE c.relkind = 'c' \
             UNION ALL SELECT 'pg_type'::regclass::oid, a.oid, 'pg_type'::regclass::oid, e.oid FROM pg_type a JOIN pg_type e ON e.typarray = a.oid \
             UNION ALL SELECT 'pg_type'::regclass::oid, rngmultitypid, 'pg_type'::regclass::oid, rngtypid FROM pg_range",
            &[],
        )
        .await?
        .into_iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect();
    let owner = |mut key: CatalogKey| {
        // An array of a table's row type maps to the row type, then to the table.
        for _ in 0..3 {
            match owners.get(&key) {
                Some(next) => key = *next,
                None => break,
            }
        }
        key
    };
    Ok(client
        .query(
            "SELECT classid, objid, refclassid, refobjid FROM pg_depend WHERE deptype = 'n' \
             UNION ALL SELECT 'pg_class'::regclass::oid, inhrelid, 'pg_class'::regclass::oid, inhparent FROM pg_inherits",
            &[],
        )
        .await?
        .into_iter()
        .map(|r| (owner((r.get(0), r.get(1))), owner((r.get(2), r.get(3)))))
        .collect())
}

/// Everything recreated after the data, keys and indexes, in order (see the module comment).
pub async fn post_data(
    client: &Client,
    tables: &[CapturedTable],
) -> Result<Vec<SchemaObject>, CatalystDbError> {
    let mut post: Vec<SchemaObject> = tables
        .iter()
        .map(|t| SchemaObject::new("table settings", t.qualified_name(), t.table_settings()))
        .filter(|o| !o.statements.is_empty())
        .collect();
    let relation_filter = format!(
        "{USER_NAMESPACE} AND {}",
        not_extension_member("pg_class", "c.oid")
    );
    post.extend(policies(client, &relation_filter).await?);
    post.extend(triggers(client, &relation_filter).await?);
    post.extend(materialized_view_data(client, &relation_filter).await?);
    post.extend(comments(client).await?);
    post.extend(owners(client).await?);
    post.extend(privileges(client, &relation_filter).await?);
    Ok(post)
}

/// Row-level security policies, with the roles they name.
async fn policies(
    client: &Client,
    relation_filter: &str,
) -> Result<Vec<SchemaObject>, CatalystDbError> {
    let mut objects = Vec::new();
    for r in client
        .query(
            &format!(
                "SELECT format('%I on %s', p.polname, c.oid::regclass), \
                        format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s', p.polname, c.oid::regclass, \
                               CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END, \
                               CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END, \
                               (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END, ', ') FROM unnest(p.polroles) r), \
                               ' USING (' || pg_get_expr(p.polqual, p.polrelid) || ')', \
                               ' WITH CHECK (' || pg_get_expr(p.polwithcheck, p.polrelid) || ')'), \
                        ARRAY(SELECT pg_get_userbyid(r)::text FROM unnest(p.polroles) r WHERE r <> 0) \
                 FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE {relation_filter} ORDER BY 1"
            ),
            &[],
        )
        .await?
    {
        let mut policy = SchemaObject::new("policy", r.get::<_, String>(0), vec![r.get(1)]);
        policy.roles = r.get(2);
        objects.push(policy);
    }
    Ok(objects)
}

/// Triggers, with their enable state; a partition's copy of its parent's trigger comes back
/// with the parent's.
async fn triggers(
    client: &Client,
    relation_filter: &str,
) -> Result<Vec<SchemaObject>, CatalystDbError> {
    let mut objects = Vec::new();
    for r in client
        .query(
            &format!(
                "SELECT format('%I on %s', t.tgname, c.oid::regclass), \
                        ARRAY[pg_get_triggerdef(t.oid)] || CASE t.tgenabled \
                          WHEN 'D' THEN ARRAY[format('ALTER TABLE %s DISABLE TRIGGER %I', c.oid::regclass, t.tgname)] \
                          WHEN 'R' THEN ARRAY[format('ALTER TABLE %s ENABLE REPLICA TRIGGER %I', c.oid::regclass, t.tgname)] \
                          WHEN 'A' THEN ARRAY[format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', c.oid::regclass, t.tgname)] \
                          ELSE ARRAY[]::text[] END \
                 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND {relation_filter} ORDER BY 1"
            ),
            &[],
        )
        .await?
    {
        objects.push(SchemaObject::new("trigger", r.get::<_, String>(0), r.get(1)));
    }
    Ok(objects)
}

/// The kind of a materialized view's refresh and indexes, in post-data.
pub const MATERIALIZED_VIEW_DATA: &str = "materialized view data";

/// Materialized views: filled in creation order (one may read another), then indexed.
async fn materialized_view_data(
    client: &Client,
    relation_filter: &str,
) -> Result<Vec<SchemaObject>, CatalystDbError> {
    let mut objects = Vec::new();
    for r in client
        .query(
            &format!(
                "SELECT c.oid::regclass::text, \
                        CASE WHEN c.relispopulated THEN ARRAY[format('REFRESH MATERIALIZED VIEW %s', c.oid::regclass)] ELSE ARRAY[]::text[] END \
                        || ARRAY(SELECT pg_get_indexdef(x.indexrelid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
                                 WHERE x.indrelid = c.oid ORDER BY i.relname) \
                        || ARRAY(SELECT format('ALTER MATERIALIZED VIEW %s CLUSTER ON %I', c.oid::regclass, i.relname) FROM pg_index x \
                                 JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = c.oid AND x.indisclustered) \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'm' AND {relation_filter} ORDER BY c.oid"
            ),
            &[],
        )
        .await?
    {
        objects.push(SchemaObject::new(MATERIALIZED_VIEW_DATA, r.get::<_, String>(0), r.get(1)));
    }
    Ok(objects)
}

async fn comments(client: &Client) -> Result<Vec<SchemaObject>, CatalystDbError> {
    let mut objects = Vec::new();
    for r in client.query(&comments_query(), &[]).await? {
        objects.push(SchemaObject::new(
            "comment",
            r.get::<_, String>(0),
            vec![r.get(1)],
        ));
    }
    Ok(objects)
}

/// Each captured object's owner, with the role it names.
async fn owners(client: &Client) -> Result<Vec<SchemaObject>, CatalystDbError> {
    let mut objects = Vec::new();
    for r in client.query(&format!("{} SELECT kind, ident, owner, format('ALTER %s %s OWNER TO %I', kind, ident, owner) FROM objects ORDER BY ord, ident", owned_objects()), &[]).await? {
        let mut owner = SchemaObject::new("owner", format!("{} {}", r.get::<_, String>(0).to_lowercase(), r.get::<_, String>(1)), vec![r.get(3)]);
        owner.roles = vec![r.get(2)];
        objects.push(owner);
    }
    Ok(objects)
}

/// Object and column privileges: the defaults revoked, then the source's grants, with every
/// role they name.
async fn privileges(
    client: &Client,
    relation_filter: &str,
) -> Result<Vec<SchemaObject>, CatalystDbError> {
    let mut objects = Vec::new();
    for r in client
        .query(
            &format!(
                "{owned} SELECT o.grant_kind, o.ident, \
                   ARRAY[format('REVOKE ALL ON %s %s FROM PUBLIC', o.grant_kind, o.ident), format('REVOKE ALL ON %s %s FROM %I', o.grant_kind, o.ident, o.owner)] \
                   || ARRAY(SELECT format('GRANT %s ON %s %s TO %s%s', x.privilege_type, o.grant_kind, o.ident, \
                                  CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(x.grantee)) END, \
                                  CASE WHEN x.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) FROM aclexplode(o.acl) WITH ORDINALITY x), \
                   ARRAY[o.owner::text] || ARRAY(SELECT pg_get_userbyid(x.grantee)::text FROM aclexplode(o.acl) x WHERE x.grantee <> 0) \
                 FROM objects o WHERE o.acl IS NOT NULL \
                 UNION ALL \
                 SELECT 'COLUMN', format('%s.%I', c.oid::regclass, a.attname), \
                   ARRAY(SELECT format('GRANT %s (%I) ON TABLE %s TO %s%s', x.privilege_type, a.attname, c.oid::regclass, \
                                  CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(x.grantee)) END, \
                                  CASE WHEN x.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) FROM aclexplode(a.attacl) WITH ORDINALITY x), \
                   ARRAY(SELECT pg_get_userbyid(x.grantee)::text FROM aclexplode(a.attacl) x WHERE x.grantee <> 0) \
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE a.attacl IS NOT NULL AND a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'v', 'm') AND {relation_filter}",
                owned = owned_objects()
            ),
            &[],
        )
        .await?
    {
        let mut grants = SchemaObject::new("privileges", format!("{} {}", r.get::<_, String>(0).to_lowercase(), r.get::<_, String>(1)), r.get(2));
        grants.roles = r.get(3);
        grants.roles.sort();
        grants.roles.dedup();
        objects.push(grants);
    }
    Ok(objects)
}

/// A user-defined type a restore creates: enum, domain, range, or a standalone composite type
/// (not a table's row type).
pub(super) const NAMED_TYPE: &str = "(t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))";

/// Every captured object with an owner and privileges: `objects(ord, kind, grant_kind, ident,
/// owner, acl)`, tables before their sequences (an owned sequence follows its table's owner).
/// Identity sequences follow their table's owner too.
fn owned_objects() -> String {
    format!(
        "WITH objects(ord, kind, grant_kind, ident, owner, acl) AS ( \
           SELECT 0, 'SCHEMA', 'SCHEMA', quote_ident(n.nspname), pg_get_userbyid(n.nspowner)::text, n.nspacl FROM pg_namespace n \
           WHERE {USER_NAMESPACE} AND {schema} \
         UNION ALL SELECT 1, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, \
           t.oid::regtype::text, pg_get_userbyid(t.typowner)::text, t.typacl FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
           WHERE {NAMED_TYPE} AND {USER_NAMESPACE} AND {typ} \
         UNION ALL SELECT 2, CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, \
           p.oid::regprocedure::text, pg_get_userbyid(p.proowner)::text, p.proacl FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
           WHERE p.prokind IN ('f', 'p', 'w') AND {USER_NAMESPACE} AND {proc} AND {NOT_BUILT_IN_TO_A_TYPE} \
         UNION ALL SELECT CASE c.relkind WHEN 'S' THEN 4 ELSE 3 END, \
           CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END, \
           CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, \
           c.oid::regclass::text, pg_get_userbyid(c.relowner)::text, c.relacl FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND c.relpersistence <> 't' AND {USER_NAMESPACE} AND {rel} \
             AND NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.classid = 'pg_class'::regclass AND i.objid = c.oid AND i.deptype = 'i') \
         )",
        schema = not_extension_member("pg_namespace", "n.oid"),
        typ = not_extension_member("pg_type", "t.oid"),
        proc = not_extension_member("pg_proc", "p.oid"),
        rel = not_extension_member("pg_class", "c.oid"),
    )
}

/// `COMMENT ON` statements for every commented object the backup captures.
fn comments_query() -> String {
    format!(
        "SELECT o.identity, CASE \
           WHEN o.type IN ('table column', 'view column', 'materialized view column') THEN format('COMMENT ON COLUMN %s IS %L', o.identity, d.description) \
           WHEN o.type = 'table constraint' THEN (SELECT format('COMMENT ON CONSTRAINT %I ON %s IS %L', c.conname, c.conrelid::regclass, d.description) FROM pg_constraint c WHERE c.oid = d.objoid) \
           WHEN o.type = 'domain constraint' THEN (SELECT format('COMMENT ON CONSTRAINT %I ON DOMAIN %s IS %L', c.conname, c.contypid::regtype, d.description) FROM pg_constraint c WHERE c.oid = d.objoid) \
           WHEN o.type = 'trigger' THEN (SELECT format('COMMENT ON TRIGGER %I ON %s IS %L', t.tgname, t.tgrelid::regclass, d.description) FROM pg_trigger t WHERE t.oid = d.objoid) \
           WHEN o.type = 'policy' THEN (SELECT format('COMMENT ON POLICY %I ON %s IS %L', p.polname, p.polrelid::regclass, d.description) FROM pg_policy p WHERE p.oid = d.objoid) \
           WHEN o.type = 'composite type' THEN format('COMMENT ON TYPE %s IS %L', o.identity, d.description) \
           ELSE format('COMMENT ON %s %s IS %L', upper(o.type), o.identity, d.description) END \
         FROM pg_description d, LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) o \
         WHERE {COMMENTED} ORDER BY 1, 2"
    )
}

/// The comments a backup carries: on schemas, tables, views, materialized views, sequences,
/// columns, indexes, constraints, triggers, policies, types, domains, functions and procedures
/// in user schemas that no extension owns.
const COMMENTED: &str = "o.type IN ('schema', 'table', 'view', 'materialized view', 'sequence', 'index', 'table column', 'view column', \
      'materialized view column', 'table constraint', 'domain constraint', 'trigger', 'policy', 'type', 'composite type', 'domain', \
      'function', 'procedure') \
    AND coalesce(o.schema, CASE WHEN o.type = 'schema' THEN o.identity END, \
        (SELECT n.nspname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE d.classoid = 'pg_trigger'::regclass AND t.oid = d.objoid), \
        (SELECT n.nspname FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE d.classoid = 'pg_policy'::regclass AND p.oid = d.objoid), \
        (SELECT n.nspname FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace WHERE d.classoid = 'pg_constraint'::regclass AND k.oid = d.objoid)) \
        NOT IN ('pg_catalog', 'information_schema') \
    AND coalesce(o.schema, o.identity, '') !~ '^pg_' \
    AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = d.classoid AND e.objid = d.objoid AND e.deptype = 'e') \
    AND NOT (o.type = 'schema' AND o.identity = 'public' AND d.description = 'standard public schema')";

/// Objects in the database that the backup does not capture: each makes the backup incomplete
/// unless the operator's ignore list names it.
pub async fn not_captured(client: &Client) -> Result<Vec<NotCaptured>, CatalystDbError> {
    let rel = not_extension_member("pg_class", "c.oid");
    let query = format!(
        "SELECT kind, name FROM ( \
           SELECT CASE c.relkind WHEN 'f' THEN 'foreign table' ELSE 'typed table' END AS kind, c.oid::regclass::text AS name \
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
           WHERE (c.relkind = 'f' OR (c.relkind IN ('r', 'p') AND c.reloftype <> 0)) AND {USER_NAMESPACE} AND {rel} \
         UNION ALL SELECT 'table access method ' || am.amname, c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
           JOIN pg_am am ON am.oid = c.relam WHERE c.relkind IN ('r', 'm') AND am.amname <> 'heap' AND {USER_NAMESPACE} AND {rel} \
         UNION ALL SELECT 'tablespace ' || ts.spcname, c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
           JOIN pg_tablespace ts ON ts.oid = c.reltablespace WHERE {USER_NAMESPACE} AND {rel} \
         UNION ALL SELECT 'rule', format('%I on %s', r.rulename, c.oid::regclass) FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class \
           JOIN pg_namespace n ON n.oid = c.relnamespace WHERE r.rulename <> '_RETURN' AND {USER_NAMESPACE} AND {rel} \
         UNION ALL SELECT 'aggregate', p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
           WHERE p.prokind = 'a' AND {USER_NAMESPACE} AND {proc} \
         UNION ALL SELECT CASE t.typtype WHEN 'b' THEN 'base type' ELSE 'range type with a canonical function' END, t.oid::regtype::text \
           FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace LEFT JOIN pg_range r ON r.rngtypid = t.oid \
           WHERE ((t.typtype = 'b' AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)) \
                  OR (t.typtype = 'r' AND r.rngcanonical <> 0)) AND {USER_NAMESPACE} AND {typ} \
         UNION ALL SELECT 'event trigger', quote_ident(evtname) FROM pg_event_trigger et WHERE {evt} \
         UNION ALL SELECT 'publication', quote_ident(pubname) FROM pg_publication \
         UNION ALL SELECT 'subscription', quote_ident(subname) FROM pg_subscription WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         UNION ALL SELECT 'cast', format('%s AS %s', castsource::regtype, casttarget::regtype) FROM pg_cast WHERE oid >= 16384 AND {cast} \
           AND NOT EXISTS (SELECT 1 FROM pg_depend i WHERE i.classid = 'pg_cast'::regclass AND i.objid = pg_cast.oid AND i.deptype = 'i') \
         UNION ALL SELECT 'operator', o.oid::regoperator::text FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace WHERE {USER_NAMESPACE} AND {oper} \
         UNION ALL SELECT 'operator class', format('%I.%I', n.nspname, o.opcname) FROM pg_opclass o JOIN pg_namespace n ON n.oid = o.opcnamespace WHERE {USER_NAMESPACE} AND {opc} \
         UNION ALL SELECT 'operator family', format('%I.%I', n.nspname, o.opfname) FROM pg_opfamily o JOIN pg_namespace n ON n.oid = o.opfnamespace WHERE {USER_NAMESPACE} AND {opf} \
         UNION ALL SELECT 'collation', format('%I.%I', n.nspname, o.collname) FROM pg_collation o JOIN pg_namespace n ON n.oid = o.collnamespace WHERE {USER_NAMESPACE} AND {coll} \
         UNION ALL SELECT 'conversion', format('%I.%I', n.nspname, o.conname) FROM pg_conversion o JOIN pg_namespace n ON n.oid = o.connamespace WHERE {USER_NAMESPACE} AND {conv} \
         UNION ALL SELECT 'text search configuration', o.oid::regconfig::text FROM pg_ts_config o JOIN pg_namespace n ON n.oid = o.cfgnamespace WHERE {USER_NAMESPACE} AND {tscfg} \
         UNION ALL SELECT 'text search dictionary', o.oid::regdictionary::text FROM pg_ts_dict o JOIN pg_namespace n ON n.oid = o.dictnamespace WHERE {USER_NAMESPACE} AND {tsdict} \
         UNION ALL SELECT 'text search parser', format('%I.%I', n.nspname, o.prsname) FROM pg_ts_parser o JOIN pg_namespace n ON n.oid = o.prsnamespace WHERE {USER_NAMESPACE} AND {tsprs} \
         UNION ALL SELECT 'text search template', format('%I.%I', n.nspname, o.tmplname) FROM pg_ts_template o JOIN pg_namespace n ON n.oid = o.tmplnamespace WHERE {USER_NAMESPACE} AND {tstmpl} \
         UNION ALL SELECT 'statistics object', format('%I.%I', n.nspname, o.stxname) FROM pg_statistic_ext o JOIN pg_namespace n ON n.oid = o.stxnamespace WHERE {USER_NAMESPACE} \
         UNION ALL SELECT 'language', quote_ident(l.lanname) FROM pg_language l WHERE l.oid >= 16384 AND l.lanname <> 'plpgsql' AND {lang} \
         UNION ALL SELECT 'foreign data wrapper', quote_ident(fdwname) FROM pg_foreign_data_wrapper w WHERE {fdw} \
         UNION ALL SELECT 'foreign server', quote_ident(srvname) FROM pg_foreign_server \
         UNION ALL SELECT 'default privileges', coalesce(pg_get_userbyid(defaclrole)::text, '') || coalesce(' in ' || defaclnamespace::regnamespace::text, '') FROM pg_default_acl \
         UNION ALL SELECT 'large objects', count(*)::text FROM pg_largeobject_metadata HAVING count(*) > 0 \
         UNION ALL SELECT 'security label', format('%s %s', o.type, o.identity) FROM pg_seclabel s, LATERAL pg_identify_object(s.classoid, s.objoid, s.objsubid) o \
         UNION ALL SELECT 'extension configuration data', x.extname FROM pg_extension x WHERE x.extconfig IS NOT NULL \
         UNION ALL SELECT 'public schema dropped', 'public' WHERE NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'public') \
         ) x ORDER BY 1, 2",
        proc = not_extension_member("pg_proc", "p.oid"),
        typ = not_extension_member("pg_type", "t.oid"),
        evt = not_extension_member("pg_event_trigger", "et.oid"),
        cast = not_extension_member("pg_cast", "pg_cast.oid"),
        oper = not_extension_member("pg_operator", "o.oid"),
        opc = not_extension_member("pg_opclass", "o.oid"),
        opf = not_extension_member("pg_opfamily", "o.oid"),
        coll = not_extension_member("pg_collation", "o.oid"),
        conv = not_extension_member("pg_conversion", "o.oid"),
        tscfg = not_extension_member("pg_ts_config", "o.oid"),
        tsdict = not_extension_member("pg_ts_dict", "o.oid"),
        tsprs = not_extension_member("pg_ts_parser", "o.oid"),
        tstmpl = not_extension_member("pg_ts_template", "o.oid"),
        lang = not_extension_member("pg_language", "l.oid"),
        fdw = not_extension_member("pg_foreign_data_wrapper", "w.oid"),
    );
    Ok(client
        .query(&query, &[])
        .await?
        .into_iter()
        .map(|r| NotCaptured {
            kind: r.get(0),
            name: r.get(1),
        })
        .collect())
}
