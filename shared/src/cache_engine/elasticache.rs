//! [`CacheEngine`] for ElastiCache (Redis OSS): the source is a replication group or a
//! single-node cluster; a staging cache is a one-node replication group (or cluster) created
//! from the drill's snapshot, encrypted at rest, in the staging subnet group and security groups.

use super::{
    CacheEngine, CacheEngineError, CachePlacement, CacheSnapshot, SnapshotState, StagingCache,
};
use crate::aws_error::{AwsCallError, classify, created_unless_exists};
use crate::aws_time::from_aws;
use crate::cache_state;
use crate::elasticache::{
    CacheSource, delete_snapshot, is_busy, sdk_tags, source_snapshots, tags_of,
};
use crate::restore_engine::{EngineError, StagingState};
use crate::tags::Tags;
use aws_sdk_elasticache::Client;

pub struct ElastiCacheEngine {
    client: Client,
    source: CacheSource,
    placement: Option<CachePlacement>,
}

impl ElastiCacheEngine {
    pub fn new(client: Client, source: CacheSource, placement: Option<CachePlacement>) -> Self {
        Self {
            client,
            source,
            placement,
        }
    }

    fn placement(&self) -> Result<&CachePlacement, CacheEngineError> {
        self.placement.as_ref().ok_or_else(|| {
            EngineError::Local {
                operation: "restore a staging cache",
                reason: "no staging placement (STAGING_CACHE_SUBNET_GROUP)".into(),
            }
            .into()
        })
    }
}

/// ElastiCache's status text as a staging state.
fn staging_state(status: &str) -> StagingState {
    match status {
        "available" => StagingState::Available,
        "create-failed" | "restore-failed" | "incompatible-network" => StagingState::Failed,
        _ => StagingState::Creating,
    }
}

#[async_trait::async_trait]
impl CacheEngine for ElastiCacheEngine {
    fn source_id(&self) -> &str {
        self.source.id()
    }

    async fn snapshot_source(
        &self,
        url: &str,
        snapshot_id: &str,
        tags: &Tags,
        patterns: &[String],
    ) -> Result<SnapshotState, CacheEngineError> {
        // ElastiCache forks its snapshot on its own schedule: the state is read just before it
        // is asked for, and the report says the two are not one instant.
        let (mut conn, db) = cache_state::connect(url).await?;
        let state = cache_state::capture(&mut conn, db, patterns).await?;
        let call = self
            .client
            .create_snapshot()
            .snapshot_name(snapshot_id)
            .set_tags(Some(sdk_tags(tags)));
        let call = match &self.source {
            CacheSource::ReplicationGroup(id) => call.replication_group_id(id),
            CacheSource::Cluster(id) => call.cache_cluster_id(id),
        };
        let created =
            created_unless_exists("elasticache:CreateSnapshot", call.send().await, |e| {
                e.is_snapshot_already_exists_fault()
            })?;
        if !created {
            return Err(EngineError::Local {
                operation: "snapshot the source cache",
                reason: format!("snapshot {snapshot_id} exists already"),
            }
            .into());
        }
        Ok(SnapshotState {
            state,
            exact: false,
        })
    }

    async fn snapshots(&self) -> Result<Vec<CacheSnapshot>, CacheEngineError> {
        Ok(source_snapshots(&self.client, &self.source)
            .await?
            .into_iter()
            .map(|(s, tags)| CacheSnapshot {
                snapshot_id: s.snapshot_name().unwrap_or_default().to_owned(),
                status: s.snapshot_status().unwrap_or("unknown").to_owned(),
                created_at: s
                    .node_snapshots()
                    .iter()
                    .filter_map(|n| n.snapshot_create_time())
                    .filter_map(from_aws)
                    .min(),
                tags,
            })
            .collect())
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> Result<(), CacheEngineError> {
        delete_snapshot(&self.client, snapshot_id)
            .await
            .map_err(busy_or_failed)
    }

    async fn describe(&self, target_id: &str) -> Result<Option<StagingCache>, CacheEngineError> {
        match &self.source {
            CacheSource::ReplicationGroup(_) => {
                let group = match self
                    .client
                    .describe_replication_groups()
                    .replication_group_id(target_id)
                    .send()
                    .await
                {
                    Ok(out) => out.replication_groups().first().cloned(),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_replication_group_not_found_fault()) =>
                    {
                        None
                    }
                    Err(e) => {
                        return Err(classify("elasticache:DescribeReplicationGroups", e).into());
                    }
                };
                let Some(group) = group else { return Ok(None) };
                let status = group.status().unwrap_or("unknown").to_owned();
                let endpoint = group
                    .node_groups()
                    .first()
                    .and_then(|n| n.primary_endpoint());
                Ok(Some(StagingCache {
                    target_id: target_id.to_owned(),
                    state: staging_state(&status),
                    status,
                    host: endpoint.and_then(|e| e.address()).map(str::to_owned),
                    port: endpoint
                        .and_then(|e| e.port())
                        .and_then(|p| u16::try_from(p).ok()),
                    tls: group.transit_encryption_enabled().unwrap_or(false),
                    tags: tags_of(&self.client, group.arn()).await?,
                }))
            }
            CacheSource::Cluster(_) => {
                let cluster = match self
                    .client
                    .describe_cache_clusters()
                    .cache_cluster_id(target_id)
                    .show_cache_node_info(true)
                    .send()
                    .await
                {
                    Ok(out) => out.cache_clusters().first().cloned(),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_cache_cluster_not_found_fault()) =>
                    {
                        None
                    }
                    Err(e) => return Err(classify("elasticache:DescribeCacheClusters", e).into()),
                };
                let Some(cluster) = cluster else {
                    return Ok(None);
                };
                let status = cluster
                    .cache_cluster_status()
                    .unwrap_or("unknown")
                    .to_owned();
                let endpoint = cluster.cache_nodes().first().and_then(|n| n.endpoint());
                Ok(Some(StagingCache {
                    target_id: target_id.to_owned(),
                    state: staging_state(&status),
                    status,
                    host: endpoint.and_then(|e| e.address()).map(str::to_owned),
                    port: endpoint
                        .and_then(|e| e.port())
                        .and_then(|p| u16::try_from(p).ok()),
                    tls: cluster.transit_encryption_enabled().unwrap_or(false),
                    tags: tags_of(&self.client, cluster.arn()).await?,
                }))
            }
        }
    }

    async fn start_restore(
        &self,
        target_id: &str,
        snapshot: &CacheSnapshot,
        tags: &Tags,
    ) -> Result<(), CacheEngineError> {
        let placement = self.placement()?;
        match &self.source {
            CacheSource::ReplicationGroup(_) => {
                let call = self
                    .client
                    .create_replication_group()
                    .replication_group_id(target_id)
                    .replication_group_description(format!(
                        "catalyst-dr staging cache restored from {}",
                        snapshot.snapshot_id
                    ))
                    .snapshot_name(&snapshot.snapshot_id)
                    .cache_subnet_group_name(&placement.subnet_group)
                    .set_security_group_ids(Some(placement.security_group_ids.clone()))
                    .set_cache_node_type(placement.node_type.clone())
                    .num_cache_clusters(1)
                    .automatic_failover_enabled(false)
                    .at_rest_encryption_enabled(true)
                    .transit_encryption_enabled(true)
                    .set_tags(Some(sdk_tags(tags)));
                created_unless_exists(
                    "elasticache:CreateReplicationGroup",
                    call.send().await,
                    |e| e.is_replication_group_already_exists_fault(),
                )?;
            }
            CacheSource::Cluster(_) => {
                let call = self
                    .client
                    .create_cache_cluster()
                    .cache_cluster_id(target_id)
                    .snapshot_name(&snapshot.snapshot_id)
                    .engine("redis")
                    .num_cache_nodes(1)
                    .cache_subnet_group_name(&placement.subnet_group)
                    .set_security_group_ids(Some(placement.security_group_ids.clone()))
                    .set_cache_node_type(placement.node_type.clone())
                    .set_tags(Some(sdk_tags(tags)));
                created_unless_exists("elasticache:CreateCacheCluster", call.send().await, |e| {
                    e.is_cache_cluster_already_exists_fault()
                })?;
            }
        }
        Ok(())
    }

    async fn delete(&self, target_id: &str) -> Result<(), CacheEngineError> {
        let result = match &self.source {
            CacheSource::ReplicationGroup(_) => self
                .client
                .delete_replication_group()
                .replication_group_id(target_id)
                .retain_primary_cluster(false)
                .send()
                .await
                .map(drop)
                .or_else(|e| {
                    if e.as_service_error()
                        .is_some_and(|s| s.is_replication_group_not_found_fault())
                    {
                        Ok(())
                    } else {
                        Err(classify("elasticache:DeleteReplicationGroup", e))
                    }
                }),
            CacheSource::Cluster(_) => self
                .client
                .delete_cache_cluster()
                .cache_cluster_id(target_id)
                .send()
                .await
                .map(drop)
                .or_else(|e| {
                    if e.as_service_error()
                        .is_some_and(|s| s.is_cache_cluster_not_found_fault())
                    {
                        Ok(())
                    } else {
                        Err(classify("elasticache:DeleteCacheCluster", e))
                    }
                }),
        };
        result.map_err(busy_or_failed)
    }
}

/// A delete ElastiCache refuses while the cache or snapshot is still being created is worth
/// another try once it settles (`StagingCacheBusy`); anything else is the call's own failure.
fn busy_or_failed(e: AwsCallError) -> CacheEngineError {
    if is_busy(&e) {
        CacheEngineError::StagingBusy {
            reason: e.to_string(),
        }
    } else {
        e.into()
    }
}
