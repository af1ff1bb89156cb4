//! `make bench MODE=usage` (issue 11): a month of hourly usage of a thousand tenants, four
//! meters each (a Windows VM: Base VM Size Hours, VM size hours, Windows VM Size Hours; a
//! block blob account: BlockBlobCapacity), about 2.9 M records, served by the emulator
//! (src/emulator/: the stamp's `subscriberUsageAggregates` and the CloudEvents sink) in the
//! bench process over HTTPS behind the test kit's layer, which records every exchange.
//!
//! Phases:
//! 1. **stamp**: the stamp is generated and parsed (timed: what the emulator costs at start);
//! 2. **limit**: a minimal client fetches every hourly window of the month page by page
//!    (`continuationToken`) and parses each page into the operator's own page type
//!    (`usage::record::PageRef`), nothing else: the floor the operator's ingestion rate is
//!    compared with, measured in the same run against the same emulator;
//! 3. **operator**: the operator ingests the same month into the sink (needs the usage
//!    pipeline of issue 11: when the operator binary has no `--usage-sink`, the phase is
//!    skipped and the JSON says why).
//!
//! Knobs: `AZS_BENCH_USAGE_TENANTS` (1000), `AZS_BENCH_USAGE_HOURS` (720).

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use azs_csp_operator::{
    api::{CustomerSubscription, Registration},
    emulator::{Emulator, stamp::Stamp},
    usage::record::PageRef,
};
use azs_csp_testkit::{
    cluster::{create_all, create_namespace, ensure_crds, local_client},
    upstream::Upstream,
};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use futures::{StreamExt, stream};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use crate::{
    OPERATOR_CONCURRENCY, RESOURCE_GROUP, Result, STATUS_MANAGER,
    arm::{CLIENT, SECRET, TENANT, serve},
    measure::{
        apiserver_requests, clock_ticks, cpu_seconds, delta, machine, memory_mib, requests_json,
        round2, sample_rss, writes,
    },
    operator,
    plan::guid,
    run::{Resources, apply_status, cleanup, lock_resources, secs},
    settings::{Settings, env_or},
};

/// The stamp's provider subscription.
pub const PROVIDER: &str = "a5000011-0000-4000-8000-000000000001";
/// Meters per tenant in the generated stamp.
pub const METERS_PER_TENANT: usize = 4;
const COMMERCE_API_VERSION: &str = "2015-06-01-preview";
const BLOCK_BLOB_CAPACITY: &str = "09F8879E-87E9-4305-A572-4B7BE209F857";

/// The Registration's Azure subscription, its CSP partner and the stamp's CloudID.
const REG_SUB: &str = "a5000011-0000-4000-8000-000000000002";
const REG_TENANT: &str = "a5000011-0000-4000-8000-000000000003";
const CLOUD_ID: &str = "a5000011-0000-4000-8000-000000000004";
const REGISTRATION: &str = "usage-stack";
const PARTNER: &str = "4412345";

/// Why the operator phase did not run, when it did not.
pub const OPERATOR_SKIPPED: &str = "skipped: the operator binary is missing or has no \
    --usage-sink (the usage pipeline of issue 11 is not in it yet); the limit alone was measured";

/// The month: tenants, hours, and the stamp's first usage hour.
pub struct Month {
    pub tenants: usize,
    pub hours: usize,
}

impl Month {
    pub fn from_env() -> Result<Self> {
        let tenants: usize = env_or("AZS_BENCH_USAGE_TENANTS", 1000)?;
        let hours: usize = env_or("AZS_BENCH_USAGE_HOURS", 720)?;
        if tenants == 0 || hours == 0 {
            return Err(
                "AZS_BENCH_USAGE_TENANTS and AZS_BENCH_USAGE_HOURS must be positive".into(),
            );
        }
        Ok(Self { tenants, hours })
    }

    pub fn records(&self) -> usize {
        self.tenants * METERS_PER_TENANT * self.hours
    }

    /// Local subscription `i` and its directory tenant.
    pub fn local_subscription(i: usize) -> String {
        guid(0x11, i as u64)
    }

    pub fn tenant(i: usize) -> String {
        guid(0x12, i as u64)
    }

    /// Customer `i`'s Azure subscription (what its usage is billed to).
    pub fn customer_subscription(i: usize) -> String {
        guid(0x13, i as u64)
    }

    pub fn vcores(i: usize) -> u32 {
        1 + (i % 8) as u32
    }

    pub fn capacity_gb(i: usize) -> Decimal {
        Decimal::new((i % 100) as i64 * 10 + 5, 1)
    }

    /// What the sink must hold for customer `i`, meter by meter: the whole month, from the
    /// stamp's description rather than from the emulator's generator.
    pub fn expected(&self, i: usize) -> Vec<(&'static str, Decimal)> {
        use azs_csp_operator::usage::meter::{
            BASE_VM_SIZE_HOURS, VM_SIZE_HOURS, WINDOWS_VM_SIZE_HOURS,
        };
        let hours = Decimal::from(self.hours as u64);
        let vcores = Decimal::from(Self::vcores(i));
        vec![
            (BASE_VM_SIZE_HOURS, vcores * hours),
            (VM_SIZE_HOURS, hours),
            (WINDOWS_VM_SIZE_HOURS, vcores * hours),
            (BLOCK_BLOB_CAPACITY, Self::capacity_gb(i) * hours),
        ]
    }

    /// The catalog the operator decides the CustomerSubscriptions from: every customer is a
    /// CSP subscription of the Registration's partner, in its tenant.
    pub fn catalog(&self) -> String {
        let mut text = format!(
            "subscriptions:\n- {{id: {REG_SUB}, tenantId: {REG_TENANT}, state: Enabled, offer: APSS, billingPartnerId: \"{PARTNER}\"}}\n"
        );
        for i in 0..self.tenants {
            text.push_str(&format!(
                "- {{id: {}, tenantId: {}, state: Enabled, offer: CSP, billingPartnerId: \"{PARTNER}\"}}\n",
                Self::customer_subscription(i),
                Self::tenant(i)
            ));
        }
        text.push_str(&format!(
            "multitenancyApprovals:\n- {{subscriptionId: {REG_SUB}, resourceGroup: {RESOURCE_GROUP}, registrationName: {REGISTRATION}}}\n"
        ));
        text
    }

    /// The stamp file: every resource runs the whole month up to the start hour; reported
    /// time = usage time (no delay), so hour `h` of the month is exactly window `h`.
    pub fn stamp_yaml(&self) -> String {
        let mut text =
            format!("providerSubscriptionId: {PROVIDER}\nreportingDelay: 0h\nsubscriptions:\n");
        for i in 0..self.tenants {
            text.push_str(&format!(
                "- {{subscriptionId: {}, tenantId: {}, displayName: tenant-{i}}}\n",
                Self::local_subscription(i),
                Self::tenant(i)
            ));
        }
        text.push_str("virtualMachines:\n");
        for i in 0..self.tenants {
            text.push_str(&format!(
                "- {{name: vm-{i}, subscriptionId: {}, size: Standard_D2_v2, vcores: {}, os: Windows, running: [{{from: -{}h, to: now}}]}}\n",
                Self::local_subscription(i),
                Self::vcores(i),
                self.hours
            ));
        }
        text.push_str("storage:\n");
        for i in 0..self.tenants {
            text.push_str(&format!(
                "- {{account: acct{i}, subscriptionId: {}, kind: BlockBlob, capacityGB: {}, from: -{}h, to: now}}\n",
                Self::local_subscription(i),
                Self::capacity_gb(i),
                self.hours
            ));
        }
        text
    }
}

/// The emulator with the month's stamp, listening on 127.0.0.1 over HTTPS.
pub struct UsageWorld {
    upstream: Upstream,
    pub emulator: Arc<Emulator>,
    pub ca_file: PathBuf,
    pub secret_file: PathBuf,
    /// The start hour: the month's last window ends here.
    pub origin: DateTime<Utc>,
}

impl UsageWorld {
    pub async fn start(stamp: Stamp, dir: &Path) -> Result<Self> {
        let origin = stamp.origin;
        let served = serve(
            &format!(
                "servicePrincipals:\n- {{tenantId: {TENANT}, clientId: {CLIENT}, clientSecret: {SECRET}}}\n"
            ),
            (1, 1.0),
            Some(stamp),
            dir,
        )
        .await?;
        // A stamp's admin endpoint and a metering system keep their connections: without this
        // every page and every batch would begin with a TLS handshake.
        served.upstream.keep_connections();
        Ok(Self {
            upstream: served.upstream,
            emulator: served.emulator,
            ca_file: served.ca_file,
            secret_file: served.secret_file,
            origin,
        })
    }

    pub fn url(&self) -> String {
        self.upstream.url()
    }

    /// The connections the emulator accepted so far.
    pub fn connections(&self) -> u64 {
        self.upstream.connections()
    }

    /// The usage requests the emulator answered so far.
    pub fn usage_requests(&self) -> usize {
        self.upstream
            .exchanges()
            .iter()
            .filter(|e| e.path.contains("subscriberUsageAggregates"))
            .count()
    }
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What the minimal client did.
struct Fetched {
    records: usize,
    pages: usize,
    bytes: usize,
    seconds: f64,
}

/// The limit: every window of the month, one after another as the operator takes them, each
/// page fetched and parsed into the operator's record type and then dropped.
async fn fetch_and_parse(world: &UsageWorld, month: &Month) -> Result<Fetched> {
    let tls = azs_csp_operator::resolver::http_tls::client_config(Some(&world.ca_file))?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(60))
        .build()?;
    let url = world.url();
    let token: Value = client
        .post(format!("{url}/{TENANT}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT),
            ("client_secret", SECRET),
            ("scope", &format!("{url}/.default")),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let bearer = token["access_token"]
        .as_str()
        .ok_or("no access_token in the token answer")?
        .to_owned();
    let first = world.origin - TimeDelta::hours(month.hours as i64);
    let started = Instant::now();
    let (mut records, mut pages, mut bytes) = (0, 0, 0);
    for hour in 0..month.hours {
        let start = first + TimeDelta::hours(hour as i64);
        let mut token: Option<String> = None;
        loop {
            // RFC 3339 times and the tokens need no escaping in a query (':' is allowed there).
            let mut link = format!(
                "{url}/subscriptions/{PROVIDER}/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates?reportedStartTime={}&reportedEndTime={}&aggregationGranularity=Hourly&api-version={COMMERCE_API_VERSION}",
                rfc3339(start),
                rfc3339(start + TimeDelta::hours(1)),
            );
            if let Some(token) = &token {
                link.push_str("&continuationToken=");
                link.push_str(token);
            }
            let body = client
                .get(&link)
                .bearer_auth(&bearer)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            let page: PageRef = serde_json::from_slice(&body)?;
            records += page.value.len();
            pages += 1;
            bytes += body.len();
            match page.continuation_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
    }
    Ok(Fetched {
        records,
        pages,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Whether the operator binary has the usage pipeline's flags (a missing binary has not).
fn operator_has_usage(operator: &Path) -> bool {
    std::process::Command::new(operator)
        .args(["run", "--help"])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("--usage-sink"))
}

/// The operator ingesting the same month: Registration and CustomerSubscriptions created
/// and Attached since before the month (their status written as the operator would, so that
/// every record is a customer's), the operator started and idle, then `spec.usageSource` set;
/// timed until `status.usage.ingestedThrough` reaches the month's end.
async fn operator_phase(
    s: &Settings,
    month: &Month,
    world: &UsageWorld,
    client: &Client,
    resources: &Arc<Mutex<Resources>>,
) -> Result<Value> {
    ensure_crds(
        client,
        azs_csp_operator::crd::definitions(),
        "azs-csp-operator-bench",
    )
    .await?;
    let ns = format!("azs-csp-bench-usage-{}", std::process::id());
    create_namespace(client, &ns, &[("azs-csp-operator.bench", "true")]).await?;
    lock_resources(resources).namespaces.push(ns.clone());
    let catalog_path = s.out_dir.join("usage-catalog.yaml");
    std::fs::write(&catalog_path, month.catalog())?;

    let registrations: Api<Registration> = Api::namespaced(client.clone(), &ns);
    let customers: Api<CustomerSubscription> = Api::namespaced(client.clone(), &ns);
    let registration: Registration = serde_json::from_value(json!({
        "apiVersion": "csp.azurestack.io/v1alpha1",
        "kind": "Registration",
        "metadata": {"name": REGISTRATION},
        "spec": {
            "subscriptionId": REG_SUB,
            "resourceGroup": RESOURCE_GROUP,
            "registrationName": REGISTRATION,
            "cloudId": CLOUD_ID,
            "billingModel": "PayAsYouUse",
        }
    }))?;
    create_all(&registrations, vec![registration], 1).await?;
    let objects = (0..month.tenants)
        .map(|i| {
            serde_json::from_value::<CustomerSubscription>(json!({
                "apiVersion": "csp.azurestack.io/v1alpha1",
                "kind": "CustomerSubscription",
                "metadata": {"name": format!("tenant-{i}")},
                "spec": {
                    "registrationRef": {"name": REGISTRATION},
                    "subscriptionId": Month::customer_subscription(i),
                    "tenantId": Month::tenant(i),
                }
            }))
        })
        .collect::<Result<Vec<_>, _>>()?;
    create_all(&customers, objects, s.create_concurrency).await?;
    // Attached an hour before the month: the attach time is the Ready condition's
    // lastTransitionTime, which the operator keeps while the status holds.
    let first = world.origin - TimeDelta::hours(month.hours as i64);
    let attached_since = rfc3339(first - TimeDelta::hours(1));
    let arm = format!(
        "/subscriptions/{REG_SUB}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.AzureStack/registrations/{REGISTRATION}"
    );
    let params = PatchParams::apply(STATUS_MANAGER).force();
    let mut patched = stream::iter((0..month.tenants).map(|i| {
        let (customers, params) = (&customers, &params);
        let sub = Month::customer_subscription(i);
        let body = json!({
            "apiVersion": "csp.azurestack.io/v1alpha1",
            "kind": "CustomerSubscription",
            "status": {
                "observedGeneration": 1,
                "armResourceId": format!("{arm}/customerSubscriptions/{sub}"),
                "tenantId": Month::tenant(i),
                "billingPartnerId": PARTNER,
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "Attached",
                    "message": format!("Subscription {sub} is attached to registration {arm}; its tenant's usage is billed to it."),
                    "lastTransitionTime": attached_since, "observedGeneration": 1,
                }],
            },
        });
        async move { apply_status(customers, &format!("tenant-{i}"), params, &body).await }
    }))
    .buffer_unordered(OPERATOR_CONCURRENCY);
    while let Some(result) = patched.next().await {
        result?;
    }
    drop(patched);

    let url = world.url();
    let args: Vec<OsString> = [
        "--catalog-file".into(),
        catalog_path.clone().into_os_string(),
        "--usage-sink".into(),
        format!("{url}/events").into(),
        "--usage-ca-file".into(),
        world.ca_file.clone().into_os_string(),
        "--usage-delay".into(),
        "0s".into(),
        "--usage-interval".into(),
        "5s".into(),
        "--usage-credential".into(),
        "client-secret".into(),
        "--usage-tenant-id".into(),
        TENANT.into(),
        "--usage-client-id".into(),
        CLIENT.into(),
        "--usage-client-secret-file".into(),
        world.secret_file.clone().into_os_string(),
        "--usage-authority-host".into(),
        url.clone().into(),
    ]
    .into();
    let operator = operator::start(s, &args, &[], &ns)?;
    let pid = operator.pid();
    lock_resources(resources).operator = Some(operator);
    eprintln!(
        "bench: operator pid {pid} started; waiting until the {} customers are Attached",
        month.tenants
    );

    // Idle first: converged, no usage source yet.
    let ready = |r: &Registration| {
        serde_json::to_value(r).ok().is_some_and(|v| {
            v["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
    };
    let deadline = Instant::now() + s.converge_timeout;
    loop {
        let list = customers.list(&ListParams::default()).await?;
        let attached = list
            .items
            .iter()
            .filter(|c| {
                serde_json::to_value(c).ok().is_some_and(|v| {
                    v["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["reason"] == "Attached")
                    })
                })
            })
            .count();
        let registration_ready = registrations
            .get(REGISTRATION)
            .await
            .is_ok_and(|r| ready(&r));
        if attached == month.tenants && registration_ready {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{attached} of {} customers Attached within the converge timeout",
                month.tenants
            )
            .into());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut idle = Vec::new();
    for _ in 0..5 {
        idle.extend(memory_mib(pid, "VmRSS:"));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let idle_rss = idle.iter().copied().fold(0.0, f64::max);

    // Ingestion: the usage source appears.
    let before = apiserver_requests(client).await?;
    let ticks = clock_ticks();
    let me = std::process::id();
    let load_before = load_average();
    let bench_cpu0 = cpu_seconds(me, ticks);
    let cpu0 = cpu_seconds(pid, ticks);
    let t0 = Instant::now();
    let rss_series: Arc<Mutex<Vec<(f64, f64)>>> = Arc::default();
    let sampler = tokio::spawn(sample_rss(pid, t0, rss_series.clone()));
    registrations
        .patch(
            REGISTRATION,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"usageSource": {
                "endpoint": url,
                "providerSubscriptionId": PROVIDER,
                "startTime": rfc3339(first),
            }}})),
        )
        .await?;
    let end = world.origin;
    let deadline = Instant::now() + s.total_timeout;
    let mut through = None;
    loop {
        let registration = serde_json::to_value(registrations.get(REGISTRATION).await?)?;
        through = registration["status"]["usage"]["ingestedThrough"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .or(through);
        if through.is_some_and(|t| t >= end) {
            break;
        }
        if Instant::now() > deadline {
            return Err(
                format!("ingestedThrough {through:?} has not reached {end} in time").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid, ticks)
        .zip(cpu0)
        .map(|(a, b)| round2(a - b));
    let bench_cpu = cpu_seconds(me, ticks)
        .zip(bench_cpu0)
        .map(|(a, b)| round2(a - b));
    let load_after = load_average();
    sampler.abort();
    let after = apiserver_requests(client).await?;
    let d = delta(&before, &after);
    let series = std::mem::take(&mut *rss_series.lock().unwrap_or_else(|p| p.into_inner()));
    let peak_rss = series.iter().map(|(_, r)| *r).fold(idle_rss, f64::max);

    // The sink holds every record once, and each customer's totals are the stamp's.
    let totals = world.emulator.sink.totals();
    let distinct = totals.received - totals.duplicates;
    let mut wrong = Vec::new();
    let sums: std::collections::HashMap<(String, String), String> = totals
        .totals
        .iter()
        .map(|t| ((t.subject.clone(), t.meter_id.clone()), t.quantity.clone()))
        .collect();
    for i in 0..month.tenants {
        let subject = Month::customer_subscription(i);
        for (meter, want) in month.expected(i) {
            let got = sums.get(&(subject.clone(), meter.to_ascii_lowercase()));
            if got.and_then(|g| g.parse::<Decimal>().ok()) != Some(want) && wrong.len() < 5 {
                wrong.push(format!("{subject} {meter}: {got:?}, want {want}"));
            }
        }
    }
    let status_writes = writes(&d, "customersubscriptions", Some("status"));
    let windows = month.hours as f64;
    let per_customer_window = status_writes / (month.tenants as f64 * windows);
    let rate = month.records() as f64 / seconds;
    eprintln!(
        "bench: operator: {} records in {seconds:.1} s ({rate:.0} records/s); RSS idle {idle_rss:.1} MiB, peak {peak_rss:.1} MiB; {status_writes} customer status writes ({per_customer_window:.3} per customer per window)",
        month.records()
    );
    if distinct as usize != month.records() || !wrong.is_empty() {
        return Err(format!(
            "the sink holds {distinct} distinct records of {}; wrong totals: {wrong:?}",
            month.records()
        )
        .into());
    }
    Ok(json!({
        "records": month.records(),
        "seconds": round2(seconds),
        "records_per_s": round2(rate),
        "operator_cpu_s": cpu,
        "bench_process_cpu_s": bench_cpu,
        "bench_process_note": "the bench process holds the emulator (pages, TLS) and its sink (parsing and de-duplicating every event)",
        "load_average": {"before": load_before, "after": load_after},
        "rss_idle_mib": round2(idle_rss),
        "rss_peak_mib": round2(peak_rss),
        "rss_growth_mib": round2(peak_rss - idle_rss),
        "rss_series": series,
        "sink": {"received": totals.received, "duplicates": totals.duplicates, "distinct": distinct, "totals_exact": wrong.is_empty()},
        "customer_status_writes": status_writes,
        "registration_status_writes": writes(&d, "registrations", Some("status")),
        "status_writes_per_customer_per_window": round2(per_customer_window * 1000.0) / 1000.0,
        "apiserver_requests": requests_json(&d),
    }))
}

/// The whole usage run; its results are the JSON written next to the scale runs'.
pub async fn run(s: &Settings) -> Result<Map<String, Value>> {
    let month = Month::from_env()?;
    let mut results = Map::new();
    results.insert("mode".into(), json!("usage"));
    results.insert("machine".into(), machine());
    results.insert(
        "month".into(),
        json!({
            "tenants": month.tenants,
            "hours": month.hours,
            "meters_per_tenant": METERS_PER_TENANT,
            "records": month.records(),
        }),
    );
    let ticks = clock_ticks();
    let me = std::process::id();

    let t = Instant::now();
    let text = month.stamp_yaml();
    let stamp = Stamp::parse(&text, Utc::now())?;
    results.insert(
        "stamp".into(),
        json!({"bytes": text.len(), "parse_s": round2(secs(t.elapsed()))}),
    );
    drop(text);
    let world = UsageWorld::start(stamp, &s.out_dir.join("usage-emulator")).await?;
    eprintln!(
        "bench: emulator with the month's stamp at {} ({} records)",
        world.url(),
        month.records()
    );

    let cpu_before = cpu_seconds(me, ticks);
    let limit_load_before = load_average();
    let connections_before = world.connections();
    let fetched = fetch_and_parse(&world, &month).await?;
    let limit_connections = world.connections() - connections_before;
    let cpu = cpu_seconds(me, ticks)
        .zip(cpu_before)
        .map(|(after, before)| round2(after - before));
    if fetched.records != month.records() {
        return Err(format!(
            "the limit client read {} records, the stamp has {}",
            fetched.records,
            month.records()
        )
        .into());
    }
    let limit_rate = fetched.records as f64 / fetched.seconds;
    eprintln!(
        "bench: limit: {} records in {} pages ({:.0} MiB) in {:.1} s: {:.0} records/s",
        fetched.records,
        fetched.pages,
        fetched.bytes as f64 / 1048576.0,
        fetched.seconds,
        limit_rate
    );
    results.insert(
        "limit".into(),
        json!({
            "what": "a minimal client: every hourly window in order, each page fetched and parsed into usage::record::PageRef (the operator's page type), nothing else",
            "records": fetched.records,
            "pages": fetched.pages,
            "usage_requests_answered": world.usage_requests(),
            "connections": limit_connections,
            "mib": round2(fetched.bytes as f64 / 1048576.0),
            "seconds": round2(fetched.seconds),
            "records_per_s": round2(limit_rate),
            "bench_process_cpu_s": cpu,
            "bench_process_peak_rss_mib": memory_mib(me, "VmHWM:").map(round2),
            "load_average": {"before": limit_load_before, "after": load_average()},
            "note": "the bench process holds the emulator (page generation, TLS) and the client: its CPU is both",
        }),
    );

    if operator_has_usage(&s.operator) {
        let resources: Arc<Mutex<Resources>> = Arc::default();
        let client = local_client(&s.kubeconfig).await?;
        let connections_before = world.connections();
        let measured = operator_phase(s, &month, &world, &client, &resources).await;
        let connections = world.connections() - connections_before;
        let cleaned = cleanup(&client, &resources).await;
        results.insert("cleanup".into(), cleaned);
        let mut measured = measured?;
        measured["connections"] = json!(connections);
        let rate = measured["records_per_s"].as_f64().unwrap_or(0.0);
        results.insert(
            "ratio_limit_to_operator".into(),
            json!((rate > 0.0).then(|| round2(limit_rate / rate))),
        );
        // CPU moves less with the machine's load than wall time: the operator's and the bench
        // process's CPU while the operator ingests, over the bench process's in the limit.
        let operator_phase_cpu = measured["operator_cpu_s"]
            .as_f64()
            .zip(measured["bench_process_cpu_s"].as_f64())
            .map(|(a, b)| a + b);
        results.insert(
            "cpu_ratio_operator_phase_to_limit".into(),
            json!(
                operator_phase_cpu
                    .zip(cpu.filter(|c| *c > 0.0))
                    .map(|(a, b)| round2(a / b))
            ),
        );
        results.insert("operator".into(), measured);
    } else {
        eprintln!("bench: operator phase {OPERATOR_SKIPPED}");
        results.insert("operator".into(), json!(OPERATOR_SKIPPED));
    }
    Ok(results)
}

/// The summary lines of a usage run.
pub fn print_summary(results: &Map<String, Value>) {
    let get = |path: &[&str]| {
        let mut v = &Value::Object(results.clone());
        for p in path {
            v = &v[*p];
        }
        v.clone()
    };
    println!();
    println!("usage benchmark (MODE=usage)");
    println!(
        "  month:    {} tenants x {} meters x {} hours = {} records",
        get(&["month", "tenants"]),
        get(&["month", "meters_per_tenant"]),
        get(&["month", "hours"]),
        get(&["month", "records"])
    );
    println!(
        "  limit:    {} records/s ({} pages, {} MiB, {} s; bench process CPU {} s, peak RSS {} MiB; {} connections)",
        get(&["limit", "records_per_s"]),
        get(&["limit", "pages"]),
        get(&["limit", "mib"]),
        get(&["limit", "seconds"]),
        get(&["limit", "bench_process_cpu_s"]),
        get(&["limit", "bench_process_peak_rss_mib"]),
        get(&["limit", "connections"])
    );
    let operator = get(&["operator"]);
    if operator.is_object() {
        println!(
            "  operator: {} records/s ({} s, CPU {} s, bench process {} s; {} connections); ratio limit/operator {} (target <= 1.5), CPU ratio {}",
            operator["records_per_s"],
            operator["seconds"],
            operator["operator_cpu_s"],
            operator["bench_process_cpu_s"],
            operator["connections"],
            get(&["ratio_limit_to_operator"]),
            get(&["cpu_ratio_operator_phase_to_limit"])
        );
        println!(
            "  RSS:      idle {} MiB, peak {} MiB, growth {} MiB (target <= 32)",
            operator["rss_idle_mib"], operator["rss_peak_mib"], operator["rss_growth_mib"]
        );
        println!(
            "  writes:   {} customer status writes, {} per customer per window (target <= 1); sink {}",
            operator["customer_status_writes"],
            operator["status_writes_per_customer_per_window"],
            operator["sink"]
        );
    } else {
        println!("  operator: {operator}");
    }
}
