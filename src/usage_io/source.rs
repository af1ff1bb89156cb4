//! The stamp's admin ARM endpoint: `Microsoft.Commerce.Admin/subscriberUsageAggregates` (one
//! page per call, the caller follows `continuationToken`) and
//! `Microsoft.Subscriptions.Admin/subscriptions` (local subscription → directory tenant),
//! over the Azure SDK pipeline with a bearer token for `audience` or `{endpoint}/.default`.

use std::sync::Arc;

use azure_core::{
    credentials::TokenCredential,
    http::{
        ClientOptions, Context, Method, Pipeline, PipelineStreamOptions, RetryOptions, Transport,
        Url,
    },
};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use serde::Deserialize;

use super::record_outcome;
use crate::upstream::{Breaker, BreakerSettings, error_chain};

/// The `upstream` label of the source's breaker.
pub const SOURCE_UPSTREAM: &str = "usage-source";
const USAGE_API_VERSION: &str = "2015-06-01-preview";
const SUBSCRIPTIONS_API_VERSION: &str = "2015-11-01";
/// Pages of local subscriptions followed at most.
const MAX_DIRECTORY_PAGES: usize = 10_000;
/// An answer longer than this is not one of the stamp's pages (1,000 usage records are about
/// 0.8 MB): the read stops there instead of holding it.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Where one Registration's usage is read (`spec.usageSource`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEndpoint {
    pub endpoint: String,
    pub provider_subscription_id: String,
    pub audience: Option<String>,
}

impl SourceEndpoint {
    /// The token scope: `audience`, else `{endpoint}/.default`.
    pub fn scope(&self) -> String {
        let audience = self
            .audience
            .as_deref()
            .filter(|a| !a.is_empty())
            .unwrap_or(&self.endpoint)
            .trim_end_matches('/');
        if audience.ends_with("/.default") {
            audience.to_string()
        } else {
            format!("{audience}/.default")
        }
    }

    fn url(&self, provider: &str) -> Result<Url, SourceError> {
        let mut url = Url::parse(&self.endpoint)
            .map_err(|_| SourceError::BadEndpoint(self.endpoint.clone()))?;
        if url.cannot_be_a_base() {
            return Err(SourceError::BadEndpoint(self.endpoint.clone()));
        }
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend([
                "subscriptions",
                self.provider_subscription_id.as_str(),
                "providers",
                provider,
            ]);
        }
        Ok(url)
    }

    /// The records of one window of reported time, from `continuation` when given.
    pub fn records_url(
        &self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        continuation: Option<&str>,
    ) -> Result<Url, SourceError> {
        let mut url = self.url("Microsoft.Commerce.Admin")?;
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push("subscriberUsageAggregates");
        }
        {
            let mut query = url.query_pairs_mut();
            query
                .clear()
                .append_pair(
                    "reportedStartTime",
                    &start.to_rfc3339_opts(SecondsFormat::Secs, true),
                )
                .append_pair(
                    "reportedEndTime",
                    &end.to_rfc3339_opts(SecondsFormat::Secs, true),
                )
                .append_pair("aggregationGranularity", "Hourly")
                .append_pair("api-version", USAGE_API_VERSION);
            if let Some(token) = continuation {
                query.append_pair("continuationToken", token);
            }
        }
        Ok(url)
    }

    fn subscriptions_url(&self) -> Result<Url, SourceError> {
        let mut url = self.url("Microsoft.Subscriptions.Admin")?;
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push("subscriptions");
        }
        url.query_pairs_mut()
            .clear()
            .append_pair("api-version", SUBSCRIPTIONS_API_VERSION);
        Ok(url)
    }
}

/// Why the source gave no answer to use. Messages never carry a token.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    #[error("spec.usageSource.endpoint {0:?} is not a URL")]
    BadEndpoint(String),
    #[error("no credential for the usage source: {0}")]
    NoCredential(String),
    #[error("cannot get a token for {scope}: {reason}")]
    Credential { scope: String, reason: String },
    #[error("{url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status}: {message}")]
    Answered {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url} answered something that is not its documented JSON: {reason}")]
    Malformed { url: String, reason: String },
    #[error("the usage source is treated as down after repeated failures ({cause})")]
    Down { cause: String },
}

impl SourceError {
    /// Whether it says the source is down (what the breaker counts), not that a request is wrong.
    fn is_outage(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Answered { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// How the source client is set up.
pub struct SourceSettings {
    /// The identity: `--usage-credential`, else the §8 one; `Err` says why there is none.
    pub credential: Result<Arc<dyn TokenCredential>, String>,
    /// The transport (system roots plus `--usage-ca-file`, `--usage-timeout`).
    pub transport: Transport,
    pub breaker: BreakerSettings,
}

/// One local subscription of the stamp and its directory tenant.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LocalSubscription {
    pub subscription_id: String,
    #[serde(default)]
    pub tenant_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionPage {
    #[serde(default)]
    value: Vec<LocalSubscription>,
    #[serde(default)]
    next_link: Option<String>,
}

/// The source client: one per operator, shared by every Registration.
pub struct SourceClient {
    sender: Arc<Sender>,
    breaker: Arc<Breaker>,
}

struct Sender {
    pipeline: Pipeline,
    credential: Result<Arc<dyn TokenCredential>, String>,
}

impl SourceClient {
    pub fn new(settings: SourceSettings) -> Self {
        let options = ClientOptions {
            transport: Some(settings.transport),
            // A window that fails is retried as a whole at the next interval.
            retry: RetryOptions::none(),
            ..Default::default()
        };
        let pipeline = Pipeline::new(
            Some(env!("CARGO_PKG_NAME")),
            Some(env!("CARGO_PKG_VERSION")),
            options,
            Vec::new(),
            Vec::new(),
            None,
        );
        Self {
            sender: Arc::new(Sender {
                pipeline,
                credential: settings.credential,
            }),
            breaker: Arc::new(Breaker::new(SOURCE_UPSTREAM, settings.breaker)),
        }
    }

    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// One page of a window's records, as the source wrote it, read into `body` (the caller
    /// parses it, and follows its `continuationToken`). A caller that reads page after page
    /// passes the same `body`: its room is reused, where the pipeline's own collect grows a
    /// new buffer for every page (for a month's catch-up about 2,900 buffers of 1 MB, each
    /// mapped, faulted in, copied into as it grew, and unmapped).
    pub async fn records_page(
        &self,
        source: &SourceEndpoint,
        (start, end): (DateTime<Utc>, DateTime<Utc>),
        continuation: Option<&str>,
        body: &mut Vec<u8>,
    ) -> Result<(), SourceError> {
        let url = source.records_url(start, end, continuation)?;
        self.get(source, url, body).await
    }

    /// Every local subscription of the stamp with its tenant, following `nextLink` on the
    /// endpoint's own host only (the token goes nowhere else).
    pub async fn subscriptions(
        &self,
        source: &SourceEndpoint,
    ) -> Result<Vec<LocalSubscription>, SourceError> {
        let mut url = source.subscriptions_url()?;
        let origin = url.origin();
        let mut all = Vec::new();
        let mut body = Vec::new();
        for _ in 0..MAX_DIRECTORY_PAGES {
            self.get(source, url.clone(), &mut body).await?;
            let page: SubscriptionPage =
                serde_json::from_slice(&body).map_err(|e| SourceError::Malformed {
                    url: redact(&url),
                    reason: e.to_string(),
                })?;
            all.extend(page.value);
            let Some(next) = page.next_link.filter(|l| !l.is_empty()) else {
                return Ok(all);
            };
            url = Url::parse(&next)
                .ok()
                .filter(|next| next.origin() == origin)
                .ok_or_else(|| SourceError::Malformed {
                    url: redact(&url),
                    reason: format!("nextLink {next:?} is not on {}", source.endpoint),
                })?;
        }
        Err(SourceError::Malformed {
            url: redact(&url),
            reason: format!("more than {MAX_DIRECTORY_PAGES} pages of subscriptions"),
        })
    }

    async fn get(
        &self,
        source: &SourceEndpoint,
        url: Url,
        body: &mut Vec<u8>,
    ) -> Result<(), SourceError> {
        if let Err(down) = self.breaker.admit() {
            return Err(SourceError::Down { cause: down.cause });
        }
        let scope = source.scope();
        let result = self.sender.get(&scope, url.clone(), body).await;
        let outcome = match &result {
            Err(error) if error.is_outage() => Err(error),
            _ => Ok(()),
        };
        let (sender, probe_url) = (self.sender.clone(), source.subscriptions_url());
        record_outcome(&self.breaker, outcome, move || {
            let (sender, scope, url) = (sender.clone(), scope.clone(), probe_url.clone());
            async move {
                let url = url.map_err(|e| e.to_string())?;
                match sender.get(&scope, url, &mut Vec::new()).await {
                    Err(error) if error.is_outage() => Err(error.to_string()),
                    _ => Ok(()),
                }
            }
        });
        result
    }
}

/// A URL as messages show it: without its query (a continuation token is opaque and long).
fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.to_string()
}

impl Sender {
    /// GETs `url` into `body` (cleared first, its room kept): `Err` for an answer that is not
    /// 2xx (its ARM error in the message), or that broke off (an outage, as a refused
    /// connection is).
    async fn get(&self, scope: &str, url: Url, body: &mut Vec<u8>) -> Result<(), SourceError> {
        let credential = self
            .credential
            .as_ref()
            .map_err(|reason| SourceError::NoCredential(reason.clone()))?;
        let token =
            credential
                .get_token(&[scope], None)
                .await
                .map_err(|e| SourceError::Credential {
                    scope: scope.to_string(),
                    reason: error_chain(&e),
                })?;
        let shown = redact(&url);
        let mut request = azure_core::http::Request::new(url, Method::Get);
        request.insert_header("accept", "application/json");
        request.insert_header("authorization", format!("Bearer {}", token.token.secret()));
        let options = PipelineStreamOptions {
            skip_checks: true,
            ..Default::default()
        };
        let unreachable = |e: azure_core::Error| SourceError::Unreachable {
            url: shown.clone(),
            reason: error_chain(&e),
        };
        let response = self
            .pipeline
            .stream(&Context::new(), &mut request, Some(options))
            .await
            .map_err(unreachable)?;
        let status: u16 = response.status().into();
        let mut chunks = response.into_body();
        body.clear();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(unreachable)?;
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(SourceError::Malformed {
                    url: shown,
                    reason: format!("the answer is longer than {} MiB", MAX_ANSWER_BYTES >> 20),
                });
            }
            body.extend_from_slice(&chunk);
        }
        if (200..300).contains(&status) {
            return Ok(());
        }
        Err(SourceError::Answered {
            url: shown,
            status,
            message: arm_message(body),
        })
    }
}

/// ARM's `{"error":{"code","message"}}` as `code: message`, else the start of the body.
fn arm_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorJson {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<ErrorJson>(body) {
        Ok(ErrorJson { error }) => format!("{}: {}", error.code, error.message),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            text.chars().take(200).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(endpoint: &str, audience: Option<&str>) -> SourceEndpoint {
        SourceEndpoint {
            endpoint: endpoint.to_string(),
            provider_subscription_id: "11111111-2222-4333-8444-555555555555".to_string(),
            audience: audience.map(str::to_string),
        }
    }

    #[test]
    fn the_scope_is_the_audience_or_the_endpoint() {
        let cases = [
            ("https://admin.local/", None, "https://admin.local/.default"),
            ("https://admin.local", None, "https://admin.local/.default"),
            (
                "https://admin.local",
                Some("https://adminmanagement.tenant.onmicrosoft.com/abc"),
                "https://adminmanagement.tenant.onmicrosoft.com/abc/.default",
            ),
            (
                "https://admin.local",
                Some("https://aud/.default"),
                "https://aud/.default",
            ),
            (
                "https://admin.local",
                Some(""),
                "https://admin.local/.default",
            ),
        ];
        for (endpoint, audience, want) in cases {
            assert_eq!(
                source(endpoint, audience).scope(),
                want,
                "{endpoint} {audience:?}"
            );
        }
    }

    #[test]
    fn urls_are_the_documented_ones() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let s = source("https://127.0.0.1:8443/", None);
        let url = s
            .records_url(at("2026-03-01T00:00:00Z"), at("2026-03-01T01:00:00Z"), None)
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://127.0.0.1:8443/subscriptions/11111111-2222-4333-8444-555555555555/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates?reportedStartTime=2026-03-01T00%3A00%3A00Z&reportedEndTime=2026-03-01T01%3A00%3A00Z&aggregationGranularity=Hourly&api-version=2015-06-01-preview"
        );
        let next = s
            .records_url(
                at("2026-03-01T00:00:00Z"),
                at("2026-03-01T01:00:00Z"),
                Some("a b&c"),
            )
            .unwrap();
        assert!(
            next.as_str().ends_with("&continuationToken=a+b%26c"),
            "{next}"
        );
        assert_eq!(
            s.subscriptions_url().unwrap().as_str(),
            "https://127.0.0.1:8443/subscriptions/11111111-2222-4333-8444-555555555555/providers/Microsoft.Subscriptions.Admin/subscriptions?api-version=2015-11-01"
        );
        assert!(matches!(
            source("not a url", None).subscriptions_url(),
            Err(SourceError::BadEndpoint(_))
        ));
    }

    #[test]
    fn error_bodies_become_messages() {
        let cases: [(&[u8], &str); 3] = [
            (
                br#"{"error":{"code":"Nope","message":"no such window"}}"#,
                "Nope: no such window",
            ),
            (b"<html>bad gateway</html>", "<html>bad gateway</html>"),
            (b"", ""),
        ];
        for (body, want) in cases {
            assert_eq!(arm_message(body), want);
        }
    }

    #[test]
    fn only_outages_count_for_the_breaker() {
        let answered = |status| SourceError::Answered {
            url: String::new(),
            status,
            message: String::new(),
        };
        assert!(answered(502).is_outage());
        assert!(answered(429).is_outage());
        assert!(!answered(401).is_outage());
        assert!(!answered(400).is_outage());
        assert!(
            SourceError::Unreachable {
                url: String::new(),
                reason: String::new()
            }
            .is_outage()
        );
        assert!(!SourceError::NoCredential(String::new()).is_outage());
    }

    /// A bearer token for any scope.
    #[derive(Debug)]
    struct AnyToken;

    #[async_trait::async_trait]
    impl TokenCredential for AnyToken {
        async fn get_token(
            &self,
            _scopes: &[&str],
            _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            let expires =
                azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1);
            Ok(azure_core::credentials::AccessToken::new("token", expires))
        }
    }

    const PAGE_ONE: &str = r#"{"value":[],"continuationToken":"two"}"#;
    const PAGE_TWO: &str = r#"{"value":[]}"#;

    /// A stamp on loopback whose answer the continuation token picks: the two pages above, an
    /// answer a byte longer than [`MAX_ANSWER_BYTES`] (in 1 MiB chunks), one that breaks off
    /// after its first chunk, and an ARM error.
    async fn stamp() -> SourceEndpoint {
        use axum::{
            body::{Body, Bytes},
            extract::Query,
            http::StatusCode,
        };
        type Chunk = Result<Bytes, std::io::Error>;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let answer = |Query(query): Query<std::collections::HashMap<String, String>>| async move {
            let mib = || Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 1 << 20]));
            match query.get("continuationToken").map(String::as_str) {
                None => (StatusCode::OK, Body::from(PAGE_ONE)),
                Some("two") => (StatusCode::OK, Body::from(PAGE_TWO)),
                Some("long") => {
                    let chunks = (0..=MAX_ANSWER_BYTES >> 20).map(|_| mib());
                    let one_more = std::iter::once(Ok(Bytes::from_static(b" ")));
                    let chunks: Vec<Chunk> = chunks.chain(one_more).collect();
                    (
                        StatusCode::OK,
                        Body::from_stream(futures::stream::iter(chunks)),
                    )
                }
                Some("broken") => {
                    let broken = std::io::Error::other("the stamp went away");
                    let chunks: Vec<Chunk> = vec![mib(), Err(broken)];
                    (
                        StatusCode::OK,
                        Body::from_stream(futures::stream::iter(chunks)),
                    )
                }
                Some(_) => (
                    StatusCode::BAD_GATEWAY,
                    Body::from(r#"{"error":{"code":"Busy","message":"try later"}}"#),
                ),
            }
        };
        let app = axum::Router::new().fallback(answer);
        tokio::spawn(async move { axum::serve(listener, app).await });
        source(&endpoint, None)
    }

    fn client() -> SourceClient {
        SourceClient::new(SourceSettings {
            credential: Ok(Arc::new(AnyToken)),
            transport: crate::azure::transport(None, std::time::Duration::from_secs(10))
                .expect("transport"),
            breaker: BreakerSettings::default(),
        })
    }

    #[tokio::test]
    async fn pages_are_read_into_the_callers_buffer_and_reuse_its_room() {
        let (endpoint, client) = (stamp().await, client());
        let window = (Utc::now(), Utc::now());
        let mut body = Vec::with_capacity(4096);
        let room = body.as_ptr();
        client
            .records_page(&endpoint, window, None, &mut body)
            .await
            .expect("page one");
        assert_eq!(body, PAGE_ONE.as_bytes());
        client
            .records_page(&endpoint, window, Some("two"), &mut body)
            .await
            .expect("page two");
        assert_eq!(body, PAGE_TWO.as_bytes(), "the first page was not cleared");
        assert_eq!(
            body.as_ptr(),
            room,
            "a page that fits was read into new room"
        );
    }

    #[tokio::test]
    async fn an_answer_too_long_or_broken_off_or_refused_is_an_error_of_its_kind() {
        let (endpoint, client) = (stamp().await, client());
        let window = (Utc::now(), Utc::now());
        let mut body = Vec::new();
        let read = client
            .records_page(&endpoint, window, Some("long"), &mut body)
            .await;
        assert!(
            matches!(&read, Err(SourceError::Malformed { reason, .. }) if reason.contains("64 MiB")),
            "{read:?}"
        );
        assert!(body.len() <= MAX_ANSWER_BYTES, "{} bytes held", body.len());
        let read = client
            .records_page(&endpoint, window, Some("broken"), &mut body)
            .await;
        assert!(
            matches!(&read, Err(e @ SourceError::Unreachable { .. }) if e.is_outage()),
            "{read:?}"
        );
        let read = client
            .records_page(&endpoint, window, Some("refused"), &mut body)
            .await;
        assert!(
            matches!(&read, Err(SourceError::Answered { status: 502, message, .. }) if message == "Busy: try later"),
            "{read:?}"
        );
    }
}
