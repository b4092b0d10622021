//! The tags that mark what catalyst-dr created. Every destructive action checks them first, and
//! the template's IAM conditions check the same keys.

use std::collections::BTreeMap;
use time::OffsetDateTime;

pub const CREATED_BY: &str = "catalyst-dr:created-by";
pub const CREATED_BY_VALUE: &str = "catalyst-dr";
pub const ROLE: &str = "catalyst-dr:role";
pub const RUN_ID: &str = "catalyst-dr:run-id";
pub const SCHEDULE: &str = "catalyst-dr:schedule";
pub const RETAIN_UNTIL: &str = "catalyst-dr:retain-until";

/// The `role` tag value of nightly backup snapshots.
pub const ROLE_BACKUP: &str = "backup";

pub type Tags = BTreeMap<String, String>;

/// The tags of a backup snapshot taken by a scheduled run.
pub fn backup_tags(run_id: &str, schedule: &str, retain_until: OffsetDateTime) -> Tags {
    Tags::from([
        (CREATED_BY.to_owned(), CREATED_BY_VALUE.to_owned()),
        (ROLE.to_owned(), ROLE_BACKUP.to_owned()),
        (RUN_ID.to_owned(), run_id.to_owned()),
        (SCHEDULE.to_owned(), schedule.to_owned()),
        (
            RETAIN_UNTIL.to_owned(),
            crate::input::format_time(retain_until),
        ),
    ])
}

/// True when the tags say catalyst-dr created the resource with the given role.
pub fn is_ours(tags: &Tags, role: &str) -> bool {
    tags.get(CREATED_BY).map(String::as_str) == Some(CREATED_BY_VALUE)
        && tags.get(ROLE).map(String::as_str) == Some(role)
}

pub const DRILL_ID: &str = "catalyst-dr:drill-id";
pub const SOURCE: &str = "catalyst-dr:source";
/// The `role` tag value of restored staging instances: the only ones teardown may delete.
pub const ROLE_STAGING: &str = "staging";

/// The tags of a staging instance restored for a drill.
pub fn staging_tags(drill_id: &str, source_id: &str) -> Tags {
    Tags::from([
        (CREATED_BY.to_owned(), CREATED_BY_VALUE.to_owned()),
        (ROLE.to_owned(), ROLE_STAGING.to_owned()),
        (DRILL_ID.to_owned(), drill_id.to_owned()),
        (SOURCE.to_owned(), source_id.to_owned()),
    ])
}

/// The `role` tag value of the cache snapshots a drill takes and its teardown deletes.
pub const ROLE_DRILL_SNAPSHOT: &str = "drill-snapshot";

/// The tags of a cache snapshot taken for a drill.
pub fn drill_snapshot_tags(drill_id: &str, source_id: &str) -> Tags {
    Tags::from([
        (CREATED_BY.to_owned(), CREATED_BY_VALUE.to_owned()),
        (ROLE.to_owned(), ROLE_DRILL_SNAPSHOT.to_owned()),
        (DRILL_ID.to_owned(), drill_id.to_owned()),
        (SOURCE.to_owned(), source_id.to_owned()),
    ])
}

/// True when the tags mark a cache snapshot catalyst-dr took for `drill_id`.
pub fn is_drill_snapshot_of(tags: &Tags, drill_id: &str) -> bool {
    is_ours(tags, ROLE_DRILL_SNAPSHOT) && tags.get(DRILL_ID).map(String::as_str) == Some(drill_id)
}

/// True when the tags mark a staging instance catalyst-dr restored for `drill_id`.
pub fn is_staging_of(tags: &Tags, drill_id: &str) -> bool {
    is_ours(tags, ROLE_STAGING) && tags.get(DRILL_ID).map(String::as_str) == Some(drill_id)
}
