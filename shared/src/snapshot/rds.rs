//! [`SnapshotStore`] for an RDS instance or an Aurora cluster.

use super::store::{SnapshotInfo, SnapshotKind, SnapshotStore, SourceDetails};
use crate::aws_error::{AwsCallError, classify, created_unless_exists};
use crate::aws_time::from_aws;
use crate::rds::{DbSource, sdk_tags, tag_map};
use crate::tags::Tags;
use aws_sdk_rds::Client;
use aws_sdk_rds::types::{DbClusterSnapshot, DbSnapshot};

pub struct RdsSnapshots {
    client: Client,
    source: DbSource,
}

impl RdsSnapshots {
    pub fn new(client: Client, source: DbSource) -> Self {
        Self { client, source }
    }
}

const GIB: u64 = 1024 * 1024 * 1024;

fn instance_snapshot(s: &DbSnapshot) -> SnapshotInfo {
    SnapshotInfo {
        kind: SnapshotKind::RdsInstance,
        id: s.db_snapshot_identifier().unwrap_or_default().to_owned(),
        arn: s.db_snapshot_arn().map(str::to_owned),
        source_id: s.db_instance_identifier().unwrap_or_default().to_owned(),
        status: s.status().unwrap_or("unknown").to_owned(),
        snapshot_type: s.snapshot_type().unwrap_or("unknown").to_owned(),
        created_at: s.snapshot_create_time().and_then(from_aws),
        engine: s.engine().map(str::to_owned),
        engine_version: s.engine_version().map(str::to_owned),
        size_bytes: s
            .allocated_storage()
            .and_then(|g| u64::try_from(g).ok())
            .map(|g| g * GIB),
        tags: tag_map(s.tag_list()),
    }
}

fn cluster_snapshot(s: &DbClusterSnapshot) -> SnapshotInfo {
    SnapshotInfo {
        kind: SnapshotKind::RdsCluster,
        id: s
            .db_cluster_snapshot_identifier()
            .unwrap_or_default()
            .to_owned(),
        arn: s.db_cluster_snapshot_arn().map(str::to_owned),
        source_id: s.db_cluster_identifier().unwrap_or_default().to_owned(),
        status: s.status().unwrap_or("unknown").to_owned(),
        snapshot_type: s.snapshot_type().unwrap_or("unknown").to_owned(),
        created_at: s.snapshot_create_time().and_then(from_aws),
        engine: s.engine().map(str::to_owned),
        engine_version: s.engine_version().map(str::to_owned),
        size_bytes: s
            .allocated_storage()
            .and_then(|g| u64::try_from(g).ok())
            .map(|g| g * GIB),
        tags: tag_map(s.tag_list()),
    }
}

#[async_trait::async_trait]
impl SnapshotStore for RdsSnapshots {
    fn kind(&self) -> SnapshotKind {
        match self.source {
            DbSource::Instance(_) => SnapshotKind::RdsInstance,
            DbSource::Cluster(_) => SnapshotKind::RdsCluster,
        }
    }

    fn source_id(&self) -> &str {
        match &self.source {
            DbSource::Instance(id) | DbSource::Cluster(id) => id,
        }
    }

    async fn describe(&self, snapshot_id: &str) -> Result<Option<SnapshotInfo>, AwsCallError> {
        match &self.source {
            DbSource::Instance(_) => {
                match self
                    .client
                    .describe_db_snapshots()
                    .db_snapshot_identifier(snapshot_id)
                    .send()
                    .await
                {
                    Ok(out) => Ok(out.db_snapshots().first().map(instance_snapshot)),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_db_snapshot_not_found_fault()) =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(classify("rds:DescribeDBSnapshots", e)),
                }
            }
            DbSource::Cluster(_) => {
                match self
                    .client
                    .describe_db_cluster_snapshots()
                    .db_cluster_snapshot_identifier(snapshot_id)
                    .send()
                    .await
                {
                    Ok(out) => Ok(out.db_cluster_snapshots().first().map(cluster_snapshot)),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_db_cluster_snapshot_not_found_fault()) =>
                    {
                        Ok(None)
                    }
                    Err(e) => Err(classify("rds:DescribeDBClusterSnapshots", e)),
                }
            }
        }
    }

    async fn create(&self, snapshot_id: &str, tags: &Tags) -> Result<bool, AwsCallError> {
        match &self.source {
            DbSource::Instance(id) => {
                let call = self
                    .client
                    .create_db_snapshot()
                    .db_instance_identifier(id)
                    .db_snapshot_identifier(snapshot_id)
                    .set_tags(Some(sdk_tags(tags)));
                created_unless_exists("rds:CreateDBSnapshot", call.send().await, |s| {
                    s.is_db_snapshot_already_exists_fault()
                })
            }
            DbSource::Cluster(id) => {
                let call = self
                    .client
                    .create_db_cluster_snapshot()
                    .db_cluster_identifier(id)
                    .db_cluster_snapshot_identifier(snapshot_id)
                    .set_tags(Some(sdk_tags(tags)));
                created_unless_exists("rds:CreateDBClusterSnapshot", call.send().await, |s| {
                    s.is_db_cluster_snapshot_already_exists_fault()
                })
            }
        }
    }

    async fn list(&self) -> Result<Vec<SnapshotInfo>, AwsCallError> {
        let mut found = Vec::new();
        match &self.source {
            DbSource::Instance(id) => {
                let mut pages = self
                    .client
                    .describe_db_snapshots()
                    .db_instance_identifier(id)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| classify("rds:DescribeDBSnapshots", e))?;
                    found.extend(page.db_snapshots().iter().map(instance_snapshot));
                }
            }
            DbSource::Cluster(id) => {
                let mut pages = self
                    .client
                    .describe_db_cluster_snapshots()
                    .db_cluster_identifier(id)
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| classify("rds:DescribeDBClusterSnapshots", e))?;
                    found.extend(page.db_cluster_snapshots().iter().map(cluster_snapshot));
                }
            }
        }
        Ok(found)
    }

    async fn delete(&self, snapshot_id: &str) -> Result<(), AwsCallError> {
        match &self.source {
            DbSource::Instance(_) => match self
                .client
                .delete_db_snapshot()
                .db_snapshot_identifier(snapshot_id)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_db_snapshot_not_found_fault()) =>
                {
                    Ok(())
                }
                Err(e) => Err(classify("rds:DeleteDBSnapshot", e)),
            },
            DbSource::Cluster(_) => {
                match self
                    .client
                    .delete_db_cluster_snapshot()
                    .db_cluster_snapshot_identifier(snapshot_id)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_db_cluster_snapshot_not_found_fault()) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(classify("rds:DeleteDBClusterSnapshot", e)),
                }
            }
        }
    }

    async fn source_details(&self) -> Result<SourceDetails, AwsCallError> {
        match &self.source {
            DbSource::Instance(id) => {
                let out = self
                    .client
                    .describe_db_instances()
                    .db_instance_identifier(id)
                    .send()
                    .await
                    .map_err(|e| classify("rds:DescribeDBInstances", e))?;
                Ok(out
                    .db_instances()
                    .first()
                    .map_or_else(SourceDetails::default, |i| SourceDetails {
                        engine: i.engine().map(str::to_owned),
                        engine_version: i.engine_version().map(str::to_owned),
                        latest_restorable_time: i.latest_restorable_time().and_then(from_aws),
                    }))
            }
            DbSource::Cluster(id) => {
                let out = self
                    .client
                    .describe_db_clusters()
                    .db_cluster_identifier(id)
                    .send()
                    .await
                    .map_err(|e| classify("rds:DescribeDBClusters", e))?;
                Ok(out
                    .db_clusters()
                    .first()
                    .map_or_else(SourceDetails::default, |c| SourceDetails {
                        engine: c.engine().map(str::to_owned),
                        engine_version: c.engine_version().map(str::to_owned),
                        latest_restorable_time: c.latest_restorable_time().and_then(from_aws),
                    }))
            }
        }
    }
}

#[async_trait::async_trait]
impl super::dr::SnapshotCopier for RdsSnapshots {
    async fn copy(
        &self,
        source_arn: &str,
        target_id: &str,
        kms_key_arn: &str,
        tags: &Tags,
    ) -> Result<bool, AwsCallError> {
        // Issued in the DR region with the source's ARN; the presigned URL is only needed
        // between GovCloud regions.
        match &self.source {
            DbSource::Instance(_) => {
                let call = self
                    .client
                    .copy_db_snapshot()
                    .source_db_snapshot_identifier(source_arn)
                    .target_db_snapshot_identifier(target_id)
                    .kms_key_id(kms_key_arn)
                    .set_tags(Some(sdk_tags(tags)));
                created_unless_exists("rds:CopyDBSnapshot", call.send().await, |s| {
                    s.is_db_snapshot_already_exists_fault()
                })
            }
            DbSource::Cluster(_) => {
                let call = self
                    .client
                    .copy_db_cluster_snapshot()
                    .source_db_cluster_snapshot_identifier(source_arn)
                    .target_db_cluster_snapshot_identifier(target_id)
                    .kms_key_id(kms_key_arn)
                    .set_tags(Some(sdk_tags(tags)));
                created_unless_exists("rds:CopyDBClusterSnapshot", call.send().await, |s| {
                    s.is_db_cluster_snapshot_already_exists_fault()
                })
            }
        }
    }

    async fn shared_with(&self, snapshot_id: &str) -> Result<Vec<String>, AwsCallError> {
        let restore = |attributes: Vec<(Option<String>, Vec<String>)>| {
            attributes
                .into_iter()
                .filter(|(name, _)| name.as_deref() == Some("restore"))
                .flat_map(|(_, values)| values)
                .filter(|v| v != "all")
                .collect::<Vec<_>>()
        };
        match &self.source {
            DbSource::Instance(_) => {
                let out = self
                    .client
                    .describe_db_snapshot_attributes()
                    .db_snapshot_identifier(snapshot_id)
                    .send()
                    .await
                    .map_err(|e| classify("rds:DescribeDBSnapshotAttributes", e))?;
                let attributes = out
                    .db_snapshot_attributes_result()
                    .map(|r| {
                        r.db_snapshot_attributes()
                            .iter()
                            .map(|a| {
                                (
                                    a.attribute_name().map(str::to_owned),
                                    a.attribute_values().to_vec(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(restore(attributes))
            }
            DbSource::Cluster(_) => {
                let out = self
                    .client
                    .describe_db_cluster_snapshot_attributes()
                    .db_cluster_snapshot_identifier(snapshot_id)
                    .send()
                    .await
                    .map_err(|e| classify("rds:DescribeDBClusterSnapshotAttributes", e))?;
                let attributes = out
                    .db_cluster_snapshot_attributes_result()
                    .map(|r| {
                        r.db_cluster_snapshot_attributes()
                            .iter()
                            .map(|a| {
                                (
                                    a.attribute_name().map(str::to_owned),
                                    a.attribute_values().to_vec(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(restore(attributes))
            }
        }
    }

    async fn share(&self, snapshot_id: &str, account: &str) -> Result<(), AwsCallError> {
        match &self.source {
            DbSource::Instance(_) => self
                .client
                .modify_db_snapshot_attribute()
                .db_snapshot_identifier(snapshot_id)
                .attribute_name("restore")
                .values_to_add(account)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("rds:ModifyDBSnapshotAttribute", e)),
            DbSource::Cluster(_) => self
                .client
                .modify_db_cluster_snapshot_attribute()
                .db_cluster_snapshot_identifier(snapshot_id)
                .attribute_name("restore")
                .values_to_add(account)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("rds:ModifyDBClusterSnapshotAttribute", e)),
        }
    }
}
