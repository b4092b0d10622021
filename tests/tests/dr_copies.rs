//! snapshot-trigger's DR actions against the local endpoint's second region: the run's snapshot
//! copied there with the DR key, tagged and shared; its objects copied to a locked DR bucket with
//! their SHA-256; reruns that change nothing; a tampered or missing DR object failing
//! verification; DR prune deleting only our own expired copies.

use aws_sdk_rds::types::Tag as RdsTag;
use aws_sdk_s3::primitives::ByteStream;
use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr::object_store::sha256_hex;
use catalyst_dr::rds::DbSource;
use catalyst_dr::snapshot::elasticache::CacheSource;
use catalyst_dr::snapshot_trigger::SnapshotTrigger;
use catalyst_dr::snapshot_trigger::config::{DrConfig, SnapshotTriggerConfig};
use catalyst_dr::tags;
use catalyst_dr_tests::{local_aws, locked_bucket, s3, seed, unique};
use serde_json::{Value, json};

const T: &str = "2026-11-26T03:00:00Z";
const STAMP: &str = "20261126t030000z";
const DR_ACCOUNT: &str = "210987654321";

struct Fixture {
    sdk: aws_config::SdkConfig,
    instance: String,
    bucket: String,
    dr_region: String,
    dr_bucket: String,
    trigger: SnapshotTrigger,
}

fn in_region<C>(
    sdk: &aws_config::SdkConfig,
    region: &str,
    build: impl FnOnce(&aws_config::SdkConfig) -> C,
) -> C {
    let regional = sdk
        .to_builder()
        .region(aws_config::Region::new(region.to_owned()))
        .build();
    build(&regional)
}

impl Fixture {
    async fn new() -> Self {
        Self::with_logical(catalyst_dr::logical::config::LogicalConfig::new(30)).await
    }

    async fn with_logical(logical: catalyst_dr::logical::config::LogicalConfig) -> Self {
        let sdk = local_aws().await;
        let seed = seed();
        let dr_region = seed["dr_region"].as_str().expect("dr_region").to_owned();
        let dr_key = seed["dr_kms_key_arn"].as_str().expect("dr key").to_owned();
        let instance = unique("db");
        let cache_group = unique("cache");
        let bucket = unique("backups");
        let dr_bucket = unique("dr-copies");
        aws_sdk_rds::Client::new(&sdk)
            .create_db_instance()
            .db_instance_identifier(&instance)
            .db_instance_class("db.t4g.medium")
            .engine("postgres")
            .engine_version("15.8")
            .master_username("catalyst")
            .master_user_password("local-only-password")
            .allocated_storage(20)
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
        let dr_s3 = in_region(&sdk, &dr_region, s3);
        dr_s3
            .create_bucket()
            .bucket(&dr_bucket)
            .object_lock_enabled_for_bucket(true)
            .create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        dr_region.as_str(),
                    ))
                    .build(),
            )
            .send()
            .await
            .expect("create DR bucket");
        let config = SnapshotTriggerConfig {
            backup_bucket: bucket.clone(),
            snapshot: catalyst_dr::snapshot::config::SnapshotConfig {
                database: DbSource::Instance(instance.clone()),
                cache: Some(CacheSource::ReplicationGroup(cache_group)),
                cache_export: false,
                retention_days: 30,
                keep_newest: 1,
                schedule_name: "nightly-test".into(),
            },
            manifest_prefix: "manifests/".into(),
            s3_force_path_style: true,
            logical,
            dr: Some(DrConfig {
                region: dr_region.clone(),
                bucket: dr_bucket.clone(),
                kms_key_arn: dr_key,
                account_id: Some(DR_ACCOUNT.into()),
            }),
        };
        let trigger = SnapshotTrigger::new(config, &sdk);
        Self {
            sdk,
            instance,
            bucket,
            dr_region,
            dr_bucket,
            trigger,
        }
    }

    async fn run(&self, event: Value) -> Value {
        self.trigger
            .handle(event.clone())
            .await
            .unwrap_or_else(|e| panic!("{event}: {e}"))
    }

    async fn fails(&self, event: Value) -> (ErrorKind, String) {
        match self.trigger.handle(event.clone()).await {
            Ok(out) => panic!("{event} should fail, answered {out:#}"),
            Err(e) => (e.error_type(), e.to_string()),
        }
    }

    fn dr_rds(&self) -> aws_sdk_rds::Client {
        in_region(&self.sdk, &self.dr_region, aws_sdk_rds::Client::new)
    }

    fn dr_s3(&self) -> aws_sdk_s3::Client {
        in_region(&self.sdk, &self.dr_region, s3)
    }

    async fn dr_snapshot_ids(&self) -> Vec<String> {
        let out = self
            .dr_rds()
            .describe_db_snapshots()
            .db_instance_identifier(&self.instance)
            .send()
            .await
            .expect("describe DR snapshots");
        let mut ids: Vec<String> = out
            .db_snapshots()
            .iter()
            .filter_map(|s| s.db_snapshot_identifier().map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    /// A snapshot copied into the DR region by hand (another tool, or an earlier night).
    async fn copy_by_hand(&self, source_arn: &str, id: &str, tags: &[(&str, &str)]) {
        self.dr_rds()
            .copy_db_snapshot()
            .source_db_snapshot_identifier(source_arn)
            .target_db_snapshot_identifier(id)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| RdsTag::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .send()
            .await
            .expect("copy by hand");
    }
}

/// Copies, verification, reruns, tampering and DR prune share one run, in order.
#[tokio::test]
async fn nightly_copies_land_in_the_dr_region_verified_and_reruns_change_nothing() {
    let f = Fixture::new().await;
    let snapshot = f
        .run(json!({"action": "snapshot", "scheduled_time": T}))
        .await;
    let status = f
        .run(json!({"action": "status", "scheduled_time": T}))
        .await;
    assert_eq!(status["state"], "available");
    let source_arn = snapshot["database"]["snapshot"]["arn"]
        .as_str()
        .expect("source ARN")
        .to_owned();

    // Earlier copies in the DR region: two of ours past their retention, one of another tool's.
    let expired = [
        format!("catalyst-dr-{}-20000101t000000z", f.instance),
        format!("catalyst-dr-{}-20000102t000000z", f.instance),
    ];
    for id in &expired {
        f.copy_by_hand(
            &source_arn,
            id,
            &[
                (tags::CREATED_BY, tags::CREATED_BY_VALUE),
                (tags::ROLE, tags::ROLE_BACKUP),
                (tags::RETAIN_UNTIL, "2000-02-01T00:00:00Z"),
            ],
        )
        .await;
    }
    let foreign = format!("{}-manual-copy", f.instance);
    f.copy_by_hand(
        &source_arn,
        &foreign,
        &[(tags::RETAIN_UNTIL, "2000-02-01T00:00:00Z")],
    )
    .await;

    // The cache export's objects, as ElastiCache writes them (no checksum of their own).
    let export_target = format!(
        "{}-export",
        status["cache"]["id"].as_str().expect("cache id")
    );
    let export_keys = [
        format!("{export_target}-0001.rdb"),
        format!("{export_target}-0002.rdb"),
    ];
    for (i, key) in export_keys.iter().enumerate() {
        s3(&f.sdk)
            .put_object()
            .bucket(&f.bucket)
            .key(key)
            .body(ByteStream::from(format!("REDIS0011 part {i}").into_bytes()))
            .send()
            .await
            .expect("export object");
    }
    let export = json!({"status": "started", "bucket": f.bucket, "target_name": export_target, "objects": []});
    let manifest = f
        .run(json!({"action": "write-manifest", "scheduled_time": T, "started_at": T, "export": export}))
        .await;
    let record_key = format!("manifests/{STAMP}.dr.json");
    assert_eq!(manifest["dr"]["region"], f.dr_region.as_str());
    assert_eq!(manifest["dr"]["bucket"], f.dr_bucket.as_str());
    assert_eq!(manifest["dr"]["record_key"], record_key.as_str());

    // The snapshot copy: in the DR region, with the DR key, tagged as ours, then shared.
    let copied = f
        .run(json!({"action": "dr-copy-snapshots", "scheduled_time": T}))
        .await;
    let copy_id = format!("catalyst-dr-{}-{STAMP}", f.instance);
    assert_eq!(copied["status"], "configured");
    assert_eq!(copied["reused"], false);
    assert_eq!(copied["copy"]["id"], copy_id.as_str());
    assert_eq!(copied["copy"]["tags"][tags::RUN_ID], STAMP);
    assert_eq!(
        copied["copy"]["tags"][tags::CREATED_BY],
        tags::CREATED_BY_VALUE
    );
    let dr_status = f
        .run(json!({"action": "dr-status", "scheduled_time": T, "poll": 0}))
        .await;
    assert_eq!(dr_status["state"], "available");
    assert_eq!(dr_status["poll"], 1);
    assert_eq!(dr_status["shared_with"], json!([DR_ACCOUNT]));
    let described = f
        .dr_rds()
        .describe_db_snapshots()
        .db_snapshot_identifier(&copy_id)
        .send()
        .await
        .expect("copy in the DR region");
    let described = &described.db_snapshots()[0];
    assert_eq!(described.status(), Some("available"));
    assert_eq!(
        described.kms_key_id(),
        f.trigger.config.dr.as_ref().map(|d| d.kms_key_arn.as_str())
    );
    let attributes = f
        .dr_rds()
        .describe_db_snapshot_attributes()
        .db_snapshot_identifier(&copy_id)
        .send()
        .await
        .expect("attributes");
    let restore: Vec<String> = attributes
        .db_snapshot_attributes_result()
        .unwrap()
        .db_snapshot_attributes()
        .iter()
        .filter(|a| a.attribute_name() == Some("restore"))
        .flat_map(|a| a.attribute_values().to_vec())
        .collect();
    assert_eq!(restore, [DR_ACCOUNT]);

    // The objects: the run's manifest and the export's, copied with their SHA-256, locked.
    let objects = f
        .run(json!({"action": "dr-copy-objects", "scheduled_time": T}))
        .await;
    assert_eq!(
        (
            objects["copied"].as_u64(),
            objects["already_present"].as_u64()
        ),
        (Some(3), Some(0)),
        "{objects:#}"
    );
    let verified = f
        .run(json!({"action": "dr-verify", "scheduled_time": T}))
        .await;
    assert_eq!(verified["objects_verified"], 3);
    assert_eq!(verified["record_key"], record_key.as_str());
    assert_eq!(verified["database_snapshot_copy"], copy_id.as_str());
    let retain_until =
        time::OffsetDateTime::parse(T, &time::format_description::well_known::Rfc3339).unwrap()
            + time::Duration::days(30);
    let run_manifest = format!("manifests/{STAMP}.json");
    for key in [&run_manifest, &export_keys[0], &export_keys[1], &record_key] {
        let source = s3(&f.sdk)
            .get_object()
            .bucket(&f.bucket)
            .key(key)
            .send()
            .await
            .expect("source");
        let source = source.body.collect().await.unwrap().into_bytes();
        let copy = f
            .dr_s3()
            .get_object()
            .bucket(&f.dr_bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{key} in the DR bucket: {e:?}"));
        assert_eq!(
            copy.object_lock_mode().map(|m| m.as_str()),
            Some("COMPLIANCE"),
            "{key}"
        );
        assert_eq!(
            copy.object_lock_retain_until_date().map(|d| d.secs()),
            Some(retain_until.unix_timestamp()),
            "{key}"
        );
        let copy = copy.body.collect().await.unwrap().into_bytes();
        assert_eq!(sha256_hex(&copy), sha256_hex(&source), "{key}");
    }
    let record: Value = serde_json::from_slice(
        &s3(&f.sdk)
            .get_object()
            .bucket(&f.bucket)
            .key(&record_key)
            .send()
            .await
            .expect("record")
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes(),
    )
    .expect("record JSON");
    assert_eq!(record["objects"].as_array().map(Vec::len), Some(3));
    assert_eq!(record["database_snapshot_copy"]["status"], "available");
    assert_eq!(record["shared_with"], json!([DR_ACCOUNT]));
    // The catalog lists runs, not DR records.
    let catalog = f.run(json!({"action": "list-backups"})).await;
    assert_eq!(catalog.as_array().map(Vec::len), Some(1), "{catalog:#}");

    // A retry of every step changes nothing.
    let again = f
        .run(json!({"action": "dr-copy-snapshots", "scheduled_time": T}))
        .await;
    assert_eq!(again["reused"], true);
    let again = f
        .run(json!({"action": "dr-copy-objects", "scheduled_time": T}))
        .await;
    assert_eq!(
        (again["copied"].as_u64(), again["already_present"].as_u64()),
        (Some(0), Some(3))
    );
    let again = f
        .run(json!({"action": "dr-verify", "scheduled_time": T}))
        .await;
    assert_eq!(again["record_key"], record_key.as_str());
    for (bucket, client) in [(&f.bucket, s3(&f.sdk)), (&f.dr_bucket, f.dr_s3())] {
        let versions = client
            .list_object_versions()
            .bucket(bucket)
            .prefix(&record_key)
            .send()
            .await
            .expect("versions");
        assert_eq!(
            versions.versions().len(),
            1,
            "{bucket}: the record is written once"
        );
    }

    // DR prune: our two expired copies go; the newest (tonight's) and another tool's stay.
    let dry = f.run(json!({"action": "dr-prune", "dry_run": true})).await;
    assert_eq!(
        dry["pruned"]["deleted"].as_array().map(Vec::len),
        Some(2),
        "{dry:#}"
    );
    assert_eq!(
        f.dr_snapshot_ids().await.len(),
        4,
        "a dry run deletes nothing"
    );
    let pruned = f.run(json!({"action": "dr-prune"})).await;
    let mut deleted: Vec<String> = pruned["pruned"]["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    deleted.sort();
    assert_eq!(deleted, expired);
    assert_eq!(pruned["pruned"]["ignored"], 1);
    let mut left = vec![copy_id.clone(), foreign.clone()];
    left.sort();
    assert_eq!(f.dr_snapshot_ids().await, left);

    // Tampering: another content under an export key (a new version on top of the locked one),
    // then a copy removed (a delete marker): verification fails naming both, and the copy
    // refuses to overwrite the foreign content.
    f.dr_s3()
        .put_object()
        .bucket(&f.dr_bucket)
        .key(&export_keys[0])
        .body(ByteStream::from_static(b"not the backup"))
        .send()
        .await
        .expect("tamper");
    let (kind, message) = f
        .fails(json!({"action": "dr-verify", "scheduled_time": T}))
        .await;
    assert_eq!(kind, ErrorKind::DrCopyNotVerified, "{message}");
    assert!(message.contains(&export_keys[0]), "{message}");
    let (kind, message) = f
        .fails(json!({"action": "dr-copy-objects", "scheduled_time": T}))
        .await;
    assert_eq!(kind, ErrorKind::DrCopyConflict, "{message}");
    f.dr_s3()
        .delete_object()
        .bucket(&f.dr_bucket)
        .key(&export_keys[1])
        .send()
        .await
        .expect("delete marker");
    let (kind, message) = f
        .fails(json!({"action": "dr-verify", "scheduled_time": T}))
        .await;
    assert_eq!(kind, ErrorKind::DrCopyNotVerified, "{message}");
    assert!(
        message.contains(&format!("{} is missing", export_keys[1])),
        "{message}"
    );
    assert!(message.contains(&export_keys[0]), "{message}");
}

/// Without DR_REGION every DR action answers `not-configured` and calls nothing.
#[tokio::test]
async fn dr_actions_without_a_dr_region_are_not_configured() {
    let mut f = Fixture::new().await;
    f.trigger.config.dr = None;
    f.trigger.snapshots.dr = None;
    f.trigger.dr_objects = None;
    for action in [
        "dr-copy-snapshots",
        "dr-status",
        "dr-copy-objects",
        "dr-verify",
    ] {
        let out = f.run(json!({"action": action, "scheduled_time": T})).await;
        assert_eq!(out["status"], "not-configured", "{action}: {out:#}");
    }
    let out = f.run(json!({"action": "dr-prune"})).await;
    assert_eq!(out["status"], "not-configured");
    assert!(f.dr_snapshot_ids().await.is_empty());
    // A drill from DR copies cannot run without them: it says which variable is missing.
    f.trigger.dr_logical = None;
    let (kind, message) = f
        .fails(json!({"action": "dr-restore-drill", "target_secret_id": "staging"}))
        .await;
    assert_eq!(kind, ErrorKind::NotConfigured);
    assert!(message.contains("DR_REGION"), "{message}");
}

/// Region-loss drill: with the backup bucket gone, the newest verified logical backup comes
/// back from the DR bucket into staging, consistent, with its RPO the age of the copy.
#[tokio::test]
async fn region_loss_drill_restores_the_latest_verified_copy_from_the_dr_bucket() {
    let sdk = local_aws().await;
    let (_source, source_secret) = catalyst_dr_tests::catalyst_database(&sdk, "drsrc", 40).await;
    let f = Fixture::with_logical(catalyst_dr::logical::config::LogicalConfig {
        source_secret_id: Some(source_secret),
        tls: Some(catalyst_dr::postgres::TlsMode::Disable),
        ..catalyst_dr::logical::config::LogicalConfig::new(30)
    })
    .await;
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap();
    let at = catalyst_dr::input::format_time(now - time::Duration::minutes(1));
    f.run(json!({"action": "snapshot", "scheduled_time": at}))
        .await;
    let logical = f
        .run(json!({"action": "logical-backup", "scheduled_time": at}))
        .await;
    f.run(json!({"action": "write-manifest", "scheduled_time": at, "started_at": at, "logical": logical}))
        .await;
    f.run(json!({"action": "dr-copy-snapshots", "scheduled_time": at}))
        .await;
    f.run(json!({"action": "dr-status", "scheduled_time": at}))
        .await;
    let copied = f
        .run(json!({"action": "dr-copy-objects", "scheduled_time": at}))
        .await;
    // The run's manifest, the logical manifest and at least one segment per table.
    assert!(copied["copied"].as_u64().unwrap() > 2, "{copied:#}");
    f.run(json!({"action": "dr-verify", "scheduled_time": at}))
        .await;

    // The home region is gone: its backup bucket no longer answers.
    let mut f = f;
    f.trigger.logical = catalyst_dr::logical::LogicalBackups::new(
        f.trigger.config.logical.clone(),
        std::sync::Arc::new(catalyst_dr::object_store::S3Objects::new(
            s3(&f.sdk),
            "catalyst-dr-lost-region",
        )),
        std::sync::Arc::new(aws_sdk_secretsmanager::Client::new(&f.sdk)),
    );
    let (_target, target_secret, target) = catalyst_dr_tests::empty_database(&f.sdk, "drdst").await;
    catalyst_dr::catalyst_db::mark_staging(&target, "region-loss")
        .await
        .expect("mark staging");
    let drill = f
        .run(json!({"action": "dr-restore-drill", "target_secret_id": target_secret}))
        .await;
    let run = catalyst_dr::run_id::RunId::from_scheduled_time("t", &at)
        .unwrap()
        .stamp;
    assert_eq!(drill["run_id"], run.as_str());
    assert_eq!(drill["bucket"], f.dr_bucket.as_str());
    assert_eq!(
        drill["restore"]["consistent"], true,
        "{:#}",
        drill["restore"]
    );
    assert_eq!(drill["backup_instant"], logical["instant"]["server_time"]);
    let rpo = drill["rpo_seconds"].as_i64().expect("rpo");
    assert!((0..600).contains(&rpo), "RPO {rpo}");
    let users: i64 = target
        .query_one("SELECT count(*) FROM users", &[])
        .await
        .expect("users restored")
        .get(0);
    assert_eq!(users, 40);
}
