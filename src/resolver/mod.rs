//! Subscription metadata and multitenancy approvals from outside the cluster (DESIGN.md §4).
//!
//! One trait, [`MetadataResolver`], with two backends: the catalog (a YAML document from a
//! file or a ConfigMap) and http. Callers parse what they look up into a [`Guid`] first: text that
//! is not a GUID names no subscription and is never looked up.

pub mod cache;
pub mod catalog;
pub mod catalog_resolver;
pub mod http;
pub mod stats;
pub mod watch;

/// Kept under its old name for callers of the resolver's TLS set-up; it lives in `upstream` now,
/// shared with the ARM client.
pub use crate::upstream::tls as http_tls;

pub use cache::TtlCache;
pub use catalog::{
    Catalog, CatalogError, CatalogRegistration, CatalogSummary, FederatedCredential,
    ServicePrincipal, check_catalog_file,
};
pub use catalog_resolver::CatalogResolver;
pub use http::{HttpResolver, HttpResolverError, HttpResolverOptions};
pub use stats::{ResolverStats, StatsSnapshot};
pub use watch::{ConfigMapRef, ConfigMapRefError, watch_configmap, watch_file};

// The domain types the resolver answers with, for its callers.
pub use crate::domain::{RegistrationKey, ResolveError, SubscriptionMetadata, SubscriptionState};

use std::{collections::BTreeSet, sync::Arc};

use futures::future::BoxFuture;
use tokio::sync::broadcast;

use crate::guid::Guid;

/// What changed in the upstream data, so that exactly the affected objects are re-evaluated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataChange {
    /// Subscriptions whose metadata appeared, disappeared or changed.
    pub subscriptions: BTreeSet<Guid>,
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
        subscription_id: Guid,
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

    /// Whether the upstream is treated as down (its circuit breaker is open): a decision that
    /// failed on it then waits for [`MetadataChange::upstream_recovered`] instead of retrying
    /// on its own timer.
    fn upstream_down(&self) -> bool {
        false
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

/// The resolver of azure mode, which decides from ARM's answers and looks nothing up: a lookup
/// is pending with a message saying so, and no change is ever announced.
pub struct NoResolver {
    changes: broadcast::Sender<MetadataChange>,
}

impl Default for NoResolver {
    fn default() -> Self {
        Self {
            changes: broadcast::channel(1).0,
        }
    }
}

impl MetadataResolver for NoResolver {
    fn subscription(
        &self,
        _subscription_id: Guid,
    ) -> BoxFuture<'_, Result<Option<Arc<SubscriptionMetadata>>, ResolveError>> {
        Box::pin(std::future::ready(Err(ResolveError::CatalogUnavailable {
            reason: "azure mode looks nothing up: ARM decides".to_string(),
        })))
    }

    fn multitenancy_approved(
        &self,
        _key: &RegistrationKey,
    ) -> BoxFuture<'_, Result<bool, ResolveError>> {
        Box::pin(std::future::ready(Err(ResolveError::CatalogUnavailable {
            reason: "azure mode looks nothing up: ARM decides".to_string(),
        })))
    }

    fn changes(&self) -> broadcast::Receiver<MetadataChange> {
        self.changes.subscribe()
    }

    fn refresh_interval(&self) -> Option<std::time::Duration> {
        None
    }
}
