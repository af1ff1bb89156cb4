//! The client side of ARM's write throttling (DESIGN.md §8): a token bucket that spaces the
//! operator's PUTs and DELETEs, and a gate that holds every write back until the
//! `Retry-After` of a 429 has passed.
//!
//! A reservation scheme (GCRA) rather than a polled bucket: each caller is given its own send
//! time at once, so a thousand waiting writes wake one by one at the refill rate instead of
//! all racing for the next token. Time is `tokio::time`, so tests can pause it.

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

/// How many writes may go at once, and how fast the allowance refills.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WriteRate {
    pub per_second: f64,
    pub burst: u32,
}

#[derive(Debug)]
struct Schedule {
    /// When the bucket would be full again if nothing else were sent (GCRA's theoretical
    /// arrival time).
    full_at: Instant,
    /// No write goes before this: the end of the last `Retry-After`.
    not_before: Instant,
}

/// Spaces ARM writes; shared by every reconcile.
#[derive(Debug)]
pub struct WriteBudget {
    interval: Duration,
    tolerance: Duration,
    schedule: Mutex<Schedule>,
}

impl WriteBudget {
    pub fn new(rate: WriteRate) -> Self {
        let per_second = if rate.per_second.is_finite() && rate.per_second > 0.0 {
            rate.per_second
        } else {
            1.0
        };
        let interval = Duration::from_secs_f64(1.0 / per_second);
        let now = Instant::now();
        Self {
            interval,
            tolerance: interval.saturating_mul(rate.burst.max(1) - 1),
            schedule: Mutex::new(Schedule {
                full_at: now,
                not_before: now,
            }),
        }
    }

    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves the next send time at `now` and returns it.
    fn reserve(&self, now: Instant) -> Instant {
        let mut schedule = self.schedule();
        let full_at = schedule.full_at.max(now);
        let allowed = (full_at.checked_sub(self.tolerance).unwrap_or(now))
            .max(now)
            .max(schedule.not_before);
        schedule.full_at = full_at.max(allowed) + self.interval;
        allowed
    }

    /// Waits until this write may be sent.
    pub async fn acquire(&self) {
        let mut at = self.reserve(Instant::now());
        loop {
            tokio::time::sleep_until(at).await;
            // A 429 may have arrived while this write waited: never send before its end.
            let not_before = self.schedule().not_before;
            if not_before <= Instant::now() {
                return;
            }
            at = self.reserve(not_before);
        }
    }

    /// ARM answered 429 with `Retry-After`: no write goes before it has passed.
    pub fn hold_off(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut schedule = self.schedule();
        if until > schedule.not_before {
            schedule.not_before = until;
        }
        // What was reserved before the 429 is spaced out again after it.
        if schedule.full_at < until {
            schedule.full_at = until;
        }
    }

    /// When the next write could go, for metrics and logs.
    pub fn next_free(&self) -> Instant {
        let schedule = self.schedule();
        (schedule
            .full_at
            .checked_sub(self.tolerance)
            .unwrap_or(schedule.full_at))
        .max(schedule.not_before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn send_times(budget: &WriteBudget, n: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..n {
            budget.acquire().await;
            times.push(start.elapsed());
        }
        times
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_the_refill_rate() {
        let budget = WriteBudget::new(WriteRate {
            per_second: 5.0,
            burst: 3,
        });
        let times = send_times(&budget, 6).await;
        let ms: Vec<u128> = times.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 0, 0, 200, 400, 600]);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_writers_get_their_own_slots() {
        let budget = std::sync::Arc::new(WriteBudget::new(WriteRate {
            per_second: 10.0,
            burst: 2,
        }));
        let start = Instant::now();
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let budget = budget.clone();
                tokio::spawn(async move {
                    budget.acquire().await;
                    start.elapsed().as_millis()
                })
            })
            .collect();
        let mut ms = Vec::new();
        for task in tasks {
            ms.push(task.await.unwrap());
        }
        ms.sort();
        assert_eq!(ms, [0, 0, 100, 200, 300, 400]);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_sent_before_retry_after() {
        let budget = std::sync::Arc::new(WriteBudget::new(WriteRate {
            per_second: 100.0,
            burst: 50,
        }));
        let start = Instant::now();
        budget.acquire().await;
        budget.hold_off(Duration::from_secs(3));
        let waiting: Vec<_> = (0..5)
            .map(|_| {
                let budget = budget.clone();
                tokio::spawn(async move {
                    budget.acquire().await;
                    start.elapsed()
                })
            })
            .collect();
        for task in waiting {
            assert!(task.await.unwrap() >= Duration::from_secs(3));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_while_a_write_waits_holds_it_back_too() {
        let budget = std::sync::Arc::new(WriteBudget::new(WriteRate {
            per_second: 1.0,
            burst: 1,
        }));
        budget.acquire().await;
        let start = Instant::now();
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move {
                budget.acquire().await;
                start.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        budget.hold_off(Duration::from_secs(4));
        assert!(waiting.await.unwrap() >= Duration::from_millis(4500));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_budget_refills_to_its_burst_only() {
        let budget = WriteBudget::new(WriteRate {
            per_second: 10.0,
            burst: 2,
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        let ms: Vec<u128> = send_times(&budget, 4)
            .await
            .iter()
            .map(Duration::as_millis)
            .collect();
        assert_eq!(ms, [0, 0, 100, 200]);
    }
}
