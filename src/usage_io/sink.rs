//! The metering system's CloudEvents endpoint (`--usage-sink`): one POST per batch,
//! `application/cloudevents-batch+json`, bearer from `--usage-sink-token-file` (re-read on
//! every request, so a rotated token heals). A batch is acknowledged by a 2xx only.

use std::{path::PathBuf, sync::Arc, time::Duration};

use super::record_outcome;
use crate::upstream::{Breaker, BreakerSettings, error_chain, tls};

/// The `upstream` label of the sink's breaker.
pub const SINK_UPSTREAM: &str = "usage-sink";
const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

pub struct SinkSettings {
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub timeout: Duration,
    pub breaker: BreakerSettings,
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SinkError {
    #[error("--usage-sink {0:?} is not an http(s) URL")]
    BadUrl(String),
    #[error("cannot build the sink's HTTP client: {0}")]
    Client(String),
    #[error("cannot read the sink token file {path}: {reason}")]
    Token { path: String, reason: String },
    #[error("{url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status} to a batch of {events} events")]
    Refused {
        url: String,
        status: u16,
        events: usize,
    },
    #[error("the usage sink is treated as down after repeated failures ({cause})")]
    Down { cause: String },
}

impl SinkError {
    /// The `code` label of `azs_csp_usage_sink_requests_total` (none: nothing was sent).
    pub fn code(&self) -> Option<String> {
        match self {
            Self::Refused { status, .. } => Some(status.to_string()),
            Self::Unreachable { .. } => Some("unreachable".to_string()),
            _ => None,
        }
    }

    fn is_outage(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Refused { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

pub struct SinkClient {
    inner: Arc<Inner>,
    breaker: Arc<Breaker>,
}

struct Inner {
    http: reqwest::Client,
    url: reqwest::Url,
    token_file: Option<PathBuf>,
}

impl SinkClient {
    pub fn new(settings: SinkSettings) -> Result<Self, SinkError> {
        let url = reqwest::Url::parse(&settings.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| SinkError::BadUrl(settings.url.clone()))?;
        let config = tls::client_config(settings.ca_file.as_deref())
            .map_err(|e| SinkError::Client(e.to_string()))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .timeout(settings.timeout)
            .build()
            .map_err(|e| SinkError::Client(e.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                url,
                token_file: settings.token_file,
            }),
            breaker: Arc::new(Breaker::new(SINK_UPSTREAM, settings.breaker)),
        })
    }

    pub fn breaker(&self) -> &Arc<Breaker> {
        &self.breaker
    }

    /// Sends one batch (`events` events in `body`); `Ok` with the 2xx code once acknowledged.
    pub async fn send(&self, body: Vec<u8>, events: usize) -> Result<u16, SinkError> {
        if let Err(down) = self.breaker.admit() {
            return Err(SinkError::Down { cause: down.cause });
        }
        let result = self.inner.post(body, events).await;
        let outcome = match &result {
            Err(error) if error.is_outage() => Err(error),
            _ => Ok(()),
        };
        let inner = self.inner.clone();
        // The probe is an empty batch: it adds nothing to any total.
        record_outcome(&self.breaker, outcome, move || {
            let inner = inner.clone();
            async move {
                match inner.post(b"[]".to_vec(), 0).await {
                    Err(error) if error.is_outage() => Err(error.to_string()),
                    _ => Ok(()),
                }
            }
        });
        result
    }
}

impl Inner {
    async fn post(&self, body: Vec<u8>, events: usize) -> Result<u16, SinkError> {
        let mut request = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, BATCH_CONTENT_TYPE)
            .body(body);
        if let Some(path) = &self.token_file {
            let token = std::fs::read_to_string(path).map_err(|e| SinkError::Token {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            request = request.bearer_auth(token.trim());
        }
        let response = request.send().await.map_err(|e| SinkError::Unreachable {
            url: self.url.to_string(),
            reason: error_chain(&e),
        })?;
        let status = response.status().as_u16();
        let acknowledged = response.status().is_success();
        drain(response).await;
        if acknowledged {
            return Ok(status);
        }
        Err(SinkError::Refused {
            url: self.url.to_string(),
            status,
            events,
        })
    }
}

/// Answer bytes read at most, to keep the connection.
const DRAINED_AT_MOST: usize = 64 * 1024;

/// Reads the answer to its end: hyper puts a connection back in the pool only then, and a new
/// TLS handshake for every batch cost the operator more CPU than the batch (docs/benchmarks.md,
/// U5). A longer answer is dropped, and its connection with it.
async fn drain(mut response: reqwest::Response) {
    let mut read = 0;
    while let Ok(Some(chunk)) = response.chunk().await {
        read += chunk.len();
        if read > DRAINED_AT_MOST {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::serve::ListenerExt;
    use futures::StreamExt;

    use super::*;

    /// A sink on loopback answering `status` with a body whose second half comes later (so
    /// that the client cannot have read it with the head), counting the connections it
    /// accepts.
    async fn counting_sink(status: u16) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/events", listener.local_addr().expect("addr"));
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let listener = listener.tap_io(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let code = axum::http::StatusCode::from_u16(status).expect("status");
        let answer = move || async move {
            let halves =
                futures::stream::iter([r#"{"accepted":"#, "500}"]).then(|half| async move {
                    if half == "500}" {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Ok::<_, std::convert::Infallible>(axum::body::Bytes::from_static(
                        half.as_bytes(),
                    ))
                });
            (code, axum::body::Body::from_stream(halves))
        };
        let app = axum::Router::new().route("/events", axum::routing::post(answer));
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, connections)
    }

    fn client(url: &str) -> SinkClient {
        SinkClient::new(SinkSettings {
            url: url.to_string(),
            token_file: None,
            ca_file: None,
            timeout: Duration::from_secs(5),
            breaker: BreakerSettings::default(),
        })
        .expect("client")
    }

    #[tokio::test]
    async fn batches_share_one_connection_whatever_the_answer() {
        for (status, acknowledged) in [(202, true), (400, false)] {
            let (url, connections) = counting_sink(status).await;
            let sink = client(&url);
            for _ in 0..5 {
                let sent = sink.send(b"[]".to_vec(), 0).await;
                assert_eq!(sent.is_ok(), acknowledged, "{status}: {sent:?}");
            }
            assert_eq!(
                connections.load(Ordering::SeqCst),
                1,
                "five batches answered {status} opened more than one connection"
            );
        }
    }

    #[test]
    fn codes_and_outages() {
        let refused = |status| SinkError::Refused {
            url: String::new(),
            status,
            events: 1,
        };
        let cases = [
            (refused(502), Some("502"), true),
            (refused(429), Some("429"), true),
            (refused(400), Some("400"), false),
            (
                SinkError::Unreachable {
                    url: String::new(),
                    reason: String::new(),
                },
                Some("unreachable"),
                true,
            ),
            (
                SinkError::Down {
                    cause: String::new(),
                },
                None,
                false,
            ),
        ];
        for (error, code, outage) in cases {
            assert_eq!(error.code().as_deref(), code, "{error}");
            assert_eq!(error.is_outage(), outage, "{error}");
        }
    }

    #[test]
    fn the_url_must_be_http() {
        for url in ["ftp://x", "not a url"] {
            let settings = SinkSettings {
                url: url.to_string(),
                token_file: None,
                ca_file: None,
                timeout: Duration::from_secs(1),
                breaker: BreakerSettings::default(),
            };
            assert!(matches!(
                SinkClient::new(settings),
                Err(SinkError::BadUrl(_))
            ));
        }
    }
}
