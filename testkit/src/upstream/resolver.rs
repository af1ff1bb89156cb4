//! What a metadata upstream of the http-resolver contract (DESIGN.md §4) was asked, counted
//! from the layer's record of every exchange: by kind, and by key case-insensitively, as the
//! catalog matches keys. The emulator serves that contract under `/resolver`; counting needs
//! no operator type, so it is here once for the tests and the bench.

use std::collections::HashSet;

use super::{Exchange, Upstream};

const SUBSCRIPTIONS: &str = "/resolver/subscriptions/";
const REGISTRATIONS: &str = "/resolver/registrations/";

/// The operator's `--resolver-url` for an upstream serving the emulator: its `/resolver`.
pub fn url(upstream: &Upstream) -> String {
    format!("{}/resolver", upstream.url())
}

/// Requests by kind, and how many distinct keys each kind asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolverCounts {
    pub subscription_lookups: u64,
    pub approval_lookups: u64,
    /// Paths outside the §4 API.
    pub other: u64,
    /// 404 answers (unknown subscription, registration not approved, other paths).
    pub not_found: u64,
    pub distinct_subscriptions: usize,
    pub distinct_registrations: usize,
}

impl ResolverCounts {
    /// Of the layer's record ([`Upstream::exchanges`]).
    pub fn of(exchanges: &[Exchange]) -> Self {
        let mut counts = Self::default();
        let mut subscriptions = HashSet::new();
        let mut registrations = HashSet::new();
        for exchange in exchanges {
            let path = exchange.path.as_str();
            if let Some(id) = path.strip_prefix(SUBSCRIPTIONS) {
                counts.subscription_lookups += 1;
                subscriptions.insert(id.to_ascii_lowercase());
            } else if let Some(key) = path.strip_prefix(REGISTRATIONS) {
                counts.approval_lookups += 1;
                registrations.insert(key.to_ascii_lowercase());
            } else {
                counts.other += 1;
            }
            if exchange.status == Some(404) {
                counts.not_found += 1;
            }
        }
        counts.distinct_subscriptions = subscriptions.len();
        counts.distinct_registrations = registrations.len();
        counts
    }

    pub fn total(&self) -> u64 {
        self.subscription_lookups + self.approval_lookups + self.other
    }
}

/// How often the subscription `id` was looked up.
pub fn subscription_lookups(exchanges: &[Exchange], id: &str) -> u64 {
    exchanges
        .iter()
        .filter(|e| {
            e.path
                .strip_prefix(SUBSCRIPTIONS)
                .is_some_and(|key| key.eq_ignore_ascii_case(id))
        })
        .count() as u64
}
