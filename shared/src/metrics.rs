//! CloudWatch embedded-metric-format lines: printed to the log, Lambda's log pipeline turns them
//! into metrics without an API call (the in-VPC functions need no CloudWatch endpoint). Every
//! function's metrics live in one namespace, the one the template's alarms read.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

pub const NAMESPACE: &str = "CatalystDR";

/// One metric of a line: its name, CloudWatch unit and value.
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub value: Value,
}

impl Metric {
    pub fn new(name: &'static str, unit: &'static str, value: impl Into<Value>) -> Self {
        Self {
            name,
            unit,
            value: value.into(),
        }
    }
}

/// The line for `metrics` under one dimension, with `properties` (searchable in the logs, not
/// metrics) beside them.
pub fn emf_line(
    dimension: (&'static str, &str),
    metrics: Vec<Metric>,
    properties: Map<String, Value>,
    now: OffsetDateTime,
) -> Value {
    let mut line = properties;
    line.insert(dimension.0.to_owned(), json!(dimension.1));
    let declared: Vec<Value> = metrics
        .iter()
        .map(|m| json!({"Name": m.name, "Unit": m.unit}))
        .collect();
    for metric in metrics {
        line.insert(metric.name.to_owned(), metric.value);
    }
    line.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": (now.unix_timestamp_nanos() / 1_000_000) as i64,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[dimension.0]],
                "Metrics": declared,
            }],
        }),
    );
    Value::Object(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_metric_has_its_value_and_the_dimension_is_set() {
        let mut properties = Map::new();
        properties.insert("run_id".into(), json!("20261126t030000z"));
        let line = emf_line(
            ("Action", "logical-backup"),
            vec![
                Metric::new("Rows", "Count", 10),
                Metric::new("Seconds", "Seconds", 1.5),
            ],
            properties,
            OffsetDateTime::UNIX_EPOCH,
        );
        let spec = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(spec["Namespace"], NAMESPACE);
        assert_eq!(spec["Dimensions"], json!([["Action"]]));
        for metric in spec["Metrics"].as_array().unwrap() {
            assert!(line[metric["Name"].as_str().unwrap()].is_number());
        }
        assert_eq!(line["Action"], "logical-backup");
        assert_eq!(line["run_id"], "20261126t030000z");
        assert_eq!(line["_aws"]["Timestamp"], 0);
    }
}
