//! The objects waiting for an upstream that is treated as down. They carry no retry timer of
//! their own: the upstream's recovery re-evaluates all of them at once.
//!
//! That re-evaluation (the drain) competes with the periodic refreshes of the objects it has
//! already decided: a drain longer than the refresh interval would otherwise re-check those
//! again and again while the last waiting ones still wait their turn (the controller picks
//! due objects in no particular order). So while a drain runs, an object it decides does not
//! schedule its own refresh: it is deferred, and the refreshes of the deferred objects are
//! scheduled together when the drain ends.

use std::{
    collections::HashSet,
    hash::Hash,
    sync::{Mutex, PoisonError},
};

use tokio::sync::Notify;

/// A set of keys parked until their upstream answers again, and the drain of the keys taken
/// at its recovery.
pub struct Waiting<K> {
    state: Mutex<State<K>>,
    drained: Notify,
}

struct State<K> {
    parked: HashSet<K>,
    /// Keys taken for re-evaluation and not decided yet.
    draining: HashSet<K>,
    /// Keys decided while a drain runs, whose refresh waits for its end.
    deferred: HashSet<K>,
}

impl<K> Default for Waiting<K> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                parked: HashSet::new(),
                draining: HashSet::new(),
                deferred: HashSet::new(),
            }),
            drained: Notify::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> Waiting<K> {
    /// Parks `key` if `down()` says the upstream is down; returns whether it did. `down` is
    /// asked after `key` is parked, so a recovery in between is never missed: either `down`
    /// sees it, or the recovery's [`Waiting::take_all`] sees `key`. A parked key no longer
    /// holds up a drain: it waits for the next recovery.
    pub fn park_while_down(&self, key: &K, down: impl FnOnce() -> bool) -> bool {
        self.state().parked.insert(key.clone());
        if down() {
            let mut state = self.state();
            state.draining.remove(key);
            self.notify_if_drained(&state);
            return true;
        }
        self.leave(key);
        false
    }

    /// `key` no longer waits (decided, or gone).
    pub fn leave(&self, key: &K) {
        let mut state = self.state();
        state.parked.remove(key);
        if state.draining.remove(key) {
            self.notify_if_drained(&state);
        }
    }

    /// Every parked key, leaving none: the upstream answers again.
    pub fn take_all(&self) -> Vec<K> {
        self.state().parked.drain().collect()
    }

    /// Starts (or extends) a drain: `keys` are being re-evaluated, and objects decided until
    /// the last of them is decided defer their refresh (see [`Waiting::defer_refresh`]).
    pub fn start_drain(&self, keys: impl IntoIterator<Item = K>) {
        let mut state = self.state();
        state.draining.extend(keys);
        self.notify_if_drained(&state);
    }

    /// Whether the refresh of `key`, just decided, waits for the end of a running drain;
    /// if so, it is among the keys [`Waiting::end_drain`] returns.
    pub fn defer_refresh(&self, key: &K) -> bool {
        let mut state = self.state();
        if state.draining.is_empty() {
            return false;
        }
        state.deferred.insert(key.clone());
        true
    }

    /// Completes once no key is draining.
    pub async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            if self.state().draining.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Ends the drain, also when keys are still draining (a bound on how long refreshes
    /// wait), and returns the keys whose refresh was deferred.
    pub fn end_drain(&self) -> Vec<K> {
        let mut state = self.state();
        state.draining.clear();
        self.notify_if_drained(&state);
        state.deferred.drain().collect()
    }

    /// Keys parked.
    pub fn len(&self) -> usize {
        self.state().parked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys draining.
    pub fn draining(&self) -> usize {
        self.state().draining.len()
    }

    fn notify_if_drained(&self, state: &State<K>) {
        if state.draining.is_empty() {
            self.drained.notify_waiters();
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keys_park_only_while_the_upstream_is_down_and_recovery_takes_them_all() {
        let waiting = Waiting::default();
        assert!(waiting.park_while_down(&"a", || true));
        assert!(waiting.park_while_down(&"b", || true));
        assert!(
            !waiting.park_while_down(&"c", || false),
            "up: retry on its own"
        );
        assert!(waiting.park_while_down(&"a", || true), "parked once");
        waiting.leave(&"b");
        assert_eq!(waiting.take_all(), ["a"]);
        assert!(waiting.is_empty());
    }

    #[test]
    fn a_recovery_while_parking_is_not_missed() {
        let waiting = Waiting::default();
        // The upstream recovers (and its recovery takes the parked keys) right after `a` is
        // parked, before `down` is asked: `a` is taken by the recovery.
        let taken = std::cell::RefCell::new(Vec::new());
        let parked = waiting.park_while_down(&"a", || {
            taken.borrow_mut().extend(waiting.take_all());
            true
        });
        assert!(parked);
        assert_eq!(*taken.borrow(), ["a"]);
    }

    #[test]
    fn refreshes_wait_while_a_drain_runs_and_come_back_at_its_end() {
        let waiting = Waiting::default();
        assert!(!waiting.defer_refresh(&"x"), "no drain: refresh as usual");
        waiting.start_drain(["a", "b", "c"]);
        // `a` is decided; so is `x`, which never waited: both refresh after the drain.
        waiting.leave(&"a");
        assert!(waiting.defer_refresh(&"a"));
        assert!(waiting.defer_refresh(&"x"));
        // `b` fails again: parked for the next recovery, it no longer holds up this drain.
        assert!(waiting.park_while_down(&"b", || true));
        assert_eq!(waiting.draining(), 1);
        // The last one decided ends the drain: its own refresh is not deferred.
        waiting.leave(&"c");
        assert_eq!(waiting.draining(), 0);
        assert!(!waiting.defer_refresh(&"c"));
        let mut deferred = waiting.end_drain();
        deferred.sort();
        assert_eq!(deferred, ["a", "x"]);
        assert!(waiting.end_drain().is_empty(), "returned once");
        assert_eq!(waiting.take_all(), ["b"]);
    }

    #[test]
    fn ending_a_drain_early_releases_its_deferred_refreshes() {
        let waiting = Waiting::default();
        waiting.start_drain(["a", "b"]);
        waiting.leave(&"a");
        assert!(waiting.defer_refresh(&"a"));
        assert_eq!(waiting.end_drain(), ["a"], "b never decided");
        assert!(!waiting.defer_refresh(&"b"), "the drain is over");
    }

    #[tokio::test(start_paused = true)]
    async fn drained_completes_when_the_last_key_is_decided() {
        let waiting = std::sync::Arc::new(Waiting::default());
        waiting.drained().await;
        waiting.start_drain(["a", "b"]);
        let waiter = tokio::spawn({
            let waiting = waiting.clone();
            async move { waiting.drained().await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        waiting.leave(&"a");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "b still drains");
        waiting.leave(&"b");
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("drained")
            .expect("task");
    }
}
