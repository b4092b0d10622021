//! Logical backups leave nothing out: a schema with every object kind Catalyst Auth deployments
//! use (extensions, enum/composite/range/domain types, functions and procedures, a time-partitioned
//! table with a sub-partitioned partition and a default partition, inheritance, an unlogged
//! table, views, a materialized view, triggers, row-level security, comments, owners, grants,
//! collations, statistics targets) goes through backup and restore and comes back identical:
//! `pg_dump --schema-only` of the source and of the restored database match after normalising
//! (and so does `pg_dump -Fc | pg_restore`, the reference), and every table's content too.
//! An object the backup cannot capture makes it incomplete and fails it loudly, unless the
//! operator's ignore list names it; a restore process killed part-way can be reset and run again.

use catalyst_dr::catalyst_db;
use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr::invocation::with_deadline;
use catalyst_dr::logical::config::LogicalConfig;
use catalyst_dr::logical::restore::{RestoreOptions, RestoreTarget};
use catalyst_dr::logical::{LogicalBackups, LogicalError};
use catalyst_dr::object_store::S3Objects;
use catalyst_dr::postgres::TlsMode;
use catalyst_dr::run_id::RunId;
use catalyst_dr_tests::{
    empty_database, local_aws, new_locked_bucket, pg_admin, relation_contents, run_in, s3,
    stack_var,
};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_postgres::Client;

/// Roles are cluster-wide: created once, kept; the tests of one run share them, and may race to
/// create them.
const ROLES_SQL: &str = r#"
DO $$ BEGIN
  BEGIN CREATE ROLE catalyst_dr_test_reader NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
  BEGIN CREATE ROLE catalyst_dr_test_owner NOLOGIN; EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END;
END $$;
"#;

const SCHEMA_SQL: &str = r#"
CREATE EXTENSION citext;
CREATE EXTENSION pgcrypto;
CREATE SCHEMA app;
COMMENT ON SCHEMA app IS 'Catalyst Auth application schema';
CREATE TYPE app.tier AS ENUM ('free', 'pro', 'it''s "enterprise"');
CREATE TYPE app.pair AS (x integer, label text COLLATE "C");
CREATE TYPE app.floatrange AS RANGE (SUBTYPE = float8, SUBTYPE_DIFF = float8mi);
CREATE DOMAIN app.email AS citext CONSTRAINT email_has_at CHECK (VALUE ~ '@');
CREATE DOMAIN app.positive AS integer DEFAULT 1 NOT NULL CONSTRAINT positive_check CHECK (VALUE > 0);
COMMENT ON DOMAIN app.email IS 'an address';
CREATE SEQUENCE app.ids START 1000 INCREMENT 3;
CREATE FUNCTION app.next_id() RETURNS bigint LANGUAGE sql AS 'SELECT nextval(''app.ids'')';
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.updated_at := now(); RETURN NEW; END$$;
CREATE PROCEDURE app.noop(n integer) LANGUAGE sql AS $$ SELECT 1 $$;
COMMENT ON FUNCTION app.touch() IS 'keeps updated_at';
CREATE TABLE app.accounts (
    id bigint PRIMARY KEY DEFAULT app.next_id(),
    email app.email NOT NULL,
    tier app.tier NOT NULL DEFAULT 'free',
    score app.positive,
    pos app.pair,
    span app.floatrange,
    name text COLLATE "C",
    secret bytea DEFAULT gen_random_bytes(8),
    updated_at timestamptz,
    CONSTRAINT accounts_email_key UNIQUE (email)
);
ALTER TABLE app.accounts ALTER COLUMN name SET STATISTICS 400;
CREATE FUNCTION app.account_count() RETURNS bigint LANGUAGE sql STABLE BEGIN ATOMIC SELECT count(*) FROM app.accounts; END;
ALTER TABLE app.accounts ALTER COLUMN name SET STORAGE MAIN;
COMMENT ON TABLE app.accounts IS 'who signs in';
COMMENT ON COLUMN app.accounts.email IS 'unique, case-insensitive';
COMMENT ON CONSTRAINT accounts_email_key ON app.accounts IS 'one account per address';
CREATE TRIGGER accounts_touch BEFORE UPDATE ON app.accounts FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE TRIGGER accounts_touch_insert BEFORE INSERT ON app.accounts FOR EACH ROW EXECUTE FUNCTION app.touch();
ALTER TABLE app.accounts DISABLE TRIGGER accounts_touch_insert;
COMMENT ON TRIGGER accounts_touch ON app.accounts IS 'on every update';
ALTER TABLE app.accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY accounts_read ON app.accounts FOR SELECT TO catalyst_dr_test_reader USING (tier <> 'free');
CREATE POLICY accounts_write ON app.accounts AS RESTRICTIVE FOR UPDATE USING (true) WITH CHECK (score > 0);
COMMENT ON POLICY accounts_read ON app.accounts IS 'paying tiers only';
INSERT INTO app.accounts (email, tier, score, pos, span, name)
SELECT 'user' || g || '@example.com', (ARRAY['free', 'pro', 'it''s "enterprise"']::app.tier[])[1 + g % 3], 1 + g % 7,
       ROW(g, 'p' || g)::app.pair, app.floatrange(g, g + 0.5), 'Name ' || g
FROM generate_series(1, 500) g;

-- Delivery logs partitioned by time: a sub-partitioned month, and a default partition.
CREATE TABLE app.delivery_log (
    id bigint NOT NULL,
    account_id bigint NOT NULL REFERENCES app.accounts (id),
    at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status <> ''),
    body text,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE app.delivery_log_2026_01 PARTITION OF app.delivery_log FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE app.delivery_log_2026_02 PARTITION OF app.delivery_log FOR VALUES FROM ('2026-02-01') TO ('2026-03-01') PARTITION BY HASH (id);
CREATE TABLE app.delivery_log_2026_02_h0 PARTITION OF app.delivery_log_2026_02 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE app.delivery_log_2026_02_h1 PARTITION OF app.delivery_log_2026_02 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE app.delivery_log_default PARTITION OF app.delivery_log DEFAULT;
CREATE INDEX delivery_log_account_idx ON app.delivery_log (account_id, at);
COMMENT ON INDEX app.delivery_log_account_idx IS 'per-account history';
INSERT INTO app.delivery_log (id, account_id, at, status, body)
SELECT g, 1000 + 3 * (g % 500), timestamptz '2026-01-01' + (g % 90) * interval '1 day' + g * interval '1 second',
       (ARRAY['pending', 'succeeded', 'failed', 'dead_lettered'])[1 + g % 4], repeat('x', g % 50)
FROM generate_series(1, 50000) g;

-- Inheritance, an unlogged table, identity, storage parameters, replica identity, clustering.
CREATE TABLE app.events (id integer NOT NULL, kind text NOT NULL, CONSTRAINT events_id_check CHECK (id > 0));
CREATE TABLE app.login_events (ip inet, kind text NOT NULL DEFAULT 'login') INHERITS (app.events);
INSERT INTO app.events SELECT g, 'generic' FROM generate_series(1, 300) g;
INSERT INTO app.login_events (id, ip) SELECT g, '10.0.0.1' FROM generate_series(1, 200) g;
CREATE UNLOGGED TABLE app.session_cache (k text PRIMARY KEY, v jsonb) WITH (fillfactor = 70, autovacuum_enabled = false);
INSERT INTO app.session_cache SELECT 'k' || g, jsonb_build_object('g', g) FROM generate_series(1, 100) g;
CREATE TABLE app.tokens (id integer GENERATED ALWAYS AS IDENTITY (START WITH 50) PRIMARY KEY, account_id bigint, token bytea NOT NULL DEFAULT gen_random_bytes(16));
INSERT INTO app.tokens (account_id) SELECT g FROM generate_series(1, 40) g;
ALTER TABLE app.tokens REPLICA IDENTITY FULL;
CLUSTER app.tokens USING tokens_pkey;

-- Views on views and a materialized view, populated.
CREATE VIEW app.paying WITH (security_barrier = true) AS SELECT id, email, tier FROM app.accounts WHERE tier <> 'free';
CREATE MATERIALIZED VIEW app.delivery_counts AS SELECT account_id, status, count(*) AS deliveries FROM app.delivery_log GROUP BY 1, 2;
CREATE UNIQUE INDEX delivery_counts_key ON app.delivery_counts (account_id, status);
CREATE VIEW app.paying_counts AS SELECT p.email, c.status, c.deliveries FROM app.paying p JOIN app.delivery_counts c ON c.account_id = p.id;
COMMENT ON VIEW app.paying IS 'accounts that pay';
COMMENT ON MATERIALIZED VIEW app.delivery_counts IS 'refreshed nightly';
-- A refresh as slow as the database's catalyst_test.refresh_pause says (instant unless set).
CREATE MATERIALIZED VIEW app.refreshed_slowly AS
  SELECT 1 AS one FROM pg_sleep(coalesce(current_setting('catalyst_test.refresh_pause', true), '0')::float8);
CREATE UNIQUE INDEX refreshed_slowly_one ON app.refreshed_slowly (one);
COMMENT ON INDEX app.refreshed_slowly_one IS 'made with the refresh';

-- Owners and privileges.
ALTER TABLE app.session_cache OWNER TO catalyst_dr_test_owner;
ALTER PROCEDURE app.noop(integer) OWNER TO catalyst_dr_test_owner;
GRANT USAGE ON SCHEMA app TO catalyst_dr_test_reader;
GRANT SELECT ON app.paying, app.paying_counts TO catalyst_dr_test_reader;
GRANT SELECT (id, email), UPDATE (name) ON app.accounts TO catalyst_dr_test_reader;
REVOKE EXECUTE ON FUNCTION app.next_id() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION app.next_id() TO catalyst_dr_test_reader WITH GRANT OPTION;
GRANT USAGE ON SEQUENCE app.ids TO catalyst_dr_test_reader;

-- Awkward corners: quoted names, nested types, table-typed columns, FKs to a partitioned
-- table, triggers and identity on partitioned tables, INSTEAD OF triggers, multiple
-- inheritance, security definer functions, exclusion constraints, NOT VALID foreign keys.
CREATE EXTENSION btree_gist;
CREATE SCHEMA "We""ird Schema";
CREATE DOMAIN "We""ird Schema".pos_small AS app.positive CHECK (VALUE < 1000);
CREATE TYPE "We""ird Schema".nested AS (p app.pair, tags text[], amount "We""ird Schema".pos_small);
CREATE TABLE "We""ird Schema"."Mixed Case" (
    id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    n "We""ird Schema".nested,
    smalls "We""ird Schema".pos_small[],
    account app.accounts,
    during tstzrange,
    room integer,
    CONSTRAINT no_double_booking EXCLUDE USING gist (room WITH =, during WITH &&)
);
INSERT INTO "We""ird Schema"."Mixed Case" (n, smalls, during, room)
SELECT ROW(ROW(g, 'n')::app.pair, ARRAY['a', 'b'], 5)::"We""ird Schema".nested, ARRAY[1, 2]::"We""ird Schema".pos_small[],
       tstzrange(timestamptz '2026-01-01' + g * interval '1 hour', timestamptz '2026-01-01' + (g + 1) * interval '1 hour'), g % 3
FROM generate_series(1, 50) g;
CREATE TABLE app.orders (
    id bigint GENERATED ALWAYS AS IDENTITY,
    region text NOT NULL,
    total numeric(12, 2) NOT NULL,
    total_cents bigint GENERATED ALWAYS AS ((total * 100)::bigint) STORED,
    PRIMARY KEY (id, region)
) PARTITION BY LIST (region);
CREATE TABLE app.orders_eu PARTITION OF app.orders FOR VALUES IN ('eu', 'uk');
CREATE TABLE app.orders_rest PARTITION OF app.orders DEFAULT;
CREATE INDEX orders_rest_total_idx ON app.orders_rest (total);
CREATE TRIGGER orders_audit AFTER INSERT ON app.orders FOR EACH ROW EXECUTE FUNCTION app.touch();
ALTER TABLE app.orders DISABLE TRIGGER orders_audit;
INSERT INTO app.orders (region, total) SELECT (ARRAY['eu', 'uk', 'us', 'jp'])[1 + g % 4], g * 1.25 FROM generate_series(1, 400) g;
CREATE TABLE app.refunds (id serial PRIMARY KEY, order_id bigint NOT NULL, region text NOT NULL,
    CONSTRAINT refunds_order_fkey FOREIGN KEY (order_id, region) REFERENCES app.orders (id, region));
INSERT INTO app.refunds (order_id, region) SELECT id, region FROM app.orders WHERE id % 10 = 0;
ALTER TABLE app.refunds ADD CONSTRAINT refunds_order_again FOREIGN KEY (order_id, region) REFERENCES app.orders (id, region) NOT VALID;
COMMENT ON CONSTRAINT refunds_order_fkey ON app.refunds IS 'each refund names its order';
CREATE TABLE app.audited (at timestamptz NOT NULL DEFAULT now());
CREATE TABLE app.tagged (tag text COLLATE "C");
CREATE TABLE app.audited_tagged (note text) INHERITS (app.audited, app.tagged);
INSERT INTO app.audited_tagged (at, tag, note) VALUES ('2026-01-01', 'x', 'both parents');
CREATE FUNCTION "We""ird Schema"."count it"(OUT n bigint, IN since timestamptz DEFAULT '2026-01-01') LANGUAGE sql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp AS $$ SELECT count(*) FROM app.orders $$;
COMMENT ON FUNCTION "We""ird Schema"."count it"(timestamptz) IS 'it''s "quoted"';
CREATE VIEW app.order_totals AS SELECT region, sum(total) AS total FROM app.orders GROUP BY region;
CREATE FUNCTION app.order_totals_insert() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
CREATE TRIGGER order_totals_insert INSTEAD OF INSERT ON app.order_totals FOR EACH ROW EXECUTE FUNCTION app.order_totals_insert();
CREATE POLICY orders_by_region ON app.orders FOR SELECT TO PUBLIC, catalyst_dr_test_reader USING (region <> 'jp');
ALTER TABLE app.orders ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.orders FORCE ROW LEVEL SECURITY;
CREATE MATERIALIZED VIEW app.unused_counts AS SELECT count(*) AS n FROM app.refunds WITH NO DATA;
"#;

async fn source(sdk: &aws_config::SdkConfig) -> (String, String, Client) {
    pg_admin()
        .await
        .batch_execute(ROLES_SQL)
        .await
        .expect("roles");
    let (name, secret, client) = empty_database(sdk, "objects_src").await;
    client
        .batch_execute(SCHEMA_SQL)
        .await
        .expect("the every-object schema");
    (name, secret, client)
}

async fn staging(sdk: &aws_config::SdkConfig, prefix: &str) -> (String, String, Client) {
    let (name, secret, client) = empty_database(sdk, prefix).await;
    catalyst_db::mark_staging(&client, "objects-test")
        .await
        .expect("mark staging");
    (name, secret, client)
}

fn logical(
    sdk: &aws_config::SdkConfig,
    bucket: &str,
    source_secret: &str,
    ignore: &[(&str, &str)],
) -> LogicalBackups {
    let config = LogicalConfig {
        parallelism: 2,
        part_size_bytes: 5 << 20,
        segment_bytes: 1 << 20,
        source_secret_id: Some(source_secret.to_owned()),
        tls: Some(TlsMode::Disable),
        ignore: ignore
            .iter()
            .map(|(k, n)| ((*k).to_owned(), (*n).to_owned()))
            .collect(),
        ..LogicalConfig::new(1)
    };
    LogicalBackups::new(
        config,
        Arc::new(S3Objects::new(s3(sdk), bucket)),
        Arc::new(aws_sdk_secretsmanager::Client::new(sdk)),
    )
}

fn pg_tool(tool: &str) -> String {
    format!(
        "{}/{tool}",
        std::env::var("PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".to_owned())
    )
}

fn pg_tool_command(tool: &str, dbname: &str) -> Command {
    let mut command = Command::new(pg_tool(tool));
    command
        .args([
            "-h",
            &stack_var("CATALYST_DR_PG_HOST"),
            "-p",
            &stack_var("CATALYST_DR_PG_PORT"),
            "-U",
            "postgres",
            "-d",
            dbname,
        ])
        .env("PGPASSWORD", stack_var("CATALYST_DR_PG_PASSWORD"));
    command
}

/// `pg_dump --schema-only`, normalised: comments, blank lines, session settings and the
/// per-dump `\restrict` key removed.
fn schema_dump(dbname: &str) -> Vec<String> {
    let out = pg_tool_command("pg_dump", dbname)
        .args(["--schema-only", "--no-sync"])
        .output()
        .expect("run pg_dump");
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with("--")
                || l.starts_with("SET ")
                || l.starts_with("SELECT pg_catalog.set_config")
                || l.starts_with("\\"))
        })
        .map(str::to_owned)
        .collect()
}

fn assert_same_schema(restored: &[String], source: &[String]) {
    if restored != source {
        let only = |a: &[String], b: &[String]| {
            a.iter()
                .filter(|l| !b.contains(l))
                .cloned()
                .collect::<Vec<_>>()
        };
        panic!(
            "pg_dump --schema-only differs\nonly in the source: {:#?}\nonly in the restored database: {:#?}\n(or in another order)",
            only(source, restored),
            only(restored, source)
        );
    }
}

/// Every table's and populated materialized view's rows (through `ONLY`, so each partition and
/// child counts once) and an order-independent digest of them.
async fn all_contents(client: &Client) -> Vec<(String, i64, String)> {
    relation_contents(
        client,
        "(c.relkind = 'r' OR c.relkind = 'm' AND c.relispopulated)",
    )
    .await
}

#[tokio::test]
async fn every_object_kind_round_trips_and_pg_dump_sees_the_same_schema() {
    let sdk = local_aws().await;
    let bucket = new_locked_bucket(&sdk, "objects").await;
    let (src_name, src_secret, src) = source(&sdk).await;
    let logical = logical(&sdk, &bucket, &src_secret, &[]);
    let run = run_in(0);

    let result = logical.backup(&run).await.expect("backup");
    let key = format!("logical/{}/manifest.json", run.stamp);
    let body = s3(&sdk)
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(manifest["complete"], true, "{:#}", manifest["not_captured"]);
    // Every partition and inheritance child is a table of its own with its rows.
    let rows = |name: &str| {
        manifest["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["rows"].as_u64().unwrap())
    };
    let partitions: u64 = [
        "delivery_log_2026_01",
        "delivery_log_2026_02_h0",
        "delivery_log_2026_02_h1",
        "delivery_log_default",
    ]
    .iter()
    .map(|p| rows(p).expect(p))
    .sum();
    assert_eq!(partitions, 50_000);
    assert_eq!(
        (rows("events"), rows("login_events"), rows("session_cache")),
        (Some(300), Some(200), Some(100))
    );
    assert_eq!(
        rows("delivery_log"),
        None,
        "a partitioned table has no rows of its own"
    );
    let source_rows: i64 = relation_contents(&src, "c.relkind = 'r'")
        .await
        .iter()
        .map(|(_, rows, _)| rows)
        .sum();
    assert_eq!(
        result.rows, source_rows as u64,
        "the backup holds every row of every table of the source"
    );

    let report = logical.verify(&run).await.expect("verify");
    assert!(report.ok && report.complete, "{report:#?}");

    let (dst_name, dst_secret, dst) = staging(&sdk, "objects_dst").await;
    let restored = logical
        .restore(
            &run,
            &dst_secret,
            RestoreOptions {
                database: None,
                reread: true,
                reset: false,
            },
        )
        .await
        .expect("restore");
    assert!(restored.consistent, "{:#?}", restored.mismatches);
    assert_eq!(all_contents(&dst).await, all_contents(&src).await);
    let source_schema = schema_dump(&src_name);
    assert_same_schema(&schema_dump(&dst_name), &source_schema);

    // The reference: pg_dump -Fc | pg_restore into an empty database gives the same dump, so
    // the normalisation hides nothing a restore could get wrong.
    let (ref_name, _, _) = empty_database(&sdk, "objects_ref").await;
    let archive = std::env::temp_dir().join(format!("{ref_name}.dump"));
    let dump = pg_tool_command("pg_dump", &src_name)
        .args(["-Fc", "-f"])
        .arg(&archive)
        .output()
        .expect("pg_dump -Fc");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let restore = pg_tool_command("pg_restore", &ref_name)
        .arg(&archive)
        .output()
        .expect("pg_restore");
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );
    let _ = std::fs::remove_file(&archive);
    assert_same_schema(&schema_dump(&ref_name), &source_schema);

    // The restored database behaves as the source: triggers fire (and the disabled one does
    // not), policies and the domain's check hold, sequences continue.
    dst.batch_execute("UPDATE app.accounts SET name = 'changed' WHERE id = 1000")
        .await
        .expect("update");
    let touched: bool = dst
        .query_one(
            "SELECT updated_at IS NOT NULL FROM app.accounts WHERE id = 1000",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(touched, "the update trigger fires");
    let next: i64 = dst
        .query_one("SELECT app.next_id()", &[])
        .await
        .unwrap()
        .get(0);
    let src_next: i64 = src
        .query_one("SELECT app.next_id()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, src_next);
    let bad = dst
        .batch_execute("INSERT INTO app.accounts (email) VALUES ('no-at-sign')")
        .await;
    assert!(bad.is_err(), "the domain's check is restored");
    assert_eq!(
        delivery_counts(&dst).await,
        50_000,
        "the materialized view is refreshed"
    );
}

#[tokio::test]
async fn an_object_the_backup_cannot_capture_fails_it_loudly_unless_ignored() {
    let sdk = local_aws().await;
    let bucket = new_locked_bucket(&sdk, "objects").await;
    let (_src_name, src_secret, src) = source(&sdk).await;
    src.batch_execute("CREATE RULE session_cache_notify AS ON INSERT TO app.session_cache DO ALSO NOTIFY session_cache").await.unwrap();
    let strict = logical(&sdk, &bucket, &src_secret, &[]);
    let run = run_in(10);

    let err = strict
        .backup(&run)
        .await
        .expect_err("a rule is not captured");
    assert_eq!(err.error_type(), ErrorKind::SchemaNotCaptured, "{err}");
    assert!(
        err.to_string()
            .contains("rule session_cache_notify on app.session_cache"),
        "{err}"
    );
    assert!(err.to_string().contains("LOGICAL_IGNORE_OBJECTS"), "{err}");
    // The data is kept, the manifest says what is missing, and every later look says so too.
    let again = strict
        .backup(&run)
        .await
        .expect_err("the rerun reports the same");
    assert_eq!(again.error_type(), ErrorKind::SchemaNotCaptured);
    let report = strict.verify(&run).await.expect("verify");
    assert!(!report.complete && !report.ok, "{report:#?}");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("session_cache_notify")),
        "{:?}",
        report.problems
    );
    let (_dst_name, dst_secret, _dst) = staging(&sdk, "objects_incomplete").await;
    let restored = strict
        .restore(&run, &dst_secret, RestoreOptions::default())
        .await
        .expect("restore what there is");
    assert!(
        !restored.consistent,
        "a restore of an incomplete backup is never consistent"
    );
    assert!(
        restored
            .mismatches
            .iter()
            .any(|m| m.contains("session_cache_notify")),
        "{:?}",
        restored.mismatches
    );

    // Listed by the operator, the rule is left out on purpose and the backup is complete.
    let lenient = logical(&sdk, &bucket, &src_secret, &[("rule", "*")]);
    let run = run_in(20);
    let result = lenient
        .backup(&run)
        .await
        .expect("complete with the rule ignored");
    assert_eq!(result.ignored.len(), 1);
    assert!(lenient.verify(&run).await.expect("verify").ok);
}

/// Starts a restore process of `run` into the staging database of `dst_secret` and kills it
/// (SIGKILL) once it has committed a segment; asserts it left a half-filled database.
async fn kill_restore_while_loading(bucket: &str, run: &RunId, dst_secret: &str, dst: &Client) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bench-logical"))
        .args([
            "restore",
            "--target-secret",
            dst_secret,
            "--bucket",
            bucket,
            "--scheduled-time",
            &catalyst_dr::input::format_time(run.scheduled_time),
        ])
        .args(["--parallelism", "2", "--segment-mib", "1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start a restore process");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        // The schema and the ledger are created in one transaction, with the marker before.
        let prepared: bool = dst
            .query_one("SELECT to_regclass('catalyst_dr_restore.loaded') IS NOT NULL AND shobj_description(d.oid, 'pg_database') LIKE '%restoring=%' FROM pg_database d WHERE d.datname = current_database()", &[])
            .await
            .unwrap()
            .get(0);
        let loaded: i64 = if prepared {
            dst.query_one("SELECT count(*) FROM catalyst_dr_restore.loaded", &[])
                .await
                .unwrap()
                .get(0)
        } else {
            0
        };
        if loaded > 0 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restore process ended before it could be killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the restore process never started loading"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    child.kill().expect("kill the restore process");
    child.wait().expect("reap it");
    let left: i64 = dst.query_one("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'app'", &[]).await.unwrap().get(0);
    assert!(left > 0, "the killed restore left a half-filled database");
}

#[tokio::test]
async fn an_interrupted_restore_resumes_or_is_reset_only_for_the_same_backup() {
    let sdk = local_aws().await;
    let bucket = new_locked_bucket(&sdk, "objects").await;
    let (_src_name, src_secret, src) = source(&sdk).await;
    let whole = logical(&sdk, &bucket, &src_secret, &[]);
    let run = run_in(30);
    whole.backup(&run).await.expect("backup");

    let (_dst_name, dst_secret, dst) = staging(&sdk, "objects_interrupted").await;
    kill_restore_while_loading(&bucket, &run, &dst_secret, &dst).await;
    // Another backup's restore may not reset it.
    let other = run_in(35);
    whole.backup(&other).await.expect("another backup");
    let err = whole
        .restore(
            &other,
            &dst_secret,
            RestoreOptions {
                database: None,
                reread: false,
                reset: true,
            },
        )
        .await
        .expect_err("not this backup's");
    assert_eq!(err.error_type(), ErrorKind::TargetNotEmpty);
    // A plain rerun resumes it: the segments the killed process committed stay, the rest load.
    let resumed = whole
        .restore(
            &run,
            &dst_secret,
            RestoreOptions {
                database: None,
                reread: true,
                reset: false,
            },
        )
        .await
        .expect("resume");
    assert!(
        !resumed.reset && resumed.consistent,
        "{:#?}",
        resumed.mismatches
    );
    assert_eq!(all_contents(&dst).await, all_contents(&src).await);
    // Once finished, the database is no longer marked as being restored: nothing resets it.
    let err = whole
        .restore(
            &run,
            &dst_secret,
            RestoreOptions {
                database: None,
                reread: false,
                reset: true,
            },
        )
        .await
        .expect_err("finished");
    assert_eq!(err.error_type(), ErrorKind::TargetNotEmpty);
    assert_eq!(all_contents(&dst).await, all_contents(&src).await);

    // With reset, what an interrupted restore left is dropped and the restore starts over.
    let (_again_name, again_secret, again) = staging(&sdk, "objects_reset").await;
    kill_restore_while_loading(&bucket, &run, &again_secret, &again).await;
    let restored = whole
        .restore(
            &run,
            &again_secret,
            RestoreOptions {
                database: None,
                reread: true,
                reset: true,
            },
        )
        .await
        .expect("reset and restore");
    assert!(
        restored.reset && restored.consistent,
        "{:#?}",
        restored.mismatches
    );
    assert_eq!(all_contents(&again).await, all_contents(&src).await);
}

/// The every-object source backed up, and a staging database the backup is loaded into, its
/// restore not finished.
struct Loaded {
    src: Client,
    whole: LogicalBackups,
    run: RunId,
    dst_name: String,
    dst: Client,
    target: RestoreTarget,
    restore_id: String,
}

impl Loaded {
    async fn new(label: &str) -> Self {
        let sdk = local_aws().await;
        let bucket = new_locked_bucket(&sdk, "objects").await;
        let (_src_name, src_secret, src) = source(&sdk).await;
        let whole = logical(&sdk, &bucket, &src_secret, &[]);
        let run = run_in(40);
        whole.backup(&run).await.expect("backup");
        let (dst_name, dst_secret, dst) = staging(&sdk, label).await;
        let target = RestoreTarget::new(&dst_secret, None).expect("target");
        let restore_id = catalyst_dr_tests::loaded_restore(&whole, &run, &target)
            .await
            .restore_id;
        Self {
            src,
            whole,
            run,
            dst_name,
            dst,
            target,
            restore_id,
        }
    }

    async fn finish(&self) -> Result<catalyst_dr::logical::restore::RestoreResult, LogicalError> {
        self.whole
            .finish_restore(&self.run, &self.target, &self.restore_id, true)
            .await
    }
}

/// Whether `constraint` exists, and is validated.
async fn key_state(client: &Client, constraint: &str) -> Option<bool> {
    client
        .query_opt(
            "SELECT convalidated FROM pg_constraint WHERE conname = $1 AND contype = 'f'",
            &[&constraint],
        )
        .await
        .expect("constraint")
        .map(|r| r.get(0))
}

/// The foreign keys PostgreSQL validates as they are added (of a partitioned table, or
/// referencing one) are added after the keys' transaction, each on its own: a finish waits for
/// one another session runs, answers in time which are left, and the post-data (a comment on one
/// of them) follows them; one that the restored rows break fails the finish, naming it, until
/// the rows are mended.
#[tokio::test]
async fn keys_validated_as_they_are_added_go_on_their_own_before_the_post_data() {
    let loaded = Loaded::new("objects_keys").await;
    let (src, dst, dst_name) = (&loaded.src, &loaded.dst, &loaded.dst_name);
    let finish = || loaded.finish();
    let within = |seconds| Some(SystemTime::now() + Duration::from_secs(seconds));

    // Another attempt's session runs the first of them (as one whose invocation ended would).
    let other = catalyst_dr_tests::pg_connect(dst_name).await;
    let session = format!("catalyst-dr {} key 0", loaded.restore_id);
    other
        .execute(
            "SELECT set_config('application_name', $1, false)",
            &[&session],
        )
        .await
        .unwrap();
    let sleeping = tokio::spawn(async move { other.batch_execute("SELECT pg_sleep(12)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // (It builds the indexes and commits the keys' transaction in well under its 5 s.)
    let err = with_deadline(within(10), finish())
        .await
        .expect_err("waits for the other session");
    assert_eq!(err.error_type(), ErrorKind::RestoreStillBuilding, "{err}");
    let LogicalError::RestoreStillBuilding { count, first, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(*count >= 2, "{err}");
    assert!(
        first
            .iter()
            .any(|f| f == "foreign key \"refunds_order_fkey\" of \"app\".\"refunds\""),
        "{err}"
    );
    // The keys' transaction committed; none of those keys was added, nor the post-data.
    let primary_keys: i64 = dst
        .query_one(
            "SELECT count(*) FROM pg_constraint WHERE contype = 'p' AND connamespace = 'app'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(primary_keys > 0);
    assert_eq!(key_state(dst, "refunds_order_fkey").await, None);
    assert_eq!(key_state(dst, "refunds_order_again").await, None);
    let commented: i64 = dst
        .query_one("SELECT count(*) FROM pg_description d JOIN pg_constraint c ON c.oid = d.objoid WHERE c.conname = 'refunds_order_fkey'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(commented, 0);
    sleeping.await.unwrap().expect("the other session ends");

    // A refund whose order is missing: the key is refused, named, and stays out.
    dst.batch_execute("INSERT INTO app.refunds (id, order_id, region) VALUES (-1, -1, 'eu')")
        .await
        .unwrap();
    let err = finish().await.expect_err("the key fails");
    assert_eq!(err.error_type(), ErrorKind::Postgres, "{err:?}");
    assert!(format!("{err:?}").contains("refunds_order_fkey"), "{err:?}");
    assert_eq!(key_state(dst, "refunds_order_fkey").await, None);
    dst.batch_execute("DELETE FROM app.refunds WHERE id = -1")
        .await
        .unwrap();

    let restored = finish().await.expect("finish");
    assert!(restored.consistent, "{:#?}", restored.mismatches);
    assert_eq!(key_state(dst, "refunds_order_fkey").await, Some(true));
    assert_eq!(key_state(dst, "refunds_order_again").await, Some(false));
    assert_eq!(all_contents(dst).await, all_contents(src).await);
}

/// The deliveries the materialized view `app.delivery_counts` counts.
async fn delivery_counts(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT sum(deliveries)::bigint FROM app.delivery_counts",
            &[],
        )
        .await
        .expect("delivery counts")
        .get(0)
}

/// The sessions named `name` running a statement.
async fn active_sessions(client: &Client, name: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'",
            &[&name],
        )
        .await
        .expect("sessions")
        .get(0)
}

/// Whether the materialized view is populated, and the comment on its index (made after it).
async fn view_state(client: &Client) -> (bool, Option<String>) {
    let row = client
        .query_one(
            "SELECT (SELECT relispopulated FROM pg_class WHERE oid = 'app.refreshed_slowly'::regclass), \
                    obj_description(to_regclass('app.refreshed_slowly_one'), 'pg_class')",
            &[],
        )
        .await
        .expect("view state");
    (row.get(0), row.get(1))
}

/// A materialized view's refresh and indexes go on in the database past the finish that sends
/// them, on their own: the finish answers which view is still being filled, the statements
/// after it (a comment on its index, privileges) wait for it, and the next finish waits for it
/// and goes on once it has committed.
#[tokio::test]
async fn a_materialized_view_refresh_outlasts_the_invocation_and_the_post_data_after_waits() {
    let loaded = Loaded::new("objects_views").await;
    let (src, dst, dst_name) = (&loaded.src, &loaded.dst, &loaded.dst_name);
    let finish = || loaded.finish();

    // In the target the slow view's refresh takes 8 s; the finish must answer within 10 s, so
    // it stops waiting at 5 s.
    dst.batch_execute(&format!(
        "ALTER DATABASE \"{dst_name}\" SET catalyst_test.refresh_pause = '8'"
    ))
    .await
    .unwrap();
    let err = with_deadline(Some(SystemTime::now() + Duration::from_secs(10)), finish())
        .await
        .expect_err("the refresh outlasts the invocation");
    assert_eq!(err.error_type(), ErrorKind::RestoreStillBuilding, "{err}");
    assert!(
        matches!(&err, LogicalError::RestoreStillBuilding { count: 2, first, .. }
            if first == &["materialized view app.refreshed_slowly", "materialized view app.unused_counts"]),
        "{err}"
    );
    let session = format!("catalyst-dr {} view 1", loaded.restore_id);
    assert_eq!(
        active_sessions(dst, &session).await,
        1,
        "the refresh goes on without its client"
    );
    // The view before it is filled; the policies came before, the privileges wait.
    assert_eq!(delivery_counts(dst).await, 50_000);
    assert_eq!(view_state(dst).await, (false, None));
    let policies: i64 = dst
        .query_one("SELECT count(*) FROM pg_policy", &[])
        .await
        .unwrap()
        .get(0);
    assert!(policies > 0);
    let granted: bool = dst
        .query_one(
            "SELECT has_table_privilege('catalyst_dr_test_reader', 'app.paying', 'SELECT')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!granted, "the privileges wait for the view");

    // The next finish waits for that session rather than filling the view again, then goes on.
    dst.batch_execute(&format!(
        "ALTER DATABASE \"{dst_name}\" RESET catalyst_test.refresh_pause"
    ))
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let restored = finish().await.expect("finish");
    assert!(restored.consistent, "{:#?}", restored.mismatches);
    assert_eq!(active_sessions(dst, &session).await, 0);
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "it waited for the refresh in flight ({:?})",
        started.elapsed()
    );
    assert_eq!(
        view_state(dst).await,
        (true, Some("made with the refresh".to_owned()))
    );
    assert_eq!(all_contents(dst).await, all_contents(src).await);
}

#[tokio::test]
async fn a_target_with_only_extensions_is_restored_into() {
    let sdk = local_aws().await;
    let bucket = new_locked_bucket(&sdk, "objects").await;
    let (_src_name, src_secret, src) = source(&sdk).await;
    let logical = logical(&sdk, &bucket, &src_secret, &[]);
    let run = run_in(40);
    logical.backup(&run).await.expect("backup");
    let (_dst_name, dst_secret, dst) = staging(&sdk, "objects_extensions").await;
    dst.batch_execute(
        "CREATE EXTENSION citext; CREATE EXTENSION pgcrypto; CREATE EXTENSION btree_gist",
    )
    .await
    .unwrap();
    let restored = logical
        .restore(&run, &dst_secret, RestoreOptions::default())
        .await
        .expect("restore");
    assert!(restored.consistent, "{:#?}", restored.mismatches);
    assert_eq!(all_contents(&dst).await, all_contents(&src).await);
}
