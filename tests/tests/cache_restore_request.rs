//! The drill's ElastiCache staging cache: the local AWS endpoint answers these calls but holds no
//! cache, so the exact requests are checked here (the restore from the drill's snapshot into
//! the staging placement, encrypted and tagged; its description; a delete ElastiCache refuses
//! while the cache is still being created). The same steps run for real on the local engine in
//! `drill_parity` and the quarterly drill's state machine test.

use aws_sdk_elasticache::error::ErrorMetadata;
use aws_sdk_elasticache::operation::create_replication_group::CreateReplicationGroupOutput;
use aws_sdk_elasticache::operation::delete_replication_group::DeleteReplicationGroupError;
use aws_sdk_elasticache::operation::describe_replication_groups::DescribeReplicationGroupsOutput;
use aws_sdk_elasticache::operation::list_tags_for_resource::ListTagsForResourceOutput;
use aws_sdk_elasticache::types::error::InvalidReplicationGroupStateFault;
use aws_sdk_elasticache::types::{Endpoint, NodeGroup, ReplicationGroup, Tag};
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use catalyst_dr::cache_engine::elasticache::ElastiCacheEngine;
use catalyst_dr::cache_engine::{CacheEngine, CachePlacement, CacheSnapshot, CacheSource};
use catalyst_dr::error_kind::ErrorKind;
use catalyst_dr::restore_engine::StagingState;
use catalyst_dr::tags;

const TARGET: &str = "cdr-q2";
const SNAPSHOT: &str = "cdr-q2-1764558000000";

fn engine(client: aws_sdk_elasticache::Client) -> ElastiCacheEngine {
    ElastiCacheEngine::new(
        client,
        CacheSource::ReplicationGroup("catalyst-auth-cache".into()),
        Some(CachePlacement {
            subnet_group: "staging-cache".into(),
            security_group_ids: vec!["sg-0staging".into()],
            node_type: None,
        }),
    )
}

#[tokio::test]
async fn the_staging_cache_is_restored_from_the_drills_snapshot_into_the_staging_placement() {
    let create = mock!(aws_sdk_elasticache::Client::create_replication_group)
        .match_requests(|r| {
            let tags: Vec<(Option<&str>, Option<&str>)> =
                r.tags().iter().map(|t| (t.key(), t.value())).collect();
            r.replication_group_id() == Some(TARGET)
                && r.snapshot_name() == Some(SNAPSHOT)
                && r.cache_subnet_group_name() == Some("staging-cache")
                && r.security_group_ids() == ["sg-0staging".to_owned()]
                && r.cache_node_type().is_none()
                && r.num_cache_clusters() == Some(1)
                && r.automatic_failover_enabled() == Some(false)
                && r.at_rest_encryption_enabled() == Some(true)
                && r.transit_encryption_enabled() == Some(true)
                && tags.contains(&(Some(tags::ROLE), Some(tags::ROLE_STAGING)))
                && tags.contains(&(Some(tags::DRILL_ID), Some("q2")))
        })
        .then_output(|| CreateReplicationGroupOutput::builder().build());
    let client = mock_client!(aws_sdk_elasticache, RuleMode::MatchAny, [&create]);
    let snapshot = CacheSnapshot {
        snapshot_id: SNAPSHOT.into(),
        status: "available".into(),
        created_at: None,
        tags: tags::drill_snapshot_tags("q2", "catalyst-auth-cache"),
    };
    engine(client)
        .start_restore(
            TARGET,
            &snapshot,
            &tags::staging_tags("q2", "catalyst-auth-cache"),
        )
        .await
        .expect("start");
    assert_eq!(
        create.num_calls(),
        1,
        "one CreateReplicationGroup, as expected"
    );
}

#[tokio::test]
async fn an_available_group_is_described_with_its_tls_endpoint_and_tags() {
    let describe = mock!(aws_sdk_elasticache::Client::describe_replication_groups)
        .match_requests(|r| r.replication_group_id() == Some(TARGET))
        .then_output(|| {
            DescribeReplicationGroupsOutput::builder()
                .replication_groups(
                    ReplicationGroup::builder()
                        .replication_group_id(TARGET)
                        .status("available")
                        .transit_encryption_enabled(true)
                        .arn(format!(
                            "arn:aws:elasticache:us-east-1:123456789012:replicationgroup:{TARGET}"
                        ))
                        .node_groups(
                            NodeGroup::builder()
                                .primary_endpoint(
                                    Endpoint::builder()
                                        .address("cdr-q2.abc.ng.0001.use1.cache.amazonaws.com")
                                        .port(6379)
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
    let list_tags = mock!(aws_sdk_elasticache::Client::list_tags_for_resource).then_output(|| {
        ListTagsForResourceOutput::builder()
            .set_tag_list(Some(
                tags::staging_tags("q2", "catalyst-auth-cache")
                    .into_iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .build()
    });
    let client = mock_client!(
        aws_sdk_elasticache,
        RuleMode::MatchAny,
        [&describe, &list_tags]
    );
    let cache = engine(client)
        .describe(TARGET)
        .await
        .expect("describe")
        .expect("exists");
    assert_eq!(cache.state, StagingState::Available);
    assert_eq!(
        cache.url().as_deref(),
        Some("rediss://cdr-q2.abc.ng.0001.use1.cache.amazonaws.com:6379")
    );
    assert!(tags::is_staging_of(&cache.tags, "q2"));
    assert!(!tags::is_staging_of(&cache.tags, "q3"));
}

#[tokio::test]
async fn a_cache_still_being_created_is_busy_not_failed() {
    let delete = mock!(aws_sdk_elasticache::Client::delete_replication_group)
        .match_requests(|r| {
            r.replication_group_id() == Some(TARGET) && r.retain_primary_cluster() == Some(false)
        })
        .then_error(|| {
            DeleteReplicationGroupError::InvalidReplicationGroupStateFault(
                InvalidReplicationGroupStateFault::builder()
                    .message("Cache cluster cdr-q2-001 is not in a deletable state.")
                    .meta(
                        ErrorMetadata::builder()
                            .code("InvalidReplicationGroupState")
                            .build(),
                    )
                    .build(),
            )
        });
    let client = mock_client!(aws_sdk_elasticache, RuleMode::MatchAny, [&delete]);
    let err = engine(client).delete(TARGET).await.expect_err("refused");
    assert_eq!(err.error_type(), ErrorKind::StagingCacheBusy, "{err}");
    assert!(err.error_type().is_retryable());
}
