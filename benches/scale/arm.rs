//! Azure mode's outside world: the emulator (src/emulator/: Entra ID and ARM's
//! Microsoft.AzureStack) served in the bench process over HTTPS with its own CA, behind the test
//! kit's fault layer, which records every exchange. ARM's requests, its 429s and their times
//! are counted on ARM's side from that record, not from what the operator says it sent.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use azs_csp_operator::emulator::{
    self, Emulator,
    in_process::{InProcess, InProcessOptions},
    stamp::Stamp,
};
use azs_csp_testkit::upstream::{Exchange, Upstream};
use serde_json::{Value, json};

use crate::{Result, measure::round2, run::secs};

/// The operator's identity in the emulator's Entra ID.
pub const TENANT: &str = "a5000009-0000-4000-8000-000000000001";
pub const CLIENT: &str = "a5000009-0000-4000-8000-000000000002";
pub const SECRET: &str = "azs-csp-bench-client-secret";

/// Why the fan-out is not measured in azure mode (also in the JSON and the table).
pub const FANOUT_SKIPPED_AZURE: &str = "skipped in azure mode: ARM decided every object once \
    and the operator PUTs again only when a spec changes or drift finds a tenant gone, so a \
    revoked approval in the emulator's catalog is not an operator event";

/// Why the limit is not measured in azure mode.
pub const LIMIT_SKIPPED_AZURE: &str = "skipped in azure mode: the floor is ARM's bucket, the \
    ideal (writes - burst) / refill, not the API server";

/// An emulator served in the bench process on 127.0.0.1 over HTTPS, with a CA of its own,
/// behind the test kit's layer, and the operator's client secret in a file.
pub struct Served {
    pub upstream: Upstream,
    pub emulator: Arc<Emulator>,
    pub ca_file: PathBuf,
    pub secret_file: PathBuf,
}

/// Serves the emulator of `catalog_yaml` (with ARM's write bucket `(burst, refill per
/// second)`, and the stamp's usage APIs when there is one); its CA and the client secret go
/// to `dir`.
pub async fn serve(
    catalog_yaml: &str,
    (write_burst, write_refill_per_second): (u32, f64),
    stamp: Option<Stamp>,
    dir: &Path,
) -> Result<Served> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let started = InProcess::start(
        catalog_yaml,
        InProcessOptions {
            write_burst,
            write_refill_per_second,
            tls_dir: Some(dir.join("tls")),
            stamp,
        },
    )
    .await?;
    let ca_file = started.ca_file.ok_or("the emulator has no CA")?;
    let emulator = started.emulator;
    let upstream = Upstream::serve_on(
        started.listener,
        emulator::router(emulator.clone()),
        started.tls,
    );
    let secret_file = dir.join("client-secret");
    std::fs::write(&secret_file, SECRET)?;
    Ok(Served {
        upstream,
        emulator,
        ca_file,
        secret_file,
    })
}

/// The emulator, listening on 127.0.0.1.
pub struct ArmWorld {
    upstream: Upstream,
    ca_file: PathBuf,
    secret_file: PathBuf,
    burst: u32,
    refill: f64,
}

impl ArmWorld {
    /// An emulator of `catalog_yaml` whose ARM lets a principal write `burst` at once per
    /// subscription, refilled at `refill` per second; its CA and the client secret go to `dir`.
    pub async fn start(catalog_yaml: &str, burst: u32, refill: f64, dir: &Path) -> Result<Self> {
        let served = serve(catalog_yaml, (burst, refill), None, dir).await?;
        Ok(Self {
            upstream: served.upstream,
            ca_file: served.ca_file,
            secret_file: served.secret_file,
            burst,
            refill,
        })
    }

    pub fn url(&self) -> String {
        self.upstream.url()
    }

    /// `run --mode azure` against this emulator, its own write bucket set to ARM's.
    pub fn operator_args(&self) -> Vec<OsString> {
        let url = self.url();
        [
            "--mode",
            "azure",
            "--arm-endpoint",
            &url,
            "--azure-credential",
            "client-secret",
            "--arm-writes-per-second",
            &self.refill.to_string(),
            "--arm-write-burst",
            &self.burst.to_string(),
        ]
        .iter()
        .map(OsString::from)
        .chain([
            OsString::from("--azure-ca-file"),
            self.ca_file.clone().into_os_string(),
            OsString::from("--azure-client-secret-file"),
            self.secret_file.clone().into_os_string(),
        ])
        .collect()
    }

    /// The environment the operator's credential reads.
    pub fn operator_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_TENANT_ID", TENANT.to_string()),
            ("AZURE_CLIENT_ID", CLIENT.to_string()),
            ("AZURE_AUTHORITY_HOST", self.url()),
        ]
    }

    /// Every request the emulator answered so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.upstream.exchanges()
    }

    pub fn ideal_seconds(&self, writes: usize) -> f64 {
        writes.saturating_sub(self.burst as usize) as f64 / self.refill
    }
}

fn is_write(e: &Exchange) -> bool {
    e.path.contains("/customerSubscriptions/") && (e.method == "PUT" || e.method == "DELETE")
}

/// ARM's requests that arrived in `[from, to)` (`to` open: until now), by kind and answer.
pub fn arm_json(exchanges: &[Exchange], from: Instant, to: Option<Instant>, t0: Instant) -> Value {
    let window: Vec<&Exchange> = exchanges
        .iter()
        .filter(|e| {
            let at = e.at.into_std();
            at >= from && to.is_none_or(|to| at < to)
        })
        .collect();
    let count = |f: &dyn Fn(&Exchange) -> bool| window.iter().filter(|e| f(e)).count();
    let puts: Vec<&&Exchange> = window
        .iter()
        .filter(|e| e.method == "PUT" && e.path.contains("/customerSubscriptions/"))
        .collect();
    let writes = count(&is_write);
    let throttled = count(&|e| is_write(e) && e.status == Some(429));
    let since = |e: &Exchange| e.at.into_std().checked_duration_since(t0).map(secs);
    json!({
        "requests": window.len(),
        "writes": writes,
        "puts": puts.len(),
        "puts_ok": puts.iter().filter(|e| e.status.is_some_and(|s| (200..300).contains(&s))).count(),
        "puts_refused_4xx_not_429": puts.iter().filter(|e| e.status.is_some_and(|s| (400..500).contains(&s) && s != 429)).count(),
        "puts_unanswered": puts.iter().filter(|e| e.status.is_none()).count(),
        "deletes": count(&|e| e.method == "DELETE"),
        "throttled_429": throttled,
        "throttled_percent_of_writes": (writes > 0).then(|| round2(100.0 * throttled as f64 / writes as f64)),
        "server_errors_5xx": count(&|e| e.status.is_some_and(|s| s >= 500)),
        "token_requests": count(&|e| e.path.contains("/oauth2/")),
        "registration_reads": count(&|e| e.method == "GET" && e.path.contains("/registrations/") && !e.path.contains("/customerSubscriptions")),
        "customer_lists": count(&|e| e.method == "GET" && e.path.ends_with("/customerSubscriptions")),
        "customer_reads": count(&|e| e.method == "GET" && e.path.contains("/customerSubscriptions/")),
        "first_put_s": puts.first().and_then(|e| since(e)),
        "last_put_s": puts.last().and_then(|e| since(e)),
    })
}

/// PUTs per distinct customer subscription path: more than one is a repeated PUT.
pub fn repeated_puts(exchanges: &[Exchange]) -> Value {
    let mut per_path: std::collections::HashMap<String, (usize, usize)> = Default::default();
    for e in exchanges.iter().filter(|e| e.method == "PUT") {
        let entry = per_path.entry(e.path.to_ascii_lowercase()).or_default();
        entry.0 += 1;
        if e.status == Some(429) {
            entry.1 += 1;
        }
    }
    let repeated: Vec<_> = per_path.values().filter(|(n, _)| *n > 1).collect();
    json!({
        "distinct_paths": per_path.len(),
        "paths_put_more_than_once": repeated.len(),
        "extra_puts": repeated.iter().map(|(n, _)| n - 1).sum::<usize>(),
        "extra_puts_after_a_429": repeated.iter().map(|(_, t)| *t).sum::<usize>(),
    })
}
