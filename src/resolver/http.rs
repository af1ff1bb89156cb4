//! The http backend (DESIGN.md §4): JSON lookups against `--resolver-url`, cached, coalesced
//! and bounded in flight. Every answer other than the documented 200/404 is a
//! [`ResolveError`], i.e. `MetadataResolverBadGatewayError` for the caller.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
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
    cache::TtlCache,
    catalog::SubscriptionEntry,
    http_tls::{self, TlsConfigError},
    stats::ResolverStats,
};
use crate::guid::Guid;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_MAX_IN_FLIGHT: usize = 16;

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
    subscriptions: TtlCache<String, Option<Arc<SubscriptionMetadata>>, ResolveError>,
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
        let tls = http_tls::client_config(options.ca_file.as_deref())?;
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
                failing: AtomicBool::new(false),
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
}

impl MetadataResolver for HttpResolver {
    fn subscription(
        &self,
        subscription_id: &str,
    ) -> BoxFuture<'_, Result<Option<Arc<SubscriptionMetadata>>, ResolveError>> {
        // Not a GUID: no such subscription, as in the catalog, and nothing odd in the URL.
        let Some(id) = Guid::parse(subscription_id).map(|id| id.to_string()) else {
            return futures::future::ready(Ok(None)).boxed();
        };
        async move {
            let upstream = Arc::clone(&self.upstream);
            let key = id.clone();
            self.subscriptions
                .get_or_fetch(
                    &key,
                    move || async move { upstream.subscription(&id).await },
                )
                .await
        }
        .boxed()
    }

    fn multitenancy_approved(
        &self,
        key: &RegistrationKey,
    ) -> BoxFuture<'_, Result<bool, ResolveError>> {
        if Guid::parse(&key.subscription_id).is_none() {
            return futures::future::ready(Ok(false)).boxed();
        }
        let key = RegistrationKey::new(
            &key.subscription_id,
            &key.resource_group,
            &key.registration_name,
        );
        async move {
            let upstream = Arc::clone(&self.upstream);
            let fetch_key = key.clone();
            self.approvals
                .get_or_fetch(&key, move || async move {
                    upstream.multitenancy_approved(&fetch_key).await
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
    /// Whether the last answer was a failure.
    failing: AtomicBool,
    // http cannot observe data changes (callers re-check after the TTL); the only news sent
    // is that the server answers again after failing.
    changes: broadcast::Sender<MetadataChange>,
}

impl Upstream {
    async fn subscription(
        &self,
        id: &str,
    ) -> Result<Option<Arc<SubscriptionMetadata>>, ResolveError> {
        let url = self.endpoint(&["subscriptions", id])?;
        let Some(body) = self.get(&url).await? else {
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

    async fn multitenancy_approved(&self, key: &RegistrationKey) -> Result<bool, ResolveError> {
        let url = self.endpoint(&[
            "registrations",
            &key.subscription_id,
            &key.resource_group,
            &key.registration_name,
        ])?;
        let Some(body) = self.get(&url).await? else {
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

    /// The body of a 200 answer, `None` for 404, an error for anything else.
    async fn get(&self, url: &Url) -> Result<Option<Vec<u8>>, ResolveError> {
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
        let failed = result.is_err();
        if self.failing.swap(failed, Ordering::Relaxed) && !failed {
            tracing::info!(%url, "the metadata server answers again");
            // No receiver (nothing failed yet that waits for it) is fine.
            let _ = self.changes.send(MetadataChange {
                upstream_recovered: true,
                ..MetadataChange::default()
            });
        }
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

/// reqwest's own message is only "error sending request"; the cause (refused, TLS, ...) is
/// further down the chain.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
