//! One window's records, one at a time (DESIGN.md §9): validate, attribute, price, bucket;
//! each good record becomes a CloudEvent for the caller to batch, and only per-party sums are
//! kept, so memory grows with the parties and meters billed, never with the records.

use std::collections::HashMap;

use super::{
    attribution::{Attachment, Attachments, BilledTo, Directory, Slot},
    cloudevents::{Batch, EventWriter, Origin, Price, UsageEvent},
    meter::{Meter, lookup},
    period::Bucket,
    rate_card::RateCard,
    record::{RawRecord, RejectCounts, Rejection, UsageRecord, validate},
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

/// The decisions of one window so far (against one [`Context`]).
#[derive(Debug)]
pub struct WindowIngest {
    window: Window,
    /// Each party billed in the window, in the order first billed.
    usage: Vec<(BilledTo, WindowUsage)>,
    /// Where each party is in `usage`, by its slot among the context's attachments.
    parties: HashMap<Slot, usize>,
    pub outcomes: Outcomes,
    pub rejected: RejectCounts,
    /// The first rejection's cause and record, for the `Usage` condition's message.
    pub first_rejection: Option<Rejection>,
}

/// A good record decided: the party billed (its index in `usage`), the meter and the price.
struct Decided<'c> {
    party: usize,
    meter: Option<&'static Meter>,
    price: Option<Price<'c>>,
}

impl WindowIngest {
    pub fn new(window: Window) -> Self {
        Self {
            window,
            usage: Vec::new(),
            parties: HashMap::new(),
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
        let record = self.valid(validate(raw, context.directory))?;
        let decided = self.decide(context, &record);
        let event = UsageEvent::new(
            context.origin,
            &record,
            &self.usage[decided.party].0,
            decided.meter,
            decided.price.clone(),
        );
        self.count(&record, decided);
        Some(event)
    }

    /// [`Self::ingest`] of a record validated already (`validated`: what
    /// [`validate`] answered), its event written into `batch` instead of built: `false` for a
    /// rejected record (counted).
    pub fn ingest_into(
        &mut self,
        context: &Context<'_>,
        validated: Result<UsageRecord, Rejection>,
        writer: &mut EventWriter,
        batch: &mut Batch,
    ) -> Result<bool, serde_json::Error> {
        let Some(record) = self.valid(validated) else {
            return Ok(false);
        };
        let decided = self.decide(context, &record);
        writer.write(
            batch,
            &record,
            &self.usage[decided.party].0,
            decided.meter,
            decided.price.clone(),
        )?;
        self.count(&record, decided);
        Ok(true)
    }

    fn valid(&mut self, validated: Result<UsageRecord, Rejection>) -> Option<UsageRecord> {
        match validated {
            Ok(record) => Some(record),
            Err(rejection) => {
                self.rejected.count(rejection.cause);
                self.first_rejection.get_or_insert(rejection);
                None
            }
        }
    }

    fn decide<'c>(&mut self, context: &Context<'c>, record: &UsageRecord) -> Decided<'c> {
        let (slot, attachment) = match context
            .attachments
            .billing_slot(record.tenant_id, record.usage_start)
        {
            Some((slot, attachment)) => (slot, Some(attachment)),
            None => (Slot::Registration, None),
        };
        let party = match self.parties.get(&slot) {
            Some(party) => *party,
            None => {
                let billed = attachment.map_or(
                    BilledTo::Registration {
                        subscription_id: context.registration_subscription,
                    },
                    Attachment::billed,
                );
                self.usage.push((billed, WindowUsage::new(self.window)));
                self.parties.insert(slot, self.usage.len() - 1);
                self.usage.len() - 1
            }
        };
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
        Decided {
            party,
            meter,
            price,
        }
    }

    fn count(&mut self, record: &UsageRecord, decided: Decided<'_>) {
        let bucket = self.usage[decided.party].1.add(
            record.usage_start,
            record.meter_id,
            record.exact_quantity,
            decided.price.map(|p| p.amount),
        );
        self.outcomes.forwarded += 1;
        if decided.meter.is_none() {
            self.outcomes.unmapped_meter += 1;
        }
        if matches!(bucket, Bucket::Late | Bucket::Ahead) {
            self.outcomes.late += 1;
        }
    }

    /// Each billed party's usage in this window, to add to its totals once the window's
    /// batches were all acknowledged.
    pub fn usage(&self) -> impl Iterator<Item = (&BilledTo, &WindowUsage)> {
        self.usage.iter().map(|(billed, usage)| (billed, usage))
    }
}

#[cfg(test)]
#[path = "ingest_tests.rs"]
mod tests;
