//! The CloudEvents sink of DESIGN.md §10: `POST /events` takes a batch
//! (`application/cloudevents-batch+json`) or one structured event
//! (`application/cloudevents+json`), de-duplicates by (source, id) and keeps the exact sum of
//! `data.quantity` per subject and meter; `GET /events/totals` answers
//! `{received, duplicates, totals: [{subject, meterId, quantity}]}`, quantities as exact
//! decimal strings. What a metering system must do for the operator's exactly-once guarantee.
//!
//! A batch is taken whole or refused whole (400 naming the first bad event), so a refused
//! batch never half-counts. With a token (`--sink-token-file`) a POST must carry it as a
//! bearer token; the totals stay readable without one.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::Shared;
use crate::{
    guid::Guid,
    usage::{
        borrowed::Str, cloudevents::BATCH_CONTENT_TYPE, meter::parse_meter_id,
        record::exact_decimal,
    },
};

pub const EVENT_CONTENT_TYPE: &str = "application/cloudevents+json";

/// An event as the sink reads it: what it checks and sums, the rest ignored. The texts are
/// borrowed from the body: the sink shares the bench's process with the emulator's pages.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow, default)]
    specversion: Option<Str<'a>>,
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    source: Option<Str<'a>>,
    #[serde(borrow, default, rename = "type")]
    type_: Option<Str<'a>>,
    #[serde(borrow, default)]
    subject: Option<Str<'a>>,
    #[serde(borrow, default)]
    data: Option<IncomingData<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IncomingData<'a> {
    #[serde(borrow, default)]
    meter_id: Option<Str<'a>>,
    #[serde(default)]
    quantity: Option<f64>,
}

/// A subject or meter as totals key it: a GUID in any letter case, with or without its
/// dashes, is one key; any other text is itself. Two keys are equal exactly when their texts
/// ([`Key::text`]) are.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Guid(Guid),
    Text(String),
}

impl Key {
    fn of(text: &str) -> Self {
        parse_meter_id(text).map_or_else(|| Key::Text(text.to_owned()), Key::Guid)
    }

    /// A GUID in its canonical form, any other text as written.
    fn text(&self) -> String {
        match self {
            Key::Guid(guid) => guid.to_string(),
            Key::Text(text) => text.clone(),
        }
    }
}

/// An event that passed the checks.
struct Accepted {
    key: u128,
    subject: Key,
    meter_id: Key,
    quantity: Decimal,
}

/// (source, id) as 128 bits of SHA-256 over both, length-prefixed: a month of a thousand
/// tenants is millions of events, and the pair's text would cost ten times the memory.
fn dedup_key(source: &str, id: &str) -> u128 {
    let mut digest = Sha256::new();
    for field in [source, id] {
        digest.update((field.len() as u64).to_be_bytes());
        digest.update(field.as_bytes());
    }
    let bytes = digest.finalize();
    let mut key = [0u8; 16];
    key.copy_from_slice(&bytes[..16]);
    u128::from_be_bytes(key)
}

fn check(event: &Incoming<'_>) -> Result<Accepted, String> {
    fn text<'t>(value: &'t Option<Str<'_>>, name: &str) -> Result<&'t str, String> {
        match value.as_ref().map(|s| s.as_str().trim()) {
            Some(text) if !text.is_empty() => Ok(text),
            _ => Err(format!("{name} is missing or empty")),
        }
    }
    if event.specversion.as_ref().map(Str::as_str) != Some("1.0") {
        return Err("specversion is not 1.0".to_owned());
    }
    let id = text(&event.id, "id")?;
    let source = text(&event.source, "source")?;
    text(&event.type_, "type")?;
    let subject = text(&event.subject, "subject")?;
    let data = event
        .data
        .as_ref()
        .ok_or_else(|| "data is missing".to_owned())?;
    let meter_id = text(&data.meter_id, "data.meterId")?;
    let quantity = data
        .quantity
        .filter(|q| q.is_finite())
        .and_then(exact_decimal)
        .ok_or_else(|| "data.quantity is not a finite number".to_owned())?;
    Ok(Accepted {
        key: dedup_key(source, id),
        subject: Key::of(subject),
        meter_id: Key::of(meter_id),
        quantity,
    })
}

#[derive(Default)]
struct SinkState {
    seen: HashSet<u128>,
    received: u64,
    duplicates: u64,
    totals: HashMap<(Key, Key), Decimal>,
}

/// The sink's state: what it has taken, and the token a POST must carry (if any).
#[derive(Default)]
pub struct Sink {
    token: Option<String>,
    state: Mutex<SinkState>,
}

/// `GET /events/totals`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct Totals {
    /// Events taken, duplicates included.
    pub received: u64,
    /// Events whose (source, id) had been taken before.
    pub duplicates: u64,
    pub totals: Vec<Total>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Total {
    pub subject: String,
    pub meter_id: String,
    /// An exact decimal, as text.
    pub quantity: String,
}

/// Why a POST was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}

fn refusal(status: StatusCode, code: &'static str, message: String) -> Refusal {
    Refusal {
        status,
        code,
        message,
    }
}

/// Equal texts, compared in time independent of where they differ (a token check).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sink {
    /// A sink that requires `token` as the bearer of every POST, or none.
    pub fn new(token: Option<String>) -> Self {
        Self {
            token,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a POST's body: how many events it held, or why it was refused (nothing taken).
    pub fn take(&self, headers: &HeaderMap, body: &[u8]) -> Result<usize, Refusal> {
        if let Some(token) = &self.token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            if !given.is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes())) {
                return Err(refusal(
                    StatusCode::UNAUTHORIZED,
                    "Unauthorized",
                    "The sink requires its bearer token.".to_owned(),
                ));
            }
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let syntax = |e: serde_json::Error| {
            refusal(
                StatusCode::BAD_REQUEST,
                "InvalidBody",
                format!("The body is not CloudEvents JSON: {e}"),
            )
        };
        let events: Vec<Incoming<'_>> = if content_type == BATCH_CONTENT_TYPE {
            serde_json::from_slice(body).map_err(syntax)?
        } else if content_type == EVENT_CONTENT_TYPE {
            vec![serde_json::from_slice(body).map_err(syntax)?]
        } else {
            return Err(refusal(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!(
                    "Content-Type {content_type:?} is neither {BATCH_CONTENT_TYPE} nor {EVENT_CONTENT_TYPE}."
                ),
            ));
        };
        let accepted = events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                check(event).map_err(|problem| {
                    refusal(
                        StatusCode::BAD_REQUEST,
                        "InvalidEvent",
                        format!("event {i}: {problem}; nothing of this request was taken"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let count = accepted.len();
        let mut state = self.lock();
        for event in accepted {
            state.received += 1;
            if !state.seen.insert(event.key) {
                state.duplicates += 1;
                continue;
            }
            *state
                .totals
                .entry((event.subject, event.meter_id))
                .or_insert(Decimal::ZERO) += event.quantity;
        }
        Ok(count)
    }

    /// What the sink has taken so far, totals ordered by subject and meter.
    pub fn totals(&self) -> Totals {
        let state = self.lock();
        let mut totals: Vec<Total> = state
            .totals
            .iter()
            .map(|((subject, meter_id), quantity)| Total {
                subject: subject.text(),
                meter_id: meter_id.text(),
                quantity: quantity.normalize().to_string(),
            })
            .collect();
        totals.sort_by(|a, b| (&a.subject, &a.meter_id).cmp(&(&b.subject, &b.meter_id)));
        Totals {
            received: state.received,
            duplicates: state.duplicates,
            totals,
        }
    }
}

/// `POST /events`.
pub async fn post_events(
    State(emulator): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match emulator.sink.take(&headers, &body) {
        Ok(count) => {
            tracing::debug!(events = count, "sink took a request");
            (StatusCode::OK, Json(json!({"accepted": count}))).into_response()
        }
        Err(refused) => {
            tracing::info!(status = refused.status.as_u16(), code = refused.code, message = %refused.message, "sink refused a request");
            refused.into_response()
        }
    }
}

/// `GET /events/totals`.
pub async fn get_totals(State(emulator): State<Shared>) -> Response {
    Json(emulator.sink.totals()).into_response()
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod tests;
