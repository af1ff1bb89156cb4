//! Catalogs with every kind of malformation and what the error about each must say: checked
//! by `catalog check` without a cluster (tests/catalog_check.rs) and against a running operator
//! (tests/faults.rs).

/// The example catalog, the good base of most malformations.
pub const CATALOG: &str = include_str!("../../examples/catalog.yaml");

/// Catalogs with every kind of malformation, and what the error must say.
pub fn malformed_catalogs() -> Vec<(&'static str, Vec<u8>, Vec<&'static str>)> {
    const A: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";
    const T: &str = "2b7e0c1d-3a4b-4c5d-8e6f-7a8b9c0d1e2f";
    let entry = |id: &str, extra: &str| {
        format!(
            "- id: {id}\n  tenantId: {T}\n  state: Enabled\n  offer: CSP\n  billingPartnerId: \"4412345\"\n{extra}"
        )
    };
    let approval = |sub: &str, rg: &str, name: &str| {
        format!("- subscriptionId: {sub}\n  resourceGroup: '{rg}'\n  registrationName: '{name}'\n")
    };
    let subs = |entries: &str| format!("subscriptions:\n{entries}").into_bytes();
    let approvals = |entries: &str| {
        format!("subscriptions: []\nmultitenancyApprovals:\n{entries}").into_bytes()
    };
    let every_problem = format!(
        "subscriptions:\n{}{}{}{}{}{}{}multitenancyApprovals:\n{}{}{}{}",
        entry("not-a-guid", ""),
        entry(A, ""),
        entry(A, "").replace(T, "not-a-tenant"),
        entry(A, "").replace("Enabled", "Suspended"),
        entry(A, "").replace("offer: CSP", "offer: ' '"),
        entry(A, "  resellerPartnerId: ''\n"),
        entry(&A.to_uppercase(), ""),
        approval("6d3c4b9e", "azurestack", "x"),
        approval(A, " ", "x"),
        approval(A, "azurestack", ""),
        approval(A, "azurestack", "x") + &approval(&A.to_uppercase(), "AzureStack", "X"),
    );
    vec![
        (
            "not YAML",
            b"subscriptions:\n- id: \"unterminated\n  state: Enabled\n".to_vec(),
            vec![
                "not a valid catalog document",
                "unclosed quote at line 2 column 7",
            ],
        ),
        (
            "a tab where YAML wants spaces",
            b"subscriptions:\n\t- id: x\n".to_vec(),
            vec!["not a valid catalog document", "at line 2 column 2"],
        ),
        (
            "not a mapping",
            b"- a\n- list\n".to_vec(),
            vec!["not a valid catalog document"],
        ),
        (
            "unknown top-level field",
            format!("{CATALOG}\nsubscription: []\n").into_bytes(),
            vec!["unknown field `subscription`"],
        ),
        (
            "misspelt entry field",
            subs(&entry(A, "").replace("tenantId", "tenantID")),
            vec!["unknown field `tenantID`"],
        ),
        (
            "missing required field",
            subs(&entry(A, "").replace("  state: Enabled\n", "")),
            vec!["missing field `state`"],
        ),
        (
            "wrong type",
            subs(&entry(A, "").replace("state: Enabled", "state: [Enabled]")),
            vec!["invalid type"],
        ),
        (
            "id not a GUID",
            subs(&entry("e09a4e93-29a7-4eba-a7f2", "")),
            vec!["subscriptions[0].id", "not a GUID"],
        ),
        (
            "tenantId not a GUID",
            subs(&entry(A, "").replace(T, "'{2b7e0c1d}'")),
            vec!["subscriptions[0].tenantId", "not a GUID"],
        ),
        (
            "unknown state",
            subs(&entry(A, "").replace("Enabled", "Suspended")),
            vec!["subscriptions[0].state", "Suspended"],
        ),
        (
            "empty offer",
            subs(&entry(A, "").replace("offer: CSP", "offer: ''")),
            vec!["subscriptions[0].offer"],
        ),
        (
            "empty billingPartnerId",
            subs(&entry(A, "").replace("\"4412345\"", "''")),
            vec!["subscriptions[0].billingPartnerId"],
        ),
        (
            "empty resellerPartnerId",
            subs(&entry(A, "  resellerPartnerId: ''\n")),
            vec!["subscriptions[0].resellerPartnerId"],
        ),
        (
            "duplicate id in another letter case",
            subs(&(entry(A, "") + &entry(&A.to_uppercase(), ""))),
            vec!["subscriptions[1].id", "duplicates subscriptions[0].id"],
        ),
        (
            "approval subscriptionId not a GUID",
            approvals(&approval("6d3c4b9e", "azurestack", "x")),
            vec!["multitenancyApprovals[0].subscriptionId"],
        ),
        (
            "approval without resourceGroup",
            approvals(&approval(A, "", "x")),
            vec!["multitenancyApprovals[0].resourceGroup"],
        ),
        (
            "approval without registrationName",
            approvals(&approval(A, "azurestack", " ")),
            vec!["multitenancyApprovals[0].registrationName"],
        ),
        (
            "duplicate approval in another letter case",
            approvals(
                &(approval(A, "azurestack", "x") + &approval(&A.to_uppercase(), "AzureStack", "X")),
            ),
            vec!["multitenancyApprovals[1]: duplicates multitenancyApprovals[0]"],
        ),
        (
            "not UTF-8",
            b"subscriptions:\n- id: \xff\xfe\n".to_vec(),
            vec!["not UTF-8"],
        ),
        (
            "every validation problem at once",
            every_problem.into_bytes(),
            vec![
                "subscriptions[0].id",
                "subscriptions[2].tenantId",
                "subscriptions[3].state",
                "subscriptions[4].offer",
                "subscriptions[5].resellerPartnerId",
                "subscriptions[6].id: \"E09A4E93-29A7-4EBA-A7F2-3B2C1D0E9F8A\" duplicates subscriptions[1].id",
                "multitenancyApprovals[0].subscriptionId",
                "multitenancyApprovals[1].resourceGroup",
                "multitenancyApprovals[2].registrationName",
                "multitenancyApprovals[4]: duplicates multitenancyApprovals[3]",
            ],
        ),
    ]
}
