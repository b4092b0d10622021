//! Drill history against the local S3 endpoint: reports written by drill-validator are listed
//! newest first with their result, RTO, RPO and parity (`list-drills`), and each new report's
//! page draws the drills before it as a trend beside its timeline.

use catalyst_dr::drill::DrillValidator;
use catalyst_dr::drill::config::DrillConfig;
use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr_tests::{drill_config, local_aws, locked_bucket, s3, unique};
use serde_json::json;

fn validator(sdk: &aws_config::SdkConfig, bucket: &str) -> DrillValidator {
    // Reports and their listing touch no database.
    let config = DrillConfig {
        drill_kind: "quarterly".into(),
        ..drill_config(
            bucket,
            "catalyst-dr/test/unused",
            "catalyst-dr/test/unused-staging",
        )
    };
    DrillValidator::new(config, sdk)
}

/// The state machine's state of a drill that passed with this RTO, or failed in its smoke tests.
fn state(rto: f64, passed: bool) -> serde_json::Value {
    let mut state = json!({
        "started": {"at": "2026-11-26T03:00:00Z"},
        "baseline": {"captured_at": "2026-11-26T03:00:01Z"},
        "validation": {"passed": passed, "tables": [], "rto": {"seconds": rto}, "rpo": {"seconds": 0.0}, "completed_at": "2026-11-26T03:00:30Z"},
    });
    if !passed {
        state["error"] =
            json!({"Error": ErrorKind::SmokeFailed.as_str(), "Cause": "users missing"});
    }
    state
}

#[tokio::test]
async fn drills_are_listed_newest_first_and_each_report_shows_the_trend() {
    let sdk = local_aws().await;
    let bucket = unique("drill-history");
    locked_bucket(&s3(&sdk), &bucket).await;
    let validator = validator(&sdk, &bucket);

    for (i, (drill, rto, passed)) in [
        ("d1-q1", 40.0, true),
        ("d2-q2", 55.0, false),
        ("d3-q3", 30.0, true),
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            // S3 keeps an object's time to the second: reports a second apart are ordered by it.
            tokio::time::sleep(std::time::Duration::from_millis(1_050)).await;
        }
        validator
            .handle(json!({"action": "report", "drill_id": drill, "state": state(rto, passed)}))
            .await
            .expect("report");
    }

    let listed = validator
        .handle(json!({"action": "list-drills", "limit": 2}))
        .await
        .expect("list");
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["drill_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d3-q3", "d2-q2"], "{listed:#}");
    assert_eq!(listed[0]["rto_seconds"], 30.0);
    assert_eq!(
        (listed[0]["passed"].as_bool(), listed[1]["passed"].as_bool()),
        (Some(true), Some(false))
    );
    assert_eq!(listed[0]["kind"], "quarterly");
    assert!(
        listed[1]["failure"]
            .as_str()
            .unwrap()
            .contains(ErrorKind::SmokeFailed.as_str()),
        "{listed:#}"
    );

    // The last report's page draws all three drills, oldest on the left.
    let html = s3(&sdk)
        .get_object()
        .bucket(&bucket)
        .key("drills/d3-q3/report.html")
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let html = String::from_utf8(html.to_vec()).unwrap();
    assert_eq!(html.matches("<circle class=\"rto\"").count(), 3, "{html}");

    let err = validator
        .handle(json!({"action": "list-drills", "limit": 0}))
        .await
        .expect_err("limit 0");
    assert_eq!(err.error_type(), ErrorKind::InvalidInput, "{err}");
    // The parity fan-out's bad input names the field and writes nothing.
    for (event, field) in [
        (
            json!({"action": "parity-batch", "drill_id": "d3-q3"}),
            "batch",
        ),
        (
            json!({"action": "parity-batch", "drill_id": "d3-q3", "batch": -1}),
            "batch",
        ),
        // No plan stored for this drill.
        (
            json!({"action": "parity-batch", "drill_id": "d3-q3", "batch": 0}),
            "drill_id",
        ),
    ] {
        let err = validator.handle(event.clone()).await.expect_err("refused");
        assert_eq!(err.error_type(), ErrorKind::InvalidInput, "{event}: {err}");
        assert!(err.to_string().contains(field), "{event}: {err}");
    }
    let listed = s3(&sdk)
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("drills/d3-q3/parity")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0));
}
