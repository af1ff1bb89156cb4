//! Catching up (DESIGN.md §9, "Exactly once"): when several windows are due, they are
//! processed as one group. Each window's batches are sent and acknowledged as before, and its
//! usage is folded into in-memory totals per billed party (each CustomerSubscription, the
//! Registration's own share) with the same fold as one window at a time ([`fold_window`]:
//! [`add_window`], its `through` guard and the month roll). After the group, each party whose
//! totals changed is written once, then the checkpoint once.
//!
//! A crash anywhere inside a group re-does the group from the old checkpoint. The fold starts
//! from each party's current totals (what its status holds), so a party already written with a
//! later `through` skips the windows it holds: nothing is counted twice.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::{
    attribution::BilledTo,
    ingest::{Outcomes, WindowIngest},
    period::Month,
    record::{RejectCounts, Rejection},
    totals::{MonthToDate, WindowUsage, add_window},
    window::Window,
};

/// One party's totals once `window` is folded in (`usage`: what the window billed to it, if
/// anything), exactly as its status shows them after that window alone. An idle window (nothing
/// totalled for the party) moves nothing but the month: `through` only moves with usage, so that
/// an idle customer is not rewritten every hour. `None` is a party with no totals yet.
pub fn fold_window(
    totals: Option<MonthToDate>,
    usage: Option<&WindowUsage>,
    window: Window,
) -> Option<MonthToDate> {
    match (totals, usage) {
        (None, usage) => usage.map(|u| add_window(None, u)),
        (Some(old), Some(u)) if !u.is_empty() => Some(add_window(Some(old), u)),
        (Some(old), _) => {
            if old.through < window.end && Month::of(window.start) > old.current.period {
                Some(add_window(Some(old), &WindowUsage::new(window)))
            } else {
                Some(old)
            }
        }
    }
}

#[derive(Debug)]
struct Party {
    /// What its status held when the group started.
    start: Option<MonthToDate>,
    now: Option<MonthToDate>,
}

/// The fold of one group of windows, in memory until it is written.
#[derive(Debug)]
pub struct CatchUp<K> {
    parties: BTreeMap<K, Party>,
    last: Option<Window>,
    windows: usize,
    /// The group's records, by outcome, and its rejections per cause.
    pub outcomes: Outcomes,
    pub rejected: RejectCounts,
    /// The group's first rejected record.
    pub first_rejection: Option<Rejection>,
}

impl<K: Ord> Default for CatchUp<K> {
    fn default() -> Self {
        Self {
            parties: BTreeMap::new(),
            last: None,
            windows: 0,
            outcomes: Outcomes::default(),
            rejected: RejectCounts::default(),
            first_rejection: None,
        }
    }
}

impl<K: Ord> CatchUp<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A party the group totals, from the totals its status holds now.
    pub fn party(&mut self, key: K, totals: Option<MonthToDate>) {
        self.parties.insert(
            key,
            Party {
                start: totals.clone(),
                now: totals,
            },
        );
    }

    /// Folds one window (they come in order): each party's usage in it, every other party of
    /// the group idle. Usage of a key that is no party (a customer deleted meanwhile) is left
    /// out: it is in the sink's events, and there is no status to total it in.
    pub fn fold<'a>(
        &mut self,
        window: Window,
        usage: impl IntoIterator<Item = (K, &'a WindowUsage)>,
    ) {
        let usage: BTreeMap<K, &WindowUsage> = usage.into_iter().collect();
        for (key, party) in &mut self.parties {
            let billed = usage.get(key).copied();
            party.now = fold_window(party.now.take(), billed, window);
        }
        self.last = Some(window);
        self.windows += 1;
    }

    /// Folds a decided window: its usage, keyed by `key_of` (`None`: no party), and its
    /// outcomes and rejections.
    pub fn fold_ingest(&mut self, decided: &WindowIngest, key_of: impl Fn(&BilledTo) -> Option<K>) {
        self.fold(
            decided.window(),
            decided
                .usage()
                .filter_map(|(billed, usage)| Some((key_of(billed)?, usage))),
        );
        self.outcomes.add(&decided.outcomes);
        self.rejected.add(&decided.rejected);
        if self.first_rejection.is_none() {
            self.first_rejection = decided.first_rejection.clone();
        }
    }

    /// Windows folded so far.
    pub fn windows(&self) -> usize {
        self.windows
    }

    /// The end of the last window folded: the checkpoint once the group is written.
    pub fn through(&self) -> Option<DateTime<Utc>> {
        self.last.map(|w| w.end)
    }

    /// The parties whose totals the group changed, with their totals now: what is written.
    pub fn changed(&self) -> impl Iterator<Item = (&K, &MonthToDate)> {
        self.parties
            .iter()
            .filter_map(|(key, party)| match &party.now {
                Some(now) if party.start.as_ref() != Some(now) => Some((key, now)),
                _ => None,
            })
    }

    /// A party's totals now.
    pub fn totals(&self, key: &K) -> Option<&MonthToDate> {
        self.parties.get(key).and_then(|p| p.now.as_ref())
    }

    /// What the next group starts a party of this one from: its totals now (`Some(None)`: a
    /// party with no totals yet), `None` for a key that is no party here.
    pub fn carried(&self, key: &K) -> Option<Option<MonthToDate>> {
        self.parties.get(key).map(|p| p.now.clone())
    }
}

#[cfg(test)]
#[path = "catch_up_tests.rs"]
mod tests;
