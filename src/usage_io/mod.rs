//! The usage pipeline's outside world (DESIGN.md §9): the stamp's usage and subscription
//! admin APIs (the source) and the metering system's CloudEvents endpoint (the sink), each
//! behind a circuit breaker of its own (`usage-source`, `usage-sink`). Bytes in, bytes out:
//! what the answers mean is `usage`'s to decide, and the controller streams pages from one
//! into the other.

pub mod sink;
pub mod source;

pub use sink::{SINK_UPSTREAM, SinkClient, SinkError, SinkSettings};
pub use source::{
    LocalSubscription, SOURCE_UPSTREAM, SourceClient, SourceEndpoint, SourceError, SourceSettings,
};

use std::{sync::Arc, time::Duration};

use crate::upstream::{Breaker, BreakerSettings, breaker::Change};

/// Feeds one request's outcome to `breaker`; when it opens, `probe` is sent (spaced by the
/// breaker's backoff) until the upstream answers again.
fn record_outcome<E, F, Fut>(breaker: &Arc<Breaker>, outcome: Result<(), &E>, probe: F)
where
    E: std::fmt::Display + ?Sized,
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    match outcome {
        Ok(()) => {
            breaker.succeeded();
        }
        Err(error) => {
            if breaker.failed(&error) == Change::Opened {
                let breaker = breaker.clone();
                tokio::spawn(async move {
                    if breaker.probe_until_closed(probe).await {
                        tracing::info!(upstream = breaker.upstream(), "answers again");
                    }
                });
            }
        }
    }
}

/// Breaker settings of both clients: a window is retried at the next interval anyway, so the
/// breaker only keeps an outage from costing a request per Registration.
pub fn breaker_settings() -> BreakerSettings {
    BreakerSettings {
        failure_threshold: 3,
        first_probe: Duration::from_secs(1),
        max_probe_interval: Duration::from_secs(30),
    }
}
