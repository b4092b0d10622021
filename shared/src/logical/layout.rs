//! Object keys of a logical backup:
//!
//! ```text
//! <prefix><run_id>/tables/<schema>.<table>/<segment>.copy.zst   one per block range of a table
//!                                                               (00000 for a small table),
//!                                                               zstd-compressed COPY text
//! <prefix><run_id>/manifest.json                                written last: the commit marker
//! ```
//!
//! The fan-out's, verify's and the restore's own records sit beside them (see those modules):
//! `fanout/`, `verify/<verify_id>/` and `restore/<restore_id>.json`.
//!
//! Schema and table names are percent-encoded (anything but letters, digits, `_` and `-`), so a
//! `.` or `/` in a name cannot collide with the separator.

/// The folder of one backup, e.g. `logical/20261126t030000z/`.
pub fn backup_prefix(prefix: &str, run_id: &str) -> String {
    format!("{prefix}{run_id}/")
}

pub fn manifest_key(prefix: &str, run_id: &str) -> String {
    format!("{}manifest.json", backup_prefix(prefix, run_id))
}

pub fn segment_key(prefix: &str, run_id: &str, schema: &str, table: &str, segment: u32) -> String {
    format!(
        "{}tables/{}.{}/{segment:05}.copy.zst",
        backup_prefix(prefix, run_id),
        encode(schema),
        encode(table)
    )
}

/// Whether `key` is one of the backup's own records (the fan-out's, verify's or a restore's),
/// not a segment or the manifest.
pub fn is_record(prefix: &str, run_id: &str, key: &str) -> bool {
    let folder = backup_prefix(prefix, run_id);
    ["fanout/", "verify/", "restore/"]
        .iter()
        .any(|records| key.starts_with(&format!("{folder}{records}")))
}

/// A verify's or a restore's id as its first step makes it: the UTC time to the millisecond,
/// e.g. `20261201t031502123z`.
pub fn new_work_id(now: time::OffsetDateTime) -> String {
    let now = now.to_offset(time::UtcOffset::UTC);
    now.format(time::macros::format_description!(
        "[year][month][day]t[hour][minute][second][subsecond digits:3]z"
    ))
    .expect("a UTC time always formats")
}

/// The id a later step was given in `field`: what the first step (`from`) answered, which names
/// S3 keys.
pub fn checked_work_id<'a>(
    field: &'static str,
    id: &'a str,
    from: &str,
) -> Result<&'a str, crate::input::InputError> {
    let valid = (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    if valid {
        Ok(id)
    } else {
        Err(crate::input::InputError::new(
            field,
            format!("must be the id {from} answered (1 to 32 digits and lowercase letters)"),
        ))
    }
}

fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_names_cannot_collide() {
        assert_eq!(
            manifest_key("logical/", "20261126t030000z"),
            "logical/20261126t030000z/manifest.json"
        );
        assert_eq!(
            segment_key("logical/", "r", "public", "users", 0),
            "logical/r/tables/public.users/00000.copy.zst"
        );
        assert_eq!(
            segment_key("logical/", "r", "public", "users", 12),
            "logical/r/tables/public.users/00012.copy.zst"
        );
        assert_ne!(
            segment_key("l/", "r", "a.b", "c", 0),
            segment_key("l/", "r", "a", "b.c", 0)
        );
        assert_eq!(
            segment_key("l/", "r", "s", "ü/x", 0),
            "l/r/tables/s.%C3%BC%2Fx/00000.copy.zst"
        );
    }
}
