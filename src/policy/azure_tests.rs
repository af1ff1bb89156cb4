//! The §8 answer table row by row, the registration GET, approvals learnt, drift.

use std::{collections::BTreeSet, time::Duration};

use super::{Reason as R, azure::*};

/// A row: what it is, ARM's answer, the reason, its status, the approval learnt.
type PutRow = (
    &'static str,
    Result<ArmCustomerSubscription, ArmError>,
    R,
    ConditionStatus,
    Option<bool>,
);
/// A row: what it is, ARM's answer, the reason, what the message names.
type GetRow = (
    &'static str,
    Result<ArmRegistration, ArmError>,
    R,
    Vec<&'static str>,
);
use crate::{
    api::{BillingModel, ConditionStatus, Registration, RegistrationSpec},
    domain::arm::{ArmCustomerSubscription, ArmError, ArmRegistration},
};

const SUB: &str = "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a";
const ARM_ID: &str = "/subscriptions/6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c/resourceGroups/azurestack/providers/Microsoft.AzureStack/registrations/reg";
const CLOUD: &str = "5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f";

fn answered(status: u16, code: &str) -> ArmError {
    ArmError::Answered {
        status,
        code: code.into(),
        message: format!("ARM says {code}."),
        request_id: Some("req-1".into()),
        retry_after: None,
    }
}

fn added() -> ArmCustomerSubscription {
    ArmCustomerSubscription {
        name: SUB.into(),
        tenant_id: None,
        request_id: Some("req-ok".into()),
    }
}

#[test]
fn every_row_of_the_put_answer_table() {
    use ConditionStatus::{False, True, Unknown};
    let throttled = ArmError::Answered {
        status: 429,
        code: "TooManyRequests".into(),
        message: "slow down".into(),
        request_id: Some("req-429".into()),
        retry_after: Some(Duration::from_secs(7)),
    };
    let rows: Vec<PutRow> = vec![
        ("200/201", Ok(added()), R::Attached, True, Some(true)),
        (
            "seed: RegistrationNotFound",
            Err(answered(404, "RegistrationNotFound")),
            R::RegistrationNotFound,
            False,
            None,
        ),
        (
            "seed: BadCustomerSubscriptionId",
            Err(answered(400, "BadCustomerSubscriptionId")),
            R::BadCustomerSubscriptionId,
            False,
            None,
        ),
        (
            "seed: InvalidCustomerSubscriptionId",
            Err(answered(400, "InvalidCustomerSubscriptionId")),
            R::InvalidCustomerSubscriptionId,
            False,
            None,
        ),
        (
            "seed: CustomerSubscriptionNotFound",
            Err(answered(404, "CustomerSubscriptionNotFound")),
            R::CustomerSubscriptionNotFound,
            False,
            None,
        ),
        (
            "seed: UnauthorizedCspRegistration",
            Err(answered(400, "UnauthorizedCspRegistration")),
            R::UnauthorizedCspRegistration,
            False,
            Some(false),
        ),
        (
            "seed: CustomerSubscriptionsNotAllowed",
            Err(answered(400, "CustomerSubscriptionsNotAllowed")),
            R::CustomerSubscriptionsNotAllowed,
            False,
            None,
        ),
        (
            "seed: InvalidCSPSubscription",
            Err(answered(400, "InvalidCSPSubscription")),
            R::InvalidCSPSubscription,
            False,
            None,
        ),
        (
            "seed: MetadataResolverBadGatewayError",
            Err(answered(502, "MetadataResolverBadGatewayError")),
            R::MetadataResolverBadGatewayError,
            Unknown,
            None,
        ),
        (
            "401",
            Err(answered(401, "InvalidAuthenticationToken")),
            R::AzureAuthorizationFailed,
            False,
            None,
        ),
        (
            "403",
            Err(answered(403, "AuthorizationFailed")),
            R::AzureAuthorizationFailed,
            False,
            None,
        ),
        (
            "code AuthorizationFailed on another status",
            Err(answered(400, "AuthorizationFailed")),
            R::AzureAuthorizationFailed,
            False,
            None,
        ),
        (
            "InvalidAuthenticationTokenTenant",
            Err(answered(401, "InvalidAuthenticationTokenTenant")),
            R::AzureAuthorizationFailed,
            False,
            None,
        ),
        (
            "no token",
            Err(ArmError::Credential {
                reason: "invalid_client".into(),
            }),
            R::AzureAuthorizationFailed,
            False,
            None,
        ),
        (
            "429",
            Err(throttled.clone()),
            R::MetadataResolverBadGatewayError,
            Unknown,
            None,
        ),
        (
            "500",
            Err(answered(500, "InternalServerError")),
            R::MetadataResolverBadGatewayError,
            Unknown,
            None,
        ),
        (
            "503",
            Err(answered(503, "ServiceUnavailable")),
            R::MetadataResolverBadGatewayError,
            Unknown,
            None,
        ),
        (
            "408",
            Err(answered(408, "RequestTimeout")),
            R::MetadataResolverBadGatewayError,
            Unknown,
            None,
        ),
        (
            "refused",
            Err(ArmError::Unreachable {
                reason: "connection refused".into(),
            }),
            R::MetadataResolverBadGatewayError,
            Unknown,
            None,
        ),
        (
            "TLS",
            Err(ArmError::Unreachable {
                reason: "invalid peer certificate: UnknownIssuer".into(),
            }),
            R::MetadataResolverBadGatewayError,
            Unknown,
            None,
        ),
        (
            "malformed body",
            Err(ArmError::Malformed {
                status: 200,
                reason: "expected value".into(),
                request_id: Some("req-m".into()),
            }),
            R::MetadataResolverBadGatewayError,
            Unknown,
            None,
        ),
        (
            "breaker open",
            Err(ArmError::Down {
                cause: "HTTP 502".into(),
            }),
            R::MetadataResolverBadGatewayError,
            Unknown,
            None,
        ),
        (
            "other 4xx",
            Err(answered(400, "InvalidRequestContent")),
            R::AzureRequestFailed,
            False,
            None,
        ),
        (
            "409 Conflict",
            Err(answered(409, "Conflict")),
            R::AzureRequestFailed,
            False,
            None,
        ),
        (
            "retryable 4xx",
            Err(answered(409, "AnotherOperationInProgress")),
            R::AzureRequestFailed,
            Unknown,
            None,
        ),
        (
            "retryable 404",
            Err(answered(404, "ResourceGroupNotFound")),
            R::AzureRequestFailed,
            Unknown,
            None,
        ),
    ];
    for (row, answer, reason, status, approval) in rows {
        let verdict = decide_put(SUB, ARM_ID, &answer);
        assert_eq!(verdict.reason, reason, "{row}: {}", verdict.message);
        assert_eq!(verdict.status, status, "{row}");
        assert_eq!(
            verdict.is_retried(),
            status == Unknown || reason == R::AzureAuthorizationFailed,
            "{row}"
        );
        assert_eq!(approval_learnt(&answer), approval, "{row}");
        assert!(verdict.message.contains(SUB), "{row}: {}", verdict.message);
        assert!(
            verdict.message.contains(ARM_ID),
            "{row}: {}",
            verdict.message
        );
        // The request id support asks for is kept and named.
        let request_id = match &answer {
            Ok(a) => a.request_id.clone(),
            Err(e) => e.request_id().map(str::to_string),
        };
        assert_eq!(verdict.request_id, request_id, "{row}");
        if let Some(id) = &request_id {
            assert!(
                verdict.message.contains(id.as_str()),
                "{row}: {}",
                verdict.message
            );
        }
        if let Err(ArmError::Answered { code, .. }) = &answer {
            assert!(
                verdict.message.contains(code.as_str()),
                "{row}: {}",
                verdict.message
            );
        }
    }
    assert_eq!(
        decide_put(SUB, ARM_ID, &Err(throttled)).retry_after,
        Some(Duration::from_secs(7)),
        "Retry-After is kept for the requeue"
    );
}

#[test]
fn authorization_failures_name_the_remedy() {
    for error in [
        answered(403, "AuthorizationFailed"),
        ArmError::Credential {
            reason: "AADSTS7000215".into(),
        },
    ] {
        let verdict = decide_put(SUB, ARM_ID, &Err(error));
        assert_eq!(verdict.reason, R::AzureAuthorizationFailed);
        assert!(
            verdict.message.contains("role") || verdict.message.contains("credential"),
            "{}",
            verdict.message
        );
    }
}

fn registration(model: BillingModel) -> Registration {
    Registration::new(
        "reg",
        RegistrationSpec {
            subscription_id: "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c".into(),
            resource_group: "azurestack".into(),
            registration_name: None,
            cloud_id: CLOUD.into(),
            billing_model: model,
            agreement_number: None,
            ms_asset_tag: None,
            prune_unmanaged: None,
            usage_source: None,
        },
    )
}

fn found(model: &str, cloud: &str) -> ArmRegistration {
    ArmRegistration {
        object_id: Some("obj".into()),
        cloud_id: Some(cloud.into()),
        billing_model: Some(model.into()),
        etag: Some("\"e1\"".into()),
        request_id: Some("req-get".into()),
    }
}

#[test]
fn registration_get_answers() {
    let reg = registration(BillingModel::PayAsYouUse);
    let other_cloud = "00000000-0000-4000-8000-000000000000";
    let rows: Vec<GetRow> = vec![
        (
            "matches",
            Ok(found("PayAsYouUse", CLOUD)),
            R::Registered,
            vec![ARM_ID, "req-get"],
        ),
        (
            "case of values",
            Ok(found("payasyouuse", &CLOUD.to_ascii_uppercase())),
            R::Registered,
            vec![ARM_ID],
        ),
        (
            "billing model differs",
            Ok(found("Capacity", CLOUD)),
            R::RegistrationMismatch,
            vec!["Capacity", "PayAsYouUse", "req-get"],
        ),
        (
            "cloud differs",
            Ok(found("PayAsYouUse", other_cloud)),
            R::RegistrationMismatch,
            vec![other_cloud, CLOUD],
        ),
        (
            "both differ",
            Ok(found("Development", other_cloud)),
            R::RegistrationMismatch,
            vec!["Development", other_cloud],
        ),
        (
            "404",
            Err(answered(404, "ResourceNotFound")),
            R::RegistrationNotFound,
            vec![ARM_ID, "spec.resourceGroup", "req-1"],
        ),
        (
            "403",
            Err(answered(403, "AuthorizationFailed")),
            R::AzureAuthorizationFailed,
            vec![ARM_ID],
        ),
        (
            "no token",
            Err(ArmError::Credential {
                reason: "invalid_client".into(),
            }),
            R::AzureAuthorizationFailed,
            vec!["invalid_client"],
        ),
        (
            "502",
            Err(answered(502, "BadGateway")),
            R::MetadataResolverBadGatewayError,
            vec![ARM_ID],
        ),
        (
            "refused",
            Err(ArmError::Unreachable {
                reason: "refused".into(),
            }),
            R::MetadataResolverBadGatewayError,
            vec!["refused"],
        ),
    ];
    for (row, answer, reason, needles) in rows {
        let verdict = decide_registration(&reg, ARM_ID, &answer);
        assert_eq!(verdict.reason, reason, "{row}: {}", verdict.message);
        for needle in needles {
            assert!(
                verdict.message.contains(needle),
                "{row}: {needle:?} not in {}",
                verdict.message
            );
        }
    }
}

#[test]
fn approval_is_learnt_from_puts_only() {
    let rows = [
        (None, R::NotYetKnown, ConditionStatus::Unknown),
        (Some(true), R::Approved, ConditionStatus::True),
        (
            Some(false),
            R::UnauthorizedCspRegistration,
            ConditionStatus::False,
        ),
    ];
    for (learnt, reason, status) in rows {
        let (got, message) = approval_condition(ARM_ID, learnt);
        assert_eq!(got, reason);
        assert_eq!(got.status(), status);
        assert!(message.contains(ARM_ID), "{message}");
    }
}

fn declared(key: &'static str, sub: &str, attached: bool) -> Declared<&'static str> {
    Declared {
        key,
        subscription_id: sub.into(),
        attached,
    }
}

#[test]
fn drift_between_declared_and_azure() {
    let set = |ids: &[&str]| -> BTreeSet<String> { ids.iter().map(|s| s.to_string()).collect() };
    let rows = [
        (
            "in sync",
            vec![declared("a", "1", true)],
            set(&["1"]),
            vec![],
            vec![],
        ),
        (
            "removed behind our back",
            vec![declared("a", "1", true), declared("b", "2", true)],
            set(&["2"]),
            vec!["a"],
            vec![],
        ),
        (
            "not attached yet: not re-added",
            vec![declared("a", "1", false)],
            set(&[]),
            vec![],
            vec![],
        ),
        (
            "added behind our back",
            vec![declared("a", "1", true)],
            set(&["1", "3", "4"]),
            vec![],
            vec!["3", "4"],
        ),
        (
            "declared but rejected is not unmanaged",
            vec![declared("a", "1", false)],
            set(&["1"]),
            vec![],
            vec![],
        ),
        ("nothing declared", vec![], set(&["9"]), vec![], vec!["9"]),
    ];
    for (row, declared, in_azure, reattach, unmanaged) in rows {
        let drift = drift(&declared, &in_azure);
        assert_eq!(drift.reattach, reattach, "{row}");
        assert_eq!(drift.unmanaged, unmanaged, "{row}");
    }
}

#[test]
fn in_sync_names_at_most_ten_unmanaged_ids() {
    let (reason, _) = in_sync_condition(ARM_ID, &[], false);
    assert_eq!(reason, R::InSync);
    let ids: Vec<String> = (0..12).map(|i| format!("id-{i:02}")).collect();
    let (reason, message) = in_sync_condition(ARM_ID, &ids, false);
    assert_eq!(reason, R::UnmanagedCustomerSubscriptions);
    assert_eq!(reason.status(), ConditionStatus::False);
    assert!(message.contains("12 customer subscription"), "{message}");
    assert!(
        message.contains("id-09") && !message.contains("id-10"),
        "{message}"
    );
    assert!(message.contains("2 more"), "{message}");
    assert!(message.contains("spec.pruneUnmanaged: true"), "{message}");
    let (_, message) = in_sync_condition(ARM_ID, &ids[..1], true);
    assert!(message.contains("removes them"), "{message}");
}

#[test]
fn detaching_keeps_the_cause_and_the_way_out() {
    let verdict = detaching(SUB, ARM_ID, &answered(503, "ServiceUnavailable"));
    assert_eq!(verdict.reason, R::Detaching);
    assert_eq!(verdict.status, ConditionStatus::Unknown);
    assert!(
        verdict.message.contains("ServiceUnavailable"),
        "{}",
        verdict.message
    );
    assert!(
        verdict.message.contains("deletion-policy=orphan"),
        "{}",
        verdict.message
    );
    assert_eq!(verdict.request_id.as_deref(), Some("req-1"));
}

#[test]
fn azure_reasons_are_in_the_reason_list() {
    for reason in REASONS {
        assert!(R::ALL.contains(&reason), "{reason}");
    }
}
