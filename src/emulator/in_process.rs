//! The emulator inside another program (the integration tests, the bench): bound on
//! 127.0.0.1 with keys of its own, over HTTPS with its own CA or over plain HTTP. Serving the
//! connections is the caller's, so that a test can put the test kit's fault layer in front of
//! [`super::router`]. Its catalog can be edited while it runs ([`CatalogEditor`]).

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
};

use serde_json::{Map, Value};
use tokio::net::TcpListener;

use super::{Emulator, EmulatorError, Shared, entra, stamp, throttle::WriteThrottle, tls};
use crate::resolver::{Catalog, CatalogError};

/// How an in-process emulator is set up.
#[derive(Clone, Debug)]
pub struct InProcessOptions {
    /// ARM's write bucket per principal and subscription: `write_burst` at once, refilled at
    /// `write_refill_per_second`.
    pub write_burst: u32,
    pub write_refill_per_second: f64,
    /// HTTPS with the CA and certificate kept (or made) in this directory; plain HTTP without.
    pub tls_dir: Option<PathBuf>,
    /// The stamp behind the admin usage APIs; without one they answer 404.
    pub stamp: Option<stamp::Stamp>,
}

impl Default for InProcessOptions {
    /// Plain HTTP, and a bucket no test of the http resolver ever empties.
    fn default() -> Self {
        Self {
            write_burst: 10_000,
            write_refill_per_second: 10_000.0,
            tls_dir: None,
            stamp: None,
        }
    }
}

/// An emulator with its listener bound but not yet accepting.
pub struct InProcess {
    pub emulator: Shared,
    pub listener: TcpListener,
    /// The acceptor of its certificate, with [`InProcessOptions::tls_dir`].
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The CA that signed that certificate, for the clients.
    pub ca_file: Option<PathBuf>,
}

impl InProcess {
    /// An emulator of `catalog_yaml` on a free port of 127.0.0.1, named by that address in its
    /// tokens and `nextLink`s.
    pub async fn start(
        catalog_yaml: &str,
        options: InProcessOptions,
    ) -> Result<Self, EmulatorError> {
        let catalog = Catalog::parse(catalog_yaml)?;
        let (tls, ca_file) = match &options.tls_dir {
            Some(dir) => {
                let (config, _) = tls::server_config(dir)?;
                (
                    Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
                    Some(dir.join(tls::CA_FILE)),
                )
            }
            None => (None, None),
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EmulatorError::Listen { addr, source })?;
        let addr = listener.local_addr().map_err(EmulatorError::Serve)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let tokens = tokio::task::spawn_blocking(entra::TokenIssuer::generate)
            .await
            .map_err(|e| entra::KeyError::Generate(e.to_string()))??;
        let mut emulator = Emulator::new(
            catalog,
            format!("{scheme}://{addr}"),
            tokens,
            WriteThrottle::new(options.write_burst, options.write_refill_per_second),
        );
        if let Some(stamp) = options.stamp {
            emulator = emulator.with_stamp(stamp);
        }
        let emulator = Arc::new(emulator);
        Ok(Self {
            emulator,
            listener,
            tls,
            ca_file,
        })
    }
}

/// The catalog as a document a test edits while the emulator runs. Each edit puts the whole
/// document in force, validated, as a reload of the catalog file would.
pub struct CatalogEditor {
    emulator: Shared,
    document: Mutex<Document>,
}

#[derive(Clone)]
struct Document {
    subscriptions: Vec<Value>,
    approvals: Vec<Value>,
    /// Every other top-level field, as given.
    rest: Map<String, Value>,
}

const SUBSCRIPTIONS: &str = "subscriptions";
const APPROVALS: &str = "multitenancyApprovals";

impl CatalogEditor {
    /// Edits of `document`, the catalog in force (as JSON; one without lists is `{}`).
    pub fn new(emulator: Shared, document: Value) -> Self {
        let mut rest = match document {
            Value::Object(fields) => fields,
            _ => Map::new(),
        };
        let mut take = |key: &str| match rest.remove(key) {
            Some(Value::Array(list)) => list,
            _ => Vec::new(),
        };
        let document = Document {
            subscriptions: take(SUBSCRIPTIONS),
            approvals: take(APPROVALS),
            rest,
        };
        Self {
            emulator,
            document: Mutex::new(document),
        }
    }

    /// Puts `entry` in `subscriptions[]`, in place of any entry of the same `id`.
    pub fn add_subscription(&self, id: &str, entry: Value) -> Result<(), CatalogError> {
        self.add_subscriptions([(id.to_owned(), entry)])
    }

    /// [`CatalogEditor::add_subscription`] for many entries in one edit: one new catalog, not
    /// one per entry.
    pub fn add_subscriptions(
        &self,
        entries: impl IntoIterator<Item = (String, Value)>,
    ) -> Result<(), CatalogError> {
        self.edit(|document| {
            for (id, entry) in entries {
                document.subscriptions.retain(|e| !same(e, "id", &id));
                document.subscriptions.push(entry);
            }
        })
    }

    /// Approves the registration for multitenancy in `multitenancyApprovals[]`, or (when
    /// `approved` is false) removes its approval.
    pub fn set_approval(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        approved: bool,
    ) -> Result<(), CatalogError> {
        self.edit(|document| {
            document.approvals.retain(|e| {
                !(same(e, "subscriptionId", subscription)
                    && same(e, "resourceGroup", resource_group)
                    && same(e, "registrationName", name))
            });
            if approved {
                document.approvals.push(serde_json::json!({
                    "subscriptionId": subscription,
                    "resourceGroup": resource_group,
                    "registrationName": name,
                }));
            }
        })
    }

    fn edit(&self, change: impl FnOnce(&mut Document)) -> Result<(), CatalogError> {
        let mut document = self.document.lock().unwrap_or_else(PoisonError::into_inner);
        let mut edited = document.clone();
        change(&mut edited);
        let mut text = edited.rest.clone();
        text.insert(
            SUBSCRIPTIONS.into(),
            Value::Array(edited.subscriptions.clone()),
        );
        text.insert(APPROVALS.into(), Value::Array(edited.approvals.clone()));
        // JSON is YAML: the catalog reader takes the document as it is.
        self.emulator
            .replace_catalog(&Value::Object(text).to_string())?;
        *document = edited;
        Ok(())
    }
}

/// Keys are matched case-insensitively, as the catalog matches them.
fn same(entry: &Value, field: &str, want: &str) -> bool {
    entry
        .get(field)
        .and_then(Value::as_str)
        .is_some_and(|v| v.eq_ignore_ascii_case(want))
}
