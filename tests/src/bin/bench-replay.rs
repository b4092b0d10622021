//! bench-replay: the dead-letter-replay benchmark on the local stack (run by
//! `infra/local/bench-replay.sh`, release build). 200,000 dead-lettered deliveries over 2,000
//! endpoints on loopback, a tenth answering 500:
//!
//! - replay wall time beside one set-based `UPDATE` of the same rows on an identical copy of the
//!   data (target: at most 2x);
//! - probes made beside distinct endpoints (target: equal);
//! - SQS API calls per message of a filtered redrive (target: at most 0.35).
//!
//! Prints each figure with its baseline and the ratio, as text and as one JSON line.

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use catalyst_dr::aws_error::AwsCallError;
use catalyst_dr::queues::{BatchOk, MoveTask, QueueDepth, Queues, SqsQueues};
use catalyst_dr::replay::DeadLetterReplay;
use catalyst_dr::replay::config::ReplayConfig;
use catalyst_dr_tests::datagen::GeneratorSpec;
use catalyst_dr_tests::endpoints::{Behaviour, Endpoints};
use catalyst_dr_tests::{
    generated_database, local_aws, pg_admin, pg_connect, seed, stack_var, unique,
};
use clap::Parser;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

#[derive(Debug, Parser)]
#[command(about = "dead-letter-replay benchmark against the local stack")]
struct Args {
    #[arg(long, default_value_t = 200_000)]
    deliveries: u64,
    #[arg(long, default_value_t = 2_000)]
    endpoints: u64,
    /// Every n-th endpoint answers 500.
    #[arg(long, default_value_t = 10)]
    unhealthy_every: u64,
    /// Messages in the dead-letter queue for the filtered redrive.
    #[arg(long, default_value_t = 1_000)]
    messages: u64,
}

/// The real SQS client, counting every call.
struct Counting {
    inner: SqsQueues,
    calls: AtomicU64,
}

impl Counting {
    fn tick(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl Queues for Counting {
    async fn attribute(
        &self,
        u: &str,
        n: QueueAttributeName,
    ) -> Result<Option<String>, AwsCallError> {
        self.tick();
        self.inner.attribute(u, n).await
    }
    async fn depth(&self, u: &str) -> Result<QueueDepth, AwsCallError> {
        self.tick();
        self.inner.depth(u).await
    }
    async fn receive(&self, u: &str, m: i32, v: i32, w: i32) -> Result<Vec<Message>, AwsCallError> {
        self.tick();
        self.inner.receive(u, m, v, w).await
    }
    async fn send_batch(
        &self,
        u: &str,
        e: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError> {
        self.tick();
        self.inner.send_batch(u, e).await
    }
    async fn delete_batch(
        &self,
        u: &str,
        e: Vec<DeleteMessageBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError> {
        self.tick();
        self.inner.delete_batch(u, e).await
    }
    async fn release_batch(
        &self,
        u: &str,
        e: Vec<ChangeMessageVisibilityBatchRequestEntry>,
    ) -> Result<BatchOk, AwsCallError> {
        self.tick();
        self.inner.release_batch(u, e).await
    }
    async fn tags(&self, u: &str) -> Result<HashMap<String, String>, AwsCallError> {
        self.tick();
        self.inner.tags(u).await
    }
    async fn purge(&self, u: &str) -> Result<bool, AwsCallError> {
        self.tick();
        self.inner.purge(u).await
    }
    async fn start_move(&self, s: &str, d: Option<&str>, r: i32) -> Result<String, AwsCallError> {
        self.tick();
        self.inner.start_move(s, d, r).await
    }
    async fn list_moves(&self, s: &str) -> Result<Vec<MoveTask>, AwsCallError> {
        self.tick();
        self.inner.list_moves(s).await
    }
    async fn cancel_move(&self, h: &str) -> Result<i64, AwsCallError> {
        self.tick();
        self.inner.cancel_move(h).await
    }
}

fn line(what: &str, value: f64, unit: &str, baseline_what: &str, baseline: f64, target: &str) {
    let ratio = if baseline > 0.0 {
        value / baseline
    } else {
        f64::NAN
    };
    println!(
        "{what:<44} {value:>10.3} {unit:<5} | {baseline_what:<34} {baseline:>10.3} | ratio {ratio:>6.3} (target {target})"
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let sdk = local_aws().await;
    let server = Endpoints::start().await;
    for n in (args.unhealthy_every..=args.endpoints).step_by(args.unhealthy_every as usize) {
        server.set(&format!("/{n}"), Behaviour::Status(500));
    }
    eprintln!(
        "generating {} dead-lettered deliveries over {} endpoints...",
        args.deliveries, args.endpoints
    );
    let spec = GeneratorSpec {
        seed: 2026,
        users: 1_000,
        entitlements_per_user: 1,
        subscriptions: args.endpoints,
        deliveries: args.deliveries,
        dead_letter_share: 1.0,
        endpoint_base: server.base.clone(),
        dead_letter_window_hours: 12,
        now: time::OffsetDateTime::now_utc(),
    };
    let (db, secret, client) = generated_database(&sdk, "bench", &spec).await;
    drop(client);
    // An identical copy for the baseline.
    let copy = format!("{db}_baseline");
    let admin = pg_admin().await;
    let mut copied = false;
    for _ in 0..50 {
        if admin
            .batch_execute(&format!("CREATE DATABASE {copy} TEMPLATE {db}"))
            .await
            .is_ok()
        {
            copied = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await; // the generator's session closing
    }
    assert!(copied, "could not copy {db}");
    let replay_db = pg_connect(&db).await;
    let baseline_db = pg_connect(&copy).await;
    for c in [&replay_db, &baseline_db] {
        for sql in [
            "VACUUM ANALYZE webhook_deliveries",
            "SELECT count(*) FROM webhook_deliveries",
            "SELECT count(*) FROM webhook_subscriptions",
        ] {
            c.batch_execute(sql).await.expect("warm up");
        }
    }
    let dead: i64 = replay_db
        .query_one(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'dead_lettered'",
            &[],
        )
        .await
        .expect("count")
        .get(0);

    // Baseline: one set-based UPDATE of the rows the replay sets back to pending.
    let healthy_subs: Vec<i64> = (1..=args.endpoints as i64)
        .filter(|n| n % args.unhealthy_every as i64 != 0)
        .collect();
    let since = time::OffsetDateTime::now_utc() - time::Duration::hours(24);
    let until = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let started = Instant::now();
    let baseline_rows = baseline_db
        .execute(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), updated_at = now()
             WHERE status = 'dead_lettered' AND updated_at >= $1 AND updated_at < $2 AND subscription_id = ANY($3)",
            &[&since, &until, &healthy_subs],
        )
        .await
        .expect("baseline update");
    let baseline_secs = started.elapsed().as_secs_f64();

    // The replay, in process, configured as in production except for the loopback allowlist.
    let bucket = seed()["bucket"].as_str().expect("bucket").to_owned();
    let env: HashMap<&str, &str> = HashMap::from([
        ("BACKUP_BUCKET", bucket.as_str()),
        ("SOURCE_DATABASE_SECRET_ID", secret.as_str()),
        ("PG_TLS", "disable"),
        ("PROBE_ALLOW_CIDRS", "127.0.0.0/8"),
        ("S3_FORCE_PATH_STYLE", "true"),
        ("REDRIVE_WAIT_SECONDS", "0"),
    ]);
    let mut replay =
        DeadLetterReplay::new(ReplayConfig::from_env(&env).expect("config"), &sdk).expect("wiring");
    let filter = json!({"since": catalyst_dr::input::format_time(since), "until": catalyst_dr::input::format_time(until)});
    let started = Instant::now();
    let result = replay
        .handle(json!({"action": "replay", "replay_id": unique("bench"), "filter": filter}))
        .await
        .expect("replay");
    let replay_secs = started.elapsed().as_secs_f64();
    let replayed = result["counts"]["replayed"].as_u64().expect("replayed");
    assert_eq!(
        replayed, baseline_rows,
        "the replay and the baseline update the same rows"
    );
    let (probes, probed_paths) = server.totals("HEAD");
    println!(
        "\ndead-letter-replay benchmark: {dead} dead-lettered deliveries, {} endpoints ({} unhealthy)",
        args.endpoints,
        args.endpoints / args.unhealthy_every
    );
    line(
        "replay wall time (probe + batched requeue + audit)",
        replay_secs,
        "s",
        "one set-based UPDATE, same rows",
        baseline_secs,
        "<= 2",
    );
    line(
        "rows set to pending",
        replayed as f64,
        "rows",
        "rows updated by the baseline",
        baseline_rows as f64,
        "= 1",
    );
    line(
        "endpoint probes made",
        probes as f64,
        "",
        "distinct endpoints",
        args.endpoints as f64,
        "= 1",
    );
    println!("replay phases (ms): {}", result["timings_ms"]);

    // Filtered redrive: a DLQ of messages for these deliveries; a tenth already succeeded (stale),
    // a tenth on unhealthy endpoints (kept), the rest sent back.
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let name = unique("bench-webhooks");
    let (source_url, dlq_url) = catalyst_dr_tests::queue_with_dead_letters(&sqs, &name, 5).await;
    let ids: Vec<i64> = replay_db
        .query(
            "SELECT id FROM webhook_deliveries ORDER BY id LIMIT $1",
            &[&(args.messages as i64)],
        )
        .await
        .expect("ids")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let stale: Vec<i64> = ids.iter().copied().filter(|id| id % 10 == 3).collect();
    replay_db
        .execute(
            "UPDATE webhook_deliveries SET status = 'succeeded' WHERE id = ANY($1)",
            &[&stale],
        )
        .await
        .expect("stale");
    for chunk in ids.chunks(10) {
        let entries: Vec<SendMessageBatchRequestEntry> = chunk
            .iter()
            .map(|id| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("e{id}"))
                    .message_body(json!({"delivery_id": id}).to_string())
                    .build()
                    .expect("entry")
            })
            .collect();
        sqs.send_message_batch()
            .queue_url(&dlq_url)
            .set_entries(Some(entries))
            .send()
            .await
            .expect("fill dlq");
    }
    let counting = Arc::new(Counting {
        inner: SqsQueues::new(sqs.clone()),
        calls: AtomicU64::new(0),
    });
    replay.queues = counting.clone();
    let redrive = replay
        .handle(json!({"action": "redrive", "mode": "filtered", "dlq_url": dlq_url, "source_queue_url": source_url, "max_messages": args.messages + 10}))
        .await
        .expect("redrive");
    let calls = counting.calls.load(Ordering::Relaxed);
    let received = redrive["received"].as_u64().expect("received");
    let per_message = calls as f64 / received.max(1) as f64;

    line(
        "SQS API calls per message (filtered redrive)",
        per_message,
        "",
        "calls/message budget",
        0.35,
        "<= 1",
    );
    println!(
        "filtered redrive: sent {} stale-deleted {} kept {} ({} SQS calls for {} messages; {} endpoints probed)",
        redrive["sent"],
        redrive["stale_deleted"],
        redrive["kept"],
        calls,
        received,
        redrive["endpoints_probed"]
    );
    println!(
        "{}",
        json!({
            "deliveries": dead, "endpoints": args.endpoints, "replay_seconds": replay_secs, "baseline_update_seconds": baseline_secs,
            "ratio": replay_secs / baseline_secs, "rows_replayed": replayed, "probes": probes, "probed_paths": probed_paths,
            "sqs_calls": calls, "messages": received, "sqs_calls_per_message": per_message, "replay_timings_ms": result["timings_ms"],
            "pg_port": stack_var("CATALYST_DR_PG_PORT"),
        })
    );
}
