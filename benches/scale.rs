//! `make bench`: the operator at scale on the local control plane (docs/benchmarks.md).
//!
//! One run, in order:
//! 1. **create**: 100 Registrations and N CustomerSubscriptions with a realistic mix of outcomes
//!    in a fresh namespace, and a catalog file that produces them (timed: the client's creation
//!    throughput, reported separately);
//! 2. **converge** (the primary number): start the release operator binary against the
//!    pre-created objects and time until every object carries its final Ready condition for
//!    its current generation (and every Registration its final customer count), observed
//!    through a watch, never by listing;
//! 3. **idle**: API writes during a quiet period after convergence (should be none);
//! 4. **fan-out**: revoke the multitenancy approval of the largest Registration by rewriting
//!    the catalog file, time until all its dependents say `UnauthorizedCspRegistration`;
//! 5. **limit**: stop the operator, create the same N CustomerSubscriptions in a second
//!    namespace and write one status server-side apply to each, as fast as the API server
//!    takes them with the operator's concurrency budget (32 in flight, one client): the floor
//!    the operator's convergence time is compared with;
//! 6. clean up: both namespaces deleted, the operator stopped, whatever happened.
//!
//! With `AZS_BENCH_RESOLVER=http` the operator runs with `--resolver http` against a metadata
//! server inside the bench process ([`MetadataServer`]: the same catalog, as the JSON of
//! DESIGN.md §4, on 127.0.0.1), which counts the requests it answers: what a caching backend
//! asks upstream, to set next to the distinct subscriptions the objects name. The fan-out is
//! skipped in that mode (see [`FANOUT_SKIPPED_HTTP`]).
//!
//! API writes are counted from kube-apiserver's own `apiserver_request_total`, the operator's
//! memory and CPU from /proc. Configuration is read from the environment (`AZS_BENCH_*`, see
//! [`Settings::from_env`]); `hack/bench.sh` sets it from `make bench N=...`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ffi::OsString,
    fmt::Write as _,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use azs_csp_operator::api::{
    CustomerSubscription, CustomerSubscriptionSpec, Registration, RegistrationRef,
};
use futures::{StreamExt, stream};
use k8s_openapi::{
    api::core::v1::Namespace,
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt, conditions::is_crd_established, wait::await_condition, watcher},
};
use serde_json::{Value, json};
use tokio::sync::watch;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

/// The operator's CustomerSubscription controller runs 32 reconciles at once
/// (src/controller/mod.rs); the limit client gets the same budget.
const OPERATOR_CONCURRENCY: usize = 32;
/// Field manager of the operator's CustomerSubscription status (the limit writes as it).
const STATUS_MANAGER: &str = azs_csp_operator::controller::CUSTOMER_SUBSCRIPTION_MANAGER;
const RESOURCE_GROUP: &str = "azurestack-bench";
/// Between convergence and the idle window: lets writes already in flight land.
const SETTLE: Duration = Duration::from_secs(2);
const PARTNERS: u64 = 10;

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

struct Settings {
    /// CustomerSubscriptions to create.
    n: usize,
    /// Registrations (at least 10).
    registrations: usize,
    /// Dependents of the registration whose approval the fan-out revokes.
    fanout: usize,
    idle: Duration,
    converge_timeout: Duration,
    fanout_timeout: Duration,
    /// Hard bound on the whole run (cleanup gets its own short budget after it).
    total_timeout: Duration,
    create_concurrency: usize,
    kubeconfig: PathBuf,
    operator: PathBuf,
    out_dir: PathBuf,
    operator_log_filter: String,
    /// Skip the limit phase (e.g. for a quick smoke run).
    skip_limit: bool,
    /// Where the operator gets its metadata from.
    resolver: ResolverMode,
    /// `--cache-ttl` of the operator in http mode.
    cache_ttl: Duration,
}

/// `AZS_BENCH_RESOLVER`: the operator's metadata backend during the run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ResolverMode {
    /// `--catalog-file`, the generated catalog (the default).
    Catalog,
    /// `--resolver http` against the bench's own [`MetadataServer`].
    Http,
}

impl ResolverMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Catalog => "catalog",
            Self::Http => "http",
        }
    }
}

impl std::str::FromStr for ResolverMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "catalog" => Ok(Self::Catalog),
            "http" => Ok(Self::Http),
            _ => Err(format!("{s:?} is neither catalog nor http")),
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid value").into()),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> Result<Self> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let n: usize = env_or("AZS_BENCH_N", 10_000)?;
        let registrations: usize = env_or("AZS_BENCH_REGISTRATIONS", 100)?;
        if n < 100 || registrations < 10 || n < 2 * registrations {
            return Err(format!(
                "AZS_BENCH_N={n} with AZS_BENCH_REGISTRATIONS={registrations}: need N >= 100, \
                 at least 10 registrations and N >= 2 x registrations"
            )
            .into());
        }
        let fanout = env_or("AZS_BENCH_FANOUT", (n / 10).min(1_000))?;
        if fanout == 0 || fanout > n / 2 {
            return Err(format!("AZS_BENCH_FANOUT={fanout} must be between 1 and N/2").into());
        }
        let secs = |name: &str, default: u64| env_or(name, default).map(Duration::from_secs);
        let converge_default = 300.max(n as u64 / 10);
        let converge_timeout = secs("AZS_BENCH_CONVERGE_TIMEOUT", converge_default)?;
        let idle = secs("AZS_BENCH_IDLE_SECONDS", 60)?;
        // No cached answer may expire while the operator runs (converge, settle, idle: the
        // fan-out is skipped in http mode): an expiry would add upstream requests and
        // re-checks that belong to the refresh, not to convergence. The operator's default
        // (5 min) is shorter than the longest run the converge timeout allows.
        let ttl_default = converge_timeout.as_secs() + idle.as_secs() + 120;
        Ok(Self {
            n,
            registrations,
            fanout,
            idle,
            converge_timeout,
            fanout_timeout: secs("AZS_BENCH_FANOUT_TIMEOUT", 300)?,
            total_timeout: secs("AZS_BENCH_TIMEOUT", 900 + 3 * converge_default)?,
            create_concurrency: env_or("AZS_BENCH_CREATE_CONCURRENCY", OPERATOR_CONCURRENCY)?,
            kubeconfig: std::env::var_os("AZS_BENCH_KUBECONFIG")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join(".cluster/kubeconfig")),
            operator: std::env::var_os("AZS_BENCH_OPERATOR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/release/azs-csp-operator")),
            out_dir: std::env::var_os("AZS_BENCH_OUT")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/bench")),
            operator_log_filter: env_or("AZS_BENCH_OPERATOR_LOG", "info".to_string())?,
            skip_limit: env_or("AZS_BENCH_SKIP_LIMIT", 0u8)? != 0,
            resolver: env_or("AZS_BENCH_RESOLVER", ResolverMode::Catalog)?,
            cache_ttl: secs("AZS_BENCH_CACHE_TTL", ttl_default.max(300))?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The scenario: registrations, customer subscriptions, catalog, expected outcomes
// ---------------------------------------------------------------------------------------------

/// A GUID of a family (`kind`) and a serial number: distinct, readable, valid.
fn guid(kind: u32, n: u64) -> String {
    format!("{kind:08x}-0000-4000-8000-{n:012x}")
}

const G_REG_SUB: u32 = 0xa5000001;
const G_CLOUD: u32 = 0xa5000002;
const G_PARTNER_TENANT: u32 = 0xa5000003;
const G_CUST_SUB: u32 = 0xc5000001;
const G_CUST_TENANT: u32 = 0xc5000002;
const G_FOREIGN_TENANT: u32 = 0xc5000003;

fn partner_id(p: u64) -> String {
    format!("44{:05}", 10_000 + p)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RegKind {
    Approved,
    Unapproved,
    Capacity,
    Development,
}

struct RegPlan {
    name: String,
    subscription_id: String,
    registration_name: String,
    cloud_id: String,
    kind: RegKind,
    partner: u64,
}

impl RegPlan {
    fn object(&self) -> Result<Registration> {
        let model = match self.kind {
            RegKind::Approved | RegKind::Unapproved => "PayAsYouUse",
            RegKind::Capacity => "Capacity",
            RegKind::Development => "Development",
        };
        Ok(serde_json::from_value(json!({
            "apiVersion": "csp.azurestack.io/v1alpha1",
            "kind": "Registration",
            "metadata": {"name": self.name},
            "spec": {
                "subscriptionId": self.subscription_id,
                "resourceGroup": RESOURCE_GROUP,
                "registrationName": self.registration_name,
                "cloudId": self.cloud_id,
                "billingModel": model,
                "agreementNumber": (self.kind == RegKind::Capacity).then_some("EA-BENCH-1"),
            }
        }))?)
    }
}

struct CustPlan {
    name: String,
    registration: usize,
    subscription_id: String,
    tenant_id: Option<String>,
    /// Created after every non-duplicate, so that the original is always the older one.
    second_wave: bool,
    expected: &'static str,
}

impl CustPlan {
    fn object(&self, registrations: &[RegPlan]) -> CustomerSubscription {
        CustomerSubscription::new(
            &self.name,
            CustomerSubscriptionSpec {
                registration_ref: RegistrationRef {
                    name: registrations[self.registration].name.clone(),
                },
                subscription_id: self.subscription_id.clone(),
                tenant_id: self.tenant_id.clone(),
            },
        )
    }
}

struct Plan {
    registrations: Vec<RegPlan>,
    customers: Vec<CustPlan>,
    /// `subscriptions:` entries of the catalog, one YAML flow mapping each.
    catalog_subscriptions: Vec<String>,
    /// Index of the registration the fan-out revokes.
    fanout_registration: usize,
}

const ATTACHED: &str = "Attached";
const UNAUTHORIZED: &str = "UnauthorizedCspRegistration";

impl Plan {
    /// Deterministic: the same N gives the same objects, catalog and expectations.
    fn new(n: usize, registration_count: usize, fanout: usize) -> Self {
        let r = registration_count;
        // Registration 0 is the large one whose approval the fan-out revokes; a few others
        // are not approved, or not PayAsYouUse.
        let kind_of = |i: usize| match i {
            _ if i == r - 1 => RegKind::Capacity,
            _ if i == r - 4 => RegKind::Development,
            _ if i == r - 2 || i == r - 3 => RegKind::Unapproved,
            _ => RegKind::Approved,
        };
        let registrations: Vec<RegPlan> = (0..r)
            .map(|i| {
                let cloud_id = guid(G_CLOUD, i as u64);
                RegPlan {
                    name: format!("reg-{i:03}"),
                    subscription_id: guid(G_REG_SUB, i as u64),
                    registration_name: format!("azurestack-{}", &cloud_id[24..]),
                    cloud_id,
                    kind: kind_of(i),
                    partner: i as u64 % PARTNERS,
                }
            })
            .collect();
        let mut catalog_subscriptions: Vec<String> = registrations
            .iter()
            .map(|reg| {
                format!(
                    "{{id: {}, tenantId: {}, state: Enabled, offer: APSS, billingPartnerId: \"{}\"}}",
                    reg.subscription_id,
                    guid(G_PARTNER_TENANT, reg.partner),
                    partner_id(reg.partner)
                )
            })
            .collect();

        let mut customers = Vec::with_capacity(n);
        // Attached, first-wave customers per registration: originals for duplicates.
        let mut originals: Vec<Vec<usize>> = vec![Vec::new(); r];
        for j in 0..n {
            let registration = if j < fanout {
                0
            } else {
                1 + (j - fanout) % (r - 1)
            };
            let reg = &registrations[registration];
            let sub = guid(G_CUST_SUB, j as u64);
            let tenant = guid(G_CUST_TENANT, j as u64);
            let mut plan = CustPlan {
                name: format!("cs-{j:06}"),
                registration,
                subscription_id: sub.clone(),
                tenant_id: None,
                second_wave: false,
                expected: ATTACHED,
            };
            // ~88% attached; the rest split over the documented failures and duplicates.
            let entry = match j % 100 {
                0..=3 => {
                    // A CSP customer of another partner.
                    plan.expected = "BadCustomerSubscriptionId";
                    let other = (reg.partner + 1 + j as u64 % (PARTNERS - 1)) % PARTNERS;
                    Some(format!(
                        "{{id: {sub}, tenantId: {tenant}, state: Enabled, offer: CSP, billingPartnerId: \"{}\"}}",
                        partner_id(other)
                    ))
                }
                4..=6 => {
                    plan.expected = "InvalidCSPSubscription";
                    let offer = if j % 2 == 0 {
                        "PayAsYouGo"
                    } else {
                        "EnterpriseAgreement"
                    };
                    Some(format!(
                        "{{id: {sub}, tenantId: {tenant}, state: Enabled, offer: {offer}}}"
                    ))
                }
                7 => {
                    // Unknown to Azure: no catalog entry.
                    plan.expected = "InvalidCustomerSubscriptionId";
                    None
                }
                8 => {
                    plan.expected = "InvalidCustomerSubscriptionId";
                    let state = if j % 2 == 0 { "Disabled" } else { "Deleted" };
                    Some(format!(
                        "{{id: {sub}, tenantId: {tenant}, state: {state}, offer: CSP, billingPartnerId: \"{}\"}}",
                        partner_id(reg.partner)
                    ))
                }
                9 => {
                    // spec.tenantId names another directory than the subscription's.
                    plan.expected = "InvalidCustomerSubscriptionId";
                    plan.tenant_id = Some(guid(G_FOREIGN_TENANT, j as u64));
                    Some(format!(
                        "{{id: {sub}, tenantId: {tenant}, state: Enabled, offer: CSP, billingPartnerId: \"{}\"}}",
                        partner_id(reg.partner)
                    ))
                }
                m @ (10 | 11) if !originals[registration].is_empty() => {
                    // A second CustomerSubscription for a subscription already attached.
                    let original = &customers[*originals[registration].last().expect("one")];
                    let original: &CustPlan = original;
                    plan.subscription_id = if m == 11 {
                        original.subscription_id.to_ascii_uppercase()
                    } else {
                        original.subscription_id.clone()
                    };
                    plan.second_wave = true;
                    plan.expected = "DuplicateCustomerSubscription";
                    None
                }
                _ => {
                    // Attached: direct or indirect, in every active state, tenant given or not.
                    let state = match j % 13 {
                        0 => "Warned",
                        1 => "PastDue",
                        _ => "Enabled",
                    };
                    if j % 2 == 0 {
                        plan.tenant_id = Some(tenant.clone());
                    }
                    let reseller = if j % 7 == 0 {
                        format!(", resellerPartnerId: \"55{:05}\"", j % 100)
                    } else {
                        String::new()
                    };
                    Some(format!(
                        "{{id: {sub}, tenantId: {tenant}, state: {state}, offer: CSP, billingPartnerId: \"{}\"{reseller}}}",
                        partner_id(reg.partner)
                    ))
                }
            };
            if plan.expected == ATTACHED {
                originals[registration].push(j);
            }
            // Rules 2 and 3 come before everything about the subscription.
            plan.expected = match reg.kind {
                RegKind::Approved => plan.expected,
                RegKind::Unapproved => UNAUTHORIZED,
                RegKind::Capacity | RegKind::Development => "CustomerSubscriptionsNotAllowed",
            };
            catalog_subscriptions.extend(entry);
            customers.push(plan);
        }
        Self {
            registrations,
            customers,
            catalog_subscriptions,
            fanout_registration: 0,
        }
    }

    /// The catalog YAML; `revoked` registrations lose their multitenancy approval.
    fn catalog(&self, revoked: &[usize]) -> String {
        let mut out = String::with_capacity(self.catalog_subscriptions.len() * 160);
        out.push_str("# Generated by benches/scale.rs\nsubscriptions:\n");
        for entry in &self.catalog_subscriptions {
            let _ = writeln!(out, "- {entry}");
        }
        out.push_str("multitenancyApprovals:\n");
        for (i, reg) in self.registrations.iter().enumerate() {
            if reg.kind == RegKind::Unapproved || revoked.contains(&i) {
                continue;
            }
            let _ = writeln!(
                out,
                "- {{subscriptionId: {}, resourceGroup: {RESOURCE_GROUP}, registrationName: {}}}",
                reg.subscription_id, reg.registration_name
            );
        }
        out
    }

    fn expected_customers(&self, revoked: &[usize]) -> HashMap<String, String> {
        self.customers
            .iter()
            .map(|c| {
                let reason = if revoked.contains(&c.registration) {
                    UNAUTHORIZED
                } else {
                    c.expected
                };
                (c.name.clone(), reason.to_string())
            })
            .collect()
    }

    fn expected_registrations(&self, revoked: &[usize]) -> HashMap<String, String> {
        let mut attached = vec![0usize; self.registrations.len()];
        for c in &self.customers {
            if c.expected == ATTACHED && !revoked.contains(&c.registration) {
                attached[c.registration] += 1;
            }
        }
        self.registrations
            .iter()
            .zip(attached)
            .map(|(r, count)| (r.name.clone(), format!("Registered count={count}")))
            .collect()
    }

    /// Distinct subscriptions the objects name (customers' in any letter case, and the
    /// Registrations'): what a resolver that caches per subscription would have to look up.
    fn referenced_subscriptions(&self) -> usize {
        let customers = self
            .customers
            .iter()
            .map(|c| c.subscription_id.to_ascii_lowercase());
        let registrations = self.registrations.iter().map(|r| r.subscription_id.clone());
        customers
            .chain(registrations)
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Distinct subscriptions the decisions look up: the Registrations', and the customers'
    /// whose Registration is PayAsYouUse (the operator skips the lookups when rule 2 fails, and
    /// asks for the approval and both subscriptions together otherwise, also when not approved).
    fn looked_up_subscriptions(&self) -> usize {
        let customers = self
            .customers
            .iter()
            .filter(|c| {
                matches!(
                    self.registrations[c.registration].kind,
                    RegKind::Approved | RegKind::Unapproved
                )
            })
            .map(|c| c.subscription_id.to_ascii_lowercase());
        let registrations = self.registrations.iter().map(|r| r.subscription_id.clone());
        customers.chain(registrations).collect::<HashSet<_>>().len()
    }

    fn outcome_mix(&self) -> BTreeMap<&'static str, usize> {
        let mut mix = BTreeMap::new();
        for c in &self.customers {
            *mix.entry(c.expected).or_default() += 1;
        }
        mix
    }
}

// ---------------------------------------------------------------------------------------------
// Watching progress
// ---------------------------------------------------------------------------------------------

/// What one kind of object currently shows, against what it should show, from a watch.
#[derive(Default)]
struct Tracker {
    expected: HashMap<String, String>,
    observed: HashMap<String, String>,
    matched: usize,
    /// When `matched` last became equal to the number of expected objects.
    converged_at: Option<Instant>,
    /// Times of watch events after the initial list (each one is a write that changed the
    /// object: the operator skips no-op writes, and the API server sends no event for them).
    modifications: Vec<Instant>,
    synced: bool,
}

impl Tracker {
    fn is_match(&self, name: &str) -> bool {
        matches!((self.expected.get(name), self.observed.get(name)), (Some(e), Some(o)) if e == o)
    }

    fn recount(&mut self) {
        self.matched = self.expected.keys().filter(|k| self.is_match(k)).count();
        self.converged_at = self.is_converged().then(Instant::now);
    }

    fn is_converged(&self) -> bool {
        !self.expected.is_empty() && self.matched == self.expected.len()
    }

    fn expect(&mut self, expected: HashMap<String, String>) {
        self.expected = expected;
        self.recount();
    }

    fn observe(&mut self, name: String, signature: Option<String>, at: Instant) {
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

    fn modifications_between(&self, from: Instant, to: Instant) -> usize {
        self.modifications
            .iter()
            .filter(|t| **t >= from && **t <= to)
            .count()
    }

    /// The most common (expected, observed) mismatches, for a failure report.
    fn mismatches(&self) -> Vec<(String, usize)> {
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

type Shared = Arc<Mutex<Tracker>>;

fn lock(tracker: &Shared) -> std::sync::MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Ready reason, when written for the object's current generation.
fn ready_reason(
    generation: Option<i64>,
    conditions: &[azs_csp_operator::api::Condition],
) -> Option<String> {
    let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
    (ready.observed_generation == generation).then(|| ready.reason.clone())
}

fn customer_signature(cs: &CustomerSubscription) -> Option<String> {
    ready_reason(cs.metadata.generation, &cs.status.as_ref()?.conditions)
}

fn registration_signature(reg: &Registration) -> Option<String> {
    let status = reg.status.as_ref()?;
    let reason = ready_reason(reg.metadata.generation, &status.conditions)?;
    Some(format!(
        "{reason} count={}",
        status.customer_subscription_count.unwrap_or(-1)
    ))
}

/// Follows one kind in one namespace into `tracker`, bumping `changed` after every event.
fn spawn_tracker<K>(
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
async fn wait_until(
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

// ---------------------------------------------------------------------------------------------
// Measuring: API server request counters, /proc, the operator's own metrics
// ---------------------------------------------------------------------------------------------

/// `apiserver_request_total` summed over response codes: (verb, resource, subresource) → count.
type RequestCounts = BTreeMap<(String, String, String), f64>;

fn parse_labels(labels: &str) -> HashMap<&str, &str> {
    let mut out = HashMap::new();
    let mut rest = labels;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',');
        let value_start = eq + 2;
        let Some(len) = rest[value_start..].find('"') else {
            break;
        };
        out.insert(key, &rest[value_start..value_start + len]);
        rest = &rest[value_start + len + 1..];
    }
    out
}

async fn apiserver_requests(client: &Client) -> Result<RequestCounts> {
    // kube has no helper for non-resource paths; a list request on "/metrics" is a plain GET.
    let request = kube::core::Request::new("/metrics").list(&ListParams::default())?;
    let text = client.request_text(request).await?;
    let mut counts = RequestCounts::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let labels = parse_labels(labels);
        let key = |k: &str| labels.get(k).copied().unwrap_or("").to_string();
        *counts
            .entry((key("verb"), key("resource"), key("subresource")))
            .or_default() += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    Ok(counts)
}

fn delta(before: &RequestCounts, after: &RequestCounts) -> RequestCounts {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

/// Verbs the operator writes with. DELETEs are left out: the operator never deletes, and other
/// users of a shared cluster (test runs deleting their namespaces) would be counted otherwise.
const WRITE_VERBS: [&str; 4] = ["POST", "PUT", "PATCH", "APPLY"];
const OUR_RESOURCES: [&str; 3] = ["customersubscriptions", "registrations", "events"];

fn writes(d: &RequestCounts, resource: &str, subresource: Option<&str>) -> f64 {
    d.iter()
        .filter(|((verb, r, s), _)| {
            WRITE_VERBS.contains(&verb.as_str())
                && r == resource
                && subresource.is_none_or(|want| s == want)
        })
        .map(|(_, v)| v)
        .sum()
}

fn all_writes(d: &RequestCounts) -> f64 {
    // `+ 0.0`: an empty f64 sum is -0.0.
    OUR_RESOURCES
        .iter()
        .map(|r| writes(d, r, None))
        .sum::<f64>()
        + 0.0
}

fn requests_json(d: &RequestCounts) -> Value {
    Value::Object(
        d.iter()
            .filter(|((_, r, _), _)| OUR_RESOURCES.contains(&r.as_str()))
            .map(|((verb, r, s), v)| {
                let key = if s.is_empty() {
                    format!("{verb} {r}")
                } else {
                    format!("{verb} {r}/{s}")
                };
                (key, json!(v))
            })
            .collect(),
    )
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

/// A `/proc/PID/status` memory line (VmHWM, VmRSS) in MiB.
fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// TCP ports process `pid` listens on (how `--metrics-addr 127.0.0.1:0` is found).
fn listening_ports(pid: u32) -> Vec<u16> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return vec![];
    };
    let inodes: HashSet<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .collect();
    let mut ports = vec![];
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9
                && f[3] == "0A"
                && inodes.contains(f[9])
                && let Some(port) = f[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// `azs_csp_*` samples from the operator's `/metrics`, if it serves one.
fn operator_metrics(port: u16) -> Option<BTreeMap<String, f64>> {
    let mut stream = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.") || head.split_whitespace().nth(1) != Some("200") {
        return None;
    }
    let samples: BTreeMap<String, f64> = body
        .lines()
        .filter(|l| l.starts_with("azs_csp_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect();
    Some(samples)
}

/// The operator's resolver lookup counters (`azs_csp_resolver_*`) over a phase: from `before`
/// (`None`: since the operator started) to `after`. A lookup is a hit, a miss or a coalesced
/// lookup; for the catalog backend every lookup after the first load is a hit and nothing goes
/// upstream. `Null` when the operator exports no lookup counters.
fn resolver_lookups(
    before: Option<&BTreeMap<String, f64>>,
    after: Option<&BTreeMap<String, f64>>,
    per: f64,
) -> Value {
    let Some(after) = after else {
        return Value::Null;
    };
    let counter = |name: &str| -> Option<f64> {
        let key = format!("azs_csp_resolver_{name}_total");
        let now = *after.get(&key)?;
        Some(now - before.and_then(|b| b.get(&key)).copied().unwrap_or(0.0))
    };
    let (Some(hits), Some(misses), Some(coalesced)) = (
        counter("cache_hits"),
        counter("cache_misses"),
        counter("coalesced"),
    ) else {
        return Value::Null;
    };
    let lookups = hits + misses + coalesced;
    json!({
        "lookups": lookups,
        "per_object": (per > 0.0).then(|| round2(lookups / per)),
        "hits": hits,
        "misses": misses,
        "coalesced": coalesced,
        "upstream_requests": counter("requests"),
        "upstream_errors": counter("errors"),
    })
}

/// Writes the operator says it made (`azs_csp_*_writes_total`, event counters), if it says.
fn operator_writes(m: &BTreeMap<String, f64>) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            let name = k.split('{').next().unwrap_or_default();
            name.ends_with("_writes_total") || (name.contains("event") && name.ends_with("_total"))
        })
        .map(|(_, v)| v)
        .sum()
}

fn metrics_delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Value {
    Value::Object(
        after
            .iter()
            .filter(|(k, _)| !k.contains("_bucket"))
            .map(|(k, v)| (k.clone(), json!(v - before.get(k).copied().unwrap_or(0.0))))
            .filter(|(_, v)| v.as_f64() != Some(0.0))
            .collect(),
    )
}

/// The control plane's processes, when the cluster is the local one (for CPU attribution).
fn control_plane_pids(kubeconfig: &Path) -> Vec<(&'static str, u32)> {
    let Some(dir) = kubeconfig.parent() else {
        return vec![];
    };
    ["kube-apiserver", "etcd"]
        .into_iter()
        .filter_map(|name| {
            let pid = std::fs::read_to_string(dir.join(format!("pids/{name}.pid"))).ok()?;
            Some((name, pid.trim().parse().ok()?))
        })
        .collect()
}

/// Which operator was measured: the binary (size, modification time) and the checkout the
/// bench ran from (`git describe --dirty`), since `make bench` builds the working tree.
fn binary_info(path: &Path) -> Value {
    let meta = std::fs::metadata(path).ok();
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let describe = Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    json!({
        "path": path.display().to_string(),
        "bytes": meta.map(|m| m.len()),
        "modified_unix": modified,
        "checkout": describe,
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn machine() -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    json!({
        "cores": cores,
        "memory_gib": (mem_gib * 10.0).round() / 10.0,
        "kernel": kernel.trim(),
        "cpu": cpu,
    })
}

/// CPU seconds of every process of interest at one moment.
struct CpuSample {
    at: Instant,
    seconds: BTreeMap<&'static str, f64>,
}

struct Probe {
    ticks: f64,
    pids: Vec<(&'static str, u32)>,
}

impl Probe {
    fn sample(&self) -> CpuSample {
        let mut seconds = BTreeMap::new();
        for (name, pid) in &self.pids {
            if let Some(s) = cpu_seconds(*pid, self.ticks) {
                seconds.insert(*name, s);
            }
        }
        CpuSample {
            at: Instant::now(),
            seconds,
        }
    }

    fn with(&self, name: &'static str, pid: u32) -> Self {
        let mut pids = self.pids.clone();
        pids.retain(|(n, _)| *n != name);
        pids.push((name, pid));
        Self {
            ticks: self.ticks,
            pids,
        }
    }
}

fn cpu_json(from: &CpuSample, to: &CpuSample) -> Value {
    let wall = to.at.duration_since(from.at).as_secs_f64();
    let mut out = serde_json::Map::new();
    for (name, s) in &to.seconds {
        if let Some(b) = from.seconds.get(name) {
            out.insert(format!("{name}_cpu_s"), json!(round2(s - b)));
        }
    }
    out.insert("wall_s".into(), json!(round2(wall)));
    Value::Object(out)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

// ---------------------------------------------------------------------------------------------
// Kubernetes helpers
// ---------------------------------------------------------------------------------------------

async fn client(kubeconfig: &Path) -> Result<Client> {
    let config = Kubeconfig::read_from(kubeconfig).map_err(|e| {
        format!(
            "cannot read {} ({e}); start the local cluster with `make cluster-up`",
            kubeconfig.display()
        )
    })?;
    let config = Config::from_custom_kubeconfig(config, &KubeConfigOptions::default()).await?;
    let host = config.cluster_url.host().unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        return Err(format!(
            "the bench runs against the local control plane only, but {} points at {host}",
            kubeconfig.display()
        )
        .into());
    }
    Ok(Client::try_from(config)?)
}

fn retryable(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        _ => true,
    }
}

/// Creates `obj`; retries throttling, server errors and transport errors; an object that
/// already exists (a retried create that had landed) counts as created.
async fn create_retrying<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut attempt = 0;
    loop {
        match api.create(&PostParams::default(), obj).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt > 0 => return Ok(()),
            Err(e) if retryable(&e) && attempt < 8 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 << attempt.min(5))).await;
            }
            Err(e) => return Err(format!("creating {}: {e}", obj.name_any()).into()),
        }
    }
}

async fn create_all<K>(api: &Api<K>, objects: Vec<K>, concurrency: usize) -> Result<()>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut results =
        stream::iter(objects.iter().map(|o| create_retrying(api, o))).buffer_unordered(concurrency);
    while let Some(result) = results.next().await {
        result?;
    }
    Ok(())
}

async fn ensure_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in azs_csp_operator::crd::definitions() {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("azs-csp-operator-bench").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(api.clone(), &name, is_crd_established()),
        )
        .await
        .map_err(|_| format!("CRD {name} not established within 30 s"))??;
    }
    Ok(())
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"azs-csp-operator.bench": "true"}}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The operator process
// ---------------------------------------------------------------------------------------------

struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    /// `resolver`: the metadata flags (`--catalog-file F`, or `--resolver http ...`).
    fn start(s: &Settings, resolver: &[OsString], namespace: &str) -> Result<Self> {
        if !s.operator.exists() {
            return Err(format!(
                "{} does not exist: build it with `cargo build --release` (make bench does)",
                s.operator.display()
            )
            .into());
        }
        let log = s.out_dir.join("operator.log");
        let file = std::fs::File::create(&log)?;
        let child = Command::new(&s.operator)
            .arg("run")
            .args(resolver)
            .args(["--watch-namespace", namespace])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &s.kubeconfig)
            .env("RUST_LOG", &s.operator_log_filter)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", s.operator.display()))?;
        Ok(Self { child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL after 10 s. Only ever this child, by its pid.
    fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// The metadata server of the http mode
// ---------------------------------------------------------------------------------------------

/// Why the fan-out is not measured with `--resolver http` (also in the JSON and the table).
const FANOUT_SKIPPED_HTTP: &str = "skipped with --resolver http: the http backend cannot be told \
    of a change, so a revoked approval reaches the objects only when the cached answer expires \
    (--cache-ttl) and their refresh re-check runs; the time measured would be the TTL";

/// Requests the [`MetadataServer`] answered, by kind.
#[derive(Default)]
struct UpstreamCounters {
    subscription_lookups: AtomicU64,
    approval_lookups: AtomicU64,
    /// Paths outside the documented API.
    other: AtomicU64,
    /// 404 answers (unknown subscription, registration not approved, other paths).
    not_found: AtomicU64,
    /// Subscription IDs asked for (lower case), and registrations (`sub/rg/name`).
    subscriptions: Mutex<HashSet<String>>,
    registrations: Mutex<HashSet<String>>,
}

#[derive(Clone, Copy, Default)]
struct UpstreamSnapshot {
    subscription_lookups: u64,
    approval_lookups: u64,
    other: u64,
    not_found: u64,
    distinct_subscriptions: usize,
    distinct_registrations: usize,
}

impl UpstreamSnapshot {
    fn total(&self) -> u64 {
        self.subscription_lookups + self.approval_lookups + self.other
    }

    /// Requests since `before`, by kind (distinct counts are not differences: left out).
    fn since_json(&self, before: &Self) -> Value {
        json!({
            "requests": self.total() - before.total(),
            "subscription_lookups": self.subscription_lookups - before.subscription_lookups,
            "approval_lookups": self.approval_lookups - before.approval_lookups,
            "other_requests": self.other - before.other,
            "not_found": self.not_found - before.not_found,
        })
    }
}

/// The documented data the server answers with, from the generated catalog.
struct MetadataData {
    /// Lower-case subscription ID → its `subscriptions[]` entry as JSON.
    subscriptions: HashMap<String, String>,
    /// Approved registrations, `sub/rg/name` in lower case.
    approvals: HashSet<String>,
}

impl MetadataData {
    /// Reads the catalog the catalog mode would load (as plain YAML, not with the operator's
    /// catalog reader).
    fn from_catalog(text: &str) -> Result<Self> {
        let mut options = serde_saphyr::Options::default();
        // A generated catalog of 10,000 subscriptions has more nodes than the default budget.
        options.budget = None;
        let doc: Value = serde_saphyr::from_str_with_options(text, options)?;
        let list = |key: &str| -> Result<Vec<Value>> {
            Ok(doc
                .get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| format!("the generated catalog has no {key} list"))?
                .clone())
        };
        let text_of = |v: &Value, key: &str| -> Result<String> {
            Ok(v.get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("a catalog entry without {key}: {v}"))?
                .to_ascii_lowercase())
        };
        let mut subscriptions = HashMap::new();
        for entry in list("subscriptions")? {
            subscriptions.insert(text_of(&entry, "id")?, entry.to_string());
        }
        let mut approvals = HashSet::new();
        for entry in list("multitenancyApprovals")? {
            approvals.insert(format!(
                "{}/{}/{}",
                text_of(&entry, "subscriptionId")?,
                text_of(&entry, "resourceGroup")?,
                text_of(&entry, "registrationName")?
            ));
        }
        Ok(Self {
            subscriptions,
            approvals,
        })
    }
}

#[derive(Clone)]
struct ServerState {
    data: Arc<MetadataData>,
    counters: Arc<UpstreamCounters>,
}

/// DESIGN.md §4 over plain HTTP on 127.0.0.1, answered from the generated catalog, counting
/// what it answers. Runs on the bench's runtime (its CPU is the bench's CPU).
struct MetadataServer {
    url: String,
    counters: Arc<UpstreamCounters>,
    task: tokio::task::JoinHandle<()>,
}

impl MetadataServer {
    async fn start(catalog: &str) -> Result<Self> {
        use axum::{extract::State, routing::get};
        let data = Arc::new(MetadataData::from_catalog(catalog)?);
        let counters = Arc::new(UpstreamCounters::default());
        let app = axum::Router::new()
            .route("/subscriptions/{id}", get(serve_subscription))
            .route(
                "/registrations/{subscription}/{group}/{name}",
                get(serve_approval),
            )
            .fallback(|State(state): State<ServerState>| async move {
                state.counters.other.fetch_add(1, Ordering::Relaxed);
                not_found(&state)
            })
            .with_state(ServerState {
                data,
                counters: counters.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                eprintln!("bench: metadata server stopped: {error}");
            }
        });
        Ok(Self {
            url,
            counters,
            task,
        })
    }

    fn snapshot(&self) -> UpstreamSnapshot {
        let c = &self.counters;
        let len =
            |set: &Mutex<HashSet<String>>| set.lock().unwrap_or_else(|p| p.into_inner()).len();
        UpstreamSnapshot {
            subscription_lookups: c.subscription_lookups.load(Ordering::Relaxed),
            approval_lookups: c.approval_lookups.load(Ordering::Relaxed),
            other: c.other.load(Ordering::Relaxed),
            not_found: c.not_found.load(Ordering::Relaxed),
            distinct_subscriptions: len(&c.subscriptions),
            distinct_registrations: len(&c.registrations),
        }
    }
}

/// What the server answered from the operator's start to convergence, next to what the
/// objects name.
fn upstream_json(u: &UpstreamSnapshot, plan: &Plan) -> Value {
    let per = |x: u64, over: usize| (over > 0).then(|| round2(x as f64 / over as f64));
    json!({
        "requests": u.total(),
        "subscription_lookups": u.subscription_lookups,
        "approval_lookups": u.approval_lookups,
        "other_requests": u.other,
        "not_found": u.not_found,
        "distinct_subscriptions": u.distinct_subscriptions,
        "distinct_registrations": u.distinct_registrations,
        "subscription_lookups_per_distinct": per(u.subscription_lookups, u.distinct_subscriptions),
        "requests_per_object": per(u.total(), plan.customers.len()),
        "referenced_subscriptions": plan.referenced_subscriptions(),
        "subscriptions_to_look_up": plan.looked_up_subscriptions(),
    })
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json_answer(body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn not_found(state: &ServerState) -> axum::response::Response {
    use axum::response::IntoResponse;
    state.counters.not_found.fetch_add(1, Ordering::Relaxed);
    (
        axum::http::StatusCode::NOT_FOUND,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        r#"{"error":"not found"}"#,
    )
        .into_response()
}

async fn serve_subscription(
    axum::extract::State(state): axum::extract::State<ServerState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> axum::response::Response {
    state
        .counters
        .subscription_lookups
        .fetch_add(1, Ordering::Relaxed);
    let id = id.to_ascii_lowercase();
    let body = state.data.subscriptions.get(&id).cloned();
    state
        .counters
        .subscriptions
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id);
    match body {
        Some(body) => json_answer(body),
        None => not_found(&state),
    }
}

async fn serve_approval(
    axum::extract::State(state): axum::extract::State<ServerState>,
    axum::extract::Path((subscription, group, name)): axum::extract::Path<(String, String, String)>,
) -> axum::response::Response {
    state
        .counters
        .approval_lookups
        .fetch_add(1, Ordering::Relaxed);
    let key = format!("{subscription}/{group}/{name}").to_ascii_lowercase();
    let approved = state.data.approvals.contains(&key);
    state
        .counters
        .registrations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key);
    if approved {
        json_answer(r#"{"multitenancyApproved":true}"#.to_string())
    } else {
        // DESIGN.md §4: 404 → not approved.
        not_found(&state)
    }
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// Everything cleanup needs, filled in as the run goes.
#[derive(Default)]
struct Resources {
    namespaces: Vec<String>,
    operator: Option<Operator>,
}

struct Bench {
    s: Settings,
    client: Client,
    plan: Plan,
    ns: String,
    limit_ns: String,
    catalog_path: PathBuf,
    probe: Probe,
    resources: Arc<Mutex<Resources>>,
    results: Mutex<serde_json::Map<String, Value>>,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

impl Bench {
    fn record(&self, key: &str, value: Value) {
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), value);
    }

    /// Adds `field` to the object recorded under `key`.
    fn add(&self, key: &str, field: &str, value: Value) {
        if let Some(Value::Object(object)) = self
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(key)
        {
            object.insert(field.to_string(), value);
        }
    }

    fn replace_catalog(&self, text: &str) -> Result<()> {
        let tmp = self.catalog_path.with_extension("yaml.next");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.catalog_path)?;
        Ok(())
    }

    async fn run(&self) -> Result<()> {
        let s = &self.s;
        let started = Instant::now();
        let version = self.client.apiserver_version().await?;
        eprintln!(
            "bench: kube-apiserver {} | N={} over {} registrations (fan-out {}), load {}",
            version.git_version,
            s.n,
            s.registrations,
            s.fanout,
            load_average()
        );
        self.record(
            "config",
            json!({
                "n": s.n, "registrations": s.registrations, "fanout_dependents": s.fanout,
                "idle_s": s.idle.as_secs(), "operator_concurrency": OPERATOR_CONCURRENCY,
                "create_concurrency": s.create_concurrency,
                "outcome_mix": self.plan.outcome_mix(),
                "catalog_subscriptions": self.plan.catalog_subscriptions.len(),
                "referenced_subscriptions": self.plan.referenced_subscriptions(),
                "resolver": s.resolver.as_str(),
            }),
        );
        self.record("kubernetes", json!(version.git_version));
        self.record("operator_binary", binary_info(&s.operator));
        self.record("machine", machine());
        self.record("load_average_start", json!(load_average()));

        ensure_crds(&self.client).await?;
        let catalog = self.plan.catalog(&[]);
        std::fs::write(&self.catalog_path, &catalog)?;
        self.record("catalog_bytes", json!(catalog.len()));
        // The operator's metadata flags, and in http mode the server it asks.
        let (server, resolver_args): (Option<MetadataServer>, Vec<OsString>) = match s.resolver {
            ResolverMode::Catalog => (
                None,
                vec!["--catalog-file".into(), self.catalog_path.clone().into()],
            ),
            ResolverMode::Http => {
                let server = MetadataServer::start(&catalog).await?;
                let ttl = format!("{}s", s.cache_ttl.as_secs());
                eprintln!(
                    "bench: --resolver http --resolver-url {} --cache-ttl {ttl} (longer than \
                     the operator may run: no cached answer expires during the measurement); \
                     fan-out skipped",
                    server.url
                );
                self.record(
                    "http_resolver",
                    json!({
                        "url": server.url,
                        "cache_ttl_s": s.cache_ttl.as_secs(),
                        "subscriptions_to_look_up": self.plan.looked_up_subscriptions(),
                    }),
                );
                let args = [
                    "--resolver",
                    "http",
                    "--resolver-url",
                    &server.url,
                    "--cache-ttl",
                    &ttl,
                ];
                let args = args.iter().map(OsString::from).collect();
                (Some(server), args)
            }
        };

        // 1. Create everything, before the operator runs.
        create_namespace(&self.client, &self.ns).await?;
        lock_resources(&self.resources)
            .namespaces
            .push(self.ns.clone());
        let registrations: Api<Registration> = Api::namespaced(self.client.clone(), &self.ns);
        let customers: Api<CustomerSubscription> = Api::namespaced(self.client.clone(), &self.ns);
        let reg_objects = self
            .plan
            .registrations
            .iter()
            .map(RegPlan::object)
            .collect::<Result<Vec<_>>>()?;
        let wave = |second: bool| -> Vec<CustomerSubscription> {
            self.plan
                .customers
                .iter()
                .filter(|c| c.second_wave == second)
                .map(|c| c.object(&self.plan.registrations))
                .collect()
        };
        let (first_wave, second_wave) = (wave(false), wave(true));
        let before_create = apiserver_requests(&self.client).await?;
        let t_create = Instant::now();
        create_all(&registrations, reg_objects, s.create_concurrency).await?;
        create_all(&customers, first_wave, s.create_concurrency).await?;
        create_all(&customers, second_wave, s.create_concurrency).await?;
        let create = t_create.elapsed();
        let after_create = apiserver_requests(&self.client).await?;
        let created = delta(&before_create, &after_create);
        eprintln!(
            "bench: created {} objects in {:.1} s ({:.0}/s)",
            s.n + s.registrations,
            create.as_secs_f64(),
            (s.n + s.registrations) as f64 / create.as_secs_f64()
        );
        self.record(
            "create",
            json!({
                "objects": s.n + s.registrations,
                "seconds": secs(create),
                "per_second": round2((s.n + s.registrations) as f64 / create.as_secs_f64()),
                "apiserver_creates": writes(&created, "customersubscriptions", Some(""))
                    + writes(&created, "registrations", Some("")),
            }),
        );

        // Watch both kinds before the operator starts, so that its first write is seen.
        let (changed, _) = watch::channel(0u64);
        let changed = Arc::new(changed);
        let cust_tracker: Shared = Arc::default();
        let reg_tracker: Shared = Arc::default();
        lock(&cust_tracker).expect(self.plan.expected_customers(&[]));
        lock(&reg_tracker).expect(self.plan.expected_registrations(&[]));
        let watches = [
            spawn_tracker(
                customers.clone(),
                cust_tracker.clone(),
                customer_signature,
                changed.clone(),
            ),
            spawn_tracker(
                registrations.clone(),
                reg_tracker.clone(),
                registration_signature,
                changed.clone(),
            ),
        ];
        let synced = wait_until(&changed, Duration::from_secs(120), || {
            lock(&cust_tracker).synced && lock(&reg_tracker).synced
        })
        .await;
        if !synced {
            return Err("the bench's own watches did not sync within 120 s".into());
        }
        let converged = || lock(&cust_tracker).is_converged() && lock(&reg_tracker).is_converged();

        // 2. Start the operator against the pre-created objects.
        let load_before = load_average();
        let before = apiserver_requests(&self.client).await?;
        let operator = Operator::start(s, &resolver_args, &self.ns)?;
        let pid = operator.pid();
        lock_resources(&self.resources).operator = Some(operator);
        let probe = self
            .probe
            .with("operator", pid)
            .with("bench", std::process::id());
        let cpu0 = probe.sample();
        let t0 = Instant::now();
        eprintln!(
            "bench: operator pid {pid} started (log {}); waiting for convergence",
            s.out_dir.join("operator.log").display()
        );
        let rss_series: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
        let sampler = tokio::spawn(sample_rss(pid, t0, rss_series.clone()));
        let ok = {
            let progress = tokio::spawn(report_progress(
                cust_tracker.clone(),
                reg_tracker.clone(),
                t0,
            ));
            let ok = wait_until(&changed, s.converge_timeout, || {
                converged() || self.operator_exited()
            })
            .await
                && converged();
            progress.abort();
            ok
        };
        let cpu1 = probe.sample();
        sampler.abort();
        let rss_series = std::mem::take(&mut *rss_series.lock().unwrap_or_else(|p| p.into_inner()));
        let after = apiserver_requests(&self.client).await?;
        let port = listening_ports(pid).first().copied();
        let op_metrics_converged = port.and_then(operator_metrics);
        let up_converged = server.as_ref().map(MetadataServer::snapshot);
        let converged_at = {
            let c = lock(&cust_tracker)
                .converged_at
                .unwrap_or_else(Instant::now);
            let r = lock(&reg_tracker).converged_at.unwrap_or_else(Instant::now);
            c.max(r)
        };
        let converge = converged_at.duration_since(t0);
        let customers_converge = lock(&cust_tracker)
            .converged_at
            .map(|c| secs(c.duration_since(t0)));
        let first_write = lock(&cust_tracker)
            .modifications
            .first()
            .map(|t| secs(t.duration_since(t0)));
        let d = delta(&before, &after);
        let n = s.n as f64;
        let cust_status_writes = writes(&d, "customersubscriptions", Some("status"));
        let modifications = lock(&cust_tracker).modifications.len();
        self.record(
            "converge",
            json!({
                "ok": ok,
                "seconds": secs(converge),
                "first_create_to_converged_s": secs(converged_at.duration_since(t_create)),
                "customers_seconds": customers_converge,
                "first_status_write_s": first_write,
                "objects_per_second": round2(n / converge.as_secs_f64()),
                "customer_status_writes": cust_status_writes,
                "customer_status_writes_per_object": round2(cust_status_writes / n),
                "customer_modifications_seen_by_watch": modifications,
                "registration_status_writes": writes(&d, "registrations", Some("status")),
                "registration_writes_total": writes(&d, "registrations", None),
                "event_writes": writes(&d, "events", None),
                "all_writes_per_object": round2(all_writes(&d) / n),
                "operator_reported_writes": op_metrics_converged.as_ref().map(operator_writes),
                "resolver": resolver_lookups(None, op_metrics_converged.as_ref(), n),
                "apiserver_requests": requests_json(&d),
                "cpu": cpu_json(&cpu0, &cpu1),
                "operator_rss_mib": memory_mib(pid, "VmRSS:").map(round2),
                "operator_peak_rss_mib": memory_mib(pid, "VmHWM:").map(round2),
                "operator_rss_series_mib": rss_series,
                "operator_metrics_port": port,
                "load_average_before": load_before,
                "load_average_after": load_average(),
            }),
        );
        if let Some(up) = &up_converged {
            self.add("converge", "upstream", upstream_json(up, &self.plan));
        }
        if !ok {
            let mismatches = lock(&cust_tracker).mismatches();
            let reg_mismatches = lock(&reg_tracker).mismatches();
            self.record(
                "converge_mismatches",
                json!({"customers": mismatches, "registrations": reg_mismatches}),
            );
            return Err(format!(
                "not converged after {:.0} s: customers {:?}, registrations {:?}",
                converge.as_secs_f64(),
                mismatches,
                reg_mismatches
            )
            .into());
        }
        eprintln!(
            "bench: converged in {:.2} s, {:.2} customer status writes per object",
            converge.as_secs_f64(),
            cust_status_writes / n
        );

        // 3. Idle, after a short settle: a reconcile whose status write completed the set may
        // still have its Event in flight; that belongs to convergence, not to idling.
        tokio::time::sleep(SETTLE).await;
        let after_settle = apiserver_requests(&self.client).await?;
        let op_metrics_settled = port.and_then(operator_metrics);
        let up_settled = server.as_ref().map(MetadataServer::snapshot);
        self.record(
            "settle",
            json!({
                "seconds": SETTLE.as_secs_f64(),
                "writes": all_writes(&delta(&after, &after_settle)),
                "apiserver_requests": requests_json(&delta(&after, &after_settle)),
            }),
        );
        let cpu1 = probe.sample();
        let t_idle = Instant::now();
        tokio::time::sleep(s.idle).await;
        let cpu2 = probe.sample();
        let after_idle = apiserver_requests(&self.client).await?;
        let d = delta(&after_settle, &after_idle);
        let op_metrics_idle = port.and_then(operator_metrics);
        let up_idle = server.as_ref().map(MetadataServer::snapshot);
        let idle_mods = lock(&cust_tracker).modifications_between(t_idle, Instant::now())
            + lock(&reg_tracker).modifications_between(t_idle, Instant::now());
        self.record(
            "idle",
            json!({
                "seconds": s.idle.as_secs(),
                "writes": all_writes(&d),
                "modifications_seen_by_watch": idle_mods,
                "operator_reported_writes": match (&op_metrics_settled, &op_metrics_idle) {
                    (Some(b), Some(a)) => json!(operator_writes(a) - operator_writes(b)),
                    _ => Value::Null,
                },
                "operator_metrics_delta": match (&op_metrics_settled, &op_metrics_idle) {
                    (Some(b), Some(a)) => metrics_delta(b, a),
                    _ => Value::Null,
                },
                "resolver": match &op_metrics_settled {
                    Some(b) => resolver_lookups(Some(b), op_metrics_idle.as_ref(), 0.0),
                    None => Value::Null,
                },
                "apiserver_requests": requests_json(&d),
                "cpu": cpu_json(&cpu1, &cpu2),
                "operator_rss_mib": memory_mib(pid, "VmRSS:").map(round2),
            }),
        );
        if let (Some(converged), Some(settled), Some(idle)) = (&up_converged, &up_settled, &up_idle)
        {
            self.add("settle", "upstream", settled.since_json(converged));
            self.add("idle", "upstream", idle.since_json(settled));
        }
        eprintln!(
            "bench: idle {} s: {} writes",
            s.idle.as_secs(),
            all_writes(&d)
        );

        // 4. Fan-out: revoke the approval of the large registration.
        let op_metrics_after_fanout = if s.resolver == ResolverMode::Http {
            self.record(
                "fanout",
                json!({"skipped": true, "reason": FANOUT_SKIPPED_HTTP}),
            );
            eprintln!("bench: fan-out {FANOUT_SKIPPED_HTTP}");
            None
        } else {
            let revoked = [self.plan.fanout_registration];
            lock(&cust_tracker).expect(self.plan.expected_customers(&revoked));
            lock(&reg_tracker).expect(self.plan.expected_registrations(&revoked));
            let t_f = Instant::now();
            self.replace_catalog(&self.plan.catalog(&revoked))?;
            let ok = wait_until(&changed, s.fanout_timeout, || {
                converged() || self.operator_exited()
            })
            .await
                && converged();
            let cpu3 = probe.sample();
            let after_fanout = apiserver_requests(&self.client).await?;
            let d = delta(&after_idle, &after_fanout);
            let (first, cust_done) = {
                let t = lock(&cust_tracker);
                let first = t.modifications.iter().find(|m| **m >= t_f).copied();
                (first, t.converged_at)
            };
            let reg_done = lock(&reg_tracker).converged_at;
            let op_metrics_after_fanout = port.and_then(operator_metrics);
            self.record(
                "fanout",
                json!({
                    "ok": ok,
                    "dependents": s.fanout,
                    "seconds": cust_done.map(|c| secs(c.duration_since(t_f))),
                    "registration_seconds": reg_done.map(|c| secs(c.duration_since(t_f))),
                    "first_dependent_write_s": first.map(|f| secs(f.duration_since(t_f))),
                    "customer_status_writes": writes(&d, "customersubscriptions", Some("status")),
                    "all_writes": all_writes(&d),
                    "apiserver_requests": requests_json(&d),
                    "cpu": cpu_json(&cpu2, &cpu3),
                    "resolver": match &op_metrics_idle {
                        Some(b) => resolver_lookups(
                            Some(b),
                            op_metrics_after_fanout.as_ref(),
                            s.fanout as f64,
                        ),
                        None => Value::Null,
                    },
                }),
            );
            if !ok {
                return Err(format!(
                    "fan-out not converged after {:.0} s: {:?}",
                    s.fanout_timeout.as_secs_f64(),
                    lock(&cust_tracker).mismatches()
                )
                .into());
            }
            eprintln!(
                "bench: fan-out of {} dependents in {:.2} s",
                s.fanout,
                cust_done.map_or(0.0, |c| c.duration_since(t_f).as_secs_f64())
            );
            op_metrics_after_fanout
        };

        // The operator's totals, then stop it: the limit runs without it.
        let cpu_total = cpu_seconds(pid, probe.ticks);
        self.record(
            "operator",
            json!({
                "peak_rss_mib": memory_mib(pid, "VmHWM:").map(round2),
                "rss_mib": memory_mib(pid, "VmRSS:").map(round2),
                "cpu_seconds_total": cpu_total.map(round2),
                "threads": std::fs::read_to_string(format!("/proc/{pid}/status")).ok()
                    .and_then(|s| s.lines().find(|l| l.starts_with("Threads:"))
                        .and_then(|l| l.split_whitespace().nth(1)).map(str::to_string)),
                "metrics_endpoint": port.map(|p| format!("127.0.0.1:{p}")),
                "metrics_at_convergence": op_metrics_converged.clone().map(|m| json!(m)),
                "metrics_fanout_delta": match (&op_metrics_idle, &op_metrics_after_fanout) {
                    (Some(b), Some(a)) => metrics_delta(b, a),
                    _ => Value::Null,
                },
            }),
        );
        if let Some(mut operator) = lock_resources(&self.resources).operator.take() {
            operator.stop();
        }
        if let Some(server) = server {
            // Everything the operator asked, from its start to its stop.
            let whole = server.snapshot().since_json(&UpstreamSnapshot::default());
            self.add("http_resolver", "requests_while_operator_ran", whole);
        }
        for w in watches {
            w.abort();
        }

        // 5. The limit: the same number of status applies, straight from a client.
        if !s.skip_limit {
            self.limit().await?;
        }
        self.record("load_average_end", json!(load_average()));
        self.record("total_seconds", json!(secs(started.elapsed())));
        Ok(())
    }

    fn operator_exited(&self) -> bool {
        lock_resources(&self.resources)
            .operator
            .as_mut()
            .is_some_and(|o| o.exited().is_some())
    }

    async fn limit(&self) -> Result<()> {
        let s = &self.s;
        create_namespace(&self.client, &self.limit_ns).await?;
        lock_resources(&self.resources)
            .namespaces
            .push(self.limit_ns.clone());
        let api: Api<CustomerSubscription> = Api::namespaced(self.client.clone(), &self.limit_ns);
        let objects: Vec<CustomerSubscription> = self
            .plan
            .customers
            .iter()
            .map(|c| c.object(&self.plan.registrations))
            .collect();
        let t_create = Instant::now();
        create_all(&api, objects, s.create_concurrency).await?;
        let create = t_create.elapsed();

        // Two watchers, as in the operator phase (the operator's and the bench's).
        let (changed, _) = watch::channel(0u64);
        let changed = Arc::new(changed);
        let tracker: Shared = Arc::default();
        lock(&tracker).expect(
            self.plan
                .customers
                .iter()
                .map(|c| (c.name.clone(), ATTACHED.to_string()))
                .collect(),
        );
        let watches = [
            spawn_tracker(
                api.clone(),
                tracker.clone(),
                customer_signature,
                changed.clone(),
            ),
            spawn_tracker(
                api.clone(),
                Arc::default(),
                customer_signature,
                changed.clone(),
            ),
        ];
        if !wait_until(&changed, Duration::from_secs(120), || lock(&tracker).synced).await {
            return Err("the limit watch did not sync within 120 s".into());
        }

        // The body the operator writes for an attached subscription, for its current generation.
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let bodies: Vec<(String, Value)> = self
            .plan
            .customers
            .iter()
            .enumerate()
            .map(|(j, c)| {
                let reg = &self.plan.registrations[c.registration];
                let arm = format!(
                    "/subscriptions/{}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.AzureStack/registrations/{}",
                    reg.subscription_id, reg.registration_name
                );
                let sub = c.subscription_id.to_ascii_lowercase();
                let body = json!({
                    "apiVersion": "csp.azurestack.io/v1alpha1",
                    "kind": "CustomerSubscription",
                    "status": {
                        "observedGeneration": 1,
                        "armResourceId": format!("{arm}/customerSubscriptions/{sub}"),
                        "tenantId": guid(G_CUST_TENANT, j as u64),
                        "billingPartnerId": partner_id(reg.partner),
                        "conditions": [{
                            "type": "Ready", "status": "True", "reason": ATTACHED,
                            "message": format!("Subscription {sub} is attached to registration {arm}; its tenant's usage is billed to it."),
                            "lastTransitionTime": now, "observedGeneration": 1,
                        }],
                    },
                });
                (c.name.clone(), body)
            })
            .collect();
        let before = apiserver_requests(&self.client).await?;
        let probe = self.probe.with("bench", std::process::id());
        let cpu0 = probe.sample();
        let t0 = Instant::now();
        let params = PatchParams::apply(STATUS_MANAGER).force();
        let mut errors = 0usize;
        {
            let mut results = stream::iter(bodies.iter().map(|(name, body)| {
                let api = api.clone();
                let params = params.clone();
                async move {
                    let mut attempt = 0;
                    loop {
                        match api.patch_status(name, &params, &Patch::Apply(body)).await {
                            Ok(_) => return Ok(()),
                            Err(e) if retryable(&e) && attempt < 5 => {
                                attempt += 1;
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                }
            }))
            .buffer_unordered(OPERATOR_CONCURRENCY);
            while let Some(result) = results.next().await {
                if let Err(error) = result {
                    errors += 1;
                    if errors <= 3 {
                        eprintln!("bench: limit write failed: {error}");
                    }
                }
            }
        }
        let written = t0.elapsed();
        let seen = wait_until(&changed, Duration::from_secs(120), || {
            lock(&tracker).is_converged()
        })
        .await;
        let seen_at = lock(&tracker).converged_at.map(|c| c.duration_since(t0));
        let cpu1 = probe.sample();
        let after = apiserver_requests(&self.client).await?;
        let d = delta(&before, &after);
        for w in watches {
            w.abort();
        }
        let n = s.n as f64;
        self.record(
            "limit",
            json!({
                "create_seconds": secs(create),
                "create_per_second": round2(n / create.as_secs_f64()),
                "writes": bodies.len(),
                "errors": errors,
                "seconds": secs(written),
                "seen_by_watch_seconds": seen.then_some(seen_at.map(secs)).flatten(),
                "writes_per_second": round2(n / written.as_secs_f64()),
                "customer_status_writes": writes(&d, "customersubscriptions", Some("status")),
                "apiserver_requests": requests_json(&d),
                "cpu": cpu_json(&cpu0, &cpu1),
            }),
        );
        eprintln!(
            "bench: limit: {} status applies in {:.2} s ({:.0}/s)",
            bodies.len(),
            written.as_secs_f64(),
            n / written.as_secs_f64()
        );
        if errors > 0 {
            return Err(format!("{errors} limit writes failed").into());
        }
        Ok(())
    }
}

fn lock_resources(r: &Arc<Mutex<Resources>>) -> std::sync::MutexGuard<'_, Resources> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// Samples the operator's RSS every second into `series` (seconds since `t0`, MiB).
async fn sample_rss(pid: u32, t0: Instant, series: Arc<Mutex<Vec<(f64, f64)>>>) {
    loop {
        if let Some(rss) = memory_mib(pid, "VmRSS:") {
            series
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((round2(t0.elapsed().as_secs_f64()), round2(rss)));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn report_progress(cust: Shared, reg: Shared, t0: Instant) {
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

/// Stops the operator, lets the namespaces go (removing the operator's finalizers, which
/// nobody would remove once it is gone), and waits a bounded time for them to disappear.
async fn cleanup(client: &Client, resources: &Arc<Mutex<Resources>>) -> Value {
    if let Some(mut operator) = lock_resources(resources).operator.take() {
        operator.stop();
        eprintln!("bench: operator stopped (log {})", operator.log.display());
    }
    let namespaces = lock_resources(resources).namespaces.clone();
    let t = Instant::now();
    for ns in &namespaces {
        let api: Api<Registration> = Api::namespaced(client.clone(), ns);
        if let Ok(list) = api.list_metadata(&ListParams::default()).await {
            for reg in list.items.iter().filter(|r| !r.finalizers().is_empty()) {
                let patch = json!({"metadata": {"finalizers": null}});
                let _ = api
                    .patch(
                        &reg.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await;
            }
        }
        if let Err(error) = Api::<Namespace>::all(client.clone())
            .delete(ns, &DeleteParams::background())
            .await
        {
            eprintln!("bench: cannot delete namespace {ns}: {error}");
        }
    }
    let namespaces_api = Api::<Namespace>::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut gone = false;
    while Instant::now() < deadline {
        let mut remaining = 0;
        for ns in &namespaces {
            if matches!(namespaces_api.get_opt(ns).await, Ok(Some(_)) | Err(_)) {
                remaining += 1;
            }
        }
        if remaining == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if !gone {
        eprintln!(
            "bench: namespaces {namespaces:?} still terminating after 300 s; kube-controller-manager finishes them"
        );
    }
    json!({"namespaces": namespaces, "deleted": gone, "seconds": secs(t.elapsed())})
}

/// CPU seconds of every measured process (API server, etcd, operator, bench) in one phase.
fn phase_cpu(results: &serde_json::Map<String, Value>, phase: &str) -> Option<f64> {
    let cpu = results.get(phase)?.get("cpu")?.as_object()?;
    let total: f64 = cpu
        .iter()
        .filter(|(k, _)| k.ends_with("_cpu_s"))
        .filter_map(|(_, v)| v.as_f64())
        .sum();
    (total > 0.0).then_some(total)
}

/// The CPU spent on convergence over the CPU spent on the limit: on a machine where the
/// API server, etcd and the client share the cores, the wall-clock ratio follows this one,
/// and unlike wall time it does not move with other load on the machine.
fn cpu_ratio(results: &serde_json::Map<String, Value>) -> Option<f64> {
    let converge = phase_cpu(results, "converge")?;
    let limit = phase_cpu(results, "limit")?;
    Some(round2(converge / limit))
}

/// Operator convergence time over the limit's write time.
fn ratio(results: &serde_json::Map<String, Value>) -> Option<f64> {
    let converge = results.get("converge")?.get("seconds")?.as_f64()?;
    let limit = results.get("limit")?.get("seconds")?.as_f64()?;
    (limit > 0.0).then(|| round2(converge / limit))
}

fn print_summary(results: &serde_json::Map<String, Value>) {
    let get = |path: &[&str]| -> Value {
        let mut v = Value::Object(results.clone());
        for p in path {
            v = v.get(*p).cloned().unwrap_or(Value::Null);
        }
        v
    };
    let num = |path: &[&str]| get(path).as_f64();
    let fmt = |x: Option<f64>, unit: &str| x.map_or("n/a".to_string(), |x| format!("{x}{unit}"));
    let converge = num(&["converge", "seconds"]);
    let limit = num(&["limit", "seconds"]);
    let ratio = ratio(results);
    let lookups = |phase: &str, per: &str| {
        let total = num(&[phase, "resolver", "lookups"]);
        let upstream = num(&[phase, "resolver", "upstream_requests"]);
        match (total, num(&[phase, "resolver", "per_object"]), upstream) {
            (Some(t), Some(p), Some(u)) => format!("{t} ({p} per {per}; {u} upstream requests)"),
            (Some(t), _, _) => format!("{t}"),
            _ => "n/a (no azs_csp_resolver_* in /metrics)".to_string(),
        }
    };
    let distinct = format!(
        "{} in the catalog, {} named by the objects",
        fmt(num(&["config", "catalog_subscriptions"]), ""),
        fmt(num(&["config", "referenced_subscriptions"]), "")
    );
    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    let mut rows = vec![
        (
            "create N + registrations (client)",
            fmt(num(&["create", "seconds"]), " s"),
            "",
        ),
        (
            "converge: operator start → all final",
            fmt(converge, " s"),
            "",
        ),
        (
            "limit: N status applies, 32 in flight",
            fmt(limit, " s"),
            "",
        ),
        ("ratio converge / limit", fmt(ratio, ""), "≤ 1.5"),
        (
            "CPU ratio (all processes) converge / limit",
            fmt(cpu_ratio(results), ""),
            "",
        ),
        (
            "customer status writes per object",
            fmt(num(&["converge", "customer_status_writes_per_object"]), ""),
            "≤ 1.05",
        ),
        (
            "all writes per object (status, registrations, events)",
            fmt(num(&["converge", "all_writes_per_object"]), ""),
            "",
        ),
        ("writes while idle", fmt(num(&["idle", "writes"]), ""), "0"),
        (
            "operator peak RSS",
            fmt(num(&["operator", "peak_rss_mib"]), " MiB"),
            "≤ 64 MiB",
        ),
        (
            "operator CPU (converge)",
            fmt(num(&["converge", "cpu", "operator_cpu_s"]), " s"),
            "",
        ),
        (
            "operator CPU (whole run)",
            fmt(num(&["operator", "cpu_seconds_total"]), " s"),
            "",
        ),
        (
            "fan-out dependents",
            fmt(num(&["fanout", "dependents"]), ""),
            "",
        ),
        ("fan-out time", fmt(num(&["fanout", "seconds"]), " s"), ""),
        (
            "resolver lookups: converge",
            lookups("converge", "object"),
            "",
        ),
        (
            "resolver lookups: fan-out",
            lookups("fanout", "dependent"),
            "",
        ),
        ("… distinct subscriptions", distinct, ""),
    ];
    if results.contains_key("http_resolver") {
        http_rows(&mut rows, &num);
    }
    for (name, value, target) in rows {
        println!("| {name} | {value} | {target} |");
    }
}

/// The http mode's rows: what the bench's metadata server answered, the operator's own cache
/// counters, and the fan-out marked as skipped.
fn http_rows(
    rows: &mut Vec<(&'static str, String, &'static str)>,
    num: &dyn Fn(&[&str]) -> Option<f64>,
) {
    let n = |path: &[&str]| num(path).map_or("n/a".to_string(), |x| x.to_string());
    for (name, value, _) in rows.iter_mut() {
        if name.starts_with("fan-out") || *name == "resolver lookups: fan-out" {
            *value = "skipped (http resolver: a revoked approval is seen only after --cache-ttl)"
                .to_string();
        }
    }
    let up = |field: &str| n(&["converge", "upstream", field]);
    let served = format!(
        "{} ({} subscription lookups of {} distinct subscriptions, {} approval lookups of {} \
         registrations, {} answered 404)",
        up("requests"),
        up("subscription_lookups"),
        up("distinct_subscriptions"),
        up("approval_lookups"),
        up("distinct_registrations"),
        up("not_found"),
    );
    let op = |field: &str| n(&["converge", "resolver", field]);
    let operator = format!(
        "{} requests, {} misses, {} coalesced, {} hits, {} errors",
        op("upstream_requests"),
        op("misses"),
        op("coalesced"),
        op("hits"),
        op("upstream_errors"),
    );
    let distinct = rows.len() - 1;
    rows.insert(
        distinct,
        (
            "upstream requests answered by the bench's server: converge",
            served,
            "≈ distinct subscriptions",
        ),
    );
    rows.insert(
        distinct + 1,
        ("operator azs_csp_resolver_*: converge", operator, ""),
    );
    rows.insert(
        distinct + 2,
        (
            "upstream requests while idle",
            n(&["idle", "upstream", "requests"]),
            "0",
        ),
    );
    rows.push((
        "… of them the decisions look up (rule 2 settles the rest)",
        n(&["converge", "upstream", "subscriptions_to_look_up"]),
        "",
    ));
    rows.push((
        "http resolver --cache-ttl",
        format!("{} s", n(&["http_resolver", "cache_ttl_s"])),
        "",
    ));
}

fn main() -> ExitCode {
    // `cargo bench` passes --bench; nothing else is read from the command line.
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        if let Err(e) = std::fs::create_dir_all(&settings.out_dir) {
            eprintln!("bench: cannot create {}: {e}", settings.out_dir.display());
            return ExitCode::from(2);
        }
        let client = match client(&settings.kubeconfig).await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("bench: {e}");
                return ExitCode::from(2);
            }
        };
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ns = format!("azs-csp-bench-{}", std::process::id());
        let resources = Arc::new(Mutex::new(Resources::default()));
        let total_timeout = settings.total_timeout;
        let out_file = settings
            .out_dir
            .join(match settings.resolver {
                ResolverMode::Catalog => format!("scale-n{}-{stamp}.json", settings.n),
                ResolverMode::Http => format!("scale-n{}-http-{stamp}.json", settings.n),
            });
        let probe = Probe {
            ticks: clock_ticks(),
            pids: control_plane_pids(&settings.kubeconfig),
        };
        let bench = Bench {
            plan: Plan::new(settings.n, settings.registrations, settings.fanout),
            catalog_path: settings.out_dir.join("catalog.yaml"),
            limit_ns: format!("{ns}-limit"),
            ns,
            s: settings,
            client: client.clone(),
            probe,
            resources: resources.clone(),
            results: Mutex::default(),
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(total_timeout, bench.run()) => match r {
                Ok(r) => r,
                Err(_) => Err(format!("the run exceeded AZS_BENCH_TIMEOUT ({} s)", total_timeout.as_secs()).into()),
            },
            _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        };
        let cleaned = cleanup(&client, &resources).await;
        bench.record("cleanup", cleaned);
        if let Err(e) = &outcome {
            bench.record("error", json!(e.to_string()));
        }
        let mut results = bench.results.into_inner().unwrap_or_else(|p| p.into_inner());
        let ratio = ratio(&results);
        results.insert("ratio_converge_to_limit".into(), json!(ratio));
        let cpu_ratio = cpu_ratio(&results);
        results.insert("cpu_ratio_converge_to_limit".into(), json!(cpu_ratio));
        match serde_json::to_string_pretty(&Value::Object(results.clone())) {
            Ok(text) => {
                if let Err(e) = std::fs::write(&out_file, text + "\n") {
                    eprintln!("bench: cannot write {}: {e}", out_file.display());
                } else {
                    eprintln!("bench: results in {}", out_file.display());
                }
            }
            Err(e) => eprintln!("bench: cannot serialize the results: {e}"),
        }
        print_summary(&results);
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench: FAILED: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
