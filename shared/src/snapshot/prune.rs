//! Retention pruning. Only snapshots tagged as catalyst-dr backups are ever candidates; the
//! newest `keep_newest` of them are always kept, and the rest go once their retain-until passes.

use super::store::{Progress, SnapshotInfo, SnapshotKind};
use crate::input::format_time;
use crate::tags::{self, ROLE_BACKUP};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneEntry {
    pub id: String,
    pub kind: SnapshotKind,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneResult {
    pub dry_run: bool,
    /// Deleted, or that would be deleted on a dry run.
    pub deleted: Vec<PruneEntry>,
    /// catalyst-dr's own snapshots that stay, with the reason.
    pub kept: Vec<PruneEntry>,
    /// Snapshots of the same source that catalyst-dr did not create (automated, untagged, other
    /// tools'): never touched.
    pub ignored: usize,
}

/// Decides, without side effects, which snapshots go. `snapshots` may mix ours and others'.
pub fn plan(snapshots: &[SnapshotInfo], now: OffsetDateTime, keep_newest: usize) -> PruneResult {
    let mut ours: Vec<&SnapshotInfo> = snapshots
        .iter()
        .filter(|s| {
            s.snapshot_type.eq_ignore_ascii_case("manual") && tags::is_ours(&s.tags, ROLE_BACKUP)
        })
        .collect();
    let ignored = snapshots.len() - ours.len();
    // Newest first; the id embeds the scheduled time, so it breaks ties and covers a missing date.
    ours.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| b.id.cmp(&a.id))
    });

    let mut result = PruneResult {
        ignored,
        ..PruneResult::default()
    };
    for (rank, snapshot) in ours.into_iter().enumerate() {
        let entry = |reason: String| PruneEntry {
            id: snapshot.id.clone(),
            kind: snapshot.kind,
            reason,
        };
        if rank < keep_newest {
            result
                .kept
                .push(entry(format!("among the newest {keep_newest}")));
            continue;
        }
        if snapshot.progress() != Progress::Available {
            result
                .kept
                .push(entry(format!("status is {}", snapshot.status)));
            continue;
        }
        let retain_until = snapshot
            .tags
            .get(tags::RETAIN_UNTIL)
            .and_then(|v| OffsetDateTime::parse(v, &Rfc3339).ok());
        match retain_until {
            None => result.kept.push(entry(format!(
                "tag {} is missing or not a timestamp",
                tags::RETAIN_UNTIL
            ))),
            Some(until) if until > now => result
                .kept
                .push(entry(format!("retained until {}", format_time(until)))),
            Some(until) => result
                .deleted
                .push(entry(format!("retention ended {}", format_time(until)))),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tags::Tags;
    use time::macros::datetime;

    fn snap(id: &str, day: u8, retain_until: Option<&str>, ours: bool, kind: &str) -> SnapshotInfo {
        let mut tags = Tags::new();
        if ours {
            tags.insert(tags::CREATED_BY.into(), tags::CREATED_BY_VALUE.into());
            tags.insert(tags::ROLE.into(), ROLE_BACKUP.into());
        }
        if let Some(r) = retain_until {
            tags.insert(tags::RETAIN_UNTIL.into(), r.into());
        }
        SnapshotInfo {
            kind: SnapshotKind::RdsInstance,
            id: id.into(),
            arn: None,
            source_id: "db".into(),
            status: "available".into(),
            snapshot_type: kind.into(),
            created_at: Some(datetime!(2026-01-01 00:00 UTC) + time::Duration::days(day.into())),
            engine: None,
            engine_version: None,
            size_bytes: None,
            tags,
        }
    }

    #[test]
    fn deletes_only_our_expired_snapshots_beyond_the_newest() {
        let now = datetime!(2026-03-01 00:00 UTC);
        let snapshots = vec![
            snap("old-ours", 1, Some("2026-02-01T00:00:00Z"), true, "manual"),
            snap(
                "older-ours",
                0,
                Some("2026-02-01T00:00:00Z"),
                true,
                "manual",
            ),
            snap("retained", 2, Some("2026-04-01T00:00:00Z"), true, "manual"),
            snap("untagged", 0, Some("2026-02-01T00:00:00Z"), false, "manual"),
            snap(
                "automated",
                0,
                Some("2026-02-01T00:00:00Z"),
                true,
                "automated",
            ),
            snap("no-retain-tag", 3, None, true, "manual"),
            snap("newest", 9, Some("2026-02-01T00:00:00Z"), true, "manual"),
        ];
        let result = plan(&snapshots, now, 1);
        let deleted: Vec<&str> = result.deleted.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(deleted, ["old-ours", "older-ours"]);
        let kept: Vec<&str> = result.kept.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(kept, ["newest", "no-retain-tag", "retained"]);
        assert_eq!(result.ignored, 2);
    }

    #[test]
    fn keep_newest_protects_expired_snapshots() {
        let now = datetime!(2026-03-01 00:00 UTC);
        let snapshots = vec![
            snap("a", 1, Some("2026-02-01T00:00:00Z"), true, "manual"),
            snap("b", 2, Some("2026-02-01T00:00:00Z"), true, "manual"),
        ];
        assert!(plan(&snapshots, now, 2).deleted.is_empty());
        assert_eq!(plan(&snapshots, now, 1).deleted[0].id, "a");
    }
}
