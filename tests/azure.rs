//! `run --mode azure` against the real API server and the emulator (DESIGN.md §8, §10): every
//! row of the answer table, the Registration's reasons, approvals learnt from PUTs, credentials,
//! deletion, drift, throttling, faults, and quiet when settled. Each test has its own namespace,
//! its own emulator (in this process, behind the test kit's fault layer) and its own operator.

mod azure_kit;
mod common {
    pub mod crds;
    pub mod reasons;
}

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use azs_csp_operator::api::{ConditionStatus, CustomerSubscription, Registration};
use azs_csp_testkit::{
    cluster::{TestNamespace, create_all, wait_for, wait_gone},
    metrics,
    process::{Operator, http_get},
    upstream::Mode,
};
use azure_kit::*;
use common::{
    crds::ensure_crds,
    reasons::{
        customer_reason, registration_reason, wait_customer_reason, wait_registration_reason,
    },
};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};
use serde_json::json;

fn registration(name: &str, arm_name: &str, cloud: &str, model: &str) -> Registration {
    serde_json::from_value(json!({
        "apiVersion": "csp.azurestack.io/v1alpha1",
        "kind": "Registration",
        "metadata": {"name": name},
        "spec": {
            "subscriptionId": REG_SUB,
            "resourceGroup": RG,
            "registrationName": arm_name,
            "cloudId": cloud,
            "billingModel": model,
            "agreementNumber": "EA-1",
        }
    }))
    .expect("registration")
}

fn customer(name: &str, registration: &str, subscription: &str) -> CustomerSubscription {
    serde_json::from_value(json!({
        "apiVersion": "csp.azurestack.io/v1alpha1",
        "kind": "CustomerSubscription",
        "metadata": {"name": name},
        "spec": {"registrationRef": {"name": registration}, "subscriptionId": subscription}
    }))
    .expect("customer")
}

/// A namespace with the CRDs, an emulator and an azure-mode operator watching the namespace.
struct Scenario {
    ns: TestNamespace,
    world: AzureWorld,
    operator: Operator,
}

impl Scenario {
    async fn start(prefix: &str, extra: &[&str]) -> Self {
        Self::with_world(
            prefix,
            AzureWorld::start(&catalog(0), 200, 10.0).await,
            extra,
        )
        .await
    }

    async fn with_world(prefix: &str, world: AzureWorld, extra: &[&str]) -> Self {
        let ns = TestNamespace::new(prefix).await;
        ensure_crds(&ns.client).await;
        let operator = Operator::spawn(world.operator(&ns.name, extra)).expect("operator");
        Self {
            ns,
            world,
            operator,
        }
    }

    async fn create_registration(&self, registration: Registration) {
        create_all(&self.ns.api::<Registration>(), [registration], 1)
            .await
            .expect("create registration");
    }

    async fn create_customers(&self, customers: &[CustomerSubscription]) {
        create_all(
            &self.ns.api::<CustomerSubscription>(),
            customers.iter().cloned(),
            16,
        )
        .await
        .expect("create customers");
    }

    async fn wait_customer(&self, name: &str, reason: &str) -> CustomerSubscription {
        wait_customer_reason(&self.ns, name, reason).await
    }

    async fn wait_registration(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&Registration) -> bool,
    ) -> Registration {
        wait_for(&self.ns.api::<Registration>(), name, what, check).await
    }

    fn metric(&self, series: &str) -> f64 {
        let (_, text) = http_get(self.operator.metrics_addr(), "/metrics").expect("metrics");
        metrics::sample(&text, series).unwrap_or(0.0)
    }

    /// `verify --in-azure` for `subscription` on Registration `reg`: exit code and output.
    async fn verify_in_azure(&self, subscription: &str) -> (Option<i32>, String) {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_azs-csp-operator"));
        command
            .args([
                "verify",
                "--namespace",
                &self.ns.name,
                "--registration",
                "reg",
            ])
            .args(["--subscription-id", subscription, "--in-azure"])
            .args([
                "--arm-endpoint",
                &self.world.url(),
                "--azure-credential",
                "client-secret",
            ])
            .arg("--azure-ca-file")
            .arg(&self.world.ca_file)
            .arg("--azure-client-secret-file")
            .arg(&self.world.secret_file)
            .env("KUBECONFIG", azs_csp_testkit::cluster::kubeconfig_path())
            .env("AZURE_TENANT_ID", TENANT)
            .env("AZURE_CLIENT_ID", CLIENT)
            .env("AZURE_AUTHORITY_HOST", self.world.url());
        // Off the runtime's threads: the emulator answering it runs on them.
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("verify task")
            .expect("verify");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), text)
    }

    /// PUTs the layer saw for this subscription.
    fn puts_for(&self, subscription: &str) -> usize {
        self.world
            .upstream
            .exchanges()
            .iter()
            .filter(|e| e.method == "PUT" && e.path.ends_with(subscription))
            .count()
    }
}

fn condition<'a>(
    conditions: &'a [azs_csp_operator::api::Condition],
    type_: &str,
) -> Option<&'a azs_csp_operator::api::Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn ready_status(cs: &CustomerSubscription) -> Option<ConditionStatus> {
    condition(&cs.status.as_ref()?.conditions, "Ready").map(|c| c.status)
}

fn approval_reason(r: &Registration) -> Option<String> {
    condition(&r.status.as_ref()?.conditions, "MultitenancyApproved").map(|c| c.reason.clone())
}

#[tokio::test]
async fn every_seed_answer_of_arm_becomes_the_condition_and_local_rules_send_nothing() {
    let s = Scenario::start("azure-table", &[]).await;
    s.create_registration(registration("reg", REG_NAME, CLOUD, "PayAsYouUse"))
        .await;
    s.create_registration(registration(
        "unapproved",
        UNAPPROVED_NAME,
        UNAPPROVED_CLOUD,
        "PayAsYouUse",
    ))
    .await;
    s.create_registration(registration(
        "capacity-in-azure",
        CAPACITY_NAME,
        CAPACITY_CLOUD,
        "PayAsYouUse",
    ))
    .await;
    s.create_registration(registration(
        "missing",
        "azurestack-missing",
        "5f1c2d3e-4b5a-4c6d-8e7f-000000000009",
        "PayAsYouUse",
    ))
    .await;
    s.create_registration(registration(
        "capacity",
        "azurestack-local-capacity",
        "5f1c2d3e-4b5a-4c6d-8e7f-00000000000a",
        "Capacity",
    ))
    .await;
    s.create_registration(registration(
        "idle",
        "azurestack-idle",
        "5f1c2d3e-4b5a-4c6d-8e7f-00000000000b",
        "PayAsYouUse",
    ))
    .await;
    let rows: Vec<(&str, &str, &str, &str)> = vec![
        ("attached", "reg", GOOD[0], "Attached"),
        (
            "other-partner",
            "reg",
            OTHER_PARTNER,
            "BadCustomerSubscriptionId",
        ),
        ("not-csp", "reg", NOT_CSP, "InvalidCSPSubscription"),
        ("unknown", "reg", UNKNOWN, "InvalidCustomerSubscriptionId"),
        (
            "unapproved",
            "unapproved",
            GOOD[1],
            "UnauthorizedCspRegistration",
        ),
        (
            "capacity-in-azure",
            "capacity-in-azure",
            GOOD[1],
            "CustomerSubscriptionsNotAllowed",
        ),
        (
            "missing-in-azure",
            "missing",
            GOOD[1],
            "RegistrationNotFound",
        ),
        // Local rules: nothing is sent.
        (
            "local-capacity",
            "capacity",
            GOOD[2],
            "CustomerSubscriptionsNotAllowed",
        ),
        (
            "no-registration",
            "nowhere",
            GOOD[2],
            "RegistrationNotFound",
        ),
    ];
    let objects: Vec<_> = rows
        .iter()
        .map(|(n, r, sub, _)| customer(n, r, sub))
        .collect();
    s.create_customers(&objects).await;
    for (name, _, _, reason) in &rows {
        let cs = s.wait_customer(name, reason).await;
        let status = cs.status.as_ref().expect("status");
        let ready = condition(&status.conditions, "Ready").expect("ready");
        let local = name.starts_with("local") || *name == "no-registration";
        assert_eq!(
            status.azure.is_none(),
            local,
            "{name}: status.azure {:?}",
            status.azure
        );
        if !local {
            let request_id = status
                .azure
                .as_ref()
                .and_then(|a| a.request_id.clone())
                .expect("request id");
            assert!(
                ready.message.contains(&request_id),
                "{name}: {}",
                ready.message
            );
        }
        let expected = if *reason == "Attached" {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        };
        assert_eq!(ready.status, expected, "{name}");
    }
    // A duplicate of an older sibling is refused before any PUT: it would overwrite the first.
    s.create_customers(&[customer(
        "younger-duplicate",
        "reg",
        &GOOD[0].to_ascii_uppercase(),
    )])
    .await;
    s.wait_customer("younger-duplicate", "DuplicateCustomerSubscription")
        .await;
    assert_eq!(s.puts_for(GOOD[2]), 0, "local rejections send nothing");
    assert_eq!(
        s.puts_for(GOOD[0]),
        1,
        "one PUT for the attached one, none for its duplicate"
    );

    let attached =
        s.ns.api::<CustomerSubscription>()
            .get("attached")
            .await
            .expect("get");
    let status = attached.status.as_ref().expect("status");
    assert_eq!(
        status.tenant_id.as_deref(),
        Some(GOOD_TENANT),
        "the tenant Azure answered"
    );
    assert!(
        attached
            .finalizers()
            .iter()
            .any(|f| f == "csp.azurestack.io/azure-detach")
    );
    assert_eq!(
        s.world.tenants(REG_NAME),
        [GOOD[0].to_string()].into_iter().collect()
    );

    // The Registrations: ARM's registration, and the approval learnt from the PUTs.
    let reg = s
        .wait_registration("reg", "Registered and Approved", |r| {
            registration_reason(r).as_deref() == Some("Registered")
                && approval_reason(r).as_deref() == Some("Approved")
        })
        .await;
    let azure = reg
        .status
        .as_ref()
        .and_then(|st| st.azure.clone())
        .expect("status.azure");
    assert_eq!(azure.cloud_id.as_deref(), Some(CLOUD));
    assert_eq!(azure.billing_model.as_deref(), Some("PayAsYouUse"));
    assert!(
        azure.request_id.is_some() && azure.etag.is_some(),
        "{azure:?}"
    );
    assert_eq!(
        reg.status.as_ref().and_then(|st| st.multitenancy_approved),
        Some(true)
    );
    s.wait_registration("unapproved", "not approved", |r| {
        approval_reason(r).as_deref() == Some("UnauthorizedCspRegistration")
    })
    .await;
    let mismatch = s
        .wait_registration("capacity-in-azure", "RegistrationMismatch", |r| {
            registration_reason(r).as_deref() == Some("RegistrationMismatch")
        })
        .await;
    let message = &condition(&mismatch.status.as_ref().unwrap().conditions, "Ready")
        .unwrap()
        .message;
    assert!(
        message.contains("Capacity") && message.contains("PayAsYouUse"),
        "{message}"
    );
    wait_registration_reason(&s.ns, "missing", "RegistrationNotFound").await;
    let idle = s
        .wait_registration("idle", "Registered, approval not yet known", |r| {
            registration_reason(r).as_deref() == Some("Registered")
        })
        .await;
    assert_eq!(approval_reason(&idle).as_deref(), Some("NotYetKnown"));
    assert_eq!(
        condition(
            &idle.status.as_ref().unwrap().conditions,
            "MultitenancyApproved"
        )
        .unwrap()
        .status,
        ConditionStatus::Unknown
    );
    let in_sync = s
        .wait_registration("reg", "InSync", |r| {
            r.status
                .as_ref()
                .and_then(|st| condition(&st.conditions, "InSync"))
                .is_some_and(|c| c.reason == "InSync")
        })
        .await;
    assert_eq!(
        in_sync
            .status
            .and_then(|st| st.unmanaged_customer_subscriptions),
        Some(0)
    );
}

#[tokio::test]
async fn a_duplicate_of_a_sibling_that_azure_refuses_is_decided_again() {
    let s = Scenario::start("azure-dup", &[]).await;
    s.create_registration(registration("reg", REG_NAME, CLOUD, "PayAsYouUse"))
        .await;
    let with_tenant = |name: &str, subscription: &str| -> CustomerSubscription {
        serde_json::from_value(json!({
            "apiVersion": "csp.azurestack.io/v1alpha1",
            "kind": "CustomerSubscription",
            "metadata": {"name": name},
            "spec": {"registrationRef": {"name": "reg"}, "subscriptionId": subscription, "tenantId": GOOD_TENANT}
        }))
        .expect("customer")
    };
    // The older one claims the tenant with another partner's subscription: Azure refuses it.
    s.create_customers(&[with_tenant("older", OTHER_PARTNER)])
        .await;
    // Created before Azure has answered the older one's PUT (the Registration waits for it
    // at first), the younger one is a duplicate of it for a moment at most.
    s.create_customers(&[with_tenant("younger", GOOD[0])]).await;
    s.wait_customer("older", "InvalidCustomerSubscriptionId")
        .await;
    s.wait_customer("younger", "Attached").await;
}

#[tokio::test]
async fn arm_errors_outside_the_seeds_table_are_classified() {
    let world = AzureWorld::start(&catalog(3), 200, 10.0).await;
    let s = Scenario::with_world("azure-errors", world, &[]).await;
    s.create_registration(registration("reg", REG_NAME, CLOUD, "PayAsYouUse"))
        .await;
    s.create_customers(&[customer("first", "reg", GOOD[0])])
        .await;
    // The token is cached from here on: the faults below reach ARM's answers only.
    s.wait_customer("first", "Attached").await;
    let arm_error = |status: u16, code: &str| {
        Mode::Answer(
            status,
            json!({"error": {"code": code, "message": format!("canned {code}")}}).to_string(),
        )
    };
    let rows = [
        (
            "forbidden",
            GOOD[1],
            arm_error(403, "AuthorizationFailed"),
            "AzureAuthorizationFailed",
            ConditionStatus::False,
        ),
        (
            "conflict",
            GOOD[2],
            arm_error(409, "Conflict"),
            "AzureRequestFailed",
            ConditionStatus::False,
        ),
        (
            "busy",
            &extra_subscription(0),
            arm_error(409, "AnotherOperationInProgress"),
            "AzureRequestFailed",
            ConditionStatus::Unknown,
        ),
        (
            "bad-gateway",
            &extra_subscription(1),
            Mode::Status(502),
            "MetadataResolverBadGatewayError",
            ConditionStatus::Unknown,
        ),
        (
            "malformed",
            &extra_subscription(2),
            Mode::Malformed,
            "MetadataResolverBadGatewayError",
            ConditionStatus::Unknown,
        ),
    ];
    for (name, subscription, mode, reason, status) in &rows {
        s.world
            .upstream
            .set_mode_for("/customerSubscriptions/", mode.clone());
        s.create_customers(&[customer(name, "reg", subscription)])
            .await;
        let cs = s.wait_customer(name, reason).await;
        assert_eq!(ready_status(&cs), Some(*status), "{name}");
        if let Mode::Answer(_, body) = mode {
            let message = &condition(&cs.status.as_ref().unwrap().conditions, "Ready")
                .unwrap()
                .message;
            let code = serde_json::from_str::<serde_json::Value>(body).unwrap()["error"]["code"]
                .as_str()
                .unwrap()
                .to_string();
            assert!(message.contains(&code), "{name}: {message}");
        }
        // ARM answers again: what was undecided (and the refused identity) is retried and
        // attaches; what ARM refused for good stays (checked at the end).
        s.world.upstream.set_mode(Mode::Healthy);
        if *name != "conflict" {
            s.wait_customer(name, "Attached").await;
        }
    }
    let conflict =
        s.ns.api::<CustomerSubscription>()
            .get("conflict")
            .await
            .expect("get");
    assert_eq!(
        customer_reason(&conflict).as_deref(),
        Some("AzureRequestFailed")
    );
}

#[tokio::test]
async fn a_wrong_client_secret_is_authorization_failed_until_the_file_is_fixed() {
    let world = AzureWorld::start(&catalog(0), 200, 10.0).await;
    std::fs::write(&world.secret_file, "not-the-secret").expect("secret");
    let s = Scenario::with_world("azure-secret", world, &[]).await;
    s.create_registration(registration("reg", REG_NAME, CLOUD, "PayAsYouUse"))
        .await;
    s.create_customers(&[customer("fabrikam", "reg", GOOD[0])])
        .await;
    let cs = s
        .wait_customer("fabrikam", "AzureAuthorizationFailed")
        .await;
    let message = condition(&cs.status.as_ref().unwrap().conditions, "Ready")
        .unwrap()
        .message
        .clone();
    assert!(message.contains("credential"), "{message}");
    s.wait_registration("reg", "AzureAuthorizationFailed", |r| {
        registration_reason(r).as_deref() == Some("AzureAuthorizationFailed")
    })
    .await;
    // Kubernetes replaces a mounted Secret's file: the operator reads it at the next token.
    std::fs::write(&s.world.secret_file, SECRET).expect("secret");
    s.wait_customer("fabrikam", "Attached").await;
    s.wait_registration("reg", "Registered", |r| {
        registration_reason(r).as_deref() == Some("Registered")
    })
    .await;
    let logs = s.operator.logs();
    for secret in [SECRET, "not-the-secret"] {
        assert!(!logs.contains(secret), "the client secret is in the log");
    }
    assert!(!logs.contains("eyJ"), "a token is in the log");
}

#[tokio::test]
async fn deleting_removes_the_tenant_in_azure_unless_orphaned_and_waits_while_azure_fails() {
    let s = Scenario::start("azure-delete", &[]).await;
    s.create_registration(registration("reg", REG_NAME, CLOUD, "PayAsYouUse"))
        .await;
    s.create_customers(&[
        customer("removed", "reg", GOOD[0]),
        customer("orphaned", "reg", GOOD[1]),
        customer("retried", "reg", GOOD[2]),
    ])
    .await;
    for name in ["removed", "orphaned", "retried"] {
        s.wait_customer(name, "Attached").await;
    }
    let api = s.ns.api::<CustomerSubscription>();
    let before = api.get("removed").await.expect("get");
    assert!(
        before
            .finalizers()
            .iter()
            .any(|f| f == "csp.azurestack.io/azure-detach"),
        "no detach finalizer on an attached object: {:?}",
        before.metadata
    );
    api.delete("removed", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&api, "removed").await;
    assert!(
        !s.world.tenants(REG_NAME).contains(GOOD[0]),
        "removed in Azure"
    );

    let (code, out) = s.verify_in_azure(GOOD[1]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("Attached:") && out.contains("Azure: registration"),
        "{out}"
    );

    api.patch(
        "orphaned",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"csp.azurestack.io/deletion-policy": "orphan"}}}),
        ),
    )
    .await
    .expect("annotate");
    api.delete("orphaned", &DeleteParams::default())
        .await
        .expect("delete");
    wait_gone(&api, "orphaned").await;
    assert!(
        s.world.tenants(REG_NAME).contains(GOOD[1]),
        "an orphan's tenant stays in Azure"
    );
    // The cluster and Azure now disagree: verify --in-azure says so and exits 1.
    let (code, out) = s.verify_in_azure(GOOD[1]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("CustomerSubscriptionNotFound") && out.contains("unmanaged"),
        "{out}"
    );

    // While Azure refuses the DELETE the object waits, Detaching; then it goes.
    s.world
        .upstream
        .set_mode_for("/customerSubscriptions/", Mode::Status(503));
    api.delete("retried", &DeleteParams::default())
        .await
        .expect("delete");
    let detaching = s.wait_customer("retried", "Detaching").await;
    assert_eq!(ready_status(&detaching), Some(ConditionStatus::Unknown));
    assert!(
        detaching
            .finalizers()
            .iter()
            .any(|f| f == "csp.azurestack.io/azure-detach")
    );
    s.world.upstream.set_mode(Mode::Healthy);
    wait_gone(&api, "retried").await;
    assert!(!s.world.tenants(REG_NAME).contains(GOOD[2]));
    let events: Api<Event> = s.ns.api();
    let detached = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Detached"))
        .count();
    assert_eq!(detached, 2, "one Detached Event per removed tenant");
}

#[tokio::test]
async fn a_delete_that_azure_does_not_answer_is_detaching_until_it_does() {
    let world = AzureWorld::start(&catalog(4), 200, 10.0).await;
    let s = Scenario::with_world("azure-detach-faults", world, &[]).await;
    s.create_registration(registration("reg", REG_NAME, CLOUD, "PayAsYouUse"))
        .await;
    let api = s.ns.api::<CustomerSubscription>();
    let faults: [(&str, Option<Mode>); 4] = [
        ("timeout", Some(Mode::Hang)),
        ("malformed", Some(Mode::Malformed)),
        ("dropped", Some(Mode::Drop)),
        ("refused", None),
    ];
    for (i, (name, mode)) in faults.iter().enumerate() {
        let subscription = extra_subscription(i);
        s.create_customers(&[customer(name, "reg", &subscription)])
            .await;
        s.wait_customer(name, "Attached").await;
        match mode {
            Some(mode) => s
                .world
                .upstream
                .set_mode_for("/customerSubscriptions/", mode.clone()),
            None => s.world.upstream.stop().await,
        }
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
        let detaching = s.wait_customer(name, "Detaching").await;
        assert_eq!(
            ready_status(&detaching),
            Some(ConditionStatus::Unknown),
            "{name}"
        );
        assert!(
            s.world.tenants(REG_NAME).contains(&subscription),
            "{name}: still in Azure"
        );
        match mode {
            Some(_) => s.world.upstream.set_mode(Mode::Healthy),
            None => s.world.upstream.accept_connections().await,
        }
        wait_gone(&api, name).await;
        assert!(
            !s.world.tenants(REG_NAME).contains(&subscription),
            "{name}: removed in Azure"
        );
    }
}

#[tokio::test]
async fn drift_is_repaired_reported_and_pruned_only_when_asked() {
    let s = Scenario::start("azure-drift", &["--azure-resync", "2s"]).await;
    s.create_registration(registration("reg", REG_NAME, CLOUD, "PayAsYouUse"))
        .await;
    s.create_customers(&[customer("kept", "reg", GOOD[0])])
        .await;
    s.wait_customer("kept", "Attached").await;

    // Removed behind the operator's back: added again, with an Event.
    s.world.remove_tenant(REG_NAME, GOOD[0]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s.world.tenants(REG_NAME).contains(GOOD[0]) {
        assert!(Instant::now() < deadline, "the tenant was not added again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let events: Api<Event> = s.ns.api();
    let reattached = wait_until(|| async {
        events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Reattached"))
    })
    .await;
    assert!(reattached, "no Reattached Event");

    // Added behind its back: reported, not removed.
    s.world.add_tenant(REG_NAME, GOOD[1]);
    let reg = s
        .wait_registration("reg", "UnmanagedCustomerSubscriptions", |r| {
            r.status
                .as_ref()
                .and_then(|st| condition(&st.conditions, "InSync"))
                .is_some_and(|c| c.reason == "UnmanagedCustomerSubscriptions")
        })
        .await;
    let status = reg.status.as_ref().unwrap();
    assert_eq!(status.unmanaged_customer_subscriptions, Some(1));
    let in_sync = condition(&status.conditions, "InSync").unwrap();
    assert_eq!(in_sync.status, ConditionStatus::False);
    assert!(in_sync.message.contains(GOOD[1]), "{}", in_sync.message);
    assert!(
        s.world.tenants(REG_NAME).contains(GOOD[1]),
        "not pruned without pruneUnmanaged"
    );

    // With pruneUnmanaged it goes.
    s.ns.api::<Registration>()
        .patch(
            "reg",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pruneUnmanaged": true}})),
        )
        .await
        .expect("patch");
    s.wait_registration("reg", "InSync after pruning", |r| {
        r.status
            .as_ref()
            .and_then(|st| condition(&st.conditions, "InSync"))
            .is_some_and(|c| c.reason == "InSync")
    })
    .await;
    assert_eq!(
        s.world.tenants(REG_NAME),
        [GOOD[0].to_string()].into_iter().collect()
    );
}

fn log_time(line: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let stamp = line.split_whitespace().next()?;
    chrono::DateTime::parse_from_rfc3339(stamp)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[start..];
    let rest = rest.strip_prefix('"').unwrap_or(rest);
    Some(rest.split(['"', ' ']).next().unwrap_or(""))
}

/// From the operator's log: when each PUT was sent (logged at its answer, minus its
/// duration), and when each 429 arrived with the Retry-After it carried.
/// An instant of the operator's log.
type LogTime = chrono::DateTime<chrono::Utc>;

fn client_side_writes(log: &str) -> (Vec<LogTime>, Vec<(LogTime, chrono::TimeDelta)>) {
    let mut sent = Vec::new();
    let mut holds = Vec::new();
    for line in log.lines() {
        let Some(at) = log_time(line) else { continue };
        if line.contains("ARM request")
            && field(line, "operation") == Some("put_customer_subscription")
        {
            let elapsed: i64 = field(line, "elapsed_ms")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            sent.push(at - chrono::TimeDelta::milliseconds(elapsed));
        }
        if line.contains("ARM throttled the operator's writes") {
            let wait: f64 = field(line, "retry_after_s")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            holds.push((at, chrono::TimeDelta::milliseconds((wait * 1000.0) as i64)));
        }
    }
    (sent, holds)
}

async fn wait_until<F, Fut>(check: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[tokio::test]
async fn settled_objects_cause_no_writes_to_the_api_server_or_to_arm() {
    let s = Scenario::start("azure-idle", &["--azure-resync", "3s"]).await;
    s.create_registration(registration("reg", REG_NAME, CLOUD, "PayAsYouUse"))
        .await;
    let customers = vec![
        customer("c0", "reg", GOOD[0]),
        customer("c1", "reg", GOOD[1]),
        customer("c2", "reg", GOOD[2]),
        customer("refused", "reg", NOT_CSP),
    ];
    s.create_customers(&customers).await;
    for name in ["c0", "c1", "c2"] {
        s.wait_customer(name, "Attached").await;
    }
    s.wait_customer("refused", "InvalidCSPSubscription").await;
    s.wait_registration("reg", "counted and in sync", |r| {
        r.status.as_ref().is_some_and(|st| {
            st.customer_subscription_count == Some(3)
                && condition(&st.conditions, "InSync").is_some_and(|c| c.reason == "InSync")
        })
    })
    .await;
    // Let the count write and the first resync pass.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let writes = |s: &Scenario| {
        s.metric("azs_csp_status_writes_total{controller=\"customersubscription\"}")
            + s.metric("azs_csp_status_writes_total{controller=\"registration\"}")
            + s.metric("azs_csp_finalizer_writes_total")
    };
    let (api_before, arm_before, lists_before) = (
        writes(&s),
        s.world.arm_writes(),
        s.metric(
            "azs_csp_arm_requests_total{operation=\"list_customer_subscriptions\",code=\"200\"}",
        ),
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(writes(&s), api_before, "API server writes while settled");
    assert_eq!(s.world.arm_writes(), arm_before, "ARM writes while settled");
    let lists = s.metric(
        "azs_csp_arm_requests_total{operation=\"list_customer_subscriptions\",code=\"200\"}",
    );
    assert!(
        lists > lists_before,
        "the resync LIST goes on ({lists_before} → {lists})"
    );
    let logs = s.operator.logs();
    assert!(!logs.contains(SECRET), "the client secret is in the log");
    assert!(!logs.contains("eyJ"), "a token is in the log");
}

#[tokio::test]
async fn a_burst_converges_within_arms_write_budget_and_never_before_retry_after() {
    const N: usize = 300;
    // ARM's bucket is small, and the operator's own a little faster than it: 429s happen, and
    // each one holds every write back for its Retry-After.
    let world = AzureWorld::start(&catalog(N), 20, 10.0).await;
    let s = Scenario::with_world(
        "azure-burst",
        world,
        &["--arm-write-burst", "20", "--arm-writes-per-second", "12"],
    )
    .await;
    s.create_registration(registration("reg", REG_NAME, CLOUD, "PayAsYouUse"))
        .await;
    let customers: Vec<_> = (0..N)
        .map(|i| customer(&format!("c{i}"), "reg", &extra_subscription(i)))
        .collect();
    s.create_customers(&customers).await;
    let api = s.ns.api::<CustomerSubscription>();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let attached = api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .filter(|c| customer_reason(c).as_deref() == Some("Attached"))
            .count();
        if attached == N {
            break;
        }
        assert!(Instant::now() < deadline, "{attached} of {N} attached");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let writes: Vec<_> = s
        .world
        .upstream
        .exchanges()
        .into_iter()
        .filter(|e| e.method == "PUT")
        .collect();
    let throttled = writes.iter().filter(|e| e.status == Some(429)).count();
    // When each PUT left the operator and when each 429 reached it, from the operator's own
    // log: the emulator sees a request only after its TLS handshake, which on a loaded machine
    // can be half a second after the operator sent it.
    let (sent, holds) = client_side_writes(&s.operator.logs());
    let mut early = Vec::new();
    for (received, wait) in &holds {
        early.extend(
            sent.iter()
                .filter(|at| *at > received && **at < *received + *wait)
                .map(|at| *at - *received),
        );
    }
    println!(
        "burst of {N}: {} PUTs ({:.3} per object), {throttled} answered 429 ({:.1} %), {} sent before a Retry-After had passed",
        writes.len(),
        writes.len() as f64 / N as f64,
        100.0 * throttled as f64 / writes.len() as f64,
        early.len()
    );
    assert!(
        !holds.is_empty() || throttled == 0,
        "429s the operator did not log"
    );
    assert!(
        early.is_empty(),
        "writes sent before Retry-After (after the 429 by): {early:?}"
    );
    assert!(throttled * 20 <= writes.len(), "429s above 5 % of writes");
    // The operator counts the 429s it received (one the emulator sent after the operator's
    // 2 s timeout never arrives).
    assert_eq!(s.metric("azs_csp_arm_throttled_total"), holds.len() as f64);
}

#[tokio::test]
async fn an_entra_outage_before_the_first_token_heals_without_a_touch() {
    let world = AzureWorld::start(&catalog(0), 200, 10.0).await;
    world.upstream.set_mode_for("/oauth2/", Mode::Status(503));
    let s = Scenario::with_world("azure-entra", world, &[]).await;
    s.create_registration(registration("reg", REG_NAME, CLOUD, "PayAsYouUse"))
        .await;
    s.create_customers(&[customer("fabrikam", "reg", GOOD[0])])
        .await;
    let cs = s
        .wait_customer("fabrikam", "AzureAuthorizationFailed")
        .await;
    let message = &condition(&cs.status.as_ref().unwrap().conditions, "Ready")
        .unwrap()
        .message;
    assert!(message.contains("token"), "{message}");
    s.world.upstream.set_mode(Mode::Healthy);
    s.wait_customer("fabrikam", "Attached").await;
    s.wait_registration("reg", "Registered", |r| {
        registration_reason(r).as_deref() == Some("Registered")
    })
    .await;
}

#[tokio::test]
async fn an_outage_of_arm_is_bad_gateway_at_a_trickle_and_heals_fully() {
    let s = Scenario::start("azure-outage", &[]).await;
    s.create_registration(registration("reg", REG_NAME, CLOUD, "PayAsYouUse"))
        .await;
    s.create_customers(&[customer("before", "reg", GOOD[0])])
        .await;
    s.wait_customer("before", "Attached").await;
    let outages = [
        ("refused", None),
        ("502", Some(Mode::Status(502))),
        ("hang", Some(Mode::Hang)),
        ("flapping", Some(Mode::Alternate)),
    ];
    let subscriptions = [GOOD[1], GOOD[2], GOOD[1], GOOD[2]];
    let mut rates = BTreeMap::new();
    for (i, (name, mode)) in outages.iter().enumerate() {
        let object = format!("during-{name}");
        match mode {
            None => s.world.upstream.stop().await,
            Some(mode) => s.world.upstream.set_mode(mode.clone()),
        }
        let seen_before = s.world.upstream.requests();
        s.create_customers(&[customer(&object, "reg", subscriptions[i])])
            .await;
        if *name != "flapping" {
            let cs = s
                .wait_customer(&object, "MetadataResolverBadGatewayError")
                .await;
            assert_eq!(ready_status(&cs), Some(ConditionStatus::Unknown));
            let started = Instant::now();
            tokio::time::sleep(Duration::from_secs(10)).await;
            let seen = s.world.upstream.requests() - seen_before;
            rates.insert(*name, seen as f64 / started.elapsed().as_secs_f64());
        }
        match mode {
            None => s.world.upstream.accept_connections().await,
            Some(_) => s.world.upstream.set_mode(Mode::Healthy),
        }
        s.wait_customer(&object, "Attached").await;
        // The next scenario reuses the subscription: take this one away again.
        let api = s.ns.api::<CustomerSubscription>();
        api.delete(&object, &DeleteParams::default())
            .await
            .expect("delete");
        wait_gone(&api, &object).await;
    }
    println!("ARM requests per second while down: {rates:?}");
    for (name, rate) in &rates {
        assert!(
            *rate <= 2.0,
            "{name}: {rate:.2} requests/s while ARM is down"
        );
    }
    let leftover: Vec<String> =
        s.ns.api::<CustomerSubscription>()
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_some())
            .map(|c| c.name_any())
            .collect();
    assert!(
        leftover.is_empty(),
        "objects left on their finalizer: {leftover:?}"
    );
}
