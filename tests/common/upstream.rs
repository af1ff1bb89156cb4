//! A local metadata server for the http resolver, switchable between healthy and failing.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answers from the configured data.
    Healthy,
    /// Answers every request with this HTTP status.
    Status(u16),
    /// Accepts and never answers.
    Hang,
    /// Answers 200 with a body that is not the documented JSON.
    Malformed,
    /// Answers from the configured data after this delay (a slow upstream).
    Delay(Duration),
    /// Flaps: requests alternate between a healthy answer and a 502.
    Alternate,
    /// Reads the request and closes the connection without answering.
    Drop,
}

#[derive(Default)]
struct State {
    subscriptions: HashMap<String, String>,
    approvals: HashMap<String, bool>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    state: Arc<Mutex<State>>,
    requests: Arc<AtomicU64>,
    /// Requests seen in [`Mode::Alternate`], to alternate on.
    flaps: Arc<AtomicU64>,
    /// The accept loop; `None` while connections are refused.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let upstream = Self {
            addr,
            mode: Arc::new(Mutex::new(Mode::Healthy)),
            state: Arc::new(Mutex::new(State::default())),
            requests: Arc::new(AtomicU64::new(0)),
            flaps: Arc::new(AtomicU64::new(0)),
            task: Mutex::new(None),
        };
        upstream.serve(listener);
        upstream
    }

    fn serve(&self, listener: TcpListener) {
        let (mode, state, requests, flaps) = (
            self.mode.clone(),
            self.state.clone(),
            self.requests.clone(),
            self.flaps.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (mode, state, requests, flaps) =
                    (mode.clone(), state.clone(), requests.clone(), flaps.clone());
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 8192];
                    let mut read = 0;
                    while !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buffer[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                        if read == buffer.len() {
                            return;
                        }
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    let request = String::from_utf8_lossy(&buffer[..read]).to_string();
                    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let current = *mode.lock().unwrap();
                    let failure = |code| (code, "{\"error\":\"upstream failure\"}".to_string());
                    let (status, body) = match current {
                        Mode::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                        Mode::Drop => return,
                        Mode::Status(code) => failure(code),
                        Mode::Malformed => (200, "<html>not json".to_string()),
                        Mode::Healthy => answer(&state.lock().unwrap(), &path),
                        Mode::Delay(delay) => {
                            tokio::time::sleep(delay).await;
                            answer(&state.lock().unwrap(), &path)
                        }
                        Mode::Alternate => {
                            if flaps.fetch_add(1, Ordering::SeqCst) % 2 == 0 {
                                answer(&state.lock().unwrap(), &path)
                            } else {
                                failure(502)
                            }
                        }
                    };
                    let response = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        *self.task.lock().unwrap() = Some(task);
    }

    /// Stops listening: new connections are refused until [`Upstream::accept_connections`].
    pub fn refuse_connections(&self) {
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Listens again on the same address after [`Upstream::refuse_connections`].
    pub async fn accept_connections(&self) {
        if self.task.lock().unwrap().is_some() {
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
        self.serve(listener);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Serves `GET /subscriptions/{id}` with this JSON.
    pub fn add_subscription(&self, id: &str, json: serde_json::Value) {
        self.state
            .lock()
            .unwrap()
            .subscriptions
            .insert(id.to_ascii_lowercase(), json.to_string());
    }

    /// Serves `GET /registrations/{sub}/{rg}/{name}`.
    pub fn set_approval(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        approved: bool,
    ) {
        let key = format!(
            "{}/{}/{}",
            subscription.to_ascii_lowercase(),
            resource_group,
            name
        )
        .to_ascii_lowercase();
        self.state.lock().unwrap().approvals.insert(key, approved);
    }
}

/// A Kubernetes-style 404, so that the server also stands in for an API server lacking a resource.
const NOT_FOUND: &str = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#;

fn answer(state: &State, path: &str) -> (u16, String) {
    let path = path.to_ascii_lowercase();
    if let Some(id) = path.strip_prefix("/subscriptions/") {
        return match state.subscriptions.get(id) {
            Some(body) => (200, body.clone()),
            None => (404, NOT_FOUND.to_string()),
        };
    }
    if let Some(key) = path.strip_prefix("/registrations/") {
        return match state.approvals.get(key) {
            Some(approved) => (200, format!("{{\"multitenancyApproved\":{approved}}}")),
            None => (404, NOT_FOUND.to_string()),
        };
    }
    (404, NOT_FOUND.to_string())
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.refuse_connections();
    }
}
