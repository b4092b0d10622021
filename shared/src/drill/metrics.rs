//! The drill's numbers as a CloudWatch embedded-metric-format line: Lambda's log pipeline turns
//! it into metrics without an API call.

use super::report::ReportSummary;
use serde_json::json;
use time::OffsetDateTime;

pub const NAMESPACE: &str = "CatalystDR";

/// The dead man's number: days since a drill of `drill_kind` last passed.
pub fn overdue_line(drill_kind: &str, age_days: f64, now: OffsetDateTime) -> String {
    json!({
        "DrillKind": drill_kind,
        "DaysSinceLastPassedDrill": age_days,
        "_aws": {
            "Timestamp": (now.unix_timestamp_nanos() / 1_000_000) as i64,
            "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["DrillKind"]], "Metrics": [{"Name": "DaysSinceLastPassedDrill", "Unit": "None"}]}],
        },
    })
    .to_string()
}

pub fn emf_line(drill_kind: &str, summary: &ReportSummary, now: OffsetDateTime) -> String {
    let mut metrics = vec![
        json!({"Name": "DrillFailed", "Unit": "Count"}),
        json!({"Name": "ParityFailures", "Unit": "Count"}),
    ];
    let mut line = json!({
        "DrillKind": drill_kind,
        "drill_id": summary.drill_id,
        "DrillFailed": if summary.passed { 0 } else { 1 },
        "ParityFailures": summary.parity_failures,
    });
    for (name, value, unit) in [
        ("RTOSeconds", summary.rto_seconds, "Seconds"),
        ("RPOSeconds", summary.rpo_seconds, "Seconds"),
        (
            "DeliveriesReplayable",
            summary.deliveries_replayable.map(|v| v as f64),
            "Count",
        ),
    ] {
        if let Some(value) = value {
            metrics.push(json!({"Name": name, "Unit": unit}));
            line[name] = json!(value);
        }
    }
    line["_aws"] = json!({
        "Timestamp": (now.unix_timestamp_nanos() / 1_000_000) as i64,
        "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [["DrillKind"]], "Metrics": metrics}],
    });
    line.to_string()
}
