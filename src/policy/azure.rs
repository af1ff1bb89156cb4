//! Azure mode's decisions (DESIGN.md §8): what ARM's answer means for a condition, what a
//! registration GET says about spec, and what a LIST says about drift. Pure, like the rest of
//! `policy`: answers in, decisions out.

use std::{collections::BTreeSet, time::Duration};

use super::Reason;
use crate::{
    api::{ConditionStatus, Registration},
    domain::arm::{ArmCustomerSubscription, ArmError, ArmRegistration},
    guid::GuidText,
};

/// The reasons only azure mode writes (their messages are tested in `azure_tests.rs`).
pub const REASONS: [Reason; 7] = [
    Reason::AzureAuthorizationFailed,
    Reason::AzureRequestFailed,
    Reason::RegistrationMismatch,
    Reason::Detaching,
    Reason::NotYetKnown,
    Reason::InSync,
    Reason::UnmanagedCustomerSubscriptions,
];

/// The error codes of the seed's table (DESIGN.md §1): ARM answering one of them is that
/// reason.
const SEED_CODES: [Reason; 8] = [
    Reason::RegistrationNotFound,
    Reason::BadCustomerSubscriptionId,
    Reason::InvalidCustomerSubscriptionId,
    Reason::CustomerSubscriptionNotFound,
    Reason::UnauthorizedCspRegistration,
    Reason::CustomerSubscriptionsNotAllowed,
    Reason::InvalidCSPSubscription,
    Reason::MetadataResolverBadGatewayError,
];

/// ARM codes that mean the identity may not make the call (or has no valid token).
fn is_authorization_code(code: &str) -> bool {
    code == "AuthorizationFailed"
        || code == "LinkedAuthorizationFailed"
        || code.starts_with("InvalidAuthenticationToken")
        || code == "AuthenticationFailed"
        || code == "ExpiredAuthenticationToken"
}

/// 4xx codes that Azure Service Operator classifies as retryable: the request may succeed
/// unchanged once something else in Azure settles (a concurrent operation, a provider
/// registration, a resource group that is being created).
const RETRYABLE_CODES: [&str; 15] = [
    "AnotherOperationInProgress",
    "AllocationFailed",
    "FailedIdentityOperation",
    "InvalidResourceReference",
    "InvalidSubscriptionRegistrationState",
    "MissingRegistrationForLocation",
    "MissingSubscriptionRegistration",
    "NoRegisteredProviderFound",
    "NotFound",
    "ParentResourceNotFound",
    "PrincipalNotFound",
    "ResourceGroupNotFound",
    "ResourceNotFound",
    "ResourceQuotaExceeded",
    "SubscriptionNotRegistered",
];

/// A condition decided from an ARM answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub reason: Reason,
    /// Usually `reason.status()`; `AzureRequestFailed` is Unknown for a retryable code.
    pub status: ConditionStatus,
    pub message: String,
    /// The `x-ms-request-id` of the call that decided it.
    pub request_id: Option<String>,
    /// When undecided: the earliest ARM allows the next attempt (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Verdict {
    fn new(reason: Reason, message: String, request_id: Option<String>) -> Self {
        Self {
            reason,
            status: reason.status(),
            message,
            request_id,
            retry_after: None,
        }
    }

    /// Whether the operator tries again by itself: the condition is Unknown, or the identity
    /// was refused (False, but a fixed credential or a new role assignment must heal it
    /// without anyone touching the object).
    pub fn is_retried(&self) -> bool {
        self.status == ConditionStatus::Unknown || self.reason == Reason::AzureAuthorizationFailed
    }
}

fn with_request_id(message: String, request_id: Option<&str>) -> String {
    match request_id {
        Some(id) => format!("{message} (x-ms-request-id {id})"),
        None => message,
    }
}

/// How a failed ARM call about `what` becomes a condition: the §8 answer table without its
/// success row.
pub fn classify_failure(what: &str, error: &ArmError) -> Verdict {
    let request_id = error.request_id().map(str::to_string);
    match error {
        ArmError::Answered {
            status,
            code,
            message,
            retry_after,
            ..
        } => {
            if let Some(reason) = SEED_CODES.iter().copied().find(|r| r.as_str() == code) {
                let mut verdict = Verdict::new(
                    reason,
                    with_request_id(
                        format!("Azure refused {what} with {code}: {message}"),
                        request_id.as_deref(),
                    ),
                    request_id,
                );
                if reason == Reason::MetadataResolverBadGatewayError {
                    verdict.retry_after = *retry_after;
                    verdict
                        .message
                        .push_str("; the operator tries again with backoff.");
                }
                return verdict;
            }
            if *status == 401 || *status == 403 || is_authorization_code(code) {
                return Verdict::new(
                    Reason::AzureAuthorizationFailed,
                    with_request_id(
                        format!(
                            "Azure refused {what} with HTTP {status} {code}: {message}. Give the operator's identity a role with Microsoft.AzureStack/registrations/customerSubscriptions read, write and delete on the registration's resource group, or fix its credential"
                        ),
                        request_id.as_deref(),
                    ),
                    request_id,
                );
            }
            if *status == 408 || *status == 429 || *status >= 500 {
                let mut verdict = Verdict::new(
                    Reason::MetadataResolverBadGatewayError,
                    with_request_id(
                        format!(
                            "Azure could not answer {what} (HTTP {status} {code}: {message}); the operator tries again with backoff{}",
                            retry_after
                                .map(|d| format!(
                                    ", not before the {} s ARM asked for",
                                    d.as_secs()
                                ))
                                .unwrap_or_default()
                        ),
                        request_id.as_deref(),
                    ),
                    request_id,
                );
                verdict.retry_after = *retry_after;
                return verdict;
            }
            let retryable = RETRYABLE_CODES.contains(&code.as_str());
            let mut verdict = Verdict::new(
                Reason::AzureRequestFailed,
                with_request_id(
                    format!(
                        "Azure refused {what} with HTTP {status} {code}: {message}{}",
                        if retryable {
                            "; the operator tries again with backoff"
                        } else {
                            "; fix the cause and change the object to try again"
                        }
                    ),
                    request_id.as_deref(),
                ),
                request_id,
            );
            if retryable {
                verdict.status = ConditionStatus::Unknown;
            }
            verdict
        }
        ArmError::Credential { reason } => Verdict::new(
            Reason::AzureAuthorizationFailed,
            format!(
                "The operator could not get a token for ARM to send {what}: {reason}. Check its credential (--azure-credential, AZURE_TENANT_ID, AZURE_CLIENT_ID, the federated token or client secret file)."
            ),
            None,
        ),
        ArmError::Unreachable { .. } | ArmError::Malformed { .. } | ArmError::Down { .. } => {
            Verdict::new(
                Reason::MetadataResolverBadGatewayError,
                format!(
                    "Azure could not answer {what} ({error}); the operator tries again with backoff."
                ),
                request_id,
            )
        }
    }
}

/// The condition a PUT of a customer subscription leads to.
pub fn decide_put(
    subscription_id: &str,
    registration_arm_id: &str,
    answer: &Result<ArmCustomerSubscription, ArmError>,
) -> Verdict {
    match answer {
        Ok(added) => Verdict::new(
            Reason::Attached,
            with_request_id(
                format!(
                    "Azure added subscription {subscription_id} to registration {registration_arm_id}; its tenant's usage is billed to it."
                ),
                added.request_id.as_deref(),
            ),
            added.request_id.clone(),
        ),
        Err(error) => classify_failure(
            &format!("adding subscription {subscription_id} to registration {registration_arm_id}"),
            error,
        ),
    }
}

/// What a PUT's answer says about the registration's multitenancy approval: approved after a
/// success, not approved after `UnauthorizedCspRegistration`, nothing otherwise.
pub fn approval_learnt(answer: &Result<ArmCustomerSubscription, ArmError>) -> Option<bool> {
    match answer {
        Ok(_) => Some(true),
        Err(ArmError::Answered { code, .. })
            if code == Reason::UnauthorizedCspRegistration.as_str() =>
        {
            Some(false)
        }
        Err(_) => None,
    }
}

/// The MultitenancyApproved condition from what PUTs taught: `None` until one answered.
pub fn approval_condition(registration_arm_id: &str, learnt: Option<bool>) -> (Reason, String) {
    match learnt {
        None => (
            Reason::NotYetKnown,
            format!(
                "No customer subscription has been added to registration {registration_arm_id} yet; Azure's answer to the first one tells whether it is approved for multitenancy."
            ),
        ),
        Some(true) => (
            Reason::Approved,
            format!(
                "Azure accepted a customer subscription for registration {registration_arm_id}: it is approved for multitenancy."
            ),
        ),
        Some(false) => (
            Reason::UnauthorizedCspRegistration,
            format!(
                "Azure answered UnauthorizedCspRegistration for registration {registration_arm_id}: it is not approved for multitenancy; ask Microsoft to approve it before adding customer subscriptions."
            ),
        ),
    }
}

/// The Ready condition of a Registration from ARM's answer to its GET.
pub fn decide_registration(
    registration: &Registration,
    registration_arm_id: &str,
    answer: &Result<ArmRegistration, ArmError>,
) -> Verdict {
    let found = match answer {
        Ok(found) => found,
        Err(ArmError::Answered {
            status: 404,
            code,
            message,
            request_id,
            ..
        }) => {
            return Verdict::new(
                Reason::RegistrationNotFound,
                with_request_id(
                    format!(
                        "Azure has no registration {registration_arm_id} ({code}: {message}); check spec.subscriptionId, spec.resourceGroup and the registration name."
                    ),
                    request_id.as_deref(),
                ),
                request_id.clone(),
            );
        }
        Err(error) => {
            return classify_failure(
                &format!("reading registration {registration_arm_id}"),
                error,
            );
        }
    };
    let spec = &registration.spec;
    let mut mismatches = Vec::new();
    if let Some(model) = &found.billing_model
        && !model.eq_ignore_ascii_case(spec.billing_model.as_str())
    {
        mismatches.push(format!(
            "billing model {model} in Azure, {} in spec.billingModel",
            spec.billing_model
        ));
    }
    if let Some(cloud) = found.cloud_id.as_deref().map(GuidText::parse)
        && cloud != GuidText::parse(&spec.cloud_id)
    {
        mismatches.push(format!(
            "cloudId {cloud} in Azure, {} in spec.cloudId",
            GuidText::parse(&spec.cloud_id)
        ));
    }
    if !mismatches.is_empty() {
        return Verdict::new(
            Reason::RegistrationMismatch,
            with_request_id(
                format!(
                    "Registration {registration_arm_id} differs from spec: {}; fix spec to match the stamp's registration, or point it at the right one.",
                    mismatches.join("; ")
                ),
                found.request_id.as_deref(),
            ),
            found.request_id.clone(),
        );
    }
    Verdict::new(
        Reason::Registered,
        with_request_id(
            format!("Registration {registration_arm_id} exists in Azure and matches spec."),
            found.request_id.as_deref(),
        ),
        found.request_id.clone(),
    )
}

/// A CustomerSubscription of a Registration, as drift detection sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared<K> {
    pub key: K,
    /// Lower-case subscription GUID.
    pub subscription_id: String,
    /// Its Ready condition says Attached: Azure held it when it was decided.
    pub attached: bool,
}

/// What a LIST of the registration's customerSubscriptions says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift<K> {
    /// Attached objects whose tenant is missing in Azure: PUT them again.
    pub reattach: Vec<K>,
    /// Tenants in Azure no object declares, sorted (lower-case GUIDs).
    pub unmanaged: Vec<String>,
}

/// Compares the declared CustomerSubscriptions with the ones Azure holds (lower-case names).
pub fn drift<K: Clone>(declared: &[Declared<K>], in_azure: &BTreeSet<String>) -> Drift<K> {
    let declared_ids: BTreeSet<&str> = declared
        .iter()
        .map(|d| d.subscription_id.as_str())
        .collect();
    Drift {
        reattach: declared
            .iter()
            .filter(|d| d.attached && !in_azure.contains(&d.subscription_id))
            .map(|d| d.key.clone())
            .collect(),
        unmanaged: in_azure
            .iter()
            .filter(|id| !declared_ids.contains(id.as_str()))
            .cloned()
            .collect(),
    }
}

/// How many unmanaged ids the InSync message names.
const NAMED_UNMANAGED: usize = 10;

/// The InSync condition of a Registration from its unmanaged tenants.
pub fn in_sync_condition(
    registration_arm_id: &str,
    unmanaged: &[String],
    prune: bool,
) -> (Reason, String) {
    if unmanaged.is_empty() {
        return (
            Reason::InSync,
            format!(
                "Every customer subscription of registration {registration_arm_id} in Azure is declared by a CustomerSubscription."
            ),
        );
    }
    let named: Vec<&str> = unmanaged
        .iter()
        .take(NAMED_UNMANAGED)
        .map(String::as_str)
        .collect();
    let more = unmanaged.len().saturating_sub(NAMED_UNMANAGED);
    let remedy = if prune {
        "spec.pruneUnmanaged is true: the operator removes them from Azure"
    } else {
        "declare them with CustomerSubscriptions, or set spec.pruneUnmanaged: true to have the operator remove them from Azure"
    };
    (
        Reason::UnmanagedCustomerSubscriptions,
        format!(
            "Registration {registration_arm_id} holds {} customer subscription(s) in Azure that no CustomerSubscription declares: {}{}; {remedy}.",
            unmanaged.len(),
            named.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
        ),
    )
}

/// The Ready condition of a CustomerSubscription whose tenant is being removed in Azure.
pub fn detaching(subscription_id: &str, registration_arm_id: &str, error: &ArmError) -> Verdict {
    let failure = classify_failure(
        &format!("removing subscription {subscription_id} from registration {registration_arm_id}"),
        error,
    );
    Verdict {
        reason: Reason::Detaching,
        status: Reason::Detaching.status(),
        message: format!(
            "{} The CustomerSubscription is deleted once Azure has removed the tenant; to delete it without removing the tenant, annotate it csp.azurestack.io/deletion-policy=orphan.",
            failure.message.trim_end_matches('.').to_string() + "."
        ),
        request_id: failure.request_id,
        retry_after: error.retry_after(),
    }
}
