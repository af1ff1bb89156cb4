//! Thin controllers: watch → cache (reflector stores + index) → decide (policy) → write.

mod context;
mod customer_subscription;
mod events;
mod index;
mod registration;
mod write;

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::Arc,
    time::Duration,
};

use futures::{StreamExt, channel::mpsc, future::BoxFuture};
use kube::{
    Api, Client, ResourceExt,
    api::ListParams,
    runtime::{
        Config, Controller, WatchStreamExt,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{error, info, warn};

pub use context::{Backoff, Context, Kind, OwnWrites, Stores, WriteSpacing};
pub use customer_subscription::MANAGER as CUSTOMER_SUBSCRIPTION_MANAGER;
pub use index::{Index, ObjKey, is_attached};
pub use registration::{FINALIZER, MANAGER as REGISTRATION_MANAGER};

use crate::{
    api::{CustomerSubscription, Registration},
    conditions::Clock,
    resolver::MetadataResolver,
    runtime::{Health, Metrics},
};

#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("writing {namespace}/{name} failed: {source}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the CustomResourceDefinition {crd} is not installed in the cluster; install the CRDs first: kubectl apply --server-side -f crds/"
    )]
    CrdMissing { crd: String },
    #[error("could not reach the Kubernetes API: {0}")]
    Api(#[source] kube::Error),
    #[error("a watch ended before its cache was filled")]
    CacheNeverReady,
}

/// What the operator watches and how it behaves.
pub struct Settings {
    /// Namespaces to watch; empty means the whole cluster.
    pub namespaces: Vec<String>,
    /// Name under which Events are reported.
    pub reporter: String,
    /// Where reconciles and writes are counted.
    pub metrics: Arc<Metrics>,
    /// Told when the caches are filled.
    pub health: Health,
}

/// Longest a Registration status write that only changes `customerSubscriptionCount` waits
/// after the previous write while dependents keep changing (see [`WriteSpacing`]).
pub const COUNT_WRITE_INTERVAL: Duration = Duration::from_secs(5);
/// How long the count must hold still before such a write goes earlier.
pub const COUNT_SETTLE: Duration = Duration::from_secs(1);

/// A watched scope: one namespace, or the whole cluster (`None`).
type Scope = Option<String>;

/// Routes requeue requests to the controller of the scope an object lives in.
#[derive(Clone)]
struct Router {
    registrations: Vec<(Scope, mpsc::UnboundedSender<ObjectRef<Registration>>)>,
    customers: Vec<(
        Scope,
        mpsc::UnboundedSender<ObjectRef<CustomerSubscription>>,
    )>,
}

fn in_scope(scope: &Scope, namespace: &str) -> bool {
    scope.as_deref().is_none_or(|ns| ns == namespace)
}

impl Router {
    fn send(&self, affected: index::Affected) {
        for key in affected.registrations {
            if let Some((_, tx)) = self
                .registrations
                .iter()
                .find(|(s, _)| in_scope(s, &key.namespace))
            {
                let _ = tx.unbounded_send(ObjectRef::new(&key.name).within(&key.namespace));
            }
        }
        for key in affected.customers {
            if let Some((_, tx)) = self
                .customers
                .iter()
                .find(|(s, _)| in_scope(s, &key.namespace))
            {
                let _ = tx.unbounded_send(ObjectRef::new(&key.name).within(&key.namespace));
            }
        }
    }
}

fn api_for<K>(client: &Client, scope: &Scope) -> Api<K>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Fails with a clear message when the CRDs are not installed.
pub async fn ensure_crds_installed(client: &Client, namespaces: &[String]) -> Result<(), Error> {
    let scope: Scope = namespaces.first().cloned();
    let probe = ListParams::default().limit(1);
    let missing = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 404);
    if let Err(e) = api_for::<Registration>(client, &scope)
        .list_metadata(&probe)
        .await
    {
        return Err(if missing(&e) {
            Error::CrdMissing {
                crd: "registrations.csp.azurestack.io".into(),
            }
        } else {
            Error::Api(e)
        });
    }
    if let Err(e) = api_for::<CustomerSubscription>(client, &scope)
        .list_metadata(&probe)
        .await
    {
        return Err(if missing(&e) {
            Error::CrdMissing {
                crd: "customersubscriptions.csp.azurestack.io".into(),
            }
        } else {
            Error::Api(e)
        });
    }
    Ok(())
}

/// managedFields and `kubectl apply`'s copy of the last applied manifest are often most of
/// a cached object, and no decision reads them.
fn drop_unread_fields<K: ResourceExt>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().remove(LAST_APPLIED);
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Watch events a shared store buffers for its controller; the watch waits when the
/// controller falls further behind, so a burst does not keep thousands of old versions alive.
const SHARED_STORE_BUFFER: usize = 256;

/// A delete handler that also drops what is kept per object (backoff count, write spacing,
/// own write versions), so nothing is kept for objects that are gone.
fn forget_and(
    kept: &PerObject,
    kind: Kind,
    delete: fn(&Index, &ObjKey) -> index::Affected,
) -> impl Fn(&Index, &ObjKey) -> index::Affected + Send + 'static {
    let kept = kept.clone();
    move |index, key| {
        kept.backoff.reset(kind, key);
        kept.waiting.leave(&(kind, key.clone()));
        match kind {
            Kind::Registration => kept.count_spacing.forget(key),
            Kind::CustomerSubscription => kept.own_writes.forget(key),
        }
        delete(index, key)
    }
}

/// What the controllers keep per object besides the caches.
#[derive(Clone)]
struct PerObject {
    backoff: Arc<Backoff>,
    waiting: Arc<crate::upstream::Waiting<(Kind, ObjKey)>>,
    count_spacing: Arc<WriteSpacing>,
    own_writes: Arc<OwnWrites>,
}

/// Keeps the index in step with one watch and requeues what each event affects.
fn index_events<K, F, D, R>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    scope: Scope,
    index: Arc<Index>,
    router: Router,
    apply: F,
    delete: D,
    retain: R,
) -> BoxFuture<'static, ()>
where
    K: kube::Resource<DynamicType = ()> + ResourceExt + Send + 'static,
    F: Fn(&Index, &K) -> index::Affected + Send + 'static,
    D: Fn(&Index, &ObjKey) -> index::Affected + Send + 'static,
    R: Fn(&Index, Option<&str>, &HashSet<ObjKey>) -> index::Affected + Send + 'static,
{
    Box::pin(async move {
        let mut relisted: HashSet<ObjKey> = HashSet::new();
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            let affected = match event {
                Ok(watcher::Event::Apply(obj)) => apply(&index, &obj),
                Ok(watcher::Event::InitApply(obj)) => {
                    relisted.insert(ObjKey::of(&obj));
                    apply(&index, &obj)
                }
                Ok(watcher::Event::Delete(obj)) => delete(&index, &ObjKey::of(&obj)),
                Ok(watcher::Event::Init) => {
                    relisted.clear();
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    let affected = retain(&index, scope.as_deref(), &relisted);
                    relisted.clear();
                    affected
                }
                Err(error) => {
                    // The watcher retries by itself with backoff; say why it had to.
                    warn!(%error, kind = K::kind(&()).as_ref(), "watch failed, retrying");
                    continue;
                }
            };
            router.send(affected);
        }
    })
}

/// Runs both controllers until `shutdown` completes.
pub async fn run(
    client: Client,
    resolver: Arc<dyn MetadataResolver>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    ensure_crds_installed(&client, &settings.namespaces).await?;
    let scopes: Vec<Scope> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let index = Arc::new(Index::default());
    let backoff = Arc::new(Backoff::new(
        Duration::from_secs(1),
        Duration::from_secs(300),
    ));
    let kept = PerObject {
        backoff: backoff.clone(),
        waiting: Arc::default(),
        count_spacing: Arc::new(WriteSpacing::new(COUNT_WRITE_INTERVAL, COUNT_SETTLE)),
        own_writes: Arc::new(OwnWrites::default()),
    };
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));

    let mut registration_rx = Vec::new();
    let mut customer_rx = Vec::new();
    let mut router = Router {
        registrations: vec![],
        customers: vec![],
    };
    for scope in &scopes {
        let (tx, rx) = mpsc::unbounded();
        router.registrations.push((scope.clone(), tx));
        registration_rx.push(rx);
        let (tx, rx) = mpsc::unbounded();
        router.customers.push((scope.clone(), tx));
        customer_rx.push(rx);
    }

    let mut tasks: Vec<BoxFuture<'static, ()>> = Vec::new();
    let mut registration_stores: HashMap<String, Store<Registration>> = HashMap::new();
    let mut customer_stores: HashMap<String, Store<CustomerSubscription>> = HashMap::new();
    let mut cluster_stores = None;
    let mut subscriptions = Vec::new();
    for scope in &scopes {
        let (registration_store, registration_writer) =
            reflector::store_shared(SHARED_STORE_BUFFER);
        let (customer_store, customer_writer) = reflector::store_shared(SHARED_STORE_BUFFER);
        let registration_events = registration_writer
            .subscribe()
            .ok_or(Error::CacheNeverReady)?;
        let customer_events = customer_writer.subscribe().ok_or(Error::CacheNeverReady)?;

        let registration_watch = watcher(
            api_for::<Registration>(&client, scope),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(drop_unread_fields)
        .reflect_shared(registration_writer);
        tasks.push(index_events(
            registration_watch,
            scope.clone(),
            index.clone(),
            router.clone(),
            Index::apply_registration,
            forget_and(&kept, Kind::Registration, Index::delete_registration),
            Index::retain_registrations,
        ));
        let customer_watch = watcher(
            api_for::<CustomerSubscription>(&client, scope),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(drop_unread_fields)
        .reflect_shared(customer_writer);
        tasks.push(index_events(
            customer_watch,
            scope.clone(),
            index.clone(),
            router.clone(),
            Index::apply_customer,
            forget_and(&kept, Kind::CustomerSubscription, Index::delete_customer),
            Index::retain_customers,
        ));
        subscriptions.push((
            registration_store.clone(),
            registration_events,
            customer_store.clone(),
            customer_events,
        ));
        match scope {
            Some(ns) => {
                registration_stores.insert(ns.clone(), registration_store);
                customer_stores.insert(ns.clone(), customer_store);
            }
            None => cluster_stores = Some((registration_store, customer_store)),
        }
    }

    let (registrations, customers) = match cluster_stores {
        Some((r, c)) => (Stores::cluster(r), Stores::cluster(c)),
        None => (
            Stores::namespaced(registration_stores),
            Stores::namespaced(customer_stores),
        ),
    };
    settings.metrics.set_ready_reasons(
        registrations.ready_reasons(|r| r.status.as_ref().map(|s| s.conditions.as_slice())),
        customers.ready_reasons(|c| c.status.as_ref().map(|s| s.conditions.as_slice())),
    );
    {
        let (registrations, customers) = (registrations.clone(), customers.clone());
        let health = settings.health.clone();
        tasks.push(Box::pin(async move {
            let synced = async {
                registrations.wait_until_ready().await?;
                customers.wait_until_ready().await
            };
            match synced.await {
                Ok(()) => {
                    info!("caches synced");
                    health.set_caches_synced(true);
                }
                Err(error) => warn!(%error, "a cache will never be ready"),
            }
            // Ending would look like a watch task ending; wait with them instead.
            std::future::pending::<()>().await;
        }));
    }
    let reporter = events::Reporter {
        controller: settings.reporter.clone(),
        instance: std::env::var("POD_NAME").unwrap_or_else(|_| settings.reporter.clone()),
    };
    let (event_queue, queued_events) =
        events::EventQueue::new(events::QUEUE_CAPACITY, settings.metrics.clone());
    let event_publisher = tokio::spawn(events::publish_queued(
        queued_events,
        client.clone(),
        reporter,
        settings.metrics.clone(),
    ));
    let ctx = Arc::new(Context {
        client: client.clone(),
        registrations,
        customers,
        index: index.clone(),
        resolver: resolver.clone(),
        clock,
        events: event_queue,
        backoff: backoff.clone(),
        count_spacing: kept.count_spacing.clone(),
        own_writes: kept.own_writes.clone(),
        metrics: settings.metrics.clone(),
        waiting: kept.waiting.clone(),
    });

    // Upstream changes requeue exactly the objects they affect.
    {
        let mut changes = resolver.changes();
        let index = index.clone();
        let router = router.clone();
        let (registrations, customers) = (ctx.registrations.clone(), ctx.customers.clone());
        let waiting = kept.waiting.clone();
        tasks.push(Box::pin(async move {
            loop {
                match changes.recv().await {
                    Ok(change) => {
                        let mut affected = index.affected_by(&change);
                        if change.upstream_recovered {
                            affected.extend(waiting_on_upstream(&registrations, &customers));
                            affected.extend(parked(&waiting));
                        }
                        router.send(affected);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(missed, "missed metadata changes; re-evaluating everything");
                        router.send(index.affected_by(&crate::resolver::MetadataChange {
                            everything: true,
                            ..Default::default()
                        }));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        }));
    }

    for (
        (registration_store, registration_events, customer_store, customer_events),
        (reg_rx, cust_rx),
    ) in subscriptions
        .into_iter()
        .zip(registration_rx.into_iter().zip(customer_rx))
    {
        let registration_controller =
            Controller::for_shared_stream(registration_events, registration_store)
                .with_config(
                    Config::default()
                        .debounce(Duration::from_millis(500))
                        .concurrency(8),
                )
                .reconcile_on(reg_rx)
                .graceful_shutdown_on(shutdown.clone())
                .run(
                    registration::reconcile,
                    registration::error_policy,
                    ctx.clone(),
                )
                .for_each(|result| async move {
                    if let Err(error) = result {
                        log_controller_error("Registration", &error);
                    }
                });
        let own_writes = kept.own_writes.clone();
        let customer_events = customer_events.filter(move |customer| {
            let own = own_writes.take(
                &ObjKey::of(customer.as_ref()),
                customer.resource_version().as_deref(),
            );
            std::future::ready(!own)
        });
        let customer_controller = Controller::for_shared_stream(customer_events, customer_store)
            .with_config(
                Config::default()
                    .debounce(Duration::from_millis(50))
                    .concurrency(32),
            )
            .reconcile_on(cust_rx)
            .graceful_shutdown_on(shutdown.clone())
            .run(
                customer_subscription::reconcile,
                customer_subscription::error_policy,
                ctx.clone(),
            )
            .for_each(|result| async move {
                if let Err(error) = result {
                    log_controller_error("CustomerSubscription", &error);
                }
            });
        tasks.push(Box::pin(registration_controller));
        tasks.push(Box::pin(customer_controller));
    }

    info!(namespaces = ?settings.namespaces, "controllers starting");
    // The controllers end on shutdown; the watch tasks would run forever, so stop with them.
    let controllers = tasks.split_off(tasks.len() - 2 * scopes.len());
    let background = futures::future::join_all(tasks);
    tokio::select! {
        _ = futures::future::join_all(controllers) => {}
        _ = background => { error!("watch tasks ended unexpectedly"); }
    }
    settings.health.set_caches_synced(false);
    info!("controllers stopped");
    // The publisher ends once the last queue handle (in the context) is gone and it is empty.
    drop(ctx);
    if tokio::time::timeout(events::FLUSH_TIMEOUT, event_publisher)
        .await
        .is_err()
    {
        warn!("events still queued at shutdown were dropped");
    }
    Ok(())
}

/// Objects whose last decision is `MetadataResolverBadGatewayError`: when the metadata server
/// answers again they are re-evaluated at once instead of at their next backoff retry, which
/// after a long outage can be minutes away.
fn waiting_on_upstream(
    registrations: &Stores<Registration>,
    customers: &Stores<CustomerSubscription>,
) -> index::Affected {
    let bad_gateway = |conditions: &[crate::api::Condition]| {
        conditions
            .iter()
            .any(|c| c.reason == crate::policy::Reason::MetadataResolverBadGatewayError.as_str())
    };
    let mut affected = index::Affected::default();
    affected.registrations.extend(
        registrations
            .all()
            .iter()
            .filter(|r| {
                r.status
                    .as_ref()
                    .is_some_and(|s| bad_gateway(&s.conditions))
            })
            .map(|r| ObjKey::of(r.as_ref())),
    );
    affected.customers.extend(
        customers
            .all()
            .iter()
            .filter(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| bad_gateway(&s.conditions))
            })
            .map(|c| ObjKey::of(c.as_ref())),
    );
    affected
}

/// The objects parked while the upstream was treated as down (they have no timer of their
/// own), taken for re-evaluation: it answers again.
fn parked(waiting: &crate::upstream::Waiting<(Kind, ObjKey)>) -> index::Affected {
    let mut affected = index::Affected::default();
    for (kind, key) in waiting.take_all() {
        match kind {
            Kind::Registration => affected.registrations.insert(key),
            Kind::CustomerSubscription => affected.customers.insert(key),
        };
    }
    affected
}

fn log_controller_error<E: std::error::Error, K: std::fmt::Display>(
    kind: &str,
    error: &kube::runtime::controller::Error<E, K>,
) {
    match error {
        // Triggers for objects that are gone (or not yet cached) are routine.
        kube::runtime::controller::Error::ObjectNotFound(_) => {}
        other => warn!(kind, error = %other, "controller error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;

    fn registration(name: &str) -> Registration {
        let mut registration = Registration::new(
            name,
            crate::api::RegistrationSpec {
                subscription_id: "s".into(),
                resource_group: "rg".into(),
                registration_name: None,
                cloud_id: "c".into(),
                billing_model: crate::api::BillingModel::PayAsYouUse,
                agreement_number: None,
                ms_asset_tag: None,
            },
        );
        registration.metadata.namespace = Some("ns".into());
        registration
    }

    fn with_reason<S>(status: &mut Option<S>, reason: crate::policy::Reason)
    where
        S: Default + HasConditionsMut,
    {
        status
            .get_or_insert_with(S::default)
            .conditions_mut()
            .push(crate::api::Condition {
                type_: crate::conditions::READY.into(),
                status: reason.status(),
                reason: reason.as_str().into(),
                message: String::new(),
                last_transition_time: None,
                observed_generation: None,
            });
    }

    trait HasConditionsMut {
        fn conditions_mut(&mut self) -> &mut Vec<crate::api::Condition>;
    }

    impl HasConditionsMut for crate::api::RegistrationStatus {
        fn conditions_mut(&mut self) -> &mut Vec<crate::api::Condition> {
            &mut self.conditions
        }
    }

    impl HasConditionsMut for crate::api::CustomerSubscriptionStatus {
        fn conditions_mut(&mut self) -> &mut Vec<crate::api::Condition> {
            &mut self.conditions
        }
    }

    #[test]
    fn after_an_upstream_recovery_exactly_the_bad_gateway_decisions_are_requeued() {
        use crate::policy::Reason;
        let (registration_store, mut registration_writer) = reflector::store();
        let (customer_store, mut customer_writer) = reflector::store();
        for (name, reason) in [
            ("reg-waiting", Some(Reason::MetadataResolverBadGatewayError)),
            ("reg-registered", Some(Reason::Registered)),
            ("reg-new", None),
        ] {
            let mut r = registration(name);
            if let Some(reason) = reason {
                with_reason(&mut r.status, reason);
            }
            registration_writer.apply_watcher_event(&watcher::Event::Apply(r));
        }
        for (name, reason) in [
            (
                "cust-waiting",
                Some(Reason::MetadataResolverBadGatewayError),
            ),
            ("cust-attached", Some(Reason::Attached)),
            ("cust-rejected", Some(Reason::BadCustomerSubscriptionId)),
            ("cust-new", None),
        ] {
            let mut c = CustomerSubscription::new(
                name,
                crate::api::CustomerSubscriptionSpec {
                    registration_ref: crate::api::RegistrationRef { name: "r".into() },
                    subscription_id: "s".into(),
                    tenant_id: None,
                },
            );
            c.metadata.namespace = Some("ns".into());
            if let Some(reason) = reason {
                with_reason(&mut c.status, reason);
            }
            customer_writer.apply_watcher_event(&watcher::Event::Apply(c));
        }
        let affected = waiting_on_upstream(
            &Stores::cluster(registration_store),
            &Stores::cluster(customer_store),
        );
        assert_eq!(
            affected.registrations.into_iter().collect::<Vec<_>>(),
            [ObjKey::new("ns", "reg-waiting")]
        );
        assert_eq!(
            affected.customers.into_iter().collect::<Vec<_>>(),
            [ObjKey::new("ns", "cust-waiting")]
        );
    }

    #[test]
    fn cached_objects_lose_managed_fields_and_the_last_applied_manifest_only() {
        let mut registration = registration("r");
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
