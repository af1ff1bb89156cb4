//! Unit tests of the rule engine (DESIGN.md §2): the CustomerSubscription rule table and its
//! precedence, the duplicate rule, the Registration decision, reasons and messages, and
//! properties over arbitrary inputs.
//!
//! Every scenario starts from a fixture in which all rules pass ([`ok`], [`reg_ok`]) and
//! changes one or a few facts, so that each table row says only what it is about.

use std::{collections::BTreeSet, sync::Arc};

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::ResourceExt;
use proptest::prelude::*;

use super::*;
use crate::{
    api::{
        BillingModel, ConditionStatus, CustomerSubscription, CustomerSubscriptionSpec,
        Registration, RegistrationRef, RegistrationSpec,
    },
    domain::{ResolveError, SubscriptionMetadata, SubscriptionState},
    guid::{Guid, g},
};

use Reason as R;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const NS: &str = "partner-contoso";
const REG: &str = "contoso-stack";
const RG: &str = "azurestack";
const SUB: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";
const SUB2: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
const TENANT: &str = "2b7e0c1d-3a4b-4c5d-8e6f-7a8b9c0d1e2f";
const TENANT2: &str = "9f8e7d6c-5b4a-4321-8fed-cba987654321";
const REG_SUB: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";
const REG_TENANT: &str = "0c0c0c0c-1d1d-4e4e-8f8f-2a2a2a2a2a2a";
const CLOUD: &str = "5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";
const PARTNER: &str = "4412345";
const OTHER_PARTNER: &str = "5590000";
const RESELLER: &str = "5523456";

/// The ARM id of the fixture registration.
fn reg_arm_id() -> String {
    format!(
        "/subscriptions/{REG_SUB}/resourceGroups/{RG}/providers/Microsoft.AzureStack/registrations/{REG}"
    )
}

type Lookup = Result<Option<Arc<SubscriptionMetadata>>, ResolveError>;

/// A point in time, `seconds` after an arbitrary epoch.
fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + seconds).unwrap())
}

fn registration(namespace: &str, name: &str, created: i64) -> Registration {
    let mut r = Registration::new(
        name,
        RegistrationSpec {
            subscription_id: REG_SUB.into(),
            resource_group: RG.into(),
            registration_name: None,
            cloud_id: CLOUD.into(),
            billing_model: BillingModel::PayAsYouUse,
            agreement_number: None,
            ms_asset_tag: None,
            prune_unmanaged: None,
            usage_source: None,
        },
    );
    r.metadata.namespace = Some(namespace.into());
    r.metadata.creation_timestamp = Some(at(created));
    r
}

fn customer(name: &str, subscription_id: &str, tenant_id: Option<&str>) -> CustomerSubscription {
    let mut c = CustomerSubscription::new(
        name,
        CustomerSubscriptionSpec {
            registration_ref: RegistrationRef { name: REG.into() },
            subscription_id: subscription_id.into(),
            tenant_id: tenant_id.map(Into::into),
        },
    );
    c.metadata.namespace = Some(NS.into());
    c.metadata.creation_timestamp = Some(at(100));
    c
}

/// An Enabled CSP subscription.
fn meta(id: &str, tenant: Option<&str>, partner: Option<&str>) -> SubscriptionMetadata {
    SubscriptionMetadata {
        id: g(id),
        tenant_id: tenant.map(g),
        state: SubscriptionState::Enabled,
        offer: "CSP".into(),
        billing_partner_id: partner.map(Into::into),
        reseller_partner_id: None,
    }
}

fn found(m: SubscriptionMetadata) -> Lookup {
    Ok(Some(Arc::new(m)))
}

/// One error of each [`ResolveError`] variant.
fn all_errors() -> Vec<ResolveError> {
    vec![
        ResolveError::UnexpectedStatus {
            url: "https://md.example/subscriptions/x".into(),
            status: 503,
        },
        ResolveError::Timeout {
            url: "https://md.example/subscriptions/y".into(),
            timeout_ms: 1500,
        },
        ResolveError::Unreachable {
            url: "https://md.example".into(),
            reason: "connection refused".into(),
        },
        ResolveError::MalformedBody {
            url: "https://md.example/registrations/z".into(),
            reason: "expected value at line 1".into(),
        },
        ResolveError::CatalogUnavailable {
            reason: "catalog.yaml: missing field `state`".into(),
        },
        ResolveError::UpstreamDown {
            url: "https://md.example".into(),
            cause: "the metadata server answered HTTP 502 for https://md.example/subscriptions/x"
                .into(),
        },
    ]
}

fn bad_gateway() -> ResolveError {
    all_errors().remove(0)
}

/// What a failed lookup leaves: pending (`Reconciling`) before any catalog loaded, else the
/// upstream's failure.
fn failure_reason(error: &ResolveError) -> Reason {
    match error {
        ResolveError::CatalogUnavailable { .. } => R::Reconciling,
        _ => R::MetadataResolverBadGatewayError,
    }
}

/// The facts of one CustomerSubscription evaluation, owned.
#[derive(Clone, Debug)]
struct Scenario {
    customer: CustomerSubscription,
    registration: Option<Registration>,
    approval: Result<bool, ResolveError>,
    registration_subscription: Lookup,
    customer_subscription: Lookup,
}

/// Everything passes: an approved PayAsYouUse registration whose subscription is collected by
/// PARTNER, and an Enabled CSP customer subscription of TENANT collected by PARTNER.
fn ok() -> Scenario {
    Scenario {
        customer: customer("fabrikam", SUB, Some(TENANT)),
        registration: Some(registration(NS, REG, 0)),
        approval: Ok(true),
        registration_subscription: found(meta(REG_SUB, Some(REG_TENANT), Some(PARTNER))),
        customer_subscription: found(meta(SUB, Some(TENANT), Some(PARTNER))),
    }
}

impl Scenario {
    fn evaluate(&self) -> CustomerDecision {
        evaluate_customer(&CustomerFacts {
            customer: &self.customer,
            registration: self.registration.as_ref(),
            approval: &self.approval,
            registration_subscription: &self.registration_subscription,
            customer_subscription: &self.customer_subscription,
        })
    }

    fn subscription_id(mut self, id: &str) -> Self {
        self.customer.spec.subscription_id = id.into();
        self
    }

    fn tenant(mut self, tenant: Option<&str>) -> Self {
        self.customer.spec.tenant_id = tenant.map(Into::into);
        self
    }

    fn no_registration(mut self) -> Self {
        self.registration = None;
        self
    }

    fn registration_with(mut self, change: impl FnOnce(&mut Registration)) -> Self {
        change(
            self.registration
                .as_mut()
                .expect("scenario has a registration"),
        );
        self
    }

    fn registration_deleting(self) -> Self {
        self.registration_with(|r| r.metadata.deletion_timestamp = Some(at(50)))
    }

    fn billing(self, model: BillingModel) -> Self {
        self.registration_with(|r| r.spec.billing_model = model)
    }

    fn approval(mut self, approval: Result<bool, ResolveError>) -> Self {
        self.approval = approval;
        self
    }

    fn registration_lookup(mut self, lookup: Lookup) -> Self {
        self.registration_subscription = lookup;
        self
    }

    fn customer_lookup(mut self, lookup: Lookup) -> Self {
        self.customer_subscription = lookup;
        self
    }

    fn customer_meta(mut self, change: impl FnOnce(&mut SubscriptionMetadata)) -> Self {
        match &mut self.customer_subscription {
            Ok(Some(m)) => change(Arc::make_mut(m)),
            _ => panic!("scenario has no customer subscription metadata"),
        }
        self
    }

    fn registration_meta(mut self, change: impl FnOnce(&mut SubscriptionMetadata)) -> Self {
        match &mut self.registration_subscription {
            Ok(Some(m)) => change(Arc::make_mut(m)),
            _ => panic!("scenario has no registration subscription metadata"),
        }
        self
    }
}

/// The reasons `evaluate_customer` may give (rules 0–7 and success; rule 8 is separate).
const CUSTOMER_REASONS: [Reason; 9] = [
    R::Attached,
    R::Reconciling,
    R::InvalidCustomerSubscriptionId,
    R::RegistrationNotFound,
    R::CustomerSubscriptionsNotAllowed,
    R::UnauthorizedCspRegistration,
    R::MetadataResolverBadGatewayError,
    R::InvalidCSPSubscription,
    R::BadCustomerSubscriptionId,
];

fn check_rows(rows: Vec<(String, Scenario, Reason)>) {
    assert!(!rows.is_empty());
    for (name, scenario, want) in rows {
        let d = scenario.evaluate();
        assert_eq!(d.reason, want, "{name}: message was {:?}", d.message);
        assert_eq!(
            d.eligible.is_some(),
            want == R::Attached,
            "{name}: eligible iff Attached"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// CustomerSubscription: the rule table, row by row
// ---------------------------------------------------------------------------------------------

#[test]
fn baseline_is_attached() {
    let d = ok().evaluate();
    assert_eq!(d.reason, R::Attached, "{}", d.message);
    assert_eq!(
        d.eligible,
        Some(Eligible {
            subscription_id: g(SUB),
            tenant_id: Some(g(TENANT)),
        })
    );
    assert_eq!(
        d.arm_resource_id.as_deref(),
        Some(format!("{}/customerSubscriptions/{SUB}", reg_arm_id()).as_str())
    );
    assert_eq!(d.tenant_id, Some(g(TENANT)));
    assert_eq!(d.billing_partner_id.as_deref(), Some(PARTNER));
    assert_eq!(d.reseller_partner_id, None);
}

#[test]
fn rule_0_malformed_guids() {
    let bad = [
        "not-a-guid",
        "",
        "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8",
        "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8aa",
        "e09a4e9329a74ebaa7f23b2c1d0e9f8a",
        "{e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a}",
        " e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a",
        "g09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a",
    ];
    let mut rows = Vec::new();
    for b in bad {
        rows.push((
            format!("subscriptionId {b:?}"),
            ok().subscription_id(b),
            R::InvalidCustomerSubscriptionId,
        ));
        rows.push((
            format!("tenantId {b:?}"),
            ok().tenant(Some(b)),
            R::InvalidCustomerSubscriptionId,
        ));
    }
    rows.push((
        "tenantId a domain name".into(),
        ok().tenant(Some("fabrikam.onmicrosoft.com")),
        R::InvalidCustomerSubscriptionId,
    ));
    check_rows(rows);
}

#[test]
fn rule_0_failure_leaves_no_arm_id() {
    let d = ok().subscription_id("nope").evaluate();
    assert_eq!(d.arm_resource_id, None);
    assert_eq!(d.eligible, None);
}

#[test]
fn rule_1_registration_missing_or_deleting() {
    check_rows(vec![
        (
            "no registration".into(),
            ok().no_registration(),
            R::RegistrationNotFound,
        ),
        (
            "registration being deleted".into(),
            ok().registration_deleting(),
            R::RegistrationNotFound,
        ),
    ]);
}

#[test]
fn rule_2_only_pay_as_you_use() {
    let rows = BillingModel::ALL
        .into_iter()
        .map(|model| {
            let want = if model == BillingModel::PayAsYouUse {
                R::Attached
            } else {
                R::CustomerSubscriptionsNotAllowed
            };
            (format!("billing model {model}"), ok().billing(model), want)
        })
        .collect();
    check_rows(rows);
}

#[test]
fn rule_3_not_approved() {
    check_rows(vec![
        (
            "not approved".into(),
            ok().approval(Ok(false)),
            R::UnauthorizedCspRegistration,
        ),
        ("approved".into(), ok().approval(Ok(true)), R::Attached),
    ]);
}

#[test]
fn rule_4_each_lookup_each_error() {
    let mut rows = Vec::new();
    for error in all_errors() {
        rows.push((
            format!("approval: {error}"),
            ok().approval(Err(error.clone())),
            failure_reason(&error),
        ));
        rows.push((
            format!("registration subscription: {error}"),
            ok().registration_lookup(Err(error.clone())),
            failure_reason(&error),
        ));
        rows.push((
            format!("customer subscription: {error}"),
            ok().customer_lookup(Err(error.clone())),
            failure_reason(&error),
        ));
    }
    check_rows(rows);
}

#[test]
fn rule_4_message_names_the_failed_lookup_and_error() {
    for error in all_errors() {
        for (what, scenario) in [
            ("multitenancy approval", ok().approval(Err(error.clone()))),
            (
                "registration subscription",
                ok().registration_lookup(Err(error.clone())),
            ),
            (
                "customer subscription",
                ok().customer_lookup(Err(error.clone())),
            ),
        ] {
            let d = scenario.evaluate();
            assert!(d.message.contains(what), "{what}: {}", d.message);
            assert!(d.message.contains(&error.to_string()), "{}", d.message);
            assert_eq!(d.reason.status(), ConditionStatus::Unknown);
        }
    }
}

#[test]
fn rule_5_subscription_known_active_and_of_the_tenant() {
    let mut rows = vec![
        (
            "unknown subscription".into(),
            ok().customer_lookup(Ok(None)),
            R::InvalidCustomerSubscriptionId,
        ),
        (
            "tenant mismatch".into(),
            ok().customer_meta(|m| m.tenant_id = Some(g(TENANT2))),
            R::InvalidCustomerSubscriptionId,
        ),
        (
            "spec tenant set, metadata has no tenant".into(),
            ok().customer_meta(|m| m.tenant_id = None),
            R::InvalidCustomerSubscriptionId,
        ),
        (
            "no spec tenant, metadata has a tenant".into(),
            ok().tenant(None),
            R::Attached,
        ),
        (
            "no spec tenant, metadata has no tenant".into(),
            ok().tenant(None).customer_meta(|m| m.tenant_id = None),
            R::Attached,
        ),
    ];
    for (state, want) in [
        (SubscriptionState::Enabled, R::Attached),
        (SubscriptionState::Warned, R::Attached),
        (SubscriptionState::PastDue, R::Attached),
        (
            SubscriptionState::Disabled,
            R::InvalidCustomerSubscriptionId,
        ),
        (SubscriptionState::Deleted, R::InvalidCustomerSubscriptionId),
    ] {
        rows.push((
            format!("state {state}"),
            ok().customer_meta(|m| m.state = state),
            want,
        ));
    }
    check_rows(rows);
}

#[test]
fn rule_6_offer_must_be_csp() {
    let rows = [
        ("CSP", R::Attached),
        ("APSS", R::InvalidCSPSubscription),
        ("PayAsYouGo", R::InvalidCSPSubscription),
        ("EnterpriseAgreement", R::InvalidCSPSubscription),
        ("Sponsorship", R::InvalidCSPSubscription),
        ("", R::InvalidCSPSubscription),
    ]
    .into_iter()
    .map(|(offer, want)| {
        (
            format!("offer {offer:?}"),
            ok().customer_meta(|m| m.offer = offer.into()),
            want,
        )
    })
    .collect();
    check_rows(rows);
}

#[test]
fn rule_7_same_collecting_partner() {
    check_rows(vec![
        (
            "partner mismatch".into(),
            ok().customer_meta(|m| m.billing_partner_id = Some(OTHER_PARTNER.into())),
            R::BadCustomerSubscriptionId,
        ),
        (
            "customer has no partner".into(),
            ok().customer_meta(|m| m.billing_partner_id = None),
            R::BadCustomerSubscriptionId,
        ),
        (
            "registration subscription has no partner".into(),
            ok().registration_meta(|m| m.billing_partner_id = None),
            R::BadCustomerSubscriptionId,
        ),
        (
            "registration subscription with no partner matches nobody, not even a customer with no partner"
                .into(),
            ok().registration_meta(|m| m.billing_partner_id = None)
                .customer_meta(|m| m.billing_partner_id = None),
            R::BadCustomerSubscriptionId,
        ),
        (
            "registration subscription unknown".into(),
            ok().registration_lookup(Ok(None)),
            R::BadCustomerSubscriptionId,
        ),
        (
            "registration subscription's own state is not rule 7's business".into(),
            ok().registration_meta(|m| m.state = SubscriptionState::Disabled),
            R::Attached,
        ),
    ]);
}

// ---------------------------------------------------------------------------------------------
// Precedence: the first failing rule wins
// ---------------------------------------------------------------------------------------------

/// A canonical way to break rule `rule` alone. The breaks compose when applied from the
/// highest rule down (each touches facts the others leave alone).
fn break_rule(rule: usize, s: Scenario) -> Scenario {
    match rule {
        0 => s.subscription_id("not-a-guid"),
        1 => s.no_registration(),
        2 => s.billing(BillingModel::Capacity),
        3 => s.approval(Ok(false)),
        4 => s.registration_lookup(Err(bad_gateway())),
        5 => s.customer_meta(|m| m.state = SubscriptionState::Disabled),
        6 => s.customer_meta(|m| m.offer = "APSS".into()),
        7 => s.customer_meta(|m| m.billing_partner_id = Some(OTHER_PARTNER.into())),
        _ => unreachable!(),
    }
}

const RULE_REASONS: [Reason; 8] = [
    R::InvalidCustomerSubscriptionId,
    R::RegistrationNotFound,
    R::CustomerSubscriptionsNotAllowed,
    R::UnauthorizedCspRegistration,
    R::MetadataResolverBadGatewayError,
    R::InvalidCustomerSubscriptionId,
    R::InvalidCSPSubscription,
    R::BadCustomerSubscriptionId,
];

#[test]
fn each_rule_broken_alone() {
    for (rule, want) in RULE_REASONS.into_iter().enumerate() {
        let d = break_rule(rule, ok()).evaluate();
        assert_eq!(d.reason, want, "rule {rule}: {}", d.message);
    }
}

#[test]
fn every_combination_of_broken_rules_reports_the_first() {
    for mask in 1u32..(1 << 8) {
        let mut s = ok();
        for rule in (0..8).rev() {
            if mask & (1 << rule) != 0 {
                s = break_rule(rule, s);
            }
        }
        let first = mask.trailing_zeros() as usize;
        let d = s.evaluate();
        assert_eq!(
            d.reason, RULE_REASONS[first],
            "broken rules {mask:#010b}: {}",
            d.message
        );
    }
}

#[test]
fn adjacent_rules_failing_together() {
    check_rows(vec![
        (
            "0&1: malformed tenant, registration being deleted".into(),
            ok().registration_deleting().tenant(Some("nope")),
            R::InvalidCustomerSubscriptionId,
        ),
        (
            "1&2: deleting registration with Capacity billing".into(),
            ok().billing(BillingModel::Capacity).registration_deleting(),
            R::RegistrationNotFound,
        ),
        (
            "2&3: Development billing, not approved".into(),
            ok().billing(BillingModel::Development).approval(Ok(false)),
            R::CustomerSubscriptionsNotAllowed,
        ),
        (
            "2&4: Ruggedized billing, approval lookup fails".into(),
            ok().billing(BillingModel::Ruggedized)
                .approval(Err(bad_gateway())),
            R::CustomerSubscriptionsNotAllowed,
        ),
        (
            "3&4: not approved, customer lookup fails".into(),
            ok().approval(Ok(false)).customer_lookup(Err(bad_gateway())),
            R::UnauthorizedCspRegistration,
        ),
        (
            "3&4: an approval that cannot be looked up is rule 4, not rule 3".into(),
            ok().approval(Err(bad_gateway())),
            R::MetadataResolverBadGatewayError,
        ),
        (
            "4&5: approval lookup fails, customer disabled".into(),
            ok().approval(Err(bad_gateway()))
                .customer_meta(|m| m.state = SubscriptionState::Deleted),
            R::MetadataResolverBadGatewayError,
        ),
        (
            "4&5: registration lookup fails, customer unknown".into(),
            ok().registration_lookup(Err(bad_gateway()))
                .customer_lookup(Ok(None)),
            R::MetadataResolverBadGatewayError,
        ),
        (
            "5&6: tenant mismatch, offer APSS".into(),
            ok().customer_meta(|m| {
                m.tenant_id = Some(g(TENANT2));
                m.offer = "APSS".into();
            }),
            R::InvalidCustomerSubscriptionId,
        ),
        (
            "6&7: offer EnterpriseAgreement, registration subscription has no partner".into(),
            ok().customer_meta(|m| m.offer = "EnterpriseAgreement".into())
                .registration_meta(|m| m.billing_partner_id = None),
            R::InvalidCSPSubscription,
        ),
        (
            "6&7: offer PayAsYouGo, partner mismatch".into(),
            ok().customer_meta(|m| {
                m.offer = "PayAsYouGo".into();
                m.billing_partner_id = Some(OTHER_PARTNER.into());
            }),
            R::InvalidCSPSubscription,
        ),
    ]);
}

// ---------------------------------------------------------------------------------------------
// The indirect CSP model
// ---------------------------------------------------------------------------------------------

#[test]
fn indirect_model_compares_the_indirect_provider() {
    let d = ok()
        .customer_meta(|m| m.reseller_partner_id = Some(RESELLER.into()))
        .evaluate();
    assert_eq!(d.reason, R::Attached, "{}", d.message);
    assert_eq!(d.billing_partner_id.as_deref(), Some(PARTNER));
    assert_eq!(d.reseller_partner_id.as_deref(), Some(RESELLER));
}

#[test]
fn indirect_model_reseller_is_not_the_collecting_partner() {
    // The registration is collected by PARTNER; this customer is sold by PARTNER (as reseller)
    // but collected by OTHER_PARTNER: it is someone else's customer.
    let d = ok()
        .customer_meta(|m| {
            m.billing_partner_id = Some(OTHER_PARTNER.into());
            m.reseller_partner_id = Some(PARTNER.into());
        })
        .evaluate();
    assert_eq!(d.reason, R::BadCustomerSubscriptionId, "{}", d.message);
    assert!(d.message.contains(OTHER_PARTNER), "{}", d.message);
    assert_eq!(d.eligible, None);
}

// ---------------------------------------------------------------------------------------------
// GUID letter case and the ARM id
// ---------------------------------------------------------------------------------------------

#[test]
fn guids_in_any_case_come_out_lower_case() {
    let mixed_sub = "E09a4E93-29A7-4ebA-A7F2-3b2C1D0E9F8A";
    for (name, s) in [
        (
            "upper-case subscriptionId",
            ok().subscription_id(&SUB.to_uppercase()),
        ),
        ("mixed-case subscriptionId", ok().subscription_id(mixed_sub)),
        (
            "upper-case tenantId",
            ok().tenant(Some(&TENANT.to_uppercase())),
        ),
        (
            "mixed-case tenantId",
            ok().tenant(Some("2B7e0C1d-3A4b-4C5d-8E6f-7A8b9C0d1E2f")),
        ),
        (
            "upper-case registration subscriptionId",
            ok().registration_with(|r| r.spec.subscription_id = REG_SUB.to_uppercase()),
        ),
        (
            "upper-case tenant in the metadata",
            ok().customer_meta(|m| m.tenant_id = Some(g(&TENANT.to_uppercase()))),
        ),
        (
            "everything upper-case",
            ok().subscription_id(&SUB.to_uppercase())
                .tenant(Some(&TENANT.to_uppercase()))
                .registration_with(|r| r.spec.subscription_id = REG_SUB.to_uppercase())
                .customer_meta(|m| m.tenant_id = Some(g(&TENANT.to_uppercase()))),
        ),
    ] {
        let d = s.evaluate();
        assert_eq!(d.reason, R::Attached, "{name}: {}", d.message);
        assert_eq!(
            d.eligible,
            Some(Eligible {
                subscription_id: g(SUB),
                tenant_id: Some(g(TENANT)),
            }),
            "{name}"
        );
        assert_eq!(d.tenant_id, Some(g(TENANT)), "{name}");
        assert_eq!(
            d.arm_resource_id,
            Some(format!("{}/customerSubscriptions/{SUB}", reg_arm_id())),
            "{name}"
        );
        assert!(d.message.contains(SUB), "{name}: {}", d.message);
    }
}

#[test]
fn resolved_tenant_is_used_when_spec_has_none() {
    let d = ok()
        .tenant(None)
        .customer_meta(|m| m.tenant_id = Some(g(&TENANT2.to_uppercase())))
        .evaluate();
    assert_eq!(d.reason, R::Attached);
    assert_eq!(d.eligible.unwrap().tenant_id, Some(g(TENANT2)));
    assert_eq!(d.tenant_id, Some(g(TENANT2)));
}

#[test]
fn arm_resource_id_shape() {
    // registrationName defaults to metadata.name.
    let r = registration(NS, REG, 0);
    assert_eq!(arm_resource_id(&r), reg_arm_id());

    let mut named = registration(NS, REG, 0);
    named.spec.registration_name = Some(format!("azurestack-{CLOUD}"));
    named.spec.subscription_id = REG_SUB.to_uppercase();
    named.spec.resource_group = "AzureStack-RG".into();
    assert_eq!(
        arm_resource_id(&named),
        format!(
            "/subscriptions/{REG_SUB}/resourceGroups/AzureStack-RG/providers/Microsoft.AzureStack/registrations/azurestack-{CLOUD}"
        )
    );

    let d = ok()
        .registration_with(|r| r.spec.registration_name = Some("azurestack-x".into()))
        .subscription_id(&SUB.to_uppercase())
        .evaluate();
    assert_eq!(
        d.arm_resource_id.as_deref(),
        Some(
            format!(
                "/subscriptions/{REG_SUB}/resourceGroups/{RG}/providers/Microsoft.AzureStack/registrations/azurestack-x/customerSubscriptions/{SUB}"
            )
            .as_str()
        )
    );
}

#[test]
fn arm_id_is_known_from_rule_2_on() {
    // Once the registration is found the ARM id can be reported, even when a later rule fails.
    let d = ok().approval(Ok(false)).evaluate();
    assert_eq!(
        d.arm_resource_id,
        Some(format!("{}/customerSubscriptions/{SUB}", reg_arm_id()))
    );
    assert_eq!(ok().no_registration().evaluate().arm_resource_id, None);
}

#[test]
fn registration_key_is_canonical() {
    let mut r = registration(NS, REG, 0);
    r.spec.subscription_id = REG_SUB.to_uppercase();
    r.spec.resource_group = "AzureStack".into();
    let key = registration_key(&r);
    assert_eq!(key.subscription_id.to_string(), REG_SUB);
    assert_eq!(key.resource_group, "azurestack");
    assert_eq!(key.registration_name, REG);
    r.spec.registration_name = Some("AzureStack-X".into());
    assert_eq!(registration_key(&r).registration_name, "azurestack-x");
}

// ---------------------------------------------------------------------------------------------
// Rule 8: duplicates
// ---------------------------------------------------------------------------------------------

fn rank(name: &str, created: i64) -> Seniority {
    Seniority {
        created: Some(at(created)),
        name: name.into(),
    }
}

fn eligible(subscription_id: &str, tenant_id: Option<&str>) -> Eligible {
    Eligible {
        subscription_id: g(subscription_id),
        tenant_id: tenant_id.map(g),
    }
}

/// Evaluates a CustomerSubscription in the fixture world (its subscription resolves with
/// `resolved_tenant`) and returns its seniority and eligibility.
fn evaluated(
    name: &str,
    created: i64,
    subscription_id: &str,
    spec_tenant: Option<&str>,
    resolved_tenant: Option<&str>,
) -> (Seniority, CustomerDecision) {
    let mut s = ok()
        .subscription_id(subscription_id)
        .tenant(spec_tenant)
        .customer_meta(|m| m.tenant_id = resolved_tenant.map(g));
    s.customer.metadata.name = Some(name.into());
    s.customer.metadata.creation_timestamp = Some(at(created));
    (Seniority::of(&s.customer), s.evaluate())
}

#[test]
fn seniority_of_reads_timestamp_and_name() {
    let c = customer("fabrikam", SUB, None);
    assert_eq!(Seniority::of(&c), rank("fabrikam", 100));
    // Oldest first, then by name.
    assert!(rank("z", 1) < rank("a", 2));
    assert!(rank("a", 2) < rank("b", 2));
}

#[test]
fn same_subscription_in_any_case_is_a_duplicate() {
    let (old_rank, old) = evaluated("old", 1, SUB, None, Some(TENANT));
    let (new_rank, new) = evaluated("new", 2, &SUB.to_uppercase(), None, Some(TENANT2));
    let (old_e, new_e) = (old.eligible.unwrap(), new.eligible.clone().unwrap());
    let dup = find_duplicate((&new_rank, &new_e), [(&old_rank, &old_e)]);
    assert_eq!(
        dup,
        Some(Duplicate {
            older: "old",
            same_subscription: true,
        })
    );
    assert_eq!(
        find_duplicate((&old_rank, &old_e), [(&new_rank, &new_e)]),
        None
    );

    let mut decision = new;
    reject_duplicate(&mut decision, NS, &dup.unwrap());
    assert_eq!(decision.reason, R::DuplicateCustomerSubscription);
    assert_eq!(decision.reason.status(), ConditionStatus::False);
    assert!(
        decision.message.contains(&format!("{NS}/old")),
        "{}",
        decision.message
    );
    assert!(decision.message.contains(SUB), "{}", decision.message);
    assert!(decision.message.ends_with('.'));
}

#[test]
fn same_tenant_spec_versus_resolved_is_a_duplicate() {
    // The older one names TENANT in its spec; the younger one names no tenant but its (other)
    // subscription resolves to TENANT.
    let (old_rank, old) = evaluated("old", 1, SUB, Some(TENANT), Some(TENANT));
    let (new_rank, new) = evaluated("new", 2, SUB2, None, Some(&TENANT.to_uppercase()));
    let (old_e, new_e) = (old.eligible.unwrap(), new.eligible.clone().unwrap());
    let dup = find_duplicate((&new_rank, &new_e), [(&old_rank, &old_e)]).unwrap();
    assert_eq!(
        dup,
        Duplicate {
            older: "old",
            same_subscription: false,
        }
    );

    let mut decision = new;
    reject_duplicate(&mut decision, NS, &dup);
    assert_eq!(decision.reason, R::DuplicateCustomerSubscription);
    assert!(decision.message.contains(TENANT), "{}", decision.message);
    assert!(
        decision.message.contains(&format!("{NS}/old")),
        "{}",
        decision.message
    );
}

#[test]
fn no_tenant_on_either_side_does_not_match() {
    let me = (rank("new", 2), eligible(SUB2, None));
    let older = (rank("old", 1), eligible(SUB, None));
    assert_eq!(find_duplicate((&me.0, &me.1), [(&older.0, &older.1)]), None);
    // Only one side with a tenant: no match either.
    let older_t = (rank("old", 1), eligible(SUB, Some(TENANT)));
    assert_eq!(
        find_duplicate((&me.0, &me.1), [(&older_t.0, &older_t.1)]),
        None
    );
    let me_t = (rank("new", 2), eligible(SUB2, Some(TENANT)));
    assert_eq!(
        find_duplicate((&me_t.0, &me_t.1), [(&older.0, &older.1)]),
        None
    );
    // Different tenants, different subscriptions: no match.
    let older_t2 = (rank("old", 1), eligible(SUB, Some(TENANT2)));
    assert_eq!(
        find_duplicate((&me_t.0, &me_t.1), [(&older_t2.0, &older_t2.1)]),
        None
    );
}

#[test]
fn only_older_siblings_count() {
    let me = (rank("me", 5), eligible(SUB, Some(TENANT)));
    let younger = (rank("younger", 6), eligible(SUB, Some(TENANT)));
    assert_eq!(
        find_duplicate((&me.0, &me.1), [(&younger.0, &younger.1)]),
        None
    );
}

#[test]
fn creation_tie_is_broken_by_name() {
    let a = (rank("a", 5), eligible(SUB, None));
    let b = (rank("b", 5), eligible(SUB, None));
    assert_eq!(
        find_duplicate((&b.0, &b.1), [(&a.0, &a.1)]).map(|d| d.older),
        Some("a")
    );
    assert_eq!(find_duplicate((&a.0, &a.1), [(&b.0, &b.1)]), None);
}

#[test]
fn oldest_of_several_wins() {
    let siblings = [
        (rank("middle", 3), eligible(SUB, None)),
        (rank("oldest", 1), eligible(SUB2, Some(TENANT))),
        (rank("unrelated", 0), eligible(REG_SUB, Some(TENANT2))),
        (rank("second", 2), eligible(SUB, Some(TENANT))),
        (rank("younger", 9), eligible(SUB, Some(TENANT))),
    ];
    let me = (rank("me", 5), eligible(SUB, Some(TENANT)));
    let dup = find_duplicate((&me.0, &me.1), siblings.iter().map(|(r, e)| (r, e)));
    assert_eq!(
        dup,
        Some(Duplicate {
            older: "oldest",
            same_subscription: false,
        })
    );
}

#[test]
fn self_is_ignored() {
    let me = (rank("me", 5), eligible(SUB, Some(TENANT)));
    let copy = me.clone();
    assert_eq!(
        find_duplicate((&me.0, &me.1), [(&me.0, &me.1), (&copy.0, &copy.1)]),
        None
    );
}

#[test]
fn only_eligible_siblings_count_is_the_callers_contract() {
    // find_duplicate takes (Seniority, Eligible) pairs: the caller passes only siblings whose
    // own evaluation passed rules 0–7. A failing sibling has no Eligible to pass, so an older
    // but Disabled CustomerSubscription of the same subscription cannot block a younger one.
    let mut failing = ok().customer_meta(|m| m.state = SubscriptionState::Disabled);
    failing.customer.metadata.name = Some("old-disabled".into());
    failing.customer.metadata.creation_timestamp = Some(at(1));
    let d = failing.evaluate();
    assert_eq!(d.reason, R::InvalidCustomerSubscriptionId);
    assert_eq!(d.eligible, None);

    let (me_rank, me) = evaluated("new", 2, SUB, Some(TENANT), Some(TENANT));
    let me_e = me.eligible.unwrap();
    let old_rank = Seniority::of(&failing.customer);
    let siblings: Vec<(Seniority, Eligible)> = d
        .eligible
        .into_iter()
        .map(|e| (old_rank.clone(), e))
        .collect();
    assert_eq!(
        find_duplicate((&me_rank, &me_e), siblings.iter().map(|(r, e)| (r, e))),
        None
    );
}

#[test]
fn reject_duplicate_ignores_ineligible_decisions() {
    let mut d = ok().approval(Ok(false)).evaluate();
    let before = d.clone();
    reject_duplicate(
        &mut d,
        NS,
        &Duplicate {
            older: "old",
            same_subscription: true,
        },
    );
    assert_eq!(d, before);
}

// ---------------------------------------------------------------------------------------------
// Registration decision
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct RegScenario {
    registration: Registration,
    others: Vec<Arc<Registration>>,
    subscription: Lookup,
    approval: Result<bool, ResolveError>,
    referencing: usize,
    attached: usize,
}

/// An approved registration with an Enabled subscription collected by PARTNER.
fn reg_ok() -> RegScenario {
    RegScenario {
        registration: registration(NS, REG, 10),
        others: Vec::new(),
        subscription: found(meta(REG_SUB, Some(REG_TENANT), Some(PARTNER))),
        approval: Ok(true),
        referencing: 0,
        attached: 0,
    }
}

impl RegScenario {
    fn evaluate(&self) -> RegistrationDecision {
        evaluate_registration(&RegistrationFacts {
            registration: &self.registration,
            same_cloud_id: &self.others,
            subscription: &self.subscription,
            approval: &self.approval,
            referencing_customers: self.referencing,
            attached_customers: self.attached,
        })
    }

    fn subscription(mut self, lookup: Lookup) -> Self {
        self.subscription = lookup;
        self
    }

    fn state(self, state: SubscriptionState) -> Self {
        let mut m = meta(REG_SUB, Some(REG_TENANT), Some(PARTNER));
        m.state = state;
        self.subscription(found(m))
    }

    fn approval(mut self, approval: Result<bool, ResolveError>) -> Self {
        self.approval = approval;
        self
    }

    fn other(mut self, other: Registration) -> Self {
        self.others.push(Arc::new(other));
        self
    }

    fn deleting(mut self, referencing: usize) -> Self {
        self.registration.metadata.deletion_timestamp = Some(at(500));
        self.referencing = referencing;
        self
    }
}

fn deleting(mut r: Registration) -> Registration {
    r.metadata.deletion_timestamp = Some(at(500));
    r
}

#[test]
fn registration_registered() {
    let s = RegScenario {
        attached: 12,
        referencing: 14,
        ..reg_ok()
    };
    let d = s.evaluate();
    assert_eq!(d.reason, R::Registered, "{}", d.message);
    assert_eq!(d.arm_resource_id, reg_arm_id());
    assert_eq!(d.billing_partner_id.as_deref(), Some(PARTNER));
    // The count is of attached customers, not of every referencing one.
    assert_eq!(d.customer_subscription_count, 12);
    assert_eq!(d.approval.reason, R::Approved);
    assert_eq!(d.approval.approved, Some(true));
}

#[test]
fn registration_subscription_state() {
    let rows = [
        (SubscriptionState::Enabled, R::Registered),
        (SubscriptionState::Warned, R::Registered),
        (SubscriptionState::PastDue, R::Registered),
        (
            SubscriptionState::Disabled,
            R::InvalidRegistrationSubscription,
        ),
        (
            SubscriptionState::Deleted,
            R::InvalidRegistrationSubscription,
        ),
    ];
    for (state, want) in rows {
        let d = reg_ok().state(state).evaluate();
        assert_eq!(d.reason, want, "{state}: {}", d.message);
    }
    let d = reg_ok().subscription(Ok(None)).evaluate();
    assert_eq!(d.reason, R::InvalidRegistrationSubscription);
    assert_eq!(d.billing_partner_id, None);
}

#[test]
fn registration_bad_gateway() {
    for error in all_errors() {
        let d = reg_ok().subscription(Err(error.clone())).evaluate();
        assert_eq!(d.reason, failure_reason(&error));
        assert!(d.message.contains(&error.to_string()), "{}", d.message);
        assert_eq!(d.billing_partner_id, None);
    }
}

#[test]
fn registration_billing_partner_absent_when_none() {
    let d = reg_ok()
        .subscription(found(meta(REG_SUB, None, None)))
        .evaluate();
    assert_eq!(d.reason, R::Registered);
    assert_eq!(d.billing_partner_id, None);
}

#[test]
fn duplicate_cloud_id() {
    // Me: NS/REG created at 10.
    let rows: Vec<(&str, RegScenario, Reason)> = vec![
        (
            "older other in another namespace wins",
            reg_ok().other(registration("other-ns", "older", 5)),
            R::DuplicateCloudId,
        ),
        (
            "older other in the same namespace wins",
            reg_ok().other(registration(NS, "older", 5)),
            R::DuplicateCloudId,
        ),
        (
            "younger other does not affect the older",
            reg_ok().other(registration("a-ns", "younger", 11)),
            R::Registered,
        ),
        (
            "tie on creation: smaller namespace wins",
            reg_ok().other(registration("a-ns", "zzz", 10)),
            R::DuplicateCloudId,
        ),
        (
            "tie on creation: larger namespace loses even with a smaller name",
            reg_ok().other(registration("z-ns", "aaa", 10)),
            R::Registered,
        ),
        (
            "tie on creation and namespace: smaller name wins",
            reg_ok().other(registration(NS, "aaa", 10)),
            R::DuplicateCloudId,
        ),
        (
            "tie on creation and namespace: larger name loses",
            reg_ok().other(registration(NS, "zzz", 10)),
            R::Registered,
        ),
        (
            "a deleting older registration does not count",
            reg_ok().other(deleting(registration("other-ns", "older", 5))),
            R::Registered,
        ),
        (
            "a copy of myself among the others is harmless",
            reg_ok().other(registration(NS, REG, 10)),
            R::Registered,
        ),
    ];
    for (name, s, want) in rows {
        let d = s.evaluate();
        assert_eq!(d.reason, want, "{name}: {}", d.message);
        assert_eq!(
            d.reason.status(),
            if want == R::Registered {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            }
        );
    }
}

#[test]
fn duplicate_cloud_id_both_sides() {
    let old = registration("ns-b", "old", 1);
    let young = registration("ns-a", "young", 2);
    let others = [Arc::new(old.clone())];
    assert_eq!(cloud_id_owner(&young, &others), &old);
    let others = [Arc::new(young.clone())];
    assert!(std::ptr::eq(cloud_id_owner(&old, &others), &old));

    // Oldest of several.
    let others = [
        Arc::new(registration("x", "three", 3)),
        Arc::new(registration("y", "one", 1)),
        Arc::new(deleting(registration("z", "zero", 0))),
        Arc::new(registration("w", "two", 2)),
    ];
    let me = registration(NS, REG, 4);
    assert_eq!(cloud_id_owner(&me, &others).name_any(), "one");

    let d = RegScenario {
        registration: young,
        ..reg_ok()
    }
    .other(old)
    .evaluate();
    assert_eq!(d.reason, R::DuplicateCloudId);
    assert!(d.message.contains("ns-b/old"), "{}", d.message);
}

#[test]
fn deletion_blocked() {
    let d = reg_ok().deleting(3).evaluate();
    assert_eq!(d.reason, R::DeletionBlocked);
    assert_eq!(d.reason.status(), ConditionStatus::False);
    assert!(d.message.contains(" 3 "), "{}", d.message);
    assert!(d.message.contains(&format!("{NS}/{REG}")), "{}", d.message);

    // Nothing references it any more: the deletion is not blocked.
    let d = reg_ok().deleting(0).evaluate();
    assert_eq!(d.reason, R::Registered);

    // Referenced but not being deleted: nothing to block.
    let s = RegScenario {
        referencing: 3,
        ..reg_ok()
    };
    assert_eq!(s.evaluate().reason, R::Registered);
}

#[test]
fn registration_precedence() {
    let older = || registration("other-ns", "older", 5);
    let rows: Vec<(&str, RegScenario, Reason)> = vec![
        (
            "DeletionBlocked > DuplicateCloudId > BadGateway",
            reg_ok()
                .deleting(2)
                .other(older())
                .subscription(Err(bad_gateway())),
            R::DeletionBlocked,
        ),
        (
            "DeletionBlocked > InvalidRegistrationSubscription",
            reg_ok().deleting(2).subscription(Ok(None)),
            R::DeletionBlocked,
        ),
        (
            "DuplicateCloudId > BadGateway",
            reg_ok().other(older()).subscription(Err(bad_gateway())),
            R::DuplicateCloudId,
        ),
        (
            "DuplicateCloudId > InvalidRegistrationSubscription",
            reg_ok().other(older()).state(SubscriptionState::Disabled),
            R::DuplicateCloudId,
        ),
        (
            "BadGateway (subscription) with approval failing too",
            reg_ok()
                .subscription(Err(bad_gateway()))
                .approval(Err(bad_gateway())),
            R::MetadataResolverBadGatewayError,
        ),
        (
            "InvalidRegistrationSubscription regardless of approval",
            reg_ok().subscription(Ok(None)).approval(Err(bad_gateway())),
            R::InvalidRegistrationSubscription,
        ),
        (
            "approval lookup failure does not affect Ready",
            reg_ok().approval(Err(bad_gateway())),
            R::Registered,
        ),
    ];
    for (name, s, want) in rows {
        let d = s.evaluate();
        assert_eq!(d.reason, want, "{name}: {}", d.message);
    }
}

#[test]
fn multitenancy_approval() {
    let rows = [
        (Ok(true), R::Approved, Some(true), ConditionStatus::True),
        (
            Ok(false),
            R::UnauthorizedCspRegistration,
            Some(false),
            ConditionStatus::False,
        ),
        (
            Err(bad_gateway()),
            R::MetadataResolverBadGatewayError,
            None,
            ConditionStatus::Unknown,
        ),
    ];
    for (approval, reason, approved, status) in rows {
        // The approval is decided independently of Ready.
        for s in [
            reg_ok(),
            reg_ok().deleting(1),
            reg_ok().subscription(Ok(None)),
        ] {
            let d = s.approval(approval.clone()).evaluate();
            assert_eq!(d.approval.reason, reason);
            assert_eq!(d.approval.approved, approved);
            assert_eq!(d.approval.reason.status(), status);
            assert!(
                d.approval.message.contains(&reg_arm_id()),
                "{}",
                d.approval.message
            );
        }
    }
    for error in all_errors() {
        let d = reg_ok().approval(Err(error.clone())).evaluate();
        assert!(d.approval.message.contains(&error.to_string()));
    }
}

#[test]
fn registration_guids_in_any_case() {
    let mut r = registration(NS, REG, 10);
    r.spec.subscription_id = REG_SUB.to_uppercase();
    r.spec.cloud_id = CLOUD.to_uppercase();
    let d = RegScenario {
        registration: r.clone(),
        ..reg_ok()
    }
    .evaluate();
    assert_eq!(d.reason, R::Registered);
    assert_eq!(d.arm_resource_id, reg_arm_id());

    let d = RegScenario {
        registration: r,
        ..reg_ok()
    }
    .subscription(Ok(None))
    .other(registration("other-ns", "older", 5));
    let d2 = d.clone().evaluate();
    assert!(d2.message.contains(CLOUD), "{}", d2.message);
    let d3 = RegScenario {
        others: Vec::new(),
        ..d
    }
    .evaluate();
    assert_eq!(d3.reason, R::InvalidRegistrationSubscription);
    assert!(d3.message.contains(REG_SUB), "{}", d3.message);
}

#[test]
fn customer_subscription_count_saturates() {
    let s = RegScenario {
        attached: usize::MAX,
        ..reg_ok()
    };
    let count = s.evaluate().customer_subscription_count;
    if usize::BITS >= 64 {
        assert_eq!(count, i64::MAX);
    } else {
        assert_eq!(count, usize::MAX as i64);
    }
}

// ---------------------------------------------------------------------------------------------
// Reasons
// ---------------------------------------------------------------------------------------------

/// The documented status of each reason: successes are True, undecided outcomes Unknown,
/// every rejection False (whatever other reasons are added later).
fn expected_status(reason: Reason) -> ConditionStatus {
    match reason {
        R::Attached | R::Registered | R::Approved | R::InSync | R::Current => ConditionStatus::True,
        R::MetadataResolverBadGatewayError
        | R::Reconciling
        | R::Detaching
        | R::NotYetKnown
        | R::Starting => ConditionStatus::Unknown,
        _ => ConditionStatus::False,
    }
}

#[test]
fn reason_status_mapping() {
    for reason in Reason::ALL {
        assert_eq!(reason.status(), expected_status(reason), "{reason}");
        // NotYetKnown (azure mode's MultitenancyApproved before any PUT) waits for a PUT
        // instead of retrying by itself.
        assert_eq!(
            reason.is_transient(),
            expected_status(reason) == ConditionStatus::Unknown && reason != Reason::NotYetKnown,
            "{reason}"
        );
    }
}

#[test]
fn reason_names_are_the_variant_names() {
    let mut seen = BTreeSet::new();
    for reason in Reason::ALL {
        assert_eq!(reason.as_str(), format!("{reason:?}"));
        assert_eq!(reason.to_string(), reason.as_str());
        assert!(seen.insert(reason), "{reason} listed twice in Reason::ALL");
    }
    // The documented names (DESIGN.md §1–§2), spelled out: renaming a variant breaks this.
    let documented: BTreeSet<&str> = [
        "Attached",
        "InvalidCustomerSubscriptionId",
        "RegistrationNotFound",
        "CustomerSubscriptionsNotAllowed",
        "UnauthorizedCspRegistration",
        "MetadataResolverBadGatewayError",
        "InvalidCSPSubscription",
        "BadCustomerSubscriptionId",
        "DuplicateCustomerSubscription",
        "Reconciling",
        "Registered",
        "InvalidRegistrationSubscription",
        "DuplicateCloudId",
        "DeletionBlocked",
        "Approved",
        // Azure mode (DESIGN.md §8)
        "AzureAuthorizationFailed",
        "AzureRequestFailed",
        "RegistrationMismatch",
        "Detaching",
        "NotYetKnown",
        "InSync",
        "UnmanagedCustomerSubscriptions",
        // Usage (DESIGN.md §9)
        "Current",
        "SourceFailed",
        "SinkFailed",
        "Starting",
    ]
    .into_iter()
    .collect();
    let actual: BTreeSet<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    let missing: Vec<&&str> = documented.difference(&actual).collect();
    assert!(
        missing.is_empty(),
        "documented reasons missing: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

fn assert_sentence(reason: Reason, message: &str, needles: &[&str]) {
    assert!(
        message.ends_with('.'),
        "{reason}: not a full sentence: {message:?}"
    );
    assert!(
        message.starts_with(|c: char| c.is_uppercase()) || message.starts_with("spec."),
        "{reason}: {message:?}"
    );
    for needle in needles {
        assert!(
            message.contains(needle),
            "{reason}: {message:?} does not name {needle:?}"
        );
    }
}

#[test]
fn every_message_is_a_sentence_naming_its_values() {
    let arm = reg_arm_id();
    let error = bad_gateway().to_string();
    let mut covered = BTreeSet::new();

    let mut customer_rows: Vec<(Scenario, Reason, Vec<String>)> = vec![
        (
            ok().subscription_id("not-a-guid"),
            R::InvalidCustomerSubscriptionId,
            vec!["spec.subscriptionId".into(), "not-a-guid".into()],
        ),
        (
            ok().tenant(Some("bad-tenant")),
            R::InvalidCustomerSubscriptionId,
            vec!["spec.tenantId".into(), "bad-tenant".into()],
        ),
        (
            ok().no_registration(),
            R::RegistrationNotFound,
            vec![format!("{NS}/{REG}")],
        ),
        (
            ok().registration_deleting(),
            R::RegistrationNotFound,
            vec![format!("{NS}/{REG}"), "being deleted".into()],
        ),
        (
            ok().approval(Ok(false)),
            R::UnauthorizedCspRegistration,
            vec![arm.clone()],
        ),
        (
            ok().customer_lookup(Err(bad_gateway())),
            R::MetadataResolverBadGatewayError,
            vec![error.clone(), "customer subscription".into()],
        ),
        (
            ok().customer_lookup(Ok(None)),
            R::InvalidCustomerSubscriptionId,
            vec![SUB.into()],
        ),
        (
            ok().customer_meta(|m| m.tenant_id = Some(g(TENANT2))),
            R::InvalidCustomerSubscriptionId,
            vec![SUB.into(), TENANT.into(), TENANT2.into()],
        ),
        (
            ok().customer_meta(|m| m.tenant_id = None),
            R::InvalidCustomerSubscriptionId,
            vec![SUB.into(), TENANT.into()],
        ),
        (
            ok().customer_meta(|m| m.offer = "APSS".into()),
            R::InvalidCSPSubscription,
            vec![SUB.into(), "APSS".into()],
        ),
        (
            ok().customer_meta(|m| m.billing_partner_id = Some(OTHER_PARTNER.into())),
            R::BadCustomerSubscriptionId,
            vec![
                SUB.into(),
                OTHER_PARTNER.into(),
                PARTNER.into(),
                arm.clone(),
            ],
        ),
        (
            ok().registration_meta(|m| m.billing_partner_id = None),
            R::BadCustomerSubscriptionId,
            vec![SUB.into(), PARTNER.into(), REG_SUB.into()],
        ),
        (
            ok().registration_lookup(Ok(None)),
            R::BadCustomerSubscriptionId,
            vec![SUB.into(), PARTNER.into(), REG_SUB.into()],
        ),
        (
            ok().customer_meta(|m| m.billing_partner_id = None),
            R::BadCustomerSubscriptionId,
            vec![SUB.into(), PARTNER.into()],
        ),
        (ok(), R::Attached, vec![SUB.into(), arm.clone()]),
    ];
    for state in [SubscriptionState::Disabled, SubscriptionState::Deleted] {
        customer_rows.push((
            ok().customer_meta(|m| m.state = state),
            R::InvalidCustomerSubscriptionId,
            vec![SUB.into(), state.to_string()],
        ));
    }
    for model in BillingModel::ALL {
        if model != BillingModel::PayAsYouUse {
            customer_rows.push((
                ok().billing(model),
                R::CustomerSubscriptionsNotAllowed,
                vec![model.to_string(), arm.clone(), "PayAsYouUse".into()],
            ));
        }
    }
    for (scenario, reason, needles) in customer_rows {
        let d = scenario.evaluate();
        assert_eq!(d.reason, reason, "{}", d.message);
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        assert_sentence(reason, &d.message, &needles);
        covered.insert(reason);
    }

    // Rule 8.
    for (same_subscription, needle) in [(true, SUB), (false, TENANT)] {
        let mut d = ok().evaluate();
        reject_duplicate(
            &mut d,
            NS,
            &Duplicate {
                older: "older-one",
                same_subscription,
            },
        );
        assert_sentence(d.reason, &d.message, &[needle, &format!("{NS}/older-one")]);
        covered.insert(d.reason);
    }

    // Registration Ready and MultitenancyApproved.
    let reg_rows: Vec<(RegScenario, Reason, Vec<String>)> = vec![
        (
            reg_ok(),
            R::Registered,
            vec![arm.clone(), "PayAsYouUse".into()],
        ),
        (
            reg_ok().subscription(Ok(None)),
            R::InvalidRegistrationSubscription,
            vec![REG_SUB.into()],
        ),
        (
            reg_ok().state(SubscriptionState::Disabled),
            R::InvalidRegistrationSubscription,
            vec![REG_SUB.into(), "Disabled".into()],
        ),
        (
            reg_ok().state(SubscriptionState::Deleted),
            R::InvalidRegistrationSubscription,
            vec![REG_SUB.into(), "Deleted".into()],
        ),
        (
            reg_ok().subscription(Err(bad_gateway())),
            R::MetadataResolverBadGatewayError,
            vec![REG_SUB.into(), error.clone()],
        ),
        (
            reg_ok().other(registration("other-ns", "older", 1)),
            R::DuplicateCloudId,
            vec![CLOUD.into(), "other-ns/older".into()],
        ),
        (
            reg_ok().deleting(7),
            R::DeletionBlocked,
            vec![format!("{NS}/{REG}"), "7".into()],
        ),
    ];
    for (scenario, reason, needles) in reg_rows {
        let d = scenario.evaluate();
        assert_eq!(d.reason, reason, "{}", d.message);
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        assert_sentence(reason, &d.message, &needles);
        covered.insert(reason);
    }
    let approvals = [
        (Ok(true), R::Approved, vec![arm.as_str()]),
        (
            Ok(false),
            R::UnauthorizedCspRegistration,
            vec![arm.as_str()],
        ),
        (
            Err(bad_gateway()),
            R::MetadataResolverBadGatewayError,
            vec![arm.as_str(), error.as_str()],
        ),
    ];
    for (approval, reason, needles) in approvals {
        let d = reg_ok().approval(approval).evaluate().approval;
        assert_eq!(d.reason, reason);
        assert_sentence(reason, &d.message, &needles);
        covered.insert(reason);
    }

    // Every reason the policy writes has been checked; Reconciling is the controllers' own,
    // CustomerSubscriptionNotFound the verify operation's, and azure mode's reasons have their
    // own table (src/policy/azure_tests.rs).
    let all: BTreeSet<Reason> = Reason::ALL
        .into_iter()
        .filter(|r| !matches!(r.as_str(), "Reconciling" | "CustomerSubscriptionNotFound"))
        .filter(|r| !super::azure::REASONS.contains(r))
        .filter(|r| !Reason::USAGE.contains(r))
        .collect();
    assert_eq!(covered, all);
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// Flips the case of ASCII letters where `mask` (cycled) says so.
fn random_case(s: &str, mask: &[bool]) -> String {
    if mask.is_empty() {
        return s.to_string();
    }
    s.chars()
        .zip(mask.iter().cycle())
        .map(|(c, flip)| match (*flip, c.is_ascii_uppercase()) {
            (false, _) => c,
            (true, true) => c.to_ascii_lowercase(),
            (true, false) => c.to_ascii_uppercase(),
        })
        .collect()
}

/// Valid GUIDs (from a small pool, so that values meet, in random case, or random) and
/// strings that are not GUIDs.
fn arb_id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (
            prop::sample::select(vec![SUB, SUB2, TENANT, TENANT2, REG_SUB]),
            prop::collection::vec(any::<bool>(), 36),
        )
            .prop_map(|(g, mask)| random_case(g, &mask)),
        2 => "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
        1 => "[0-9a-gA-G-]{34,38}",
        1 => any::<String>(),
    ]
}

fn arb_error() -> impl Strategy<Value = ResolveError> {
    prop_oneof![
        (".*", any::<u16>())
            .prop_map(|(url, status)| ResolveError::UnexpectedStatus { url, status }),
        (".*", any::<u64>())
            .prop_map(|(url, timeout_ms)| ResolveError::Timeout { url, timeout_ms }),
        (".*", ".*").prop_map(|(url, reason)| ResolveError::Unreachable { url, reason }),
        (".*", ".*").prop_map(|(url, reason)| ResolveError::MalformedBody { url, reason }),
        ".*".prop_map(|reason| ResolveError::CatalogUnavailable { reason }),
        (".*", ".*").prop_map(|(url, cause)| ResolveError::UpstreamDown { url, cause }),
    ]
}

fn arb_partner() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.85,
        prop_oneof![
            4 => prop::sample::select(vec![PARTNER, OTHER_PARTNER, RESELLER]).prop_map(String::from),
            1 => ".*",
        ],
    )
}

fn arb_state() -> impl Strategy<Value = SubscriptionState> {
    prop::sample::select(vec![
        SubscriptionState::Enabled,
        SubscriptionState::Warned,
        SubscriptionState::PastDue,
        SubscriptionState::Disabled,
        SubscriptionState::Deleted,
    ])
}

fn arb_offer() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["CSP", "APSS", "PayAsYouGo", "EnterpriseAgreement"])
            .prop_map(String::from),
        1 => ".*",
    ]
}

/// GUIDs as validated metadata holds them: from the small pool (so that values meet) or random.
fn arb_guid() -> impl Strategy<Value = Guid> {
    prop_oneof![
        6 => prop::sample::select(vec![SUB, SUB2, TENANT, TENANT2, REG_SUB]).prop_map(g),
        2 => "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
            .prop_map(|text| g(&text)),
    ]
}

fn arb_meta() -> impl Strategy<Value = SubscriptionMetadata> {
    (
        arb_guid(),
        prop::option::weighted(0.8, arb_guid()),
        arb_state(),
        arb_offer(),
        arb_partner(),
        arb_partner(),
    )
        .prop_map(
            |(id, tenant_id, state, offer, billing_partner_id, reseller_partner_id)| {
                SubscriptionMetadata {
                    id,
                    tenant_id,
                    state,
                    offer,
                    billing_partner_id,
                    reseller_partner_id,
                }
            },
        )
}

fn arb_lookup() -> impl Strategy<Value = Lookup> {
    prop_oneof![
        1 => Just(Ok(None)),
        5 => arb_meta().prop_map(|m| Ok(Some(Arc::new(m)))),
        1 => arb_error().prop_map(Err),
    ]
}

fn arb_approval() -> impl Strategy<Value = Result<bool, ResolveError>> {
    prop_oneof![
        4 => Just(Ok(true)),
        1 => Just(Ok(false)),
        1 => arb_error().prop_map(Err),
    ]
}

fn arb_billing_model() -> impl Strategy<Value = BillingModel> {
    prop_oneof![
        3 => Just(BillingModel::PayAsYouUse),
        1 => prop::sample::select(BillingModel::ALL.to_vec()),
    ]
}

/// Absent, present or being deleted.
fn arb_registration() -> impl Strategy<Value = Option<Registration>> {
    (
        0u8..5,
        arb_id(),
        arb_billing_model(),
        prop::option::of("[A-Za-z0-9._-]{1,20}"),
        "[A-Za-z0-9._()-]{1,20}",
    )
        .prop_map(|(shape, subscription_id, model, registration_name, rg)| {
            let mut r = registration(NS, REG, 0);
            r.spec.subscription_id = subscription_id;
            r.spec.billing_model = model;
            r.spec.registration_name = registration_name;
            r.spec.resource_group = rg;
            match shape {
                0 => None,
                1 => Some(deleting(r)),
                _ => Some(r),
            }
        })
}

fn arb_scenario() -> impl Strategy<Value = Scenario> {
    (
        arb_id(),
        prop::option::weighted(0.6, arb_id()),
        arb_registration(),
        arb_approval(),
        arb_lookup(),
        arb_lookup(),
    )
        .prop_map(
            |(subscription_id, tenant_id, registration, approval, reg_sub, cust_sub)| Scenario {
                customer: customer("fabrikam", &subscription_id, tenant_id.as_deref()),
                registration,
                approval,
                registration_subscription: reg_sub,
                customer_subscription: cust_sub,
            },
        )
}

/// The decision without its message (messages quote malformed input verbatim).
fn outcome(d: &CustomerDecision) -> CustomerDecision {
    CustomerDecision {
        message: String::new(),
        ..d.clone()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn evaluate_customer_invariants(s in arb_scenario()) {
        let d = s.evaluate();
        // Deterministic, also on a copy of the facts.
        prop_assert_eq!(&d, &s.evaluate());
        prop_assert_eq!(&d, &s.clone().evaluate());
        prop_assert_eq!(d.eligible.is_some(), d.reason == R::Attached);
        prop_assert!(CUSTOMER_REASONS.contains(&d.reason), "{:?}", d.reason);
        prop_assert!(d.message.ends_with('.'), "{:?}", d.message);
        if let Some(e) = &d.eligible {
            let subscription = e.subscription_id.to_string();
            prop_assert_eq!(&subscription, &s.customer.spec.subscription_id.to_ascii_lowercase());
            prop_assert!(Guid::parse(&subscription).is_some());
            prop_assert_eq!(&subscription, &subscription.to_ascii_lowercase());
            if let Some(t) = e.tenant_id.map(|t| t.to_string()) {
                prop_assert_eq!(&t, &t.to_ascii_lowercase());
            }
        }
    }

    #[test]
    fn guid_case_never_changes_the_decision(
        s in arb_scenario(),
        sub_mask in prop::collection::vec(any::<bool>(), 1..40),
        tenant_mask in prop::collection::vec(any::<bool>(), 1..40),
        reg_mask in prop::collection::vec(any::<bool>(), 1..40),
    ) {
        let before = s.evaluate();
        let mut t = s.clone();
        t.customer.spec.subscription_id = random_case(&s.customer.spec.subscription_id, &sub_mask);
        t.customer.spec.tenant_id = s.customer.spec.tenant_id.as_deref().map(|x| random_case(x, &tenant_mask));
        if let Some(r) = &mut t.registration {
            r.spec.subscription_id = random_case(&r.spec.subscription_id, &reg_mask);
        }
        let after = t.evaluate();
        prop_assert_eq!(before.reason, after.reason, "{} / {}", before.message, after.message);
        prop_assert_eq!(outcome(&before), outcome(&after));
    }

    #[test]
    fn find_duplicate_is_antisymmetric(
        a_created in prop::option::weighted(0.9, 0i64..3),
        b_created in prop::option::weighted(0.9, 0i64..3),
        a_name in prop::sample::select(vec!["a", "b", "c"]),
        b_name in prop::sample::select(vec!["a", "b", "c"]),
        a_sub in prop::sample::select(vec![SUB, SUB2]),
        b_sub in prop::sample::select(vec![SUB, SUB2]),
        a_tenant in prop::option::of(prop::sample::select(vec![TENANT, TENANT2])),
        b_tenant in prop::option::of(prop::sample::select(vec![TENANT, TENANT2])),
    ) {
        let ra = Seniority { created: a_created.map(at), name: a_name.into() };
        let rb = Seniority { created: b_created.map(at), name: b_name.into() };
        prop_assume!(ra != rb);
        let ea = eligible(a_sub, a_tenant);
        let eb = eligible(b_sub, b_tenant);
        // Each also sees itself among the siblings, as the controller's list includes it.
        let a_dup = find_duplicate((&ra, &ea), [(&ra, &ea), (&rb, &eb)]);
        let b_dup = find_duplicate((&rb, &eb), [(&ra, &ea), (&rb, &eb)]);
        let matches = a_sub == b_sub || (a_tenant.is_some() && a_tenant == b_tenant);
        if matches {
            prop_assert!(a_dup.is_some() != b_dup.is_some(), "{:?} / {:?}", a_dup, b_dup);
            let (younger_dup, older) = if ra < rb { (&b_dup, &ra) } else { (&a_dup, &rb) };
            prop_assert_eq!(younger_dup.as_ref().map(|d| d.older), Some(older.name.as_str()));
        } else {
            prop_assert!(a_dup.is_none() && b_dup.is_none());
        }
    }
}

/// The generators reach every outcome, so the properties above are not vacuous.
#[test]
fn scenario_generator_reaches_every_customer_reason() {
    use proptest::{strategy::ValueTree, test_runner::TestRunner};

    let mut runner = TestRunner::deterministic();
    let strategy = arb_scenario();
    let mut seen = BTreeSet::new();
    for _ in 0..4000 {
        let s = strategy.new_tree(&mut runner).unwrap().current();
        seen.insert(s.evaluate().reason);
    }
    let all: BTreeSet<Reason> = CUSTOMER_REASONS.into_iter().collect();
    assert_eq!(seen, all);
}
