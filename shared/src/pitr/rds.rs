//! [`RestoreEngine`] on Amazon RDS: `RestoreDBInstanceToPointInTime`, or for Aurora
//! `RestoreDBClusterToPointInTime` plus one instance in the restored cluster.

use crate::aws_error::classify;
use crate::aws_time::{from_aws, to_aws};
use crate::rds::{DbSource, sdk_tags, tag_map};
use crate::restore_engine::{
    BackupSnapshot, EngineError, RestoreEngine, RestoreRequest, RestoreWindow, StagingInstance,
    StagingState,
};
use aws_sdk_rds::Client;
use time::OffsetDateTime;

/// Where staging restores land: never the defaults, which production traffic may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingPlacement {
    pub subnet_group: String,
    pub security_group_ids: Vec<String>,
    /// DB parameter group (instances) or DB cluster parameter group (Aurora).
    pub parameter_group: Option<String>,
    /// Instance class of the staging instance; required for Aurora, optional otherwise.
    pub instance_class: Option<String>,
}

pub struct RdsRestoreEngine {
    client: Client,
    source: DbSource,
    placement: StagingPlacement,
}

impl RdsRestoreEngine {
    pub fn new(client: Client, source: DbSource, placement: StagingPlacement) -> Self {
        Self {
            client,
            source,
            placement,
        }
    }
}

/// The instance created inside a restored Aurora cluster.
pub fn cluster_instance_id(target_id: &str) -> String {
    format!("{target_id}-instance-1")
}

fn state_of(status: &str) -> StagingState {
    match status {
        "available" => StagingState::Available,
        "failed"
        | "incompatible-restore"
        | "incompatible-parameters"
        | "incompatible-network"
        | "restore-error"
        | "inaccessible-encryption-credentials"
        | "storage-full"
        | "deleting" => StagingState::Failed,
        _ => StagingState::Creating,
    }
}

impl RdsRestoreEngine {
    async fn describe_instance(&self, id: &str) -> Result<Option<StagingInstance>, EngineError> {
        match self
            .client
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
        {
            Ok(out) => Ok(out.db_instances().first().map(|i| {
                let status = i.db_instance_status().unwrap_or("unknown").to_owned();
                StagingInstance {
                    target_id: id.to_owned(),
                    state: state_of(&status),
                    reason: (state_of(&status) == StagingState::Failed)
                        .then(|| format!("RDS reports the instance as {status}")),
                    status,
                    host: i.endpoint().and_then(|e| e.address()).map(str::to_owned),
                    port: i
                        .endpoint()
                        .and_then(|e| e.port())
                        .and_then(|p| u16::try_from(p).ok()),
                    master_username: i.master_username().map(str::to_owned),
                    arn: i.db_instance_arn().map(str::to_owned),
                    tags: tag_map(i.tag_list()),
                }
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_db_instance_not_found_fault()) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify("rds:DescribeDBInstances", e).into()),
        }
    }
}

impl RdsRestoreEngine {
    /// The engine of a restored cluster, read back when a retry found the cluster already there.
    async fn cluster_engine(&self, target_id: &str) -> Result<String, EngineError> {
        let out = self
            .client
            .describe_db_clusters()
            .db_cluster_identifier(target_id)
            .send()
            .await
            .map_err(|e| classify("rds:DescribeDBClusters", e))?;
        Ok(out
            .db_clusters()
            .first()
            .and_then(|c| c.engine())
            .unwrap_or("aurora-postgresql")
            .to_owned())
    }

    /// The one instance of a restored Aurora cluster, in the staging class, tagged like it.
    async fn create_cluster_instance(
        &self,
        request: &RestoreRequest,
        engine: String,
    ) -> Result<(), EngineError> {
        let class = self
            .placement
            .instance_class
            .clone()
            .ok_or_else(|| EngineError::Local {
                operation: "restore Aurora cluster",
                reason:
                    "STAGING_INSTANCE_CLASS is required to create the restored cluster's instance"
                        .to_owned(),
            })?;
        let created = self
            .client
            .create_db_instance()
            .db_instance_identifier(cluster_instance_id(&request.target_id))
            .db_cluster_identifier(&request.target_id)
            .engine(engine)
            .db_instance_class(class)
            .publicly_accessible(false)
            .set_tags(Some(sdk_tags(&request.tags)))
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_db_instance_already_exists_fault()) =>
            {
                Ok(())
            }
            Err(e) => Err(classify("rds:CreateDBInstance", e).into()),
        }
    }
}

#[async_trait::async_trait]
impl RestoreEngine for RdsRestoreEngine {
    fn source_id(&self) -> &str {
        match &self.source {
            DbSource::Instance(id) | DbSource::Cluster(id) => id,
        }
    }

    async fn restore_window(&self) -> Result<RestoreWindow, EngineError> {
        let not_found = || EngineError::SourceNotFound {
            source_id: self.source_id().to_owned(),
        };
        match &self.source {
            DbSource::Instance(id) => {
                let out = match self
                    .client
                    .describe_db_instances()
                    .db_instance_identifier(id)
                    .send()
                    .await
                {
                    Ok(out) => out,
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_db_instance_not_found_fault()) =>
                    {
                        return Err(not_found());
                    }
                    Err(e) => return Err(classify("rds:DescribeDBInstances", e).into()),
                };
                let instance = out.db_instances().first().ok_or_else(not_found)?;
                let latest = instance
                    .latest_restorable_time()
                    .and_then(from_aws)
                    .ok_or_else(|| EngineError::Local {
                        operation: "restore window",
                        reason: format!(
                            "{id} reports no latest restorable time: automated backups are off"
                        ),
                    })?;
                // Backups reach back the retention period, but never before the instance existed.
                let retention =
                    time::Duration::days(instance.backup_retention_period().unwrap_or(0).into());
                let created = instance
                    .instance_create_time()
                    .and_then(from_aws)
                    .unwrap_or(latest);
                Ok(RestoreWindow {
                    earliest: (OffsetDateTime::now_utc() - retention).max(created),
                    latest,
                })
            }
            DbSource::Cluster(id) => {
                let out = match self
                    .client
                    .describe_db_clusters()
                    .db_cluster_identifier(id)
                    .send()
                    .await
                {
                    Ok(out) => out,
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_db_cluster_not_found_fault()) =>
                    {
                        return Err(not_found());
                    }
                    Err(e) => return Err(classify("rds:DescribeDBClusters", e).into()),
                };
                let cluster = out.db_clusters().first().ok_or_else(not_found)?;
                let missing = |what: &str| EngineError::Local {
                    operation: "restore window",
                    reason: format!("{id} reports no {what}"),
                };
                Ok(RestoreWindow {
                    earliest: cluster
                        .earliest_restorable_time()
                        .and_then(from_aws)
                        .ok_or_else(|| missing("earliest restorable time"))?,
                    latest: cluster
                        .latest_restorable_time()
                        .and_then(from_aws)
                        .ok_or_else(|| missing("latest restorable time"))?,
                })
            }
        }
    }

    async fn describe(&self, target_id: &str) -> Result<Option<StagingInstance>, EngineError> {
        match &self.source {
            DbSource::Instance(_) => self.describe_instance(target_id).await,
            DbSource::Cluster(_) => {
                let cluster = match self
                    .client
                    .describe_db_clusters()
                    .db_cluster_identifier(target_id)
                    .send()
                    .await
                {
                    Ok(out) => out.db_clusters().first().cloned(),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_db_cluster_not_found_fault()) =>
                    {
                        None
                    }
                    Err(e) => return Err(classify("rds:DescribeDBClusters", e).into()),
                };
                let Some(cluster) = cluster else {
                    return Ok(None);
                };
                let cluster_status = cluster.status().unwrap_or("unknown").to_owned();
                // The cluster is usable once both it and its instance are available.
                let instance = self
                    .describe_instance(&cluster_instance_id(target_id))
                    .await?;
                let (state, status) = match (&instance, state_of(&cluster_status)) {
                    (_, StagingState::Failed) => (StagingState::Failed, cluster_status.clone()),
                    (None, _) => (
                        StagingState::Creating,
                        format!("cluster {cluster_status}, instance not created"),
                    ),
                    (Some(i), cluster_state) => {
                        let state = match (cluster_state, i.state) {
                            (_, StagingState::Failed) => StagingState::Failed,
                            (StagingState::Available, StagingState::Available) => {
                                StagingState::Available
                            }
                            _ => StagingState::Creating,
                        };
                        (
                            state,
                            format!("cluster {cluster_status}, instance {}", i.status),
                        )
                    }
                };
                Ok(Some(StagingInstance {
                    target_id: target_id.to_owned(),
                    state,
                    reason: (state == StagingState::Failed)
                        .then(|| format!("RDS reports {status}")),
                    status,
                    host: cluster.endpoint().map(str::to_owned),
                    port: cluster.port().and_then(|p| u16::try_from(p).ok()),
                    master_username: cluster.master_username().map(str::to_owned),
                    arn: cluster.db_cluster_arn().map(str::to_owned),
                    tags: tag_map(cluster.tag_list()),
                }))
            }
        }
    }

    async fn start_restore(&self, request: &RestoreRequest) -> Result<(), EngineError> {
        let placement = &self.placement;
        match &self.source {
            DbSource::Instance(source) => {
                let call = self
                    .client
                    .restore_db_instance_to_point_in_time()
                    .source_db_instance_identifier(source)
                    .target_db_instance_identifier(&request.target_id)
                    .db_subnet_group_name(&placement.subnet_group)
                    .set_vpc_security_group_ids(Some(placement.security_group_ids.clone()))
                    .set_db_parameter_group_name(placement.parameter_group.clone())
                    .set_db_instance_class(placement.instance_class.clone())
                    .publicly_accessible(false)
                    .multi_az(false)
                    .deletion_protection(false)
                    .copy_tags_to_snapshot(false)
                    .set_tags(Some(sdk_tags(&request.tags)));
                let call = match request.target_time {
                    Some(t) => call.restore_time(to_aws(t)),
                    None => call.use_latest_restorable_time(true),
                };
                match call.send().await {
                    Ok(_) => Ok(()),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_db_instance_already_exists_fault()) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(classify("rds:RestoreDBInstanceToPointInTime", e).into()),
                }
            }
            DbSource::Cluster(source) => {
                let call = self
                    .client
                    .restore_db_cluster_to_point_in_time()
                    .source_db_cluster_identifier(source)
                    .db_cluster_identifier(&request.target_id)
                    .restore_type("full-copy")
                    .db_subnet_group_name(&placement.subnet_group)
                    .set_vpc_security_group_ids(Some(placement.security_group_ids.clone()))
                    .set_db_cluster_parameter_group_name(placement.parameter_group.clone())
                    .deletion_protection(false)
                    .set_tags(Some(sdk_tags(&request.tags)));
                let call = match request.target_time {
                    Some(t) => call.restore_to_time(to_aws(t)),
                    None => call.use_latest_restorable_time(true),
                };
                let engine = match call.send().await {
                    Ok(out) => out.db_cluster().and_then(|c| c.engine()).map(str::to_owned),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_db_cluster_already_exists_fault()) =>
                    {
                        None
                    }
                    Err(e) => return Err(classify("rds:RestoreDBClusterToPointInTime", e).into()),
                };
                let engine = match engine {
                    Some(engine) => engine,
                    None => self.cluster_engine(&request.target_id).await?,
                };
                self.create_cluster_instance(request, engine).await
            }
        }
    }

    async fn backup_snapshots(&self) -> Result<Vec<BackupSnapshot>, EngineError> {
        let mut found = Vec::new();
        match &self.source {
            DbSource::Instance(id) => {
                let mut pages = self
                    .client
                    .describe_db_snapshots()
                    .db_instance_identifier(id)
                    .snapshot_type("manual")
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| classify("rds:DescribeDBSnapshots", e))?;
                    found.extend(page.db_snapshots().iter().map(|s| BackupSnapshot {
                        snapshot_id: s.db_snapshot_identifier().unwrap_or_default().to_owned(),
                        source_id: s.db_instance_identifier().unwrap_or_default().to_owned(),
                        status: s.status().unwrap_or("unknown").to_owned(),
                        created_at: s.snapshot_create_time().and_then(from_aws),
                        engine: s.engine().map(str::to_owned),
                        tags: tag_map(s.tag_list()),
                    }));
                }
            }
            DbSource::Cluster(id) => {
                let mut pages = self
                    .client
                    .describe_db_cluster_snapshots()
                    .db_cluster_identifier(id)
                    .snapshot_type("manual")
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| classify("rds:DescribeDBClusterSnapshots", e))?;
                    found.extend(page.db_cluster_snapshots().iter().map(|s| {
                        BackupSnapshot {
                            snapshot_id: s
                                .db_cluster_snapshot_identifier()
                                .unwrap_or_default()
                                .to_owned(),
                            source_id: s.db_cluster_identifier().unwrap_or_default().to_owned(),
                            status: s.status().unwrap_or("unknown").to_owned(),
                            created_at: s.snapshot_create_time().and_then(from_aws),
                            engine: s.engine().map(str::to_owned),
                            tags: tag_map(s.tag_list()),
                        }
                    }));
                }
            }
        }
        Ok(found)
    }

    async fn start_snapshot_restore(
        &self,
        request: &RestoreRequest,
        snapshot: &BackupSnapshot,
    ) -> Result<(), EngineError> {
        let placement = &self.placement;
        match &self.source {
            DbSource::Instance(_) => {
                let restored = self
                    .client
                    .restore_db_instance_from_db_snapshot()
                    .db_snapshot_identifier(&snapshot.snapshot_id)
                    .db_instance_identifier(&request.target_id)
                    .db_subnet_group_name(&placement.subnet_group)
                    .set_vpc_security_group_ids(Some(placement.security_group_ids.clone()))
                    .set_db_parameter_group_name(placement.parameter_group.clone())
                    .set_db_instance_class(placement.instance_class.clone())
                    .publicly_accessible(false)
                    .multi_az(false)
                    .deletion_protection(false)
                    .copy_tags_to_snapshot(false)
                    .set_tags(Some(sdk_tags(&request.tags)))
                    .send()
                    .await;
                match restored {
                    Ok(_) => Ok(()),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_db_instance_already_exists_fault()) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(classify("rds:RestoreDBInstanceFromDBSnapshot", e).into()),
                }
            }
            DbSource::Cluster(_) => {
                let engine = snapshot
                    .engine
                    .clone()
                    .unwrap_or_else(|| "aurora-postgresql".to_owned());
                let restored = self
                    .client
                    .restore_db_cluster_from_snapshot()
                    .snapshot_identifier(&snapshot.snapshot_id)
                    .db_cluster_identifier(&request.target_id)
                    .engine(&engine)
                    .db_subnet_group_name(&placement.subnet_group)
                    .set_vpc_security_group_ids(Some(placement.security_group_ids.clone()))
                    .set_db_cluster_parameter_group_name(placement.parameter_group.clone())
                    .deletion_protection(false)
                    .set_tags(Some(sdk_tags(&request.tags)))
                    .send()
                    .await;
                let engine = match restored {
                    Ok(out) => out
                        .db_cluster()
                        .and_then(|c| c.engine())
                        .map_or(engine, str::to_owned),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_db_cluster_already_exists_fault()) =>
                    {
                        self.cluster_engine(&request.target_id).await?
                    }
                    Err(e) => return Err(classify("rds:RestoreDBClusterFromSnapshot", e).into()),
                };
                self.create_cluster_instance(request, engine).await
            }
        }
    }

    async fn set_master_password(
        &self,
        target_id: &str,
        _username: &str,
        password: &str,
    ) -> Result<(), EngineError> {
        match &self.source {
            DbSource::Instance(_) => self
                .client
                .modify_db_instance()
                .db_instance_identifier(target_id)
                .master_user_password(password)
                .apply_immediately(true)
                .send()
                .await
                .map(drop)
                .map_err(|e| classify("rds:ModifyDBInstance", e).into()),
            DbSource::Cluster(_) => self
                .client
                .modify_db_cluster()
                .db_cluster_identifier(target_id)
                .master_user_password(password)
                .apply_immediately(true)
                .send()
                .await
                .map(drop)
                .map_err(|e| classify("rds:ModifyDBCluster", e).into()),
        }
    }

    async fn delete(&self, target_id: &str) -> Result<(), EngineError> {
        let delete_instance = |id: String| async move {
            match self
                .client
                .delete_db_instance()
                .db_instance_identifier(&id)
                .skip_final_snapshot(true)
                .delete_automated_backups(true)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_db_instance_not_found_fault()) =>
                {
                    Ok(())
                }
                Err(e) => Err(EngineError::from(classify("rds:DeleteDBInstance", e))),
            }
        };
        match &self.source {
            DbSource::Instance(_) => delete_instance(target_id.to_owned()).await,
            DbSource::Cluster(_) => {
                delete_instance(cluster_instance_id(target_id)).await?;
                match self
                    .client
                    .delete_db_cluster()
                    .db_cluster_identifier(target_id)
                    .skip_final_snapshot(true)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_db_cluster_not_found_fault()) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(classify("rds:DeleteDBCluster", e).into()),
                }
            }
        }
    }
}
