//! Baseline parity on a real restore: with writes arriving all the time, a restore to the
//! baseline instant matches the baseline exactly, and a restore to another instant does not —
//! and the report says which tables differ and by how much. The cache is drilled alongside: a
//! real `redis-server` loads the drill's snapshot, taken while a producer and a consumer keep
//! changing the queue, and its queue state must equal the baseline's exactly.

use catalyst_dr::cache_engine::CacheEngineConfig;
use catalyst_dr::cache_engine::local::LocalCacheConfig;
use catalyst_dr::drill::DrillValidator;
use catalyst_dr::drill::baseline::BaselineAnswer;
use catalyst_dr::drill::cache::CacheParityResult;
use catalyst_dr::drill::config::DrillConfig;
use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr::flush_status::FlushStatus;
use catalyst_dr::local_pg::base_backup;
use catalyst_dr::pitr::PitrRestore;
use catalyst_dr::pitr::cache::CacheRestoreState;
use catalyst_dr::pitr::config::{EngineConfig, PitrConfig};
use catalyst_dr::postgres::TlsMode;
use catalyst_dr::restore_engine::StagingState;
use catalyst_dr::work_path::WorkPath;
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

/// Polls `cache-restore` until the staging cache is up and published.
async fn until_cache_available(restore: &PitrRestore, drill: &str, snapshot_id: &str) -> String {
    for poll in 0..600 {
        let step = restore
            .cache_restore(drill, Some(snapshot_id), poll)
            .await
            .expect("cache-restore");
        match step.state {
            CacheRestoreState::Available => return step.target_id.expect("target"),
            CacheRestoreState::Failed | CacheRestoreState::NotConfigured => {
                panic!("cache restore: {step:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("the staging cache did not come up");
}

/// The baseline, retried while the source cache is busy saving (other tests snapshot it too).
async fn baseline(validator: &DrillValidator, drill: &str) -> catalyst_dr::drill::Baseline {
    for _ in 0..50 {
        match validator.baseline(drill, Some(WorkPath::Single)).await {
            Err(e) if e.error_type() == catalyst_dr::error_kind::ErrorKind::CacheSnapshotBusy => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(BaselineAnswer::Taken(baseline)) => return baseline,
            other => panic!("baseline: {other:?}"),
        }
    }
    panic!("the source cache stayed busy");
}

/// `validate` as the drill calls it once smoke tests passed (now), the restore at the baseline
/// instant, the staging queue and cache flushed.
async fn validate_flushed(
    validator: &DrillValidator,
    drill: &str,
    instant: time::OffsetDateTime,
    started: time::OffsetDateTime,
) -> Result<catalyst_dr::drill::Validation, catalyst_dr::drill::DrillError> {
    validator
        .validate(
            drill,
            instant,
            started,
            time::OffsetDateTime::now_utc(),
            Some(0.0),
            catalyst_dr::drill::Flushes {
                queue: catalyst_dr::flush_status::ExpectedQueue::Empty,
                cache: Some(FlushStatus::Flushed),
            },
        )
        .await
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
    let cache_dir = local.staging_dir.parent().expect("test root").join("cache");
    let cache_engine = CacheEngineConfig::Local(LocalCacheConfig {
        source_id: "catalyst-auth-cache".into(),
        dir: cache_dir.clone(),
        redis_server: "/usr/bin/redis-server".into(),
    });
    let cache_secret = unique("parity-cache");
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(&cache_secret)
        .send()
        .await
        .expect("cache secret");
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
            cache_engine: cache_engine.clone(),
            staging_cache_secret_id: Some(cache_secret.clone()),
        },
        &sdk,
    );
    let mut validator = DrillValidator::new(
        DrillConfig {
            cache_engine,
            staging_cache_secret_id: Some(cache_secret.clone()),
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

    // And the queue keeps moving: a producer pushes, a consumer pops.
    let cache_writer = {
        let writing = writing.clone();
        let mut conn = redis_conn.clone();
        let key = format!("{redis_queue}webhooks");
        tokio::spawn(async move {
            let mut n = 0u64;
            while writing.load(Ordering::Relaxed) {
                n += 1;
                let _: () = redis::cmd("RPUSH")
                    .arg(&key)
                    .arg(n)
                    .query_async(&mut conn)
                    .await
                    .expect("rpush");
                if n.is_multiple_of(3) {
                    let _: Option<String> = redis::cmd("LPOP")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .expect("lpop");
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            n
        })
    };

    let drill = unique("par").to_lowercase();
    let started = time::OffsetDateTime::now_utc();
    let baseline = baseline(&validator, &drill).await;
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
    let cache = baseline
        .cache
        .as_ref()
        .expect("the cache is part of the baseline");
    assert!(
        cache.exact,
        "the local engine reads the state at the snapshot's instant"
    );
    let queue_length =
        cache.state.patterns[&format!("{redis_queue}*")][&format!("{redis_queue}webhooks")];
    assert!(queue_length >= 3, "{queue_length}");
    assert!(cache.state.keys >= 1);
    tokio::time::sleep(Duration::from_millis(1_500)).await; // writes after the instant, some in its second
    restore
        .start(&drill, Some(baseline.instant.instant), None)
        .await
        .expect("start");
    let cache_target = until_cache_available(&restore, &drill, &cache.snapshot_id).await;
    until_available(&restore, &drill).await;
    restore
        .rotate_credentials(&drill, None)
        .await
        .expect("rotate");
    let CacheParityResult::Checked(cache_parity) =
        validator.cache_parity(&drill).await.expect("cache parity")
    else {
        panic!("the cache was left out");
    };
    assert!(cache_parity.parity.passed, "{cache_parity:#?}");
    assert_eq!(
        cache_parity.parity.patterns[0].restored_length, queue_length,
        "the restored queue is exactly as long as at the snapshot's instant"
    );
    // The runbook's flush: the staging queue keys go, the production queue stays.
    let replay = catalyst_dr_tests::dead_letter_replay(
        &sdk,
        &[
            ("SOURCE_DATABASE_SECRET_ID", source_secret.as_str()),
            ("STAGING_REDIS_SECRET_ID", cache_secret.as_str()),
            ("REDIS_QUEUE_PATTERNS", &format!("{redis_queue}*")),
        ],
    );
    let flushed = replay
        .handle(serde_json::json!({"action": "flush", "redis": true}))
        .await
        .expect("flush");
    assert_eq!(flushed["status"], "flushed", "{flushed}");
    let production_length: u64 = redis::cmd("LLEN")
        .arg(format!("{redis_queue}webhooks"))
        .query_async(&mut redis_conn)
        .await
        .expect("llen");
    assert!(production_length > 0, "the production queue is untouched");
    // A retry after the flush returns the comparison made before it.
    let CacheParityResult::Checked(again) = validator
        .cache_parity(&drill)
        .await
        .expect("cache parity again")
    else {
        panic!("the cache was left out");
    };
    assert_eq!(again, cache_parity);
    let honest = validate_flushed(&validator, &drill, baseline.instant.instant, started)
        .await
        .expect("validate");
    assert!(honest.passed, "{:#?} {:#?}", honest.tables, honest.cache);
    let cache_check = honest.cache.as_ref().expect("cache check");
    assert_eq!(cache_check.queue_keys_after_flush, 0);
    assert_eq!(cache_check.staging_target_id, cache_target);
    assert!(
        honest
            .tables
            .iter()
            .all(|t| t.written_after_baseline == 0 && t.restored_rows == t.baseline_rows)
    );
    assert_eq!(honest.rpo.seconds, 0.0);
    // The same check fanned out, as the quarterly drill's Map runs it: the restored copy's block
    // ranges planned once, read in batches (each stored), and added up by validate.
    validator.config.parity_range_blocks = 2;
    validator.config.parity_batch_ranges = 3;
    let plan = validator.parity_plan(&drill).await.expect("parity plan");
    assert!(plan.batches.len() >= 3 && plan.ranges > 8, "{plan:?}");
    assert_eq!(
        validator.parity_plan(&drill).await.expect("plan again"),
        plan
    );
    let validate = || validate_flushed(&validator, &drill, baseline.instant.instant, started);
    let err = validate().await.expect_err("no batch read yet");
    assert_eq!(err.error_type(), ErrorKind::ParityIncomplete, "{err}");
    assert!(err.to_string().contains("(batches 0, 1, 2"), "{err}");
    let err = validator
        .parity_batch(&drill, plan.batches.len())
        .await
        .expect_err("no such batch");
    assert_eq!(err.error_type(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("batch"), "{err}");
    for &batch in &plan.batches {
        let read = validator
            .parity_batch(&drill, batch)
            .await
            .expect("parity batch");
        assert!(!read.parts.is_empty());
        // A retry answers the stored batch.
        assert_eq!(
            validator
                .parity_batch(&drill, batch)
                .await
                .expect("batch again"),
            read
        );
    }
    let fanned = validate().await.expect("validate the batches");
    assert!(fanned.passed, "{:#?}", fanned.tables);
    assert_eq!(fanned.tables, honest.tables);
    assert_eq!(fanned.deliveries_restored, honest.deliveries_restored);
    assert_eq!(honest.deliveries_restored, honest.deliveries_baseline);
    assert!(honest.deliveries_restored.len() > 1, "{honest:#?}");
    // A stored batch whose deliveries part lacks its statuses (as an earlier version stored it)
    // would under-count them: validate refuses it by name, and takes it once it is whole again.
    let mut tampered = None;
    for &batch in &plan.batches {
        let key = format!("drills/{drill}/parity/batch-{batch}.json");
        let stored: serde_json::Value = catalyst_dr_tests::stored_json(&sdk, &bucket, &key).await;
        if let Some(part) = stored["parts"]
            .as_array()
            .expect("parts")
            .iter()
            .position(|p| p["by_status"].is_object())
        {
            tampered = Some((key, stored, part));
            break;
        }
    }
    let (key, whole, part) = tampered.expect("a batch holds deliveries");
    let put = |value: serde_json::Value| {
        let (sdk, bucket, key) = (&sdk, &bucket, &key);
        async move {
            s3(sdk)
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(value.to_string().into_bytes().into())
                .send()
                .await
                .expect("put the batch");
        }
    };
    let mut stripped = whole.clone();
    stripped["parts"][part]
        .as_object_mut()
        .expect("part")
        .remove("by_status");
    put(stripped).await;
    let err = validate().await.expect_err("a batch without statuses");
    assert_eq!(err.error_type(), ErrorKind::CorruptRecord, "{err}");
    assert!(err.to_string().contains(&key), "{err}");
    put(whole).await;
    let again = validate().await.expect("the batch is whole again");
    assert_eq!(again.deliveries_restored, honest.deliveries_restored);
    let torn = restore.teardown(&drill, None).await.expect("teardown");
    let cache_torn = torn.cache.expect("the cache is torn down too");
    assert!(cache_torn.deleted);
    assert_eq!(
        cache_torn.snapshots_deleted,
        std::slice::from_ref(&cache.snapshot_id)
    );
    assert!(
        !cache_dir.join("staging").join(&cache_target).exists(),
        "the staging redis-server and its files are gone"
    );
    assert!(
        std::fs::read_dir(cache_dir.join("snapshots"))
            .expect("snapshots")
            .next()
            .is_none(),
        "the drill's snapshot is gone"
    );

    // The same baseline, restored two seconds late (the database only).
    let late = format!("{drill}-late");
    let stored = s3(&sdk)
        .get_object()
        .bucket(&bucket)
        .key(format!("drills/{drill}/baseline.json"))
        .send()
        .await
        .expect("baseline object");
    let bytes = stored.body.collect().await.expect("body").into_bytes();
    let mut copied: serde_json::Value = serde_json::from_slice(&bytes).expect("baseline json");
    copied["cache"] = serde_json::Value::Null;
    let bytes = serde_json::to_vec(&copied).expect("json");
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
            catalyst_dr::drill::Flushes {
                queue: catalyst_dr::flush_status::ExpectedQueue::Empty,
                cache: None,
            },
        )
        .await
        .expect("validate late");
    restore.teardown(&late, None).await.expect("teardown late");
    writing.store(false, Ordering::Relaxed);
    assert!(writer.await.expect("writer") > 100, "writes kept arriving");
    assert!(
        cache_writer.await.expect("cache writer") > 100,
        "queue writes kept arriving"
    );

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
    // The extra rows are the later writes. `written_after_baseline` goes by `created_at`
    // (the statement's start), so the one insert of this single writer that began before the
    // instant and waited on the baseline's locks is extra yet not counted.
    let extra = deliveries.restored_rows - deliveries.baseline_rows;
    assert!(
        (extra - 1..=extra).contains(&deliveries.written_after_baseline),
        "{extra} extra rows, {} written after the baseline",
        deliveries.written_after_baseline
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

/// The guards and the comparison of the cache, adversarially: a drill's cache snapshot is never
/// restored for another drill, and a restored queue that lost one entry fails cache parity with
/// the key named.
#[tokio::test]
async fn another_drills_cache_snapshot_is_refused_and_a_lost_queue_entry_fails_parity() {
    let sdk = local_aws().await;
    let (_, source_secret) = catalyst_database(&sdk, "cacheguard", 20).await;
    let bucket = unique("drills");
    locked_bucket(&s3(&sdk), &bucket).await;
    let secrets = aws_sdk_secretsmanager::Client::new(&sdk);
    let staging_secret = unique("guard-staging");
    let cache_secret = unique("guard-cache");
    for name in [&staging_secret, &cache_secret] {
        secrets
            .create_secret()
            .name(name)
            .send()
            .await
            .expect("secret");
    }
    let queue = format!("catalyst:drill-test:{}:webhooks", unique("g"));
    let redis_client = redis::Client::open(catalyst_dr_tests::stack_var("CATALYST_DR_REDIS_URL"))
        .expect("redis url");
    let mut production = redis_client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("RPUSH")
        .arg(&queue)
        .arg(&["a", "b", "c"])
        .query_async(&mut production)
        .await
        .expect("rpush");
    let local = local_engine_config("cacheguard").await;
    let cache_engine = CacheEngineConfig::Local(LocalCacheConfig {
        source_id: "catalyst-auth-cache".into(),
        dir: local.staging_dir.parent().expect("test root").join("cache"),
        redis_server: "/usr/bin/redis-server".into(),
    });
    let source_credentials = catalyst_dr_tests::secret_credentials(&sdk, &source_secret).await;
    let restore = PitrRestore::new(
        PitrConfig {
            engine: EngineConfig::Local {
                source_id: "catalyst-auth-local".into(),
                local,
                source: source_credentials.clone(),
            },
            staging_prefix: "catalyst-dr-staging-".into(),
            staging_secret_id: staging_secret.clone(),
            database_name: source_credentials.dbname.clone(),
            tls: TlsMode::Disable,
            pg_bounds: Default::default(),
            health_checks: Vec::new(),
            smoke_min_users: 1,
            cache_engine: cache_engine.clone(),
            staging_cache_secret_id: Some(cache_secret.clone()),
        },
        &sdk,
    );
    let validator = DrillValidator::new(
        DrillConfig {
            cache_engine,
            staging_cache_secret_id: Some(cache_secret.clone()),
            redis_url: Some(catalyst_dr_tests::stack_var("CATALYST_DR_REDIS_URL")),
            redis_queue_patterns: vec![queue.clone()],
            ..catalyst_dr_tests::drill_config(&bucket, &source_secret, &staging_secret)
        },
        &sdk,
    );

    let drill = unique("guard").to_lowercase();
    let other = format!("{drill}-other");
    let cache = baseline(&validator, &drill)
        .await
        .cache
        .expect("cache baseline");
    assert_eq!(cache.state.patterns[&queue][&queue], 3);

    let refused = restore
        .cache_restore(&other, Some(&cache.snapshot_id), 0)
        .await
        .expect_err("another drill's snapshot");
    assert_eq!(
        refused.error_type(),
        catalyst_dr::error_kind::ErrorKind::RestoreRefused,
        "{refused}"
    );

    until_cache_available(&restore, &drill, &cache.snapshot_id).await;
    // The restored queue loses one entry before the comparison.
    let published: serde_json::Value = serde_json::from_str(
        secrets
            .get_secret_value()
            .secret_id(&cache_secret)
            .send()
            .await
            .expect("cache secret")
            .secret_string()
            .expect("text"),
    )
    .expect("json");
    assert_eq!(published["drill_id"], drill.as_str());
    let staging = redis::Client::open(published["url"].as_str().expect("url")).expect("url");
    let mut staging = staging
        .get_multiplexed_async_connection()
        .await
        .expect("staging redis");
    let _: Option<String> = redis::cmd("LPOP")
        .arg(&queue)
        .query_async(&mut staging)
        .await
        .expect("lpop");
    let CacheParityResult::Checked(parity) =
        validator.cache_parity(&drill).await.expect("cache parity")
    else {
        panic!("the cache was left out");
    };
    assert!(!parity.parity.passed);
    assert_eq!(
        parity.parity.patterns[0].differences,
        [format!("{queue}: length 2, expected 3")]
    );
    let production_length: u64 = redis::cmd("LLEN")
        .arg(&queue)
        .query_async(&mut production)
        .await
        .expect("llen");
    assert_eq!(production_length, 3, "production is untouched");

    let torn = restore.teardown(&drill, None).await.expect("teardown");
    assert!(torn.cache.expect("cache teardown").deleted);
    let again = restore
        .teardown(&drill, None)
        .await
        .expect("teardown again");
    let again = again.cache.expect("cache teardown");
    assert!(!again.deleted && again.snapshots_deleted.is_empty());
}

#[tokio::test]
async fn fingerprints_in_block_ranges_on_several_connections_equal_one_query_per_table() {
    use catalyst_dr::catalyst_db::parity;
    let sdk = local_aws().await;
    let (name, _secret, snapshot) = generated(&sdk, "parity_ranges", 500, 5_000).await;
    let deliveries_blocks: i64 = snapshot
        .query_one(
            "SELECT pg_relation_size('webhook_deliveries') / current_setting('block_size')::bigint",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        deliveries_blocks > 16,
        "{deliveries_blocks} blocks: too few ranges"
    );
    snapshot
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .unwrap();
    // An instant some rows were written after, so that column is checked too.
    let instant: time::OffsetDateTime = snapshot
        .query_one(
            "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY updated_at) FROM webhook_deliveries",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let whole = parity::fingerprint(&snapshot, instant)
        .await
        .expect("whole");
    assert!(
        whole.tables.iter().any(|t| t.written_after > 0),
        "{whole:?}"
    );
    let by_status: std::collections::BTreeMap<String, i64> = snapshot
        .query(
            "SELECT status, count(*) FROM webhook_deliveries GROUP BY status",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(by_status.len() > 1, "{by_status:?}");
    assert_eq!(whole.deliveries_by_status, by_status);
    let helpers = [pg_connect(&name).await, pg_connect(&name).await];
    let ranged = parity::fingerprint_parallel(&snapshot, &helpers, instant, 4)
        .await
        .expect("in ranges");
    assert_eq!(ranged, whole);

    // A write committed meanwhile is in neither: the helpers read the primary's snapshot.
    pg_connect(&name)
        .await
        .batch_execute("DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries ORDER BY id LIMIT 100)")
        .await
        .unwrap();
    let helpers = [pg_connect(&name).await, pg_connect(&name).await];
    let again = parity::fingerprint_parallel(&snapshot, &helpers, instant, 4)
        .await
        .expect("in ranges, again");
    assert_eq!(again, whole);
    snapshot.batch_execute("COMMIT").await.unwrap();
    let now = parity::fingerprint(&snapshot, instant).await.expect("now");
    assert_ne!(now, whole, "the delete is visible outside the snapshot");
}

/// A generated Catalyst Auth database of `users` and `deliveries` (5 subscriptions): its name,
/// secret and a connection.
async fn generated(
    sdk: &aws_config::SdkConfig,
    label: &str,
    users: u64,
    deliveries: u64,
) -> (String, String, tokio_postgres::Client) {
    let spec = catalyst_dr_tests::datagen::GeneratorSpec {
        users,
        subscriptions: 5,
        deliveries,
        ..Default::default()
    };
    catalyst_dr_tests::generated_database(sdk, label, &spec).await
}

/// The sessions holding a baseline snapshot in `client`'s database.
async fn holders(client: &tokio_postgres::Client) -> Vec<String> {
    client
        .query(
            "SELECT application_name FROM pg_stat_activity \
             WHERE datname = current_database() AND starts_with(application_name, 'catalyst-dr baseline ')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Until no holder runs (a cancel takes effect a moment later).
async fn until_no_holder(client: &tokio_postgres::Client) {
    for _ in 0..100 {
        if holders(client).await.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("a holder still runs: {:?}", holders(client).await);
}

/// A baseline read by a Map of batches in the snapshot a session holds open for them equals the
/// source as it stood at the instant, whatever is written meanwhile; closed, it ends the holder,
/// and a batch after the holder ended fails, naming the snapshot, instead of reading the source
/// as it is now.
#[tokio::test]
async fn a_baseline_read_in_batches_in_a_held_snapshot_is_the_source_at_its_instant() {
    use catalyst_dr::catalyst_db::parity;
    let sdk = local_aws().await;
    let (name, secret, source) = generated(&sdk, "baseline_held", 500, 5_000).await;
    let bucket = unique("baseline-held");
    locked_bucket(&s3(&sdk), &bucket).await;
    let validator = DrillValidator::new(
        DrillConfig {
            // Ranges of 4 blocks, 3 to a batch: several batches.
            parity_range_blocks: 4,
            parity_batch_ranges: 3,
            ..catalyst_dr_tests::drill_config(&bucket, &secret, "catalyst-dr/test/unused-staging")
        },
        &sdk,
    );
    let drill = unique("held").to_lowercase();
    // An attempt that stopped before storing its opening left its holder running: the opening
    // ends it, so one holder runs.
    let leftover = pg_connect(&name).await;
    leftover
        .execute(
            "SELECT set_config('application_name', $1, false)",
            &[&format!(
                "catalyst-dr baseline {} 00000003-0000001B-1",
                catalyst_dr::drill::baseline::holder_tag(&drill)
            )],
        )
        .await
        .unwrap();
    let leftover = tokio::spawn(async move { leftover.batch_execute("SELECT pg_sleep(60)").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let Ok(BaselineAnswer::Opened(opened)) =
        validator.baseline(&drill, Some(WorkPath::FanOut)).await
    else {
        panic!("the baseline did not open for the fan-out");
    };
    let ended = leftover.await.unwrap().expect_err("cancelled");
    assert_eq!(
        ended.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
    assert!(opened.batches.len() > 2, "{:?}", opened.batches);
    let holder = holders(&source).await;
    assert_eq!(holder.len(), 1, "{holder:?}");
    // Nothing was written since the instant: the source now is the source then.
    let expected = parity::fingerprint(&source, opened.instant.instant)
        .await
        .expect("fingerprint");
    // A retry of the opening answers the same opening, with the same holder.
    let Ok(BaselineAnswer::Opened(again)) = validator.baseline(&drill, None).await else {
        panic!("the retry did not answer the opening");
    };
    assert_eq!(again, opened);
    assert_eq!(holders(&source).await, holder);

    // Writes after the instant, some batches read before them and some after.
    let (early, late) = opened.batches.split_at(1);
    for &batch in early {
        validator
            .baseline_batch(&drill, batch)
            .await
            .expect("batch");
    }
    source
        .batch_execute(
            "UPDATE webhook_deliveries SET status = 'failed', updated_at = now() WHERE id % 3 = 0;
             DELETE FROM webhook_deliveries WHERE id % 7 = 0",
        )
        .await
        .unwrap();
    let early_incomplete = validator
        .baseline_close(&drill)
        .await
        .expect_err("batches missing");
    assert_eq!(early_incomplete.error_type(), ErrorKind::ParityIncomplete);
    assert_eq!(holders(&source).await, holder, "still held");
    for &batch in late {
        validator
            .baseline_batch(&drill, batch)
            .await
            .expect("batch");
    }
    // A batch read twice (a retry) answers what it stored.
    let first = validator.baseline_batch(&drill, late[0]).await.unwrap();
    assert_eq!(
        validator.baseline_batch(&drill, late[0]).await.unwrap(),
        first
    );

    let baseline = validator.baseline_close(&drill).await.expect("close");
    assert_eq!(baseline.path, WorkPath::FanOut);
    assert_eq!(baseline.instant, opened.instant);
    assert_eq!(baseline.tables, expected.tables);
    assert_eq!(baseline.deliveries_by_status, expected.deliveries_by_status);
    let now = parity::fingerprint(&source, opened.instant.instant)
        .await
        .unwrap();
    assert_ne!(now.tables, baseline.tables, "the writes are not in it");
    until_no_holder(&source).await;
    // Every later call answers the closed baseline.
    assert!(matches!(
        validator.baseline(&drill, Some(WorkPath::FanOut)).await,
        Ok(BaselineAnswer::Taken(b)) if b == baseline
    ));
    assert_eq!(validator.baseline_close(&drill).await.unwrap(), baseline);

    // Released before its batches were read: a batch fails, naming the snapshot.
    let released = format!("{drill}-released");
    let Ok(BaselineAnswer::Opened(opened)) =
        validator.baseline(&released, Some(WorkPath::FanOut)).await
    else {
        panic!("the baseline did not open for the fan-out");
    };
    assert!(
        validator
            .baseline_release(&released)
            .await
            .unwrap()
            .released
    );
    until_no_holder(&source).await;
    assert!(
        !validator
            .baseline_release(&released)
            .await
            .unwrap()
            .released
    );
    let gone = validator
        .baseline_batch(&released, opened.batches[0])
        .await
        .expect_err("the snapshot ended");
    assert_eq!(gone.error_type(), ErrorKind::BaselineSnapshotGone, "{gone}");
    assert!(gone.to_string().contains("snapshot"), "{gone}");
}

/// The held snapshot outlives the process that opened it, as it must outlive the invocation:
/// the runtime that opened it is dropped (its connections closed, as when a Lambda's sandbox
/// goes), and the holder still runs, still serves its snapshot, and ends when released.
#[tokio::test]
async fn a_held_snapshot_outlives_the_process_that_opened_it() {
    use catalyst_dr::catalyst_db::parity;
    let sdk = local_aws().await;
    let (name, _secret, source) = generated(&sdk, "baseline_outlives", 100, 500).await;
    let opener = name.clone();
    let (instant, held) = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            parity::open_held_baseline(
                &pg_connect(&opener).await,
                pg_connect(&opener).await,
                "feedf00d",
                Duration::from_secs(120),
                Duration::from_secs(5),
            )
            .await
            .expect("held")
        })
        // The runtime, its tasks and its connections go here.
    })
    .join()
    .expect("opener");
    let expected = parity::fingerprint(&source, instant.instant).await.unwrap();
    source
        .batch_execute("DELETE FROM webhook_deliveries WHERE id % 2 = 0")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        holders(&source).await,
        [format!("catalyst-dr baseline feedf00d {}", held.snapshot)]
    );
    let reader = pg_connect(&name).await;
    parity::import_snapshot(&reader, &held.snapshot)
        .await
        .expect("import after the opener went");
    assert_eq!(
        parity::fingerprint(&reader, instant.instant).await.unwrap(),
        expected
    );
    reader.batch_execute("COMMIT").await.unwrap();
    assert!(parity::release_snapshot(&source, "feedf00d").await.unwrap());
    until_no_holder(&source).await;
}
