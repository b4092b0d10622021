//! The nightly-backup state machine, executed by the ASL interpreter with its Lambda tasks served
//! by `cargo lambda watch` and AWS served by the local endpoint.

use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr_tests::{
    deployed_substitutions, local_aws, run_state_machine, s3, seed, stored_json, take_base_backup,
};
use serde_json::{Value, json};

const DEFINITION: &str = "infra/statemachines/nightly-backup.asl.json";

/// The template's DefinitionSubstitutions for the stack's samconfig environment.
fn substitutions() -> Vec<(String, String)> {
    deployed_substitutions("NightlyBackupStateMachine")
}

/// Both cases share the stack's one configured source, so they run in one test, in order.
#[tokio::test]
async fn nightly_backup_succeeds_and_a_failing_snapshot_takes_the_catch_path() {
    let seed = seed();
    let sdk = local_aws().await;
    let bucket = seed["bucket"].as_str().expect("bucket");
    let instance = seed["rds_instance"].as_str().expect("instance");

    // Scheduled times of this test run only, so that reruns against one stack start afresh.
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("valid");
    let ok_time = catalyst_dr::input::format_time(now);
    let ok_run = catalyst_dr::run_id::RunId::from_scheduled_time("t", &ok_time)
        .expect("time")
        .stamp;
    let failing_time = catalyst_dr::input::format_time(now + time::Duration::seconds(1));
    let failing_run = catalyst_dr::run_id::RunId::from_scheduled_time("t", &failing_time)
        .expect("time")
        .stamp;
    let late_failing_time = catalyst_dr::input::format_time(now + time::Duration::seconds(2));
    let late_failing_run = catalyst_dr::run_id::RunId::from_scheduled_time("t", &late_failing_time)
        .expect("time")
        .stamp;

    // A successful night: the manifest is in the bucket, locked.
    let run = run_state_machine(
        DEFINITION,
        &substitutions(),
        &json!({"scheduled_time": ok_time}),
    );
    assert!(run.succeeded, "execution failed: {:#}", run.outcome);
    let output = &run.outcome["output"];
    assert_eq!(output["status"]["state"], "available");
    assert_eq!(output["export"]["status"], "disabled-by-configuration");
    assert_eq!(output["manifest"]["run_id"], ok_run.as_str());
    let key = format!("manifests/{ok_run}.json");
    let stored = s3(&sdk)
        .get_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .expect("manifest in the bucket");
    assert_eq!(
        stored.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
    let body = stored.body.collect().await.expect("body").into_bytes();
    let manifest: Value = serde_json::from_slice(&body).expect("manifest JSON");
    assert_eq!(
        manifest["database"]["snapshot_id"],
        format!("catalyst-dr-{instance}-{ok_run}").as_str()
    );
    // The logical backup of the source database, recorded in the run's manifest, written last.
    let logical_key = format!("logical/{ok_run}/manifest.json");
    assert_eq!(output["logical"]["manifest_key"], logical_key.as_str());
    assert_eq!(manifest["logical"]["manifest_key"], logical_key.as_str());
    let logical = s3(&sdk)
        .get_object()
        .bucket(bucket)
        .key(&logical_key)
        .send()
        .await
        .expect("logical manifest in the bucket");
    assert_eq!(
        logical.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
    let states = run.states();
    assert_eq!(
        states,
        [
            "ApplyDefaults",
            "MergeInput",
            "Snapshot",
            "StartPolling",
            "WaitForSnapshots",
            "CheckStatus",
            "SnapshotsReady?",
            "ExportCache",
            "Prune",
            "LogicalPath",
            "LogicalFanOut?",
            "LogicalBackup",
            "WriteManifest",
            "PlanVerify",
            "VerifyBatches",
            "VerifyBatch",
            "VerifyLogical",
            "LogicalBackupVerified?",
            "CopySnapshotToDr",
            "DrConfigured?",
            "CopyObjectsToDr",
            "StartDrPolling",
            "WaitForDrCopy",
            "CheckDrCopy",
            "DrCopyReady?",
            "PruneDr",
            "VerifyDr",
            "BackupSucceeded"
        ]
    );
    // The copies in the stack's DR region: the snapshot copy available there, encrypted with the
    // DR key, tagged as ours and shared with the DR account; every object in the DR bucket.
    let dr_region = seed["dr_region"].as_str().expect("dr_region");
    let dr_bucket = seed["dr_bucket"].as_str().expect("dr_bucket");
    let snapshot_id = format!("catalyst-dr-{instance}-{ok_run}");
    assert_eq!(manifest["dr"]["region"], dr_region);
    assert_eq!(
        manifest["dr"]["database_snapshot_copy"],
        snapshot_id.as_str()
    );
    assert_eq!(output["dr_status"]["state"], "available");
    assert_eq!(
        output["dr_status"]["shared_with"],
        json!([seed["dr_account_id"]])
    );
    assert!(
        output["dr_objects"]["copied"].as_u64().unwrap() >= 3,
        "{:#}",
        output["dr_objects"]
    );
    let record_key = format!("manifests/{ok_run}.dr.json");
    assert_eq!(output["dr_verify"]["record_key"], record_key.as_str());
    let dr_rds = aws_sdk_rds::Client::from_conf(
        aws_sdk_rds::config::Builder::from(&sdk)
            .region(aws_config::Region::new(dr_region.to_owned()))
            .build(),
    );
    let copy = dr_rds
        .describe_db_snapshots()
        .db_snapshot_identifier(&snapshot_id)
        .send()
        .await
        .expect("the DR copy");
    let copy = &copy.db_snapshots()[0];
    assert_eq!(copy.status(), Some("available"));
    assert_eq!(copy.kms_key_id(), seed["dr_kms_key_arn"].as_str());
    assert!(
        copy.tag_list()
            .iter()
            .any(|t| t.key() == Some("catalyst-dr:run-id") && t.value() == Some(ok_run.as_str()))
    );
    let dr_s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .region(aws_config::Region::new(dr_region.to_owned()))
            .force_path_style(true)
            .build(),
    );
    for key in [&key, &logical_key, &record_key] {
        let head = dr_s3
            .head_object()
            .bucket(dr_bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key} in the DR bucket: {e:?}"));
        assert_eq!(
            head.object_lock_mode().map(|m| m.as_str()),
            Some("COMPLIANCE"),
            "{key}"
        );
    }
    // Tonight's logical backup was read back and checked before the night counted as a success.
    assert_eq!(
        (
            output["verify"]["ok"].as_bool(),
            output["verify"]["complete"].as_bool()
        ),
        (Some(true), Some(true)),
        "{:#}",
        output["verify"]
    );
    assert_eq!(output["verify"]["problems"], json!([]));

    // A snapshot id squatted by something that is not ours: the snapshot step fails without
    // retrying, the failure is published to the alert topic, and the execution fails.
    let squatted = format!("catalyst-dr-{instance}-{failing_run}");
    aws_sdk_rds::Client::new(&sdk)
        .create_db_snapshot()
        .db_instance_identifier(instance)
        .db_snapshot_identifier(&squatted)
        .send()
        .await
        .expect("foreign snapshot");
    let failed = run_state_machine(
        DEFINITION,
        &substitutions(),
        &json!({"scheduled_time": failing_time}),
    );
    assert!(
        !failed.succeeded,
        "execution should fail: {:#}",
        failed.outcome
    );
    assert_eq!(failed.outcome["error"], "BackupFailed");
    let states = failed.states();
    assert_eq!(
        states,
        [
            "ApplyDefaults",
            "MergeInput",
            "Snapshot",
            "NotifyFailure",
            "BackupFailed"
        ]
    );

    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let inbox = seed["alert_inbox_url"].as_str().expect("inbox");
    let mut notified = None;
    for _ in 0..10 {
        let received = sqs
            .receive_message()
            .queue_url(inbox)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive");
        notified = received
            .messages()
            .iter()
            .filter_map(|m| m.body())
            .find(|b| b.contains(&failing_time))
            .map(str::to_owned);
        if notified.is_some() {
            break;
        }
    }
    let notified = notified.expect("the failure notification reached the alert topic's subscriber");
    let message: Value = serde_json::from_str(&notified)
        .unwrap_or_else(|e| panic!("notification is not the state as JSON ({e}): {notified}"));
    assert_eq!(
        message["error"]["Error"],
        ErrorKind::SnapshotNotOwned.as_str()
    );
    assert!(
        message["error"]["Cause"]
            .as_str()
            .unwrap()
            .contains(&squatted)
    );
    assert!(
        manifest_absent(&sdk, bucket, &format!("manifests/{failing_run}.json")).await,
        "a run that took no snapshot writes no manifest"
    );

    // A step after the snapshots fails (the logical backup finds a manifest it cannot read): the
    // snapshots that were taken are still catalogued, with the failure, before the alert.
    s3(&sdk)
        .put_object()
        .bucket(bucket)
        .key(format!("logical/{late_failing_run}/manifest.json"))
        .body(br#"{"format": "not-a-logical-manifest"}"#.to_vec().into())
        .send()
        .await
        .expect("unreadable logical manifest");
    let late = run_state_machine(
        DEFINITION,
        &substitutions(),
        &json!({"scheduled_time": late_failing_time}),
    );
    assert!(!late.succeeded, "execution should fail: {:#}", late.outcome);
    assert_eq!(late.outcome["error"], "BackupFailed");
    let states = late.states();
    assert!(
        states.ends_with(&[
            "LogicalPath",
            "SnapshotsStarted?",
            "FailureDefaults",
            "MergeFailureDefaults",
            "CataloguePartialRun",
            "NotifyFailure",
            "BackupFailed"
        ]),
        "{states:?}"
    );
    let manifest = stored_json(&sdk, bucket, &format!("manifests/{late_failing_run}.json")).await;
    assert_eq!(
        manifest["database"]["snapshot_id"],
        format!("catalyst-dr-{instance}-{late_failing_run}").as_str()
    );
    assert_eq!(
        manifest["failure"]["Error"],
        ErrorKind::UnsupportedManifestFormat.as_str()
    );
    assert!(
        manifest["logical"].is_null() && !manifest["pruned"].is_null(),
        "{manifest:#}"
    );

    // The fan-out, as a large source takes it (asked for here): a read source restored to the
    // snapshot's instant by pitr-restore, the plan, a Map of batches, the manifest, teardown.
    take_base_backup().await;
    let fanout_time = catalyst_dr::input::format_time(now + time::Duration::seconds(3));
    let fanout_run = catalyst_dr::run_id::RunId::from_scheduled_time("t", &fanout_time)
        .expect("time")
        .stamp;
    let fanned = run_state_machine(
        DEFINITION,
        &substitutions(),
        &json!({"scheduled_time": fanout_time, "logical_path": "fan-out"}),
    );
    assert!(fanned.succeeded, "execution failed: {:#}", fanned.outcome);
    let output = &fanned.outcome["output"];
    assert_eq!(output["logical_choice"]["path"], "fan-out");
    assert_eq!(output["logical_choice"]["chosen_by"], "requested");
    let states = fanned.states();
    let fanout_states: Vec<&str> = states
        .iter()
        .copied()
        .skip_while(|s| *s != "LogicalFanOut?")
        .take_while(|s| *s != "WriteManifest")
        .filter(|s| !s.starts_with("WaitFor") && !s.starts_with("Check") && !s.ends_with('?'))
        .collect();
    assert_eq!(
        fanout_states,
        [
            "StartReadSourceWindowPolling",
            "StartReadSource",
            "StartReadSourcePolling",
            "ReadSourceCredentials",
            "PlanLogical",
            "BackupBatches",
            "BackupBatch",
            "FinishLogical",
            "TeardownReadSource"
        ],
        "{states:?}"
    );
    let batches = output["logical_plan"]["batches"]
        .as_array()
        .expect("batches")
        .len();
    assert!(batches >= 1, "{:#}", output["logical_plan"]);
    let logical_key = format!("logical/{fanout_run}/manifest.json");
    assert_eq!(output["logical"]["manifest_key"], logical_key.as_str());
    let fanned_manifest = stored_json(&sdk, bucket, &logical_key).await;
    let read_path = &fanned_manifest["read_path"];
    assert_eq!(read_path["kind"], "read-source", "{read_path:#}");
    assert_eq!(read_path["id"], format!("nightly-{fanout_run}").as_str());
    assert_eq!(read_path["batches"].as_u64(), Some(batches as u64));
    assert_eq!(
        fanned_manifest["instant"]["server_time"],
        output["read_source"]["restore_time"]
    );
    // The source was not written to between the two nights: the fan-out stored exactly what
    // the single path stored.
    let single = stored_json(&sdk, bucket, &format!("logical/{ok_run}/manifest.json")).await;
    let tables = |m: &Value| -> Vec<(Value, Value, Value)> {
        m["tables"]
            .as_array()
            .expect("tables")
            .iter()
            .map(|t| {
                (
                    t["name"].clone(),
                    t["rows"].clone(),
                    t["content_checksum"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(tables(&fanned_manifest), tables(&single));
    assert_eq!(output["verify"]["ok"], true, "{:#}", output["verify"]);
    assert_eq!(output["manifest"]["run_id"], fanout_run.as_str());
    // The read source is gone.
    assert_eq!(
        output["read_source_teardown"]["deleted"], true,
        "{:#}",
        output["read_source_teardown"]
    );

    // A fan-out that fails after its read source was restored (here the plan cannot be read):
    // the uploads are aborted, the read source torn down, the snapshots catalogued with the
    // failure, and the alert goes out.
    let broken_time = catalyst_dr::input::format_time(now + time::Duration::seconds(4));
    let broken_run = catalyst_dr::run_id::RunId::from_scheduled_time("t", &broken_time)
        .expect("time")
        .stamp;
    s3(&sdk)
        .put_object()
        .bucket(bucket)
        .key(format!("logical/{broken_run}/fanout/plan.json"))
        .body(b"not a plan".to_vec().into())
        .send()
        .await
        .expect("unreadable plan");
    let broken = run_state_machine(
        DEFINITION,
        &substitutions(),
        &json!({"scheduled_time": broken_time, "logical_path": "fan-out"}),
    );
    assert!(
        !broken.succeeded,
        "execution should fail: {:#}",
        broken.outcome
    );
    let states = broken.states();
    assert!(
        states.ends_with(&[
            "PlanLogical",
            "AbortLogicalFanout",
            "TeardownReadSourceAfterFailure",
            "SnapshotsStarted?",
            "FailureDefaults",
            "MergeFailureDefaults",
            "CataloguePartialRun",
            "NotifyFailure",
            "BackupFailed"
        ]),
        "{states:?}"
    );
    let manifest = stored_json(&sdk, bucket, &format!("manifests/{broken_run}.json")).await;
    assert_eq!(
        manifest["failure"]["Error"],
        ErrorKind::CorruptManifest.as_str(),
        "{manifest:#}"
    );
    assert!(manifest["logical"].is_null(), "{manifest:#}");
    // Nothing of the read source is left: a second teardown finds nothing to delete.
    let again = catalyst_dr_tests::invoke_lambda(
        "pitr-restore",
        &json!({"action": "teardown", "drill_id": format!("nightly-{broken_run}")}),
    )
    .await
    .expect("teardown");
    assert_eq!(again["deleted"], false, "{again:#}");
    assert!(
        manifest_absent(&sdk, bucket, &format!("logical/{broken_run}/manifest.json")).await,
        "no logical manifest for the failed fan-out"
    );
}

/// Every Lambda task of the state machines retries a function timeout or crash: all
/// actions are idempotent, and without the retry a timed-out nightly step skips WriteManifest
/// and goes straight to the failure path (a drill's, to teardown as failed).
#[test]
fn every_lambda_task_retries_timeouts() {
    for (file, min_tasks) in [
        ("nightly-backup", 6),
        ("pitr-drill", 8),
        ("quarterly-drill", 13),
        ("restore-test", 12),
        ("webhook-replay", 3),
    ] {
        let path = format!(
            "{}/../infra/statemachines/{file}.asl.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let definition: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("definition"))
                .expect("JSON");
        let tasks = lambda_tasks_retrying_timeouts(file, &definition["States"]);
        assert!(tasks >= min_tasks, "{file}: {tasks} Lambda tasks");
    }
}

fn lambda_tasks_retrying_timeouts(file: &str, states: &Value) -> usize {
    let mut tasks = 0;
    for (name, state) in states.as_object().expect("states") {
        let resource = state["Resource"].as_str().unwrap_or_default();
        if state["Type"] != "Task" || !resource.ends_with("FunctionArn}") {
            continue;
        }
        tasks += 1;
        let retried: Vec<&str> = state["Retry"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|r| r["ErrorEquals"].as_array().expect("ErrorEquals"))
            .filter_map(Value::as_str)
            .collect();
        for error in [
            "Sandbox.Timedout",
            "States.Timeout",
            "Lambda.Unknown",
            "Lambda.ServiceException",
        ] {
            assert!(
                retried.contains(&error),
                "{file}: {name} does not retry {error}: {retried:?}"
            );
        }
    }
    tasks
}

async fn manifest_absent(sdk: &aws_config::SdkConfig, bucket: &str, key: &str) -> bool {
    s3(sdk)
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .is_err()
}
