//! The SQS queues: attributes and depths, receive, batched send, delete and visibility changes,
//! tags, purge, and the native dead-letter move tasks. One trait for replay and the drill;
//! [`SqsQueues`] is SQS, [`memory::MemoryQueues`] an in-memory one for unit tests.

#[cfg(any(test, feature = "memory"))]
pub mod memory;

use crate::aws_error::{AwsCallError, classify};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepth {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
}

impl QueueDepth {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight + self.delayed
    }
}

/// The outcome of one batch call: the entry ids that succeeded.
pub type BatchOk = Vec<String>;

/// The SQS calls replay (redrive, flush) and the drill (depths) make.
#[async_trait::async_trait]
pub trait Queues: Send + Sync {
    async fn attribute(
        &self,
        queue_url: &str,
        name: QueueAttributeName,
    ) -> Result<Option<String>, AwsCallError>;
    /// Visible, in-flight and delayed messages (one GetQueueAttributes).
    async fn depth(&self, queue_url: &str) -> Result<QueueDepth, AwsCallError>;
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
impl Queues for SqsQueues {
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

    async fn depth(&self, queue_url: &str) -> Result<QueueDepth, AwsCallError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| classify("sqs:GetQueueAttributes", e))?;
        let attributes = out.attributes();
        let get = |name: QueueAttributeName| {
            attributes
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(QueueDepth {
            visible: get(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: get(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
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
