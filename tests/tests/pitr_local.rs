//! pitr-restore on the local engine: a real base backup, real WAL archiving and real recovery to
//! a target time in a new cluster, credential rotation through the local Secrets Manager, the
//! runbook's smoke tests, and teardown.

use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr::local_pg::base_backup;
use catalyst_dr::pitr::config::{EngineConfig, PitrConfig};
use catalyst_dr::pitr::smoke::HealthCheck;
use catalyst_dr::pitr::{PitrError, PitrRestore};
use catalyst_dr::postgres::TlsMode;
use catalyst_dr::restore_engine::StagingState;
use catalyst_dr_tests::{
    catalyst_database, http_endpoint, local_aws, local_engine_config, pg_connect, unique,
};
use std::time::Duration;

struct Drill {
    restore: PitrRestore,
    source_db: String,
    drill_id: String,
}

/// A source database with generated data, a base backup of the cluster, and a pitr-restore
/// wired to them with its own staging secret and directories.
async fn drill(name: &str, health_checks: Vec<HealthCheck>) -> Drill {
    let sdk = local_aws().await;
    let (source_db, source_secret) = catalyst_database(&sdk, name, 40).await;
    let local = local_engine_config(name).await;
    let staging_secret = unique(&format!("{name}-staging"));
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(&staging_secret)
        .send()
        .await
        .expect("staging secret");
    let credentials = catalyst_dr_tests::secret_credentials(&sdk, &source_secret).await;
    let config = PitrConfig {
        engine: EngineConfig::Local {
            source_id: "catalyst-auth-local".into(),
            local: local.clone(),
            source: credentials.clone(),
        },
        staging_prefix: "catalyst-dr-staging-".into(),
        staging_secret_id: staging_secret,
        database_name: credentials.dbname.clone(),
        tls: TlsMode::Disable,
        pg_bounds: Default::default(),
        health_checks,
        smoke_min_users: 1,
        cache_engine: catalyst_dr::cache_engine::CacheEngineConfig::None,
        staging_cache_secret_id: None,
    };
    let restore = PitrRestore::new(config, &sdk);
    base_backup::take(&local, &credentials, &unique("base"))
        .await
        .expect("base backup");
    Drill {
        restore,
        source_db,
        drill_id: unique("d").to_lowercase(),
    }
}

impl Drill {
    async fn until_available(&self) {
        self.until_available_for(&self.drill_id).await;
    }

    /// Polls the staging copy of `drill_id` (this drill's, or another run's on the same
    /// pitr-restore) until it is available.
    async fn until_available_for(&self, drill_id: &str) {
        for poll in 0..600 {
            let status = self
                .restore
                .status(drill_id, None, poll)
                .await
                .expect("status");
            match status.state {
                StagingState::Available => return,
                StagingState::Failed => panic!("restore failed: {:?}", status.instance.reason),
                StagingState::Creating => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("the staging cluster did not come up within a minute");
    }

    async fn restore_and_rotate(
        &self,
        target_time: Option<time::OffsetDateTime>,
    ) -> catalyst_dr::pitr::RotateResult {
        self.restore
            .start(&self.drill_id, target_time, None)
            .await
            .expect("start");
        self.until_available().await;
        self.restore
            .rotate_credentials(&self.drill_id, None)
            .await
            .expect("rotate")
    }

    async fn staging_client(
        &self,
        rotated: &catalyst_dr::pitr::RotateResult,
    ) -> tokio_postgres::Client {
        let sdk = local_aws().await;
        let secret = aws_sdk_secretsmanager::Client::new(&sdk)
            .get_secret_value()
            .secret_id(&rotated.secret_id)
            .send()
            .await
            .expect("secret");
        let document: serde_json::Value =
            serde_json::from_str(secret.secret_string().expect("string")).expect("json");
        let url = document["database_url"].as_str().expect("database_url");
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect with the published DATABASE_URL");
        tokio::spawn(connection);
        client
    }
}

fn health(name: &str, url: &str, timeout_ms: u64) -> HealthCheck {
    HealthCheck {
        name: name.into(),
        url: format!("{url}/health"),
        expect_status: 200,
        timeout_ms,
    }
}

#[tokio::test]
async fn restores_exactly_to_the_target_time_rotates_smokes_and_tears_down() {
    let ok = http_endpoint(200, Duration::ZERO).await;
    let d = drill("pitr_precise", vec![health("forward-auth", &ok, 2_000)]).await;
    let source = pg_connect(&d.source_db).await;
    source.batch_execute("CREATE TABLE drill_probe (n int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())").await.expect("probe table");
    for n in 0..5 {
        source
            .execute("INSERT INTO drill_probe (n) VALUES ($1)", &[&n])
            .await
            .expect("insert before");
    }
    let target: time::OffsetDateTime = source
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .expect("now")
        .get(0);
    for n in 5..10 {
        source
            .execute("INSERT INTO drill_probe (n) VALUES ($1)", &[&n])
            .await
            .expect("insert after");
    }
    source
        .execute(
            "UPDATE users SET display_name = 'changed after the target' WHERE id = 1",
            &[],
        )
        .await
        .expect("update after");

    let rotated = d.restore_and_rotate(Some(target)).await;
    assert!(rotated.new_password);
    let again = d
        .restore
        .rotate_credentials(&d.drill_id, None)
        .await
        .expect("retried rotate");
    assert!(
        !again.new_password,
        "a retry reuses the stored password instead of losing it"
    );

    let staging = d.staging_client(&rotated).await;
    let rows: Vec<i32> = staging
        .query("SELECT n FROM drill_probe ORDER BY n", &[])
        .await
        .expect("probe")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        rows,
        [0, 1, 2, 3, 4],
        "committed before the target: present; after: absent"
    );
    let name: Option<String> = staging
        .query_one("SELECT display_name FROM users WHERE id = 1", &[])
        .await
        .expect("user")
        .get(0);
    assert_ne!(name.as_deref(), Some("changed after the target"));

    let smoke = d
        .restore
        .smoke(&d.drill_id, None)
        .await
        .expect("smoke passes");
    let names: Vec<&str> = smoke.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "staging-marker",
            "users-and-entitlements",
            "pending-deliveries",
            "forward-auth:forward-auth"
        ]
    );
    let users = smoke.checks[1].data.as_ref().expect("user data");
    assert_eq!(users["users"], 40);
    let source_entitlements: i64 = source
        .query_one("SELECT count(*) FROM entitlements", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(users["entitlements"], source_entitlements);

    let torn = d
        .restore
        .teardown(&d.drill_id, None)
        .await
        .expect("teardown");
    assert!(torn.deleted);
    assert!(
        d.restore
            .engine
            .describe(&torn.target_id)
            .await
            .expect("describe")
            .is_none()
    );
    assert!(
        !d.restore
            .teardown(&d.drill_id, None)
            .await
            .expect("second teardown")
            .deleted,
        "teardown is safe to run twice"
    );
    let source_rows: i64 = source
        .query_one("SELECT count(*) FROM drill_probe", &[])
        .await
        .expect("source")
        .get(0);
    assert_eq!(source_rows, 10, "the source is untouched");
}

#[tokio::test]
async fn a_run_waits_while_another_holds_the_staging_secret() {
    let d = drill("pitr_busy", vec![]).await;
    let first = d.restore_and_rotate(None).await;
    let other = unique("e").to_lowercase();
    d.restore
        .start(&other, None, None)
        .await
        .expect("start the other run");
    d.until_available_for(&other).await;

    // The secret holds the first run's credentials and its copy exists: the other run waits,
    // and the first run's credentials keep working.
    let err = d
        .restore
        .rotate_credentials(&other, None)
        .await
        .expect_err("busy");
    assert_eq!(err.error_type(), ErrorKind::StagingBusy, "{err}");
    assert!(err.to_string().contains(&d.drill_id), "{err}");
    let staging = d.staging_client(&first).await;
    staging
        .query_one("SELECT 1", &[])
        .await
        .expect("the first run still connects");
    drop(staging);

    // Once the first run is torn down, the other run takes the secret.
    d.restore
        .teardown(&d.drill_id, None)
        .await
        .expect("teardown of the first run");
    let rotated = d
        .restore
        .rotate_credentials(&other, None)
        .await
        .expect("rotate after the teardown");
    assert!(rotated.new_password);
    let staging = d.staging_client(&rotated).await;
    let marker: String = staging
        .query_one(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .expect("marker")
        .get(0);
    assert!(marker.contains(&other), "{marker}");
    drop(staging);
    d.restore
        .teardown(&other, None)
        .await
        .expect("teardown of the other run");
}

#[tokio::test]
async fn smoke_fails_with_details_and_teardown_still_works() {
    let failing = http_endpoint(500, Duration::ZERO).await;
    let hanging = http_endpoint(200, Duration::from_secs(5)).await;
    let mut d = drill(
        "pitr_smoke",
        vec![
            health("errors", &failing, 2_000),
            health("hangs", &hanging, 300),
        ],
    )
    .await;
    let rotated = d.restore_and_rotate(None).await;

    let err = d
        .restore
        .smoke(&d.drill_id, None)
        .await
        .expect_err("smoke must fail");
    let PitrError::SmokeFailed { checks, .. } = &err else {
        panic!("{err}")
    };
    let failed: Vec<(&str, &str)> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| (c.name.as_str(), c.detail.as_str()))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed[0].1.contains("answered 500"), "{failed:?}");
    assert!(
        failed[1].1.contains("did not answer within 300 ms"),
        "{failed:?}"
    );
    assert_eq!(err.error_type(), ErrorKind::SmokeFailed);

    // A table missing from the restore fails the database checks.
    let ok = http_endpoint(200, Duration::ZERO).await;
    d.restore.config.health_checks = vec![health("forward-auth", &ok, 2_000)];
    d.staging_client(&rotated)
        .await
        .batch_execute("DROP TABLE entitlements")
        .await
        .expect("drop in staging");
    let err = d
        .restore
        .smoke(&d.drill_id, None)
        .await
        .expect_err("smoke must fail");
    let PitrError::SmokeFailed { checks, .. } = &err else {
        panic!("{err}")
    };
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(failed, ["users-and-entitlements"]);
    assert!(err.to_string().contains("entitlements"), "{err}");

    assert!(
        d.restore
            .teardown(&d.drill_id, None)
            .await
            .expect("teardown")
            .deleted
    );
}

#[tokio::test]
async fn guards_refuse_before_anything_is_created() {
    let d = drill("pitr_guards", Vec::new()).await;
    let staging_dir = match &d.restore.config.engine {
        EngineConfig::Local { local, .. } => local.staging_dir.clone(),
        EngineConfig::Rds { .. } => unreachable!(),
    };
    let cases: Vec<(Option<time::OffsetDateTime>, Option<String>, ErrorKind)> = vec![
        (
            None,
            Some("catalyst-auth-local".into()),
            ErrorKind::RestoreRefused,
        ),
        (None, Some("prod-copy".into()), ErrorKind::RestoreRefused),
        (
            Some(time::OffsetDateTime::now_utc() + time::Duration::hours(1)),
            None,
            ErrorKind::InvalidInput,
        ),
        (
            Some(time::macros::datetime!(2020-01-01 00:00 UTC)),
            None,
            ErrorKind::InvalidInput,
        ),
    ];
    for (time, target, expected) in cases {
        let err = d
            .restore
            .start(&d.drill_id, time, target.clone())
            .await
            .expect_err("refused");
        assert_eq!(err.error_type(), expected, "{target:?} {time:?}: {err}");
    }
    // An empty id is refused; a name that is not an id (capitals, `_`, too long) is mapped to one.
    let err = d
        .restore
        .handle(serde_json::json!({"action": "start", "drill_id": ""}))
        .await
        .expect_err("empty id");
    assert_eq!(err.error_type(), ErrorKind::InvalidInput);
    let err = d
        .restore
        .teardown(&d.drill_id, Some("catalyst-auth-local".into()))
        .await
        .expect_err("source");
    assert_eq!(err.error_type(), ErrorKind::RestoreRefused);
    assert_eq!(
        std::fs::read_dir(&staging_dir)
            .expect("staging dir")
            .count(),
        0,
        "nothing was created"
    );

    // Another drill's staging cluster is not this drill's to tear down.
    d.restore
        .start(&d.drill_id, None, None)
        .await
        .expect("start");
    let err = d
        .restore
        .teardown(
            "another-drill",
            Some(format!("catalyst-dr-staging-{}", d.drill_id)),
        )
        .await
        .expect_err("not ours");
    assert_eq!(err.error_type(), ErrorKind::RestoreRefused);
    assert!(
        d.restore
            .engine
            .describe(&format!("catalyst-dr-staging-{}", d.drill_id))
            .await
            .expect("describe")
            .is_some()
    );
    d.until_available().await;
    assert!(
        d.restore
            .teardown(&d.drill_id, None)
            .await
            .expect("teardown")
            .deleted
    );
}

/// The restore test's snapshot path on the local engine: the base backup restored to its end, its
/// staging databases created only on this drill's instance, and smoke tests only on databases
/// marked as this drill's staging.
#[tokio::test]
async fn restore_snapshot_and_staging_databases_are_guarded() {
    let d = drill("snaprestore", Vec::new()).await;
    let missing = d
        .restore
        .restore_snapshot(&d.drill_id, Some("no-such-backup".into()), None)
        .await
        .expect_err("no such base backup");
    assert_eq!(
        missing.error_type(),
        ErrorKind::NoBackupSnapshot,
        "{missing}"
    );

    let started = d
        .restore
        .restore_snapshot(&d.drill_id, None, None)
        .await
        .expect("restore the newest base backup");
    assert!(
        started.snapshot.snapshot_id.starts_with("base"),
        "{started:?}"
    );
    assert_eq!(
        started.restore_time,
        started
            .snapshot
            .created_at
            .map(catalyst_dr::input::format_time)
    );
    let rerun = d
        .restore
        .restore_snapshot(&d.drill_id, None, None)
        .await
        .expect("rerun");
    assert!(rerun.reused);
    d.until_available().await;
    let rotated = d
        .restore
        .rotate_credentials(&d.drill_id, None)
        .await
        .expect("rotate");
    d.restore
        .smoke(&d.drill_id, None)
        .await
        .expect("the restored base backup holds the source's data");

    let itself = d
        .restore
        .staging_database(&d.drill_id, &rotated.dbname)
        .await
        .expect_err("the restored database itself");
    assert_eq!(itself.error_type(), ErrorKind::InvalidInput, "{itself}");
    let created = d
        .restore
        .staging_database(&d.drill_id, "catalyst_dr_logical")
        .await
        .expect("staging database");
    assert!(created.created);
    let again = d
        .restore
        .staging_database(&d.drill_id, "catalyst_dr_logical")
        .await
        .expect("rerun");
    assert!(!again.created, "a retry finds it");
    let empty = d
        .restore
        .smoke(&d.drill_id, Some("catalyst_dr_logical"))
        .await
        .expect_err("an empty database has no users");
    assert_eq!(empty.error_type(), ErrorKind::SmokeFailed, "{empty}");

    // A database on the staging instance marked as another drill's, or not marked at all.
    let staging = d.staging_client(&rotated).await;
    staging
        .batch_execute("CREATE DATABASE someone_elses")
        .await
        .expect("create");
    let mut config: tokio_postgres::Config = format!(
        "host={} port={} user={} dbname=someone_elses",
        rotated.host, rotated.port, rotated.username
    )
    .parse()
    .expect("config");
    let password = {
        let sdk = local_aws().await;
        let secret = aws_sdk_secretsmanager::Client::new(&sdk)
            .get_secret_value()
            .secret_id(&rotated.secret_id)
            .send()
            .await
            .expect("secret");
        let document: serde_json::Value =
            serde_json::from_str(secret.secret_string().expect("string")).expect("json");
        document["password"].as_str().expect("password").to_owned()
    };
    config.password(password);
    let (other, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    catalyst_dr::catalyst_db::mark_staging(&other, "another-drill")
        .await
        .expect("mark");
    let refused = d
        .restore
        .staging_database(&d.drill_id, "someone_elses")
        .await
        .expect_err("another drill's");
    assert_eq!(refused.error_type(), ErrorKind::RestoreRefused, "{refused}");
    let refused = d
        .restore
        .smoke(&d.drill_id, Some("postgres"))
        .await
        .expect_err("not marked as staging");
    assert_eq!(refused.error_type(), ErrorKind::RestoreRefused, "{refused}");

    assert!(
        d.restore
            .teardown(&d.drill_id, None)
            .await
            .expect("teardown")
            .deleted
    );
}
