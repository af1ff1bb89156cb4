//! ARM's write throttling: a token bucket per principal and subscription (DESIGN.md §8, §10).
//! Pure: the caller passes the time.

use std::{collections::HashMap, time::Duration};

use tokio::time::Instant;

use crate::guid::GuidText;

/// One principal's write allowance on one subscription.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// What a write may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead; this many writes remain in the bucket.
    Allowed { remaining: u32 },
    /// Throttled: the next token arrives after this long.
    Throttled { retry_after: Duration },
}

/// Buckets of `burst` tokens, each refilled at `refill_per_second`.
#[derive(Debug)]
pub struct WriteThrottle {
    burst: f64,
    refill_per_second: f64,
    buckets: HashMap<(String, GuidText), Bucket>,
}

impl WriteThrottle {
    /// `refill_per_second` must be positive (the command line checks it).
    pub fn new(burst: u32, refill_per_second: f64) -> Self {
        Self {
            burst: f64::from(burst),
            refill_per_second,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token from the bucket of (`principal`, `subscription`), if it has one.
    pub fn admit(&mut self, principal: &str, subscription: &str, now: Instant) -> Admission {
        let burst = self.burst;
        let bucket = self
            .buckets
            .entry((principal.to_owned(), GuidText::parse(subscription)))
            .or_insert(Bucket {
                tokens: burst,
                updated: now,
            });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.refill_per_second).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Admission::Allowed {
                // Whole tokens left; the fraction is not yet a write.
                remaining: bucket.tokens as u32,
            }
        } else {
            let missing = 1.0 - bucket.tokens;
            Admission::Throttled {
                retry_after: Duration::from_secs_f64(missing / self.refill_per_second),
            }
        }
    }
}

/// `Retry-After` is whole seconds: round up, so a client that waits exactly that long finds a
/// token.
pub fn retry_after_seconds(retry_after: Duration) -> u64 {
    let seconds = retry_after.as_secs();
    if retry_after.subsec_nanos() > 0 {
        seconds + 1
    } else {
        seconds.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let start = Instant::now();
        let mut throttle = WriteThrottle::new(3, 2.0);
        let at = |ms: u64| start + Duration::from_millis(ms);
        let cases = [
            (0, Admission::Allowed { remaining: 2 }),
            (0, Admission::Allowed { remaining: 1 }),
            (0, Admission::Allowed { remaining: 0 }),
            (
                0,
                Admission::Throttled {
                    retry_after: Duration::from_millis(500),
                },
            ),
            (
                250,
                Admission::Throttled {
                    retry_after: Duration::from_millis(250),
                },
            ),
            (500, Admission::Allowed { remaining: 0 }),
            // A long pause refills to the burst, never beyond it.
            (60_000, Admission::Allowed { remaining: 2 }),
        ];
        for (i, (ms, want)) in cases.into_iter().enumerate() {
            assert_eq!(throttle.admit("app", "SUB", at(ms)), want, "step {i}");
        }
    }

    #[test]
    fn buckets_are_per_principal_and_subscription() {
        let now = Instant::now();
        let mut throttle = WriteThrottle::new(1, 1.0);
        assert!(matches!(
            throttle.admit("a", "s1", now),
            Admission::Allowed { .. }
        ));
        assert!(matches!(
            throttle.admit("a", "S1", now),
            Admission::Throttled { .. }
        ));
        for (principal, subscription) in [("a", "s2"), ("b", "s1")] {
            assert!(matches!(
                throttle.admit(principal, subscription, now),
                Admission::Allowed { .. }
            ));
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        for (duration, want) in [
            (Duration::from_millis(1), 1),
            (Duration::from_millis(1000), 1),
            (Duration::from_millis(1001), 2),
            (Duration::ZERO, 1),
        ] {
            assert_eq!(retry_after_seconds(duration), want, "{duration:?}");
        }
    }
}
