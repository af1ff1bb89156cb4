//! The progress tracker: what each object shows, from a watch, against its expected outcome.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use azs_csp_operator::api::{CustomerSubscription, Registration};
use futures::StreamExt;
use kube::{
    Api, Resource, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::watch;

use crate::measure::load_average;

/// What one kind of object currently shows, against what it should show, from a watch.
#[derive(Default)]
pub struct Tracker {
    pub expected: HashMap<String, String>,
    pub observed: HashMap<String, String>,
    pub matched: usize,
    /// When `matched` last became equal to the number of expected objects.
    pub converged_at: Option<Instant>,
    /// Times of watch events after the initial list (each one is a write that changed the
    /// object: the operator skips no-op writes, and the API server sends no event for them).
    pub modifications: Vec<Instant>,
    pub synced: bool,
}

impl Tracker {
    pub fn is_match(&self, name: &str) -> bool {
        matches!((self.expected.get(name), self.observed.get(name)), (Some(e), Some(o)) if e == o)
    }

    pub fn recount(&mut self) {
        self.matched = self.expected.keys().filter(|k| self.is_match(k)).count();
        self.converged_at = self.is_converged().then(Instant::now);
    }

    pub fn is_converged(&self) -> bool {
        !self.expected.is_empty() && self.matched == self.expected.len()
    }

    pub fn expect(&mut self, expected: HashMap<String, String>) {
        self.expected = expected;
        self.recount();
    }

    pub fn observe(&mut self, name: String, signature: Option<String>, at: Instant) {
        let before = self.is_match(&name);
        match signature {
            Some(s) => self.observed.insert(name.clone(), s),
            None => self.observed.remove(&name),
        };
        let after = self.is_match(&name);
        match (before, after) {
            (false, true) => {
                self.matched += 1;
                if self.is_converged() {
                    self.converged_at = Some(at);
                }
            }
            (true, false) => {
                self.matched -= 1;
                self.converged_at = None;
            }
            _ => {}
        }
    }

    pub fn modifications_between(&self, from: Instant, to: Instant) -> usize {
        self.modifications
            .iter()
            .filter(|t| **t >= from && **t <= to)
            .count()
    }

    /// The most common (expected, observed) mismatches, for a failure report.
    pub fn mismatches(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (name, expected) in &self.expected {
            if !self.is_match(name) {
                let observed = self.observed.get(name).map_or("(none)", String::as_str);
                *counts
                    .entry(format!("expected {expected}, observed {observed}"))
                    .or_default() += 1;
            }
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        counts.truncate(8);
        counts
    }
}

pub type Shared = Arc<Mutex<Tracker>>;

pub fn lock(tracker: &Shared) -> std::sync::MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Ready reason, when written for the object's current generation.
pub fn ready_reason(
    generation: Option<i64>,
    conditions: &[azs_csp_operator::api::Condition],
) -> Option<String> {
    let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
    (ready.observed_generation == generation).then(|| ready.reason.clone())
}

pub fn customer_signature(cs: &CustomerSubscription) -> Option<String> {
    ready_reason(cs.metadata.generation, &cs.status.as_ref()?.conditions)
}

pub fn registration_signature(reg: &Registration) -> Option<String> {
    let status = reg.status.as_ref()?;
    let reason = ready_reason(reg.metadata.generation, &status.conditions)?;
    Some(format!(
        "{reason} count={}",
        status.customer_subscription_count.unwrap_or(-1)
    ))
}

/// Follows one kind in one namespace into `tracker`, bumping `changed` after every event.
pub fn spawn_tracker<K>(
    api: Api<K>,
    tracker: Shared,
    signature: fn(&K) -> Option<String>,
    changed: Arc<watch::Sender<u64>>,
) -> tokio::task::JoinHandle<()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(event) = events.next().await {
            let now = Instant::now();
            {
                let mut t = lock(&tracker);
                match event {
                    Ok(watcher::Event::Apply(obj)) => {
                        t.modifications.push(now);
                        t.observe(obj.name_any(), signature(&obj), now);
                    }
                    Ok(watcher::Event::InitApply(obj)) => {
                        t.observe(obj.name_any(), signature(&obj), now)
                    }
                    Ok(watcher::Event::Delete(obj)) => t.observe(obj.name_any(), None, now),
                    Ok(watcher::Event::InitDone) => t.synced = true,
                    Ok(watcher::Event::Init) => {}
                    Err(error) => eprintln!("bench: watch error (retrying): {error}"),
                }
            }
            changed.send_modify(|v| *v += 1);
        }
    })
}

/// Waits until `done` holds for the trackers, or `timeout`. Returns whether it did.
pub async fn wait_until(
    changed: &watch::Sender<u64>,
    timeout: Duration,
    done: impl Fn() -> bool,
) -> bool {
    let mut rx = changed.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        rx.borrow_and_update();
        if done() {
            return true;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return done(),
        }
    }
}

pub async fn report_progress(cust: Shared, reg: Shared, t0: Instant) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (c, ce, m) = {
            let t = lock(&cust);
            (t.matched, t.expected.len(), t.modifications.len())
        };
        let (r, re) = {
            let t = lock(&reg);
            (t.matched, t.expected.len())
        };
        eprintln!(
            "bench: {:>5.0} s: customers {c}/{ce} final ({m} status changes), registrations {r}/{re}, load {}",
            t0.elapsed().as_secs_f64(),
            load_average()
        );
    }
}
