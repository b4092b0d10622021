//! The staging marker. catalyst-dr only ever writes into, flushes or drops a database that carries
//! it: the database comment `catalyst-dr:staging drill=<id>`, which catalyst-dr sets on the
//! databases it restores and which a production database never has.

use super::CatalystDbError;
use tokio_postgres::Client;

pub const STAGING_COMMENT_PREFIX: &str = "catalyst-dr:staging";

/// The marker of the connected database, if it has one: `Some(drill id)` for a staging database.
pub async fn staging_marker(client: &Client) -> Result<Option<String>, CatalystDbError> {
    Ok(database_comment(client)
        .await?
        .as_deref()
        .and_then(parse_marker))
}

/// The connected database's comment, where the marker lives.
async fn database_comment(client: &Client) -> Result<Option<String>, CatalystDbError> {
    let row = client.query_one("SELECT shobj_description(d.oid, 'pg_database') FROM pg_database d WHERE d.datname = current_database()", &[]).await?;
    Ok(row.get(0))
}

fn parse_marker(comment: &str) -> Option<String> {
    let rest = comment.strip_prefix(STAGING_COMMENT_PREFIX)?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    Some(
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix("drill="))
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Marks the connected database as catalyst-dr's staging copy for `drill_id`.
pub async fn mark_staging(client: &Client, drill_id: &str) -> Result<(), CatalystDbError> {
    set_marker(client, drill_id, None).await
}

/// Marks the staging database as being filled by a logical restore of backup `run_id` (so an
/// interrupted restore can be recognised, and reset, by a rerun of the same restore), or, with
/// `None`, as no longer being filled.
pub async fn mark_restoring(
    client: &Client,
    drill_id: &str,
    run_id: Option<&str>,
) -> Result<(), CatalystDbError> {
    set_marker(client, drill_id, run_id.map(|r| ("restoring", r))).await
}

/// The backup a logical restore was filling the connected staging database with when it stopped.
pub async fn restoring_backup(client: &Client) -> Result<Option<String>, CatalystDbError> {
    Ok(database_comment(client)
        .await?
        .as_deref()
        .filter(|c| parse_marker(c).is_some())
        .and_then(|c| {
            c.split_whitespace()
                .find_map(|w| w.strip_prefix("restoring="))
                .map(str::to_owned)
        }))
}

async fn set_marker(
    client: &Client,
    drill_id: &str,
    note: Option<(&str, &str)>,
) -> Result<(), CatalystDbError> {
    let plain = |v: &str| {
        !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !plain(drill_id) {
        return Err(CatalystDbError::invalid(
            "drill_id",
            "must be letters, digits, '-' or '_'",
        ));
    }
    if note.is_some_and(|(_, value)| !plain(value)) {
        return Err(CatalystDbError::invalid(
            "run_id",
            "must be letters, digits, '-' or '_'",
        ));
    }
    let note = note
        .map(|(key, value)| format!(" {key}={value}"))
        .unwrap_or_default();
    // COMMENT takes no bind parameters; the values were checked above and the database name is
    // quoted as an identifier.
    let name: String = client
        .query_one("SELECT quote_ident(current_database())", &[])
        .await?
        .get(0);
    client
        .batch_execute(&format!(
            "COMMENT ON DATABASE {name} IS '{STAGING_COMMENT_PREFIX} drill={drill_id}{note}'"
        ))
        .await?;
    Ok(())
}

/// Fails unless the connected database is marked as staging.
pub async fn require_staging(client: &Client) -> Result<String, CatalystDbError> {
    let database: String = client
        .query_one("SELECT current_database()", &[])
        .await?
        .get(0);
    staging_marker(client)
        .await?
        .ok_or(CatalystDbError::NotStaging { database })
}

/// Creates database `name` on the connected server unless it exists; true when it was created.
/// The name must be a plain lowercase identifier (it is quoted all the same).
pub async fn create_database(client: &Client, name: &str) -> Result<bool, CatalystDbError> {
    let valid = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(CatalystDbError::invalid(
            "database",
            "must be 1 to 63 lowercase letters, digits or '_', not starting with a digit",
        ));
    }
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if exists {
        return Ok(false);
    }
    client
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::parse_marker;

    #[test]
    fn only_the_exact_prefix_marks_staging() {
        assert_eq!(
            parse_marker("catalyst-dr:staging drill=q4-2026"),
            Some("q4-2026".into())
        );
        assert_eq!(parse_marker("catalyst-dr:staging"), Some(String::new()));
        assert_eq!(parse_marker("catalyst-dr:staging-not"), None);
        assert_eq!(parse_marker("production catalyst-dr:staging"), None);
    }
}
