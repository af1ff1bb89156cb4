use chrono::TimeDelta;
use proptest::prelude::*;

use super::*;
use crate::usage::meter::{BASE_VM_SIZE_HOURS, WINDOWS_VM_SIZE_HOURS, parse_meter_id};

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn meter(text: &str) -> Guid {
    parse_meter_id(text).unwrap()
}

fn month(text: &str) -> Month {
    Month::parse(text).unwrap()
}

fn dec(n: i64) -> Decimal {
    Decimal::from(n)
}

/// The usage of the window starting at `start`: (usage start, meter, quantity, price).
fn usage(start: &str, records: &[(&str, &str, i64, Option<i64>)]) -> WindowUsage {
    let mut usage = WindowUsage::new(Window::starting_at(at(start)));
    for (usage_start, meter_id, quantity, price) in records {
        usage.add(
            at(usage_start),
            meter(meter_id),
            dec(*quantity),
            price.map(dec),
        );
    }
    usage
}

#[test]
fn vcore_hours_are_base_vm_size_hours_only() {
    let totals = add_window(
        None,
        &usage(
            "2026-03-04T10:00:00Z",
            &[
                ("2026-03-04T09:00:00Z", BASE_VM_SIZE_HOURS, 4, None),
                ("2026-03-04T09:00:00Z", WINDOWS_VM_SIZE_HOURS, 4, None),
                ("2026-03-04T09:00:00Z", BASE_VM_SIZE_HOURS, 2, None),
            ],
        ),
    );
    assert_eq!(totals.current.vcore_hours, dec(6));
    assert_eq!(totals.current.meters[&meter(BASE_VM_SIZE_HOURS)], dec(6));
    assert_eq!(totals.current.meters[&meter(WINDOWS_VM_SIZE_HOURS)], dec(4));
    assert_eq!(totals.current.estimated_charge, None);
    assert_eq!(totals.through, at("2026-03-04T11:00:00Z"));
    assert_eq!(totals.current.period, month("2026-03"));
}

#[test]
fn a_window_already_in_the_totals_adds_nothing() {
    let first = usage(
        "2026-03-04T10:00:00Z",
        &[("2026-03-04T09:00:00Z", BASE_VM_SIZE_HOURS, 4, Some(1))],
    );
    let second = usage(
        "2026-03-04T11:00:00Z",
        &[("2026-03-04T10:00:00Z", BASE_VM_SIZE_HOURS, 4, Some(1))],
    );
    let once = add_window(Some(add_window(None, &first)), &second);
    let replayed = add_window(Some(add_window(Some(once.clone()), &first)), &second);
    assert_eq!(replayed, once);
    assert_eq!(once.current.vcore_hours, dec(8));
    assert_eq!(once.current.estimated_charge, Some(dec(2)));
}

#[test]
fn the_month_rolls_over_and_late_records_reach_the_previous_period() {
    let february = add_window(
        None,
        &usage(
            "2026-02-28T23:00:00Z",
            &[("2026-02-28T22:00:00Z", BASE_VM_SIZE_HOURS, 2, Some(3))],
        ),
    );
    // The first window of March still carries February's last hour (reported late).
    let march = add_window(
        Some(february),
        &usage(
            "2026-03-01T00:00:00Z",
            &[
                ("2026-02-28T23:00:00Z", BASE_VM_SIZE_HOURS, 2, Some(3)),
                ("2026-03-01T00:00:00Z", BASE_VM_SIZE_HOURS, 1, Some(1)),
            ],
        ),
    );
    assert_eq!(march.current.period, month("2026-03"));
    assert_eq!(march.current.vcore_hours, dec(1));
    assert_eq!(march.current.estimated_charge, Some(dec(1)));
    let previous = march.previous.as_ref().unwrap();
    assert_eq!(previous.period, month("2026-02"));
    assert_eq!(previous.vcore_hours, dec(4));
    assert_eq!(previous.estimated_charge, Some(dec(6)));

    // A record two months old is forwarded but not totalled.
    let mut late = WindowUsage::new(Window::starting_at(at("2026-03-01T01:00:00Z")));
    assert_eq!(
        late.add(
            at("2026-01-31T23:00:00Z"),
            meter(BASE_VM_SIZE_HOURS),
            dec(5),
            None
        ),
        Bucket::Late
    );
    let after = add_window(Some(march.clone()), &late);
    assert_eq!(
        (after.current.clone(), after.previous.clone()),
        (march.current, march.previous)
    );
    assert_eq!(after.through, at("2026-03-01T02:00:00Z"));

    // April: February is dropped, March becomes previous.
    let april = add_window(Some(after.clone()), &usage("2026-04-01T00:00:00Z", &[]));
    assert_eq!(april.current, PeriodTotals::empty(month("2026-04")));
    assert_eq!(april.previous, Some(after.current.clone()));

    // A party with no usage for a whole month keeps no stale previous period.
    let june = add_window(Some(after), &usage("2026-06-01T00:00:00Z", &[]));
    assert_eq!(june.previous, None);
}

#[test]
fn a_first_window_with_late_records_opens_the_previous_period() {
    let totals = add_window(
        None,
        &usage(
            "2026-03-01T00:00:00Z",
            &[("2026-02-28T23:00:00Z", BASE_VM_SIZE_HOURS, 3, None)],
        ),
    );
    assert_eq!(totals.current.vcore_hours, Decimal::ZERO);
    assert_eq!(
        totals.previous.as_ref().map(|p| (p.period, p.vcore_hours)),
        Some((month("2026-02"), dec(3)))
    );
}

/// A generated record: hours its usage starts before the window, Base VM Size Hours (else
/// Windows VM Size Hours), quantity in thousandths, price in ten-thousandths.
type Generated = (i64, bool, u32, Option<u32>);

fn generated(start: DateTime<Utc>, records: &[Generated]) -> WindowUsage {
    let mut usage = WindowUsage::new(Window::starting_at(start));
    for (hours_before, base, quantity, price) in records {
        let meter_id = meter(if *base {
            BASE_VM_SIZE_HOURS
        } else {
            WINDOWS_VM_SIZE_HOURS
        });
        usage.add(
            start - TimeDelta::hours(*hours_before),
            meter_id,
            Decimal::new(i64::from(*quantity), 3),
            price.map(|p| Decimal::new(i64::from(p), 4)),
        );
    }
    usage
}

fn windows_strategy() -> impl Strategy<Value = Vec<Vec<Generated>>> {
    proptest::collection::vec(
        proptest::collection::vec(
            (
                0i64..1500,
                any::<bool>(),
                0u32..100_000,
                proptest::option::of(0u32..10_000),
            ),
            0..6,
        ),
        1..40,
    )
}

proptest! {
    /// Exactly once: totals after replaying any prefix of the windows (a crash before the
    /// checkpoint moved) equal the totals after adding each window once.
    #[test]
    fn replaying_any_prefix_twice_equals_once(
        start_hour in 0i64..2000, step_hours in 1i64..200, windows in windows_strategy(), crash_at in 0usize..40,
    ) {
        let base = at("2026-01-01T00:00:00Z") + TimeDelta::hours(start_hour);
        let usages: Vec<WindowUsage> = windows
            .iter()
            .enumerate()
            .map(|(i, records)| generated(base + TimeDelta::hours(i as i64 * step_hours), records))
            .collect();
        let once = usages.iter().fold(None, |totals, usage| Some(add_window(totals, usage)));
        let crash_at = crash_at.min(usages.len());
        let before_crash = usages[..crash_at].iter().fold(None, |totals, usage| Some(add_window(totals, usage)));
        let replayed = usages.iter().fold(before_crash, |totals, usage| Some(add_window(totals, usage)));
        prop_assert_eq!(replayed, once);
    }

    /// With contiguous windows inside one month, the totals are the exact sum of every record
    /// of that month (none lost, none doubled), and vcore-hours the Base VM Size Hours part.
    #[test]
    fn totals_equal_the_records_of_the_period(windows in proptest::collection::vec(
        proptest::collection::vec((0i64..3, any::<bool>(), 0u32..100_000, Just(None)), 0..6), 1..24,
    )) {
        let base = at("2026-03-10T00:00:00Z");
        let totals = windows
            .iter()
            .enumerate()
            .fold(None, |totals, (i, records)| Some(add_window(totals, &generated(base + TimeDelta::hours(i as i64), records))))
            .unwrap();
        let all: Vec<_> = windows.iter().flatten().collect();
        let sum = |base_only: bool| -> Decimal {
            all.iter().filter(|(_, base, _, _)| !base_only || *base).map(|(_, _, q, _)| Decimal::new(i64::from(*q), 3)).sum()
        };
        prop_assert_eq!(totals.current.meters.values().sum::<Decimal>(), sum(false));
        prop_assert_eq!(totals.current.vcore_hours, sum(true));
        prop_assert_eq!(totals.through, base + TimeDelta::hours(windows.len() as i64));
    }
}
