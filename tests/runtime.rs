//! The process around the controllers, against the real API server: the metrics and health
//! endpoints, leader election between two operator processes (one writer; takeover after the
//! leader is killed), a clean SIGTERM that hands the Lease over at once, and a restart after
//! which nothing is decided until both kinds' caches have listed.
//! Each test has its own namespace, and its operators watch and elect only there.

mod common {
    pub mod crds;
    pub mod objects;
    pub mod process;
    pub mod reasons;
    pub mod scenario;
}

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use azs_csp_operator::{
    api::{Condition, CustomerSubscription, Registration},
    emulator::tls,
};
use azs_csp_testkit::{
    api_proxy::ApiProxy,
    cluster::{TIMEOUT, TestNamespace, wait_for},
    metrics::sample,
    process::{Operator, http_get},
    upstream::Mode,
};
use common::{
    crds::ensure_crds,
    objects::{customer_yaml, registration_yaml},
    process::start_operator_with_env,
    reasons::{
        customer_reason, registration_reason, wait_customer_reason, wait_registration_reason,
    },
    scenario::{CatalogFile, Scenario, start_operator},
};
use k8s_openapi::api::{coordination::v1::Lease, events::v1::Event};
use kube::{
    Api,
    api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams},
};

const CATALOG: &str = include_str!("../examples/catalog.yaml");
const LEASE: &str = "azs-csp-operator";
/// Lease duration, and the longest a standby may wait for an expired lease (retry period with
/// jitter, twice: the read that first sees the last renewal, and the one that finds it expired).
const LEASE_DURATION: Duration = Duration::from_secs(15);
const TAKEOVER_SLACK: Duration = Duration::from_millis(2 * 2400);

/// One Registration and five CustomerSubscriptions with four different outcomes.
const CUSTOMERS: [(&str, &str, &str, &str); 5] = [
    (
        "fabrikam",
        "contoso-stack",
        "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a",
        "Attached",
    ),
    (
        "tailspin",
        "contoso-stack",
        "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d",
        "Attached",
    ),
    (
        "northwind",
        "contoso-stack",
        "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e",
        "BadCustomerSubscriptionId",
    ),
    (
        "adatum",
        "contoso-stack",
        "c3d4e5f6-a7b8-4c9d-8e1f-2a3b4c5d6e7f",
        "InvalidCSPSubscription",
    ),
    (
        "proseware",
        "no-such-registration",
        "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a",
        "RegistrationNotFound",
    ),
];

async fn create_and_settle(ns: &TestNamespace) {
    ns.create::<Registration>(&registration_yaml("contoso-stack", "PayAsYouUse"))
        .await;
    wait_registration_reason(ns, "contoso-stack", "Registered").await;
    for (name, registration, subscription, _) in CUSTOMERS {
        ns.create::<CustomerSubscription>(&customer_yaml(name, registration, subscription))
            .await;
    }
    for (name, _, _, reason) in CUSTOMERS {
        wait_customer_reason(ns, name, reason).await;
    }
}

/// The value of the sample `series` (name and labels exactly as printed) in `text`.
fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

fn scrape(addr: SocketAddr) -> String {
    let (code, body) =
        http_get(addr, "/metrics").unwrap_or_else(|e| panic!("GET {addr}/metrics: {e}"));
    assert_eq!(code, 200, "{body}");
    body
}

fn status(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get(addr, path).unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"))
}

/// Polls `check` every 100 ms until it returns `Some`, or fails after `timeout` with `what`.
async fn poll<T>(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lease(ns: &TestNamespace) -> Option<Lease> {
    ns.api::<Lease>().get_opt(LEASE).await.ok().flatten()
}

fn holder(lease: &Lease) -> Option<String> {
    lease
        .spec
        .as_ref()?
        .holder_identity
        .clone()
        .filter(|h| !h.is_empty())
}

fn transitions(lease: &Lease) -> i32 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0)
}

/// Waits until the Lease has a holder for which `accept` holds; returns the Lease.
async fn wait_holder(
    ns: &TestNamespace,
    timeout: Duration,
    accept: impl Fn(&str) -> bool,
) -> Lease {
    poll("the leader election Lease holder", timeout, async || {
        lease(ns)
            .await
            .filter(|l| holder(l).is_some_and(|h| accept(&h)))
    })
    .await
}

/// Two operators electing a leader on the Lease of `ns`, each watching only `ns`.
fn start_replicas(ns: &TestNamespace, catalog: &CatalogFile) -> (Operator, Operator) {
    let args = [
        "--catalog-file",
        catalog.path_str(),
        "--watch-namespace",
        &ns.name,
        "--leader-election",
        "--leader-election-namespace",
        &ns.name,
    ];
    (
        start_operator_with_env(&args, &[("POD_NAME", "replica-a")]),
        start_operator_with_env(&args, &[("POD_NAME", "replica-b")]),
    )
}

/// Sorts two replicas into (leader, leader's name, standby, standby's name) by the Lease.
async fn by_role(
    ns: &TestNamespace,
    a: Operator,
    b: Operator,
) -> (Operator, &'static str, Operator, &'static str) {
    let lease = wait_holder(ns, azs_csp_testkit::cluster::TIMEOUT, |_| true).await;
    let standby_logged = async |op: &Operator| {
        poll(
            "the standby to see the leader",
            azs_csp_testkit::cluster::TIMEOUT,
            async || {
                op.logs()
                    .contains("standby: another replica leads")
                    .then_some(())
            },
        )
        .await
    };
    match holder(&lease).as_deref() {
        Some("replica-a") => {
            standby_logged(&b).await;
            (a, "replica-a", b, "replica-b")
        }
        Some("replica-b") => {
            standby_logged(&a).await;
            (b, "replica-b", a, "replica-a")
        }
        other => panic!("unexpected Lease holder {other:?}"),
    }
}

#[tokio::test]
async fn metrics_count_reconciles_writes_and_reasons_and_the_probes_answer() {
    let s = Scenario::start("rt-metrics", CATALOG).await;
    let addr = s.operator.metrics_addr();
    assert_eq!(status(addr, "/healthz").0, 200);
    poll(
        "/readyz to answer 200",
        azs_csp_testkit::cluster::TIMEOUT,
        async || (status(addr, "/readyz").0 == 200).then_some(()),
    )
    .await;

    create_and_settle(&s.ns).await;

    // The gauge is counted from the operator's cache at scrape time; it may trail the API by a
    // watch event.
    let expected = [
        ("Attached", 2.0),
        ("BadCustomerSubscriptionId", 1.0),
        ("InvalidCSPSubscription", 1.0),
        ("RegistrationNotFound", 1.0),
        ("Pending", 0.0),
        ("DuplicateCustomerSubscription", 0.0),
    ];
    let text = poll(
        "the reason gauge to match",
        azs_csp_testkit::cluster::TIMEOUT,
        async || {
            let text = scrape(addr);
            expected
                .iter()
                .all(|(reason, count)| {
                    sample(
                        &text,
                        &format!("azs_csp_customer_subscriptions{{reason=\"{reason}\"}}"),
                    ) == Some(*count)
                })
                .then_some(text)
        },
    )
    .await;
    assert_eq!(
        value(&text, r#"azs_csp_registrations{reason="Registered"}"#),
        1.0
    );
    for controller in ["registration", "customersubscription"] {
        let ok =
            format!(r#"azs_csp_reconcile_total{{controller="{controller}",result="success"}}"#);
        assert!(value(&text, &ok) > 0.0, "{ok}\n{text}");
        let writes = format!(r#"azs_csp_status_writes_total{{controller="{controller}"}}"#);
        assert!(value(&text, &writes) > 0.0, "{writes}\n{text}");
        let count =
            format!(r#"azs_csp_reconcile_duration_seconds_count{{controller="{controller}"}}"#);
        assert!(value(&text, &count) > 0.0, "{count}\n{text}");
        let inf = format!(
            r#"azs_csp_reconcile_duration_seconds_bucket{{controller="{controller}",le="+Inf"}}"#
        );
        assert_eq!(value(&text, &inf), value(&text, &count), "{text}");
    }
    assert!(value(&text, "azs_csp_finalizer_writes_total") >= 1.0);
    // One Event per first decision: 5 CustomerSubscriptions and the Registration, published
    // in the background.
    let published = r#"azs_csp_events_total{outcome="published"}"#;
    let text = poll(
        "the Events to be published",
        azs_csp_testkit::cluster::TIMEOUT,
        async || {
            let text = scrape(addr);
            (sample(&text, published) >= Some(6.0)).then_some(text)
        },
    )
    .await;
    assert_eq!(
        value(&text, r#"azs_csp_events_total{outcome="failed"}"#),
        0.0
    );
    assert_eq!(
        value(&text, r#"azs_csp_events_total{outcome="dropped"}"#),
        0.0
    );
    assert_eq!(value(&text, "azs_csp_leader"), 1.0);
    assert_eq!(value(&text, "azs_csp_catalog_loaded"), 1.0);
    assert_eq!(value(&text, "azs_csp_catalog_rejected_total"), 0.0);
    assert!(
        text.contains("# TYPE azs_csp_reconcile_duration_seconds histogram"),
        "{text}"
    );

    // A catalog that does not parse is rejected, counted, and the last good one stays.
    s.replace_catalog("subscriptions: [").await;
    poll(
        "the rejected catalog to be counted",
        azs_csp_testkit::cluster::TIMEOUT,
        async || {
            (sample(&scrape(addr), "azs_csp_catalog_rejected_total") == Some(1.0)).then_some(())
        },
    )
    .await;
    assert_eq!(value(&scrape(addr), "azs_csp_catalog_loaded"), 1.0);
    assert_eq!(status(addr, "/nope").0, 404);
}

#[tokio::test]
async fn only_the_leader_writes_and_a_standby_takes_over_when_the_leader_is_killed() {
    let ns = TestNamespace::new("rt-leader").await;
    ensure_crds(&ns.client).await;
    let catalog = CatalogFile::new(CATALOG);
    let (a, b) = start_replicas(&ns, &catalog);
    let (mut leader, leader_name, standby, standby_name) = by_role(&ns, a, b).await;
    let before = lease(&ns).await.expect("the Lease");

    create_and_settle(&ns).await;

    // One writer: the standby reconciled and wrote nothing, and is ready (a healthy standby).
    let leader_metrics = poll(
        "the leader's metrics",
        azs_csp_testkit::cluster::TIMEOUT,
        async || {
            let text = scrape(leader.metrics_addr());
            (sample(
                &text,
                r#"azs_csp_customer_subscriptions{reason="Attached"}"#,
            ) == Some(2.0))
            .then_some(text)
        },
    )
    .await;
    let standby_metrics = scrape(standby.metrics_addr());
    assert_eq!(value(&leader_metrics, "azs_csp_leader"), 1.0);
    assert_eq!(value(&standby_metrics, "azs_csp_leader"), 0.0);
    for controller in ["registration", "customersubscription"] {
        let writes = format!(r#"azs_csp_status_writes_total{{controller="{controller}"}}"#);
        assert!(value(&leader_metrics, &writes) > 0.0, "{leader_metrics}");
        assert_eq!(value(&standby_metrics, &writes), 0.0, "{standby_metrics}");
        for result in ["success", "error"] {
            let reconciles = format!(
                r#"azs_csp_reconcile_total{{controller="{controller}",result="{result}"}}"#
            );
            assert_eq!(
                value(&standby_metrics, &reconciles),
                0.0,
                "{standby_metrics}"
            );
        }
    }
    assert_eq!(status(standby.metrics_addr(), "/readyz").0, 200);
    assert_eq!(status(leader.metrics_addr(), "/readyz").0, 200);
    assert!(!standby.logs().contains("controllers starting"));
    // Every Event was reported by the leader.
    let events = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap();
    let instances: Vec<_> = events
        .items
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("azs-csp-operator"))
        .map(|e| e.reporting_instance.clone().unwrap_or_default())
        .collect();
    assert!(!instances.is_empty());
    assert!(instances.iter().all(|i| i == leader_name), "{instances:?}");

    // kill -9: no release; the standby takes over once the lease has expired.
    let killed = Instant::now();
    leader.kill();
    ns.create::<CustomerSubscription>(&customer_yaml(
        "late",
        "contoso-stack",
        "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e",
    ))
    .await;
    let bound = LEASE_DURATION + TAKEOVER_SLACK + Duration::from_secs(10);
    let api = ns.api::<CustomerSubscription>();
    poll(
        "the new leader to decide the new object",
        bound,
        async || {
            let cs = api.get_opt("late").await.ok().flatten()?;
            (customer_reason(&cs).as_deref() == Some("BadCustomerSubscriptionId")).then_some(())
        },
    )
    .await;
    let takeover = killed.elapsed();
    eprintln!(
        "takeover after kill -9 of the leader: {:.1} s until the standby wrote (lease duration {} s)",
        takeover.as_secs_f64(),
        LEASE_DURATION.as_secs()
    );
    let after = lease(&ns).await.expect("the Lease");
    assert_eq!(holder(&after).as_deref(), Some(standby_name));
    assert_eq!(transitions(&after), transitions(&before) + 1);
    let text = scrape(standby.metrics_addr());
    assert_eq!(value(&text, "azs_csp_leader"), 1.0);
    assert!(
        value(
            &text,
            r#"azs_csp_status_writes_total{controller="customersubscription"}"#
        ) > 0.0
    );
    assert!(
        takeover >= LEASE_DURATION.saturating_sub(Duration::from_secs(6)),
        "took over after {takeover:?}, before the killed leader's lease could have expired"
    );
}

#[tokio::test]
async fn sigterm_releases_the_lease_and_the_standby_takes_over_at_once() {
    let ns = TestNamespace::new("rt-sigterm").await;
    ensure_crds(&ns.client).await;
    let catalog = CatalogFile::new(CATALOG);
    let (a, b) = start_replicas(&ns, &catalog);
    let (leader, leader_name, standby, standby_name) = by_role(&ns, a, b).await;
    create_and_settle(&ns).await;

    let terminated = Instant::now();
    leader.terminate();
    let (code, logs) =
        tokio::task::spawn_blocking(move || leader.wait_exit(Duration::from_secs(15)))
            .await
            .unwrap();
    let exited = terminated.elapsed();
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("SIGTERM received"), "{logs}");
    assert!(logs.contains("leader election Lease released"), "{logs}");
    let released = wait_holder(&ns, azs_csp_testkit::cluster::TIMEOUT, |h| h != leader_name).await;
    let takeover = terminated.elapsed();
    eprintln!(
        "after SIGTERM: the leader exited 0 in {:.2} s; the standby held the lease after {:.2} s",
        exited.as_secs_f64(),
        takeover.as_secs_f64()
    );
    assert_eq!(holder(&released).as_deref(), Some(standby_name));
    assert!(
        takeover < Duration::from_secs(10),
        "the standby took {takeover:?} to take over a released lease"
    );

    // The new leader writes.
    ns.create::<CustomerSubscription>(&customer_yaml(
        "late",
        "contoso-stack",
        "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a",
    ))
    .await;
    wait_customer_reason(&ns, "late", "DuplicateCustomerSubscription").await;
    let wrote = terminated.elapsed();
    eprintln!(
        "after SIGTERM: the new leader wrote a new object's status after {:.2} s",
        wrote.as_secs_f64()
    );
    assert_eq!(
        value(&scrape(standby.metrics_addr()), "azs_csp_leader"),
        1.0
    );
}

/// Every object's Ready condition, by kind and name.
async fn ready_conditions(ns: &TestNamespace) -> BTreeMap<String, Option<Condition>> {
    let ready = |conditions: &[Condition]| conditions.iter().find(|c| c.type_ == "Ready").cloned();
    let mut found = BTreeMap::new();
    let registrations = ns.api::<Registration>().list(&ListParams::default()).await;
    for r in registrations.expect("list Registrations") {
        let condition = r.status.as_ref().and_then(|s| ready(&s.conditions));
        found.insert(
            format!("Registration/{}", r.metadata.name.unwrap_or_default()),
            condition,
        );
    }
    let customers = ns
        .api::<CustomerSubscription>()
        .list(&ListParams::default())
        .await;
    for c in customers.expect("list CustomerSubscriptions") {
        let condition = c.status.as_ref().and_then(|s| ready(&s.conditions));
        let name = c.metadata.name.unwrap_or_default();
        found.insert(format!("CustomerSubscription/{name}"), condition);
    }
    found
}

/// The names of the Events in `ns` that report a RegistrationNotFound decision.
async fn registration_not_found_events(ns: &TestNamespace) -> BTreeSet<String> {
    let events = ns.api::<Event>().list(&ListParams::default()).await;
    events
        .expect("list Events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RegistrationNotFound"))
        .filter_map(|e| e.metadata.name)
        .collect()
}

/// How long each of the restarted operator's Registration requests is held back (its start-up
/// probe, its list and watch, a status write: the restart takes a few of these). Its
/// CustomerSubscriptions list within milliseconds, so without the wait for both caches it
/// would decide them against an empty Registration cache well before the list is let through.
const REGISTRATIONS_HELD: Duration = Duration::from_secs(2);

/// kube-runtime starts each controller once its own cache has listed, but a decision reads
/// both kinds: a CustomerSubscription decided before the Registrations listed would be
/// RegistrationNotFound for a moment after every restart (an Event, and a new Ready transition
/// time, which usage attribution takes as the attach time). The restarted operator reaches the
/// API server through the test kit's proxy, which holds back its Registration list (and watch)
/// while its CustomerSubscriptions list at once; once both have listed, it decides every object
/// as before and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_nothing_is_decided_until_the_registrations_have_listed() {
    let ns = TestNamespace::new("rt-synced").await;
    ensure_crds(&ns.client).await;
    let catalog = CatalogFile::new(CATALOG);
    let args = [
        "--catalog-file",
        catalog.path_str(),
        "--watch-namespace",
        &ns.name,
    ];
    let mut first = start_operator(&args);
    create_and_settle(&ns).await;
    // Its Events of the first decisions (5 CustomerSubscriptions and the Registration) are
    // published in the background: all of them in place before they are compared.
    let first_addr = tokio::task::block_in_place(|| first.metrics_addr());
    poll("the Events to be published", TIMEOUT, async || {
        (sample(
            &scrape(first_addr),
            r#"azs_csp_events_total{outcome="published"}"#,
        ) >= Some(6.0))
        .then_some(())
    })
    .await;
    tokio::task::block_in_place(|| first.stop());
    let settled = ready_conditions(&ns).await;
    let not_found_events = registration_not_found_events(&ns).await;

    let tls_dir = tempfile::tempdir().expect("temp dir");
    let (config, _) = tls::server_config(tls_dir.path()).expect("a certificate for 127.0.0.1");
    let proxy = ApiProxy::start(
        ns.client.clone(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        &tls_dir.path().join(tls::CA_FILE),
    )
    .await
    .unwrap_or_else(|e| panic!("the API proxy: {e}"));
    proxy.set_mode_for("/registrations", Mode::Delay(REGISTRATIONS_HELD));
    let kubeconfig = proxy.kubeconfig().to_str().expect("a UTF-8 path");
    let restarted = start_operator_with_env(&args, &[("KUBECONFIG", kubeconfig)]);
    let addr = tokio::task::block_in_place(|| restarted.metrics_addr());
    poll("/readyz to answer 200", TIMEOUT, async || {
        (status(addr, "/readyz").0 == 200).then_some(())
    })
    .await;
    let reconciled = |controller: &str| {
        format!(r#"azs_csp_reconcile_total{{controller="{controller}",result="success"}}"#)
    };
    poll("every object to be decided again", TIMEOUT, async || {
        let text = scrape(addr);
        (sample(&text, &reconciled("registration")) >= Some(1.0)
            && sample(&text, &reconciled("customersubscription")) >= Some(CUSTOMERS.len() as f64))
        .then_some(())
    })
    .await;

    // The restarted operator did go through the proxy for both kinds.
    let paths = proxy.paths();
    for kind in ["/registrations", "/customersubscriptions"] {
        assert!(
            paths.iter().any(|p| p.ends_with(kind)),
            "no {kind} in {paths:?}"
        );
    }
    let logs = restarted.logs();
    let changed: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("decision changed"))
        .collect();
    assert!(
        changed.is_empty(),
        "the restarted operator changed decisions:\n{}",
        changed.join("\n")
    );
    assert_eq!(
        ready_conditions(&ns).await,
        settled,
        "a Ready condition changed across the restart"
    );
    assert_eq!(registration_not_found_events(&ns).await, not_found_events);
}

/// A stored object that does not deserialize into the operator's types is skipped — logged,
/// counted and reported by an Event — while the cache still fills, `/readyz` answers 200 and
/// every other object is decided; once fixed, it is decided like any other.
///
/// How such an object comes to be stored, the way another tool would store it: the API server
/// checks a condition's `lastTransitionTime` against the CRD's `format: date-time` as Go parses
/// RFC 3339, which takes any number of fractional digits, while the Rust `metav1.Time` takes at
/// most nine (nanoseconds). A condition of another tool's own type with ten fractional digits,
/// written through the status subresource, passes the schema and fails the Rust type. It is
/// stored before the operator starts: unguarded, it fails the operator's whole initial list, so
/// the cache never fills and `/readyz` stays 503.
#[tokio::test]
async fn an_object_that_does_not_deserialize_is_skipped_and_reported_and_the_rest_is_decided() {
    let ns = TestNamespace::new("rt-invalid").await;
    ensure_crds(&ns.client).await;
    ns.create::<Registration>(&registration_yaml("broken", "PayAsYouUse"))
        .await;
    let untyped: Api<DynamicObject> = Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &ApiResource::erase::<Registration>(&()),
    );
    let audited_at = |time: &str| {
        serde_json::json!({"status": {"conditions": [{
            "type": "AuditedByAnotherTool",
            "status": "True",
            "reason": "Audited",
            "message": "written by another tool",
            "lastTransitionTime": time,
        }]}})
    };
    untyped
        .patch_status(
            "broken",
            &PatchParams::default(),
            &Patch::Merge(audited_at("2026-01-02T15:04:05.1234567891Z")),
        )
        .await
        .expect("the API server accepts ten fractional digits");
    assert!(
        ns.api::<Registration>().get("broken").await.is_err(),
        "the stored object should not deserialize into the Rust type"
    );

    let catalog = CatalogFile::new(CATALOG);
    let operator = start_operator(&[
        "--catalog-file",
        catalog.path_str(),
        "--watch-namespace",
        &ns.name,
    ]);
    let addr = operator.metrics_addr();
    poll(
        "/readyz to answer 200",
        azs_csp_testkit::cluster::TIMEOUT,
        async || (status(addr, "/readyz").0 == 200).then_some(()),
    )
    .await;
    create_and_settle(&ns).await;

    let invalid = r#"azs_csp_invalid_objects_total{controller="registration"}"#;
    let text = poll(
        "the invalid object to be counted",
        azs_csp_testkit::cluster::TIMEOUT,
        async || {
            let text = scrape(addr);
            (sample(&text, invalid) == Some(1.0)).then_some(text)
        },
    )
    .await;
    assert_eq!(
        value(
            &text,
            r#"azs_csp_invalid_objects_total{controller="customersubscription"}"#
        ),
        0.0
    );
    assert!(
        operator
            .logs()
            .contains("skipping a stored object that does not deserialize"),
        "{}",
        operator.logs()
    );
    let events = ns.api::<Event>();
    let event = poll(
        "the InvalidObject Event",
        azs_csp_testkit::cluster::TIMEOUT,
        async || {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("InvalidObject")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("broken")
            })
        },
    )
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("skipped"),
        "{event:?}"
    );
    // Skipped: the operator wrote nothing to it.
    let broken = untyped.get("broken").await.unwrap();
    assert_eq!(
        broken.data["status"]["conditions"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(status(addr, "/readyz").0, 200);

    // Fixed by its tool, it is decided like any other object.
    untyped
        .patch_status(
            "broken",
            &PatchParams::default(),
            &Patch::Merge(audited_at("2026-01-02T15:04:05.123456789Z")),
        )
        .await
        .unwrap();
    wait_for(
        &ns.api::<Registration>(),
        "broken",
        "the fixed Registration to be decided",
        |r| registration_reason(r).is_some(),
    )
    .await;
    assert_eq!(value(&scrape(addr), invalid), 1.0);
}
