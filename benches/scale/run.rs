//! The run: create, converge, idle, fan-out, limit, cleanup (the phases of main.rs's doc).

use std::{
    ffi::OsString,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use azs_csp_operator::api::{CustomerSubscription, Registration};
use azs_csp_testkit::{
    cluster::{create_all, create_namespace, ensure_crds, retryable},
    process::Operator,
};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{
    OPERATOR_CONCURRENCY, RESOURCE_GROUP, Result, SETTLE, STATUS_MANAGER,
    arm::{ArmWorld, FANOUT_SKIPPED_AZURE, LIMIT_SKIPPED_AZURE, arm_json, repeated_puts},
    measure::{
        Probe, all_writes, apiserver_requests, binary_info, cpu_json, cpu_seconds, delta,
        listening_ports, load_average, machine, memory_mib, metrics_delta, operator_metrics,
        operator_writes, requests_json, resolver_lookups, round2, sample_rss, writes,
    },
    operator,
    plan::{ATTACHED, G_CUST_TENANT, Plan, RegPlan, guid, partner_id},
    settings::{BenchMode, ResolverMode, Settings},
    tracker::{
        Shared, customer_signature, lock, registration_signature, report_progress, spawn_tracker,
        wait_until,
    },
    upstream::{FANOUT_SKIPPED_HTTP, MetadataServer, since_json, upstream_json},
};

/// Everything cleanup needs, filled in as the run goes.
#[derive(Default)]
pub struct Resources {
    pub namespaces: Vec<String>,
    pub operator: Option<Operator>,
}

pub struct Bench {
    pub s: Settings,
    pub client: Client,
    pub plan: Plan,
    pub ns: String,
    pub limit_ns: String,
    pub catalog_path: PathBuf,
    pub probe: Probe,
    pub resources: Arc<Mutex<Resources>>,
    pub results: Mutex<serde_json::Map<String, Value>>,
}

pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

impl Bench {
    pub fn record(&self, key: &str, value: Value) {
        self.results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), value);
    }

    /// Adds `field` to the object recorded under `key`.
    pub fn add(&self, key: &str, field: &str, value: Value) {
        if let Some(Value::Object(object)) = self
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(key)
        {
            object.insert(field.to_string(), value);
        }
    }

    pub fn replace_catalog(&self, text: &str) -> Result<()> {
        let tmp = self.catalog_path.with_extension("yaml.next");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.catalog_path)?;
        Ok(())
    }

    pub async fn run(&self) -> Result<()> {
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
                "mode": s.mode.as_str(),
                "arm_write_burst": (s.mode == BenchMode::Azure).then_some(s.arm_burst),
                "arm_write_refill_per_s": (s.mode == BenchMode::Azure).then_some(s.arm_refill),
                "necessary_arm_puts": (s.mode == BenchMode::Azure).then(|| self.plan.necessary_puts()),
                "unapproved_customers": (s.mode == BenchMode::Azure).then(|| self.plan.unapproved_customers()),
            }),
        );
        self.record("kubernetes", json!(version.git_version));
        self.record("operator_binary", binary_info(&s.operator));
        self.record("machine", machine());
        self.record("load_average_start", json!(load_average()));

        ensure_crds(
            &self.client,
            azs_csp_operator::crd::definitions(),
            "azs-csp-operator-bench",
        )
        .await?;
        let catalog = self.plan.catalog(&[]);
        std::fs::write(&self.catalog_path, &catalog)?;
        self.record("catalog_bytes", json!(catalog.len()));
        // Azure mode: the emulator, which decides from the same catalog as ARM would.
        let world = match s.mode {
            BenchMode::Local | BenchMode::Usage => None,
            BenchMode::Azure => {
                let yaml = self.plan.azure_catalog(
                    crate::arm::TENANT,
                    crate::arm::CLIENT,
                    crate::arm::SECRET,
                );
                let world = ArmWorld::start(
                    &yaml,
                    s.arm_burst,
                    s.arm_refill,
                    &s.out_dir.join("emulator"),
                )
                .await?;
                eprintln!(
                    "bench: --mode azure against the emulator at {} (ARM bucket: burst {}, {} writes/s; the operator's set to match)",
                    world.url(),
                    s.arm_burst,
                    s.arm_refill
                );
                Some(world)
            }
        };
        // The operator's metadata flags, and in http mode the server it asks.
        let (server, resolver_args): (Option<MetadataServer>, Vec<OsString>) = match s.resolver {
            _ if world.is_some() => (None, Vec::new()),
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
        create_namespace(
            &self.client,
            &self.ns,
            &[("azs-csp-operator.bench", "true")],
        )
        .await?;
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
        let (operator_args, operator_env) = match &world {
            Some(world) => (world.operator_args(), world.operator_env()),
            None => (resolver_args, Vec::new()),
        };
        let operator = operator::start(s, &operator_args, &operator_env, &self.ns)?;
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
        if let Some(world) = &world {
            let exchanges = world.exchanges();
            let mut arm = arm_json(&exchanges, t0, Some(converged_at), t0);
            let necessary = self.plan.necessary_puts();
            let ideal = world.ideal_seconds(necessary);
            let ideal_n = world.ideal_seconds(s.n);
            if let Value::Object(o) = &mut arm {
                let puts = o.get("puts").and_then(Value::as_u64).unwrap_or(0) as f64;
                o.insert("necessary_puts".into(), json!(necessary));
                o.insert(
                    "puts_per_necessary_put".into(),
                    json!(round2(puts / necessary.max(1) as f64)),
                );
                o.insert("puts_per_object".into(), json!(round2(puts / n)));
                o.insert("ideal_seconds".into(), json!(round2(ideal)));
                o.insert(
                    "converge_to_ideal".into(),
                    json!(round2(
                        converge.as_secs_f64() / ideal.max(f64::MIN_POSITIVE)
                    )),
                );
                o.insert("ideal_seconds_of_n".into(), json!(round2(ideal_n)));
                o.insert(
                    "converge_to_ideal_of_n".into(),
                    json!(round2(
                        converge.as_secs_f64() / ideal_n.max(f64::MIN_POSITIVE)
                    )),
                );
                o.insert("repeats".into(), repeated_puts(&exchanges));
            }
            self.add("converge", "arm", arm);
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
        let t_idle_end = Instant::now();
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
        if let Some(world) = &world {
            let exchanges = world.exchanges();
            self.add(
                "settle",
                "arm",
                arm_json(&exchanges, converged_at, Some(t_idle), t0),
            );
            self.add(
                "idle",
                "arm",
                arm_json(&exchanges, t_idle, Some(t_idle_end), t0),
            );
        }
        if let (Some(converged), Some(settled), Some(idle)) = (&up_converged, &up_settled, &up_idle)
        {
            self.add("settle", "upstream", since_json(settled, converged));
            self.add("idle", "upstream", since_json(idle, settled));
        }
        eprintln!(
            "bench: idle {} s: {} writes",
            s.idle.as_secs(),
            all_writes(&d)
        );

        // 4. Fan-out: revoke the approval of the large registration.
        let op_metrics_after_fanout = if world.is_some() {
            self.record(
                "fanout",
                json!({"skipped": true, "reason": FANOUT_SKIPPED_AZURE}),
            );
            eprintln!("bench: fan-out {FANOUT_SKIPPED_AZURE}");
            None
        } else if s.resolver == ResolverMode::Http {
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
            let whole = since_json(&server.snapshot(), &Default::default());
            self.add("http_resolver", "requests_while_operator_ran", whole);
        }
        for w in watches {
            w.abort();
        }

        if let Some(world) = &world {
            // Everything ARM saw while the operator ran.
            let exchanges = world.exchanges();
            self.add(
                "operator",
                "arm_while_running",
                arm_json(&exchanges, t0, None, t0),
            );
        }
        drop(world);

        // 5. The limit: the same number of status applies, straight from a client.
        if s.mode == BenchMode::Azure {
            self.record(
                "limit",
                json!({"skipped": true, "reason": LIMIT_SKIPPED_AZURE}),
            );
        } else if !s.skip_limit {
            self.limit().await?;
        }
        self.record("load_average_end", json!(load_average()));
        self.record("total_seconds", json!(secs(started.elapsed())));
        Ok(())
    }

    pub fn operator_exited(&self) -> bool {
        lock_resources(&self.resources)
            .operator
            .as_mut()
            .is_some_and(|o| o.exited().is_some())
    }

    pub async fn limit(&self) -> Result<()> {
        let s = &self.s;
        create_namespace(
            &self.client,
            &self.limit_ns,
            &[("azs-csp-operator.bench", "true")],
        )
        .await?;
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
                async move { apply_status(&api, name, &params, body).await }
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

/// One status server-side apply, retried a few times on what the API server may answer
/// under load.
pub async fn apply_status(
    api: &Api<CustomerSubscription>,
    name: &str,
    params: &PatchParams,
    body: &Value,
) -> Result<(), kube::Error> {
    let mut attempt = 0;
    loop {
        match api.patch_status(name, params, &Patch::Apply(body)).await {
            Ok(_) => return Ok(()),
            Err(e) if retryable(&e) && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

pub fn lock_resources(r: &Arc<Mutex<Resources>>) -> std::sync::MutexGuard<'_, Resources> {
    r.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes the finalizers of every object of kind `K` in `ns` that has one.
async fn remove_finalizers<K>(client: &Client, ns: &str)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let Ok(list) = api.list_metadata(&ListParams::default()).await else {
        return;
    };
    let names: Vec<String> = list
        .items
        .iter()
        .filter(|o| !o.finalizers().is_empty())
        .map(ResourceExt::name_any)
        .collect();
    let patch = json!({"metadata": {"finalizers": null}});
    stream::iter(names.iter().map(|name| {
        let (api, patch) = (&api, &patch);
        async move {
            let _ = api
                .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await;
        }
    }))
    .buffer_unordered(OPERATOR_CONCURRENCY)
    .collect::<Vec<()>>()
    .await;
}

/// Stops the operator, lets the namespaces go (removing the operator's finalizers, which
/// nobody would remove once it is gone: the Registrations', and in azure mode every
/// CustomerSubscription's detach finalizer), and waits a bounded time for them to disappear.
pub async fn cleanup(client: &Client, resources: &Arc<Mutex<Resources>>) -> Value {
    if let Some(mut operator) = lock_resources(resources).operator.take() {
        operator.stop();
        eprintln!("bench: operator stopped (log {})", operator.log.display());
    }
    let namespaces = lock_resources(resources).namespaces.clone();
    let t = Instant::now();
    for ns in &namespaces {
        remove_finalizers::<Registration>(client, ns).await;
        remove_finalizers::<CustomerSubscription>(client, ns).await;
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
