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
//! server inside the bench process ([`upstream::MetadataServer`]: the emulator's `/resolver`
//! behind the test kit's fault layer, the same catalog as the JSON of DESIGN.md §4, on
//! 127.0.0.1), whose layer counts the requests answered: what a caching backend
//! asks upstream, to set next to the distinct subscriptions the objects name. The fan-out is
//! skipped in that mode (see [`upstream::FANOUT_SKIPPED_HTTP`]).
//!
//! API writes are counted from kube-apiserver's own `apiserver_request_total`, the operator's
//! memory and CPU from /proc. Configuration is read from the environment (`AZS_BENCH_*`, see
//! [`Settings::from_env`]); `hack/bench.sh` sets it from `make bench N=...`.
//!
//! The modules: [`settings`], the scenario [`plan`], the progress [`tracker`] (watches), what
//! is [`measure`]d, the [`operator`] process, the metadata [`upstream`], the [`run`] of the
//! phases, and the [`report`].

mod arm;
mod measure;
mod operator;
mod plan;
mod report;
mod run;
mod settings;
mod tracker;
mod upstream;
mod usage;

use std::{
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use azs_csp_testkit::cluster::local_client;
use serde_json::{Value, json};

use crate::{
    measure::{Probe, clock_ticks, control_plane_pids},
    plan::{Partners, Plan},
    report::{cpu_ratio, print_summary, ratio},
    run::{Bench, Resources, cleanup},
    settings::{BenchMode, ResolverMode, Settings},
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = BoxError> = std::result::Result<T, E>;

/// The operator's CustomerSubscription controller runs 32 reconciles at once
/// (src/controller/mod.rs); the limit client gets the same budget.
pub const OPERATOR_CONCURRENCY: usize = 32;
/// Field manager of the operator's CustomerSubscription status (the limit writes as it).
pub const STATUS_MANAGER: &str = azs_csp_operator::controller::CUSTOMER_SUBSCRIPTION_MANAGER;
pub const RESOURCE_GROUP: &str = "azurestack-bench";
/// Between convergence and the idle window: lets writes already in flight land.
pub const SETTLE: Duration = Duration::from_secs(2);
pub const PARTNERS: u64 = 10;

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
        if settings.mode == BenchMode::Usage {
            return usage_main(&settings).await;
        }
        let client = match local_client(&settings.kubeconfig).await {
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
            .join(match (settings.mode, settings.resolver) {
                (BenchMode::Azure, _) => format!("scale-n{}-azure-{stamp}.json", settings.n),
                (_, ResolverMode::Catalog) => format!("scale-n{}-{stamp}.json", settings.n),
                (_, ResolverMode::Http) => format!("scale-n{}-http-{stamp}.json", settings.n),
            });
        let probe = Probe {
            ticks: clock_ticks(),
            pids: control_plane_pids(&settings.kubeconfig),
        };
        let bench = Bench {
            plan: Plan::new(
                settings.n,
                settings.registrations,
                settings.fanout,
                match settings.mode {
                    BenchMode::Local | BenchMode::Usage => Partners::Ten,
                    BenchMode::Azure => Partners::OneSubscription,
                },
            ),
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

/// `MODE=usage`: its own run, results file and summary (benches/scale/usage.rs).
async fn usage_main(settings: &Settings) -> ExitCode {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let outcome = tokio::select! {
        r = tokio::time::timeout(settings.total_timeout, usage::run(settings)) => match r {
            Ok(r) => r,
            Err(_) => Err(format!("the run exceeded AZS_BENCH_TIMEOUT ({} s)", settings.total_timeout.as_secs()).into()),
        },
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };
    let results = match outcome {
        Ok(results) => results,
        Err(e) => {
            eprintln!("bench: FAILED: {e}");
            return ExitCode::FAILURE;
        }
    };
    let out_file = settings.out_dir.join(format!("usage-{stamp}.json"));
    match serde_json::to_string_pretty(&Value::Object(results.clone())) {
        Ok(text) => match std::fs::write(&out_file, text + "\n") {
            Ok(()) => eprintln!("bench: results in {}", out_file.display()),
            Err(e) => eprintln!("bench: cannot write {}: {e}", out_file.display()),
        },
        Err(e) => eprintln!("bench: cannot serialize the results: {e}"),
    }
    usage::print_summary(&results);
    ExitCode::SUCCESS
}
