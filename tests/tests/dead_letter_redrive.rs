//! SQS dead-letter redrive and the staging flush. Filtered redrive and the SQS flush run against
//! the local endpoint (moto) with a real redrive policy, with sends made to fail part-way; the
//! native move task and the 60-second purge rule, which moto cannot serve, are request-shape
//! tests. The Redis flush runs against the stack's Redis.

use aws_sdk_sqs::operation::cancel_message_move_task::CancelMessageMoveTaskOutput;
use aws_sdk_sqs::operation::get_queue_attributes::GetQueueAttributesOutput;
use aws_sdk_sqs::operation::list_message_move_tasks::ListMessageMoveTasksOutput;
use aws_sdk_sqs::operation::list_queue_tags::ListQueueTagsOutput;
use aws_sdk_sqs::operation::purge_queue::PurgeQueueError;
use aws_sdk_sqs::operation::start_message_move_task::{
    StartMessageMoveTaskError, StartMessageMoveTaskOutput,
};
use aws_sdk_sqs::types::error::{PurgeQueueInProgress, UnsupportedOperation};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    ListMessageMoveTasksResultEntry, Message, MessageAttributeValue, QueueAttributeName,
    SendMessageBatchRequestEntry,
};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use catalyst_dr::aws_error::{AwsCallError, AwsFailureKind};
use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr::queues::{BatchOk, MoveTask, QueueDepth, Queues, SqsQueues};
use catalyst_dr::replay::DeadLetterReplay;
use catalyst_dr_tests::datagen::GeneratorSpec;
use catalyst_dr_tests::endpoints::{Behaviour, Endpoints};
use catalyst_dr_tests::{generated_database, local_aws, stack_var, unique};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

const DLQ_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:orders-dlq";
const DLQ_URL: &str = "https://sqs.us-east-1.amazonaws.com/123456789012/orders-dlq";

fn replay_with(
    sdk: &aws_config::SdkConfig,
    secret: &str,
    extra: &[(&str, &str)],
) -> DeadLetterReplay {
    let mut vars = vec![
        ("SOURCE_DATABASE_SECRET_ID", secret),
        ("PROBE_TIMEOUT_MS", "400"),
        ("REDRIVE_WAIT_SECONDS", "0"),
        ("REDRIVE_VISIBILITY_TIMEOUT_SECONDS", "600"),
    ];
    vars.extend_from_slice(extra);
    catalyst_dr_tests::dead_letter_replay(sdk, &vars)
}

/// The real SQS client, with sends that fail: the `fail_call`-th SendMessageBatch fails whole,
/// and every send after it drops its last entry (reported failed, never sent).
struct FlakySends {
    inner: SqsQueues,
    sends: AtomicUsize,
    fail_call: usize,
}

#[async_trait::async_trait]
impl Queues for FlakySends {
    async fn attribute(
        &self,
        u: &str,
        n: QueueAttributeName,
    ) -> Result<Option<String>, AwsCallError> {
        self.inner.attribute(u, n).await
    }
    async fn depth(&self, u: &str) -> Result<QueueDepth, AwsCallError> {
        self.inner.depth(u).await
    }
    async fn receive(&self, u: &str, m: i32, v: i32, w: i32) -> Result<Vec<Message>, AwsCallError> {
        self.inner.receive(u, m, v, w).await
    }
    async fn send_batch(
        &self,
        u: &str,
        mut entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError> {
        let n = self.sends.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_call {
            return Err(AwsCallError {
                operation: "sqs:SendMessageBatch",
                code: Some("InternalError".into()),
                kind: AwsFailureKind::Transient,
                source: "injected".into(),
            });
        }
        if n > self.fail_call && entries.len() > 1 {
            entries.pop();
        }
        self.inner.send_batch(u, entries).await
    }
    async fn delete_batch(
        &self,
        u: &str,
        e: Vec<DeleteMessageBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError> {
        self.inner.delete_batch(u, e).await
    }
    async fn release_batch(
        &self,
        u: &str,
        e: Vec<ChangeMessageVisibilityBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError> {
        self.inner.release_batch(u, e).await
    }
    async fn tags(&self, u: &str) -> Result<HashMap<String, String>, AwsCallError> {
        self.inner.tags(u).await
    }
    async fn purge(&self, u: &str) -> Result<bool, AwsCallError> {
        self.inner.purge(u).await
    }
    async fn start_move(&self, s: &str, d: Option<&str>, r: i32) -> Result<String, AwsCallError> {
        self.inner.start_move(s, d, r).await
    }
    async fn list_moves(&self, s: &str) -> Result<Vec<MoveTask>, AwsCallError> {
        self.inner.list_moves(s).await
    }
    async fn cancel_move(&self, h: &str) -> Result<i64, AwsCallError> {
        self.inner.cancel_move(h).await
    }
}

/// Every message in a queue, by delivery id (or body), received and deleted.
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<Message> {
    let mut all = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .visibility_timeout(600)
            .send()
            .await
            .expect("receive");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return all;
        }
        all.extend(messages);
    }
}

fn body_key(m: &Message) -> String {
    let body = m.body().unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("delivery_id").cloned())
    {
        Some(id) => id.to_string(),
        None => body.to_owned(),
    }
}

#[tokio::test]
async fn filtered_redrive_sends_back_drops_stale_keeps_unhealthy_and_loses_nothing() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    endpoints.set("/4", Behaviour::Status(503));
    let spec = GeneratorSpec {
        seed: 11,
        users: 20,
        entitlements_per_user: 1,
        subscriptions: 4,
        deliveries: 400,
        dead_letter_share: 0.5,
        endpoint_base: endpoints.base.clone(),
        dead_letter_window_hours: 24,
        now: time::OffsetDateTime::now_utc(),
    };
    let (_db, secret, client) = generated_database(&sdk, "redrive", &spec).await;
    let rows = client
        .query(
            "SELECT id, status, subscription_id FROM webhook_deliveries ORDER BY id LIMIT 400",
            &[],
        )
        .await
        .expect("rows");
    let mut expect_sent = BTreeSet::new();
    let mut expect_stale = BTreeSet::new();
    let mut expect_kept = BTreeSet::new();
    for row in &rows {
        let (id, status, sub): (i64, String, i64) = (row.get(0), row.get(1), row.get(2));
        match (status.as_str(), sub) {
            ("succeeded", _) if expect_stale.len() < 8 => expect_stale.insert(id.to_string()),
            ("succeeded", _) => false,
            (_, 4) if expect_kept.len() < 6 => expect_kept.insert(id.to_string()),
            (_, 4) => false,
            _ if expect_sent.len() < 45 => expect_sent.insert(id.to_string()),
            _ => false,
        };
    }
    assert_eq!(
        (expect_stale.len(), expect_kept.len(), expect_sent.len()),
        (8, 6, 45),
        "the data has every kind"
    );

    // A source queue whose redrive policy names the DLQ, as Catalyst Auth's queue adapter has it.
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let name = unique("webhooks");
    let (source_url, dlq_url) = catalyst_dr_tests::queue_with_dead_letters(&sqs, &name, 1).await;
    // Dead letters: each delivery's message, plus one with no delivery id and one for a delivery
    // the database does not have. One message carries attributes that must survive.
    let mut bodies: Vec<String> = expect_sent
        .iter()
        .chain(&expect_stale)
        .chain(&expect_kept)
        .map(|id| {
            json!({"delivery_id": id.parse::<i64>().unwrap(), "event": "user.updated"}).to_string()
        })
        .collect();
    bodies.push("{\"event\": \"no id here\"}".to_owned());
    bodies.push(json!({"delivery_id": 987_654_321}).to_string());
    let attributed = expect_sent.iter().next().unwrap().clone();
    for body in &bodies {
        let mut send = sqs.send_message().queue_url(&dlq_url).message_body(body);
        if body.contains(&format!("\"delivery_id\":{attributed},")) {
            send = send.message_attributes(
                "trace",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("abc-123")
                    .build()
                    .expect("attr"),
            );
        }
        send.send().await.expect("send dead letter");
    }
    let mut kept_total: BTreeSet<String> = expect_kept.clone();
    kept_total.insert("{\"event\": \"no id here\"}".to_owned());
    kept_total.insert("987654321".to_owned());

    // First run: the second send fails whole, later sends lose one entry each.
    let mut replay = replay_with(&sdk, &secret, &[]);
    let flaky = Arc::new(FlakySends {
        inner: SqsQueues::new(sqs.clone()),
        sends: AtomicUsize::new(0),
        fail_call: 2,
    });
    replay.queues = flaky.clone();
    let event = json!({"action": "redrive", "mode": "filtered", "dlq_url": dlq_url, "source_queue_url": source_url});
    let first = replay.handle(event.clone()).await.expect("first redrive");
    assert!(
        first["stopped"]
            .as_str()
            .is_some_and(|s| s.contains("send failed")),
        "{first}"
    );
    // Second run, sends still dropping an entry each: it gets further.
    let second = replay.handle(event.clone()).await.expect("second redrive");
    // Third run with a healthy client finishes the job.
    replay.queues = Arc::new(SqsQueues::new(sqs.clone()));
    let third = replay.handle(event.clone()).await.expect("third redrive");
    assert!(third["stopped"].is_null(), "{third}");
    let sent: u64 = [&first, &second, &third]
        .iter()
        .map(|r| r["sent"].as_u64().unwrap())
        .sum();
    let stale: u64 = [&first, &second, &third]
        .iter()
        .map(|r| r["stale_deleted"].as_u64().unwrap())
        .sum();
    assert_eq!(sent, 45);
    assert_eq!(stale, 8);
    assert_eq!(third["kept"], kept_total.len());
    assert_eq!(third["kept_by_reason"]["endpoint-unhealthy"], 6);
    assert_eq!(third["kept_by_reason"]["no-delivery-id"], 1);
    assert_eq!(third["kept_by_reason"]["unknown-delivery"], 1);

    // Every message is in exactly one place: the source queue, the DLQ, or deleted as stale.
    let in_source = drain(&sqs, &source_url).await;
    let in_dlq = drain(&sqs, &dlq_url).await;
    let source_keys: Vec<String> = in_source.iter().map(body_key).collect();
    let dlq_keys: Vec<String> = in_dlq.iter().map(body_key).collect();
    assert_eq!(source_keys.len(), 45, "no duplicates in the source queue");
    assert_eq!(
        source_keys.iter().cloned().collect::<BTreeSet<_>>(),
        expect_sent
    );
    assert_eq!(dlq_keys.len(), kept_total.len(), "no duplicates in the DLQ");
    assert_eq!(
        dlq_keys.iter().cloned().collect::<BTreeSet<_>>(),
        kept_total
    );
    let carried = in_source
        .iter()
        .find(|m| body_key(m) == attributed)
        .expect("the attributed message");
    let trace = carried
        .message_attributes()
        .and_then(|a| a.get("trace"))
        .and_then(|v| v.string_value());
    assert_eq!(trace, Some("abc-123"), "message attributes are preserved");
}

#[tokio::test]
async fn filtered_redrive_refuses_a_queue_whose_policy_does_not_name_the_dlq() {
    let sdk = local_aws().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let dlq = sqs
        .create_queue()
        .queue_name(unique("dlq"))
        .send()
        .await
        .expect("dlq")
        .queue_url
        .expect("url");
    let other = sqs
        .create_queue()
        .queue_name(unique("other"))
        .send()
        .await
        .expect("other")
        .queue_url
        .expect("url");
    sqs.send_message()
        .queue_url(&dlq)
        .message_body(r#"{"delivery_id": 1}"#)
        .send()
        .await
        .expect("send");
    let replay = replay_with(&sdk, "catalyst-dr/local/source-database", &[]);
    let err = replay
        .handle(json!({"action": "redrive", "mode": "filtered", "dlq_url": dlq, "source_queue_url": other}))
        .await
        .expect_err("refused");
    assert_eq!(err.error_type(), ErrorKind::NotTheSourceQueue);
    assert_eq!(
        drain(&sqs, &dlq).await.len(),
        1,
        "the dead letter is untouched"
    );
}

fn dlq_arn_attributes() -> GetQueueAttributesOutput {
    GetQueueAttributesOutput::builder()
        .attributes(QueueAttributeName::QueueArn, DLQ_ARN)
        .build()
}

fn running_task() -> ListMessageMoveTasksOutput {
    ListMessageMoveTasksOutput::builder()
        .results(
            ListMessageMoveTasksResultEntry::builder()
                .task_handle("handle-1")
                .status("RUNNING")
                .source_arn(DLQ_ARN)
                .approximate_number_of_messages_moved(12)
                .build(),
        )
        .build()
}

fn mocked(sdk: &aws_config::SdkConfig, client: aws_sdk_sqs::Client) -> DeadLetterReplay {
    let mut replay = replay_with(sdk, "catalyst-dr/local/source-database", &[]);
    replay.queues = Arc::new(SqsQueues::new(client));
    replay
}

#[tokio::test]
async fn native_redrive_starts_one_rate_limited_move_task() {
    let sdk = local_aws().await;
    let attrs = mock!(aws_sdk_sqs::Client::get_queue_attributes)
        .match_requests(|r| r.queue_url() == Some(DLQ_URL))
        .then_output(dlq_arn_attributes);
    let list = mock!(aws_sdk_sqs::Client::list_message_move_tasks)
        .match_requests(|r| r.source_arn() == Some(DLQ_ARN))
        .then_output(|| ListMessageMoveTasksOutput::builder().build());
    let start = mock!(aws_sdk_sqs::Client::start_message_move_task)
        .match_requests(|r| {
            r.source_arn() == Some(DLQ_ARN)
                && r.destination_arn().is_none()
                && r.max_number_of_messages_per_second() == Some(50)
        })
        .then_output(|| {
            StartMessageMoveTaskOutput::builder()
                .task_handle("handle-new")
                .build()
        });
    let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&attrs, &list, &start]);
    let result = mocked(&sdk, client)
        .handle(json!({"action": "redrive", "dlq_url": DLQ_URL, "rate_per_second": 50}))
        .await
        .expect("start");
    assert_eq!(result["status"], "started");
    assert_eq!(result["task_handle"], "handle-new");
    assert_eq!(start.num_calls(), 1);
}

#[tokio::test]
async fn native_redrive_reports_a_task_already_running() {
    let sdk = local_aws().await;
    // Already running when we look.
    let attrs = mock!(aws_sdk_sqs::Client::get_queue_attributes).then_output(dlq_arn_attributes);
    let list = mock!(aws_sdk_sqs::Client::list_message_move_tasks).then_output(running_task);
    let start = mock!(aws_sdk_sqs::Client::start_message_move_task)
        .then_output(|| StartMessageMoveTaskOutput::builder().build());
    let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&attrs, &list, &start]);
    let result = mocked(&sdk, client)
        .handle(json!({"action": "redrive", "dlq_url": DLQ_URL}))
        .await
        .expect("already running");
    assert_eq!(result["status"], "already-running");
    assert_eq!(result["task_handle"], "handle-1");
    assert_eq!(start.num_calls(), 0, "no second task is started");

    // Started by someone else between our list and our start: the start fails, we report theirs.
    let attrs = mock!(aws_sdk_sqs::Client::get_queue_attributes).then_output(dlq_arn_attributes);
    let list = mock!(aws_sdk_sqs::Client::list_message_move_tasks)
        .sequence()
        .output(|| ListMessageMoveTasksOutput::builder().build())
        .output(running_task)
        .build();
    let start = mock!(aws_sdk_sqs::Client::start_message_move_task).then_error(|| {
        StartMessageMoveTaskError::UnsupportedOperation(
            UnsupportedOperation::builder()
                .message("a task is already running")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&attrs, &list, &start]);
    let result = mocked(&sdk, client)
        .handle(json!({"action": "redrive", "dlq_url": DLQ_URL}))
        .await
        .expect("race");
    assert_eq!(result["status"], "already-running");
    assert_eq!(start.num_calls(), 1);
}

#[tokio::test]
async fn native_redrive_tasks_are_listed_and_cancelled() {
    let sdk = local_aws().await;
    let attrs = mock!(aws_sdk_sqs::Client::get_queue_attributes).then_output(dlq_arn_attributes);
    let list = mock!(aws_sdk_sqs::Client::list_message_move_tasks)
        .match_requests(|r| r.source_arn() == Some(DLQ_ARN) && r.max_results() == Some(10))
        .then_output(running_task);
    let cancel = mock!(aws_sdk_sqs::Client::cancel_message_move_task)
        .match_requests(|r| r.task_handle() == Some("handle-1"))
        .then_output(|| {
            CancelMessageMoveTaskOutput::builder()
                .approximate_number_of_messages_moved(12)
                .build()
        });
    let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&attrs, &list, &cancel]);
    let replay = mocked(&sdk, client);
    let listed = replay
        .handle(json!({"action": "list-redrive-tasks", "dlq_url": DLQ_URL}))
        .await
        .expect("list");
    assert_eq!(listed["tasks"][0]["status"], "RUNNING");
    assert_eq!(
        listed["tasks"][0]["approximate_number_of_messages_moved"],
        12
    );
    let cancelled = replay
        .handle(json!({"action": "cancel-redrive-task", "task_handle": "handle-1"}))
        .await
        .expect("cancel");
    assert_eq!(cancelled["approximate_number_of_messages_moved"], 12);
    assert_eq!(cancel.num_calls(), 1);
}

#[tokio::test]
async fn a_purge_within_sixty_seconds_reports_purge_in_progress() {
    let sdk = local_aws().await;
    let tags = mock!(aws_sdk_sqs::Client::list_queue_tags).then_output(|| {
        ListQueueTagsOutput::builder()
            .tags("catalyst-dr:role", "staging")
            .build()
    });
    let purge = mock!(aws_sdk_sqs::Client::purge_queue).then_error(|| {
        PurgeQueueError::PurgeQueueInProgress(
            PurgeQueueInProgress::builder()
                .message("only one purge every 60 seconds")
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&tags, &purge]);
    let result = mocked(&sdk, client)
        .handle(json!({"action": "flush", "queue_url": DLQ_URL}))
        .await
        .expect("purge in progress is not a failure");
    assert_eq!(result["status"], "purge-in-progress");
}

#[tokio::test]
async fn flush_purges_only_a_staging_queue() {
    let sdk = local_aws().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let prod = sqs
        .create_queue()
        .queue_name(unique("prod-webhooks"))
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    let staging = sqs
        .create_queue()
        .queue_name(unique("staging-webhooks"))
        .tags("catalyst-dr:role", "staging")
        .tags("catalyst-dr:created-by", "catalyst-dr")
        .send()
        .await
        .expect("queue")
        .queue_url
        .expect("url");
    for url in [&prod, &staging] {
        sqs.send_message()
            .queue_url(url)
            .message_body(r#"{"delivery_id": 1}"#)
            .send()
            .await
            .expect("send");
    }
    let replay = replay_with(&sdk, "catalyst-dr/local/source-database", &[]);
    let err = replay
        .handle(json!({"action": "flush", "queue_url": prod}))
        .await
        .expect_err("refused");
    assert_eq!(err.error_type(), ErrorKind::NotStaging);
    let kept = replay
        .handle(json!({"action": "flush", "queue_url": staging, "preserve": true}))
        .await
        .expect("preserve");
    assert_eq!(kept["status"], "preserved");
    assert_eq!(
        drain(&sqs, &staging).await.len(),
        1,
        "preserve keeps the messages"
    );
    sqs.send_message()
        .queue_url(&staging)
        .message_body(r#"{"delivery_id": 2}"#)
        .send()
        .await
        .expect("send");
    let purged = replay
        .handle(json!({"action": "flush", "queue_url": staging}))
        .await
        .expect("purge");
    assert_eq!(purged["status"], "purged");
    assert_eq!(
        drain(&sqs, &prod).await.len(),
        1,
        "the production queue is untouched"
    );
}

#[tokio::test]
async fn flush_removes_only_the_queue_keys_of_a_redis_marked_staging() {
    let sdk = local_aws().await;
    let prefix = unique("q");
    let patterns = format!("{prefix}:queue:*,{prefix}:delayed");
    let url = stack_var("CATALYST_DR_REDIS_URL");
    let replay = replay_with(
        &sdk,
        "catalyst-dr/local/source-database",
        &[
            ("STAGING_REDIS_URL", url.as_str()),
            ("REDIS_QUEUE_PATTERNS", patterns.as_str()),
        ],
    );
    let redis = redis::Client::open(url.as_str()).expect("redis url");
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let set = |k: String| redis::cmd("SET").arg(k).arg("x").to_owned();
    let mut queue_keys = Vec::new();
    for i in 0..2_500 {
        queue_keys.push(format!("{prefix}:queue:{i}"));
    }
    queue_keys.push(format!("{prefix}:delayed"));
    let mut pipe = redis::pipe();
    for k in &queue_keys {
        pipe.add_command(set(k.clone()));
    }
    pipe.add_command(set(format!("{prefix}:sessions:1")));
    let () = pipe.query_async(&mut conn).await.expect("fill");
    let exists = |k: String| redis::cmd("EXISTS").arg(k).to_owned();

    // Not marked staging: refused, nothing removed.
    let () = redis::cmd("DEL")
        .arg("catalyst-dr:role")
        .query_async(&mut conn)
        .await
        .expect("unmark");
    let err = replay
        .handle(json!({"action": "flush", "redis": true}))
        .await
        .expect_err("refused");
    assert_eq!(err.error_type(), ErrorKind::NotStaging);
    let n: u64 = exists(format!("{prefix}:queue:7"))
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert_eq!(n, 1);

    let () = redis::cmd("SET")
        .arg("catalyst-dr:role")
        .arg("staging")
        .query_async(&mut conn)
        .await
        .expect("mark");
    let result = replay
        .handle(json!({"action": "flush", "redis": true}))
        .await
        .expect("flush");
    let () = redis::cmd("DEL")
        .arg("catalyst-dr:role")
        .query_async(&mut conn)
        .await
        .expect("unmark");
    assert_eq!(result["status"], "flushed");
    let removed: BTreeMap<String, u64> =
        serde_json::from_value(result["keys_removed"].clone()).expect("counts");
    assert_eq!(removed[&format!("{prefix}:queue:*")], 2_500);
    assert_eq!(removed[&format!("{prefix}:delayed")], 1);
    let left: u64 = exists(format!("{prefix}:queue:7"))
        .query_async(&mut conn)
        .await
        .expect("exists");
    let other: u64 = exists(format!("{prefix}:sessions:1"))
        .query_async(&mut conn)
        .await
        .expect("exists");
    assert_eq!((left, other), (0, 1), "only the queue keys go");
}
