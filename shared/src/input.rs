//! Decoding of function events into typed requests, with errors that name the offending field.

use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// An event that cannot be acted on. Raised before any call to AWS or a database.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid input: field `{field}`: {reason}")]
pub struct InputError {
    pub field: String,
    pub reason: String,
}

impl InputError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Decodes an event of the shape `{"action": "name", ...fields}` into `T`, an externally tagged
/// enum (`#[serde(rename_all = "kebab-case", deny_unknown_fields)]`, one struct variant per
/// action). Errors name the offending field by its JSON path; unknown or missing actions name
/// `action`. (Serde's internally tagged enums buffer their content and lose the path.)
pub fn decode<T: DeserializeOwned>(event: serde_json::Value) -> Result<T, InputError> {
    let serde_json::Value::Object(mut fields) = event else {
        return Err(InputError::new("$", "the event must be a JSON object"));
    };
    let action = match fields.remove("action") {
        Some(serde_json::Value::String(action)) => action,
        Some(other) => {
            return Err(InputError::new(
                "action",
                format!("must be a string, got {other}"),
            ));
        }
        None => return Err(InputError::new("action", "is required")),
    };
    let tagged = serde_json::Value::Object(serde_json::Map::from_iter([(
        action.clone(),
        serde_json::Value::Object(fields),
    )]));
    serde_path_to_error::deserialize(tagged).map_err(|err| {
        let reason = err.inner().to_string();
        let path = err.path().to_string();
        // The first path segment is the action itself.
        let path = path
            .strip_prefix(&action)
            .map(|p| p.trim_start_matches('.'))
            .unwrap_or("")
            .to_owned();
        let named = quoted_after(&reason, "unknown field `")
            .or_else(|| quoted_after(&reason, "missing field `"));
        // Serde puts an unknown field in the path itself, a missing one only in the message.
        let field = match (path.is_empty(), named) {
            (false, _) => path,
            (true, Some(name)) => name,
            (true, None) => "action".to_owned(),
        };
        InputError { field, reason }
    })
}

fn quoted_after(text: &str, marker: &str) -> Option<String> {
    let start = text.find(marker)? + marker.len();
    let len = text[start..].find('`')?;
    Some(text[start..start + len].to_owned())
}

/// The earliest time an event may name: nothing catalyst-dr backs up, restores or replays is older.
pub const EARLIEST_EVENT_TIME: OffsetDateTime = time::macros::datetime!(2000-01-01 0:00 UTC);

/// How far ahead of this machine's clock an event time may lie (clock skew, a schedule fired early).
pub const MAX_FUTURE: time::Duration = time::Duration::days(1);

/// Parses an RFC 3339 timestamp such as `2026-11-26T03:00:00Z`, naming `field` on failure. Times
/// before [`EARLIEST_EVENT_TIME`] or more than [`MAX_FUTURE`] ahead are refused: they are mistakes,
/// and the arithmetic on them (retention dates, windows) could leave the representable range.
pub fn parse_time(field: &str, value: &str) -> Result<OffsetDateTime, InputError> {
    parse_time_at(field, value, OffsetDateTime::now_utc())
}

/// [`parse_time`] with the present given.
pub fn parse_time_at(
    field: &str,
    value: &str,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, InputError> {
    let t = OffsetDateTime::parse(value, &Rfc3339).map_err(|e| {
        InputError::new(
            field,
            format!("{value:?} is not an RFC 3339 timestamp: {e}"),
        )
    })?;
    if t < EARLIEST_EVENT_TIME {
        return Err(InputError::new(
            field,
            format!("{value:?} is before {}", format_time(EARLIEST_EVENT_TIME)),
        ));
    }
    let latest = now.saturating_add(MAX_FUTURE);
    if t > latest {
        return Err(InputError::new(
            field,
            format!(
                "{value:?} is more than a day in the future (latest {})",
                format_time(latest)
            ),
        ));
    }
    Ok(t)
}

/// Parses an event's JSON text. Anything `serde_json::Value` cannot hold (a number such as `1e309`
/// that overflows, invalid text) is an [`InputError`] naming the field by its JSON path.
pub fn parse_event(text: &str) -> Result<serde_json::Value, InputError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        // An error before any key is read has no path (`?`): it is about the event as a whole.
        let field = if path.is_empty() || path == "." || path == "?" {
            "$".to_owned()
        } else {
            path
        };
        InputError::new(field, err.inner().to_string())
    })?;
    deserializer
        .end()
        .map_err(|e| InputError::new("$", e.to_string()))?;
    Ok(value)
}

/// Formats a timestamp the way every catalyst-dr record stores it (RFC 3339, UTC).
pub fn format_time(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .expect("a UTC timestamp always formats as RFC 3339")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    #[allow(dead_code)] // the fields are only decoded
    enum Event {
        Go {
            when: String,
            #[serde(default)]
            dry_run: bool,
        },
        Stop {},
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (json!({"action": "fly"}), "action"),
            (json!({"when": "x"}), "action"),
            (json!({"action": "go"}), "when"),
            (json!({"action": "go", "when": "x", "bogus": 1}), "bogus"),
            (
                json!({"action": "go", "when": "x", "dry_run": "yes"}),
                "dry_run",
            ),
            (json!([1]), "$"),
        ];
        for (event, field) in cases {
            let err = decode::<Event>(event.clone()).unwrap_err();
            assert_eq!(err.field, field, "{event}: {err}");
        }
        assert!(matches!(
            decode::<Event>(json!({"action": "stop"})),
            Ok(Event::Stop {})
        ));
    }

    #[test]
    fn times_outside_the_sane_window_are_refused_by_name() {
        let now = parse_time("now", "2026-11-26T03:00:00Z").unwrap();
        for bad in [
            "9999-12-31T23:59:59Z",
            "1969-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
            "1999-12-31T23:59:59Z",
            "2026-11-27T03:00:01Z",
        ] {
            let err = parse_time_at("scheduled_time", bad, now).unwrap_err();
            assert_eq!(err.field, "scheduled_time", "{bad}");
        }
        assert!(parse_time_at("scheduled_time", "2026-11-27T03:00:00Z", now).is_ok());
        assert!(parse_time_at("scheduled_time", "2000-01-01T00:00:00Z", now).is_ok());
    }

    #[test]
    fn undecodable_events_name_the_field() {
        let err = parse_event(r#"{"action": "replay", "filter": {"limit": 1e309}}"#).unwrap_err();
        assert_eq!(err.field, "filter.limit", "{err}");
        let err = parse_event(r#"{"action": "replay", "max_deliveries": -1e400}"#).unwrap_err();
        assert_eq!(err.field, "max_deliveries", "{err}");
        assert_eq!(parse_event(r#"{"action": "plan""#).unwrap_err().field, "$");
        assert_eq!(
            parse_event(r#"{"a": [1, 2e999]}"#).unwrap_err().field,
            "a[1]"
        );
        assert_eq!(
            parse_event(r#"{"a": 1e300}"#).unwrap()["a"],
            serde_json::json!(1e300)
        );
    }

    #[test]
    fn times_round_trip_in_utc() {
        let t = parse_time("scheduled_time", "2026-11-26T04:00:00+01:00").unwrap();
        assert_eq!(format_time(t), "2026-11-26T03:00:00Z");
        assert_eq!(
            parse_time("scheduled_time", "yesterday").unwrap_err().field,
            "scheduled_time"
        );
    }
}
