//! The ElastiCache export (CopySnapshot to the backup bucket) is not served by the local AWS
//! endpoint, so its exact request is checked here; the bucket side is the real local S3.

use aws_sdk_elasticache::operation::copy_snapshot::{CopySnapshotError, CopySnapshotOutput};
use aws_sdk_elasticache::operation::describe_snapshots::DescribeSnapshotsOutput;
use aws_sdk_elasticache::operation::list_tags_for_resource::ListTagsForResourceOutput;
use aws_sdk_elasticache::types::Snapshot;
use aws_sdk_elasticache::types::error::SnapshotAlreadyExistsFault;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use catalyst_dr::rds::DbSource;
use catalyst_dr::snapshot::elasticache::{CacheSource, ElastiCacheSnapshots};
use catalyst_dr::snapshot_trigger::SnapshotTrigger;
use catalyst_dr::snapshot_trigger::config::SnapshotTriggerConfig;
use catalyst_dr_tests::{local_aws, locked_bucket, s3, unique};
use serde_json::json;

const SNAPSHOT: &str = "catalyst-dr-prod-cache-20261126t030000z";

fn trigger_with(
    cache: aws_sdk_elasticache::Client,
    sdk: &aws_config::SdkConfig,
    bucket: &str,
) -> SnapshotTrigger {
    let config = SnapshotTriggerConfig {
        backup_bucket: bucket.to_owned(),
        snapshot: catalyst_dr::snapshot::config::SnapshotConfig {
            database: DbSource::Instance("prod-db".into()),
            cache: Some(CacheSource::ReplicationGroup("prod-cache".into())),
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
    let mut trigger = SnapshotTrigger::new(config, sdk);
    let source = CacheSource::ReplicationGroup("prod-cache".into());
    trigger.snapshots.cache = Some(Box::new(ElastiCacheSnapshots::new(
        cache.clone(),
        source.clone(),
    )));
    trigger.snapshots.exporter = Some(Box::new(ElastiCacheSnapshots::new(cache, source)));
    trigger
}

fn described_snapshot() -> DescribeSnapshotsOutput {
    DescribeSnapshotsOutput::builder()
        .snapshots(
            Snapshot::builder()
                .snapshot_name(SNAPSHOT)
                .replication_group_id("prod-cache")
                .snapshot_status("available")
                .snapshot_source("manual")
                .arn(format!(
                    "arn:aws:elasticache:us-east-1:123456789012:snapshot:{SNAPSHOT}"
                ))
                .build(),
        )
        .build()
}

#[tokio::test]
async fn export_sends_copy_snapshot_with_the_target_bucket() {
    let sdk = local_aws().await;
    let bucket = unique("backups");
    locked_bucket(&s3(&sdk), &bucket).await;

    let describe = mock!(aws_sdk_elasticache::Client::describe_snapshots)
        .match_requests(|r| r.snapshot_name() == Some(SNAPSHOT))
        .then_output(described_snapshot);
    let tags = mock!(aws_sdk_elasticache::Client::list_tags_for_resource)
        .then_output(|| ListTagsForResourceOutput::builder().build());
    let expected_bucket = bucket.clone();
    let copy = mock!(aws_sdk_elasticache::Client::copy_snapshot)
        .match_requests(move |r| {
            r.source_snapshot_name() == Some(SNAPSHOT)
                && r.target_snapshot_name() == Some(&format!("{SNAPSHOT}-export"))
                && r.target_bucket() == Some(expected_bucket.as_str())
                && r.kms_key_id().is_none()
        })
        .then_output(|| CopySnapshotOutput::builder().build());
    let client = mock_client!(
        aws_sdk_elasticache,
        RuleMode::MatchAny,
        [&describe, &tags, &copy]
    );
    let trigger = trigger_with(client, &sdk, &bucket);

    let result = trigger
        .handle(json!({"action": "export-cache", "scheduled_time": "2026-11-26T03:00:00Z"}))
        .await
        .expect("export");
    assert_eq!(result["status"], "started");
    assert_eq!(result["bucket"], bucket.as_str());
    assert_eq!(result["target_name"], format!("{SNAPSHOT}-export").as_str());
    assert_eq!(
        copy.num_calls(),
        1,
        "exactly one CopySnapshot, with the expected request"
    );
}

#[tokio::test]
async fn export_already_in_the_bucket_is_not_started_again() {
    let sdk = local_aws().await;
    let bucket = unique("backups");
    let s3 = s3(&sdk);
    locked_bucket(&s3, &bucket).await;
    // What a finished export leaves in the bucket.
    s3.put_object()
        .bucket(&bucket)
        .key(format!("{SNAPSHOT}-export-0001.rdb"))
        .body(b"REDIS0011".to_vec().into())
        .send()
        .await
        .expect("put export object");

    let describe =
        mock!(aws_sdk_elasticache::Client::describe_snapshots).then_output(described_snapshot);
    let tags = mock!(aws_sdk_elasticache::Client::list_tags_for_resource)
        .then_output(|| ListTagsForResourceOutput::builder().build());
    let copy = mock!(aws_sdk_elasticache::Client::copy_snapshot)
        .then_output(|| CopySnapshotOutput::builder().build());
    let client = mock_client!(
        aws_sdk_elasticache,
        RuleMode::MatchAny,
        [&describe, &tags, &copy]
    );
    let trigger = trigger_with(client, &sdk, &bucket);

    let result = trigger
        .handle(json!({"action": "export-cache", "scheduled_time": "2026-11-26T03:00:00Z"}))
        .await
        .expect("export");
    assert_eq!(result["status"], "already-exported");
    assert_eq!(
        result["objects"],
        json!([format!("{SNAPSHOT}-export-0001.rdb")])
    );
    assert_eq!(copy.num_calls(), 0);
}

#[tokio::test]
async fn export_started_by_an_earlier_attempt_counts_as_exported() {
    let sdk = local_aws().await;
    let bucket = unique("backups");
    locked_bucket(&s3(&sdk), &bucket).await;
    let describe =
        mock!(aws_sdk_elasticache::Client::describe_snapshots).then_output(described_snapshot);
    let tags = mock!(aws_sdk_elasticache::Client::list_tags_for_resource)
        .then_output(|| ListTagsForResourceOutput::builder().build());
    let copy = mock!(aws_sdk_elasticache::Client::copy_snapshot).then_error(|| {
        CopySnapshotError::SnapshotAlreadyExistsFault(
            SnapshotAlreadyExistsFault::builder()
                .message("exists")
                .build(),
        )
    });
    let client = mock_client!(
        aws_sdk_elasticache,
        RuleMode::MatchAny,
        [&describe, &tags, &copy]
    );
    let trigger = trigger_with(client, &sdk, &bucket);

    let result = trigger
        .handle(json!({"action": "export-cache", "scheduled_time": "2026-11-26T03:00:00Z"}))
        .await
        .expect("export");
    assert_eq!(result["status"], "already-exported");
    assert_eq!(copy.num_calls(), 1);
}
