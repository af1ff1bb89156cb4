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
    let fields = [
        cloud_id.to_string(),
        record.local_subscription_id.to_string(),
        record.meter_id.to_string(),
        record.resource_uri.to_lowercase(),
        rfc3339(record.usage_start),
        rfc3339(record.usage_end),
    ];
    let mut digest = Sha256::new();
    for field in &fields {
        digest.update((field.len() as u64).to_be_bytes());
        digest.update(field.as_bytes());
    }
    hex(&digest.finalize())
}

/// Lower-case hex, two digits a byte: one allocation, where a `format!` a byte was 32 per event.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        text.push(char::from(DIGITS[usize::from(b >> 4)]));
        text.push(char::from(DIGITS[usize::from(b & 0xf)]));
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

#[cfg(test)]
#[path = "cloudevents_tests.rs"]
mod tests;
