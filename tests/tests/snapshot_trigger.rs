//! snapshot-trigger against the local AWS endpoint: snapshots, idempotent reruns, status,
//! prune, the locked manifest and the catalog; bad input makes no AWS call at all.

use aws_sdk_rds::types::Tag as RdsTag;
use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr::rds::DbSource;
use catalyst_dr::snapshot::SnapshotError;
use catalyst_dr::snapshot::elasticache::CacheSource;
use catalyst_dr::snapshot_trigger::config::SnapshotTriggerConfig;
use catalyst_dr::snapshot_trigger::{SnapshotTrigger, SnapshotTriggerError};
use catalyst_dr::tags;
use catalyst_dr_tests::{local_aws, locked_bucket, s3, unique};
use serde_json::{Value, json};

struct Fixture {
    sdk: aws_config::SdkConfig,
    instance: String,
    cache_group: String,
    bucket: String,
    trigger: SnapshotTrigger,
}

async fn fixture(keep_newest: u32) -> Fixture {
    let sdk = local_aws().await;
    let instance = unique("db");
    let cache_group = unique("cache");
    let bucket = unique("backups");
    aws_sdk_rds::Client::new(&sdk)
        .create_db_instance()
        .db_instance_identifier(&instance)
        .db_instance_class("db.t4g.medium")
        .engine("postgres")
        .engine_version("15.8")
        .master_username("catalyst")
        .master_user_password("local-only-password")
        .allocated_storage(20)
        .backup_retention_period(7)
        .send()
        .await
        .expect("create instance");
    aws_sdk_elasticache::Client::new(&sdk)
        .create_replication_group()
        .replication_group_id(&cache_group)
        .replication_group_description("test")
        .engine("redis")
        .cache_node_type("cache.t4g.small")
        .num_cache_clusters(1)
        .send()
        .await
        .expect("create replication group");
    locked_bucket(&s3(&sdk), &bucket).await;
    let config = SnapshotTriggerConfig {
        backup_bucket: bucket.clone(),
        snapshot: catalyst_dr::snapshot::config::SnapshotConfig {
            database: DbSource::Instance(instance.clone()),
            cache: Some(CacheSource::ReplicationGroup(cache_group.clone())),
            cache_export: false,
            retention_days: 30,
            keep_newest,
            schedule_name: "nightly-test".into(),
        },
        manifest_prefix: "manifests/".into(),
        s3_force_path_style: true,
        logical: catalyst_dr::logical::config::LogicalConfig::new(30),
        dr: None,
    };
    let trigger = SnapshotTrigger::new(config, &sdk);
    Fixture {
        sdk,
        instance,
        cache_group,
        bucket,
        trigger,
    }
}

impl Fixture {
    async fn manual_db_snapshots(&self) -> Vec<aws_sdk_rds::types::DbSnapshot> {
        let out = aws_sdk_rds::Client::new(&self.sdk)
            .describe_db_snapshots()
            .db_instance_identifier(&self.instance)
            .snapshot_type("manual")
            .send()
            .await
            .expect("describe snapshots");
        out.db_snapshots().to_vec()
    }

    async fn cache_snapshot_names(&self) -> Vec<String> {
        let out = aws_sdk_elasticache::Client::new(&self.sdk)
            .describe_snapshots()
            .replication_group_id(&self.cache_group)
            .send()
            .await
            .expect("describe cache snapshots");
        let mut names: Vec<String> = out
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_name().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    async fn run(&self, event: Value) -> Value {
        self.trigger
            .handle(event.clone())
            .await
            .unwrap_or_else(|e| panic!("{event}: {e}"))
    }
}

const T: &str = "2026-11-26T03:00:00Z";

#[tokio::test]
async fn snapshot_is_tagged_and_a_rerun_returns_the_same_snapshot() {
    let f = fixture(7).await;
    let first = f
        .run(json!({"action": "snapshot", "scheduled_time": T}))
        .await;
    let second = f
        .run(json!({"action": "snapshot", "scheduled_time": "2026-11-26T04:00:00+01:00"}))
        .await;

    let expected_id = format!("catalyst-dr-{}-20261126t030000z", f.instance);
    assert_eq!(first["database"]["snapshot"]["id"], expected_id.as_str());
    assert_eq!(first["database"]["reused"], false);
    assert_eq!(second["database"]["snapshot"]["id"], expected_id.as_str());
    assert_eq!(
        second["database"]["reused"], true,
        "the retry must find the first attempt's snapshot"
    );
    assert_eq!(second["cache"]["reused"], true);

    let snapshots = f.manual_db_snapshots().await;
    assert_eq!(
        snapshots.len(),
        1,
        "exactly one manual snapshot after a retried invocation"
    );
    let tags: std::collections::BTreeMap<&str, &str> = snapshots[0]
        .tag_list()
        .iter()
        .map(|t| (t.key().unwrap_or(""), t.value().unwrap_or("")))
        .collect();
    assert_eq!(tags[tags::CREATED_BY], "catalyst-dr");
    assert_eq!(tags[tags::ROLE], "backup");
    assert_eq!(tags[tags::RUN_ID], "20261126t030000z");
    assert_eq!(tags[tags::SCHEDULE], "nightly-test");
    assert_eq!(tags[tags::RETAIN_UNTIL], "2026-12-26T03:00:00Z");
    assert_eq!(
        f.cache_snapshot_names().await,
        [format!("catalyst-dr-{}-20261126t030000z", f.cache_group)]
    );
}

#[tokio::test]
async fn status_reports_available_and_counts_polls() {
    let f = fixture(7).await;
    let err = f
        .trigger
        .handle(json!({"action": "status", "scheduled_time": T}))
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), ErrorKind::SnapshotNotStarted, "{err}");

    f.run(json!({"action": "snapshot", "scheduled_time": T}))
        .await;
    let status = f
        .run(json!({"action": "status", "scheduled_time": T, "poll": 4}))
        .await;
    assert_eq!(status["state"], "available");
    assert_eq!(status["poll"], 5);
    assert_eq!(status["reason"], Value::Null);
    assert_eq!(status["database"]["engine"], "postgres");
}

#[tokio::test]
async fn a_foreign_snapshot_with_our_id_is_refused() {
    let f = fixture(7).await;
    let id = format!("catalyst-dr-{}-20261126t030000z", f.instance);
    aws_sdk_rds::Client::new(&f.sdk)
        .create_db_snapshot()
        .db_instance_identifier(&f.instance)
        .db_snapshot_identifier(&id)
        .send()
        .await
        .expect("foreign snapshot");
    let err = f
        .trigger
        .handle(json!({"action": "snapshot", "scheduled_time": T}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SnapshotTriggerError::Snapshot(SnapshotError::NotOwned { .. })
        ),
        "{err}"
    );
}

async fn tagged_db_snapshot(f: &Fixture, id: &str, tag_set: &[(&str, &str)]) {
    let tags: Vec<RdsTag> = tag_set
        .iter()
        .map(|(k, v)| RdsTag::builder().key(*k).value(*v).build())
        .collect();
    aws_sdk_rds::Client::new(&f.sdk)
        .create_db_snapshot()
        .db_instance_identifier(&f.instance)
        .db_snapshot_identifier(id)
        .set_tags(Some(tags))
        .send()
        .await
        .expect("create snapshot");
}

#[tokio::test]
async fn prune_deletes_only_our_expired_snapshots_and_keeps_the_newest() {
    let f = fixture(2).await;
    let ours_expired = [
        (tags::CREATED_BY, "catalyst-dr"),
        (tags::ROLE, "backup"),
        (tags::RETAIN_UNTIL, "2026-01-01T00:00:00Z"),
    ];
    let ours_retained = [
        (tags::CREATED_BY, "catalyst-dr"),
        (tags::ROLE, "backup"),
        (tags::RETAIN_UNTIL, "2999-01-01T00:00:00Z"),
    ];
    let someone_elses = [
        (tags::CREATED_BY, "another-tool"),
        (tags::RETAIN_UNTIL, "2026-01-01T00:00:00Z"),
    ];
    // Oldest first: creation order is the age order the prune ranks by.
    tagged_db_snapshot(&f, "expired-1", &ours_expired).await;
    tagged_db_snapshot(&f, "expired-2", &ours_expired).await;
    tagged_db_snapshot(&f, "untagged", &[]).await;
    tagged_db_snapshot(&f, "foreign", &someone_elses).await;
    tagged_db_snapshot(&f, "expired-3", &ours_expired).await;
    tagged_db_snapshot(&f, "retained", &ours_retained).await;
    let cache = aws_sdk_elasticache::Client::new(&f.sdk);
    for (name, tag_set) in [
        ("cache-expired", &ours_expired[..]),
        ("cache-untagged", &[][..]),
    ] {
        let tags: Vec<aws_sdk_elasticache::types::Tag> = tag_set
            .iter()
            .map(|(k, v)| {
                aws_sdk_elasticache::types::Tag::builder()
                    .key(*k)
                    .value(*v)
                    .build()
            })
            .collect();
        cache
            .create_snapshot()
            .replication_group_id(&f.cache_group)
            .snapshot_name(name)
            .set_tags(Some(tags))
            .send()
            .await
            .expect("cache snapshot");
    }

    let dry = f.run(json!({"action": "prune", "dry_run": true})).await;
    let mut would_delete: Vec<&str> = dry["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    would_delete.sort();
    assert_eq!(
        would_delete,
        ["expired-1", "expired-2"],
        "newest two (retained, expired-3) are kept; the cache has one of ours, kept as newest"
    );
    assert_eq!(
        f.manual_db_snapshots().await.len(),
        6,
        "a dry run deletes nothing"
    );

    let real = f.run(json!({"action": "prune"})).await;
    assert_eq!(real["deleted"], dry["deleted"]);
    let mut left: Vec<String> = f
        .manual_db_snapshots()
        .await
        .iter()
        .filter_map(|s| s.db_snapshot_identifier().map(str::to_owned))
        .collect();
    left.sort();
    assert_eq!(left, ["expired-3", "foreign", "retained", "untagged"]);
    assert_eq!(
        f.cache_snapshot_names().await,
        ["cache-expired", "cache-untagged"]
    );
    // The automated snapshot the local endpoint keeps for the instance is never a candidate.
    assert!(real["ignored"].as_u64().unwrap() >= 3);
}

#[tokio::test]
async fn manifest_is_written_once_locked_and_listed_in_the_catalog() {
    let f = fixture(7).await;
    let snapshot = f
        .run(json!({"action": "snapshot", "scheduled_time": T}))
        .await;
    let prune = f.run(json!({"action": "prune"})).await;
    let export = f
        .run(json!({"action": "export-cache", "scheduled_time": T}))
        .await;
    assert_eq!(export["status"], "disabled-by-configuration");
    let event = json!({
        "action": "write-manifest",
        "scheduled_time": T,
        "started_at": snapshot["started_at"],
        "export": export,
        "prune": prune,
    });
    let manifest = f.run(event.clone()).await;
    let again = f.run(event).await;
    assert_eq!(
        manifest, again,
        "a retried write returns the manifest already written"
    );

    assert_eq!(manifest["format"], "catalyst-dr/backup-manifest/v1");
    assert_eq!(manifest["run_id"], "20261126t030000z");
    assert_eq!(manifest["retain_until"], "2026-12-26T03:00:00Z");
    assert_eq!(
        manifest["database"]["snapshot_id"],
        format!("catalyst-dr-{}-20261126t030000z", f.instance).as_str()
    );
    assert_eq!(manifest["database"]["engine_version"], "15.8");
    assert!(
        manifest["database"]["arn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:rds:")
    );
    assert!(manifest["database"]["latest_restorable_time"].is_string());
    assert_eq!(
        manifest["database"]["size_bytes"],
        20u64 * 1024 * 1024 * 1024
    );
    assert_eq!(
        manifest["cache"]["snapshot_id"],
        format!("catalyst-dr-{}-20261126t030000z", f.cache_group).as_str()
    );

    let s3 = s3(&f.sdk);
    let key = "manifests/20261126t030000z.json";
    let versions = s3
        .list_object_versions()
        .bucket(&f.bucket)
        .prefix(key)
        .send()
        .await
        .expect("versions");
    assert_eq!(
        versions.versions().len(),
        1,
        "one version: the retry wrote nothing"
    );
    let head = s3
        .head_object()
        .bucket(&f.bucket)
        .key(key)
        .send()
        .await
        .expect("head");
    assert_eq!(
        head.object_lock_mode().map(|m| m.as_str()),
        Some("COMPLIANCE")
    );
    let until = head
        .object_lock_retain_until_date()
        .expect("retain-until date");
    assert_eq!(
        until.secs(),
        time::macros::datetime!(2026-12-26 03:00 UTC).unix_timestamp()
    );
    let version = versions.versions()[0]
        .version_id()
        .expect("version id")
        .to_owned();
    let deleted = s3
        .delete_object()
        .bucket(&f.bucket)
        .key(key)
        .version_id(&version)
        .send()
        .await;
    assert!(
        deleted.is_err(),
        "deleting the locked manifest version must be refused"
    );
    let stored = s3
        .get_object()
        .bucket(&f.bucket)
        .key(key)
        .version_id(&version)
        .send()
        .await;
    assert!(stored.is_ok(), "the manifest is still there");

    let catalog = f.run(json!({"action": "list-backups"})).await;
    assert_eq!(catalog.as_array().unwrap().len(), 1);
    assert_eq!(catalog[0]["key"], key);
    assert_eq!(catalog[0]["run_id"], "20261126t030000z");
}

/// Bad input is answered with a typed error naming the field, before any AWS call: the SDK is
/// pointed at a listener that counts connections, and none arrives.
#[tokio::test]
async fn bad_input_names_the_field_and_makes_no_aws_call() {
    let (sdk, connections) = catalyst_dr_tests::counting_aws_endpoint().await;
    let config = SnapshotTriggerConfig {
        backup_bucket: "backups".into(),
        snapshot: catalyst_dr::snapshot::config::SnapshotConfig {
            database: DbSource::Instance("db".into()),
            cache: Some(CacheSource::ReplicationGroup("cache".into())),
            cache_export: true,
            retention_days: 30,
            keep_newest: 7,
            schedule_name: "nightly".into(),
        },
        manifest_prefix: "manifests/".into(),
        s3_force_path_style: true,
        logical: catalyst_dr::logical::config::LogicalConfig::new(30),
        dr: None,
    };
    let trigger = SnapshotTrigger::new(config, &sdk);

    let cases = [
        (json!({"scheduled_time": T}), "action"),
        (
            json!({"action": "snapshots", "scheduled_time": T}),
            "action",
        ),
        (json!({"action": "snapshot"}), "scheduled_time"),
        (
            json!({"action": "snapshot", "scheduled_time": "26/11/2026 03:00"}),
            "scheduled_time",
        ),
        (
            json!({"action": "snapshot", "scheduled_time": T, "instance": "prod"}),
            "instance",
        ),
        (
            json!({"action": "status", "scheduled_time": T, "poll": -1}),
            "poll",
        ),
        (json!({"action": "prune", "dry_run": "yes"}), "dry_run"),
        (
            json!({"action": "write-manifest", "scheduled_time": T, "started_at": "noon"}),
            "started_at",
        ),
        (json!("snapshot"), "$"),
        // Outside the sane window: far future (retention arithmetic would overflow), before 2000
        // (snapshots already past their retention), more than a day ahead.
        (
            json!({"action": "snapshot", "scheduled_time": "9999-12-31T23:59:59Z"}),
            "scheduled_time",
        ),
        (
            json!({"action": "snapshot", "scheduled_time": "1969-12-31T23:59:59Z"}),
            "scheduled_time",
        ),
        (
            json!({"action": "status", "scheduled_time": "2999-01-01T00:00:00Z", "poll": 1}),
            "scheduled_time",
        ),
        (
            json!({"action": "write-manifest", "scheduled_time": T, "started_at": "9999-12-31T23:59:59Z"}),
            "started_at",
        ),
        // The restore's steps: the target and the restore id are checked before anything is read.
        (
            json!({"action": "restore-logical-prepare", "scheduled_time": T, "target_secret_id": " "}),
            "target_secret_id",
        ),
        (
            json!({"action": "restore-logical-batch", "scheduled_time": T, "target_secret_id": "s", "database": "x".repeat(64), "restore_id": "20261126t051502123z", "batch": 0}),
            "database",
        ),
        (
            json!({"action": "restore-logical-batch", "scheduled_time": T, "target_secret_id": "s", "restore_id": "../manifest", "batch": 0}),
            "restore_id",
        ),
        (
            json!({"action": "restore-logical-batch", "scheduled_time": T, "target_secret_id": "s", "restore_id": "20261126t051502123z"}),
            "batch",
        ),
        (
            json!({"action": "restore-logical-finish", "scheduled_time": T, "target_secret_id": "s", "restore_id": ""}),
            "restore_id",
        ),
    ];
    for (event, field) in cases {
        match trigger.handle(event.clone()).await {
            Err(
                SnapshotTriggerError::Input(err)
                | SnapshotTriggerError::Logical(catalyst_dr::logical::LogicalError::Input(err)),
            ) => assert_eq!(err.field, field, "{event}: {err}"),
            other => panic!("{event}: expected an input error naming {field}, got {other:?}"),
        }
    }
    tokio::task::yield_now().await;
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no request may leave for AWS on bad input"
    );
}
