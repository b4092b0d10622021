//! The monthly pitr-drill state machine on the local engine, executed by the ASL interpreter
//! against the functions served by `cargo lambda watch`: a healthy drill, and a drill whose smoke
//! tests fail and which still tears its staging cluster down.

use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr_tests::datagen::{self, GeneratorSpec};
use catalyst_dr_tests::{
    deployed_substitutions, empty_production_database, run_state_machine, seed, stack_var,
    take_base_backup, unique,
};
use serde_json::json;

const DEFINITION: &str = "infra/statemachines/pitr-drill.asl.json";

/// The template's DefinitionSubstitutions for the stack's samconfig environment.
fn substitutions() -> Vec<(String, String)> {
    deployed_substitutions("PitrDrillStateMachine")
}

fn staging_dir(target_id: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(stack_var("CATALYST_DR_STATE"))
        .join("staging")
        .join(target_id)
}

/// Both drills restore the stack's one configured source, so they run in one test, in order.
#[tokio::test]
async fn pitr_drill_passes_and_a_failing_smoke_test_still_tears_down() {
    let seed = seed();
    // The source starts empty, is base-backed-up, then gets its data: a restore to before the
    // data exists has no users, which the smoke tests catch.
    let source = empty_production_database().await;
    take_base_backup().await;
    let before_data: time::OffsetDateTime = source
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .expect("now")
        .get(0);
    let spec = GeneratorSpec {
        seed: 11,
        users: 30,
        subscriptions: 4,
        deliveries: 120,
        ..GeneratorSpec::default()
    };
    datagen::generate(&source, &spec).await.expect("generate");

    let drill = unique("ok").to_lowercase();
    let run = run_state_machine(
        DEFINITION,
        &substitutions(),
        &json!({"drill_id": drill, "target_time": null}),
    );
    assert!(run.succeeded, "drill failed: {:#}", run.outcome);
    let output = &run.outcome["output"]["result"];
    assert_eq!(run.outcome["output"]["report"]["passed"], true);
    assert_eq!(output["drill_id"], drill.as_str());
    assert_eq!(output["requested"], "latest");
    assert!(output["restore_point"].is_string());
    for timing in [
        "started_at",
        "available_at",
        "credentials_verified_at",
        "smoke_passed_at",
        "torn_down_at",
    ] {
        assert!(
            output["timings"][timing].is_string(),
            "{timing} missing: {output:#}"
        );
    }
    let users = output["smoke"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == "users-and-entitlements")
        .expect("users check");
    assert_eq!(users["data"]["users"], 30);
    assert!(
        !staging_dir(output["target_id"].as_str().unwrap()).exists(),
        "the staging cluster is gone"
    );

    let drill = unique("bad").to_lowercase();
    let target_time = catalyst_dr::input::format_time(before_data);
    let run = run_state_machine(
        DEFINITION,
        &substitutions(),
        &json!({"drill_id": drill, "target_time": target_time}),
    );
    assert!(!run.succeeded, "drill should fail: {:#}", run.outcome);
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
        !staging_dir(&format!("catalyst-dr-staging-{drill}")).exists(),
        "torn down after the failure"
    );

    // The report records the failure, and the alert went out.
    let sdk = catalyst_dr_tests::local_aws().await;
    let bucket = seed["bucket"].as_str().expect("bucket");
    let report = catalyst_dr_tests::s3(&sdk)
        .get_object()
        .bucket(bucket)
        .key(format!("drills/{drill}/report.md"))
        .send()
        .await
        .expect("report.md");
    let report = String::from_utf8(
        report
            .body
            .collect()
            .await
            .expect("body")
            .into_bytes()
            .to_vec(),
    )
    .expect("utf-8");
    assert!(
        report.contains("FAILED") && report.contains(ErrorKind::SmokeFailed.as_str()),
        "{report}"
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
            .any(|b| b.contains(&drill) && b.contains(ErrorKind::SmokeFailed.as_str()))
        {
            alerted = true;
            break;
        }
    }
    assert!(
        alerted,
        "the failed drill's report was published to the alert topic"
    );
}
