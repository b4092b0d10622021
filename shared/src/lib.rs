//! catalyst-dr: backup, point-in-time restore, dead-letter replay and restore-drill automation
//! for Catalyst Auth. All logic lives here; the Lambda edge is the `catalyst-dr-edge` crate and the
//! binaries under `functions/` only wire the two.
//!
//! The modules come in layers, each importing only from its own layer or the ones below (checked
//! by the `layers` test):
//! - **core**: ids parsed once (`run_id`, `drill_id`), input decoding, error kinds, settings and
//!   configuration, tags, metrics, statuses (`flush_status`);
//! - **adapters**: one per outside system, behind a small trait where a feature swaps it
//!   (`object_store`, `queues`, `postgres`, `rds`, `restore_engine`, `staging_secret`,
//!   `catalyst_db`, and `local_pg`, the local engine, compiled only with the `local-engine`
//!   feature); `object_store`, `queues` and `snapshot` keep in-memory implementations for unit
//!   tests (the `memory` feature);
//! - **features**: `snapshot`, `logical`, `dr_copy`, `pitr`, `replay`, `drill`, which never import each
//!   other;
//! - **compositions**: `snapshot_trigger`, the one function that serves two features.

pub mod aws_clients;
pub mod aws_error;
pub mod aws_time;
#[cfg(any(feature = "pitr-restore", feature = "drill-validator"))]
pub mod cache_engine;
#[cfg(any(
    feature = "pitr-restore",
    feature = "dead-letter-replay",
    feature = "drill-validator"
))]
pub mod cache_state;
pub mod catalyst_db;
pub mod config;
pub mod connection_jobs;
#[cfg(feature = "snapshot-trigger")]
pub mod dr_copy;
#[cfg(feature = "drill-validator")]
pub mod drill;
pub mod drill_id;
#[cfg(any(
    feature = "snapshot-trigger",
    feature = "pitr-restore",
    feature = "drill-validator"
))]
pub mod elasticache;
pub mod error_chain;
pub mod error_kind;
pub mod flush_status;
pub mod input;
pub mod invocation;
#[cfg(test)]
mod layers;
#[cfg(feature = "local-engine")]
pub mod local_pg;
#[cfg(feature = "snapshot-trigger")]
pub mod logical;
pub mod memory;
pub mod metrics;
pub mod object_store;
pub mod output;
#[cfg(feature = "pitr-restore")]
pub mod pitr;
pub mod postgres;
#[cfg(any(feature = "dead-letter-replay", feature = "drill-validator"))]
pub mod queues;
#[cfg(any(feature = "snapshot-trigger", feature = "pitr-restore"))]
pub mod rds;
#[cfg(feature = "dead-letter-replay")]
pub mod replay;
pub mod restore_engine;
pub mod run_id;
pub mod settings;
#[cfg(feature = "snapshot-trigger")]
pub mod snapshot;
#[cfg(feature = "snapshot-trigger")]
pub mod snapshot_trigger;
#[cfg(any(
    feature = "snapshot-trigger",
    feature = "pitr-restore",
    feature = "drill-validator"
))]
pub mod staging_secret;
pub mod tags;
pub mod telemetry;
pub mod tls;
pub mod work_path;
