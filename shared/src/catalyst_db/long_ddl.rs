//! The restore's statements that can outlast the invocation that sends them: an index build, the
//! validation of a foreign key, a foreign key PostgreSQL validates as it is added, on a large
//! table, or a materialized view's refresh with its indexes.
//!
//! Each is sent alone, outside any transaction, so PostgreSQL commits it when it ends even if
//! its client has gone meanwhile (a Lambda stopped at its timeout): the server does not look for
//! the client while a statement runs (the session turns `client_connection_check_interval`
//! off). The catalog tells when one is done. While one runs, its session's `application_name`
//! names it, so a later attempt waits for that session instead of starting the work again.

use super::error::CatalystDbError;
use super::introspect::RESTORE_APPLICATION_NAME;
use std::time::Duration;
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

/// The longest pause between two looks at a statement another session runs.
const LONGEST_PAUSE: Duration = Duration::from_secs(5);
/// PostgreSQL keeps the first 63 bytes of an `application_name`.
const NAME_BYTES: usize = 63;

/// One statement and how the catalog shows it done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongDdl {
    /// What it does, for messages: `index "public"."deliveries_pkey"`.
    pub label: String,
    pub statement: String,
    pub done: DoneWhen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoneWhen {
    /// The relation exists (schema-qualified and quoted): a build commits it whole or not at all.
    Exists { relation: String },
    /// The table's (schema-qualified and quoted) constraint is validated.
    Validated { table: String, constraint: String },
    /// The table's constraint exists (one added valid is validated as it is added).
    Added { table: String, constraint: String },
    /// `table` (schema-qualified and quoted) has the row `step` in its `step` column: the
    /// statements end by inserting it, and run as one implicit transaction (a multi-statement
    /// simple query), so the row is there exactly when all of them are done.
    Marked { table: String, step: String },
}

impl LongDdl {
    async fn is_done(&self, client: &Client) -> Result<bool, CatalystDbError> {
        let row = match &self.done {
            DoneWhen::Exists { relation } => {
                client
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[relation])
                    .await?
            }
            DoneWhen::Validated { table, constraint } => {
                client
                    .query_one(
                        "SELECT coalesce((SELECT convalidated FROM pg_constraint \
                           WHERE conrelid = to_regclass($1)::oid AND conname = $2), false)",
                        &[table, constraint],
                    )
                    .await?
            }
            DoneWhen::Added { table, constraint } => {
                client
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM pg_constraint \
                           WHERE conrelid = to_regclass($1)::oid AND conname = $2)",
                        &[table, constraint],
                    )
                    .await?
            }
            DoneWhen::Marked { table, step } => {
                client
                    .query_one(
                        &format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE step = $1)"),
                        &[step],
                    )
                    .await?
            }
        };
        Ok(row.get(0))
    }
}

/// The `application_name` of the session that runs the statement `key` names.
fn session_name(key: &str) -> String {
    let mut name = format!("catalyst-dr {key}");
    while name.len() > NAME_BYTES {
        name.pop();
    }
    name
}

async fn running_elsewhere(client: &Client, name: &str) -> Result<bool, CatalystDbError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
               AND application_name = $1 AND state = 'active' AND pid <> pg_backend_pid())",
            &[&name],
        )
        .await?
        .get(0))
}

/// Runs `ddl` unless it is done or another session runs it (then waits for that one); `key`
/// names it among the database's sessions. True once it is done; false when `until` came
/// first: the statement may still be running (on this connection, which then takes no other
/// statement, or on another), and a later call picks up where this one stopped.
pub async fn run(
    client: &Client,
    key: &str,
    ddl: &LongDdl,
    until: Option<Instant>,
) -> Result<bool, CatalystDbError> {
    let name = session_name(key);
    let past = |at: Option<Instant>| at.is_some_and(|u| Instant::now() >= u);
    let mut pause = Duration::from_millis(50);
    loop {
        if past(until) {
            return Ok(false);
        }
        if ddl.is_done(client).await? {
            return Ok(true);
        }
        if !running_elsewhere(client, &name).await? {
            break;
        }
        let wake = Instant::now() + pause;
        tokio::time::sleep_until(until.map_or(wake, |u| u.min(wake))).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
    client
        .execute(
            "SELECT set_config('application_name', $1, false), \
               CASE WHEN current_setting('server_version_num')::int >= 140000 \
                 THEN set_config('client_connection_check_interval', '0', false) END",
            &[&name],
        )
        .await?;
    let sent = client.batch_execute(&ddl.statement);
    let outcome = match until {
        Some(until) => match tokio::time::timeout_at(until, sent).await {
            Ok(outcome) => outcome,
            Err(_) => return Ok(false),
        },
        None => sent.await,
    };
    match outcome {
        Ok(()) => {}
        // Another attempt built the same index, or added the same key, meanwhile (both started
        // before either showed).
        Err(e)
            if matches!(
                e.code(),
                Some(&SqlState::DUPLICATE_TABLE | &SqlState::DUPLICATE_OBJECT)
            ) && ddl.is_done(client).await? => {}
        Err(e) => return Err(e.into()),
    }
    client
        .execute(
            "SELECT set_config('application_name', $1, false)",
            &[&RESTORE_APPLICATION_NAME],
        )
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::session_name;

    #[test]
    fn a_session_name_fits_postgres_limit() {
        assert_eq!(
            session_name("20261202t034713123z index 3"),
            "catalyst-dr 20261202t034713123z index 3"
        );
        assert_eq!(session_name(&"x".repeat(80)).len(), 63);
    }
}
