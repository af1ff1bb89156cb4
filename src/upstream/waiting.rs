//! The objects waiting for an upstream that is treated as down. They carry no retry timer of
//! their own: the upstream's recovery re-evaluates all of them at once.

use std::{
    collections::HashSet,
    hash::Hash,
    sync::{Mutex, PoisonError},
};

/// A set of keys parked until their upstream answers again.
pub struct Waiting<K> {
    keys: Mutex<HashSet<K>>,
}

impl<K> Default for Waiting<K> {
    fn default() -> Self {
        Self {
            keys: Mutex::new(HashSet::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> Waiting<K> {
    /// Parks `key` if `down()` says the upstream is down; returns whether it did. `down` is
    /// asked after `key` is parked, so a recovery in between is never missed: either `down`
    /// sees it, or the recovery's [`Waiting::take_all`] sees `key`.
    pub fn park_while_down(&self, key: &K, down: impl FnOnce() -> bool) -> bool {
        self.keys().insert(key.clone());
        if down() {
            return true;
        }
        self.leave(key);
        false
    }

    /// `key` no longer waits (decided, or gone).
    pub fn leave(&self, key: &K) {
        self.keys().remove(key);
    }

    /// Every parked key, leaving none: the upstream answers again.
    pub fn take_all(&self) -> Vec<K> {
        self.keys().drain().collect()
    }

    pub fn len(&self) -> usize {
        self.keys().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, HashSet<K>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
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
}
