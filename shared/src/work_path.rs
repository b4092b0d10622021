//! Whether a step's work runs in one invocation or fans out over a Step Functions Map.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkPath {
    /// One invocation does it all, within its 15 minutes.
    Single,
    /// A plan step, a Map of batches, and a step that adds them up.
    FanOut,
}

impl WorkPath {
    /// The fan-out above `threshold_bytes`.
    pub fn by_size(bytes: u64, threshold_bytes: u64) -> Self {
        if bytes > threshold_bytes {
            Self::FanOut
        } else {
            Self::Single
        }
    }
}
