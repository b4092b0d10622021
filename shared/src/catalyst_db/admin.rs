//! Administrative statements: marking how far the archived WAL reaches, and setting a role's
//! password on a staging copy.

use super::CatalystDbError;
use std::time::Duration;
use time::OffsetDateTime;
use tokio_postgres::Client;

/// Makes everything committed up to now restorable from the WAL archive, and returns that
/// instant: the server's clock is read, a transaction commits after it (recovery to a target
/// time stops at the first commit past the target, so one must exist), the WAL segment is
/// switched and the call waits, bounded by `timeout`, until the archiver has stored it.
pub async fn archive_up_to_now(
    client: &Client,
    timeout: Duration,
) -> Result<OffsetDateTime, CatalystDbError> {
    let now: OffsetDateTime = client
        .query_one("SELECT clock_timestamp()", &[])
        .await?
        .get(0);
    client.query_one("SELECT txid_current()", &[]).await?;
    let segment: String = client
        .query_one("SELECT pg_walfile_name(pg_switch_wal() - 1)", &[])
        .await?
        .get(0);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let archived: Option<String> = client
            .query_one("SELECT last_archived_wal FROM pg_stat_archiver", &[])
            .await?
            .get(0);
        // WAL file names are fixed-width hex: on one timeline, text order is WAL order.
        if archived
            .as_deref()
            .is_some_and(|a| a.len() == segment.len() && a >= segment.as_str())
        {
            return Ok(now);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(CatalystDbError::invalid(
                "wal_archive",
                format!("segment {segment} was not archived within {timeout:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sets `role`'s password. Only a SCRAM verifier crosses the wire, never the password itself.
pub async fn set_role_password(
    client: &Client,
    role: &str,
    password: &str,
) -> Result<(), CatalystDbError> {
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    // ALTER ROLE takes no bind parameters: the role is quoted by the server, the verifier is
    // base64 and `$`/`:` only.
    let quoted: String = client
        .query_one("SELECT quote_ident($1)", &[&role])
        .await?
        .get(0);
    debug_assert!(
        verifier
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=$:-".contains(c))
    );
    client
        .batch_execute(&format!("ALTER ROLE {quoted} PASSWORD '{verifier}'"))
        .await?;
    Ok(())
}
