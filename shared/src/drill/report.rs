//! The drill report: JSON for machines, Markdown for the incident ticket, and a self-contained
//! HTML page with the drill's timeline and the parity table.

use super::history::{DrillRecord, trend_svg};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportSummary {
    pub drill_id: String,
    pub passed: bool,
    /// The failing step's error, when a step failed.
    pub failure: Option<String>,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<f64>,
    pub parity_failures: u64,
    /// Dead-lettered deliveries the replay plan found on the restored copy.
    pub deliveries_replayable: Option<u64>,
    pub keys: Vec<String>,
}

pub struct Rendered {
    pub json: Value,
    pub markdown: String,
    pub html: String,
    pub summary: ReportSummary,
}

/// The drill's steps in order: label, and where the state machine's state keeps its time.
const STEPS: &[(&str, &str, &str)] = &[
    ("Baseline captured", "baseline", "captured_at"),
    ("Restore started", "start", "started_at"),
    ("Staging available", "status", "checked_at"),
    ("Credentials rotated", "credentials", "verified_at"),
    ("Staging queue flushed", "flush", "completed_at"),
    ("Smoke tests passed", "smoke", "completed_at"),
    ("Replay planned (dry run)", "plan", "until"),
    ("Parity validated", "validation", "completed_at"),
    ("Staging torn down", "teardown", "completed_at"),
];

/// The kind of the weekly restore test: a snapshot and a logical backup restored into staging,
/// checked against the backup's manifest rather than a baseline.
pub const RESTORE_TEST_KIND: &str = "restore-test";

/// The restore test's steps, as [`STEPS`] lists the drills'.
const RESTORE_TEST_STEPS: &[(&str, &str, &str)] = &[
    ("Snapshot restore started", "start", "started_at"),
    ("Staging available", "status", "checked_at"),
    ("Credentials rotated", "credentials", "verified_at"),
    ("Smoke tests passed (snapshot)", "smoke", "completed_at"),
    (
        "Staging database created",
        "staging_database",
        "completed_at",
    ),
    ("Logical backup restored", "logical", "completed_at"),
    (
        "Smoke tests passed (logical)",
        "logical_smoke",
        "completed_at",
    ),
    ("Staging torn down", "teardown", "completed_at"),
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    pub step: String,
    /// When the step finished.
    pub at: Option<String>,
    /// Seconds since the drill started, when the step finished.
    pub offset_seconds: Option<f64>,
    /// Seconds since the drill started, when the step began: the end of the step reached before
    /// it (the state machine runs them one after another), or the drill's start.
    pub start_offset_seconds: Option<f64>,
}

fn time_at(state: &Value, step: &str, field: &str) -> Option<OffsetDateTime> {
    state
        .get(step)?
        .get(field)?
        .as_str()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
}

pub fn timeline(state: &Value) -> Vec<TimelineEntry> {
    timeline_of(state, STEPS)
}

fn timeline_of(state: &Value, steps: &[(&str, &str, &str)]) -> Vec<TimelineEntry> {
    // The state machine records its start at `started.at` (the execution's start time).
    let start = state
        .pointer("/started/at")
        .and_then(Value::as_str)
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
    let first = start.or_else(|| steps.iter().find_map(|(_, s, f)| time_at(state, s, f)));
    let mut previous_end = 0.0_f64;
    steps
        .iter()
        .map(|(label, step, field)| {
            let at = time_at(state, step, field);
            let offset_seconds = at.zip(first).map(|(a, f)| (a - f).as_seconds_f64());
            let start_offset_seconds = offset_seconds.map(|end| previous_end.min(end));
            if let Some(end) = offset_seconds {
                previous_end = previous_end.max(end);
            }
            TimelineEntry {
                step: (*label).to_owned(),
                at: at.map(crate::input::format_time),
                offset_seconds,
                start_offset_seconds,
            }
        })
        .collect()
}

/// Escapes text for HTML and SVG.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn failure_of(state: &Value) -> Option<String> {
    let error = state.get("error")?;
    let name = error
        .get("Error")
        .and_then(Value::as_str)
        .unwrap_or("Error");
    let cause = error.get("Cause").and_then(Value::as_str).unwrap_or("");
    // A Lambda error's cause is its error document as JSON text.
    let message = serde_json::from_str::<Value>(cause)
        .ok()
        .and_then(|c| {
            c.get("errorMessage")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| cause.to_owned());
    Some(format!("{name}: {message}"))
}

/// Renders the report of drill `drill_id` of `kind` from the state machine's `state`, with the
/// drills before it (`past`, newest first) drawn as a trend beside its timeline.
/// The restore test's parity in the shape of a drill's validation: every table of the logical
/// restore against the backup's manifest (rows and content checksum), passed when the restore is
/// consistent and both smoke tests passed. None until the logical restore has run.
fn restore_test_validation(state: &Value) -> Option<Value> {
    let logical = state.get("logical")?;
    let tables: Vec<Value> = logical
        .get("tables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| {
            let table = format!(
                "{}.{}",
                t["schema"].as_str().unwrap_or(""),
                t["name"].as_str().unwrap_or("")
            );
            serde_json::json!({
                "table": table,
                "baseline_rows": t["rows_expected"],
                "restored_rows": t["rows"],
                "checksum_matches": t["content_checksum"] == t["content_checksum_expected"],
                "written_after_baseline": 0,
                "passed": t["ok"] == Value::Bool(true),
            })
        })
        .collect();
    let passed = |pointer: &str| state.pointer(pointer).and_then(Value::as_bool) == Some(true);
    Some(serde_json::json!({
        "passed": passed("/logical/consistent") && passed("/smoke/passed") && passed("/logical_smoke/passed"),
        "tables": tables,
        "mismatches": logical.get("mismatches"),
        "manifest_key": logical.get("manifest_key"),
        "restore_point": state.pointer("/start/restore_time"),
        "snapshot_id": state.pointer("/start/snapshot/snapshot_id"),
    }))
}

fn seconds_between(state: &Value, from: &str, to: &str) -> Option<f64> {
    let at = |pointer: &str| {
        state
            .pointer(pointer)
            .and_then(Value::as_str)
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    };
    Some((at(to)? - at(from)?).as_seconds_f64())
}

pub fn render(drill_id: &str, kind: &str, state: &Value, past: &[DrillRecord]) -> Rendered {
    let restore_test = kind == RESTORE_TEST_KIND;
    let synthesized = if restore_test {
        restore_test_validation(state)
    } else {
        None
    };
    let validation = state.get("validation").or(synthesized.as_ref());
    let tables: Vec<Value> = validation
        .and_then(|v| v.get("tables"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let parity_failures = tables
        .iter()
        .filter(|t| t.get("passed") != Some(&Value::Bool(true)))
        .count() as u64;
    let failure = failure_of(state);
    // A drill without a parity step (the monthly PITR drill) passes on its smoke tests.
    let validation_passed = match validation {
        Some(v) => v.get("passed").and_then(Value::as_bool) == Some(true),
        // A restore test without its logical restore has not passed.
        None => {
            !restore_test && state.pointer("/smoke/passed").and_then(Value::as_bool) == Some(true)
        }
    };
    let summary = ReportSummary {
        drill_id: drill_id.to_owned(),
        passed: failure.is_none() && validation_passed,
        failure: failure
            .clone()
            .or_else(|| (!validation_passed).then(|| "validation did not pass".to_owned())),
        // A restore test's RTO: from its start to the snapshot's smoke tests passed.
        rto_seconds: validation
            .and_then(|v| v.pointer("/rto/seconds"))
            .and_then(Value::as_f64)
            .or_else(|| {
                restore_test
                    .then(|| seconds_between(state, "/started/at", "/smoke/completed_at"))
                    .flatten()
            }),
        rpo_seconds: validation
            .and_then(|v| v.pointer("/rpo/seconds"))
            .and_then(Value::as_f64),
        parity_failures,
        deliveries_replayable: state.pointer("/plan/deliveries").and_then(Value::as_u64),
        keys: Vec::new(),
    };
    let steps = timeline_of(
        state,
        if restore_test {
            RESTORE_TEST_STEPS
        } else {
            STEPS
        },
    );
    let current = DrillRecord {
        drill_id: drill_id.to_owned(),
        kind: Some(kind.to_owned()),
        reported_at: None,
        passed: summary.passed,
        failure: summary.failure.clone(),
        rto_seconds: summary.rto_seconds,
        rpo_seconds: summary.rpo_seconds,
        parity_failures: Some(summary.parity_failures),
        report_key: String::new(),
    };
    let trend: Vec<DrillRecord> = std::iter::once(current)
        .chain(past.iter().filter(|r| r.drill_id != drill_id).cloned())
        .collect();
    let json = serde_json::json!({
        "format": "catalyst-dr/drill-report/v1",
        "drill_id": drill_id,
        "kind": kind,
        "summary": summary,
        "timeline": steps,
        "validation": validation,
        "smoke": state.pointer("/smoke/checks"),
        "replay_plan": state.get("plan"),
        "flush": state.get("flush"),
        "restore": state.get("start"),
        "baseline": state.get("baseline"),
        "logical_backup": state.get("logical_backup"),
        "logical_restore": state.get("logical"),
        "logical_smoke": state.pointer("/logical_smoke/checks"),
    });
    let labels = if restore_test {
        Labels::RESTORE_TEST
    } else {
        Labels::DRILL
    };
    let markdown = markdown(&summary, &steps, validation, state, &labels);
    let html = html(&summary, &steps, validation, state, &trend, &labels);
    Rendered {
        json,
        markdown,
        html,
        summary,
    }
}

fn fmt_seconds(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |s| format!("{s:.1} s"))
}

fn objective_line(validation: Option<&Value>, key: &str) -> String {
    let Some(o) = validation.and_then(|v| v.get(key)) else {
        return "—".into();
    };
    let seconds = o.get("seconds").and_then(Value::as_f64).unwrap_or(0.0);
    let objective = o
        .get("objective_seconds")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let verdict = if o.get("passed") == Some(&Value::Bool(true)) {
        "met"
    } else {
        "MISSED"
    };
    format!("{seconds:.1} s (objective {objective} s: {verdict})")
}

/// What a report calls itself and what its parity is measured against.
struct Labels {
    title: &'static str,
    parity: &'static str,
    expected_rows: &'static str,
}

impl Labels {
    const DRILL: Self = Self {
        title: "Restore drill",
        parity: "Baseline parity",
        expected_rows: "baseline rows",
    };
    const RESTORE_TEST: Self = Self {
        title: "Restore test",
        parity: "Parity against the backup manifest",
        expected_rows: "manifest rows",
    };
}

/// The cache's lines: what was compared and the flush, or why the cache was left out.
fn cache_summary(validation: Option<&Value>) -> String {
    let Some(v) = validation else {
        return "—".into();
    };
    match v.get("cache").filter(|c| !c.is_null()) {
        None => "left out (CACHE_ENGINE is none)".into(),
        Some(c) => {
            let p = &c["parity"];
            format!(
                "{}: snapshot {} restored as {}; persistent keys {} of {}{}; flush {} ({} queue keys left)",
                if c["passed"] == Value::Bool(true) {
                    "pass"
                } else {
                    "FAIL"
                },
                c["snapshot_id"].as_str().unwrap_or("—"),
                c["staging_target_id"].as_str().unwrap_or("—"),
                p["restored_persistent_keys"],
                p["baseline_persistent_keys"],
                if c["exact_baseline"] == Value::Bool(true) {
                    " (baseline read at the snapshot's instant)"
                } else {
                    " (baseline read just before the snapshot was requested)"
                },
                c["flush_status"].as_str().unwrap_or("—"),
                c["queue_keys_after_flush"],
            )
        }
    }
}

/// One row per queue key pattern: keys and total length, baseline and restored, and the first
/// differing keys.
fn cache_rows(validation: Option<&Value>) -> Vec<[String; 5]> {
    validation
        .and_then(|v| v.pointer("/cache/parity/patterns"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let differences: Vec<&str> = p["differences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            [
                p["pattern"].as_str().unwrap_or("").to_owned(),
                format!("{} / {}", p["baseline_keys"], p["restored_keys"]),
                format!("{} / {}", p["baseline_length"], p["restored_length"]),
                if differences.is_empty() {
                    "none".to_owned()
                } else {
                    differences.join("; ")
                },
                if p["passed"] == Value::Bool(true) {
                    "pass".to_owned()
                } else {
                    "FAIL".to_owned()
                },
            ]
        })
        .collect()
}

fn markdown(
    summary: &ReportSummary,
    steps: &[TimelineEntry],
    validation: Option<&Value>,
    state: &Value,
    labels: &Labels,
) -> String {
    let mut out = String::new();
    let verdict = if summary.passed { "PASSED" } else { "FAILED" };
    out.push_str(&format!(
        "## {} {}: {verdict}\n\n",
        labels.title, summary.drill_id
    ));
    if let Some(failure) = &summary.failure {
        out.push_str(&format!("**Failure:** {failure}\n\n"));
    }
    out.push_str(&format!(
        "- RPO: {}\n- RTO (drill start to smoke tests passed): {}\n",
        objective_line(validation, "rpo"),
        objective_line(validation, "rto")
    ));
    if let Some(v) = validation {
        let read = match state.pointer("/baseline/path").and_then(Value::as_str) {
            Some("fan-out") => " (the source read by a Map in a snapshot held open for it)",
            _ => "",
        };
        out.push_str(&format!(
            "- Baseline instant: {}{read}; restore point: {}\n",
            v.get("baseline_instant")
                .and_then(Value::as_str)
                .unwrap_or("—"),
            v.get("restore_point")
                .and_then(Value::as_str)
                .unwrap_or("—")
        ));
        if let Some(queue) = v.get("queue") {
            out.push_str(&format!(
                "- Staging queue: {}\n",
                queue.get("detail").and_then(Value::as_str).unwrap_or("—")
            ));
        }
    }
    out.push_str(&format!("- Cache: {}\n", cache_summary(validation)));
    if let Some(plan) = state.get("plan") {
        out.push_str(&format!(
            "- Webhook replay plan (dry run on staging): {} dead-lettered deliveries over {} endpoints\n",
            plan.get("deliveries").map_or("—".into(), |t| t.to_string()),
            plan.get("endpoints").map_or("—".into(), |t| t.to_string())
        ));
    }
    out.push_str("\n### Timeline\n\n| step | at | since start |\n|---|---|---|\n");
    for s in steps {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            s.step,
            s.at.as_deref().unwrap_or("—"),
            fmt_seconds(s.offset_seconds)
        ));
    }
    out.push_str(&format!(
        "\n### {}\n\n| table | {} | restored rows | checksum | written after baseline | result |\n|---|---|---|---|---|---|\n",
        labels.parity, labels.expected_rows
    ));
    for t in validation
        .and_then(|v| v.get("tables"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            t["table"].as_str().unwrap_or(""),
            t["baseline_rows"],
            t["restored_rows"],
            if t["checksum_matches"] == Value::Bool(true) {
                "match"
            } else {
                "DIFFERS"
            },
            t["written_after_baseline"],
            if t["passed"] == Value::Bool(true) {
                "pass"
            } else {
                "FAIL"
            }
        ));
    }
    let cache = cache_rows(validation);
    if !cache.is_empty() {
        out.push_str("\n### Cache parity (queue keys)\n\n| pattern | keys (baseline / restored) | total length (baseline / restored) | differences | result |\n|---|---|---|---|---|\n");
        for [pattern, keys, length, differences, result] in &cache {
            out.push_str(&format!(
                "| {pattern} | {keys} | {length} | {differences} | {result} |\n"
            ));
        }
    }
    if let Some(checks) = state.pointer("/smoke/checks").and_then(Value::as_array) {
        out.push_str("\n### Smoke tests\n\n");
        for c in checks {
            let mark = if c["passed"] == Value::Bool(true) {
                "pass"
            } else {
                "FAIL"
            };
            out.push_str(&format!(
                "- {} — {}: {}\n",
                mark,
                c["name"].as_str().unwrap_or(""),
                c["detail"].as_str().unwrap_or("")
            ));
        }
    }
    out
}

/// The trend of the last drills, this one on the right; a first drill has nothing to compare.
fn trend_section(trend: &[DrillRecord]) -> String {
    if trend.len() < 2 {
        return "<p>This is the first drill recorded; the next report compares with it.</p>"
            .to_owned();
    }
    let highest = fmt_seconds(
        trend
            .iter()
            .flat_map(|r| [r.rto_seconds, r.rpo_seconds])
            .flatten()
            .reduce(f64::max),
    );
    format!(
        "<p class=\"legend\"><span class=\"rto\">RTO</span> <span class=\"rpo\">RPO</span> of the last {} drills (this drill on the right; highest {highest})</p>\n{}",
        trend.len(),
        trend_svg(trend)
    )
}

fn html(
    summary: &ReportSummary,
    steps: &[TimelineEntry],
    validation: Option<&Value>,
    state: &Value,
    trend: &[DrillRecord],
    labels: &Labels,
) -> String {
    let verdict = if summary.passed { "passed" } else { "failed" };
    let total = steps
        .iter()
        .filter_map(|s| s.offset_seconds)
        .fold(1.0_f64, f64::max);
    let mut rows = String::new();
    for s in steps {
        // Each bar runs from the step's start to its end, on the drill's time axis.
        let (left, width, label) = match (s.start_offset_seconds, s.offset_seconds) {
            (Some(from), Some(to)) => {
                let left = (from / total * 100.0).clamp(0.0, 99.5);
                (
                    left,
                    ((to - from) / total * 100.0).clamp(0.5, 100.0 - left),
                    format!("{to:.1} s ({:.1} s)", to - from),
                )
            }
            _ => (0.0, 0.0, "not reached".to_owned()),
        };
        rows.push_str(&format!(
            "<tr class=\"step{}\"><th>{}</th><td class=\"bar\"><div style=\"margin-left:{left:.1}%;width:{width:.1}%\"></div></td><td>{}</td></tr>\n",
            if s.offset_seconds.is_none() { " missing" } else { "" },
            escape(&s.step),
            escape(&label)
        ));
    }
    let mut parity = String::new();
    for t in validation
        .and_then(|v| v.get("tables"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ok = t["passed"] == Value::Bool(true);
        parity.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            if ok { "pass" } else { "fail" },
            escape(t["table"].as_str().unwrap_or("")),
            t["baseline_rows"],
            t["restored_rows"],
            if t["checksum_matches"] == Value::Bool(true) { "match" } else { "differs" },
            t["written_after_baseline"],
            if ok { "pass" } else { "FAIL" }
        ));
    }
    let mut cache = String::new();
    for [pattern, keys, length, differences, result] in cache_rows(validation) {
        cache.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            if result == "pass" { "pass" } else { "fail" },
            escape(&pattern),
            escape(&keys),
            escape(&length),
            escape(&differences),
            result
        ));
    }
    let failure = summary
        .failure
        .as_deref()
        .map(|f| format!("<p class=\"failure\">{}</p>", escape(f)))
        .unwrap_or_default();
    let plan = state
        .pointer("/plan/deliveries")
        .map_or("—".to_owned(), |t| t.to_string());
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} {id}: {verdict}</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 960px; color: #1d232b; }}
h1 span.passed {{ color: #137333; }} h1 span.failed {{ color: #b3261e; }}
.failure {{ background: #fce8e6; border-left: 4px solid #b3261e; padding: .6rem 1rem; }}
dl {{ display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1.2rem; }} dt {{ font-weight: 600; }}
table {{ border-collapse: collapse; width: 100%; margin: .8rem 0 1.6rem; }}
th, td {{ text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e3e6ea; }}
#timeline th {{ width: 14rem; font-weight: 500; }} #timeline td.bar {{ width: 60%; }}
#timeline td.bar div {{ background: #3b6fd8; height: .9rem; border-radius: 3px; }}
#timeline tr.missing th, #timeline tr.missing td {{ color: #8a939c; }}
#parity tr.fail td, #cache tr.fail td {{ background: #fce8e6; }}
#trend polyline {{ fill: none; stroke-width: 2; }} #trend .rto {{ stroke: #3b6fd8; fill: #3b6fd8; }} #trend .rpo {{ stroke: #e8710a; fill: #e8710a; }}
#trend polyline.rto, #trend polyline.rpo {{ fill: none; }} .legend .rto {{ color: #3b6fd8; }} .legend .rpo {{ color: #e8710a; }}
</style></head>
<body>
<h1>{title} {id}: <span class="{verdict}">{verdict}</span></h1>
{failure}
<dl>
<dt>RPO</dt><dd>{rpo}</dd>
<dt>RTO</dt><dd>{rto}</dd>
<dt>Parity failures</dt><dd>{parity_failures}</dd>
<dt>Replayable deliveries (dry run)</dt><dd>{plan}</dd>
<dt>Cache</dt><dd>{cache_summary}</dd>
</dl>
<h2>Timeline</h2>
<table id="timeline"><tbody>
{rows}</tbody></table>
<h2>RTO and RPO of the last drills</h2>
{trend}
<h2>{parity_title}</h2>
<table id="parity"><thead><tr><th>table</th><th>{expected_rows}</th><th>restored rows</th><th>checksum</th><th>written after baseline</th><th>result</th></tr></thead><tbody>
{parity}</tbody></table>
<h2>Cache parity (queue keys)</h2>
<table id="cache"><thead><tr><th>pattern</th><th>keys (baseline / restored)</th><th>total length (baseline / restored)</th><th>differences</th><th>result</th></tr></thead><tbody>
{cache}</tbody></table>
</body></html>
"#,
        id = escape(&summary.drill_id),
        title = labels.title,
        parity_title = labels.parity,
        expected_rows = labels.expected_rows,
        rpo = escape(&objective_line(validation, "rpo")),
        rto = escape(&objective_line(validation, "rto")),
        cache_summary = escape(&cache_summary(validation)),
        parity_failures = summary.parity_failures,
        trend = trend_section(trend),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_failed_step_fails_the_report_and_names_the_error() {
        let state = json!({
            "started": {"at": "2026-11-26T03:00:00Z"},
            "start": {"started_at": "2026-11-26T03:00:05Z"},
            "error": {"Error": "SmokeFailed", "Cause": "{\"errorType\":\"SmokeFailed\",\"errorMessage\":\"users-and-entitlements: relation \\\"users\\\" does not exist\"}"},
        });
        let r = render("q4", "quarterly", &state, &[]);
        assert!(!r.summary.passed);
        assert_eq!(
            r.summary.failure.as_deref(),
            Some("SmokeFailed: users-and-entitlements: relation \"users\" does not exist")
        );
        assert!(r.html.contains("not reached"));
        assert!(r.html.contains("&quot;users&quot;"), "HTML is escaped");
        assert_eq!(r.json["timeline"][1]["offset_seconds"], 5.0);
    }

    #[test]
    fn each_timeline_bar_runs_from_the_previous_step_end_to_its_own() {
        let state = json!({
            "started": {"at": "2026-11-26T03:00:00Z"},
            "baseline": {"captured_at": "2026-11-26T03:00:02Z"},
            "start": {"started_at": "2026-11-26T03:00:05Z"},
            "status": {"checked_at": "2026-11-26T03:00:20Z"},
        });
        let steps = timeline(&state);
        let reached: Vec<(f64, f64)> = steps
            .iter()
            .filter_map(|s| s.start_offset_seconds.zip(s.offset_seconds))
            .collect();
        assert_eq!(reached[..2], [(0.0, 2.0), (2.0, 5.0)], "{steps:#?}");
        let html = render("q4", "quarterly", &state, &[]).html;
        assert!(
            html.contains("margin-left:10.0%;width:15.0%"),
            "the second bar starts at 2 s of 20 s and lasts 3 s: {html}"
        );
        assert!(
            html.contains("first drill recorded") && !html.contains("<svg"),
            "nothing to compare a first drill with"
        );
    }

    fn restore_test_state(rows: u64, logical_smoke: bool) -> Value {
        json!({
            "started": {"at": "2026-11-29T04:00:00Z"},
            "start": {"started_at": "2026-11-29T04:00:01Z", "restore_time": "2026-11-28T03:00:10Z",
                      "snapshot": {"snapshot_id": "20261128t030000z"}},
            "status": {"checked_at": "2026-11-29T04:00:09Z"},
            "credentials": {"verified_at": "2026-11-29T04:00:10Z"},
            "smoke": {"passed": true, "checks": [], "completed_at": "2026-11-29T04:00:12Z"},
            "staging_database": {"completed_at": "2026-11-29T04:00:13Z"},
            "logical": {"consistent": rows == 7, "mismatches": [], "manifest_key": "logical/20261128t030000z/manifest.json",
                        "completed_at": "2026-11-29T04:00:20Z",
                        "tables": [{"schema": "public", "name": "users", "rows_expected": 7, "rows": rows,
                                    "content_checksum_expected": {"sum": "1"}, "content_checksum": {"sum": "1"},
                                    "ok": rows == 7}]},
            "logical_smoke": {"passed": logical_smoke, "checks": [], "completed_at": "2026-11-29T04:00:21Z"},
            "teardown": {"completed_at": "2026-11-29T04:00:25Z"},
        })
    }

    #[test]
    fn a_restore_test_reports_its_tables_against_the_manifest() {
        let r = render("rt-1", RESTORE_TEST_KIND, &restore_test_state(7, true), &[]);
        assert!(r.summary.passed, "{:?}", r.summary);
        assert_eq!(r.summary.parity_failures, 0);
        assert_eq!(r.summary.rto_seconds, Some(12.0));
        assert_eq!(r.json["validation"]["tables"][0]["table"], "public.users");
        assert_eq!(r.json["validation"]["tables"][0]["restored_rows"], 7);
        assert_eq!(r.json["timeline"].as_array().map(Vec::len), Some(8));
        assert_eq!(r.json["timeline"][7]["offset_seconds"], 25.0);
        assert!(
            r.markdown
                .contains("| public.users | 7 | 7 | match | 0 | pass |"),
            "{}",
            r.markdown
        );
        assert!(r.markdown.starts_with("## Restore test rt-1: PASSED"));
        assert!(
            r.markdown
                .contains("### Parity against the backup manifest")
        );
        assert!(r.html.contains("<h1>Restore test rt-1:"));

        let short = render("rt-2", RESTORE_TEST_KIND, &restore_test_state(6, true), &[]);
        assert!(!short.summary.passed);
        assert_eq!(short.summary.parity_failures, 1);

        let smoke = render(
            "rt-3",
            RESTORE_TEST_KIND,
            &restore_test_state(7, false),
            &[],
        );
        assert!(
            !smoke.summary.passed,
            "the logical copy's smoke tests count"
        );

        let mut unfinished = restore_test_state(7, true);
        unfinished.as_object_mut().unwrap().remove("logical");
        assert!(
            !render("rt-4", RESTORE_TEST_KIND, &unfinished, &[])
                .summary
                .passed
        );
    }
}
