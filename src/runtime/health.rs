//! The HTTP endpoints of the process: `/healthz`, `/readyz` and `/metrics`.
//!
//! * `/healthz` (liveness) answers 200 while the process serves requests: the endpoints run
//!   on the same runtime as the controllers and the lease loop, so a wedged runtime stops
//!   answering and the kubelet restarts the container.
//! * `/readyz` (readiness) answers 200 when the process can do its job:
//!   - without leader election, once the reflector caches are filled;
//!   - with leader election, as the leader once its caches are filled, and as a standby while
//!     it reaches the Lease (it renews nothing, but it could take over). A healthy standby is
//!     ready on purpose: a rolling update waits for the new pod to be ready before stopping
//!     the old one, and the new pod cannot become the leader before the old one stops.
//!   - while shutting down, never.
//! * `/metrics`: see [`super::metrics`].

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tracing::{error, info};

use super::metrics::{CONTENT_TYPE, Metrics};

#[derive(thiserror::Error, Debug)]
pub enum ServeError {
    #[error("cannot listen on {addr} for the metrics and health endpoints: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

const STARTING: u8 = 0;
const STANDBY: u8 = 1;
const LEADER: u8 = 2;
const STOPPING: u8 = 3;

/// What `/readyz` reports, updated by the lease loop and the controllers.
#[derive(Clone, Debug)]
pub struct Health {
    inner: Arc<HealthInner>,
}

#[derive(Debug)]
struct HealthInner {
    leader_election: bool,
    role: AtomicU8,
    caches_synced: AtomicBool,
    lease_seen: Mutex<Option<Instant>>,
    lease_stale_after: Duration,
}

impl Health {
    /// `lease_stale_after`: how long a standby stays ready after it last reached the Lease.
    pub fn new(leader_election: bool, lease_stale_after: Duration) -> Self {
        Self {
            inner: Arc::new(HealthInner {
                leader_election,
                role: AtomicU8::new(if leader_election { STARTING } else { LEADER }),
                caches_synced: AtomicBool::new(false),
                lease_seen: Mutex::new(None),
                lease_stale_after,
            }),
        }
    }

    pub fn set_caches_synced(&self, synced: bool) {
        self.inner.caches_synced.store(synced, Ordering::SeqCst);
    }

    /// Whether every watch has listed once, so the caches hold the whole cluster.
    pub fn caches_synced(&self) -> bool {
        self.inner.caches_synced.load(Ordering::SeqCst)
    }

    pub fn set_standby(&self) {
        self.inner.role.store(STANDBY, Ordering::SeqCst);
    }

    pub fn set_leader(&self) {
        self.inner.role.store(LEADER, Ordering::SeqCst);
    }

    pub fn set_stopping(&self) {
        self.inner.role.store(STOPPING, Ordering::SeqCst);
    }

    /// The Lease was read or written just now.
    pub fn lease_reached(&self) {
        *self
            .inner
            .lease_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// Whether the process is ready, and why (or why not).
    pub fn readiness(&self) -> (bool, &'static str) {
        let inner = &self.inner;
        let synced = inner.caches_synced.load(Ordering::SeqCst);
        match inner.role.load(Ordering::SeqCst) {
            STOPPING => (false, "shutting down"),
            LEADER if synced => (true, "ok"),
            LEADER if inner.leader_election => (false, "leader; caches not synced yet"),
            LEADER => (false, "caches not synced yet"),
            STANDBY => {
                let seen = *inner
                    .lease_seen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if seen.is_some_and(|t| t.elapsed() <= inner.lease_stale_after) {
                    (true, "ok (standby)")
                } else {
                    (false, "standby; cannot reach the leader election Lease")
                }
            }
            _ => (false, "starting"),
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Health,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (ready, why) = state.health.readiness();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{why}\n")).into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(error) => {
            error!(%error, "cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Binds `addr`, logs the address actually bound (`metrics server listening addr=...`, which
/// tells the port when `addr` asks for any), and serves the endpoints in a background task.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
) -> Result<SocketAddr, ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { metrics, health });
    info!(addr = %bound, "metrics server listening");
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            error!(%error, "metrics server stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_without_leader_election_follows_the_caches() {
        let health = Health::new(false, Duration::from_secs(30));
        assert!(!health.readiness().0);
        health.set_caches_synced(true);
        assert!(health.readiness().0);
        health.set_stopping();
        assert!(!health.readiness().0);
    }

    #[test]
    fn a_reachable_standby_is_ready_and_a_leader_once_synced() {
        let health = Health::new(true, Duration::from_secs(30));
        assert_eq!(health.readiness(), (false, "starting"));
        health.set_standby();
        assert!(!health.readiness().0, "never reached the Lease");
        health.lease_reached();
        assert_eq!(health.readiness(), (true, "ok (standby)"));
        health.set_leader();
        assert!(!health.readiness().0);
        health.set_caches_synced(true);
        assert!(health.readiness().0);
    }

    #[test]
    fn a_standby_that_lost_the_api_is_not_ready() {
        let health = Health::new(true, Duration::ZERO);
        health.set_standby();
        health.lease_reached();
        std::thread::sleep(Duration::from_millis(5));
        assert!(!health.readiness().0);
    }
}
