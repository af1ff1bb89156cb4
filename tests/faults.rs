//! Fault tests: the operator against an API server that restarts, its own SIGKILL, a failing,
//! slow or flapping metadata upstream, and hostile input (random specs at admission, malformed
//! catalogs). Run by `make test-faults`.
//!
//! One of them stops the shared API server, so they are `#[ignore]`d in the plain `cargo test`
//! run (`make test` lists them as ignored) and run one at a time: `make test-faults` runs
//! `cargo test --test faults -- --ignored --test-threads=1`, and [`serial`] keeps them apart
//! even without `--test-threads=1`. Never run them alongside other test binaries.

mod common {
    pub mod crds;
    pub mod http;
    pub mod process;
    pub mod reasons;
    pub mod scenario;
}
mod emulated;
mod fault_kit;
mod malformed_catalogs;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use azs_csp_operator::api::{CustomerSubscription, Registration};
use azs_csp_testkit::{
    cluster::{TestNamespace, create_untyped},
    process::Operator,
    upstream::Mode,
};
use common::{
    reasons::{
        customer_reason, registration_reason, wait_customer_reason, wait_registration_reason,
    },
    scenario::{Scenario, start_operator},
};
use emulated::Metadata;
use fault_kit::{
    ApiServer, OutcomeWatch, PARTNER, Population, WriteFloor, assert_operator_healthy, create_all,
    guid, release_registrations, sample_rate, survey, wait_converged,
};
use kube::{
    ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use malformed_catalogs::malformed_catalogs;
use serde_json::json;

/// Serialises the tests of this binary, whatever `--test-threads` says.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Stops the operator first, then frees the Registrations of their finalizer, so that the
/// namespace (deleted when `ns` drops) does not hang on them.
async fn teardown(scenario: Scenario) {
    let Scenario {
        ns,
        catalog,
        operator,
    } = scenario;
    drop(operator);
    release_registrations(&ns).await;
    drop(catalog);
    drop(ns);
}

/// How many CustomerSubscriptions the API-server restart and operator-kill tests create (the
/// issue asks for 500).
const RESTART_POPULATION: usize = 500;

#[tokio::test]
#[ignore = "stops the shared API server: run by make test-faults"]
async fn api_server_restart_while_customer_subscriptions_converge() {
    let _serial = serial().await;
    let api_server = ApiServer::local();
    let population = Population::new(RESTART_POPULATION);
    let mut s = Scenario::start("fault-apiserver", &population.catalog).await;

    let started = Instant::now();
    population.create(&s.ns).await;
    let created_in = started.elapsed();
    let before = survey(&s.ns, &population).await.expect("survey");
    eprintln!(
        "created {} objects in {created_in:.1?}; {} decided, {} as expected when the API server is killed",
        population.total(),
        before.decided,
        before.matching
    );

    let outage = api_server.kill().await;
    // Down for 10 s: the operator must ride it out.
    let down = Duration::from_secs(10);
    while outage.since.elapsed() < down {
        assert_operator_healthy(&mut s.operator);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let downtime = outage.end().await;
    eprintln!("API server was down {downtime:.1?}");

    let converged_in = wait_converged(&s.ns, &population, Duration::from_secs(90)).await;
    eprintln!(
        "all {} objects converged {converged_in:.1?} after the API server was ready again ({:.1?} after the test started)",
        population.total(),
        started.elapsed()
    );
    assert_operator_healthy(&mut s.operator);
    let logs = s.operator.logs();
    assert!(
        logs.contains("watch failed, retrying") || logs.contains("reconcile failed"),
        "the operator never noticed the outage?"
    );
    teardown(s).await;
}

#[tokio::test]
#[ignore = "run by make test-faults"]
async fn operator_killed_mid_convergence_converges_after_restart() {
    let _serial = serial().await;
    let mut population = Population::new(RESTART_POPULATION);
    let ns = TestNamespace::new("fault-kill").await;
    common::crds::ensure_crds(&ns.client).await;
    let catalog = common::scenario::CatalogFile::new(&population.catalog);
    population.create(&ns).await;
    let args = [
        "--catalog-file",
        catalog.path_str(),
        "--watch-namespace",
        &ns.name,
    ];
    let mut operator = start_operator(&args);

    // Kill it once it has decided some objects but not all.
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let s = survey(&ns, &population).await.expect("survey");
        if s.decided >= population.total() / 10 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the operator decided only {} objects in 60 s",
            s.decided
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_operator_healthy(&mut operator);
    drop(operator); // SIGKILL
    let after_kill = survey(&ns, &population).await.expect("survey");
    eprintln!(
        "operator killed with {} of {} objects decided ({} when the kill was decided)",
        after_kill.decided,
        population.total(),
        at_kill.decided
    );
    assert!(
        after_kill.decided < population.total(),
        "the operator had decided everything before it was killed: nothing to test"
    );

    // While it is down: new generations (RegistrationNotFound → CustomerSubscriptionsNotAllowed).
    let customers = ns.api::<CustomerSubscription>();
    let mut repointed = 0;
    for (name, reason) in population.expected_customers.iter_mut() {
        if reason == "RegistrationNotFound" && repointed < 10 {
            customers
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"registrationRef": {"name": "capacity"}}})),
                )
                .await
                .expect("patch");
            *reason = "CustomerSubscriptionsNotAllowed".to_string();
            repointed += 1;
        }
    }

    let mut operator = start_operator(&args);
    let converged_in = wait_converged(&ns, &population, Duration::from_secs(90)).await;
    eprintln!(
        "all {} objects converged {converged_in:.1?} after the restart ({repointed} with a new generation)",
        population.total()
    );
    let last = survey(&ns, &population).await.expect("survey");
    assert_eq!(last.reconciling, 0, "{last:?}");
    assert_operator_healthy(&mut operator);
    drop(operator);
    release_registrations(&ns).await;
}

// ---- a failing, slow or flapping metadata upstream (http resolver) ----

const REGISTRATION_SUB: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";
const BAD_GATEWAY: &str = "MetadataResolverBadGatewayError";

/// An http-resolver operator (500 ms timeout, 1 s cache) watching its own namespace, with one
/// approved Registration and `customers` CustomerSubscriptions, all attached.
struct HttpScenario {
    ns: TestNamespace,
    upstream: Metadata,
    operator: Operator,
    customers: Vec<String>,
}

impl HttpScenario {
    async fn start(prefix: &str, customers: usize) -> Self {
        let upstream = Metadata::start().await;
        upstream.add_subscription(
            REGISTRATION_SUB,
            json!({"id": REGISTRATION_SUB, "tenantId": guid(0xd1, 0), "state": "Enabled", "offer": "APSS", "billingPartnerId": PARTNER}),
        );
        upstream.set_approval(REGISTRATION_SUB, "azurestack", "azurestack-1", true);
        let ns = TestNamespace::new(prefix).await;
        common::crds::ensure_crds(&ns.client).await;
        let operator = common::http::start_http_operator(&upstream.url(), &ns.name);
        create_all::<Registration>(
            &ns,
            &[json!({
                "metadata": {"name": "stack"},
                "spec": {"subscriptionId": REGISTRATION_SUB, "resourceGroup": "azurestack",
                         "registrationName": "azurestack-1", "cloudId": guid(0xc1, 0),
                         "billingModel": "PayAsYouUse"}
            })],
            1,
        )
        .await;
        let mut manifests = Vec::new();
        let mut names = Vec::new();
        for i in 0..customers {
            let sub = guid(0xb0, i);
            upstream.add_subscription(
                &sub,
                json!({"id": sub, "tenantId": guid(0xd0, i), "state": "Enabled", "offer": "CSP", "billingPartnerId": PARTNER}),
            );
            let name = format!("cs-{i}");
            manifests.push(json!({"metadata": {"name": name},
                "spec": {"registrationRef": {"name": "stack"}, "subscriptionId": sub}}));
            names.push(name);
        }
        create_all::<CustomerSubscription>(&ns, &manifests, 8).await;
        let scenario = Self {
            ns,
            upstream,
            operator,
            customers: names,
        };
        scenario.wait_all("Attached", "Registered").await;
        scenario
    }

    /// Waits until every CustomerSubscription has `customer` and the Registration `registration`.
    async fn wait_all(&self, customer: &str, registration: &str) {
        for name in &self.customers {
            wait_customer_reason(&self.ns, name, customer).await;
        }
        wait_registration_reason(&self.ns, "stack", registration).await;
    }

    /// Like [`HttpScenario::wait_all`], with its own timeout; returns how long it took.
    async fn wait_all_within(
        &self,
        customer: &str,
        registration: &str,
        timeout: Duration,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let reasons = self.reasons().await;
            let stack = self
                .ns
                .api::<Registration>()
                .get("stack")
                .await
                .expect("get");
            if reasons.values().all(|r| r.as_deref() == Some(customer))
                && registration_reason(&stack).as_deref() == Some(registration)
            {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < timeout,
                "not all {customer}/{registration} after {timeout:?}: {reasons:?}, registration {:?}",
                registration_reason(&stack)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until everything is attached again after the upstream healed, and says how long
    /// that took: each object finds out at its next retry, which backoff may have pushed out.
    async fn heal_within(&self, timeout: Duration) {
        let took = self
            .wait_all_within("Attached", "Registered", timeout)
            .await;
        eprintln!("attached again {took:.1?} after the upstream healed");
    }

    /// Ready reasons (current generation) of the CustomerSubscriptions, by name.
    async fn reasons(&self) -> BTreeMap<String, Option<String>> {
        self.ns
            .api::<CustomerSubscription>()
            .list(&ListParams::default())
            .await
            .expect("list")
            .iter()
            .map(|cs| (cs.name_any(), customer_reason(cs)))
            .collect()
    }

    async fn resource_versions(&self) -> BTreeMap<String, String> {
        let mut versions: BTreeMap<String, String> = self
            .ns
            .api::<CustomerSubscription>()
            .list(&ListParams::default())
            .await
            .expect("list")
            .iter()
            .map(|cs| (cs.name_any(), cs.resource_version().unwrap_or_default()))
            .collect();
        let registration = self
            .ns
            .api::<Registration>()
            .get("stack")
            .await
            .expect("get");
        versions.insert(
            "Registration/stack".into(),
            registration.resource_version().unwrap_or_default(),
        );
        versions
    }

    async fn teardown(mut self) {
        assert_operator_healthy(&mut self.operator);
        drop(self.operator);
        release_registrations(&self.ns).await;
    }
}

fn ready_message(cs: &CustomerSubscription) -> String {
    cs.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by make test-faults"]
async fn upstream_refusing_or_dropping_connections_is_bad_gateway_and_heals() {
    let _serial = serial().await;
    let s = HttpScenario::start("fault-refused", 3).await;

    // Nothing listens: connection refused.
    s.upstream.refuse_connections();
    s.wait_all(BAD_GATEWAY, BAD_GATEWAY).await;
    let failed = wait_customer_reason(&s.ns, "cs-0", BAD_GATEWAY).await;
    eprintln!("refused: {}", ready_message(&failed));
    s.upstream.accept_connections().await;
    s.heal_within(Duration::from_secs(60)).await;

    // Listening, but every connection is closed without an answer.
    s.upstream.set_mode(Mode::Drop);
    s.wait_all(BAD_GATEWAY, BAD_GATEWAY).await;
    let failed = wait_customer_reason(&s.ns, "cs-0", BAD_GATEWAY).await;
    eprintln!("dropped: {}", ready_message(&failed));
    s.upstream.set_mode(Mode::Healthy);
    s.heal_within(Duration::from_secs(60)).await;
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by make test-faults"]
async fn failing_upstream_is_retried_with_backoff_at_a_bounded_rate() {
    let _serial = serial().await;
    let s = HttpScenario::start("fault-backoff", 5).await;
    let second = Duration::from_secs(1);
    let healthy = sample_rate(|| s.upstream.requests(), Duration::from_secs(5), second).await;

    s.upstream.set_mode(Mode::Status(502));
    let failing = sample_rate(|| s.upstream.requests(), Duration::from_secs(20), second).await;
    let reasons = s.reasons().await;
    assert!(
        reasons.values().all(|r| r.as_deref() == Some(BAD_GATEWAY)),
        "{reasons:?}"
    );
    wait_registration_reason(&s.ns, "stack", BAD_GATEWAY).await;

    let rate = |window: &[u64]| window.iter().sum::<u64>() as f64 / window.len() as f64;
    let (first, last) = (rate(&failing[..5]), rate(&failing[15..]));
    eprintln!(
        "upstream requests per second, 6 objects, cache TTL 1 s: healthy {healthy:?} (mean {:.1}/s); \
         502 for 20 s: {failing:?} (mean {:.1}/s, first 5 s {first:.1}/s, last 5 s {last:.1}/s)",
        rate(&healthy),
        rate(&failing),
    );
    // Exponential backoff (1 s doubling, per object): the rate decays while the failure lasts.
    assert!(
        last < first,
        "the request rate does not decay: first 5 s {first:.1}/s, last 5 s {last:.1}/s"
    );
    assert!(
        last <= 5.0,
        "after 15 s of failure, {last:.1} requests/s for 6 objects is not backing off"
    );
    assert!(
        rate(&failing) <= 10.0,
        "{:.1} requests/s on average to a failing upstream for 6 objects",
        rate(&failing)
    );

    // Nothing tells the operator that the upstream healed: each object finds out at its next
    // retry, which after 20 s of failures is up to ~30 s away (delays of 8-16 s, then 16-32 s).
    s.upstream.set_mode(Mode::Healthy);
    s.heal_within(Duration::from_secs(60)).await;
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by make test-faults"]
async fn slow_upstream_below_the_timeout_stays_attached_above_it_is_bad_gateway() {
    let _serial = serial().await;
    let s = HttpScenario::start("fault-slow", 3).await;
    let versions = s.resource_versions().await;

    // 200 ms per answer, under the 500 ms timeout, through several 1 s cache lifetimes.
    s.upstream.set_mode(Mode::Delay(Duration::from_millis(200)));
    let before = s.upstream.requests();
    let slow = sample_rate(
        || s.upstream.requests(),
        Duration::from_secs(6),
        Duration::from_secs(1),
    )
    .await;
    assert!(
        s.upstream.requests() > before + 6,
        "the slow upstream was not asked ({slow:?})"
    );
    assert_eq!(
        s.resource_versions().await,
        versions,
        "slow answers changed a status"
    );
    assert!(
        s.reasons()
            .await
            .values()
            .all(|r| r.as_deref() == Some("Attached"))
    );
    eprintln!(
        "{} slow answers, all objects stayed Attached",
        s.upstream.requests() - before
    );

    // Slower than the timeout: bad gateway, then healthy again.
    s.upstream
        .set_mode(Mode::Delay(Duration::from_millis(1500)));
    s.wait_all(BAD_GATEWAY, BAD_GATEWAY).await;
    let failed = wait_customer_reason(&s.ns, "cs-0", BAD_GATEWAY).await;
    eprintln!("too slow: {}", ready_message(&failed));
    s.upstream.set_mode(Mode::Healthy);
    s.heal_within(Duration::from_secs(60)).await;
    s.teardown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by make test-faults"]
async fn flapping_upstream_only_flips_between_attached_and_bad_gateway_and_settles() {
    let _serial = serial().await;
    let s = HttpScenario::start("fault-flap", 3).await;

    // Every other request fails, for 10 s.
    s.upstream.set_mode(Mode::Alternate);
    let before = s.upstream.requests();
    let flapping_since = Instant::now();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while flapping_since.elapsed() < Duration::from_secs(10) {
        for reason in s.reasons().await.into_values().flatten() {
            assert!(
                reason == "Attached" || reason == BAD_GATEWAY,
                "a flapping upstream produced {reason}"
            );
            *seen.entry(reason).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let requests = s.upstream.requests() - before;
    eprintln!(
        "flapping for 10 s: {requests} requests ({:.1}/s), reasons sampled {seen:?}",
        requests as f64 / 10.0
    );
    assert!(
        requests as f64 / 10.0 <= 20.0,
        "{requests} requests in 10 s to a flapping upstream for 4 objects"
    );
    s.upstream.set_mode(Mode::Healthy);
    s.heal_within(Duration::from_secs(60)).await;
    s.teardown().await;
}

// ---- bad input: random specs at admission, malformed catalogs ----

mod bad_input {
    use proptest::{
        prelude::*,
        test_runner::{Config, TestCaseError, TestRunner},
    };
    use serde_json::{Map, Value, json};

    use super::fault_kit::case_variant;

    /// A field as sent: left out, a string, or a number where a string belongs.
    #[derive(Clone, Debug)]
    pub enum Field {
        Absent,
        Str(String),
        Num(i64),
    }

    impl Field {
        fn put(&self, map: &mut Map<String, Value>, key: &str) {
            match self {
                Field::Absent => {}
                Field::Str(s) => {
                    map.insert(key.into(), json!(s));
                }
                Field::Num(n) => {
                    map.insert(key.into(), json!(n));
                }
            }
        }

        pub fn str(&self) -> Option<&str> {
            match self {
                Field::Str(s) => Some(s),
                _ => None,
            }
        }
    }

    // Subscriptions and tenants of examples/catalog.yaml.
    pub const REG_SUB: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";
    pub const REG_SUB_DISABLED: &str = "7e4d5caf-2a4b-4d7f-8c8b-3e2f1a0b9c8d";
    pub const CLOUD_ID: &str = "5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";
    pub const FABRIKAM: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";
    pub const TAILSPIN: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
    /// (subscription, its tenant, the reason when it is used with its tenant or none).
    pub const CUSTOMER_SUBS: [(&str, &str, &str); 5] = [
        (
            FABRIKAM,
            "2b7e0c1d-3a4b-4c5d-8e6f-7a8b9c0d1e2f",
            // a-fabrikam, older, attaches it first.
            "DuplicateCustomerSubscription",
        ),
        (
            TAILSPIN,
            "3c8f1d2e-4b5c-4d6e-9f70-8a9b0c1d2e3f",
            "DuplicateCustomerSubscription",
        ),
        (
            "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e",
            "4d9a2e3f-5c6d-4e7f-a081-9b0c1d2e3f4a",
            "BadCustomerSubscriptionId",
        ),
        (
            "c3d4e5f6-a7b8-4c9d-8e1f-2a3b4c5d6e7f",
            "5eab3f4a-6d7e-4f80-b192-0c1d2e3f4a5b",
            "InvalidCSPSubscription",
        ),
        (
            "d4e5f6a7-b8c9-4d0e-9f2a-3b4c5d6e7f80",
            "6fbc4a5b-7e8f-4091-a2a3-1d2e3f4a5b6c",
            "InvalidCustomerSubscriptionId",
        ),
    ];

    const GUID_REGEX: &str =
        "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";

    fn s(text: impl Into<String>) -> Field {
        Field::Str(text.into())
    }

    /// GUIDs: `known` ones in any letter case, and fresh ones.
    fn guid(known: Vec<&'static str>) -> BoxedStrategy<Field> {
        prop_oneof![
            3 => (prop::sample::select(known), any::<u64>())
                .prop_map(|(g, mask)| s(case_variant(g, mask))),
            1 => GUID_REGEX.prop_map(s),
        ]
        .boxed()
    }

    /// Everything that is not a GUID: malformed, empty, very long, braced, truncated, without
    /// dashes, non-ASCII, a number, or (`absent`) left out.
    fn not_guid(example: &'static str, absent: bool) -> BoxedStrategy<Field> {
        let missing = if absent {
            Field::Absent
        } else {
            s("00000000-0000-0000-0000-00000000000g")
        };
        prop_oneof![
            "[0-9a-zA-Z{}_. -]{0,40}".prop_map(s),
            Just(s("")),
            (37usize..300).prop_map(|n| s("a".repeat(n))),
            Just(s(format!("{{{example}}}"))),
            Just(s(&example[1..])),
            Just(s(example.replace('-', ""))),
            Just(s(format!("é{}", &example[1..]))),
            Just(missing),
            any::<i64>().prop_map(Field::Num),
        ]
        .boxed()
    }

    /// Which fields to break: none (a valid object), one or two.
    fn breakage(fields: usize) -> impl Strategy<Value = u32> {
        prop_oneof![
            2 => Just(0u32),
            3 => (0..fields).prop_map(|i| 1 << i),
            1 => (0..fields, 0..fields).prop_map(|(a, b)| (1 << a) | (1 << b)),
        ]
    }

    fn pick(valid: Field, broken: Field, mask: u32, bit: u32) -> Field {
        if mask & (1 << bit) != 0 {
            broken
        } else {
            valid
        }
    }

    #[derive(Clone, Debug)]
    pub enum Input {
        Customer {
            /// `None`: no `registrationRef` at all.
            registration_ref: Option<Field>,
            subscription_id: Field,
            tenant_id: Field,
            unknown_field: bool,
        },
        Registration {
            subscription_id: Field,
            resource_group: Field,
            registration_name: Field,
            cloud_id: Field,
            billing_model: Field,
            agreement_number: Field,
            ms_asset_tag: Field,
            unknown_field: bool,
        },
    }

    fn customer() -> impl Strategy<Value = Input> {
        let subs: Vec<&'static str> = CUSTOMER_SUBS.iter().map(|(sub, _, _)| *sub).collect();
        let tenants: Vec<&'static str> = CUSTOMER_SUBS.iter().map(|(_, t, _)| *t).collect();
        let valid = (
            prop_oneof![
                6 => Just(s("a-stack")),
                1 => Just(s("ghost")),
                1 => Just(s("A-Stack")),
                1 => Just(s("a/b")),
                1 => (240usize..=253).prop_map(|n| s("r".repeat(n))),
            ],
            guid(subs),
            prop_oneof![3 => Just(Field::Absent), 2 => guid(tenants)],
        );
        let broken = (
            prop_oneof![
                Just(s("")),
                Just(Field::Absent),
                (254usize..300).prop_map(|n| s("r".repeat(n))),
                Just(Field::Num(7)),
            ],
            not_guid(FABRIKAM, true),
            not_guid(FABRIKAM, false),
        );
        (valid, broken, breakage(4), any::<bool>()).prop_map(
            |(
                (reference, sub, tenant),
                (bad_reference, bad_sub, bad_tenant),
                mask,
                unknown_field,
            )| {
                Input::Customer {
                    // Bit 3: no registrationRef at all.
                    registration_ref: (mask & 8 == 0)
                        .then(|| pick(reference, bad_reference, mask, 0)),
                    subscription_id: pick(sub, bad_sub, mask, 1),
                    tenant_id: pick(tenant, bad_tenant, mask, 2),
                    unknown_field,
                }
            },
        )
    }

    fn registration() -> impl Strategy<Value = Input> {
        let text = |valid: &'static str| {
            prop_oneof![
                3 => Just(Field::Absent),
                2 => Just(s(valid)),
                1 => Just(s("")),
                1 => Just(s("x".repeat(256))),
            ]
        };
        let valid = (
            guid(vec![REG_SUB, REG_SUB_DISABLED]),
            prop_oneof![
                3 => Just(s("azurestack")),
                2 => "[-a-zA-Z0-9._()]{0,11}[-a-zA-Z0-9_()]".prop_map(s),
                1 => Just(s("r".repeat(90))),
            ],
            prop_oneof![
                3 => Just(Field::Absent),
                1 => Just(s("azurestack-5f1c2d3e")),
                2 => "[-a-zA-Z0-9._]{1,12}".prop_map(s),
                1 => Just(s("n".repeat(128))),
            ],
            prop_oneof![3 => GUID_REGEX.prop_map(s), 1 => guid(vec![CLOUD_ID])],
            prop::sample::select(vec![
                "PayAsYouUse",
                "Capacity",
                "Development",
                "Custom",
                "Ruggedized",
            ])
            .prop_map(s),
            text("EA-12345"),
            text("asset-7"),
        );
        let broken_text = || {
            prop_oneof![
                Just(s("x".repeat(257))),
                Just(s("")),
                Just(Field::Absent),
                Just(Field::Num(4)),
            ]
        };
        let broken = (
            not_guid(REG_SUB, true),
            prop_oneof![
                Just(s("")),
                Just(s("a/b")),
                Just(s("rg.")),
                Just(s("r".repeat(91))),
                Just(s("r".repeat(129))),
                Just(s("grupp-å")),
                Just(Field::Absent),
                Just(Field::Num(1)),
            ],
            prop_oneof![
                Just(s("")),
                Just(s("a b")),
                Just(s("n".repeat(129))),
                Just(s("n".repeat(300))),
                Just(Field::Num(2)),
            ],
            not_guid(CLOUD_ID, true),
            prop_oneof![
                Just(s("payasyouuse")),
                Just(s("Free")),
                Just(s("")),
                Just(Field::Absent),
                Just(Field::Num(3)),
            ],
            broken_text(),
            broken_text(),
        );
        (valid, broken, breakage(7), any::<bool>()).prop_map(
            |(valid, broken, mask, unknown_field)| Input::Registration {
                subscription_id: pick(valid.0, broken.0, mask, 0),
                resource_group: pick(valid.1, broken.1, mask, 1),
                registration_name: pick(valid.2, broken.2, mask, 2),
                cloud_id: pick(valid.3, broken.3, mask, 3),
                billing_model: pick(valid.4, broken.4, mask, 4),
                agreement_number: pick(valid.5, broken.5, mask, 5),
                ms_asset_tag: pick(valid.6, broken.6, mask, 6),
                unknown_field,
            },
        )
    }

    pub fn input() -> impl Strategy<Value = Input> {
        prop_oneof![customer(), registration()]
    }

    fn is_guid(f: &Field) -> bool {
        f.str()
            .and_then(azs_csp_operator::guid::Guid::parse)
            .is_some()
    }

    fn chars_in(s: &str, extra: &str) -> bool {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(c))
    }

    impl Input {
        /// The object as JSON.
        pub fn manifest(&self, name: &str) -> Value {
            let mut spec = Map::new();
            match self {
                Input::Customer {
                    registration_ref,
                    subscription_id,
                    tenant_id,
                    unknown_field,
                } => {
                    if let Some(reference) = registration_ref {
                        let mut r = Map::new();
                        reference.put(&mut r, "name");
                        spec.insert("registrationRef".into(), Value::Object(r));
                    }
                    subscription_id.put(&mut spec, "subscriptionId");
                    tenant_id.put(&mut spec, "tenantId");
                    if *unknown_field {
                        spec.insert("subscriptionID".into(), json!("typo"));
                    }
                }
                Input::Registration {
                    subscription_id,
                    resource_group,
                    registration_name,
                    cloud_id,
                    billing_model,
                    agreement_number,
                    ms_asset_tag,
                    unknown_field,
                } => {
                    subscription_id.put(&mut spec, "subscriptionId");
                    resource_group.put(&mut spec, "resourceGroup");
                    registration_name.put(&mut spec, "registrationName");
                    cloud_id.put(&mut spec, "cloudId");
                    billing_model.put(&mut spec, "billingModel");
                    agreement_number.put(&mut spec, "agreementNumber");
                    ms_asset_tag.put(&mut spec, "msAssetTag");
                    if *unknown_field {
                        spec.insert("region".into(), json!("westeurope"));
                    }
                }
            }
            json!({"metadata": {"name": name}, "spec": spec})
        }

        /// The fields the documented admission rules reject (README "Admission" and the CRD
        /// schema: required fields, types, lengths, patterns, the billing-model rules).
        pub fn invalid_fields(&self) -> Vec<&'static str> {
            let mut invalid = Vec::new();
            let mut check = |ok: bool, path: &'static str| {
                if !ok {
                    invalid.push(path);
                }
            };
            match self {
                Input::Customer {
                    registration_ref,
                    subscription_id,
                    tenant_id,
                    ..
                } => {
                    match registration_ref {
                        None => check(false, "spec.registrationRef"),
                        Some(name) => check(
                            name.str().is_some_and(|n| (1..=253).contains(&n.len())),
                            "spec.registrationRef.name",
                        ),
                    }
                    check(is_guid(subscription_id), "spec.subscriptionId");
                    check(
                        matches!(tenant_id, Field::Absent) || is_guid(tenant_id),
                        "spec.tenantId",
                    );
                }
                Input::Registration {
                    subscription_id,
                    resource_group,
                    registration_name,
                    cloud_id,
                    billing_model,
                    agreement_number,
                    ms_asset_tag,
                    ..
                } => {
                    check(is_guid(subscription_id), "spec.subscriptionId");
                    check(
                        resource_group.str().is_some_and(|rg| {
                            (1..=90).contains(&rg.len())
                                && chars_in(rg, "-.()")
                                && !rg.ends_with('.')
                        }),
                        "spec.resourceGroup",
                    );
                    check(
                        match registration_name {
                            Field::Absent => true,
                            Field::Str(n) => (1..=128).contains(&n.len()) && chars_in(n, "-."),
                            Field::Num(_) => false,
                        },
                        "spec.registrationName",
                    );
                    check(is_guid(cloud_id), "spec.cloudId");
                    let model = billing_model.str().unwrap_or_default();
                    check(
                        [
                            "PayAsYouUse",
                            "Capacity",
                            "Development",
                            "Custom",
                            "Ruggedized",
                        ]
                        .contains(&model),
                        "spec.billingModel",
                    );
                    let text_ok = |f: &Field, required: bool| match f {
                        Field::Absent => !required,
                        Field::Str(t) => t.len() <= 256 && (!required || !t.is_empty()),
                        Field::Num(_) => false,
                    };
                    check(
                        text_ok(agreement_number, model == "Capacity"),
                        "spec.agreementNumber",
                    );
                    check(text_ok(ms_asset_tag, model == "Custom"), "spec.msAssetTag");
                }
            }
            invalid
        }
    }

    pub fn runner(cases: u32) -> TestRunner {
        TestRunner::new(Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 64,
            ..Config::default()
        })
    }

    pub fn fail(message: String) -> TestCaseError {
        TestCaseError::fail(message)
    }
}

const CATALOG: &str = include_str!("../examples/catalog.yaml");

/// The Ready condition of an object's current generation, once decided (not Reconciling).
async fn wait_decided<K>(api: &kube::Api<K>, name: &str) -> Result<K, String>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K: HasReady,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        match api.get(name).await {
            Ok(obj) => {
                if obj.ready().is_some_and(|c| {
                    c.observed_generation == obj.meta().generation && c.reason != "Reconciling"
                }) {
                    return Ok(obj);
                }
                last = Some(obj);
            }
            Err(e) => return Err(format!("cannot read {name}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "{name} was not decided within 30 s; last seen: {last:#?}"
    ))
}

trait HasReady {
    fn conditions(&self) -> &[azs_csp_operator::api::Condition];
    fn ready(&self) -> Option<&azs_csp_operator::api::Condition> {
        self.conditions().iter().find(|c| c.type_ == "Ready")
    }
}

impl HasReady for CustomerSubscription {
    fn conditions(&self) -> &[azs_csp_operator::api::Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

impl HasReady for Registration {
    fn conditions(&self) -> &[azs_csp_operator::api::Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
}

/// Every Ready reason the README documents, per kind.
const CUSTOMER_REASONS: [&str; 9] = [
    "Attached",
    "InvalidCustomerSubscriptionId",
    "RegistrationNotFound",
    "CustomerSubscriptionsNotAllowed",
    "UnauthorizedCspRegistration",
    "MetadataResolverBadGatewayError",
    "InvalidCSPSubscription",
    "BadCustomerSubscriptionId",
    "DuplicateCustomerSubscription",
];
const REGISTRATION_REASONS: [&str; 5] = [
    "Registered",
    "InvalidRegistrationSubscription",
    "DuplicateCloudId",
    "MetadataResolverBadGatewayError",
    "DeletionBlocked",
];
const APPROVAL_REASONS: [&str; 3] = [
    "Approved",
    "UnauthorizedCspRegistration",
    "MetadataResolverBadGatewayError",
];

#[derive(Default)]
struct InputStats {
    next: usize,
    rejected: usize,
    outcomes: BTreeMap<String, usize>,
    /// cloudIds (lower case) of the Registrations admitted so far, oldest first.
    cloud_ids: std::collections::HashSet<String>,
}

/// Applies one generated object and checks what became of it.
async fn check_input(
    ns: &TestNamespace,
    input: &bad_input::Input,
    stats: &std::sync::Mutex<InputStats>,
) -> Result<(), proptest::test_runner::TestCaseError> {
    use bad_input::{Field, Input, fail};
    let n = {
        let mut stats = stats.lock().unwrap();
        stats.next += 1;
        stats.next
    };
    let (name, created) = match input {
        Input::Customer { .. } => {
            let name = format!("pt-cs-{n:03}");
            let created = create_untyped::<CustomerSubscription>(ns, input.manifest(&name)).await;
            (name, created)
        }
        Input::Registration { .. } => {
            let name = format!("pt-reg-{n:03}");
            let created = create_untyped::<Registration>(ns, input.manifest(&name)).await;
            (name, created)
        }
    };
    let invalid = input.invalid_fields();
    let manifest = input.manifest(&name);
    match created {
        Err(kube::Error::Api(response)) => {
            if invalid.is_empty() {
                return Err(fail(format!(
                    "admission rejected a valid object: {manifest}\n{}",
                    response.message
                )));
            }
            if response.message.trim().is_empty()
                || !invalid.iter().any(|f| response.message.contains(f))
            {
                return Err(fail(format!(
                    "the rejection of {manifest} names none of {invalid:?}: {:?}",
                    response.message
                )));
            }
            stats.lock().unwrap().rejected += 1;
            Ok(())
        }
        Err(other) => Err(fail(format!("creating {manifest} failed: {other}"))),
        Ok(_) if !invalid.is_empty() => Err(fail(format!(
            "admission accepted {manifest}, whose {invalid:?} break the documented rules"
        ))),
        Ok(_) => {
            let (reason, expected, approval) = match input {
                Input::Customer {
                    registration_ref,
                    subscription_id,
                    tenant_id,
                    ..
                } => {
                    let cs = wait_decided(&ns.api::<CustomerSubscription>(), &name)
                        .await
                        .map_err(fail)?;
                    let ready = cs.ready().cloned().expect("decided");
                    let expected =
                        if registration_ref.as_ref().and_then(Field::str) != Some("a-stack") {
                            "RegistrationNotFound"
                        } else {
                            let sub = subscription_id.str().unwrap_or_default().to_lowercase();
                            match bad_input::CUSTOMER_SUBS.iter().find(|(s, _, _)| *s == sub) {
                                None => "InvalidCustomerSubscriptionId",
                                Some((_, tenant, reason)) => match tenant_id.str() {
                                    Some(t) if t.to_lowercase() != *tenant => {
                                        "InvalidCustomerSubscriptionId"
                                    }
                                    _ => reason,
                                },
                            }
                        };
                    if !CUSTOMER_REASONS.contains(&ready.reason.as_str()) {
                        return Err(fail(format!(
                            "undocumented reason {ready:?} for {manifest}"
                        )));
                    }
                    (ready, expected, None)
                }
                Input::Registration {
                    subscription_id,
                    cloud_id,
                    ..
                } => {
                    let reg = wait_decided(&ns.api::<Registration>(), &name)
                        .await
                        .map_err(fail)?;
                    let ready = reg.ready().cloned().expect("decided");
                    let cloud = cloud_id.str().unwrap_or_default().to_lowercase();
                    let duplicate = !stats.lock().unwrap().cloud_ids.insert(cloud);
                    let sub = subscription_id.str().unwrap_or_default().to_lowercase();
                    let expected = if duplicate {
                        "DuplicateCloudId"
                    } else if sub == bad_input::REG_SUB {
                        "Registered"
                    } else {
                        "InvalidRegistrationSubscription"
                    };
                    if !REGISTRATION_REASONS.contains(&ready.reason.as_str()) {
                        return Err(fail(format!(
                            "undocumented reason {ready:?} for {manifest}"
                        )));
                    }
                    let approval = reg
                        .conditions()
                        .iter()
                        .find(|c| c.type_ == "MultitenancyApproved")
                        .map(|c| c.reason.clone());
                    (ready, expected, Some(approval))
                }
            };
            if reason.reason != expected || reason.message.trim().is_empty() {
                return Err(fail(format!(
                    "{manifest} ended with {} ({:?}), expected {expected}",
                    reason.reason, reason.message
                )));
            }
            if let Some(approval) = approval
                && !approval
                    .as_deref()
                    .is_some_and(|a| APPROVAL_REASONS.contains(&a))
            {
                return Err(fail(format!(
                    "MultitenancyApproved of {manifest} is {approval:?}"
                )));
            }
            *stats
                .lock()
                .unwrap()
                .outcomes
                .entry(reason.reason.clone())
                .or_default() += 1;
            Ok(())
        }
    }
}

#[test]
#[ignore = "run by make test-faults"]
fn random_specs_are_rejected_at_admission_or_end_with_their_documented_reason() {
    let _serial = SERIAL.blocking_lock();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut s = runtime.block_on(async {
        let s = Scenario::start("fault-input", CATALOG).await;
        // The oldest objects: generated Registrations with this cloudId are DuplicateCloudId,
        // generated CustomerSubscriptions of these subscriptions DuplicateCustomerSubscription.
        create_all::<Registration>(
            &s.ns,
            &[json!({"metadata": {"name": "a-stack"}, "spec": {
                "subscriptionId": bad_input::REG_SUB, "resourceGroup": "azurestack",
                "registrationName": "azurestack-5f1c2d3e", "cloudId": bad_input::CLOUD_ID,
                "billingModel": "PayAsYouUse"}})],
            1,
        )
        .await;
        let sentinels = [
            ("a-fabrikam", bad_input::FABRIKAM),
            ("a-tailspin", bad_input::TAILSPIN),
        ]
        .map(|(name, sub)| {
            json!({"metadata": {"name": name}, "spec": {
                    "registrationRef": {"name": "a-stack"}, "subscriptionId": sub}})
        });
        create_all::<CustomerSubscription>(&s.ns, &sentinels, 2).await;
        wait_customer_reason(&s.ns, "a-fabrikam", "Attached").await;
        wait_customer_reason(&s.ns, "a-tailspin", "Attached").await;
        s
    });
    let stats = std::sync::Mutex::new(InputStats::default());
    stats
        .lock()
        .unwrap()
        .cloud_ids
        .insert(bad_input::CLOUD_ID.to_string());

    let started = Instant::now();
    let mut runner = bad_input::runner(256);
    let result = runner.run(&bad_input::input(), |input| {
        runtime.block_on(check_input(&s.ns, &input, &stats))
    });
    let stats = stats.into_inner().unwrap();
    eprintln!(
        "{} generated objects in {:.1?}: {} rejected at admission, outcomes {:?}",
        stats.next,
        started.elapsed(),
        stats.rejected,
        stats.outcomes
    );
    if let Err(error) = result {
        panic!("{error}");
    }
    runtime.block_on(async {
        // The objects created first are untouched by everything generated after them.
        wait_customer_reason(&s.ns, "a-fabrikam", "Attached").await;
        wait_registration_reason(&s.ns, "a-stack", "Registered").await;
    });
    assert_operator_healthy(&mut s.operator);
    runtime.block_on(teardown(s));
}

/// How many times the operator has refused a catalog so far.
fn rejections(logs: &str) -> usize {
    logs.matches("catalog rejected").count() + logs.matches("catalog source unavailable").count()
}

#[tokio::test]
#[ignore = "run by make test-faults"]
async fn a_malformed_catalog_is_rejected_and_the_last_good_one_stays_in_force() {
    let _serial = serial().await;
    let mut s = Scenario::start("fault-catalog", CATALOG).await;
    create_all::<Registration>(
        &s.ns,
        &[json!({"metadata": {"name": "stack"}, "spec": {
            "subscriptionId": bad_input::REG_SUB, "resourceGroup": "azurestack",
            "registrationName": "azurestack-5f1c2d3e", "cloudId": bad_input::CLOUD_ID,
            "billingModel": "PayAsYouUse"}})],
        1,
    )
    .await;
    create_all::<CustomerSubscription>(
        &s.ns,
        &[json!({"metadata": {"name": "fabrikam"}, "spec": {
            "registrationRef": {"name": "stack"}, "subscriptionId": bad_input::FABRIKAM}})],
        1,
    )
    .await;
    let attached = wait_customer_reason(&s.ns, "fabrikam", "Attached").await;
    wait_registration_reason(&s.ns, "stack", "Registered").await;

    let mut cases = malformed_catalogs();
    cases.push((
        "file removed",
        Vec::new(),
        vec!["cannot read the catalog file"],
    ));
    for (what, content, needles) in cases {
        let logs = s.operator.logs();
        let (seen, before) = (logs.len(), rejections(&logs));
        if what == "file removed" {
            std::fs::remove_file(&s.catalog.path).unwrap();
        } else {
            let tmp = s.catalog.path.with_extension("tmp");
            std::fs::write(&tmp, &content).unwrap();
            std::fs::rename(&tmp, &s.catalog.path).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while rejections(&s.operator.logs()) == before {
            assert!(
                Instant::now() < deadline,
                "{what}: the operator did not reject the catalog within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let logs = s.operator.logs();
        let new = &logs[seen..];
        for needle in needles {
            assert!(
                new.contains(needle),
                "{what}: {needle:?} not in the log:\n{new}"
            );
        }
        assert_operator_healthy(&mut s.operator);
    }

    // The last good catalog stayed in force: nothing was re-decided or written.
    let now =
        s.ns.api::<CustomerSubscription>()
            .get("fabrikam")
            .await
            .unwrap();
    assert_eq!(customer_reason(&now).as_deref(), Some("Attached"));
    assert_eq!(now.resource_version(), attached.resource_version());

    // A good catalog is still taken: revoking the approval detaches, restoring it attaches.
    s.replace_catalog(&CATALOG.replace(
        "- subscriptionId: 6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c\n  resourceGroup: azurestack\n  registrationName: azurestack-5f1c2d3e\n",
        "",
    ))
    .await;
    wait_customer_reason(&s.ns, "fabrikam", "UnauthorizedCspRegistration").await;
    s.replace_catalog(CATALOG).await;
    wait_customer_reason(&s.ns, "fabrikam", "Attached").await;
    assert_operator_healthy(&mut s.operator);
    teardown(s).await;
}

// ---- an outage of the metadata server at scale (issue 13) ----

/// The operator's requests to a failing metadata server per second must not grow with the
/// number of objects waiting on it: at most this many in the first 5 s of an outage...
const OUTAGE_FIRST_5S_MAX: u64 = 50;
/// ...and at most this many per second on average after them.
const OUTAGE_LATER_RATE_MAX: f64 = 1.0;
/// Issue 13 asks that every object has its correct reason again within 3 s of the first
/// successful probe. That takes one status write per object, and at N = 1,000 the API server
/// of this 2-core machine takes longer than that for 1,000 status writes even from the test
/// alone (the floor, measured in the same run): there the test asserts a ratio to the floor
/// instead ([`RECOVERY_FLOOR_RATIO_MAX`]) and prints the figure next to this target.
const RECOVERY_TARGET: Duration = Duration::from_secs(3);
/// Every object has its correct reason again this soon after the first successful probe:
/// nothing is left waiting for a timer of its own.
const RECOVERY_MAX: Duration = Duration::from_secs(60);
/// Recovery needs one status write per object, and where the API server cannot take them
/// within [`RECOVERY_TARGET`], recovery may take at most this many times as long as the same
/// number of status writes from the test alone (the floor, measured around the recovery).
/// Generous: the operator also looks up each object and the load of the shared machine
/// changes between the measurements (measured ratios 1.3–1.7, see the README).
const RECOVERY_FLOOR_RATIO_MAX: f64 = 3.0;
/// Registrations the CustomerSubscriptions are spread over.
const OUTAGE_REGISTRATIONS: usize = 10;
/// Status writes in flight when the floor is measured: as many as the CustomerSubscription
/// controller reconciles at once.
const WRITE_CONCURRENCY: usize =
    azs_csp_operator::controller::Tuning::CUSTOMER_SUBSCRIPTIONS.concurrency as usize;

/// Waits until the operator has written no CustomerSubscription status for a second.
async fn wait_status_writes_quiet(metrics: std::net::SocketAddr) {
    let written = || {
        let (_, body) = azs_csp_testkit::process::http_get(metrics, "/metrics").expect("metrics");
        azs_csp_testkit::metrics::sample(
            &body,
            r#"azs_csp_status_writes_total{controller="customersubscription"}"#,
        )
        .unwrap_or_default()
    };
    let mut last = written();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = written();
        if now == last {
            return;
        }
        last = now;
    }
}

/// How the metadata server fails.
#[derive(Clone, Copy, Debug)]
enum Failure {
    /// Every request is answered with 502.
    BadGateway,
    /// Nothing listens.
    Refused,
    /// Connections are accepted and never answered (past the 2 s resolver timeout).
    Hang,
}

/// `customers` CustomerSubscriptions over [`OUTAGE_REGISTRATIONS`] approved Registrations,
/// decided by an http-resolver operator (2 s timeout; 5 s cache, so that every object looks
/// up again within the first seconds of an outage): 8 in 10 attached, 1 in 10 not CSP, 1 in
/// 10 unknown to the metadata server.
struct OutageScenario {
    ns: TestNamespace,
    upstream: Metadata,
    operator: Operator,
    population: Population,
    /// As many objects as the population has CustomerSubscriptions, for the floor.
    floor: WriteFloor,
}

/// What one outage looked like from the metadata server's side.
struct OutageFigures {
    failure: Failure,
    customers: usize,
    /// Requests the operator sent in each second of the outage.
    per_second: Vec<u64>,
    /// From the heal to the first request answered well (the first successful probe).
    first_answer_after: Duration,
    /// From that answer until every object had its correct reason again (`None`: not within
    /// a minute).
    recovered_in: Option<Duration>,
    /// How long the API server took for one status write to each of as many objects from
    /// this test (see [`WriteFloor`]): during the outage before the heal, and right after
    /// the recovery. About the least any recovery can take at that moment; the machine is
    /// shared, so the two can differ a lot and the recovery is compared with their mean.
    write_floors: [Duration; 2],
    /// Objects not in their correct reason once the operator settled.
    wrong_at_end: usize,
}

impl OutageFigures {
    fn first_5s(&self) -> u64 {
        self.per_second.iter().take(5).sum()
    }

    fn later_rate(&self) -> f64 {
        let later = &self.per_second[5.min(self.per_second.len())..];
        later.iter().sum::<u64>() as f64 / later.len().max(1) as f64
    }

    /// The mean of the two floors.
    fn write_floor(&self) -> Duration {
        (self.write_floors[0] + self.write_floors[1]) / 2
    }

    /// Recovery over the floor: how far from what the API server allows.
    fn floor_ratio(&self) -> Option<f64> {
        Some(self.recovered_in?.as_secs_f64() / self.write_floor().as_secs_f64())
    }

    fn summary(&self) -> String {
        format!(
            "{:?}, {} CustomerSubscriptions, {} s outage: {} requests in the first 5 s, {:.2}/s after; first good answer {:.1?} after the heal, every object correct {} after it (target {RECOVERY_TARGET:?}); {} status writes took {:.1?} before the heal and {:.1?} after the recovery (floor), recovery/floor {}; {} wrong at the end",
            self.failure,
            self.customers,
            self.per_second.len(),
            self.first_5s(),
            self.later_rate(),
            self.first_answer_after,
            self.recovered_in
                .map_or_else(|| "not within 60 s".to_string(), |d| format!("{d:.1?}")),
            self.customers,
            self.write_floors[0],
            self.write_floors[1],
            self.floor_ratio()
                .map_or_else(|| "-".to_string(), |r| format!("{r:.2}")),
            self.wrong_at_end,
        )
    }

    /// The figures issue 13 asks for.
    fn check(&self) {
        let summary = self.summary();
        assert!(
            self.first_5s() <= OUTAGE_FIRST_5S_MAX,
            "more than {OUTAGE_FIRST_5S_MAX} requests in the first 5 s: {summary}"
        );
        assert!(
            self.later_rate() <= OUTAGE_LATER_RATE_MAX,
            "more than {OUTAGE_LATER_RATE_MAX} requests/s after the first 5 s: {summary}"
        );
        assert!(
            self.recovered_in.is_some_and(|d| d <= RECOVERY_MAX),
            "not every object correct within {RECOVERY_MAX:?} of the first good answer: {summary}"
        );
        let bound = RECOVERY_TARGET.max(self.write_floor().mul_f64(RECOVERY_FLOOR_RATIO_MAX));
        assert!(
            self.recovered_in.is_some_and(|d| d <= bound),
            "recovery took longer than {RECOVERY_TARGET:?} and than {RECOVERY_FLOOR_RATIO_MAX} times the floor: {summary}"
        );
        assert_eq!(self.wrong_at_end, 0, "{summary}");
    }
}

impl OutageScenario {
    async fn start(prefix: &str, customers: usize) -> Self {
        let upstream = Metadata::start().await;
        let mut registrations = Vec::new();
        let mut expected_registrations = BTreeMap::new();
        for r in 0..OUTAGE_REGISTRATIONS {
            let sub = guid(0xa5, r);
            let name = format!("stack-{r}");
            let registration_name = format!("azurestack-{r}");
            upstream.add_subscription(
                &sub,
                json!({"id": sub, "tenantId": guid(0xd5, r), "state": "Enabled", "offer": "APSS", "billingPartnerId": PARTNER}),
            );
            upstream.set_approval(&sub, "azurestack", &registration_name, true);
            registrations.push(json!({
                "metadata": {"name": name},
                "spec": {"subscriptionId": sub, "resourceGroup": "azurestack",
                         "registrationName": registration_name, "cloudId": guid(0xc5, r),
                         "billingModel": "PayAsYouUse"}
            }));
            expected_registrations.insert(name, "Registered".to_string());
        }
        let mut manifests = Vec::new();
        let mut expected_customers = BTreeMap::new();
        let mut expected_counts: BTreeMap<String, i64> = BTreeMap::new();
        let floor = WriteFloor::prepare(customers).await;
        // One catalog for all of them (an edit per entry would parse the catalog n times).
        let mut entries = Vec::new();
        for i in 0..customers {
            let sub = guid(0xb5, i);
            let name = format!("cs-{i:04}");
            let registration = format!("stack-{}", i % OUTAGE_REGISTRATIONS);
            let offer = |offer: &str| json!({"id": sub, "tenantId": guid(0xd6, i), "state": "Enabled", "offer": offer, "billingPartnerId": PARTNER});
            let reason = match (i / OUTAGE_REGISTRATIONS) % 10 {
                8 => {
                    entries.push((sub.clone(), offer("PayAsYouGo")));
                    "InvalidCSPSubscription"
                }
                9 => "InvalidCustomerSubscriptionId",
                _ => {
                    entries.push((sub.clone(), offer("CSP")));
                    *expected_counts.entry(registration.clone()).or_default() += 1;
                    "Attached"
                }
            };
            manifests.push(json!({"metadata": {"name": name},
                "spec": {"registrationRef": {"name": registration}, "subscriptionId": sub}}));
            expected_customers.insert(name, reason.to_string());
        }
        upstream.add_subscriptions(entries);
        let population = Population {
            catalog: String::new(),
            registrations,
            customers: manifests,
            duplicates: Vec::new(),
            expected_customers,
            expected_registrations,
            expected_counts,
        };
        let ns = TestNamespace::new(prefix).await;
        common::crds::ensure_crds(&ns.client).await;
        let url = upstream.url();
        let operator = common::scenario::start_operator(&[
            "--resolver",
            "http",
            "--resolver-url",
            &url,
            "--resolver-timeout",
            "2s",
            "--cache-ttl",
            "5s",
            "--watch-namespace",
            &ns.name,
        ]);
        let started = Instant::now();
        population.create(&ns).await;
        wait_converged(&ns, &population, Duration::from_secs(300)).await;
        eprintln!(
            "{} objects created and decided in {:.1?}",
            population.total(),
            started.elapsed()
        );
        Self {
            ns,
            upstream,
            operator,
            population,
            floor,
        }
    }

    /// Requests the operator sent so far, as counted by the operator (`Refused`: the server
    /// sees none) or by the server.
    fn requests(&self, failure: Failure, metrics: std::net::SocketAddr) -> u64 {
        match failure {
            Failure::Refused => {
                let (_, body) =
                    azs_csp_testkit::process::http_get(metrics, "/metrics").expect("metrics");
                body.lines()
                    .find_map(|l| l.strip_prefix("azs_csp_resolver_requests_total "))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .expect("azs_csp_resolver_requests_total") as u64
            }
            Failure::BadGateway | Failure::Hang => self.upstream.requests(),
        }
    }

    /// Fails the server for `outage`, counting the operator's requests per second, heals it
    /// and measures how soon every object is correct again after the first good answer.
    async fn outage(&self, failure: Failure, outage: Duration) -> OutageFigures {
        let metrics = self.operator.metrics_addr();
        match failure {
            Failure::BadGateway => self.upstream.set_mode(Mode::Status(502)),
            Failure::Refused => self.upstream.refuse_connections(),
            Failure::Hang => self.upstream.set_mode(Mode::Hang),
        }
        // The floor is measured while the operator is idle (every object decided as waiting),
        // and before the heal, so that the two never compete.
        let (per_second, write_floor) = tokio::join!(
            sample_rate(
                || self.requests(failure, metrics),
                outage,
                Duration::from_secs(1),
            ),
            async {
                wait_status_writes_quiet(metrics).await;
                self.floor.measure(WRITE_CONCURRENCY).await
            }
        );
        let mut outcomes = OutcomeWatch::start(&self.ns, &self.population.reasons_only()).await;
        let answered_before = self.upstream.requests();
        match failure {
            Failure::BadGateway | Failure::Hang => self.upstream.set_mode(Mode::Healthy),
            Failure::Refused => self.upstream.accept_connections().await,
        }
        let healed = Instant::now();
        // The server counts a request when it has read it; from now on it answers well.
        while self.upstream.requests() == answered_before {
            assert!(
                healed.elapsed() < Duration::from_secs(60),
                "no request reached the healed server within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let first_answer = Instant::now();
        let recovered_in = outcomes
            .all_matching_after(first_answer, Duration::from_secs(60))
            .await
            .map(|at| at - first_answer);
        drop(outcomes);
        let write_floors = [write_floor, self.floor.measure(WRITE_CONCURRENCY).await];
        // Then everything, counts included, must settle.
        let deadline = Instant::now() + Duration::from_secs(60);
        let wrong_at_end = loop {
            let last = survey(&self.ns, &self.population).await.expect("survey");
            if last.done() || Instant::now() > deadline {
                break last.mismatches.len();
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let figures = OutageFigures {
            failure,
            customers: self.population.expected_customers.len(),
            per_second,
            first_answer_after: first_answer - healed,
            recovered_in,
            write_floors,
            wrong_at_end,
        };
        eprintln!("{}", figures.summary());
        eprintln!("requests per second: {:?}", figures.per_second);
        figures
    }

    async fn teardown(mut self) {
        assert_operator_healthy(&mut self.operator);
        drop(self.operator);
        release_registrations(&self.ns).await;
    }
}

/// The per-second series of two runs in two columns.
fn side_by_side(a: &OutageFigures, b: &OutageFigures) -> String {
    let mut table = format!("second  N={:<6} N={}\n", a.customers, b.customers);
    for s in 0..a.per_second.len().max(b.per_second.len()) {
        let cell = |f: &OutageFigures| f.per_second.get(s).map_or(String::new(), u64::to_string);
        table += &format!("{:>6}  {:<8} {}\n", s + 1, cell(a), cell(b));
    }
    table
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by make test-faults"]
async fn a_failing_upstream_sees_a_trickle_however_many_objects_wait_on_it() {
    let _serial = serial().await;
    let outage = Duration::from_secs(60);
    let small = OutageScenario::start("fault-outage-100", 100).await;
    let at_100 = small.outage(Failure::BadGateway, outage).await;
    small.teardown().await;

    // One population of 1,000 rides out a 60 s 502 outage, then (30 s each, to keep the fault
    // tests short) refused connections and answers that never come.
    let large = OutageScenario::start("fault-outage-1000", 1000).await;
    let at_1000 = large.outage(Failure::BadGateway, outage).await;
    eprintln!(
        "requests per second during a 60 s 502 outage:\n{}",
        side_by_side(&at_100, &at_1000)
    );
    let refused = large
        .outage(Failure::Refused, Duration::from_secs(30))
        .await;
    let hang = large.outage(Failure::Hang, Duration::from_secs(30)).await;
    large.teardown().await;

    for figures in [&at_100, &at_1000, &refused, &hang] {
        eprintln!("{}", figures.summary());
    }
    for figures in [&at_100, &at_1000, &refused, &hang] {
        figures.check();
    }
}
