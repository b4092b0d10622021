//! The reference schema and the data generator against a real PostgreSQL.
//!
//! `CATALYST_DR_PG_URL` must hold a superuser connection string to a running server (for
//! example `host=127.0.0.1 port=5432 user=postgres dbname=postgres`); without it these tests
//! fail. Each test works in a database of its own, dropped at the end (also on failure).

use catalyst_dr::catalyst_db::{self, CatalystDbError, DeliveryStatus, TABLES};
use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr_tests::datagen::{self, GeneratorSpec};
use catalyst_dr_tests::datagen::{EDGE_CASE_DISPLAY_NAMES, EDGE_CASE_PERIOD};
use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio_postgres::{Client, Config, NoTls};

const PG_URL_VAR: &str = "CATALYST_DR_PG_URL";

fn admin_config() -> Config {
    let url = std::env::var(PG_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{PG_URL_VAR} is not set: these tests need a running PostgreSQL and a superuser connection string, \
             e.g. {PG_URL_VAR}='host=127.0.0.1 port=5432 user=postgres dbname=postgres'"
        )
    });
    Config::from_str(&url)
        .unwrap_or_else(|e| panic!("{PG_URL_VAR} is not a valid connection string: {e}"))
}

async fn connect(config: &Config) -> Client {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the PostgreSQL named by {PG_URL_VAR}: {e}"));
    tokio::spawn(connection);
    client
}

/// A database created for one test and dropped (with `FORCE`) when the value goes away.
struct TestDb {
    name: String,
    admin: Config,
    client: Option<Client>,
}

impl TestDb {
    async fn create(label: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() % 1_000_000_000;
        let name = format!(
            "cdr_test_{label}_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let admin = admin_config();
        // Identifiers cannot be bind parameters; the name is built from [a-z0-9_] only.
        connect(&admin)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let mut config = admin.clone();
        config.dbname(&name);
        let client = connect(&config).await;
        client
            .batch_execute("SET TIME ZONE 'UTC'")
            .await
            .expect("set time zone");
        Self {
            name,
            admin,
            client: Some(client),
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("client is open until drop")
    }

    async fn count(&self, sql: &str) -> i64 {
        self.client()
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// md5 of every row of `table` in id order, as PostgreSQL prints them.
    async fn checksum(&self, table: &str) -> String {
        let sql = format!(
            "SELECT md5(COALESCE(string_agg(t::text, E'\\n' ORDER BY t.id), '')) FROM {table} t"
        );
        self.client()
            .query_one(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    async fn checksums(&self) -> Vec<String> {
        let mut sums = Vec::new();
        for table in TABLES {
            sums.push(self.checksum(table).await);
        }
        sums
    }

    async fn row_counts(&self) -> Vec<i64> {
        let mut counts = Vec::new();
        for table in TABLES {
            counts.push(self.count(&format!("SELECT count(*) FROM {table}")).await);
        }
        counts
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop(self.client.take());
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop cannot await, and the test's runtime may be the one running this: use a
        // runtime of our own on a thread of its own.
        let outcome = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let (client, connection) = admin.connect(NoTls).await.map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        // No panic here: it would abort a test that is already unwinding.
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!(
                "could not drop test database {}: the dropping thread panicked",
                self.name
            ),
        }
    }
}

fn small_spec(seed: u64) -> GeneratorSpec {
    GeneratorSpec {
        seed,
        users: 400,
        entitlements_per_user: 3,
        subscriptions: 12,
        deliveries: 3_000,
        dead_letter_share: 0.05,
        endpoint_base: "http://127.0.0.1:9/hooks".to_owned(),
        dead_letter_window_hours: 24,
        // Fixed, so that two runs have identical dead-lettered `updated_at` values too.
        now: datetime!(2026-11-20 08:30:00 UTC),
    }
}

#[tokio::test]
async fn schema_applies_twice() {
    let db = TestDb::create("schema").await;
    catalyst_db::apply(db.client()).await.expect("first apply");
    catalyst_db::apply(db.client()).await.expect("second apply");

    let tables = db
        .count(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' \
             AND table_name IN ('users', 'entitlements', 'webhook_subscriptions', 'webhook_deliveries')",
        )
        .await;
    assert_eq!(tables, 4);
    let columns: Vec<String> = db
        .client()
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
            &[&"webhook_deliveries"],
        )
        .await
        .expect("columns")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for column in [
        "id",
        "subscription_id",
        "status",
        "error_message",
        "attempts",
        "next_attempt_at",
        "created_at",
        "updated_at",
    ] {
        assert!(
            columns.iter().any(|c| c == column),
            "webhook_deliveries lacks {column}: {columns:?}"
        );
    }
    let indexes = db
        .count(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'webhook_deliveries' AND indexname IN \
             ('webhook_deliveries_status_updated_at_idx', 'webhook_deliveries_subscription_id_idx')",
        )
        .await;
    assert_eq!(indexes, 2);

    // The CHECK keeps unknown statuses out.
    let bad = db
        .client()
        .batch_execute(
            "INSERT INTO webhook_subscriptions (endpoint_url) VALUES ('https://x.example/1');
             INSERT INTO webhook_deliveries (subscription_id, event_type, payload, status)
             VALUES (1, 'user.created', '{}', 'lost')",
        )
        .await;
    assert!(bad.is_err(), "status 'lost' was accepted");
}

#[tokio::test]
async fn same_seed_same_content_other_seed_other_content() {
    let first = TestDb::create("seed_a").await;
    let second = TestDb::create("seed_b").await;
    let other = TestDb::create("seed_c").await;
    for (db, seed) in [(&first, 42), (&second, 42), (&other, 43)] {
        catalyst_db::apply(db.client()).await.expect("apply");
        datagen::generate(db.client(), &small_spec(seed))
            .await
            .expect("generate");
    }

    let (a, b, c) = (
        first.checksums().await,
        second.checksums().await,
        other.checksums().await,
    );
    assert_eq!(a, b, "same seed, different content");
    for (i, table) in TABLES.into_iter().enumerate() {
        assert_ne!(a[i], c[i], "seeds 42 and 43 gave identical {table}");
    }
}

#[tokio::test]
async fn counts_share_and_runbook_query() {
    let db = TestDb::create("counts").await;
    let client = db.client();
    catalyst_db::apply(client).await.expect("apply");
    let spec = GeneratorSpec {
        seed: 7,
        // Enough users for every edge-case display name to appear.
        users: EDGE_CASE_PERIOD * EDGE_CASE_DISPLAY_NAMES.len() as u64 + 50,
        entitlements_per_user: 3,
        subscriptions: 15,
        deliveries: 5_000,
        dead_letter_share: 0.1,
        endpoint_base: "https://hooks.example.com/".to_owned(),
        dead_letter_window_hours: 24,
        now: OffsetDateTime::now_utc(),
    };
    let counts = datagen::generate(client, &spec).await.expect("generate");

    // Counts: as specified, as returned, and as stored.
    assert_eq!(counts.users, spec.users);
    assert_eq!(counts.webhook_subscriptions, 15);
    assert_eq!(counts.webhook_deliveries, 5_000);
    assert!(
        counts.entitlements > 0 && counts.entitlements <= spec.users * 3,
        "{counts:?}"
    );
    let stored: Vec<u64> = db
        .row_counts()
        .await
        .into_iter()
        .map(|n| n as u64)
        .collect();
    assert_eq!(
        stored,
        [
            counts.users,
            counts.entitlements,
            counts.webhook_subscriptions,
            counts.webhook_deliveries
        ]
    );
    for status in DeliveryStatus::ALL {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM webhook_deliveries WHERE status = $1",
                &[&status.as_str()],
            )
            .await
            .expect("count by status")
            .get(0);
        assert_eq!(
            n as u64,
            counts.deliveries_by_status.get(status),
            "{status:?}"
        );
        assert!(n > 0, "no {status:?} deliveries");
    }
    assert_eq!(counts.deliveries_by_status.dead_lettered, 500);

    // The runbook's query finds exactly the dead-lettered deliveries, each with its error.
    let runbook = client
        .query(
            "SELECT id, subscription_id, status, error_message FROM webhook_deliveries \
             WHERE status = 'dead_lettered' AND updated_at >= NOW() - INTERVAL '24 hours'",
            &[],
        )
        .await
        .expect("runbook query");
    let found: BTreeSet<i64> = runbook.iter().map(|r| r.get::<_, i64>("id")).collect();
    let dead: BTreeSet<i64> = client
        .query(
            "SELECT id FROM webhook_deliveries WHERE status = 'dead_lettered'",
            &[],
        )
        .await
        .expect("dead-lettered ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(found.len(), 500);
    assert_eq!(found, dead);
    assert!(
        runbook
            .iter()
            .all(|r| r.get::<_, Option<String>>("error_message").is_some())
    );

    // Realistic shape: URLs by subscription number, NULLs, payloads that match the event type.
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_subscriptions WHERE endpoint_url <> 'https://hooks.example.com/' || id")
            .await,
        0
    );
    assert!(
        db.count("SELECT count(*) FROM users WHERE display_name IS NULL")
            .await
            > 0
    );
    assert!(
        db.count("SELECT count(*) FROM entitlements WHERE expires_at IS NULL")
            .await
            > 0
    );
    assert_eq!(
        db.count("SELECT count(*) FROM webhook_deliveries WHERE payload->>'type' <> event_type")
            .await,
        0
    );
    let mean_payload = db
        .count("SELECT avg(length(payload::text))::bigint FROM webhook_deliveries")
        .await;
    assert!(
        (300..=500).contains(&mean_payload),
        "mean payload {mean_payload} bytes"
    );
    // COPY escaping: each edge-case name arrives verbatim (tabs, newlines, a literal \N, "").
    for name in EDGE_CASE_DISPLAY_NAMES {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM users WHERE display_name = $1",
                &[name],
            )
            .await
            .expect("edge-case name")
            .get(0);
        assert!(n > 0, "display name {name:?} did not survive COPY");
    }

    // The identity sequences were moved past the generated ids.
    let next_user: i64 = client
        .query_one(
            "INSERT INTO users (email) VALUES ($1) RETURNING id",
            &[&"after-generation@example.com"],
        )
        .await
        .expect("insert after generation")
        .get(0);
    assert_eq!(next_user as u64, spec.users + 1);

    // A second run refuses to mix data sets.
    match datagen::generate(client, &spec).await {
        Err(CatalystDbError::TargetNotEmpty { table: "users" }) => {}
        other => panic!("expected TargetNotEmpty for users, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_specs_name_the_field_and_write_nothing() {
    let db = TestDb::create("invalid").await;
    catalyst_db::apply(db.client()).await.expect("apply");
    let valid = small_spec(1);
    let cases = [
        (
            "dead_letter_share",
            GeneratorSpec {
                dead_letter_share: 1.01,
                ..valid.clone()
            },
        ),
        (
            "dead_letter_share",
            GeneratorSpec {
                dead_letter_share: -0.1,
                ..valid.clone()
            },
        ),
        (
            "users",
            GeneratorSpec {
                users: 0,
                ..valid.clone()
            },
        ),
        (
            "subscriptions",
            GeneratorSpec {
                subscriptions: 0,
                ..valid.clone()
            },
        ),
        (
            "entitlements_per_user",
            GeneratorSpec {
                entitlements_per_user: 50,
                ..valid.clone()
            },
        ),
        (
            "endpoint_base",
            GeneratorSpec {
                endpoint_base: "hooks.example.com".to_owned(),
                ..valid.clone()
            },
        ),
        (
            "dead_letter_window_hours",
            GeneratorSpec {
                dead_letter_window_hours: 0,
                ..valid.clone()
            },
        ),
    ];
    for (expected, spec) in cases {
        match datagen::generate(db.client(), &spec).await {
            Err(err @ CatalystDbError::InvalidSpec { field, .. }) => {
                assert_eq!(field, expected, "{err}");
                assert_eq!(err.error_type(), ErrorKind::InvalidInput);
            }
            other => panic!("expected InvalidSpec for {expected}, got {other:?}"),
        }
        assert_eq!(
            db.row_counts().await,
            [0, 0, 0, 0],
            "an invalid spec ({expected}) wrote rows"
        );
    }
    // The client is still usable: nothing was left half-done on the session.
    datagen::generate(db.client(), &valid)
        .await
        .expect("a valid spec still works");
}

#[tokio::test]
async fn staging_marker_is_set_read_and_required() {
    let admin = catalyst_dr_tests::pg_admin().await;
    let name = catalyst_dr_tests::unique("staging").replace('-', "_");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let url = format!(
        "{} dbname={name}",
        catalyst_dr_tests::stack_var("CATALYST_DR_PG_URL")
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);

    assert!(matches!(
        catalyst_db::require_staging(&client).await,
        Err(catalyst_db::CatalystDbError::NotStaging { .. })
    ));
    assert!(
        catalyst_db::mark_staging(&client, "drill'; DROP TABLE users; --")
            .await
            .is_err()
    );
    catalyst_db::mark_staging(&client, "q4-2026")
        .await
        .expect("mark");
    assert_eq!(
        catalyst_db::require_staging(&client)
            .await
            .expect("staging"),
        "q4-2026"
    );
    drop(client);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .expect("drop");
}
