//! Usage attribution and chargeback against the real API server and the emulator (DESIGN.md
//! §9, §10): a local-mode operator reads the stamp's usage, attributes it by tenant and attach
//! time, forwards it to the emulator's CloudEvents sink and totals it in status. Every test
//! has its own namespace, emulator (in this process, behind the fault layer) and operator.

// Only the world and its constants of azure mode's kit are used here.
mod azure_kit {
    pub mod world;
}
mod common {
    pub mod crds;
}

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use azs_csp_operator::{
    api::{CustomerSubscription, Registration, UsageTotals},
    controller::CUSTOMER_SUBSCRIPTION_MANAGER,
    emulator::stamp::Stamp,
};
use azs_csp_testkit::{
    cluster::{TestNamespace, wait_for},
    metrics,
    process::{Operator, OperatorCommand, http_get},
    upstream::Mode,
};
use azure_kit::world::{AzureWorld, CLIENT, SECRET, TENANT};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use common::crds::ensure_crds;
use kube::api::{Patch, PatchParams, PostParams};
use rust_decimal::Decimal;
use serde_json::json;

const REG_SUB: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";
const PARTNER: &str = "4412345";
const CLOUD: &str = "5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";
const PROVIDER: &str = "1f2e3d4c-5b6a-4978-8a9b-0c1d2e3f4a5b";
/// Customer subscriptions: attached from the start, attached mid-period, another partner's.
const C1: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f81";
const C2: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f82";
const C4: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f84";
/// Directory tenants of the stamp's local subscriptions L1..L4 (T3 has no CustomerSubscription).
const T: [&str; 4] = [
    "7a1b2c3d-0000-4000-8000-0000000000a1",
    "7a1b2c3d-0000-4000-8000-0000000000a2",
    "7a1b2c3d-0000-4000-8000-0000000000a3",
    "7a1b2c3d-0000-4000-8000-0000000000a4",
];
const L: [&str; 4] = [
    "5a100000-0000-4000-8000-000000000001",
    "5a100000-0000-4000-8000-000000000002",
    "5a100000-0000-4000-8000-000000000003",
    "5a100000-0000-4000-8000-000000000004",
];
const BASE_VM: &str = "FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5";
const WINDOWS_VM: &str = "9CD92D4C-BAFD-4492-B278-BEDC2DE8232A";
/// VMs of L3 running one hour only: 1,200 records in one window, so two pages.
const FLEET: usize = 600;

fn catalog() -> String {
    format!(
        r#"subscriptions:
- {{id: {REG_SUB}, tenantId: {TENANT}, state: Enabled, offer: CSP, billingPartnerId: "{PARTNER}"}}
- {{id: {C1}, tenantId: {t1}, state: Enabled, offer: CSP, billingPartnerId: "{PARTNER}"}}
- {{id: {C2}, tenantId: {t2}, state: Enabled, offer: CSP, billingPartnerId: "{PARTNER}"}}
- {{id: {C4}, tenantId: {t4}, state: Enabled, offer: CSP, billingPartnerId: "5590000"}}
multitenancyApprovals:
- {{subscriptionId: {REG_SUB}, resourceGroup: azurestack, registrationName: stack}}
servicePrincipals:
- {{tenantId: {TENANT}, clientId: {CLIENT}, clientSecret: {SECRET}}}
"#,
        t1 = T[0],
        t2 = T[1],
        t4 = T[3],
    )
}

/// Every VM runs the five whole hours from -6h to -1h (reported one hour later, so every
/// window up to the start hour is complete); the fleet runs only the hour -2h.
fn stamp_yaml(plan: &Plan, extra_records: &[serde_json::Value]) -> String {
    let mut text =
        format!("providerSubscriptionId: {PROVIDER}\nreportingDelay: 1h\nsubscriptions:\n");
    for (l, t) in L.iter().zip(T) {
        text.push_str(&format!(
            "- {{subscriptionId: {l}, tenantId: {t}, owner: o@x.example, displayName: {l}}}\n"
        ));
    }
    text.push_str("virtualMachines:\n");
    let vms = [
        (L[0], 2, "Linux"),
        (L[1], 4, "Windows"),
        (L[2], 1, "Linux"),
        (L[3], 2, "Linux"),
    ];
    for (i, (l, vcores, os)) in vms.iter().enumerate() {
        text.push_str(&format!(
            "- {{name: vm{i}, subscriptionId: {l}, size: S{vcores}, vcores: {vcores}, os: {os}, running: [{{from: -{}h, to: -1h}}]}}\n",
            plan.hours + 1
        ));
    }
    for i in 0..plan.fleet {
        text.push_str(&format!(
            "- {{name: fleet{i}, subscriptionId: {}, size: A1, vcores: 1, os: Linux, running: [{{from: -2h, to: -1h}}]}}\n",
            L[2]
        ));
    }
    text.push_str(&format!(
        "extraRecords: {}\n",
        serde_json::Value::from(extra_records.to_vec())
    ));
    text
}

/// How much usage the stamp has and since when the customers are attached.
struct Plan {
    /// Whole hours every VM runs, ending at -1h.
    hours: i64,
    fleet: usize,
    /// Windows to ingest, ending at the start hour.
    windows: i64,
    from_start_attached: TimeDelta,
    mid_period_attached: TimeDelta,
}

const SHORT: Plan = Plan {
    hours: 5,
    fleet: FLEET,
    windows: 8,
    from_start_attached: TimeDelta::hours(7),
    mid_period_attached: TimeDelta::minutes(210),
};

struct Scenario {
    ns: TestNamespace,
    world: AzureWorld,
    operator: Option<Operator>,
    /// `--usage-delay`: windows ending later than this long ago wait.
    usage_delay: String,
    /// `--usage-interval`: how long a pass waits for the next when no usageSource changes.
    usage_interval: String,
    /// The hour the emulator started in: the stamp's relative times count from it.
    origin: DateTime<Utc>,
    catalog_file: PathBuf,
    plan: Plan,
    _dir: tempfile::TempDir,
}

fn hour(time: DateTime<Utc>) -> DateTime<Utc> {
    time.duration_trunc(TimeDelta::hours(1)).expect("hour")
}

impl Scenario {
    async fn start(prefix: &str) -> Self {
        Self::with_plan(prefix, SHORT).await
    }

    async fn with_plan(prefix: &str, plan: Plan) -> Self {
        Self::with_stamp(prefix, plan, |plan, _| stamp_yaml(plan, &[])).await
    }

    /// `stamp` writes the stamp file, given the hour the emulator starts in.
    async fn with_stamp(
        prefix: &str,
        plan: Plan,
        stamp: impl FnOnce(&Plan, DateTime<Utc>) -> String,
    ) -> Self {
        let started = Utc::now();
        let stamp = Stamp::parse(&stamp(&plan, hour(started)), started).expect("stamp");
        let world = AzureWorld::start_with_stamp(&catalog(), 200, 10.0, Some(stamp)).await;
        let ns = TestNamespace::new(prefix).await;
        ensure_crds(&ns.client).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let catalog_file = dir.path().join("catalog.yaml");
        std::fs::write(&catalog_file, catalog()).expect("catalog");
        Self {
            ns,
            world,
            operator: None,
            usage_delay: "0s".to_string(),
            usage_interval: "1s".to_string(),
            origin: hour(started),
            catalog_file,
            plan,
            _dir: dir,
        }
    }

    fn command(&self) -> OperatorCommand {
        let url = self.world.url();
        OperatorCommand::new(env!("CARGO_BIN_EXE_azs-csp-operator")).args([
            "--catalog-file",
            self.catalog_file.to_str().expect("utf-8"),
            "--usage-credential",
            "client-secret",
            "--usage-tenant-id",
            TENANT,
            "--usage-client-id",
            CLIENT,
            "--usage-client-secret-file",
            self.world.secret_file.to_str().expect("utf-8"),
            "--usage-authority-host",
            &url,
            "--usage-ca-file",
            self.world.ca_file.to_str().expect("utf-8"),
            "--usage-sink",
            &format!("{url}/events"),
            "--usage-interval",
            &self.usage_interval,
            "--usage-delay",
            &self.usage_delay,
            "--usage-timeout",
            "2s",
            "--watch-namespace",
            &self.ns.name,
        ])
    }

    fn start_operator(&mut self) {
        self.operator = Some(Operator::spawn(self.command()).expect("operator"));
    }

    fn metric(&self, series: &str) -> f64 {
        let operator = self.operator.as_ref().expect("operator runs");
        let (_, text) = http_get(operator.metrics_addr(), "/metrics").expect("metrics");
        metrics::sample(&text, series).unwrap_or(0.0)
    }

    /// Waits until the operator has counted at least `windows` windows done: it counts a group
    /// after its status write returns, so by then every status write of it is counted too.
    async fn wait_windows_done(&self, windows: f64) -> f64 {
        let operator = self.operator.as_ref().expect("operator runs");
        metrics::wait_for_sample(
            operator.metrics_addr(),
            r#"azs_csp_usage_windows_total{result="done"}"#,
            "the windows of the plan counted done",
            |done| done >= windows,
        )
        .await
    }

    async fn create(&self) {
        self.create_from(self.origin - TimeDelta::hours(self.plan.windows))
            .await;
    }

    /// Creates the Registration (usage from `start`) and its customers, two of them attached.
    async fn create_from(&self, start: DateTime<Utc>) {
        self.create_objects(Some(self.usage_source(start))).await;
    }

    /// `spec.usageSource`: the emulator's stamp, read from `start`.
    fn usage_source(&self, start: DateTime<Utc>) -> serde_json::Value {
        json!({
            "endpoint": self.world.url(),
            "providerSubscriptionId": PROVIDER,
            "startTime": start.to_rfc3339(),
        })
    }

    /// [`Self::create_from`], the Registration with `usage_source` or none.
    async fn create_objects(&self, usage_source: Option<serde_json::Value>) {
        let mut spec = json!({
            "subscriptionId": REG_SUB,
            "resourceGroup": "azurestack",
            "cloudId": CLOUD,
            "billingModel": "PayAsYouUse",
        });
        if let Some(source) = usage_source {
            spec["usageSource"] = source;
        }
        let registration: Registration = serde_json::from_value(json!({
            "apiVersion": "csp.azurestack.io/v1alpha1",
            "kind": "Registration",
            "metadata": {"name": "stack"},
            "spec": spec,
        }))
        .expect("registration");
        self.ns
            .api::<Registration>()
            .create(&PostParams::default(), &registration)
            .await
            .expect("create registration");
        for (name, subscription) in [
            ("from-start", C1),
            ("mid-period", C2),
            ("other-partner", C4),
        ] {
            let customer: CustomerSubscription = serde_json::from_value(json!({
                "apiVersion": "csp.azurestack.io/v1alpha1",
                "kind": "CustomerSubscription",
                "metadata": {"name": name},
                "spec": {"registrationRef": {"name": "stack"}, "subscriptionId": subscription}
            }))
            .expect("customer");
            self.ns
                .api::<CustomerSubscription>()
                .create(&PostParams::default(), &customer)
                .await
                .expect("create customer");
        }
        // Attached in the past, as an operator that ran then would have written it: the decision
        // controller keeps the transition time while Ready stays True.
        for (name, tenant, since) in [
            (
                "from-start",
                T[0],
                self.origin - self.plan.from_start_attached,
            ),
            (
                "mid-period",
                T[1],
                self.origin - self.plan.mid_period_attached,
            ),
        ] {
            let body = json!({
                "apiVersion": "csp.azurestack.io/v1alpha1",
                "kind": "CustomerSubscription",
                "status": {
                    "tenantId": tenant,
                    "conditions": [{
                        "type": "Ready", "status": "True", "reason": "Attached",
                        "message": "Attached before this test's operator started.",
                        "lastTransitionTime": since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    }],
                },
            });
            self.ns
                .api::<CustomerSubscription>()
                .patch_status(
                    name,
                    &PatchParams::apply(CUSTOMER_SUBSCRIPTION_MANAGER).force(),
                    &Patch::Apply(body),
                )
                .await
                .expect("seed the attach time");
        }
    }

    /// Waits until every window up to the start hour is ingested.
    async fn wait_caught_up(&self) -> Registration {
        self.wait_through(self.origin).await
    }

    async fn wait_through(&self, origin: DateTime<Utc>) -> Registration {
        wait_for(
            &self.ns.api::<Registration>(),
            "stack",
            "usage ingested through the hour",
            move |r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.usage.as_ref())
                    .and_then(|u| u.ingested_through.as_deref())
                    .and_then(|t| t.parse::<DateTime<Utc>>().ok())
                    .is_some_and(|t| t >= origin)
            },
        )
        .await
    }

    /// The usage totalled in a customer's status.
    async fn customer_usage(&self, name: &str) -> UsageTotals {
        self.customer(name)
            .await
            .status
            .and_then(|st| st.usage)
            .unwrap_or_else(|| panic!("{name} has status.usage"))
    }

    async fn customer(&self, name: &str) -> CustomerSubscription {
        self.ns
            .api::<CustomerSubscription>()
            .get(name)
            .await
            .expect("customer")
    }
}

fn usage_condition(r: &Registration) -> Option<(String, String)> {
    r.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Usage")
            .map(|c| (c.status.as_str().to_string(), c.reason.clone()))
    })
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str_exact(text).expect("decimal")
}

/// Expected Base VM Size Hours per billed subscription, computed from the stamp alone.
fn expected_vcore_hours() -> BTreeMap<&'static str, Decimal> {
    BTreeMap::from([
        // vm0: 2 vcores × 5 hours, all after its attach time.
        (C1, Decimal::from(10)),
        // vm1: 4 vcores × the 2 hours starting after -3h30m.
        (C2, Decimal::from(8)),
        // vm1's first 3 hours (12), vm2 (5: no CustomerSubscription), vm3 (10: not Attached),
        // the fleet (600).
        (REG_SUB, Decimal::from(12 + 5 + 10 + FLEET as i64)),
    ])
}

fn meter(usage: &UsageTotals, id: &str) -> Decimal {
    usage
        .meters
        .iter()
        .find(|m| m.meter_id.eq_ignore_ascii_case(id))
        .map_or(Decimal::ZERO, |m| dec(&m.quantity))
}

#[tokio::test]
async fn usage_is_billed_where_azure_bills_it_and_totalled_exactly() {
    let mut s = Scenario::start("usage-attr").await;
    s.create().await;
    s.start_operator();
    let registration = s.wait_caught_up().await;
    let expected = expected_vcore_hours();

    let from_start = s.customer("from-start").await;
    let usage = from_start
        .status
        .as_ref()
        .and_then(|st| st.usage.clone())
        .expect("usage of from-start");
    assert_eq!(dec(&usage.vcore_hours), expected[C1]);
    assert_eq!(
        meter(&usage, WINDOWS_VM),
        Decimal::ZERO,
        "a Linux VM has no licence meter"
    );
    let usage = s.customer_usage("mid-period").await;
    assert_eq!(dec(&usage.vcore_hours), expected[C2]);
    assert_eq!(
        meter(&usage, WINDOWS_VM),
        expected[C2],
        "Windows cores are listed again, not added"
    );
    let other = s.customer("other-partner").await;
    assert!(
        other
            .status
            .as_ref()
            .and_then(|st| st.usage.as_ref())
            .is_none(),
        "not Attached: nothing billed to it"
    );
    // The decision controller's applies leave status.usage alone, and the usage controller's
    // leave the decision's conditions alone.
    assert!(
        other.status.as_ref().is_some_and(|st| st
            .conditions
            .iter()
            .any(|c| c.reason == "BadCustomerSubscriptionId"))
            || other.status.is_none()
    );
    assert!(from_start.status.as_ref().is_some_and(|st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "Attached")
    }));

    let own = registration_share(&registration);
    assert_eq!(dec(&own.vcore_hours), expected[REG_SUB]);
    assert_eq!(
        usage_condition(&registration),
        Some(("True".to_string(), "Current".to_string()))
    );
    // The decision controller's Ready and the usage controller's Usage live side by side (the
    // Registration may be decided after its usage caught up: decisions wait for both caches).
    wait_for(
        &s.ns.api::<Registration>(),
        "stack",
        "Ready next to Usage",
        |r: &Registration| {
            r.status.as_ref().is_some_and(|st| {
                st.conditions.iter().any(|c| c.type_ == "Ready")
                    && st.conditions.iter().any(|c| c.type_ == "Usage")
            })
        },
    )
    .await;

    // The sink's de-duplicated totals are the same numbers.
    let totals = s.world.emulator.sink.totals();
    for (subject, want) in &expected {
        assert_eq!(
            sink_quantity(&totals, subject, BASE_VM),
            *want,
            "sink total of {subject}"
        );
    }
    // Several pages were read for the fleet's window.
    let pages = s
        .world
        .upstream
        .exchanges()
        .iter()
        .filter(|e| e.path.contains("subscriberUsageAggregates"))
        .count();
    assert!(
        pages > 8,
        "one request per window and more for the fleet's: {pages}"
    );

    // Idle once caught up: no usage status write until the next window is due (unless the
    // wall clock reaches the next hour meanwhile, which makes one due).
    s.wait_windows_done(s.plan.windows as f64).await;
    let writes = s.metric(r#"azs_csp_status_writes_total{controller="usage"}"#);
    let hour_before = hour(Utc::now());
    tokio::time::sleep(Duration::from_secs(4)).await;
    if hour(Utc::now()) == hour_before && hour_before == s.origin {
        assert_eq!(
            s.metric(r#"azs_csp_status_writes_total{controller="usage"}"#),
            writes
        );
    }
}

#[tokio::test]
async fn a_failing_sink_is_retried_and_nothing_is_skipped_or_doubled() {
    let mut s = Scenario::start("usage-sink").await;
    s.world.upstream.set_mode_for("/events", Mode::Status(502));
    s.create().await;
    s.start_operator();
    wait_for(
        &s.ns.api::<Registration>(),
        "stack",
        "Usage SinkFailed",
        |r| usage_condition(r) == Some(("False".to_string(), "SinkFailed".to_string())),
    )
    .await;
    s.world.upstream.set_mode(Mode::Healthy);
    let registration = s.wait_caught_up().await;
    assert_eq!(
        usage_condition(&registration),
        Some(("True".to_string(), "Current".to_string()))
    );
    let own = registration_share(&registration);
    assert_eq!(dec(&own.vcore_hours), expected_vcore_hours()[REG_SUB]);
    let usage = s.customer_usage("from-start").await;
    assert_eq!(dec(&usage.vcore_hours), expected_vcore_hours()[C1]);
}

#[tokio::test]
async fn a_failing_source_says_so_and_recovers() {
    let mut s = Scenario::start("usage-source").await;
    s.world
        .upstream
        .set_mode_for("subscriberUsageAggregates", Mode::Status(503));
    s.create().await;
    s.start_operator();
    wait_for(
        &s.ns.api::<Registration>(),
        "stack",
        "Usage SourceFailed",
        |r| usage_condition(r) == Some(("False".to_string(), "SourceFailed".to_string())),
    )
    .await;
    s.world.upstream.set_mode(Mode::Healthy);
    let registration = s.wait_caught_up().await;
    assert_eq!(
        usage_condition(&registration),
        Some(("True".to_string(), "Current".to_string()))
    );
}

/// Base VM Size Hours per billed subscription and UTC month, from the stamp alone: each VM's
/// hours, the customer's once its attach time is not after the hour's start.
fn expected_by_month(
    plan: &Plan,
    origin: DateTime<Utc>,
) -> BTreeMap<(&'static str, String), Decimal> {
    let mut expected = BTreeMap::new();
    let vms = [
        (C1, Some(plan.from_start_attached), 2),
        (C2, Some(plan.mid_period_attached), 4),
        (REG_SUB, None, 1),
        (REG_SUB, None, 2),
    ];
    for h in 2..=plan.hours + 1 {
        let start = origin - TimeDelta::hours(h);
        let month = start.format("%Y-%m").to_string();
        for (customer, attached, vcores) in vms {
            let billed = match attached {
                Some(since) if origin - since <= start => customer,
                _ => REG_SUB,
            };
            *expected
                .entry((billed, month.clone()))
                .or_insert(Decimal::ZERO) += Decimal::from(vcores);
        }
    }
    expected
}

fn month_totals(usage: &UsageTotals) -> BTreeMap<String, Decimal> {
    let mut months = BTreeMap::from([(usage.period.clone(), dec(&usage.vcore_hours))]);
    if let Some(previous) = &usage.previous {
        months.insert(previous.period.clone(), dec(&previous.vcore_hours));
    }
    months.retain(|_, v| !v.is_zero());
    months
}

/// Two days of usage, 48 windows, mid-period attached 20h30m before the start hour.
const TWO_DAYS: Plan = Plan {
    hours: 47,
    fleet: 0,
    windows: 48,
    from_start_attached: TimeDelta::hours(50),
    mid_period_attached: TimeDelta::minutes(20 * 60 + 30),
};

/// `subject`'s Base VM Size Hours per UTC month, from the stamp alone.
fn want_by_month(plan: &Plan, origin: DateTime<Utc>, subject: &str) -> BTreeMap<String, Decimal> {
    expected_by_month(plan, origin)
        .into_iter()
        .filter(|((b, _), _)| *b == subject)
        .map(|((_, m), v)| (m, v))
        .collect()
}

/// Every customer's and the Registration's own totals per month equal the stamp's.
async fn assert_status_totals_by_month(s: &Scenario, registration: Registration) {
    let want = |subject: &str| want_by_month(&s.plan, s.origin, subject);
    for (name, subject) in [("from-start", C1), ("mid-period", C2)] {
        let usage = s.customer_usage(name).await;
        assert_eq!(month_totals(&usage), want(subject), "{name}");
    }
    let own = registration_share(&registration);
    assert_eq!(month_totals(&own), want(REG_SUB), "registration share");
}

/// The 48 windows are due at once, so they are caught up in groups (`usage::catch_up`): with
/// the slow pages here a group is about 5 to 7 windows (at least 1 s), and each kill lands
/// inside a group after the one before was written; the group is then done again from the old
/// checkpoint. The pure property test of `catch_up` covers a crash between customer writes.
#[tokio::test]
async fn killed_at_random_moments_48_windows_are_totalled_exactly_once() {
    let mut s = Scenario::with_plan("usage-kill", TWO_DAYS).await;
    // Slow pages spread the 48 windows over seconds, so that the kills land inside them (three
    // windows are read at once: about 7.5 windows a second).
    s.world.upstream.set_mode_for(
        "subscriberUsageAggregates",
        Mode::Delay(Duration::from_millis(400)),
    );
    s.create().await;
    let api = s.ns.api::<Registration>();
    let through = |r: &Registration| {
        r.status
            .as_ref()
            .and_then(|st| st.usage.as_ref())
            .and_then(|u| u.ingested_through.clone())
    };
    let mut kills = 0;
    let mut seen = None;
    while kills < 5 {
        s.start_operator();
        // Once this operator has moved the checkpoint (it is ingesting), a random moment later.
        let before = seen.clone();
        let moved = wait_for(&api, "stack", "the checkpoint moved", move |r| {
            through(r) != before
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..700))).await;
        if let Some(mut operator) = s.operator.take() {
            operator.kill();
        }
        seen = through(&api.get("stack").await.expect("registration")).or(through(&moved));
        let caught_up = seen
            .as_deref()
            .and_then(|t| t.parse::<DateTime<Utc>>().ok())
            .is_some_and(|t| t >= s.origin);
        assert!(
            !caught_up,
            "ingestion finished before kill {}: slow the pages down",
            kills + 1
        );
        kills += 1;
    }
    s.start_operator();
    let registration = s.wait_caught_up().await;
    assert_status_totals_by_month(&s, registration).await;
    let want = |subject: &str| want_by_month(&s.plan, s.origin, subject);
    let totals = s.world.emulator.sink.totals();
    for subject in [C1, C2, REG_SUB] {
        let got: Decimal = totals
            .totals
            .iter()
            .filter(|t| {
                t.subject.eq_ignore_ascii_case(subject) && t.meter_id.eq_ignore_ascii_case(BASE_VM)
            })
            .map(|t| dec(&t.quantity))
            .sum();
        assert_eq!(
            got,
            want(subject).values().copied().sum::<Decimal>(),
            "sink total of {subject}"
        );
    }
    eprintln!(
        "after {kills} kills: {} events received, {} duplicates",
        totals.received, totals.duplicates
    );
}

fn secs(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The sink's de-duplicated quantity of one meter billed to `subject`.
/// The usage billed to the registration subscription, from a Registration's status.
fn registration_share(registration: &Registration) -> UsageTotals {
    registration
        .status
        .as_ref()
        .and_then(|st| st.usage.as_ref())
        .and_then(|u| u.registration_subscription.clone())
        .expect("status.usage.registrationSubscription")
}

fn sink_quantity(
    totals: &azs_csp_operator::emulator::sink::Totals,
    subject: &str,
    meter_id: &str,
) -> Decimal {
    totals
        .totals
        .iter()
        .filter(|t| {
            t.subject.eq_ignore_ascii_case(subject) && t.meter_id.eq_ignore_ascii_case(meter_id)
        })
        .map(|t| dec(&t.quantity))
        .sum()
}

/// A meter id that is a GUID but in no meter table.
const UNKNOWN_METER: &str = "0badc0de-0000-4000-8000-00000000abcd";

/// A well-formed record of vm0's subscription for the hour from `start`, as the source writes
/// it; `spoil` changes its properties.
fn extra_record(
    name: &str,
    start: DateTime<Utc>,
    spoil: impl FnOnce(&mut serde_json::Value),
) -> serde_json::Value {
    let end = start + TimeDelta::hours(1);
    let instance = json!({"Microsoft.Resources": {
        "resourceUri": format!("/subscriptions/{}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/{name}", L[0]),
        "location": "local",
    }});
    let mut record = json!({
        "id": format!("/subscriptions/{PROVIDER}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates/{name}"),
        "name": name,
        "type": "Microsoft.Commerce.Admin/UsageAggregate",
        // Set, because some of these records have no usable times of their own.
        "reportedTime": secs(end),
        "properties": {
            "subscriptionId": L[0],
            "usageStartTime": secs(start),
            "usageEndTime": secs(end),
            "meterId": BASE_VM,
            "quantity": 2,
            "instanceData": instance.to_string(),
        },
    });
    spoil(&mut record["properties"]);
    record
}

/// Makes a good record bad.
type Spoil = fn(&mut serde_json::Value);

#[tokio::test]
async fn bad_records_are_counted_per_cause_and_never_forwarded() {
    // In the stamp's order: the first one is the one the Usage condition names.
    let bad: [(&str, &str, Spoil); 7] = [
        ("invalid_meter_id", "bad-meter", |p| {
            p["meterId"] = json!("not-a-guid")
        }),
        ("negative_quantity", "negative", |p| {
            p["quantity"] = json!(-2)
        }),
        ("nan_quantity", "nan", |p| p["quantity"] = json!("NaN")),
        ("infinite_quantity", "infinite", |p| {
            p["quantity"] = json!("Infinity")
        }),
        ("end_not_after_start", "no-duration", |p| {
            p["usageEndTime"] = p["usageStartTime"].clone()
        }),
        ("unknown_subscription", "stranger", |p| {
            p["subscriptionId"] = json!("5a100000-0000-4000-8000-0000000000ff")
        }),
        ("malformed_instance_data", "no-instance", |p| {
            p["instanceData"] = json!("{not json")
        }),
    ];
    let mut s = Scenario::with_stamp("usage-bad", SHORT, |plan, origin| {
        let start = origin - TimeDelta::hours(4);
        let mut extras: Vec<_> = bad
            .iter()
            .map(|(_, name, spoil)| extra_record(name, start, spoil))
            .collect();
        extras.push(extra_record("unknown-meter", start, |p| {
            p["meterId"] = json!(UNKNOWN_METER);
            p["quantity"] = json!(3);
        }));
        stamp_yaml(plan, &extras)
    })
    .await;
    s.create().await;
    s.start_operator();
    let registration = s.wait_caught_up().await;

    let rejected = registration
        .status
        .as_ref()
        .and_then(|st| st.usage.as_ref())
        .and_then(|u| u.rejected_records.clone())
        .expect("rejectedRecords");
    let want: BTreeMap<String, i64> = bad
        .iter()
        .map(|(cause, _, _)| (cause.to_string(), 1))
        .collect();
    assert_eq!(rejected.by_cause, want);
    assert_eq!(rejected.total, bad.len() as i64);
    let message = registration
        .status
        .as_ref()
        .and_then(|st| st.conditions.iter().find(|c| c.type_ == "Usage"))
        .map(|c| c.message.clone())
        .expect("Usage condition");
    assert!(
        message.contains("the first: invalid_meter_id") && message.contains("bad-meter"),
        "{message}"
    );
    for (cause, _, _) in &bad[1..] {
        assert!(!message.contains(cause), "{message}");
    }

    // Not forwarded: the sink has exactly the stamp's VM usage, plus the unknown meter.
    let totals = s.world.emulator.sink.totals();
    for (subject, want) in expected_vcore_hours() {
        assert_eq!(
            sink_quantity(&totals, subject, BASE_VM),
            want,
            "sink total of {subject}"
        );
    }
    assert_eq!(
        sink_quantity(&totals, C1, UNKNOWN_METER),
        Decimal::from(3),
        "an unknown meter is forwarded, with its local id"
    );
    assert!(
        totals.totals.iter().all(|t| t.meter_id != "not-a-guid"),
        "{:?}",
        totals.totals
    );
    assert_eq!(
        s.metric(r#"azs_csp_usage_records_total{outcome="unmapped_meter"}"#),
        1.0
    );
    for (cause, _, _) in &bad {
        assert_eq!(
            s.metric(&format!(
                r#"azs_csp_usage_records_total{{outcome="{cause}"}}"#
            )),
            1.0,
            "{cause}"
        );
    }
    let usage = s.customer_usage("from-start").await;
    assert_eq!(dec(&usage.vcore_hours), expected_vcore_hours()[C1]);
}

/// The stamp of the month-end test: four VMs run from 20:00 on 31 October to 04:00 on
/// 1 November 2026, four hours in each month.
fn month_end_stamp() -> String {
    let mut text =
        format!("providerSubscriptionId: {PROVIDER}\nreportingDelay: 1h\nsubscriptions:\n");
    for (l, t) in L.iter().zip(T) {
        text.push_str(&format!(
            "- {{subscriptionId: {l}, tenantId: {t}, owner: o@x.example, displayName: {l}}}\n"
        ));
    }
    text.push_str("virtualMachines:\n");
    for (i, (l, vcores, os)) in [
        (L[0], 2, "Linux"),
        (L[1], 4, "Windows"),
        (L[2], 1, "Linux"),
        (L[3], 2, "Linux"),
    ]
    .iter()
    .enumerate()
    {
        text.push_str(&format!(
            "- {{name: vm{i}, subscriptionId: {l}, size: S{vcores}, vcores: {vcores}, os: {os}, running: [{{from: \"2026-10-31T20:00:00Z\", to: \"2026-11-01T04:00:00Z\"}}]}}\n"
        ));
    }
    text.push_str("extraRecords: []\n");
    text
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("time")
}

/// (period, vcoreHours) of the current month and of `previous`.
fn periods(usage: &UsageTotals) -> Vec<(String, Decimal)> {
    let mut periods = vec![(usage.period.clone(), dec(&usage.vcore_hours))];
    if let Some(previous) = &usage.previous {
        periods.push((previous.period.clone(), dec(&previous.vcore_hours)));
    }
    periods
}

/// The twelve windows from 18:00 on 31 October are due at once: they are caught up as one group
/// (or a few), so the month rolls over inside a group.
#[tokio::test]
async fn a_month_end_splits_into_previous_and_current_exactly() {
    let plan = Plan {
        hours: 0,
        fleet: 0,
        windows: 0,
        from_start_attached: TimeDelta::zero(),
        mid_period_attached: TimeDelta::zero(),
    };
    let mut s = Scenario::with_stamp("usage-month", plan, |_, _| month_end_stamp()).await;
    // from-start is attached long before; mid-period at 22:30 on 31 October, so its 23:00
    // hour is the only October hour billed to it.
    s.plan.from_start_attached = s.origin - at("2026-10-01T00:00:00Z");
    s.plan.mid_period_attached = s.origin - at("2026-10-31T22:30:00Z");
    // Ingestion stops at 06:00 on 1 November: a later window is due only an hour from now, so
    // the totals are looked at before a later month takes over.
    let through = at("2026-11-01T06:00:00Z");
    s.usage_delay = format!("{}s", (Utc::now() - through).num_seconds());
    s.create_from(at("2026-10-31T18:00:00Z")).await;
    s.start_operator();
    let registration = s.wait_through(through).await;
    assert_eq!(
        registration
            .status
            .as_ref()
            .and_then(|st| st.usage.as_ref())
            .and_then(|u| u.ingested_through.as_deref())
            .map(at),
        Some(through)
    );

    let (oct, nov) = ("2026-10".to_string(), "2026-11".to_string());
    let d = Decimal::from;
    for (name, want) in [
        // vm0: 2 vcores, 4 hours in each month.
        ("from-start", [(nov.clone(), d(8)), (oct.clone(), d(8))]),
        // vm1: 4 vcores; of October only 23:00.
        ("mid-period", [(nov.clone(), d(16)), (oct.clone(), d(4))]),
    ] {
        let usage = s.customer_usage(name).await;
        assert_eq!(periods(&usage), want, "{name}");
    }
    let own = registration_share(&registration);
    // vm1 20:00-23:00 (12), vm2 (1 vcore) and vm3 (2 vcores, another partner's customer).
    assert_eq!(
        periods(&own),
        [(nov, d(4 + 8)), (oct, d(12 + 4 + 8))],
        "registration share"
    );
    let totals = s.world.emulator.sink.totals();
    for (subject, want) in [(C1, 16), (C2, 20), (REG_SUB, 36)] {
        assert_eq!(
            sink_quantity(&totals, subject, BASE_VM),
            d(want),
            "{subject}"
        );
    }
}

#[tokio::test]
async fn a_sink_that_times_out_is_retried_and_nothing_is_doubled() {
    let mut s = Scenario::start("usage-sink-slow").await;
    // Slower than --usage-timeout (2s): every POST times out.
    s.world
        .upstream
        .set_mode_for("/events", Mode::Delay(Duration::from_secs(6)));
    s.create().await;
    s.start_operator();
    wait_for(
        &s.ns.api::<Registration>(),
        "stack",
        "Usage SinkFailed",
        |r| usage_condition(r) == Some(("False".to_string(), "SinkFailed".to_string())),
    )
    .await;
    s.world.upstream.set_mode(Mode::Healthy);
    let registration = s.wait_caught_up().await;
    assert_eq!(
        usage_condition(&registration),
        Some(("True".to_string(), "Current".to_string()))
    );
    let expected = expected_vcore_hours();
    let own = registration_share(&registration);
    assert_eq!(dec(&own.vcore_hours), expected[REG_SUB]);
    for (name, subject) in [("from-start", C1), ("mid-period", C2)] {
        let usage = s.customer_usage(name).await;
        assert_eq!(dec(&usage.vcore_hours), expected[subject], "{name}");
    }
    let totals = s.world.emulator.sink.totals();
    for (subject, want) in &expected {
        assert_eq!(sink_quantity(&totals, subject, BASE_VM), *want, "{subject}");
    }
    eprintln!(
        "after the timeouts: {} events received, {} duplicates",
        totals.received, totals.duplicates
    );
}

/// Catching up 48 windows writes each billed party once per group, not once per window: a group
/// lasts at least 1 s and a window here takes well under 250 ms, so a group holds at least four
/// windows. One window at a time wrote about 115 statuses here (from-start 47, mid-period 20,
/// the Registration 48).
#[tokio::test]
async fn catching_up_writes_each_customer_once_per_group_not_once_per_window() {
    let mut s = Scenario::with_plan("usage-group", TWO_DAYS).await;
    s.create().await;
    s.start_operator();
    let registration = s.wait_caught_up().await;
    let windows = s.wait_windows_done(48.0).await;
    let writes = s.metric(r#"azs_csp_status_writes_total{controller="usage"}"#);
    // from-start, mid-period and the Registration's own share; the other partner's customer is
    // not Attached and never written.
    let parties = 3.0;
    let bound = parties * (windows / 4.0).ceil();
    assert!(
        writes <= bound,
        "{writes} usage status writes for {windows} windows: more than {bound}, once per group of 4"
    );
    eprintln!("{windows} windows caught up with {writes} usage status writes");

    // And the totals are exact.
    assert_status_totals_by_month(&s, registration).await;
}

#[tokio::test]
async fn a_usage_source_set_is_read_at_once_not_an_interval_later() {
    let mut s = Scenario::with_plan("usage-prompt", TWO_DAYS).await;
    s.usage_interval = "1h".to_string();
    s.create_objects(None).await;
    s.start_operator();
    // The first pass finds no usageSource; the next is an hour away.
    let operator = s.operator.as_ref().expect("operator runs");
    tokio::time::timeout(Duration::from_secs(60), async {
        while !operator.logs().contains("usage pass done") {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the usage controller's first pass within 60 s");
    let start = s.origin - TimeDelta::hours(s.plan.windows);
    let patch = json!({"spec": {"usageSource": s.usage_source(start)}});
    s.ns.api::<Registration>()
        .patch("stack", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("set spec.usageSource");
    let registration = s.wait_caught_up().await;
    assert_status_totals_by_month(&s, registration).await;
}
