//! [`SnapshotStore`] and [`CacheExporter`] for an ElastiCache (Redis) replication group or cluster.

use super::store::{CacheExporter, SnapshotInfo, SnapshotKind, SnapshotStore, SourceDetails};
use crate::aws_error::{AwsCallError, classify};
use crate::aws_time::from_aws;
pub use crate::elasticache::CacheSource;
use crate::elasticache::{delete_snapshot, sdk_tags, source_snapshots, tags_of};
use crate::tags::Tags;
use aws_sdk_elasticache::Client;
use aws_sdk_elasticache::types::{Snapshot, Tag};

pub struct ElastiCacheSnapshots {
    client: Client,
    source: CacheSource,
}

impl ElastiCacheSnapshots {
    pub fn new(client: Client, source: CacheSource) -> Self {
        Self { client, source }
    }

    fn info(&self, s: &Snapshot, tags: Tags) -> SnapshotInfo {
        let sizes: Vec<u64> = s
            .node_snapshots()
            .iter()
            .filter_map(|n| n.cache_size().and_then(parse_cache_size))
            .collect();
        SnapshotInfo {
            kind: self.kind(),
            id: s.snapshot_name().unwrap_or_default().to_owned(),
            arn: s.arn().map(str::to_owned),
            source_id: s
                .replication_group_id()
                .or(s.cache_cluster_id())
                .unwrap_or_default()
                .to_owned(),
            status: s.snapshot_status().unwrap_or("unknown").to_owned(),
            snapshot_type: s.snapshot_source().unwrap_or("unknown").to_owned(),
            created_at: s
                .node_snapshots()
                .iter()
                .filter_map(|n| n.snapshot_create_time())
                .filter_map(from_aws)
                .min(),
            engine: s.engine().map(str::to_owned),
            engine_version: s.engine_version().map(str::to_owned),
            size_bytes: (!sizes.is_empty()).then(|| sizes.iter().sum()),
            tags,
        }
    }
}

/// ElastiCache reports node snapshot sizes as text such as `"6 MB"`.
pub fn parse_cache_size(text: &str) -> Option<u64> {
    let mut parts = text.split_whitespace();
    let number: f64 = parts.next()?.parse().ok()?;
    let unit: u64 = match parts.next().unwrap_or("B").to_ascii_uppercase().as_str() {
        "B" => 1,
        "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    Some((number * unit as f64) as u64)
}

#[async_trait::async_trait]
impl SnapshotStore for ElastiCacheSnapshots {
    fn kind(&self) -> SnapshotKind {
        match self.source {
            CacheSource::ReplicationGroup(_) => SnapshotKind::ElasticacheReplicationGroup,
            CacheSource::Cluster(_) => SnapshotKind::ElasticacheCluster,
        }
    }

    fn source_id(&self) -> &str {
        match &self.source {
            CacheSource::ReplicationGroup(id) | CacheSource::Cluster(id) => id,
        }
    }

    async fn describe(&self, snapshot_id: &str) -> Result<Option<SnapshotInfo>, AwsCallError> {
        let snapshot = match self
            .client
            .describe_snapshots()
            .snapshot_name(snapshot_id)
            .send()
            .await
        {
            Ok(out) => out.snapshots().first().cloned(),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_snapshot_not_found_fault()) =>
            {
                None
            }
            Err(e) => return Err(classify("elasticache:DescribeSnapshots", e)),
        };
        match snapshot {
            None => Ok(None),
            Some(s) => {
                let tags = tags_of(&self.client, s.arn()).await?;
                Ok(Some(self.info(&s, tags)))
            }
        }
    }

    async fn create(&self, snapshot_id: &str, tags: &Tags) -> Result<bool, AwsCallError> {
        let tags: Vec<Tag> = sdk_tags(tags);
        let call = self
            .client
            .create_snapshot()
            .snapshot_name(snapshot_id)
            .set_tags(Some(tags));
        let call = match &self.source {
            CacheSource::ReplicationGroup(id) => call.replication_group_id(id),
            CacheSource::Cluster(id) => call.cache_cluster_id(id),
        };
        match call.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_snapshot_already_exists_fault()) =>
            {
                Ok(false)
            }
            Err(e) => Err(classify("elasticache:CreateSnapshot", e)),
        }
    }

    async fn list(&self) -> Result<Vec<SnapshotInfo>, AwsCallError> {
        Ok(source_snapshots(&self.client, &self.source)
            .await?
            .into_iter()
            .map(|(s, tags)| self.info(&s, tags))
            .collect())
    }

    async fn delete(&self, snapshot_id: &str) -> Result<(), AwsCallError> {
        delete_snapshot(&self.client, snapshot_id).await
    }

    async fn source_details(&self) -> Result<SourceDetails, AwsCallError> {
        // ElastiCache has no point-in-time restore; the engine version is on the snapshot itself.
        Ok(SourceDetails::default())
    }
}

#[async_trait::async_trait]
impl CacheExporter for ElastiCacheSnapshots {
    async fn export(
        &self,
        snapshot_id: &str,
        target_name: &str,
        bucket: &str,
    ) -> Result<bool, AwsCallError> {
        let call = self
            .client
            .copy_snapshot()
            .source_snapshot_name(snapshot_id)
            .target_snapshot_name(target_name)
            .target_bucket(bucket);
        match call.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_snapshot_already_exists_fault()) =>
            {
                Ok(false)
            }
            Err(e) => Err(classify("elasticache:CopySnapshot", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("6 MB"), Some(6 << 20));
        assert_eq!(parse_cache_size("1.5 GB"), Some(3 << 29));
        assert_eq!(parse_cache_size("lots"), None);
    }
}
