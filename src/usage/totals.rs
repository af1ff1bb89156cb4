//! Month-to-date totals of one billed party (a CustomerSubscription, or the Registration's
//! own share), added one window at a time and guarded by `through`: a window whose end is not
//! after `through` is already in the totals and adds nothing, so replaying windows after a
//! crash never counts twice (DESIGN.md §9, "Exactly once").

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::{
    meter::is_vcore_meter,
    period::{Bucket, Month},
    window::Window,
};
use crate::guid::Guid;

/// The sums of one period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeriodTotals {
    pub period: Month,
    /// Base VM Size Hours only: the Windows licence meter counts the same cores again.
    pub vcore_hours: Decimal,
    /// Priced usage, when a rate card is configured.
    pub estimated_charge: Option<Decimal>,
    pub meters: BTreeMap<Guid, Decimal>,
}

impl PeriodTotals {
    pub fn empty(period: Month) -> Self {
        Self {
            period,
            vcore_hours: Decimal::ZERO,
            estimated_charge: None,
            meters: BTreeMap::new(),
        }
    }

    fn add(&mut self, sums: &Sums) {
        self.vcore_hours += sums.vcore_hours;
        if let Some(charge) = sums.charge {
            *self.estimated_charge.get_or_insert(Decimal::ZERO) += charge;
        }
        for (meter, quantity) in &sums.meters {
            *self.meters.entry(*meter).or_insert(Decimal::ZERO) += quantity;
        }
    }
}

/// What `status.usage` holds: the current period, the one before while late records arrive,
/// and the end of the last window added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonthToDate {
    pub through: DateTime<Utc>,
    pub current: PeriodTotals,
    pub previous: Option<PeriodTotals>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sums {
    vcore_hours: Decimal,
    charge: Option<Decimal>,
    meters: BTreeMap<Guid, Decimal>,
}

impl Sums {
    fn add(&mut self, meter_id: Guid, quantity: Decimal, price: Option<Decimal>) {
        *self.meters.entry(meter_id).or_insert(Decimal::ZERO) += quantity;
        if is_vcore_meter(meter_id) {
            self.vcore_hours += quantity;
        }
        if let Some(price) = price {
            *self.charge.get_or_insert(Decimal::ZERO) += price;
        }
    }

    fn is_empty(&self) -> bool {
        self.meters.is_empty()
    }
}

/// One window's usage billed to one party, split by period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowUsage {
    window: Window,
    period: Month,
    current: Sums,
    previous: Sums,
}

impl WindowUsage {
    /// The usage of `window`, totalled into the month of its (reported) start.
    pub fn new(window: Window) -> Self {
        Self {
            window,
            period: Month::of(window.start),
            current: Sums::default(),
            previous: Sums::default(),
        }
    }

    pub fn window(&self) -> Window {
        self.window
    }

    /// Whether nothing was totalled in it (no record, or only late ones).
    pub fn is_empty(&self) -> bool {
        self.current.is_empty() && self.previous.is_empty()
    }

    /// Adds a record; answers its bucket (a `Late` or `Ahead` one adds nothing: count it).
    pub fn add(
        &mut self,
        usage_start: DateTime<Utc>,
        meter_id: Guid,
        quantity: Decimal,
        price: Option<Decimal>,
    ) -> Bucket {
        let bucket = Bucket::of(usage_start, self.period);
        match bucket {
            Bucket::Current => self.current.add(meter_id, quantity, price),
            Bucket::Previous => self.previous.add(meter_id, quantity, price),
            Bucket::Late | Bucket::Ahead => {}
        }
        bucket
    }
}

/// The totals once `usage` is added: unchanged when its window is already in them (`through`);
/// otherwise rolled over to the window's month when it is a later one, the window's sums added,
/// and `through` moved to the window's end. `None` is a party with no totals yet.
pub fn add_window(totals: Option<MonthToDate>, usage: &WindowUsage) -> MonthToDate {
    let window = usage.window;
    let mut totals = match totals {
        Some(totals) if totals.through >= window.end => return totals,
        Some(totals) => totals,
        None => MonthToDate {
            through: window.end,
            current: PeriodTotals::empty(usage.period),
            previous: None,
        },
    };
    if usage.period > totals.current.period {
        let old = std::mem::replace(&mut totals.current, PeriodTotals::empty(usage.period));
        totals.previous = (old.period == usage.period.previous()).then_some(old);
    }
    // Windows arrive in order, so a window's month is never before the totals' (its end is
    // after `through`); its sums of two months back are late and were not kept.
    if usage.period == totals.current.period {
        totals.current.add(&usage.current);
        if !usage.previous.is_empty() {
            totals
                .previous
                .get_or_insert_with(|| PeriodTotals::empty(usage.period.previous()))
                .add(&usage.previous);
        }
    }
    totals.through = window.end;
    totals
}

#[cfg(test)]
#[path = "totals_tests.rs"]
mod tests;
