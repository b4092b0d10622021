//! Queue depths for the baseline and the post-flush check.

use crate::aws_error::{AwsCallError, classify};
use aws_sdk_sqs::types::QueueAttributeName;
use serde::{Deserialize, Serialize};

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

#[async_trait::async_trait]
pub trait QueueDepths: Send + Sync {
    async fn depth(&self, queue_url: &str) -> Result<QueueDepth, AwsCallError>;
}

#[async_trait::async_trait]
impl QueueDepths for aws_sdk_sqs::Client {
    async fn depth(&self, queue_url: &str) -> Result<QueueDepth, AwsCallError> {
        let out = self
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
}
