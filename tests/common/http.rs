//! An operator of this build with the http resolver.

use azs_csp_testkit::process::Operator;

use super::scenario::start_operator;

/// An operator with the http resolver asking `upstream_url` (500 ms timeout, 1 s cache),
/// watching `namespace` only.
pub fn start_http_operator(upstream_url: &str, namespace: &str) -> Operator {
    start_operator(&[
        "--resolver",
        "http",
        "--resolver-url",
        upstream_url,
        "--resolver-timeout",
        "500ms",
        "--cache-ttl",
        "1s",
        "--watch-namespace",
        namespace,
    ])
}
