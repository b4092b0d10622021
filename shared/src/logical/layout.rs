//! Object keys of a logical backup:
//!
//! ```text
//! <prefix><run_id>/tables/<schema>.<table>.copy.zst   one per table, zstd-compressed COPY text
//! <prefix><run_id>/manifest.json                      written last: the commit marker
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

pub fn table_key(prefix: &str, run_id: &str, schema: &str, table: &str) -> String {
    format!("{}tables/{}.{}.copy.zst", backup_prefix(prefix, run_id), encode(schema), encode(table))
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
        assert_eq!(manifest_key("logical/", "20261126t030000z"), "logical/20261126t030000z/manifest.json");
        assert_eq!(table_key("logical/", "r", "public", "users"), "logical/r/tables/public.users.copy.zst");
        assert_ne!(table_key("l/", "r", "a.b", "c"), table_key("l/", "r", "a", "b.c"));
        assert_eq!(table_key("l/", "r", "s", "ü/x"), "l/r/tables/s.%C3%BC%2Fx.copy.zst");
    }
}
