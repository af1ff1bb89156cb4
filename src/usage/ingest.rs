//! One window's records, one at a time (DESIGN.md §9): validate, attribute, price, bucket;
//! each good record becomes a CloudEvent for the caller to batch, and only per-party sums are
//! kept, so memory grows with the parties and meters billed, never with the records.

use std::collections::BTreeMap;

use super::{
    attribution::{Attachments, BilledTo, Directory, attribute},
    cloudevents::{Origin, Price, UsageEvent},
    meter::lookup,
    period::Bucket,
    rate_card::RateCard,
    record::{RawRecord, RejectCounts, Rejection, validate},
    totals::WindowUsage,
    window::Window,
};
use crate::guid::Guid;

/// What a window is decided against: read once per window from the caches.
pub struct Context<'a> {
    pub origin: &'a Origin,
    pub directory: &'a Directory,
    pub attachments: &'a Attachments,
    /// The Registration's own subscription: billed for every tenant not attached.
    pub registration_subscription: Guid,
    pub rate_card: Option<&'a RateCard>,
}

/// How records fared, by the `outcome` label of `azs_csp_usage_records_total` (rejections are
/// counted per cause in [`WindowIngest::rejected`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Good records forwarded (including the two kinds below).
    pub forwarded: u64,
    /// Forwarded with their local meter id, unpriced: not in the built-in table.
    pub unmapped_meter: u64,
    /// Forwarded, not totalled: older than the previous period (or ahead of the window's month).
    pub late: u64,
}

impl Outcomes {
    /// Adds another window's outcomes.
    pub fn add(&mut self, other: &Outcomes) {
        self.forwarded += other.forwarded;
        self.unmapped_meter += other.unmapped_meter;
        self.late += other.late;
    }
}

/// The decisions of one window so far.
#[derive(Debug)]
pub struct WindowIngest {
    window: Window,
    usage: BTreeMap<BilledTo, WindowUsage>,
    pub outcomes: Outcomes,
    pub rejected: RejectCounts,
    /// The first rejection's cause and record, for the `Usage` condition's message.
    pub first_rejection: Option<Rejection>,
}

impl WindowIngest {
    pub fn new(window: Window) -> Self {
        Self {
            window,
            usage: BTreeMap::new(),
            outcomes: Outcomes::default(),
            rejected: RejectCounts::default(),
            first_rejection: None,
        }
    }

    pub fn window(&self) -> Window {
        self.window
    }

    /// Decides one record: the event to forward, or `None` for a rejected one (counted).
    pub fn ingest(&mut self, context: &Context<'_>, raw: &RawRecord) -> Option<UsageEvent> {
        let record = match validate(raw, context.directory) {
            Ok(record) => record,
            Err(rejection) => {
                self.rejected.count(rejection.cause);
                self.first_rejection.get_or_insert(rejection);
                return None;
            }
        };
        let billed = attribute(
            record.tenant_id,
            record.usage_start,
            context.attachments,
            context.registration_subscription,
        );
        let meter = lookup(record.meter_id);
        let price = match (meter, context.rate_card) {
            (Some(_), Some(card)) => {
                card.price(record.meter_id, record.exact_quantity)
                    .map(|amount| Price {
                        amount,
                        currency: card.currency(),
                    })
            }
            _ => None,
        };
        let event = UsageEvent::new(context.origin, &record, &billed, meter, price.clone());
        let bucket = self
            .usage
            .entry(billed)
            .or_insert_with(|| WindowUsage::new(self.window))
            .add(
                record.usage_start,
                record.meter_id,
                record.exact_quantity,
                price.map(|p| p.amount),
            );
        self.outcomes.forwarded += 1;
        if meter.is_none() {
            self.outcomes.unmapped_meter += 1;
        }
        if matches!(bucket, Bucket::Late | Bucket::Ahead) {
            self.outcomes.late += 1;
        }
        Some(event)
    }

    /// Each billed party's usage in this window, to add to its totals once the window's
    /// batches were all acknowledged.
    pub fn usage(&self) -> impl Iterator<Item = (&BilledTo, &WindowUsage)> {
        self.usage.iter()
    }
}

#[cfg(test)]
#[path = "ingest_tests.rs"]
mod tests;
