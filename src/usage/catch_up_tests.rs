use chrono::TimeDelta;
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;
use crate::{
    guid::Guid,
    usage::meter::{BASE_VM_SIZE_HOURS, WINDOWS_VM_SIZE_HOURS, parse_meter_id},
};

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn meter(text: &str) -> Guid {
    parse_meter_id(text).unwrap()
}

const METERS: [&str; 2] = [BASE_VM_SIZE_HOURS, WINDOWS_VM_SIZE_HOURS];

/// The window starting `hours` after `start`.
fn window(start: &str, hours: i64) -> Window {
    Window::starting_at(at(start) + TimeDelta::hours(hours))
}

/// A window's usage: (hours before the window's start the usage starts, meter, quantity).
fn usage_of(window: Window, records: &[(i64, usize, i64)]) -> WindowUsage {
    let mut usage = WindowUsage::new(window);
    for (back, m, quantity) in records {
        usage.add(
            window.start - TimeDelta::hours(*back),
            meter(METERS[*m]),
            Decimal::from(*quantity),
            None,
        );
    }
    usage
}

fn vcores(totals: Option<&MonthToDate>) -> Option<(String, Decimal, Option<Decimal>)> {
    totals.map(|t| {
        (
            t.current.period.to_string(),
            t.current.vcore_hours,
            t.previous.as_ref().map(|p| p.vcore_hours),
        )
    })
}

#[test]
fn a_group_changes_each_party_once_and_through_follows_its_last_usage() {
    let start = "2026-03-04T00:00:00Z";
    // (party, window index, base vcore-hours): "a" in every window, "b" in the first two only,
    // "c" in none.
    let mut group = CatchUp::new();
    for party in ["a", "b", "c"] {
        group.party(party, None);
    }
    for i in 0..5 {
        let w = window(start, i);
        let mut usage = vec![("a", usage_of(w, &[(1, 0, 2)]))];
        if i < 2 {
            usage.push(("b", usage_of(w, &[(1, 0, 4)])));
        }
        group.fold(w, usage.iter().map(|(k, u)| (*k, u)));
    }
    let changed: Vec<(&str, DateTime<Utc>, Decimal)> = group
        .changed()
        .map(|(k, t)| (*k, t.through, t.current.vcore_hours))
        .collect();
    assert_eq!(
        changed,
        [
            ("a", at("2026-03-04T05:00:00Z"), Decimal::from(10)),
            ("b", at("2026-03-04T02:00:00Z"), Decimal::from(8)),
        ],
        "c had no usage and no totals: nothing to write"
    );
    assert_eq!(group.windows(), 5);
    assert_eq!(group.through(), Some(at("2026-03-04T05:00:00Z")));
}

#[test]
fn a_month_boundary_inside_a_group_rolls_every_party() {
    // Windows from 22:00 on 31 October to 02:00 on 1 November; "busy" has usage in each (the
    // hour before the window's start), "idle" only before the group.
    let start = "2026-10-31T22:00:00Z";
    let before = window(start, -5);
    let idle_totals = add_window(None, &usage_of(before, &[(1, 0, 3)]));
    let mut group = CatchUp::new();
    group.party("busy", None);
    group.party("idle", Some(idle_totals.clone()));
    for i in 0..4 {
        let w = window(start, i);
        let busy = usage_of(w, &[(1, 0, 2), (1, 1, 2)]);
        group.fold(w, [("busy", &busy)]);
    }
    // busy: usage of 21:00, 22:00 and 23:00 in October (the 00:00 window's is the month before,
    // `previous`), of 00:00 in November.
    assert_eq!(
        vcores(group.totals(&"busy")),
        Some((
            "2026-11".to_string(),
            Decimal::from(2),
            Some(Decimal::from(6))
        ))
    );
    // idle: rolled over at the first November window, its October kept as `previous`.
    let idle = group.totals(&"idle").cloned();
    assert_eq!(
        vcores(idle.as_ref()),
        Some(("2026-11".to_string(), Decimal::ZERO, Some(Decimal::from(3))))
    );
    assert_eq!(idle.map(|t| t.through), Some(at("2026-11-01T01:00:00Z")));
    assert_eq!(group.changed().count(), 2);
}

#[test]
fn a_party_written_further_before_a_crash_skips_what_it_holds() {
    let start = "2026-03-04T00:00:00Z";
    let usage: Vec<WindowUsage> = (0..4)
        .map(|i| usage_of(window(start, i), &[(0, 0, 1)]))
        .collect();
    let mut whole = CatchUp::new();
    whole.party("a", None);
    for u in &usage {
        whole.fold(u.window(), [("a", u)]);
    }
    let written = whole.totals(&"a").cloned();
    // The crash: "a" was written with the group's end, the checkpoint was not moved. The group
    // again, from the old checkpoint and "a"'s status: nothing changes, nothing is written.
    let mut again = CatchUp::new();
    again.party("a", written.clone());
    for u in &usage {
        again.fold(u.window(), [("a", u)]);
    }
    assert_eq!(again.totals(&"a"), written.as_ref());
    assert_eq!(again.changed().count(), 0);
    assert_eq!(
        vcores(written.as_ref()).map(|v| v.1),
        Some(Decimal::from(4))
    );
}

#[test]
fn usage_of_no_party_is_left_out() {
    let w = window("2026-03-04T00:00:00Z", 0);
    let gone = usage_of(w, &[(0, 0, 5)]);
    let mut group = CatchUp::new();
    group.party("a", None);
    group.fold(w, [("deleted", &gone)]);
    assert_eq!(group.changed().count(), 0);
    assert_eq!(group.totals(&"deleted"), None);
}

/// Totals before, the window's usage, the window, and (period, through) after.
type Case = (
    Option<MonthToDate>,
    Option<WindowUsage>,
    Window,
    Option<(String, DateTime<Utc>)>,
);

#[test]
fn fold_window_is_add_window_with_idle_windows_moving_only_the_month() {
    let w = window("2026-03-04T10:00:00Z", 0);
    let some = add_window(None, &usage_of(w, &[(0, 0, 2)]));
    let later = window("2026-03-04T10:00:00Z", 3);
    let next_month = window("2026-04-01T00:00:00Z", 0);
    let cases: [Case; 6] = [
        (None, None, later, None),
        // Only late records: totals exist from then on, empty.
        (
            None,
            Some(WindowUsage::new(later)),
            later,
            Some(("2026-03".into(), later.end)),
        ),
        (
            Some(some.clone()),
            None,
            later,
            Some(("2026-03".into(), w.end)),
        ),
        (
            Some(some.clone()),
            Some(WindowUsage::new(later)),
            later,
            Some(("2026-03".into(), w.end)),
        ),
        (
            Some(some.clone()),
            None,
            next_month,
            Some(("2026-04".into(), next_month.end)),
        ),
        // Already in the totals.
        (
            Some(some.clone()),
            Some(usage_of(w, &[(0, 0, 2)])),
            w,
            Some(("2026-03".into(), w.end)),
        ),
    ];
    for (i, (totals, usage, window, want)) in cases.into_iter().enumerate() {
        let got = fold_window(totals, usage.as_ref(), window);
        assert_eq!(
            got.as_ref()
                .map(|t| (t.current.period.to_string(), t.through)),
            want,
            "case {i}"
        );
    }
    let again = fold_window(Some(some.clone()), Some(&usage_of(w, &[(0, 0, 2)])), w);
    assert_eq!(again, Some(some), "the guard: a window is added once");
}

/// A window's usage per party (`None`: nothing billed to it): (hours back, meter, quantity).
type Plan = Vec<Vec<Option<Vec<(i64, usize, i64)>>>>;

const PARTIES: usize = 3;

fn plan_usage(plan: &Plan, start: &str, i: usize) -> Vec<(usize, WindowUsage)> {
    let w = window(start, i as i64);
    plan[i]
        .iter()
        .enumerate()
        .filter_map(|(p, records)| Some((p, usage_of(w, records.as_ref()?))))
        .collect()
}

/// One attempt at a group: how many windows it takes, and whether the operator dies after
/// writing some of its parties (the bits of the mask) and before the checkpoint.
type Attempt = (usize, Option<u8>);

/// Each window's usage by party, in window order.
type PlanUsage = Vec<Vec<(usize, WindowUsage)>>;

/// A plan's start, each window's usage, and the totals any grouping must give.
fn scenario(offset: i64, plan: &Plan) -> (String, PlanUsage, Vec<Option<MonthToDate>>) {
    let start = (at("2026-10-30T00:00:00Z") + TimeDelta::hours(offset)).to_rfc3339();
    let usage: Vec<_> = (0..plan.len())
        .map(|i| plan_usage(plan, &start, i))
        .collect();
    let expected = one_window_at_a_time(&usage, &start);
    (start, usage, expected)
}

/// Each party's totals folded one window at a time: what any grouping must give.
fn one_window_at_a_time(
    usage: &[Vec<(usize, WindowUsage)>],
    start: &str,
) -> Vec<Option<MonthToDate>> {
    let mut expected: Vec<Option<MonthToDate>> = vec![None; PARTIES];
    for (i, window_usage) in usage.iter().enumerate() {
        let w = window(start, i as i64);
        for (p, totals) in expected.iter_mut().enumerate() {
            let billed = window_usage.iter().find(|(q, _)| *q == p).map(|(_, u)| u);
            *totals = fold_window(totals.take(), billed, w);
        }
    }
    expected
}

fn plans() -> impl Strategy<Value = (i64, Plan, Vec<Attempt>)> {
    let records = prop::collection::vec((0i64..3, 0usize..2, 0i64..50), 0..3);
    (1usize..40).prop_flat_map(move |n| {
        (
            0i64..48,
            prop::collection::vec(
                prop::collection::vec(prop::option::of(records.clone()), PARTIES),
                n,
            ),
            prop::collection::vec((1usize..12, prop::option::of(0u8..8)), 0..10),
        )
    })
}

proptest! {
    /// For any windows (often across a month end), any split into groups and any crash point
    /// (a subset of parties written with the group's totals, the checkpoint not moved, the
    /// group done again from the old checkpoint, perhaps split otherwise), the totals are the
    /// one-window-at-a-time fold's. Without the `through` guard the replay counts twice.
    #[test]
    fn groups_and_crashes_total_as_one_window_at_a_time(
        (offset, plan, attempts) in plans(),
    ) {
        let (start, usage, expected) = &scenario(offset, &plan);
        let (start, n) = (start.as_str(), usage.len());
        let mut store: Vec<Option<MonthToDate>> = vec![None; PARTIES];
        let mut checkpoint = 0;
        let rest = (n, None);
        for (len, crash) in attempts.into_iter().chain(std::iter::repeat(rest)) {
            if checkpoint >= n {
                break;
            }
            let end = (checkpoint + len).min(n);
            let mut group = CatchUp::new();
            for (p, totals) in store.iter().enumerate() {
                group.party(p, totals.clone());
            }
            for (i, window_usage) in usage.iter().enumerate().take(end).skip(checkpoint) {
                group.fold(window(start, i as i64), window_usage.iter().map(|(p, u)| (*p, u)));
            }
            let written: Vec<(usize, MonthToDate)> =
                group.changed().map(|(p, t)| (*p, t.clone())).collect();
            for (p, totals) in written {
                if crash.is_none_or(|mask| mask & (1 << p) != 0) {
                    store[p] = Some(totals);
                }
            }
            if crash.is_none() {
                prop_assert_eq!(group.through(), Some(window(start, end as i64 - 1).end));
                checkpoint = end;
            }
        }
        prop_assert_eq!(&store, expected);
    }
}

proptest! {
    /// The controller reads a group while the group before it is written, the new fold
    /// starting from the totals being written (`carried`), and writes the groups in order; a
    /// crash while a group is written leaves some of its parties written, loses the group read
    /// meanwhile, and restarts from the checkpoint. For any windows, splits and crash points
    /// the totals are the one-window-at-a-time fold's.
    #[test]
    fn groups_read_while_the_one_before_is_written_total_as_one_window_at_a_time(
        (offset, plan, attempts) in plans(),
    ) {
        let (start, usage, expected) = &scenario(offset, &plan);
        let (start, n) = (start.as_str(), usage.len());
        let mut store: Vec<Option<MonthToDate>> = vec![None; PARTIES];
        let mut checkpoint = 0;
        // The group read and not yet written, and the end of its windows.
        let mut pending: Option<(CatchUp<usize>, usize)> = None;
        let rest = (n, None);
        for (len, crash) in attempts.into_iter().chain(std::iter::repeat(rest)) {
            if checkpoint >= n {
                break;
            }
            let begin = pending.as_ref().map_or(checkpoint, |(_, end)| *end);
            let next = (begin < n).then(|| {
                let end = (begin + len).min(n);
                let mut group = CatchUp::new();
                for (p, stored) in store.iter().enumerate() {
                    let totals = match &pending {
                        Some((previous, _)) => previous.carried(&p).unwrap_or(None),
                        None => stored.clone(),
                    };
                    group.party(p, totals);
                }
                for (i, window_usage) in usage.iter().enumerate().take(end).skip(begin) {
                    group.fold(window(start, i as i64), window_usage.iter().map(|(p, u)| (*p, u)));
                }
                (group, end)
            });
            if let Some((previous, end)) = pending.take() {
                let written: Vec<(usize, MonthToDate)> =
                    previous.changed().map(|(p, t)| (*p, t.clone())).collect();
                for (p, totals) in written {
                    if crash.is_none_or(|mask| mask & (1 << p) != 0) {
                        store[p] = Some(totals);
                    }
                }
                if crash.is_some() {
                    continue;
                }
                checkpoint = end;
            }
            pending = next;
        }
        prop_assert_eq!(&store, expected);
    }
}

#[test]
fn carried_is_a_partys_totals_now_and_nothing_for_no_party() {
    let w = window("2026-03-04T00:00:00Z", 0);
    let mut group = CatchUp::new();
    group.party("a", None);
    group.party("b", None);
    group.fold(w, [("a", &usage_of(w, &[(0, 0, 2)]))]);
    assert_eq!(group.carried(&"a").flatten().as_ref(), group.totals(&"a"));
    assert!(group.carried(&"a").flatten().is_some());
    assert_eq!(group.carried(&"b"), Some(None));
    assert_eq!(group.carried(&"z"), None);
}
