//! An in-memory snapshot service for unit tests: one source's snapshots (created as `creating`,
//! manual, with the tags given) and, as ElastiCache does, the exports of its snapshots. Clones
//! share the state, so one value can serve as a cache store and its exporter, and a test keeps a
//! handle to inspect what a feature did.
//!
//! Behind the `memory` feature (and `cfg(test)`): it is test support, not something a Lambda
//! function should link.

use super::store::{CacheExporter, SnapshotInfo, SnapshotKind, SnapshotStore, SourceDetails};
use crate::aws_error::{AwsCallError, AwsFailureKind};
use crate::tags::Tags;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use time::OffsetDateTime;

/// One export started: the snapshot, the target name and the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    pub snapshot_id: String,
    pub target_name: String,
    pub bucket: String,
}

#[derive(Debug)]
struct State {
    snapshots: BTreeMap<String, SnapshotInfo>,
    exports: Vec<Export>,
    /// Accounts allowed to restore each snapshot (the DR copies' share).
    shared: BTreeMap<String, Vec<String>>,
    /// Copies made into this store: (source ARN, target id, KMS key).
    copies: Vec<(String, String, String)>,
    details: SourceDetails,
    now: OffsetDateTime,
}

#[derive(Debug, Clone)]
pub struct MemorySnapshots {
    kind: SnapshotKind,
    source_id: String,
    state: Arc<Mutex<State>>,
}

impl MemorySnapshots {
    pub fn new(kind: SnapshotKind, source_id: impl Into<String>) -> Self {
        Self {
            kind,
            source_id: source_id.into(),
            state: Arc::new(Mutex::new(State {
                snapshots: BTreeMap::new(),
                exports: Vec::new(),
                shared: BTreeMap::new(),
                copies: Vec::new(),
                details: SourceDetails::default(),
                now: OffsetDateTime::now_utc(),
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is complete before the lock is released, so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the service's clock, which stamps the snapshots it creates.
    pub fn set_now(&self, now: OffsetDateTime) {
        self.state().now = now;
    }

    pub fn set_source_details(&self, details: SourceDetails) {
        self.state().details = details;
    }

    /// A snapshot of this source as the service would describe it.
    pub fn info(&self, id: &str, snapshot_type: &str, status: &str, tags: Tags) -> SnapshotInfo {
        SnapshotInfo {
            kind: self.kind,
            id: id.to_owned(),
            arn: Some(format!("arn:memory:snapshot:{id}")),
            source_id: self.source_id.clone(),
            status: status.to_owned(),
            snapshot_type: snapshot_type.to_owned(),
            created_at: Some(self.state().now),
            engine: None,
            engine_version: None,
            size_bytes: None,
            tags,
        }
    }

    /// Adds a snapshot, as an earlier run, another tool or the service's automation would.
    pub fn insert(&self, snapshot: SnapshotInfo) {
        self.state().snapshots.insert(snapshot.id.clone(), snapshot);
    }

    /// Moves a snapshot to another status (`available`, `failed`, ...).
    pub fn set_status(&self, id: &str, status: &str) {
        if let Some(s) = self.state().snapshots.get_mut(id) {
            s.status = status.to_owned();
        }
    }

    /// The ids of the snapshots that exist, sorted.
    pub fn ids(&self) -> Vec<String> {
        self.state().snapshots.keys().cloned().collect()
    }

    /// Every copy started into this store: (source ARN, target id, KMS key), in order.
    pub fn copies(&self) -> Vec<(String, String, String)> {
        self.state().copies.clone()
    }

    /// Every export started, in order.
    pub fn exports(&self) -> Vec<Export> {
        self.state().exports.clone()
    }
}

#[async_trait::async_trait]
impl SnapshotStore for MemorySnapshots {
    fn kind(&self) -> SnapshotKind {
        self.kind
    }

    fn source_id(&self) -> &str {
        &self.source_id
    }

    async fn describe(&self, snapshot_id: &str) -> Result<Option<SnapshotInfo>, AwsCallError> {
        Ok(self.state().snapshots.get(snapshot_id).cloned())
    }

    async fn create(&self, snapshot_id: &str, tags: &Tags) -> Result<bool, AwsCallError> {
        if self.state().snapshots.contains_key(snapshot_id) {
            return Ok(false);
        }
        let snapshot = self.info(snapshot_id, "manual", "creating", tags.clone());
        self.insert(snapshot);
        Ok(true)
    }

    async fn list(&self) -> Result<Vec<SnapshotInfo>, AwsCallError> {
        Ok(self.state().snapshots.values().cloned().collect())
    }

    async fn delete(&self, snapshot_id: &str) -> Result<(), AwsCallError> {
        match self.state().snapshots.remove(snapshot_id) {
            Some(_) => Ok(()),
            None => Err(AwsCallError {
                operation: "DeleteSnapshot",
                code: Some("SnapshotNotFound".to_owned()),
                kind: AwsFailureKind::Rejected,
                source: format!("no snapshot {snapshot_id}").into(),
            }),
        }
    }

    async fn source_details(&self) -> Result<SourceDetails, AwsCallError> {
        Ok(self.state().details.clone())
    }
}

#[async_trait::async_trait]
impl CacheExporter for MemorySnapshots {
    async fn export(
        &self,
        snapshot_id: &str,
        target_name: &str,
        bucket: &str,
    ) -> Result<bool, AwsCallError> {
        let mut state = self.state();
        if state.exports.iter().any(|e| e.target_name == target_name) {
            return Ok(false);
        }
        state.exports.push(Export {
            snapshot_id: snapshot_id.to_owned(),
            target_name: target_name.to_owned(),
            bucket: bucket.to_owned(),
        });
        Ok(true)
    }
}

#[async_trait::async_trait]
impl super::dr::SnapshotCopier for MemorySnapshots {
    async fn copy(
        &self,
        source_arn: &str,
        target_id: &str,
        kms_key_arn: &str,
        tags: &Tags,
    ) -> Result<bool, AwsCallError> {
        if self.state().snapshots.contains_key(target_id) {
            return Ok(false);
        }
        let snapshot = self.info(target_id, "manual", "copying", tags.clone());
        self.insert(snapshot);
        self.state().copies.push((
            source_arn.to_owned(),
            target_id.to_owned(),
            kms_key_arn.to_owned(),
        ));
        Ok(true)
    }

    async fn shared_with(&self, snapshot_id: &str) -> Result<Vec<String>, AwsCallError> {
        Ok(self
            .state()
            .shared
            .get(snapshot_id)
            .cloned()
            .unwrap_or_default())
    }

    async fn share(&self, snapshot_id: &str, account: &str) -> Result<(), AwsCallError> {
        let mut state = self.state();
        let accounts = state.shared.entry(snapshot_id.to_owned()).or_default();
        if !accounts.iter().any(|a| a == account) {
            accounts.push(account.to_owned());
        }
        Ok(())
    }
}
