//! The http resolver contract of DESIGN.md §4 under `/resolver`, answered from the catalog,
//! so that `run --resolver http --resolver-url https://…/resolver` works against the emulator.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::Shared;
use crate::resolver::RegistrationKey;

/// `GET /resolver/subscriptions/{subscriptionId}`: the catalog entry, or 404 when unknown.
pub async fn subscription(State(emulator): State<Shared>, Path(id): Path<String>) -> Response {
    let known = crate::guid::Guid::parse(&id).and_then(|id| emulator.catalog().get(id));
    match known {
        Some(metadata) => Json(metadata.as_ref().clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /resolver/registrations/{subscriptionId}/{resourceGroup}/{registrationName}`.
pub async fn registration(
    State(emulator): State<Shared>,
    Path((subscription, group, name)): Path<(String, String, String)>,
) -> Response {
    let key = RegistrationKey::new(&subscription, &group, &name);
    if emulator.catalog().is_approved(&key) {
        Json(json!({"multitenancyApproved": true})).into_response()
    } else {
        // §4: 404 means "not approved".
        StatusCode::NOT_FOUND.into_response()
    }
}
