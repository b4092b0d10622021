//! The staging database's credentials: a fresh master password, stored with the staging
//! `DATABASE_URL` in Secrets Manager *before* the instance is changed, so that a crash between
//! the two never leaves a password nobody knows. A retry reuses the stored password.

use crate::postgres::DbCredentials;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// The staging secret's JSON: the RDS credential fields, plus the drill it belongs to and the
/// ready-made `DATABASE_URL` for the application under test.
#[derive(Clone, Serialize, Deserialize)]
pub struct StagingSecret {
    pub engine: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub dbname: String,
    pub drill_id: String,
    pub target_id: String,
    pub database_url: String,
}

impl std::fmt::Debug for StagingSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagingSecret")
            .field("target_id", &self.target_id)
            .field("drill_id", &self.drill_id)
            .finish_non_exhaustive()
    }
}

impl StagingSecret {
    pub fn new(credentials: &DbCredentials, drill_id: &str, target_id: &str, tls: bool) -> Self {
        let sslmode = if tls { "verify-full" } else { "disable" };
        let database_url = format!(
            "postgres://{}:{}@{}:{}/{}?sslmode={sslmode}",
            percent_encode(&credentials.username),
            percent_encode(&credentials.password),
            credentials.host,
            credentials.port,
            percent_encode(&credentials.dbname)
        );
        Self {
            engine: "postgres".into(),
            host: credentials.host.clone(),
            port: credentials.port,
            username: credentials.username.clone(),
            password: credentials.password.clone(),
            dbname: credentials.dbname.clone(),
            drill_id: drill_id.into(),
            target_id: target_id.into(),
            database_url,
        }
    }

    pub fn credentials(&self) -> DbCredentials {
        DbCredentials {
            host: self.host.clone(),
            port: self.port,
            username: self.username.clone(),
            password: self.password.clone(),
            dbname: self.dbname.clone(),
        }
    }
}

fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// 32 characters from the set RDS accepts in a master password (no `/`, `"`, `@` or space).
pub fn new_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_.~+=";
    // ThreadRng is a CSPRNG seeded from the operating system.
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_random_and_rds_safe() {
        let a = new_password();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_password());
        assert!(!a.contains(['/', '"', '@', ' ']));
    }

    #[test]
    fn database_url_is_encoded_and_debug_hides_the_password() {
        let creds = DbCredentials {
            host: "h".into(),
            port: 5432,
            username: "app".into(),
            password: "p@ss:w/rd".into(),
            dbname: "auth".into(),
        };
        let secret = StagingSecret::new(&creds, "d1", "t1", true);
        assert_eq!(
            secret.database_url,
            "postgres://app:p%40ss%3Aw%2Frd@h:5432/auth?sslmode=verify-full"
        );
        assert!(!format!("{secret:?}").contains("p@ss"));
    }
}
