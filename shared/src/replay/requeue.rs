//! The `replay` action: the runbook's webhook replay. Probe each distinct endpoint once; set the deliveries of
//! healthy endpoints back to `pending` with `next_attempt_at` = now (optionally spread), in
//! bounded batches that each are one guarded statement, journaled in the database in that same
//! statement; write the audit record from the journal, so it lists what every attempt changed.

use super::audit::{self, EndpointRecord, FilterRecord, ProbeRecord, ReplayAudit, ReplayCounts};
use super::probe::{endpoint_key, probe_all};
use super::{DeadLetterReplay, ReplayError, bounded, now_text};
use crate::catalyst_db::deliveries::{self, DeadLetterFilter};
use crate::input::format_time;
use crate::metrics::Metric;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};

#[derive(Debug, Clone)]
pub struct ReplayRequest {
    pub replay_id: String,
    pub filter: DeadLetterFilter,
    pub dry_run: bool,
    pub max_deliveries: u32,
    pub spread_seconds: u32,
}

/// Ids listed in a result (the full list is in the audit record).
const SAMPLE_IDS: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayResult {
    pub replay_id: String,
    pub dry_run: bool,
    /// True when the audit record of this replay id was already there: the replay had run, and
    /// this call changed nothing.
    pub already_done: bool,
    pub counts: ReplayCounts,
    /// Deliveries a dry run would set back to `pending`.
    pub would_replay: u64,
    pub skipped_endpoints: Vec<EndpointRecord>,
    pub sample_delivery_ids: Vec<i64>,
    pub audit_json_key: Option<String>,
    pub audit_markdown_key: Option<String>,
    pub started_at: String,
    pub completed_at: String,
    /// Where the time went (absent when the result comes from an earlier run's audit).
    pub timings_ms: Option<PhaseTimings>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseTimings {
    pub query: u64,
    pub probe: u64,
    pub requeue: u64,
    pub audit: u64,
}

fn ms_since(t: std::time::Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// `next_attempt_at` offsets: row `i` of `n` gets `i * spread / n` (microseconds).
pub fn spread_offsets(n: usize, spread_seconds: u32) -> Vec<i64> {
    let spread_us = i128::from(spread_seconds) * 1_000_000;
    let n128 = n.max(1) as i128;
    (0..n)
        .map(|i| i64::try_from(i as i128 * spread_us / n128).unwrap_or(i64::MAX))
        .collect()
}

pub async fn read_audit(
    svc: &DeadLetterReplay,
    replay_id: &str,
) -> Result<Option<ReplayAudit>, ReplayError> {
    let key = audit::json_key(&svc.config.audit_prefix, replay_id);
    match svc.objects.get(&key).await? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| ReplayError::CorruptAudit { key, source }),
    }
}

fn result_from_audit(
    svc: &DeadLetterReplay,
    audit: &ReplayAudit,
    already_done: bool,
) -> ReplayResult {
    ReplayResult {
        replay_id: audit.replay_id.clone(),
        dry_run: false,
        already_done,
        counts: audit.counts.clone(),
        would_replay: 0,
        skipped_endpoints: audit
            .endpoints
            .iter()
            .filter(|e| !e.healthy)
            .cloned()
            .collect(),
        sample_delivery_ids: audit
            .delivery_ids
            .iter()
            .take(SAMPLE_IDS)
            .copied()
            .collect(),
        audit_json_key: Some(audit::json_key(&svc.config.audit_prefix, &audit.replay_id)),
        audit_markdown_key: Some(audit::markdown_key(
            &svc.config.audit_prefix,
            &audit.replay_id,
        )),
        started_at: audit.started_at.clone(),
        completed_at: audit.completed_at.clone(),
        timings_ms: None,
    }
}

#[derive(Default)]
struct EndpointGroup {
    subscriptions: BTreeSet<i64>,
    /// Still dead-lettered: this attempt's candidates.
    ids: Vec<i64>,
    /// Requeued by an earlier attempt of the same replay id.
    earlier: Vec<i64>,
}

pub async fn run(svc: &DeadLetterReplay, req: &ReplayRequest) -> Result<ReplayResult, ReplayError> {
    let started_at = now_text();
    if !req.dry_run
        && let Some(existing) = read_audit(svc, &req.replay_id).await?
    {
        tracing::info!(replay_id = %req.replay_id, "replay already recorded; nothing to do");
        return Ok(result_from_audit(svc, &existing, true));
    }
    let mut timings = PhaseTimings::default();
    let phase = std::time::Instant::now();
    let client = svc.database.connect().await?;
    // What earlier attempts of this replay id requeued before they stopped: those rows are
    // recorded, and never requeued again under this id.
    let earlier = if req.dry_run {
        Vec::new()
    } else {
        bounded(
            &svc.database,
            "create the replay journal",
            deliveries::ensure_journal(&client),
        )
        .await?;
        bounded(
            &svc.database,
            "read the replay journal",
            deliveries::journaled(&client, &req.replay_id),
        )
        .await?
    };
    let earlier_ids: HashSet<i64> = earlier.iter().map(|j| j.id).collect();
    let mut rows = bounded(
        &svc.database,
        "dead-letter query",
        deliveries::dead_letters(&client, &req.filter),
    )
    .await?;
    rows.retain(|r| !earlier_ids.contains(&r.id));
    timings.query = ms_since(phase);
    let total = rows.len() as u64 + earlier.len() as u64;
    if total > u64::from(req.max_deliveries) {
        return Err(ReplayError::TooManyDeliveries {
            matched: total,
            max: req.max_deliveries,
        });
    }
    let mut groups: BTreeMap<String, EndpointGroup> = BTreeMap::new();
    for row in &rows {
        let group = groups.entry(endpoint_key(&row.endpoint_url)).or_default();
        group.subscriptions.insert(row.subscription_id);
        group.ids.push(row.id);
    }
    let phase = std::time::Instant::now();
    let probes = probe_all(
        svc.probe.clone(),
        groups.keys().cloned(),
        svc.config.probe.concurrency,
    )
    .await;
    timings.probe = ms_since(phase);
    // Earlier attempts' deliveries join their endpoint's record; an endpoint seen only there was
    // healthy when they were requeued and is not probed again.
    for j in &earlier {
        let endpoint = j
            .endpoint_url
            .as_deref()
            .map(endpoint_key)
            .unwrap_or_else(|| "(delivery since deleted)".to_owned());
        let group = groups.entry(endpoint).or_default();
        group.subscriptions.extend(j.subscription_id);
        group.earlier.push(j.id);
    }
    let mut healthy_ids = Vec::new();
    let mut skipped_ids = Vec::new();
    let mut endpoints = Vec::with_capacity(groups.len());
    for (endpoint, group) in &groups {
        let probe = probes.get(endpoint);
        let earlier_only = probe.is_none() && group.ids.is_empty();
        let healthy = earlier_only || probe.is_some_and(|p| p.healthy);
        if healthy {
            healthy_ids.extend_from_slice(&group.ids);
        } else {
            skipped_ids.extend_from_slice(&group.ids);
        }
        endpoints.push(EndpointRecord {
            endpoint: endpoint.clone(),
            subscription_ids: group.subscriptions.iter().copied().collect(),
            deliveries: (group.ids.len() + group.earlier.len()) as u64,
            healthy,
            status: probe.and_then(|p| p.status),
            reason: match probe {
                Some(p) => p.reason.clone(),
                None if earlier_only => None,
                None => Some("not probed".to_owned()),
            },
            replayed: 0,
            replayed_earlier: group.earlier.len() as u64,
        });
    }
    healthy_ids.sort_unstable();
    skipped_ids.sort_unstable();
    let mut counts = ReplayCounts {
        matched: total,
        skipped_unhealthy: skipped_ids.len() as u64,
        endpoints: endpoints.len() as u64,
        endpoints_unhealthy: endpoints.iter().filter(|e| !e.healthy).count() as u64,
        ..ReplayCounts::default()
    };
    if req.dry_run {
        return Ok(ReplayResult {
            replay_id: req.replay_id.clone(),
            dry_run: true,
            already_done: false,
            counts,
            would_replay: healthy_ids.len() as u64,
            skipped_endpoints: endpoints.into_iter().filter(|e| !e.healthy).collect(),
            sample_delivery_ids: healthy_ids.iter().take(SAMPLE_IDS).copied().collect(),
            audit_json_key: None,
            audit_markdown_key: None,
            started_at,
            completed_at: now_text(),
            timings_ms: Some(timings),
        });
    }

    let phase = std::time::Instant::now();
    let offsets = spread_offsets(healthy_ids.len(), req.spread_seconds);
    let batch = svc.config.batch_size.max(1) as usize;
    let mut replayed = Vec::with_capacity(healthy_ids.len());
    let mut changed = Vec::new();
    for (ids, offsets) in healthy_ids.chunks(batch).zip(offsets.chunks(batch)) {
        let done = bounded(
            &svc.database,
            "requeue batch",
            deliveries::requeue(&client, &req.replay_id, ids, offsets),
        )
        .await?;
        counts.batches += 1;
        if done.len() != ids.len() {
            let done_set: HashSet<i64> = done.iter().copied().collect();
            changed.extend(ids.iter().copied().filter(|id| !done_set.contains(id)));
        }
        replayed.extend(done);
    }
    timings.requeue = ms_since(phase);
    let phase = std::time::Instant::now();
    let replayed_set: HashSet<i64> = replayed.iter().copied().collect();
    for (record, group) in endpoints.iter_mut().zip(groups.values()) {
        record.replayed = (group
            .ids
            .iter()
            .filter(|id| replayed_set.contains(id))
            .count()
            + group.earlier.len()) as u64;
    }
    replayed.extend(earlier_ids.iter().copied());
    replayed.sort_unstable();
    changed.sort_unstable();
    counts.replayed = replayed.len() as u64;
    counts.replayed_earlier = earlier_ids.len() as u64;
    counts.skipped_changed = changed.len() as u64;

    let completed = time::OffsetDateTime::now_utc();
    let record = ReplayAudit {
        format: audit::AUDIT_FORMAT.to_owned(),
        replay_id: req.replay_id.clone(),
        database_secret_id: svc.database.secret_id().to_owned(),
        started_at,
        completed_at: format_time(completed),
        filter: FilterRecord {
            since: format_time(req.filter.since),
            until: format_time(req.filter.until),
            subscription_ids: req.filter.subscription_ids.clone(),
            limit: req.filter.limit,
        },
        spread_seconds: req.spread_seconds,
        batch_size: svc.config.batch_size,
        probe: ProbeRecord {
            method: svc.config.probe.method.clone(),
            path: svc.config.probe.path.clone(),
            timeout_ms: svc.config.probe.timeout_ms,
            concurrency: svc.config.probe.concurrency,
        },
        counts,
        endpoints,
        delivery_ids: replayed,
        skipped_delivery_ids: skipped_ids,
        changed_delivery_ids: changed,
    };
    let retain_until = svc.audit_retain_until(completed);
    let md_key = audit::markdown_key(&svc.config.audit_prefix, &req.replay_id);
    let json_key = audit::json_key(&svc.config.audit_prefix, &req.replay_id);
    svc.objects
        .put_locked(
            &md_key,
            record.to_markdown().into_bytes(),
            "text/markdown; charset=utf-8",
            retain_until,
        )
        .await?;
    let body = serde_json::to_vec(&record).expect("an audit record always serialises");
    // The JSON goes last: its presence marks a completed replay.
    svc.objects
        .put_locked(&json_key, body, "application/json", retain_until)
        .await?;
    let c = &record.counts;
    tracing::info!(replay_id = %record.replay_id, matched = c.matched, replayed = c.replayed, skipped_unhealthy = c.skipped_unhealthy, skipped_changed = c.skipped_changed, "replay done");
    let mut properties = serde_json::Map::new();
    properties.insert("replay_id".into(), serde_json::json!(record.replay_id));
    println!(
        "{}",
        crate::metrics::emf_line(
            ("Function", "dead-letter-replay"),
            vec![
                Metric::new("DeliveriesReplayed", "Count", c.replayed),
                Metric::new(
                    "DeliveriesSkipped",
                    "Count",
                    c.skipped_unhealthy + c.skipped_changed
                ),
                Metric::new("EndpointsUnhealthy", "Count", c.endpoints_unhealthy),
            ],
            properties,
            completed,
        )
    );
    timings.audit = ms_since(phase);
    let mut result = result_from_audit(svc, &record, false);
    result.timings_ms = Some(timings);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::spread_offsets;

    #[test]
    fn offsets_spread_evenly_from_zero() {
        assert_eq!(spread_offsets(4, 2), vec![0, 500_000, 1_000_000, 1_500_000]);
        assert_eq!(spread_offsets(3, 0), vec![0, 0, 0]);
        assert!(spread_offsets(0, 10).is_empty());
    }
}
