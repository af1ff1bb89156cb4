//! Thin controllers: watch → cache (reflector stores + index) → decide (policy) → write.

pub mod azure;
mod context;
mod customer_subscription;
mod events;
mod index;
mod registration;
mod routing;
pub mod usage;
mod watch;
mod write;

use std::{future::Future, sync::Arc, time::Duration};

use futures::{StreamExt, channel::mpsc, future::BoxFuture};
use kube::{
    Client, ResourceExt,
    api::ListParams,
    runtime::{Config, Controller, reflector::ObjectRef},
};
use tracing::{error, info, warn};

pub use context::{Backoff, Context, Kind, OwnWrites, Stores, WriteSpacing};
pub use customer_subscription::MANAGER as CUSTOMER_SUBSCRIPTION_MANAGER;
pub use events::Reporter;
pub use index::{Index, ObjKey, is_attached};
pub use registration::{FINALIZER, MANAGER as REGISTRATION_MANAGER};
use routing::{Route, Scope};
pub use watch::{Caches, INVALID_OBJECT};
use watch::{PerObject, api_for};

use crate::{
    api::{CustomerSubscription, Registration},
    conditions::Clock,
    resolver::MetadataResolver,
    runtime::{Health, Metrics, metrics::ErrorCategory},
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
    #[error("cannot build a patch: {0}")]
    InvalidPatch(String),
}

impl Error {
    /// What failed, for the `category` label of the reconcile error counter.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Error::Write { source, .. } | Error::Api(source) => api_error_category(source),
            Error::CrdMissing { .. } => ErrorCategory::NotFound,
            Error::CacheNeverReady | Error::InvalidPatch(_) => ErrorCategory::Other,
        }
    }
}

fn api_error_category(error: &kube::Error) -> ErrorCategory {
    match error {
        kube::Error::Api(status) => match status.code {
            409 => ErrorCategory::Conflict,
            429 => ErrorCategory::Throttled,
            404 | 410 => ErrorCategory::NotFound,
            401 | 403 => ErrorCategory::Forbidden,
            400 | 422 => ErrorCategory::Rejected,
            500..=599 => ErrorCategory::ServerError,
            _ => ErrorCategory::Other,
        },
        kube::Error::HyperError(_) | kube::Error::Service(_) => ErrorCategory::Unreachable,
        _ => ErrorCategory::Other,
    }
}

/// What the operator watches and how it behaves.
pub struct Settings {
    /// Namespaces to watch; empty means the whole cluster.
    pub namespaces: Vec<String>,
    /// Who reports Events: the operator, and this replica (its pod name).
    pub reporter: Reporter,
    /// How the Registration controller runs.
    pub registrations: Tuning,
    /// How the CustomerSubscription controller runs.
    pub customer_subscriptions: Tuning,
    /// Where reconciles and writes are counted.
    pub metrics: Arc<Metrics>,
    /// Told when the caches are filled.
    pub health: Health,
    /// Azure mode (`run --mode azure`); `None` in local mode.
    pub azure: Option<Arc<azure::AzureMode>>,
    /// The usage controller (DESIGN.md §9); `None` runs none.
    pub usage: Option<Arc<usage::UsageMode>>,
}

/// How one controller schedules its reconciles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// How long a requeued object waits for further triggers before it is reconciled once.
    pub debounce: Duration,
    /// Reconciles running at once.
    pub concurrency: u16,
}

impl Tuning {
    /// A Registration reconcile counts its dependents: worth batching their changes.
    pub const REGISTRATIONS: Tuning = Tuning {
        debounce: Duration::from_millis(500),
        concurrency: 8,
    };
    pub const CUSTOMER_SUBSCRIPTIONS: Tuning = Tuning {
        debounce: Duration::from_millis(50),
        concurrency: 32,
    };

    fn config(self) -> Config {
        Config::default()
            .debounce(self.debounce)
            .concurrency(self.concurrency)
    }
}

/// Longest a Registration status write that only changes `customerSubscriptionCount` waits
/// after the previous write while dependents keep changing (see [`WriteSpacing`]).
pub const COUNT_WRITE_INTERVAL: Duration = Duration::from_secs(5);
/// How long the count must hold still before such a write goes earlier.
pub const COUNT_SETTLE: Duration = Duration::from_secs(1);

/// Fails with a clear message when the CRDs are not installed.
pub async fn ensure_crds_installed(client: &Client, namespaces: &[String]) -> Result<(), Error> {
    let scope: Scope = namespaces.first().cloned();
    ensure_served::<Registration>(client, &scope).await?;
    ensure_served::<CustomerSubscription>(client, &scope).await
}

async fn ensure_served<K>(client: &Client, scope: &Scope) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let probe = ListParams::default().limit(1);
    match api_for::<K>(client, scope).list_metadata(&probe).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(Error::CrdMissing {
            crd: format!("{}.{}", K::plural(&()), K::group(&())),
        }),
        Err(e) => Err(Error::Api(e)),
    }
}

/// Starts the watches and caches of every watched scope, without the controllers: a standby
/// runs these, so that it takes over with its caches filled.
pub fn start_caches(client: &Client, settings: &Settings) -> Result<Caches, Error> {
    let kept = PerObject {
        backoff: Arc::new(Backoff::new(
            Duration::from_secs(1),
            Duration::from_secs(300),
        )),
        waiting: Arc::default(),
        count_spacing: Arc::new(WriteSpacing::new(COUNT_WRITE_INTERVAL, COUNT_SETTLE)),
        own_writes: Arc::new(OwnWrites::default()),
    };
    Caches::start(client, settings, kept)
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
    let caches = start_caches(&client, &settings)?;
    run_controllers(caches, client, resolver, clock, settings, shutdown).await
}

/// Runs both controllers over `caches` until `shutdown` completes. They start by reconciling
/// every cached object, whatever the watches handed on before.
pub async fn run_controllers(
    mut caches: Caches,
    client: Client,
    resolver: Arc<dyn MetadataResolver>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let (event_queue, queued_events) =
        events::EventQueue::new(events::QUEUE_CAPACITY, settings.metrics.clone());
    let event_publisher = tokio::spawn(events::publish_queued(
        queued_events,
        client.clone(),
        settings.reporter.clone(),
        settings.metrics.clone(),
        caches.kept.waiting.clone(),
    ));
    caches.invalid.report_to(event_queue.clone());
    let ctx = Arc::new(Context {
        client,
        registrations: caches.registrations.clone(),
        customers: caches.customers.clone(),
        index: caches.index.clone(),
        resolver: resolver.clone(),
        clock,
        events: event_queue,
        backoff: caches.kept.backoff.clone(),
        count_spacing: caches.kept.count_spacing.clone(),
        own_writes: caches.kept.own_writes.clone(),
        metrics: settings.metrics.clone(),
        waiting: caches.kept.waiting.clone(),
        router: caches.router.clone(),
        azure: settings.azure.clone(),
    });

    let mut controllers: Vec<BoxFuture<'static, ()>> = Vec::new();
    let mut routes = Vec::new();
    for feed in caches.feeds().await? {
        let (route, requeues) = Route::new(feed.scope.clone());
        routes.push(route);
        controllers.push(controller(
            Controller::for_shared_stream(feed.registration_triggers, feed.registrations),
            requeues.registrations,
            settings.registrations,
            shutdown.clone(),
            registration::reconcile,
            registration::error_policy,
            ctx.clone(),
            settings.health.clone(),
        ));
        // A status this controller wrote comes back as a watch event: no need to decide again.
        let own_writes = ctx.own_writes.clone();
        let customer_triggers = feed.customer_triggers.filter(move |customer| {
            let own = own_writes.take(
                &ObjKey::of(customer.as_ref()),
                customer.resource_version().as_deref(),
            );
            std::future::ready(!own)
        });
        controllers.push(controller(
            Controller::for_shared_stream(customer_triggers, feed.customers),
            requeues.customers,
            settings.customer_subscriptions,
            shutdown.clone(),
            customer_subscription::reconcile,
            customer_subscription::error_policy,
            ctx.clone(),
            settings.health.clone(),
        ));
    }
    if let Some(mode) = settings.usage.clone() {
        controllers.push(Box::pin(usage::run(
            ctx.clone(),
            mode,
            settings.health.clone(),
            shutdown.clone(),
        )));
    }
    caches.router.connect(routes);
    let metadata_changes = tokio::spawn(routing::route_metadata_changes(
        resolver,
        caches.kept.waiting.clone(),
        caches.index.clone(),
        caches.router.clone(),
        caches.registrations.clone(),
        caches.customers.clone(),
    ));

    let arm_recoveries = settings.azure.as_ref().map(|azure| {
        tokio::spawn(routing::route_arm_recoveries(
            azure.arm.recoveries(),
            caches.kept.waiting.clone(),
            caches.router.clone(),
            caches.registrations.clone(),
            caches.customers.clone(),
        ))
    });

    info!(namespaces = ?settings.namespaces, "controllers starting");
    // The controllers end on shutdown; the watches would run forever, so stop with them.
    tokio::select! {
        _ = futures::future::join_all(controllers) => {}
        _ = caches.watches_ended() => { error!("watch tasks ended unexpectedly"); }
    }
    metadata_changes.abort();
    // No drain outlives the controllers: the Events it holds back are flushed below.
    caches.kept.waiting.end_drain();
    if let Some(task) = arm_recoveries {
        task.abort();
    }
    caches.router.disconnect();
    caches.invalid.stop_reporting();
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

/// How soon an object reconciled before every cache listed is looked at again.
const UNTIL_SYNCED_REQUEUE: Duration = Duration::from_millis(200);

/// Whether a reconcile must wait: kube-runtime starts a controller once its own store has
/// listed, but a decision reads both kinds' caches. A CustomerSubscription decided before the
/// Registrations listed is `RegistrationNotFound` for a moment after every restart: an Event,
/// and a new Ready transition time, which usage attribution takes as the attach time (DESIGN.md
/// §9), so the hours between went to the registration subscription (the usage kill test).
fn until_synced(caches_synced: bool) -> Option<kube::runtime::controller::Action> {
    (!caches_synced).then(|| kube::runtime::controller::Action::requeue(UNTIL_SYNCED_REQUEUE))
}

/// Reconciles everything in the cache once, when a controller starts.
fn everything_once() -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::once(std::future::ready(()))
}

/// One kind's controller in one scope: reconciles what its watch hands on, what is requeued
/// through the router, and at its start everything in its cache.
#[allow(clippy::too_many_arguments)]
fn controller<K, ReconcileFut>(
    controller: Controller<K>,
    requeues: mpsc::UnboundedReceiver<ObjectRef<K>>,
    tuning: Tuning,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
    reconcile: fn(Arc<K>, Arc<Context>) -> ReconcileFut,
    error_policy: fn(Arc<K>, &Error, Arc<Context>) -> kube::runtime::controller::Action,
    ctx: Arc<Context>,
    health: Health,
) -> BoxFuture<'static, ()>
where
    K: write::StatusOwner + Send + Sync + 'static,
    ReconcileFut:
        Future<Output = Result<kube::runtime::controller::Action, Error>> + Send + 'static,
{
    Box::pin(
        controller
            .with_config(tuning.config())
            .reconcile_all_on(everything_once())
            .reconcile_on(requeues)
            .graceful_shutdown_on(shutdown)
            .run(
                move |object, ctx| {
                    let synced = health.caches_synced();
                    async move {
                        match until_synced(synced) {
                            Some(later) => Ok(later),
                            None => reconcile(object, ctx).await,
                        }
                    }
                },
                error_policy,
                ctx,
            )
            .for_each(|result| async move {
                if let Err(error) = result {
                    log_controller_error(&K::kind(&()), &error);
                }
            }),
    )
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

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("refused", "Reason").with_code(code),
        ))
    }

    #[test]
    fn nothing_is_decided_until_every_cache_has_listed() {
        assert_eq!(
            until_synced(false),
            Some(kube::runtime::controller::Action::requeue(
                UNTIL_SYNCED_REQUEUE
            ))
        );
        assert_eq!(until_synced(true), None);
    }

    #[test]
    fn reconcile_errors_are_categorised_by_what_failed() {
        let cases = [
            (409, ErrorCategory::Conflict),
            (429, ErrorCategory::Throttled),
            (404, ErrorCategory::NotFound),
            (410, ErrorCategory::NotFound),
            (401, ErrorCategory::Forbidden),
            (403, ErrorCategory::Forbidden),
            (400, ErrorCategory::Rejected),
            (422, ErrorCategory::Rejected),
            (500, ErrorCategory::ServerError),
            (503, ErrorCategory::ServerError),
            (418, ErrorCategory::Other),
        ];
        for (code, want) in cases {
            let write = Error::Write {
                namespace: "ns".into(),
                name: "n".into(),
                source: api_error(code),
            };
            assert_eq!(write.category(), want, "HTTP {code}");
            assert_eq!(Error::Api(api_error(code)).category(), want, "HTTP {code}");
        }
        assert_eq!(Error::CacheNeverReady.category(), ErrorCategory::Other);
        let unreachable = Error::Api(kube::Error::Service(Box::new(std::io::Error::other(
            "connection refused",
        ))));
        assert_eq!(unreachable.category(), ErrorCategory::Unreachable);
    }
}
