use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::usage::meter::BASE_VM_SIZE_HOURS;

const LOCAL: &str = "11111111-1111-4111-8111-111111111111";
const TENANT: &str = "22222222-2222-4222-8222-222222222222";

fn directory() -> Directory {
    Directory::new([(LOCAL, TENANT)])
}

fn instance_data(uri: &str) -> String {
    json!({"Microsoft.Resources": {"resourceUri": uri, "location": "local", "tags": null,
        "additionalInfo": {"ServiceType": "Standard_D2", "ImageType": "Linux"}}})
    .to_string()
}

/// A good record in the documented shape, with `properties` changed by `edit`.
fn record_json(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut properties = json!({
        "subscriptionId": LOCAL,
        "usageStartTime": "2026-03-04T10:00:00+00:00",
        "usageEndTime": "2026-03-04T11:00:00+00:00",
        "meterId": BASE_VM_SIZE_HOURS,
        "quantity": 2.0,
        "instanceData": instance_data("/subscriptions/1111/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"),
    });
    edit(properties.as_object_mut().unwrap());
    json!({
        "id": "/subscriptions/ps/providers/Microsoft.Commerce.Admin/subscriberUsageAggregates/sub1-meter1",
        "name": "sub1-meter1",
        "type": "Microsoft.Commerce.Admin/subscriberUsageAggregate",
        "properties": properties,
    })
}

fn record(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> RawRecord {
    serde_json::from_value(record_json(edit)).unwrap()
}

#[test]
fn a_documented_record_is_valid() {
    let valid = validate(&record(|_| {}), &directory()).unwrap();
    assert_eq!(valid.local_subscription_id.to_string(), LOCAL);
    assert_eq!(valid.tenant_id.to_string(), TENANT);
    assert_eq!(
        valid.meter_id.to_string(),
        BASE_VM_SIZE_HOURS.to_lowercase()
    );
    assert_eq!(valid.quantity, 2.0);
    assert_eq!(valid.exact_quantity, Decimal::from(2));
    assert_eq!(
        valid.usage_start,
        "2026-03-04T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    assert_eq!(
        valid.usage_end,
        "2026-03-04T11:00:00Z".parse::<DateTime<Utc>>().unwrap()
    );
    assert!(valid.resource_uri.ends_with("/virtualMachines/vm1"));
}

#[test]
fn every_bad_record_cause() {
    type Edit = fn(&mut serde_json::Map<String, Value>);
    let cases: &[(&str, Edit, RejectCause)] = &[
        (
            "meter id not a GUID",
            |p| {
                p.insert("meterId".into(), json!("base-vm"));
            },
            RejectCause::InvalidMeterId,
        ),
        (
            "meter id missing",
            |p| {
                p.remove("meterId");
            },
            RejectCause::InvalidMeterId,
        ),
        (
            "meter id a number",
            |p| {
                p.insert("meterId".into(), json!(12345));
            },
            RejectCause::InvalidMeterId,
        ),
        (
            "quantity an object",
            |p| {
                p.insert("quantity".into(), json!({"value": 1}));
            },
            RejectCause::NanQuantity,
        ),
        (
            "quantity null",
            |p| {
                p.insert("quantity".into(), json!(null));
            },
            RejectCause::NanQuantity,
        ),
        (
            "start a number",
            |p| {
                p.insert("usageStartTime".into(), json!(1_772_618_400));
            },
            RejectCause::MalformedTime,
        ),
        (
            "local subscription a number",
            |p| {
                p.insert("subscriptionId".into(), json!(7));
            },
            RejectCause::UnknownSubscription,
        ),
        (
            "quantity negative",
            |p| {
                p.insert("quantity".into(), json!(-0.5));
            },
            RejectCause::NegativeQuantity,
        ),
        (
            "quantity NaN",
            |p| {
                p.insert("quantity".into(), json!("NaN"));
            },
            RejectCause::NanQuantity,
        ),
        (
            "quantity text",
            |p| {
                p.insert("quantity".into(), json!("two"));
            },
            RejectCause::NanQuantity,
        ),
        (
            "quantity missing",
            |p| {
                p.remove("quantity");
            },
            RejectCause::NanQuantity,
        ),
        (
            "quantity infinite",
            |p| {
                p.insert("quantity".into(), json!("Infinity"));
            },
            RejectCause::InfiniteQuantity,
        ),
        (
            "quantity minus infinite",
            |p| {
                p.insert("quantity".into(), json!("-inf"));
            },
            RejectCause::InfiniteQuantity,
        ),
        (
            "quantity too large",
            |p| {
                p.insert("quantity".into(), json!(1e16));
            },
            RejectCause::QuantityOutOfRange,
        ),
        (
            "end before start",
            |p| {
                p.insert("usageEndTime".into(), json!("2026-03-04T09:00:00+00:00"));
            },
            RejectCause::EndNotAfterStart,
        ),
        (
            "end equal to start",
            |p| {
                p.insert("usageEndTime".into(), json!("2026-03-04T10:00:00Z"));
            },
            RejectCause::EndNotAfterStart,
        ),
        (
            "end equal to start in another offset",
            |p| {
                p.insert("usageEndTime".into(), json!("2026-03-04T11:00:00+01:00"));
            },
            RejectCause::EndNotAfterStart,
        ),
        (
            "start not a time",
            |p| {
                p.insert("usageStartTime".into(), json!("yesterday"));
            },
            RejectCause::MalformedTime,
        ),
        (
            "end missing",
            |p| {
                p.remove("usageEndTime");
            },
            RejectCause::MalformedTime,
        ),
        (
            "unknown local subscription",
            |p| {
                p.insert(
                    "subscriptionId".into(),
                    json!("33333333-3333-4333-8333-333333333333"),
                );
            },
            RejectCause::UnknownSubscription,
        ),
        (
            "local subscription not a GUID",
            |p| {
                p.insert("subscriptionId".into(), json!("default"));
            },
            RejectCause::UnknownSubscription,
        ),
        (
            "local subscription missing",
            |p| {
                p.remove("subscriptionId");
            },
            RejectCause::UnknownSubscription,
        ),
        (
            "instanceData not JSON",
            |p| {
                p.insert("instanceData".into(), json!("{\"Microsoft.Resources\":"));
            },
            RejectCause::MalformedInstanceData,
        ),
        (
            "instanceData without Microsoft.Resources",
            |p| {
                p.insert("instanceData".into(), json!("{\"other\":{}}"));
            },
            RejectCause::MalformedInstanceData,
        ),
        (
            "instanceData without resourceUri",
            |p| {
                p.insert(
                    "instanceData".into(),
                    json!("{\"Microsoft.Resources\":{\"location\":\"local\"}}"),
                );
            },
            RejectCause::MalformedInstanceData,
        ),
        (
            "instanceData with an empty resourceUri",
            |p| {
                p.insert("instanceData".into(), json!(instance_data("")));
            },
            RejectCause::MalformedInstanceData,
        ),
        (
            "instanceData an object, not a string",
            |p| {
                p.insert(
                    "instanceData".into(),
                    json!({"Microsoft.Resources": {"resourceUri": "/x"}}),
                );
            },
            RejectCause::MalformedInstanceData,
        ),
        (
            "instanceData missing",
            |p| {
                p.remove("instanceData");
            },
            RejectCause::MalformedInstanceData,
        ),
    ];
    let mut counts = RejectCounts::default();
    for (what, edit, cause) in cases {
        let rejection = validate(&record(edit), &directory()).expect_err(what);
        assert_eq!(rejection.cause, *cause, "{what}: {}", rejection.message);
        assert!(
            rejection
                .message
                .starts_with("usage record /subscriptions/ps/"),
            "{what}: {}",
            rejection.message
        );
        counts.count(rejection.cause);
    }
    assert_eq!(counts.total, cases.len() as u64);
    for cause in RejectCause::ALL {
        let expected = cases.iter().filter(|(_, _, c)| *c == cause).count() as u64;
        assert_eq!(
            counts.by_cause.get(cause.as_str()).copied().unwrap_or(0),
            expected,
            "{cause}"
        );
        assert!(expected > 0, "no case for {cause}");
    }
}

#[test]
fn the_first_failing_cause_wins_in_a_fixed_order() {
    let raw = record(|p| {
        p.insert("quantity".into(), json!(-1));
        p.insert("subscriptionId".into(), json!("nobody"));
        p.remove("instanceData");
    });
    assert_eq!(
        validate(&raw, &directory()).unwrap_err().cause,
        RejectCause::NegativeQuantity
    );
}

#[test]
fn quantities_are_exact_decimals_of_what_the_source_wrote() {
    let cases = [
        (json!(0.1), "0.1"),
        (json!(3), "3"),
        (json!(0.0), "0"),
        (json!(1234.5678), "1234.5678"),
        (json!("0.25"), "0.25"),
        (json!(1e15), "1000000000000000"),
    ];
    for (quantity, exact) in cases {
        let raw = record(|p| {
            p.insert("quantity".into(), quantity.clone());
        });
        let valid = validate(&raw, &directory()).unwrap();
        assert_eq!(
            valid.exact_quantity.normalize().to_string(),
            exact,
            "{quantity}"
        );
    }
}

#[test]
fn meter_ids_without_dashes_and_times_with_offsets_are_accepted() {
    let raw = record(|p| {
        p.insert("meterId".into(), json!("fab6eb84500b4a09a8ca7358f8bbaea5"));
        p.insert("usageStartTime".into(), json!("2026-03-04T12:00:00+02:00"));
    });
    let valid = validate(&raw, &directory()).unwrap();
    assert_eq!(
        valid.meter_id.to_string(),
        BASE_VM_SIZE_HOURS.to_lowercase()
    );
    assert_eq!(
        valid.usage_start,
        "2026-03-04T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
    );
}

#[test]
fn a_page_parses_in_the_documented_shape() {
    let page: UsagePage = serde_json::from_value(json!({
        "value": [record_json(|_| {})],
        "continuationToken": "abc",
    }))
    .unwrap();
    assert_eq!(page.value.len(), 1);
    assert_eq!(page.continuation_token.as_deref(), Some("abc"));
    let last: UsagePage = serde_json::from_str(r#"{"value":[]}"#).unwrap();
    assert_eq!(last.continuation_token, None);
}

proptest! {
    #[test]
    fn any_finite_non_negative_quantity_up_to_the_bound_is_valid_and_exact(q in 0.0f64..=MAX_QUANTITY) {
        let raw = record(|p| { p.insert("quantity".into(), json!(q)); });
        let valid = validate(&raw, &directory()).unwrap();
        prop_assert_eq!(valid.quantity, q);
        // The decimal reads back as the very same float.
        prop_assert_eq!(valid.exact_quantity.to_string().parse::<f64>().unwrap(), q);
    }

    #[test]
    fn validation_never_panics_and_every_rejection_has_a_cause(
        meter in proptest::option::of("[0-9a-fA-F-]{0,40}"),
        quantity in proptest::option::of(any::<f64>()),
        start in proptest::option::of("[0-9TZ:+-]{0,30}"),
        instance in proptest::option::of(".{0,40}"),
    ) {
        let raw = RawRecord {
            id: Some("r".into()),
            properties: RawProperties {
                subscription_id: Some(json!(LOCAL)),
                usage_start_time: start.map(Value::from),
                usage_end_time: Some(json!("2026-03-04T11:00:00Z")),
                meter_id: meter.map(Value::from),
                quantity: quantity.map(RawQuantity),
                instance_data: instance.map(Value::from),
            },
        };
        if let Err(rejection) = validate(&raw, &directory()) {
            prop_assert!(RejectCause::ALL.contains(&rejection.cause));
        }
    }
}

mod borrowed_page {
    use proptest::prelude::*;

    use super::*;

    fn any_property() -> impl Strategy<Value = Option<Value>> {
        proptest::option::of(prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-1e16f64..1e16).prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            Just(json!(LOCAL)),
            Just(json!(BASE_VM_SIZE_HOURS)),
            Just(json!("2026-03-04T10:00:00+00:00")),
            Just(json!("2026-03-04T11:00:00Z")),
            Just(json!(instance_data("/subscriptions/1/vm"))),
            Just(json!({"nested": [1, "two"]})),
            Just(json!(["a", {"b": null}])),
            ".{0,12}".prop_map(Value::from),
            "[0-9.eE+-]{0,8}|NaN|Infinity".prop_map(Value::from),
        ])
    }

    fn any_record() -> impl Strategy<Value = Value> {
        (
            proptest::option::of(prop_oneof![".{0,8}".prop_map(Value::from), Just(json!(7))]),
            prop::collection::vec(any_property(), 6),
        )
            .prop_map(|(id, values)| {
                let names = [
                    "subscriptionId",
                    "usageStartTime",
                    "usageEndTime",
                    "meterId",
                    "quantity",
                    "instanceData",
                ];
                let properties: serde_json::Map<String, Value> = names
                    .iter()
                    .zip(values)
                    .filter_map(|(name, value)| Some((name.to_string(), value?)))
                    .collect();
                let mut record = json!({"name": "n", "properties": properties});
                if let Some(id) = id {
                    record["id"] = id;
                }
                record
            })
    }

    proptest! {
        /// A page read borrowed is the page read into `Value`s: the same records parse (or
        /// the page fails for both), and every record validates to the same answer.
        #[test]
        fn the_borrowed_page_reads_and_validates_as_the_owned_one(
            records in prop::collection::vec(any_record(), 0..4),
            token in proptest::option::of("[a-z0-9.]{0,6}"),
        ) {
            let mut page = json!({"value": records});
            if let Some(token) = &token {
                page["continuationToken"] = json!(token);
            }
            let text = page.to_string();
            let owned = serde_json::from_str::<UsagePage>(&text);
            let borrowed = serde_json::from_str::<PageRef>(&text);
            prop_assert_eq!(owned.is_ok(), borrowed.is_ok(), "{}", text);
            if let (Ok(owned), Ok(borrowed)) = (owned, borrowed) {
                prop_assert_eq!(&owned.continuation_token, &borrowed.continuation_token);
                prop_assert_eq!(owned.value.len(), borrowed.value.len());
                for (o, b) in owned.value.iter().zip(&borrowed.value) {
                    prop_assert_eq!(validate(o, &directory()), validate_view(&b.view(), &directory()));
                }
            }
        }

        #[test]
        fn the_exact_decimal_is_that_of_the_printed_float(q in any::<f64>()) {
            prop_assert_eq!(exact_decimal(q), Decimal::from_str(&q.to_string()).ok());
        }
    }

    #[test]
    fn the_exact_decimal_of_floats_too_long_for_the_stack() {
        for q in [5e-324, 1e-30, 0.1 + 0.2, 1e15, f64::MAX] {
            assert_eq!(
                exact_decimal(q),
                Decimal::from_str(&q.to_string()).ok(),
                "{q}"
            );
        }
    }
}
