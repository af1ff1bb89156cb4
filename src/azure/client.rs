//! The five ARM calls of azure mode (DESIGN.md §8) over the Azure SDK's request pipeline
//! (`azure_core`: bearer tokens from `azure_identity`, `x-ms-client-request-id`, the
//! user agent), answering in the `domain::arm` vocabulary.
//!
//! The SDK's own retry policy is off: a reconcile that fails is retried by the controller
//! with per-object backoff that honours `Retry-After`, and retrying inside one call would hide
//! an outage from the breaker and multiply the requests it is there to limit.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use azure_core::{
    credentials::TokenCredential,
    error::ErrorKind,
    http::{
        ClientOptions, Context, Method, Pipeline, PipelineSendOptions, RawResponse, Request,
        RetryOptions, Transport, Url,
        headers::HeaderName,
        policies::{Policy, auth::BearerTokenAuthorizationPolicy},
    },
};
use serde::Deserialize;
use serde_json::json;
use tracing::{debug, info, warn};

use super::write_budget::{WriteBudget, WriteRate};
use crate::{
    domain::{
        RegistrationKey,
        arm::{
            ArmCustomerSubscription, ArmDeleted, ArmError, ArmObserver, ArmOperation,
            ArmRegistration,
        },
    },
    guid::Guid,
    upstream::{Breaker, BreakerSettings, breaker::Change, error_chain},
};

/// The `upstream` label of ARM's breaker.
pub const UPSTREAM: &str = "arm";
/// The api-version sent unless `--arm-api-version` says otherwise.
pub const DEFAULT_API_VERSION: &str = "2022-06-01";
/// The api-versions the operator speaks.
pub const API_VERSIONS: [&str; 2] = ["2022-06-01", "2017-06-01"];
/// Pages followed at most in one LIST: 100 per page, so a million tenants.
const MAX_PAGES: usize = 10_000;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");
const RETRY_AFTER: HeaderName = HeaderName::from_static("retry-after");
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("x-ms-retry-after-ms");
const REMAINING_WRITES: HeaderName =
    HeaderName::from_static("x-ms-ratelimit-remaining-subscription-writes");

/// How the client is set up.
pub struct ArmSettings {
    /// `--arm-endpoint`, e.g. `https://management.azure.com`.
    pub endpoint: Url,
    pub api_version: String,
    /// Timeout of one request.
    pub timeout: Duration,
    pub writes: WriteRate,
    pub breaker: BreakerSettings,
}

#[derive(thiserror::Error, Debug)]
pub enum ArmClientError {
    #[error("--arm-endpoint {0} is not an https URL")]
    NotHttps(String),
    #[error("--arm-api-version {0} is not one of {API_VERSIONS:?}")]
    ApiVersion(String),
}

/// The ARM client: one per operator, shared by every reconcile.
pub struct ArmClient {
    pipeline: Pipeline,
    endpoint: Url,
    api_version: String,
    breaker: Arc<Breaker>,
    writes: WriteBudget,
    observer: Arc<dyn ArmObserver>,
    recovered: tokio::sync::broadcast::Sender<()>,
}

/// ARM's JSON for a registration.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistrationJson {
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    properties: RegistrationProperties,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RegistrationProperties {
    #[serde(default)]
    object_id: Option<String>,
    #[serde(default)]
    cloud_id: Option<String>,
    #[serde(default)]
    billing_model: Option<String>,
}

/// ARM's JSON for a customerSubscription.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomerJson {
    name: String,
    #[serde(default)]
    properties: CustomerProperties,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CustomerProperties {
    #[serde(default)]
    tenant_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CustomerPage {
    #[serde(default)]
    value: Vec<CustomerJson>,
    #[serde(default)]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct ErrorJson {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// One answer, before it is read as the call's result.
#[derive(Debug)]
struct Answer {
    status: u16,
    request_id: Option<String>,
    body: Vec<u8>,
}

impl ArmClient {
    pub fn new(
        settings: ArmSettings,
        credential: Arc<dyn TokenCredential>,
        transport: Transport,
        observer: Arc<dyn ArmObserver>,
    ) -> Result<Self, ArmClientError> {
        if settings.endpoint.scheme() != "https" {
            return Err(ArmClientError::NotHttps(settings.endpoint.to_string()));
        }
        if !API_VERSIONS.contains(&settings.api_version.as_str()) {
            return Err(ArmClientError::ApiVersion(settings.api_version));
        }
        let scope = format!(
            "{}/.default",
            settings.endpoint.as_str().trim_end_matches('/')
        );
        let bearer: Arc<dyn Policy> =
            Arc::new(BearerTokenAuthorizationPolicy::new(credential, [scope]));
        let options = ClientOptions {
            transport: Some(transport),
            retry: RetryOptions::none(),
            ..Default::default()
        };
        let pipeline = Pipeline::new(
            Some(env!("CARGO_PKG_NAME")),
            Some(env!("CARGO_PKG_VERSION")),
            options,
            Vec::new(),
            vec![bearer],
            None,
        );
        Ok(Self {
            pipeline,
            endpoint: settings.endpoint,
            api_version: settings.api_version,
            breaker: Arc::new(Breaker::new(UPSTREAM, settings.breaker)),
            writes: WriteBudget::new(settings.writes),
            observer,
            recovered: tokio::sync::broadcast::channel(16).0,
        })
    }

    /// ARM's breaker, for metrics.
    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Whether ARM is treated as down.
    pub fn is_down(&self) -> bool {
        self.breaker.state() != crate::upstream::State::Closed
    }

    /// Announces each time ARM answers again after being treated as down.
    pub fn recoveries(&self) -> tokio::sync::broadcast::Receiver<()> {
        self.recovered.subscribe()
    }

    fn url(&self, key: &RegistrationKey, rest: &[&str]) -> Url {
        let mut url = self.endpoint.clone();
        let subscription = key.subscription_id.to_string();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(
                [
                    "subscriptions",
                    subscription.as_str(),
                    "resourceGroups",
                    key.resource_group.as_str(),
                    "providers",
                    "Microsoft.AzureStack",
                    "registrations",
                    key.registration_name.as_str(),
                ]
                .iter()
                .chain(rest),
            );
        }
        url.query_pairs_mut()
            .clear()
            .append_pair("api-version", &self.api_version);
        url
    }

    /// `GET …/registrations/{name}`.
    pub async fn get_registration(
        &self,
        key: &RegistrationKey,
    ) -> Result<ArmRegistration, ArmError> {
        let answer = self
            .call(
                ArmOperation::GetRegistration,
                Method::Get,
                self.url(key, &[]),
                None,
            )
            .await?;
        let found: RegistrationJson = parse(&answer)?;
        Ok(ArmRegistration {
            object_id: found.properties.object_id,
            cloud_id: found.properties.cloud_id,
            billing_model: found.properties.billing_model,
            etag: found.etag,
            request_id: answer.request_id,
        })
    }

    /// `PUT …/customerSubscriptions/{id}`, after the write budget allows it.
    pub async fn put_customer_subscription(
        &self,
        key: &RegistrationKey,
        subscription_id: Guid,
        tenant_id: Option<Guid>,
    ) -> Result<ArmCustomerSubscription, ArmError> {
        let properties = match tenant_id {
            Some(tenant) => json!({"tenantId": tenant}),
            None => json!({}),
        };
        let body = json!({"properties": properties}).to_string();
        let url = self.url(
            key,
            &["customerSubscriptions", &subscription_id.to_string()],
        );
        let answer = self
            .call(
                ArmOperation::PutCustomerSubscription,
                Method::Put,
                url,
                Some(body),
            )
            .await?;
        customer(answer)
    }

    /// `GET …/customerSubscriptions/{id}`; `None` for 404.
    pub async fn get_customer_subscription(
        &self,
        key: &RegistrationKey,
        subscription_id: &str,
    ) -> Result<Option<ArmCustomerSubscription>, ArmError> {
        let url = self.url(key, &["customerSubscriptions", subscription_id]);
        match self
            .call(
                ArmOperation::GetCustomerSubscription,
                Method::Get,
                url,
                None,
            )
            .await
        {
            Ok(answer) => customer(answer).map(Some),
            Err(ArmError::Answered { status: 404, .. }) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `GET …/customerSubscriptions`, following `nextLink` on ARM's own host only: the bearer
    /// token never goes anywhere else.
    pub async fn list_customer_subscriptions(
        &self,
        key: &RegistrationKey,
    ) -> Result<Vec<ArmCustomerSubscription>, ArmError> {
        let mut url = self.url(key, &["customerSubscriptions"]);
        let mut all = Vec::new();
        for _ in 0..MAX_PAGES {
            let answer = self
                .call(
                    ArmOperation::ListCustomerSubscriptions,
                    Method::Get,
                    url,
                    None,
                )
                .await?;
            let page: CustomerPage = parse(&answer)?;
            all.extend(page.value.into_iter().map(|c| ArmCustomerSubscription {
                name: c.name,
                tenant_id: c.properties.tenant_id,
                request_id: answer.request_id.clone(),
            }));
            let Some(next) = page.next_link.filter(|l| !l.is_empty()) else {
                return Ok(all);
            };
            url = Url::parse(&next)
                .ok()
                .filter(|next| next.origin() == self.endpoint.origin())
                .ok_or_else(|| ArmError::Malformed {
                    status: answer.status,
                    reason: format!("nextLink {next:?} is not on {}", self.endpoint),
                    request_id: answer.request_id.clone(),
                })?;
        }
        Err(ArmError::Malformed {
            status: 200,
            reason: format!("more than {MAX_PAGES} pages of customerSubscriptions"),
            request_id: None,
        })
    }

    /// `DELETE …/customerSubscriptions/{id}`, after the write budget allows it; a 404 is done.
    pub async fn delete_customer_subscription(
        &self,
        key: &RegistrationKey,
        subscription_id: &str,
    ) -> Result<ArmDeleted, ArmError> {
        let url = self.url(key, &["customerSubscriptions", subscription_id]);
        match self
            .call(
                ArmOperation::DeleteCustomerSubscription,
                Method::Delete,
                url,
                None,
            )
            .await
        {
            // ARM answers 200 with an empty body (or 204); a body that is not JSON is not ARM's
            // answer (a proxy's page, say), and the tenant may still be there.
            Ok(answer)
                if !answer.body.iter().all(u8::is_ascii_whitespace)
                    && serde_json::from_slice::<serde_json::Value>(&answer.body).is_err() =>
            {
                Err(ArmError::Malformed {
                    status: answer.status,
                    reason: "the DELETE answer's body is not JSON".to_string(),
                    request_id: answer.request_id,
                })
            }
            Ok(answer) => Ok(ArmDeleted {
                existed: true,
                request_id: answer.request_id,
            }),
            Err(ArmError::Answered {
                status: 404,
                request_id,
                ..
            }) => Ok(ArmDeleted {
                existed: false,
                request_id,
            }),
            Err(error) => Err(error),
        }
    }

    /// One request: through the breaker and (for writes) the write budget, measured, and its
    /// outcome fed back to both.
    async fn call(
        &self,
        operation: ArmOperation,
        method: Method,
        url: Url,
        body: Option<String>,
    ) -> Result<Answer, ArmError> {
        if let Err(down) = self.breaker.admit() {
            self.observer
                .answered(operation, "short_circuited", Duration::ZERO);
            return Err(ArmError::Down { cause: down.cause });
        }
        if operation.is_write() {
            self.writes.acquire().await;
        }
        let started = Instant::now();
        let result = self.send(method, url.clone(), body).await;
        let elapsed = started.elapsed();
        let code = match &result {
            Ok(answer) => answer.status.to_string(),
            Err(ArmError::Answered { status, .. } | ArmError::Malformed { status, .. }) => {
                status.to_string()
            }
            Err(ArmError::Credential { .. }) => "credential".to_string(),
            Err(_) => "unreachable".to_string(),
        };
        self.observer.answered(operation, &code, elapsed);
        debug!(
            %operation,
            path = url.path(),
            code,
            request_id = result.as_ref().ok().and_then(|a| a.request_id.as_deref()),
            elapsed_ms = elapsed.as_millis() as u64,
            "ARM request"
        );
        match &result {
            // Throttling says ARM is up and the operator too fast: the write budget holds
            // back, the breaker is not concerned.
            Err(
                error @ ArmError::Answered {
                    status: 429,
                    retry_after,
                    ..
                },
            ) => {
                self.observer.throttled();
                let wait = retry_after.unwrap_or(Duration::from_secs(1));
                warn!(%operation, retry_after_s = wait.as_secs_f64(), %error, "ARM throttled the operator's writes");
                self.writes.hold_off(wait);
            }
            Err(error) if error.is_upstream_failure() => {
                if self.breaker.failed(error) == Change::Opened {
                    let probe = if operation.is_write() {
                        ArmOperation::GetCustomerSubscription
                    } else {
                        operation
                    };
                    self.probe_until_up(probe, url);
                }
            }
            _ => {
                if self.breaker.succeeded() == Change::Recovered {
                    info!("ARM answers again");
                    let _ = self.recovered.send(());
                }
            }
        }
        result
    }

    /// Probes with a GET of the resource that failed until ARM answers (any answer that is
    /// not an upstream failure), then announces the recovery.
    fn probe_until_up(&self, operation: ArmOperation, url: Url) {
        let breaker = self.breaker.clone();
        let pipeline = self.pipeline.clone();
        let recovered = self.recovered.clone();
        let observer = self.observer.clone();
        tokio::spawn(async move {
            let probe = Client {
                pipeline: &pipeline,
            };
            let closed = breaker
                .probe_until_closed(|| async {
                    let started = Instant::now();
                    let result = probe.send(Method::Get, url.clone(), None).await;
                    observer.answered(
                        operation,
                        &result
                            .as_ref()
                            .map_or_else(|_| "unreachable".to_string(), |a| a.status.to_string()),
                        started.elapsed(),
                    );
                    match result {
                        Err(error) if error.is_upstream_failure() => Err(error),
                        _ => Ok(()),
                    }
                })
                .await;
            if closed {
                info!("ARM answers again");
                let _ = recovered.send(());
            }
        });
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<String>,
    ) -> Result<Answer, ArmError> {
        Client {
            pipeline: &self.pipeline,
        }
        .send(method, url, body)
        .await
    }
}

/// The pipeline alone, for the probe task (which outlives no borrow of the client).
struct Client<'a> {
    pipeline: &'a Pipeline,
}

impl Client<'_> {
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<String>,
    ) -> Result<Answer, ArmError> {
        let mut request = Request::new(url, method);
        request.insert_header("accept", "application/json");
        if let Some(body) = body {
            request.insert_header("content-type", "application/json");
            request.set_body(body);
        }
        let options = PipelineSendOptions {
            skip_checks: true,
            ..Default::default()
        };
        let response = self
            .pipeline
            .send(&Context::new(), &mut request, Some(options))
            .await
            .map_err(transport_error)?;
        read_answer(response)
    }
}

fn transport_error(error: azure_core::Error) -> ArmError {
    let reason = error_chain(&error);
    match error.kind() {
        ErrorKind::Credential => ArmError::Credential { reason },
        _ => ArmError::Unreachable { reason },
    }
}

fn retry_after(response: &RawResponse) -> Option<Duration> {
    let headers = response.headers();
    if let Some(ms) = headers
        .get_optional_str(&RETRY_AFTER_MS)
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_millis(ms));
    }
    let value = headers.get_optional_str(&RETRY_AFTER)?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    // An HTTP date.
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.signed_duration_since(chrono::Utc::now()).to_std().ok()?;
    Some(wait)
}

fn read_answer(response: RawResponse) -> Result<Answer, ArmError> {
    let status: u16 = response.status().into();
    let request_id = response
        .headers()
        .get_optional_str(&REQUEST_ID)
        .map(str::to_string);
    if let Some(remaining) = response.headers().get_optional_str(&REMAINING_WRITES) {
        debug!(remaining, "ARM writes remaining");
    }
    let wait = retry_after(&response);
    let body = response.into_body().as_ref().to_vec();
    if (200..300).contains(&status) {
        return Ok(Answer {
            status,
            request_id,
            body,
        });
    }
    let (code, message) = match serde_json::from_slice::<ErrorJson>(&body) {
        Ok(ErrorJson { error }) if !error.code.is_empty() => (error.code, error.message),
        _ => (
            format!("HttpStatus{status}"),
            "the answer carries no ARM error body".to_string(),
        ),
    };
    Err(ArmError::Answered {
        status,
        code,
        message,
        request_id,
        retry_after: wait,
    })
}

fn parse<T: serde::de::DeserializeOwned>(answer: &Answer) -> Result<T, ArmError> {
    serde_json::from_slice(&answer.body).map_err(|e| ArmError::Malformed {
        status: answer.status,
        reason: e.to_string(),
        request_id: answer.request_id.clone(),
    })
}

fn customer(answer: Answer) -> Result<ArmCustomerSubscription, ArmError> {
    let found: CustomerJson = parse(&answer)?;
    Ok(ArmCustomerSubscription {
        name: found.name,
        tenant_id: found.properties.tenant_id,
        request_id: answer.request_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&'static str, &str)], body: &str) -> RawResponse {
        let mut map = azure_core::http::headers::Headers::new();
        for (name, value) in headers {
            map.insert(*name, value.to_string());
        }
        RawResponse::from_bytes(
            azure_core::http::StatusCode::from(status),
            map,
            body.as_bytes().to_vec(),
        )
    }

    #[test]
    fn answers_are_read_as_arm_writes_them() {
        let ok = read_answer(response(200, &[("x-ms-request-id", "r1")], "{}")).unwrap();
        assert_eq!((ok.status, ok.request_id.as_deref()), (200, Some("r1")));
        let cases = [
            (
                response(
                    400,
                    &[("x-ms-request-id", "r2")],
                    r#"{"error":{"code":"InvalidCSPSubscription","message":"not CSP"}}"#,
                ),
                400,
                "InvalidCSPSubscription",
                Some("r2"),
                None,
            ),
            (
                response(
                    429,
                    &[("retry-after", "7")],
                    r#"{"error":{"code":"TooManyRequests","message":"slow"}}"#,
                ),
                429,
                "TooManyRequests",
                None,
                Some(Duration::from_secs(7)),
            ),
            (
                response(503, &[("x-ms-retry-after-ms", "1500")], "<html>down</html>"),
                503,
                "HttpStatus503",
                None,
                Some(Duration::from_millis(1500)),
            ),
            (response(502, &[], ""), 502, "HttpStatus502", None, None),
        ];
        for (answer, want_status, want_code, want_request, want_wait) in cases {
            match read_answer(answer) {
                Err(ArmError::Answered {
                    status,
                    code,
                    request_id,
                    retry_after,
                    ..
                }) => {
                    assert_eq!(status, want_status);
                    assert_eq!(code, want_code);
                    assert_eq!(request_id.as_deref(), want_request);
                    assert_eq!(retry_after, want_wait);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
