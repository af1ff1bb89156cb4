//! Fault injection for `tests/faults.rs` (compiled into that binary only): stopping and starting the local API server, a
//! generated population of objects whose outcomes are known in advance, waiting for all of
//! them, and cleanup that does not leave namespaces stuck on finalizers.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use azs_csp_operator::api::{ConditionStatus, CustomerSubscription, Registration};
use kube::{
    Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};

use azs_csp_testkit::{
    cluster::{self, TestNamespace, kubeconfig_path, repo_root},
    process::Operator,
};

use crate::common::reasons::{customer_reason, registration_reason};

// ---- the API server of the local control plane ----

/// How long the restarted kube-apiserver may take to be ready, in seconds.
const APISERVER_START_TIMEOUT_S: &str = "240";

/// The kube-apiserver of the local control plane (`make cluster-up`), stopped and started by
/// `hack/apiserver-restart.sh` with its own command line, so that it comes back on the same
/// address with the same certificates and etcd.
#[derive(Clone)]
pub struct ApiServer {
    cluster_dir: PathBuf,
}

impl ApiServer {
    /// The local cluster's API server. Fails (never skips) when the tests' kubeconfig points
    /// at another cluster, whose API server this process cannot restart.
    pub fn local() -> Self {
        let cluster_dir = std::env::var_os("AZS_CSP_CLUSTER_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".cluster"));
        let env_file = cluster_dir.join("cluster.env");
        let env = std::fs::read_to_string(&env_file).unwrap_or_else(|e| {
            panic!(
                "the API server restart test needs the local control plane (cannot read {}: {e}); start it with `make cluster-up`, or run `make test-faults`",
                env_file.display()
            )
        });
        let port: u16 = env
            .lines()
            .find_map(|l| l.strip_prefix("APISERVER_PORT="))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no APISERVER_PORT in {}", env_file.display()));
        let kubeconfig = std::fs::read_to_string(kubeconfig_path()).unwrap_or_default();
        let server = format!("server: https://127.0.0.1:{port}");
        assert!(
            kubeconfig.lines().any(|l| l.trim() == server),
            "the kubeconfig of the tests ({}) is not the local cluster's (https://127.0.0.1:{port} in {}), whose API server this test restarts: unset KUBECONFIG, or set AZS_CSP_CLUSTER_DIR to that cluster's directory",
            kubeconfig_path().display(),
            cluster_dir.display()
        );
        Self { cluster_dir }
    }

    fn script(&self, args: &[&str]) -> Result<(), String> {
        let output = Command::new(repo_root().join("hack/apiserver-restart.sh"))
            .args(args)
            .env("AZS_CSP_CLUSTER_DIR", &self.cluster_dir)
            // The script's 60 s for /readyz is plenty on a quiet machine (about 2 s), but in one
            // CI run the restarted server wrote its first log line 58 s after its start, with
            // the machine stalled: the outage being tested is the one the test makes.
            .env("APISERVER_START_TIMEOUT", APISERVER_START_TIMEOUT_S)
            .output()
            .map_err(|e| format!("cannot run hack/apiserver-restart.sh: {e}"))?;
        let log = String::from_utf8_lossy(&output.stderr).to_string();
        eprint!("{log}");
        if output.status.success() {
            Ok(())
        } else {
            Err(format!("hack/apiserver-restart.sh {args:?} failed:\n{log}"))
        }
    }

    /// Kills the API server (SIGKILL: a crash, no graceful shutdown) and waits until its port
    /// is closed. The returned guard starts it again when ended or dropped (also on panic).
    pub async fn kill(&self) -> Outage<'_> {
        let server = self.clone();
        tokio::task::spawn_blocking(move || server.script(&["stop", "--kill"]))
            .await
            .expect("stop task")
            .unwrap_or_else(|e| panic!("{e}"));
        Outage {
            server: self,
            since: Instant::now(),
            ended: false,
        }
    }
}

/// The API server is down until [`Outage::end`] (or drop) starts it again.
pub struct Outage<'a> {
    server: &'a ApiServer,
    pub since: Instant,
    ended: bool,
}

impl Outage<'_> {
    /// Starts the API server again and waits for `/readyz`; returns how long it was down.
    pub async fn end(mut self) -> Duration {
        let server = self.server.clone();
        self.ended = true;
        tokio::task::spawn_blocking(move || server.script(&["start"]))
            .await
            .expect("start task")
            .unwrap_or_else(|e| panic!("{e}"));
        self.since.elapsed()
    }
}

impl Drop for Outage<'_> {
    fn drop(&mut self) {
        if !self.ended
            && let Err(e) = self.server.script(&["start"])
        {
            eprintln!("could not start the API server again after a failed test: {e}");
        }
    }
}

// ---- a population with known outcomes ----

/// A GUID unique to (`tag`, `i`), in lower case.
pub fn guid(tag: u32, i: usize) -> String {
    format!("{tag:08x}-0000-4000-8000-{i:012x}")
}

/// Flips the letter case of a GUID's hex letters by the bits of `mask`.
pub fn case_variant(guid: &str, mask: u64) -> String {
    guid.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

pub const PARTNER: &str = "4412345";
pub const OTHER_PARTNER: &str = "5590000";
pub const RESELLER: &str = "5523456";

/// Registrations and CustomerSubscriptions in every documented outcome, with the catalog that
/// produces them and the reason each object must end with.
pub struct Population {
    pub catalog: String,
    pub registrations: Vec<Value>,
    /// Created first.
    pub customers: Vec<Value>,
    /// Newer duplicates of attached customers: created after all of `customers`.
    pub duplicates: Vec<Value>,
    pub expected_customers: BTreeMap<String, String>,
    pub expected_registrations: BTreeMap<String, String>,
    /// `status.customerSubscriptionCount` of the registrations that have customers.
    pub expected_counts: BTreeMap<String, i64>,
}

fn subscription(id: &str, tenant: &str, state: &str, offer: &str, partner: Option<&str>) -> String {
    let mut entry =
        format!("- id: {id}\n  tenantId: {tenant}\n  state: {state}\n  offer: {offer}\n");
    if let Some(partner) = partner {
        entry.push_str(&format!("  billingPartnerId: \"{partner}\"\n"));
    }
    entry
}

impl Population {
    /// `n` CustomerSubscriptions, a tenth of them in each of ten outcomes: Attached three ways
    /// (direct, indirect, case-variant GUIDs with tenantId), BadCustomerSubscriptionId,
    /// InvalidCSPSubscription, InvalidCustomerSubscriptionId (unknown, disabled, wrong
    /// tenant), RegistrationNotFound, CustomerSubscriptionsNotAllowed,
    /// UnauthorizedCspRegistration and DuplicateCustomerSubscription; and six Registrations
    /// (Registered, InvalidRegistrationSubscription, DuplicateCloudId).
    pub fn new(n: usize) -> Self {
        let reg_a = guid(0xa0, 1);
        let reg_b = guid(0xa0, 2);
        let reg_lapsed = guid(0xa0, 3);
        let mut catalog = String::from("subscriptions:\n");
        catalog += &subscription(&reg_a, &guid(0xd1, 1), "Enabled", "APSS", Some(PARTNER));
        catalog += &subscription(
            &reg_b,
            &guid(0xd1, 2),
            "Enabled",
            "APSS",
            Some(OTHER_PARTNER),
        );
        catalog += &subscription(
            &reg_lapsed,
            &guid(0xd1, 3),
            "Disabled",
            "APSS",
            Some(PARTNER),
        );
        let registration = |name: &str, sub: &str, cloud: usize, model: &str, reg_name: &str| {
            json!({
                "metadata": {"name": name},
                "spec": {
                    "subscriptionId": sub,
                    "resourceGroup": "azurestack",
                    "registrationName": reg_name,
                    "cloudId": guid(0xc1, cloud),
                    "billingModel": model,
                    "agreementNumber": "EA-1",
                }
            })
        };
        let registrations = vec![
            registration("stack-a", &reg_a, 1, "PayAsYouUse", "azurestack-a"),
            registration("stack-b", &reg_b, 2, "PayAsYouUse", "azurestack-b"),
            registration("capacity", &reg_a, 3, "Capacity", "azurestack-cap"),
            registration("edge", &reg_a, 4, "PayAsYouUse", "azurestack-edge"),
            registration("lapsed", &reg_lapsed, 5, "PayAsYouUse", "azurestack-lapsed"),
            // Same cloudId as stack-a, created after it.
            registration("stack-a-copy", &reg_a, 1, "PayAsYouUse", "azurestack-a"),
        ];
        let expected_registrations = [
            ("stack-a", "Registered"),
            ("stack-b", "Registered"),
            ("capacity", "Registered"),
            ("edge", "Registered"),
            ("lapsed", "InvalidRegistrationSubscription"),
            ("stack-a-copy", "DuplicateCloudId"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

        let mut customers = Vec::new();
        let mut duplicates = Vec::new();
        let mut expected_customers = BTreeMap::new();
        let mut expected_counts: BTreeMap<String, i64> =
            [("stack-a".to_string(), 0), ("stack-b".to_string(), 0)].into();
        for i in 0..n {
            let name = format!("cs-{i:04}");
            let sub = guid(0xb0, i);
            let tenant = guid(0xd0, i);
            let customer = |registration: &str, sub: &str, tenant: Option<&str>| {
                let mut spec =
                    json!({"registrationRef": {"name": registration}, "subscriptionId": sub});
                if let Some(tenant) = tenant {
                    spec["tenantId"] = json!(tenant);
                }
                json!({"metadata": {"name": name}, "spec": spec})
            };
            let csp = |partner: &str| subscription(&sub, &tenant, "Enabled", "CSP", Some(partner));
            let (manifest, reason) = match i % 10 {
                0 => {
                    catalog += &csp(PARTNER);
                    *expected_counts.get_mut("stack-a").unwrap() += 1;
                    (customer("stack-a", &sub, None), "Attached")
                }
                1 => {
                    catalog += &csp(OTHER_PARTNER);
                    catalog += &format!("  resellerPartnerId: \"{RESELLER}\"\n");
                    *expected_counts.get_mut("stack-b").unwrap() += 1;
                    (customer("stack-b", &sub, None), "Attached")
                }
                2 => {
                    catalog += &subscription(&sub, &tenant, "Warned", "CSP", Some(PARTNER));
                    *expected_counts.get_mut("stack-a").unwrap() += 1;
                    let upper = sub.to_uppercase();
                    let tenant_variant = case_variant(&tenant, 0x5555_5555_5555_5555);
                    (
                        customer("stack-a", &upper, Some(&tenant_variant)),
                        "Attached",
                    )
                }
                3 => {
                    catalog += &csp(OTHER_PARTNER);
                    (customer("stack-a", &sub, None), "BadCustomerSubscriptionId")
                }
                4 => {
                    catalog += &subscription(&sub, &tenant, "Enabled", "PayAsYouGo", None);
                    (customer("stack-a", &sub, None), "InvalidCSPSubscription")
                }
                5 => {
                    let manifest = match (i / 10) % 3 {
                        // Unknown to the catalog.
                        0 => customer("stack-a", &sub, None),
                        1 => {
                            catalog +=
                                &subscription(&sub, &tenant, "Disabled", "CSP", Some(PARTNER));
                            customer("stack-a", &sub, None)
                        }
                        _ => {
                            catalog += &csp(PARTNER);
                            customer("stack-a", &sub, Some(&guid(0xd2, i)))
                        }
                    };
                    (manifest, "InvalidCustomerSubscriptionId")
                }
                6 => {
                    catalog += &csp(PARTNER);
                    (customer("ghost", &sub, None), "RegistrationNotFound")
                }
                7 => {
                    catalog += &csp(PARTNER);
                    (
                        customer("capacity", &sub, None),
                        "CustomerSubscriptionsNotAllowed",
                    )
                }
                8 => {
                    catalog += &csp(PARTNER);
                    (customer("edge", &sub, None), "UnauthorizedCspRegistration")
                }
                _ => {
                    // The subscription of cs-(i-9), attached to stack-a: the older one keeps it.
                    let original = guid(0xb0, i - 9);
                    duplicates.push(customer("stack-a", &original, None));
                    expected_customers.insert(name.clone(), "DuplicateCustomerSubscription".into());
                    continue;
                }
            };
            customers.push(manifest);
            expected_customers.insert(name.clone(), reason.to_string());
        }
        catalog += "multitenancyApprovals:\n";
        for (sub, name) in [(&reg_a, "azurestack-a"), (&reg_b, "azurestack-b")] {
            catalog += &format!(
                "- subscriptionId: {sub}\n  resourceGroup: azurestack\n  registrationName: {name}\n"
            );
        }
        Self {
            catalog,
            registrations,
            customers,
            duplicates,
            expected_customers,
            expected_registrations,
            expected_counts,
        }
    }

    /// Creates the Registrations, then the CustomerSubscriptions, then the duplicates.
    pub async fn create(&self, ns: &TestNamespace) {
        create_all::<Registration>(ns, &self.registrations, 1).await;
        create_all::<CustomerSubscription>(ns, &self.customers, 16).await;
        create_all::<CustomerSubscription>(ns, &self.duplicates, 16).await;
    }

    pub fn total(&self) -> usize {
        self.expected_customers.len() + self.expected_registrations.len()
    }

    /// The expected reasons only, without the attached-customer counts (a count is written
    /// up to a few seconds after the reasons it counts).
    pub fn reasons_only(&self) -> Population {
        Population {
            catalog: String::new(),
            registrations: Vec::new(),
            customers: Vec::new(),
            duplicates: Vec::new(),
            expected_customers: self.expected_customers.clone(),
            expected_registrations: self.expected_registrations.clone(),
            expected_counts: BTreeMap::new(),
        }
    }
}

/// Creates typed objects from JSON manifests, `concurrency` at a time.
pub async fn create_all<K>(ns: &TestNamespace, manifests: &[Value], concurrency: usize)
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let objects = manifests.iter().map(|manifest| {
        serde_json::from_value::<K>(manifest.clone())
            .unwrap_or_else(|e| panic!("bad manifest {manifest}: {e}"))
    });
    cluster::create_all(&ns.api::<K>(), objects, concurrency)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

// ---- surveys of many objects ----

/// Where a population stands: which objects have their expected, current outcome.
#[derive(Debug, Default)]
pub struct Survey {
    pub matching: usize,
    pub total: usize,
    /// Objects that have a Ready condition for their current generation.
    pub decided: usize,
    pub reconciling: usize,
    pub mismatches: Vec<String>,
    pub by_reason: BTreeMap<String, usize>,
}

impl Survey {
    pub fn done(&self) -> bool {
        self.matching == self.total
    }
}

fn condition_status_fits(reason: &str, status: &ConditionStatus) -> bool {
    let expected = match reason {
        "Attached" | "Registered" => ConditionStatus::True,
        "MetadataResolverBadGatewayError" | "Reconciling" => ConditionStatus::Unknown,
        _ => ConditionStatus::False,
    };
    *status == expected
}

/// Whether `cs` has its `expected` Ready reason for its current generation (and a condition
/// status that fits it); else what it has instead.
fn customer_outcome(cs: &CustomerSubscription, expected: &str) -> Result<(), String> {
    let reason = customer_reason(cs);
    let status = cs.status.as_ref();
    let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let generation_current = status.and_then(|s| s.observed_generation) == cs.metadata.generation;
    let fits = ready.is_some_and(|c| condition_status_fits(&c.reason, &c.status));
    if reason.as_deref() == Some(expected) && generation_current && fits {
        return Ok(());
    }
    Err(format!(
        "CustomerSubscription {}: expected {expected}, has {:?} (generation {:?}, status.observedGeneration {:?}, condition {:?})",
        cs.name_any(),
        reason,
        cs.metadata.generation,
        status.and_then(|s| s.observed_generation),
        ready.map(|c| (&c.status, &c.reason, c.observed_generation)),
    ))
}

/// Whether `reg` has its `expected` Ready reason for its current generation and, when one is
/// given, the expected count of attached customers; else what it has instead.
fn registration_outcome(
    reg: &Registration,
    expected: &str,
    expected_count: Option<&i64>,
) -> Result<(), String> {
    let reason = registration_reason(reg);
    let status = reg.status.as_ref();
    let count = status.and_then(|s| s.customer_subscription_count);
    let count_ok = expected_count.is_none_or(|want| count == Some(*want));
    let generation_current = status.and_then(|s| s.observed_generation) == reg.metadata.generation;
    if reason.as_deref() == Some(expected) && generation_current && count_ok {
        return Ok(());
    }
    Err(format!(
        "Registration {}: expected {expected} (customers {expected_count:?}), has {reason:?} (customers {count:?}, generation {:?}, status.observedGeneration {:?})",
        reg.name_any(),
        reg.metadata.generation,
        status.and_then(|s| s.observed_generation),
    ))
}

/// Lists both kinds once and compares each object with its expected outcome: Ready reason
/// for the current generation, `status.observedGeneration` current, the condition's status
/// fitting its reason, and the attached-customer counts.
pub async fn survey(ns: &TestNamespace, population: &Population) -> Result<Survey, kube::Error> {
    let mut survey = Survey {
        total: population.total(),
        ..Survey::default()
    };
    let customers = ns
        .api::<CustomerSubscription>()
        .list(&ListParams::default())
        .await?;
    for cs in &customers {
        let name = cs.name_any();
        let Some(expected) = population.expected_customers.get(&name) else {
            continue;
        };
        if let Some(reason) = customer_reason(cs) {
            survey.decided += 1;
            if reason == "Reconciling" {
                survey.reconciling += 1;
            }
            *survey.by_reason.entry(reason).or_default() += 1;
        }
        match customer_outcome(cs, expected) {
            Ok(()) => survey.matching += 1,
            Err(mismatch) => survey.mismatches.push(mismatch),
        }
    }
    let registrations = ns
        .api::<Registration>()
        .list(&ListParams::default())
        .await?;
    for reg in &registrations {
        let name = reg.name_any();
        let Some(expected) = population.expected_registrations.get(&name) else {
            continue;
        };
        if registration_reason(reg).is_some() {
            survey.decided += 1;
        }
        match registration_outcome(reg, expected, population.expected_counts.get(&name)) {
            Ok(()) => survey.matching += 1,
            Err(mismatch) => survey.mismatches.push(mismatch),
        }
    }
    // Objects expected but not listed.
    let listed = customers.items.len() + registrations.items.len();
    if listed < survey.total {
        survey
            .mismatches
            .push(format!("only {listed} of {} objects exist", survey.total));
    }
    Ok(survey)
}

/// Polls [`survey`] until every object has its expected outcome; returns how long it took.
/// Fails after `timeout` with the mismatches of the last survey.
pub async fn wait_converged(
    ns: &TestNamespace,
    population: &Population,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    let mut last: Option<Survey> = None;
    let mut last_error = None;
    while started.elapsed() < timeout {
        match survey(ns, population).await {
            Ok(s) if s.done() => return started.elapsed(),
            Ok(s) => last = Some(s),
            Err(e) => last_error = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let last = last.unwrap_or_default();
    panic!(
        "not converged after {timeout:?}: {}/{} objects as expected, {} decided, by reason {:?}; last list error: {last_error:?}; first mismatches:\n{}",
        last.matching,
        last.total,
        last.decided,
        last.by_reason,
        last.mismatches
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Watches a population's objects and tells when every one has its expected outcome. A
/// measurement polling [`survey`] would list every object several times a second, and that
/// load on the API server would become part of what it measures; a watch costs one event per
/// change.
pub struct OutcomeWatch {
    /// When the last mismatching object came to match; `None` while some do not.
    all_matching_since: tokio::sync::watch::Receiver<Option<Instant>>,
    task: tokio::task::JoinHandle<()>,
}

/// An object of a population, by kind and name.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Member {
    Customer(String),
    Registration(String),
}

impl OutcomeWatch {
    /// Starts watching both kinds in `ns`; returns once both watches have listed.
    pub async fn start(ns: &TestNamespace, population: &Population) -> Self {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let customers = watcher(ns.api::<CustomerSubscription>(), watcher::Config::default())
            .default_backoff()
            .map(|event| event.map(|e| wrap(e, |c| Watched::Customer(Box::new(c)))));
        let registrations = watcher(ns.api::<Registration>(), watcher::Config::default())
            .default_backoff()
            .map(|event| event.map(|e| wrap(e, |r| Watched::Registration(Box::new(r)))));
        let mut events = Box::pin(futures::stream::select(customers, registrations));
        let expected_customers = population.expected_customers.clone();
        let expected_registrations = population.expected_registrations.clone();
        let expected_counts = population.expected_counts.clone();
        let mut mismatching: std::collections::HashSet<Member> = expected_customers
            .keys()
            .cloned()
            .map(Member::Customer)
            .chain(
                expected_registrations
                    .keys()
                    .cloned()
                    .map(Member::Registration),
            )
            .collect();
        let (tx, all_matching_since) = tokio::sync::watch::channel(None);
        let (listed_tx, listed) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut listed_tx = Some(listed_tx);
            let mut lists_done = 0;
            while let Some(event) = events.next().await {
                let (member, matches) = match event {
                    Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => match obj {
                        Watched::Customer(cs) => {
                            let name = cs.name_any();
                            let Some(expected) = expected_customers.get(&name) else {
                                continue;
                            };
                            let ok = customer_outcome(&cs, expected).is_ok();
                            (Member::Customer(name), ok)
                        }
                        Watched::Registration(reg) => {
                            let name = reg.name_any();
                            let Some(expected) = expected_registrations.get(&name) else {
                                continue;
                            };
                            let count = expected_counts.get(&name);
                            let ok = registration_outcome(&reg, expected, count).is_ok();
                            (Member::Registration(name), ok)
                        }
                    },
                    Ok(watcher::Event::Delete(Watched::Customer(cs))) => {
                        (Member::Customer(cs.name_any()), false)
                    }
                    Ok(watcher::Event::Delete(Watched::Registration(reg))) => {
                        (Member::Registration(reg.name_any()), false)
                    }
                    Ok(watcher::Event::InitDone) => {
                        lists_done += 1;
                        if lists_done == 2
                            && let Some(listed_tx) = listed_tx.take()
                        {
                            let _ = listed_tx.send(());
                        }
                        continue;
                    }
                    Ok(watcher::Event::Init) | Err(_) => continue,
                };
                let was_done = mismatching.is_empty();
                if matches {
                    mismatching.remove(&member);
                } else {
                    mismatching.insert(member);
                }
                match (was_done, mismatching.is_empty()) {
                    (false, true) => tx.send_replace(Some(Instant::now())),
                    (true, false) => tx.send_replace(None),
                    _ => None,
                };
            }
        });
        tokio::time::timeout(Duration::from_secs(60), listed)
            .await
            .expect("the outcome watches did not list within 60 s")
            .expect("the outcome watch task ended");
        Self {
            all_matching_since,
            task,
        }
    }

    /// The first moment from `since` on at which every object has its expected outcome;
    /// `None` if that is not so within `timeout` of `since`.
    pub async fn all_matching_after(
        &mut self,
        since: Instant,
        timeout: Duration,
    ) -> Option<Instant> {
        let deadline = tokio::time::Instant::from_std(since + timeout);
        let done = self.all_matching_since.wait_for(Option::is_some);
        match tokio::time::timeout_at(deadline, done).await {
            Ok(Ok(at)) => at.map(|at| at.max(since)),
            _ => None,
        }
    }
}

impl Drop for OutcomeWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What [`OutcomeWatch`] receives from its two watches.
#[derive(Clone)]
enum Watched {
    Customer(Box<CustomerSubscription>),
    Registration(Box<Registration>),
}

fn wrap<K>(
    event: kube::runtime::watcher::Event<K>,
    kind: fn(K) -> Watched,
) -> kube::runtime::watcher::Event<Watched> {
    use kube::runtime::watcher::Event;
    match event {
        Event::Apply(obj) => Event::Apply(kind(obj)),
        Event::InitApply(obj) => Event::InitApply(kind(obj)),
        Event::Delete(obj) => Event::Delete(kind(obj)),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

// ---- the operator and cleanup ----

/// The operator is still running and has not panicked.
pub fn assert_operator_healthy(operator: &mut Operator) {
    let logs = operator.logs();
    assert!(
        operator.is_running(),
        "the operator exited; its log:\n{logs}"
    );
    assert!(
        !logs.contains("panicked"),
        "the operator panicked; its log:\n{logs}"
    );
}

/// Removes the operator's finalizer from every Registration in `ns`, so that the namespace
/// can be deleted after the operator is gone (call it after stopping the operator).
pub async fn release_registrations(ns: &TestNamespace) {
    let api = ns.api::<Registration>();
    let Ok(list) = api.list(&ListParams::default()).await else {
        return;
    };
    for reg in list {
        let _ = api
            .patch(
                &reg.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
    }
}

/// Requests per `window` seen by `count` over `duration`.
pub async fn sample_rate(
    count: impl Fn() -> u64,
    duration: Duration,
    window: Duration,
) -> Vec<u64> {
    let mut samples = Vec::new();
    let started = tokio::time::Instant::now();
    let mut previous = count();
    let mut next = started + window;
    while next <= started + duration {
        tokio::time::sleep_until(next).await;
        let now = count();
        samples.push(now - previous);
        previous = now;
        next += window;
    }
    samples
}

// ---- how fast the API server takes status writes here ----

/// CustomerSubscriptions in a namespace of their own that no operator watches, whose status
/// the test writes itself, shaped as the operator writes it (a server-side apply of the
/// status with one Ready condition). How long [`WriteFloor::measure`] takes for all of them
/// is the floor under any figure that needs one status write per object: what the API server
/// on this machine allows, at that moment, to a client of this build.
pub struct WriteFloor {
    ns: TestNamespace,
    names: Vec<String>,
    rounds: std::sync::atomic::AtomicU32,
}

impl WriteFloor {
    /// Creates the `objects` (not timed).
    pub async fn prepare(objects: usize) -> Self {
        let ns = TestNamespace::new("fault-write-floor").await;
        // On a fresh cluster nothing may have installed the CRDs yet.
        crate::common::crds::ensure_crds(&ns.client).await;
        let names: Vec<String> = (0..objects).map(|i| format!("floor-{i:04}")).collect();
        let manifests: Vec<Value> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                json!({"metadata": {"name": name},
                       "spec": {"registrationRef": {"name": "floor"}, "subscriptionId": guid(0xf1, i)}})
            })
            .collect();
        create_all::<CustomerSubscription>(&ns, &manifests, 16).await;
        Self {
            ns,
            names,
            rounds: 0.into(),
        }
    }

    /// Writes a new status to every object, `concurrency` writes in flight; returns how long
    /// that took. Each round changes the message, so that no write is a no-op.
    pub async fn measure(&self, concurrency: usize) -> Duration {
        use futures::StreamExt;
        let round = self
            .rounds
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let api = self.ns.api::<CustomerSubscription>();
        let params = PatchParams::apply("azs-csp-write-floor").force();
        let started = Instant::now();
        let writes = self.names.iter().map(|name| {
            let (api, params) = (&api, &params);
            let body = json!({
                "apiVersion": CustomerSubscription::api_version(&()),
                "kind": CustomerSubscription::kind(&()),
                "status": {
                    "observedGeneration": 1,
                    "tenantId": guid(0xf2, 0),
                    "billingPartnerId": PARTNER,
                    "conditions": [{
                        "type": "Ready", "status": "True", "reason": "Attached",
                        "message": format!("floor round {round}: the status write of {name}"),
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                        "observedGeneration": 1,
                    }],
                },
            });
            async move {
                api.patch_status(name, params, &Patch::Apply(body))
                    .await
                    .unwrap_or_else(|e| panic!("status write of {name}: {e}"));
            }
        });
        futures::stream::iter(writes)
            .buffer_unordered(concurrency)
            .collect::<Vec<()>>()
            .await;
        started.elapsed()
    }
}
