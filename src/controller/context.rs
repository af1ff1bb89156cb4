//! What both controllers share: stores, the index, the resolver, the clock, the event queue.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use kube::{Client, runtime::reflector::Store};
use rand::Rng;

use super::{
    azure::AzureMode,
    events::EventQueue,
    index::{Index, ObjKey},
    routing::Router,
};
use crate::{
    api::{Condition, CustomerSubscription, Registration},
    conditions::{Clock, READY},
    resolver::MetadataResolver,
    runtime::{Metrics, metrics::ReadyReasons},
    upstream::Waiting,
};

/// Reflector stores of one kind, one per watched scope (a namespace, or the whole cluster).
pub struct Stores<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    by_namespace: HashMap<String, Store<K>>,
    cluster: Option<Store<K>>,
}

impl<K: kube::Resource<DynamicType = ()> + Clone + 'static> Clone for Stores<K> {
    fn clone(&self) -> Self {
        Self {
            by_namespace: self.by_namespace.clone(),
            cluster: self.cluster.clone(),
        }
    }
}

impl<K: kube::Resource<DynamicType = ()> + Clone + 'static> Stores<K> {
    pub fn cluster(store: Store<K>) -> Self {
        Self {
            by_namespace: HashMap::new(),
            cluster: Some(store),
        }
    }

    pub fn namespaced(stores: HashMap<String, Store<K>>) -> Self {
        Self {
            by_namespace: stores,
            cluster: None,
        }
    }

    pub fn get(&self, key: &ObjKey) -> Option<Arc<K>> {
        let store = match &self.cluster {
            Some(store) => store,
            None => self.by_namespace.get(&*key.namespace)?,
        };
        store.get(&kube::runtime::reflector::ObjectRef::new(&key.name).within(&key.namespace))
    }

    pub fn all(&self) -> Vec<Arc<K>> {
        match &self.cluster {
            Some(store) => store.state(),
            None => self.by_namespace.values().flat_map(|s| s.state()).collect(),
        }
    }

    /// The Ready reason of every cached object, read at each scrape, for the by-reason gauges.
    pub fn ready_reasons(&self, conditions: fn(&K) -> Option<&[Condition]>) -> ReadyReasons
    where
        K: Send + Sync,
    {
        let stores = self.clone();
        Box::new(move || {
            stores
                .all()
                .iter()
                .map(|obj| {
                    let generation = obj.meta().generation;
                    conditions(obj)
                        .and_then(|c| crate::conditions::current_reason(c, READY, generation))
                        .map(str::to_string)
                })
                .collect()
        })
    }
}

/// Which controller's object a backoff entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Registration,
    CustomerSubscription,
}

/// Per-object exponential backoff with jitter, shared by upstream failures (the decision is
/// `MetadataResolverBadGatewayError`) and failed writes: one count per object, reset by the
/// next successful reconcile and forgotten when the object is deleted.
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempts: Mutex<HashMap<(Kind, ObjKey), u32>>,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// The delay before the next retry of `key`: base·2ⁿ capped at max, drawn uniformly
    /// from its upper half so that objects failing together spread out.
    pub fn next_delay(&self, kind: Kind, key: &ObjKey) -> Duration {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let n = attempts.entry((kind, key.clone())).or_insert(0);
        let exponent = (*n).min(20);
        *n = n.saturating_add(1);
        let ceiling = self.base.saturating_mul(1 << exponent).min(self.max);
        let floor = ceiling / 2;
        floor
            + ceiling
                .saturating_sub(floor)
                .mul_f64(rand::rng().random::<f64>())
    }

    /// Forgets the count of `key`: after a success, or when the object is gone.
    pub fn reset(&self, kind: Kind, key: &ObjKey) {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(kind, key.clone()));
    }

    /// Objects with a running count.
    pub fn len(&self) -> usize {
        self.attempts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Spaces out status writes that only change a count.
///
/// A Registration's `customerSubscriptionCount` changes with every dependent that attaches;
/// while thousands converge, writing each change would rewrite every Registration several
/// times a second. So a count-only change is written when the count has held still for
/// `settle` (the dependents are done), or at the latest `interval` after the previous write
/// (they keep changing); anything else is written at once.
pub struct WriteSpacing {
    interval: Duration,
    settle: Duration,
    objects: Mutex<HashMap<ObjKey, Spacing>>,
}

#[derive(Default)]
struct Spacing {
    last_write: Option<Instant>,
    /// The count waiting to be written, and since when it has been the one decided.
    pending: Option<(i64, Instant)>,
}

impl WriteSpacing {
    pub fn new(interval: Duration, settle: Duration) -> Self {
        Self {
            interval,
            settle,
            objects: Mutex::new(HashMap::new()),
        }
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, HashMap<ObjKey, Spacing>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a write of `key` changing only the count to `count` must still wait at
    /// `now`; `None` when it may go.
    pub fn wait(&self, key: &ObjKey, count: i64, now: Instant) -> Option<Duration> {
        let mut objects = self.objects();
        let spacing = objects.get_mut(key)?;
        let due = spacing.last_write? + self.interval;
        let since = match spacing.pending {
            Some((pending, since)) if pending == count => since,
            _ => {
                spacing.pending = Some((count, now));
                now
            }
        };
        let settled = since + self.settle;
        (due > now && settled > now).then(|| due.min(settled) - now)
    }

    /// Records a status write of `key` at `now`.
    pub fn written(&self, key: &ObjKey, now: Instant) {
        let mut objects = self.objects();
        let spacing = objects.entry(key.clone()).or_default();
        spacing.last_write = Some(now);
        spacing.pending = None;
    }

    /// Forgets `key`, when the object is gone.
    pub fn forget(&self, key: &ObjKey) {
        self.objects().remove(key);
    }

    pub fn len(&self) -> usize {
        self.objects().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The resourceVersion each CustomerSubscription got from this operator's last status write.
///
/// The watch event of that write carries nothing the decision reads that the operator did
/// not just decide, so it need not trigger a reconcile: at scale that halves the reconciles.
/// An entry lives until its event arrives, the next write replaces it, or the object goes.
#[derive(Default)]
pub struct OwnWrites {
    versions: Mutex<HashMap<ObjKey, String>>,
}

impl OwnWrites {
    fn versions(&self) -> std::sync::MutexGuard<'_, HashMap<ObjKey, String>> {
        self.versions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, key: &ObjKey, resource_version: String) {
        if !resource_version.is_empty() {
            self.versions().insert(key.clone(), resource_version);
        }
    }

    /// Whether `resource_version` of `key` is the result of the operator's own last write;
    /// forgets it, as each version is seen once.
    pub fn take(&self, key: &ObjKey, resource_version: Option<&str>) -> bool {
        let mut versions = self.versions();
        match (versions.get(key), resource_version) {
            (Some(ours), Some(seen)) if ours == seen => {
                versions.remove(key);
                true
            }
            _ => false,
        }
    }

    pub fn forget(&self, key: &ObjKey) {
        self.versions().remove(key);
    }

    pub fn len(&self) -> usize {
        self.versions().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Context {
    pub client: Client,
    pub registrations: Stores<Registration>,
    pub customers: Stores<CustomerSubscription>,
    pub index: Arc<Index>,
    pub resolver: Arc<dyn MetadataResolver>,
    pub clock: Arc<dyn Clock>,
    pub events: EventQueue,
    pub backoff: Arc<Backoff>,
    pub count_spacing: Arc<WriteSpacing>,
    pub own_writes: Arc<OwnWrites>,
    pub metrics: Arc<Metrics>,
    /// Objects whose decision waits for the resolver's upstream to answer again.
    pub waiting: Arc<Waiting<(Kind, ObjKey)>>,
    /// Requeues objects other than the one being reconciled.
    pub router: Router,
    /// Azure mode (`run --mode azure`); `None` in local mode.
    pub azure: Option<Arc<AzureMode>>,
}

impl Context {
    /// Whether the upstream decisions wait on (ARM in azure mode, else the resolver's) is
    /// treated as down.
    pub fn upstream_down(&self) -> bool {
        match &self.azure {
            Some(azure) => azure.arm.is_down(),
            None => self.resolver.upstream_down(),
        }
    }

    /// How long to wait before re-checking a settled object: the resolver's refresh interval
    /// (http), plus jitter; `None` when the resolver pushes its changes (catalog).
    pub fn refresh_after(&self) -> Option<Duration> {
        self.resolver
            .refresh_interval()
            .map(|ttl| ttl + ttl.mul_f64(0.1 * rand::rng().random::<f64>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_own_write_is_recognised_once_and_only_at_its_version() {
        let writes = OwnWrites::default();
        let (a, b) = (ObjKey::new("ns", "a"), ObjKey::new("ns", "b"));
        writes.record(&a, "41".into());
        assert!(!writes.take(&b, Some("41")), "another object");
        assert!(!writes.take(&a, Some("40")), "an older version");
        assert!(!writes.take(&a, None));
        assert!(writes.take(&a, Some("41")));
        assert!(!writes.take(&a, Some("41")), "seen once");
        writes.record(&a, "42".into());
        writes.record(&a, "43".into());
        assert!(!writes.take(&a, Some("42")), "replaced by the next write");
        writes.forget(&a);
        writes.record(&b, String::new());
        assert!(writes.is_empty());
    }

    #[test]
    fn count_writes_wait_until_the_count_settles_or_the_interval_is_over() {
        let spacing = WriteSpacing::new(Duration::from_secs(5), Duration::from_secs(1));
        let (a, b) = (ObjKey::new("ns", "a"), ObjKey::new("ns", "b"));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let secs = Duration::from_millis;
        assert_eq!(spacing.wait(&a, 1, t0), None, "never written: write now");
        spacing.written(&a, t0);
        // Dependents keep attaching: each new count waits for the count to settle...
        assert_eq!(spacing.wait(&a, 2, at(100)), Some(secs(1000)));
        assert_eq!(spacing.wait(&a, 3, at(600)), Some(secs(1000)));
        assert_eq!(spacing.wait(&a, 3, at(1100)), Some(secs(500)), "same count");
        assert_eq!(spacing.wait(&a, 4, at(1500)), Some(secs(1000)));
        assert_eq!(
            spacing.wait(&a, 5, at(4500)),
            Some(secs(500)),
            "or the interval"
        );
        assert_eq!(spacing.wait(&a, 6, at(5000)), None, "the interval is over");
        spacing.written(&a, at(5000));
        // ...and once they stop, the last count goes after `settle`, not after `interval`.
        assert_eq!(spacing.wait(&a, 7, at(5200)), Some(secs(1000)));
        assert_eq!(spacing.wait(&a, 7, at(6200)), None, "settled");
        assert_eq!(
            spacing.wait(&b, 1, at(6200)),
            None,
            "each object on its own"
        );
        spacing.forget(&a);
        assert!(spacing.is_empty());
    }

    #[test]
    fn backoff_grows_caps_and_resets() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let (a, b) = (ObjKey::new("ns", "a"), ObjKey::new("ns", "b"));
        let delays: Vec<Duration> = (0..10)
            .map(|_| backoff.next_delay(Kind::CustomerSubscription, &a))
            .collect();
        for (n, delay) in delays.iter().enumerate() {
            let ceiling = Duration::from_secs(1 << n.min(20)).min(Duration::from_secs(60));
            assert!(
                *delay >= ceiling / 2 && *delay <= ceiling,
                "attempt {n}: {delay:?}"
            );
        }
        // Another key has its own count.
        assert!(backoff.next_delay(Kind::CustomerSubscription, &b) <= Duration::from_secs(1));
        // The same name of the other kind has its own count.
        assert!(backoff.next_delay(Kind::Registration, &a) <= Duration::from_secs(1));
        backoff.reset(Kind::CustomerSubscription, &a);
        assert!(backoff.next_delay(Kind::CustomerSubscription, &a) <= Duration::from_secs(1));
        backoff.reset(Kind::CustomerSubscription, &a);
        backoff.reset(Kind::CustomerSubscription, &b);
        backoff.reset(Kind::Registration, &a);
        assert!(
            backoff.is_empty(),
            "nothing is kept for objects without a failure"
        );
    }
}
