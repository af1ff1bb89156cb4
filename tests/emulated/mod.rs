//! The metadata upstream of the http-resolver tests and the bench: the emulator of DESIGN.md
//! §10 in this process, its `/resolver` routes answering the contract of §4, behind the test
//! kit's fault layer. One home for three users: the integration tests (`mod emulated;`), the
//! bench and the library's own tests of the http backend (`#[path]` to this file).
//!
//! The catalog is edited while it runs through the emulator's catalog state
//! ([`CatalogEditor`]); what the upstream was asked is counted from the layer's record of
//! every exchange ([`ResolverCounts::of`]), not by a handler of its own.
#![allow(dead_code)] // each user takes its own subset

use std::{collections::HashSet, ops::Deref};

use azs_csp_operator::emulator::{
    self, Emulator,
    in_process::{CatalogEditor, InProcess, InProcessOptions},
};
use azs_csp_testkit::upstream::{Exchange, Upstream};

const SUBSCRIPTIONS: &str = "/resolver/subscriptions/";
const REGISTRATIONS: &str = "/resolver/registrations/";

/// The emulator behind the fault layer; derefs to the layer ([`Upstream`]) for faults and its
/// record.
pub struct Metadata {
    upstream: Upstream,
    emulator: std::sync::Arc<Emulator>,
    editor: CatalogEditor,
}

impl Metadata {
    /// An empty catalog over plain HTTP.
    pub async fn start() -> Self {
        Self::serve("{}", None).await.expect("an emulator")
    }

    /// `catalog_yaml` over plain HTTP.
    pub async fn with_catalog(
        catalog_yaml: &str,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Self::serve(catalog_yaml, None).await
    }

    /// `catalog_yaml`, over HTTPS with `tls`'s certificate when given.
    pub async fn serve(
        catalog_yaml: &str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let started = InProcess::start(catalog_yaml, InProcessOptions::default()).await?;
        let mut options = serde_saphyr::Options::default();
        // A generated catalog of 10,000 subscriptions has more nodes than the default budget.
        options.budget = None;
        options.leading_zero_numbers_as_strings = true;
        let document = serde_saphyr::from_str_with_options(catalog_yaml, options)?;
        let editor = CatalogEditor::new(started.emulator.clone(), document);
        let upstream = Upstream::serve_on(
            started.listener,
            emulator::router(started.emulator.clone()),
            tls,
        );
        Ok(Self {
            upstream,
            emulator: started.emulator,
            editor,
        })
    }

    /// The `--resolver-url` of the operator: the emulator's `/resolver`.
    pub fn url(&self) -> String {
        format!("{}/resolver", self.upstream.url())
    }

    pub fn emulator(&self) -> &Emulator {
        &self.emulator
    }

    /// Serves `GET /resolver/subscriptions/{id}` with this catalog entry from now on.
    pub fn add_subscription(&self, id: &str, entry: serde_json::Value) {
        self.editor
            .add_subscription(id, entry)
            .unwrap_or_else(|e| panic!("the emulator refused the subscription {id}: {e}"));
    }

    /// [`Metadata::add_subscription`] of many, put in force at once.
    pub fn add_subscriptions(
        &self,
        entries: impl IntoIterator<Item = (String, serde_json::Value)>,
    ) {
        self.editor
            .add_subscriptions(entries)
            .unwrap_or_else(|e| panic!("the emulator refused a subscription: {e}"));
    }

    /// Approves (or withdraws the approval of) the registration in the catalog.
    pub fn set_approval(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        approved: bool,
    ) {
        self.editor
            .set_approval(subscription, resource_group, name, approved)
            .unwrap_or_else(|e| panic!("the emulator refused the approval: {e}"));
    }

    /// What the upstream was asked so far.
    pub fn counts(&self) -> ResolverCounts {
        ResolverCounts::of(&self.upstream.exchanges())
    }

    /// How often this subscription was looked up.
    pub fn subscription_lookups(&self, id: &str) -> u64 {
        let id = id.to_ascii_lowercase();
        self.upstream
            .exchanges()
            .iter()
            .filter(|e| {
                e.path
                    .strip_prefix(SUBSCRIPTIONS)
                    .is_some_and(|key| key.eq_ignore_ascii_case(&id))
            })
            .count() as u64
    }
}

impl Deref for Metadata {
    type Target = Upstream;

    fn deref(&self) -> &Upstream {
        &self.upstream
    }
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
    /// Counted from the layer's record of every request it saw (keys case-insensitively, as
    /// the catalog matches them).
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
