//! The operator against the real API server: every documented reason, admission, re-evaluation,
//! duplicates, deletion protection, `verify`, the http resolver, and quiet when settled.
//! Each test has its own namespace and its own operator process watching only that namespace.

mod common {
    pub mod crds;
    pub mod http;
    pub mod objects;
    pub mod process;
    pub mod reasons;
    pub mod scenario;
}
mod emulated;

use std::{collections::BTreeMap, time::Duration};

use azs_csp_operator::api::{CustomerSubscription, Registration};
use azs_csp_testkit::{
    cluster::{TestNamespace, create_untyped, from_yaml, wait_for, wait_gone, yaml_documents},
    upstream::{Mode, Upstream},
};
use common::{
    objects::{REGISTRATION_SUB, customer_yaml, registration_yaml},
    process::start_operator_with_env,
    reasons::{customer_reason, wait_customer_reason, wait_registration_reason},
    scenario::{Scenario, start_operator},
};
use emulated::Metadata;
use k8s_openapi::api::{core::v1::ConfigMap, events::v1::Event};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

const CATALOG: &str = include_str!("../examples/catalog.yaml");
const REGISTRATIONS: &str = include_str!("../examples/registrations.yaml");
const DUPLICATE_REGISTRATION: &str = include_str!("../examples/duplicate-registration.yaml");
const CUSTOMERS: &str = include_str!("../examples/customer-subscriptions.yaml");
const DUPLICATE_CUSTOMER: &str = include_str!("../examples/duplicate-customer-subscription.yaml");

const FABRIKAM_SUB: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";
const FABRIKAM_TENANT: &str = "2b7e0c1d-3a4b-4c5d-8e6f-7a8b9c0d1e2f";
const APPROVAL: &str = "- subscriptionId: 6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c
  resourceGroup: azurestack
  registrationName: azurestack-5f1c2d3e
";

/// Creates the Registrations and CustomerSubscriptions of an example file in `ns`.
async fn apply_example(ns: &TestNamespace, yaml: &str) {
    for mut value in yaml_documents(yaml) {
        value["metadata"]["namespace"] = json!(ns.name);
        match value["kind"].as_str() {
            Some("Registration") => {
                let obj: Registration = serde_json::from_value(value).unwrap();
                ns.api::<Registration>()
                    .create(&PostParams::default(), &obj)
                    .await
                    .expect("create");
            }
            Some("CustomerSubscription") => {
                let obj: CustomerSubscription = serde_json::from_value(value).unwrap();
                ns.api::<CustomerSubscription>()
                    .create(&PostParams::default(), &obj)
                    .await
                    .expect("create");
            }
            _ => {}
        }
    }
}

/// Every outcome the example manifests produce, with the status fields that go with them.
async fn settle_examples(s: &Scenario) {
    apply_example(&s.ns, REGISTRATIONS).await;
    wait_registration_reason(&s.ns, "contoso-stack", "Registered").await;
    apply_example(&s.ns, DUPLICATE_REGISTRATION).await;
    apply_example(&s.ns, CUSTOMERS).await;
    wait_customer_reason(&s.ns, "fabrikam", "Attached").await;
    apply_example(&s.ns, DUPLICATE_CUSTOMER).await;
    let expected_customers = [
        ("fabrikam", "Attached"),
        ("tailspin", "Attached"),
        ("northwind", "BadCustomerSubscriptionId"),
        ("adatum", "InvalidCSPSubscription"),
        ("litware", "InvalidCustomerSubscriptionId"),
        ("woodgrove", "InvalidCustomerSubscriptionId"),
        ("proseware", "RegistrationNotFound"),
        ("fabrikam-disconnected", "CustomerSubscriptionsNotAllowed"),
        ("fabrikam-edge", "UnauthorizedCspRegistration"),
        ("fabrikam-second", "DuplicateCustomerSubscription"),
    ];
    for (name, reason) in expected_customers {
        wait_customer_reason(&s.ns, name, reason).await;
    }
    for (name, reason) in [
        ("contoso-stack", "Registered"),
        ("contoso-edge", "Registered"),
        ("contoso-disconnected", "Registered"),
        ("contoso-lapsed", "InvalidRegistrationSubscription"),
        ("contoso-stack-copy", "DuplicateCloudId"),
    ] {
        wait_registration_reason(&s.ns, name, reason).await;
    }
    wait_for(
        &s.ns.api::<Registration>(),
        "contoso-stack",
        "2 attached customers",
        |r| {
            r.status
                .as_ref()
                .and_then(|s| s.customer_subscription_count)
                == Some(2)
        },
    )
    .await;
}

fn condition<'a>(
    conditions: &'a [azs_csp_operator::api::Condition],
    type_: &str,
) -> &'a azs_csp_operator::api::Condition {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

#[tokio::test]
async fn every_documented_reason_with_its_status_fields() {
    let s = Scenario::start("reasons", CATALOG).await;
    settle_examples(&s).await;

    let customers = s.ns.api::<CustomerSubscription>();
    let tailspin = customers.get("tailspin").await.unwrap();
    let status = tailspin.status.unwrap();
    assert_eq!(
        status.billing_partner_id.as_deref(),
        Some("4412345"),
        "indirect: the provider collects"
    );
    assert_eq!(
        status.reseller_partner_id.as_deref(),
        Some("5523456"),
        "indirect: the reseller is recorded"
    );
    assert_eq!(
        status.arm_resource_id.as_deref(),
        Some(format!(
            "/subscriptions/{REGISTRATION_SUB}/resourceGroups/azurestack/providers/Microsoft.AzureStack/registrations/azurestack-5f1c2d3e/customerSubscriptions/a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
        ).as_str()),
        "GUIDs are shown lower-case"
    );
    assert_eq!(status.observed_generation, tailspin.metadata.generation);

    let northwind = customers.get("northwind").await.unwrap();
    let ready = condition(&northwind.status.as_ref().unwrap().conditions, "Ready").clone();
    assert_eq!(ready.status, azs_csp_operator::api::ConditionStatus::False);
    assert!(
        ready.message.contains("5590000") && ready.message.contains("4412345"),
        "{}",
        ready.message
    );
    assert!(ready.last_transition_time.is_some());

    let registrations = s.ns.api::<Registration>();
    let stack = registrations.get("contoso-stack").await.unwrap();
    let status = stack.status.unwrap();
    assert_eq!(status.multitenancy_approved, Some(true));
    assert_eq!(status.billing_partner_id.as_deref(), Some("4412345"));
    assert_eq!(
        condition(&status.conditions, "MultitenancyApproved").reason,
        "Approved"
    );
    assert!(
        stack
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"csp.azurestack.io/registration-protection".to_string())
    );
    let edge = registrations
        .get("contoso-edge")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(edge.multitenancy_approved, Some(false));
    assert_eq!(
        condition(&edge.conditions, "MultitenancyApproved").reason,
        "UnauthorizedCspRegistration"
    );
    let copy = registrations
        .get("contoso-stack-copy")
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(
        condition(&copy.conditions, "Ready")
            .message
            .contains("contoso-stack,"),
        "names the older registration"
    );
}

#[tokio::test]
async fn settled_objects_are_not_written_again() {
    let s = Scenario::start("quiet", CATALOG).await;
    settle_examples(&s).await;
    // Let in-flight reconciles of the last changes finish before taking the snapshot.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let versions = resource_versions(&s.ns).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(
        resource_versions(&s.ns).await,
        versions,
        "an idle operator makes no writes"
    );
    assert!(
        s.operator
            .log_text(&s.ns.client)
            .await
            .contains("controllers starting")
    );
}

async fn resource_versions(ns: &TestNamespace) -> BTreeMap<String, String> {
    let mut versions = BTreeMap::new();
    for r in ns
        .api::<Registration>()
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        versions.insert(
            format!("Registration/{}", r.name_any()),
            r.resource_version().unwrap_or_default(),
        );
    }
    for c in ns
        .api::<CustomerSubscription>()
        .list(&ListParams::default())
        .await
        .unwrap()
    {
        versions.insert(
            format!("CustomerSubscription/{}", c.name_any()),
            c.resource_version().unwrap_or_default(),
        );
    }
    versions
}

/// Sends `yaml` as it is, without the typed client's own checks, as `kubectl apply` would.
#[tokio::test]
async fn admission_rejects_malformed_objects_with_the_field_and_code() {
    let ns = TestNamespace::new("admission").await;
    common::crds::ensure_crds(&ns.client).await;
    let customer_cases = [
        (
            customer_yaml("bad-guid", "r", "not-a-guid"),
            ["InvalidCustomerSubscriptionId", "spec.subscriptionId"],
        ),
        (
            format!(
                "{}\n  tenantId: 'not-a-tenant'",
                customer_yaml("bad-tenant", "r", FABRIKAM_SUB)
            ),
            ["InvalidCustomerSubscriptionId", "spec.tenantId"],
        ),
        (
            customer_yaml("empty-ref", "''", FABRIKAM_SUB),
            ["spec.registrationRef.name", "Registration"],
        ),
    ];
    for (yaml, needles) in customer_cases {
        let error = create_untyped::<CustomerSubscription>(&ns, from_yaml(&yaml))
            .await
            .expect_err(&yaml);
        for needle in needles {
            assert!(
                error.to_string().contains(needle),
                "{needle:?} not in {error}"
            );
        }
    }
    let registration_cases = [
        (
            registration_yaml("unknown-model", "Free"),
            vec!["spec.billingModel", "Unsupported value"],
        ),
        (
            registration_yaml("capacity", "Capacity").replace("  agreementNumber: EA-1", ""),
            vec!["spec.agreementNumber is required when spec.billingModel is Capacity"],
        ),
        (
            registration_yaml("custom", "Custom"),
            vec!["spec.msAssetTag is required when spec.billingModel is Custom"],
        ),
        (
            registration_yaml("bad-rg", "PayAsYouUse")
                .replace("resourceGroup: azurestack", "resourceGroup: 'a/b'"),
            vec!["spec.resourceGroup"],
        ),
        (
            registration_yaml("bad-sub", "PayAsYouUse").replace(REGISTRATION_SUB, "6d3c4b9e"),
            vec!["InvalidRegistrationSubscription", "spec.subscriptionId"],
        ),
        (
            registration_yaml("bad-cloud", "PayAsYouUse").replace("5f1c2d3e-4b5a", "5f1c2d3e-zzzz"),
            vec!["spec.cloudId"],
        ),
    ];
    for (yaml, needles) in registration_cases {
        let error = create_untyped::<Registration>(&ns, from_yaml(&yaml))
            .await
            .expect_err(&yaml);
        for needle in needles {
            assert!(
                error.to_string().contains(needle),
                "{needle:?} not in {error}"
            );
        }
    }
    // cloudId is immutable.
    let _: Registration = ns.create(&registration_yaml("stamp", "PayAsYouUse")).await;
    let error = ns
        .api::<Registration>()
        .patch(
            "stamp",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"cloudId": "11111111-2222-4333-8444-555555555555"}})),
        )
        .await
        .expect_err("cloudId change must be rejected");
    assert!(
        error.to_string().contains("spec.cloudId is immutable"),
        "{error}"
    );
    // A letter-case variant of a valid GUID is accepted at admission.
    let _: CustomerSubscription = ns
        .create(&customer_yaml("upper", "r", &FABRIKAM_SUB.to_uppercase()))
        .await;
}

#[tokio::test]
async fn a_billing_model_flip_re_evaluates_dependents_and_emits_one_event_per_change() {
    let s = Scenario::start("flip", CATALOG).await;
    let _: Registration =
        s.ns.create(&registration_yaml("stack", "PayAsYouUse"))
            .await;
    let _: CustomerSubscription =
        s.ns.create(&customer_yaml("fabrikam", "stack", FABRIKAM_SUB))
            .await;
    wait_customer_reason(&s.ns, "fabrikam", "Attached").await;
    let set_model = |model: &'static str| {
        let api = s.ns.api::<Registration>();
        async move {
            api.patch(
                "stack",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"billingModel": model}})),
            )
            .await
            .expect("patch billing model");
        }
    };
    set_model("Development").await;
    wait_customer_reason(&s.ns, "fabrikam", "CustomerSubscriptionsNotAllowed").await;
    let registration = wait_registration_reason(&s.ns, "stack", "Registered").await;
    assert_eq!(registration.status.unwrap().observed_generation, Some(2));
    set_model("PayAsYouUse").await;
    wait_customer_reason(&s.ns, "fabrikam", "Attached").await;

    // Attached, CustomerSubscriptionsNotAllowed, Attached: three changes, three events.
    let events = Api::<Event>::namespaced(s.ns.client.clone(), &s.ns.name);
    let occurrences =
        || async {
            let list = events.list(&ListParams::default()).await.unwrap();
            let mut by_reason: BTreeMap<String, i32> = BTreeMap::new();
            for e in list.items.iter().filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("fabrikam")
            }) {
                *by_reason
                    .entry(e.reason.clone().unwrap_or_default())
                    .or_default() += e.series.as_ref().map_or(1, |s| s.count);
            }
            by_reason
        };
    let deadline = tokio::time::Instant::now() + azs_csp_testkit::cluster::TIMEOUT;
    let mut seen = occurrences().await;
    while seen.values().sum::<i32>() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen = occurrences().await;
    }
    assert_eq!(seen.get("Attached"), Some(&2), "{seen:?}");
    assert_eq!(
        seen.get("CustomerSubscriptionsNotAllowed"),
        Some(&1),
        "{seen:?}"
    );
}

#[tokio::test]
async fn revoking_the_approval_in_the_catalog_file_re_evaluates_within_seconds() {
    let s = Scenario::start("revoke-file", CATALOG).await;
    let _: Registration =
        s.ns.create(&registration_yaml("stack", "PayAsYouUse"))
            .await;
    let _: CustomerSubscription =
        s.ns.create(&customer_yaml("fabrikam", "stack", FABRIKAM_SUB))
            .await;
    wait_customer_reason(&s.ns, "fabrikam", "Attached").await;

    s.replace_catalog(&CATALOG.replace(APPROVAL, "")).await;
    wait_customer_reason(&s.ns, "fabrikam", "UnauthorizedCspRegistration").await;
    wait_for(
        &s.ns.api::<Registration>(),
        "stack",
        "approval revoked",
        |r| r.status.as_ref().and_then(|s| s.multitenancy_approved) == Some(false),
    )
    .await;

    // A catalog that does not parse is rejected whole: the last good one stays in force.
    s.replace_catalog("subscriptions: [this is not: a catalog")
        .await;
    s.replace_catalog(CATALOG).await;
    wait_customer_reason(&s.ns, "fabrikam", "Attached").await;
}

#[tokio::test]
async fn revoking_the_approval_in_the_catalog_configmap_re_evaluates_within_seconds() {
    let ns = TestNamespace::new("revoke-cm").await;
    common::crds::ensure_crds(&ns.client).await;
    let configmap = |catalog: &str| -> ConfigMap {
        serde_json::from_value(
            json!({"metadata": {"name": "catalog"}, "data": {"catalog.yaml": catalog}}),
        )
        .unwrap()
    };
    ns.api::<ConfigMap>()
        .create(&PostParams::default(), &configmap(CATALOG))
        .await
        .unwrap();
    let source = format!("{}/catalog", ns.name);
    let _operator = start_operator(&[
        "--catalog-configmap",
        &source,
        "--watch-namespace",
        &ns.name,
    ]);
    let _: Registration = ns.create(&registration_yaml("stack", "PayAsYouUse")).await;
    let _: CustomerSubscription = ns
        .create(&customer_yaml("fabrikam", "stack", FABRIKAM_SUB))
        .await;
    wait_customer_reason(&ns, "fabrikam", "Attached").await;

    let revoked = configmap(&CATALOG.replace(APPROVAL, ""));
    ns.api::<ConfigMap>()
        .patch("catalog", &PatchParams::default(), &Patch::Merge(&revoked))
        .await
        .unwrap();
    wait_customer_reason(&ns, "fabrikam", "UnauthorizedCspRegistration").await;
}

#[tokio::test]
async fn a_registration_created_after_its_customer_subscription_attaches_it() {
    let s = Scenario::start("late-reg", CATALOG).await;
    let _: CustomerSubscription =
        s.ns.create(&customer_yaml("fabrikam", "stack", FABRIKAM_SUB))
            .await;
    wait_customer_reason(&s.ns, "fabrikam", "RegistrationNotFound").await;
    let _: Registration =
        s.ns.create(&registration_yaml("stack", "PayAsYouUse"))
            .await;
    wait_customer_reason(&s.ns, "fabrikam", "Attached").await;
}

#[tokio::test]
async fn duplicates_by_subscription_and_by_tenant_and_the_older_one_going() {
    // A second subscription of Fabrikam's tenant.
    let second = "f1e2d3c4-b5a6-4978-8695-a4b3c2d1e0f9";
    let catalog = CATALOG.replace(
        "multitenancyApprovals:",
        &format!(
            "- id: {second}\n  tenantId: {FABRIKAM_TENANT}\n  state: Enabled\n  offer: CSP\n  billingPartnerId: \"4412345\"\nmultitenancyApprovals:"
        ),
    );
    let s = Scenario::start("dups", &catalog).await;
    let _: Registration =
        s.ns.create(&registration_yaml("stack", "PayAsYouUse"))
            .await;
    // An older sibling that fails rules 0–7 (wrong tenant) does not count as a duplicate.
    let _: CustomerSubscription =
        s.ns.create(&format!(
            "{}\n  tenantId: 99999999-9999-4999-8999-999999999999",
            customer_yaml("a-wrong-tenant", "stack", FABRIKAM_SUB)
        ))
        .await;
    wait_customer_reason(&s.ns, "a-wrong-tenant", "InvalidCustomerSubscriptionId").await;
    let _: CustomerSubscription =
        s.ns.create(&customer_yaml("b-first", "stack", FABRIKAM_SUB))
            .await;
    wait_customer_reason(&s.ns, "b-first", "Attached").await;
    let _: CustomerSubscription =
        s.ns.create(&customer_yaml(
            "c-same-subscription",
            "stack",
            &FABRIKAM_SUB.to_uppercase(),
        ))
        .await;
    let _: CustomerSubscription =
        s.ns.create(&customer_yaml("d-same-tenant", "stack", second))
            .await;
    let same_sub = wait_customer_reason(
        &s.ns,
        "c-same-subscription",
        "DuplicateCustomerSubscription",
    )
    .await;
    let message = &same_sub.status.unwrap().conditions[0].message;
    assert!(message.contains("b-first"), "{message}");
    let same_tenant =
        wait_customer_reason(&s.ns, "d-same-tenant", "DuplicateCustomerSubscription").await;
    assert!(
        same_tenant.status.unwrap().conditions[0]
            .message
            .contains(FABRIKAM_TENANT)
    );

    // The oldest goes: the next oldest takes the mapping, the others stay duplicates of it.
    s.ns.api::<CustomerSubscription>()
        .delete("b-first", &DeleteParams::default())
        .await
        .unwrap();
    wait_customer_reason(&s.ns, "c-same-subscription", "Attached").await;
    // d was a duplicate of b-first already: wait for it to be decided again (the reason stays,
    // the message names the new holder), not only for the reason it had.
    let still = wait_for(
        &s.ns.api::<CustomerSubscription>(),
        "d-same-tenant",
        "DuplicateCustomerSubscription of c-same-subscription",
        |cs| {
            customer_reason(cs).as_deref() == Some("DuplicateCustomerSubscription")
                && cs.status.as_ref().is_some_and(|status| {
                    status.conditions[0].message.contains("c-same-subscription")
                })
        },
    )
    .await;
    assert!(
        still.status.unwrap().conditions[0]
            .message
            .contains("c-same-subscription")
    );
}

#[tokio::test]
async fn a_duplicate_cloud_id_registration_is_registered_once_the_older_one_is_gone() {
    let s = Scenario::start("dupcloud", CATALOG).await;
    let registrations = s.ns.api::<Registration>();
    let _: Registration =
        s.ns.create(&registration_yaml("older", "PayAsYouUse"))
            .await;
    wait_registration_reason(&s.ns, "older", "Registered").await;
    let _: Registration =
        s.ns.create(&registration_yaml("younger", "PayAsYouUse"))
            .await;
    let duplicate = wait_registration_reason(&s.ns, "younger", "DuplicateCloudId").await;
    assert!(
        condition(&duplicate.status.unwrap().conditions, "Ready")
            .message
            .contains("older")
    );
    registrations
        .delete("older", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&registrations, "older").await;
    wait_registration_reason(&s.ns, "younger", "Registered").await;
}

#[tokio::test]
async fn deleting_a_referenced_registration_is_blocked_until_its_customers_are_gone() {
    let s = Scenario::start("protect", CATALOG).await;
    let _: Registration =
        s.ns.create(&registration_yaml("stack", "PayAsYouUse"))
            .await;
    let _: CustomerSubscription =
        s.ns.create(&customer_yaml("fabrikam", "stack", FABRIKAM_SUB))
            .await;
    wait_customer_reason(&s.ns, "fabrikam", "Attached").await;
    // Protection starts once the operator has seen the Registration (its finalizer is on).
    wait_registration_reason(&s.ns, "stack", "Registered").await;
    let registrations = s.ns.api::<Registration>();
    registrations
        .delete("stack", &DeleteParams::default())
        .await
        .unwrap();
    let blocked = wait_registration_reason(&s.ns, "stack", "DeletionBlocked").await;
    assert!(blocked.metadata.deletion_timestamp.is_some());
    assert!(
        condition(&blocked.status.unwrap().conditions, "Ready")
            .message
            .contains("1 CustomerSubscription")
    );
    wait_customer_reason(&s.ns, "fabrikam", "RegistrationNotFound").await;

    s.ns.api::<CustomerSubscription>()
        .delete("fabrikam", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&registrations, "stack").await;
}

fn verify(ns: &str, registration: &str, subscription: &str) -> (Option<i32>, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_azs-csp-operator"))
        .args([
            "verify",
            "--namespace",
            ns,
            "--registration",
            registration,
            "--subscription-id",
            subscription,
        ])
        .env("KUBECONFIG", azs_csp_testkit::cluster::kubeconfig_path())
        .output()
        .expect("run verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), text)
}

#[tokio::test]
async fn verify_reports_attached_customer_subscription_not_found_and_registration_not_found() {
    let s = Scenario::start("verify", CATALOG).await;
    let _: Registration =
        s.ns.create(&registration_yaml("stack", "PayAsYouUse"))
            .await;
    let _: CustomerSubscription =
        s.ns.create(&customer_yaml("fabrikam", "stack", FABRIKAM_SUB))
            .await;
    let _: CustomerSubscription =
        s.ns.create(&customer_yaml(
            "northwind",
            "stack",
            "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e",
        ))
        .await;
    wait_customer_reason(&s.ns, "fabrikam", "Attached").await;
    wait_customer_reason(&s.ns, "northwind", "BadCustomerSubscriptionId").await;

    let (code, out) = verify(&s.ns.name, "stack", &FABRIKAM_SUB.to_uppercase());
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("Attached") && out.contains(FABRIKAM_SUB) && out.contains("fabrikam"),
        "{out}"
    );

    // Present but not attached, and absent: both are CustomerSubscriptionNotFound.
    for subscription in [
        "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e",
        "00000000-0000-4000-8000-000000000000",
    ] {
        let (code, out) = verify(&s.ns.name, "stack", subscription);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.starts_with("CustomerSubscriptionNotFound:"), "{out}");
    }
    let (code, out) = verify(&s.ns.name, "no-such-registration", FABRIKAM_SUB);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.starts_with("RegistrationNotFound:"), "{out}");
}

#[tokio::test]
async fn http_resolver_failures_are_bad_gateway_and_heal() {
    let upstream = Metadata::start().await;
    upstream.add_subscription(
        REGISTRATION_SUB,
        json!({"id": REGISTRATION_SUB, "tenantId": FABRIKAM_TENANT, "state": "Enabled", "offer": "APSS", "billingPartnerId": "4412345"}),
    );
    upstream.add_subscription(
        FABRIKAM_SUB,
        json!({"id": FABRIKAM_SUB, "tenantId": FABRIKAM_TENANT, "state": "Enabled", "offer": "CSP", "billingPartnerId": "4412345"}),
    );
    upstream.set_approval(REGISTRATION_SUB, "azurestack", "azurestack-5f1c2d3e", true);

    let ns = TestNamespace::new("http").await;
    common::crds::ensure_crds(&ns.client).await;
    let _operator = common::http::start_http_operator(&upstream.url(), &ns.name);
    let _: Registration = ns.create(&registration_yaml("stack", "PayAsYouUse")).await;
    let _: CustomerSubscription = ns
        .create(&customer_yaml("fabrikam", "stack", FABRIKAM_SUB))
        .await;
    wait_customer_reason(&ns, "fabrikam", "Attached").await;

    for failure in [Mode::Status(502), Mode::Hang, Mode::Malformed] {
        upstream.set_mode(failure.clone());
        let failed = wait_customer_reason(&ns, "fabrikam", "MetadataResolverBadGatewayError").await;
        let ready = &failed.status.unwrap().conditions[0];
        assert_eq!(
            ready.status,
            azs_csp_operator::api::ConditionStatus::Unknown,
            "{failure:?}"
        );
        let registration =
            wait_registration_reason(&ns, "stack", "MetadataResolverBadGatewayError").await;
        let approved = condition(
            &registration.status.unwrap().conditions,
            "MultitenancyApproved",
        )
        .clone();
        assert_eq!(
            approved.reason, "MetadataResolverBadGatewayError",
            "{failure:?}"
        );
        assert_eq!(
            approved.status,
            azs_csp_operator::api::ConditionStatus::Unknown
        );

        upstream.set_mode(Mode::Healthy);
        wait_customer_reason(&ns, "fabrikam", "Attached").await;
        wait_registration_reason(&ns, "stack", "Registered").await;
    }
}

#[tokio::test]
async fn only_the_watched_namespaces_are_reconciled() {
    let s = Scenario::start("watched", CATALOG).await;
    let other = TestNamespace::new("unwatched").await;
    let _: Registration = other
        .create(&registration_yaml("stack", "PayAsYouUse"))
        .await;
    let _: CustomerSubscription = other
        .create(&customer_yaml("fabrikam", "stack", FABRIKAM_SUB))
        .await;
    let _: Registration =
        s.ns.create(&registration_yaml("stack", "PayAsYouUse"))
            .await;
    let _: CustomerSubscription =
        s.ns.create(&customer_yaml("fabrikam", "stack", FABRIKAM_SUB))
            .await;
    wait_customer_reason(&s.ns, "fabrikam", "Attached").await;
    let untouched = other
        .api::<CustomerSubscription>()
        .get("fabrikam")
        .await
        .unwrap();
    assert_eq!(
        customer_reason(&untouched),
        None,
        "an unwatched namespace gets no status"
    );
    assert!(
        other
            .api::<Registration>()
            .get("stack")
            .await
            .unwrap()
            .status
            .is_none()
    );
}

#[tokio::test]
async fn the_operator_refuses_to_start_when_the_crds_are_not_served() {
    // An API server that serves nothing (404 everywhere) stands in for a cluster without the CRDs.
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: '{}'}}}}]\nusers: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n",
            upstream.url()
        ),
    )
    .unwrap();
    let catalog = common::scenario::CatalogFile::new(CATALOG);
    let operator = start_operator_with_env(
        &["--catalog-file", catalog.path_str()],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let (code, logs) =
        tokio::task::spawn_blocking(move || operator.wait_exit(Duration::from_secs(20)))
            .await
            .unwrap();
    assert_eq!(code, Some(1), "{logs}");
    assert!(
        logs.contains("registrations.csp.azurestack.io is not installed"),
        "{logs}"
    );
    assert!(
        logs.contains("kubectl apply --server-side -f crds/"),
        "{logs}"
    );
}
