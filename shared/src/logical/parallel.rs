//! Runs a queue of jobs on a set of database connections, one job per connection at a time: the
//! backup's segments, the restore's loads, checks and index builds.

use super::LogicalError;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use tokio_postgres::Client;

/// Runs every job on the first free connection; returns the results in completion order per
/// connection. The first error cancels the work in flight on the other connections.
pub async fn on_connections<'c, J, R, F, Fut>(
    clients: &'c [Client],
    jobs: impl IntoIterator<Item = J>,
    work: F,
) -> Result<Vec<R>, LogicalError>
where
    F: Fn(&'c Client, J) -> Fut,
    Fut: Future<Output = Result<R, LogicalError>>,
{
    let queue = Mutex::new(jobs.into_iter().collect::<VecDeque<J>>());
    let (queue, work) = (&queue, &work);
    let per_connection =
        futures_util::future::try_join_all(clients.iter().map(|client| async move {
            let mut done = Vec::new();
            loop {
                let next = queue
                    .lock()
                    .expect("the queue lock is never poisoned")
                    .pop_front();
                let Some(job) = next else {
                    return Ok::<_, LogicalError>(done);
                };
                done.push(work(client, job).await?);
            }
        }))
        .await?;
    Ok(per_connection.into_iter().flatten().collect())
}
