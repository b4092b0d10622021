//! The running invocation's deadline (the Lambda runtime's `Lambda-Runtime-Deadline-Ms`), for a
//! step that waits on work the database goes on with without it (an index build): it stops
//! waiting in time to answer, and the state machine calls it again.

use std::future::Future;
use std::time::{Duration, SystemTime};

tokio::task_local! {
    static DEADLINE: Option<SystemTime>;
}

/// What a waiting step keeps for itself to answer before the deadline: a minute, or half of what
/// is left when that is less than two.
const ANSWER_MARGIN: Duration = Duration::from_secs(60);

/// Runs `work` as an invocation that must answer by `deadline` (None: no limit, as in a tool or
/// a test that runs a step in process).
pub async fn with_deadline<F: Future>(deadline: Option<SystemTime>, work: F) -> F::Output {
    DEADLINE.scope(deadline, work).await
}

/// When the running invocation must stop waiting so as to answer in time; None without a
/// deadline.
pub fn stop_waiting_at() -> Option<tokio::time::Instant> {
    let deadline = DEADLINE.try_with(|d| *d).ok().flatten()?;
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let margin = ANSWER_MARGIN.min(left / 2);
    Some(tokio::time::Instant::now() + (left - margin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_step_stops_waiting_a_minute_before_its_deadline_or_halfway_when_less_is_left() {
        assert_eq!(stop_waiting_at(), None);
        assert_eq!(with_deadline(None, async { stop_waiting_at() }).await, None);
        let now = tokio::time::Instant::now();
        let at = with_deadline(Some(SystemTime::now() + Duration::from_secs(900)), async {
            stop_waiting_at()
        })
        .await
        .expect("a deadline");
        let waits = at - now;
        assert!(
            waits > Duration::from_secs(838) && waits < Duration::from_secs(841),
            "{waits:?}"
        );
        let at = with_deadline(Some(SystemTime::now() + Duration::from_secs(40)), async {
            stop_waiting_at()
        })
        .await
        .expect("a deadline");
        let waits = at - now;
        assert!(
            waits > Duration::from_secs(18) && waits < Duration::from_secs(21),
            "{waits:?}"
        );
        // A deadline passed already: stop at once.
        let at = with_deadline(Some(SystemTime::UNIX_EPOCH), async { stop_waiting_at() })
            .await
            .expect("a deadline");
        assert!(at <= tokio::time::Instant::now());
    }
}
