//! Reading configuration from the environment at cold start. Every failure names the variable.

use std::collections::HashMap;
use std::str::FromStr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("configuration variable {var} is required but not set")]
    Missing { var: &'static str },
    #[error("configuration variable {var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// Where configuration values come from: the process environment in Lambda, a map in tests.
pub trait EnvSource {
    fn get(&self, var: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn get(&self, var: &str) -> Option<String> {
        std::env::var(var).ok()
    }
}

impl EnvSource for HashMap<&str, &str> {
    fn get(&self, var: &str) -> Option<String> {
        HashMap::get(self, var).map(|v| (*v).to_owned())
    }
}

/// Typed access to an [`EnvSource`]; empty values count as unset.
pub struct Env<'a>(pub &'a dyn EnvSource);

impl Env<'_> {
    pub fn optional(&self, var: &'static str) -> Option<String> {
        self.0
            .get(var)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, var: &'static str) -> Result<String, ConfigError> {
        self.optional(var).ok_or(ConfigError::Missing { var })
    }

    pub fn parsed<T: FromStr>(&self, var: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.optional(var) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e: T::Err| ConfigError::Invalid {
                var,
                reason: format!("{raw:?}: {e}"),
            }),
        }
    }

    /// A number that must lie in `range`.
    pub fn bounded(
        &self,
        var: &'static str,
        default: u32,
        range: std::ops::RangeInclusive<u32>,
    ) -> Result<u32, ConfigError> {
        let value = self.parsed(var, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::Invalid {
                var,
                reason: format!("{value} is outside {}..={}", range.start(), range.end()),
            })
        }
    }

    pub fn flag(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(var).map(|v| v.to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if matches!(v.as_str(), "true" | "1" | "yes") => Ok(true),
            Some(v) if matches!(v.as_str(), "false" | "0" | "no") => Ok(false),
            Some(v) => Err(ConfigError::Invalid {
                var,
                reason: format!("{v:?} is not true or false"),
            }),
        }
    }

    /// At most one of two mutually exclusive variables.
    pub fn one_of(
        &self,
        a: &'static str,
        b: &'static str,
    ) -> Result<Option<(&'static str, String)>, ConfigError> {
        match (self.optional(a), self.optional(b)) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                var: b,
                reason: format!("set either {a} or {b}, not both"),
            }),
            (Some(v), None) => Ok(Some((a, v))),
            (None, Some(v)) => Ok(Some((b, v))),
            (None, None) => Ok(None),
        }
    }
}

/// Checks an RDS or ElastiCache identifier: 1 to 63 letters, digits or hyphens, starting with a
/// letter, no trailing hyphen and no two hyphens in a row (the rules both services share).
pub fn validate_identifier(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 63 {
        return Err(format!("{value:?} must be 1 to 63 characters"));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(format!("{value:?} must start with a letter"));
    }
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!(
            "{value:?} may contain only letters, digits and hyphens"
        ));
    }
    if value.ends_with('-') || value.contains("--") {
        return Err(format!(
            "{value:?} must not end with a hyphen or contain two in a row"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_variable_that_is_missing_or_invalid() {
        let env: HashMap<&str, &str> =
            HashMap::from([("N", "abc"), ("B", "maybe"), ("EMPTY", " ")]);
        let env = Env(&env);
        assert_eq!(
            env.required("EMPTY"),
            Err(ConfigError::Missing { var: "EMPTY" })
        );
        assert!(matches!(
            env.bounded("N", 1, 1..=5),
            Err(ConfigError::Invalid { var: "N", .. })
        ));
        assert!(matches!(
            env.flag("B", true),
            Err(ConfigError::Invalid { var: "B", .. })
        ));
        assert_eq!(env.bounded("UNSET", 3, 1..=5), Ok(3));
    }

    #[test]
    fn identifiers_follow_the_aws_rules() {
        assert!(validate_identifier("prod-db-1").is_ok());
        for bad in ["", "1db", "db--x", "db-", "db_x", &"a".repeat(64)] {
            assert!(validate_identifier(bad).is_err(), "{bad} accepted");
        }
    }
}
