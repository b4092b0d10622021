//! Object keys of a logical backup:
//!
//! ```text
//! <prefix><run_id>/tables/<schema>.<table>/<segment>.copy.zst   one per block range of a table
//!                                                               (00000 for a small table),
//!                                                               zstd-compressed COPY text
//! <prefix><run_id>/manifest.json                                written last: the commit marker
//! ```
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
