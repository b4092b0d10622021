//! The replay's audit record, the attachment for the incident ticket (runbook: "Document replay
//! steps in the incident ticket"): JSON for tools and Markdown for people, written once per replay
//! id into the Object Lock bucket.

use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

pub const AUDIT_FORMAT: &str = "catalyst-dr/replay-audit/v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRecord {
    pub since: String,
    pub until: String,
    pub subscription_ids: Option<Vec<i64>>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub method: String,
    pub path: Option<String>,
    pub timeout_ms: u32,
    pub concurrency: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayCounts {
    /// Dead-lettered deliveries the filter matched.
    pub matched: u64,
    /// Set back to `pending` by this replay (all its attempts).
    pub replayed: u64,
    /// Of `replayed`, those an earlier attempt of the same replay id requeued before it stopped
    /// (read back from the replay journal in the database).
    #[serde(default)]
    pub replayed_earlier: u64,
    /// Left dead-lettered because their endpoint was unhealthy or refused.
    pub skipped_unhealthy: u64,
    /// Healthy endpoint, but the row was no longer `dead_lettered` when its batch ran.
    pub skipped_changed: u64,
    /// Distinct endpoints, each probed once.
    pub endpoints: u64,
    pub endpoints_unhealthy: u64,
    pub batches: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub endpoint: String,
    pub subscription_ids: Vec<i64>,
    pub deliveries: u64,
    pub healthy: bool,
    pub status: Option<u16>,
    pub reason: Option<String>,
    pub replayed: u64,
    /// Of `replayed`, those requeued by an earlier attempt of the same replay id.
    #[serde(default)]
    pub replayed_earlier: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayAudit {
    pub format: String,
    pub replay_id: String,
    pub database_secret_id: String,
    pub started_at: String,
    pub completed_at: String,
    pub filter: FilterRecord,
    pub spread_seconds: u32,
    pub batch_size: u32,
    pub probe: ProbeRecord,
    pub counts: ReplayCounts,
    /// Every endpoint with its probe outcome; the skipped ones carry the reason.
    pub endpoints: Vec<EndpointRecord>,
    /// The deliveries set back to `pending`, by every attempt of this replay id.
    pub delivery_ids: Vec<i64>,
    /// Deliveries left dead-lettered because their endpoint was not healthy.
    pub skipped_delivery_ids: Vec<i64>,
    /// Deliveries that changed status between the query and their batch (left alone).
    pub changed_delivery_ids: Vec<i64>,
}

pub fn json_key(prefix: &str, replay_id: &str) -> String {
    format!("{prefix}{replay_id}/audit.json")
}

pub fn markdown_key(prefix: &str, replay_id: &str) -> String {
    format!("{prefix}{replay_id}/audit.md")
}

/// `1-5, 9, 12-13`: ids as ranges, so a large replay stays readable.
pub fn id_ranges(ids: &[i64]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut iter = sorted.into_iter();
    let Some(mut start) = iter.next() else {
        return "none".to_owned();
    };
    let mut end = start;
    for id in iter {
        if id == end + 1 {
            end = id;
        } else {
            parts.push(if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            });
            start = id;
            end = id;
        }
    }
    parts.push(if start == end {
        start.to_string()
    } else {
        format!("{start}-{end}")
    });
    parts.join(", ")
}

impl ReplayAudit {
    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let c = &self.counts;
        let _ = writeln!(md, "# Webhook replay `{}`\n", self.replay_id);
        let _ = writeln!(
            md,
            "Runbook: Webhook replay. Dead-lettered deliveries whose endpoint answered the health probe were set back to `pending` with `next_attempt_at` = now{}.\n",
            if self.spread_seconds > 0 {
                format!(" (spread over {} s)", self.spread_seconds)
            } else {
                String::new()
            }
        );
        let _ = writeln!(md, "| | |\n|---|---|");
        let _ = writeln!(
            md,
            "| started | {} |\n| completed | {} |",
            self.started_at, self.completed_at
        );
        let _ = writeln!(
            md,
            "| database (secret id) | `{}` |",
            self.database_secret_id
        );
        let _ = writeln!(
            md,
            "| window (`updated_at`) | {} to {} |",
            self.filter.since, self.filter.until
        );
        let subs = self
            .filter
            .subscription_ids
            .as_ref()
            .map(|s| id_ranges(s))
            .unwrap_or_else(|| "all".to_owned());
        let _ = writeln!(md, "| subscriptions | {subs} |");
        let _ = writeln!(
            md,
            "| limit | {} |",
            self.filter
                .limit
                .map(|l| l.to_string())
                .unwrap_or_else(|| "none".to_owned())
        );
        let _ = writeln!(
            md,
            "| probe | {} {} (timeout {} ms) |",
            self.probe.method,
            self.probe.path.as_deref().unwrap_or("endpoint path"),
            self.probe.timeout_ms
        );
        let _ = writeln!(
            md,
            "\n## Counts\n\n| matched | replayed | skipped (endpoint unhealthy) | skipped (changed meanwhile) | endpoints | unhealthy endpoints | batches |\n|---|---|---|---|---|---|---|"
        );
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            c.matched,
            c.replayed,
            c.skipped_unhealthy,
            c.skipped_changed,
            c.endpoints,
            c.endpoints_unhealthy,
            c.batches
        );
        let skipped: Vec<&EndpointRecord> = self.endpoints.iter().filter(|e| !e.healthy).collect();
        let _ = writeln!(md, "\n## Skipped endpoints\n");
        if skipped.is_empty() {
            let _ = writeln!(md, "None: every endpoint answered.");
        } else {
            let _ = writeln!(
                md,
                "| endpoint | subscriptions | deliveries | status | reason |\n|---|---|---|---|---|"
            );
            for e in skipped {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    e.endpoint,
                    id_ranges(&e.subscription_ids),
                    e.deliveries,
                    e.status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".to_owned()),
                    e.reason.as_deref().unwrap_or("-").replace('|', "/")
                );
            }
        }
        let _ = writeln!(
            md,
            "\n## Deliveries\n\n- replayed ({}): {}",
            self.delivery_ids.len(),
            id_ranges(&self.delivery_ids)
        );
        if c.replayed_earlier > 0 {
            let _ = writeln!(
                md,
                "- of these, requeued by an earlier attempt that stopped before writing this record: {}",
                c.replayed_earlier
            );
        }
        let _ = writeln!(
            md,
            "- left dead-lettered, endpoint unhealthy ({}): {}",
            self.skipped_delivery_ids.len(),
            id_ranges(&self.skipped_delivery_ids)
        );
        let _ = writeln!(
            md,
            "- changed meanwhile, left alone ({}): {}",
            self.changed_delivery_ids.len(),
            id_ranges(&self.changed_delivery_ids)
        );
        let _ = writeln!(
            md,
            "\n## Next\n\nRun `{{\"action\": \"verify\", \"replay_id\": \"{}\"}}` once the worker has had time to deliver: it counts the replayed deliveries that succeeded, are still pending, or were dead-lettered again, per endpoint.",
            self.replay_id
        );
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compress_to_ranges() {
        assert_eq!(id_ranges(&[5, 1, 2, 3, 9, 12, 13]), "1-3, 5, 9, 12-13");
        assert_eq!(id_ranges(&[]), "none");
    }
}
