//! In-memory SQS queues for unit tests: messages are received (and hidden) with a fresh receipt
//! handle, deleted or made visible again by it; a purge within 60 seconds of the last one reports
//! a purge in progress; a DLQ has at most one running move task. A call can be made to fail once
//! ([`MemoryQueues::fail_next`]) to exercise the callers' failure paths. Clones share the queues.
//!
//! Behind the `memory` feature (and `cfg(test)`): it is test support, not something a Lambda
//! function should link.

use super::{BatchOk, MoveTask, QueueDepth, Queues};
use crate::aws_error::{AwsCallError, AwsFailureKind};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use time::OffsetDateTime;

#[derive(Debug, Clone)]
struct Stored {
    message_id: String,
    body: String,
    system: HashMap<MessageSystemAttributeName, String>,
    attributes: HashMap<String, MessageAttributeValue>,
    /// Set while received and not yet deleted or released.
    receipt: Option<String>,
}

#[derive(Debug, Default)]
struct Queue {
    arn: String,
    attributes: HashMap<QueueAttributeName, String>,
    tags: HashMap<String, String>,
    messages: Vec<Stored>,
    last_purge: Option<OffsetDateTime>,
}

#[derive(Debug)]
struct State {
    queues: BTreeMap<String, Queue>,
    tasks: Vec<MoveTask>,
    fail_next: Vec<&'static str>,
    next_id: u64,
    now: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct MemoryQueues {
    state: Arc<Mutex<State>>,
}

impl Default for MemoryQueues {
    fn default() -> Self {
        Self::new()
    }
}

fn error(
    operation: &'static str,
    code: &str,
    kind: AwsFailureKind,
    message: String,
) -> AwsCallError {
    AwsCallError {
        operation,
        code: Some(code.to_owned()),
        kind,
        source: message.into(),
    }
}

fn no_queue(operation: &'static str, url: &str) -> AwsCallError {
    error(
        operation,
        "AWS.SimpleQueueService.NonExistentQueue",
        AwsFailureKind::Rejected,
        format!("no queue {url}"),
    )
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    /// Fails the call when a test asked for it.
    fn check(&mut self, operation: &'static str) -> Result<(), AwsCallError> {
        match self.fail_next.iter().position(|o| *o == operation) {
            Some(i) => {
                self.fail_next.remove(i);
                Err(error(
                    operation,
                    "InternalError",
                    AwsFailureKind::Transient,
                    "injected".to_owned(),
                ))
            }
            None => Ok(()),
        }
    }

    fn queue(&mut self, operation: &'static str, url: &str) -> Result<&mut Queue, AwsCallError> {
        self.check(operation)?;
        self.queues
            .get_mut(url)
            .ok_or_else(|| no_queue(operation, url))
    }
}

impl MemoryQueues {
    pub fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                queues: BTreeMap::new(),
                tasks: Vec::new(),
                fail_next: Vec::new(),
                next_id: 0,
                now: OffsetDateTime::now_utc(),
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is complete before the lock is released, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates a queue; its ARN is `arn:aws:sqs:memory:000000000000:<last path segment>`.
    pub fn create(&self, url: &str) -> String {
        let name = url.rsplit('/').next().unwrap_or(url);
        let arn = format!("arn:aws:sqs:memory:000000000000:{name}");
        self.state().queues.insert(
            url.to_owned(),
            Queue {
                arn: arn.clone(),
                ..Queue::default()
            },
        );
        arn
    }

    /// Sets the source queue's redrive policy to name `dlq_arn`.
    pub fn set_redrive_policy(&self, url: &str, dlq_arn: &str) {
        let policy = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5});
        self.set_attribute(url, QueueAttributeName::RedrivePolicy, &policy.to_string());
    }

    pub fn set_attribute(&self, url: &str, name: QueueAttributeName, value: &str) {
        if let Some(q) = self.state().queues.get_mut(url) {
            q.attributes.insert(name, value.to_owned());
        }
    }

    pub fn tag(&self, url: &str, key: &str, value: &str) {
        if let Some(q) = self.state().queues.get_mut(url) {
            q.tags.insert(key.to_owned(), value.to_owned());
        }
    }

    /// Puts a message in a queue, as a producer (or SQS moving a dead letter) would.
    pub fn push(&self, url: &str, body: &str) -> String {
        let mut state = self.state();
        let message_id = state.id("msg-");
        if let Some(q) = state.queues.get_mut(url) {
            q.messages.push(Stored {
                message_id: message_id.clone(),
                body: body.to_owned(),
                system: HashMap::new(),
                attributes: HashMap::new(),
                receipt: None,
            });
        }
        message_id
    }

    /// The bodies of the messages in a queue, received or not, oldest first.
    pub fn bodies(&self, url: &str) -> Vec<String> {
        self.state()
            .queues
            .get(url)
            .map(|q| q.messages.iter().map(|m| m.body.clone()).collect())
            .unwrap_or_default()
    }

    /// Messages received and neither deleted nor made visible again.
    pub fn in_flight(&self, url: &str) -> usize {
        self.state().queues.get(url).map_or(0, |q| {
            q.messages.iter().filter(|m| m.receipt.is_some()).count()
        })
    }

    /// The group and deduplication ids of the messages in a (FIFO) queue, oldest first.
    pub fn fifo_ids(&self, url: &str) -> Vec<(Option<String>, Option<String>)> {
        self.state()
            .queues
            .get(url)
            .map(|q| {
                q.messages
                    .iter()
                    .map(|m| {
                        (
                            m.system
                                .get(&MessageSystemAttributeName::MessageGroupId)
                                .cloned(),
                            m.system
                                .get(&MessageSystemAttributeName::MessageDeduplicationId)
                                .cloned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Makes the next call of `operation` (e.g. `sqs:SendMessageBatch`) fail as a transient error.
    pub fn fail_next(&self, operation: &'static str) {
        self.state().fail_next.push(operation);
    }

    /// Sets the clock the 60-second purge rule is checked against.
    pub fn set_now(&self, now: OffsetDateTime) {
        self.state().now = now;
    }

    /// Every move task started, oldest first.
    pub fn move_tasks(&self) -> Vec<MoveTask> {
        self.state().tasks.clone()
    }
}

#[async_trait::async_trait]
impl Queues for MemoryQueues {
    async fn attribute(
        &self,
        queue_url: &str,
        name: QueueAttributeName,
    ) -> Result<Option<String>, AwsCallError> {
        let mut state = self.state();
        let q = state.queue("sqs:GetQueueAttributes", queue_url)?;
        Ok(match name {
            QueueAttributeName::QueueArn => Some(q.arn.clone()),
            other => q.attributes.get(&other).cloned(),
        })
    }

    async fn depth(&self, queue_url: &str) -> Result<QueueDepth, AwsCallError> {
        let mut state = self.state();
        let q = state.queue("sqs:GetQueueAttributes", queue_url)?;
        let in_flight = q.messages.iter().filter(|m| m.receipt.is_some()).count() as u64;
        Ok(QueueDepth {
            visible: q.messages.len() as u64 - in_flight,
            in_flight,
            delayed: 0,
        })
    }

    async fn receive(
        &self,
        queue_url: &str,
        max: i32,
        _visibility_timeout: i32,
        _wait_seconds: i32,
    ) -> Result<Vec<Message>, AwsCallError> {
        let mut state = self.state();
        state.queue("sqs:ReceiveMessage", queue_url)?;
        let mut received = Vec::new();
        let max = usize::try_from(max.clamp(1, 10)).unwrap_or(1);
        let visible = state.queues[queue_url]
            .messages
            .iter()
            .filter(|m| m.receipt.is_none())
            .count()
            .min(max);
        for _ in 0..visible {
            let receipt = state.id("receipt-");
            let Some(m) = state
                .queues
                .get_mut(queue_url)
                .and_then(|q| q.messages.iter_mut().find(|m| m.receipt.is_none()))
            else {
                break;
            };
            m.receipt = Some(receipt.clone());
            let mut message = Message::builder()
                .message_id(&m.message_id)
                .receipt_handle(receipt)
                .body(&m.body)
                .set_attributes(Some(m.system.clone()).filter(|a| !a.is_empty()));
            for (name, value) in &m.attributes {
                message = message.message_attributes(name, value.clone());
            }
            received.push(message.build());
        }
        Ok(received)
    }

    async fn send_batch(
        &self,
        queue_url: &str,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError> {
        let mut state = self.state();
        state.queue("sqs:SendMessageBatch", queue_url)?;
        let mut ok = Vec::new();
        for entry in entries {
            let message_id = state.id("msg-");
            let mut system = HashMap::new();
            if let Some(g) = entry.message_group_id() {
                system.insert(MessageSystemAttributeName::MessageGroupId, g.to_owned());
            }
            if let Some(d) = entry.message_deduplication_id() {
                system.insert(
                    MessageSystemAttributeName::MessageDeduplicationId,
                    d.to_owned(),
                );
            }
            if let Some(q) = state.queues.get_mut(queue_url) {
                q.messages.push(Stored {
                    message_id,
                    body: entry.message_body().to_owned(),
                    system,
                    attributes: entry.message_attributes().cloned().unwrap_or_default(),
                    receipt: None,
                });
            }
            ok.push(entry.id().to_owned());
        }
        Ok(ok)
    }

    async fn delete_batch(
        &self,
        queue_url: &str,
        entries: Vec<DeleteMessageBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError> {
        let mut state = self.state();
        let q = state.queue("sqs:DeleteMessageBatch", queue_url)?;
        let mut ok = Vec::new();
        for entry in entries {
            let receipt = Some(entry.receipt_handle());
            if let Some(i) = q
                .messages
                .iter()
                .position(|m| m.receipt.as_deref() == receipt)
            {
                q.messages.remove(i);
                ok.push(entry.id().to_owned());
            }
        }
        Ok(ok)
    }

    async fn release_batch(
        &self,
        queue_url: &str,
        entries: Vec<ChangeMessageVisibilityBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError> {
        let mut state = self.state();
        let q = state.queue("sqs:ChangeMessageVisibilityBatch", queue_url)?;
        let mut ok = Vec::new();
        for entry in entries {
            let receipt = Some(entry.receipt_handle());
            if let Some(m) = q
                .messages
                .iter_mut()
                .find(|m| m.receipt.as_deref() == receipt)
            {
                if entry.visibility_timeout() == Some(0) {
                    m.receipt = None;
                }
                ok.push(entry.id().to_owned());
            }
        }
        Ok(ok)
    }

    async fn tags(&self, queue_url: &str) -> Result<HashMap<String, String>, AwsCallError> {
        let mut state = self.state();
        Ok(state.queue("sqs:ListQueueTags", queue_url)?.tags.clone())
    }

    async fn purge(&self, queue_url: &str) -> Result<bool, AwsCallError> {
        let mut state = self.state();
        let now = state.now;
        let q = state.queue("sqs:PurgeQueue", queue_url)?;
        if q.last_purge
            .is_some_and(|at| now - at < time::Duration::seconds(60))
        {
            return Ok(false);
        }
        q.messages.clear();
        q.last_purge = Some(now);
        Ok(true)
    }

    async fn start_move(
        &self,
        source_arn: &str,
        destination_arn: Option<&str>,
        rate: i32,
    ) -> Result<String, AwsCallError> {
        const OP: &str = "sqs:StartMessageMoveTask";
        let mut state = self.state();
        state.check(OP)?;
        let running = state.tasks.iter().any(|t| {
            t.source_arn.as_deref() == Some(source_arn) && t.status.as_deref() == Some("RUNNING")
        });
        if running {
            return Err(error(
                OP,
                "UnsupportedOperation",
                AwsFailureKind::Rejected,
                format!("a message move task is already running on {source_arn}"),
            ));
        }
        let to_move = state
            .queues
            .values()
            .find(|q| q.arn == source_arn)
            .map(|q| q.messages.len() as i64)
            .ok_or_else(|| no_queue(OP, source_arn))?;
        let handle = state.id("task-");
        let started_timestamp = state.now.unix_timestamp() * 1000;
        state.tasks.push(MoveTask {
            task_handle: Some(handle.clone()),
            status: Some("RUNNING".to_owned()),
            source_arn: Some(source_arn.to_owned()),
            destination_arn: destination_arn.map(str::to_owned),
            max_number_of_messages_per_second: Some(rate),
            approximate_number_of_messages_moved: 0,
            approximate_number_of_messages_to_move: Some(to_move),
            failure_reason: None,
            started_timestamp,
        });
        Ok(handle)
    }

    async fn list_moves(&self, source_arn: &str) -> Result<Vec<MoveTask>, AwsCallError> {
        let mut state = self.state();
        state.check("sqs:ListMessageMoveTasks")?;
        // Newest first, as SQS lists them.
        Ok(state
            .tasks
            .iter()
            .rev()
            .filter(|t| t.source_arn.as_deref() == Some(source_arn))
            .take(10)
            .cloned()
            .collect())
    }

    async fn cancel_move(&self, task_handle: &str) -> Result<i64, AwsCallError> {
        const OP: &str = "sqs:CancelMessageMoveTask";
        let mut state = self.state();
        state.check(OP)?;
        let task = state
            .tasks
            .iter_mut()
            .find(|t| t.task_handle.as_deref() == Some(task_handle))
            .filter(|t| t.status.as_deref() == Some("RUNNING"))
            .ok_or_else(|| {
                error(
                    OP,
                    "ResourceNotFoundException",
                    AwsFailureKind::Rejected,
                    format!("no running task {task_handle}"),
                )
            })?;
        task.status = Some("CANCELLED".to_owned());
        Ok(task.approximate_number_of_messages_moved)
    }
}
