//! Prometheus metrics of the operator, in the classic text format (version 0.0.4).
//!
//! Counters and histograms the controllers update as they go live in a [`Metrics`] shared
//! through the controller context. Everything that already has an owner — the resolver's
//! counters, the number of objects by Ready reason, the catalog state — is read at scrape time
//! from its source instead of being copied into a second set of counters.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, NoLabelSet},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::{
    domain::arm::{ArmObserver, ArmOperation},
    policy::Reason,
    resolver::MetadataResolver,
    upstream::Breaker,
};

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Label value of the Registration controller.
pub const REGISTRATION: &str = "registration";
/// Label value of the CustomerSubscription controller.
pub const CUSTOMER_SUBSCRIPTION: &str = "customersubscription";
/// The `controller` label of the usage controller's status writes.
pub const USAGE: &str = "usage";

/// Upper bounds (seconds) of the reconcile duration buckets.
const RECONCILE_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Reason label of an object without a Ready condition for its current generation.
const NO_DECISION: &str = "Pending";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: &'static str,
    result: &'static str,
}

/// Why a reconcile failed, as far as the caller can act on it: the `category` label of
/// `azs_csp_reconcile_errors_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum ErrorCategory {
    /// Another writer changed the object first (HTTP 409); the retry reads the new version.
    Conflict,
    /// The API server asked to slow down (HTTP 429).
    Throttled,
    /// The object is gone (HTTP 404).
    NotFound,
    /// The operator's RBAC does not allow the request (HTTP 401, 403).
    Forbidden,
    /// The API server refused the body (HTTP 400, 422): a bug or a schema mismatch.
    Rejected,
    /// The API server failed (HTTP 5xx).
    ServerError,
    /// The API server could not be reached, or did not answer in time.
    Unreachable,
    /// Anything else.
    Other,
}

impl ErrorCategory {
    pub const ALL: [ErrorCategory; 8] = [
        Self::Conflict,
        Self::Throttled,
        Self::NotFound,
        Self::Forbidden,
        Self::Rejected,
        Self::ServerError,
        Self::Unreachable,
        Self::Other,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileErrorLabels {
    controller: &'static str,
    category: ErrorCategory,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArmRequestLabels {
    operation: &'static str,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistrationLabels {
    namespace: String,
    registration: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArmOperationLabels {
    operation: &'static str,
}

/// Upper bounds (seconds) of the ARM request duration buckets.
const ARM_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn arm_histogram() -> Histogram {
    Histogram::new(ARM_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

fn reconcile_histogram() -> Histogram {
    Histogram::new(RECONCILE_BUCKETS)
}

/// The Ready reason of every cached object of one kind, read at scrape time from whoever
/// caches the objects; `None` for an object not yet decided for its current generation.
pub type ReadyReasons = Box<dyn Fn() -> Vec<Option<String>> + Send + Sync>;

/// What the scrape-time collector reads; filled in once the parts exist.
#[derive(Default)]
struct Sources {
    resolver: Option<Arc<dyn MetadataResolver>>,
    ready_reasons: Option<Arc<ObjectsByReason>>,
    upstreams: Vec<Arc<Breaker>>,
}

impl ArmObserver for Metrics {
    fn answered(&self, operation: ArmOperation, code: &str, elapsed: Duration) {
        let operation = operation.as_str();
        self.arm_requests
            .get_or_create(&ArmRequestLabels {
                operation,
                code: code.to_string(),
            })
            .inc();
        if code != "short_circuited" {
            self.arm_duration
                .get_or_create(&ArmOperationLabels { operation })
                .observe(elapsed.as_secs_f64());
        }
    }

    fn throttled(&self) {
        self.arm_throttled.inc();
    }
}

/// Where the by-reason gauges get their counts.
struct ObjectsByReason {
    registrations: ReadyReasons,
    customers: ReadyReasons,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sources")
            .field("resolver", &self.resolver.is_some())
            .field("ready_reasons", &self.ready_reasons.is_some())
            .field("upstreams", &self.upstreams)
            .finish()
    }
}

/// The operator's metrics registry and the handles the controllers update.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    invalid_objects: Family<ControllerLabels, Counter>,
    reconcile_duration: HistogramFamily,
    status_writes: Family<ControllerLabels, Counter>,
    finalizer_writes: Counter,
    events: Family<EventLabels, Counter>,
    leader: Gauge,
    arm_requests: Family<ArmRequestLabels, Counter>,
    arm_duration: Family<ArmOperationLabels, Histogram, fn() -> Histogram>,
    arm_throttled: Counter,
    usage_records: Family<OutcomeLabels, Counter>,
    usage_windows: Family<ResultLabels, Counter>,
    usage_lag: Family<RegistrationLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    usage_sink_requests: Family<CodeLabels, Counter>,
    sources: Arc<Mutex<Sources>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "azs_csp_reconcile",
            "Reconciles by controller and result (success or error)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<ReconcileErrorLabels, Counter>::default();
        registry.register(
            "azs_csp_reconcile_errors",
            "Failed reconciles by controller and category (what failed: conflict, throttled, ...); the sum is azs_csp_reconcile_total{result=\"error\"}",
            reconcile_errors.clone(),
        );
        let invalid_objects = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "azs_csp_invalid_objects",
            "Stored objects skipped because they do not deserialize into the operator's types, by controller (one per object version)",
            invalid_objects.clone(),
        );
        let reconcile_duration: HistogramFamily =
            Family::new_with_constructor(reconcile_histogram as fn() -> Histogram);
        registry.register(
            "azs_csp_reconcile_duration_seconds",
            "Duration of reconciles by controller",
            reconcile_duration.clone(),
        );
        let status_writes = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "azs_csp_status_writes",
            "Status writes (server-side applies) by controller; settled objects are not rewritten",
            status_writes.clone(),
        );
        let finalizer_writes = Counter::default();
        registry.register(
            "azs_csp_finalizer_writes",
            "Finalizer patches of Registrations (added or removed)",
            finalizer_writes.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "azs_csp_events",
            "Kubernetes Events by outcome: published, failed (the API refused), dropped (the queue was full)",
            events.clone(),
        );
        for outcome in ["published", "failed", "dropped"] {
            drop(events.get_or_create(&EventLabels { outcome }));
        }
        let leader = Gauge::default();
        registry.register(
            "azs_csp_leader",
            "1 while this process runs the controllers (the leader, or the only replica without leader election), else 0",
            leader.clone(),
        );
        let arm_requests = Family::<ArmRequestLabels, Counter>::default();
        registry.register(
            "azs_csp_arm_requests",
            "ARM requests (azure mode) by operation and code: the HTTP status, or unreachable, credential (no token), short_circuited (not sent: ARM is treated as down)",
            arm_requests.clone(),
        );
        let arm_duration: Family<ArmOperationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(arm_histogram as fn() -> Histogram);
        registry.register(
            "azs_csp_arm_request_duration_seconds",
            "Duration of ARM requests (azure mode) by operation",
            arm_duration.clone(),
        );
        let arm_throttled = Counter::default();
        registry.register(
            "azs_csp_arm_throttled",
            "ARM answers 429 (azure mode): every write then waits for the Retry-After",
            arm_throttled.clone(),
        );
        let usage_records = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "azs_csp_usage_records",
            "Usage records of ingested windows by outcome: forwarded (unmapped_meter and late are also forwarded), or the cause a bad record was rejected for",
            usage_records.clone(),
        );
        let usage_windows = Family::<ResultLabels, Counter>::default();
        registry.register(
            "azs_csp_usage_windows",
            "Hourly usage windows by result: done (every batch acknowledged), source_failed, sink_failed",
            usage_windows.clone(),
        );
        let usage_lag =
            Family::<RegistrationLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "azs_csp_usage_lag_seconds",
            "How far each Registration's usage checkpoint (status.usage.ingestedThrough) is behind now",
            usage_lag.clone(),
        );
        let usage_sink_requests = Family::<CodeLabels, Counter>::default();
        registry.register(
            "azs_csp_usage_sink_requests",
            "Batches POSTed to the usage sink by code: the HTTP status, or unreachable",
            usage_sink_requests.clone(),
        );
        let sources = Arc::new(Mutex::new(Sources::default()));
        registry.register_collector(Box::new(ScrapeCollector {
            sources: sources.clone(),
        }));
        for controller in [REGISTRATION, CUSTOMER_SUBSCRIPTION] {
            // Present from the first scrape, so that rate() sees the first increment.
            for result in ["success", "error"] {
                drop(reconciles.get_or_create(&ReconcileLabels { controller, result }));
            }
            for category in ErrorCategory::ALL {
                drop(reconcile_errors.get_or_create(&ReconcileErrorLabels {
                    controller,
                    category,
                }));
            }
            drop(status_writes.get_or_create(&ControllerLabels { controller }));
            drop(invalid_objects.get_or_create(&ControllerLabels { controller }));
        }
        Self {
            registry,
            reconciles,
            reconcile_errors,
            invalid_objects,
            reconcile_duration,
            status_writes,
            finalizer_writes,
            events,
            leader,
            arm_requests,
            arm_duration,
            arm_throttled,
            usage_records,
            usage_windows,
            usage_lag,
            usage_sink_requests,
            sources,
        }
    }

    /// Records one finished reconcile: `Err` names why it failed.
    pub fn observe_reconcile(
        &self,
        controller: &'static str,
        outcome: Result<(), ErrorCategory>,
        elapsed: Duration,
    ) {
        let result = if outcome.is_ok() { "success" } else { "error" };
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
        if let Err(category) = outcome {
            self.reconcile_errors
                .get_or_create(&ReconcileErrorLabels {
                    controller,
                    category,
                })
                .inc();
        }
        self.reconcile_duration
            .get_or_create(&ControllerLabels { controller })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts `n` usage records of an ingested window under `outcome`.
    pub fn usage_records(&self, outcome: &str, n: u64) {
        if n > 0 {
            self.usage_records
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.to_string(),
                })
                .inc_by(n);
        }
    }

    /// Counts one usage window by result (`done`, `source_failed`, `sink_failed`).
    pub fn usage_window(&self, result: &'static str) {
        self.usage_windows
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Sets how far a Registration's usage checkpoint is behind now.
    pub fn set_usage_lag(&self, namespace: &str, registration: &str, seconds: f64) {
        self.usage_lag
            .get_or_create(&RegistrationLabels {
                namespace: namespace.to_string(),
                registration: registration.to_string(),
            })
            .set(seconds);
    }

    /// Counts one batch sent to the usage sink by code.
    pub fn usage_sink_request(&self, code: &str) {
        self.usage_sink_requests
            .get_or_create(&CodeLabels {
                code: code.to_string(),
            })
            .inc();
    }

    /// Records one status write.
    pub fn status_written(&self, controller: &'static str) {
        self.status_writes
            .get_or_create(&ControllerLabels { controller })
            .inc();
    }

    /// Records one version of a stored object skipped because it does not deserialize.
    pub fn invalid_object(&self, controller: &'static str) {
        self.invalid_objects
            .get_or_create(&ControllerLabels { controller })
            .inc();
    }

    /// Records one finalizer patch.
    pub fn finalizer_written(&self) {
        self.finalizer_writes.inc();
    }

    /// Records one Event created.
    pub fn event_published(&self) {
        self.event("published");
    }

    /// Records one Event the API refused.
    pub fn event_failed(&self) {
        self.event("failed");
    }

    /// Records one Event dropped because the queue was full.
    pub fn event_dropped(&self) {
        self.event("dropped");
    }

    fn event(&self, outcome: &'static str) {
        self.events.get_or_create(&EventLabels { outcome }).inc();
    }

    /// Whether this process runs the controllers.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Exposes the resolver's counters.
    pub fn set_resolver(&self, resolver: Arc<dyn MetadataResolver>) {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .resolver = Some(resolver);
    }

    /// Exposes the state of an upstream's circuit breaker, under its `upstream` label.
    pub fn add_upstream(&self, breaker: Arc<Breaker>) {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upstreams
            .push(breaker);
    }

    /// Exposes the number of objects by Ready reason, counted from what these return.
    pub fn set_ready_reasons(&self, registrations: ReadyReasons, customers: ReadyReasons) {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ready_reasons = Some(Arc::new(ObjectsByReason {
            registrations,
            customers,
        }));
    }

    /// The current metrics in the Prometheus text format.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Reads what other parts own at scrape time.
#[derive(Debug)]
struct ScrapeCollector {
    sources: Arc<Mutex<Sources>>,
}

/// Counts by reason, with every reason in `known` present (zero when unused) and undecided
/// objects counted as [`NO_DECISION`].
fn count_reasons(
    known: &[Reason],
    reasons: impl IntoIterator<Item = Option<String>>,
) -> BTreeMap<String, i64> {
    let mut counts: BTreeMap<String, i64> = known
        .iter()
        .map(|r| (r.as_str().to_string(), 0))
        .chain(std::iter::once((NO_DECISION.to_string(), 0)))
        .collect();
    for reason in reasons {
        let reason = reason.unwrap_or_else(|| NO_DECISION.to_string());
        *counts.entry(reason).or_insert(0) += 1;
    }
    counts
}

const CUSTOMER_REASONS: [Reason; 10] = Reason::CUSTOMER_SUBSCRIPTION_READY;
const REGISTRATION_REASONS: [Reason; 6] = Reason::REGISTRATION_READY;

fn encode_by_reason(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counts: &BTreeMap<String, i64>,
) -> Result<(), fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (reason, count) in counts {
        let labels = [("reason", reason.as_str())];
        ConstGauge::new(*count).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

fn encode_upstreams(
    encoder: &mut DescriptorEncoder,
    upstreams: &[Arc<Breaker>],
) -> Result<(), fmt::Error> {
    if upstreams.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(
        "azs_csp_upstream_state",
        "Circuit breaker of each upstream: 0 closed (requests go), 1 open (treated as down: requests fail fast), 2 probing (one probe in flight).",
        None,
        MetricType::Gauge,
    )?;
    for breaker in upstreams {
        let labels = [("upstream", breaker.upstream())];
        ConstGauge::new(breaker.state().gauge()).encode(metric.encode_family(&labels)?)?;
    }
    let mut metric = encoder.encode_descriptor(
        "azs_csp_upstream_short_circuited",
        "Requests to each upstream answered with an error without being sent: it is treated as down, or the same request failed a moment ago.",
        None,
        MetricType::Counter,
    )?;
    for breaker in upstreams {
        let labels = [("upstream", breaker.upstream())];
        ConstCounter::new(breaker.short_circuited()).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let (resolver, ready_reasons, upstreams) = {
            let sources = self.sources.lock().unwrap_or_else(PoisonError::into_inner);
            (
                sources.resolver.clone(),
                sources.ready_reasons.clone(),
                sources.upstreams.clone(),
            )
        };
        encode_upstreams(&mut encoder, &upstreams)?;
        if let Some(by_reason) = ready_reasons {
            let counts = count_reasons(&CUSTOMER_REASONS, (by_reason.customers)());
            encode_by_reason(
                &mut encoder,
                "azs_csp_customer_subscriptions",
                "CustomerSubscriptions in the watched namespaces by Ready reason (Pending: not yet decided for the current generation).",
                &counts,
            )?;
            let counts = count_reasons(&REGISTRATION_REASONS, (by_reason.registrations)());
            encode_by_reason(
                &mut encoder,
                "azs_csp_registrations",
                "Registrations in the watched namespaces by Ready reason (Pending: not yet decided for the current generation).",
                &counts,
            )?;
        }
        let Some(resolver) = resolver else {
            return Ok(());
        };
        if let Some(stats) = resolver.lookup_stats() {
            encode_counter(
                &mut encoder,
                "azs_csp_resolver_cache_hits",
                "Metadata lookups answered from the cache (catalog backend: from the catalog in force).",
                stats.hits,
            )?;
            encode_counter(
                &mut encoder,
                "azs_csp_resolver_cache_misses",
                "Metadata lookups that started a request to the metadata server (catalog backend: made before the first catalog loaded; no request).",
                stats.misses,
            )?;
            encode_counter(
                &mut encoder,
                "azs_csp_resolver_coalesced",
                "Metadata lookups that joined a request already in flight for the same key.",
                stats.coalesced,
            )?;
            encode_counter(
                &mut encoder,
                "azs_csp_resolver_requests",
                "Requests to the metadata server that completed, successfully or not.",
                stats.upstream_requests,
            )?;
            encode_counter(
                &mut encoder,
                "azs_csp_resolver_errors",
                "Requests to the metadata server that failed (MetadataResolverBadGatewayError).",
                stats.upstream_errors,
            )?;
            // The snapshot's buckets are cumulative; the encoder wants one count per bucket.
            let mut previous = 0;
            let buckets: Vec<(f64, u64)> = stats
                .upstream_latency_buckets
                .iter()
                .map(|(bound, cumulative)| {
                    let count = cumulative.saturating_sub(previous);
                    previous = *cumulative;
                    (*bound, count)
                })
                .collect();
            let mut metric = encoder.encode_descriptor(
                "azs_csp_resolver_request_duration_seconds",
                "Duration of requests to the metadata server.",
                None,
                MetricType::Histogram,
            )?;
            metric.encode_histogram::<NoLabelSet>(
                stats.upstream_latency_seconds_sum,
                stats.upstream_requests,
                &buckets,
                None,
            )?;
        }
        if let Some(catalog) = resolver.catalog_stats() {
            encode_counter(
                &mut encoder,
                "azs_csp_catalog_accepted",
                "Catalogs accepted (including ones identical to the catalog in force).",
                catalog.accepted,
            )?;
            encode_counter(
                &mut encoder,
                "azs_csp_catalog_rejected",
                "Catalogs rejected as a whole because they failed to parse or validate.",
                catalog.rejected,
            )?;
            encode_counter(
                &mut encoder,
                "azs_csp_catalog_source_errors",
                "Times the catalog source (file or ConfigMap) could not be read.",
                catalog.source_errors,
            )?;
            encode_gauge(
                &mut encoder,
                "azs_csp_catalog_loaded",
                "1 once a catalog is in force.",
                i64::from(catalog.loaded),
            )?;
            encode_gauge(
                &mut encoder,
                "azs_csp_catalog_subscriptions",
                "Subscriptions in the catalog in force.",
                i64::try_from(catalog.subscriptions).unwrap_or(i64::MAX),
            )?;
            encode_gauge(
                &mut encoder,
                "azs_csp_catalog_approvals",
                "Multitenancy approvals in the catalog in force.",
                i64::try_from(catalog.approvals).unwrap_or(i64::MAX),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use azs_csp_testkit::metrics::sample;

    use super::*;

    #[test]
    fn counters_and_histogram_are_encoded() {
        let metrics = Metrics::new();
        metrics.observe_reconcile(REGISTRATION, Ok(()), Duration::from_millis(3));
        metrics.observe_reconcile(
            REGISTRATION,
            Err(ErrorCategory::Conflict),
            Duration::from_millis(30),
        );
        metrics.invalid_object(CUSTOMER_SUBSCRIPTION);
        metrics.status_written(CUSTOMER_SUBSCRIPTION);
        metrics.set_leader(true);
        let text = metrics.encode().unwrap();
        assert_eq!(
            sample(
                &text,
                r#"azs_csp_reconcile_total{controller="registration",result="success"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"azs_csp_reconcile_total{controller="customersubscription",result="success"}"#
            ),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"azs_csp_reconcile_duration_seconds_count{controller="registration"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"azs_csp_reconcile_duration_seconds_bucket{controller="registration",le="0.005"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"azs_csp_status_writes_total{controller="customersubscription"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"azs_csp_reconcile_errors_total{controller="registration",category="Conflict"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"azs_csp_reconcile_errors_total{controller="customersubscription",category="Throttled"}"#
            ),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"azs_csp_invalid_objects_total{controller="customersubscription"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(sample(&text, "azs_csp_leader"), Some(1.0), "{text}");
        assert!(
            text.contains("# TYPE azs_csp_reconcile_total counter"),
            "{text}"
        );
    }

    #[test]
    fn resolver_counters_are_read_at_scrape_time() {
        let resolver = crate::resolver::HttpResolver::new(
            crate::resolver::HttpResolverOptions::new("http://127.0.0.1:9").unwrap(),
        )
        .unwrap();
        let stats = resolver.stats().clone();
        let metrics = Metrics::new();
        metrics.set_resolver(Arc::new(resolver));
        stats.record_hit();
        stats.record_upstream(Duration::from_millis(3), true);
        stats.record_upstream(Duration::from_millis(300), false);
        let text = metrics.encode().unwrap();
        assert_eq!(
            sample(&text, "azs_csp_resolver_cache_hits_total"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "azs_csp_resolver_requests_total"), Some(2.0));
        assert_eq!(sample(&text, "azs_csp_resolver_errors_total"), Some(1.0));
        assert_eq!(
            sample(
                &text,
                r#"azs_csp_resolver_request_duration_seconds_bucket{le="0.005"}"#
            ),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"azs_csp_resolver_request_duration_seconds_bucket{le="+Inf"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            sample(&text, "azs_csp_resolver_request_duration_seconds_count"),
            Some(2.0),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_breakers_are_read_at_scrape_time() {
        let breaker = Arc::new(Breaker::new("metadata", Default::default()));
        let metrics = Metrics::new();
        assert!(!metrics.encode().unwrap().contains("azs_csp_upstream"));
        metrics.add_upstream(breaker.clone());
        let state = r#"azs_csp_upstream_state{upstream="metadata"}"#;
        let short_circuited = r#"azs_csp_upstream_short_circuited_total{upstream="metadata"}"#;
        let text = metrics.encode().unwrap();
        assert_eq!(sample(&text, state), Some(0.0), "{text}");
        assert_eq!(sample(&text, short_circuited), Some(0.0), "{text}");
        for _ in 0..3 {
            breaker.failed(&"HTTP 502");
        }
        assert!(breaker.admit().is_err());
        let text = metrics.encode().unwrap();
        assert_eq!(sample(&text, state), Some(1.0), "{text}");
        assert_eq!(sample(&text, short_circuited), Some(1.0), "{text}");
        assert!(
            text.contains("# TYPE azs_csp_upstream_short_circuited_total counter"),
            "{text}"
        );
    }

    #[test]
    fn catalog_counters_are_read_at_scrape_time() {
        let resolver = Arc::new(crate::resolver::CatalogResolver::new("test"));
        let metrics = Metrics::new();
        metrics.set_resolver(resolver.clone());
        assert!(resolver.replace("subscriptions: [").is_err());
        let text = metrics.encode().unwrap();
        assert_eq!(sample(&text, "azs_csp_catalog_rejected_total"), Some(1.0));
        assert_eq!(sample(&text, "azs_csp_catalog_loaded"), Some(0.0));
        resolver.replace("subscriptions: []\n").unwrap();
        let text = metrics.encode().unwrap();
        assert_eq!(sample(&text, "azs_csp_catalog_accepted_total"), Some(1.0));
        assert_eq!(sample(&text, "azs_csp_catalog_loaded"), Some(1.0));
    }

    #[test]
    fn objects_by_reason_are_read_at_scrape_time() {
        let metrics = Metrics::new();
        metrics.set_ready_reasons(
            Box::new(|| vec![Some("Registered".to_string())]),
            Box::new(|| vec![None, Some("Attached".to_string()), None]),
        );
        let text = metrics.encode().unwrap();
        for (series, want) in [
            (r#"azs_csp_registrations{reason="Registered"}"#, 1.0),
            (r#"azs_csp_registrations{reason="Pending"}"#, 0.0),
            (r#"azs_csp_customer_subscriptions{reason="Attached"}"#, 1.0),
            (r#"azs_csp_customer_subscriptions{reason="Pending"}"#, 2.0),
        ] {
            assert_eq!(sample(&text, series), Some(want), "{series}\n{text}");
        }
    }

    #[test]
    fn reasons_are_counted_with_every_known_reason_present() {
        let counts = count_reasons(
            &CUSTOMER_REASONS,
            [
                Some("Attached"),
                Some("Attached"),
                None,
                Some("SomethingNew"),
            ]
            .map(|reason| reason.map(String::from)),
        );
        assert_eq!(counts["Attached"], 2);
        assert_eq!(counts["Pending"], 1);
        assert_eq!(counts["SomethingNew"], 1);
        assert_eq!(counts["RegistrationNotFound"], 0);
    }
}
