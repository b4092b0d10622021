//! The weekly restore-test state machine on the local engine, executed by the ASL interpreter
//! against the functions served by `cargo lambda watch`: the newest base backup (the local
//! engine's snapshot) and the newest logical backup restored into staging, both smoke-tested, the
//! logical copy checked against its manifest, torn down, reported; a test whose snapshot smoke
//! tests fail, and one whose logical backup disagrees with its manifest, each still tearing down,
//! reporting the failure and alerting.

use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr_tests::datagen::{self, GeneratorSpec};
use catalyst_dr_tests::{
    deployed_substitutions, empty_production_database, invoke_lambda, local_aws, run_state_machine,
    s3, seed, stack_var, stored_json, unique,
};
use serde_json::json;

const DEFINITION: &str = "infra/statemachines/restore-test.asl.json";

fn staging_dir(target_id: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(stack_var("CATALYST_DR_STATE"))
        .join("staging")
        .join(target_id)
}

async fn base_backup(scheduled_time: time::OffsetDateTime) -> String {
    let taken = invoke_lambda(
        "snapshot-trigger",
        &json!({"action": "base-backup", "scheduled_time": catalyst_dr::input::format_time(scheduled_time)}),
    )
    .await
    .expect("base backup");
    taken["id"].as_str().expect("base backup id").to_owned()
}

/// Both runs restore the stack's one configured source, so they run in one test, in order.
#[tokio::test]
async fn restore_test_passes_against_the_manifest_and_failing_ones_tear_down_and_alert() {
    let seed = seed();
    let sdk = local_aws().await;
    let bucket = seed["bucket"].as_str().expect("bucket");
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("valid");

    // A snapshot of the source while it is empty: its smoke tests must fail.
    let source = empty_production_database().await;
    let empty_snapshot = base_backup(now - time::Duration::seconds(2)).await;
    let spec = GeneratorSpec {
        seed: 41,
        users: 35,
        subscriptions: 4,
        deliveries: 150,
        ..GeneratorSpec::default()
    };
    datagen::generate(&source, &spec).await.expect("generate");
    // Tonight's backups: the snapshot and the logical backup.
    let snapshot = base_backup(now - time::Duration::seconds(1)).await;
    let logical = invoke_lambda(
        "snapshot-trigger",
        &json!({"action": "logical-backup", "scheduled_time": catalyst_dr::input::format_time(now - time::Duration::seconds(1))}),
    )
    .await
    .expect("logical backup");
    assert!(logical["run_id"].is_string(), "{logical:#}");

    let test_id = unique("rt").to_lowercase();
    let run = run_state_machine(
        DEFINITION,
        &deployed_substitutions("RestoreTestStateMachine"),
        &json!({"drill_id": test_id, "snapshot_id": null}),
    );
    assert!(run.succeeded, "restore test failed: {:#}", run.outcome);
    let output = &run.outcome["output"];
    assert_eq!(output["report"]["passed"], true, "{:#}", output["report"]);
    assert_eq!(output["report"]["parity_failures"], 0);
    assert_eq!(
        output["start"]["snapshot"]["snapshot_id"],
        snapshot.as_str(),
        "the newest backup snapshot"
    );
    assert_eq!(output["smoke"]["passed"], true);
    assert_eq!(output["logical_smoke"]["passed"], true);
    let users = output["smoke"]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "users-and-entitlements")
        .expect("users check");
    assert_eq!(users["data"]["users"], 35, "the snapshot holds the data");
    assert_eq!(output["logical"]["consistent"], true);
    assert_eq!(output["logical"]["reread"], true);
    // The load and the re-read ran as the Maps' batches, and finish stored its report beside
    // the backup.
    assert!(
        !output["reread_plan"]["batches"]
            .as_array()
            .expect("re-read batches")
            .is_empty()
    );
    let restore_id = output["logical_plan"]["restore_id"]
        .as_str()
        .expect("restore id");
    assert!(
        !output["logical_plan"]["batches"]
            .as_array()
            .expect("batches")
            .is_empty()
    );
    let stored_restore = stored_json(
        &sdk,
        bucket,
        &format!(
            "logical/{}/restore/{restore_id}.json",
            output["logical"]["run_id"].as_str().expect("run id")
        ),
    )
    .await;
    assert_eq!(stored_restore["consistent"], true);
    assert_eq!(stored_restore["tables"], output["logical"]["tables"]);
    let target_id = output["start"]["target_id"].as_str().expect("target");
    assert!(
        !staging_dir(target_id).exists(),
        "the staging cluster is gone"
    );

    // The report, locked like the drills', has every table's rows as the backup's manifest has them.
    let manifest_key = output["logical_backup"]["manifest_key"]
        .as_str()
        .expect("manifest key");
    let manifest = stored_json(&sdk, bucket, manifest_key).await;
    let report = stored_json(&sdk, bucket, &format!("drills/{test_id}/report.json")).await;
    assert_eq!(report["kind"], "restore-test");
    assert_eq!(report["summary"]["passed"], true);
    let tables = report["validation"]["tables"].as_array().expect("tables");
    let expected = manifest["tables"].as_array().expect("manifest tables");
    assert_eq!(tables.len(), expected.len(), "{report:#}");
    for table in expected {
        let name = format!(
            "{}.{}",
            table["schema"].as_str().unwrap(),
            table["name"].as_str().unwrap()
        );
        let reported = tables
            .iter()
            .find(|t| t["table"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} missing from the report"));
        assert_eq!(reported["restored_rows"], table["rows"], "{name}");
        assert_eq!(reported["baseline_rows"], table["rows"], "{name}");
        assert_eq!(reported["checksum_matches"], true, "{name}");
    }
    if manifest["run_id"] == logical["run_id"] {
        let users = tables
            .iter()
            .find(|t| t["table"] == "public.users")
            .expect("users");
        assert_eq!(users["restored_rows"], 35);
    }
    let head = s3(&sdk)
        .head_object()
        .bucket(bucket)
        .key(format!("drills/{test_id}/report.html"))
        .send()
        .await
        .expect("report.html");
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );

    // The empty snapshot: the smoke tests fail, staging is torn down, the report and alert say so.
    let test_id = unique("rtbad").to_lowercase();
    let run = run_state_machine(
        DEFINITION,
        &deployed_substitutions("RestoreTestStateMachine"),
        &json!({"drill_id": test_id, "snapshot_id": empty_snapshot}),
    );
    assert!(
        !run.succeeded,
        "restore test should fail: {:#}",
        run.outcome
    );
    assert_eq!(run.outcome["error"], "DrillFailed");
    let visited = run.states();
    let tail: Vec<&str> = visited.iter().rev().take(4).rev().copied().collect();
    assert_eq!(
        tail,
        [
            "SmokeTests",
            "TeardownAfterFailure",
            "ReportFailure",
            "DrillFailed"
        ],
        "{visited:?}"
    );
    assert!(
        !staging_dir(&format!("catalyst-dr-staging-{test_id}")).exists(),
        "torn down after the failure"
    );
    let report = stored_json(&sdk, bucket, &format!("drills/{test_id}/report.json")).await;
    assert_eq!(report["summary"]["passed"], false);
    assert!(
        report["summary"]["failure"]
            .as_str()
            .is_some_and(|f| f.contains(ErrorKind::SmokeFailed.as_str())),
        "{report:#}"
    );

    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let inbox = seed["alert_inbox_url"].as_str().expect("inbox");
    let mut alerted = false;
    for _ in 0..10 {
        let received = sqs
            .receive_message()
            .queue_url(inbox)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("receive");
        if received
            .messages()
            .iter()
            .filter_map(|m| m.body())
            .any(|b| b.contains(&test_id) && b.contains(ErrorKind::SmokeFailed.as_str()))
        {
            alerted = true;
            break;
        }
    }
    assert!(
        alerted,
        "the failed restore test was published to the alert topic"
    );
}
