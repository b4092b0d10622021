//! Every `AWS::Scheduler::Schedule` of infra/template.yaml, started as EventBridge Scheduler
//! starts it on its first night, for each samconfig environment: the state machine's definition
//! with the template's DefinitionSubstitutions, the target's Input verbatim (with Scheduler's
//! `<aws.scheduler.scheduled-time>` filled in), no execution name (so Step Functions names it with
//! a UUID), and the functions configured with the environment the template gives them under that
//! samconfig environment (infra/local/deployed.py).

use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr_tests::datagen::{self, GeneratorSpec};
use catalyst_dr_tests::{
    LambdaWatch, deployed, empty_production_database, invoke_lambda, local_aws,
    run_state_machine_at, s3, seed, take_base_backup,
};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_schedule_succeeds_on_its_first_run_for_dev_and_prod() {
    let seed = seed();
    let sdk = local_aws().await;
    let bucket = seed["bucket"].as_str().expect("bucket");
    // The source as a site has it: data, and the automated backup PITR restores from.
    let source = empty_production_database().await;
    let spec = GeneratorSpec {
        seed: 21,
        users: 60,
        subscriptions: 5,
        deliveries: 400,
        dead_letter_share: 0.05,
        ..GeneratorSpec::default()
    };
    datagen::generate(&source, &spec).await.expect("generate");
    take_base_backup().await;

    // Distinct scheduled times per environment: each is a first night.
    let minute = time::OffsetDateTime::now_utc()
        .replace_second(0)
        .expect("valid")
        .replace_nanosecond(0)
        .expect("valid");
    let mut ran = Vec::new();
    for (offset, config_env) in ["dev", "prod"].into_iter().enumerate() {
        let watch = LambdaWatch::start(config_env);
        let schedules = deployed("schedules", config_env);
        let schedules = schedules.as_array().expect("schedules");
        assert_eq!(schedules.len(), 7, "{schedules:#?}");
        let scheduled_time = catalyst_dr::input::format_time(
            minute + time::Duration::minutes(10 * offset as i64 + 17),
        );
        for schedule in schedules {
            let name = schedule["schedule"].as_str().expect("schedule");
            assert_eq!(schedule["state"], "ENABLED", "{name}");
            assert!(
                schedule["dead_letter_arn"].is_string(),
                "{name}: a start Scheduler cannot make must land in a dead-letter queue"
            );
            // Scheduler substitutes its context attributes in the Input, nothing else.
            let input_text = schedule["input"]
                .as_str()
                .expect("input")
                .replace("<aws.scheduler.scheduled-time>", &scheduled_time);
            let input: Value = serde_json::from_str(&input_text)
                .unwrap_or_else(|e| panic!("{name}: Input is not JSON ({e})"));
            if let Some(function) = schedule["function"].as_str() {
                // A Lambda target (the dead man's checks of the drills and the restore test): the
                // Input is the event. Those of this environment ran before it, so none is overdue.
                let url = format!(
                    "{}/2015-03-31/functions/{function}/invocations",
                    watch.endpoint
                );
                let response = catalyst_dr::tls::http_client_builder()
                    .build()
                    .expect("HTTP client")
                    .post(&url)
                    .json(&input)
                    .send()
                    .await
                    .expect("invoke");
                let function_error = response.headers().contains_key("x-amz-function-error");
                let body: Value = response.json().await.expect("JSON answer");
                assert!(
                    !function_error && body.get("errorType").is_none(),
                    "{config_env} {name}: {body:#}"
                );
                assert!(
                    body["age_days"].as_f64().expect("age") < 1.0,
                    "{config_env} {name}: {body:#}"
                );
                assert!(
                    body["last_passed"]["drill_id"].is_string(),
                    "{config_env} {name}: a drill of this kind passed: {body:#}"
                );
                ran.push(format!("{config_env}/{name}"));
                continue;
            }
            let substitutions: Vec<(String, String)> = schedule["substitutions"]
                .as_object()
                .expect("substitutions")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_owned()))
                .collect();
            let run = run_state_machine_at(
                schedule["definition"].as_str().expect("definition"),
                &substitutions,
                &input,
                &watch.endpoint,
            );
            assert!(run.succeeded, "{config_env} {name}: {:#}", run.outcome);
            let output = &run.outcome["output"];
            match schedule["state_machine"].as_str().expect("machine") {
                "NightlyBackupStateMachine" => {
                    let run_id = output["manifest"]["run_id"].as_str().expect("run id");
                    let stored = s3(&sdk)
                        .get_object()
                        .bucket(bucket)
                        .key(format!("manifests/{run_id}.json"))
                        .send()
                        .await
                        .expect("manifest");
                    let manifest: Value = serde_json::from_slice(
                        &stored.body.collect().await.expect("body").into_bytes(),
                    )
                    .expect("JSON");
                    assert!(manifest["failure"].is_null(), "{manifest:#}");
                    assert_eq!(
                        manifest["schedule"],
                        format!("catalyst-dr-{config_env}-nightly-backup").as_str()
                    );
                }
                "PitrDrillStateMachine"
                | "QuarterlyDrillStateMachine"
                | "RestoreTestStateMachine" => {
                    assert_eq!(
                        output["report"]["passed"], true,
                        "{config_env} {name}: {:#}",
                        output["report"]
                    );
                    let drill_id = output["report"]["drill_id"].as_str().expect("drill id");
                    assert!(
                        drill_id.len() <= catalyst_dr::drill_id::MAX_LEN,
                        "{drill_id}"
                    );
                    s3(&sdk)
                        .head_object()
                        .bucket(bucket)
                        .key(format!("drills/{drill_id}/report.json"))
                        .send()
                        .await
                        .expect("report");
                }
                other => {
                    panic!("{name} targets {other}, which this test does not know how to check")
                }
            }
            if schedule["state_machine"] == "RestoreTestStateMachine" {
                // Both paths: the logical copy matched its manifest and passed its smoke tests.
                assert_eq!(output["logical"]["consistent"], true, "{config_env}");
                assert_eq!(output["logical_smoke"]["passed"], true, "{config_env}");
            }
            if schedule["state_machine"] == "QuarterlyDrillStateMachine" {
                // dev's site has a staging queue, prod's keeps the default (none): flushed, or
                // skipped and reported as such.
                // (`purge-in-progress`: another drill purged the queue within SQS's 60 seconds.)
                let status = output["flush"]["status"].as_str().unwrap_or_default();
                if schedule["substitutions"]["StagingQueueUrl"] == "" {
                    assert_eq!(status, "skipped", "{config_env}: {:#}", output["flush"]);
                } else {
                    assert!(
                        matches!(status, "purged" | "purge-in-progress"),
                        "{config_env}: {:#}",
                        output["flush"]
                    );
                }
            }
            ran.push(format!("{config_env}/{name}"));
        }
    }
    assert_eq!(ran.len(), 14, "{ran:?}");
}

/// The dead man's check fails once the last passed drill of its kind is older than allowed, and
/// its first run, with no drill yet, starts the clock instead of failing.
#[tokio::test]
async fn the_drill_overdue_check_fails_past_its_limit() {
    let seed = seed();
    let sdk = local_aws().await;
    let bucket = seed["bucket"].as_str().expect("bucket");
    let kind = catalyst_dr_tests::unique("k").to_lowercase();

    let first = invoke_lambda(
        "drill-validator",
        &serde_json::json!({"action": "overdue", "kind": kind, "max_age_days": 1}),
    )
    .await
    .expect("first check");
    assert!(first["age_days"].as_f64().expect("age") < 0.1, "{first:#}");
    assert!(
        first["last_passed"]["drill_id"].is_null(),
        "no drill has passed: {first:#}"
    );

    let long_ago =
        catalyst_dr::input::format_time(time::OffsetDateTime::now_utc() - time::Duration::days(40));
    let record = serde_json::json!({"kind": kind, "drill_id": "q-long-ago", "passed_at": long_ago});
    s3(&sdk)
        .put_object()
        .bucket(bucket)
        .key(format!("drills/_last-passed/{kind}.json"))
        .body(record.to_string().into_bytes().into())
        .send()
        .await
        .expect("an old record");
    let err = invoke_lambda(
        "drill-validator",
        &serde_json::json!({"action": "overdue", "kind": kind, "max_age_days": 33}),
    )
    .await
    .expect_err("overdue");
    assert_eq!(
        err["errorType"],
        ErrorKind::DrillOverdue.as_str(),
        "{err:#}"
    );
    let ok = invoke_lambda(
        "drill-validator",
        &serde_json::json!({"action": "overdue", "kind": kind, "max_age_days": 45}),
    )
    .await
    .expect("within the limit");
    assert_eq!(ok["last_passed"]["drill_id"], "q-long-ago");
}

/// Parameter sets a deploy would fail on half-way, or run without anyone hearing of a failure,
/// are refused by the template's Rules before anything is created (deployed.py evaluates them as
/// CloudFormation does).
#[test]
fn the_template_refuses_parameters_that_would_fail_the_deploy_or_alert_nobody() {
    // The S3 gateway endpoint needs the route tables while the endpoints are on (the default).
    let err = catalyst_dr_tests::deployed_with("dev", &["PrivateRouteTableIds="])
        .expect_err("no route tables");
    assert!(
        err.contains("EndpointsNeedRouteTables") && err.contains("PrivateRouteTableIds"),
        "{err}"
    );
    catalyst_dr_tests::deployed_with(
        "dev",
        &["PrivateRouteTableIds=", "CreateVpcEndpoints=false"],
    )
    .expect("behind a NAT");
    // prod needs someone to receive its alarms.
    let err = catalyst_dr_tests::deployed_with("prod", &["AlarmEmail="])
        .expect_err("no alert subscription");
    assert!(
        err.contains("ProdHasAlertSubscription") && err.contains("AlarmEmail"),
        "{err}"
    );
    catalyst_dr_tests::deployed_with("dev", &["AlarmEmail="]).expect("dev may go without");
    // DR copies need their bucket and key, in another region than the stack's.
    let err = catalyst_dr_tests::deployed_with("dev", &["DrBucketName="])
        .expect_err("a DR region without its bucket");
    assert!(
        err.contains("DrNeedsBucketAndKey") && err.contains("DrBucketName"),
        "{err}"
    );
    let err = catalyst_dr_tests::deployed_with("dev", &["DrRegion=us-east-1"])
        .expect_err("the DR region is the stack's");
    assert!(err.contains("DrRegion must differ"), "{err}");
    // Without DR, the function is told nothing about it and the nightly run skips the copies.
    let env = catalyst_dr_tests::deployed_with(
        "dev",
        &["DrRegion=", "DrBucketName=", "DrKmsKeyArn=", "DrAccountId="],
    )
    .expect("no DR copies");
    assert!(!env.to_string().contains("DR_REGION"), "{env}");
}
