//! SQS dead-letter redrive. Native: `StartMessageMoveTask` (rate-limited; a task already running
//! is reported, not an error), list and cancel. Filtered: receive ten at a time, read each
//! message's `delivery_id`, delete the stale ones (delivery already succeeded), keep the ones whose
//! endpoint is unhealthy (or that name no delivery), send the rest to the source queue with body
//! and attributes (group and deduplication ids on FIFO), and delete from the DLQ only what was
//! sent. At least once: a message is deleted only after its copy was accepted by the source queue.

use super::ReplayError;
use super::probe::{EndpointProbe, endpoint_key, probe_all};
use crate::aws_error::{AwsCallError, classify};
use crate::catalyst_db::deliveries;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio_postgres::Client;

/// The outcome of one batch call: the entry ids that succeeded.
pub type BatchOk = Vec<String>;

/// The SQS calls redrive and flush make; the implementation is [`SqsQueues`].
#[async_trait::async_trait]
pub trait QueueApi: Send + Sync {
    async fn attribute(
        &self,
        queue_url: &str,
        name: QueueAttributeName,
    ) -> Result<Option<String>, AwsCallError>;
    async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        visibility_timeout: i32,
        wait_seconds: i32,
    ) -> Result<Vec<Message>, AwsCallError>;
    async fn send_batch(
        &self,
        queue_url: &str,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError>;
    async fn delete_batch(
        &self,
        queue_url: &str,
        entries: Vec<DeleteMessageBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError>;
    async fn release_batch(
        &self,
        queue_url: &str,
        entries: Vec<ChangeMessageVisibilityBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError>;
    async fn tags(&self, queue_url: &str) -> Result<HashMap<String, String>, AwsCallError>;
    /// `Ok(false)` when a purge is already in progress (the 60-second rule).
    async fn purge(&self, queue_url: &str) -> Result<bool, AwsCallError>;
    async fn start_move(
        &self,
        source_arn: &str,
        destination_arn: Option<&str>,
        rate: i32,
    ) -> Result<String, AwsCallError>;
    async fn list_moves(&self, source_arn: &str) -> Result<Vec<MoveTask>, AwsCallError>;
    async fn cancel_move(&self, task_handle: &str) -> Result<i64, AwsCallError>;
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveTask {
    pub task_handle: Option<String>,
    pub status: Option<String>,
    pub source_arn: Option<String>,
    pub destination_arn: Option<String>,
    pub max_number_of_messages_per_second: Option<i32>,
    pub approximate_number_of_messages_moved: i64,
    pub approximate_number_of_messages_to_move: Option<i64>,
    pub failure_reason: Option<String>,
    pub started_timestamp: i64,
}

pub struct SqsQueues {
    client: aws_sdk_sqs::Client,
}

impl SqsQueues {
    pub fn new(client: aws_sdk_sqs::Client) -> Self {
        Self { client }
    }
}

fn batch_ok(
    successful: impl Iterator<Item = String>,
    failed: &[aws_sdk_sqs::types::BatchResultErrorEntry],
    op: &str,
) -> BatchOk {
    for f in failed {
        tracing::warn!(
            operation = op,
            entry = f.id(),
            code = f.code(),
            sender_fault = f.sender_fault(),
            "batch entry failed"
        );
    }
    successful.collect()
}

#[async_trait::async_trait]
impl QueueApi for SqsQueues {
    async fn attribute(
        &self,
        queue_url: &str,
        name: QueueAttributeName,
    ) -> Result<Option<String>, AwsCallError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(name.clone())
            .send()
            .await
            .map_err(|e| classify("sqs:GetQueueAttributes", e))?;
        Ok(out.attributes().and_then(|a| a.get(&name)).cloned())
    }

    async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        visibility_timeout: i32,
        wait_seconds: i32,
    ) -> Result<Vec<Message>, AwsCallError> {
        let out = self
            .client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(max)
            .visibility_timeout(visibility_timeout)
            .wait_time_seconds(wait_seconds)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| classify("sqs:ReceiveMessage", e))?;
        Ok(out.messages.unwrap_or_default())
    }

    async fn send_batch(
        &self,
        queue_url: &str,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError> {
        let out = self
            .client
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify("sqs:SendMessageBatch", e))?;
        Ok(batch_ok(
            out.successful().iter().map(|s| s.id().to_owned()),
            out.failed(),
            "SendMessageBatch",
        ))
    }

    async fn delete_batch(
        &self,
        queue_url: &str,
        entries: Vec<DeleteMessageBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError> {
        let out = self
            .client
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify("sqs:DeleteMessageBatch", e))?;
        Ok(batch_ok(
            out.successful().iter().map(|s| s.id().to_owned()),
            out.failed(),
            "DeleteMessageBatch",
        ))
    }

    async fn release_batch(
        &self,
        queue_url: &str,
        entries: Vec<ChangeMessageVisibilityBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError> {
        let out = self
            .client
            .change_message_visibility_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify("sqs:ChangeMessageVisibilityBatch", e))?;
        Ok(batch_ok(
            out.successful().iter().map(|s| s.id().to_owned()),
            out.failed(),
            "ChangeMessageVisibilityBatch",
        ))
    }

    async fn tags(&self, queue_url: &str) -> Result<HashMap<String, String>, AwsCallError> {
        let out = self
            .client
            .list_queue_tags()
            .queue_url(queue_url)
            .send()
            .await
            .map_err(|e| classify("sqs:ListQueueTags", e))?;
        Ok(out.tags.unwrap_or_default())
    }

    async fn purge(&self, queue_url: &str) -> Result<bool, AwsCallError> {
        match self.client.purge_queue().queue_url(queue_url).send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_purge_queue_in_progress()) =>
            {
                Ok(false)
            }
            Err(e) => Err(classify("sqs:PurgeQueue", e)),
        }
    }

    async fn start_move(
        &self,
        source_arn: &str,
        destination_arn: Option<&str>,
        rate: i32,
    ) -> Result<String, AwsCallError> {
        let out = self
            .client
            .start_message_move_task()
            .source_arn(source_arn)
            .set_destination_arn(destination_arn.map(str::to_owned))
            .max_number_of_messages_per_second(rate)
            .send()
            .await
            .map_err(|e| classify("sqs:StartMessageMoveTask", e))?;
        Ok(out.task_handle().unwrap_or_default().to_owned())
    }

    async fn list_moves(&self, source_arn: &str) -> Result<Vec<MoveTask>, AwsCallError> {
        let out = self
            .client
            .list_message_move_tasks()
            .source_arn(source_arn)
            .max_results(10)
            .send()
            .await
            .map_err(|e| classify("sqs:ListMessageMoveTasks", e))?;
        Ok(out
            .results()
            .iter()
            .map(|r| MoveTask {
                task_handle: r.task_handle().map(str::to_owned),
                status: r.status().map(str::to_owned),
                source_arn: r.source_arn().map(str::to_owned),
                destination_arn: r.destination_arn().map(str::to_owned),
                max_number_of_messages_per_second: r.max_number_of_messages_per_second(),
                approximate_number_of_messages_moved: r.approximate_number_of_messages_moved(),
                approximate_number_of_messages_to_move: r.approximate_number_of_messages_to_move(),
                failure_reason: r.failure_reason().map(str::to_owned),
                started_timestamp: r.started_timestamp(),
            })
            .collect())
    }

    async fn cancel_move(&self, task_handle: &str) -> Result<i64, AwsCallError> {
        let out = self
            .client
            .cancel_message_move_task()
            .task_handle(task_handle)
            .send()
            .await
            .map_err(|e| classify("sqs:CancelMessageMoveTask", e))?;
        Ok(out.approximate_number_of_messages_moved())
    }
}

async fn queue_arn(queues: &dyn QueueApi, url: &str) -> Result<String, ReplayError> {
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
    queues: &dyn QueueApi,
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

pub async fn list_native(
    queues: &dyn QueueApi,
    dlq_url: &str,
) -> Result<MoveTaskList, ReplayError> {
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
    queues: &dyn QueueApi,
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

struct Batch<'m> {
    message: &'m Message,
    delivery: Option<i64>,
}

pub async fn filtered(
    queues: &dyn QueueApi,
    client: &Client,
    probe: Arc<dyn EndpointProbe>,
    dlq_url: &str,
    source_url: &str,
    options: &FilteredOptions,
) -> Result<FilteredRedriveResult, ReplayError> {
    let mut result = FilteredRedriveResult {
        dlq_url: dlq_url.to_owned(),
        source_queue_url: source_url.to_owned(),
        ..Default::default()
    };
    // The source queue's redrive policy must name this DLQ: never redrive into another queue.
    let dlq_arn = queue_arn(queues, dlq_url).await?;
    let policy = queues
        .attribute(source_url, QueueAttributeName::RedrivePolicy)
        .await?;
    result.api_calls += 2;
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
    let fifo = dlq_url.ends_with(".fifo");
    let visibility = i32::try_from(options.visibility_timeout_seconds).unwrap_or(300);
    let wait = i32::try_from(options.wait_seconds).unwrap_or(1);
    let mut health: HashMap<String, super::probe::ProbeResult> = HashMap::new();
    let mut kept_receipts: Vec<String> = Vec::new();
    let keep = |result: &mut FilteredRedriveResult,
                message: &Message,
                delivery: Option<i64>,
                reason: String,
                receipts: &mut Vec<String>| {
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
            receipts.push(r.to_owned());
        }
    };

    while result.received < u64::from(options.max_messages) {
        let want = (u64::from(options.max_messages) - result.received).min(10) as i32;
        let messages = match queues.receive(dlq_url, want, visibility, wait).await {
            Ok(m) => m,
            Err(e) => {
                result.stopped = Some(format!("receive failed: {e}"));
                break;
            }
        };
        result.api_calls += 1;
        if messages.is_empty() {
            break;
        }
        result.received += messages.len() as u64;
        let batch: Vec<Batch> = messages
            .iter()
            .map(|m| Batch {
                message: m,
                delivery: delivery_id(m.body()),
            })
            .collect();
        let ids: Vec<i64> = batch.iter().filter_map(|b| b.delivery).collect();
        let lookup = deliveries::statuses(client, &ids);
        let looked_up = match options.statement_wait {
            Some(wait) => tokio::time::timeout(wait, lookup)
                .await
                .map_err(|_| format!("no answer within {} ms", wait.as_millis())),
            None => Ok(lookup.await),
        };
        let statuses: HashMap<i64, (String, String)> =
            match looked_up.and_then(|r| r.map_err(|e| crate::error_chain::error_chain(&e))) {
                Ok(rows) => rows
                    .into_iter()
                    .map(|(id, status, url)| (id, (status, endpoint_key(&url))))
                    .collect(),
                Err(e) => {
                    // Without the database nothing can be decided: the whole batch stays in the DLQ,
                    // visible again at once, and the run stops.
                    for b in &batch {
                        keep(
                            &mut result,
                            b.message,
                            b.delivery,
                            "database-unavailable".to_owned(),
                            &mut kept_receipts,
                        );
                    }
                    result.stopped = Some(format!("delivery lookup failed: {e}"));
                    break;
                }
            };
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

        let mut to_send: Vec<(SendMessageBatchRequestEntry, usize)> = Vec::new();
        let mut to_delete: Vec<(usize, bool)> = Vec::new(); // (index, stale)
        for (i, b) in batch.iter().enumerate() {
            let Some(id) = b.delivery else {
                keep(
                    &mut result,
                    b.message,
                    None,
                    "no-delivery-id".to_owned(),
                    &mut kept_receipts,
                );
                continue;
            };
            let Some((status, endpoint)) = statuses.get(&id) else {
                keep(
                    &mut result,
                    b.message,
                    Some(id),
                    "unknown-delivery".to_owned(),
                    &mut kept_receipts,
                );
                continue;
            };
            if status == "succeeded" {
                to_delete.push((i, true));
                continue;
            }
            match health.get(endpoint) {
                Some(p) if p.healthy => match send_entry(i, b.message, fifo) {
                    Some(entry) => to_send.push((entry, i)),
                    None => keep(
                        &mut result,
                        b.message,
                        Some(id),
                        "send-failed: not a sendable message".to_owned(),
                        &mut kept_receipts,
                    ),
                },
                other => {
                    let reason = other
                        .and_then(|p| p.reason.clone())
                        .unwrap_or_else(|| "not probed".to_owned());
                    keep(
                        &mut result,
                        b.message,
                        Some(id),
                        format!("endpoint-unhealthy: {endpoint}: {reason}"),
                        &mut kept_receipts,
                    );
                }
            }
        }

        if !to_send.is_empty() {
            let entries: Vec<SendMessageBatchRequestEntry> =
                to_send.iter().map(|(e, _)| e.clone()).collect();
            let sent = queues.send_batch(source_url, entries).await;
            result.api_calls += 1;
            let sent_ids: Vec<String> = match sent {
                Ok(ids) => ids,
                Err(e) => {
                    result.stopped = Some(format!("send failed: {e}"));
                    Vec::new()
                }
            };
            for (entry, i) in &to_send {
                if sent_ids.iter().any(|s| s == entry.id()) {
                    to_delete.push((*i, false));
                } else {
                    let b = &batch[*i];
                    keep(
                        &mut result,
                        b.message,
                        b.delivery,
                        "send-failed".to_owned(),
                        &mut kept_receipts,
                    );
                }
            }
        }

        if !to_delete.is_empty() {
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
            result.api_calls += 1;
            let deleted_ids = match deleted {
                Ok(ids) => ids,
                Err(e) => {
                    result.stopped = Some(format!("delete failed: {e}"));
                    Vec::new()
                }
            };
            for (i, stale) in &to_delete {
                let ok = deleted_ids.iter().any(|d| *d == format!("m{i}"));
                match (ok, stale) {
                    (true, true) => result.stale_deleted += 1,
                    (true, false) => result.sent += 1,
                    (false, false) => result.sent_not_deleted += 1,
                    (false, true) => {
                        let b = &batch[*i];
                        keep(
                            &mut result,
                            b.message,
                            b.delivery,
                            "delete-failed".to_owned(),
                            &mut kept_receipts,
                        );
                    }
                }
            }
        }
        if result.stopped.is_some() {
            break;
        }
    }

    // What stays in the DLQ becomes visible again now rather than after the visibility timeout.
    for (n, chunk) in kept_receipts.chunks(10).enumerate() {
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
        result.api_calls += 1;
        if let Err(e) = queues.release_batch(dlq_url, entries).await {
            tracing::warn!(error = %e, "could not make kept messages visible again; they reappear after the visibility timeout");
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
