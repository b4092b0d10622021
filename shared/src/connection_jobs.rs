//! Runs a queue of jobs on a set of database connections, one job per connection at a time: the
//! backup's segments, the restore's loads, checks and index builds, the drills' parity ranges.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio_postgres::Client;

/// How long, after the first error, the jobs in flight on the other connections may take to
/// finish before they are dropped.
const GRACE: Duration = Duration::from_secs(30);

/// Runs every job on the first free connection; returns the results in completion order per
/// connection. After the first error no connection takes another job, and the jobs in flight
/// finish (each cleans up after itself: a segment aborts its own upload) before the error is
/// returned, so the caller's cleanup never races a request still on its way. Only jobs still
/// running after [`GRACE`] are dropped.
pub async fn on_connections<'c, J, R, E, F, Fut>(
    clients: impl IntoIterator<Item = &'c Client>,
    jobs: impl IntoIterator<Item = J>,
    work: F,
) -> Result<Vec<R>, E>
where
    F: Fn(&'c Client, J) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<J>>());
    let first_error: Mutex<Option<E>> = Mutex::new(None);
    let failed = tokio::sync::Notify::new();
    let (queue, work, first_error, failed) = (&queue, &work, &first_error, &failed);
    let per_connection = clients.into_iter().map(|client| async move {
        let mut done = Vec::new();
        loop {
            let next = queue
                .lock()
                .expect("the queue lock is never poisoned")
                .pop_front();
            let Some(job) = next else {
                return done;
            };
            match work(client, job).await {
                Ok(result) => done.push(result),
                Err(e) => {
                    queue.lock().expect("never poisoned").clear();
                    first_error.lock().expect("never poisoned").get_or_insert(e);
                    failed.notify_one();
                    return done;
                }
            }
        }
    });
    let mut all = std::pin::pin!(futures_util::future::join_all(per_connection));
    let results = tokio::select! {
        results = &mut all => Some(results),
        // Once one job failed, the others get GRACE to finish what they are doing.
        () = failed.notified() => tokio::time::timeout(GRACE, &mut all).await.ok(),
    };
    if let Some(e) = first_error.lock().expect("never poisoned").take() {
        return Err(e);
    }
    Ok(results
        .expect("without an error, every connection ran out of jobs")
        .into_iter()
        .flatten()
        .collect())
}
