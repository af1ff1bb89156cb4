//! serde-saphyr reads catalogs; serde_yaml is the reference. Every document serde-saphyr
//! takes must come out exactly as serde_yaml reads it: the same catalog, or the same problems.

use proptest::{prelude::*, strategy::ValueTree};

use super::*;

const A: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";

/// `Catalog::parse` gives what serde_yaml gives, whichever reader took the document.
fn same_as_serde_yaml(text: &str) {
    match (Catalog::parse(text), Catalog::parse_with_serde_yaml(text)) {
        (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
        (Err(got), Err(want)) => assert_eq!(got.to_string(), want.to_string(), "{text}"),
        (got, want) => panic!("{text}\nparse: {got:?}\nserde_yaml: {want:?}"),
    }
}

/// Whether serde-saphyr took `text`; when it did, its catalog or its validation problems
/// must be exactly serde_yaml's.
fn streamed(text: &str) -> bool {
    let reference = Catalog::parse_with_serde_yaml(text);
    let Some(document) = Catalog::read_with_saphyr(text) else {
        return false;
    };
    match (Catalog::build(document), reference) {
        (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
        (Err(got), Err(want)) => {
            assert!(matches!(got, CatalogError::Invalid { .. }), "{text}");
            assert_eq!(got.to_string(), want.to_string(), "{text}");
        }
        (got, want) => panic!("{text}\nstreamed: {got:?}\nserde_yaml: {want:?}"),
    }
    true
}

#[test]
fn documents_of_the_documented_shape_are_read_by_serde_saphyr_like_serde_yaml() {
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
        format!("subscriptions:\n- id: {A}\n  state: Enabled\n  offer: >\n    CSP\n    offer\n"),
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
    // serde_yaml reads these three too, but not serde-saphyr (null lists, a partner ID with a
    // leading zero, scalars of the wrong type); they take the serde_yaml path.
    let fall_back = [8, 12, 23];
    for (i, text) in documents.iter().enumerate() {
        assert_eq!(
            streamed(text),
            !fall_back.contains(&i),
            "document {i}:\n{text}"
        );
        same_as_serde_yaml(text);
    }
}

#[test]
fn every_other_document_is_read_like_serde_yaml_by_either() {
    let sub = |fields: &str| {
        format!("subscriptions:\n- {{id: {A}, state: Enabled, offer: CSP{fields}}}\n")
    };
    let documents = [
        // Anchors, tags and partner IDs that are not decimal numbers.
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
        same_as_serde_yaml(text);
    }
}

/// Values in many YAML spellings, valid or not: the first [`PARTNER_IDS`] ones are valid
/// partner IDs, the last [`HOSTILE`] ones are rarely generated.
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
    fn serde_saphyr_and_serde_yaml_agree_on_generated_documents(
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
fn generated_documents_are_taken_by_serde_saphyr_often_enough_to_test_anything() {
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
        "only {taken} of 400 generated documents were taken by serde-saphyr"
    );
}
