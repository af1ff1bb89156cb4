//! The outside world for users and tests (DESIGN.md §10): one HTTPS server playing Microsoft
//! Entra ID, ARM's `Microsoft.AzureStack` provider and the http metadata resolver, from a
//! catalog. State is in memory. One file per party:
//!
//! - [`tls`]: its certificates and listener;
//! - [`entra`]: token endpoint, OpenID metadata, signing keys;
//! - [`assertion`]: federated client assertions (workload identity) and their issuers' keys;
//! - [`arm`]: registrations, customerSubscriptions, the subscription list, cloud metadata;
//! - [`throttle`]: ARM's write token bucket;
//! - [`resolver`]: the §4 contract under `/resolver`;
//! - [`in_process`]: the emulator inside the tests and the bench, its catalog edited while it runs.
//!
//! The catalog is reloaded while it runs: [`run`] watches its file with the resolver's own
//! file watch, and an invalid new catalog is refused with a log line while the one in force
//! stays. What ARM holds (the customerSubscriptions) is state, not catalog: a reload keeps it.
//!
//! - [`stamp`]: the stamp file (`--stamp`) and the usage records generated from it;
//! - [`usage`]: the stamp's admin APIs (`Microsoft.Commerce.Admin` usage, `Microsoft.Subscriptions.Admin`);
//! - [`sink`]: the CloudEvents sink (`/events`).
//!
//! The stamp is read once at start (relative times in it count from then); the sink's state
//! is in memory like ARM's.

pub mod arm;
pub mod assertion;
pub mod entra;
pub mod in_process;
pub mod resolver;
#[cfg(test)]
mod resolver_tests;
pub mod sink;
pub mod stamp;
pub mod throttle;
pub mod tls;
pub mod usage;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request},
    http::{HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};

use tower::ServiceExt;

use crate::resolver::{
    Catalog, CatalogError,
    catalog_resolver::CatalogResolver,
    watch::{CatalogSink, watch_file},
};

pub const REQUEST_ID_HEADER: &str = "x-ms-request-id";
/// The largest body the sink takes (64 MiB).
pub const SINK_BODY_LIMIT: usize = 64 << 20;
const CLIENT_REQUEST_ID_HEADER: &str = "x-ms-client-request-id";
const CORRELATION_ID_HEADER: &str = "x-ms-correlation-request-id";

/// What `azs-csp-operator emulate` was asked to do.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    pub catalog_file: PathBuf,
    pub listen: SocketAddr,
    pub tls_dir: PathBuf,
    pub write_burst: u32,
    pub write_refill_per_second: f64,
    /// The stamp behind the admin usage APIs; without one they answer 404.
    pub stamp_file: Option<PathBuf>,
    /// The bearer token the sink requires of a POST, from this file.
    pub sink_token_file: Option<PathBuf>,
}

#[derive(thiserror::Error, Debug)]
pub enum EmulatorError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Key(#[from] entra::KeyError),
    #[error(transparent)]
    Stamp(#[from] stamp::StampError),
    #[error("cannot read the sink token file {path}: {source}")]
    SinkToken {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the emulator stopped: {0}")]
    Serve(#[source] std::io::Error),
}

/// The emulator's state, shared by every handler.
pub struct Emulator {
    /// The catalog in force; a reload replaces it whole.
    catalog: Arc<CatalogResolver>,
    /// Where the catalog's relative paths (`jwksFile`) start: the catalog file's directory.
    catalog_dir: PathBuf,
    /// `https://host:port` without a trailing slash: issuer, ARM audience, `nextLink`s.
    pub base_url: String,
    pub tokens: entra::TokenIssuer,
    pub arm: Mutex<arm::ArmState>,
    pub throttle: Mutex<throttle::WriteThrottle>,
    /// The stamp of the admin usage APIs, if one was given.
    pub stamp: Option<Arc<stamp::Stamp>>,
    pub sink: sink::Sink,
}

pub type Shared = Arc<Emulator>;

impl Emulator {
    /// An emulator of a fixed catalog (relative paths in it start at the working directory).
    pub fn new(
        catalog: Catalog,
        base_url: String,
        tokens: entra::TokenIssuer,
        throttle: throttle::WriteThrottle,
    ) -> Self {
        Self::with_catalog_source(
            Arc::new(CatalogResolver::with_catalog("catalog", catalog)),
            PathBuf::from("."),
            base_url,
            tokens,
            throttle,
        )
    }

    /// An emulator whose catalog is whatever `catalog` holds at each request (a watch
    /// replaces it), with relative catalog paths starting at `catalog_dir`.
    pub fn with_catalog_source(
        catalog: Arc<CatalogResolver>,
        catalog_dir: PathBuf,
        base_url: String,
        tokens: entra::TokenIssuer,
        throttle: throttle::WriteThrottle,
    ) -> Self {
        Self {
            catalog,
            catalog_dir,
            base_url,
            tokens,
            arm: Mutex::new(arm::ArmState::default()),
            throttle: Mutex::new(throttle),
            stamp: None,
            sink: sink::Sink::default(),
        }
    }

    /// The same emulator serving `stamp`'s admin usage APIs.
    pub fn with_stamp(mut self, stamp: stamp::Stamp) -> Self {
        self.stamp = Some(Arc::new(stamp));
        self
    }

    /// The same emulator whose sink requires `token` as the bearer of every POST.
    pub fn with_sink_token(mut self, token: Option<String>) -> Self {
        self.sink = sink::Sink::new(token);
        self
    }

    /// The catalog in force. A request reads it once, so that a reload never splits it.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.current().unwrap_or_default()
    }

    /// Puts the catalog `text` in force, as a reload of the file would; a refused one leaves
    /// the catalog in force unchanged.
    pub fn replace_catalog(&self, text: &str) -> Result<(), CatalogError> {
        self.catalog.replace(text).map(|_| ())
    }

    /// Where the catalog's relative paths start: the catalog file's directory.
    pub fn catalog_dir(&self) -> &Path {
        &self.catalog_dir
    }
}

/// A reload of the catalog file: the resolver validates and logs a refusal; a catalog put in
/// force is logged here, whatever part of it changed.
impl CatalogSink for Emulator {
    fn offer(&self, text: &str) {
        let before = self.catalog.current();
        if self.catalog.replace(text).is_err() {
            return;
        }
        let after = self.catalog();
        if before.is_some_and(|before| Arc::ptr_eq(&before, &after)) {
            return;
        }
        tracing::info!(
            source = %self.catalog.source(),
            catalog = %after.summary(),
            "catalog reloaded; stored customer subscriptions kept"
        );
    }

    fn source_unavailable(&self, reason: &str) {
        self.catalog.record_source_error(reason);
    }
}

/// A GUID in Azure's lower-case form, for request IDs, etags and key IDs.
pub fn new_guid() -> String {
    let bits: u128 = rand::random();
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-4{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Every route of the emulator.
pub fn router(emulator: Shared) -> Router {
    let routes: Router = Router::new()
        // Entra ID
        .route("/{tenant}/oauth2/v2.0/token", post(entra::token))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(entra::openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(entra::jwks))
        // ARM
        .route("/metadata/endpoints", get(arm::metadata_endpoints))
        .route("/subscriptions", get(arm::list_subscriptions))
        .route("/subscriptions/{*rest}", any(arm::dispatch))
        // The CloudEvents sink; a batch of a window is larger than axum's default 2 MB limit.
        .route(
            "/events",
            post(sink::post_events).layer(DefaultBodyLimit::max(SINK_BODY_LIMIT)),
        )
        .route("/events/totals", get(sink::get_totals))
        // The http resolver contract (§4)
        .route(
            "/resolver/subscriptions/{subscription_id}",
            get(resolver::subscription),
        )
        .route(
            "/resolver/registrations/{subscription_id}/{resource_group}/{registration_name}",
            get(resolver::registration),
        )
        .with_state(emulator);
    let strict = routes.clone().fallback(not_found);
    routes
        .fallback(move |request: Request| with_collapsed_slashes(strict.clone(), request))
        .layer(middleware::from_fn(request_ids))
}

async fn not_found() -> Response {
    arm::ArmError::new(
        StatusCode::NOT_FOUND,
        "NotFound",
        "The emulator serves no such path.",
    )
    .into_response()
}

/// ARM reads repeated slashes as one, and clients rely on it: `az cloud register
/// --endpoint-resource-manager https://host/` asks for `https://host//metadata/endpoints`. A
/// path no route matches is routed once more with them collapsed.
async fn with_collapsed_slashes(strict: Router, mut request: Request) -> Response {
    let path = request.uri().path();
    if !path.contains("//") {
        return not_found().await;
    }
    let mut collapsed = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c);
        }
    }
    if let Some(query) = request.uri().query() {
        collapsed.push('?');
        collapsed.push_str(query);
    }
    let mut parts = request.uri().clone().into_parts();
    match collapsed.parse() {
        Ok(path_and_query) => parts.path_and_query = Some(path_and_query),
        Err(_) => return not_found().await,
    }
    match axum::http::Uri::from_parts(parts) {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return not_found().await,
    }
    match strict.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Every answer carries `x-ms-request-id`; the client's request and correlation IDs are
/// echoed, as ARM does.
async fn request_ids(request: Request, next: Next) -> Response {
    let client_request_id = request.headers().get(CLIENT_REQUEST_ID_HEADER).cloned();
    let correlation_id = request.headers().get(CORRELATION_ID_HEADER).cloned();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&new_guid()) {
        headers.insert(REQUEST_ID_HEADER, id);
    }
    if let Some(id) = client_request_id {
        headers.insert(CLIENT_REQUEST_ID_HEADER, id);
    }
    let correlation = correlation_id.or_else(|| HeaderValue::from_str(&new_guid()).ok());
    if let Some(id) = correlation {
        headers.insert(CORRELATION_ID_HEADER, id);
    }
    response
}

/// The URL clients reach a listener on: a wildcard address is reached on loopback.
fn base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("https://{}", SocketAddr::new(ip, addr.port()))
}

/// Runs the emulator until `shutdown` completes. Prints one line to stdout when it listens:
/// `emulator listening on https://…` (tests read the port from it).
pub async fn run(
    options: EmulatorOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), EmulatorError> {
    let path = &options.catalog_file;
    let catalog = CatalogResolver::from_file(path).await?;
    let catalog_dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let stamp = match &options.stamp_file {
        Some(file) => Some(stamp::Stamp::from_file(file, chrono::Utc::now())?),
        None => None,
    };
    let sink_token = match &options.sink_token_file {
        Some(file) => Some(
            std::fs::read_to_string(file)
                .map_err(|source| EmulatorError::SinkToken {
                    path: file.display().to_string(),
                    source,
                })?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let (config, source) = tls::server_config(&options.tls_dir)?;
    let key_dir = options.tls_dir.clone();
    let (tokens, new_key) =
        tokio::task::spawn_blocking(move || entra::TokenIssuer::load_or_generate(&key_dir))
            .await
            .map_err(|e| entra::KeyError::Generate(e.to_string()))??;
    let key_file = options.tls_dir.join(entra::SIGNING_KEY_FILE);
    if new_key {
        tracing::info!(key_file = %key_file.display(), "made the token signing key");
    } else {
        tracing::info!(key_file = %key_file.display(), "signing tokens with the kept key: tokens of the last run stay valid");
    }
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| EmulatorError::Listen {
            addr: options.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(EmulatorError::Serve)?;
    let base_url = base_url(addr);
    let listener = tls::TlsListener::new(listener, config).map_err(EmulatorError::Serve)?;
    let summary = catalog.current().unwrap_or_default().summary();
    let mut emulator = Emulator::with_catalog_source(
        catalog,
        catalog_dir,
        base_url.clone(),
        tokens,
        throttle::WriteThrottle::new(options.write_burst, options.write_refill_per_second),
    )
    .with_sink_token(sink_token);
    if let Some(stamp) = stamp {
        tracing::info!(stamp = %stamp.summary(), "serving the stamp's usage");
        emulator = emulator.with_stamp(stamp);
    }
    let emulator = Arc::new(emulator);
    match &source {
        tls::CertificateSource::Given => tracing::info!(
            tls_dir = %options.tls_dir.display(),
            "serving the certificate found in the TLS directory"
        ),
        tls::CertificateSource::Generated { ca_file } => tracing::info!(
            ca_file = %ca_file.display(),
            "made a CA and a server certificate; clients trust the CA file"
        ),
    }
    tracing::info!(
        url = %base_url,
        catalog = %summary,
        write_burst = options.write_burst,
        write_refill_per_second = options.write_refill_per_second,
        "emulator listening"
    );
    let reload = tokio::spawn(watch_file(Arc::clone(&emulator), path.clone()));
    println!("emulator listening on {base_url}");
    let served = axum::serve(listener, router(emulator))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(EmulatorError::Serve);
    reload.abort();
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_have_the_azure_shape() {
        for _ in 0..100 {
            let id = new_guid();
            assert!(crate::guid::Guid::parse(&id).is_some(), "{id}");
            assert_eq!(id, id.to_ascii_lowercase());
        }
    }

    /// One GET through the whole router: status and JSON body.
    async fn get(router: &Router, path: &str) -> (StatusCode, serde_json::Value) {
        let request = Request::get(path)
            .body(axum::body::Body::empty())
            .expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("JSON"))
    }

    #[tokio::test]
    async fn cloud_metadata_has_each_api_versions_shape_and_repeated_slashes_are_one() {
        let base = "https://127.0.0.1:8443";
        let emulator = Emulator::new(
            Catalog::default(),
            base.to_owned(),
            entra::TokenIssuer::generate().expect("key"),
            throttle::WriteThrottle::new(1, 1.0),
        );
        let router = router(Arc::new(emulator));
        let (status, cloud) = get(&router, "//metadata/endpoints?api-version=2022-09-01").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(cloud["name"], arm::CLOUD_NAME);
        assert_eq!(cloud["resourceManager"], format!("{base}/"));
        assert_eq!(cloud["authentication"]["loginEndpoint"], format!("{base}/"));
        assert_eq!(cloud["authentication"]["audiences"][0], format!("{base}/"));
        let (_, clouds) = get(&router, "/metadata/endpoints?api-version=2019-05-01").await;
        assert_eq!(clouds[0], cloud, "older versions list the clouds");
        let (_, stack) = get(&router, "/metadata//endpoints?api-version=2015-01-01").await;
        assert_eq!(stack["authentication"]["loginEndpoint"], format!("{base}/"));
        let (status, body) = get(&router, "/metadata/endpoints").await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (
                StatusCode::BAD_REQUEST,
                &serde_json::json!("MissingApiVersionParameter")
            )
        );
        for missing in ["//nothing//here", "/nothing"] {
            let (status, body) = get(&router, missing).await;
            assert_eq!(
                (status, &body["error"]["code"]),
                (StatusCode::NOT_FOUND, &serde_json::json!("NotFound")),
                "{missing}"
            );
        }
    }

    #[test]
    fn wildcard_listeners_are_reached_on_loopback() {
        for (listen, want) in [
            ("0.0.0.0:8443", "https://127.0.0.1:8443"),
            ("[::]:8443", "https://[::1]:8443"),
            ("127.0.0.1:1", "https://127.0.0.1:1"),
        ] {
            let addr: SocketAddr = listen.parse().expect("addr");
            assert_eq!(base_url(addr), want, "{listen}");
        }
    }
}
