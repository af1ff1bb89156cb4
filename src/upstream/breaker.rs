//! A circuit breaker for one upstream.
//!
//! Closed, requests go. After [`BreakerSettings::failure_threshold`] consecutive failures it
//! opens: requests fail fast ([`Breaker::admit`]) without reaching the upstream, and a single
//! driver ([`Breaker::probe_until_closed`]) sends one probe at a time, spaced by exponential
//! backoff with jitter. The first probe that succeeds closes it. Time is `tokio::time`, so
//! tests can pause it.

use std::{
    borrow::Cow,
    fmt,
    future::Future,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use rand::Rng;
use tokio::time::Instant;
use tracing::{info, warn};

/// Where a breaker stands; [`State::gauge`] is the value of `azs_csp_upstream_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Requests go to the upstream.
    Closed,
    /// The upstream is treated as down: requests fail fast until the next probe.
    Open,
    /// A probe is in flight; requests still fail fast.
    Probing,
}

impl State {
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::Probing => 2,
        }
    }
}

/// When a breaker opens and how it probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures after which the upstream is treated as down.
    pub failure_threshold: u32,
    /// Delay before the first probe, doubled after each failed probe...
    pub first_probe: Duration,
    /// ...up to this.
    pub max_probe_interval: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            first_probe: Duration::from_secs(1),
            max_probe_interval: Duration::from_secs(30),
        }
    }
}

/// Why [`Breaker::admit`] refused a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Down {
    pub upstream: String,
    /// The failure that opened the breaker: the same text for the whole outage, so that
    /// messages built from it do not change (and get rewritten) with every refused request.
    pub cause: String,
}

/// What an outcome did to the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    /// This failure opened the breaker: its caller starts [`Breaker::probe_until_closed`].
    Opened,
    /// A success ended a run of failures too short to open the breaker.
    Recovered,
}

enum Phase {
    Closed {
        failures: u32,
    },
    Open {
        probes_failed: u32,
        next_probe: Instant,
        cause: String,
    },
    Probing {
        probes_failed: u32,
        cause: String,
    },
}

/// The circuit breaker of one upstream, named by [`Breaker::upstream`] in logs and metrics.
pub struct Breaker {
    upstream: Cow<'static, str>,
    settings: BreakerSettings,
    phase: Mutex<Phase>,
    short_circuited: AtomicU64,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("upstream", &self.upstream)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Breaker {
    pub fn new(upstream: impl Into<Cow<'static, str>>, settings: BreakerSettings) -> Self {
        Self {
            upstream: upstream.into(),
            settings,
            phase: Mutex::new(Phase::Closed { failures: 0 }),
            short_circuited: AtomicU64::new(0),
        }
    }

    /// The `upstream` label of this breaker's metrics and log lines.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    pub fn state(&self) -> State {
        match &*self.phase() {
            Phase::Closed { .. } => State::Closed,
            Phase::Open { .. } => State::Open,
            Phase::Probing { .. } => State::Probing,
        }
    }

    /// Requests refused without reaching the upstream (`azs_csp_upstream_short_circuited`).
    pub fn short_circuited(&self) -> u64 {
        self.short_circuited.load(Ordering::Relaxed)
    }

    /// Counts a request its client answered without sending it, for a reason of its own (it
    /// failed a moment ago).
    pub fn count_short_circuit(&self) {
        self.short_circuited.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a request may go now; refused (and counted) while the upstream is treated as
    /// down.
    pub fn admit(&self) -> Result<(), Down> {
        match &*self.phase() {
            Phase::Closed { .. } => Ok(()),
            Phase::Open { cause, .. } | Phase::Probing { cause, .. } => {
                self.count_short_circuit();
                Err(Down {
                    upstream: self.upstream.to_string(),
                    cause: cause.clone(),
                })
            }
        }
    }

    /// Records an admitted request that succeeded. Outcomes of requests admitted before the
    /// breaker opened do not count once it is open: only its probe decides.
    pub fn succeeded(&self) -> Change {
        match &mut *self.phase() {
            Phase::Closed { failures } if *failures > 0 => {
                *failures = 0;
                Change::Recovered
            }
            _ => Change::Unchanged,
        }
    }

    /// Records an admitted request that failed with `cause`.
    pub fn failed(&self, cause: &dyn fmt::Display) -> Change {
        let mut phase = self.phase();
        let Phase::Closed { failures } = &mut *phase else {
            return Change::Unchanged;
        };
        *failures += 1;
        if *failures < self.settings.failure_threshold {
            return Change::Unchanged;
        }
        let failures = *failures;
        let delay = self.probe_delay(0);
        let cause = cause.to_string();
        warn!(
            upstream = %self.upstream,
            failures,
            %cause,
            first_probe_in_ms = delay.as_millis() as u64,
            "upstream treated as down: requests fail fast until a probe succeeds"
        );
        *phase = Phase::Open {
            probes_failed: 0,
            next_probe: Instant::now() + delay,
            cause,
        };
        Change::Opened
    }

    /// Sends `probe` whenever the next one is due, one at a time, until one succeeds; returns
    /// at once when the breaker is not open. Run by one task, started by whoever saw
    /// [`Change::Opened`]. Returns whether its own probe closed the breaker (not when another
    /// driver's probe is in flight), i.e. whether its caller announces the recovery.
    pub async fn probe_until_closed<F, Fut, E>(&self, mut probe: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: fmt::Display,
    {
        let mut closed = false;
        while let Some(turn) = self.next_probe().await {
            let outcome = probe().await;
            closed = outcome.is_ok();
            turn.finish(
                outcome
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| e as &dyn fmt::Display),
            );
        }
        closed
    }

    /// Waits until a probe is due and marks it in flight; `None` when the breaker is not open
    /// (closed, or another probe is in flight).
    async fn next_probe(&self) -> Option<ProbeTurn<'_>> {
        loop {
            let due = {
                let mut phase = self.phase();
                let Phase::Open {
                    probes_failed,
                    next_probe,
                    cause,
                } = &mut *phase
                else {
                    return None;
                };
                if *next_probe <= Instant::now() {
                    let (probes_failed, cause) = (*probes_failed, std::mem::take(cause));
                    info!(upstream = %self.upstream, probes_failed, "probing the upstream");
                    *phase = Phase::Probing {
                        probes_failed,
                        cause,
                    };
                    return Some(ProbeTurn {
                        breaker: self,
                        finished: false,
                    });
                }
                *next_probe
            };
            tokio::time::sleep_until(due).await;
        }
    }

    fn finish_probe(&self, outcome: Result<(), &dyn fmt::Display>) {
        let mut phase = self.phase();
        let Phase::Probing {
            probes_failed,
            cause,
        } = &mut *phase
        else {
            return;
        };
        match outcome {
            Ok(()) => {
                info!(
                    upstream = %self.upstream,
                    probes_failed = *probes_failed,
                    "probe succeeded: the upstream is up again"
                );
                *phase = Phase::Closed { failures: 0 };
            }
            Err(error) => {
                let probes_failed = *probes_failed + 1;
                let delay = self.probe_delay(probes_failed);
                warn!(
                    upstream = %self.upstream,
                    probes_failed,
                    %error,
                    next_probe_in_ms = delay.as_millis() as u64,
                    "probe failed: the upstream is still treated as down"
                );
                *phase = Phase::Open {
                    probes_failed,
                    next_probe: Instant::now() + delay,
                    cause: std::mem::take(cause),
                };
            }
        }
    }

    /// first_probe·2ⁿ capped at max_probe_interval, drawn from its upper quarter so that
    /// replicas (and upstreams) that failed together probe apart.
    fn probe_delay(&self, probes_failed: u32) -> Duration {
        let ceiling = self
            .settings
            .first_probe
            .saturating_mul(1 << probes_failed.min(20))
            .min(self.settings.max_probe_interval);
        let floor = ceiling.mul_f64(0.75);
        floor + (ceiling - floor).mul_f64(rand::rng().random::<f64>())
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        // Every critical section leaves a whole phase behind.
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The probe in flight; one that is dropped unfinished (its task was cancelled) counts as
/// failed, so that the breaker never stays in [`State::Probing`].
struct ProbeTurn<'a> {
    breaker: &'a Breaker,
    finished: bool,
}

impl ProbeTurn<'_> {
    fn finish(mut self, outcome: Result<(), &dyn fmt::Display>) {
        self.finished = true;
        self.breaker.finish_probe(outcome);
    }
}

impl Drop for ProbeTurn<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.breaker.finish_probe(Err(&"the probe was abandoned"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };

    use super::*;

    fn breaker() -> Breaker {
        Breaker::new("test", BreakerSettings::default())
    }

    fn fail(breaker: &Breaker, times: u32) -> Vec<Change> {
        (0..times).map(|_| breaker.failed(&"HTTP 502")).collect()
    }

    /// Opens `breaker` with three failures.
    fn open(breaker: &Breaker) {
        assert_eq!(fail(breaker, 3).last(), Some(&Change::Opened));
    }

    /// Runs until `breaker`'s next probe is in flight; returns how long that took.
    async fn until_probing(breaker: &Breaker) -> (Duration, ProbeTurn<'_>) {
        let started = Instant::now();
        let turn = breaker.next_probe().await.expect("open");
        (started.elapsed(), turn)
    }

    #[tokio::test(start_paused = true)]
    async fn closed_below_the_threshold_and_a_success_resets_the_count() {
        let b = breaker();
        assert_eq!(b.succeeded(), Change::Unchanged, "nothing to recover from");
        assert_eq!(fail(&b, 2), [Change::Unchanged, Change::Unchanged]);
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.admit(), Ok(()));
        assert_eq!(b.succeeded(), Change::Recovered);
        assert_eq!(fail(&b, 2), [Change::Unchanged, Change::Unchanged]);
        assert_eq!(b.state(), State::Closed, "the count started again");
        assert_eq!(b.short_circuited(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_third_consecutive_failure_opens_and_requests_fail_fast() {
        let b = breaker();
        assert_eq!(
            fail(&b, 3),
            [Change::Unchanged, Change::Unchanged, Change::Opened]
        );
        assert_eq!(b.state(), State::Open);
        assert_eq!(b.state().gauge(), 1);
        let down = Down {
            upstream: "test".into(),
            cause: "HTTP 502".into(),
        };
        assert_eq!(b.admit(), Err(down.clone()));
        assert_eq!(b.admit(), Err(down));
        assert_eq!(b.short_circuited(), 2);
        assert_eq!(fail(&b, 5), [Change::Unchanged; 5], "opened once");
        assert_eq!(
            b.succeeded(),
            Change::Unchanged,
            "a late answer to a request sent before it opened does not close it"
        );
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_probe_comes_after_about_a_second_and_requests_still_fail_meanwhile() {
        let b = breaker();
        open(&b);
        let (waited, turn) = until_probing(&b).await;
        assert!(
            waited >= Duration::from_millis(750) && waited <= Duration::from_secs(1),
            "{waited:?}"
        );
        assert_eq!(b.state(), State::Probing);
        assert_eq!(b.state().gauge(), 2);
        assert!(b.admit().is_err(), "only the probe goes");
        assert!(b.next_probe().await.is_none(), "one probe at a time");
        turn.finish(Ok(()));
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.state().gauge(), 0);
        assert_eq!(b.admit(), Ok(()));
        assert!(b.next_probe().await.is_none(), "closed: nothing to probe");
        assert_eq!(fail(&b, 2), [Change::Unchanged; 2], "closed afresh");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probes_double_the_spacing_up_to_30_s() {
        let b = breaker();
        open(&b);
        for ceiling in [1, 2, 4, 8, 16, 30, 30, 30] {
            let (waited, turn) = until_probing(&b).await;
            let ceiling = Duration::from_secs(ceiling);
            assert!(
                waited >= ceiling.mul_f64(0.75) && waited <= ceiling,
                "{waited:?} for a ceiling of {ceiling:?}"
            );
            turn.finish(Err(&"HTTP 502"));
            assert_eq!(b.state(), State::Open);
        }
        let down = b.admit().expect_err("open");
        assert_eq!(down.cause, "HTTP 502", "the cause that opened it");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_counts_as_failed() {
        let b = breaker();
        open(&b);
        let (_, turn) = until_probing(&b).await;
        drop(turn);
        assert_eq!(b.state(), State::Open);
        let (waited, _turn) = until_probing(&b).await;
        assert!(waited >= Duration::from_millis(1500), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn probe_until_closed_probes_one_at_a_time_until_one_succeeds() {
        let b = Arc::new(breaker());
        open(&b);
        let calls = Arc::new(AtomicU32::new(0));
        let in_flight = Arc::new(AtomicU32::new(0));
        let started = Instant::now();
        let closed = b
            .probe_until_closed(|| {
                let (calls, in_flight) = (calls.clone(), in_flight.clone());
                async move {
                    assert_eq!(in_flight.fetch_add(1, Ordering::SeqCst), 0);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                        Err("refused")
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        assert!(closed);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(b.state(), State::Closed);
        // Probes after about 1, 2, 4 and 8 s (each from the end of the one before).
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(11_250) && took <= Duration::from_millis(15_400),
            "{took:?}"
        );
        let now = Instant::now();
        let again = b
            .probe_until_closed(|| async { Err::<(), _>("never called") })
            .await;
        assert!(!again, "nothing to announce");
        assert_eq!(now.elapsed(), Duration::ZERO, "nothing to probe");
    }
}
