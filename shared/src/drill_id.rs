//! The id of a drill, shared by pitr-restore (it becomes part of the staging instance's
//! identifier) and drill-validator (it names the drill's records in the bucket).
//!
//! The drill state machines default it to the execution name. An execution started by EventBridge
//! Scheduler is named with a 36-character UUID, and a name given by hand may hold capitals or
//! `_`, so a name that is not already a valid id is mapped to one: a readable prefix of the name
//! plus a hash of all of it. The mapping is deterministic, so every step of one execution derives
//! the same id from the same name.

use crate::input::InputError;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

/// The longest id: `catalyst-dr-staging-` (20) plus this stays within RDS's 63-character limit,
/// with room for the `-NNN` suffixes of cluster members.
pub const MAX_LEN: usize = 32;
/// Hex digits of the hash in a derived id (48 bits: collisions need ~16 million drills).
const HASH_DIGITS: usize = 12;
/// Step Functions execution names are at most 80 characters; longer input is a mistake.
const MAX_NAME_LEN: usize = 80;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DrillId(String);

impl DrillId {
    /// The id for `name`: `name` itself when it is already a valid id, else a derived one.
    pub fn from_name(name: &str) -> Result<Self, InputError> {
        if name.is_empty() {
            return Err(InputError::new("drill_id", "must not be empty"));
        }
        if name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(InputError::new(
                "drill_id",
                format!("{name:?} must be at most {MAX_NAME_LEN} printable characters"),
            ));
        }
        if is_valid(name) {
            return Ok(Self(name.to_owned()));
        }
        let hash = hex::encode(Sha256::digest(name.as_bytes()));
        let mut prefix = String::new();
        for c in name.chars().map(|c| c.to_ascii_lowercase()) {
            let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            };
            if c == '-' && (prefix.is_empty() || prefix.ends_with('-')) {
                continue;
            }
            prefix.push(c);
        }
        prefix.truncate(MAX_LEN - HASH_DIGITS - 1);
        let prefix = prefix.trim_end_matches('-');
        let id = if prefix.is_empty() {
            format!("d-{}", &hash[..HASH_DIGITS])
        } else {
            format!("{prefix}-{}", &hash[..HASH_DIGITS])
        };
        debug_assert!(is_valid(&id), "derived drill id {id:?}");
        Ok(Self(id))
    }

    /// `id` as given, refused unless it already is a valid id (callers inside the functions).
    pub fn exact(id: &str) -> Result<Self, InputError> {
        if is_valid(id) {
            Ok(Self(id.to_owned()))
        } else {
            Err(InputError::new(
                "drill_id",
                format!(
                    "{id:?} must be 1 to {MAX_LEN} lowercase letters, digits and single hyphens"
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// 1 to 32 lowercase letters, digits and single hyphens, starting and ending with a letter or
/// digit: usable in RDS identifiers and S3 keys as is.
fn is_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !id.starts_with('-')
        && !id.ends_with('-')
        && !id.contains("--")
}

impl std::ops::Deref for DrillId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DrillId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DrillId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::from_name(&name).map_err(|e| serde::de::Error::custom(e.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_id_is_kept() {
        for id in ["local-20261201-031500", "q3", "a-b-c", &"x".repeat(32)] {
            assert_eq!(DrillId::from_name(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn a_scheduler_uuid_name_becomes_a_short_deterministic_id() {
        let name = "3f9c2b1e-7d4a-4c8e-9b1f-0a2d3e4f5a6b";
        let id = DrillId::from_name(name).unwrap();
        assert!(id.len() <= MAX_LEN, "{id}");
        assert!(is_valid(&id), "{id}");
        assert!(id.starts_with("3f9c2b1e-7d4a-4c8"), "{id}");
        assert_eq!(id, DrillId::from_name(name).unwrap());
        let other = DrillId::from_name("3f9c2b1e-7d4a-4c8e-9b1f-0a2d3e4f5a6c").unwrap();
        assert_ne!(id, other, "names sharing a prefix get different ids");
    }

    #[test]
    fn names_with_capitals_or_underscores_are_mapped() {
        let id = DrillId::from_name("Quarterly_Drill__2026").unwrap();
        assert!(is_valid(&id) && id.starts_with("quarterly-drill-"), "{id}");
        let id = DrillId::from_name("___").unwrap();
        assert!(is_valid(&id) && id.starts_with("d-"), "{id}");
        assert!(is_valid(&DrillId::from_name(&"-".repeat(40)).unwrap()));
    }

    #[test]
    fn empty_or_overlong_names_are_refused_naming_the_field() {
        assert_eq!(DrillId::from_name("").unwrap_err().field, "drill_id");
        assert_eq!(
            DrillId::from_name(&"a".repeat(81)).unwrap_err().field,
            "drill_id"
        );
        assert_eq!(DrillId::exact("Not-Valid").unwrap_err().field, "drill_id");
    }

    #[test]
    fn decoding_derives_the_id() {
        let id: DrillId =
            serde_json::from_value(serde_json::json!("0b5c3a34-1f7e-4d0a-8f4e-6c1d2b3a4f5e"))
                .unwrap();
        assert!(id.len() <= MAX_LEN);
    }
}
