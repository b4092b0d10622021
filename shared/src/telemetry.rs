//! Logging: JSON lines through `tracing`, level from `RUST_LOG` (default `info`).

use crate::config::{Env, ProcessEnv};
use crate::settings;
use tracing_subscriber::EnvFilter;

/// The log filter from `RUST_LOG`; one that does not parse falls back to the default.
pub fn filter(env: &Env) -> EnvFilter {
    let default = const { settings::RUST_LOG.default_text() };
    env.text(&settings::RUST_LOG)
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(default))
}

pub fn init() {
    let filter = filter(&Env(&ProcessEnv));
    // Lambda adds its own timestamp to each line; a second one is noise.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .flatten_event(true)
        .without_time()
        .with_target(false)
        .try_init();
}
