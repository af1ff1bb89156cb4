//! A tiny HTTP/1.1 server on 127.0.0.1 for the http backend's tests: canned answers per path,
//! switchable failures, and counters of what it was asked.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;

#[derive(Default)]
pub struct ServerState {
    routes: Mutex<HashMap<String, (u16, String)>>,
    forced: Mutex<Option<(u16, String)>>,
    delay: Mutex<Duration>,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    authorizations: Mutex<Vec<Option<String>>>,
    paths: Mutex<Vec<String>>,
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<ServerState>,
    tls: bool,
    task: JoinHandle<()>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    pub async fn start_tls(acceptor: TlsAcceptor) -> Self {
        Self::start_with(Some(acceptor)).await
    }

    async fn start_with(acceptor: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(ServerState::default());
        let tls = acceptor.is_some();
        let task = tokio::spawn({
            let state = Arc::clone(&state);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let state = Arc::clone(&state);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        match acceptor {
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    serve(stream, state).await;
                                }
                            }
                            None => serve(stream, state).await,
                        }
                    });
                }
            }
        });
        Self {
            addr,
            state,
            tls,
            task,
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn route(&self, path: &str, status: u16, body: &str) {
        self.state
            .routes
            .lock()
            .expect("lock")
            .insert(path.to_owned(), (status, body.to_owned()));
    }

    /// Answer every request this way (overrides the routes) until `None`.
    pub fn force(&self, answer: Option<(u16, &str)>) {
        *self.state.forced.lock().expect("lock") = answer.map(|(s, b)| (s, b.to_owned()));
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().expect("lock") = delay;
    }

    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn authorizations(&self) -> Vec<Option<String>> {
        self.state.authorizations.lock().expect("lock").clone()
    }

    pub fn paths(&self) -> Vec<String> {
        self.state.paths.lock().expect("lock").clone()
    }

    /// Stops accepting: later connections are refused.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, state: Arc<ServerState>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_owned();
    let authorization = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("authorization")
            .then(|| value.trim().to_owned())
    });

    state.requests.fetch_add(1, Ordering::SeqCst);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.max_in_flight.fetch_max(now, Ordering::SeqCst);
    state.paths.lock().expect("lock").push(path.clone());
    state
        .authorizations
        .lock()
        .expect("lock")
        .push(authorization);

    let delay = *state.delay.lock().expect("lock");
    tokio::time::sleep(delay).await;

    let forced = state.forced.lock().expect("lock").clone();
    let (status, body) = forced.unwrap_or_else(|| {
        state
            .routes
            .lock()
            .expect("lock")
            .get(&path)
            .cloned()
            .unwrap_or((404, String::new()))
    });
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
