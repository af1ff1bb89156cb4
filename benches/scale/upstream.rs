//! The metadata server of the http mode: the emulator's `/resolver` (DESIGN.md §4, §10) behind
//! the test kit's fault layer, answering from the generated catalog over plain HTTP on
//! 127.0.0.1; what it answered is counted by the test kit from the layer's record. No catalog
//! editor (the tests' `tests/emulated`): the bench never edits this catalog. It runs on the
//! bench's runtime (its CPU is the bench's CPU).

use azs_csp_operator::emulator::{
    self,
    in_process::{InProcess, InProcessOptions},
};
use azs_csp_testkit::upstream::{
    Upstream,
    resolver::{self, ResolverCounts},
};
use serde_json::{Value, json};

use crate::{Result, measure::round2, plan::Plan};

/// Why the fan-out is not measured with `--resolver http` (also in the JSON and the table).
pub const FANOUT_SKIPPED_HTTP: &str = "skipped with --resolver http: the http backend cannot be told \
    of a change, so a revoked approval reaches the objects only when the cached answer expires \
    (--cache-ttl) and their refresh re-check runs; the time measured would be the TTL";

pub struct MetadataServer {
    /// The operator's `--resolver-url`.
    pub url: String,
    upstream: Upstream,
}

impl MetadataServer {
    /// Serves the catalog the catalog mode would load.
    pub async fn start(catalog: &str) -> Result<Self> {
        let started = InProcess::start(catalog, InProcessOptions::default()).await?;
        let upstream =
            Upstream::serve_on(started.listener, emulator::router(started.emulator), None);
        Ok(Self {
            url: resolver::url(&upstream),
            upstream,
        })
    }

    pub fn snapshot(&self) -> ResolverCounts {
        ResolverCounts::of(&self.upstream.exchanges())
    }
}

/// Requests since `before`, by kind (distinct counts are not differences: left out).
pub fn since_json(now: &ResolverCounts, before: &ResolverCounts) -> Value {
    json!({
        "requests": now.total() - before.total(),
        "subscription_lookups": now.subscription_lookups - before.subscription_lookups,
        "approval_lookups": now.approval_lookups - before.approval_lookups,
        "other_requests": now.other - before.other,
        "not_found": now.not_found - before.not_found,
    })
}

/// What the server answered from the operator's start to convergence, next to what the
/// objects name.
pub fn upstream_json(u: &ResolverCounts, plan: &Plan) -> Value {
    let per = |x: u64, over: usize| (over > 0).then(|| round2(x as f64 / over as f64));
    json!({
        "requests": u.total(),
        "subscription_lookups": u.subscription_lookups,
        "approval_lookups": u.approval_lookups,
        "other_requests": u.other,
        "not_found": u.not_found,
        "distinct_subscriptions": u.distinct_subscriptions,
        "distinct_registrations": u.distinct_registrations,
        "subscription_lookups_per_distinct": per(u.subscription_lookups, u.distinct_subscriptions),
        "requests_per_object": per(u.total(), plan.customers.len()),
        "referenced_subscriptions": plan.referenced_subscriptions(),
        "subscriptions_to_look_up": plan.looked_up_subscriptions(),
    })
}
