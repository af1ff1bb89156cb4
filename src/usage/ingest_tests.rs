use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::*;
use crate::usage::{
    attribution::{Attachment, CustomerRef},
    meter::{BASE_VM_SIZE_HOURS, WINDOWS_VM_SIZE_HOURS},
    totals::{MonthToDate, add_window},
};

fn guid(n: u8) -> Guid {
    Guid::parse(&format!("{n:08x}-0000-4000-8000-000000000000")).unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

const UNKNOWN_METER: &str = "00000000-0000-4000-8000-0000000000aa";
const REGISTRATION: u8 = 0xee;

/// Local subscriptions 1..=4 belong to tenants 11..=14; tenant 11 is attached from the start
/// (as fabrikam, subscription 21), tenant 12 from 10:30 (as tailspin, subscription 22).
struct World {
    origin: Origin,
    directory: Directory,
    attachments: Attachments,
    rate_card: RateCard,
}

impl World {
    fn new() -> Self {
        let pairs: Vec<(String, String)> = (1..=4)
            .map(|n| (guid(n).to_string(), guid(10 + n).to_string()))
            .collect();
        let attach = |name: &str, tenant: u8, subscription: u8, since: &str| Attachment {
            customer: CustomerRef {
                namespace: "partner".into(),
                name: name.into(),
            },
            tenant_id: guid(tenant),
            subscription_id: guid(subscription),
            attached_since: at(since),
        };
        Self {
            origin: Origin {
                namespace: "partner".into(),
                name: "stack".into(),
                cloud_id: guid(0xc1),
            },
            directory: Directory::new(pairs.iter().map(|(s, t)| (s.as_str(), t.as_str()))),
            attachments: Attachments::new([
                attach("fabrikam", 11, 21, "2026-01-01T00:00:00Z"),
                attach("tailspin", 12, 22, "2026-03-04T10:30:00Z"),
            ]),
            rate_card: RateCard::parse(&format!(
                "currency: EUR\nrates:\n- meterId: {BASE_VM_SIZE_HOURS}\n  pricePerUnit: 0.01\n- meterId: {WINDOWS_VM_SIZE_HOURS}\n  pricePerUnit: 0.05\n"
            ))
            .unwrap(),
        }
    }

    fn context(&self) -> Context<'_> {
        Context {
            origin: &self.origin,
            directory: &self.directory,
            attachments: &self.attachments,
            registration_subscription: guid(REGISTRATION),
            rate_card: Some(&self.rate_card),
        }
    }
}

fn raw(id: &str, local: Value, meter: &str, quantity: Value, start: &str) -> RawRecord {
    serde_json::from_value(raw_json(id, local, meter, quantity, start)).unwrap()
}

fn raw_json(id: &str, local: Value, meter: &str, quantity: Value, start: &str) -> Value {
    let start_time = at(start);
    json!({
        "id": id,
        "properties": {
            "subscriptionId": local,
            "usageStartTime": start_time.to_rfc3339(),
            "usageEndTime": (start_time + TimeDelta::hours(1)).to_rfc3339(),
            "meterId": meter,
            "quantity": quantity,
            "instanceData": json!({"Microsoft.Resources": {"resourceUri": format!("/vm/{id}")}}).to_string(),
        }
    })
}

fn totals_of(ingest: &WindowIngest) -> BTreeMap<BilledTo, MonthToDate> {
    ingest
        .usage()
        .map(|(party, usage)| (party.clone(), add_window(None, usage)))
        .collect()
}

#[test]
fn a_window_of_every_kind_of_record() {
    let world = World::new();
    let context = world.context();
    let mut ingest = WindowIngest::new(Window::starting_at(at("2026-03-04T11:00:00Z")));
    let local = |n: u8| json!(guid(n).to_string());
    let records = [
        // (record, forwarded?, subject, billedTo)
        (
            raw(
                "linux-a",
                local(1),
                BASE_VM_SIZE_HOURS,
                json!(2),
                "2026-03-04T10:00:00Z",
            ),
            Some((21, "customer")),
        ),
        (
            raw(
                "windows-a",
                local(1),
                WINDOWS_VM_SIZE_HOURS,
                json!(2),
                "2026-03-04T10:00:00Z",
            ),
            Some((21, "customer")),
        ),
        (
            raw(
                "b-before-attach",
                local(2),
                BASE_VM_SIZE_HOURS,
                json!(4),
                "2026-03-04T10:00:00Z",
            ),
            Some((REGISTRATION, "registration")),
        ),
        (
            raw(
                "b-after-attach",
                local(2),
                BASE_VM_SIZE_HOURS,
                json!(4),
                "2026-03-04T11:00:00Z",
            ),
            Some((22, "customer")),
        ),
        (
            raw(
                "c-no-custsub",
                local(3),
                BASE_VM_SIZE_HOURS,
                json!(1),
                "2026-03-04T10:00:00Z",
            ),
            Some((REGISTRATION, "registration")),
        ),
        (
            raw(
                "unknown-meter",
                local(1),
                UNKNOWN_METER,
                json!(7),
                "2026-03-04T10:00:00Z",
            ),
            Some((21, "customer")),
        ),
        (
            raw(
                "late",
                local(1),
                BASE_VM_SIZE_HOURS,
                json!(100),
                "2026-01-15T10:00:00Z",
            ),
            Some((21, "customer")),
        ),
        (
            raw(
                "previous-month",
                local(1),
                BASE_VM_SIZE_HOURS,
                json!(3),
                "2026-02-28T23:00:00Z",
            ),
            Some((21, "customer")),
        ),
        (
            raw(
                "bad-meter",
                local(1),
                "vm",
                json!(1),
                "2026-03-04T10:00:00Z",
            ),
            None,
        ),
        (
            raw(
                "bad-quantity",
                local(1),
                BASE_VM_SIZE_HOURS,
                json!(-1),
                "2026-03-04T10:00:00Z",
            ),
            None,
        ),
        (
            raw(
                "bad-subscription",
                local(9),
                BASE_VM_SIZE_HOURS,
                json!(1),
                "2026-03-04T10:00:00Z",
            ),
            None,
        ),
    ];
    for (record, expected) in &records {
        let event = ingest.ingest(&context, record);
        let got = event
            .as_ref()
            .map(|e| (e.subject.clone(), e.data.billed_to));
        let want = expected.map(|(subject, kind)| (guid(subject).to_string(), kind));
        assert_eq!(got, want, "{:?}", record.id);
        if let Some(event) = event {
            assert_eq!(event.source, "/registrations/partner/stack");
            let priced = event.data.meter_id != UNKNOWN_METER;
            assert_eq!(event.data.price.is_some(), priced, "{:?}", record.id);
            assert_eq!(event.data.currency.is_some(), priced, "{:?}", record.id);
        }
    }
    assert_eq!(
        ingest.outcomes,
        Outcomes {
            forwarded: 8,
            unmapped_meter: 1,
            late: 1
        }
    );
    assert_eq!(ingest.rejected.total, 3);
    assert_eq!(
        ingest.first_rejection.as_ref().map(|r| r.cause.as_str()),
        Some("invalid_meter_id")
    );
    assert!(
        ingest
            .first_rejection
            .as_ref()
            .unwrap()
            .message
            .contains("bad-meter")
    );

    let totals = totals_of(&ingest);
    let fabrikam = &totals[&BilledTo::Customer {
        customer: CustomerRef {
            namespace: "partner".into(),
            name: "fabrikam".into(),
        },
        subscription_id: guid(21),
    }];
    // Linux and Windows cores: vcore-hours count Base VM Size Hours only; the late record is
    // not totalled; February's hour is in `previous`.
    assert_eq!(fabrikam.current.vcore_hours, Decimal::from(2));
    assert_eq!(
        fabrikam.current.meters.values().sum::<Decimal>(),
        Decimal::from(11)
    );
    assert_eq!(fabrikam.current.estimated_charge, Some(Decimal::new(12, 2)));
    let previous = fabrikam.previous.as_ref().unwrap();
    assert_eq!(
        (previous.period.to_string(), previous.vcore_hours),
        ("2026-02".to_string(), Decimal::from(3))
    );
    let registration = &totals[&BilledTo::Registration {
        subscription_id: guid(REGISTRATION),
    }];
    assert_eq!(registration.current.vcore_hours, Decimal::from(5));
    assert_eq!(totals.len(), 3);
}

#[test]
fn without_a_rate_card_nothing_is_priced() {
    let world = World::new();
    let context = Context {
        rate_card: None,
        ..world.context()
    };
    let mut ingest = WindowIngest::new(Window::starting_at(at("2026-03-04T11:00:00Z")));
    let event = ingest
        .ingest(
            &context,
            &raw(
                "a",
                json!(guid(1).to_string()),
                BASE_VM_SIZE_HOURS,
                json!(2),
                "2026-03-04T10:00:00Z",
            ),
        )
        .unwrap();
    assert_eq!((event.data.price, event.data.currency), (None, None));
    assert!(
        totals_of(&ingest)
            .values()
            .all(|t| t.current.estimated_charge.is_none())
    );
}

proptest! {
    /// Nothing made, nothing lost: for any mix of records, the forwarded quantities equal the
    /// valid source quantities, and the parties' totals plus the late records equal them too;
    /// every record is either forwarded or rejected.
    #[test]
    fn parties_totals_and_late_records_add_up_to_the_source(records in proptest::collection::vec(
        (0u8..6, any::<bool>(), -2i64..50_000, 0i64..1_600), 0..80,
    )) {
        let world = World::new();
        let context = world.context();
        let window_start = at("2026-03-04T11:00:00Z");
        let mut ingest = WindowIngest::new(Window::starting_at(window_start));
        let mut forwarded = Decimal::ZERO;
        let mut late = Decimal::ZERO;
        let mut source_valid = Decimal::ZERO;
        for (i, (local, base, thousandths, hours_before)) in records.iter().enumerate() {
            let quantity = Decimal::new(*thousandths, 3);
            let start = window_start - TimeDelta::hours(*hours_before);
            let meter = if *base { BASE_VM_SIZE_HOURS } else { UNKNOWN_METER };
            let record = raw(&format!("r{i}"), json!(guid(*local).to_string()), meter, json!(quantity.to_string().parse::<f64>().unwrap()), &start.to_rfc3339());
            let valid = (1..=4).contains(local) && *thousandths >= 0;
            if valid {
                source_valid += quantity;
            }
            match ingest.ingest(&context, &record) {
                Some(event) => {
                    prop_assert!(valid);
                    forwarded += Decimal::from_str_exact(&event.data.quantity.to_string()).unwrap();
                    if !Bucket::of(start, crate::usage::period::Month::of(window_start)).is_totalled() {
                        late += quantity;
                    }
                }
                None => prop_assert!(!valid),
            }
        }
        prop_assert_eq!(forwarded, source_valid);
        let totalled: Decimal = totals_of(&ingest)
            .values()
            .flat_map(|t| t.current.meters.values().chain(t.previous.iter().flat_map(|p| p.meters.values())))
            .sum();
        prop_assert_eq!(totalled + late, source_valid);
        prop_assert_eq!(ingest.outcomes.forwarded + ingest.rejected.total, records.len() as u64);
    }
}

proptest! {
    /// The operator's path (records validated ahead, events written straight into the batch)
    /// decides as `ingest` does: the same events, byte for byte, the same parties' usage, the
    /// same outcomes and rejections.
    #[test]
    fn ingest_into_a_batch_decides_as_ingest(records in proptest::collection::vec(
        (0u8..6, 0u8..3, -2i64..50_000, 0i64..40), 0..60,
    ), priced in any::<bool>()) {
        use crate::usage::{
            cloudevents::{Batch, EventWriter, batch_body},
            record::{validate_view, RecordRef},
        };
        let world = World::new();
        let context = Context {
            rate_card: priced.then_some(&world.rate_card),
            ..world.context()
        };
        let window = Window::starting_at(at("2026-03-04T11:00:00Z"));
        let (mut built, mut written) = (WindowIngest::new(window), WindowIngest::new(window));
        let mut writer = EventWriter::new(context.origin).unwrap();
        let mut batch = Batch::with_capacity(0);
        let mut events = Vec::new();
        for (i, (local, meter, thousandths, hours_before)) in records.iter().enumerate() {
            let meter = [BASE_VM_SIZE_HOURS, WINDOWS_VM_SIZE_HOURS, UNKNOWN_METER][usize::from(*meter)];
            let start = window.start - TimeDelta::hours(*hours_before);
            let quantity = json!(Decimal::new(*thousandths, 3).to_string().parse::<f64>().unwrap());
            let text = raw_json(&format!("r{i}"), json!(guid(*local).to_string()), meter, quantity, &start.to_rfc3339()).to_string();
            let owned: RawRecord = serde_json::from_str(&text).unwrap();
            events.extend(built.ingest(&context, &owned));
            let borrowed: RecordRef = serde_json::from_str(&text).unwrap();
            let validated = validate_view(&borrowed.view(), context.directory);
            written.ingest_into(&context, validated, &mut writer, &mut batch).unwrap();
        }
        prop_assert_eq!(batch.events(), events.len());
        prop_assert_eq!(batch.into_body(), batch_body(&events).unwrap());
        prop_assert_eq!(totals_of(&written), totals_of(&built));
        prop_assert_eq!(&written.outcomes, &built.outcomes);
        prop_assert_eq!(&written.rejected, &built.rejected);
        prop_assert_eq!(&written.first_rejection, &built.first_rejection);
    }
}
