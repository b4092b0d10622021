//! Reading configuration from the environment at cold start. Every failure names the variable.

use crate::settings::{Fallback, Kind, Setting};
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

    /// A row's value, if set.
    pub fn text(&self, setting: &'static Setting) -> Option<String> {
        self.optional(setting.name)
    }

    /// A row with a text default: the value, else the default.
    pub fn text_or_default(&self, setting: &'static Setting) -> Result<String, ConfigError> {
        match setting.default {
            Fallback::Text(default) => Ok(self
                .optional(setting.name)
                .unwrap_or_else(|| default.to_owned())),
            _ => Err(table_mismatch(setting, "text with a default")),
        }
    }

    /// A row the function cannot start without.
    pub fn require(&self, setting: &'static Setting) -> Result<String, ConfigError> {
        self.required(setting.name)
    }

    /// A number row, in the row's range, defaulting to the row's default.
    pub fn number(&self, setting: &'static Setting) -> Result<u32, ConfigError> {
        match setting.default {
            Fallback::Number(default) => self.number_or(setting, default),
            _ => Err(table_mismatch(setting, "a number with a default")),
        }
    }

    /// A number row whose default is another variable's value (`Fallback::Variable`).
    pub fn number_or(&self, setting: &'static Setting, default: u32) -> Result<u32, ConfigError> {
        match setting.kind {
            Kind::Number { min, max } => self.bounded(setting.name, default, min..=max),
            _ => Err(table_mismatch(setting, "a bounded number")),
        }
    }

    /// An unbounded count row.
    pub fn count(&self, setting: &'static Setting) -> Result<u64, ConfigError> {
        match (setting.kind, setting.default) {
            (Kind::Count, Fallback::Number(default)) => {
                self.parsed(setting.name, u64::from(default))
            }
            _ => Err(table_mismatch(setting, "a count with a default")),
        }
    }

    /// A flag row.
    pub fn switch(&self, setting: &'static Setting) -> Result<bool, ConfigError> {
        match setting.default {
            Fallback::Flag(default) => self.flag(setting.name, default),
            _ => Err(table_mismatch(setting, "a flag with a default")),
        }
    }

    /// A list row: its items, trimmed, blanks dropped (none when unset).
    pub fn list(&self, setting: &'static Setting) -> Vec<String> {
        let separator = match setting.kind {
            Kind::List { separator } => separator,
            _ => ",",
        };
        let raw = self.optional(setting.name).unwrap_or_default();
        raw.split(separator)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// A key prefix row (with a default), ending in `/`.
    pub fn prefix(&self, setting: &'static Setting) -> Result<String, ConfigError> {
        let mut prefix = self.text_or_default(setting)?;
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(prefix)
    }

    /// Two rows of which at most one may be set.
    pub fn either(
        &self,
        a: &'static Setting,
        b: &'static Setting,
    ) -> Result<Option<(&'static str, String)>, ConfigError> {
        self.one_of(a.name, b.name)
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

/// An accessor used on a row of the wrong type: the table and the code reading it disagree.
fn table_mismatch(setting: &'static Setting, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        var: setting.name,
        reason: format!("read as {expected}, but the settings table says otherwise"),
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
