//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics.
//!
//! * Every change of the Lease is a read followed by a create or an update (PUT) carrying the
//!   `resourceVersion` that was read: of two candidates writing at once, the API server accepts
//!   one and answers 409 Conflict to the other. No patch, no force: RBAC needs `get`, `create`
//!   and `update` on `leases`, nothing else.
//! * Expiry is judged on the local monotonic clock, never on the holder's timestamps: a
//!   candidate notes when it first saw the current record (holder, renewTime) and considers the
//!   lease free once that record has not changed for `leaseDurationSeconds`. Clock skew between
//!   nodes cannot shorten a lease.
//! * The leader renews every [`LeaseSettings::renew_interval`], retries every
//!   [`LeaseSettings::retry_period`] when a renewal fails, and gives up leadership once it has
//!   gone [`LeaseSettings::renew_deadline`] without a successful renewal — measured from when
//!   the last successful request was *sent*, and shorter than the lease duration, so it stops
//!   before any other candidate may consider the lease expired.
//! * A leader that stops cleanly releases the Lease (empty holder), so that a standby takes
//!   over at its next attempt instead of waiting for the lease to expire.
//! * Every wait and every age is measured on `tokio::time`, so the tests run the election on
//!   a paused clock against an in-memory [`LeaseStore`].

#[cfg(test)]
mod election_tests;
#[cfg(test)]
mod memory;
mod store;

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{Client, api::ObjectMeta};
use rand::Rng;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::store::is_conflict;
pub use self::store::{KubeLeases, LeaseStore};
use super::health::Health;

/// Name of the Lease.
pub const LEASE_NAME: &str = "azs-csp-operator";

/// Timing and identity of one candidate.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// Unique among the candidates: the pod name, or hostname and process ID.
    pub identity: String,
    /// How long a lease stays valid after its last renewal (written to the Lease).
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal; less than
    /// `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the leader renews.
    pub renew_interval: Duration,
    /// How often a standby tries to acquire, and the leader retries a failed renewal.
    pub retry_period: Duration,
}

impl LeaseSettings {
    /// 15 s lease, renewed every 5 s, given up after 10 s without renewal, 2 s retries.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            name: LEASE_NAME.to_string(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_interval: Duration::from_secs(5),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The identity of this process: `POD_NAME` when set, else `HOSTNAME_PID`.
pub fn default_identity() -> String {
    if let Some(pod) = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()) {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string());
    format!("{host}_{}", std::process::id())
}

/// Why the leader stopped leading.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum LeadershipLost {
    #[error("the Lease is now held by {holder}")]
    TakenBy { holder: String },
    #[error("no successful renewal of the Lease for {0:?} (renew deadline)")]
    RenewDeadline(Duration),
}

/// Outcome of one attempt.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// This candidate holds the lease (acquired or renewed).
    Held,
    /// Another candidate holds a lease that has not expired.
    HeldBy(String),
    /// Another candidate wrote the Lease between our read and our write.
    Conflict,
}

/// The record whose changes tell that its holder is alive.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    acquire_time: Option<MicroTime>,
    transitions: Option<i32>,
}

/// The spec this candidate writes to take or renew the lease at `now`.
fn claim(
    identity: &str,
    duration: Duration,
    previous: Option<&LeaseSpec>,
    now: Timestamp,
) -> LeaseSpec {
    let renewing = previous.and_then(holder_of) == Some(identity);
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(seconds(duration)),
        acquire_time: match previous.and_then(|p| p.acquire_time.clone()) {
            Some(acquired) if renewing => Some(acquired),
            _ => Some(MicroTime(now)),
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if renewing || previous.is_none() {
            transitions
        } else {
            transitions.saturating_add(1)
        }),
        ..previous.cloned().unwrap_or_default()
    }
}

struct Observed {
    record: Record,
    duration: Duration,
    since: Instant,
}

/// One candidate in the election, on the Leases of `S` (the API server unless a test says
/// otherwise).
pub struct LeaderElector<S = KubeLeases> {
    leases: S,
    settings: LeaseSettings,
    health: Health,
    observed: Option<Observed>,
    last_holder_logged: Option<String>,
    /// When the request of the last successful acquisition or renewal was sent.
    held_since: Option<Instant>,
}

fn holder_of(spec: &LeaseSpec) -> Option<&str> {
    spec.holder_identity.as_deref().filter(|h| !h.is_empty())
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs().max(1)).unwrap_or(i32::MAX)
}

impl LeaderElector {
    pub fn new(client: Client, settings: LeaseSettings, health: Health) -> Self {
        let leases = KubeLeases::new(client, &settings.namespace);
        Self::with_store(leases, settings, health)
    }
}

impl<S: LeaseStore> LeaderElector<S> {
    /// A candidate reading and writing its Lease through `leases`.
    pub fn with_store(leases: S, settings: LeaseSettings, health: Health) -> Self {
        Self {
            leases,
            settings,
            health,
            observed: None,
            last_holder_logged: None,
            held_since: None,
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// Notes the record read; returns since when it has been seen unchanged, and the lease
    /// duration it announces.
    fn observe(&mut self, spec: &LeaseSpec) -> (Instant, Duration) {
        let record = Record {
            holder: holder_of(spec).map(str::to_string),
            renew_time: spec.renew_time.clone(),
            acquire_time: spec.acquire_time.clone(),
            transitions: spec.lease_transitions,
        };
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.settings.lease_duration, Duration::from_secs);
        match &self.observed {
            Some(observed) if observed.record == record => (observed.since, observed.duration),
            _ => {
                let since = Instant::now();
                self.observed = Some(Observed {
                    record,
                    duration,
                    since,
                });
                (since, duration)
            }
        }
    }

    /// One read and, when the lease is ours or free, one write.
    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let me = self.settings.identity.clone();
        let sent = Instant::now();
        let now = Timestamp::now();
        let Some(lease) = self.leases.get(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(claim(&me, self.settings.lease_duration, None, now)),
            };
            return match self.leases.create(&lease).await {
                Ok(created) => {
                    if let Some(spec) = &created.spec {
                        self.observe(spec);
                    }
                    self.held_since = Some(sent);
                    Ok(Attempt::Held)
                }
                Err(error) if is_conflict(&error) => Ok(Attempt::Conflict),
                Err(error) => Err(error),
            };
        };
        self.health.lease_reached();
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = holder_of(&spec).map(str::to_string);
        let (since, duration) = self.observe(&spec);
        if let Some(holder) = holder
            && holder != me
            && since.elapsed() < duration
        {
            return Ok(Attempt::HeldBy(holder));
        }
        let updated = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(claim(&me, self.settings.lease_duration, Some(&spec), now)),
        };
        match self.leases.replace(&self.settings.name, &updated).await {
            Ok(written) => {
                if let Some(spec) = &written.spec {
                    self.observe(spec);
                }
                self.held_since = Some(sent);
                Ok(Attempt::Held)
            }
            Err(error) if is_conflict(&error) => Ok(Attempt::Conflict),
            Err(error) => Err(error),
        }
    }

    /// Tries until this candidate holds the lease. Never gives up: a standby waits for as long
    /// as another leads, and retries through API errors.
    pub async fn acquire(&mut self) {
        self.health.set_standby();
        info!(
            lease = %self.settings.name,
            namespace = %self.settings.namespace,
            identity = %self.settings.identity,
            "waiting to become the leader"
        );
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Held) => {
                    self.health.lease_reached();
                    info!(
                        lease = %self.settings.name,
                        namespace = %self.settings.namespace,
                        identity = %self.settings.identity,
                        "became the leader"
                    );
                    return;
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if self.last_holder_logged.as_deref() != Some(holder.as_str()) {
                        info!(%holder, identity = %self.settings.identity, "standby: another replica leads");
                        self.last_holder_logged = Some(holder);
                    }
                }
                Ok(Attempt::Conflict) => {
                    debug!("another candidate wrote the Lease first");
                }
                Err(error) => {
                    warn!(%error, lease = %self.settings.name, namespace = %self.settings.namespace, "cannot read or write the leader election Lease");
                }
            }
            tokio::time::sleep(jittered(self.settings.retry_period)).await;
        }
    }

    /// Keeps the lease renewed; returns as soon as leadership is lost. The caller must stop
    /// every write at once when it returns.
    pub async fn hold(&mut self) -> LeadershipLost {
        let deadline_after = self.settings.renew_deadline;
        // Counted from when the acquiring request was sent, conservatively.
        let mut last_renewal = self.held_since.unwrap_or_else(Instant::now);
        let mut wait = self.settings.renew_interval;
        loop {
            let deadline = last_renewal + deadline_after;
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return LeadershipLost::RenewDeadline(deadline_after),
                _ = tokio::time::sleep(wait) => {}
            }
            let sent = Instant::now();
            let attempt = tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await;
            match attempt {
                Err(_) => return LeadershipLost::RenewDeadline(deadline_after),
                Ok(Ok(Attempt::Held)) => {
                    self.health.lease_reached();
                    last_renewal = self.held_since.unwrap_or(sent);
                    wait = self.settings.renew_interval;
                    debug!(identity = %self.settings.identity, "lease renewed");
                }
                Ok(Ok(Attempt::HeldBy(holder))) => return LeadershipLost::TakenBy { holder },
                Ok(Ok(Attempt::Conflict)) => {
                    // Someone wrote the Lease since our read; read it again soon.
                    wait = self.settings.retry_period / 4;
                }
                Ok(Err(error)) => {
                    warn!(%error, "cannot renew the leader election Lease; retrying");
                    wait = self.settings.retry_period;
                }
            }
        }
    }

    /// Gives the lease up if this candidate holds it, so that a standby takes over at once.
    /// Returns whether it was released.
    pub async fn release(&mut self) -> Result<bool, kube::Error> {
        let Some(lease) = self.leases.get(&self.settings.name).await? else {
            return Ok(false);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if holder_of(&spec) != Some(self.settings.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(Timestamp::now());
        // As client-go does: no holder, and a lease that would expire in a second anyway.
        let released = Lease {
            metadata: lease.metadata.clone(),
            spec: Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..spec
            }),
        };
        self.leases.replace(&self.settings.name, &released).await?;
        Ok(true)
    }
}

/// `period` plus up to 20 % (client-go's jitter factor), so candidates do not move in step.
fn jittered(period: Duration) -> Duration {
    period + period.mul_f64(0.2 * rand::rng().random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_never_empty() {
        assert!(!default_identity().is_empty());
    }

    fn spec(holder: Option<&str>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            renew_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn claims_count_transitions_and_keep_the_acquire_time_when_renewing() {
        let now = Timestamp::now();
        let duration = Duration::from_secs(15);
        let created = claim("a", duration, None, now);
        assert_eq!(created.holder_identity.as_deref(), Some("a"));
        assert_eq!(created.lease_transitions, Some(0));
        assert_eq!(created.lease_duration_seconds, Some(15));

        let renewed = claim("a", duration, Some(&spec(Some("a"), 3)), now);
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, Some(MicroTime(Timestamp::UNIX_EPOCH)));
        assert_eq!(renewed.renew_time, Some(MicroTime(now)));

        let taken = claim("b", duration, Some(&spec(Some("a"), 3)), now);
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(now)));

        let after_release = claim("b", duration, Some(&spec(None, 4)), now);
        assert_eq!(after_release.lease_transitions, Some(5));
        let after_empty = claim("b", duration, Some(&spec(Some(""), 4)), now);
        assert_eq!(after_empty.lease_transitions, Some(5));
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(2));
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_millis(2400));
        }
    }
}
