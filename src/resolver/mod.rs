//! Subscription metadata and multitenancy approvals from outside the cluster (DESIGN.md §4).
//!
//! One trait, [`MetadataResolver`], with two backends: the catalog (a YAML document from a
//! file or a ConfigMap) and http. Callers pass GUIDs in canonical lower-case form.

pub mod cache;
pub mod catalog;
pub mod catalog_resolver;
pub mod http;
pub mod http_tls;
pub mod stats;
pub mod watch;

#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod test_server;

pub use cache::TtlCache;
pub use catalog::{
    Catalog, CatalogError, CatalogRegistration, CatalogSummary, FederatedCredential,
    ServicePrincipal, check_catalog_file,
};
pub use catalog_resolver::CatalogResolver;
pub use http::{HttpResolver, HttpResolverError, HttpResolverOptions};
pub use stats::{ResolverStats, StatsSnapshot};
pub use watch::{ConfigMapRef, ConfigMapRefError, watch_configmap, watch_file};

use std::{collections::BTreeSet, fmt, sync::Arc};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Lifecycle state of an Azure subscription.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscriptionState {
    Enabled,
    Warned,
    PastDue,
    Disabled,
    Deleted,
}

impl SubscriptionState {
    /// Whether usage can be charged to a subscription in this state.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Enabled | Self::Warned | Self::PastDue)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enabled => "Enabled",
            Self::Warned => "Warned",
            Self::PastDue => "PastDue",
            Self::Disabled => "Disabled",
            Self::Deleted => "Deleted",
        }
    }
}

impl fmt::Display for SubscriptionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What Azure Commerce knows about one subscription (one `subscriptions[]` catalog entry).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionMetadata {
    /// Subscription GUID, lower-case.
    pub id: String,
    /// Directory tenant that owns it, lower-case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    pub state: SubscriptionState,
    /// `CSP`, `APSS`, `PayAsYouGo`, `EnterpriseAgreement` or other text.
    pub offer: String,
    /// Partner that collects: the direct CSP partner, or the indirect provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_partner_id: Option<String>,
    /// The reseller, in the indirect model only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reseller_partner_id: Option<String>,
}

impl SubscriptionMetadata {
    pub fn is_csp(&self) -> bool {
        self.offer == "CSP"
    }
}

/// Identifies a registration resource for the multitenancy approval lookup.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationKey {
    /// Registration subscription GUID, lower-case.
    pub subscription_id: String,
    /// ARM resource group; compared case-insensitively, stored lower-case.
    pub resource_group: String,
    /// ARM name of the registration; compared case-insensitively, stored lower-case.
    pub registration_name: String,
}

impl RegistrationKey {
    /// Builds a key in canonical form (ARM names are case-insensitive).
    pub fn new(subscription_id: &str, resource_group: &str, registration_name: &str) -> Self {
        Self {
            subscription_id: subscription_id.to_ascii_lowercase(),
            resource_group: resource_group.to_ascii_lowercase(),
            registration_name: registration_name.to_ascii_lowercase(),
        }
    }
}

impl fmt::Display for RegistrationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.AzureStack/registrations/{}",
            self.subscription_id, self.resource_group, self.registration_name
        )
    }
}

/// Why a lookup could not be answered: every variant is `MetadataResolverBadGatewayError`.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    #[error("the metadata server answered HTTP {status} for {url}")]
    UnexpectedStatus { url: String, status: u16 },
    #[error("the metadata server did not answer {url} within {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u64 },
    #[error("could not reach the metadata server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the metadata server's answer for {url} is not the documented JSON: {reason}")]
    MalformedBody { url: String, reason: String },
    #[error("no catalog has been loaded yet: {reason}")]
    CatalogUnavailable { reason: String },
}

/// What changed in the upstream data, so that exactly the affected objects are re-evaluated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataChange {
    /// Subscriptions whose metadata appeared, disappeared or changed (lower-case GUIDs).
    pub subscriptions: BTreeSet<String>,
    /// Registrations whose approval changed.
    pub registrations: BTreeSet<RegistrationKey>,
    /// Everything may have changed (e.g. the first catalog was loaded).
    pub everything: bool,
    /// The metadata server answers again after failing: decisions that are
    /// `MetadataResolverBadGatewayError` can be made now, without waiting for their backoff.
    pub upstream_recovered: bool,
}

impl MetadataChange {
    pub fn is_empty(&self) -> bool {
        !self.everything
            && !self.upstream_recovered
            && self.subscriptions.is_empty()
            && self.registrations.is_empty()
    }
}

/// Answers subscription and approval lookups. Implementations are cheap to call repeatedly
/// (they cache) and safe to share between controllers.
pub trait MetadataResolver: Send + Sync + 'static {
    /// Metadata of one subscription; `Ok(None)` when the subscription is unknown.
    fn subscription(
        &self,
        subscription_id: &str,
    ) -> BoxFuture<'_, Result<Option<Arc<SubscriptionMetadata>>, ResolveError>>;

    /// Whether Microsoft approved this registration for multitenancy.
    fn multitenancy_approved(
        &self,
        key: &RegistrationKey,
    ) -> BoxFuture<'_, Result<bool, ResolveError>>;

    /// Notifications of upstream changes. Backends that cannot observe changes (http) never
    /// send; their callers re-check after the cache TTL instead.
    fn changes(&self) -> broadcast::Receiver<MetadataChange>;

    /// How long an answer may be trusted before it should be looked up again; `None` when the
    /// backend pushes every change through [`MetadataResolver::changes`].
    fn refresh_interval(&self) -> Option<std::time::Duration>;

    /// Lookup, cache and upstream counters. Both backends count; what a hit or a miss is for
    /// the catalog is documented in [`catalog_resolver`].
    fn lookup_stats(&self) -> Option<StatsSnapshot> {
        None
    }

    /// Catalog counters, for the catalog backend.
    fn catalog_stats(&self) -> Option<CatalogStats> {
        None
    }
}

/// The state and counters of a catalog backend, for the metrics endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogStats {
    /// Catalogs accepted (including ones identical to the catalog in force).
    pub accepted: u64,
    /// Catalogs rejected because they failed to parse or validate.
    pub rejected: u64,
    /// Times the source could not be read at all.
    pub source_errors: u64,
    /// Whether a catalog is in force.
    pub loaded: bool,
    /// Subscriptions in the catalog in force.
    pub subscriptions: usize,
    /// Multitenancy approvals in the catalog in force.
    pub approvals: usize,
}
