//! The webhook delivery queries of dead-letter replay: the runbook's dead-letter query, the
//! guarded requeue, and the outcome of a replay. Every value is a bind parameter.

use super::CatalystDbError;
use time::OffsetDateTime;
use tokio_postgres::Client;

/// Which dead-lettered deliveries a replay is about (the runbook's query, narrowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// `updated_at >= since`.
    pub since: OffsetDateTime,
    /// `updated_at < until`.
    pub until: OffsetDateTime,
    /// Only these subscriptions, when given.
    pub subscription_ids: Option<Vec<i64>>,
    /// At most this many deliveries, oldest id first.
    pub limit: Option<i64>,
}

/// One dead-lettered delivery and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub id: i64,
    pub subscription_id: i64,
    pub endpoint_url: String,
}

/// The runbook's query (`status = 'dead_lettered' AND updated_at` in the window), with the
/// subscription's endpoint, oldest id first.
const DEAD_LETTERS_SQL: &str = "
SELECT d.id, d.subscription_id, s.endpoint_url
FROM webhook_deliveries d
JOIN webhook_subscriptions s ON s.id = d.subscription_id
WHERE d.status = 'dead_lettered'
  AND d.updated_at >= $1 AND d.updated_at < $2
  AND ($3::bigint[] IS NULL OR d.subscription_id = ANY($3::bigint[]))
ORDER BY d.id
LIMIT $4::bigint";

/// Sets deliveries back to `pending`, each with its own `next_attempt_at` offset from now, but
/// only those still `dead_lettered`: under READ COMMITTED, PostgreSQL re-checks the `WHERE` of a
/// row a concurrent transaction changed, so a row the worker touched meanwhile is left alone, and
/// a rerun finds nothing to change. Returns the ids it changed.
const REQUEUE_SQL: &str = "
UPDATE webhook_deliveries d
SET status = 'pending',
    next_attempt_at = now() + v.offset_us * interval '1 microsecond',
    updated_at = now()
FROM unnest($1::bigint[], $2::bigint[]) AS v(id, offset_us)
WHERE d.id = v.id AND d.status = 'dead_lettered'
RETURNING d.id";

/// Status counts of given deliveries per endpoint.
const OUTCOME_SQL: &str = "
SELECT s.endpoint_url, d.status, count(*)
FROM webhook_deliveries d
JOIN webhook_subscriptions s ON s.id = d.subscription_id
WHERE d.id = ANY($1::bigint[])
GROUP BY s.endpoint_url, d.status
ORDER BY s.endpoint_url, d.status";

/// Status and endpoint of given deliveries.
const STATUSES_SQL: &str = "
SELECT d.id, d.status, s.endpoint_url
FROM webhook_deliveries d
JOIN webhook_subscriptions s ON s.id = d.subscription_id
WHERE d.id = ANY($1::bigint[])";

/// The dead-lettered deliveries matching `filter`.
pub async fn dead_letters(client: &Client, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>, CatalystDbError> {
    if let Some(limit) = filter.limit {
        if limit < 0 {
            return Err(CatalystDbError::invalid("limit", "must not be negative"));
        }
    }
    let rows = client
        .query(DEAD_LETTERS_SQL, &[&filter.since, &filter.until, &filter.subscription_ids, &filter.limit])
        .await?;
    Ok(rows.into_iter().map(|r| DeadLetter { id: r.get(0), subscription_id: r.get(1), endpoint_url: r.get(2) }).collect())
}

/// Requeues one batch (one statement, so one transaction): `ids[i]` gets
/// `next_attempt_at = now() + offsets_us[i]` microseconds. Returns the ids actually changed.
pub async fn requeue(client: &Client, ids: &[i64], offsets_us: &[i64]) -> Result<Vec<i64>, CatalystDbError> {
    if ids.len() != offsets_us.len() {
        return Err(CatalystDbError::invalid("offsets_us", "needs one offset per id"));
    }
    let rows = client.query(REQUEUE_SQL, &[&ids, &offsets_us]).await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// `(endpoint_url, status, count)` of the given deliveries.
pub async fn outcome(client: &Client, ids: &[i64]) -> Result<Vec<(String, String, i64)>, CatalystDbError> {
    let rows = client.query(OUTCOME_SQL, &[&ids]).await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

/// `(id, status, endpoint_url)` of the given deliveries that exist.
pub async fn statuses(client: &Client, ids: &[i64]) -> Result<Vec<(i64, String, String)>, CatalystDbError> {
    let rows = client.query(STATUSES_SQL, &[&ids]).await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_is_guarded_by_the_status() {
        assert!(REQUEUE_SQL.contains("d.status = 'dead_lettered'"));
        assert!(DEAD_LETTERS_SQL.contains("d.status = 'dead_lettered'"));
        for sql in [DEAD_LETTERS_SQL, REQUEUE_SQL, OUTCOME_SQL, STATUSES_SQL] {
            assert!(!sql.contains('{'), "SQL is constant text");
        }
    }
}
