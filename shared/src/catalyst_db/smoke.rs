//! The runbook's checks of a restored database: users with their entitlements, and the webhook
//! deliveries still pending.

use super::CatalystDbError;
use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSample {
    pub user_id: i64,
    pub entitlements: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersAndEntitlements {
    pub users: i64,
    pub entitlements: i64,
    /// A few users with the products they are entitled to (ids only: no personal data).
    pub sample: Vec<UserSample>,
}

pub async fn users_and_entitlements(
    client: &Client,
    sample: i64,
) -> Result<UsersAndEntitlements, CatalystDbError> {
    let users: i64 = client
        .query_one("SELECT count(*) FROM users", &[])
        .await?
        .get(0);
    let entitlements: i64 = client
        .query_one("SELECT count(*) FROM entitlements", &[])
        .await?
        .get(0);
    let rows = client
        .query(
            "SELECT u.id, coalesce(array_agg(e.product ORDER BY e.product) FILTER (WHERE e.product IS NOT NULL), '{}')
             FROM (SELECT id FROM users ORDER BY id LIMIT $1) u
             LEFT JOIN entitlements e ON e.user_id = u.id
             GROUP BY u.id ORDER BY u.id",
            &[&sample],
        )
        .await?;
    let sample = rows
        .iter()
        .map(|r| UserSample {
            user_id: r.get(0),
            entitlements: r.get(1),
        })
        .collect();
    Ok(UsersAndEntitlements {
        users,
        entitlements,
        sample,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDeliveries {
    pub pending: i64,
    pub sample_ids: Vec<i64>,
}

pub async fn pending_deliveries(
    client: &Client,
    sample: i64,
) -> Result<PendingDeliveries, CatalystDbError> {
    let pending: i64 = client
        .query_one(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'",
            &[],
        )
        .await?
        .get(0);
    let rows = client
        .query("SELECT id FROM webhook_deliveries WHERE status = 'pending' ORDER BY next_attempt_at NULLS FIRST, id LIMIT $1", &[&sample])
        .await?;
    Ok(PendingDeliveries {
        pending,
        sample_ids: rows.iter().map(|r| r.get(0)).collect(),
    })
}
