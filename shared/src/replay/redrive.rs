//! SQS dead-letter redrive. Native: `StartMessageMoveTask` (rate-limited; a task already running
//! is reported, not an error), list and cancel. Filtered: receive ten at a time, read each
//! message's `delivery_id`, delete the stale ones (delivery already succeeded), keep the ones whose
//! endpoint is unhealthy (or that name no delivery), send the rest to the source queue with body
//! and attributes (group and deduplication ids on FIFO), and delete from the DLQ only what was
//! sent. At least once: a message is deleted only after its copy was accepted by the source queue.

use super::ReplayError;
use super::probe::{EndpointProbe, ProbeResult, endpoint_key, probe_all};
use crate::catalyst_db::{CatalystDbError, deliveries};
use crate::queues::{MoveTask, Queues};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio_postgres::Client;

async fn queue_arn(queues: &dyn Queues, url: &str) -> Result<String, ReplayError> {
    queues
        .attribute(url, QueueAttributeName::QueueArn)
        .await?
        .ok_or_else(|| ReplayError::Misconfigured(format!("queue {url} reported no QueueArn")))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeRedriveResult {
    pub dlq_arn: String,
    /// `started`, or `already-running` (one move task per queue: the running one is reported).
    pub status: String,
    pub task_handle: Option<String>,
    pub rate_per_second: u32,
    pub running_task: Option<MoveTask>,
}

fn running(tasks: &[MoveTask]) -> Option<MoveTask> {
    tasks
        .iter()
        .find(|t| t.status.as_deref() == Some("RUNNING"))
        .cloned()
}

pub async fn start_native(
    queues: &dyn Queues,
    dlq_url: &str,
    destination_url: Option<&str>,
    rate: u32,
) -> Result<NativeRedriveResult, ReplayError> {
    let dlq_arn = queue_arn(queues, dlq_url).await?;
    let destination_arn = match destination_url {
        Some(url) => Some(queue_arn(queues, url).await?),
        None => None,
    };
    let already = |task: MoveTask| NativeRedriveResult {
        dlq_arn: dlq_arn.clone(),
        status: "already-running".to_owned(),
        task_handle: task.task_handle.clone(),
        rate_per_second: rate,
        running_task: Some(task),
    };
    if let Some(task) = running(&queues.list_moves(&dlq_arn).await?) {
        return Ok(already(task));
    }
    let rate_i32 = i32::try_from(rate).unwrap_or(500);
    match queues
        .start_move(&dlq_arn, destination_arn.as_deref(), rate_i32)
        .await
    {
        Ok(handle) => {
            tracing::info!(%dlq_arn, task_handle = %handle, rate, "message move task started");
            Ok(NativeRedriveResult {
                dlq_arn: dlq_arn.clone(),
                status: "started".to_owned(),
                task_handle: Some(handle),
                rate_per_second: rate,
                running_task: None,
            })
        }
        Err(err) => {
            // Another caller may have started one between the list and the start.
            if let Some(task) = running(&queues.list_moves(&dlq_arn).await?) {
                return Ok(already(task));
            }
            Err(err.into())
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveTaskList {
    pub dlq_arn: String,
    pub tasks: Vec<MoveTask>,
}

pub async fn list_native(queues: &dyn Queues, dlq_url: &str) -> Result<MoveTaskList, ReplayError> {
    let dlq_arn = queue_arn(queues, dlq_url).await?;
    let tasks = queues.list_moves(&dlq_arn).await?;
    Ok(MoveTaskList { dlq_arn, tasks })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelResult {
    pub task_handle: String,
    pub approximate_number_of_messages_moved: i64,
}

pub async fn cancel_native(
    queues: &dyn Queues,
    task_handle: &str,
) -> Result<CancelResult, ReplayError> {
    let moved = queues.cancel_move(task_handle).await?;
    Ok(CancelResult {
        task_handle: task_handle.to_owned(),
        approximate_number_of_messages_moved: moved,
    })
}

#[derive(Debug, Clone)]
pub struct FilteredOptions {
    pub max_messages: u32,
    pub visibility_timeout_seconds: u32,
    pub wait_seconds: u32,
    pub probe_concurrency: u32,
    /// The client-side bound on each delivery lookup ([`crate::postgres::PgBounds::statement_wait`]).
    pub statement_wait: Option<std::time::Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptMessage {
    pub message_id: String,
    pub delivery_id: Option<i64>,
    /// `no-delivery-id`, `unknown-delivery`, `endpoint-unhealthy: ...`, `send-failed`,
    /// `delete-failed` (a stale message whose delete failed).
    pub reason: String,
}

/// Kept messages listed in a result; all are counted.
const KEPT_LISTED: usize = 100;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilteredRedriveResult {
    pub dlq_url: String,
    pub source_queue_url: String,
    pub received: u64,
    /// Sent to the source queue and deleted from the DLQ.
    pub sent: u64,
    /// Sent, but the DLQ delete failed: the message is in both queues (delivered at least once).
    pub sent_not_deleted: u64,
    /// Deleted from the DLQ because the delivery had already succeeded.
    pub stale_deleted: u64,
    /// Left in the DLQ (made visible again at the end).
    pub kept: u64,
    pub kept_by_reason: BTreeMap<String, u64>,
    pub kept_messages: Vec<KeptMessage>,
    pub endpoints_probed: u64,
    /// SQS API calls this redrive made.
    pub api_calls: u64,
    /// Why the run stopped before the DLQ was empty, if it did.
    pub stopped: Option<String>,
}

/// The delivery id a message body carries: `{"delivery_id": 123, ...}` (number or digit string).
pub fn delivery_id(body: Option<&str>) -> Option<i64> {
    let value: serde_json::Value = serde_json::from_str(body?).ok()?;
    match value.get("delivery_id")? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn send_entry(index: usize, message: &Message, fifo: bool) -> Option<SendMessageBatchRequestEntry> {
    let attributes = message.attributes();
    let system = |name: MessageSystemAttributeName| attributes.and_then(|a| a.get(&name)).cloned();
    let mut entry = SendMessageBatchRequestEntry::builder()
        .id(format!("m{index}"))
        .message_body(message.body().unwrap_or_default())
        .set_message_attributes(
            message
                .message_attributes()
                .filter(|m| !m.is_empty())
                .cloned(),
        );
    if fifo {
        entry = entry
            .set_message_group_id(system(MessageSystemAttributeName::MessageGroupId))
            .set_message_deduplication_id(system(
                MessageSystemAttributeName::MessageDeduplicationId,
            ));
    }
    entry.build().ok()
}

/// Where the redrive reads each delivery's status and endpoint: the Catalyst database.
#[async_trait::async_trait]
trait DeliveryLookup: Send + Sync {
    /// `(id, status, endpoint_url)` of the given deliveries that exist.
    async fn statuses(&self, ids: &[i64]) -> Result<Vec<(i64, String, String)>, CatalystDbError>;
}

#[async_trait::async_trait]
impl DeliveryLookup for Client {
    async fn statuses(&self, ids: &[i64]) -> Result<Vec<(i64, String, String)>, CatalystDbError> {
        deliveries::statuses(self, ids).await
    }
}

struct Batch<'m> {
    message: &'m Message,
    delivery: Option<i64>,
}

/// A delivery's status and endpoint key, by delivery id.
type Statuses = HashMap<i64, (String, String)>;

/// The result so far, and the receipts of the messages that stay in the DLQ.
struct Tally {
    result: FilteredRedriveResult,
    kept_receipts: Vec<String>,
}

impl Tally {
    /// Leaves a message in the DLQ, counted under the reason's first word.
    fn keep(&mut self, message: &Message, delivery: Option<i64>, reason: String) {
        let result = &mut self.result;
        result.kept += 1;
        let key = reason.split(':').next().unwrap_or(&reason).to_owned();
        *result.kept_by_reason.entry(key).or_default() += 1;
        if result.kept_messages.len() < KEPT_LISTED {
            result.kept_messages.push(KeptMessage {
                message_id: message.message_id().unwrap_or_default().to_owned(),
                delivery_id: delivery,
                reason,
            });
        }
        if let Some(r) = message.receipt_handle() {
            self.kept_receipts.push(r.to_owned());
        }
    }
}

/// What to do with one received batch: send these entries (with their batch index), delete these
/// indexes from the DLQ (`true`: stale, the delivery already succeeded).
#[derive(Default)]
struct Sorted {
    to_send: Vec<(SendMessageBatchRequestEntry, usize)>,
    to_delete: Vec<(usize, bool)>,
}

pub async fn filtered(
    queues: &dyn Queues,
    client: &Client,
    probe: Arc<dyn EndpointProbe>,
    dlq_url: &str,
    source_url: &str,
    options: &FilteredOptions,
) -> Result<FilteredRedriveResult, ReplayError> {
    redrive_filtered(queues, client, probe, dlq_url, source_url, options).await
}

async fn redrive_filtered(
    queues: &dyn Queues,
    lookup: &dyn DeliveryLookup,
    probe: Arc<dyn EndpointProbe>,
    dlq_url: &str,
    source_url: &str,
    options: &FilteredOptions,
) -> Result<FilteredRedriveResult, ReplayError> {
    let mut tally = Tally {
        result: FilteredRedriveResult {
            dlq_url: dlq_url.to_owned(),
            source_queue_url: source_url.to_owned(),
            ..Default::default()
        },
        kept_receipts: Vec::new(),
    };
    refuse_unless_source_redrives_into(queues, dlq_url, source_url).await?;
    tally.result.api_calls += 2;
    let fifo = dlq_url.ends_with(".fifo");
    let visibility = i32::try_from(options.visibility_timeout_seconds).unwrap_or(300);
    let wait = i32::try_from(options.wait_seconds).unwrap_or(1);
    let mut health: HashMap<String, ProbeResult> = HashMap::new();

    while tally.result.received < u64::from(options.max_messages) {
        let Some(messages) =
            receive_batch(queues, dlq_url, options, visibility, wait, &mut tally).await
        else {
            break;
        };
        let batch: Vec<Batch> = messages
            .iter()
            .map(|m| Batch {
                message: m,
                delivery: delivery_id(m.body()),
            })
            .collect();
        let statuses = match look_up_deliveries(lookup, &batch, options.statement_wait).await {
            Ok(statuses) => statuses,
            Err(e) => {
                // Without the database nothing can be decided: the whole batch stays in the DLQ,
                // visible again at once, and the run stops.
                for b in &batch {
                    tally.keep(b.message, b.delivery, "database-unavailable".to_owned());
                }
                tally.result.stopped = Some(format!("delivery lookup failed: {e}"));
                break;
            }
        };
        probe_new_endpoints(&probe, &statuses, &mut health, options, &mut tally.result).await;
        let mut sorted = sort_batch(&batch, &statuses, &health, fifo, &mut tally);
        let sent = send_to_source(queues, source_url, &sorted.to_send, &batch, &mut tally).await;
        sorted
            .to_delete
            .extend(sent.into_iter().map(|i| (i, false)));
        delete_from_dlq(queues, dlq_url, &sorted.to_delete, &batch, &mut tally).await;
        if tally.result.stopped.is_some() {
            break;
        }
    }

    release_kept(queues, dlq_url, &mut tally).await;
    let result = tally.result;
    tracing::info!(
        received = result.received,
        sent = result.sent,
        stale = result.stale_deleted,
        kept = result.kept,
        api_calls = result.api_calls,
        "filtered redrive done"
    );
    Ok(result)
}

/// The source queue's redrive policy must name this DLQ: never redrive into another queue.
async fn refuse_unless_source_redrives_into(
    queues: &dyn Queues,
    dlq_url: &str,
    source_url: &str,
) -> Result<(), ReplayError> {
    let dlq_arn = queue_arn(queues, dlq_url).await?;
    let policy = queues
        .attribute(source_url, QueueAttributeName::RedrivePolicy)
        .await?;
    let target = policy
        .as_deref()
        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
        .and_then(|v| {
            v.get("deadLetterTargetArn")
                .and_then(|a| a.as_str())
                .map(str::to_owned)
        });
    if target.as_deref() != Some(dlq_arn.as_str()) {
        return Err(ReplayError::NotTheSourceQueue {
            source_queue: source_url.to_owned(),
            dlq_arn,
        });
    }
    Ok(())
}

/// The next messages from the DLQ, at most ten and no more than the run has left; None when the
/// DLQ is empty or the receive failed (which stops the run).
async fn receive_batch(
    queues: &dyn Queues,
    dlq_url: &str,
    options: &FilteredOptions,
    visibility: i32,
    wait: i32,
    tally: &mut Tally,
) -> Option<Vec<Message>> {
    let result = &mut tally.result;
    let want = (u64::from(options.max_messages) - result.received).min(10) as i32;
    let messages = match queues.receive(dlq_url, want, visibility, wait).await {
        Ok(m) => m,
        Err(e) => {
            result.stopped = Some(format!("receive failed: {e}"));
            return None;
        }
    };
    result.api_calls += 1;
    if messages.is_empty() {
        return None;
    }
    result.received += messages.len() as u64;
    Some(messages)
}

/// The status and endpoint of the deliveries the batch names, within the statement bound.
async fn look_up_deliveries(
    lookup: &dyn DeliveryLookup,
    batch: &[Batch<'_>],
    statement_wait: Option<std::time::Duration>,
) -> Result<Statuses, String> {
    let ids: Vec<i64> = batch.iter().filter_map(|b| b.delivery).collect();
    let lookup = lookup.statuses(&ids);
    let looked_up = match statement_wait {
        Some(wait) => tokio::time::timeout(wait, lookup)
            .await
            .map_err(|_| format!("no answer within {} ms", wait.as_millis())),
        None => Ok(lookup.await),
    };
    let rows = looked_up.and_then(|r| r.map_err(|e| crate::error_chain::error_chain(&e)))?;
    Ok(rows
        .into_iter()
        .map(|(id, status, url)| (id, (status, endpoint_key(&url))))
        .collect())
}

/// Probes the endpoints not probed yet in this run; each endpoint is probed once per run.
async fn probe_new_endpoints(
    probe: &Arc<dyn EndpointProbe>,
    statuses: &Statuses,
    health: &mut HashMap<String, ProbeResult>,
    options: &FilteredOptions,
    result: &mut FilteredRedriveResult,
) {
    let unknown: Vec<String> = statuses
        .values()
        .map(|(_, e)| e.clone())
        .filter(|e| !health.contains_key(e))
        .collect();
    if !unknown.is_empty() {
        let probed = probe_all(probe.clone(), unknown, options.probe_concurrency).await;
        result.endpoints_probed += probed.len() as u64;
        health.extend(probed);
    }
}

/// Decides each message: stale (delete), healthy endpoint (send), or keep with a reason.
fn sort_batch(
    batch: &[Batch<'_>],
    statuses: &Statuses,
    health: &HashMap<String, ProbeResult>,
    fifo: bool,
    tally: &mut Tally,
) -> Sorted {
    let mut sorted = Sorted::default();
    for (i, b) in batch.iter().enumerate() {
        let Some(id) = b.delivery else {
            tally.keep(b.message, None, "no-delivery-id".to_owned());
            continue;
        };
        let Some((status, endpoint)) = statuses.get(&id) else {
            tally.keep(b.message, Some(id), "unknown-delivery".to_owned());
            continue;
        };
        if status == "succeeded" {
            sorted.to_delete.push((i, true));
            continue;
        }
        match health.get(endpoint) {
            Some(p) if p.healthy => match send_entry(i, b.message, fifo) {
                Some(entry) => sorted.to_send.push((entry, i)),
                None => tally.keep(
                    b.message,
                    Some(id),
                    "send-failed: not a sendable message".to_owned(),
                ),
            },
            other => {
                let reason = other
                    .and_then(|p| p.reason.clone())
                    .unwrap_or_else(|| "not probed".to_owned());
                tally.keep(
                    b.message,
                    Some(id),
                    format!("endpoint-unhealthy: {endpoint}: {reason}"),
                );
            }
        }
    }
    sorted
}

/// Sends the entries to the source queue; returns the batch indexes the queue accepted. What it
/// did not accept stays in the DLQ; a failed call stops the run.
async fn send_to_source(
    queues: &dyn Queues,
    source_url: &str,
    to_send: &[(SendMessageBatchRequestEntry, usize)],
    batch: &[Batch<'_>],
    tally: &mut Tally,
) -> Vec<usize> {
    if to_send.is_empty() {
        return Vec::new();
    }
    let entries: Vec<SendMessageBatchRequestEntry> =
        to_send.iter().map(|(e, _)| e.clone()).collect();
    let sent = queues.send_batch(source_url, entries).await;
    tally.result.api_calls += 1;
    let sent_ids: Vec<String> = match sent {
        Ok(ids) => ids,
        Err(e) => {
            tally.result.stopped = Some(format!("send failed: {e}"));
            Vec::new()
        }
    };
    let mut accepted = Vec::new();
    for (entry, i) in to_send {
        if sent_ids.iter().any(|s| s == entry.id()) {
            accepted.push(*i);
        } else {
            let b = &batch[*i];
            tally.keep(b.message, b.delivery, "send-failed".to_owned());
        }
    }
    accepted
}

/// Deletes from the DLQ the stale messages and those the source queue accepted, and counts them.
/// A sent message whose delete failed is in both queues; a stale one stays in the DLQ.
async fn delete_from_dlq(
    queues: &dyn Queues,
    dlq_url: &str,
    to_delete: &[(usize, bool)],
    batch: &[Batch<'_>],
    tally: &mut Tally,
) {
    if to_delete.is_empty() {
        return;
    }
    let entries: Vec<DeleteMessageBatchRequestEntry> = to_delete
        .iter()
        .filter_map(|(i, _)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(format!("m{i}"))
                .receipt_handle(batch[*i].message.receipt_handle().unwrap_or_default())
                .build()
                .ok()
        })
        .collect();
    let deleted = queues.delete_batch(dlq_url, entries).await;
    tally.result.api_calls += 1;
    let deleted_ids = match deleted {
        Ok(ids) => ids,
        Err(e) => {
            tally.result.stopped = Some(format!("delete failed: {e}"));
            Vec::new()
        }
    };
    for (i, stale) in to_delete {
        let ok = deleted_ids.iter().any(|d| *d == format!("m{i}"));
        match (ok, stale) {
            (true, true) => tally.result.stale_deleted += 1,
            (true, false) => tally.result.sent += 1,
            (false, false) => tally.result.sent_not_deleted += 1,
            (false, true) => {
                let b = &batch[*i];
                tally.keep(b.message, b.delivery, "delete-failed".to_owned());
            }
        }
    }
}

/// What stays in the DLQ becomes visible again now rather than after the visibility timeout.
async fn release_kept(queues: &dyn Queues, dlq_url: &str, tally: &mut Tally) {
    for (n, chunk) in tally.kept_receipts.chunks(10).enumerate() {
        let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(format!("k{n}-{i}"))
                    .receipt_handle(r)
                    .visibility_timeout(0)
                    .build()
                    .ok()
            })
            .collect();
        tally.result.api_calls += 1;
        if let Err(e) = queues.release_batch(dlq_url, entries).await {
            tracing::warn!(error = %e, "could not make kept messages visible again; they reappear after the visibility timeout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queues::memory::MemoryQueues;
    use std::collections::HashSet;

    const DLQ: &str = "https://sqs.memory/000000000000/orders-dlq";
    const SOURCE: &str = "https://sqs.memory/000000000000/orders";
    const HEALTHY: &str = "https://ok.example/hook";
    const DOWN: &str = "https://down.example/hook";

    /// The deliveries table: id → (status, endpoint url).
    struct Table(HashMap<i64, (&'static str, &'static str)>);

    #[async_trait::async_trait]
    impl DeliveryLookup for Table {
        async fn statuses(
            &self,
            ids: &[i64],
        ) -> Result<Vec<(i64, String, String)>, CatalystDbError> {
            Ok(ids
                .iter()
                .filter_map(|id| {
                    let (status, url) = self.0.get(id)?;
                    Some((*id, (*status).to_owned(), (*url).to_owned()))
                })
                .collect())
        }
    }

    /// A database that never answers.
    struct Frozen;

    #[async_trait::async_trait]
    impl DeliveryLookup for Frozen {
        async fn statuses(
            &self,
            _ids: &[i64],
        ) -> Result<Vec<(i64, String, String)>, CatalystDbError> {
            std::future::pending().await
        }
    }

    /// Endpoints answer healthy when listed.
    struct Probe(HashSet<&'static str>);

    #[async_trait::async_trait]
    impl EndpointProbe for Probe {
        async fn probe(&self, endpoint: &str) -> ProbeResult {
            let healthy = self.0.contains(endpoint);
            ProbeResult {
                endpoint: endpoint.to_owned(),
                healthy,
                status: Some(if healthy { 200 } else { 503 }),
                reason: (!healthy).then(|| "server-error".to_owned()),
                elapsed_ms: 1,
            }
        }
    }

    fn probe() -> Arc<dyn EndpointProbe> {
        Arc::new(Probe(HashSet::from([HEALTHY])))
    }

    fn options() -> FilteredOptions {
        FilteredOptions {
            max_messages: 100,
            visibility_timeout_seconds: 300,
            wait_seconds: 0,
            probe_concurrency: 4,
            statement_wait: Some(std::time::Duration::from_millis(50)),
        }
    }

    /// A DLQ and the source queue whose redrive policy names it.
    fn queues() -> MemoryQueues {
        let queues = MemoryQueues::new();
        let dlq_arn = queues.create(DLQ);
        queues.create(SOURCE);
        queues.set_redrive_policy(SOURCE, &dlq_arn);
        queues
    }

    fn body(id: i64) -> String {
        format!(r#"{{"delivery_id": {id}}}"#)
    }

    fn deliveries() -> Table {
        Table(HashMap::from([
            (1, ("dead_lettered", HEALTHY)),
            (2, ("succeeded", HEALTHY)),
            (3, ("dead_lettered", DOWN)),
        ]))
    }

    #[tokio::test]
    async fn sends_the_healthy_deletes_the_stale_and_keeps_the_rest_visible() {
        let queues = queues();
        for id in [1, 2, 3, 4] {
            queues.push(DLQ, &body(id));
        }
        queues.push(DLQ, "not json");

        let result = redrive_filtered(&queues, &deliveries(), probe(), DLQ, SOURCE, &options())
            .await
            .unwrap();

        assert_eq!(queues.bodies(SOURCE), [body(1)]);
        assert_eq!(
            queues.bodies(DLQ),
            [body(3), body(4), "not json".to_owned()]
        );
        assert_eq!(queues.in_flight(DLQ), 0, "kept messages are visible again");
        assert_eq!(
            (
                result.received,
                result.sent,
                result.stale_deleted,
                result.kept
            ),
            (5, 1, 1, 3)
        );
        assert_eq!(
            result.kept_by_reason,
            BTreeMap::from([
                ("endpoint-unhealthy".to_owned(), 1),
                ("no-delivery-id".to_owned(), 1),
                ("unknown-delivery".to_owned(), 1),
            ])
        );
        assert_eq!(result.endpoints_probed, 2);
        assert_eq!(result.stopped, None);
    }

    #[tokio::test]
    async fn refuses_a_source_queue_whose_redrive_policy_names_another_dlq() {
        let queues = queues();
        let other = queues.create("https://sqs.memory/000000000000/other-dlq");
        queues.set_redrive_policy(SOURCE, &other);
        queues.push(DLQ, &body(1));

        let err = redrive_filtered(&queues, &deliveries(), probe(), DLQ, SOURCE, &options())
            .await
            .unwrap_err();

        assert!(
            matches!(err, ReplayError::NotTheSourceQueue { .. }),
            "{err}"
        );
        assert_eq!(queues.bodies(DLQ), [body(1)]);
        assert_eq!(queues.in_flight(DLQ), 0, "nothing was received");
        assert!(queues.bodies(SOURCE).is_empty());
    }

    #[tokio::test]
    async fn a_failed_send_keeps_the_messages_in_the_dlq_and_stops() {
        let queues = queues();
        for id in [1, 2] {
            queues.push(DLQ, &body(id));
        }
        queues.fail_next("sqs:SendMessageBatch");

        let result = redrive_filtered(&queues, &deliveries(), probe(), DLQ, SOURCE, &options())
            .await
            .unwrap();

        assert!(queues.bodies(SOURCE).is_empty());
        assert_eq!(
            queues.bodies(DLQ),
            [body(1)],
            "the stale one is still deleted"
        );
        assert_eq!(queues.in_flight(DLQ), 0);
        assert_eq!((result.sent, result.stale_deleted), (0, 1));
        assert_eq!(result.kept_by_reason.get("send-failed"), Some(&1));
        assert!(
            result
                .stopped
                .as_deref()
                .is_some_and(|s| s.starts_with("send failed"))
        );
    }

    #[tokio::test]
    async fn without_an_answer_from_the_database_the_batch_stays_and_the_run_stops() {
        let queues = queues();
        for id in [1, 2, 3] {
            queues.push(DLQ, &body(id));
        }

        let result = redrive_filtered(&queues, &Frozen, probe(), DLQ, SOURCE, &options())
            .await
            .unwrap();

        assert_eq!(queues.bodies(DLQ), [body(1), body(2), body(3)]);
        assert_eq!(queues.in_flight(DLQ), 0);
        assert!(queues.bodies(SOURCE).is_empty());
        assert_eq!(result.kept_by_reason.get("database-unavailable"), Some(&3));
        assert_eq!(result.received, 3, "one batch, then the run stopped");
        assert!(
            result
                .stopped
                .as_deref()
                .is_some_and(|s| s.contains("no answer within 50 ms"))
        );
    }

    #[tokio::test]
    async fn stops_at_max_messages() {
        let queues = queues();
        for _ in 0..15 {
            queues.push(DLQ, &body(1));
        }
        let options = FilteredOptions {
            max_messages: 12,
            ..options()
        };

        let result = redrive_filtered(&queues, &deliveries(), probe(), DLQ, SOURCE, &options)
            .await
            .unwrap();

        assert_eq!((result.received, result.sent), (12, 12));
        assert_eq!(queues.bodies(DLQ).len(), 3);
        assert_eq!(queues.bodies(SOURCE).len(), 12);
        assert_eq!(result.endpoints_probed, 1, "one probe per endpoint per run");
    }

    #[tokio::test]
    async fn a_fifo_redrive_keeps_the_message_group() {
        let queues = MemoryQueues::new();
        let dlq = "https://sqs.memory/000000000000/orders-dlq.fifo";
        let source = "https://sqs.memory/000000000000/orders.fifo";
        let dlq_arn = queues.create(dlq);
        queues.create(source);
        queues.set_redrive_policy(source, &dlq_arn);
        let entry = SendMessageBatchRequestEntry::builder()
            .id("seed")
            .message_body(body(1))
            .message_group_id("subscription-9")
            .message_deduplication_id("delivery-1")
            .build()
            .unwrap();
        queues.send_batch(dlq, vec![entry]).await.unwrap();

        let result = redrive_filtered(&queues, &deliveries(), probe(), dlq, source, &options())
            .await
            .unwrap();

        assert_eq!(result.sent, 1);
        assert_eq!(
            queues.fifo_ids(source),
            [(
                Some("subscription-9".to_owned()),
                Some("delivery-1".to_owned())
            )]
        );
    }

    #[tokio::test]
    async fn native_redrive_starts_one_task_and_reports_the_running_one() {
        let queues = queues();
        queues.push(DLQ, &body(1));

        let first = start_native(&queues, DLQ, None, 25).await.unwrap();
        let second = start_native(&queues, DLQ, Some(SOURCE), 50).await.unwrap();

        assert_eq!(first.status, "started");
        assert_eq!(second.status, "already-running");
        assert_eq!(second.task_handle, first.task_handle);
        let tasks = queues.move_tasks();
        assert_eq!(tasks.len(), 1, "no second task");
        assert_eq!(tasks[0].max_number_of_messages_per_second, Some(25));

        let handle = first.task_handle.unwrap();
        cancel_native(&queues, &handle).await.unwrap();
        let third = start_native(&queues, DLQ, None, 10).await.unwrap();
        assert_eq!(third.status, "started", "a cancelled task is not running");
        assert_eq!(list_native(&queues, DLQ).await.unwrap().tasks.len(), 2);
    }

    #[test]
    fn reads_the_delivery_id() {
        assert_eq!(
            delivery_id(Some(r#"{"delivery_id": 42, "event": "x"}"#)),
            Some(42)
        );
        assert_eq!(delivery_id(Some(r#"{"delivery_id": "43"}"#)), Some(43));
        assert_eq!(delivery_id(Some(r#"{"id": 42}"#)), None);
        assert_eq!(delivery_id(Some("not json")), None);
        assert_eq!(delivery_id(None), None);
    }

    #[test]
    fn fifo_sends_keep_group_and_deduplication_ids_and_attributes() {
        use aws_sdk_sqs::types::MessageAttributeValue;
        let message = Message::builder()
            .message_id("m-1")
            .receipt_handle("r-1")
            .body(r#"{"delivery_id": 5}"#)
            .attributes(MessageSystemAttributeName::MessageGroupId, "subscription-9")
            .attributes(
                MessageSystemAttributeName::MessageDeduplicationId,
                "delivery-5",
            )
            .message_attributes(
                "trace",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("t-1")
                    .build()
                    .unwrap(),
            )
            .build();
        let entry = send_entry(3, &message, true).unwrap();
        assert_eq!(entry.id(), "m3");
        assert_eq!(entry.message_body(), r#"{"delivery_id": 5}"#);
        assert_eq!(entry.message_group_id(), Some("subscription-9"));
        assert_eq!(entry.message_deduplication_id(), Some("delivery-5"));
        assert_eq!(
            entry
                .message_attributes()
                .and_then(|a| a.get("trace"))
                .and_then(|v| v.string_value()),
            Some("t-1")
        );
        let standard = send_entry(0, &message, false).unwrap();
        assert_eq!(
            (
                standard.message_group_id(),
                standard.message_deduplication_id()
            ),
            (None, None)
        );
    }
}
