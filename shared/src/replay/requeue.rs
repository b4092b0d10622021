//! The `replay` action: the runbook's webhook replay. Probe each distinct endpoint once; set the deliveries of
//! healthy endpoints back to `pending` with `next_attempt_at` = now (optionally spread), in
//! bounded batches that each are one guarded statement, journaled in the database in that same
//! statement; write the audit record from the journal, so it lists what every attempt changed.

use super::audit::{self, EndpointRecord, FilterRecord, ProbeRecord, ReplayAudit, ReplayCounts};
use super::probe::{ProbeResult, endpoint_key, probe_all};
use super::{DeadLetterReplay, ReplayError, bounded, now_text};
use crate::catalyst_db::deliveries::{self, DeadLetterFilter};
use crate::input::format_time;
use crate::metrics::Metric;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use tokio_postgres::Client;

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

/// Each endpoint's verdict, and the deliveries it puts on either side.
struct Triage {
    /// Sorted: the deliveries of healthy endpoints, to requeue.
    healthy_ids: Vec<i64>,
    /// Sorted: the deliveries of unhealthy endpoints, left dead-lettered.
    skipped_ids: Vec<i64>,
    /// In the order of the groups they were built from.
    endpoints: Vec<EndpointRecord>,
}

/// What this attempt's requeue batches changed.
struct Requeued {
    /// Set back to `pending` by this attempt.
    replayed: Vec<i64>,
    /// No longer dead-lettered when their batch ran (changed since the query): left alone.
    changed: Vec<i64>,
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
    let earlier = earlier_attempts(svc, &client, req).await?;
    let earlier_ids: HashSet<i64> = earlier.iter().map(|j| j.id).collect();
    let rows = candidates(svc, &client, req, &earlier_ids).await?;
    timings.query = ms_since(phase);
    let total = rows.len() as u64 + earlier.len() as u64;
    if total > u64::from(req.max_deliveries) {
        return Err(ReplayError::TooManyDeliveries {
            matched: total,
            max: req.max_deliveries,
        });
    }
    let mut groups = group_by_endpoint(&rows);
    let phase = std::time::Instant::now();
    let probes = probe_all(
        svc.probe.clone(),
        groups.keys().cloned(),
        svc.config.probe.concurrency,
    )
    .await;
    timings.probe = ms_since(phase);
    // Joined after probing: an endpoint seen only in earlier attempts is not probed again.
    add_earlier_attempts(&mut groups, &earlier);
    let Triage {
        healthy_ids,
        skipped_ids,
        mut endpoints,
    } = triage(&groups, &probes);
    let mut counts = ReplayCounts {
        matched: total,
        skipped_unhealthy: skipped_ids.len() as u64,
        endpoints: endpoints.len() as u64,
        endpoints_unhealthy: endpoints.iter().filter(|e| !e.healthy).count() as u64,
        ..ReplayCounts::default()
    };
    if req.dry_run {
        return Ok(dry_run_result(
            req,
            counts,
            endpoints,
            &healthy_ids,
            started_at,
            timings,
        ));
    }

    let phase = std::time::Instant::now();
    let Requeued {
        mut replayed,
        mut changed,
    } = requeue_in_batches(svc, &client, req, &healthy_ids, &mut counts).await?;
    timings.requeue = ms_since(phase);
    let phase = std::time::Instant::now();
    count_replayed_per_endpoint(&mut endpoints, &groups, &replayed);
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
    write_audit(svc, &record, completed).await?;
    emit_metrics(&record, completed);
    timings.audit = ms_since(phase);
    let mut result = result_from_audit(svc, &record, false);
    result.timings_ms = Some(timings);
    Ok(result)
}

/// What earlier attempts of this replay id requeued before they stopped: those rows are
/// recorded, and never requeued again under this id. A dry run writes nothing, not even the
/// journal table, so it has none.
async fn earlier_attempts(
    svc: &DeadLetterReplay,
    client: &Client,
    req: &ReplayRequest,
) -> Result<Vec<deliveries::Journaled>, ReplayError> {
    if req.dry_run {
        return Ok(Vec::new());
    }
    bounded(
        &svc.database,
        "create the replay journal",
        deliveries::ensure_journal(client),
    )
    .await?;
    bounded(
        &svc.database,
        "read the replay journal",
        deliveries::journaled(client, &req.replay_id),
    )
    .await
}

/// The dead-lettered deliveries the filter matches, less those an earlier attempt requeued.
async fn candidates(
    svc: &DeadLetterReplay,
    client: &Client,
    req: &ReplayRequest,
    earlier_ids: &HashSet<i64>,
) -> Result<Vec<deliveries::DeadLetter>, ReplayError> {
    let mut rows = bounded(
        &svc.database,
        "dead-letter query",
        deliveries::dead_letters(client, &req.filter),
    )
    .await?;
    rows.retain(|r| !earlier_ids.contains(&r.id));
    Ok(rows)
}

/// One group per endpoint, so each endpoint is probed once whatever its number of deliveries.
fn group_by_endpoint(rows: &[deliveries::DeadLetter]) -> BTreeMap<String, EndpointGroup> {
    let mut groups: BTreeMap<String, EndpointGroup> = BTreeMap::new();
    for row in rows {
        let group = groups.entry(endpoint_key(&row.endpoint_url)).or_default();
        group.subscriptions.insert(row.subscription_id);
        group.ids.push(row.id);
    }
    groups
}

/// Earlier attempts' deliveries join their endpoint's record, so the audit lists them.
fn add_earlier_attempts(
    groups: &mut BTreeMap<String, EndpointGroup>,
    earlier: &[deliveries::Journaled],
) {
    for j in earlier {
        let endpoint = j
            .endpoint_url
            .as_deref()
            .map(endpoint_key)
            .unwrap_or_else(|| "(delivery since deleted)".to_owned());
        let group = groups.entry(endpoint).or_default();
        group.subscriptions.extend(j.subscription_id);
        group.earlier.push(j.id);
    }
}

/// Each endpoint's record and which side its deliveries go to. An endpoint known only from
/// earlier attempts was healthy when they requeued it, and counts as healthy.
fn triage(
    groups: &BTreeMap<String, EndpointGroup>,
    probes: &BTreeMap<String, ProbeResult>,
) -> Triage {
    let mut healthy_ids = Vec::new();
    let mut skipped_ids = Vec::new();
    let mut endpoints = Vec::with_capacity(groups.len());
    for (endpoint, group) in groups {
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
    Triage {
        healthy_ids,
        skipped_ids,
        endpoints,
    }
}

/// What a replay would do, with nothing written.
fn dry_run_result(
    req: &ReplayRequest,
    counts: ReplayCounts,
    endpoints: Vec<EndpointRecord>,
    healthy_ids: &[i64],
    started_at: String,
    timings: PhaseTimings,
) -> ReplayResult {
    ReplayResult {
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
    }
}

/// Requeues `healthy_ids` in batches of the configured size, each one guarded statement that
/// journals what it changed, so a crash between batches loses nothing and repeats nothing.
async fn requeue_in_batches(
    svc: &DeadLetterReplay,
    client: &Client,
    req: &ReplayRequest,
    healthy_ids: &[i64],
    counts: &mut ReplayCounts,
) -> Result<Requeued, ReplayError> {
    let offsets = spread_offsets(healthy_ids.len(), req.spread_seconds);
    let batch = svc.config.batch_size.max(1) as usize;
    let mut replayed = Vec::with_capacity(healthy_ids.len());
    let mut changed = Vec::new();
    for (ids, offsets) in healthy_ids.chunks(batch).zip(offsets.chunks(batch)) {
        let done = bounded(
            &svc.database,
            "requeue batch",
            deliveries::requeue(client, &req.replay_id, ids, offsets),
        )
        .await?;
        counts.batches += 1;
        // The guard skips rows no longer dead-lettered: they changed since the query.
        if done.len() != ids.len() {
            let done_set: HashSet<i64> = done.iter().copied().collect();
            changed.extend(ids.iter().copied().filter(|id| !done_set.contains(id)));
        }
        replayed.extend(done);
    }
    Ok(Requeued { replayed, changed })
}

/// Each endpoint's replayed count: this attempt's requeued deliveries and all earlier ones.
fn count_replayed_per_endpoint(
    endpoints: &mut [EndpointRecord],
    groups: &BTreeMap<String, EndpointGroup>,
    replayed: &[i64],
) {
    let replayed_set: HashSet<i64> = replayed.iter().copied().collect();
    for (record, group) in endpoints.iter_mut().zip(groups.values()) {
        record.replayed = (group
            .ids
            .iter()
            .filter(|id| replayed_set.contains(id))
            .count()
            + group.earlier.len()) as u64;
    }
}

/// The audit record, locked until its retention ends: Markdown for the incident ticket, then
/// the JSON, whose presence marks a completed replay (so it goes last).
async fn write_audit(
    svc: &DeadLetterReplay,
    record: &ReplayAudit,
    completed: time::OffsetDateTime,
) -> Result<(), ReplayError> {
    let retain_until = svc.audit_retain_until(completed);
    let md_key = audit::markdown_key(&svc.config.audit_prefix, &record.replay_id);
    let json_key = audit::json_key(&svc.config.audit_prefix, &record.replay_id);
    svc.objects
        .put_locked(
            &md_key,
            record.to_markdown().into_bytes(),
            "text/markdown; charset=utf-8",
            retain_until,
        )
        .await?;
    let body = serde_json::to_vec(record).expect("an audit record always serialises");
    svc.objects
        .put_locked(&json_key, body, "application/json", retain_until)
        .await?;
    Ok(())
}

/// The log line and the CloudWatch EMF metrics of a finished replay.
fn emit_metrics(record: &ReplayAudit, completed: time::OffsetDateTime) {
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
