//! Deterministic names: a scheduled run's time fixes its run id and every snapshot id, so a
//! retried invocation finds what the first attempt started.

use crate::input::{InputError, parse_time};
use time::OffsetDateTime;
use time::macros::format_description;

/// Prefix of every snapshot catalyst-dr names; the IAM policy scopes deletes to it as well.
pub const SNAPSHOT_PREFIX: &str = "catalyst-dr";

/// One scheduled backup run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId {
    pub scheduled_time: OffsetDateTime,
    /// `20261126t030000z`: sortable, and valid inside RDS and ElastiCache identifiers.
    pub stamp: String,
}

impl RunId {
    pub fn from_scheduled_time(field: &str, value: &str) -> Result<Self, InputError> {
        let scheduled_time = parse_time(field, value)?
            .to_offset(time::UtcOffset::UTC)
            .replace_nanosecond(0)
            .expect("0 ns is valid");
        let stamp = scheduled_time
            .format(format_description!(
                "[year][month][day]t[hour][minute][second]z"
            ))
            .expect("a UTC time always formats");
        Ok(Self {
            scheduled_time,
            stamp,
        })
    }

    /// The snapshot id for `source`, e.g. `catalyst-dr-prod-db-20261126t030000z`.
    pub fn snapshot_id(&self, source: &str) -> String {
        format!("{SNAPSHOT_PREFIX}-{source}-{}", self.stamp)
    }
}

/// An event's `scheduled_time`, parsed once as it is decoded; a bad value is an
/// [`InputError`] naming the field (see [`crate::input::decode`]).
impl<'de> serde::Deserialize<'de> for RunId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_scheduled_time("scheduled_time", &text)
            .map_err(|e| serde::de::Error::custom(e.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_schedule_time_gives_the_same_ids() {
        let a = RunId::from_scheduled_time("scheduled_time", "2026-11-26T03:00:00Z").unwrap();
        let b =
            RunId::from_scheduled_time("scheduled_time", "2026-11-26T04:00:00.250+01:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.snapshot_id("prod-db"),
            "catalyst-dr-prod-db-20261126t030000z"
        );
        assert!(crate::config::validate_identifier(&a.snapshot_id("prod-db")).is_ok());
    }

    #[test]
    fn decoding_an_event_parses_the_time_once_and_names_the_field() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(rename_all = "kebab-case", deny_unknown_fields)]
        enum Event {
            Go { scheduled_time: RunId },
        }
        let Event::Go { scheduled_time } = crate::input::decode::<Event>(
            serde_json::json!({"action": "go", "scheduled_time": "2026-11-26T04:00:00+01:00"}),
        )
        .unwrap();
        assert_eq!(scheduled_time.stamp, "20261126t030000z");
        for bad in [
            serde_json::json!("yesterday"),
            serde_json::json!("1999-01-01T00:00:00Z"),
            serde_json::json!(7),
        ] {
            let err = crate::input::decode::<Event>(
                serde_json::json!({"action": "go", "scheduled_time": bad}),
            )
            .unwrap_err();
            assert_eq!(err.field, "scheduled_time", "{bad}: {err}");
        }
    }
}
