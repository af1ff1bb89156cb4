use chrono::TimeDelta;
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::usage::{
    meter::{BASE_VM_SIZE_HOURS, WINDOWS_VM_SIZE_HOURS},
    totals::{WindowUsage, add_window},
    window::Window,
};

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn sample() -> MonthToDate {
    let base = parse_meter_id(BASE_VM_SIZE_HOURS).unwrap();
    let unknown = parse_meter_id("00000000-0000-4000-8000-0000000000aa").unwrap();
    let mut usage = WindowUsage::new(Window::starting_at(at("2026-03-01T00:00:00Z")));
    usage.add(
        at("2026-03-01T00:00:00Z"),
        base,
        Decimal::new(125, 1),
        Some(Decimal::new(10625, 5)),
    );
    usage.add(at("2026-03-01T00:00:00Z"), unknown, Decimal::from(3), None);
    usage.add(
        at("2026-02-28T23:00:00Z"),
        base,
        Decimal::from(2),
        Some(Decimal::new(17, 3)),
    );
    add_window(None, &usage)
}

#[test]
fn totals_show_in_the_designed_shape() {
    let status = UsageTotals::new(&sample(), Some("EUR"));
    assert_eq!(
        serde_json::to_value(&status).unwrap(),
        json!({
            "period": "2026-03",
            "through": "2026-03-01T01:00:00Z",
            "vcoreHours": "12.5",
            "estimatedCharge": "0.10625",
            "currency": "EUR",
            "meters": [
                {"meterId": "00000000-0000-4000-8000-0000000000aa", "name": "", "unit": "", "quantity": "3"},
                {"meterId": "fab6eb84-500b-4a09-a8ca-7358f8bbaea5", "name": "Base VM Size Hours", "unit": "Virtual core hours", "quantity": "12.5"},
            ],
            "previous": {
                "period": "2026-02",
                "vcoreHours": "2",
                "estimatedCharge": "0.017",
                "currency": "EUR",
                "meters": [
                    {"meterId": "fab6eb84-500b-4a09-a8ca-7358f8bbaea5", "name": "Base VM Size Hours", "unit": "Virtual core hours", "quantity": "2"},
                ],
            },
        })
    );
    // Without a rate card: no charge, no currency.
    let mut unpriced = sample();
    unpriced.current.estimated_charge = None;
    unpriced.previous = None;
    let value = serde_json::to_value(UsageTotals::new(&unpriced, Some("EUR"))).unwrap();
    for absent in ["estimatedCharge", "currency", "previous"] {
        assert!(value.get(absent).is_none(), "{absent} in {value}");
    }
}

#[test]
fn totals_read_back_exactly() {
    let totals = sample();
    let json = serde_json::to_string(&UsageTotals::new(&totals, Some("EUR"))).unwrap();
    assert_eq!(
        json.parse::<UsageTotals>().unwrap().totals().unwrap(),
        totals
    );
}

#[test]
fn totals_edited_into_nonsense_are_refused() {
    let good = serde_json::to_value(UsageTotals::new(&sample(), None)).unwrap();
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 5] = [
        ("through", |v| v["through"] = json!("yesterday")),
        ("period", |v| v["previous"]["period"] = json!("2026-13")),
        ("vcoreHours", |v| v["vcoreHours"] = json!("lots")),
        ("meters[].meterId", |v| {
            v["meters"][0]["meterId"] = json!("vm")
        }),
        ("meters[].quantity", |v| {
            v["previous"]["meters"][0]["quantity"] = json!("1e400")
        }),
    ];
    for (field, edit) in cases {
        let mut value = good.clone();
        edit(&mut value);
        let status: UsageTotals = serde_json::from_value(value).unwrap();
        assert_eq!(status.totals().unwrap_err().field, field);
    }
}

proptest! {
    /// Whatever the windows added, status holds the totals exactly: reading them back and
    /// adding a window gives what adding it in memory gives.
    #[test]
    fn status_round_trips_any_totals(
        records in proptest::collection::vec((0i64..900, any::<bool>(), 0i64..10_000_000, proptest::option::of(0i64..1_000_000)), 1..30),
    ) {
        let start = at("2026-03-20T00:00:00Z");
        let mut totals = None;
        for (i, chunk) in records.chunks(3).enumerate() {
            let window = Window::starting_at(start + TimeDelta::hours(i as i64 * 5));
            let mut usage = WindowUsage::new(window);
            for (hours_before, base, quantity, price) in chunk {
                let meter = parse_meter_id(if *base { BASE_VM_SIZE_HOURS } else { WINDOWS_VM_SIZE_HOURS }).unwrap();
                usage.add(window.start - TimeDelta::hours(*hours_before), meter, Decimal::new(*quantity, 4), price.map(|p| Decimal::new(p, 6)));
            }
            let from_status = totals
                .as_ref()
                .map(|t| UsageTotals::new(t, Some("USD")).totals().unwrap());
            prop_assert_eq!(&from_status, &totals);
            totals = Some(add_window(totals, &usage));
        }
    }
}
