//! The http-resolver contract of DESIGN.md §4, answered from a catalog, counting what it was
//! asked by kind and key.
//!
//! - `GET /subscriptions/{id}` → 200 with the subscription's JSON, 404 when unknown;
//! - `GET /registrations/{sub}/{rg}/{name}` → 200 `{"multitenancyApproved": bool}`, 404 when
//!   the catalog does not name the registration (not approved);
//! - anything else → 404 (a Kubernetes-style Status, so the server also stands in for an API
//!   server lacking a resource).
//!
//! Keys are matched case-insensitively, as the operator's catalog backend matches them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::Value;

use super::lock;

const NOT_FOUND: &str = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#;

#[derive(Default)]
struct Data {
    /// Lower-case subscription ID → its `subscriptions[]` entry as JSON.
    subscriptions: HashMap<String, String>,
    /// `sub/rg/name` in lower case → approved.
    approvals: HashMap<String, bool>,
}

/// Requests answered, by kind, and how often each key was asked.
#[derive(Default)]
struct Asked {
    subscriptions: HashMap<String, u64>,
    registrations: HashMap<String, u64>,
    other: u64,
    not_found: u64,
}

/// What the [`Catalog`] was asked so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CatalogCounts {
    pub subscription_lookups: u64,
    pub approval_lookups: u64,
    /// Paths outside the documented API.
    pub other: u64,
    /// 404 answers (unknown subscription, registration not approved, other paths).
    pub not_found: u64,
    pub distinct_subscriptions: usize,
    pub distinct_registrations: usize,
}

impl CatalogCounts {
    pub fn total(&self) -> u64 {
        self.subscription_lookups + self.approval_lookups + self.other
    }
}

/// The data the §4 handler answers with; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Catalog {
    data: Arc<Mutex<Data>>,
    asked: Arc<Mutex<Asked>>,
}

fn registration_key(subscription: &str, resource_group: &str, name: &str) -> String {
    format!("{subscription}/{resource_group}/{name}").to_ascii_lowercase()
}

impl Catalog {
    /// The `subscriptions` and `multitenancyApprovals` of a catalog document (DESIGN.md §4),
    /// read with a plain YAML parser, not the operator's reader.
    pub fn from_yaml(text: &str) -> Result<Self, String> {
        let mut options = serde_saphyr::Options::default();
        // A generated catalog of 10,000 subscriptions has more nodes than the default budget.
        options.budget = None;
        let doc: Value = serde_saphyr::from_str_with_options(text, options)
            .map_err(|e| format!("the catalog is not YAML: {e}"))?;
        let list = |key: &str| -> Vec<Value> {
            doc.get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let text_of = |v: &Value, key: &str| -> Result<String, String> {
            v.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("a catalog entry without {key}: {v}"))
        };
        let catalog = Self::default();
        for entry in list("subscriptions") {
            catalog.add_subscription(&text_of(&entry, "id")?, entry);
        }
        for entry in list("multitenancyApprovals") {
            catalog.set_approval(
                &text_of(&entry, "subscriptionId")?,
                &text_of(&entry, "resourceGroup")?,
                &text_of(&entry, "registrationName")?,
                true,
            );
        }
        Ok(catalog)
    }

    /// Serves `GET /subscriptions/{id}` with this JSON.
    pub fn add_subscription(&self, id: &str, json: Value) {
        lock(&self.data)
            .subscriptions
            .insert(id.to_ascii_lowercase(), json.to_string());
    }

    /// Serves `GET /registrations/{sub}/{rg}/{name}` with `multitenancyApproved: approved`.
    pub fn set_approval(
        &self,
        subscription: &str,
        resource_group: &str,
        name: &str,
        approved: bool,
    ) {
        lock(&self.data).approvals.insert(
            registration_key(subscription, resource_group, name),
            approved,
        );
    }

    pub fn counts(&self) -> CatalogCounts {
        let asked = lock(&self.asked);
        CatalogCounts {
            subscription_lookups: asked.subscriptions.values().sum(),
            approval_lookups: asked.registrations.values().sum(),
            other: asked.other,
            not_found: asked.not_found,
            distinct_subscriptions: asked.subscriptions.len(),
            distinct_registrations: asked.registrations.len(),
        }
    }

    /// How often this subscription was looked up.
    pub fn subscription_lookups(&self, id: &str) -> u64 {
        let asked = lock(&self.asked);
        asked
            .subscriptions
            .get(&id.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// The handler: the §4 routes over this catalog.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/subscriptions/{id}", get(subscription))
            .route(
                "/registrations/{subscription}/{group}/{name}",
                get(approval),
            )
            .fallback(|State(catalog): State<Catalog>| async move {
                lock(&catalog.asked).other += 1;
                catalog.not_found()
            })
            .with_state(self.clone())
    }

    fn not_found(&self) -> Response {
        lock(&self.asked).not_found += 1;
        (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            NOT_FOUND,
        )
            .into_response()
    }
}

fn json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn subscription(State(catalog): State<Catalog>, Path(id): Path<String>) -> Response {
    let id = id.to_ascii_lowercase();
    let body = lock(&catalog.data).subscriptions.get(&id).cloned();
    *lock(&catalog.asked).subscriptions.entry(id).or_default() += 1;
    match body {
        Some(body) => json(body),
        None => catalog.not_found(),
    }
}

async fn approval(
    State(catalog): State<Catalog>,
    Path((subscription, group, name)): Path<(String, String, String)>,
) -> Response {
    let key = registration_key(&subscription, &group, &name);
    let approved = lock(&catalog.data).approvals.get(&key).copied();
    *lock(&catalog.asked).registrations.entry(key).or_default() += 1;
    match approved {
        Some(approved) => json(format!("{{\"multitenancyApproved\":{approved}}}")),
        None => catalog.not_found(),
    }
}
