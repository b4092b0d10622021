//! What every function that touches ElastiCache shares: the production cache's identity and its
//! tags. snapshot-trigger snapshots the cache; drill-validator and pitr-restore drill it.

use crate::aws_error::{AwsCallError, classify};
use crate::config::{ConfigError, Env, validate_identifier};
use crate::settings;
use crate::tags::Tags;
use aws_sdk_elasticache::Client;
use aws_sdk_elasticache::types::{Snapshot, Tag};

/// The production cache, as ElastiCache knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheSource {
    ReplicationGroup(String),
    Cluster(String),
}

impl CacheSource {
    /// `ELASTICACHE_REPLICATION_GROUP_ID` or `ELASTICACHE_CLUSTER_ID` (at most one); neither: none.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let checked = |var: &'static str, id: String| {
            validate_identifier(&id).map_err(|reason| ConfigError::Invalid { var, reason })?;
            Ok::<_, ConfigError>(id)
        };
        Ok(
            match env.either(
                &settings::ELASTICACHE_REPLICATION_GROUP_ID,
                &settings::ELASTICACHE_CLUSTER_ID,
            )? {
                Some((var, id)) if var == settings::ELASTICACHE_REPLICATION_GROUP_ID.name => {
                    Some(Self::ReplicationGroup(checked(var, id)?))
                }
                Some((var, id)) => Some(Self::Cluster(checked(var, id)?)),
                None => None,
            },
        )
    }

    pub fn id(&self) -> &str {
        match self {
            Self::ReplicationGroup(id) | Self::Cluster(id) => id,
        }
    }
}

/// The tags of an ElastiCache resource (none without an ARN).
pub async fn tags_of(client: &Client, arn: Option<&str>) -> Result<Tags, AwsCallError> {
    let Some(arn) = arn else {
        return Ok(Tags::new());
    };
    let out = client
        .list_tags_for_resource()
        .resource_name(arn)
        .send()
        .await
        .map_err(|e| classify("elasticache:ListTagsForResource", e))?;
    Ok(out
        .tag_list()
        .iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_owned(),
                t.value().unwrap_or_default().to_owned(),
            ))
        })
        .collect())
}

pub fn sdk_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// The source's snapshots with their tags, every page.
pub async fn source_snapshots(
    client: &Client,
    source: &CacheSource,
) -> Result<Vec<(Snapshot, Tags)>, AwsCallError> {
    let call = client.describe_snapshots();
    let call = match source {
        CacheSource::ReplicationGroup(id) => call.replication_group_id(id),
        CacheSource::Cluster(id) => call.cache_cluster_id(id),
    };
    let mut pages = call.into_paginator().send();
    let mut found = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify("elasticache:DescribeSnapshots", e))?;
        for s in page.snapshots() {
            found.push((s.clone(), tags_of(client, s.arn()).await?));
        }
    }
    Ok(found)
}

/// Deletes a snapshot; one already gone is fine.
pub async fn delete_snapshot(client: &Client, snapshot_id: &str) -> Result<(), AwsCallError> {
    match client
        .delete_snapshot()
        .snapshot_name(snapshot_id)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_snapshot_not_found_fault()) =>
        {
            Ok(())
        }
        Err(e) => Err(classify("elasticache:DeleteSnapshot", e)),
    }
}

/// ElastiCache refuses to delete a snapshot or cache while it is being created or changed.
pub fn is_busy(e: &AwsCallError) -> bool {
    matches!(
        e.code.as_deref(),
        Some("InvalidSnapshotState" | "InvalidReplicationGroupState" | "InvalidCacheClusterState")
    )
}
