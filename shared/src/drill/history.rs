//! Drill history: every drill's report in the bucket, newest first, with its result, RTO, RPO
//! and parity (`list-drills`), and the trend the report page draws beside a drill's timeline.

use crate::aws_error::AwsCallError;
use crate::object_store::ObjectStore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One drill, as its locked `report.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub drill_id: String,
    /// `quarterly`, `monthly`, ... (absent in reports written before it was recorded).
    pub kind: Option<String>,
    /// When the report was written.
    pub reported_at: Option<String>,
    pub passed: bool,
    pub failure: Option<String>,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    pub parity_failures: Option<u64>,
    pub report_key: String,
}

impl DrillRecord {
    /// A report that cannot be read counts as a failed drill: its result is unknown.
    fn from_report(key: &str, reported_at: Option<String>, body: Option<&[u8]>) -> Self {
        let report: Option<Value> = body.and_then(|b| serde_json::from_slice(b).ok());
        let summary = report.as_ref().and_then(|r| r.get("summary"));
        let drill_id = key
            .trim_end_matches("/report.json")
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        Self {
            drill_id,
            kind: report
                .as_ref()
                .and_then(|r| r.get("kind"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            reported_at,
            passed: summary
                .and_then(|s| s.get("passed"))
                .and_then(Value::as_bool)
                == Some(true),
            failure: match summary {
                Some(s) => s.get("failure").and_then(Value::as_str).map(str::to_owned),
                None => Some("the report could not be read".to_owned()),
            },
            rto_seconds: summary
                .and_then(|s| s.get("rto_seconds"))
                .and_then(Value::as_f64),
            rpo_seconds: summary
                .and_then(|s| s.get("rpo_seconds"))
                .and_then(Value::as_f64),
            parity_failures: summary
                .and_then(|s| s.get("parity_failures"))
                .and_then(Value::as_u64),
            report_key: key.to_owned(),
        }
    }
}

/// The newest `limit` drills under `prefix`, newest first.
pub async fn list_drills(
    objects: &dyn ObjectStore,
    prefix: &str,
    limit: usize,
) -> Result<Vec<DrillRecord>, AwsCallError> {
    let mut reports: Vec<_> = objects
        .list(prefix)
        .await?
        .into_iter()
        .filter(|o| o.key.ends_with("/report.json"))
        .collect();
    reports.sort_by(|a, b| {
        b.last_modified
            .cmp(&a.last_modified)
            .then_with(|| b.key.cmp(&a.key))
    });
    let mut records = Vec::with_capacity(limit.min(reports.len()));
    for object in reports.into_iter().take(limit) {
        let body = objects.get(&object.key).await?;
        records.push(DrillRecord::from_report(
            &object.key,
            object.last_modified.map(crate::input::format_time),
            body.as_deref(),
        ));
    }
    Ok(records)
}

/// An SVG chart of RTO and RPO over `records` (oldest on the left), for the report page.
pub fn trend_svg(records: &[DrillRecord]) -> String {
    let points: Vec<&DrillRecord> = records.iter().rev().collect();
    let max = points
        .iter()
        .flat_map(|r| [r.rto_seconds, r.rpo_seconds])
        .flatten()
        .fold(1.0_f64, f64::max);
    let (width, height, pad) = (420.0, 120.0, 10.0);
    let x = |i: usize| {
        if points.len() < 2 {
            width / 2.0
        } else {
            pad + i as f64 * (width - 2.0 * pad) / (points.len() - 1) as f64
        }
    };
    let y = |v: f64| height - pad - v / max * (height - 2.0 * pad);
    let line = |value: fn(&DrillRecord) -> Option<f64>, class: &str| {
        let points: Vec<(f64, f64, String)> = points
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                value(r).map(|v| {
                    (
                        x(i),
                        y(v),
                        format!("{}: {} {v:.1} s", r.drill_id, class.to_uppercase()),
                    )
                })
            })
            .collect();
        let coords: Vec<String> = points
            .iter()
            .map(|(cx, cy, _)| format!("{cx:.1},{cy:.1}"))
            .collect();
        // Each point names its drill and value on hover.
        let dots: String = points
            .iter()
            .map(|(cx, cy, title)| format!("<circle class=\"{class}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3\"><title>{}</title></circle>", super::report::escape(title)))
            .collect();
        format!(
            "<polyline class=\"{class}\" points=\"{}\"/>{dots}",
            coords.join(" ")
        )
    };
    format!(
        "<svg id=\"trend\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"RTO and RPO of the last {} drills; highest {max:.1} s\">{}{}</svg>",
        points.len(),
        line(|r| r.rto_seconds, "rto"),
        line(|r| r.rpo_seconds, "rpo"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_read_back_and_an_unreadable_one_counts_as_failed() {
        let body = br#"{"kind": "quarterly", "summary": {"passed": true, "failure": null, "rto_seconds": 4.5, "rpo_seconds": 0.0, "parity_failures": 0}}"#;
        let record = DrillRecord::from_report(
            "drills/q4-2026/report.json",
            Some("2026-11-26T03:10:00Z".into()),
            Some(body),
        );
        assert_eq!(
            (
                record.drill_id.as_str(),
                record.kind.as_deref(),
                record.passed,
                record.rto_seconds
            ),
            ("q4-2026", Some("quarterly"), true, Some(4.5))
        );
        let broken =
            DrillRecord::from_report("drills/q3-2026/report.json", None, Some(b"{not json"));
        assert!(!broken.passed);
        assert_eq!(
            broken.failure.as_deref(),
            Some("the report could not be read")
        );
    }

    #[test]
    fn the_trend_draws_one_point_per_drill_oldest_first() {
        let record = |id: &str, rto: f64| DrillRecord {
            drill_id: id.into(),
            kind: None,
            reported_at: None,
            passed: true,
            failure: None,
            rto_seconds: Some(rto),
            rpo_seconds: Some(0.0),
            parity_failures: Some(0),
            report_key: String::new(),
        };
        let svg = trend_svg(&[record("new", 10.0), record("old", 5.0)]);
        assert!(svg.contains("points=\"10.0,60.0 410.0,10.0\""), "{svg}");
        assert_eq!(svg.matches("<circle class=\"rto\"").count(), 2);
    }
}
