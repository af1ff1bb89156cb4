//! A brief memory of failed requests: many objects often need the same key (a
//! registration's approval, its subscription), and when its lookup fails, the siblings that
//! ask next get that failure instead of each sending the request again.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

/// Below this many entries, expired ones are not swept (they are replaced when asked again).
const MIN_SWEEP_AT: usize = 256;

struct Entries<K, E> {
    failures: HashMap<K, (E, Instant)>,
    sweep_at: usize,
}

/// The last failure of each key, for `ttl` after it happened.
pub struct RecentFailures<K, E> {
    ttl: Duration,
    entries: Mutex<Entries<K, E>>,
}

impl<K: Eq + Hash, E: Clone> RecentFailures<K, E> {
    /// Remembers failures for `ttl`; `Duration::ZERO` remembers nothing.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(Entries {
                failures: HashMap::new(),
                sweep_at: MIN_SWEEP_AT,
            }),
        }
    }

    /// The failure of `key` if it happened less than `ttl` ago.
    pub fn get(&self, key: &K) -> Option<E> {
        let entries = self.lock();
        let (error, expires_at) = entries.failures.get(key)?;
        (Instant::now() < *expires_at).then(|| error.clone())
    }

    pub fn remember(&self, key: K, error: E) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        entries.failures.insert(key, (error, now + self.ttl));
        if entries.failures.len() >= entries.sweep_at {
            entries
                .failures
                .retain(|_, (_, expires_at)| now < *expires_at);
            entries.sweep_at = (entries.failures.len() * 2).max(MIN_SWEEP_AT);
        }
    }

    /// Forgets every failure: the upstream answers again.
    pub fn clear(&self) {
        self.lock().failures.clear();
    }

    /// Entries held, expired ones not yet swept included.
    pub fn len(&self) -> usize {
        self.lock().failures.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<K, E>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_remembered_for_its_ttl_per_key() {
        let failures = RecentFailures::new(Duration::from_secs(1));
        failures.remember("a", "502");
        assert_eq!(failures.get(&"a"), Some("502"));
        assert_eq!(failures.get(&"b"), None, "another key");
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(failures.get(&"a"), Some("502"));
        failures.remember("a", "timeout");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(
            failures.get(&"a"),
            Some("timeout"),
            "the last one, from its time"
        );
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(failures.get(&"a"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn clear_forgets_everything_and_a_zero_ttl_remembers_nothing() {
        let failures = RecentFailures::new(Duration::from_secs(1));
        failures.remember("a", 1);
        failures.remember("b", 2);
        failures.clear();
        assert!(failures.is_empty());
        let none = RecentFailures::new(Duration::ZERO);
        none.remember("a", 1);
        assert_eq!(none.get(&"a"), None);
        assert!(none.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn expired_failures_are_swept_as_the_map_grows() {
        let failures = RecentFailures::new(Duration::from_secs(1));
        for i in 0..MIN_SWEEP_AT - 1 {
            failures.remember(i, ());
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        failures.remember(MIN_SWEEP_AT, ());
        assert_eq!(failures.len(), 1);
    }
}
