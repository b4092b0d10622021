//! The drill's numbers as CloudWatch embedded-metric-format lines ([`crate::metrics`]).

use super::report::ReportSummary;
use crate::metrics::{Metric, emf_line as line};
use serde_json::{Map, json};
use time::OffsetDateTime;

/// The dead man's number: days since a drill of `drill_kind` last passed.
pub fn overdue_line(drill_kind: &str, age_days: f64, now: OffsetDateTime) -> String {
    line(
        ("DrillKind", drill_kind),
        vec![Metric::new("DaysSinceLastPassedDrill", "None", age_days)],
        Map::new(),
        now,
    )
    .to_string()
}

pub fn emf_line(drill_kind: &str, summary: &ReportSummary, now: OffsetDateTime) -> String {
    let mut metrics = vec![
        Metric::new("DrillFailed", "Count", if summary.passed { 0 } else { 1 }),
        Metric::new("ParityFailures", "Count", summary.parity_failures),
    ];
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
            metrics.push(Metric::new(name, unit, value));
        }
    }
    let mut properties = Map::new();
    properties.insert("drill_id".into(), json!(summary.drill_id));
    line(("DrillKind", drill_kind), metrics, properties, now).to_string()
}
