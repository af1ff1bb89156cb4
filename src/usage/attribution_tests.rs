use chrono::TimeDelta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;

use super::*;
use crate::api::{
    Condition, CustomerSubscriptionSpec, CustomerSubscriptionStatus, RegistrationRef,
};

fn guid(n: u8) -> Guid {
    Guid::parse(&format!("{n:08x}-0000-4000-8000-000000000000")).unwrap()
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

const REGISTRATION_SUBSCRIPTION: u8 = 0xee;

fn attachment(name: &str, tenant: u8, subscription: u8, since: &str) -> Attachment {
    Attachment {
        customer: CustomerRef {
            namespace: "partner".into(),
            name: name.into(),
        },
        tenant_id: guid(tenant),
        subscription_id: guid(subscription),
        attached_since: at(since),
    }
}

#[test]
fn attribution_by_tenant_and_attach_time() {
    let attachments = Attachments::new([
        attachment("from-start", 1, 11, "2026-01-01T00:00:00Z"),
        attachment("mid-period", 2, 12, "2026-03-04T10:30:00Z"),
    ]);
    let registration = BilledTo::Registration {
        subscription_id: guid(REGISTRATION_SUBSCRIPTION),
    };
    let customer = |name: &str, subscription: u8| BilledTo::Customer {
        customer: CustomerRef {
            namespace: "partner".into(),
            name: name.into(),
        },
        subscription_id: guid(subscription),
    };
    let cases = [
        (
            "attached from the start",
            1,
            "2026-03-04T09:00:00Z",
            customer("from-start", 11),
        ),
        (
            "attached mid-period: the hour before goes to the registration",
            2,
            "2026-03-04T10:00:00Z",
            registration.clone(),
        ),
        (
            "attached mid-period: usage starting at the attach time is the customer's",
            2,
            "2026-03-04T10:30:00Z",
            customer("mid-period", 12),
        ),
        (
            "attached mid-period: the hour after",
            2,
            "2026-03-04T11:00:00Z",
            customer("mid-period", 12),
        ),
        (
            "a tenant with no CustomerSubscription",
            3,
            "2026-03-04T11:00:00Z",
            registration.clone(),
        ),
    ];
    for (what, tenant, start, expected) in cases {
        let billed = attribute(
            guid(tenant),
            at(start),
            &attachments,
            guid(REGISTRATION_SUBSCRIPTION),
        );
        assert_eq!(billed, expected, "{what}");
    }
    assert_eq!(registration.kind(), "registration");
    assert_eq!(customer("x", 1).kind(), "customer");
    assert_eq!(
        customer("x", 1)
            .customer()
            .map(ToString::to_string)
            .as_deref(),
        Some("partner/x")
    );
    assert_eq!(
        registration.subscription_id(),
        guid(REGISTRATION_SUBSCRIPTION)
    );
}

#[test]
fn of_two_attachments_for_one_tenant_the_older_bills() {
    let attachments = Attachments::new([
        attachment("newer", 1, 12, "2026-03-02T00:00:00Z"),
        attachment("older", 1, 11, "2026-03-01T00:00:00Z"),
    ]);
    let billed = attribute(
        guid(1),
        at("2026-03-03T00:00:00Z"),
        &attachments,
        guid(REGISTRATION_SUBSCRIPTION),
    );
    assert_eq!(billed.subscription_id(), guid(11));
    // Before the older one was attached, only the registration.
    let billed = attribute(
        guid(1),
        at("2026-02-28T00:00:00Z"),
        &attachments,
        guid(REGISTRATION_SUBSCRIPTION),
    );
    assert_eq!(billed.subscription_id(), guid(REGISTRATION_SUBSCRIPTION));
}

#[test]
fn the_directory_maps_local_subscriptions_to_tenants() {
    let a = guid(1).to_string();
    let t = guid(2).to_string().to_uppercase();
    let directory = Directory::new([(a.as_str(), t.as_str()), ("not-a-guid", t.as_str())]);
    assert_eq!(directory.tenant_of(guid(1)), Some(guid(2)));
    assert_eq!(directory.tenant_of(guid(3)), None);
}

fn ready(status: ConditionStatus, reason: &str, since: Option<&str>) -> Condition {
    Condition {
        type_: "Ready".into(),
        status,
        reason: reason.into(),
        message: String::new(),
        last_transition_time: since.map(|s| Time(s.parse().unwrap())),
        observed_generation: Some(1),
    }
}

fn customer_subscription(
    registration: &str,
    spec_tenant: Option<u8>,
    status_tenant: Option<u8>,
    condition: Option<Condition>,
) -> CustomerSubscription {
    let mut object = CustomerSubscription::new(
        "fabrikam",
        CustomerSubscriptionSpec {
            registration_ref: RegistrationRef {
                name: registration.into(),
            },
            subscription_id: guid(11).to_string().to_uppercase(),
            tenant_id: spec_tenant.map(|t| guid(t).to_string()),
        },
    );
    object.metadata.namespace = Some("partner".into());
    object.status = Some(CustomerSubscriptionStatus {
        tenant_id: status_tenant.map(|t| guid(t).to_string()),
        conditions: condition.into_iter().collect(),
        ..Default::default()
    });
    object
}

#[test]
fn an_attachment_is_read_from_the_ready_condition() {
    let since = "2026-03-04T10:30:00Z";
    let attached = || Some(ready(ConditionStatus::True, "Attached", Some(since)));
    let cases = [
        (
            "attached, tenant resolved",
            customer_subscription("stack", None, Some(1), attached()),
            Some(1),
        ),
        (
            "attached, tenant from spec only",
            customer_subscription("stack", Some(2), None, attached()),
            Some(2),
        ),
        (
            "status tenant wins over spec",
            customer_subscription("stack", Some(2), Some(1), attached()),
            Some(1),
        ),
        (
            "another registration",
            customer_subscription("other", None, Some(1), attached()),
            None,
        ),
        (
            "not attached (BadCustomerSubscriptionId)",
            customer_subscription(
                "stack",
                None,
                Some(1),
                Some(ready(
                    ConditionStatus::False,
                    "BadCustomerSubscriptionId",
                    Some(since),
                )),
            ),
            None,
        ),
        (
            "Unknown while the resolver fails",
            customer_subscription(
                "stack",
                None,
                Some(1),
                Some(ready(
                    ConditionStatus::Unknown,
                    "MetadataResolverBadGatewayError",
                    Some(since),
                )),
            ),
            None,
        ),
        (
            "True but another reason",
            customer_subscription(
                "stack",
                None,
                Some(1),
                Some(ready(ConditionStatus::True, "Registered", Some(since))),
            ),
            None,
        ),
        (
            "no transition time",
            customer_subscription(
                "stack",
                None,
                Some(1),
                Some(ready(ConditionStatus::True, "Attached", None)),
            ),
            None,
        ),
        (
            "no condition",
            customer_subscription("stack", None, Some(1), None),
            None,
        ),
        (
            "no tenant",
            customer_subscription("stack", None, None, attached()),
            None,
        ),
    ];
    for (what, object, tenant) in cases {
        let found = Attachment::of(&object, "partner", "stack");
        assert_eq!(
            found.as_ref().map(|a| a.tenant_id),
            tenant.map(guid),
            "{what}"
        );
        if let Some(found) = found {
            assert_eq!(found.attached_since, at(since), "{what}");
            assert_eq!(found.subscription_id, guid(11), "{what}");
            assert_eq!(found.customer.to_string(), "partner/fabrikam", "{what}");
        }
    }
    let object = customer_subscription("stack", None, Some(1), attached());
    assert_eq!(Attachment::of(&object, "other-namespace", "stack"), None);
}

proptest! {
    /// Attribution moves quantities, never makes or loses them: the sum over billed parties
    /// equals the source's, for any attach history; and a record is the customer's exactly when
    /// its tenant is attached no later than its start.
    #[test]
    fn sums_over_parties_equal_the_source_for_any_attach_history(
        history in proptest::collection::vec((0u8..6, 0i64..96), 0..8),
        records in proptest::collection::vec((0u8..8, 0i64..96, 0u32..10_000), 0..60),
    ) {
        let base = at("2026-03-01T00:00:00Z");
        let attachments = Attachments::new(history.iter().enumerate().map(|(i, (tenant, hour))| Attachment {
            customer: CustomerRef { namespace: "p".into(), name: format!("c{i}") },
            tenant_id: guid(*tenant),
            subscription_id: guid(100 + i as u8),
            attached_since: base + TimeDelta::hours(*hour),
        }));
        let mut by_party: HashMap<BilledTo, u64> = HashMap::new();
        for (tenant, hour, quantity) in &records {
            let start = base + TimeDelta::hours(*hour);
            let billed = attribute(guid(*tenant), start, &attachments, guid(REGISTRATION_SUBSCRIPTION));
            let attached = history.iter().any(|(t, h)| t == tenant && *h <= *hour);
            prop_assert_eq!(matches!(billed, BilledTo::Customer { .. }), attached);
            *by_party.entry(billed).or_default() += u64::from(*quantity);
        }
        let source: u64 = records.iter().map(|(_, _, q)| u64::from(*q)).sum();
        prop_assert_eq!(by_party.values().sum::<u64>(), source);
    }
}
