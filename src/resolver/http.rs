//! The http backend (DESIGN.md §4): JSON lookups against `--resolver-url`, cached, coalesced
//! and bounded in flight. Every answer other than the documented 200/404 is a
//! [`ResolveError`], i.e. `MetadataResolverBadGatewayError` for the caller. A circuit breaker
//! ([`crate::upstream`]) treats the server as down after a few consecutive failures: lookups
//! then fail fast without a request while one probe at a time tests it, and a failed request
//! is not sent again for a moment.

use std::{
    future::Future,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::future::{BoxFuture, FutureExt};
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use tokio::{
    sync::{Semaphore, broadcast},
    time::Instant,
};

use super::{
    MetadataChange, MetadataResolver, RegistrationKey, ResolveError, SubscriptionMetadata,
    cache::TtlCache, catalog::SubscriptionEntry, stats::ResolverStats,
};
use crate::{
    guid::Guid,
    upstream::{
        Breaker, BreakerSettings, RecentFailures,
        breaker::Change,
        error_chain,
        tls::{self, TlsConfigError},
    },
};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;
/// How long a failed request's error answers the same lookup without sending it again.
pub const DEFAULT_FAILURE_TTL: Duration = Duration::from_secs(1);
/// The `upstream` label of the metadata server's breaker.
pub const UPSTREAM: &str = "metadata";

/// Documented answers are a few hundred bytes; a larger body is a misbehaving upstream, and
/// reading it whole would let it exhaust our memory.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Settings of [`HttpResolver`]; [`HttpResolverOptions::new`] fills in the defaults.
#[derive(Clone, Debug)]
pub struct HttpResolverOptions {
    /// `--resolver-url`: `BASE` in `BASE/subscriptions/{id}`.
    pub base_url: Url,
    /// `--resolver-timeout`: for a whole request, connect to last body byte.
    pub timeout: Duration,
    /// `--resolver-ca-file`: PEM certificates trusted in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// `--resolver-token-file`: sent as `Authorization: Bearer`, re-read for every request
    /// because projected service-account tokens are rotated in place.
    pub token_file: Option<PathBuf>,
    /// `--cache-ttl`.
    pub cache_ttl: Duration,
    /// Upper bound of concurrent requests to the upstream.
    pub max_in_flight: usize,
    /// How long a failed request's error is the answer to the same lookup.
    pub failure_ttl: Duration,
    /// When the server is treated as down and how it is probed.
    pub breaker: BreakerSettings,
}

impl HttpResolverOptions {
    /// Options with the defaults (5 s timeout, 5 min cache TTL, 16 requests in flight).
    pub fn new(base_url: &str) -> Result<Self, HttpResolverError> {
        let invalid = |reason: &str| HttpResolverError::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let url = Url::parse(base_url).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https"));
        }
        if url.cannot_be_a_base() || url.host_str().is_none() {
            return Err(invalid("the URL must have a host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("the URL must not have a query or fragment"));
        }
        Ok(Self {
            base_url: url,
            timeout: DEFAULT_TIMEOUT,
            ca_file: None,
            token_file: None,
            cache_ttl: DEFAULT_CACHE_TTL,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            failure_ttl: DEFAULT_FAILURE_TTL,
            breaker: BreakerSettings::default(),
        })
    }
}

/// Why the http backend could not be set up (startup errors; lookups use [`ResolveError`]).
#[derive(thiserror::Error, Debug)]
pub enum HttpResolverError {
    #[error("--resolver-url {url:?} is not usable: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    #[error("cannot read the resolver token file {path}: {reason}")]
    TokenFile { path: PathBuf, reason: String },
    #[error("the maximum number of requests in flight must be at least 1")]
    NoConcurrency,
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// [`MetadataResolver`] over the http API of DESIGN.md §4.
pub struct HttpResolver {
    upstream: Arc<Upstream>,
    subscriptions: TtlCache<Guid, Option<Arc<SubscriptionMetadata>>, ResolveError>,
    approvals: TtlCache<RegistrationKey, bool, ResolveError>,
    stats: Arc<ResolverStats>,
}

impl HttpResolver {
    /// Builds the client; fails when the CA or token file cannot be read, so that a
    /// misconfiguration stops the operator at startup rather than failing every lookup.
    pub fn new(options: HttpResolverOptions) -> Result<Self, HttpResolverError> {
        if options.max_in_flight == 0 {
            return Err(HttpResolverError::NoConcurrency);
        }
        let tls = tls::client_config(options.ca_file.as_deref())?;
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(options.timeout)
            // The documented API has no redirects; following one could hand the bearer token
            // to another server.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        if let Some(path) = &options.token_file {
            read_token(path).map_err(|reason| HttpResolverError::TokenFile {
                path: path.clone(),
                reason,
            })?;
        }
        let stats = Arc::new(ResolverStats::default());
        Ok(Self {
            upstream: Arc::new(Upstream {
                client,
                base: options.base_url,
                timeout: options.timeout,
                token_file: options.token_file,
                in_flight: Semaphore::new(options.max_in_flight),
                breaker: Arc::new(Breaker::new(UPSTREAM, options.breaker)),
                recent_failures: RecentFailures::new(options.failure_ttl),
                stats: Arc::clone(&stats),
                changes: broadcast::channel(16).0,
            }),
            subscriptions: TtlCache::new(options.cache_ttl, Arc::clone(&stats)),
            approvals: TtlCache::new(options.cache_ttl, Arc::clone(&stats)),
            stats,
        })
    }

    /// Cache and upstream counters, for metrics.
    pub fn stats(&self) -> &Arc<ResolverStats> {
        &self.stats
    }

    /// The metadata server's circuit breaker, for metrics.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.upstream.breaker
    }

    /// A fresh cached answer; else a fast failure while the server is treated as down or the
    /// request for `path` failed a moment ago; else the answer of a request (coalesced with
    /// others for `key`).
    async fn lookup<K, V, F, Fut>(
        &self,
        cache: &TtlCache<K, V, ResolveError>,
        key: &K,
        path: &[&str],
        fetch: F,
    ) -> Result<V, ResolveError>
    where
        K: Eq + std::hash::Hash + Clone,
        V: Clone + Send + Sync + 'static,
        F: FnOnce(Arc<Upstream>, Url) -> Fut,
        Fut: Future<Output = Result<V, ResolveError>> + Send + 'static,
    {
        if let Some(value) = cache.fresh(key) {
            return Ok(value);
        }
        let url = self.upstream.endpoint(path)?;
        self.upstream.admit(&url)?;
        let upstream = Arc::clone(&self.upstream);
        cache.get_or_fetch(key, move || fetch(upstream, url)).await
    }
}

impl MetadataResolver for HttpResolver {
    fn subscription(
        &self,
        subscription_id: Guid,
    ) -> BoxFuture<'_, Result<Option<Arc<SubscriptionMetadata>>, ResolveError>> {
        async move {
            let segment = subscription_id.to_string();
            self.lookup(
                &self.subscriptions,
                &subscription_id,
                &["subscriptions", &segment],
                |upstream, url| async move { upstream.subscription(&url, subscription_id).await },
            )
            .await
        }
        .boxed()
    }

    fn multitenancy_approved(
        &self,
        key: &RegistrationKey,
    ) -> BoxFuture<'_, Result<bool, ResolveError>> {
        // Not a GUID: no such registration, as in the catalog, and nothing odd in the URL.
        let Some(subscription) = key.subscription_id.guid() else {
            return futures::future::ready(Ok(false)).boxed();
        };
        let key = RegistrationKey::new(subscription, &key.resource_group, &key.registration_name);
        async move {
            let subscription = subscription.to_string();
            let path: [&str; 4] = [
                "registrations",
                &subscription,
                &key.resource_group,
                &key.registration_name,
            ];
            self.lookup(&self.approvals, &key, &path, |upstream, url| async move {
                upstream.multitenancy_approved(&url).await
            })
            .await
        }
        .boxed()
    }

    fn changes(&self) -> broadcast::Receiver<MetadataChange> {
        self.upstream.changes.subscribe()
    }

    fn refresh_interval(&self) -> Option<Duration> {
        Some(self.subscriptions.ttl())
    }

    fn lookup_stats(&self) -> Option<super::StatsSnapshot> {
        Some(self.stats.snapshot())
    }

    fn upstream_down(&self) -> bool {
        self.upstream.breaker.state() != crate::upstream::State::Closed
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ApprovalAnswer {
    multitenancy_approved: bool,
}

/// The part of the resolver that lookups move into their (`'static`) upstream futures.
struct Upstream {
    client: reqwest::Client,
    base: Url,
    timeout: Duration,
    token_file: Option<PathBuf>,
    in_flight: Semaphore,
    breaker: Arc<Breaker>,
    /// Failed requests by URL, answered from here for a moment instead of sent again.
    recent_failures: RecentFailures<String, ResolveError>,
    /// Where probes (sent outside the cache) are counted.
    stats: Arc<ResolverStats>,
    // http cannot observe data changes (callers re-check after the TTL); the only news sent
    // is that the server answers again after failing.
    changes: broadcast::Sender<MetadataChange>,
}

impl Upstream {
    async fn subscription(
        self: &Arc<Self>,
        url: &Url,
        id: Guid,
    ) -> Result<Option<Arc<SubscriptionMetadata>>, ResolveError> {
        let Some(body) = self.get(url).await? else {
            return Ok(None);
        };
        let malformed = |reason: String| ResolveError::MalformedBody {
            url: url.to_string(),
            reason,
        };
        let entry: SubscriptionEntry =
            serde_json::from_slice(&body).map_err(|e| malformed(e.to_string()))?;
        let mut problems = Vec::new();
        let metadata = entry
            .validate("subscription", &mut problems)
            .ok_or_else(|| malformed(problems.join("; ")))?;
        if metadata.id != id {
            return Err(malformed(format!(
                "it describes subscription {} instead of {id}",
                metadata.id
            )));
        }
        Ok(Some(Arc::new(metadata)))
    }

    async fn multitenancy_approved(self: &Arc<Self>, url: &Url) -> Result<bool, ResolveError> {
        let Some(body) = self.get(url).await? else {
            return Ok(false);
        };
        let answer: ApprovalAnswer =
            serde_json::from_slice(&body).map_err(|e| ResolveError::MalformedBody {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        Ok(answer.multitenancy_approved)
    }

    /// `BASE/segment/...`, each segment percent-encoded (resource group and registration
    /// names come from users' manifests).
    fn endpoint(&self, segments: &[&str]) -> Result<Url, ResolveError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ResolveError::Unreachable {
                url: self.base.to_string(),
                reason: "the resolver URL cannot have a path".to_owned(),
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Refuses a request for `url` that would fail anyway: the server is treated as down, or
    /// the same request failed a moment ago.
    fn admit(&self, url: &Url) -> Result<(), ResolveError> {
        if let Some(error) = self.recent_failures.get(&url.to_string()) {
            self.breaker.count_short_circuit();
            return Err(error);
        }
        self.breaker
            .admit()
            .map_err(|down| ResolveError::UpstreamDown {
                url: self.base.to_string(),
                cause: down.cause,
            })
    }

    /// The body of a 200 answer, `None` for 404, an error for anything else; the outcome is
    /// what the breaker counts.
    async fn get(self: &Arc<Self>, url: &Url) -> Result<Option<Vec<u8>>, ResolveError> {
        let result = self.request(url).await;
        match &result {
            Ok(_) => {
                if self.breaker.succeeded() == Change::Recovered {
                    tracing::info!(%url, "the metadata server answers again");
                    self.announce_recovery();
                }
            }
            Err(error) => {
                self.recent_failures
                    .remember(url.to_string(), error.clone());
                if self.breaker.failed(error) == Change::Opened {
                    tokio::spawn(Arc::clone(self).probe_until_up(url.clone()));
                }
            }
        }
        result
    }

    /// Probes with the request that opened the breaker until one is answered (a 404 is an
    /// answer), then lets everything waiting on the server be re-evaluated at once.
    async fn probe_until_up(self: Arc<Self>, url: Url) {
        let closed = self
            .breaker
            .probe_until_closed(|| async {
                let started = Instant::now();
                let result = self.request(&url).await;
                self.stats
                    .record_upstream(started.elapsed(), result.is_ok());
                result.map(|_| ())
            })
            .await;
        if closed {
            self.announce_recovery();
        }
    }

    /// The server answers again: failures remembered are stale, and every decision waiting
    /// on it can be made now.
    fn announce_recovery(&self) {
        self.recent_failures.clear();
        // No receiver (nothing failed yet that waits for it) is fine.
        let _ = self.changes.send(MetadataChange {
            upstream_recovered: true,
            ..MetadataChange::default()
        });
    }

    /// One request, logged: the body of a 200 answer, `None` for 404, an error otherwise.
    async fn request(&self, url: &Url) -> Result<Option<Vec<u8>>, ResolveError> {
        let unreachable = |reason: String| ResolveError::Unreachable {
            url: url.to_string(),
            reason,
        };
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| unreachable("the resolver is shutting down".to_owned()))?;
        let started = Instant::now();
        let mut request = self.client.get(url.clone());
        if let Some(path) = &self.token_file {
            let token = read_token_async(path).await.map_err(&unreachable)?;
            request = request.bearer_auth(token);
        }
        let result = self.send(request, url).await;
        match &result {
            Ok(body) => tracing::debug!(
                %url,
                found = body.is_some(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "metadata lookup"
            ),
            Err(error) => tracing::warn!(
                %url,
                %error,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "metadata lookup failed"
            ),
        }
        result
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<Option<Vec<u8>>, ResolveError> {
        let mut response = request.send().await.map_err(|e| self.classify(e, url))?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            status => {
                return Err(ResolveError::UnexpectedStatus {
                    url: url.to_string(),
                    status: status.as_u16(),
                });
            }
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(e, url))? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(ResolveError::MalformedBody {
                    url: url.to_string(),
                    reason: format!("the body is larger than {MAX_BODY_BYTES} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    }

    fn classify(&self, error: reqwest::Error, url: &Url) -> ResolveError {
        if error.is_timeout() {
            return ResolveError::Timeout {
                url: url.to_string(),
                timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
            };
        }
        ResolveError::Unreachable {
            url: url.to_string(),
            reason: error_chain(&error),
        }
    }
}

fn read_token(path: &Path) -> Result<String, String> {
    clean_token(path, std::fs::read_to_string(path))
}

async fn read_token_async(path: &Path) -> Result<String, String> {
    clean_token(path, tokio::fs::read_to_string(path).await)
}

fn clean_token(path: &Path, read: std::io::Result<String>) -> Result<String, String> {
    let token =
        read.map_err(|e| format!("cannot read the bearer token file {}: {e}", path.display()))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(format!("the bearer token file {} is empty", path.display()));
    }
    Ok(token.to_owned())
}
