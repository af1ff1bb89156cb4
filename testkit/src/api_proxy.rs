//! The test cluster's API server behind the fault layer, for one operator process: an
//! [`Upstream`] on 127.0.0.1 over HTTPS whose handler forwards every request to the API server
//! with the credentials of the test's own client, streaming each answer as it arrives (watches
//! included). The operator is given [`ApiProxy::kubeconfig`]; the test then picks requests to
//! hold back or fail through the layer's modes, e.g. `set_mode_for("/registrations",
//! Mode::Delay(..))` so that this one operator lists and watches Registrations late, while the
//! test itself talks to the API server directly.

use std::{
    ops::Deref,
    path::{Path, PathBuf},
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, Response, StatusCode, header},
    response::IntoResponse,
};
use kube::Client;
use tokio_rustls::TlsAcceptor;

use crate::upstream::Upstream;

/// A request body larger than this is refused: the operator's are single objects and patches.
const MAX_REQUEST_BODY: usize = 16 << 20;

/// The proxy, with the kubeconfig that points at it; derefs to the layer ([`Upstream`]) for
/// its modes and its record.
pub struct ApiProxy {
    upstream: Upstream,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl ApiProxy {
    /// Forwards with `client`'s credentials, serving `tls` (a certificate for 127.0.0.1 that
    /// `ca_file` signed, the only CA the kubeconfig trusts).
    pub async fn start(client: Client, tls: TlsAcceptor, ca_file: &Path) -> Result<Self, String> {
        let handler = Router::new().fallback(move |request: Request<Body>| {
            let client = client.clone();
            async move { forward(&client, request).await }
        });
        let upstream = Upstream::serve(handler, Some(tls)).await;
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let kubeconfig = dir.path().join("kubeconfig");
        let ca_file = ca_file
            .to_str()
            .ok_or_else(|| format!("{} is not UTF-8", ca_file.display()))?;
        // JSON is YAML: any kubeconfig reader takes it. No credentials: the proxy adds its own.
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {
                "server": upstream.url(),
                "certificate-authority": ca_file,
            }}],
            "users": [{"name": "proxy", "user": {}}],
            "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
            "current-context": "proxy",
        });
        std::fs::write(&kubeconfig, config.to_string())
            .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
        Ok(Self {
            upstream,
            kubeconfig,
            _dir: dir,
        })
    }

    /// The kubeconfig for the operator (its `KUBECONFIG`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }
}

impl Deref for ApiProxy {
    type Target = Upstream;

    fn deref(&self) -> &Upstream {
        &self.upstream
    }
}

/// Drops what belongs to one connection (RFC 9110 §7.6.1), not to the request, and what names
/// the proxy instead of the API server: the client sets its own `Host` and credentials.
fn strip(headers: &mut HeaderMap) {
    for name in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::HOST,
        header::AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

/// The request as the API server answers it; a 502 when the API server cannot be asked.
async fn forward(client: &Client, request: Request<Body>) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BODY).await {
        Ok(body) => body,
        Err(e) => return bad_gateway(format!("reading the request: {e}")),
    };
    strip(&mut parts.headers);
    // The client keeps the path and query and puts its API server in front.
    let request = Request::from_parts(parts, kube::client::Body::from(body));
    match client.send(request).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => bad_gateway(format!("the API server: {e}")),
    }
}

fn bad_gateway(message: String) -> Response<Body> {
    (StatusCode::BAD_GATEWAY, message).into_response()
}
