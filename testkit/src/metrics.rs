//! The Prometheus text exposition format, read: the operator's `/metrics` and
//! kube-apiserver's. Comments and lines that are not samples are skipped.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::{cluster::TIMEOUT, process::http_get};

/// One sample line: `name{labels} value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    /// The series as printed: the name with its labels (`name{a="b"}`).
    pub series: &'a str,
    pub labels: BTreeMap<&'a str, &'a str>,
    pub value: f64,
}

impl Sample<'_> {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).copied().unwrap_or("")
    }
}

/// The samples of `text`, in order.
pub fn parse(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter_map(parse_line)
}

fn parse_line(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.trim().parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)),
        None => (series, BTreeMap::new()),
    };
    Some(Sample {
        name,
        series,
        labels,
        value,
    })
}

/// `a="x",b="y"` → {a: x, b: y} (label values with escaped quotes are not needed here).
fn parse_labels(labels: &str) -> BTreeMap<&str, &str> {
    let mut out = BTreeMap::new();
    let mut rest = labels;
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',');
        let start = eq + 2;
        let Some(len) = rest[start..].find('"') else {
            break;
        };
        out.insert(key, &rest[start..start + len]);
        rest = &rest[start + len + 1..];
    }
    out
}

/// The value of the sample `series` (name and labels exactly as printed) in `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    parse(text).find(|s| s.series == series).map(|s| s.value)
}

/// Series → value of every sample whose name starts with `prefix`.
pub fn samples_with_prefix(text: &str, prefix: &str) -> BTreeMap<String, f64> {
    parse(text)
        .filter(|s| s.name.starts_with(prefix))
        .map(|s| (s.series.to_owned(), s.value))
        .collect()
}

/// Waits (up to [`TIMEOUT`]) until the sample `series` at `addr`'s `/metrics` satisfies
/// `condition`, and returns its value. An absent series reads as 0, as a counter not yet
/// incremented. Why waiting: the operator counts an outcome after its write returns, so a test
/// that has seen the write (by a watch) can scrape before the count.
pub async fn wait_for_sample(
    addr: SocketAddr,
    series: &str,
    what: &str,
    condition: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + TIMEOUT;
    let mut last = None;
    loop {
        let value = http_get(addr, "/metrics")
            .ok()
            .map(|(_, text)| sample(&text, series).unwrap_or(0.0));
        if let Some(value) = value
            && condition(value)
        {
            return value;
        }
        last = value.or(last);
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for {series}: {what}; last seen: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP x_total X.\n# TYPE x_total counter\nx_total{kind=\"a\",code=\"200\"} 3\nx_total{kind=\"b\"} 1.5\nup 1\n";

    #[test]
    fn samples_with_and_without_labels() {
        assert_eq!(sample(TEXT, "x_total{kind=\"a\",code=\"200\"}"), Some(3.0));
        assert_eq!(sample(TEXT, "up"), Some(1.0));
        assert_eq!(sample(TEXT, "x_total"), None);
        let first = parse(TEXT).next().expect("a sample");
        assert_eq!(first.name, "x_total");
        assert_eq!(first.label("code"), "200");
        assert_eq!(first.label("missing"), "");
        assert_eq!(samples_with_prefix(TEXT, "x_").len(), 2);
    }
}
