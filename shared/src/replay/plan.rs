//! `plan`: what a replay would touch (the runbook's query), counted per subscription and endpoint,
//! with sample ids. Reads only.

use super::ReplayError;
use super::probe::endpoint_key;
use crate::catalyst_db::deliveries::{self, DeadLetter, DeadLetterFilter};
use crate::input::format_time;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio_postgres::Client;

/// Sample ids per group in a plan.
pub const SAMPLE_IDS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanGroup {
    pub subscription_id: i64,
    pub endpoint: String,
    pub deliveries: u64,
    pub sample_ids: Vec<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayPlan {
    pub database_secret_id: String,
    pub since: String,
    pub until: String,
    pub subscription_ids: Option<Vec<i64>>,
    pub limit: Option<i64>,
    pub deliveries: u64,
    pub subscriptions: u64,
    /// Distinct endpoints: the probes a replay would make.
    pub endpoints: u64,
    pub groups: Vec<PlanGroup>,
}

/// Groups dead letters by subscription (each subscription has one endpoint).
pub fn summarise(
    rows: &[DeadLetter],
    filter: &DeadLetterFilter,
    database_secret_id: &str,
) -> ReplayPlan {
    let mut groups: BTreeMap<i64, PlanGroup> = BTreeMap::new();
    for row in rows {
        let group = groups
            .entry(row.subscription_id)
            .or_insert_with(|| PlanGroup {
                subscription_id: row.subscription_id,
                endpoint: endpoint_key(&row.endpoint_url),
                deliveries: 0,
                sample_ids: Vec::new(),
            });
        group.deliveries += 1;
        if group.sample_ids.len() < SAMPLE_IDS {
            group.sample_ids.push(row.id);
        }
    }
    let mut endpoints: Vec<&str> = groups.values().map(|g| g.endpoint.as_str()).collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    ReplayPlan {
        database_secret_id: database_secret_id.to_owned(),
        since: format_time(filter.since),
        until: format_time(filter.until),
        subscription_ids: filter.subscription_ids.clone(),
        limit: filter.limit,
        deliveries: rows.len() as u64,
        subscriptions: groups.len() as u64,
        endpoints: endpoints.len() as u64,
        groups: groups.into_values().collect(),
    }
}

pub async fn plan(
    client: &Client,
    filter: &DeadLetterFilter,
    database_secret_id: &str,
) -> Result<ReplayPlan, ReplayError> {
    let rows = deliveries::dead_letters(client, filter).await?;
    Ok(summarise(&rows, filter, database_secret_id))
}
