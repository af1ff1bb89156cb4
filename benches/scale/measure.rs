//! Measuring: API server request counters, /proc, the operator's own metrics.

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant, UNIX_EPOCH},
};

use azs_csp_testkit::{metrics, process::http_get};
use kube::{Client, api::ListParams};
use serde_json::{Value, json};

use crate::Result;

/// `apiserver_request_total` summed over response codes: (verb, resource, subresource) → count.
pub type RequestCounts = BTreeMap<(String, String, String), f64>;

pub async fn apiserver_requests(client: &Client) -> Result<RequestCounts> {
    // kube has no helper for non-resource paths; a list request on "/metrics" is a plain GET.
    let request = kube::core::Request::new("/metrics").list(&ListParams::default())?;
    let text = client.request_text(request).await?;
    let mut counts = RequestCounts::new();
    for sample in metrics::parse(&text).filter(|s| s.name == "apiserver_request_total") {
        let key = |k: &str| sample.label(k).to_string();
        *counts
            .entry((key("verb"), key("resource"), key("subresource")))
            .or_default() += sample.value;
    }
    Ok(counts)
}

pub fn delta(before: &RequestCounts, after: &RequestCounts) -> RequestCounts {
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
pub const WRITE_VERBS: [&str; 4] = ["POST", "PUT", "PATCH", "APPLY"];
pub const OUR_RESOURCES: [&str; 3] = ["customersubscriptions", "registrations", "events"];

pub fn writes(d: &RequestCounts, resource: &str, subresource: Option<&str>) -> f64 {
    d.iter()
        .filter(|((verb, r, s), _)| {
            WRITE_VERBS.contains(&verb.as_str())
                && r == resource
                && subresource.is_none_or(|want| s == want)
        })
        .map(|(_, v)| v)
        .sum()
}

pub fn all_writes(d: &RequestCounts) -> f64 {
    // `+ 0.0`: an empty f64 sum is -0.0.
    OUR_RESOURCES
        .iter()
        .map(|r| writes(d, r, None))
        .sum::<f64>()
        + 0.0
}

pub fn requests_json(d: &RequestCounts) -> Value {
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

pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32, ticks: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

/// A `/proc/PID/status` memory line (VmHWM, VmRSS) in MiB.
pub fn memory_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// TCP ports process `pid` listens on (how `--metrics-addr 127.0.0.1:0` is found).
pub fn listening_ports(pid: u32) -> Vec<u16> {
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
pub fn operator_metrics(port: u16) -> Option<BTreeMap<String, f64>> {
    let (code, body) = http_get(SocketAddr::from(([127, 0, 0, 1], port)), "/metrics").ok()?;
    (code == 200).then(|| metrics::samples_with_prefix(&body, "azs_csp_"))
}

/// The operator's resolver lookup counters (`azs_csp_resolver_*`) over a phase: from `before`
/// (`None`: since the operator started) to `after`. A lookup is a hit, a miss or a coalesced
/// lookup; for the catalog backend every lookup after the first load is a hit and nothing goes
/// upstream. `Null` when the operator exports no lookup counters.
pub fn resolver_lookups(
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
pub fn operator_writes(m: &BTreeMap<String, f64>) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            let name = k.split('{').next().unwrap_or_default();
            name.ends_with("_writes_total") || (name.contains("event") && name.ends_with("_total"))
        })
        .map(|(_, v)| v)
        .sum()
}

pub fn metrics_delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Value {
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
pub fn control_plane_pids(kubeconfig: &Path) -> Vec<(&'static str, u32)> {
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
pub fn binary_info(path: &Path) -> Value {
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

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn machine() -> Value {
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
pub struct CpuSample {
    pub at: Instant,
    pub seconds: BTreeMap<&'static str, f64>,
}

pub struct Probe {
    pub ticks: f64,
    pub pids: Vec<(&'static str, u32)>,
}

impl Probe {
    pub fn sample(&self) -> CpuSample {
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

    pub fn with(&self, name: &'static str, pid: u32) -> Self {
        let mut pids = self.pids.clone();
        pids.retain(|(n, _)| *n != name);
        pids.push((name, pid));
        Self {
            ticks: self.ticks,
            pids,
        }
    }
}

pub fn cpu_json(from: &CpuSample, to: &CpuSample) -> Value {
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

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Samples the operator's RSS every second into `series` (seconds since `t0`, MiB).
pub async fn sample_rss(pid: u32, t0: Instant, series: Arc<Mutex<Vec<(f64, f64)>>>) {
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
