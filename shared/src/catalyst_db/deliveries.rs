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

/// The replay journal: every delivery a replay set back to `pending`, keyed by replay id, written
/// in the same statement (so the same transaction) as the requeue itself. A replay that dies at
/// any point leaves exactly its committed changes here, and its rerun reads them back into the
/// audit record. The setup SQL of the database roles (`shared/sql/database-roles.sql`) creates
/// the same table ahead of time for a replay role that may not create anything.
pub(crate) const JOURNAL_TABLE_DDL: &str = "
CREATE TABLE IF NOT EXISTS catalyst_dr.replay_journal (
    replay_id text NOT NULL,
    delivery_id bigint NOT NULL,
    requeued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (replay_id, delivery_id)
);";

/// Whether the journal exists, from the catalog (needs no privilege on the schema).
const JOURNAL_EXISTS_SQL: &str = "
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'catalyst_dr' AND c.relname = 'replay_journal')";

/// Serialises first replays racing on the catalog.
const JOURNAL_LOCK_KEY: i64 = 7_460_118_522;

/// Sets deliveries back to `pending`, each with its own `next_attempt_at` offset from now, but
/// only those still `dead_lettered` and not already requeued by this replay id: under READ
/// COMMITTED, PostgreSQL re-checks the `WHERE` of a row a concurrent transaction changed, so a row
/// the worker touched meanwhile is left alone, and a rerun finds nothing to change twice. The
/// changed ids go into the journal in the same statement. Returns the ids it changed.
const REQUEUE_SQL: &str = "
WITH changed AS (
    UPDATE webhook_deliveries d
    SET status = 'pending',
        next_attempt_at = now() + v.offset_us * interval '1 microsecond',
        updated_at = now()
    FROM unnest($1::bigint[], $2::bigint[]) AS v(id, offset_us)
    WHERE d.id = v.id AND d.status = 'dead_lettered'
      AND NOT EXISTS (SELECT 1 FROM catalyst_dr.replay_journal j WHERE j.replay_id = $3 AND j.delivery_id = d.id)
    RETURNING d.id
)
INSERT INTO catalyst_dr.replay_journal (replay_id, delivery_id)
SELECT $3, id FROM changed
RETURNING delivery_id";

/// What a replay id has requeued so far, with each delivery's subscription and endpoint (absent
/// when the delivery row has since been deleted).
const JOURNAL_SQL: &str = "
SELECT j.delivery_id, d.subscription_id, s.endpoint_url
FROM catalyst_dr.replay_journal j
LEFT JOIN webhook_deliveries d ON d.id = j.delivery_id
LEFT JOIN webhook_subscriptions s ON s.id = d.subscription_id
WHERE j.replay_id = $1
ORDER BY j.delivery_id";

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
pub async fn dead_letters(
    client: &Client,
    filter: &DeadLetterFilter,
) -> Result<Vec<DeadLetter>, CatalystDbError> {
    if let Some(limit) = filter.limit
        && limit < 0
    {
        return Err(CatalystDbError::invalid("limit", "must not be negative"));
    }
    let rows = client
        .query(
            DEAD_LETTERS_SQL,
            &[
                &filter.since,
                &filter.until,
                &filter.subscription_ids,
                &filter.limit,
            ],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| DeadLetter {
            id: r.get(0),
            subscription_id: r.get(1),
            endpoint_url: r.get(2),
        })
        .collect())
}

/// Creates the replay journal if this database has none yet (idempotent). When it exists, no
/// DDL runs, so a role without CREATE (the replay role) gets through.
pub async fn ensure_journal(client: &Client) -> Result<(), CatalystDbError> {
    if client
        .query_one(JOURNAL_EXISTS_SQL, &[])
        .await?
        .get::<_, bool>(0)
    {
        return Ok(());
    }
    let ddl = format!(
        "BEGIN;\nSELECT pg_advisory_xact_lock({JOURNAL_LOCK_KEY});\nCREATE SCHEMA IF NOT EXISTS catalyst_dr;{JOURNAL_TABLE_DDL}\nCOMMIT;"
    );
    client.batch_execute(&ddl).await?;
    Ok(())
}

/// One delivery a replay id has already requeued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journaled {
    pub id: i64,
    pub subscription_id: Option<i64>,
    pub endpoint_url: Option<String>,
}

/// Every delivery `replay_id` has requeued, in any earlier attempt.
pub async fn journaled(
    client: &Client,
    replay_id: &str,
) -> Result<Vec<Journaled>, CatalystDbError> {
    let rows = client.query(JOURNAL_SQL, &[&replay_id]).await?;
    Ok(rows
        .into_iter()
        .map(|r| Journaled {
            id: r.get(0),
            subscription_id: r.get(1),
            endpoint_url: r.get(2),
        })
        .collect())
}

/// Requeues one batch for `replay_id` (one statement, so one transaction, journal included):
/// `ids[i]` gets `next_attempt_at = now() + offsets_us[i]` microseconds. Returns the ids actually
/// changed.
pub async fn requeue(
    client: &Client,
    replay_id: &str,
    ids: &[i64],
    offsets_us: &[i64],
) -> Result<Vec<i64>, CatalystDbError> {
    if ids.len() != offsets_us.len() {
        return Err(CatalystDbError::invalid(
            "offsets_us",
            "needs one offset per id",
        ));
    }
    let rows = client
        .query(REQUEUE_SQL, &[&ids, &offsets_us, &replay_id])
        .await?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

/// `(endpoint_url, status, count)` of the given deliveries.
pub async fn outcome(
    client: &Client,
    ids: &[i64],
) -> Result<Vec<(String, String, i64)>, CatalystDbError> {
    let rows = client.query(OUTCOME_SQL, &[&ids]).await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

/// `(id, status, endpoint_url)` of the given deliveries that exist.
pub async fn statuses(
    client: &Client,
    ids: &[i64],
) -> Result<Vec<(i64, String, String)>, CatalystDbError> {
    let rows = client.query(STATUSES_SQL, &[&ids]).await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_is_guarded_by_the_status() {
        assert!(REQUEUE_SQL.contains("d.status = 'dead_lettered'"));
        assert!(DEAD_LETTERS_SQL.contains("d.status = 'dead_lettered'"));
        for sql in [
            DEAD_LETTERS_SQL,
            REQUEUE_SQL,
            JOURNAL_SQL,
            OUTCOME_SQL,
            STATUSES_SQL,
            JOURNAL_EXISTS_SQL,
            JOURNAL_TABLE_DDL,
        ] {
            assert!(!sql.contains('{'), "SQL is constant text");
        }
    }
}
