//! The fault matrix: faults injected at the worst moments, on the local stack, with the state
//! checked after the fault and after the rerun. Nothing lost, nothing applied twice, nothing
//! unrecorded. Faults that would disturb other tests (killing, freezing PostgreSQL) hit a cluster
//! the test starts for itself.

use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr::object_store::{ObjectStore, S3Objects};
use catalyst_dr::replay::DeadLetterReplay;
use catalyst_dr::replay::audit::ReplayAudit;
use catalyst_dr_tests::datagen::GeneratorSpec;
use catalyst_dr_tests::endpoints::Endpoints;
use catalyst_dr_tests::faults::{OwnPostgres, unreachable_aws};
use catalyst_dr_tests::{local_aws, s3, seed, unique};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use tokio_postgres::Client;

fn replay_with(
    sdk: &aws_config::SdkConfig,
    secret: &str,
    extra: &[(&str, &str)],
) -> DeadLetterReplay {
    let mut vars = vec![
        ("REPLAY_DATABASE_SECRET_ID", secret),
        ("PROBE_TIMEOUT_MS", "2000"),
        ("REPLAY_BATCH_SIZE", "50"),
        ("AUDIT_RETENTION_DAYS", "1"),
    ];
    vars.extend_from_slice(extra);
    catalyst_dr_tests::dead_letter_replay(sdk, &vars)
}

fn spec(endpoints: &Endpoints, deliveries: u64) -> GeneratorSpec {
    GeneratorSpec {
        seed: 11,
        users: 40,
        entitlements_per_user: 1,
        subscriptions: 8,
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

/// `updated_at` of every delivery: a row whose value did not move was not written.
async fn updated_at(client: &Client) -> BTreeMap<i64, String> {
    client
        .query("SELECT id, updated_at::text FROM webhook_deliveries", &[])
        .await
        .expect("updated_at")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

async fn read_audit(sdk: &aws_config::SdkConfig, replay_id: &str) -> Option<ReplayAudit> {
    let bucket = seed()["bucket"].as_str().expect("bucket").to_owned();
    match s3(sdk)
        .get_object()
        .bucket(&bucket)
        .key(format!("replays/{replay_id}/audit.json"))
        .send()
        .await
    {
        Ok(out) => Some(
            serde_json::from_slice(&out.body.collect().await.expect("body").into_bytes())
                .expect("audit JSON"),
        ),
        Err(_) => None,
    }
}

/// Waits (bounded) until a statement containing `needle` waits on a lock: the function has
/// reached the step the test holds back.
async fn until_blocked(observer: &Client, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = observer
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%'", &[&needle])
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the function never reached the held-back step"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_listed_once(audit: &ReplayAudit) {
    let unique: BTreeSet<i64> = audit.delivery_ids.iter().copied().collect();
    assert_eq!(
        unique.len(),
        audit.delivery_ids.len(),
        "an id is listed twice in the audit"
    );
    assert_eq!(audit.counts.replayed, audit.delivery_ids.len() as u64);
}

/// PostgreSQL crashes while a replay is between batches: the batches that committed are in the
/// journal, the one in flight is not; the rerun requeues only the rest and its audit lists every
/// requeued delivery exactly once.
#[tokio::test]
async fn replay_survives_a_postgres_crash_mid_batch() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let pg = OwnPostgres::start("fault-replay-crash");
    let (secret, client) = pg.catalyst_database(&sdk, &spec(&endpoints, 1_000)).await;
    let dead = ids(
        &client,
        "SELECT id FROM webhook_deliveries WHERE status = 'dead_lettered' ORDER BY id",
    )
    .await;
    assert!(
        dead.len() > 300,
        "enough dead letters for several batches: {}",
        dead.len()
    );
    let replay = replay_with(&sdk, &secret, &[]);
    let replay_id = unique("INC-crash");
    let event = json!({"action": "replay", "replay_id": replay_id, "filter": {"window_hours": 48}});

    // Hold a row of the sixth batch: the first five commit, the sixth waits on the lock.
    let victim = *dead.iter().nth(5 * 50 + 7).expect("victim");
    let holder = pg.connect("catalyst_auth").await;
    holder.batch_execute("BEGIN").await.expect("begin");
    holder
        .execute(
            "SELECT 1 FROM webhook_deliveries WHERE id = $1 FOR UPDATE",
            &[&victim],
        )
        .await
        .expect("lock the victim");
    let observer = pg.connect("catalyst_auth").await;
    let (result, ()) = tokio::join!(replay.handle(event.clone()), async {
        until_blocked(&observer, "replay_journal").await;
        pg.crash();
    });
    let err = result.expect_err("the replay fails with the database gone");
    assert!(
        matches!(
            err.error_type(),
            ErrorKind::Postgres | ErrorKind::DatabaseUnavailable
        ),
        "{}: {err}",
        err.error_type()
    );

    // After the fault: no audit, exactly five batches requeued, and each of those journaled.
    assert!(
        read_audit(&sdk, &replay_id).await.is_none(),
        "no audit is written by a failed replay"
    );
    pg.start_again();
    let client = pg.connect("catalyst_auth").await;
    let pending = ids(&client, "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at IS NOT NULL AND id IN (SELECT delivery_id FROM catalyst_dr.replay_journal)").await;
    let journal = ids(
        &client,
        &format!(
            "SELECT delivery_id FROM catalyst_dr.replay_journal WHERE replay_id = '{replay_id}'"
        ),
    )
    .await;
    assert_eq!(journal.len(), 250, "five committed batches of 50");
    assert_eq!(
        journal, pending,
        "every journaled delivery is requeued, and only those"
    );
    assert!(journal.iter().all(|id| dead.contains(id)));
    let before_rerun = updated_at(&client).await;

    // The rerun: finishes the rest, and the audit lists every requeued delivery exactly once.
    let result = replay.handle(event.clone()).await.expect("rerun");
    assert_eq!(result["already_done"], json!(false));
    let audit = read_audit(&sdk, &replay_id)
        .await
        .expect("audit written by the rerun");
    assert_listed_once(&audit);
    let listed: BTreeSet<i64> = audit.delivery_ids.iter().copied().collect();
    assert_eq!(
        listed, dead,
        "every dead letter (all endpoints healthy) is in the audit"
    );
    assert_eq!(audit.counts.replayed_earlier, 250);
    let still_dead = ids(
        &client,
        "SELECT id FROM webhook_deliveries WHERE status = 'dead_lettered'",
    )
    .await;
    assert!(still_dead.is_empty(), "nothing left behind: {still_dead:?}");
    // Nothing applied twice: the rows the first attempt requeued were not written again.
    let after = updated_at(&client).await;
    for id in &journal {
        assert_eq!(
            before_rerun[id], after[id],
            "delivery {id} was requeued a second time"
        );
    }
    // A third run changes nothing.
    let again = replay.handle(event).await.expect("third run");
    assert_eq!(again["already_done"], json!(true));
    assert_eq!(updated_at(&client).await, after);
}

/// Every batch commits, then the audit write fails (the AWS endpoint is unreachable): the rerun
/// requeues nothing again, even deliveries the worker dead-lettered anew in between, and writes an
/// audit that lists all of them.
#[tokio::test]
async fn replay_audit_write_failing_after_the_last_commit_is_recovered_by_the_rerun() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let pg = OwnPostgres::start("fault-replay-audit");
    let (secret, client) = pg.catalyst_database(&sdk, &spec(&endpoints, 600)).await;
    let dead = ids(
        &client,
        "SELECT id FROM webhook_deliveries WHERE status = 'dead_lettered'",
    )
    .await;
    let replay_id = unique("INC-audit");
    let event = json!({"action": "replay", "replay_id": replay_id, "filter": {"window_hours": 48}});

    // Reads reach S3, writes do not.
    let mut failing = replay_with(&sdk, &secret, &[]);
    let bucket = seed()["bucket"].as_str().expect("bucket").to_owned();
    failing.objects = Box::new(SplitStore {
        reads: S3Objects::new(s3(&sdk), &bucket),
        writes: S3Objects::new(
            catalyst_dr::aws_clients::s3_client(&unreachable_aws().await, true),
            &bucket,
        ),
    });
    let err = failing
        .handle(event.clone())
        .await
        .expect_err("the audit cannot be written");
    assert_eq!(err.error_type(), ErrorKind::AwsTransient, "{err}");
    assert!(read_audit(&sdk, &replay_id).await.is_none());
    let pending = ids(&client, "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND id IN (SELECT delivery_id FROM catalyst_dr.replay_journal)").await;
    assert_eq!(pending, dead, "every batch committed and is journaled");

    // The worker fails some of them again before the rerun: they are dead letters in the window
    // once more, but this replay already requeued them once.
    let again: Vec<i64> = dead.iter().copied().step_by(7).collect();
    client
        .execute("UPDATE webhook_deliveries SET status = 'dead_lettered', attempts = attempts + 1, updated_at = now() WHERE id = ANY($1)", &[&again])
        .await
        .expect("worker dead-letters some again");
    let before = updated_at(&client).await;

    let replay = replay_with(&sdk, &secret, &[]);
    replay.handle(event).await.expect("rerun");
    let audit = read_audit(&sdk, &replay_id).await.expect("audit");
    assert_listed_once(&audit);
    assert_eq!(
        audit.delivery_ids.iter().copied().collect::<BTreeSet<_>>(),
        dead
    );
    assert_eq!(audit.counts.replayed_earlier, dead.len() as u64);
    assert_eq!(
        updated_at(&client).await,
        before,
        "the rerun wrote no delivery"
    );
    let md = s3(&sdk)
        .get_object()
        .bucket(&bucket)
        .key(format!("replays/{replay_id}/audit.md"))
        .send()
        .await
        .expect("markdown audit")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert!(String::from_utf8_lossy(&md).contains(&format!("replayed ({})", dead.len())));
}

/// Reads from one store, writes to another: the bucket stays readable while writes cannot reach it.
struct SplitStore {
    reads: S3Objects,
    writes: S3Objects,
}

#[async_trait::async_trait]
impl ObjectStore for SplitStore {
    fn bucket(&self) -> &str {
        self.reads.bucket()
    }
    async fn put_locked(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        retain_until: time::OffsetDateTime,
    ) -> Result<catalyst_dr::object_store::PutOutcome, catalyst_dr::aws_error::AwsCallError> {
        self.writes
            .put_locked(key, body, content_type, retain_until)
            .await
    }
    async fn get(
        &self,
        key: &str,
    ) -> Result<Option<Vec<u8>>, catalyst_dr::aws_error::AwsCallError> {
        self.reads.get(key).await
    }
    async fn list(
        &self,
        prefix: &str,
    ) -> Result<Vec<catalyst_dr::object_store::StoredObject>, catalyst_dr::aws_error::AwsCallError>
    {
        self.reads.list(prefix).await
    }
    async fn open(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<catalyst_dr::object_store::ObjectBody>, catalyst_dr::aws_error::AwsCallError>
    {
        self.reads.open(key, version_id).await
    }
    async fn create_upload(
        &self,
        key: &str,
        retain_until: time::OffsetDateTime,
    ) -> Result<String, catalyst_dr::aws_error::AwsCallError> {
        self.writes.create_upload(key, retain_until).await
    }
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: bytes::Bytes,
    ) -> Result<catalyst_dr::object_store::UploadedPart, catalyst_dr::aws_error::AwsCallError> {
        self.writes.upload_part(key, upload_id, number, body).await
    }
    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<catalyst_dr::object_store::UploadedPart>,
    ) -> Result<Option<String>, catalyst_dr::aws_error::AwsCallError> {
        self.writes.complete_upload(key, upload_id, parts).await
    }
    async fn lock_version(
        &self,
        key: &str,
        version_id: Option<&str>,
        retain_until: time::OffsetDateTime,
    ) -> Result<(), catalyst_dr::aws_error::AwsCallError> {
        self.writes
            .lock_version(key, version_id, retain_until)
            .await
    }
    async fn abort_upload(
        &self,
        key: &str,
        upload_id: &str,
    ) -> Result<(), catalyst_dr::aws_error::AwsCallError> {
        self.writes.abort_upload(key, upload_id).await
    }
    async fn pending_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<catalyst_dr::object_store::PendingUpload>, catalyst_dr::aws_error::AwsCallError>
    {
        self.reads.pending_uploads(prefix).await
    }
    async fn head(
        &self,
        key: &str,
    ) -> Result<Option<catalyst_dr::object_store::ObjectHead>, catalyst_dr::aws_error::AwsCallError>
    {
        self.reads.head(key).await
    }
}

/// A PostgreSQL whose postmaster is frozen accepts TCP connections and never answers: `plan`
/// fails within the configured bounds, the error names the handshake bound, and the same warm
/// process works again once the server is back.
#[tokio::test]
async fn a_frozen_postmaster_fails_plan_within_the_handshake_bound() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let pg = OwnPostgres::start("fault-frozen");
    let (secret, _client) = pg.catalyst_database(&sdk, &spec(&endpoints, 100)).await;
    let replay = replay_with(
        &sdk,
        &secret,
        &[
            ("PG_CONNECT_TIMEOUT_MS", "500"),
            ("PG_HANDSHAKE_TIMEOUT_MS", "1000"),
        ],
    );
    let plan = json!({"action": "plan", "filter": {"window_hours": 48}});
    replay
        .handle(plan.clone())
        .await
        .expect("plan before the freeze");

    pg.freeze();
    let started = std::time::Instant::now();
    let err = replay
        .handle(plan.clone())
        .await
        .expect_err("a frozen server cannot answer");
    let elapsed = started.elapsed();
    pg.thaw();
    assert_eq!(err.error_type(), ErrorKind::DatabaseUnavailable, "{err}");
    let message = catalyst_dr::error_chain::error_chain(&err);
    assert!(
        message.contains("handshake bound")
            && message.contains("PG_HANDSHAKE_TIMEOUT_MS = 1000 ms"),
        "{message}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "bounded at 1.5 s, took {elapsed:?}"
    );
    replay.handle(plan).await.expect("plan after the thaw");
}

/// The whole server freezes while a replay waits on a batch: no answer ever comes, the kernel
/// keeps the connection alive, and the client-side statement bound ends the wait. Nothing is lost:
/// the rerun after the thaw completes, and the audit lists every delivery once.
#[tokio::test]
async fn a_server_frozen_mid_replay_fails_at_the_statement_bound_and_the_rerun_completes() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let pg = OwnPostgres::start("fault-frozen-statement");
    let (secret, client) = pg.catalyst_database(&sdk, &spec(&endpoints, 600)).await;
    let dead = ids(
        &client,
        "SELECT id FROM webhook_deliveries WHERE status = 'dead_lettered' ORDER BY id",
    )
    .await;
    let replay = replay_with(&sdk, &secret, &[("PG_STATEMENT_TIMEOUT_MS", "1500")]);
    let replay_id = unique("INC-frozen");
    let event = json!({"action": "replay", "replay_id": replay_id, "filter": {"window_hours": 48}});

    let victim = *dead.iter().nth(2 * 50 + 3).expect("victim");
    let holder = pg.connect("catalyst_auth").await;
    holder.batch_execute("BEGIN").await.expect("begin");
    holder
        .execute(
            "SELECT 1 FROM webhook_deliveries WHERE id = $1 FOR UPDATE",
            &[&victim],
        )
        .await
        .expect("lock the victim");
    let observer = pg.connect("catalyst_auth").await;
    let mut frozen_at = None;
    let (result, ()) = tokio::join!(replay.handle(event.clone()), async {
        until_blocked(&observer, "replay_journal").await;
        pg.freeze_all();
        frozen_at = Some(std::time::Instant::now());
    });
    let waited = frozen_at.expect("frozen").elapsed();
    pg.thaw();
    let err = result.expect_err("no answer from a frozen server");
    assert_eq!(err.error_type(), ErrorKind::DatabaseUnavailable, "{err}");
    let message = catalyst_dr::error_chain::error_chain(&err);
    assert!(
        message.contains("requeue batch") && message.contains("statement bound"),
        "{message}"
    );
    assert!(
        waited < Duration::from_secs(8),
        "bounded at 1.5 s + 2 s grace, waited {waited:?}"
    );
    holder
        .batch_execute("ROLLBACK")
        .await
        .expect("release the victim");

    let journal = ids(
        &client,
        &format!(
            "SELECT delivery_id FROM catalyst_dr.replay_journal WHERE replay_id = '{replay_id}'"
        ),
    )
    .await;
    assert_eq!(
        journal.len(),
        100,
        "two batches committed before the freeze"
    );
    replay.handle(event).await.expect("rerun after the thaw");
    let audit = read_audit(&sdk, &replay_id).await.expect("audit");
    assert_listed_once(&audit);
    assert_eq!(
        audit.delivery_ids.iter().copied().collect::<BTreeSet<_>>(),
        dead
    );
    assert_eq!(audit.counts.replayed_earlier, 100);
}

/// Bad events through the real Lambda edge (`cargo lambda watch`): times outside the sane window
/// and numbers JSON cannot hold are `InvalidInput` naming the field, never a panic or a Rust type.
#[tokio::test]
async fn malformed_events_through_the_lambda_edge_are_invalid_input_naming_the_field() {
    let endpoint = catalyst_dr_tests::stack_var("LAMBDA_ENDPOINT_URL");
    let http = catalyst_dr::tls::http_client_builder()
        .build()
        .expect("HTTP client");
    let cases = [
        (
            "snapshot-trigger",
            r#"{"action": "snapshot", "scheduled_time": "9999-12-31T23:59:59Z"}"#,
            "`scheduled_time`",
        ),
        (
            "snapshot-trigger",
            r#"{"action": "snapshot", "scheduled_time": "1969-12-31T23:59:59Z"}"#,
            "`scheduled_time`",
        ),
        (
            "dead-letter-replay",
            r#"{"action": "plan", "filter": {"limit": 1e309}}"#,
            "`filter.limit`",
        ),
        (
            "dead-letter-replay",
            r#"{"action": "replay", "replay_id": "x", "max_deliveries": 1e309}"#,
            "`max_deliveries`",
        ),
    ];
    for (function, body, field) in cases {
        let response = http
            .post(format!(
                "{endpoint}/2015-03-31/functions/{function}/invocations"
            ))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("invoke");
        let answer: serde_json::Value = response.json().await.expect("JSON answer");
        assert_eq!(
            answer["errorType"],
            json!(ErrorKind::InvalidInput.as_str()),
            "{function} {body}: {answer}"
        );
        assert!(
            answer["errorMessage"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{function} {body}: {answer}"
        );
    }
}

/// Rows in every table of the database behind `client`.
async fn total_rows(client: &Client) -> u64 {
    let tables = client
        .query(
            "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables",
            &[],
        )
        .await
        .expect("tables");
    let mut total = 0;
    for t in tables {
        let name: String = t.get(0);
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await
            .expect("count")
            .get(0);
        total += n as u64;
    }
    total
}

/// Stale configuration in a warm process: the source secret's `dbname` changes between two
/// invocations of the same snapshot-trigger, and the second logical backup reads the new database.
#[tokio::test]
async fn a_warm_snapshot_trigger_follows_a_changed_database_name() {
    use catalyst_dr::snapshot_trigger::SnapshotTrigger;
    use catalyst_dr::snapshot_trigger::config::SnapshotTriggerConfig;
    let sdk = local_aws().await;
    let (db_a, _) = catalyst_dr_tests::catalyst_database(&sdk, "warm_a", 10).await;
    let (db_b, _) = catalyst_dr_tests::catalyst_database(&sdk, "warm_b", 25).await;
    let password = catalyst_dr_tests::stack_var("CATALYST_DR_PG_PASSWORD");
    let secret = catalyst_dr_tests::put_db_secret(
        &sdk,
        &format!("catalyst-dr/test/{}", unique("warm")),
        "postgres",
        &password,
        &db_a,
    )
    .await;
    let bucket = unique("warm-backups");
    catalyst_dr_tests::locked_bucket(&s3(&sdk), &bucket).await;
    let config = SnapshotTriggerConfig {
        backup_bucket: bucket,
        snapshot: catalyst_dr::snapshot::config::SnapshotConfig {
            database: catalyst_dr::rds::DbSource::Instance("catalyst-auth-prod".into()),
            cache: None,
            cache_export: false,
            retention_days: 1,
            keep_newest: 7,
            schedule_name: "nightly-test".into(),
        },
        manifest_prefix: "manifests/".into(),
        s3_force_path_style: true,
        logical: catalyst_dr::logical::config::LogicalConfig {
            source_secret_id: Some(secret.clone()),
            tls: Some(catalyst_dr::postgres::TlsMode::Disable),
            ..catalyst_dr::logical::config::LogicalConfig::new(1)
        },
        dr: None,
    };
    let trigger = SnapshotTrigger::new(config, &sdk);
    let hour = |back: i64| {
        catalyst_dr::input::format_time(
            time::OffsetDateTime::now_utc()
                .replace_minute(0)
                .unwrap()
                .replace_second(0)
                .unwrap()
                - time::Duration::hours(back),
        )
    };

    let first = catalyst_dr_edge::invoke_value(
        &trigger,
        &json!({"action": "logical-backup", "scheduled_time": hour(2)}),
    )
    .await
    .expect("first backup");
    assert_eq!(
        first["rows"],
        json!(total_rows(&catalyst_dr_tests::pg_connect(&db_a).await).await)
    );
    catalyst_dr_tests::put_db_secret(&sdk, &secret, "postgres", &password, &db_b).await;
    let second = catalyst_dr_edge::invoke_value(
        &trigger,
        &json!({"action": "logical-backup", "scheduled_time": hour(1)}),
    )
    .await
    .expect("second backup");
    let rows_b = total_rows(&catalyst_dr_tests::pg_connect(&db_b).await).await;
    assert_ne!(first["rows"], second["rows"]);
    assert_eq!(
        second["rows"],
        json!(rows_b),
        "the warm function backed up the database the secret now names"
    );
}

/// Deliveries the journal holds for `replay_id`.
async fn journal(client: &Client, replay_id: &str) -> BTreeSet<i64> {
    client
        .query(
            "SELECT delivery_id FROM catalyst_dr.replay_journal WHERE replay_id = $1",
            &[&replay_id],
        )
        .await
        .expect("journal")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The function process is killed (SIGKILL) while a batch waits on a row lock. PostgreSQL does not
/// notice the dead client while the statement waits, so the batch commits after the process is
/// gone: the worst case, changes committed and no process left to record them. The journal holds
/// them, and the rerun's audit lists them.
#[tokio::test]
async fn replay_process_killed_mid_batch_loses_no_record() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let pg = OwnPostgres::start("fault-replay-kill");
    let (secret, client) = pg.catalyst_database(&sdk, &spec(&endpoints, 800)).await;
    let dead = ids(
        &client,
        "SELECT id FROM webhook_deliveries WHERE status = 'dead_lettered' ORDER BY id",
    )
    .await;
    let replay_id = unique("INC-kill");
    let event = json!({"action": "replay", "replay_id": replay_id, "filter": {"window_hours": 48}});

    let victim = *dead.iter().nth(3 * 50 + 5).expect("victim");
    let holder = pg.connect("catalyst_auth").await;
    holder.batch_execute("BEGIN").await.expect("begin");
    holder
        .execute(
            "SELECT 1 FROM webhook_deliveries WHERE id = $1 FOR UPDATE",
            &[&victim],
        )
        .await
        .expect("lock the victim");
    let bucket = seed()["bucket"].as_str().expect("bucket").to_owned();
    let mut function = tokio::process::Command::new(env!("CARGO_BIN_EXE_run-function"))
        .arg("dead-letter-replay")
        .arg(event.to_string())
        .env("BACKUP_BUCKET", &bucket)
        .env("REPLAY_DATABASE_SECRET_ID", &secret)
        .env("PG_TLS", "disable")
        .env("PROBE_ALLOW_CIDRS", "127.0.0.0/8")
        .env("REPLAY_BATCH_SIZE", "50")
        .env("AUDIT_RETENTION_DAYS", "1")
        .env("S3_FORCE_PATH_STYLE", "true")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the function process");
    let observer = pg.connect("catalyst_auth").await;
    until_blocked(&observer, "replay_journal").await;
    function.start_kill().expect("SIGKILL");
    let status = function.wait().await.expect("wait");
    assert!(!status.success(), "killed: {status}");

    // Let the orphaned statement finish: it commits, and its backend then finds the client gone.
    holder
        .batch_execute("ROLLBACK")
        .await
        .expect("release the victim");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while journal(&client, &replay_id).await.len() < 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the in-flight batch never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // After the fault: four batches requeued (three before the kill, one after it), all journaled,
    // no audit.
    let journaled = journal(&client, &replay_id).await;
    assert_eq!(journaled.len(), 200);
    assert!(
        journaled.contains(&victim),
        "the in-flight batch committed without its process"
    );
    assert!(read_audit(&sdk, &replay_id).await.is_none());
    let before = updated_at(&client).await;

    let replay = replay_with(&sdk, &secret, &[]);
    replay.handle(event).await.expect("rerun");
    let audit = read_audit(&sdk, &replay_id).await.expect("audit");
    assert_listed_once(&audit);
    assert_eq!(
        audit.delivery_ids.iter().copied().collect::<BTreeSet<_>>(),
        dead
    );
    assert_eq!(audit.counts.replayed_earlier, 200);
    let after = updated_at(&client).await;
    for id in &journaled {
        assert_eq!(
            before[id], after[id],
            "delivery {id} was requeued a second time"
        );
    }
}

/// The AWS endpoint is unreachable when a replay starts: it fails before touching the database
/// (the audit check comes first), and the rerun does the whole replay.
#[tokio::test]
async fn replay_with_aws_unreachable_changes_nothing_and_the_rerun_completes() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let pg = OwnPostgres::start("fault-replay-aws");
    let (secret, client) = pg.catalyst_database(&sdk, &spec(&endpoints, 200)).await;
    let dead = ids(
        &client,
        "SELECT id FROM webhook_deliveries WHERE status = 'dead_lettered'",
    )
    .await;
    let before = updated_at(&client).await;
    let replay_id = unique("INC-aws");
    let event = json!({"action": "replay", "replay_id": replay_id, "filter": {"window_hours": 48}});

    let cut_off = replay_with(&unreachable_aws().await, &secret, &[]);
    let err = cut_off.handle(event.clone()).await.expect_err("no AWS");
    assert_eq!(err.error_type(), ErrorKind::AwsTransient, "{err}");
    assert_eq!(updated_at(&client).await, before, "nothing written");

    replay_with(&sdk, &secret, &[])
        .handle(event)
        .await
        .expect("rerun");
    let audit = read_audit(&sdk, &replay_id).await.expect("audit");
    assert_listed_once(&audit);
    assert_eq!(
        audit.delivery_ids.iter().copied().collect::<BTreeSet<_>>(),
        dead
    );
    assert_eq!(audit.counts.replayed_earlier, 0);
}

/// The real SQS client, with the database crashed (or, with `freeze`, frozen whole) just as the
/// `crash_on`-th receive returns.
struct CrashOnReceive {
    inner: catalyst_dr::queues::SqsQueues,
    pg: std::sync::Arc<OwnPostgres>,
    receives: std::sync::atomic::AtomicUsize,
    crash_on: usize,
    freeze: bool,
}

#[async_trait::async_trait]
impl catalyst_dr::queues::Queues for CrashOnReceive {
    async fn attribute(
        &self,
        u: &str,
        n: aws_sdk_sqs::types::QueueAttributeName,
    ) -> Result<Option<String>, catalyst_dr::aws_error::AwsCallError> {
        self.inner.attribute(u, n).await
    }
    async fn depth(
        &self,
        u: &str,
    ) -> Result<catalyst_dr::queues::QueueDepth, catalyst_dr::aws_error::AwsCallError> {
        self.inner.depth(u).await
    }
    async fn receive(
        &self,
        u: &str,
        m: i32,
        v: i32,
        w: i32,
    ) -> Result<Vec<aws_sdk_sqs::types::Message>, catalyst_dr::aws_error::AwsCallError> {
        let messages = self.inner.receive(u, m, v, w).await;
        if self
            .receives
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
            == self.crash_on
        {
            if self.freeze {
                self.pg.freeze_all()
            } else {
                self.pg.crash()
            }
        }
        messages
    }
    async fn send_batch(
        &self,
        u: &str,
        e: Vec<aws_sdk_sqs::types::SendMessageBatchRequestEntry>,
    ) -> Result<catalyst_dr::queues::BatchOk, catalyst_dr::aws_error::AwsCallError> {
        self.inner.send_batch(u, e).await
    }
    async fn delete_batch(
        &self,
        u: &str,
        e: Vec<aws_sdk_sqs::types::DeleteMessageBatchRequestEntry>,
    ) -> Result<catalyst_dr::queues::BatchOk, catalyst_dr::aws_error::AwsCallError> {
        self.inner.delete_batch(u, e).await
    }
    async fn release_batch(
        &self,
        u: &str,
        e: Vec<aws_sdk_sqs::types::ChangeMessageVisibilityBatchRequestEntry>,
    ) -> Result<catalyst_dr::queues::BatchOk, catalyst_dr::aws_error::AwsCallError> {
        self.inner.release_batch(u, e).await
    }
    async fn tags(
        &self,
        u: &str,
    ) -> Result<HashMap<String, String>, catalyst_dr::aws_error::AwsCallError> {
        self.inner.tags(u).await
    }
    async fn purge(&self, u: &str) -> Result<bool, catalyst_dr::aws_error::AwsCallError> {
        self.inner.purge(u).await
    }
    async fn start_move(
        &self,
        s: &str,
        d: Option<&str>,
        r: i32,
    ) -> Result<String, catalyst_dr::aws_error::AwsCallError> {
        self.inner.start_move(s, d, r).await
    }
    async fn list_moves(
        &self,
        s: &str,
    ) -> Result<Vec<catalyst_dr::queues::MoveTask>, catalyst_dr::aws_error::AwsCallError> {
        self.inner.list_moves(s).await
    }
    async fn cancel_move(&self, h: &str) -> Result<i64, catalyst_dr::aws_error::AwsCallError> {
        self.inner.cancel_move(h).await
    }
}

/// Every message body in a queue (received and deleted).
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<String> {
    let mut all = Vec::new();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(600)
            .send()
            .await
            .expect("receive");
        let messages = out.messages.unwrap_or_default();
        if messages.is_empty() {
            return all;
        }
        all.extend(
            messages
                .iter()
                .map(|m| m.body().unwrap_or_default().to_owned()),
        );
    }
}

async fn redrive_fixture(
    label: &str,
) -> (
    std::sync::Arc<OwnPostgres>,
    String,
    BTreeSet<String>,
    String,
    String,
    aws_sdk_sqs::Client,
) {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let pg = std::sync::Arc::new(OwnPostgres::start(label));
    let (secret, client) = pg.catalyst_database(&sdk, &spec(&endpoints, 200)).await;
    let dead: Vec<i64> = ids(
        &client,
        "SELECT id FROM webhook_deliveries WHERE status = 'dead_lettered' ORDER BY id",
    )
    .await
    .into_iter()
    .take(45)
    .collect();
    assert_eq!(dead.len(), 45);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let (source_url, dlq_url) =
        catalyst_dr_tests::queue_with_dead_letters(&sqs, &unique(label), 1).await;
    let bodies: BTreeSet<String> = dead
        .iter()
        .map(|id| json!({"delivery_id": id}).to_string())
        .collect();
    for body in &bodies {
        sqs.send_message()
            .queue_url(&dlq_url)
            .message_body(body)
            .send()
            .await
            .expect("dead letter");
    }
    (pg, secret, bodies, source_url, dlq_url, sqs)
}

/// The whole server freezes in the middle of a filtered redrive: the delivery lookup gives up at
/// the statement bound, the batch in hand stays in the DLQ (visible again at once), and the rerun
/// after the thaw sends the rest, each message once.
#[tokio::test]
async fn filtered_redrive_with_the_server_frozen_stops_at_the_statement_bound() {
    let sdk = local_aws().await;
    let (pg, secret, bodies, source_url, dlq_url, sqs) =
        redrive_fixture("fault-redrive-frozen").await;
    let event = json!({"action": "redrive", "mode": "filtered", "dlq_url": dlq_url, "source_queue_url": source_url});
    let extra = [
        ("REDRIVE_WAIT_SECONDS", "0"),
        ("REDRIVE_VISIBILITY_TIMEOUT_SECONDS", "600"),
        ("PG_STATEMENT_TIMEOUT_MS", "1000"),
    ];
    let mut faulty = replay_with(&sdk, &secret, &extra);
    faulty.queues = std::sync::Arc::new(CrashOnReceive {
        inner: catalyst_dr::queues::SqsQueues::new(sqs.clone()),
        pg: pg.clone(),
        receives: std::sync::atomic::AtomicUsize::new(0),
        crash_on: 2,
        freeze: true,
    });
    let started = std::time::Instant::now();
    let first = faulty
        .handle(event.clone())
        .await
        .expect("the run stops and reports");
    let took = started.elapsed();
    pg.thaw();
    assert!(
        first["stopped"]
            .as_str()
            .is_some_and(|s| s.contains("no answer within 3000 ms")),
        "{first}"
    );
    assert!(took < Duration::from_secs(10), "bounded: {took:?}");
    assert_eq!(
        (
            first["sent"].clone(),
            first["kept_by_reason"]["database-unavailable"].clone()
        ),
        (json!(10), json!(10)),
        "{first}"
    );

    let second = replay_with(&sdk, &secret, &extra)
        .handle(event)
        .await
        .expect("rerun");
    assert_eq!(second["sent"], json!(35), "{second}");
    let in_source = drain(&sqs, &source_url).await;
    assert_eq!(in_source.len(), 45, "no message sent twice");
    assert_eq!(in_source.into_iter().collect::<BTreeSet<_>>(), bodies);
    assert!(drain(&sqs, &dlq_url).await.is_empty());
}

/// PostgreSQL crashes in the middle of a filtered redrive: the batch in hand stays in the DLQ and
/// is visible again at once, the run stops and says why; after the restart the rerun sends the
/// rest. Every message ends in exactly one place, none sent twice.
#[tokio::test]
async fn filtered_redrive_with_postgres_crashing_mid_run_loses_and_duplicates_nothing() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let pg = std::sync::Arc::new(OwnPostgres::start("fault-redrive"));
    let (secret, client) = pg.catalyst_database(&sdk, &spec(&endpoints, 200)).await;
    let dead: Vec<i64> = ids(
        &client,
        "SELECT id FROM webhook_deliveries WHERE status = 'dead_lettered' ORDER BY id",
    )
    .await
    .into_iter()
    .take(45)
    .collect();
    assert_eq!(dead.len(), 45);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let (source_url, dlq_url) =
        catalyst_dr_tests::queue_with_dead_letters(&sqs, &unique("fault-webhooks"), 1).await;
    let bodies: BTreeSet<String> = dead
        .iter()
        .map(|id| json!({"delivery_id": id}).to_string())
        .collect();
    for body in &bodies {
        sqs.send_message()
            .queue_url(&dlq_url)
            .message_body(body)
            .send()
            .await
            .expect("dead letter");
    }
    let event = json!({"action": "redrive", "mode": "filtered", "dlq_url": dlq_url, "source_queue_url": source_url});
    let extra = [
        ("REDRIVE_WAIT_SECONDS", "0"),
        ("REDRIVE_VISIBILITY_TIMEOUT_SECONDS", "600"),
    ];

    let mut faulty = replay_with(&sdk, &secret, &extra);
    faulty.queues = std::sync::Arc::new(CrashOnReceive {
        inner: catalyst_dr::queues::SqsQueues::new(sqs.clone()),
        pg: pg.clone(),
        receives: std::sync::atomic::AtomicUsize::new(0),
        crash_on: 3,
        freeze: false,
    });
    let first = faulty
        .handle(event.clone())
        .await
        .expect("the run stops and reports");
    assert!(
        first["stopped"]
            .as_str()
            .is_some_and(|s| s.contains("delivery lookup failed")),
        "{first}"
    );
    assert_eq!(
        first["sent"],
        json!(20),
        "two batches sent before the crash: {first}"
    );
    assert_eq!(
        first["kept_by_reason"]["database-unavailable"],
        json!(10),
        "{first}"
    );

    pg.start_again();
    let second = replay_with(&sdk, &secret, &extra)
        .handle(event)
        .await
        .expect("rerun");
    assert!(second["stopped"].is_null(), "{second}");
    assert_eq!(
        second["sent"],
        json!(25),
        "the batch in hand was visible again at once: {second}"
    );
    let in_source = drain(&sqs, &source_url).await;
    assert_eq!(in_source.len(), 45, "no message sent twice");
    assert_eq!(in_source.into_iter().collect::<BTreeSet<_>>(), bodies);
    assert!(
        drain(&sqs, &dlq_url).await.is_empty(),
        "nothing left behind"
    );
}

/// snapshot-trigger in a process of its own, configured for logical backups of `secret` into
/// `bucket`.
fn snapshot_trigger_process(
    secret: &str,
    bucket: &str,
    event: &serde_json::Value,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_run-function"));
    command
        .arg("snapshot-trigger")
        .arg(event.to_string())
        .env("BACKUP_BUCKET", bucket)
        .env("RDS_INSTANCE_ID", "catalyst-auth-prod")
        .env("ELASTICACHE_EXPORT", "false")
        .env("RETENTION_DAYS", "1")
        .env("SOURCE_DATABASE_SECRET_ID", secret)
        .env("PG_TLS", "disable")
        .env("S3_FORCE_PATH_STYLE", "true")
        .env("LOGICAL_PARALLELISM", "2")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    command
}

async fn run_to_end(mut command: tokio::process::Command) -> serde_json::Value {
    let out = command.output().await.expect("run the function");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Metrics lines come first; the result is the last line.
    serde_json::from_str(text.trim().lines().last().unwrap_or_default()).expect("a JSON result")
}

/// The function process is killed in the middle of a logical backup (its exported snapshot open,
/// reading a table another session holds locked): no manifest exists, so the backup does not
/// count; the rerun backs up every row, verifies, leaves no open upload, and a third run does
/// nothing.
#[tokio::test]
async fn logical_backup_process_killed_mid_backup_leaves_no_manifest_and_the_rerun_completes() {
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let pg = OwnPostgres::start("fault-logical-kill");
    let (secret, client) = pg.catalyst_database(&sdk, &spec(&endpoints, 2_000)).await;
    let bucket = unique("fault-logical");
    catalyst_dr_tests::locked_bucket(&s3(&sdk), &bucket).await;
    let scheduled = catalyst_dr::input::format_time(
        time::OffsetDateTime::now_utc()
            .replace_minute(0)
            .unwrap()
            .replace_second(0)
            .unwrap()
            .replace_nanosecond(0)
            .unwrap(),
    );
    let backup = json!({"action": "logical-backup", "scheduled_time": scheduled});

    let holder = pg.connect("catalyst_auth").await;
    holder
        .batch_execute("BEGIN; LOCK TABLE webhook_deliveries IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock the table");
    let mut function = snapshot_trigger_process(&secret, &bucket, &backup)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start");
    let observer = pg.connect("catalyst_auth").await;
    // On this cluster only the backup can wait on a lock.
    until_blocked(&observer, "").await;
    function.start_kill().expect("SIGKILL");
    assert!(!function.wait().await.expect("wait").success());
    holder.batch_execute("ROLLBACK").await.expect("release");

    // After the fault: no manifest, so no backup to restore from.
    let objects = s3(&sdk)
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("logical/")
        .send()
        .await
        .expect("list");
    assert!(
        !objects
            .contents()
            .iter()
            .any(|o| o.key().is_some_and(|k| k.ends_with("manifest.json"))),
        "no manifest after the kill"
    );

    let rerun = run_to_end(snapshot_trigger_process(&secret, &bucket, &backup)).await;
    assert_eq!(rerun["reused"], json!(false), "{rerun}");
    assert_eq!(
        rerun["rows"],
        json!(total_rows(&client).await),
        "every row backed up: {rerun}"
    );
    let verified = run_to_end(snapshot_trigger_process(
        &secret,
        &bucket,
        &json!({"action": "verify-logical", "scheduled_time": scheduled}),
    ))
    .await;
    assert_eq!(
        (verified["complete"].clone(), verified["ok"].clone()),
        (json!(true), json!(true)),
        "{verified}"
    );
    let open = s3(&sdk)
        .list_multipart_uploads()
        .bucket(&bucket)
        .send()
        .await
        .expect("uploads");
    assert!(
        open.uploads().is_empty(),
        "the dead attempt's uploads were aborted: {:?}",
        open.uploads()
    );
    let third = run_to_end(snapshot_trigger_process(&secret, &bucket, &backup)).await;
    assert_eq!(third["reused"], json!(true), "{third}");
}

/// PostgreSQL crashes while a drill's baseline waits for its table locks: no baseline is stored,
/// so no drill can compare against half a capture; after the restart the rerun captures it, and
/// a third run returns the same record.
#[tokio::test]
async fn drill_baseline_interrupted_by_a_postgres_crash_stores_nothing_and_the_rerun_captures_it() {
    use catalyst_dr::drill::DrillValidator;
    use catalyst_dr::drill::config::DrillConfig;
    let sdk = local_aws().await;
    let endpoints = Endpoints::start().await;
    let pg = OwnPostgres::start("fault-drill");
    let (secret, _client) = pg.catalyst_database(&sdk, &spec(&endpoints, 300)).await;
    let bucket = unique("fault-drill");
    catalyst_dr_tests::locked_bucket(&s3(&sdk), &bucket).await;
    let validator = DrillValidator::new(
        DrillConfig {
            rpo_objective_seconds: 300,
            lock_timeout_ms: 30_000,
            ..catalyst_dr_tests::drill_config(&bucket, &secret, &unique("fault-drill-staging"))
        },
        &sdk,
    );
    let drill_id = unique("fault").to_ascii_lowercase();
    let event = json!({"action": "baseline", "drill_id": drill_id});

    // An open write transaction: the baseline's SHARE locks wait for it.
    let writer = pg.connect("catalyst_auth").await;
    writer
        .batch_execute("BEGIN; UPDATE users SET disabled = disabled WHERE id = 1")
        .await
        .expect("open writer");
    let observer = pg.connect("catalyst_auth").await;
    let (result, ()) = tokio::join!(validator.handle(event.clone()), async {
        until_blocked(&observer, "LOCK TABLE").await;
        pg.crash();
    });
    let err = result.expect_err("the database went away");
    assert!(
        matches!(
            err.error_type(),
            ErrorKind::Postgres | ErrorKind::DatabaseUnavailable
        ),
        "{}: {err}",
        err.error_type()
    );
    let stored = s3(&sdk)
        .list_objects_v2()
        .bucket(&bucket)
        .prefix(format!("drills/{drill_id}/"))
        .send()
        .await
        .expect("list");
    assert!(
        stored.contents().is_empty(),
        "nothing stored for the interrupted baseline"
    );

    pg.start_again();
    let captured = validator.handle(event.clone()).await.expect("rerun");
    let client = pg.connect("catalyst_auth").await;
    let users: i64 = client
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .expect("users")
        .get(0);
    let tables = captured["tables"].as_array().expect("tables");
    assert!(
        tables
            .iter()
            .any(|t| t["table"] == json!("users") && t["rows"] == json!(users)),
        "{captured}"
    );
    let again = validator.handle(event).await.expect("third run");
    assert_eq!(
        again["captured_at"], captured["captured_at"],
        "the stored baseline is returned, not taken again"
    );
}
