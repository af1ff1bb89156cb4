//! Counters of a resolver backend, kept in atomics so a metrics endpoint can read them at any
//! time without locking the lookup path.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Upper bounds (seconds) of the upstream latency histogram buckets; the same shape as the
/// Prometheus client defaults so the metrics module can expose them unchanged.
pub const LATENCY_BUCKETS_SECONDS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Lookup and upstream counters of one resolver backend.
#[derive(Debug, Default)]
pub struct ResolverStats {
    hits: AtomicU64,
    misses: AtomicU64,
    coalesced: AtomicU64,
    upstream_requests: AtomicU64,
    upstream_errors: AtomicU64,
    latency_micros_sum: AtomicU64,
    // Non-cumulative per bucket; the last slot is the +Inf overflow.
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len() + 1],
}

/// A consistent-enough copy of [`ResolverStats`] (each field is read atomically on its own).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsSnapshot {
    /// Lookups answered from a fresh cache entry.
    pub hits: u64,
    /// Lookups that started an upstream request.
    pub misses: u64,
    /// Lookups that joined an upstream request another caller had already started.
    pub coalesced: u64,
    /// Upstream requests that completed (successfully or not).
    pub upstream_requests: u64,
    /// Upstream requests that ended in an error.
    pub upstream_errors: u64,
    /// Sum of upstream request durations.
    pub upstream_latency_seconds_sum: f64,
    /// Cumulative histogram: (upper bound in seconds, requests at or below it); the last
    /// bound is `f64::INFINITY` and its count equals `upstream_requests`.
    pub upstream_latency_buckets: Vec<(f64, u64)>,
}

impl ResolverStats {
    pub fn record_hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_coalesced(&self) {
        self.coalesced.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one finished upstream request.
    pub fn record_upstream(&self, elapsed: Duration, ok: bool) {
        self.upstream_requests.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.upstream_errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_micros_sum.fetch_add(micros, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    pub fn coalesced(&self) -> u64 {
        self.coalesced.load(Ordering::Relaxed)
    }

    pub fn upstream_requests(&self) -> u64 {
        self.upstream_requests.load(Ordering::Relaxed)
    }

    pub fn upstream_errors(&self) -> u64 {
        self.upstream_errors.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let mut cumulative = 0;
        let bounds = LATENCY_BUCKETS_SECONDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY));
        let upstream_latency_buckets = bounds
            .zip(self.latency_buckets.iter())
            .map(|(bound, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (bound, cumulative)
            })
            .collect();
        StatsSnapshot {
            hits: self.hits(),
            misses: self.misses(),
            coalesced: self.coalesced(),
            upstream_requests: self.upstream_requests(),
            upstream_errors: self.upstream_errors(),
            upstream_latency_seconds_sum: self.latency_micros_sum.load(Ordering::Relaxed) as f64
                / 1e6,
            upstream_latency_buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_ends_with_total() {
        let stats = ResolverStats::default();
        stats.record_upstream(Duration::from_millis(3), true);
        stats.record_upstream(Duration::from_millis(300), false);
        stats.record_upstream(Duration::from_secs(30), true);
        let snap = stats.snapshot();
        assert_eq!(snap.upstream_requests, 3);
        assert_eq!(snap.upstream_errors, 1);
        assert_eq!(snap.upstream_latency_buckets[0], (0.005, 1));
        assert_eq!(snap.upstream_latency_buckets[6], (0.5, 2));
        assert_eq!(
            snap.upstream_latency_buckets.last(),
            Some(&(f64::INFINITY, 3))
        );
        assert!((snap.upstream_latency_seconds_sum - 30.303).abs() < 1e-6);
    }
}
