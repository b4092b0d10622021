//! The least-privilege database roles (`shared/sql/database-roles.sql`) on generated Catalyst
//! Auth databases of the local PostgreSQL, with login roles and secrets of each test's own: the
//! replay role can write only the requeue columns and its journal, yet a real replay through the
//! library (and a filtered redrive, which looks deliveries up) succeeds with it; a logical backup
//! with the backup role is complete; the drill role reads and takes its baseline but writes
//! nothing.

use catalyst_dr::catalyst_db::parity;
use catalyst_dr::catalyst_db::roles::{self, RoleNames};
use catalyst_dr::logical::LogicalBackups;
use catalyst_dr::logical::config::LogicalConfig;
use catalyst_dr::object_store::S3Objects;
use catalyst_dr::postgres::{PgConnector, SecretSource, TlsMode};
use catalyst_dr::replay::DeadLetterReplay;
use catalyst_dr::replay::audit::ReplayAudit;
use catalyst_dr::run_id::RunId;
use catalyst_dr_tests::datagen::GeneratorSpec;
use catalyst_dr_tests::endpoints::Endpoints;
use catalyst_dr_tests::{
    generated_database, local_aws, locked_bucket, put_db_secret, s3, seed, stack_var, unique,
};
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

/// A generated database with the setup SQL applied under role names of this run only (roles are
/// cluster-wide and tests run in parallel), each role given LOGIN and a password, and a secret
/// per role.
struct RoleDatabase {
    db: String,
    admin: Client,
    names: RoleNames,
    password: String,
    backup_secret: String,
    replay_secret: String,
    drill_secret: String,
}

async fn role_database(
    sdk: &aws_config::SdkConfig,
    label: &str,
    spec: &GeneratorSpec,
) -> RoleDatabase {
    let (db, _admin_secret, admin) = generated_database(sdk, label, spec).await;
    let tag = unique("r").replace('-', "_");
    let names = RoleNames {
        backup: format!("cdr_backup_{tag}"),
        replay: format!("cdr_replay_{tag}"),
        drill: format!("cdr_drill_{tag}"),
    };
    roles::apply(&admin, &names).await.expect("setup SQL");
    roles::apply(&admin, &names)
        .await
        .expect("the setup SQL runs again unchanged");
    // The operator's step: LOGIN and a password, outside the setup SQL.
    let password = unique("pw");
    for name in [&names.backup, &names.replay, &names.drill] {
        admin
            .batch_execute(&format!(
                "ALTER ROLE \"{name}\" LOGIN PASSWORD '{password}'"
            ))
            .await
            .expect("login role");
    }
    let secret = |role: &str| format!("catalyst-dr/test/{db}/{role}");
    let backup_secret = put_db_secret(sdk, &secret("backup"), &names.backup, &password, &db).await;
    let replay_secret = put_db_secret(sdk, &secret("replay"), &names.replay, &password, &db).await;
    let drill_secret = put_db_secret(sdk, &secret("drill"), &names.drill, &password, &db).await;
    RoleDatabase {
        db,
        admin,
        names,
        password,
        backup_secret,
        replay_secret,
        drill_secret,
    }
}

/// Connects as `user` with its password (scram over TCP, as the functions do).
async fn connect_as(db: &RoleDatabase, user: &str) -> Client {
    let mut config: tokio_postgres::Config = stack_var("CATALYST_DR_PG_URL")
        .parse()
        .expect("CATALYST_DR_PG_URL");
    config.user(user).password(&db.password).dbname(&db.db);
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
    tokio::spawn(connection);
    client
}

/// Runs each statement (in its own transaction) and asserts PostgreSQL refused it for lack of
/// privilege.
async fn assert_denied(client: &Client, role: &str, statements: &[&str]) {
    for sql in statements {
        let err = client
            .batch_execute(&format!("BEGIN READ WRITE; {sql}; COMMIT"))
            .await
            .expect_err(&format!("{role} may not: {sql}"));
        let _ = client.batch_execute("ROLLBACK").await;
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{role}: {sql}: {err:?}"
        );
    }
}

/// Every row of every Catalyst Auth table: equal before and after means nothing was written.
async fn fingerprint(admin: &Client) -> Vec<String> {
    let mut out = Vec::new();
    for table in catalyst_dr::catalyst_db::TABLES {
        let sql = format!(
            "SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t"
        );
        out.push(
            admin
                .query_one(&sql, &[])
                .await
                .expect("fingerprint")
                .get(0),
        );
    }
    out
}

/// Writes nobody but the Catalyst Auth application may make.
const APPLICATION_WRITES: &[&str] = &[
    "INSERT INTO users (email) VALUES ('intruder@example.com')",
    "UPDATE users SET disabled = true",
    "DELETE FROM users",
    "INSERT INTO entitlements (user_id, product, plan) SELECT 1, 'x', 'y'",
    "UPDATE entitlements SET plan = 'enterprise'",
    "DELETE FROM entitlements",
    "INSERT INTO webhook_subscriptions (endpoint_url) VALUES ('http://attacker.example/')",
    "UPDATE webhook_subscriptions SET endpoint_url = 'http://attacker.example/'",
    "DELETE FROM webhook_subscriptions",
    "INSERT INTO webhook_deliveries (subscription_id, event_type, payload) VALUES (1, 'x', '{}')",
    "UPDATE webhook_deliveries SET payload = '{}'",
    "UPDATE webhook_deliveries SET attempts = 0",
    "UPDATE webhook_deliveries SET error_message = NULL",
    "UPDATE webhook_deliveries SET subscription_id = 1",
    "UPDATE webhook_deliveries SET event_type = 'x', status = 'pending'",
    "DELETE FROM webhook_deliveries",
    "TRUNCATE users CASCADE",
    "TRUNCATE webhook_deliveries",
    "ALTER TABLE webhook_deliveries DROP COLUMN payload",
    "DROP TABLE entitlements",
    "CREATE TABLE public.intruder (i integer)",
    "CREATE TABLE catalyst_dr.intruder (i integer)",
    "CREATE FUNCTION public.intruder() RETURNS integer LANGUAGE sql AS 'SELECT 1'",
];

/// dead-letter-replay connected only through `REPLAY_DATABASE_SECRET_ID`: the source secret names
/// nothing, so any use of it would fail.
fn replay_for(sdk: &aws_config::SdkConfig, db: &RoleDatabase) -> DeadLetterReplay {
    catalyst_dr_tests::dead_letter_replay(
        sdk,
        &[
            (
                "SOURCE_DATABASE_SECRET_ID",
                "catalyst-dr/test/no-such-secret",
            ),
            ("REPLAY_DATABASE_SECRET_ID", db.replay_secret.as_str()),
            ("PROBE_TIMEOUT_MS", "400"),
            ("REPLAY_BATCH_SIZE", "50"),
            ("AUDIT_RETENTION_DAYS", "1"),
            ("REDRIVE_VISIBILITY_TIMEOUT_SECONDS", "30"),
        ],
    )
}

fn spec(endpoints: &Endpoints) -> GeneratorSpec {
    GeneratorSpec {
        seed: 11,
        users: 40,
        entitlements_per_user: 1,
        subscriptions: 4,
        deliveries: 400,
        dead_letter_share: 0.5,
        endpoint_base: endpoints.base.clone(),
        dead_letter_window_hours: 24,
        now: time::OffsetDateTime::now_utc(),
    }
}

#[tokio::test]
async fn the_replay_role_writes_only_the_requeue_columns_yet_a_replay_succeeds() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let db = role_database(&sdk, "roles_replay", &spec(&endpoints)).await;
    let replay_client = connect_as(&db, &db.names.replay).await;
    let before = fingerprint(&db.admin).await;

    let mut denied: Vec<&str> = APPLICATION_WRITES.to_vec();
    denied.extend([
        // Its journal is append-only to it, and it reads only the columns its queries name.
        "UPDATE catalyst_dr.replay_journal SET replay_id = 'x'",
        "DELETE FROM catalyst_dr.replay_journal",
        "TRUNCATE catalyst_dr.replay_journal",
        "DROP TABLE catalyst_dr.replay_journal",
        "SELECT payload FROM webhook_deliveries",
        "SELECT secret_hash FROM webhook_subscriptions",
        "SELECT email FROM users",
        "SELECT 1 FROM entitlements",
        "SELECT catalyst_dr.lock_baseline_tables()",
    ]);
    assert_denied(&replay_client, "replay", &denied).await;
    assert_eq!(
        fingerprint(&db.admin).await,
        before,
        "every refused statement left the data alone"
    );
    let rest_before = untouched_columns(&db.admin).await;

    // A real replay through the library, connected only through REPLAY_DATABASE_SECRET_ID.
    let bucket = seed()["bucket"].as_str().expect("seed bucket").to_owned();
    let replay = replay_for(&sdk, &db);
    let dead: BTreeSet<i64> = db
        .admin
        .query(
            "SELECT id FROM webhook_deliveries WHERE status = 'dead_lettered'",
            &[],
        )
        .await
        .expect("dead letters")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(dead.len() > 50, "the data has dead letters to replay");
    let filter = json!({"window_hours": 48});
    let plan = replay
        .handle(json!({"action": "plan", "filter": filter}))
        .await
        .expect("plan with the replay role");
    assert_eq!(plan["deliveries"], dead.len());
    let replay_id = unique("roles");
    let result = replay
        .handle(json!({"action": "replay", "replay_id": replay_id, "filter": filter}))
        .await
        .expect("replay with the replay role");
    assert_eq!(result["counts"]["replayed"], dead.len(), "{result:#}");
    let pending: BTreeSet<i64> = db
        .admin
        .query("SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= now() AND id = ANY($1)", &[&dead.iter().copied().collect::<Vec<_>>()])
        .await
        .expect("pending")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pending, dead, "every dead letter was requeued");
    // The journal (pre-created by the setup SQL, owned by the administrator) has the replay's rows.
    let journaled: BTreeSet<i64> = db
        .admin
        .query(
            "SELECT delivery_id FROM catalyst_dr.replay_journal WHERE replay_id = $1",
            &[&replay_id],
        )
        .await
        .expect("journal")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(journaled, dead);
    let owner: String = db
        .admin
        .query_one("SELECT tableowner::text FROM pg_tables WHERE schemaname = 'catalyst_dr' AND tablename = 'replay_journal'", &[])
        .await
        .expect("owner")
        .get(0);
    assert_ne!(owner, db.names.replay);
    // The audit record names the replay role's secret.
    let key = format!("replays/{replay_id}/audit.json");
    let body = s3(&sdk)
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .expect("audit.json")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    let audit: ReplayAudit = serde_json::from_slice(&body).expect("audit JSON");
    assert_eq!(
        audit.delivery_ids.iter().copied().collect::<BTreeSet<_>>(),
        dead
    );
    assert_eq!(audit.database_secret_id, db.replay_secret);
    // verify reads the outcome with the same role.
    let verified = replay
        .handle(json!({"action": "verify", "replay_id": replay_id}))
        .await
        .expect("verify with the replay role");
    assert_eq!(verified["replayed"], dead.len());
    // Only the requeue columns changed: everything else of every row is as it was.
    assert_eq!(untouched_columns(&db.admin).await, rest_before);
    assert_eq!(
        fingerprint(&db.admin).await[..3],
        before[..3],
        "no other table changed"
    );
}

/// Every column of `webhook_deliveries` but the three the replay may write.
async fn untouched_columns(admin: &Client) -> String {
    let sql = "SELECT md5(string_agg(concat_ws(',', id, subscription_id, event_type, payload, error_message, attempts, created_at), '|' ORDER BY id)) FROM webhook_deliveries";
    admin
        .query_one(sql, &[])
        .await
        .expect("untouched columns")
        .get(0)
}

#[tokio::test]
async fn a_logical_backup_with_the_backup_role_is_complete() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let db = role_database(&sdk, "roles_backup", &spec(&endpoints)).await;
    let bucket = unique("roles-backup");
    locked_bucket(&s3(&sdk), &bucket).await;
    let config = LogicalConfig {
        parallelism: 2,
        source_secret_id: Some(db.backup_secret.clone()),
        tls: Some(TlsMode::Disable),
        ..LogicalConfig::new(1)
    };
    let logical = LogicalBackups::new(
        config,
        Arc::new(S3Objects::new(s3(&sdk), &bucket)),
        Arc::new(aws_sdk_secretsmanager::Client::new(&sdk)),
    );
    let t = time::OffsetDateTime::now_utc();
    let run = RunId::from_scheduled_time("scheduled_time", &catalyst_dr::input::format_time(t))
        .expect("run id");

    let result = logical
        .backup(&run)
        .await
        .expect("backup with the backup role");
    let manifest_key = format!("logical/{}/manifest.json", run.stamp);
    let body = s3(&sdk)
        .get_object()
        .bucket(&bucket)
        .key(&manifest_key)
        .send()
        .await
        .expect("manifest")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    let manifest: serde_json::Value = serde_json::from_slice(&body).expect("manifest JSON");
    assert_eq!(manifest["complete"], true, "{:#}", manifest["not_captured"]);
    // Every table, the journal the setup SQL created included, with all its rows.
    let tables = manifest["tables"].as_array().expect("tables");
    assert_eq!(result.tables, 5, "{result:#?}");
    for table in catalyst_dr::catalyst_db::TABLES {
        let rows: i64 = db
            .admin
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .expect("count")
            .get(0);
        let captured = tables
            .iter()
            .find(|t| t["name"] == table)
            .unwrap_or_else(|| panic!("{table} in the manifest"));
        assert_eq!(captured["rows"], rows, "{table}");
    }
    assert!(
        tables
            .iter()
            .any(|t| t["schema"] == "catalyst_dr" && t["name"] == "replay_journal"),
        "{tables:#?}"
    );
    let report = logical.verify(&run).await.expect("verify");
    assert!(report.ok && report.complete, "{report:#?}");

    // The backup role reads everything and writes nothing, even in a read-write transaction.
    let backup_client = connect_as(&db, &db.names.backup).await;
    let read: i64 = backup_client.query_one("SELECT count(*) FROM (SELECT secret_hash, payload FROM webhook_subscriptions, webhook_deliveries LIMIT 5) t", &[]).await.expect("read").get(0);
    assert_eq!(read, 5);
    backup_client
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .expect("session setting");
    let mut denied: Vec<&str> = APPLICATION_WRITES.to_vec();
    denied.push("INSERT INTO catalyst_dr.replay_journal (replay_id, delivery_id) VALUES ('x', 1)");
    assert_denied(&backup_client, "backup", &denied).await;
    let read_only: String = connect_as(&db, &db.names.backup)
        .await
        .query_one("SHOW default_transaction_read_only", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(
        read_only, "on",
        "the backup role's sessions start read-only"
    );
}

#[tokio::test]
async fn the_drill_role_reads_and_takes_its_baseline_but_writes_nothing() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let db = role_database(&sdk, "roles_drill", &spec(&endpoints)).await;
    let before = fingerprint(&db.admin).await;
    let drill = connect_as(&db, &db.names.drill).await;
    let mut denied: Vec<&str> = APPLICATION_WRITES.to_vec();
    denied.extend([
        "UPDATE webhook_deliveries SET status = 'pending'",
        // SHARE locks only through the setup SQL's function.
        "LOCK TABLE users IN SHARE MODE",
        "INSERT INTO catalyst_dr.replay_journal (replay_id, delivery_id) VALUES ('x', 1)",
        "SELECT 1 FROM catalyst_dr.replay_journal",
    ]);
    assert_denied(&drill, "drill", &denied).await;
    assert_eq!(fingerprint(&db.admin).await, before);

    // The drill baseline with the drill role only: the same fingerprint the administrator sees.
    // Connected as drill-validator does, through the drill role's secret.
    let secrets: Arc<dyn SecretSource> = Arc::new(aws_sdk_secretsmanager::Client::new(&sdk));
    let connector = PgConnector::new(secrets, db.drill_secret.clone(), TlsMode::Disable);
    let locker = connector
        .connect()
        .await
        .expect("connect with the drill secret");
    let snapshot = connector
        .connect()
        .await
        .expect("connect with the drill secret");
    let instant = parity::open_baseline(&locker, &snapshot, std::time::Duration::from_secs(5))
        .await
        .expect("baseline with the drill role");
    // As drill-validator reads it: block ranges on more connections importing the snapshot.
    let helpers = [
        connector.connect().await.expect("connect a helper"),
        connector.connect().await.expect("connect a helper"),
    ];
    let as_drill = parity::fingerprint_parallel(&snapshot, &helpers, instant.instant, 1)
        .await
        .expect("fingerprint with the drill role");
    snapshot.batch_execute("COMMIT").await.expect("commit");
    let as_admin = parity::fingerprint(&db.admin, instant.instant)
        .await
        .expect("fingerprint as administrator");
    assert_eq!(as_drill, as_admin);
    assert!(as_drill.tables.iter().all(|t| t.rows > 0), "{as_drill:#?}");
    // The deliveries by status, counted in the same scans, are what a GROUP BY finds.
    let by_status: std::collections::BTreeMap<String, i64> = db
        .admin
        .query(
            "SELECT status, count(*) FROM webhook_deliveries GROUP BY status",
            &[],
        )
        .await
        .expect("deliveries by status")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(as_drill.deliveries_by_status, by_status);
    assert_eq!(by_status.values().sum::<i64>(), 400);

    // A fanned-out baseline with the drill role: its snapshot held by a session of its own,
    // imported by another, and ended by a third.
    let (instant, held) = parity::open_held_baseline(
        &locker,
        connector.connect().await.expect("connect the holder"),
        "0a1b2c3d",
        std::time::Duration::from_secs(120),
        std::time::Duration::from_secs(5),
    )
    .await
    .expect("held baseline with the drill role");
    let reader = connector.connect().await.expect("connect a reader");
    parity::import_snapshot(&reader, &held.snapshot)
        .await
        .expect("import with the drill role");
    let held_fingerprint = parity::fingerprint(&reader, instant.instant)
        .await
        .expect("fingerprint in the held snapshot");
    reader.batch_execute("COMMIT").await.expect("commit");
    assert_eq!(held_fingerprint.tables, as_admin.tables);
    let releaser = connector.connect().await.expect("connect");
    assert!(
        parity::release_snapshot(&releaser, "0a1b2c3d")
            .await
            .expect("release with the drill role")
    );
}

#[tokio::test]
async fn a_filtered_redrive_with_the_replay_role_looks_deliveries_up() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let db = role_database(&sdk, "roles_redrive", &spec(&endpoints)).await;
    let pick = |status: &'static str| {
        let admin = &db.admin;
        async move {
            admin
                .query(
                    "SELECT id FROM webhook_deliveries WHERE status = $1 ORDER BY id LIMIT 5",
                    &[&status],
                )
                .await
                .expect("ids")
                .iter()
                .map(|r| r.get::<_, i64>(0))
                .collect::<BTreeSet<i64>>()
        }
    };
    let (dead, done) = (pick("dead_lettered").await, pick("succeeded").await);
    assert_eq!((dead.len(), done.len()), (5, 5));
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let (source_url, dlq_url) =
        catalyst_dr_tests::queue_with_dead_letters(&sqs, &unique("roles-webhooks"), 1).await;
    for id in dead.iter().chain(&done) {
        sqs.send_message()
            .queue_url(&dlq_url)
            .message_body(json!({"delivery_id": id}).to_string())
            .send()
            .await
            .expect("dead letter");
    }
    let before = fingerprint(&db.admin).await;
    let event = json!({"action": "redrive", "mode": "filtered", "dlq_url": dlq_url, "source_queue_url": source_url});
    let result = replay_for(&sdk, &db)
        .handle(event)
        .await
        .expect("filtered redrive with the replay role");
    assert_eq!(
        (result["sent"].as_u64(), result["stale_deleted"].as_u64()),
        (Some(5), Some(5)),
        "{result:#}"
    );
    assert_eq!(
        fingerprint(&db.admin).await,
        before,
        "a redrive writes nothing to the database"
    );
}
