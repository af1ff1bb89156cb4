//! Golden tests of the catalog reader: for each document, the exact outcome — what the
//! catalog holds, or the exact error text an operator reads in the log and from
//! `azs-csp-operator catalog check`.

use proptest::prelude::*;

use super::*;

const A: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";

/// The outcome of parsing `text`, as one line: the error's text, or the summary and what
/// the catalog holds for subscription `A`.
fn outcome(text: &str) -> String {
    match Catalog::parse(text) {
        Err(error) => error.to_string(),
        Ok(catalog) => {
            let summary = catalog.summary().to_string();
            match catalog.subscription(A) {
                None => summary,
                Some(m) => format!(
                    "{summary}; {A}: {} {:?} tenant={:?} billing={:?} reseller={:?}",
                    m.state,
                    m.offer,
                    m.tenant_id.map(|t| t.to_string()),
                    m.billing_partner_id,
                    m.reseller_partner_id
                ),
            }
        }
    }
}

fn sub(fields: &str) -> String {
    format!("subscriptions:\n- {{id: {A}, state: Enabled, offer: CSP{fields}}}\n")
}

const EMPTY: &str = "catalog is valid: 0 subscriptions (0 CSP), 0 multitenancy approvals";
const ONE: &str = "catalog is valid: 1 subscriptions (1 CSP, 1 Enabled), 0 multitenancy approvals; e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a: Enabled \"CSP\"";
const SYNTAX: &str = "the catalog is not a valid catalog document: ";

#[test]
fn documents_of_the_documented_shape_read_as_documented() {
    let cases: Vec<(String, String)> = vec![
        // Empty documents and lists written without entries are empty.
        (String::new(), EMPTY.into()),
        ("# only a comment\n".into(), EMPTY.into()),
        ("---\n".into(), EMPTY.into()),
        ("--- # empty\n...\n".into(), EMPTY.into()),
        ("null".into(), EMPTY.into()),
        ("~\n".into(), EMPTY.into()),
        ("{}".into(), EMPTY.into()),
        ("!!map {}".into(), EMPTY.into()),
        ("subscriptions: []\nmultitenancyApprovals: []\n".into(), EMPTY.into()),
        ("subscriptions:\nmultitenancyApprovals:\n".into(), EMPTY.into()),
        ("subscriptions: null\nmultitenancyApprovals: ~\n".into(), EMPTY.into()),
        // Partner IDs: numbers or text, leading zeros kept, null or empty is none.
        (
            sub(", billingPartnerId: 4412345, resellerPartnerId: '5523456'"),
            format!("{ONE} tenant=None billing=Some(\"4412345\") reseller=Some(\"5523456\")"),
        ),
        (
            sub(", billingPartnerId: 0123, resellerPartnerId: 0"),
            format!("{ONE} tenant=None billing=Some(\"0123\") reseller=Some(\"0\")"),
        ),
        (
            sub(", billingPartnerId: 18446744073709551615"),
            format!("{ONE} tenant=None billing=Some(\"18446744073709551615\") reseller=None"),
        ),
        (
            sub(", billingPartnerId: null, resellerPartnerId: ~"),
            format!("{ONE} tenant=None billing=None reseller=None"),
        ),
        (
            sub(", billingPartnerId: 'true', resellerPartnerId: \"1.5\""),
            format!("{ONE} tenant=None billing=Some(\"true\") reseller=Some(\"1.5\")"),
        ),
        (
            sub(", billingPartnerId: abc"),
            format!("{ONE} tenant=None billing=Some(\"abc\") reseller=None"),
        ),
        // A tenant written null or empty is none; in any case it is stored lower-case.
        (sub(", tenantId: null"), format!("{ONE} tenant=None billing=None reseller=None")),
        (sub(", tenantId: ~"), format!("{ONE} tenant=None billing=None reseller=None")),
        (sub(", tenantId: "), format!("{ONE} tenant=None billing=None reseller=None")),
        (
            sub(&format!(", tenantId: \"{}\"", A.to_uppercase())),
            format!("{ONE} tenant=Some(\"{A}\") billing=None reseller=None"),
        ),
        // Every YAML spelling of the same values.
        (
            format!("subscriptions:\n- id: {A}\n  state: Enabled\n  offer: |\n    CSP\n"),
            "catalog is valid: 1 subscriptions (0 CSP, 1 Enabled), 0 multitenancy approvals; e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a: Enabled \"CSP\\n\" tenant=None billing=None reseller=None".into(),
        ),
        (
            format!("subscriptions:\n- id: {A}\n  state: Enabled\n  offer: >\n    CSP\n    offer\n"),
            "catalog is valid: 1 subscriptions (0 CSP, 1 Enabled), 0 multitenancy approvals; e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a: Enabled \"CSP offer\\n\" tenant=None billing=None reseller=None".into(),
        ),
        (
            format!("\"subscriptions\":\n- {{'id': {A}, \"state\": !!str Enabled, offer: CSP}}\n"),
            format!("{ONE} tenant=None billing=None reseller=None"),
        ),
        (
            format!("subscriptions:\n- &a {{id: {A}, state: Enabled, offer: CSP}}\n"),
            format!("{ONE} tenant=None billing=None reseller=None"),
        ),
        (
            format!(
                r#"{{"subscriptions": [{{"id": "{A}", "state": "Warned", "offer": "CSP", "billingPartnerId": 4412345, "tenantId": null}}], "multitenancyApprovals": [{{"subscriptionId": "{A}", "resourceGroup": "rg", "registrationName": "r"}}]}}"#
            ),
            "catalog is valid: 1 subscriptions (1 CSP, 1 Warned), 1 multitenancy approvals; e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a: Warned \"CSP\" tenant=None billing=Some(\"4412345\") reseller=None".into(),
        ),
        (
            include_str!("../../../examples/catalog.yaml").into(),
            "catalog is valid: 7 subscriptions (4 CSP, 4 Enabled, 1 Warned, 2 Disabled), 1 multitenancy approvals, 3 registrations, 1 service principals; e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a: Enabled \"CSP\" tenant=Some(\"2b7e0c1d-3a4b-4c5d-8e6f-7a8b9c0d1e2f\") billing=Some(\"4412345\") reseller=None".into(),
        ),
    ];
    for (text, want) in &cases {
        assert_eq!(&outcome(text), want, "{text}");
    }
}

#[test]
fn catalog_errors_read_exactly_so() {
    let cases: Vec<(String, &str)> = vec![
        // Not YAML.
        (
            "subscriptions: [\n".into(),
            "unclosed bracket '[' at line 1 column 16",
        ),
        (
            "subscriptions:\n- id: \"unterminated\n  state: Enabled\n".into(),
            "unclosed quote at line 2 column 7",
        ),
        (
            "subscriptions:\n\t- id: x\n".into(),
            "tabs disallowed within this context (block indentation) at line 2 column 2",
        ),
        (
            "subscriptions:\n- {id: *x, state: Enabled, offer: CSP}\n".into(),
            "reference to unknown value at line 2 column 8",
        ),
        (
            "{}\n---\n{}\n".into(),
            "only single YAML document expected but multiple found at line 3 column 1",
        ),
        // Not a catalog.
        (
            "- a\n- list\n".into(),
            "invalid type: sequence, expected a catalog: a mapping with `subscriptions` and `multitenancyApprovals` at line 1 column 1",
        ),
        (
            "# a comment\n--- text\n".into(),
            "invalid type: string \"text\", expected a catalog: a mapping with `subscriptions` and `multitenancyApprovals` at line 2 column 5",
        ),
        (
            "'null'\n".into(),
            "invalid type: string \"null\", expected a catalog: a mapping with `subscriptions` and `multitenancyApprovals` at line 1 column 1",
        ),
        (
            "subscription: []\n".into(),
            "unknown field `subscription`, expected one of subscriptions, multitenancyApprovals, registrations, servicePrincipals at line 1 column 1",
        ),
        (
            "<<: {subscriptions: []}\n".into(),
            "unknown field `<<`, expected one of subscriptions, multitenancyApprovals, registrations, servicePrincipals at line 1 column 1",
        ),
        (
            "subscriptions: []\nsubscriptions: []\n".into(),
            "duplicate mapping key `subscriptions` is not allowed here at line 2 column 1",
        ),
        (
            "subscriptions: {}\n".into(),
            "invalid type: map, expected a sequence at line 1 column 16",
        ),
        (
            "subscriptions:\n- just text\n".into(),
            "invalid type: expected a mapping at line 2 column 3",
        ),
        (
            "subscriptions:\n-\n".into(),
            "invalid type: expected a mapping at line 2 column 2",
        ),
        // Entries of the wrong shape.
        (
            sub(", colour: red"),
            "unknown field `colour`, expected one of id, tenantId, state, offer, billingPartnerId, resellerPartnerId at line 2 column 74",
        ),
        (
            sub(", state: Warned"),
            "duplicate mapping key `state` is not allowed here at line 2 column 74",
        ),
        (
            "subscriptions:\n- {state: Enabled, offer: CSP}\n".into(),
            "missing field `id` at line 2 column 20",
        ),
        (
            "subscriptions:\n- {id: x, offer: CSP}\n".into(),
            "missing field `state` at line 2 column 11",
        ),
        (
            "multitenancyApprovals:\n- {subscriptionId: x, resourceGroup: rg}\n".into(),
            "missing field `registrationName` at line 2 column 23",
        ),
        (
            "subscriptions:\n- id: x\n  state: [Enabled]\n  offer: CSP\n".into(),
            "invalid type: expected a string at line 3 column 10",
        ),
        (
            sub(", tenantId: {a: b}"),
            "invalid type: expected a string at line 2 column 84",
        ),
        (
            sub(", billingPartnerId: true"),
            "invalid type: boolean `true`, expected a partner ID (string or number) at line 2 column 74",
        ),
        (
            sub(", billingPartnerId: 1.5"),
            "invalid type: floating point `1.5`, expected a partner ID (string or number) at line 2 column 74",
        ),
        (
            sub(", billingPartnerId: -1"),
            "invalid type: integer `-1`, expected a partner ID (string or number) at line 2 column 74",
        ),
        (
            sub(", billingPartnerId: [1]"),
            "invalid type: sequence, expected a partner ID (string or number) at line 2 column 74",
        ),
    ];
    for (text, want) in &cases {
        match Catalog::parse(text) {
            Err(error @ CatalogError::Syntax { .. }) => {
                assert_eq!(error.to_string(), format!("{SYNTAX}{want}"), "{text}")
            }
            other => panic!("{text}\nexpected a syntax error, got {other:?}"),
        }
    }
}

#[test]
fn validation_problems_read_exactly_so() {
    let cases: Vec<(String, &str)> = vec![
        // Scalars of another type are read as their text, and judged as such.
        (
            "subscriptions:\n- {id: 123, state: true, offer: ~}\n".into(),
            r#"subscriptions[0].id: "123" is not a GUID; subscriptions[0].state: "true" is not one of Enabled, Warned, PastDue, Disabled, Deleted"#,
        ),
        (
            sub(", tenantId: 'null'"),
            r#"subscriptions[0].tenantId: "null" is not a GUID"#,
        ),
        (
            sub(", tenantId: ''"),
            r#"subscriptions[0].tenantId: "" is not a GUID"#,
        ),
        (
            sub(", billingPartnerId: , resellerPartnerId: \"\""),
            "subscriptions[0].resellerPartnerId: must not be empty (leave the field out when there is none)",
        ),
        (
            format!(
                "multitenancyApprovals:\n- {{subscriptionId: x, resourceGroup: '', registrationName: r}}\nsubscriptions:\n- {{id: y, state: Enabled, offer: CSP}}\n- {{id: {A}, state: Enabled, offer: CSP}}\n- {{id: {}, state: Enabled, offer: CSP}}\n",
                A.to_uppercase()
            ),
            r#"subscriptions[0].id: "y" is not a GUID; subscriptions[2].id: "E09A4E93-29A7-4EBA-A7F2-3B2C1D0E9F8A" duplicates subscriptions[1].id; multitenancyApprovals[0].subscriptionId: "x" is not a GUID; multitenancyApprovals[0].resourceGroup: must not be empty"#,
        ),
        (
            format!(
                "multitenancyApprovals:\n- {{subscriptionId: {A}, resourceGroup: RG, registrationName: r}}\n- {{subscriptionId: {A}, resourceGroup: rg, registrationName: R}}\n"
            ),
            "multitenancyApprovals[1]: duplicates multitenancyApprovals[0] (/subscriptions/e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a/resourceGroups/rg/providers/Microsoft.AzureStack/registrations/r)",
        ),
    ];
    for (text, want) in &cases {
        assert_eq!(
            outcome(text),
            format!("the catalog is invalid: {want}"),
            "{text}"
        );
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
    /// Whatever the document, the reader answers: a catalog, problems naming entries, or a
    /// syntax error that says where.
    #[test]
    fn every_generated_document_is_answered_with_a_position_or_named_problems(
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
        let text = lists.concat();
        match Catalog::parse(&text) {
            Ok(_) => {}
            Err(CatalogError::Syntax { message, line, column }) => {
                prop_assert!(line.is_some() && column.is_some(), "{}\n{}", text, message);
                prop_assert!(message.contains(" at line "), "{}\n{}", text, message);
            }
            Err(CatalogError::Invalid { problems }) => {
                prop_assert!(!problems.is_empty());
                for problem in &problems {
                    prop_assert!(
                        problem.starts_with("subscriptions[") || problem.starts_with("multitenancyApprovals["),
                        "{}\n{}", text, problem
                    );
                }
            }
            Err(other) => prop_assert!(false, "{}\n{:?}", text, other),
        }
    }
}
