//! The stamp's usage records (`subscriberUsageAggregates`, DESIGN.md §9) and their validation.
//! A bad record is never forwarded and never dropped silently: [`validate`] names its cause,
//! which is counted per cause ([`RejectCounts`]).

use std::{collections::BTreeMap, fmt, str::FromStr};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    attribution::Directory,
    borrowed::{AnyText, Str},
    meter::parse_meter_id,
};
use crate::guid::Guid;

/// One page of `subscriberUsageAggregates`.
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UsagePage {
    #[serde(default)]
    pub value: Vec<RawRecord>,
    #[serde(default)]
    pub continuation_token: Option<String>,
}

/// A record as the source wrote it. Every property is optional and of any JSON type here, so
/// that a record missing one, or with one of the wrong type, is rejected with its cause rather
/// than failing the whole page.
#[derive(Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RawRecord {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub properties: RawProperties,
}

#[derive(Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RawProperties {
    #[serde(default)]
    pub subscription_id: Option<Value>,
    #[serde(default)]
    pub usage_start_time: Option<Value>,
    #[serde(default)]
    pub usage_end_time: Option<Value>,
    #[serde(default)]
    pub meter_id: Option<Value>,
    #[serde(default)]
    pub quantity: Option<RawQuantity>,
    /// A JSON document in a string: `{"Microsoft.Resources":{resourceUri,location,tags,additionalInfo}}`.
    #[serde(default)]
    pub instance_data: Option<Value>,
}

/// The text of a property, `""` when it is absent or not a string.
fn text(value: &Option<Value>) -> &str {
    value.as_ref().and_then(Value::as_str).unwrap_or("")
}

/// One page as the operator reads it: the same fields as [`UsagePage`], each record's text
/// borrowed from the page's body (only a text with escapes, such as `instanceData`, is copied).
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct PageRef<'a> {
    #[serde(borrow, default)]
    pub value: Vec<RecordRef<'a>>,
    #[serde(default)]
    pub continuation_token: Option<String>,
}

/// [`RawRecord`], borrowed: any property of any JSON type, a string kept.
#[derive(Deserialize, Debug, Default)]
pub struct RecordRef<'a> {
    #[serde(borrow, default)]
    pub id: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub properties: PropertiesRef<'a>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct PropertiesRef<'a> {
    #[serde(borrow, default)]
    pub subscription_id: AnyText<'a>,
    #[serde(borrow, default)]
    pub usage_start_time: AnyText<'a>,
    #[serde(borrow, default)]
    pub usage_end_time: AnyText<'a>,
    #[serde(borrow, default)]
    pub meter_id: AnyText<'a>,
    #[serde(default)]
    pub quantity: Option<RawQuantity>,
    #[serde(borrow, default)]
    pub instance_data: AnyText<'a>,
}

/// What validation reads of a record, however it was parsed: each property's text (`""`
/// when absent or not a string) and the quantity.
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'r> {
    pub id: Option<&'r str>,
    pub subscription_id: &'r str,
    pub usage_start_time: &'r str,
    pub usage_end_time: &'r str,
    pub meter_id: &'r str,
    pub quantity: Option<f64>,
    pub instance_data: &'r str,
}

impl RawRecord {
    pub fn view(&self) -> RecordView<'_> {
        let p = &self.properties;
        RecordView {
            id: self.id.as_deref(),
            subscription_id: text(&p.subscription_id),
            usage_start_time: text(&p.usage_start_time),
            usage_end_time: text(&p.usage_end_time),
            meter_id: text(&p.meter_id),
            quantity: p.quantity.map(|q| q.0),
            instance_data: text(&p.instance_data),
        }
    }
}

impl RecordRef<'_> {
    pub fn view(&self) -> RecordView<'_> {
        let p = &self.properties;
        RecordView {
            id: self.id.as_ref().map(Str::as_str),
            subscription_id: p.subscription_id.text(),
            usage_start_time: p.usage_start_time.text(),
            usage_end_time: p.usage_end_time.text(),
            meter_id: p.meter_id.text(),
            quantity: p.quantity.map(|q| q.0),
            instance_data: p.instance_data.text(),
        }
    }
}

/// A quantity as written: a JSON number, or a text such as `"NaN"` or `"Infinity"` (JSON has
/// no number for those, so a source that has them can only send them as text); anything else
/// reads as NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawQuantity(pub f64);

impl<'de> Deserialize<'de> for RawQuantity {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawQuantity;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawQuantity, E> {
                Ok(RawQuantity(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawQuantity, E> {
                Ok(RawQuantity(v as f64))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawQuantity, E> {
                Ok(RawQuantity(v as f64))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawQuantity, E> {
                // Text that is no number at all reads as NaN: rejected, with the record's cause.
                Ok(RawQuantity(v.trim().parse().unwrap_or(f64::NAN)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<RawQuantity, E> {
                Ok(RawQuantity(f64::NAN))
            }
            fn visit_unit<E>(self) -> Result<RawQuantity, E> {
                Ok(RawQuantity(f64::NAN))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawQuantity, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(RawQuantity(f64::NAN))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawQuantity, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(RawQuantity(f64::NAN))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Why a record is rejected; the text is the `byCause` key and the metric's `outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectCause {
    /// meterId missing or not a GUID.
    InvalidMeterId,
    /// quantity missing, NaN, or text that is no number.
    NanQuantity,
    InfiniteQuantity,
    NegativeQuantity,
    /// quantity above [`MAX_QUANTITY`]: no hourly record is that large, and prices stay exact.
    QuantityOutOfRange,
    /// usageStartTime or usageEndTime missing or not an RFC 3339 time.
    MalformedTime,
    /// usageEndTime not after usageStartTime.
    EndNotAfterStart,
    /// The local subscription is not a GUID or not in the stamp's subscription list.
    UnknownSubscription,
    /// instanceData missing, not JSON, or without `Microsoft.Resources.resourceUri`.
    MalformedInstanceData,
}

impl RejectCause {
    pub const ALL: [RejectCause; 9] = [
        RejectCause::InvalidMeterId,
        RejectCause::NanQuantity,
        RejectCause::InfiniteQuantity,
        RejectCause::NegativeQuantity,
        RejectCause::QuantityOutOfRange,
        RejectCause::MalformedTime,
        RejectCause::EndNotAfterStart,
        RejectCause::UnknownSubscription,
        RejectCause::MalformedInstanceData,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectCause::InvalidMeterId => "invalid_meter_id",
            RejectCause::NanQuantity => "nan_quantity",
            RejectCause::InfiniteQuantity => "infinite_quantity",
            RejectCause::NegativeQuantity => "negative_quantity",
            RejectCause::QuantityOutOfRange => "quantity_out_of_range",
            RejectCause::MalformedTime => "malformed_time",
            RejectCause::EndNotAfterStart => "end_not_after_start",
            RejectCause::UnknownSubscription => "unknown_subscription",
            RejectCause::MalformedInstanceData => "malformed_instance_data",
        }
    }
}

impl fmt::Display for RejectCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected record: its cause, and a sentence for the `Usage` condition naming the record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub cause: RejectCause,
    pub message: String,
}

/// The largest quantity one record may carry (10^15 units).
pub const MAX_QUANTITY: f64 = 1e15;

/// A record that passed validation, with its local subscription's directory tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct UsageRecord {
    pub local_subscription_id: Guid,
    pub tenant_id: Guid,
    pub meter_id: Guid,
    /// As the source wrote it: forwarded as this number.
    pub quantity: f64,
    /// The same value as an exact decimal: what totals and prices add up.
    pub exact_quantity: Decimal,
    pub usage_start: DateTime<Utc>,
    pub usage_end: DateTime<Utc>,
    /// `instanceData["Microsoft.Resources"].resourceUri`.
    pub resource_uri: String,
}

#[derive(Deserialize)]
struct InstanceData {
    #[serde(rename = "Microsoft.Resources")]
    resources: Resources,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resources {
    resource_uri: String,
}

fn reject(record: &RecordView<'_>, cause: RejectCause, what: String) -> Rejection {
    let id = record.id.unwrap_or("(no id)");
    Rejection {
        cause,
        message: format!("usage record {id}: {what}"),
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The exact decimal of a finite `quantity`: the shortest text that reads back as the same
/// f64 (what Rust prints), written on the stack when it fits.
pub fn exact_decimal(quantity: f64) -> Option<Decimal> {
    let mut text = StackText::default();
    if fmt::Write::write_fmt(&mut text, format_args!("{quantity}")).is_ok() {
        Decimal::from_str(text.as_str()).ok()
    } else {
        Decimal::from_str(&quantity.to_string()).ok()
    }
}

/// A short text on the stack; a write that does not fit fails.
struct StackText {
    bytes: [u8; 64],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        Self {
            bytes: [0; 64],
            len: 0,
        }
    }
}

impl StackText {
    fn as_str(&self) -> &str {
        // Only whole `str`s are ever copied in.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The record checked, first failing cause wins: meter id, quantity, times, local
/// subscription (known to `directory`), instanceData.
pub fn validate(record: &RawRecord, directory: &Directory) -> Result<UsageRecord, Rejection> {
    validate_view(&record.view(), directory)
}

/// [`validate`] of a record however it was parsed.
pub fn validate_view(
    record: &RecordView<'_>,
    directory: &Directory,
) -> Result<UsageRecord, Rejection> {
    let meter_text = record.meter_id;
    let meter_id = parse_meter_id(meter_text).ok_or_else(|| {
        reject(
            record,
            RejectCause::InvalidMeterId,
            format!("meterId {meter_text:?} is not a GUID"),
        )
    })?;

    let quantity = record.quantity.unwrap_or(f64::NAN);
    let quantity_cause = if quantity.is_nan() {
        Some(RejectCause::NanQuantity)
    } else if quantity.is_infinite() {
        Some(RejectCause::InfiniteQuantity)
    } else if quantity < 0.0 {
        Some(RejectCause::NegativeQuantity)
    } else if quantity > MAX_QUANTITY {
        Some(RejectCause::QuantityOutOfRange)
    } else {
        None
    };
    // Rust prints the shortest text that reads back as the same f64: the decimal the source meant.
    let exact_quantity = match quantity_cause {
        Some(cause) => Err(cause),
        None => exact_decimal(quantity).ok_or(RejectCause::QuantityOutOfRange),
    }
    .map_err(|cause| {
        reject(
            record,
            cause,
            format!("quantity {quantity} is not a non-negative number of at most 1e15"),
        )
    })?;

    let (Some(usage_start), Some(usage_end)) = (
        parse_time(record.usage_start_time),
        parse_time(record.usage_end_time),
    ) else {
        return Err(reject(
            record,
            RejectCause::MalformedTime,
            format!(
                "usageStartTime {:?} or usageEndTime {:?} is not an RFC 3339 time",
                record.usage_start_time, record.usage_end_time
            ),
        ));
    };
    if usage_end <= usage_start {
        return Err(reject(
            record,
            RejectCause::EndNotAfterStart,
            format!("usageEndTime {usage_end} is not after usageStartTime {usage_start}"),
        ));
    }

    let subscription_text = record.subscription_id;
    let (local_subscription_id, tenant_id) = Guid::parse(subscription_text)
        .and_then(|id| Some((id, directory.tenant_of(id)?)))
        .ok_or_else(|| {
            reject(
                record,
                RejectCause::UnknownSubscription,
                format!("local subscription {subscription_text:?} is not in the stamp's subscription list"),
            )
        })?;

    let resource_uri = serde_json::from_str::<InstanceData>(record.instance_data)
        .ok()
        .map(|data| data.resources.resource_uri)
        .filter(|uri| !uri.is_empty())
        .ok_or_else(|| {
            reject(
                record,
                RejectCause::MalformedInstanceData,
                "instanceData is not a JSON document with Microsoft.Resources.resourceUri"
                    .to_string(),
            )
        })?;

    Ok(UsageRecord {
        local_subscription_id,
        tenant_id,
        meter_id,
        quantity,
        exact_quantity,
        usage_start,
        usage_end,
        resource_uri,
    })
}

/// Rejected records counted per cause: `status.usage.rejectedRecords`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RejectCounts {
    pub total: u64,
    pub by_cause: BTreeMap<String, u64>,
}

impl RejectCounts {
    pub fn count(&mut self, cause: RejectCause) {
        self.total += 1;
        *self.by_cause.entry(cause.as_str().to_string()).or_default() += 1;
    }

    /// Adds another window's counts.
    pub fn add(&mut self, other: &RejectCounts) {
        self.total += other.total;
        for (cause, n) in &other.by_cause {
            *self.by_cause.entry(cause.clone()).or_default() += n;
        }
    }
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
