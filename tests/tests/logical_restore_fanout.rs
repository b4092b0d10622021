//! The logical restore in steps (prepare, one invocation per batch, finish), as the restore
//! test's Map runs it, against the local PostgreSQL and S3 endpoint: it restores what one
//! invocation restores, a batch killed mid-segment redoes only that segment, finish refuses
//! while a segment is missing, and every step is safe to repeat.

use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr::invocation::with_deadline;
use catalyst_dr::logical::config::LogicalConfig;
use catalyst_dr::logical::restore::{RestoreOptions, RestorePhases, RestoreResult, RestoreTarget};
use catalyst_dr::logical::{LogicalBackups, LogicalError};
use catalyst_dr::object_store::{ObjectStore, S3Objects};
use catalyst_dr::postgres::TlsMode;
use catalyst_dr_tests::datagen::GeneratorSpec;
use catalyst_dr_tests::{
    KillAtSecondSegment, empty_database, generated_database, local_aws, new_locked_bucket,
    pg_connect, relation_contents, run_in, s3,
};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_postgres::Client;

fn backups(sdk: &aws_config::SdkConfig, bucket: &str, source_secret: &str) -> LogicalBackups {
    let config = LogicalConfig {
        // One connection per step, so a batch loads its segments in order.
        parallelism: 1,
        part_size_bytes: 5 << 20,
        segment_bytes: 1 << 20,
        fanout_batch_bytes: 4 << 20,
        source_secret_id: Some(source_secret.to_owned()),
        tls: Some(TlsMode::Disable),
        ..LogicalConfig::new(1)
    };
    LogicalBackups::new(
        config,
        Arc::new(S3Objects::new(s3(sdk), bucket)),
        Arc::new(aws_sdk_secretsmanager::Client::new(sdk)),
    )
}

async fn staging(sdk: &aws_config::SdkConfig, label: &str) -> (String, Client) {
    let (_name, secret, client) = staging_named(sdk, label).await;
    (secret, client)
}

/// An empty staging database: its name, its secret and a connection to it.
async fn staging_named(sdk: &aws_config::SdkConfig, label: &str) -> (String, String, Client) {
    let (name, secret, client) = empty_database(sdk, label).await;
    catalyst_dr::catalyst_db::mark_staging(&client, "restore-fanout-test")
        .await
        .expect("mark staging");
    (name, secret, client)
}

/// Every user table's rows and a digest of them.
async fn fingerprint(client: &Client) -> Vec<(String, i64, String)> {
    relation_contents(client, "c.relkind = 'r'").await
}

/// The indexes and the staging marker of the target, to show a refusal changed nothing.
async fn indexes_and_marker(client: &Client) -> (i64, String) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'), \
             coalesce(shobj_description(d.oid, 'pg_database'), '') FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .expect("indexes and marker");
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn a_restore_in_batches_equals_one_invocation_and_a_killed_batch_redoes_one_segment() {
    let sdk = local_aws().await;
    let bucket = new_locked_bucket(&sdk, "restore-fanout").await;
    let spec = GeneratorSpec {
        users: 2_000,
        subscriptions: 5,
        deliveries: 20_000,
        ..GeneratorSpec::default()
    };
    let (_src, source_secret, src) = generated_database(&sdk, "restore_fanout_src", &spec).await;
    let mut logical = backups(&sdk, &bucket, &source_secret);
    let run = run_in(0);
    let backup = logical.backup(&run).await.expect("backup");
    assert!(backup.segments >= 6, "{backup:#?}");

    // The reference: the same backup restored in one invocation.
    let (whole_secret, whole) = staging(&sdk, "restore_fanout_whole").await;
    let reference = logical
        .restore(
            &run,
            &whole_secret,
            RestoreOptions {
                reread: true,
                ..RestoreOptions::default()
            },
        )
        .await
        .expect("restore in one invocation");
    assert!(reference.consistent, "{:#?}", reference.mismatches);
    assert_eq!(fingerprint(&whole).await, fingerprint(&src).await);

    // Restore sessions ask the server for keepalives: a client that vanished mid-batch has its
    // claims rolled back within about 90 s instead of holding them for the system's 2 hours.
    let session = pg_connect("postgres").await;
    catalyst_dr::catalyst_db::introspect::restore_session(&session)
        .await
        .expect("restore session");
    let row = session
        .query_one(
            "SELECT current_setting('tcp_keepalives_idle'), current_setting('tcp_keepalives_interval'), current_setting('tcp_keepalives_count')",
            &[],
        )
        .await
        .unwrap();
    let keepalives: (String, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(keepalives, ("60".into(), "10".into(), "3".into()));

    let (dst_secret, dst) = staging(&sdk, "restore_fanout_dst").await;
    let target = RestoreTarget::new(&dst_secret, None).expect("target");
    let plan = logical
        .prepare_restore(&run, &target, false)
        .await
        .expect("prepare");
    assert!(plan.batches.len() >= 2 && !plan.resumed, "{plan:#?}");
    assert_eq!(plan.segments, backup.segments);
    // Prepare again (a retry, or a rerun of the state machine): the same restore, resumed.
    let again = logical
        .prepare_restore(&run, &target, false)
        .await
        .expect("prepare again");
    assert_eq!(
        (again.restore_id.as_str(), again.resumed),
        (plan.restore_id.as_str(), true)
    );

    // Finish refuses while segments are missing, names them, and builds nothing.
    let before = indexes_and_marker(&dst).await;
    let err = logical
        .finish_restore(&run, &target, &plan.restore_id, true)
        .await
        .expect_err("nothing loaded yet");
    assert!(
        matches!(&err, LogicalError::RestoreIncomplete { missing, total, first, .. }
            if *missing == backup.segments && *total == backup.segments && !first.is_empty()),
        "{err}"
    );
    assert_eq!(err.error_type(), ErrorKind::RestoreIncomplete);
    assert!(err.to_string().contains(".copy.zst"), "{err}");
    assert_eq!(indexes_and_marker(&dst).await, before);

    // Bad input is refused naming the field, with nothing loaded.
    for (restore_id, batch, field) in [
        (plan.restore_id.as_str(), plan.batches.len(), "batch"),
        ("Not-An-Id!", 0, "restore_id"),
    ] {
        let err = logical
            .restore_batch(&run, &target, restore_id, batch)
            .await
            .expect_err("bad input");
        assert_eq!(err.error_type(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(field), "{err}");
    }
    let err = logical
        .restore_batch(&run, &target, "20200101t000000000z", 0)
        .await
        .expect_err("another restore's id");
    assert_eq!(err.error_type(), ErrorKind::RestoreNotPrepared, "{err}");
    assert!(
        fingerprint(&dst)
            .await
            .iter()
            .all(|(table, rows, _)| *rows == 0 || table.starts_with("catalyst_dr_restore."))
    );

    // Batch 0 is killed while its second segment's COPY runs; the first stays loaded.
    let killer = Arc::new(KillAtSecondSegment::default());
    logical.observer = Some(killer.clone());
    tokio::select! {
        result = logical.restore_batch(&run, &target, &plan.restore_id, 0) => {
            panic!("batch 0 ended before it was killed: {result:?}")
        }
        () = killer.reached.notified() => {}
    }
    logical.observer = None;
    let retried = logical
        .restore_batch(&run, &target, &plan.restore_id, 0)
        .await
        .expect("batch 0 again");
    assert_eq!(retried.already_loaded, 1, "{retried:#?}");
    assert_eq!(retried.loaded, retried.segments - 1, "{retried:#?}");
    let mut loaded = retried.segments;
    for &batch in &plan.batches[1..] {
        let done = logical
            .restore_batch(&run, &target, &plan.restore_id, batch)
            .await
            .expect("batch");
        assert_eq!((done.loaded, done.already_loaded), (done.segments, 0));
        loaded += done.segments;
    }
    assert_eq!(loaded, backup.segments);
    // A batch repeated loads nothing twice.
    let repeated = logical
        .restore_batch(&run, &target, &plan.restore_id, 1)
        .await
        .expect("batch 1 again");
    assert_eq!(
        (repeated.loaded, repeated.already_loaded),
        (0, repeated.segments)
    );

    // The re-read as the restore test's second Map runs it: planned once on the target, each
    // batch of block ranges read once, their sums kept in the ledger for finish.
    let reread = logical
        .plan_reread(&run, &target, &plan.restore_id)
        .await
        .expect("plan the re-read");
    assert!(reread.batches.len() >= 2, "{reread:#?}");
    assert_eq!(
        logical
            .plan_reread(&run, &target, &plan.restore_id)
            .await
            .expect("plan again"),
        reread
    );
    let mut read = 0;
    for &batch in &reread.batches {
        let done = logical
            .reread_batch(&run, &target, &plan.restore_id, batch)
            .await
            .expect("re-read a batch");
        assert_eq!((done.read, done.already_read), (done.ranges, 0));
        read += done.read;
    }
    assert_eq!(read, reread.ranges);
    let again = logical
        .reread_batch(&run, &target, &plan.restore_id, 0)
        .await
        .expect("re-read batch 0 again");
    assert_eq!((again.read, again.already_read), (0, again.ranges));
    let err = logical
        .reread_batch(&run, &target, &plan.restore_id, reread.batches.len())
        .await
        .expect_err("no such batch");
    assert_eq!(err.error_type(), ErrorKind::InvalidInput, "{err}");
    let unread: i64 = dst
        .query_one(
            "SELECT count(*) FROM catalyst_dr_restore.reread WHERE content IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unread, 0);

    // A finish that fails part-way (a row that breaks a foreign key slipped in): its indexes
    // stay built and its keys added; once the row is gone, the retried finish builds none
    // twice, validates the foreign key and completes.
    dst.batch_execute(
        "INSERT INTO public.entitlements (id, user_id, product, plan) VALUES (-1, -1, 'orphan', 'free')",
    )
    .await
    .unwrap();
    let err = logical
        .finish_restore(&run, &target, &plan.restore_id, true)
        .await
        .expect_err("the foreign key fails");
    assert_eq!(err.error_type(), ErrorKind::Postgres, "{err}");
    assert_eq!(
        indexes_and_marker(&dst).await.0,
        indexes_and_marker(&whole).await.0,
        "every index was built before: {err:?}"
    );
    let built = index_oids(&dst, "public.entitlements").await;
    assert!(!validated(&dst, "entitlements_user_id_fkey").await);
    dst.batch_execute("DELETE FROM public.entitlements WHERE user_id = -1")
        .await
        .unwrap();
    // The ledger as a finish of an earlier version leaves it, all of phase 4 done in one
    // transaction recorded as `schema`: the next finishes go on from the validations.
    dst.batch_execute(
        "UPDATE catalyst_dr_restore.done SET step = 'schema' WHERE step = 'keys';
         DELETE FROM catalyst_dr_restore.done WHERE step LIKE 'post-data %' OR step LIKE 'view %'",
    )
    .await
    .unwrap();
    let restored = logical
        .finish_restore(&run, &target, &plan.restore_id, true)
        .await
        .expect("finish");
    assert!(
        restored.consistent && restored.reread,
        "{:#?}",
        restored.mismatches
    );
    assert_eq!(restored.tables, reference.tables);
    assert_eq!(fingerprint(&dst).await, fingerprint(&src).await);
    assert_eq!(index_oids(&dst, "public.entitlements").await, built);
    assert!(validated(&dst, "entitlements_user_id_fkey").await);
    // The restore is over: no ledger, no restoring= in the marker.
    let (indexes, marker) = indexes_and_marker(&dst).await;
    assert_eq!(indexes, indexes_and_marker(&whole).await.0);
    assert!(!marker.contains("restoring="), "{marker}");
    let ledger: bool = dst
        .query_one("SELECT to_regnamespace('catalyst_dr_restore') IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(ledger, "the ledger was dropped");

    // Finish again (a retry after a lost answer): the stored report.
    let finished_again = logical
        .finish_restore(&run, &target, &plan.restore_id, true)
        .await
        .expect("finish again");
    // (Its phase timings are the stored JSON's, equal to within a float's last digit.)
    let without_timings = |r: &RestoreResult| RestoreResult {
        seconds: RestorePhases::default(),
        ..r.clone()
    };
    assert_eq!(without_timings(&finished_again), without_timings(&restored));
    assert!((finished_again.seconds.load - restored.seconds.load).abs() < 1e-9);
    // The stored report answers for its own target only.
    let elsewhere = RestoreTarget::new(&whole_secret, None).expect("target");
    let err = logical
        .finish_restore(&run, &elsewhere, &plan.restore_id, true)
        .await
        .expect_err("another target");
    assert_eq!(err.error_type(), ErrorKind::RestoreNotPrepared, "{err}");
    let store = S3Objects::new(s3(&sdk), &bucket);
    assert!(
        store
            .get(&format!(
                "logical/{}/restore/{}.json",
                run.stamp, plan.restore_id
            ))
            .await
            .expect("get")
            .is_some()
    );
    // The report is the backup's own object: verify lists it as nothing unexpected.
    let report = logical.verify(&run).await.expect("verify");
    assert!(
        report.ok && report.unexpected_objects.is_empty(),
        "{report:#?}"
    );
    // A finished restore is never prepared over.
    let err = logical
        .prepare_restore(&run, &target, true)
        .await
        .expect_err("finished");
    assert_eq!(err.error_type(), ErrorKind::TargetNotEmpty, "{err}");
    assert_eq!(fingerprint(&dst).await, fingerprint(&src).await);
}

/// The sessions running a restore's index builds or validations, by name.
async fn building(client: &Client) -> Vec<String> {
    sessions(client, "").await
}

/// The restore's named sessions that are active (the finish's own, which is now and then, left
/// out), only those waiting for a lock with `blocked`.
async fn sessions(client: &Client, blocked: &str) -> Vec<String> {
    client
        .query(
            &format!(
                "SELECT application_name FROM pg_stat_activity WHERE datname = current_database() \
                   AND application_name LIKE 'catalyst-dr %' AND application_name <> $1 \
                   AND state = 'active' {blocked} ORDER BY 1"
            ),
            &[&catalyst_dr::catalyst_db::introspect::RESTORE_APPLICATION_NAME],
        )
        .await
        .expect("sessions")
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

/// The OIDs of a table's indexes, by name: a rebuilt index would have another.
async fn index_oids(client: &Client, table: &str) -> Vec<(String, u32)> {
    client
        .query(
            "SELECT indexrelid::regclass::text, indexrelid FROM pg_index WHERE indrelid = $1::text::regclass ORDER BY 1",
            &[&table],
        )
        .await
        .expect("indexes")
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn validated(client: &Client, constraint: &str) -> bool {
    client
        .query_one(
            "SELECT convalidated FROM pg_constraint WHERE conname = $1",
            &[&constraint],
        )
        .await
        .expect("the constraint exists")
        .get(0)
}

#[tokio::test]
async fn builds_that_outlast_a_finish_go_on_in_the_database_and_the_next_finish_waits_for_them() {
    let sdk = local_aws().await;
    let bucket = new_locked_bucket(&sdk, "restore-builds").await;
    let spec = GeneratorSpec {
        users: 500,
        subscriptions: 3,
        deliveries: 5_000,
        ..GeneratorSpec::default()
    };
    let (_src, source_secret, src) = generated_database(&sdk, "restore_builds_src", &spec).await;
    let mut logical = backups(&sdk, &bucket, &source_secret);
    // Enough connections that the other tables' indexes build beside the held-up ones.
    logical.config.parallelism = 4;
    let run = run_in(0);
    logical.backup(&run).await.expect("backup");
    let (dst_name, dst_secret, dst) = staging_named(&sdk, "restore_builds_dst").await;
    let target = RestoreTarget::new(&dst_secret, None).expect("target");
    let plan = catalyst_dr_tests::loaded_restore(&logical, &run, &target).await;
    let finish = || logical.finish_restore(&run, &target, &plan.restore_id, true);
    // An invocation that must answer within `seconds` (it stops waiting halfway, below a minute).
    let within = |seconds| Some(SystemTime::now() + Duration::from_secs(seconds));
    let deliveries = "public.webhook_deliveries";

    // The deliveries' index builds are held up (as a long build would be), and the process
    // running the finish is killed while they wait, as a Lambda stopped at its timeout would be.
    let blocker = pg_connect(&dst_name).await;
    blocker
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE {deliveries} IN ROW EXCLUSIVE MODE"
        ))
        .await
        .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bench-logical"))
        .args(["restore-finish", "--target-secret", &dst_secret])
        .args(["--restore-id", &plan.restore_id, "--bucket", &bucket])
        .args([
            "--scheduled-time",
            &catalyst_dr::input::format_time(run.scheduled_time),
        ])
        .args(["--parallelism", "4", "--segment-mib", "1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start a finish process");
    let mut running = Vec::new();
    for _ in 0..1200 {
        // The three deliveries builds wait for the lock, and no other build runs any more
        // (nor is about to: the users' are built).
        running = building(&dst).await;
        if running.len() == 3
            && sessions(&dst, "AND wait_event_type = 'Lock'").await == running
            && index_oids(&dst, "public.users").await.len() == 2
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the finish process ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(running.len(), 3, "{running:?}");
    assert!(
        running
            .iter()
            .all(|n| n.starts_with(&format!("catalyst-dr {} index ", plan.restore_id))),
        "{running:?}"
    );
    child.kill().expect("kill the finish process");
    child.wait().expect("reap it");
    // The builds go on in the database without their client, each in its named session.
    assert_eq!(building(&dst).await, running);
    assert!(
        index_oids(&dst, "public.users").await.len() == 2
            && index_oids(&dst, deliveries).await.is_empty()
    );
    // A finish that must answer within 8 s waits for them until 4 s and answers which still run.
    let err = with_deadline(within(8), finish())
        .await
        .expect_err("the builds outlast the invocation");
    assert_eq!(err.error_type(), ErrorKind::RestoreStillBuilding, "{err}");
    assert!(
        matches!(&err, LogicalError::RestoreStillBuilding { count: 3, first, .. }
            if first.iter().all(|f| f.starts_with("index ") && f.contains("webhook_deliveries"))),
        "{err}"
    );
    // It started none of them again.
    assert_eq!(building(&dst).await, running);
    // Released, they commit with no client waiting for them.
    blocker.batch_execute("COMMIT").await.unwrap();
    for _ in 0..600 {
        if building(&dst).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(building(&dst).await.is_empty(), "the builds ended");
    let built = index_oids(&dst, deliveries).await;
    assert_eq!(built.len(), 3, "{built:?}");

    // A row breaking a foreign key slipped in: the keys go in (the foreign key NOT VALID), and
    // the validation fails, naming it.
    dst.batch_execute(
        "INSERT INTO public.entitlements (id, user_id, product, plan) VALUES (-1, -1, 'orphan', 'free')",
    )
    .await
    .unwrap();
    let err = finish().await.expect_err("the validation fails");
    assert_eq!(err.error_type(), ErrorKind::Postgres, "{err:?}");
    assert!(
        format!("{err:?}").contains("entitlements_user_id_fkey"),
        "{err:?}"
    );
    assert!(!validated(&dst, "entitlements_user_id_fkey").await);
    assert!(validated(&dst, "webhook_deliveries_subscription_id_fkey").await);
    dst.batch_execute("DELETE FROM public.entitlements WHERE user_id = -1")
        .await
        .unwrap();
    // The ledger as the previous version's finish leaves it, post-data done in one transaction
    // recorded as `post-data`: the next finishes go on from the validations.
    dst.batch_execute(
        "UPDATE catalyst_dr_restore.done SET step = 'post-data' WHERE step = 'post-data before';
         DELETE FROM catalyst_dr_restore.done WHERE step = 'post-data after' OR step LIKE 'view %'",
    )
    .await
    .unwrap();
    // A validation held up past the invocation goes on too.
    blocker
        .batch_execute("BEGIN; LOCK TABLE public.entitlements IN SHARE MODE")
        .await
        .unwrap();
    let err = with_deadline(within(4), finish())
        .await
        .expect_err("the validation outlasts the invocation");
    assert!(
        matches!(&err, LogicalError::RestoreStillBuilding { count: 1, first, .. }
            if first == &["foreign key \"entitlements_user_id_fkey\" of \"public\".\"entitlements\"".to_owned()]),
        "{err}"
    );
    let running = building(&dst).await;
    assert_eq!(
        running,
        [format!("catalyst-dr {} validate 0.0", plan.restore_id)]
    );
    blocker.batch_execute("COMMIT").await.unwrap();
    let restored = finish().await.expect("finish");
    assert!(
        restored.consistent && restored.reread,
        "{:#?}",
        restored.mismatches
    );
    // The phases count from where the finishes before this one got: the deliveries' builds
    // were held up past a finish that waited 4 s, and a validation past another.
    assert!(
        restored.seconds.indexes >= 4.0 && restored.seconds.constraints >= 2.0,
        "{:?}",
        restored.seconds
    );
    assert!(validated(&dst, "entitlements_user_id_fkey").await);
    assert_eq!(
        index_oids(&dst, deliveries).await,
        built,
        "no index was built twice"
    );
    assert_eq!(fingerprint(&dst).await, fingerprint(&src).await);
    let (_, marker) = indexes_and_marker(&dst).await;
    assert!(!marker.contains("restoring="), "{marker}");
}
