//! The staging queue flush's outcome. dead-letter-replay's `flush` answers it; the quarterly
//! drill hands it (through the state machine) to drill-validator's parity check, which reads from
//! it what the staging queue must hold afterwards. One type, so the two cannot drift apart.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlushStatus {
    /// The queue was purged.
    Purged,
    /// A purge within the last 60 seconds is still running: the queue is being emptied, so a
    /// retry is safe.
    PurgeInProgress,
    /// The Redis queue keys were removed.
    Flushed,
    /// `preserve_queue`: nothing was removed, the stale deliveries will be replayed.
    Preserved,
    /// No staging queue is configured (the state machine's `FlushSkipped`).
    Skipped,
}

/// What the staging queue must hold once the flush is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExpectedQueue {
    Empty,
    Preserved,
    /// There is no staging queue to look at.
    None,
}

impl FlushStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Purged => "purged",
            Self::PurgeInProgress => "purge-in-progress",
            Self::Flushed => "flushed",
            Self::Preserved => "preserved",
            Self::Skipped => "skipped",
        }
    }

    pub fn expected_queue(self) -> ExpectedQueue {
        match self {
            Self::Purged | Self::PurgeInProgress | Self::Flushed => ExpectedQueue::Empty,
            Self::Preserved => ExpectedQueue::Preserved,
            Self::Skipped => ExpectedQueue::None,
        }
    }
}

impl ExpectedQueue {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Preserved => "preserved",
            Self::None => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_and_write_as_the_state_machine_carries_them() {
        for status in [
            FlushStatus::Purged,
            FlushStatus::PurgeInProgress,
            FlushStatus::Flushed,
            FlushStatus::Preserved,
            FlushStatus::Skipped,
        ] {
            let text = serde_json::to_value(status).unwrap();
            assert_eq!(text, status.as_str());
            assert_eq!(serde_json::from_value::<FlushStatus>(text).unwrap(), status);
        }
        assert!(serde_json::from_str::<FlushStatus>("\"emptied\"").is_err());
    }
}
