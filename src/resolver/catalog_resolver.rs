//! The catalog backend: answers lookups from the last catalog that validated, and tells the
//! controllers exactly what each accepted replacement changed.
//!
//! Lookup counters ([`MetadataResolver::lookup_stats`]) mean what they mean for the http
//! backend, with the catalog in force as the cache: every lookup answered from it is a
//! **hit** (a hash-map read, including answers that the subscription is unknown). A lookup
//! made while no catalog is in force yet is a **miss**: it could not be answered from memory
//! and fails with `CatalogUnavailable`. Nothing is ever fetched per lookup, so there are no
//! coalesced lookups and no upstream requests, errors or latencies (all stay 0); reading and
//! loading catalogs is counted separately by [`MetadataResolver::catalog_stats`].

use std::{
    path::Path,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::future::{BoxFuture, FutureExt};
use tokio::sync::{broadcast, watch};

use super::{
    CatalogStats, MetadataChange, MetadataResolver, RegistrationKey, ResolveError, StatsSnapshot,
    SubscriptionMetadata,
    catalog::{Catalog, CatalogError, read_catalog_text},
    stats::ResolverStats,
};
use crate::guid::Guid;

/// Changes are small and controllers drain them promptly; a receiver that still lags gets
/// `RecvError::Lagged` and must then re-evaluate everything.
const CHANGE_CHANNEL_CAPACITY: usize = 64;

/// [`MetadataResolver`] over an in-memory [`Catalog`] that can be replaced while running.
pub struct CatalogResolver {
    /// Where catalogs come from (a path or `configmap NS/NAME`), for logs and error messages.
    source: String,
    current: RwLock<Option<Arc<Catalog>>>,
    // Serializes replacements so that diffs are computed against the catalog they replace
    // and broadcast in the order they took effect.
    replace_lock: Mutex<()>,
    /// Digest of the text of the catalog in force: the same text again (the file watch's
    /// first look, a ConfigMap resync) is not parsed a second time.
    in_force_digest: Mutex<Option<u64>>,
    last_error: Mutex<Option<String>>,
    changes: broadcast::Sender<MetadataChange>,
    loaded: watch::Sender<bool>,
    accepted: AtomicU64,
    rejected: AtomicU64,
    source_errors: AtomicU64,
    /// Lookup counters (see the module documentation); atomics only.
    lookups: ResolverStats,
}

/// A digest of a source's content, to recognise content seen before without keeping it.
pub(crate) fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

impl CatalogResolver {
    /// A resolver with no catalog yet: lookups fail with `CatalogUnavailable` until the first
    /// successful [`CatalogResolver::replace`].
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            current: RwLock::new(None),
            replace_lock: Mutex::new(()),
            in_force_digest: Mutex::new(None),
            last_error: Mutex::new(None),
            changes: broadcast::channel(CHANGE_CHANNEL_CAPACITY).0,
            loaded: watch::channel(false).0,
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            source_errors: AtomicU64::new(0),
            lookups: ResolverStats::default(),
        }
    }

    /// A resolver with `catalog` in force from the start, for a caller that parsed it
    /// itself. The first [`CatalogResolver::replace`] with the same content finds nothing
    /// changed.
    pub fn with_catalog(source: impl Into<String>, catalog: Catalog) -> Self {
        let resolver = Self::new(source);
        *resolver
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(catalog));
        resolver.loaded.send_replace(true);
        resolver
    }

    /// Loads the catalog file once, for startup: the operator must not start on a missing or
    /// invalid catalog, because every decision it would make would be wrong. Follow up with
    /// [`super::watch::watch_file`] to pick up later edits.
    pub async fn from_file(path: &Path) -> Result<Arc<Self>, CatalogError> {
        let resolver = Arc::new(Self::new(path.display().to_string()));
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| CatalogError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        let text = read_catalog_text(path, bytes)?;
        resolver.replace(&text)?;
        Ok(resolver)
    }

    fn digest_in_force(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.in_force_digest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Where this resolver's catalogs come from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Validates `text` and, if it is a valid catalog, puts it in force and broadcasts what
    /// changed (everything, for the first one). An invalid catalog is rejected whole: the
    /// catalog in force stays, the error is logged and counted.
    pub fn replace(&self, text: &str) -> Result<MetadataChange, CatalogError> {
        let digest = digest(text.as_bytes());
        if self.current().is_some() && *self.digest_in_force() == Some(digest) {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
            tracing::debug!(source = %self.source, "catalog unchanged");
            return Ok(MetadataChange::default());
        }
        let new = match Catalog::parse(text) {
            Ok(catalog) => Arc::new(catalog),
            Err(error) => {
                self.reject(&error);
                return Err(error);
            }
        };
        let _serialized = self
            .replace_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let old = self.current();
        let change = match &old {
            None => MetadataChange {
                everything: true,
                ..MetadataChange::default()
            },
            Some(old) => Catalog::diff(old, &new),
        };
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&new));
        *self.digest_in_force() = Some(digest);
        self.accepted.fetch_add(1, Ordering::Relaxed);
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        if !change.is_empty() {
            tracing::info!(
                source = %self.source,
                subscriptions = new.subscription_count(),
                multitenancy_approvals = new.approval_count(),
                changed_subscriptions = change.subscriptions.len(),
                changed_registrations = change.registrations.len(),
                first_load = change.everything,
                "catalog accepted"
            );
            // No receiver yet is fine: whoever subscribes later reads the current catalog.
            let _ = self.changes.send(change.clone());
        } else {
            tracing::debug!(source = %self.source, "catalog unchanged");
        }
        self.loaded.send_replace(true);
        Ok(change)
    }

    /// Records that the source could not deliver a catalog at all (file missing, ConfigMap
    /// without `catalog.yaml`, ...). The catalog in force stays.
    pub fn record_source_error(&self, reason: &str) {
        self.source_errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            source = %self.source,
            error = %reason,
            keeping_last_good = self.is_loaded(),
            "catalog source unavailable"
        );
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
    }

    fn reject(&self, error: &CatalogError) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let (line, column) = match error {
            CatalogError::Syntax { line, column, .. } => (*line, *column),
            _ => (None, None),
        };
        tracing::error!(
            source = %self.source,
            error = %error,
            line,
            column,
            rejected_total = self.rejected_catalogs(),
            keeping_last_good = self.is_loaded(),
            "catalog rejected"
        );
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
    }

    /// The catalog in force, if one has loaded.
    pub fn current(&self) -> Option<Arc<Catalog>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Why the latest catalog from the source was not accepted, if it was not; e.g. to say
    /// why [`CatalogResolver::wait_loaded`] timed out at startup.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
    }

    /// Resolves once a catalog is in force (immediately if one already is). Use it with a
    /// timeout at startup for the ConfigMap source.
    pub async fn wait_loaded(&self) {
        let mut loaded = self.loaded.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we borrow `self`.
        let _ = loaded.wait_for(|loaded| *loaded).await;
    }

    /// Catalogs rejected because they failed to parse or validate.
    pub fn rejected_catalogs(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Catalogs accepted (including ones identical to the catalog in force).
    pub fn accepted_catalogs(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Times the source could not be read at all.
    pub fn source_errors(&self) -> u64 {
        self.source_errors.load(Ordering::Relaxed)
    }

    /// The catalog in force for one lookup, counting the lookup as a hit, or as a miss when
    /// no catalog is in force yet.
    fn loaded_catalog(&self) -> Result<Arc<Catalog>, ResolveError> {
        let current = self.current();
        if current.is_some() {
            self.lookups.record_hit();
        } else {
            self.lookups.record_miss();
        }
        current.ok_or_else(|| {
            let reason = match self.last_error() {
                Some(error) => format!("from {}: {error}", self.source),
                None => format!("waiting for the first catalog from {}", self.source),
            };
            ResolveError::CatalogUnavailable { reason }
        })
    }
}

impl MetadataResolver for CatalogResolver {
    fn subscription(
        &self,
        subscription_id: Guid,
    ) -> BoxFuture<'_, Result<Option<Arc<SubscriptionMetadata>>, ResolveError>> {
        let result = self
            .loaded_catalog()
            .map(|catalog| catalog.get(subscription_id));
        futures::future::ready(result).boxed()
    }

    fn multitenancy_approved(
        &self,
        key: &RegistrationKey,
    ) -> BoxFuture<'_, Result<bool, ResolveError>> {
        let result = self
            .loaded_catalog()
            .map(|catalog| catalog.is_approved(key));
        futures::future::ready(result).boxed()
    }

    fn changes(&self) -> broadcast::Receiver<MetadataChange> {
        self.changes.subscribe()
    }

    fn refresh_interval(&self) -> Option<Duration> {
        None
    }

    fn lookup_stats(&self) -> Option<StatsSnapshot> {
        Some(self.lookups.snapshot())
    }

    fn catalog_stats(&self) -> Option<CatalogStats> {
        let current = self.current();
        Some(CatalogStats {
            accepted: self.accepted_catalogs(),
            rejected: self.rejected_catalogs(),
            source_errors: self.source_errors(),
            loaded: current.is_some(),
            subscriptions: current.as_ref().map_or(0, |c| c.subscription_count()),
            approvals: current.as_ref().map_or(0, |c| c.approval_count()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guid::g;

    const SUB_A: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";
    const SUB_B: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";

    fn catalog_text(state_a: &str) -> String {
        format!(
            "subscriptions:\n- {{id: {SUB_A}, state: {state_a}, offer: CSP}}\n- {{id: {SUB_B}, state: Enabled, offer: CSP}}\nmultitenancyApprovals:\n- {{subscriptionId: {SUB_B}, resourceGroup: rg, registrationName: r}}\n"
        )
    }

    #[tokio::test]
    async fn lookups_fail_until_the_first_catalog_loads() {
        let resolver = CatalogResolver::new("test");
        assert!(!resolver.is_loaded());
        let error = resolver
            .subscription(g(SUB_A))
            .await
            .expect_err("unavailable");
        assert!(matches!(error, ResolveError::CatalogUnavailable { .. }));
        assert!(
            error
                .to_string()
                .contains("waiting for the first catalog from test"),
            "{error}"
        );

        assert!(resolver.replace("subscriptions: [").is_err());
        let error = resolver
            .multitenancy_approved(&RegistrationKey::new(SUB_B, "rg", "r"))
            .await
            .expect_err("still unavailable");
        assert!(
            error.to_string().contains("not a valid catalog document"),
            "{error}"
        );
        assert_eq!(resolver.refresh_interval(), None);
    }

    #[tokio::test]
    async fn replace_keeps_the_last_good_catalog_counts_rejections_and_broadcasts_diffs() {
        let resolver = CatalogResolver::new("test");
        let mut changes = resolver.changes();

        let first = resolver.replace(&catalog_text("Enabled")).expect("valid");
        assert!(first.everything);
        assert_eq!(changes.try_recv().expect("first load broadcast"), first);
        tokio::time::timeout(Duration::from_secs(1), resolver.wait_loaded())
            .await
            .expect("loaded");

        let bad = catalog_text("Enabled").replace("offer: CSP}\n- {", "offer: ''}\n- {");
        let error = resolver.replace(&bad).expect_err("invalid");
        assert!(
            error.to_string().contains("subscriptions[0].offer"),
            "{error}"
        );
        assert_eq!(resolver.rejected_catalogs(), 1);
        assert!(
            changes.try_recv().is_err(),
            "a rejected catalog broadcasts nothing"
        );
        let a = resolver
            .subscription(g(SUB_A))
            .await
            .expect("ok")
            .expect("known");
        assert_eq!(a.offer, "CSP", "the last good catalog stays in force");

        let change = resolver.replace(&catalog_text("Disabled")).expect("valid");
        assert_eq!(
            change.subscriptions.iter().collect::<Vec<_>>(),
            vec![&g(SUB_A)]
        );
        assert!(change.registrations.is_empty() && !change.everything);
        assert_eq!(changes.try_recv().expect("diff broadcast"), change);
        let a = resolver
            .subscription(g(SUB_A))
            .await
            .expect("ok")
            .expect("known");
        assert_eq!(a.state, crate::resolver::SubscriptionState::Disabled);
        assert!(
            resolver
                .multitenancy_approved(&RegistrationKey::new(SUB_B, "RG", "R"))
                .await
                .expect("ok")
        );

        let same = resolver.replace(&catalog_text("Disabled")).expect("valid");
        assert!(same.is_empty());
        assert!(
            changes.try_recv().is_err(),
            "an unchanged catalog broadcasts nothing"
        );
        assert_eq!(resolver.accepted_catalogs(), 3);
        assert_eq!(resolver.rejected_catalogs(), 1);
    }

    #[tokio::test]
    async fn every_lookup_is_counted_as_a_hit_or_before_the_first_catalog_a_miss() {
        let resolver = CatalogResolver::new("test");
        let zero = resolver
            .lookup_stats()
            .expect("the catalog backend counts lookups");
        assert_eq!(
            zero,
            StatsSnapshot {
                upstream_latency_buckets: zero.upstream_latency_buckets.clone(),
                ..StatsSnapshot::default()
            }
        );

        let key = RegistrationKey::new(SUB_B, "rg", "r");
        assert!(resolver.subscription(g(SUB_A)).await.is_err());
        assert!(resolver.multitenancy_approved(&key).await.is_err());
        resolver.replace(&catalog_text("Enabled")).expect("valid");
        assert!(resolver.subscription(g(SUB_A)).await.expect("ok").is_some());
        assert!(
            resolver
                .subscription(g(&SUB_A.to_uppercase()))
                .await
                .expect("ok")
                .is_some()
        );
        let unknown = "11111111-2222-4333-8444-555555555555";
        assert!(
            resolver
                .subscription(g(unknown))
                .await
                .expect("ok")
                .is_none()
        );
        assert!(resolver.multitenancy_approved(&key).await.expect("ok"));
        assert!(
            !resolver
                .multitenancy_approved(&RegistrationKey::new(SUB_A, "rg", "r"))
                .await
                .expect("ok")
        );

        let stats = resolver.lookup_stats().expect("counted");
        assert_eq!((stats.hits, stats.misses), (5, 2), "{stats:?}");
        assert_eq!(
            (
                stats.coalesced,
                stats.upstream_requests,
                stats.upstream_errors
            ),
            (0, 0, 0),
            "a catalog lookup never goes upstream: {stats:?}"
        );
        assert_eq!(stats.upstream_latency_seconds_sum, 0.0);
        assert_eq!(
            stats.upstream_latency_buckets.last(),
            Some(&(f64::INFINITY, 0))
        );
        // Loading and replacing catalogs are not lookups.
        resolver.replace(&catalog_text("Warned")).expect("valid");
        assert!(resolver.replace("subscriptions: [").is_err());
        assert_eq!(resolver.lookup_stats().expect("counted").hits, 5);
    }

    #[tokio::test]
    async fn from_file_refuses_missing_and_invalid_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.yaml");
        let error = CatalogResolver::from_file(&path)
            .await
            .err()
            .expect("missing");
        assert!(matches!(error, CatalogError::Read { .. }), "{error}");

        std::fs::write(&path, "subscriptions: 3\n").expect("write");
        let error = CatalogResolver::from_file(&path)
            .await
            .err()
            .expect("invalid");
        assert!(matches!(error, CatalogError::Syntax { .. }), "{error}");

        std::fs::write(&path, catalog_text("Warned")).expect("write");
        let resolver = CatalogResolver::from_file(&path).await.expect("valid");
        assert!(resolver.subscription(g(SUB_A)).await.expect("ok").is_some());
        assert_eq!(resolver.source(), path.display().to_string());
    }
}
