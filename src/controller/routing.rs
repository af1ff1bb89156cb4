//! Routing: a requeue request goes to the controller of the scope its object lives in, and an
//! upstream change requeues exactly the objects it affects.
//!
//! The watches route from the moment they start, the controllers connect when they start (on a
//! standby: when it becomes the leader). Until then requests are dropped: the controllers
//! reconcile every cached object when they start, which covers whatever was dropped.

use std::{
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use futures::channel::mpsc;
use kube::runtime::reflector::ObjectRef;
use tracing::warn;

use super::{
    context::{Kind, Stores},
    index::{self, Index, ObjKey},
};
use crate::{
    api::{Condition, CustomerSubscription, Registration},
    policy::Reason,
    resolver::{MetadataChange, MetadataResolver},
    upstream::Waiting,
};

/// A watched scope: one namespace, or the whole cluster (`None`).
pub type Scope = Option<String>;

pub fn in_scope(scope: &Scope, namespace: &str) -> bool {
    scope.as_deref().is_none_or(|ns| ns == namespace)
}

/// The requeue channel of one scope's controller of each kind.
pub struct Route {
    pub scope: Scope,
    pub registrations: mpsc::UnboundedSender<ObjectRef<Registration>>,
    pub customers: mpsc::UnboundedSender<ObjectRef<CustomerSubscription>>,
}

/// The receiving side of a [`Route`], for the controllers of its scope.
pub struct Requeues {
    pub registrations: mpsc::UnboundedReceiver<ObjectRef<Registration>>,
    pub customers: mpsc::UnboundedReceiver<ObjectRef<CustomerSubscription>>,
}

impl Route {
    pub fn new(scope: Scope) -> (Self, Requeues) {
        let (registrations, registration_rx) = mpsc::unbounded();
        let (customers, customer_rx) = mpsc::unbounded();
        (
            Self {
                scope,
                registrations,
                customers,
            },
            Requeues {
                registrations: registration_rx,
                customers: customer_rx,
            },
        )
    }
}

/// Routes requeue requests to the controller of the scope an object lives in.
#[derive(Clone, Default)]
pub struct Router {
    routes: Arc<RwLock<Vec<Route>>>,
}

impl Router {
    /// Connects the controllers: from now on requests reach them.
    pub fn connect(&self, routes: Vec<Route>) {
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = routes;
    }

    /// Disconnects the controllers (they stopped).
    pub fn disconnect(&self) {
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub fn send(&self, affected: index::Affected) {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        let route_of = |key: &ObjKey| routes.iter().find(|r| in_scope(&r.scope, &key.namespace));
        for key in affected.registrations {
            if let Some(route) = route_of(&key) {
                let _ = route
                    .registrations
                    .unbounded_send(ObjectRef::new(&key.name).within(&key.namespace));
            }
        }
        for key in affected.customers {
            if let Some(route) = route_of(&key) {
                let _ = route
                    .customers
                    .unbounded_send(ObjectRef::new(&key.name).within(&key.namespace));
            }
        }
    }
}

/// Requeues what each upstream change affects, until the resolver stops announcing changes.
pub async fn route_metadata_changes(
    resolver: Arc<dyn MetadataResolver>,
    waiting: Arc<Waiting<(Kind, ObjKey)>>,
    index: Arc<Index>,
    router: Router,
    registrations: Stores<Registration>,
    customers: Stores<CustomerSubscription>,
) {
    let mut changes = resolver.changes();
    // Dropped (and so aborted) with this task.
    let mut drains = tokio::task::JoinSet::new();
    loop {
        match changes.recv().await {
            Ok(change) => {
                let mut affected = index.affected_by(&change);
                if change.upstream_recovered {
                    let taken = waiters(&waiting, &registrations, &customers);
                    waiting.start_drain(waiter_keys(&taken));
                    affected.extend(taken);
                    while drains.try_join_next().is_some() {}
                    drains.spawn(refresh_after_drain(
                        waiting.clone(),
                        router.clone(),
                        resolver.refresh_interval(),
                    ));
                }
                router.send(affected);
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                warn!(missed, "missed metadata changes; re-evaluating everything");
                router.send(index.affected_by(&MetadataChange {
                    everything: true,
                    ..Default::default()
                }));
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
        }
    }
}

/// A drain ends this long after its start at the latest, so that objects that never get
/// decided (their writes keep failing) do not hold up the refreshes of the others for good;
/// at least one refresh interval.
const DRAIN_MAX: Duration = Duration::from_secs(60);

/// Waits for the drain to end (every waiter decided, or [`DRAIN_MAX`] or one refresh
/// interval, whichever is longer), then refreshes the objects it deferred (see
/// [`Waiting`]): spread over a tenth of the interval, from one interval after the end, as
/// each would have been refreshed after its own decision.
async fn refresh_after_drain(
    waiting: Arc<Waiting<(Kind, ObjKey)>>,
    router: Router,
    interval: Option<Duration>,
) {
    let bound = interval.unwrap_or_default().max(DRAIN_MAX);
    let _ = tokio::time::timeout(bound, waiting.drained()).await;
    let deferred = waiting.end_drain();
    let Some(interval) = interval else {
        return;
    };
    let ended = tokio::time::Instant::now();
    for (at, (kind, key)) in refresh_offsets(deferred.len(), interval).zip(deferred) {
        tokio::time::sleep_until(ended + at).await;
        let mut refresh = index::Affected::default();
        match kind {
            Kind::Registration => refresh.registrations.insert(key),
            Kind::CustomerSubscription => refresh.customers.insert(key),
        };
        router.send(refresh);
    }
}

/// When each of `n` deferred refreshes is due after the drain: evenly over
/// `[interval, 1.1 interval)`, the jitter each object's own refresh has.
fn refresh_offsets(n: usize, interval: Duration) -> impl Iterator<Item = Duration> {
    (0..n).map(move |i| interval + interval.mul_f64(0.1 * i as f64 / n as f64))
}

/// The keys of objects taken for re-evaluation, as [`Waiting`] knows them.
fn waiter_keys(affected: &index::Affected) -> impl Iterator<Item = (Kind, ObjKey)> + '_ {
    let registrations = affected
        .registrations
        .iter()
        .map(|key| (Kind::Registration, key.clone()));
    let customers = affected
        .customers
        .iter()
        .map(|key| (Kind::CustomerSubscription, key.clone()));
    registrations.chain(customers)
}

/// Requeues, each time ARM answers again (azure mode), every object waiting on it: the same
/// re-evaluation a resolver's recovery triggers.
pub async fn route_arm_recoveries(
    mut recoveries: tokio::sync::broadcast::Receiver<()>,
    waiting: Arc<Waiting<(Kind, ObjKey)>>,
    router: Router,
    registrations: Stores<Registration>,
    customers: Stores<CustomerSubscription>,
) {
    use tokio::sync::broadcast::error::RecvError;
    while let Ok(()) | Err(RecvError::Lagged(_)) = recoveries.recv().await {
        router.send(waiters(&waiting, &registrations, &customers));
    }
}

/// Every object waiting on an upstream that answers again, taken for re-evaluation.
fn waiters(
    waiting: &Waiting<(Kind, ObjKey)>,
    registrations: &Stores<Registration>,
    customers: &Stores<CustomerSubscription>,
) -> index::Affected {
    let mut affected = waiting_on_upstream(registrations, customers);
    affected.extend(parked(waiting));
    affected
}

/// The objects parked while the upstream was treated as down (they have no timer of their
/// own), taken for re-evaluation: it answers again.
fn parked(waiting: &Waiting<(Kind, ObjKey)>) -> index::Affected {
    let mut affected = index::Affected::default();
    for (kind, key) in waiting.take_all() {
        match kind {
            Kind::Registration => affected.registrations.insert(key),
            Kind::CustomerSubscription => affected.customers.insert(key),
        };
    }
    affected
}

/// Objects whose last decision is `MetadataResolverBadGatewayError`: when the metadata server
/// answers again they are re-evaluated at once instead of at their next backoff retry, which
/// after a long outage can be minutes away.
fn waiting_on_upstream(
    registrations: &Stores<Registration>,
    customers: &Stores<CustomerSubscription>,
) -> index::Affected {
    let bad_gateway = |conditions: &[Condition]| {
        conditions
            .iter()
            .any(|c| c.reason == Reason::MetadataResolverBadGatewayError.as_str())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::index::tests::{customer, registration};
    use futures::channel::mpsc::TryRecvError;
    use kube::runtime::{reflector, watcher};

    fn with_reason<S>(status: &mut Option<S>, reason: Reason)
    where
        S: Default + HasConditionsMut,
    {
        status
            .get_or_insert_with(S::default)
            .conditions_mut()
            .push(Condition {
                type_: crate::conditions::READY.into(),
                status: reason.status(),
                reason: reason.as_str().into(),
                message: String::new(),
                last_transition_time: None,
                observed_generation: None,
            });
    }

    trait HasConditionsMut {
        fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    }

    impl HasConditionsMut for crate::api::RegistrationStatus {
        fn conditions_mut(&mut self) -> &mut Vec<Condition> {
            &mut self.conditions
        }
    }

    impl HasConditionsMut for crate::api::CustomerSubscriptionStatus {
        fn conditions_mut(&mut self) -> &mut Vec<Condition> {
            &mut self.conditions
        }
    }

    #[test]
    fn after_an_upstream_recovery_exactly_the_bad_gateway_decisions_are_requeued() {
        let (registration_store, mut registration_writer) = reflector::store();
        let (customer_store, mut customer_writer) = reflector::store();
        for (name, reason) in [
            ("reg-waiting", Some(Reason::MetadataResolverBadGatewayError)),
            ("reg-registered", Some(Reason::Registered)),
            ("reg-new", None),
        ] {
            let mut r = registration("ns", name, "s", "c", 1);
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
            let mut c = customer("ns", name, "r", "s", None);
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
    fn deferred_refreshes_spread_over_a_tenth_of_the_interval_after_it() {
        let interval = Duration::from_secs(10);
        let offsets: Vec<Duration> = refresh_offsets(4, interval).collect();
        assert_eq!(
            offsets,
            [10_000, 10_250, 10_500, 10_750].map(Duration::from_millis)
        );
        assert_eq!(refresh_offsets(0, interval).count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_drain_its_deferred_refreshes_reach_the_controller_one_interval_later() {
        let waiting = Arc::new(Waiting::default());
        let router = Router::default();
        let (route, mut requeues) = Route::new(None);
        router.connect(vec![route]);
        let waiter = (Kind::CustomerSubscription, ObjKey::new("ns", "waiter"));
        let settled = (Kind::CustomerSubscription, ObjKey::new("ns", "settled"));
        waiting.start_drain([waiter.clone()]);
        let drain = tokio::spawn(refresh_after_drain(
            waiting.clone(),
            router.clone(),
            Some(Duration::from_secs(5)),
        ));
        assert!(waiting.defer_refresh(&settled), "decided while draining");
        tokio::time::sleep(Duration::from_secs(2)).await;
        waiting.leave(&waiter);
        let drained_at = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(4_990)).await;
        assert_eq!(requeues.customers.try_recv(), Err(TryRecvError::Empty));
        drain.await.expect("drain task");
        assert_eq!(
            requeues.customers.try_recv(),
            Ok(ObjectRef::new("settled").within("ns"))
        );
        assert_eq!(drained_at.elapsed(), Duration::from_secs(5));
        assert_eq!(requeues.customers.try_recv(), Err(TryRecvError::Empty));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_that_never_completes_ends_after_its_bound() {
        let waiting = Arc::new(Waiting::default());
        let never = (Kind::CustomerSubscription, ObjKey::new("ns", "never"));
        waiting.start_drain([never]);
        let started = tokio::time::Instant::now();
        refresh_after_drain(waiting.clone(), Router::default(), None).await;
        assert_eq!(started.elapsed(), DRAIN_MAX);
        assert_eq!(waiting.draining(), 0);
    }

    #[test]
    fn requests_reach_the_controller_of_their_scope_once_connected() {
        let router = Router::default();
        let affected = || index::Affected {
            registrations: [ObjKey::new("a", "r")].into(),
            customers: [ObjKey::new("b", "c")].into(),
        };
        // Nothing connected yet (a standby): dropped, not queued.
        router.send(affected());
        let (a, mut a_rx) = Route::new(Some("a".into()));
        let (b, mut b_rx) = Route::new(Some("b".into()));
        router.connect(vec![a, b]);
        router.send(affected());
        assert_eq!(
            a_rx.registrations.try_recv(),
            Ok(ObjectRef::new("r").within("a"))
        );
        assert_eq!(a_rx.customers.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(
            b_rx.customers.try_recv(),
            Ok(ObjectRef::new("c").within("b"))
        );
        assert_eq!(b_rx.registrations.try_recv(), Err(TryRecvError::Empty));
        router.disconnect();
        router.send(affected());
        assert_eq!(a_rx.registrations.try_recv(), Err(TryRecvError::Closed));
    }
}
