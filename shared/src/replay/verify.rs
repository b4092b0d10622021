//! `verify`: what became of a replay's deliveries (runbook: "Verify success"), per endpoint.

use super::ReplayError;
use super::audit::ReplayAudit;
use super::probe::endpoint_key;
use crate::catalyst_db::deliveries;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio_postgres::Client;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    pub succeeded: u64,
    pub pending: u64,
    pub dead_lettered: u64,
    pub failed: u64,
}

impl OutcomeCounts {
    fn add(&mut self, status: &str, n: u64) {
        match status {
            "succeeded" => self.succeeded += n,
            "pending" => self.pending += n,
            "dead_lettered" => self.dead_lettered += n,
            _ => self.failed += n,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointOutcome {
    pub endpoint: String,
    #[serde(flatten)]
    pub counts: OutcomeCounts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyResult {
    pub replay_id: String,
    pub replayed: u64,
    pub total: OutcomeCounts,
    /// Replayed deliveries no longer in the database.
    pub missing: u64,
    /// Nothing still pending: every replayed delivery reached an end state.
    pub settled: bool,
    /// Every replayed delivery succeeded.
    pub all_succeeded: bool,
    pub endpoints: Vec<EndpointOutcome>,
}

pub async fn verify(client: &Client, audit: &ReplayAudit) -> Result<VerifyResult, ReplayError> {
    let mut total = OutcomeCounts::default();
    let mut per_endpoint: BTreeMap<String, OutcomeCounts> = BTreeMap::new();
    let mut found = 0u64;
    for chunk in audit.delivery_ids.chunks(50_000) {
        for (url, status, count) in deliveries::outcome(client, chunk).await? {
            let n = u64::try_from(count).unwrap_or(0);
            found += n;
            total.add(&status, n);
            per_endpoint
                .entry(endpoint_key(&url))
                .or_default()
                .add(&status, n);
        }
    }
    let replayed = audit.delivery_ids.len() as u64;
    Ok(VerifyResult {
        replay_id: audit.replay_id.clone(),
        replayed,
        settled: total.pending == 0,
        all_succeeded: total.succeeded == replayed,
        missing: replayed.saturating_sub(found),
        total,
        endpoints: per_endpoint
            .into_iter()
            .map(|(endpoint, counts)| EndpointOutcome { endpoint, counts })
            .collect(),
    })
}
