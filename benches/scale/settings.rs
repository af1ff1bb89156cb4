//! Settings: read from the environment (`AZS_BENCH_*`; `hack/bench.sh` sets them from
//! `make bench N=...`).

use std::{path::PathBuf, time::Duration};

use crate::{OPERATOR_CONCURRENCY, Result};

pub struct Settings {
    /// CustomerSubscriptions to create.
    pub n: usize,
    /// Registrations (at least 10).
    pub registrations: usize,
    /// Dependents of the registration whose approval the fan-out revokes.
    pub fanout: usize,
    pub idle: Duration,
    pub converge_timeout: Duration,
    pub fanout_timeout: Duration,
    /// Hard bound on the whole run (cleanup gets its own short budget after it).
    pub total_timeout: Duration,
    pub create_concurrency: usize,
    pub kubeconfig: PathBuf,
    pub operator: PathBuf,
    pub out_dir: PathBuf,
    pub operator_log_filter: String,
    /// Skip the limit phase (e.g. for a quick smoke run).
    pub skip_limit: bool,
    /// Where the operator gets its metadata from.
    pub resolver: ResolverMode,
    /// `--cache-ttl` of the operator in http mode.
    pub cache_ttl: Duration,
    /// What the operator does with a subscription that passes its rules.
    pub mode: BenchMode,
    /// Azure mode: ARM's write bucket in the emulator, and the operator's own set to match.
    pub arm_burst: u32,
    pub arm_refill: f64,
}

/// `AZS_BENCH_MODE` (`make bench MODE=...`): the operator's `--mode`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BenchMode {
    /// Decide from the catalog and write only to the cluster (the default).
    Local,
    /// PUT every subscription that passes the local rules to ARM, played by the emulator
    /// (src/emulator/) in the bench process.
    Azure,
    /// Usage ingestion (issue 11): a month of a thousand tenants from the emulator's stamp
    /// (benches/scale/usage.rs), not the CustomerSubscription scale run.
    Usage,
}

impl BenchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Azure => "azure",
            Self::Usage => "usage",
        }
    }
}

impl std::str::FromStr for BenchMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Self::Local),
            "azure" => Ok(Self::Azure),
            "usage" => Ok(Self::Usage),
            _ => Err(format!("{s:?} is not local, azure or usage")),
        }
    }
}

/// `AZS_BENCH_RESOLVER`: the operator's metadata backend during the run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ResolverMode {
    /// `--catalog-file`, the generated catalog (the default).
    Catalog,
    /// `--resolver http` against the bench's own [`MetadataServer`].
    Http,
}

impl ResolverMode {
    pub fn as_str(self) -> &'static str {
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

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a valid value").into()),
        _ => Ok(default),
    }
}

impl Settings {
    pub fn from_env() -> Result<Self> {
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
        let mode: BenchMode = env_or("AZS_BENCH_MODE", BenchMode::Local)?;
        let arm_burst: u32 = env_or("AZS_BENCH_ARM_BURST", 200)?;
        let arm_refill: f64 = env_or("AZS_BENCH_ARM_REFILL", 100.0)?;
        if arm_burst == 0 || !(arm_refill.is_finite() && arm_refill > 0.0) {
            return Err(format!(
                "AZS_BENCH_ARM_BURST={arm_burst} and AZS_BENCH_ARM_REFILL={arm_refill} must be positive"
            )
            .into());
        }
        // Azure mode is paced by ARM's bucket: allow three times the ideal (N - burst) / R.
        let paced = match mode {
            BenchMode::Local | BenchMode::Usage => 0,
            BenchMode::Azure => (3.0 * n as f64 / arm_refill) as u64,
        };
        let converge_default = 300.max(n as u64 / 10).max(paced);
        let converge_timeout = secs("AZS_BENCH_CONVERGE_TIMEOUT", converge_default)?;
        let idle = secs("AZS_BENCH_IDLE_SECONDS", 60)?;
        // No cached answer may expire while the operator runs (converge, settle, idle: the
        // fan-out is skipped in http mode): an expiry would add upstream requests and
        // re-checks that belong to the refresh, not to convergence. The operator's default
        // (5 min) is shorter than the longest run the converge timeout allows.
        let ttl_default = converge_timeout.as_secs() + idle.as_secs() + 120;
        let resolver: ResolverMode = env_or("AZS_BENCH_RESOLVER", ResolverMode::Catalog)?;
        if mode == BenchMode::Azure && resolver == ResolverMode::Http {
            return Err(
                "AZS_BENCH_MODE=azure has no resolver: leave AZS_BENCH_RESOLVER unset".into(),
            );
        }
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
            resolver,
            cache_ttl: secs("AZS_BENCH_CACHE_TTL", ttl_default.max(300))?,
            mode,
            arm_burst,
            arm_refill,
        })
    }
}
