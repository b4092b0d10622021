//! The fanned-out logical backup against the local PostgreSQL and S3 endpoint. The read source is
//! a copy of the source database (`CREATE DATABASE ... TEMPLATE`), published in a staging secret
//! as pitr-restore publishes its copy: the fan-out stores the same rows and checksums as the
//! single path, a batch killed mid-segment is redone without redoing its finished segment, and no
//! manifest is written while a segment is missing, the read source was written to, or the secret
//! holds another run's copy.

use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr::logical::config::LogicalConfig;
use catalyst_dr::logical::fanout::{BackupPath, read_source_id};
use catalyst_dr::logical::manifest::{LogicalManifest, ReadPath};
use catalyst_dr::logical::verify::VerifyReport;
use catalyst_dr::logical::{LogicalBackups, LogicalError};
use catalyst_dr::object_store::{ObjectStore, S3Objects};
use catalyst_dr::postgres::TlsMode;
use catalyst_dr::run_id::RunId;
use catalyst_dr_tests::datagen::GeneratorSpec;
use catalyst_dr_tests::{
    KillAtSecondSegment, generated_database, local_aws, new_locked_bucket, pg_admin, pg_connect,
    put_staging_secret, run_in, s3,
};
use std::sync::Arc;
use time::OffsetDateTime;

/// A source of a few MiB (several 1 MiB segments in its largest tables) and its quiescent copy.
/// Returns (source secret, read-source database).
async fn source_and_copy(sdk: &aws_config::SdkConfig, label: &str) -> (String, String) {
    let spec = GeneratorSpec {
        users: 2_000,
        subscriptions: 5,
        deliveries: 20_000,
        ..GeneratorSpec::default()
    };
    let (source, secret, client) = generated_database(sdk, label, &spec).await;
    drop(client);
    let copy = format!("{source}_copy");
    // The template must have no other connection: the generator's may take a moment to close.
    let admin = pg_admin().await;
    let mut attempts = 0;
    while let Err(e) = admin
        .batch_execute(&format!("CREATE DATABASE {copy} TEMPLATE {source}"))
        .await
    {
        attempts += 1;
        assert!(attempts < 50, "copy the source: {e}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    (secret, copy)
}

fn backups(
    sdk: &aws_config::SdkConfig,
    bucket: &str,
    source_secret: &str,
    staging_secret: &str,
) -> LogicalBackups {
    let config = LogicalConfig {
        parallelism: 1,
        part_size_bytes: 5 << 20,
        segment_bytes: 1 << 20,
        fanout_threshold_bytes: 0,
        fanout_batch_bytes: 2 << 20,
        source_secret_id: Some(source_secret.to_owned()),
        read_source_secret_id: Some(staging_secret.to_owned()),
        tls: Some(TlsMode::Disable),
        ..LogicalConfig::new(1)
    };
    LogicalBackups::new(
        config,
        Arc::new(S3Objects::new(s3(sdk), bucket)),
        Arc::new(aws_sdk_secretsmanager::Client::new(sdk)),
    )
}

async fn manifest(store: &S3Objects, run: &RunId) -> Option<LogicalManifest> {
    store
        .get(&format!("logical/{}/manifest.json", run.stamp))
        .await
        .expect("get")
        .map(|bytes| serde_json::from_slice(&bytes).expect("manifest"))
}

#[tokio::test]
async fn fanout_stores_what_one_invocation_stores_and_a_killed_batch_resumes() {
    let sdk = local_aws().await;
    let bucket = new_locked_bucket(&sdk, "fanout").await;
    let (source_secret, copy) = source_and_copy(&sdk, "fanout_src").await;
    let run = run_in(0);
    let staging = put_staging_secret(&sdk, &copy, &read_source_id(&run)).await;
    let mut logical = backups(&sdk, &bucket, &source_secret, &staging);
    let store = S3Objects::new(s3(&sdk), &bucket);

    // The path: by size (a threshold of 0 fans out), or as asked.
    let choice = logical.choose_path(&run, None).await.expect("path");
    assert_eq!(
        (choice.path, choice.chosen_by.as_str()),
        (BackupPath::FanOut, "size")
    );
    assert!(choice.database_bytes.unwrap() > 0);
    assert_eq!(choice.read_source_id, read_source_id(&run));
    let asked = logical
        .choose_path(&run, Some(BackupPath::Single))
        .await
        .expect("path");
    assert_eq!(
        (asked.path, asked.chosen_by.as_str()),
        (BackupPath::Single, "requested")
    );

    let restored_to = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let plan = logical.plan_fanout(&run, restored_to).await.expect("plan");
    assert!(!plan.reused);
    assert!(plan.batches.len() >= 3, "{plan:#?}");
    assert!(plan.segments > plan.batches.len(), "{plan:#?}");

    // Batch 0 (two 1 MiB ranges of the largest table) killed while its second segment copies.
    let observer = Arc::new(KillAtSecondSegment::default());
    logical.observer = Some(observer.clone());
    tokio::select! {
        result = logical.backup_batch(&run, 0) => panic!("the batch was to be killed: {result:?}"),
        () = observer.reached.notified() => {}
    }
    logical.observer = None;

    // Not every segment is stored: no manifest, and the killed attempt's upload is aborted.
    let incomplete = logical.finish_fanout(&run).await.expect_err("incomplete");
    assert!(
        matches!(&incomplete, LogicalError::SegmentsMissing { missing, total, .. } if *missing < *total && *missing >= plan.segments - 1),
        "{incomplete}"
    );
    assert_eq!(incomplete.error_type(), ErrorKind::BackupIncomplete);
    assert!(manifest(&store, &run).await.is_none());
    let prefix = format!("logical/{}/", run.stamp);
    assert_eq!(
        store.pending_uploads(&prefix).await.expect("uploads"),
        vec![]
    );

    // The retry of batch 0 redoes only the killed segment; then every other batch.
    let retried = logical.backup_batch(&run, 0).await.expect("batch 0 again");
    assert_eq!(
        (retried.already_done, retried.copied),
        (1, 1),
        "{retried:?}"
    );
    for batch in 1..plan.batches.len() {
        let done = logical.backup_batch(&run, batch).await.expect("batch");
        assert_eq!(done.already_done, 0);
        assert_eq!(done.copied, done.segments);
    }
    let result = logical.finish_fanout(&run).await.expect("finish");
    assert!(!result.reused);
    assert_eq!(result.segments, plan.segments);

    // The same rows and content checksums as one invocation reading the source itself.
    let single_run = run_in(1);
    let single = logical.backup(&single_run).await.expect("single backup");
    assert_eq!(result.rows, single.rows);
    let fanned = manifest(&store, &run).await.expect("fan-out manifest");
    let one = manifest(&store, &single_run)
        .await
        .expect("single manifest");
    let tables = |m: &LogicalManifest| {
        m.tables
            .iter()
            .map(|t| (t.schema.clone(), t.name.clone(), t.rows, t.content_checksum))
            .collect::<Vec<_>>()
    };
    assert_eq!(tables(&fanned), tables(&one));
    assert_eq!(fanned.schema, one.schema);
    assert!(fanned.complete);
    match &fanned.read_path {
        ReadPath::ReadSource(source) => {
            assert_eq!(source.id, read_source_id(&run));
            assert_eq!(
                source.restored_to,
                catalyst_dr::input::format_time(restored_to)
            );
            assert_eq!(source.batches, plan.batches.len());
        }
        other => panic!("the fan-out's manifest says {other:?}"),
    }
    assert_eq!(
        fanned.instant.server_time,
        catalyst_dr::input::format_time(restored_to)
    );
    assert_eq!(one.read_path, ReadPath::ExportedSnapshot);

    // verify-logical reads the fan-out's backup back like any other; the path stays chosen.
    let verified = logical.verify(&run).await.expect("verify");
    assert!(verified.ok && verified.complete, "{verified:#?}");
    assert_eq!(verified.unexpected_objects, Vec::<String>::new());
    assert_eq!(verified.objects_checked, plan.segments);
    let again = logical
        .choose_path(&run, Some(BackupPath::Single))
        .await
        .expect("path");
    assert_eq!(
        (again.path, again.chosen_by.as_str()),
        (BackupPath::FanOut, "finished")
    );

    // Every step again, as Step Functions may retry it: nothing is redone.
    assert!(
        logical
            .plan_fanout(&run, restored_to)
            .await
            .expect("plan")
            .reused
    );
    let batch = logical.backup_batch(&run, 1).await.expect("batch");
    assert_eq!((batch.copied, batch.already_done), (0, batch.segments));
    assert!(logical.finish_fanout(&run).await.expect("finish").reused);

    verify_in_batches(&logical, &store, &run, &verified).await;
}

/// The verify fan-out (plan, one call per batch, finish) reports what one `verify-logical`
/// reports; a batch not run, a bad verify id or batch, and a corrupted segment never pass.
async fn verify_in_batches(
    logical: &LogicalBackups,
    store: &S3Objects,
    run: &RunId,
    whole: &VerifyReport,
) {
    let plan = logical.plan_verify(run).await.expect("verify plan");
    assert_eq!(plan.segments, whole.objects_checked);
    assert!(plan.batches.len() >= 2, "{plan:#?}");
    let id = plan.verify_id.as_str();

    // Before the batches ran, and with one batch left out, the report fails and says why.
    let unverified = logical.finish_verify(run, id).await.expect("finish");
    assert!(
        !unverified.ok && unverified.objects_checked == 0,
        "{unverified:#?}"
    );
    for batch in &plan.batches[1..] {
        let done = logical.verify_batch(run, id, *batch).await.expect("batch");
        assert!(!done.reused && done.problems == 0, "{done:?}");
    }
    let partial = logical.finish_verify(run, id).await.expect("finish");
    assert!(!partial.ok, "{partial:#?}");
    assert!(
        partial
            .problems
            .iter()
            .any(|p| p.contains(&format!("verify {id}: batch 0 ("))
                && p.ends_with("was not verified")),
        "{:#?}",
        partial.problems
    );
    assert!(partial.objects_checked < whole.objects_checked);

    // With every batch: the same report as one invocation's, and a retried batch reads nothing.
    logical.verify_batch(run, id, 0).await.expect("batch 0");
    let full = logical.finish_verify(run, id).await.expect("finish");
    assert!(full.ok && full.complete, "{full:#?}");
    assert_eq!(full.tables, whole.tables);
    assert_eq!(
        (full.objects_checked, full.bytes_read),
        (whole.objects_checked, whole.bytes_read)
    );
    assert_eq!(full.unexpected_objects, Vec::<String>::new());
    assert!(
        logical
            .verify_batch(run, id, 0)
            .await
            .expect("retry")
            .reused
    );

    // Bad input is refused, naming the field, and writes no record.
    let last = plan.batches.len();
    let refused = logical
        .verify_batch(run, id, last)
        .await
        .expect_err("batch");
    assert!(
        matches!(&refused, LogicalError::Input(e) if e.field == "batch"),
        "{refused}"
    );
    for bad in ["../manifest", "", "A1"] {
        let refused = logical
            .verify_batch(run, bad, 0)
            .await
            .expect_err("verify_id");
        assert!(
            matches!(&refused, LogicalError::Input(e) if e.field == "verify_id"),
            "{refused}"
        );
    }
    let records = store
        .list(&format!("logical/{}/verify/", run.stamp))
        .await
        .expect("list");
    assert_eq!(records.len(), plan.batches.len(), "{records:?}");

    // A segment whose stored bytes differ from the manifest's: both ways of verifying fail on it.
    let mut manifest = manifest(store, run).await.expect("manifest");
    let corrupted = manifest.tables[0].segments[0].key.clone();
    manifest.tables[0].segments[0].sha256 = "0".repeat(64);
    store
        .put_locked(
            &format!("logical/{}/manifest.json", run.stamp),
            serde_json::to_vec(&manifest).unwrap(),
            "application/json",
            logical.retain_until(run),
        )
        .await
        .expect("put the altered manifest");
    // The earlier verify's records were checked against the manifest before it changed.
    let stale = logical.finish_verify(run, id).await.expect("finish");
    assert!(!stale.ok, "{stale:#?}");
    assert_eq!(
        stale
            .problems
            .iter()
            .filter(|p| p.contains("checked another version of the manifest"))
            .count(),
        plan.batches.len(),
        "{:#?}",
        stale.problems
    );
    let single = logical.verify(run).await.expect("verify");
    let plan = logical.plan_verify(run).await.expect("verify plan");
    for batch in &plan.batches {
        logical
            .verify_batch(run, &plan.verify_id, *batch)
            .await
            .expect("batch");
    }
    let batched = logical
        .finish_verify(run, &plan.verify_id)
        .await
        .expect("finish");
    for report in [&single, &batched] {
        assert!(!report.ok, "{report:#?}");
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains(&format!("{corrupted}: SHA-256"))),
            "{:#?}",
            report.problems
        );
    }
    assert_eq!(batched.tables, single.tables);
}

#[tokio::test]
async fn another_runs_copy_a_changed_copy_and_bad_input_are_refused() {
    let sdk = local_aws().await;
    let bucket = new_locked_bucket(&sdk, "fanout").await;
    let (source_secret, copy) = source_and_copy(&sdk, "fanout_adv").await;
    let run = run_in(0);
    let store = S3Objects::new(s3(&sdk), &bucket);
    let restored_to = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();

    // The staging secret holds another run's copy: nothing is planned from it.
    let other = put_staging_secret(&sdk, &copy, "nightly-20200101t000000z").await;
    let refused = backups(&sdk, &bucket, &source_secret, &other)
        .plan_fanout(&run, restored_to)
        .await
        .expect_err("another run's copy");
    assert_eq!(
        refused.error_type(),
        ErrorKind::NoStagingCredentials,
        "{refused}"
    );
    let plan_key = format!("logical/{}/fanout/plan.json", run.stamp);
    assert_eq!(store.get(&plan_key).await.expect("get"), None);

    let staging = put_staging_secret(&sdk, &copy, &read_source_id(&run)).await;
    let logical = backups(&sdk, &bucket, &source_secret, &staging);
    let plan = logical.plan_fanout(&run, restored_to).await.expect("plan");

    // A batch the plan does not have, and a plan asked again for another instant.
    let bad = logical
        .backup_batch(&run, plan.batches.len())
        .await
        .expect_err("no such batch");
    assert!(
        matches!(&bad, LogicalError::Input(e) if e.to_string().contains("batch")),
        "{bad}"
    );
    let moved = logical
        .plan_fanout(&run, restored_to + time::Duration::seconds(1))
        .await
        .expect_err("another instant");
    assert!(
        matches!(&moved, LogicalError::Input(e) if e.to_string().contains("restored_to")),
        "{moved}"
    );

    // Someone writes to the read source while the batches read it: no manifest.
    let writer = pg_connect(&copy).await;
    writer
        .batch_execute(
            "UPDATE users SET disabled = NOT disabled WHERE id = (SELECT min(id) FROM users)",
        )
        .await
        .expect("write to the copy");
    // Make the write's statistics visible now rather than within the server's flush interval.
    writer
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .expect("flush");
    writer.batch_execute("SELECT 1").await.expect("idle");
    for batch in 0..plan.batches.len() {
        logical.backup_batch(&run, batch).await.expect("batch");
    }
    let changed = logical.finish_fanout(&run).await.expect_err("changed copy");
    assert!(
        matches!(&changed, LogicalError::ReadSourceChanged { planned, now, .. } if now > planned),
        "{changed}"
    );
    assert_eq!(changed.error_type(), ErrorKind::ReadSourceChanged);
    assert!(manifest(&store, &run).await.is_none());
    // The run is void: its segments may hold the write, so neither a retry nor a rerun of the
    // night on a fresh copy may use them.
    for refused in [
        logical.finish_fanout(&run).await.map(drop),
        logical.backup_batch(&run, 0).await.map(drop),
        logical.plan_fanout(&run, restored_to).await.map(drop),
    ] {
        let e = refused.expect_err("the run is void");
        assert_eq!(e.error_type(), ErrorKind::ReadSourceChanged, "{e}");
    }
    assert!(manifest(&store, &run).await.is_none());
}
