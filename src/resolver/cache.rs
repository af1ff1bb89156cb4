//! A TTL cache in front of an upstream, coalescing concurrent lookups of the same key.
//!
//! Every reconcile asks the resolver again, and a catalog or Registration change requeues many
//! objects at once that share a registration subscription: without coalescing each of them
//! would hit the upstream. Errors are not cached here: the http resolver remembers failed
//! requests briefly itself, next to its circuit breaker ([`crate::upstream`]).

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

use super::stats::ResolverStats;

type SharedFetch<V, E> = Shared<BoxFuture<'static, Result<V, E>>>;

enum Slot<V, E> {
    Ready { value: V, expires_at: Instant },
    Pending(SharedFetch<V, E>),
}

struct Entries<K, V, E> {
    slots: HashMap<K, Slot<V, E>>,
    // Expired entries are only overwritten when their key is asked again; sweeping when the
    // map has doubled keeps memory proportional to the keys in use without a background task.
    sweep_at: usize,
}

const MIN_SWEEP_AT: usize = 1024;

/// Caches successful answers for `ttl`, measured with `tokio::time` (so tests can pause time).
pub struct TtlCache<K, V, E> {
    ttl: Duration,
    entries: Mutex<Entries<K, V, E>>,
    stats: Arc<ResolverStats>,
}

impl<K, V, E> TtlCache<K, V, E>
where
    K: Eq + Hash + Clone,
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    pub fn new(ttl: Duration, stats: Arc<ResolverStats>) -> Self {
        Self {
            ttl,
            entries: Mutex::new(Entries {
                slots: HashMap::new(),
                sweep_at: MIN_SWEEP_AT,
            }),
            stats,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn stats(&self) -> &Arc<ResolverStats> {
        &self.stats
    }

    /// The cached value of `key` while it is fresh (a hit); `None` otherwise.
    pub fn fresh(&self, key: &K) -> Option<V> {
        self.fresh_in(&self.lock(), key, Instant::now())
    }

    fn fresh_in(&self, entries: &Entries<K, V, E>, key: &K, now: Instant) -> Option<V> {
        match entries.slots.get(key) {
            Some(Slot::Ready { value, expires_at }) if now < *expires_at => {
                self.stats.record_hit();
                Some(value.clone())
            }
            _ => None,
        }
    }

    /// The cached value of `key`, or the result of `fetch` — started at most once however
    /// many callers ask for `key` while it runs.
    pub async fn get_or_fetch<F, Fut>(&self, key: &K, fetch: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let shared = {
            let mut entries = self.lock();
            if let Some(value) = self.fresh_in(&entries, key, Instant::now()) {
                return Ok(value);
            }
            match entries.slots.get(key) {
                Some(Slot::Pending(shared)) => {
                    self.stats.record_coalesced();
                    shared.clone()
                }
                _ => {
                    self.stats.record_miss();
                    let stats = Arc::clone(&self.stats);
                    let upstream = fetch();
                    let shared = async move {
                        let started = Instant::now();
                        let result = upstream.await;
                        stats.record_upstream(started.elapsed(), result.is_ok());
                        result
                    }
                    .boxed()
                    .shared();
                    entries
                        .slots
                        .insert(key.clone(), Slot::Pending(shared.clone()));
                    shared
                }
            }
        };

        let result = shared.clone().await;

        // Whichever waiter gets here first settles the slot; the others find it settled (or
        // replaced by a newer fetch, which they must leave alone).
        let mut entries = self.lock();
        if let Some(Slot::Pending(pending)) = entries.slots.get(key)
            && pending.ptr_eq(&shared)
        {
            match &result {
                Ok(value) => {
                    let expires_at = Instant::now() + self.ttl;
                    entries.slots.insert(
                        key.clone(),
                        Slot::Ready {
                            value: value.clone(),
                            expires_at,
                        },
                    );
                    Self::maybe_sweep(&mut entries);
                }
                Err(_) => {
                    entries.slots.remove(key);
                }
            }
        }
        result
    }

    /// Forgets `key`, so the next lookup goes upstream.
    pub fn invalidate(&self, key: &K) {
        self.lock().slots.remove(key);
    }

    /// Number of entries held (fresh, expired not yet swept, or in flight).
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn maybe_sweep(entries: &mut Entries<K, V, E>) {
        if entries.slots.len() < entries.sweep_at {
            return;
        }
        let now = Instant::now();
        entries.slots.retain(|_, slot| match slot {
            Slot::Ready { expires_at, .. } => now < *expires_at,
            Slot::Pending(_) => true,
        });
        entries.sweep_at = (entries.slots.len() * 2).max(MIN_SWEEP_AT);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries<K, V, E>> {
        // Critical sections never leave the map half-updated, so a panic elsewhere while the
        // lock was held does not make its contents wrong.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn cache(ttl: Duration) -> TtlCache<String, u32, String> {
        TtlCache::new(ttl, Arc::new(ResolverStats::default()))
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_lookups_share_one_fetch() {
        let cache = cache(Duration::from_secs(60));
        let calls = Arc::new(AtomicUsize::new(0));
        let key = "k".to_string();
        let lookups = (0..20).map(|_| {
            let calls = Arc::clone(&calls);
            cache.get_or_fetch(&key, move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, String>(7)
            })
        });
        let results = futures::future::join_all(lookups).await;
        assert!(results.iter().all(|r| r == &Ok(7)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let stats = cache.stats().snapshot();
        assert_eq!(
            (stats.misses, stats.coalesced, stats.upstream_requests),
            (1, 19, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn answers_expire_after_ttl() {
        let cache = cache(Duration::from_secs(300));
        let calls = Arc::new(AtomicUsize::new(0));
        let key = "k".to_string();
        let fetch = || {
            let calls = Arc::clone(&calls);
            move || async move { Ok::<_, String>(calls.fetch_add(1, Ordering::SeqCst) as u32) }
        };
        assert_eq!(cache.get_or_fetch(&key, fetch()).await, Ok(0));
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(cache.get_or_fetch(&key, fetch()).await, Ok(0));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(cache.get_or_fetch(&key, fetch()).await, Ok(1));
        assert_eq!(cache.stats().hits(), 1);
        assert_eq!(cache.stats().misses(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_not_cached() {
        let cache = cache(Duration::from_secs(300));
        let key = "k".to_string();
        let failed = cache
            .get_or_fetch(&key, || async { Err::<u32, _>("boom".to_string()) })
            .await;
        assert_eq!(failed, Err("boom".to_string()));
        assert!(cache.is_empty());
        let ok = cache.get_or_fetch(&key, || async { Ok(3) }).await;
        assert_eq!(ok, Ok(3));
        let stats = cache.stats().snapshot();
        assert_eq!((stats.upstream_requests, stats.upstream_errors), (2, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_caller_does_not_lose_the_fetch() {
        let cache = cache(Duration::from_secs(300));
        let key = "k".to_string();
        let calls = Arc::new(AtomicUsize::new(0));
        let slow = {
            let calls = Arc::clone(&calls);
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok::<_, String>(5)
            }
        };
        let abandoned =
            tokio::time::timeout(Duration::from_millis(10), cache.get_or_fetch(&key, slow)).await;
        assert!(abandoned.is_err());
        let again = cache
            .get_or_fetch(&key, || async { Ok::<_, String>(99) })
            .await;
        assert_eq!(
            again,
            Ok(5),
            "the second caller joins the fetch already in flight"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn invalidate_forces_a_new_fetch() {
        let cache = cache(Duration::from_secs(300));
        let key = "k".to_string();
        assert_eq!(cache.get_or_fetch(&key, || async { Ok(1) }).await, Ok(1));
        cache.invalidate(&key);
        assert_eq!(cache.get_or_fetch(&key, || async { Ok(2) }).await, Ok(2));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept_when_the_map_grows() {
        let cache = cache(Duration::from_secs(1));
        for i in 0..MIN_SWEEP_AT - 1 {
            let _ = cache.get_or_fetch(&i.to_string(), || async { Ok(0) }).await;
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        let _ = cache
            .get_or_fetch(&"new".to_string(), || async { Ok(0) })
            .await;
        assert_eq!(cache.len(), 1);
    }
}
