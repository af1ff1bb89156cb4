use std::str::FromStr;

use serde_json::{Value, json};

use super::*;
use crate::usage::{
    attribution::CustomerRef,
    meter::{BASE_VM_SIZE_HOURS, WINDOWS_VM_SIZE_HOURS, lookup, parse_meter_id},
};

fn guid(text: &str) -> Guid {
    Guid::parse(text).unwrap()
}

fn origin() -> Origin {
    Origin {
        namespace: "partner-contoso".into(),
        name: "contoso-stack".into(),
        cloud_id: guid("5F1C2D3E-4A5B-4C6D-8E7F-9A0B1C2D3E4F"),
    }
}

fn record(meter: &str, quantity: f64) -> UsageRecord {
    UsageRecord {
        local_subscription_id: guid("11111111-1111-4111-8111-111111111111"),
        tenant_id: guid("22222222-2222-4222-8222-222222222222"),
        meter_id: parse_meter_id(meter).unwrap(),
        quantity,
        exact_quantity: Decimal::from_str(&quantity.to_string()).unwrap(),
        usage_start: "2026-03-04T10:00:00Z".parse().unwrap(),
        usage_end: "2026-03-04T11:00:00Z".parse().unwrap(),
        resource_uri:
            "/subscriptions/1111/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
                .into(),
    }
}

fn customer() -> BilledTo {
    BilledTo::Customer {
        customer: CustomerRef {
            namespace: "partner-contoso".into(),
            name: "fabrikam".into(),
        },
        subscription_id: guid("E09A4E93-29A7-4EBA-A7F2-3B2C1D0E9F8A"),
    }
}

fn event(meter: &str, billed: &BilledTo, price: Option<Price<'_>>) -> UsageEvent {
    let record = record(meter, 4.0);
    UsageEvent::new(&origin(), &record, billed, lookup(record.meter_id), price)
}

#[test]
fn an_event_has_every_field_of_the_design() {
    let price = Price {
        amount: Decimal::from_str("0.0340").unwrap(),
        currency: "EUR",
    };
    let value = serde_json::to_value(event(BASE_VM_SIZE_HOURS, &customer(), Some(price))).unwrap();
    let id = value["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);
    assert_eq!(
        value,
        json!({
            "specversion": "1.0",
            "id": id,
            "source": "/registrations/partner-contoso/contoso-stack",
            "type": "csp.azurestack.io.usage.v1",
            "subject": "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a",
            "time": "2026-03-04T10:00:00Z",
            "datacontenttype": "application/json",
            "data": {
                "meterId": "fab6eb84-500b-4a09-a8ca-7358f8bbaea5",
                "meterName": "Base VM Size Hours",
                "unit": "Virtual core hours",
                "quantity": 4.0,
                "vcoreHours": 4.0,
                "localSubscriptionId": "11111111-1111-4111-8111-111111111111",
                "tenantId": "22222222-2222-4222-8222-222222222222",
                "billedTo": "customer",
                "customerSubscription": "partner-contoso/fabrikam",
                "price": "0.034",
                "currency": "EUR",
                "usageStartTime": "2026-03-04T10:00:00Z",
                "usageEndTime": "2026-03-04T11:00:00Z",
            }
        })
    );
}

#[test]
fn optional_fields_are_left_out() {
    let registration = BilledTo::Registration {
        subscription_id: guid("6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c"),
    };
    let windows = serde_json::to_value(event(WINDOWS_VM_SIZE_HOURS, &registration, None)).unwrap();
    let data = windows["data"].as_object().unwrap();
    assert_eq!(windows["subject"], "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c");
    assert_eq!(data["billedTo"], "registration");
    for absent in ["vcoreHours", "customerSubscription", "price", "currency"] {
        assert!(!data.contains_key(absent), "{absent} in {data:?}");
    }
    // An unknown meter is forwarded with its local id, unnamed and unpriced.
    let unknown = serde_json::to_value(event(
        "00000000-0000-4000-8000-0000000000aa",
        &registration,
        None,
    ))
    .unwrap();
    assert_eq!(
        unknown["data"]["meterId"],
        "00000000-0000-4000-8000-0000000000aa"
    );
    assert_eq!(unknown["data"]["meterName"], "");
}

#[test]
fn the_id_is_deterministic_and_tells_records_apart() {
    let base = record(BASE_VM_SIZE_HOURS, 4.0);
    let cloud = origin().cloud_id;
    // The same record, however it is written at the source, has one id; the quantity and the
    // party billed are no part of it (a re-sent window after a re-attribution is the same usage).
    let mut same = base.clone();
    same.quantity = 5.0;
    same.resource_uri = base.resource_uri.to_uppercase();
    assert_eq!(event_id(cloud, &base), event_id(cloud, &same));
    type Change = fn(&mut UsageRecord);
    let changes: [(&str, Change); 5] = [
        ("local subscription", |r| {
            r.local_subscription_id = guid("11111111-1111-4111-8111-111111111112")
        }),
        ("meter", |r| {
            r.meter_id = parse_meter_id(WINDOWS_VM_SIZE_HOURS).unwrap()
        }),
        ("resource", |r| r.resource_uri.push('2')),
        ("start", |r| r.usage_start -= chrono::TimeDelta::hours(1)),
        ("end", |r| r.usage_end += chrono::TimeDelta::hours(1)),
    ];
    for (what, change) in changes {
        let mut other = base.clone();
        change(&mut other);
        assert_ne!(event_id(cloud, &base), event_id(cloud, &other), "{what}");
    }
    assert_ne!(
        event_id(cloud, &base),
        event_id(guid("5F1C2D3E-4A5B-4C6D-8E7F-9A0B1C2D3E40"), &base),
        "cloud id"
    );
}

/// The batch body is what the CloudEvents SDK reads as a list of CloudEvents 1.0, with the
/// same attributes and data.
#[test]
fn the_batch_parses_with_the_cloudevents_sdk() {
    use cloudevents::{AttributesReader, Data, Event};

    let price = Price {
        amount: Decimal::from_str("1.25").unwrap(),
        currency: "USD",
    };
    let events = vec![
        event(BASE_VM_SIZE_HOURS, &customer(), Some(price)),
        event(WINDOWS_VM_SIZE_HOURS, &customer(), None),
    ];
    let body = batch_body(&events).unwrap();
    let parsed: Vec<Event> = serde_json::from_slice(&body).unwrap();
    assert_eq!(parsed.len(), 2);
    for (sdk, ours) in parsed.iter().zip(&events) {
        assert_eq!(sdk.specversion(), cloudevents::event::SpecVersion::V10);
        assert_eq!(sdk.id(), ours.id);
        assert_eq!(sdk.source().as_str(), ours.source);
        assert_eq!(sdk.ty(), EVENT_TYPE);
        assert_eq!(sdk.subject(), Some(ours.subject.as_str()));
        assert_eq!(
            sdk.time()
                .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            Some(ours.time.clone())
        );
        assert_eq!(sdk.datacontenttype(), Some("application/json"));
        match sdk.data() {
            Some(Data::Json(data)) => assert_eq!(data, &serde_json::to_value(&ours.data).unwrap()),
            other => panic!("data is not JSON: {other:?}"),
        }
    }
    assert_eq!(BATCH_CONTENT_TYPE, "application/cloudevents-batch+json");
    let empty: Value = serde_json::from_slice(&batch_body(&[]).unwrap()).unwrap();
    assert_eq!(empty, json!([]));
}

#[test]
fn ids_are_lower_case_hex_of_the_digest_as_before() {
    // Ids must not change between versions: a window re-sent by a newer operator after a crash
    // must carry the ids the older one sent, or the sink counts it twice.
    for bytes in [&[][..], &[0x00, 0x0f, 0xa5, 0xff][..], &[0x12; 32][..]] {
        let before: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(bytes), before);
    }
    let id = event_id(origin().cloud_id, &record(BASE_VM_SIZE_HOURS, 4.0));
    assert_eq!(id.len(), 64);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
}

mod written_straight {
    use proptest::prelude::*;

    use super::*;
    use crate::usage::meter::{METERS, VM_SIZE_HOURS};

    fn any_guid() -> impl Strategy<Value = Guid> {
        any::<u128>().prop_map(Guid::from_u128)
    }

    fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
        // From 1970 to about 2100, whole seconds or not (AutoSi writes 3, 6 or 9 digits).
        (
            0i64..4_102_444_800,
            prop_oneof![Just(0u32), 0u32..1_000_000_000],
        )
            .prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
    }

    /// Texts with what JSON must escape: quotes, backslashes, control characters, non-ASCII.
    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9-]{1,20}",
            ".{0,24}",
            "[\"\\\\/\\x00-\\x1f\\x7fé€😀]{0,8}",
        ]
    }

    fn any_meter() -> impl Strategy<Value = Guid> {
        prop_oneof![
            (0..METERS.len()).prop_map(|i| parse_meter_id(METERS[i].id).unwrap()),
            Just(parse_meter_id(BASE_VM_SIZE_HOURS).unwrap()),
            Just(parse_meter_id(VM_SIZE_HOURS).unwrap()),
            any_guid(),
        ]
    }

    fn any_quantity() -> impl Strategy<Value = f64> {
        prop_oneof![
            0.0f64..=1e15,
            (0u32..100_000).prop_map(|n| f64::from(n) / 8.0),
            Just(0.1),
            Just(5e-324),
        ]
    }

    fn any_record() -> impl Strategy<Value = UsageRecord> {
        (
            any_guid(),
            any_guid(),
            any_meter(),
            any_quantity(),
            any_time(),
            any_time(),
            any_text(),
        )
            .prop_map(
                |(local, tenant, meter, quantity, start, end, uri)| UsageRecord {
                    local_subscription_id: local,
                    tenant_id: tenant,
                    meter_id: meter,
                    quantity,
                    exact_quantity: Decimal::ZERO,
                    usage_start: start,
                    usage_end: end,
                    resource_uri: uri,
                },
            )
    }

    fn any_billed() -> impl Strategy<Value = BilledTo> {
        prop_oneof![
            (any_text(), any_text(), any_guid()).prop_map(|(namespace, name, subscription)| {
                BilledTo::Customer {
                    customer: CustomerRef { namespace, name },
                    subscription_id: subscription,
                }
            }),
            any_guid().prop_map(|subscription_id| BilledTo::Registration { subscription_id }),
        ]
    }

    fn any_price() -> impl Strategy<Value = Option<(Decimal, String)>> {
        proptest::option::of(
            (any::<i64>(), 0u32..20, any_text())
                .prop_map(|(mantissa, scale, currency)| (Decimal::new(mantissa, scale), currency)),
        )
    }

    fn any_event() -> impl Strategy<Value = (UsageRecord, BilledTo, bool, Option<(Decimal, String)>)>
    {
        (any_record(), any_billed(), any::<bool>(), any_price())
    }

    proptest! {
        /// The batch written straight is byte for byte what serde writes for the events that
        /// `UsageEvent::new` builds of the same records: the sink sees no difference.
        #[test]
        fn the_written_batch_is_serdes_batch_of_the_built_events(
            namespace in any_text(),
            name in any_text(),
            cloud_id in any_guid(),
            events in prop::collection::vec(any_event(), 0..6),
        ) {
            let origin = Origin { namespace, name, cloud_id };
            let mut writer = EventWriter::new(&origin).unwrap();
            let mut batch = Batch::with_capacity(0);
            let mut built = Vec::new();
            for (record, billed, named, price) in &events {
                // Unnamed: a meter the table may know, forwarded as unknown (no name, no unit).
                let meter = if *named { lookup(record.meter_id) } else { None };
                let priced = || price.as_ref().map(|(amount, currency)| Price {
                    amount: *amount,
                    currency: currency.as_str(),
                });
                writer.write(&mut batch, record, billed, meter, priced()).unwrap();
                built.push(UsageEvent::new(&origin, record, billed, meter, priced()));
            }
            prop_assert_eq!(batch.events(), events.len());
            let written = String::from_utf8(batch.into_body()).unwrap();
            let serde = String::from_utf8(batch_body(&built).unwrap()).unwrap();
            prop_assert_eq!(written, serde);
        }

        /// The id does not depend on how the URI's letter case is lower-cased (in place for
        /// ASCII, by `to_lowercase` otherwise): it is the digest of the text as documented.
        #[test]
        fn the_id_is_the_digest_of_the_documented_fields(record in any_record(), cloud_id in any_guid()) {
            let fields = [
                cloud_id.to_string(),
                record.local_subscription_id.to_string(),
                record.meter_id.to_string(),
                record.resource_uri.to_lowercase(),
                record.usage_start.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                record.usage_end.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            ];
            let mut digest = Sha256::new();
            for field in &fields {
                digest.update((field.len() as u64).to_be_bytes());
                digest.update(field.as_bytes());
            }
            let want: String = digest.finalize().iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(event_id(cloud_id, &record), want);
        }
    }

    #[test]
    fn a_long_ascii_uri_is_lower_cased_across_chunks() {
        let mut record = record(BASE_VM_SIZE_HOURS, 1.0);
        let cloud = origin().cloud_id;
        let long = format!("/SUBSCRIPTIONS/{}/VM", "AbC".repeat(60));
        record.resource_uri = long.to_lowercase();
        let lower = event_id(cloud, &record);
        record.resource_uri = long;
        assert_eq!(event_id(cloud, &record), lower);
    }
}
