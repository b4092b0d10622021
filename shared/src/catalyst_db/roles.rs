//! catalyst-dr's least-privilege database roles: the setup SQL operators run on the Catalyst Auth
//! database (`shared/sql/database-roles.sql`, documented in `docs/database-roles.md`), and the
//! same SQL with other role names for the tests.

use super::CatalystDbError;
use tokio_postgres::Client;

/// The setup SQL with the default role names, exactly as operators run it with `psql -f`.
pub const SETUP_SQL: &str = include_str!("../../sql/database-roles.sql");

/// The role names of [`SETUP_SQL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleNames {
    /// Logical backups (snapshot-trigger): `pg_read_all_data`.
    pub backup: String,
    /// Dead-letter replay: the requeue columns of `webhook_deliveries` and its journal.
    pub replay: String,
    /// Drill baseline (drill-validator): reads the four tables.
    pub drill: String,
}

impl Default for RoleNames {
    fn default() -> Self {
        Self {
            backup: "catalyst_dr_backup".into(),
            replay: "catalyst_dr_replay".into(),
            drill: "catalyst_dr_drill".into(),
        }
    }
}

/// Lower-case identifiers only: they need no escaping inside the double quotes of the SQL.
fn check_role_name(field: &'static str, name: &str) -> Result<(), CatalystDbError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if !first_ok
        || name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        || name.starts_with("pg_")
    {
        return Err(CatalystDbError::invalid(
            field,
            format!(
                "{name:?} is not a lower-case identifier of at most 63 characters (and not pg_*)"
            ),
        ));
    }
    Ok(())
}

/// [`SETUP_SQL`] with `names` in place of the default role names.
pub fn setup_sql(names: &RoleNames) -> Result<String, CatalystDbError> {
    let defaults = RoleNames::default();
    let mut sql = SETUP_SQL.to_owned();
    for (field, default, name) in [
        ("backup", &defaults.backup, &names.backup),
        ("replay", &defaults.replay, &names.replay),
        ("drill", &defaults.drill, &names.drill),
    ] {
        check_role_name(field, name)?;
        sql = sql.replace(&format!("\"{default}\""), &format!("\"{name}\""));
    }
    Ok(sql)
}

/// Runs the setup SQL with `names` on the database `client` is connected to (as its owner or an
/// administrator). Idempotent.
pub async fn apply(client: &Client, names: &RoleNames) -> Result<(), CatalystDbError> {
    client.batch_execute(&setup_sql(names)?).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_substituted_and_checked() {
        assert_eq!(setup_sql(&RoleNames::default()).unwrap(), SETUP_SQL);
        let names = RoleNames {
            backup: "b_1".into(),
            replay: "r_1".into(),
            drill: "d_1".into(),
        };
        let sql = setup_sql(&names).unwrap();
        for default in [
            "\"catalyst_dr_backup\"",
            "\"catalyst_dr_replay\"",
            "\"catalyst_dr_drill\"",
        ] {
            assert!(!sql.contains(default), "{default} left in");
        }
        assert!(sql.contains("GRANT pg_read_all_data TO \"b_1\""));
        assert!(sql.contains("GRANT UPDATE (status, next_attempt_at, updated_at) ON public.webhook_deliveries TO \"r_1\""));
        for bad in ["", "Replay", "x\"; DROP", "pg_x", "a-b", &"a".repeat(64)] {
            let err = setup_sql(&RoleNames {
                replay: bad.to_owned(),
                ..RoleNames::default()
            })
            .unwrap_err();
            assert!(err.to_string().contains("replay"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_documentation_shows_this_sql() {
        let doc = include_str!("../../../docs/database-roles.md");
        assert!(
            doc.contains(SETUP_SQL),
            "docs/database-roles.md must show shared/sql/database-roles.sql as it is"
        );
    }

    #[test]
    fn the_journal_is_the_one_the_replay_creates() {
        let table = super::super::deliveries::JOURNAL_TABLE_DDL.trim();
        assert!(
            SETUP_SQL.contains(table),
            "the setup SQL's journal differs from the replay's"
        );
    }
}
