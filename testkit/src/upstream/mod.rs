//! The one metadata test server: a fault layer in front of a handler, on 127.0.0.1.
//!
//! The layer decides per request from the current [`Mode`] (healthy, a status code, a canned
//! answer, a malformed body, a delay, a hang, a dropped connection, flapping) and, per
//! listener, whether connections are refused. Behind it sits an `axum::Router`: the emulator
//! of DESIGN.md §10 (its `/resolver` routes answer the http-resolver contract of §4), given to
//! [`Upstream::serve`] by the operator's tests and bench, which alone know it; or, from
//! [`Upstream::start`], nothing at all (a 404 for every path). The layer records every request
//! it sees (method, path, `Authorization` header, the answer's status) and how many were in
//! flight at most; [`resolver`] counts that record by the kinds of the http-resolver contract.

pub mod resolver;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Body, response::IntoResponse};
use hyper::{Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How the layer answers the next requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The handler answers.
    Healthy,
    /// Every request is answered with this HTTP status (and a JSON error body).
    Status(u16),
    /// Every request is answered with exactly this status and body.
    Answer(u16, String),
    /// Answers 200 with a body that is not the documented JSON.
    Malformed,
    /// The handler answers after this delay (a slow upstream).
    Delay(Duration),
    /// Accepts the request and never answers.
    Hang,
    /// Reads the request and closes the connection without answering.
    Drop,
    /// Flaps: requests alternate between the handler's answer and a 502.
    Alternate,
}

/// What the layer saw.
#[derive(Default)]
struct Log {
    connections: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Requests seen in [`Mode::Alternate`], to alternate on.
    flaps: AtomicU64,
    seen: Mutex<Vec<Seen>>,
}

struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
    at: tokio::time::Instant,
    /// The answer's status and `Retry-After`, once answered.
    status: Option<u16>,
    retry_after: Option<String>,
}

/// One request the layer saw, and what it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub method: String,
    pub path: String,
    /// When the request arrived.
    pub at: tokio::time::Instant,
    /// `None` while unanswered (or when the connection was dropped or hangs).
    pub status: Option<u16>,
    pub retry_after: Option<String>,
}

/// A Kubernetes-style Status, so that the server also stands in for an API server lacking a
/// resource.
const NOT_FOUND: &str = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#;

struct Shared {
    /// Whether a connection serves more than one request (see [`Upstream::keep_connections`]).
    keep_alive: AtomicBool,
    mode: Mutex<Mode>,
    /// Only requests whose path contains this get the mode; the others are answered healthy.
    scope: Mutex<Option<String>>,
    log: Log,
    handler: Router,
}

/// The server. Connections are accepted until [`Upstream::refuse_connections`] or drop.
pub struct Upstream {
    pub addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    /// The accept loop; `None` while connections are refused.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Upstream {
    /// Plain HTTP answering 404 to every path (the modes still apply).
    pub async fn start() -> Self {
        let nothing = Router::new()
            .fallback(|| async { canned(StatusCode::NOT_FOUND.as_u16(), NOT_FOUND.to_owned()) });
        Self::serve(nothing, None).await
    }

    /// Any handler behind the fault layer.
    pub async fn serve(handler: Router, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        Self::serve_on(listener, handler, tls)
    }

    /// [`Upstream::serve`] on a listener bound beforehand: for a handler that must know its
    /// own address (the emulator names itself in tokens and `nextLink`s).
    pub fn serve_on(listener: TcpListener, handler: Router, tls: Option<TlsAcceptor>) -> Self {
        let addr = listener.local_addr().expect("upstream addr");
        let upstream = Self {
            addr,
            tls,
            shared: Arc::new(Shared {
                keep_alive: AtomicBool::new(false),
                mode: Mutex::new(Mode::Healthy),
                scope: Mutex::new(None),
                log: Log::default(),
                handler,
            }),
            task: Mutex::new(None),
        };
        upstream.accept(listener);
        upstream
    }

    fn accept(&self, listener: TcpListener) {
        let shared = Arc::clone(&self.shared);
        let tls = self.tls.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                shared.log.connections.fetch_add(1, Ordering::SeqCst);
                // As servers that keep connections do (nginx's tcp_nodelay): an answer's last
                // segment is not held back until the client acknowledges the one before.
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(stream, tls.clone(), Arc::clone(&shared)));
            }
        });
        *lock(&self.task) = Some(task);
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Connections accepted from now on serve request after request, as a real stamp's and
    /// metering system's do (the bench's usage phase: a TLS handshake per request would be
    /// most of what it measures). By default a connection serves one request, so that
    /// [`Upstream::refuse_connections`] takes effect at the next request; with this it does
    /// only for new connections.
    pub fn keep_connections(&self) {
        self.shared.keep_alive.store(true, Ordering::SeqCst);
    }

    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.scope) = None;
        *lock(&self.shared.mode) = mode;
    }

    /// `mode` for the requests whose path contains `path_part` only (e.g. ARM's
    /// `/providers/` or Entra ID's `/oauth2/`); the others are answered healthy.
    pub fn set_mode_for(&self, path_part: &str, mode: Mode) {
        *lock(&self.shared.scope) = Some(path_part.to_string());
        *lock(&self.shared.mode) = mode;
    }

    /// Every request so far with what it was answered, in the order they arrived.
    pub fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.shared.log.seen)
            .iter()
            .map(|s| Exchange {
                method: s.method.clone(),
                path: s.path.clone(),
                at: s.at,
                status: s.status,
                retry_after: s.retry_after.clone(),
            })
            .collect()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.log.connections.load(Ordering::SeqCst)
    }

    /// Requests the layer saw, whatever it answered.
    pub fn requests(&self) -> u64 {
        self.shared.log.requests.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.shared.log.max_in_flight.load(Ordering::SeqCst)
    }

    /// The request paths, in the order they arrived.
    pub fn paths(&self) -> Vec<String> {
        lock(&self.shared.log.seen)
            .iter()
            .map(|s| s.path.clone())
            .collect()
    }

    /// The `Authorization` header of each request, in the order they arrived.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        lock(&self.shared.log.seen)
            .iter()
            .map(|s| s.authorization.clone())
            .collect()
    }

    /// Stops listening: new connections are refused until [`Upstream::accept_connections`].
    pub fn refuse_connections(&self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }

    /// Stops listening and waits until the listener is closed: connections are refused from
    /// the moment this returns.
    pub async fn stop(&self) {
        let task = lock(&self.task).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same address after [`Upstream::refuse_connections`].
    pub async fn accept_connections(&self) {
        if lock(&self.task).is_some() {
            return;
        }
        // The aborted accept loop drops its listener when the runtime next polls it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.accept(listener);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.refuse_connections();
    }
}

async fn connection(stream: TcpStream, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let keep_alive = shared.keep_alive.load(Ordering::SeqCst);
    let service = hyper::service::service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { answer(request, &shared).await }
    });
    // One request per connection unless kept (the operator's tests do not ask): refusing
    // connections then takes effect at the next request.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(keep_alive);
    // Errors end this connection only (a dropped connection is one, on purpose).
    match tls {
        Some(acceptor) => {
            if let Ok(stream) = acceptor.accept(stream).await {
                let _ = http.serve_connection(TokioIo::new(stream), service).await;
            }
        }
        None => {
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        }
    }
}

/// The connection is closed without an answer (hyper drops it when the service fails).
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by the fault layer")
    }
}

impl std::error::Error for Dropped {}

/// Counts a request as in flight while it lives.
struct InFlight<'a>(&'a Log);

impl<'a> InFlight<'a> {
    fn enter(log: &'a Log) -> Self {
        let now = log.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        log.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(log)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn answer(request: Request<Incoming>, shared: &Shared) -> Result<Response<Body>, Dropped> {
    let log = &shared.log;
    log.requests.fetch_add(1, Ordering::SeqCst);
    let path = request.uri().path().to_owned();
    let index = {
        let mut seen = lock(&log.seen);
        seen.push(Seen {
            method: request.method().to_string(),
            path: path.clone(),
            authorization: request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            at: tokio::time::Instant::now(),
            status: None,
            retry_after: None,
        });
        seen.len() - 1
    };
    let _in_flight = InFlight::enter(log);
    let result = answer_in_mode(request, &path, shared).await;
    if let Ok(response) = &result
        && let Some(seen) = lock(&log.seen).get_mut(index)
    {
        seen.status = Some(response.status().as_u16());
        seen.retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
    }
    result
}

async fn answer_in_mode(
    request: Request<Incoming>,
    path: &str,
    shared: &Shared,
) -> Result<Response<Body>, Dropped> {
    let log = &shared.log;
    let in_scope = lock(&shared.scope)
        .as_deref()
        .is_none_or(|part| path.contains(part));
    let mode = if in_scope {
        lock(&shared.mode).clone()
    } else {
        Mode::Healthy
    };
    let failure = |code: u16| canned(code, r#"{"error":"upstream failure"}"#.to_owned());
    match mode {
        Mode::Healthy => Ok(handle(request, shared).await),
        Mode::Status(code) => Ok(failure(code)),
        Mode::Answer(code, body) => Ok(canned(code, body)),
        Mode::Malformed => Ok(canned(200, "<html>not json".to_owned())),
        Mode::Delay(delay) => {
            tokio::time::sleep(delay).await;
            Ok(handle(request, shared).await)
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Err(Dropped)
        }
        Mode::Drop => Err(Dropped),
        Mode::Alternate => {
            if log.flaps.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                Ok(handle(request, shared).await)
            } else {
                Ok(failure(502))
            }
        }
    }
}

async fn handle(request: Request<Incoming>, shared: &Shared) -> Response<Body> {
    let result: Result<_, Infallible> =
        shared.handler.clone().oneshot(request.map(Body::new)).await;
    match result {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

fn canned(code: u16, body: String) -> Response<Body> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// One raw HTTP/1.1 GET: the whole answer as text ("" when the connection was dropped).
    async fn get(upstream: &Upstream, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(upstream.addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }

    fn status(answer: &str) -> &str {
        answer.split_whitespace().nth(1).unwrap_or("")
    }

    #[tokio::test]
    async fn the_handler_answers_behind_the_layer_and_nothing_is_a_status_404() {
        let nothing = Upstream::start().await;
        let answer = get(&nothing, "/apis/x").await.expect("get");
        assert_eq!(status(&answer), "404", "{answer}");
        assert!(answer.ends_with(NOT_FOUND), "{answer}");
        let upstream = with_one_path().await;
        let found = get(&upstream, "/a").await.expect("get");
        assert!(found.ends_with(r#"{"id":"a"}"#), "{found}");
        assert_eq!(status(&get(&upstream, "/b").await.expect("get")), "404");
        let exchanges = upstream.exchanges();
        let seen: Vec<_> = exchanges
            .iter()
            .map(|e| (e.method.as_str(), e.path.as_str(), e.status))
            .collect();
        assert_eq!(seen, [("GET", "/a", Some(200)), ("GET", "/b", Some(404))]);
        assert_eq!(upstream.requests(), 2);
    }

    /// A handler answering `GET /a` only.
    async fn with_one_path() -> Upstream {
        let handler = Router::new().route(
            "/a",
            axum::routing::get(|| async { canned(200, r#"{"id":"a"}"#.to_owned()) }),
        );
        Upstream::serve(handler, None).await
    }

    #[tokio::test]
    async fn every_mode_answers_as_it_says() {
        let upstream = with_one_path().await;
        upstream.set_mode(Mode::Status(503));
        assert_eq!(status(&get(&upstream, "/a").await.expect("get")), "503");
        upstream.set_mode(Mode::Answer(201, "canned".into()));
        let canned = get(&upstream, "/a").await.expect("get");
        assert!(
            canned.starts_with("HTTP/1.1 201") && canned.ends_with("canned"),
            "{canned}"
        );
        upstream.set_mode(Mode::Malformed);
        assert!(
            get(&upstream, "/a")
                .await
                .expect("get")
                .ends_with("not json")
        );
        upstream.set_mode(Mode::Drop);
        assert_eq!(get(&upstream, "/a").await.unwrap_or_default(), "");
        upstream.set_mode(Mode::Alternate);
        let mut answers = Vec::new();
        for _ in 0..4 {
            answers.push(status(&get(&upstream, "/a").await.expect("get")).to_owned());
        }
        assert_eq!(answers, ["200", "502", "200", "502"]);
        upstream.set_mode(Mode::Hang);
        let hung = tokio::time::timeout(Duration::from_millis(300), get(&upstream, "/")).await;
        assert!(hung.is_err(), "a hanging upstream never answers");
        upstream.set_mode(Mode::Healthy);
        upstream.stop().await;
        assert!(TcpStream::connect(upstream.addr).await.is_err(), "refused");
        upstream.accept_connections().await;
        assert_eq!(status(&get(&upstream, "/a").await.expect("get")), "200");
        assert!(upstream.max_in_flight() >= 1);
        assert_eq!(upstream.paths().len() as u64, upstream.requests());
    }
}
