//! Reads a catalog document from libyaml's events straight into a [`Builder`], one entry at a
//! time, instead of serde_yaml's loader, which first buffers every event of the document
//! (about 9 times the size of the text: 13 MiB for a 1.5 MB catalog of 10,000 subscriptions).
//!
//! serde_yaml stays the reference for what a document means: this reader takes only documents
//! of the documented shape, and reads every value exactly as serde_yaml would deserialize it
//! into `CatalogDocument` (the tests compare the two on generated documents). Anything else —
//! a syntax error, anchors, aliases, tags, an unknown, repeated or missing field, a value of
//! another type, a second document, or a plain partner ID that is not a number — makes it
//! return [`Unsupported`], and the caller parses the document with serde_yaml instead, which
//! gives its meaning or its precise error.

use super::{
    ApprovalEntry, Builder, SubscriptionEntry,
    libyaml::{Event, Parser, Unsupported},
};

/// Feeds every entry of `text` to `builder`, in document order. After `Err`, `builder` holds
/// part of the document and must be discarded.
pub(super) fn read(text: &str, builder: &mut Builder) -> Result<(), Unsupported> {
    let mut parser = Parser::new(text);
    expect(&mut parser, &Event::StreamStart)?;
    match parser.next()? {
        // No document at all (empty, or only comments): the empty catalog.
        Event::StreamEnd => return Ok(()),
        Event::DocumentStart => {}
        _ => return Err(Unsupported),
    }
    match parser.next()? {
        Event::MappingStart => read_document(&mut parser, builder)?,
        // `null`, `~` or nothing: the empty catalog.
        Event::Scalar { value, plain: true } if is_null(value) => {}
        _ => return Err(Unsupported),
    }
    expect(&mut parser, &Event::DocumentEnd)?;
    // serde_yaml refuses a second document.
    expect(&mut parser, &Event::StreamEnd)
}

fn expect(parser: &mut Parser<'_>, want: &Event<'_>) -> Result<(), Unsupported> {
    if parser.next()? == *want {
        Ok(())
    } else {
        Err(Unsupported)
    }
}

/// What serde_yaml reads as "no value" where an `Option` is expected (plain scalars only).
fn is_null(plain: &str) -> bool {
    matches!(plain, "" | "~" | "null" | "Null" | "NULL")
}

/// The top-level mapping, after its `MappingStart`.
fn read_document(parser: &mut Parser<'_>, builder: &mut Builder) -> Result<(), Unsupported> {
    let (mut subscriptions, mut approvals) = (false, false);
    loop {
        let subscriptions_key = match parser.next()? {
            Event::MappingEnd => return Ok(()),
            Event::Scalar {
                value: "subscriptions",
                ..
            } => true,
            Event::Scalar {
                value: "multitenancyApprovals",
                ..
            } => false,
            _ => return Err(Unsupported),
        };
        let seen = if subscriptions_key {
            &mut subscriptions
        } else {
            &mut approvals
        };
        if std::mem::replace(seen, true) {
            return Err(Unsupported);
        }
        if subscriptions_key {
            read_list(parser, |parser| {
                builder.add_subscription(&read_subscription(parser)?);
                Ok(())
            })?;
        } else {
            read_list(parser, |parser| {
                builder.add_approval(&read_approval(parser)?);
                Ok(())
            })?;
        }
    }
}

/// A sequence of mappings, each read by `entry` after its `MappingStart`.
fn read_list(
    parser: &mut Parser<'_>,
    mut entry: impl FnMut(&mut Parser<'_>) -> Result<(), Unsupported>,
) -> Result<(), Unsupported> {
    match parser.next()? {
        Event::SequenceStart => {}
        // `subscriptions:` with nothing after it: serde_yaml reads an empty sequence.
        Event::Scalar {
            value: "",
            plain: true,
        } => return Ok(()),
        _ => return Err(Unsupported),
    }
    loop {
        match parser.next()? {
            Event::SequenceEnd => return Ok(()),
            Event::MappingStart => entry(parser)?,
            _ => return Err(Unsupported),
        }
    }
}

/// The value of a field: a scalar's text, and whether it is plain.
fn scalar<'p>(parser: &'p mut Parser<'_>) -> Result<(&'p str, bool), Unsupported> {
    match parser.next()? {
        Event::Scalar { value, plain } => Ok((value, plain)),
        _ => Err(Unsupported),
    }
}

/// Sets a field once; a repeated field is serde's "duplicate field" error.
fn set<T>(field: &mut Option<T>, value: T) -> Result<(), Unsupported> {
    match field.replace(value) {
        None => Ok(()),
        Some(_) => Err(Unsupported),
    }
}

/// A `String` field: serde_yaml takes the text of any scalar, whatever it looks like.
fn string(parser: &mut Parser<'_>) -> Result<String, Unsupported> {
    Ok(scalar(parser)?.0.to_owned())
}

/// An `Option<String>` field: `None` for a plain null, the text otherwise.
fn optional_string(parser: &mut Parser<'_>) -> Result<Option<String>, Unsupported> {
    let (value, plain) = scalar(parser)?;
    Ok((!(plain && is_null(value))).then(|| value.to_owned()))
}

/// A partner ID (`super::partner_id`): quoted text as it is; plain, serde_yaml resolves the
/// scalar first, and only a number that fits `u64` is accepted, as its decimal digits. Digits
/// with a leading zero stay text (YAML 1.2). A plain scalar that is not digits (text, a
/// boolean, a float, a hex or signed number) is left to serde_yaml.
fn partner_id(parser: &mut Parser<'_>) -> Result<Option<String>, Unsupported> {
    let (value, plain) = scalar(parser)?;
    if !plain {
        return Ok(Some(value.to_owned()));
    }
    if is_null(value) {
        return Ok(None);
    }
    let digits = value.bytes().all(|b| b.is_ascii_digit());
    if digits && (value.starts_with('0') || value.parse::<u64>().is_ok()) {
        Ok(Some(value.to_owned()))
    } else {
        Err(Unsupported)
    }
}

/// One `subscriptions[]` entry, after its `MappingStart`.
fn read_subscription(parser: &mut Parser<'_>) -> Result<SubscriptionEntry, Unsupported> {
    let (mut id, mut tenant_id, mut state, mut offer) = (None, None, None, None);
    let (mut billing_partner_id, mut reseller_partner_id) = (None, None);
    loop {
        match parser.next()? {
            Event::MappingEnd => break,
            Event::Scalar { value: "id", .. } => set(&mut id, string(parser)?)?,
            Event::Scalar {
                value: "tenantId", ..
            } => set(&mut tenant_id, optional_string(parser)?)?,
            Event::Scalar { value: "state", .. } => set(&mut state, string(parser)?)?,
            Event::Scalar { value: "offer", .. } => set(&mut offer, string(parser)?)?,
            Event::Scalar {
                value: "billingPartnerId",
                ..
            } => set(&mut billing_partner_id, partner_id(parser)?)?,
            Event::Scalar {
                value: "resellerPartnerId",
                ..
            } => set(&mut reseller_partner_id, partner_id(parser)?)?,
            _ => return Err(Unsupported),
        }
    }
    Ok(SubscriptionEntry {
        id: id.ok_or(Unsupported)?,
        tenant_id: tenant_id.flatten(),
        state: state.ok_or(Unsupported)?,
        offer: offer.ok_or(Unsupported)?,
        billing_partner_id: billing_partner_id.flatten(),
        reseller_partner_id: reseller_partner_id.flatten(),
    })
}

/// One `multitenancyApprovals[]` entry, after its `MappingStart`.
fn read_approval(parser: &mut Parser<'_>) -> Result<ApprovalEntry, Unsupported> {
    let (mut subscription_id, mut resource_group, mut registration_name) = (None, None, None);
    loop {
        match parser.next()? {
            Event::MappingEnd => break,
            Event::Scalar {
                value: "subscriptionId",
                ..
            } => set(&mut subscription_id, string(parser)?)?,
            Event::Scalar {
                value: "resourceGroup",
                ..
            } => set(&mut resource_group, string(parser)?)?,
            Event::Scalar {
                value: "registrationName",
                ..
            } => set(&mut registration_name, string(parser)?)?,
            _ => return Err(Unsupported),
        }
    }
    Ok(ApprovalEntry {
        subscription_id: subscription_id.ok_or(Unsupported)?,
        resource_group: resource_group.ok_or(Unsupported)?,
        registration_name: registration_name.ok_or(Unsupported)?,
    })
}

#[cfg(test)]
mod tests {
    use proptest::{prelude::*, strategy::ValueTree};

    use super::*;
    use crate::resolver::Catalog;

    const A: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";

    /// Whether the streaming reader took `text`; when it did, its catalog or its validation
    /// problems must be exactly serde_yaml's.
    fn streamed(text: &str) -> bool {
        let mut builder = Builder::default();
        let read = read(text, &mut builder);
        let reference = Catalog::parse_with_serde_yaml(text);
        if read.is_err() {
            return false;
        }
        match (builder.finish(), reference) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
            (Err(got), Err(want)) => {
                assert!(matches!(got, CatalogError::Invalid { .. }), "{text}");
                assert_eq!(got.to_string(), want.to_string(), "{text}");
            }
            (got, want) => panic!("{text}\nstreamed: {got:?}\nserde_yaml: {want:?}"),
        }
        true
    }

    use super::super::CatalogError;

    #[test]
    fn documents_of_the_documented_shape_are_streamed_and_read_like_serde_yaml() {
        let sub = |fields: &str| {
            format!("subscriptions:\n- {{id: {A}, state: Enabled, offer: CSP{fields}}}\n")
        };
        let documents = [
            String::new(),
            "# only a comment\n".into(),
            "---\n".into(),
            "--- # empty\n...\n".into(),
            "null".into(),
            "~\n".into(),
            "{}".into(),
            "subscriptions: []\nmultitenancyApprovals: []\n".into(),
            "subscriptions:\nmultitenancyApprovals:\n".into(),
            include_str!("../../../examples/catalog.yaml").into(),
            format!(
                r#"{{"subscriptions": [{{"id": "{A}", "state": "Warned", "offer": "CSP", "billingPartnerId": 4412345, "tenantId": null}}], "multitenancyApprovals": [{{"subscriptionId": "{A}", "resourceGroup": "rg", "registrationName": "r"}}]}}"#
            ),
            sub(", billingPartnerId: 4412345, resellerPartnerId: '5523456'"),
            sub(", billingPartnerId: 0123, resellerPartnerId: 0"),
            sub(", billingPartnerId: 18446744073709551615"),
            sub(", billingPartnerId: null, resellerPartnerId: ~"),
            sub(", billingPartnerId: , resellerPartnerId: \"\""),
            sub(", billingPartnerId: 'true', resellerPartnerId: \"1.5\""),
            sub(", tenantId: null"),
            sub(", tenantId: ~"),
            sub(", tenantId: 'null'"),
            sub(", tenantId: "),
            sub(", tenantId: ''"),
            sub(&format!(", tenantId: \"{}\"", A.to_uppercase())),
            "subscriptions:\n- {id: 123, state: true, offer: ~}\n".into(),
            format!(
                "subscriptions:\n- id: {A}\n  state: Enabled\n  offer: >\n    CSP\n    offer\n"
            ),
            format!("subscriptions:\n- id: {A}\n  state: Enabled\n  offer: |\n    CSP\n"),
            format!("\"subscriptions\":\n- {{'id': {A}, \"state\": PastDue, offer: CSP}}\n"),
            format!(
                "multitenancyApprovals:\n- {{subscriptionId: x, resourceGroup: '', registrationName: r}}\nsubscriptions:\n- {{id: y, state: Enabled, offer: CSP}}\n- {{id: {A}, state: Enabled, offer: CSP}}\n- {{id: {}, state: Enabled, offer: CSP}}\n",
                A.to_uppercase()
            ),
            format!(
                "multitenancyApprovals:\n- {{subscriptionId: {A}, resourceGroup: RG, registrationName: r}}\n- {{subscriptionId: {A}, resourceGroup: rg, registrationName: R}}\n"
            ),
        ];
        for text in &documents {
            assert!(streamed(text), "not streamed:\n{text}");
        }
    }

    #[test]
    fn everything_else_is_left_to_serde_yaml() {
        let sub = |fields: &str| {
            format!("subscriptions:\n- {{id: {A}, state: Enabled, offer: CSP{fields}}}\n")
        };
        let documents = [
            // serde_yaml reads these, but they use what the streaming reader does not.
            format!("subscriptions:\n- &a {{id: {A}, state: Enabled, offer: CSP}}\n"),
            "x: &s Enabled\n".into(),
            sub(", billingPartnerId: abc"),
            sub(", billingPartnerId: 0x10"),
            sub(", billingPartnerId: +5"),
            format!("subscriptions:\n- {{id: {A}, state: !!str Enabled, offer: CSP}}\n"),
            "!!map {}".into(),
            // serde_yaml refuses these, with the precise error.
            sub(", colour: red"),
            sub(", state: Warned"),
            sub(", billingPartnerId: true"),
            sub(", billingPartnerId: 1.5"),
            sub(", billingPartnerId: -1"),
            sub(", billingPartnerId: 18446744073709551616"),
            sub(", billingPartnerId: [1]"),
            sub(", tenantId: {a: b}"),
            "subscriptions:\n- {state: Enabled, offer: CSP}\n".into(),
            "subscriptions:\n- {id: x, offer: CSP}\n".into(),
            "subscriptions:\n- {id: x, state: Enabled}\n".into(),
            "multitenancyApprovals:\n- {subscriptionId: x, resourceGroup: rg}\n".into(),
            "subscriptions: []\nsubscriptions: []\n".into(),
            "subscriptions: null\n".into(),
            "subscriptions: {}\n".into(),
            "subscriptions:\n- just text\n".into(),
            "subscriptions:\n-\n".into(),
            "subscription: []\n".into(),
            "- a list\n".into(),
            "text\n".into(),
            "'null'\n".into(),
            "{}\n---\n{}\n".into(),
            "subscriptions: [\n".into(),
            "subscriptions:\n\t- id: x\n".into(),
            "subscriptions:\n- {id: *x, state: Enabled, offer: CSP}\n".into(),
            "? [a]\n: b\n".into(),
        ];
        for text in &documents {
            assert!(!streamed(text), "streamed:\n{text}");
        }
    }

    /// Values in many YAML spellings, valid or not: the first [`PARTNER_IDS`] ones are
    /// streamed in any field, the last [`HOSTILE`] ones never.
    const VALUES: &[&str] = &[
        "4412345",
        "\"4412345\"",
        "0123",
        "0",
        "",
        "~",
        "null",
        "NULL",
        "''",
        "' '",
        "'null'",
        "\"Warned\"",
        "'CSP'",
        "'e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a'",
        "|\n    CSP",
        A,
        "E09A4E93-29A7-4EBA-A7F2-3B2C1D0E9F8A",
        "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c",
        "Enabled",
        "Deleted",
        "CSP",
        "APSS",
        "rg",
        "R",
        "true",
        "1.5",
        "-3",
        "0x1F",
        "abc",
        "18446744073709551616",
        "[a]",
        "{a: 1}",
        "&x a",
        "*x",
        "!!str a",
    ];
    const PARTNER_IDS: usize = 15;
    const HOSTILE: usize = 6;
    const SUBSCRIPTION_FIELDS: &[&str] = &[
        "id",
        "tenantId",
        "state",
        "offer",
        "billingPartnerId",
        "resellerPartnerId",
        "colour",
    ];
    const APPROVAL_FIELDS: &[&str] = &["subscriptionId", "resourceGroup", "registrationName", "x"];

    fn entry(fields: &[&str], picks: &[(usize, usize)]) -> String {
        let mut out = String::new();
        for (i, (field, value)) in picks.iter().enumerate() {
            let indent = if i == 0 { "- " } else { "  " };
            out.push_str(&format!(
                "{indent}{}: {}\n",
                fields[field % fields.len()],
                VALUES[value % VALUES.len()]
            ));
        }
        if out.is_empty() {
            out.push_str("- {}\n");
        }
        out
    }

    fn value() -> impl Strategy<Value = usize> {
        let hostile = VALUES.len() - HOSTILE;
        prop_oneof![19 => 0..hostile, 1 => hostile..VALUES.len()]
    }

    /// Mostly complete entries (every field but the last, unknown one, in order; partner IDs
    /// mostly numbers or quoted), sometimes random fields.
    fn picks(fields: &'static [&'static str]) -> impl Strategy<Value = Vec<(usize, usize)>> {
        let complete: Vec<BoxedStrategy<usize>> = fields[..fields.len() - 1]
            .iter()
            .map(|field| {
                if field.ends_with("PartnerId") {
                    prop_oneof![3 => 0..PARTNER_IDS, 1 => value()].boxed()
                } else {
                    value().boxed()
                }
            })
            .collect();
        prop_oneof![
            3 => complete.prop_map(|values| values.into_iter().enumerate().collect()),
            1 => prop::collection::vec((0..fields.len(), value()), 0..fields.len() + 1),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn streaming_and_serde_yaml_agree_on_generated_documents(
            subscriptions in prop::collection::vec(picks(SUBSCRIPTION_FIELDS), 0..4),
            approvals in prop::collection::vec(picks(APPROVAL_FIELDS), 0..3),
            approvals_first in any::<bool>(),
        ) {
            let mut lists = [
                subscriptions
                    .iter()
                    .map(|p| entry(SUBSCRIPTION_FIELDS, p))
                    .fold("subscriptions:\n".to_string(), |text, e| text + &e),
                approvals
                    .iter()
                    .map(|p| entry(APPROVAL_FIELDS, p))
                    .fold("multitenancyApprovals:\n".to_string(), |text, e| text + &e),
            ];
            if approvals_first {
                lists.reverse();
            }
            streamed(&lists.concat());
        }
    }

    #[test]
    fn generated_documents_are_streamed_often_enough_to_test_anything() {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = prop::collection::vec(picks(SUBSCRIPTION_FIELDS), 1..3);
        let mut taken = 0;
        for _ in 0..400 {
            let subscriptions = strategy.new_tree(&mut runner).expect("tree").current();
            let text = subscriptions
                .iter()
                .map(|p| entry(SUBSCRIPTION_FIELDS, p))
                .fold("subscriptions:\n".to_string(), |text, e| text + &e);
            taken += usize::from(streamed(&text));
        }
        assert!(
            taken > 100,
            "only {taken} of 400 generated documents were streamed"
        );
    }
}
