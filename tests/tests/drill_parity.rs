//! Baseline parity on a real restore: with writes arriving all the time, a restore to the
//! baseline instant matches the baseline exactly, and a restore to another instant does not —
//! and the report says which tables differ and by how much.

use catalyst_dr::drill::DrillValidator;
use catalyst_dr::drill::config::DrillConfig;
use catalyst_dr::local_pg::base_backup;
use catalyst_dr::pitr::PitrRestore;
use catalyst_dr::pitr::config::{EngineConfig, PitrConfig};
use catalyst_dr::postgres::TlsMode;
use catalyst_dr::restore_engine::StagingState;
use catalyst_dr_tests::{
    catalyst_database, local_aws, local_engine_config, locked_bucket, pg_connect, s3, unique,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

async fn until_available(restore: &PitrRestore, drill: &str) {
    for poll in 0..600 {
        match restore
            .status(drill, None, poll)
            .await
            .expect("status")
            .state
        {
            StagingState::Available => return,
            StagingState::Failed => panic!("restore failed"),
            StagingState::Creating => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("staging did not come up");
}

#[tokio::test]
async fn parity_holds_at_the_baseline_instant_and_fails_at_any_other() {
    let sdk = local_aws().await;
    let (source_db, source_secret) = catalyst_database(&sdk, "parity", 60).await;
    let bucket = unique("drills");
    // A queue in the production Redis, three deliveries long.
    let redis_queue = format!("catalyst:drill-test:{}:", unique("q"));
    let redis_client = redis::Client::open(catalyst_dr_tests::stack_var("CATALYST_DR_REDIS_URL"))
        .expect("redis url");
    let mut redis_conn = redis_client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("RPUSH")
        .arg(format!("{redis_queue}webhooks"))
        .arg(&["1", "2", "3"])
        .query_async(&mut redis_conn)
        .await
        .expect("rpush");
    locked_bucket(&s3(&sdk), &bucket).await;
    let staging_secret = unique("parity-staging");
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(&staging_secret)
        .send()
        .await
        .expect("secret");
    let local = local_engine_config("parity").await;
    let source_credentials = catalyst_dr_tests::secret_credentials(&sdk, &source_secret).await;
    let restore = PitrRestore::new(
        PitrConfig {
            engine: EngineConfig::Local {
                source_id: "catalyst-auth-local".into(),
                local: local.clone(),
                source: source_credentials.clone(),
            },
            staging_prefix: "catalyst-dr-staging-".into(),
            staging_secret_id: staging_secret.clone(),
            database_name: source_credentials.dbname.clone(),
            tls: TlsMode::Disable,
            pg_bounds: Default::default(),
            health_checks: Vec::new(),
            smoke_min_users: 1,
        },
        &sdk,
    );
    let validator = DrillValidator::new(
        DrillConfig {
            redis_url: Some(catalyst_dr_tests::stack_var("CATALYST_DR_REDIS_URL")),
            redis_queue_patterns: vec![format!("{redis_queue}*")],
            ..catalyst_dr_tests::drill_config(&bucket, &source_secret, &staging_secret)
        },
        &sdk,
    );
    base_backup::take(&local, &source_credentials, &unique("base"))
        .await
        .expect("base backup");

    // Writes arrive all through the drill: new deliveries and changed users.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let writing = writing.clone();
        let client = pg_connect(&source_db).await;
        tokio::spawn(async move {
            let mut n = 0i64;
            while writing.load(Ordering::Relaxed) {
                n += 1;
                client
                    .execute(
                        "INSERT INTO webhook_deliveries (subscription_id, event_type, payload, status) SELECT id, 'user.updated', '{}'::jsonb, 'pending' FROM webhook_subscriptions ORDER BY id LIMIT 1",
                        &[],
                    )
                    .await
                    .expect("insert");
                client
                    .execute(
                        "UPDATE users SET display_name = $1 WHERE id = 1 + ($2::bigint % 50)",
                        &[&format!("writer {n}"), &n],
                    )
                    .await
                    .expect("update");
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            n
        })
    };

    let drill = unique("par").to_lowercase();
    let started = time::OffsetDateTime::now_utc();
    let baseline = validator.baseline(&drill).await.expect("baseline");
    assert!(
        baseline.instant.writers_paused_ms < 2_000,
        "writers paused {} ms",
        baseline.instant.writers_paused_ms
    );
    assert_eq!(
        baseline.instant.instant.nanosecond(),
        0,
        "the baseline instant is a whole second"
    );
    let redis = baseline
        .redis
        .as_ref()
        .expect("the Redis is part of the baseline");
    assert_eq!(
        redis.queues.get(&format!("{redis_queue}webhooks")),
        Some(&3)
    );
    assert!(redis.keys >= 1);
    tokio::time::sleep(Duration::from_millis(1_500)).await; // writes after the instant, some in its second
    restore
        .start(&drill, Some(baseline.instant.instant), None)
        .await
        .expect("start");
    until_available(&restore, &drill).await;
    restore
        .rotate_credentials(&drill, None)
        .await
        .expect("rotate");
    let honest = validator
        .validate(
            &drill,
            baseline.instant.instant,
            started,
            time::OffsetDateTime::now_utc(),
            Some(0.0),
            catalyst_dr::flush_status::ExpectedQueue::Empty,
        )
        .await
        .expect("validate");
    assert!(honest.passed, "{:#?}", honest.tables);
    assert!(
        honest
            .tables
            .iter()
            .all(|t| t.written_after_baseline == 0 && t.restored_rows == t.baseline_rows)
    );
    assert_eq!(honest.rpo.seconds, 0.0);
    restore.teardown(&drill, None).await.expect("teardown");

    // The same baseline, restored two seconds late.
    let late = format!("{drill}-late");
    let stored = s3(&sdk)
        .get_object()
        .bucket(&bucket)
        .key(format!("drills/{drill}/baseline.json"))
        .send()
        .await
        .expect("baseline object");
    let bytes = stored.body.collect().await.expect("body").into_bytes();
    s3(&sdk)
        .put_object()
        .bucket(&bucket)
        .key(format!("drills/{late}/baseline.json"))
        .body(bytes.to_vec().into())
        .send()
        .await
        .expect("copy");
    let late_point = baseline.instant.instant + time::Duration::seconds(1);
    restore
        .start(&late, Some(late_point), None)
        .await
        .expect("start late");
    until_available(&restore, &late).await;
    restore
        .rotate_credentials(&late, None)
        .await
        .expect("rotate late");
    let wrong = validator
        .validate(
            &late,
            late_point,
            started,
            time::OffsetDateTime::now_utc(),
            None,
            catalyst_dr::flush_status::ExpectedQueue::Empty,
        )
        .await
        .expect("validate late");
    restore.teardown(&late, None).await.expect("teardown late");
    writing.store(false, Ordering::Relaxed);
    assert!(writer.await.expect("writer") > 100, "writes kept arriving");

    assert!(!wrong.passed);
    let deliveries = wrong
        .tables
        .iter()
        .find(|t| t.table == "webhook_deliveries")
        .expect("deliveries");
    assert!(
        !deliveries.passed && deliveries.restored_rows > deliveries.baseline_rows,
        "{deliveries:?}"
    );
    assert_eq!(
        deliveries.written_after_baseline,
        deliveries.restored_rows - deliveries.baseline_rows,
        "the extra rows are the later writes"
    );
    let users = wrong
        .tables
        .iter()
        .find(|t| t.table == "users")
        .expect("users");
    assert!(
        !users.checksum_matches && users.restored_rows == users.baseline_rows,
        "changed, not added: {users:?}"
    );

    let state = serde_json::json!({"started": {"at": catalyst_dr::input::format_time(started)}, "validation": wrong});
    let report = validator
        .report(&late, "test", &state)
        .await
        .expect("report");
    assert!(!report.passed);
    assert_eq!(report.parity_failures, 2);
    let md = s3(&sdk)
        .get_object()
        .bucket(&bucket)
        .key(format!("drills/{late}/report.md"))
        .send()
        .await
        .expect("markdown");
    let md = String::from_utf8(md.body.collect().await.expect("body").into_bytes().to_vec())
        .expect("utf-8");
    let line = md
        .lines()
        .find(|l| l.starts_with("| webhook_deliveries |"))
        .expect("deliveries row");
    assert!(line.contains("DIFFERS") && line.contains("FAIL"), "{line}");
    assert!(
        line.contains(&format!(
            "| {} | {} |",
            deliveries.baseline_rows, deliveries.restored_rows
        )),
        "{line}"
    );
}
