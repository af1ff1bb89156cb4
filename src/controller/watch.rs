//! Watching: one shared watch per kind and scope feeds a reflector store and the index, and
//! routes what each event affects.
//!
//! The caches run on their own, before and without the controllers: a standby keeps them in
//! step so that it takes over without a relist. A stored object that does not deserialize into
//! the Rust type (written by another tool, or under an older schema) is skipped — logged,
//! counted and reported by an Event — instead of failing the whole list, which would keep the
//! cache, and `/readyz`, from ever becoming ready.

use std::{
    collections::{HashMap, HashSet},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
};

use futures::{Stream, StreamExt};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::{DeserializeGuard, NamespaceResourceScope, error_boundary::InvalidObject},
    runtime::{
        WatchStreamExt,
        reflector::{self, ObjectRef, Store, store::Writer},
        watcher,
    },
};
use tokio::{sync::oneshot, task::JoinHandle};
use tracing::{info, warn};

use super::{
    Error, Settings,
    context::{Backoff, Kind, OwnWrites, Stores, WriteSpacing},
    events::{EventQueue, PendingEvent},
    index::{self, Index, ObjKey},
    routing::{Router, Scope},
    write::StatusOwner,
};
use crate::{
    api::{CustomerSubscription, Registration},
    runtime::{Health, Metrics},
};

/// Watch events a shared store buffers for its controller; the watch waits when the
/// controller falls further behind, so a burst does not keep thousands of old versions alive.
const SHARED_STORE_BUFFER: usize = 256;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

pub fn api_for<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// managedFields and `kubectl apply`'s copy of the last applied manifest are often most of
/// a cached object, and no decision reads them.
fn drop_unread_fields<K: ResourceExt>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().remove(LAST_APPLIED);
}

/// What the controllers keep per object besides the caches.
#[derive(Clone)]
pub struct PerObject {
    pub backoff: Arc<Backoff>,
    /// Objects parked while the upstream is treated as down.
    pub waiting: Arc<crate::upstream::Waiting<(Kind, ObjKey)>>,
    pub count_spacing: Arc<WriteSpacing>,
    pub own_writes: Arc<OwnWrites>,
}

impl PerObject {
    /// Drops what is kept for an object that is gone.
    fn forget(&self, kind: Kind, key: &ObjKey) {
        self.backoff.reset(kind, key);
        self.waiting.leave(&(kind, key.clone()));
        match kind {
            Kind::Registration => self.count_spacing.forget(key),
            Kind::CustomerSubscription => self.own_writes.forget(key),
        }
    }
}

/// The trigger stream of one kind's controller in one scope: what the shared watch hands on.
pub type Triggers<K> = Pin<Box<dyn Stream<Item = Arc<K>> + Send>>;

/// A subscription to a shared watch, drained until its controller starts: the watch hands on
/// every event and would wait for a reader that, on a standby, does not run yet. What is
/// drained is not lost: a controller reconciles everything in its cache when it starts.
struct Parked<K> {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Triggers<K>>,
}

impl<K: Send + Sync + 'static> Parked<K> {
    fn new(mut triggers: Triggers<K>) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = &mut stopped => return triggers,
                    item = triggers.next() => if item.is_none() { return triggers },
                }
            }
        });
        Self { stop, task }
    }

    async fn resume(self) -> Result<Triggers<K>, Error> {
        let _ = self.stop.send(());
        self.task.await.map_err(|_| Error::CacheNeverReady)
    }
}

/// The caches of one scope and the parked triggers of its two controllers.
struct ScopeCaches {
    scope: Scope,
    registrations: Store<Registration>,
    customers: Store<CustomerSubscription>,
    registration_triggers: Parked<Registration>,
    customer_triggers: Parked<CustomerSubscription>,
}

/// One scope's stores and trigger streams, handed to its controllers.
pub struct ScopeFeed {
    pub scope: Scope,
    pub registrations: Store<Registration>,
    pub customers: Store<CustomerSubscription>,
    pub registration_triggers: Triggers<Registration>,
    pub customer_triggers: Triggers<CustomerSubscription>,
}

/// The watches, reflector caches and index of every watched scope, kept in step from
/// [`Caches::start`] on, whether or not the controllers run.
pub struct Caches {
    pub registrations: Stores<Registration>,
    pub customers: Stores<CustomerSubscription>,
    pub index: Arc<Index>,
    pub kept: PerObject,
    pub router: Router,
    pub invalid: InvalidObjects,
    scopes: Vec<ScopeCaches>,
    watches: tokio::task::JoinSet<()>,
}

impl Caches {
    /// Starts the watches of every scope in `settings`; `/readyz` learns when they are synced.
    pub fn start(client: &Client, settings: &Settings, kept: PerObject) -> Result<Self, Error> {
        let scopes: Vec<Scope> = if settings.namespaces.is_empty() {
            vec![None]
        } else {
            settings.namespaces.iter().cloned().map(Some).collect()
        };
        let index = Arc::new(Index::default());
        let router = Router::default();
        let invalid = InvalidObjects::new(settings.metrics.clone());
        // Two watches per scope.
        let synced = Synced::new(2 * scopes.len(), settings.health.clone());
        let mut watches = tokio::task::JoinSet::new();
        let mut caches = Vec::new();
        for scope in scopes {
            let watch = Watch {
                client,
                scope: &scope,
                index: &index,
                router: &router,
                invalid: &invalid,
                kept: &kept,
                synced: &synced,
            };
            let (registrations, registration_triggers) = watch.start::<Registration>(
                &mut watches,
                Index::apply_registration,
                Index::delete_registration,
                Index::retain_registrations,
            )?;
            let (customers, customer_triggers) = watch.start::<CustomerSubscription>(
                &mut watches,
                Index::apply_customer,
                Index::delete_customer,
                Index::retain_customers,
            )?;
            caches.push(ScopeCaches {
                scope,
                registrations,
                customers,
                registration_triggers,
                customer_triggers,
            });
        }
        let (registrations, customers) = match caches.as_slice() {
            [only] if only.scope.is_none() => (
                Stores::cluster(only.registrations.clone()),
                Stores::cluster(only.customers.clone()),
            ),
            _ => (
                Stores::namespaced(by_namespace(&caches, |c| c.registrations.clone())),
                Stores::namespaced(by_namespace(&caches, |c| c.customers.clone())),
            ),
        };
        settings.metrics.set_ready_reasons(
            registrations.ready_reasons(|r| r.status.as_ref().map(|s| s.conditions.as_slice())),
            customers.ready_reasons(|c| c.status.as_ref().map(|s| s.conditions.as_slice())),
        );
        Ok(Self {
            registrations,
            customers,
            index,
            kept,
            router,
            invalid,
            scopes: caches,
            watches,
        })
    }

    /// Hands each scope's stores and triggers to its controllers.
    pub async fn feeds(&mut self) -> Result<Vec<ScopeFeed>, Error> {
        let mut feeds = Vec::new();
        for scope in std::mem::take(&mut self.scopes) {
            feeds.push(ScopeFeed {
                scope: scope.scope,
                registrations: scope.registrations,
                customers: scope.customers,
                registration_triggers: scope.registration_triggers.resume().await?,
                customer_triggers: scope.customer_triggers.resume().await?,
            });
        }
        Ok(feeds)
    }

    /// Completes only if a watch task ends, which they never do on their own.
    pub async fn watches_ended(&mut self) {
        self.watches.join_next().await;
    }
}

fn by_namespace<K>(
    caches: &[ScopeCaches],
    store: impl Fn(&ScopeCaches) -> Store<K>,
) -> HashMap<String, Store<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    caches
        .iter()
        .filter_map(|c| Some((c.scope.clone()?, store(c))))
        .collect()
}

/// What every watch of one scope shares.
struct Watch<'a> {
    client: &'a Client,
    scope: &'a Scope,
    index: &'a Arc<Index>,
    router: &'a Router,
    invalid: &'a InvalidObjects,
    kept: &'a PerObject,
    synced: &'a Synced,
}

impl Watch<'_> {
    /// Starts the shared watch of `K` in this scope: the watch task keeps the store and the
    /// index in step and routes what each event affects.
    fn start<K>(
        &self,
        tasks: &mut tokio::task::JoinSet<()>,
        apply: fn(&Index, &K) -> index::Affected,
        delete: fn(&Index, &ObjKey) -> index::Affected,
        retain: fn(&Index, Option<&str>, &HashSet<ObjKey>) -> index::Affected,
    ) -> Result<(Store<K>, Parked<K>), Error>
    where
        K: StatusOwner + Send + Sync + 'static,
    {
        let (store, writer) = reflector::store_shared(SHARED_STORE_BUFFER);
        let triggers = writer.subscribe().ok_or(Error::CacheNeverReady)?;
        let guarded = watcher(
            api_for::<DeserializeGuard<K>>(self.client, self.scope),
            watcher::Config::default(),
        )
        .default_backoff();
        let valid = skip_invalid(guarded, store.clone(), self.invalid.clone());
        let events = valid
            .modify(drop_unread_fields)
            .reflect_shared(writer as Writer<K>);
        let updates = IndexUpdates {
            scope: self.scope.clone(),
            index: self.index.clone(),
            router: self.router.clone(),
            synced: self.synced.clone(),
            kept: self.kept.clone(),
            apply,
            delete,
            retain,
        };
        tasks.spawn(updates.run(events));
        Ok((store, Parked::new(Box::pin(triggers))))
    }
}

type WatchEvents<K> = Result<watcher::Event<K>, watcher::Error>;

/// The watch events of the objects that deserialize. An object that stops deserializing
/// leaves the cache (a delete of its last good version), so that nothing acts on a stale copy.
fn skip_invalid<K>(
    events: impl Stream<Item = WatchEvents<DeserializeGuard<K>>> + Send + 'static,
    store: Store<K>,
    invalid: InvalidObjects,
) -> impl Stream<Item = WatchEvents<K>> + Send + 'static
where
    K: StatusOwner + Send + Sync + 'static,
{
    let cached = move |metadata: &kube::core::ObjectMeta| {
        let name = metadata.name.as_deref()?;
        let key = ObjectRef::new(name).within(metadata.namespace.as_deref().unwrap_or_default());
        store.get(&key).map(|obj| K::clone(&obj))
    };
    events.filter_map(move |event| {
        use watcher::Event;
        let valid = match event {
            Ok(Event::Apply(DeserializeGuard(Ok(obj)))) => {
                invalid.fixed(K::KIND, &ObjKey::of(&obj));
                Some(Ok(Event::Apply(obj)))
            }
            Ok(Event::InitApply(DeserializeGuard(Ok(obj)))) => {
                invalid.fixed(K::KIND, &ObjKey::of(&obj));
                Some(Ok(Event::InitApply(obj)))
            }
            Ok(Event::Delete(DeserializeGuard(Ok(obj)))) => {
                invalid.fixed(K::KIND, &ObjKey::of(&obj));
                Some(Ok(Event::Delete(obj)))
            }
            Ok(Event::Apply(DeserializeGuard(Err(error)))) => {
                invalid.found::<K>(&error);
                cached(&error.metadata).map(|stale| Ok(Event::Delete(stale)))
            }
            // Left out of the relist, it leaves the cache when the relist completes.
            Ok(Event::InitApply(DeserializeGuard(Err(error)))) => {
                invalid.found::<K>(&error);
                None
            }
            Ok(Event::Delete(DeserializeGuard(Err(error)))) => {
                let key = ObjKey::new(
                    error.metadata.namespace.as_deref().unwrap_or_default(),
                    error.metadata.name.as_deref().unwrap_or_default(),
                );
                invalid.fixed(K::KIND, &key);
                cached(&error.metadata).map(|stale| Ok(Event::Delete(stale)))
            }
            Ok(Event::Init) => Some(Ok(Event::Init)),
            Ok(Event::InitDone) => Some(Ok(Event::InitDone)),
            Err(error) => Some(Err(error)),
        };
        std::future::ready(valid)
    })
}

/// Stored objects that do not deserialize, by kind and key, with the Event that reports each.
/// Everyone logs and counts them; only the leader reports them (see [`Self::report_to`]).
#[derive(Clone)]
pub struct InvalidObjects {
    inner: Arc<Mutex<InvalidState>>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct InvalidState {
    objects: HashMap<(Kind, ObjKey), Invalid>,
    events: Option<EventQueue>,
}

struct Invalid {
    resource_version: Option<String>,
    event: PendingEvent,
}

/// The Event reason of a stored object that does not deserialize.
pub const INVALID_OBJECT: &str = "InvalidObject";

impl InvalidObjects {
    fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::default(),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InvalidState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs, counts and (on the leader) reports a version of an object that does not
    /// deserialize; a version seen before (in a relist) is not reported again.
    fn found<K: StatusOwner>(&self, error: &InvalidObject) {
        let meta = &error.metadata;
        let key = ObjKey::new(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        );
        let mut state = self.lock();
        let known = state.objects.get(&(K::KIND, key.clone()));
        if known.is_some_and(|k| k.resource_version == meta.resource_version) {
            return;
        }
        warn!(
            kind = K::kind(&()).as_ref(),
            namespace = %key.namespace,
            name = %key.name,
            error = %error.error,
            "skipping a stored object that does not deserialize; fix or delete it"
        );
        self.metrics.invalid_object(K::METRICS_LABEL);
        let event = PendingEvent {
            regarding: DeserializeGuard::<K>(Err(error.clone())).object_ref(&()),
            warning: true,
            reason: INVALID_OBJECT.to_string(),
            action: "Skip".to_string(),
            note: truncate(
                &format!(
                    "The stored object does not match the {} schema of this operator and is skipped until it is fixed or deleted: {}",
                    K::kind(&()),
                    error.error
                ),
                1000,
            ),
        };
        if let Some(events) = &state.events {
            events.send(event.clone());
        }
        state.objects.insert(
            (K::KIND, key),
            Invalid {
                resource_version: meta.resource_version.clone(),
                event,
            },
        );
    }

    /// The object deserializes again, or is gone.
    fn fixed(&self, kind: Kind, key: &ObjKey) {
        let mut state = self.lock();
        if !state.objects.is_empty() {
            state.objects.remove(&(kind, key.clone()));
        }
    }

    /// From now on, reports every object that does not deserialize by an Event: first those
    /// known now (a new leader cannot tell which ones its predecessor reported), then each new
    /// one.
    pub fn report_to(&self, events: EventQueue) {
        let mut state = self.lock();
        for invalid in state.objects.values() {
            events.send(invalid.event.clone());
        }
        state.events = Some(events);
    }

    /// Stops reporting (the controllers stopped).
    pub fn stop_reporting(&self) {
        self.lock().events = None;
    }
}

use super::write::truncate;

/// Tells `/readyz` once every watch has listed: its store is filled then (the reflector applies
/// an event before handing it on). Counted here rather than by waiting on the stores, because a
/// store wakes only one task waiting for it, and that is its controller.
#[derive(Clone)]
struct Synced {
    unlisted: Arc<std::sync::atomic::AtomicUsize>,
    health: Health,
}

impl Synced {
    fn new(watches: usize, health: Health) -> Self {
        Self {
            unlisted: Arc::new(watches.into()),
            health,
        }
    }

    /// One watch listed for the first time.
    fn listed(&self) {
        if self
            .unlisted
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst)
            == 1
        {
            info!("caches synced");
            self.health.set_caches_synced(true);
        }
    }
}

/// Keeps the index in step with one watch of `K` and requeues what each event affects.
struct IndexUpdates<K> {
    scope: Scope,
    index: Arc<Index>,
    router: Router,
    synced: Synced,
    kept: PerObject,
    apply: fn(&Index, &K) -> index::Affected,
    delete: fn(&Index, &ObjKey) -> index::Affected,
    retain: fn(&Index, Option<&str>, &HashSet<ObjKey>) -> index::Affected,
}

impl<K: StatusOwner + Send + 'static> IndexUpdates<K> {
    async fn run(self, events: impl Stream<Item = WatchEvents<K>> + Send + 'static) {
        let index = &*self.index;
        let mut relisted: HashSet<ObjKey> = HashSet::new();
        let mut listed_once = false;
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let affected = match event {
                Ok(watcher::Event::Apply(obj)) => (self.apply)(index, &obj),
                Ok(watcher::Event::InitApply(obj)) => {
                    relisted.insert(ObjKey::of(&obj));
                    (self.apply)(index, &obj)
                }
                Ok(watcher::Event::Delete(obj)) => {
                    // Nothing is kept for objects that are gone.
                    let key = ObjKey::of(&obj);
                    self.kept.forget(K::KIND, &key);
                    (self.delete)(index, &key)
                }
                Ok(watcher::Event::Init) => {
                    relisted.clear();
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    if !std::mem::replace(&mut listed_once, true) {
                        self.synced.listed();
                    }
                    let affected = (self.retain)(index, self.scope.as_deref(), &relisted);
                    relisted.clear();
                    affected
                }
                Err(error) => {
                    // The watcher retries by itself with backoff; say why it had to.
                    warn!(%error, kind = K::kind(&()).as_ref(), "watch failed, retrying");
                    continue;
                }
            };
            self.router.send(affected);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    #[test]
    fn cached_objects_lose_managed_fields_and_the_last_applied_manifest_only() {
        let mut registration =
            crate::controller::index::tests::registration("ns", "r", "s", "c", 1);
        registration.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        registration.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "{...}".to_string()),
                ("team".to_string(), "billing".to_string()),
            ]
            .into(),
        );
        drop_unread_fields(&mut registration);
        assert!(registration.managed_fields().is_empty());
        assert_eq!(
            registration.annotations().keys().collect::<Vec<_>>(),
            ["team"]
        );
    }
}
