//! dead-letter-replay against real PostgreSQL (generated deliveries), real HTTP endpoints on
//! loopback (200, 404, 500, hanging, refused), the local S3 (audit record) and a simulated
//! Catalyst Auth webhook worker.

use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr::replay::DeadLetterReplay;
use catalyst_dr::replay::audit::ReplayAudit;
use catalyst_dr_tests::datagen::GeneratorSpec;
use catalyst_dr_tests::endpoints::{Behaviour, Endpoints, closed_port};
use catalyst_dr_tests::{generated_database, local_aws, s3, seed, unique};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tokio_postgres::Client;

fn replay_with(
    sdk: &aws_config::SdkConfig,
    secret: &str,
    extra: &[(&str, &str)],
) -> DeadLetterReplay {
    let mut vars = vec![
        (
            "SOURCE_DATABASE_SECRET_ID",
            "catalyst-dr/local/source-database",
        ),
        ("REPLAY_DATABASE_SECRET_ID", secret),
        ("PROBE_TIMEOUT_MS", "400"),
        ("REPLAY_BATCH_SIZE", "50"),
        ("AUDIT_RETENTION_DAYS", "1"),
    ];
    vars.extend_from_slice(extra);
    catalyst_dr_tests::dead_letter_replay(sdk, &vars)
}

fn spec(endpoints: &Endpoints, subscriptions: u64, deliveries: u64) -> GeneratorSpec {
    GeneratorSpec {
        seed: 7,
        users: 50,
        entitlements_per_user: 1,
        subscriptions,
        deliveries,
        dead_letter_share: 0.5,
        endpoint_base: endpoints.base.clone(),
        dead_letter_window_hours: 24,
        now: time::OffsetDateTime::now_utc(),
    }
}

async fn ids(client: &Client, sql: &str) -> BTreeSet<i64> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect()
}

async fn count(client: &Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// A fingerprint of every delivery row: equal before and after means nothing was written.
async fn fingerprint(client: &Client) -> String {
    client
        .query_one(
            "SELECT md5(string_agg(id || status || coalesce(next_attempt_at::text, '') || updated_at::text || attempts, ',' ORDER BY id)) FROM webhook_deliveries",
            &[],
        )
        .await
        .expect("fingerprint")
        .get(0)
}

async fn audit(sdk: &aws_config::SdkConfig, key: &str) -> Option<Vec<u8>> {
    let bucket = seed()["bucket"].as_str().expect("bucket").to_owned();
    match s3(sdk).get_object().bucket(&bucket).key(key).send().await {
        Ok(out) => Some(
            out.body
                .collect()
                .await
                .expect("body")
                .into_bytes()
                .to_vec(),
        ),
        Err(_) => None,
    }
}

/// The Catalyst Auth webhook worker, reduced to what the runbook relies on: it picks up pending
/// deliveries that are due, POSTs them to the subscription's endpoint, and records the outcome
/// (2xx: succeeded; anything else: dead-lettered again). Returns how many it handled.
async fn worker_pass(client: &Client, http: &reqwest::Client) -> usize {
    let rows = client
        .query(
            "SELECT d.id, s.endpoint_url FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
             WHERE d.status = 'pending' AND d.next_attempt_at <= now() ORDER BY d.id LIMIT 200",
            &[],
        )
        .await
        .expect("worker query");
    for row in &rows {
        let id: i64 = row.get(0);
        let url: String = row.get(1);
        let ok = matches!(http.post(&url).body(format!("{{\"delivery_id\":{id}}}")).send().await, Ok(r) if r.status().is_success());
        let (status, error) = if ok {
            ("succeeded", None)
        } else {
            ("dead_lettered", Some("endpoint refused the delivery"))
        };
        client
            .execute(
                "UPDATE webhook_deliveries SET status = $2, error_message = $3, attempts = attempts + 1, updated_at = now() WHERE id = $1",
                &[&id, &status, &error],
            )
            .await
            .expect("worker update");
    }
    rows.len()
}

#[tokio::test]
async fn replay_probes_each_endpoint_once_requeues_healthy_ones_and_records_the_audit() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let (_db, secret, client) =
        generated_database(&sdk, "replay", &spec(&endpoints, 12, 1_200)).await;
    // Subscriptions 1-6 answer 200 and 7 answers 404 (healthy: the endpoint is up); 8 answers 500,
    // 9 hangs past the timeout, 10 refuses the connection, 11 is the instance metadata address and
    // 12 a private address (both refused without any connection).
    endpoints.set("/7", Behaviour::Status(404));
    endpoints.set("/8", Behaviour::Status(500));
    endpoints.set("/9", Behaviour::Hang);
    let refused = format!("http://127.0.0.1:{}/10", closed_port());
    client
        .execute(
            "UPDATE webhook_subscriptions SET endpoint_url = $1 WHERE id = 10",
            &[&refused],
        )
        .await
        .expect("sub 10");
    client
        .batch_execute(
            "UPDATE webhook_subscriptions SET endpoint_url = 'http://169.254.169.254/latest/meta-data/' WHERE id = 11;
             UPDATE webhook_subscriptions SET endpoint_url = 'http://10.20.30.40/hooks' WHERE id = 12;
             UPDATE webhook_deliveries SET status = 'succeeded' WHERE status IN ('pending', 'failed');",
        )
        .await
        .expect("test setup");
    let dead = ids(
        &client,
        "SELECT id FROM webhook_deliveries WHERE status = 'dead_lettered'",
    )
    .await;
    let healthy = ids(
        &client,
        "SELECT id FROM webhook_deliveries WHERE status = 'dead_lettered' AND subscription_id <= 7",
    )
    .await;
    let distinct = count(&client, "SELECT count(DISTINCT subscription_id) FROM webhook_deliveries WHERE status = 'dead_lettered'").await;
    assert!(
        healthy.len() > 10 && healthy.len() < dead.len(),
        "the data has both kinds"
    );
    let replay = replay_with(&sdk, &secret, &[]);
    let filter = json!({"window_hours": 48});

    // plan: the runbook's query, counted. No writes.
    let before = fingerprint(&client).await;
    let plan = replay
        .handle(json!({"action": "plan", "filter": filter}))
        .await
        .expect("plan");
    assert_eq!(plan["deliveries"], dead.len());
    assert_eq!(plan["endpoints"], distinct);
    let groups = plan["groups"].as_array().expect("groups");
    assert_eq!(
        groups
            .iter()
            .map(|g| g["deliveries"].as_u64().unwrap())
            .sum::<u64>(),
        dead.len() as u64
    );
    assert!(
        groups
            .iter()
            .all(|g| !g["sample_ids"].as_array().unwrap().is_empty())
    );
    // The same plan through database_secret_id (how the drill plans against its staging restore).
    let elsewhere = replay_with(&sdk, "catalyst-dr/local/source-database", &[]);
    let staged = elsewhere
        .handle(json!({"action": "plan", "filter": filter, "database_secret_id": secret}))
        .await
        .expect("plan elsewhere");
    assert_eq!(staged["groups"], plan["groups"]);
    assert_eq!(staged["database_secret_id"], secret.as_str());
    // dry run: probes, but writes nothing and records nothing.
    let replay_id = unique("inc");
    let dry = replay
        .handle(
            json!({"action": "replay", "replay_id": replay_id, "filter": filter, "dry_run": true}),
        )
        .await
        .expect("dry run");
    assert_eq!(dry["would_replay"], healthy.len());
    assert_eq!(
        fingerprint(&client).await,
        before,
        "plan and dry run write nothing"
    );
    assert!(
        audit(&sdk, &format!("replays/{replay_id}/audit.json"))
            .await
            .is_none()
    );
    assert_eq!(endpoints.hits("HEAD", "/1"), 1);

    // replay.
    let result = replay
        .handle(json!({"action": "replay", "replay_id": replay_id, "filter": filter}))
        .await
        .expect("replay");
    assert_eq!(result["already_done"], false);
    assert_eq!(result["counts"]["matched"], dead.len());
    assert_eq!(result["counts"]["replayed"], healthy.len());
    assert_eq!(
        result["counts"]["skipped_unhealthy"],
        dead.len() - healthy.len()
    );
    assert_eq!(result["counts"]["skipped_changed"], 0);
    assert_eq!(result["counts"]["endpoints"], distinct);
    let pending = ids(
        &client,
        "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= now()",
    )
    .await;
    assert_eq!(
        pending, healthy,
        "exactly the healthy endpoints' deliveries are pending and due"
    );
    let still_dead = ids(
        &client,
        "SELECT id FROM webhook_deliveries WHERE status = 'dead_lettered'",
    )
    .await;
    assert_eq!(still_dead, dead.difference(&healthy).copied().collect());
    // One probe per distinct endpoint per replay (the dry run made the first).
    for n in 1..=9 {
        assert_eq!(endpoints.hits("HEAD", &format!("/{n}")), 2, "endpoint /{n}");
    }
    let reasons: HashMap<String, String> = result["skipped_endpoints"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|e| {
            (
                e["endpoint"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert_eq!(reasons[&format!("{}/8", endpoints.base)], "server-error");
    assert_eq!(reasons[&format!("{}/9", endpoints.base)], "timeout");
    assert!(
        reasons[&refused].starts_with("connect-failed"),
        "{reasons:?}"
    );
    assert!(reasons["http://169.254.169.254/latest/meta-data/"].starts_with("refused-target"));
    assert!(reasons["http://10.20.30.40/hooks"].starts_with("refused-target"));

    // The audit record: JSON and Markdown under the replay id.
    let json_bytes = audit(&sdk, &format!("replays/{replay_id}/audit.json"))
        .await
        .expect("audit.json");
    let record: ReplayAudit = serde_json::from_slice(&json_bytes).expect("audit JSON");
    assert_eq!(
        record.delivery_ids.iter().copied().collect::<BTreeSet<_>>(),
        healthy
    );
    assert_eq!(
        record.skipped_delivery_ids.len(),
        dead.len() - healthy.len()
    );
    assert_eq!(record.endpoints.iter().filter(|e| !e.healthy).count(), 5);
    let md = String::from_utf8(
        audit(&sdk, &format!("replays/{replay_id}/audit.md"))
            .await
            .expect("audit.md"),
    )
    .expect("utf-8");
    assert!(
        md.contains(&replay_id) && md.contains("refused-target") && md.contains("server-error"),
        "{md}"
    );

    // A rerun with the same id changes nothing and writes no second audit version.
    let after = fingerprint(&client).await;
    let again = replay
        .handle(json!({"action": "replay", "replay_id": replay_id, "filter": filter}))
        .await
        .expect("rerun");
    assert_eq!(again["already_done"], true);
    assert_eq!(again["counts"], result["counts"]);
    assert_eq!(fingerprint(&client).await, after);
    let bucket = seed()["bucket"].as_str().unwrap().to_owned();
    let versions = s3(&sdk)
        .list_object_versions()
        .bucket(&bucket)
        .prefix(format!("replays/{replay_id}/"))
        .send()
        .await
        .expect("versions");
    assert_eq!(
        versions.versions().len(),
        2,
        "one version each of audit.json and audit.md"
    );
    // Under a new id, nothing healthy is left to replay.
    let other = replay
        .handle(json!({"action": "replay", "replay_id": unique("inc"), "filter": filter}))
        .await
        .expect("second replay");
    assert_eq!(other["counts"]["replayed"], 0);
    assert_eq!(fingerprint(&client).await, after);

    // The worker picks the deliveries up; verify reports the outcome per endpoint.
    let http = catalyst_dr::tls::http_client_builder()
        .timeout(std::time::Duration::from_millis(500))
        .no_proxy()
        .build()
        .expect("http");
    while worker_pass(&client, &http).await > 0 {}
    let verified = replay
        .handle(json!({"action": "verify", "replay_id": replay_id}))
        .await
        .expect("verify");
    let on_404 = count(&client, "SELECT count(*) FROM webhook_deliveries WHERE subscription_id = 7 AND error_message = 'endpoint refused the delivery'").await;
    assert_eq!(verified["replayed"], healthy.len());
    assert_eq!(verified["total"]["pending"], 0);
    assert_eq!(verified["total"]["dead_lettered"], on_404);
    assert_eq!(
        verified["total"]["succeeded"].as_i64().unwrap() + on_404,
        healthy.len() as i64
    );
    assert_eq!(verified["settled"], true);
    let per_endpoint = verified["endpoints"].as_array().expect("endpoints");
    assert_eq!(per_endpoint.len(), 7);
}

#[tokio::test]
async fn a_worker_update_during_the_replay_is_neither_lost_nor_overwritten() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let (db, secret, client) = generated_database(&sdk, "race", &spec(&endpoints, 5, 800)).await;
    let dead: Vec<i64> = ids(
        &client,
        "SELECT id FROM webhook_deliveries WHERE status = 'dead_lettered'",
    )
    .await
    .into_iter()
    .collect();
    let touched: Vec<i64> = dead.iter().copied().step_by(7).collect();

    // The worker's transaction updates some of the rows and stays open while the replay runs.
    let worker = catalyst_dr_tests::pg_connect(&db).await;
    worker.batch_execute("BEGIN").await.expect("begin");
    worker
        .execute(
            "UPDATE webhook_deliveries SET status = 'failed', attempts = attempts + 1, error_message = 'worker was here', updated_at = now() WHERE id = ANY($1)",
            &[&touched],
        )
        .await
        .expect("worker update");
    let replay = Arc::new(replay_with(&sdk, &secret, &[]));
    let replay_id = unique("race");
    let task = {
        let replay = replay.clone();
        let event = json!({"action": "replay", "replay_id": replay_id, "filter": {"window_hours": 48}, "spread_seconds": 600});
        tokio::spawn(async move { replay.handle(event).await })
    };
    // Wait until the replay's UPDATE waits for the worker's row locks, then let the worker commit.
    let admin = catalyst_dr_tests::pg_admin().await;
    loop {
        let waiting: i64 = admin
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'", &[&db])
            .await
            .expect("pg_stat_activity")
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            !task.is_finished(),
            "the replay finished without meeting the worker's locks"
        );
        tokio::task::yield_now().await;
    }
    worker.batch_execute("COMMIT").await.expect("commit");
    let result: Value = task.await.expect("join").expect("replay");

    let touched_set: BTreeSet<i64> = touched.iter().copied().collect();
    assert_eq!(result["counts"]["skipped_changed"], touched.len());
    assert_eq!(result["counts"]["replayed"], dead.len() - touched.len());
    let failed = ids(&client, "SELECT id FROM webhook_deliveries WHERE status = 'failed' AND error_message = 'worker was here'").await;
    assert_eq!(failed, touched_set, "the worker's updates stand");
    let record: ReplayAudit = serde_json::from_slice(
        &audit(&sdk, &format!("replays/{replay_id}/audit.json"))
            .await
            .expect("audit"),
    )
    .expect("audit JSON");
    assert_eq!(
        record
            .changed_delivery_ids
            .iter()
            .copied()
            .collect::<BTreeSet<_>>(),
        touched_set
    );
    let pending: i64 = client
        .query_one(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending' AND id = ANY($1)",
            &[&dead],
        )
        .await
        .expect("pending")
        .get(0);
    assert_eq!(
        pending as usize,
        dead.len() - touched.len(),
        "every other row was requeued"
    );
    // spread_seconds: the requeued rows' next_attempt_at spans the spread window.
    let span: f64 = client
        .query_one(
            "SELECT extract(epoch FROM max(next_attempt_at) - min(next_attempt_at))::float8 FROM webhook_deliveries WHERE id = ANY($1) AND status = 'pending'",
            &[&record.delivery_ids],
        )
        .await
        .expect("span")
        .get(0);
    assert!(
        span > 500.0 && span < 600.0,
        "next_attempt_at spread over {span} s"
    );
}

#[tokio::test]
async fn bad_input_is_refused_before_any_side_effect() {
    let sdk = local_aws().await;
    let replay = replay_with(&sdk, "catalyst-dr/test/does-not-exist", &[]);
    for (event, field) in [
        (
            json!({"action": "replay", "replay_id": "../etc"}),
            "replay_id",
        ),
        (
            json!({"action": "replay", "replay_id": "ok", "spread_seconds": 100000}),
            "spread_seconds",
        ),
        (
            json!({"action": "plan", "database_secret_id": " "}),
            "database_secret_id",
        ),
        (
            json!({"action": "plan", "filter": {"since": "yesterday"}}),
            "filter.since",
        ),
        (json!({"action": "flush"}), "queue_url"),
        (
            json!({"action": "redrive", "dlq_url": "not a url"}),
            "dlq_url",
        ),
        (
            json!({"action": "redrive", "dlq_url": "http://localhost/1/q", "mode": "filtered"}),
            "source_queue_url",
        ),
    ] {
        let err = replay.handle(event.clone()).await.expect_err("refused");
        assert_eq!(err.error_type(), ErrorKind::InvalidInput, "{event}: {err}");
        assert!(err.to_string().contains(field), "{event}: {err}");
    }
}

#[tokio::test]
async fn host_names_are_resolved_once_and_checked_like_addresses() {
    use catalyst_dr::replay::config::{ProbeConfig, parse_cidrs};
    use catalyst_dr::replay::probe::{EndpointProbe, HttpProbe};
    let endpoints = Endpoints::start().await;
    let port = endpoints.base.rsplit(':').next().expect("port").to_owned();
    let by_name = format!("http://localhost:{port}/named");
    // localhost resolves to loopback: refused unless allowlisted, and then reached at the checked address.
    let strict = HttpProbe::new(ProbeConfig {
        timeout_ms: 400,
        ..ProbeConfig::default()
    })
    .expect("probe");
    let refused = strict.probe(&by_name).await;
    assert!(
        refused
            .reason
            .as_deref()
            .is_some_and(|r| r.starts_with("refused-target")),
        "{refused:?}"
    );
    assert_eq!(
        endpoints.hits("HEAD", "/named"),
        0,
        "a refused target is never contacted"
    );
    let allow = parse_cidrs("PROBE_ALLOW_CIDRS", "127.0.0.0/8,::1/128").expect("cidrs");
    let allowed = HttpProbe::new(ProbeConfig {
        timeout_ms: 400,
        allow,
        path: Some("/health".into()),
        ..ProbeConfig::default()
    })
    .expect("probe");
    let ok = allowed.probe(&by_name).await;
    assert!(ok.healthy, "{ok:?}");
    assert_eq!(
        endpoints.hits("HEAD", "/health"),
        1,
        "PROBE_PATH replaces the endpoint's path"
    );
}
