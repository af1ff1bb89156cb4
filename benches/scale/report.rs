//! The report: the summary table printed after a run, and the ratios it is judged by.

use serde_json::Value;

use crate::measure::round2;

/// CPU seconds of every measured process (API server, etcd, operator, bench) in one phase.
pub fn phase_cpu(results: &serde_json::Map<String, Value>, phase: &str) -> Option<f64> {
    let cpu = results.get(phase)?.get("cpu")?.as_object()?;
    let total: f64 = cpu
        .iter()
        .filter(|(k, _)| k.ends_with("_cpu_s"))
        .filter_map(|(_, v)| v.as_f64())
        .sum();
    (total > 0.0).then_some(total)
}

/// The CPU spent on convergence over the CPU spent on the limit: on a machine where the
/// API server, etcd and the client share the cores, the wall-clock ratio follows this one,
/// and unlike wall time it does not move with other load on the machine.
pub fn cpu_ratio(results: &serde_json::Map<String, Value>) -> Option<f64> {
    let converge = phase_cpu(results, "converge")?;
    let limit = phase_cpu(results, "limit")?;
    Some(round2(converge / limit))
}

/// Operator convergence time over the limit's write time.
pub fn ratio(results: &serde_json::Map<String, Value>) -> Option<f64> {
    let converge = results.get("converge")?.get("seconds")?.as_f64()?;
    let limit = results.get("limit")?.get("seconds")?.as_f64()?;
    (limit > 0.0).then(|| round2(converge / limit))
}

pub fn print_summary(results: &serde_json::Map<String, Value>) {
    let get = |path: &[&str]| -> Value {
        let mut v = Value::Object(results.clone());
        for p in path {
            v = v.get(*p).cloned().unwrap_or(Value::Null);
        }
        v
    };
    let num = |path: &[&str]| get(path).as_f64();
    let fmt = |x: Option<f64>, unit: &str| x.map_or("n/a".to_string(), |x| format!("{x}{unit}"));
    let converge = num(&["converge", "seconds"]);
    let limit = num(&["limit", "seconds"]);
    let ratio = ratio(results);
    let lookups = |phase: &str, per: &str| {
        let total = num(&[phase, "resolver", "lookups"]);
        let upstream = num(&[phase, "resolver", "upstream_requests"]);
        match (total, num(&[phase, "resolver", "per_object"]), upstream) {
            (Some(t), Some(p), Some(u)) => format!("{t} ({p} per {per}; {u} upstream requests)"),
            (Some(t), _, _) => format!("{t}"),
            _ => "n/a (no azs_csp_resolver_* in /metrics)".to_string(),
        }
    };
    let distinct = format!(
        "{} in the catalog, {} named by the objects",
        fmt(num(&["config", "catalog_subscriptions"]), ""),
        fmt(num(&["config", "referenced_subscriptions"]), "")
    );
    println!();
    println!("| measure | value | target |");
    println!("|---|---|---|");
    let mut rows = vec![
        (
            "create N + registrations (client)",
            fmt(num(&["create", "seconds"]), " s"),
            "",
        ),
        (
            "converge: operator start → all final",
            fmt(converge, " s"),
            "",
        ),
        (
            "limit: N status applies, 32 in flight",
            fmt(limit, " s"),
            "",
        ),
        ("ratio converge / limit", fmt(ratio, ""), "≤ 1.5"),
        (
            "CPU ratio (all processes) converge / limit",
            fmt(cpu_ratio(results), ""),
            "",
        ),
        (
            "customer status writes per object",
            fmt(num(&["converge", "customer_status_writes_per_object"]), ""),
            "≤ 1.05",
        ),
        (
            "all writes per object (status, registrations, events)",
            fmt(num(&["converge", "all_writes_per_object"]), ""),
            "",
        ),
        ("writes while idle", fmt(num(&["idle", "writes"]), ""), "0"),
        (
            "operator peak RSS",
            fmt(num(&["operator", "peak_rss_mib"]), " MiB"),
            "≤ 64 MiB",
        ),
        (
            "operator CPU (converge)",
            fmt(num(&["converge", "cpu", "operator_cpu_s"]), " s"),
            "",
        ),
        (
            "operator CPU (whole run)",
            fmt(num(&["operator", "cpu_seconds_total"]), " s"),
            "",
        ),
        (
            "fan-out dependents",
            fmt(num(&["fanout", "dependents"]), ""),
            "",
        ),
        ("fan-out time", fmt(num(&["fanout", "seconds"]), " s"), ""),
        (
            "resolver lookups: converge",
            lookups("converge", "object"),
            "",
        ),
        (
            "resolver lookups: fan-out",
            lookups("fanout", "dependent"),
            "",
        ),
        ("… distinct subscriptions", distinct, ""),
    ];
    if results.contains_key("http_resolver") {
        http_rows(&mut rows, &num);
    }
    if get(&["config", "mode"]) == "azure" {
        azure_rows(&mut rows, &num);
    }
    for (name, value, target) in rows {
        println!("| {name} | {value} | {target} |");
    }
}

/// The http mode's rows: what the bench's metadata server answered, the operator's own cache
/// counters, and the fan-out marked as skipped.
pub fn http_rows(
    rows: &mut Vec<(&'static str, String, &'static str)>,
    num: &dyn Fn(&[&str]) -> Option<f64>,
) {
    let n = |path: &[&str]| num(path).map_or("n/a".to_string(), |x| x.to_string());
    for (name, value, _) in rows.iter_mut() {
        if name.starts_with("fan-out") || *name == "resolver lookups: fan-out" {
            *value = "skipped (http resolver: a revoked approval is seen only after --cache-ttl)"
                .to_string();
        }
    }
    let up = |field: &str| n(&["converge", "upstream", field]);
    let served = format!(
        "{} ({} subscription lookups of {} distinct subscriptions, {} approval lookups of {} \
         registrations, {} answered 404)",
        up("requests"),
        up("subscription_lookups"),
        up("distinct_subscriptions"),
        up("approval_lookups"),
        up("distinct_registrations"),
        up("not_found"),
    );
    let op = |field: &str| n(&["converge", "resolver", field]);
    let operator = format!(
        "{} requests, {} misses, {} coalesced, {} hits, {} errors",
        op("upstream_requests"),
        op("misses"),
        op("coalesced"),
        op("hits"),
        op("upstream_errors"),
    );
    let distinct = rows.len() - 1;
    rows.insert(
        distinct,
        (
            "upstream requests answered by the bench's server: converge",
            served,
            "≈ distinct subscriptions",
        ),
    );
    rows.insert(
        distinct + 1,
        ("operator azs_csp_resolver_*: converge", operator, ""),
    );
    rows.insert(
        distinct + 2,
        (
            "upstream requests while idle",
            n(&["idle", "upstream", "requests"]),
            "0",
        ),
    );
    rows.push((
        "… of them the decisions look up (rule 2 settles the rest)",
        n(&["converge", "upstream", "subscriptions_to_look_up"]),
        "",
    ));
    rows.push((
        "http resolver --cache-ttl",
        format!("{} s", n(&["http_resolver", "cache_ttl_s"])),
        "",
    ));
}

/// Azure mode's rows: ARM's side of the run, judged against ARM's bucket instead of the limit.
pub fn azure_rows(
    rows: &mut Vec<(&'static str, String, &'static str)>,
    num: &dyn Fn(&[&str]) -> Option<f64>,
) {
    let n = |path: &[&str]| num(path).map_or("n/a".to_string(), |x| x.to_string());
    rows.retain(|(name, _, _)| {
        !(name.starts_with("limit")
            || name.starts_with("ratio converge")
            || name.starts_with("CPU ratio")
            || name.starts_with("fan-out")
            || name.starts_with("resolver lookups")
            || name.starts_with("… distinct"))
    });
    let arm = |field: &str| n(&["converge", "arm", field]);
    rows.splice(
        2..2,
        [
            (
                "ARM bucket (emulator and operator): burst / refill",
                format!(
                    "{} / {} per s",
                    n(&["config", "arm_write_burst"]),
                    n(&["config", "arm_write_refill_per_s"])
                ),
                "",
            ),
            (
                "ideal (necessary PUTs − burst) / refill",
                format!(
                    "{} s ({} necessary PUTs)",
                    arm("ideal_seconds"),
                    arm("necessary_puts")
                ),
                "",
            ),
            ("converge / ideal", arm("converge_to_ideal"), "≤ 1.10"),
            (
                "… ideal of the task's formula (N − burst) / refill; converge / it",
                format!(
                    "{} s; {}",
                    arm("ideal_seconds_of_n"),
                    arm("converge_to_ideal_of_n")
                ),
                "",
            ),
            (
                "ARM PUTs (emulator side) / necessary PUTs",
                format!(
                    "{} / {} = {}",
                    arm("puts"),
                    arm("necessary_puts"),
                    arm("puts_per_necessary_put")
                ),
                "≤ 1.05",
            ),
            (
                "… PUTs per CustomerSubscription; paths PUT more than once",
                format!(
                    "{}; {}",
                    arm("puts_per_object"),
                    n(&["converge", "arm", "repeats", "paths_put_more_than_once"])
                ),
                "",
            ),
            (
                "429 answers / ARM writes",
                format!(
                    "{} / {} = {} %",
                    arm("throttled_429"),
                    arm("writes"),
                    arm("throttled_percent_of_writes")
                ),
                "≤ 1 %",
            ),
            (
                "first / last PUT after operator start",
                format!("{} s / {} s", arm("first_put_s"), arm("last_put_s")),
                "",
            ),
            ("ARM writes while idle", n(&["idle", "arm", "writes"]), "0"),
        ],
    );
}
