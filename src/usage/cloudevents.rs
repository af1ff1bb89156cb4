//! Attributed records as CloudEvents 1.0 in batch mode (DESIGN.md §9): the body the sink
//! receives, `application/cloudevents-batch+json`. The `id` is a digest of what identifies a
//! record at the source, so a window sent again after a crash carries the same ids and the
//! sink de-duplicates it by (source, id).

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{
    attribution::BilledTo,
    meter::{Meter, is_vcore_meter},
    record::UsageRecord,
};
use crate::guid::Guid;

pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";
pub const EVENT_TYPE: &str = "csp.azurestack.io.usage.v1";

/// The Registration whose usage is forwarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub namespace: String,
    pub name: String,
    /// The stamp's CloudID.
    pub cloud_id: Guid,
}

impl Origin {
    /// The events' `source`: `/registrations/{namespace}/{name}`.
    pub fn source(&self) -> String {
        format!("/registrations/{}/{}", self.namespace, self.name)
    }
}

/// One structured-mode CloudEvent.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct UsageEvent {
    pub specversion: &'static str,
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// The Azure subscription billed.
    pub subject: String,
    /// usageStartTime.
    pub time: String,
    pub datacontenttype: &'static str,
    pub data: UsageData,
}

/// The event's `data`.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsageData {
    pub meter_id: String,
    /// Empty for a meter the built-in table does not know (forwarded unpriced).
    pub meter_name: String,
    pub unit: String,
    /// The source's number, unchanged.
    pub quantity: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcore_hours: Option<f64>,
    pub local_subscription_id: String,
    pub tenant_id: String,
    /// `customer` or `registration`.
    pub billed_to: &'static str,
    /// `namespace/name` of the CustomerSubscription billed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_subscription: Option<String>,
    /// An exact decimal in a string (never a float for money).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    pub usage_start_time: String,
    pub usage_end_time: String,
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The deterministic event id: SHA-256 over (cloudId, local subscription, meterId, resourceUri,
/// usageStartTime, usageEndTime), each length-prefixed so that no two tuples share a text,
/// GUIDs and the ARM resource id (case-insensitive in ARM) in lower case, times in UTC.
pub fn event_id(cloud_id: Guid, record: &UsageRecord) -> String {
    let digest = event_digest(
        cloud_id,
        record,
        &rfc3339(record.usage_start),
        &rfc3339(record.usage_end),
    );
    hex(&digest)
}

/// [`event_id`]'s digest, the times given as [`rfc3339`] writes them.
fn event_digest(cloud_id: Guid, record: &UsageRecord, start: &str, end: &str) -> [u8; 32] {
    fn field(digest: &mut Sha256, text: &[u8]) {
        digest.update((text.len() as u64).to_be_bytes());
        digest.update(text);
    }
    let mut digest = Sha256::new();
    field(&mut digest, cloud_id.text().as_bytes());
    field(&mut digest, record.local_subscription_id.text().as_bytes());
    field(&mut digest, record.meter_id.text().as_bytes());
    let uri = &record.resource_uri;
    if uri.is_ascii() {
        // ASCII lower-cases byte for byte, to the same length: no copy of the URI needed.
        digest.update((uri.len() as u64).to_be_bytes());
        let mut chunk = [0u8; 64];
        for part in uri.as_bytes().chunks(chunk.len()) {
            let lower = &mut chunk[..part.len()];
            lower.copy_from_slice(part);
            lower.make_ascii_lowercase();
            digest.update(&*lower);
        }
    } else {
        field(&mut digest, uri.to_lowercase().as_bytes());
    }
    field(&mut digest, start.as_bytes());
    field(&mut digest, end.as_bytes());
    digest.finalize().into()
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lower-case hex, two digits a byte: one allocation, where a `format!` a byte was 32 per event.
fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        text.push(char::from(HEX_DIGITS[usize::from(b & 0xf)]));
    }
    text
}

/// A price, in the rate card's currency.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Price<'a> {
    pub amount: Decimal,
    pub currency: &'a str,
}

impl UsageEvent {
    pub fn new(
        origin: &Origin,
        record: &UsageRecord,
        billed: &BilledTo,
        meter: Option<&Meter>,
        price: Option<Price<'_>>,
    ) -> Self {
        let (price, currency) = match price {
            Some(p) => (
                Some(p.amount.normalize().to_string()),
                Some(p.currency.to_string()),
            ),
            None => (None, None),
        };
        Self {
            specversion: "1.0",
            id: event_id(origin.cloud_id, record),
            source: origin.source(),
            type_: EVENT_TYPE,
            subject: billed.subscription_id().to_string(),
            time: rfc3339(record.usage_start),
            datacontenttype: "application/json",
            data: UsageData {
                meter_id: record.meter_id.to_string(),
                meter_name: meter.map_or_else(String::new, |m| m.name.to_string()),
                unit: meter.map_or_else(String::new, |m| m.unit.to_string()),
                quantity: record.quantity,
                vcore_hours: is_vcore_meter(record.meter_id).then_some(record.quantity),
                local_subscription_id: record.local_subscription_id.to_string(),
                tenant_id: record.tenant_id.to_string(),
                billed_to: billed.kind(),
                customer_subscription: billed.customer().map(ToString::to_string),
                price,
                currency,
                usage_start_time: rfc3339(record.usage_start),
                usage_end_time: rfc3339(record.usage_end),
            },
        }
    }
}

/// The body of one batch POST: a JSON array of the events.
pub fn batch_body(events: &[UsageEvent]) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(events)
}

/// A time as [`rfc3339`] writes it, kept for the next record: a window's records mostly share
/// their usage hour.
#[derive(Default)]
struct TimeText {
    last: Option<(DateTime<Utc>, String)>,
}

impl TimeText {
    fn of(&mut self, time: DateTime<Utc>) -> &str {
        if self.last.as_ref().is_none_or(|(t, _)| *t != time) {
            self.last = Some((time, rfc3339(time)));
        }
        self.last.as_ref().map_or("", |(_, text)| text.as_str())
    }
}

/// Writes events of one [`Origin`] straight into a batch body, byte for byte what
/// [`batch_body`] writes for the [`UsageEvent`]s of the same records, without building them
/// (about fifteen owned strings each).
pub struct EventWriter {
    cloud_id: Guid,
    /// `source`, as a JSON string.
    source: Vec<u8>,
    start: TimeText,
    end: TimeText,
}

/// One batch being written: the JSON array so far and how many events it holds.
pub struct Batch {
    body: Vec<u8>,
    events: usize,
}

impl Batch {
    pub fn with_capacity(bytes: usize) -> Self {
        let mut body = Vec::with_capacity(bytes);
        body.push(b'[');
        Self { body, events: 0 }
    }

    pub fn events(&self) -> usize {
        self.events
    }

    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// The body: the JSON array of the events written.
    pub fn into_body(mut self) -> Vec<u8> {
        self.body.push(b']');
        self.body
    }
}

fn json_str(body: &mut Vec<u8>, text: &str) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *body, text)
}

/// A `Display` written as a JSON string, escaped as serde writes the `String` it shows.
fn json_display(
    body: &mut Vec<u8>,
    value: &impl std::fmt::Display,
) -> Result<(), serde_json::Error> {
    serde::Serializer::collect_str(&mut serde_json::Serializer::new(&mut *body), value)
}

fn json_f64(body: &mut Vec<u8>, value: f64) -> Result<(), serde_json::Error> {
    serde_json::to_writer(&mut *body, &value)
}

/// A text known to need no JSON escape (a GUID's), quoted.
fn json_plain(body: &mut Vec<u8>, text: &[u8]) {
    body.push(b'"');
    body.extend_from_slice(text);
    body.push(b'"');
}

impl EventWriter {
    pub fn new(origin: &Origin) -> Result<Self, serde_json::Error> {
        let mut source = Vec::new();
        json_str(&mut source, &origin.source())?;
        Ok(Self {
            cloud_id: origin.cloud_id,
            source,
            start: TimeText::default(),
            end: TimeText::default(),
        })
    }

    /// Appends the event [`UsageEvent::new`] makes of the same arguments to `batch`.
    pub fn write(
        &mut self,
        batch: &mut Batch,
        record: &UsageRecord,
        billed: &BilledTo,
        meter: Option<&Meter>,
        price: Option<Price<'_>>,
    ) -> Result<(), serde_json::Error> {
        let start = self.start.of(record.usage_start);
        let end = self.end.of(record.usage_end);
        let digest = event_digest(self.cloud_id, record, start, end);
        let body = &mut batch.body;
        if batch.events > 0 {
            body.push(b',');
        }
        body.extend_from_slice(br#"{"specversion":"1.0","id":""#);
        for b in digest {
            body.push(HEX_DIGITS[usize::from(b >> 4)]);
            body.push(HEX_DIGITS[usize::from(b & 0xf)]);
        }
        body.extend_from_slice(br#"","source":"#);
        body.extend_from_slice(&self.source);
        body.extend_from_slice(br#","type":""#);
        body.extend_from_slice(EVENT_TYPE.as_bytes());
        body.extend_from_slice(br#"","subject":"#);
        json_plain(body, billed.subscription_id().text().as_bytes());
        body.extend_from_slice(br#","time":"#);
        json_str(body, start)?;
        body.extend_from_slice(br#","datacontenttype":"application/json","data":{"meterId":"#);
        json_plain(body, record.meter_id.text().as_bytes());
        body.extend_from_slice(br#","meterName":"#);
        json_str(body, meter.map_or("", |m| m.name))?;
        body.extend_from_slice(br#","unit":"#);
        json_str(body, meter.map_or("", |m| m.unit))?;
        body.extend_from_slice(br#","quantity":"#);
        json_f64(body, record.quantity)?;
        if is_vcore_meter(record.meter_id) {
            body.extend_from_slice(br#","vcoreHours":"#);
            json_f64(body, record.quantity)?;
        }
        body.extend_from_slice(br#","localSubscriptionId":"#);
        json_plain(body, record.local_subscription_id.text().as_bytes());
        body.extend_from_slice(br#","tenantId":"#);
        json_plain(body, record.tenant_id.text().as_bytes());
        body.extend_from_slice(br#","billedTo":"#);
        json_str(body, billed.kind())?;
        if let Some(customer) = billed.customer() {
            body.extend_from_slice(br#","customerSubscription":"#);
            json_display(body, customer)?;
        }
        if let Some(price) = price {
            body.extend_from_slice(br#","price":"#);
            json_display(body, &price.amount.normalize())?;
            body.extend_from_slice(br#","currency":"#);
            json_str(body, price.currency)?;
        }
        body.extend_from_slice(br#","usageStartTime":"#);
        json_str(body, start)?;
        body.extend_from_slice(br#","usageEndTime":"#);
        json_str(body, end)?;
        body.extend_from_slice(b"}}");
        batch.events += 1;
        Ok(())
    }
}

#[cfg(test)]
#[path = "cloudevents_tests.rs"]
mod tests;
