//! Logical backups against the local PostgreSQL and S3 endpoint: the round trip of awkward data,
//! the one instant (writes committed mid-backup are absent), failures in the middle of a backup
//! (object store error, dropped connection) that leave no manifest and no open upload and rerun
//! cleanly, and restores refused for a target that is not empty or not staging.

use catalyst_dr::aws_error::{AwsCallError, AwsFailureKind};
use catalyst_dr::catalyst_db::{self, introspect};
use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr::logical::config::LogicalConfig;
use catalyst_dr::logical::restore::RestoreOptions;
use catalyst_dr::logical::{BackupObserver, LogicalBackups, LogicalError};
use catalyst_dr::object_store::{
    ObjectBody, ObjectStore, PendingUpload, PutOutcome, S3Objects, StoredObject, UploadedPart,
};
use catalyst_dr::postgres::TlsMode;
use catalyst_dr::run_id::RunId;
use catalyst_dr_tests::datagen::{self, GeneratorSpec};
use catalyst_dr_tests::{
    empty_database, local_aws, new_locked_bucket, pg_admin, pg_connect, run_in, s3,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use time::OffsetDateTime;
use tokio_postgres::Client;

const AWKWARD_SQL: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'it''s "great"');
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Mixed.Case" (
    id      bigserial PRIMARY KEY,
    b       bytea,
    ints    integer[],
    texts   text[],
    n       numeric(40, 10),
    f       double precision,
    big     text,
    j       jsonb,
    ts      timestamptz DEFAULT now(),
    iv      interval,
    u       text NOT NULL DEFAULT '',
    m       mood,
    len     integer GENERATED ALWAYS AS (length(u)) STORED,
    CONSTRAINT mixed_u_check CHECK (length(u) < 100000)
);
CREATE INDEX mixed_j_idx ON "Odd Schema"."Mixed.Case" USING gin (j);
INSERT INTO "Odd Schema"."Mixed.Case" (b, ints, texts, n, f, big, j, ts, iv, u, m) VALUES
    ('\x00ff0a5c'::bytea, '{1,NULL,3}', '{"a,b","c\"d",NULL,""}', 12345678901234567890.0123456789, 1.0e-300,
     repeat('large text ', 200000), '{"k": [1, null, "ü"], "nested": {"x": 1.5}}', '2026-03-29 01:30:00+01', '1 year 2 mons -3 days 04:05:06.789',
     E'tab\there\nnewline \\ backslash ☃ 日本語 😀', 'it''s "great"'),
    (NULL, NULL, '{}', 'NaN', 'Infinity', NULL, 'null', 'infinity', NULL, '', NULL),
    ('\x'::bytea, '{}', NULL, -0.0000000001, -0.0, '', '[]', '-infinity', '0', E'\r\n', 'sad');
CREATE TABLE empty_table (id integer PRIMARY KEY, v text);
CREATE TABLE many (id integer PRIMARY KEY, v text NOT NULL, at timestamptz NOT NULL);
INSERT INTO many SELECT g, md5(g::text), timestamptz '2026-01-01' + g * interval '1 second' FROM generate_series(1, 100000) g;
ALTER TABLE many ADD CONSTRAINT many_at_key UNIQUE (at) DEFERRABLE INITIALLY DEFERRED;
ALTER TABLE many ADD CONSTRAINT many_v_check CHECK (length(v) > 0) NOT VALID;
CREATE TABLE no_key (a integer, b text);
INSERT INTO no_key VALUES (2, 'x'), (1, NULL), (2, 'x'), (NULL, 'y');
CREATE SEQUENCE standalone_seq START 100 INCREMENT 5;
SELECT nextval('standalone_seq'), nextval('standalone_seq');
CREATE VIEW active_users AS SELECT id, email FROM users WHERE NOT disabled;
CREATE FUNCTION shout(t text) RETURNS text LANGUAGE sql AS 'SELECT upper(t)';
"#;

/// The source: the reference schema with generated data, plus the awkward types.
async fn source(sdk: &aws_config::SdkConfig) -> (String, String, Client) {
    let (name, secret, client) = empty_database(sdk, "logical_src").await;
    catalyst_db::apply(&client).await.expect("schema");
    let spec = GeneratorSpec {
        users: 300,
        subscriptions: 5,
        deliveries: 2_000,
        ..GeneratorSpec::default()
    };
    datagen::generate(&client, &spec).await.expect("generate");
    client
        .batch_execute(AWKWARD_SQL)
        .await
        .expect("awkward tables");
    (name, secret, client)
}

async fn staging_target(sdk: &aws_config::SdkConfig) -> (String, String, Client) {
    let (name, secret, client) = empty_database(sdk, "logical_dst").await;
    catalyst_db::mark_staging(&client, "logical-test")
        .await
        .expect("mark staging");
    (name, secret, client)
}

async fn backups(
    sdk: &aws_config::SdkConfig,
    bucket: &str,
    source_secret: Option<&str>,
    store: Option<Arc<dyn ObjectStore>>,
) -> LogicalBackups {
    let config = LogicalConfig {
        parallelism: 2,
        part_size_bytes: 5 << 20,
        // Small segments, so the larger tables are read, loaded and re-read in block ranges.
        segment_bytes: 1 << 20,
        source_secret_id: source_secret.map(str::to_owned),
        tls: Some(TlsMode::Disable),
        ..LogicalConfig::new(1)
    };
    let store = store.unwrap_or_else(|| Arc::new(S3Objects::new(s3(sdk), bucket)));
    LogicalBackups::new(
        config,
        store,
        Arc::new(aws_sdk_secretsmanager::Client::new(sdk)),
    )
}

/// Every constraint and index in the user schemas, as PostgreSQL renders them.
async fn schema_objects(client: &Client) -> Vec<String> {
    let constraints = client
        .query(
            "SELECT format('%s.%s %s %s valid=%s', n.nspname, c.conname, c.contype, pg_get_constraintdef(c.oid), c.convalidated) \
             FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' ORDER BY 1",
            &[],
        )
        .await
        .expect("constraints");
    let indexes = client
        .query("SELECT indexdef FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1", &[])
        .await
        .expect("indexes");
    constraints
        .iter()
        .chain(&indexes)
        .map(|r| r.get(0))
        .collect()
}

/// An independent fingerprint of every user table: md5 of all rows' text, ordered by that text.
async fn fingerprint(client: &Client) -> Vec<(String, i64, String)> {
    let tables: Vec<(String, String)> = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' ORDER BY 1, 2",
            &[],
        )
        .await
        .expect("tables")
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut out = Vec::new();
    for (schema, table) in tables {
        let name = introspect::qualified(&schema, &table);
        let row = client
            .query_one(&format!("SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text COLLATE \"C\")), '') FROM {name} t"), &[])
            .await
            .expect("fingerprint");
        out.push((format!("{schema}.{table}"), row.get(0), row.get(1)));
    }
    out
}

async fn pending(sdk: &aws_config::SdkConfig, bucket: &str) -> Vec<PendingUpload> {
    S3Objects::new(s3(sdk), bucket)
        .pending_uploads("logical/")
        .await
        .expect("list uploads")
}

#[tokio::test]
async fn round_trip_restores_identical_content_and_verify_checks_every_object() {
    let sdk = local_aws().await;
    let bucket = new_locked_bucket(&sdk, "logical").await;
    let (_src, src_secret, src) = source(&sdk).await;
    let logical = backups(&sdk, &bucket, Some(&src_secret), None).await;
    let run = run_in(0);

    let result = logical.backup(&run).await.expect("backup");
    assert!(!result.reused);
    assert_eq!(result.tables, 8, "{result:#?}");
    let manifest_key = format!("logical/{}/manifest.json", run.stamp);
    assert_eq!(result.manifest_key, manifest_key);
    let client = s3(&sdk);
    let head = client
        .head_object()
        .bucket(&bucket)
        .key(&manifest_key)
        .send()
        .await
        .expect("manifest");
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &client
            .get_object()
            .bucket(&bucket)
            .key(&manifest_key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes(),
    )
    .expect("manifest JSON");
    let many = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "many")
        .expect("many");
    assert_eq!(many["rows"], 100_000);
    let many_segments = many["segments"].as_array().unwrap();
    assert!(
        many_segments.len() >= 4,
        "a table of several MiB is split into 1 MiB block ranges: {many_segments:#?}"
    );
    let segment_rows: u64 = many_segments
        .iter()
        .map(|s| s["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(segment_rows, 100_000);
    assert!(
        many_segments.last().unwrap()["blocks"]["end"].is_null(),
        "the last range is open-ended"
    );
    assert!(result.segments > result.tables, "{result:#?}");
    let empty = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "empty_table")
        .expect("empty");
    assert_eq!(empty["rows"], 0);
    let table_head = client
        .head_object()
        .bucket(&bucket)
        .key(many_segments[1]["key"].as_str().unwrap())
        .send()
        .await
        .expect("segment object");
    assert_eq!(
        table_head.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
    // The view and the function are captured with everything else: the backup is complete.
    assert_eq!(manifest["complete"], true, "{:#}", manifest["not_captured"]);
    assert_eq!(manifest["not_captured"], serde_json::json!([]));
    let pre_data: Vec<String> = manifest["schema"]["pre_data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{} {}",
                o["kind"].as_str().unwrap(),
                o["name"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        pre_data.contains(&"view public.active_users".to_owned())
            && pre_data.contains(&"function public.shout(text)".to_owned()),
        "{pre_data:?}"
    );
    assert!(pending(&sdk, &bucket).await.is_empty());

    // A rerun with the same id returns the finished backup.
    let again = logical.backup(&run).await.expect("rerun");
    assert!(again.reused);
    assert_eq!(again.instant, result.instant);

    let report = logical.verify(&run).await.expect("verify");
    assert!(report.ok && report.complete, "{report:#?}");
    assert_eq!(report.objects_checked, result.segments);

    let (_dst, dst_secret, dst) = staging_target(&sdk).await;
    let restored = logical
        .restore(
            &run,
            &dst_secret,
            RestoreOptions {
                database: None,
                reread: true,
                reset: false,
            },
        )
        .await
        .expect("restore");
    assert!(restored.consistent && restored.reread, "{restored:#?}");
    let many_check = restored
        .tables
        .iter()
        .find(|t| t.name == "many")
        .expect("many checked");
    assert_eq!(
        (many_check.rows, many_check.content_checksum),
        (100_000, Some(many_check.content_checksum_expected))
    );
    assert_eq!(fingerprint(&dst).await, fingerprint(&src).await);
    // Every key, check (valid or NOT VALID), deferrable constraint, foreign key and index is back as it was.
    let objects = schema_objects(&src).await;
    assert!(
        objects
            .iter()
            .any(|o| o.contains("many_at_key u UNIQUE (at) DEFERRABLE INITIALLY DEFERRED")),
        "{objects:#?}"
    );
    assert!(
        objects
            .iter()
            .any(|o| o.contains("many_v_check c CHECK") && o.ends_with("valid=f")),
        "{objects:#?}"
    );
    assert_eq!(schema_objects(&dst).await, objects);
    // Sequences continue where the source was, and constraints came back.
    let next: i64 = dst
        .query_one("SELECT nextval('standalone_seq')", &[])
        .await
        .unwrap()
        .get(0);
    let src_next: i64 = src
        .query_one("SELECT nextval('standalone_seq')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, src_next);
    // The identity sequence too (the generator writes explicit ids; whatever it left, the copy has).
    let identity = "SELECT nextval(pg_get_serial_sequence('public.webhook_deliveries', 'id'))";
    let (a, b): (i64, i64) = (
        dst.query_one(identity, &[]).await.unwrap().get(0),
        src.query_one(identity, &[]).await.unwrap().get(0),
    );
    assert_eq!(a, b);
    let fk = dst
        .execute(
            "INSERT INTO entitlements (user_id, product, plan) VALUES (-1, 'p', 'q')",
            &[],
        )
        .await;
    assert!(fk.is_err(), "the foreign key is restored");
    let len: i32 = dst
        .query_one(
            "SELECT len FROM \"Odd Schema\".\"Mixed.Case\" WHERE m = 'sad'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(len, 2, "generated columns are recomputed");
    let indexes: i64 = dst.query_one("SELECT count(*) FROM pg_indexes WHERE indexname IN ('mixed_j_idx', 'webhook_deliveries_status_updated_at_idx')", &[]).await.unwrap().get(0);
    assert_eq!(indexes, 2);

    // Verify reports an object the manifest does not list.
    client
        .put_object()
        .bucket(&bucket)
        .key(format!("logical/{}/tables/stray.copy.zst", run.stamp))
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let report = logical.verify(&run).await.expect("verify");
    assert!(
        report.ok,
        "an unexpected object is reported but does not fail verify: {report:#?}"
    );
    assert_eq!(report.unexpected_objects.len(), 1);
    assert!(
        many_segments[0]["key"]
            .as_str()
            .unwrap()
            .ends_with("tables/public.many/00000.copy.zst")
    );
}

/// Commits writes from another connection once the first segment's COPY is running.
struct WriteDuringBackup {
    db: String,
    done: AtomicBool,
    after: tokio::sync::Mutex<Option<(String, String)>>,
}

#[async_trait::async_trait]
impl BackupObserver for WriteDuringBackup {
    async fn segment_copy_started(&self, _schema: &str, _table: &str, _segment: u32) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        let writer = pg_connect(&self.db).await;
        writer
            .batch_execute(
                "BEGIN; INSERT INTO users (email) VALUES ('written-during-backup@example.com'); \
                 UPDATE many SET v = 'changed' WHERE id <= 10; DELETE FROM no_key WHERE a = 1; \
                 INSERT INTO empty_table VALUES (1, 'late'); COMMIT;",
            )
            .await
            .expect("concurrent writes");
        let row = writer.query_one("SELECT pg_current_wal_lsn()::text, to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')", &[]).await.unwrap();
        *self.after.lock().await = Some((row.get(0), row.get(1)));
    }
}

#[tokio::test]
async fn writes_committed_during_the_backup_are_not_in_it() {
    let sdk = local_aws().await;
    let bucket = new_locked_bucket(&sdk, "logical").await;
    let (src_name, src_secret, src) = source(&sdk).await;
    let before = fingerprint(&src).await;
    let mut logical = backups(&sdk, &bucket, Some(&src_secret), None).await;
    logical.config.parallelism = 1;
    let observer = Arc::new(WriteDuringBackup {
        db: src_name,
        done: AtomicBool::new(false),
        after: tokio::sync::Mutex::new(None),
    });
    logical.observer = Some(observer.clone());
    let run = run_in(10);
    let result = logical.backup(&run).await.expect("backup");
    let (lsn_after, time_after) = observer
        .after
        .lock()
        .await
        .clone()
        .expect("the writes ran during the backup");
    assert_ne!(fingerprint(&src).await, before, "the writes committed");

    // The instant precedes the writes' commit.
    let earlier: bool = src
        .query_one(
            "SELECT $1::text::pg_lsn < $2::text::pg_lsn",
            &[&result.instant.lsn, &lsn_after],
        )
        .await
        .unwrap()
        .get(0);
    assert!(earlier, "{} vs {lsn_after}", result.instant.lsn);
    assert!(
        result.instant.server_time < time_after,
        "{} vs {time_after}",
        result.instant.server_time
    );

    // Restored, the backup is the database as it was before the writes.
    let (_dst, dst_secret, dst) = staging_target(&sdk).await;
    let restored = logical
        .restore(&run, &dst_secret, RestoreOptions::default())
        .await
        .expect("restore");
    assert!(restored.consistent && !restored.reread, "{restored:#?}");
    assert_eq!(fingerprint(&dst).await, before);
}

/// Fails UploadPart of one segment's object, after the other uploads have started.
struct FailingStore {
    inner: S3Objects,
    fail_key_suffix: &'static str,
}

#[async_trait::async_trait]
impl ObjectStore for FailingStore {
    fn bucket(&self) -> &str {
        self.inner.bucket()
    }
    async fn create_upload(
        &self,
        key: &str,
        retain_until: OffsetDateTime,
    ) -> Result<String, AwsCallError> {
        self.inner.create_upload(key, retain_until).await
    }
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: bytes::Bytes,
    ) -> Result<UploadedPart, AwsCallError> {
        if key.ends_with(self.fail_key_suffix) {
            return Err(AwsCallError {
                operation: "s3:UploadPart",
                code: Some("InternalError".into()),
                kind: AwsFailureKind::Transient,
                source: "injected".into(),
            });
        }
        self.inner.upload_part(key, upload_id, number, body).await
    }
    async fn complete_upload(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<UploadedPart>,
    ) -> Result<Option<String>, AwsCallError> {
        self.inner.complete_upload(key, upload_id, parts).await
    }
    async fn lock_version(
        &self,
        key: &str,
        version_id: Option<&str>,
        retain_until: OffsetDateTime,
    ) -> Result<(), AwsCallError> {
        self.inner.lock_version(key, version_id, retain_until).await
    }
    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), AwsCallError> {
        self.inner.abort_upload(key, upload_id).await
    }
    async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, AwsCallError> {
        self.inner.pending_uploads(prefix).await
    }
    async fn put_locked(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        retain_until: OffsetDateTime,
    ) -> Result<PutOutcome, AwsCallError> {
        self.inner
            .put_locked(key, body, content_type, retain_until)
            .await
    }
    async fn head(
        &self,
        key: &str,
    ) -> Result<Option<catalyst_dr::object_store::ObjectHead>, AwsCallError> {
        self.inner.head(key).await
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, AwsCallError> {
        self.inner.get(key).await
    }
    async fn open(
        &self,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectBody>, AwsCallError> {
        self.inner.open(key, version_id).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<StoredObject>, AwsCallError> {
        self.inner.list(prefix).await
    }
}

/// Terminates the backend running a COPY in the source database, from the admin connection.
struct DropConnection {
    db: String,
    table: &'static str,
}

#[async_trait::async_trait]
impl BackupObserver for DropConnection {
    async fn segment_copy_started(&self, _schema: &str, table: &str, segment: u32) {
        if table != self.table || segment != 1 {
            return;
        }
        let killed: i64 = pg_admin()
            .await
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1 AND datname = $2 AND query LIKE 'COPY%'",
                &[&introspect::BACKUP_APPLICATION_NAME, &self.db],
            )
            .await
            .expect("terminate")
            .get(0);
        assert!(killed >= 1, "no COPY backend to terminate");
    }
}

async fn assert_failed_cleanly(
    sdk: &aws_config::SdkConfig,
    bucket: &str,
    logical: &LogicalBackups,
    run: &RunId,
    err: &LogicalError,
) {
    let key = format!("logical/{}/manifest.json", run.stamp);
    assert!(
        logical.store.get(&key).await.unwrap().is_none(),
        "no manifest after {err}"
    );
    assert!(
        pending(sdk, bucket).await.is_empty(),
        "no multipart upload left open after {err}"
    );
    let report = logical.verify(run).await.expect("verify");
    assert!(!report.complete && !report.ok, "{report:#?}");
}

#[tokio::test]
async fn a_failure_mid_backup_leaves_no_manifest_and_no_open_upload_and_the_rerun_succeeds() {
    let sdk = local_aws().await;
    let bucket = new_locked_bucket(&sdk, "logical").await;
    let (src_name, src_secret, _client) = source(&sdk).await;

    // An object-store error.
    let failing: Arc<dyn ObjectStore> = Arc::new(FailingStore {
        inner: S3Objects::new(s3(&sdk), &bucket),
        fail_key_suffix: "public.many/00002.copy.zst",
    });
    let logical = backups(&sdk, &bucket, Some(&src_secret), Some(failing)).await;
    let run_a = run_in(20);
    let err = logical
        .backup(&run_a)
        .await
        .expect_err("the injected failure");
    assert_eq!(err.error_type(), ErrorKind::AwsTransient);
    assert_failed_cleanly(&sdk, &bucket, &logical, &run_a, &err).await;

    // A dropped connection.
    let mut logical = backups(&sdk, &bucket, Some(&src_secret), None).await;
    logical.observer = Some(Arc::new(DropConnection {
        db: src_name,
        table: "many",
    }));
    let run_b = run_in(30);
    let err = logical
        .backup(&run_b)
        .await
        .expect_err("the dropped connection");
    assert_eq!(err.error_type(), ErrorKind::Postgres, "{err}");
    assert_failed_cleanly(&sdk, &bucket, &logical, &run_b, &err).await;

    // Both reruns complete, and verify.
    logical.observer = None;
    for run in [&run_a, &run_b] {
        let result = logical.backup(run).await.expect("rerun");
        assert!(!result.reused);
        let report = logical.verify(run).await.expect("verify");
        assert!(report.ok, "{report:#?}");
    }
}

#[tokio::test]
async fn restore_refuses_a_target_that_is_not_staging_or_not_empty_and_changes_nothing() {
    let sdk = local_aws().await;
    let bucket = new_locked_bucket(&sdk, "logical").await;
    let (_src, src_secret, _client) = source(&sdk).await;
    let logical = backups(&sdk, &bucket, Some(&src_secret), None).await;
    let run = run_in(40);
    logical.backup(&run).await.expect("backup");

    let (_plain, plain_secret, plain) = empty_database(&sdk, "logical_plain").await;
    let err = logical
        .restore(&run, &plain_secret, RestoreOptions::default())
        .await
        .expect_err("not staging");
    assert_eq!(err.error_type(), ErrorKind::NotStaging, "{err}");
    assert!(fingerprint(&plain).await.is_empty());

    let (_busy, busy_secret, busy) = staging_target(&sdk).await;
    busy.batch_execute(
        "CREATE TABLE precious (id int PRIMARY KEY); INSERT INTO precious VALUES (7)",
    )
    .await
    .unwrap();
    let before = fingerprint(&busy).await;
    let err = logical
        .restore(&run, &busy_secret, RestoreOptions::default())
        .await
        .expect_err("not empty");
    assert_eq!(err.error_type(), ErrorKind::TargetNotEmpty, "{err}");
    assert_eq!(fingerprint(&busy).await, before);

    // A backup that never finished cannot be restored.
    let (_dst, dst_secret, dst) = staging_target(&sdk).await;
    let err = logical
        .restore(&run_in(50), &dst_secret, RestoreOptions::default())
        .await
        .expect_err("no manifest");
    assert_eq!(err.error_type(), ErrorKind::BackupIncomplete);

    // Nor can a manifest of a format this version does not read; the target stays empty.
    let old = run_in(55);
    s3(&sdk)
        .put_object()
        .bucket(&bucket)
        .key(format!("logical/{}/manifest.json", old.stamp))
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            br#"{"format": "catalyst-dr/logical-backup/v1", "tables": []}"#,
        ))
        .send()
        .await
        .expect("put an old manifest");
    let err = logical
        .restore(&old, &dst_secret, RestoreOptions::default())
        .await
        .expect_err("old format");
    assert_eq!(
        err.error_type(),
        ErrorKind::UnsupportedManifestFormat,
        "{err}"
    );
    assert!(err.to_string().contains("logical-backup/v1"), "{err}");
    assert!(fingerprint(&dst).await.is_empty());
}

#[tokio::test]
async fn logical_actions_without_a_source_database_name_the_variable() {
    let sdk = local_aws().await;
    let bucket = new_locked_bucket(&sdk, "logical").await;
    let logical = backups(&sdk, &bucket, None, None).await;
    let err = logical
        .backup(&run_in(60))
        .await
        .expect_err("not configured");
    assert_eq!(err.error_type(), ErrorKind::NotConfigured);
    assert!(
        err.to_string().contains("SOURCE_DATABASE_SECRET_ID"),
        "{err}"
    );
}
