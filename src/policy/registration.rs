use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{Reason, lookup_failure_reason};
use crate::{
    api::Registration,
    domain::{RegistrationKey, ResolveError, SubscriptionMetadata},
    guid::GuidText,
};

/// Everything the Registration decision depends on, gathered by the controller.
pub struct RegistrationFacts<'a> {
    pub registration: &'a Registration,
    /// Other Registrations in the cluster with the same cloudId (case-insensitive).
    pub same_cloud_id: &'a [Arc<Registration>],
    /// The registration subscription's metadata; `Ok(None)` when it is unknown.
    pub subscription: &'a Result<Option<Arc<SubscriptionMetadata>>, ResolveError>,
    pub approval: &'a Result<bool, ResolveError>,
    /// CustomerSubscriptions that name this Registration (any outcome).
    pub referencing_customers: usize,
    /// CustomerSubscriptions attached (Ready=True) to this Registration.
    pub attached_customers: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalDecision {
    pub reason: Reason,
    pub message: String,
    pub approved: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RegistrationDecision {
    pub reason: Reason,
    pub message: String,
    pub approval: ApprovalDecision,
    pub arm_resource_id: String,
    pub billing_partner_id: Option<String>,
    pub customer_subscription_count: i64,
}

/// The ARM id of a registration resource, with the subscription GUID in lower case.
pub fn arm_resource_id(registration: &Registration) -> String {
    let spec = &registration.spec;
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.AzureStack/registrations/{}",
        GuidText::parse(&spec.subscription_id),
        spec.resource_group,
        spec.effective_registration_name(&registration.name_any()),
    )
}

/// The approval lookup key of a registration.
pub fn registration_key(registration: &Registration) -> RegistrationKey {
    let spec = &registration.spec;
    RegistrationKey::new(
        &spec.subscription_id,
        &spec.resource_group,
        spec.effective_registration_name(&registration.name_any()),
    )
}

/// Order of seniority between Registrations sharing a cloudId: the oldest creationTimestamp,
/// then namespace/name, keeps it.
fn seniority(registration: &Registration) -> (Option<&Time>, String, String) {
    (
        registration.metadata.creation_timestamp.as_ref(),
        registration.namespace().unwrap_or_default(),
        registration.name_any(),
    )
}

/// The Registration among `registration` and `others` that owns their shared cloudId.
pub fn cloud_id_owner<'a>(
    registration: &'a Registration,
    others: &'a [Arc<Registration>],
) -> &'a Registration {
    others
        .iter()
        .map(AsRef::as_ref)
        .filter(|other| other.metadata.deletion_timestamp.is_none())
        .fold(registration, |owner, other| {
            if seniority(other) < seniority(owner) {
                other
            } else {
                owner
            }
        })
}

fn qualified_name(registration: &Registration) -> String {
    format!(
        "{}/{}",
        registration.namespace().unwrap_or_default(),
        registration.name_any()
    )
}

fn decide_approval(approval: &Result<bool, ResolveError>, arm_id: &str) -> ApprovalDecision {
    match approval {
        Ok(true) => ApprovalDecision {
            reason: Reason::Approved,
            message: format!("Registration {arm_id} is approved for multitenancy."),
            approved: Some(true),
        },
        Ok(false) => ApprovalDecision {
            reason: Reason::UnauthorizedCspRegistration,
            message: format!(
                "Registration {arm_id} is not approved for multitenancy; ask Microsoft to approve it before adding customer subscriptions."
            ),
            approved: Some(false),
        },
        Err(error) => ApprovalDecision {
            reason: lookup_failure_reason(error),
            message: format!(
                "The multitenancy approval of registration {arm_id} could not be looked up ({error}); the operator retries with backoff."
            ),
            approved: None,
        },
    }
}

/// The Ready reasons a Registration gets from the cluster alone, before anything outside it is
/// asked (both modes): `DeletionBlocked`, then `DuplicateCloudId`.
pub fn cluster_blocker(
    registration: &Registration,
    same_cloud_id: &[Arc<Registration>],
    referencing_customers: usize,
) -> Option<(Reason, String)> {
    if registration.metadata.deletion_timestamp.is_some() && referencing_customers > 0 {
        return Some((
            Reason::DeletionBlocked,
            format!(
                "Registration {} is being deleted but {} CustomerSubscription(s) still reference it; delete them or point them at another Registration to let the deletion finish.",
                qualified_name(registration),
                referencing_customers
            ),
        ));
    }
    let owner = cloud_id_owner(registration, same_cloud_id);
    if !std::ptr::eq(owner, registration) {
        return Some((
            Reason::DuplicateCloudId,
            format!(
                "CloudID {} is already used by Registration {}, created earlier; a stamp has one CloudID and a CloudID one registration, so fix spec.cloudId or delete one of them.",
                GuidText::parse(&registration.spec.cloud_id),
                qualified_name(owner)
            ),
        ));
    }
    None
}

/// Decides a Registration's Ready and MultitenancyApproved conditions.
///
/// Ready, first match wins: DeletionBlocked, DuplicateCloudId, MetadataResolverBadGatewayError,
/// InvalidRegistrationSubscription, Registered.
pub fn evaluate_registration(facts: &RegistrationFacts<'_>) -> RegistrationDecision {
    let registration = facts.registration;
    let spec = &registration.spec;
    let arm_id = arm_resource_id(registration);
    let approval = decide_approval(facts.approval, &arm_id);
    let subscription_id = GuidText::parse(&spec.subscription_id);
    let billing_partner_id = match facts.subscription {
        Ok(Some(meta)) => meta.billing_partner_id.clone(),
        _ => None,
    };

    let (reason, message) = if let Some(blocked) = cluster_blocker(
        registration,
        facts.same_cloud_id,
        facts.referencing_customers,
    ) {
        blocked
    } else {
        match facts.subscription {
            Err(error) => (
                lookup_failure_reason(error),
                format!(
                    "The registration subscription {subscription_id} could not be looked up ({error}); the operator retries with backoff."
                ),
            ),
            Ok(None) => (
                Reason::InvalidRegistrationSubscription,
                format!(
                    "The registration subscription {subscription_id} is not a known Azure subscription; check spec.subscriptionId."
                ),
            ),
            Ok(Some(meta)) if !meta.state.is_active() => (
                Reason::InvalidRegistrationSubscription,
                format!(
                    "The registration subscription {subscription_id} is {}; re-enable it or register with an Enabled subscription.",
                    meta.state
                ),
            ),
            Ok(Some(_)) => (
                Reason::Registered,
                format!(
                    "Registration {arm_id} is registered with billing model {}.",
                    spec.billing_model
                ),
            ),
        }
    };

    RegistrationDecision {
        reason,
        message,
        approval,
        arm_resource_id: arm_id,
        billing_partner_id,
        customer_subscription_count: i64::try_from(facts.attached_customers).unwrap_or(i64::MAX),
    }
}
