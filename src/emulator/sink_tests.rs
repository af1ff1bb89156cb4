use axum::http::HeaderValue;
use serde_json::{Value, json};

use super::*;

const SUBJECT: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";
const METER: &str = "fab6eb84-500b-4a09-a8ca-7358f8bbaea5";

fn event(source: &str, id: &str, subject: &str, meter: &str, quantity: Value) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": source, "type": "csp.azurestack.io.usage.v1",
        "subject": subject, "time": "2026-03-01T10:00:00Z", "datacontenttype": "application/json",
        "data": {"meterId": meter, "quantity": quantity, "unit": "Virtual core hours"},
    })
}

fn headers(content_type: &str, token: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap(),
    );
    if let Some(token) = token {
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    headers
}

fn batch(sink: &Sink, events: &[Value]) -> Result<usize, Refusal> {
    sink.take(
        &headers(BATCH_CONTENT_TYPE, None),
        &serde_json::to_vec(events).unwrap(),
    )
}

fn total(sink: &Sink, subject: &str, meter: &str) -> Option<String> {
    sink.totals()
        .totals
        .into_iter()
        .find(|t| t.subject == subject && t.meter_id == meter)
        .map(|t| t.quantity)
}

#[test]
fn duplicates_by_source_and_id_count_once_within_and_across_batches() {
    let sink = Sink::default();
    let a = event("/registrations/ns/r", "1", SUBJECT, METER, json!(2));
    let b = event("/registrations/ns/r", "2", SUBJECT, METER, json!(3));
    let same_id_other_source = event("/registrations/ns/other", "1", SUBJECT, METER, json!(5));
    assert_eq!(batch(&sink, &[a.clone(), b.clone(), a.clone()]), Ok(3));
    assert_eq!(batch(&sink, &[b, same_id_other_source]), Ok(2));
    let totals = sink.totals();
    assert_eq!((totals.received, totals.duplicates), (5, 2));
    assert_eq!(total(&sink, SUBJECT, METER).as_deref(), Some("10"));
}

#[test]
fn sums_are_exact_decimals_per_subject_and_meter() {
    let sink = Sink::default();
    let other = "00000000-0000-4000-8000-000000000001";
    let events: Vec<Value> = (0..10)
        .map(|i| event("/s", &format!("a{i}"), SUBJECT, METER, json!(0.1)))
        .chain([
            event("/s", "b", other, METER, json!(0.2)),
            // The same meter and subject in upper case meet the lower-case total.
            event(
                "/s",
                "c",
                &SUBJECT.to_uppercase(),
                &METER.to_uppercase(),
                json!(0.7),
            ),
        ])
        .collect();
    batch(&sink, &events).unwrap();
    assert_eq!(total(&sink, SUBJECT, METER).as_deref(), Some("1.7"));
    assert_eq!(total(&sink, other, METER).as_deref(), Some("0.2"));
    assert_eq!(sink.totals().totals.len(), 2);
}

#[test]
fn a_single_structured_event_is_taken() {
    let sink = Sink::default();
    let body = serde_json::to_vec(&event("/s", "1", SUBJECT, METER, json!(4))).unwrap();
    assert_eq!(
        sink.take(
            &headers("application/cloudevents+json; charset=utf-8", None),
            &body
        ),
        Ok(1)
    );
    assert_eq!(total(&sink, SUBJECT, METER).as_deref(), Some("4"));
}

#[test]
fn a_bad_event_refuses_the_whole_batch() {
    let good = event("/s", "1", SUBJECT, METER, json!(1));
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut broken = |path: &str, value: Value, want: &'static str| {
        let mut e = good.clone();
        let mut target = &mut e;
        let parts: Vec<&str> = path.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            target = &mut target[*part];
        }
        target[parts[parts.len() - 1]] = value;
        cases.push((e, want));
    };
    broken("specversion", json!("0.3"), "specversion is not 1.0");
    broken("id", json!(""), "id is missing or empty");
    broken("source", Value::Null, "source is missing or empty");
    broken("subject", json!(" "), "subject is missing or empty");
    broken("data.meterId", Value::Null, "data.meterId is missing");
    broken(
        "data.quantity",
        Value::Null,
        "data.quantity is not a finite number",
    );
    for (bad, want) in cases {
        let sink = Sink::default();
        let refused = batch(&sink, &[good.clone(), bad]).unwrap_err();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(
            refused.message.starts_with("event 1: ") && refused.message.contains(want),
            "{}",
            refused.message
        );
        assert_eq!(sink.totals(), Totals::default(), "nothing taken");
    }
    let sink = Sink::default();
    let refused = sink
        .take(&headers(BATCH_CONTENT_TYPE, None), b"[{\"id\": ")
        .unwrap_err();
    assert_eq!(
        (refused.status, refused.code),
        (StatusCode::BAD_REQUEST, "InvalidBody")
    );
    let refused = sink
        .take(&headers("application/json", None), b"[]")
        .unwrap_err();
    assert_eq!(refused.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[test]
fn with_a_token_a_post_must_carry_it() {
    let sink = Sink::new(Some("s3cret".to_owned()));
    let body = serde_json::to_vec(&[event("/s", "1", SUBJECT, METER, json!(1))]).unwrap();
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
        let refused = sink
            .take(&headers(BATCH_CONTENT_TYPE, token), &body)
            .unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(!refused.message.contains("s3cret"));
    }
    assert_eq!(
        sink.take(&headers(BATCH_CONTENT_TYPE, Some("s3cret")), &body),
        Ok(1)
    );
}

/// The batch the operator's core writes (usage/cloudevents.rs) is what the sink takes, and
/// sent again after a crash it only counts duplicates.
#[test]
fn the_operators_own_batches_are_taken_once() {
    use crate::usage::{
        attribution::BilledTo,
        cloudevents::{Origin, UsageEvent, batch_body},
        meter::lookup,
        record::UsageRecord,
    };
    let guid = |text: &str| crate::guid::Guid::parse(text).unwrap();
    let origin = Origin {
        namespace: "partner".to_owned(),
        name: "stack".to_owned(),
        cloud_id: guid("5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f"),
    };
    let billed = BilledTo::Registration {
        subscription_id: guid(SUBJECT),
    };
    let events: Vec<UsageEvent> = (0..3)
        .map(|hour| {
            let start: chrono::DateTime<chrono::Utc> =
                format!("2026-03-01T{hour:02}:00:00Z").parse().unwrap();
            let record = UsageRecord {
                local_subscription_id: guid("aaaaaaaa-0000-4000-8000-000000000001"),
                tenant_id: guid("bbbbbbbb-0000-4000-8000-000000000001"),
                meter_id: guid(METER),
                quantity: 2.5,
                exact_quantity: Decimal::new(25, 1),
                usage_start: start,
                usage_end: start + chrono::TimeDelta::hours(1),
                resource_uri: "/subscriptions/x/vm1".to_owned(),
            };
            UsageEvent::new(&origin, &record, &billed, lookup(guid(METER)), None)
        })
        .collect();
    let body = batch_body(&events).unwrap();
    let sink = Sink::default();
    let headers = headers(BATCH_CONTENT_TYPE, None);
    assert_eq!(sink.take(&headers, &body), Ok(3));
    assert_eq!(sink.take(&headers, &body), Ok(3));
    let totals = sink.totals();
    assert_eq!((totals.received, totals.duplicates), (6, 3));
    assert_eq!(total(&sink, SUBJECT, METER).as_deref(), Some("7.5"));
}

mod keys {
    use proptest::prelude::*;

    use super::*;

    /// What the totals were keyed by before: the text, a GUID's in its canonical form.
    fn canonical(text: &str) -> String {
        parse_meter_id(text).map_or_else(|| text.to_owned(), |g| g.to_string())
    }

    fn any_key_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(SUBJECT.to_owned()),
            Just(SUBJECT.to_uppercase()),
            Just(SUBJECT.replace('-', "")),
            Just(METER.to_owned()),
            Just(METER.to_uppercase().replace('-', "")),
            "[0-9a-fA-F-]{30,37}",
            ".{0,8}",
        ]
    }

    proptest! {
        #[test]
        fn keys_meet_exactly_when_their_canonical_texts_do(a in any_key_text(), b in any_key_text()) {
            prop_assert_eq!(Key::of(&a) == Key::of(&b), canonical(&a) == canonical(&b));
            prop_assert_eq!(Key::of(&a).text(), canonical(&a));
        }
    }

    #[test]
    fn totals_are_ordered_by_subject_then_meter() {
        let sink = Sink::default();
        let subjects = ["b-subject", SUBJECT, "a-subject"];
        let meters = ["z-meter", METER, "a-meter"];
        let events: Vec<Value> = subjects
            .iter()
            .flat_map(|s| meters.iter().map(move |m| (*s, *m)))
            .enumerate()
            .map(|(i, (s, m))| event("/s", &i.to_string(), s, m, json!(1)))
            .collect();
        batch(&sink, &events).unwrap();
        let got: Vec<(String, String)> = sink
            .totals()
            .totals
            .into_iter()
            .map(|t| (t.subject, t.meter_id))
            .collect();
        let mut want = got.clone();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(got.len(), 9);
    }
}
