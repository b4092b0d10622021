//! Logging: JSON lines through `tracing`, level from `RUST_LOG` (default `info`).

use crate::config::{Env, ProcessEnv};
use crate::settings;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The log filter from `RUST_LOG`: a default level and `target=level` directives, e.g.
/// `catalyst_dr=debug,info`; one that does not parse falls back to the default. Targets are
/// matched by prefix only (no span or field filters, whose regex engine would add to every
/// function's bootstrap).
pub fn filter(env: &Env) -> Targets {
    let default = const { settings::RUST_LOG.default_text() };
    env.text(&settings::RUST_LOG)
        .and_then(|directives| directives.parse().ok())
        .unwrap_or_else(|| default.parse().expect("the default log filter parses"))
}

pub fn init() {
    let filter = filter(&Env(&ProcessEnv));
    // Lambda adds its own timestamp to each line; a second one is noise.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .flatten_event(true)
        .without_time()
        .with_target(false)
        .finish()
        .with(filter)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tracing::Level;

    fn filter_of(value: Option<&str>) -> Targets {
        let vars: HashMap<&str, &str> = value.map(|v| ("RUST_LOG", v)).into_iter().collect();
        filter(&Env(&vars))
    }

    #[test]
    fn directives_set_levels_per_target_and_bad_ones_fall_back_to_info() {
        let f = filter_of(Some("catalyst_dr=debug,warn"));
        assert!(f.would_enable("catalyst_dr::logical", &Level::DEBUG));
        assert!(!f.would_enable("aws_smithy_runtime", &Level::INFO));
        assert!(f.would_enable("aws_smithy_runtime", &Level::WARN));
        for fallback in [None, Some("catalyst_dr=loud")] {
            let f = filter_of(fallback);
            assert!(f.would_enable("catalyst_dr", &Level::INFO), "{fallback:?}");
            assert!(
                !f.would_enable("catalyst_dr", &Level::DEBUG),
                "{fallback:?}"
            );
        }
    }
}
