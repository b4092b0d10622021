//! The baseline: the source as it stood at one exact instant, before the drill restores it.
//!
//! A source up to `BASELINE_FANOUT_THRESHOLD_GIB` is fingerprinted by the invocation that takes
//! the instant, in the snapshot it holds. A larger one would outlast that invocation, so the
//! snapshot is exported by a session that keeps it open past it
//! ([`parity::HeldSnapshot`]): `baseline` plans the source's block ranges in that snapshot,
//! a Map of `baseline-batch` invocations imports it and fingerprints the ranges, and
//! `baseline-close` adds the batches up into the baseline and ends the holder
//! (`baseline-release` ends it on the failure path).

use super::{Baseline, DrillError, DrillValidator, ParityBatch, ParityPlan, Side};
use crate::catalyst_db::introspect;
use crate::catalyst_db::parity::{self, BaselineInstant, HeldSnapshot};
use crate::input::format_time;
use crate::work_path::WorkPath;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;

/// A fanned-out baseline between `baseline` and `baseline-close`: the instant, the snapshot
/// held for the batches, and what was read beside it (queue depths, the cache snapshot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenBaseline {
    pub drill_id: String,
    #[serde(flatten)]
    pub instant: BaselineInstant,
    pub held: HeldSnapshot,
    pub database_bytes: u64,
    pub queues: std::collections::BTreeMap<String, crate::queues::QueueDepth>,
    pub cache: Option<super::CacheBaseline>,
    pub opened_at: String,
}

/// What `baseline` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BaselineAnswer {
    /// Taken whole (or closed already).
    Taken(Baseline),
    /// Opened for the fan-out: the Map's items are `batches`.
    Opened(OpenedBaseline),
}

/// The fan-out's opening: the instant (what the restore goes to), the cache snapshot (the same
/// fields as a whole baseline's), and the batches `baseline-batch` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenedBaseline {
    pub drill_id: String,
    #[serde(flatten)]
    pub instant: BaselineInstant,
    pub cache: Option<super::CacheBaseline>,
    pub path: WorkPath,
    pub batches: Vec<usize>,
    /// When the snapshot's holder stops of itself: every batch must have read by then.
    pub held_until: String,
}

/// What `baseline-release` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub drill_id: String,
    /// Whether a holder was still running and was ended.
    pub released: bool,
}

/// An 8-hex-digit tag of the drill's id, naming its snapshot's holder (a drill id may be
/// longer than an `application_name` leaves room for).
pub fn holder_tag(drill_id: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(drill_id.as_bytes())[..4])
}

impl DrillValidator {
    /// `baseline`: once per drill; a retry answers what the first attempt stored. The path is
    /// `path` when given, else by the source's size.
    pub async fn baseline(
        &self,
        drill_id: &str,
        path: Option<WorkPath>,
    ) -> Result<BaselineAnswer, DrillError> {
        let key = self.key(drill_id, "baseline.json");
        if let Some(existing) = self.load::<Baseline>(&key).await? {
            return Ok(BaselineAnswer::Taken(existing));
        }
        if let Some(open) = self.load::<OpenBaseline>(&self.open_key(drill_id)).await? {
            return Ok(BaselineAnswer::Opened(self.opened(&open).await?));
        }
        let locker = self.source.connect().await?;
        let database_bytes = introspect::database_bytes(&locker).await?;
        let path = path.unwrap_or_else(|| {
            WorkPath::by_size(database_bytes, self.config.baseline_fanout_threshold_bytes)
        });
        if path == WorkPath::FanOut {
            let open = self
                .open_baseline(drill_id, &locker, database_bytes)
                .await?;
            return Ok(BaselineAnswer::Opened(self.opened(&open).await?));
        }
        let snapshot = self.source.connect().await?;
        let instant = parity::open_baseline(&locker, &snapshot, self.lock_timeout()).await?;
        let mut helpers = Vec::new();
        for _ in 1..self.config.parity_parallelism {
            helpers.push(self.source.connect().await?);
        }
        let parity::Fingerprints {
            tables,
            deliveries_by_status,
        } = parity::fingerprint_parallel(
            &snapshot,
            &helpers,
            instant.instant,
            parity::RANGE_BLOCKS,
        )
        .await?;
        snapshot
            .batch_execute("COMMIT")
            .await
            .map_err(crate::catalyst_db::CatalystDbError::from)?;
        let baseline = Baseline {
            drill_id: drill_id.to_owned(),
            instant,
            tables,
            deliveries_by_status,
            queues: self.queue_depths().await?,
            cache: self.cache_baseline(drill_id).await?,
            captured_at: format_time(OffsetDateTime::now_utc()),
            path: WorkPath::Single,
        };
        self.store(&key, &baseline).await?;
        tracing::info!(%drill_id, instant = %format_time(baseline.instant.instant), "baseline captured");
        Ok(BaselineAnswer::Taken(baseline))
    }

    fn open_key(&self, drill_id: &str) -> String {
        self.key(drill_id, "baseline-open.json")
    }

    fn lock_timeout(&self) -> Duration {
        Duration::from_millis(self.config.lock_timeout_ms.into())
    }

    /// Takes the instant with a held snapshot, plans the source's block ranges in it, and
    /// stores the plan, then the opening (a retry finds the opening and goes no further).
    async fn open_baseline(
        &self,
        drill_id: &str,
        locker: &tokio_postgres::Client,
        database_bytes: u64,
    ) -> Result<OpenBaseline, DrillError> {
        let tag = holder_tag(drill_id);
        // An attempt that stopped before storing its opening may have left a holder.
        parity::release_snapshot(locker, &tag).await?;
        let (instant, held) = parity::open_held_baseline(
            locker,
            self.source.connect().await?,
            &tag,
            self.config.baseline_hold,
            self.lock_timeout(),
        )
        .await?;
        let planner = self.source.connect().await?;
        parity::import_snapshot(&planner, &held.snapshot).await?;
        let ranges = parity::plan_ranges(&planner, self.config.parity_range_blocks).await?;
        planner
            .batch_execute("COMMIT")
            .await
            .map_err(crate::catalyst_db::CatalystDbError::from)?;
        let plan = ParityPlan::new(drill_id, ranges, self.config.parity_batch_ranges);
        self.store(&self.side_key(Side::Source, drill_id, "plan"), &plan)
            .await?;
        let open = OpenBaseline {
            drill_id: drill_id.to_owned(),
            instant,
            held,
            database_bytes,
            queues: self.queue_depths().await?,
            cache: self.cache_baseline(drill_id).await?,
            opened_at: format_time(OffsetDateTime::now_utc()),
        };
        self.store(&self.open_key(drill_id), &open).await?;
        tracing::info!(%drill_id, instant = %format_time(open.instant.instant), batches = plan.batches.len(), "baseline opened for the fan-out");
        Ok(open)
    }

    async fn opened(&self, open: &OpenBaseline) -> Result<OpenedBaseline, DrillError> {
        let plan = self.plan(Side::Source, &open.drill_id).await?;
        Ok(OpenedBaseline {
            drill_id: open.drill_id.clone(),
            instant: open.instant.clone(),
            cache: open.cache.clone(),
            path: WorkPath::FanOut,
            batches: (0..plan.batches.len()).collect(),
            held_until: format_time(open.held.held_until),
        })
    }

    /// `baseline-batch`: one batch of the source's ranges, read on `PARITY_PARALLELISM`
    /// connections that each import the held snapshot, and stored; a retry answers the stored
    /// batch. `BaselineSnapshotGone` once the holder has ended.
    pub async fn baseline_batch(
        &self,
        drill_id: &str,
        batch: usize,
    ) -> Result<ParityBatch, DrillError> {
        let open = self.stored_open(drill_id).await?;
        self.read_batch(Side::Source, drill_id, batch, async || {
            let mut clients = Vec::new();
            for _ in 0..self.config.parity_parallelism {
                let client = self.source.connect().await?;
                if let Err(e) = parity::import_snapshot(&client, &open.held.snapshot).await {
                    return Err(match &e {
                        crate::catalyst_db::CatalystDbError::Postgres(p)
                            if p.code() == Some(&SqlState::INVALID_PARAMETER_VALUE) =>
                        {
                            DrillError::BaselineSnapshotGone {
                                drill_id: drill_id.to_owned(),
                                snapshot: open.held.snapshot.clone(),
                                held_until: format_time(open.held.held_until),
                            }
                        }
                        _ => e.into(),
                    });
                }
                clients.push(client);
            }
            Ok((clients, open.instant.instant))
        })
        .await
    }

    /// `baseline-close`: every batch added up into the baseline, stored, and the holder ended;
    /// a retry answers the stored baseline.
    pub async fn baseline_close(&self, drill_id: &str) -> Result<Baseline, DrillError> {
        let key = self.key(drill_id, "baseline.json");
        if let Some(existing) = self.load::<Baseline>(&key).await? {
            return Ok(existing);
        }
        let open = self.stored_open(drill_id).await?;
        let plan = self.plan(Side::Source, drill_id).await?;
        let parity::Fingerprints {
            tables,
            deliveries_by_status,
        } = parity::combine(&self.stored_parts(Side::Source, drill_id, &plan).await?);
        self.release_holder(drill_id).await?;
        let baseline = Baseline {
            drill_id: drill_id.to_owned(),
            instant: open.instant,
            tables,
            deliveries_by_status,
            queues: open.queues,
            cache: open.cache,
            captured_at: format_time(OffsetDateTime::now_utc()),
            path: WorkPath::FanOut,
        };
        self.store(&key, &baseline).await?;
        tracing::info!(%drill_id, batches = plan.batches.len(), "baseline closed");
        Ok(baseline)
    }

    /// `baseline-release`: ends the drill's snapshot holder if it still runs (the failure
    /// path; `baseline-close` does it too).
    pub async fn baseline_release(&self, drill_id: &str) -> Result<Released, DrillError> {
        Ok(Released {
            drill_id: drill_id.to_owned(),
            released: self.release_holder(drill_id).await?,
        })
    }

    async fn release_holder(&self, drill_id: &str) -> Result<bool, DrillError> {
        let client = self.source.connect().await?;
        let released = parity::release_snapshot(&client, &holder_tag(drill_id)).await?;
        if released {
            tracing::info!(%drill_id, "baseline snapshot released");
        }
        Ok(released)
    }

    async fn stored_open(&self, drill_id: &str) -> Result<OpenBaseline, DrillError> {
        self.load(&self.open_key(drill_id))
            .await?
            .ok_or_else(|| DrillError::NoBaseline {
                drill_id: drill_id.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::holder_tag;

    #[test]
    fn a_holder_tag_is_short_and_stable_per_drill() {
        let tag = holder_tag("quarterly-2026-q4");
        assert_eq!(tag.len(), 8);
        assert_eq!(tag, holder_tag("quarterly-2026-q4"));
        assert_ne!(tag, holder_tag("quarterly-2026-q3"));
    }
}
