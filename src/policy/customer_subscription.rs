use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{Reason, lookup_failure_reason, registration::arm_resource_id};
use crate::{
    api::{BillingModel, CustomerSubscription, Registration},
    domain::{ResolveError, SubscriptionMetadata},
    guid::{Guid, GuidText},
};

/// Everything rules 0–7 depend on, gathered by the controller.
pub struct CustomerFacts<'a> {
    pub customer: &'a CustomerSubscription,
    /// The Registration named by spec.registrationRef in the same namespace, if it exists.
    pub registration: Option<&'a Registration>,
    /// Multitenancy approval of that Registration.
    pub approval: &'a Result<bool, ResolveError>,
    /// Metadata of the Registration's subscription; `Ok(None)` when unknown.
    pub registration_subscription: &'a Result<Option<Arc<SubscriptionMetadata>>, ResolveError>,
    /// Metadata of the customer subscription; `Ok(None)` when unknown.
    pub customer_subscription: &'a Result<Option<Arc<SubscriptionMetadata>>, ResolveError>,
}

/// A CustomerSubscription that passes rules 0–7: what it maps, for the duplicate rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eligible {
    pub subscription_id: Guid,
    /// spec.tenantId, else the resolved one.
    pub tenant_id: Option<Guid>,
}

/// Order among siblings for the duplicate rule: oldest creationTimestamp, then name, wins.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seniority {
    pub created: Option<Time>,
    pub name: String,
}

impl Seniority {
    pub fn of(customer: &CustomerSubscription) -> Self {
        Self {
            created: customer.metadata.creation_timestamp.clone(),
            name: customer.name_any(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CustomerDecision {
    pub reason: Reason,
    pub message: String,
    /// Set when rules 0–7 pass; the duplicate rule compares it with older siblings.
    pub eligible: Option<Eligible>,
    pub arm_resource_id: Option<String>,
    pub tenant_id: Option<Guid>,
    pub billing_partner_id: Option<String>,
    pub reseller_partner_id: Option<String>,
}

/// What rules 0–2 establish about a CustomerSubscription: its GUIDs as parsed and the
/// Registration it is added to. Both modes check these rules first (DESIGN.md §8).
#[derive(Clone, Debug)]
pub struct Shape<'a> {
    pub subscription_id: Guid,
    /// spec.tenantId, when set.
    pub spec_tenant: Option<Guid>,
    pub registration: &'a Registration,
    /// The registration's ARM resource id.
    pub registration_arm_id: String,
    /// The customerSubscription's ARM resource id.
    pub customer_arm_id: String,
}

/// Why rules 0–2 refuse a CustomerSubscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
    /// Known once the Registration is (rule 2 fails after it).
    pub arm_resource_id: Option<String>,
}

impl Rejection {
    fn new(reason: Reason, message: String) -> Self {
        Self {
            reason,
            message,
            arm_resource_id: None,
        }
    }

    /// `decision` turned into this rejection.
    pub fn reject(self, mut decision: CustomerDecision) -> CustomerDecision {
        decision.arm_resource_id = self.arm_resource_id.or(decision.arm_resource_id);
        reject(decision, self.reason, self.message)
    }
}

fn reject(mut decision: CustomerDecision, reason: Reason, message: String) -> CustomerDecision {
    decision.reason = reason;
    decision.message = message;
    decision
}

/// Rules 0 (GUIDs), 1 (the Registration exists and is not being deleted) and 2 (PayAsYouUse).
pub fn check_shape<'a>(
    customer: &CustomerSubscription,
    registration: Option<&'a Registration>,
) -> Result<Shape<'a>, Rejection> {
    let spec = &customer.spec;
    // Rule 0: admission enforces the GUID shape too; this guards objects stored before it did.
    let Some(subscription_id) = Guid::parse(&spec.subscription_id) else {
        return Err(Rejection::new(
            Reason::InvalidCustomerSubscriptionId,
            format!(
                "spec.subscriptionId {:?} is not a GUID; write the customer's Azure subscription ID as xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx.",
                spec.subscription_id
            ),
        ));
    };
    let spec_tenant = match spec.tenant_id.as_deref().map(|t| (t, Guid::parse(t))) {
        None => None,
        Some((_, Some(tenant))) => Some(tenant),
        Some((raw, None)) => {
            return Err(Rejection::new(
                Reason::InvalidCustomerSubscriptionId,
                format!(
                    "spec.tenantId {raw:?} is not a GUID; write the customer's directory tenant ID as xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx or leave it out."
                ),
            ));
        }
    };

    // Rule 1.
    let namespace = customer.namespace().unwrap_or_default();
    let registration = match registration {
        Some(r) if r.metadata.deletion_timestamp.is_none() => r,
        Some(_) => {
            return Err(Rejection::new(
                Reason::RegistrationNotFound,
                format!(
                    "Registration {namespace}/{} is being deleted; point spec.registrationRef at another Registration in this namespace.",
                    spec.registration_ref.name
                ),
            ));
        }
        None => {
            return Err(Rejection::new(
                Reason::RegistrationNotFound,
                format!(
                    "Registration {namespace}/{} does not exist; create it or fix spec.registrationRef.name (it must be in the same namespace).",
                    spec.registration_ref.name
                ),
            ));
        }
    };
    let registration_arm_id = arm_resource_id(registration);
    let customer_arm_id = format!("{registration_arm_id}/customerSubscriptions/{subscription_id}");

    // Rule 2.
    let model = registration.spec.billing_model;
    if model != BillingModel::PayAsYouUse {
        return Err(Rejection {
            reason: Reason::CustomerSubscriptionsNotAllowed,
            message: format!(
                "Registration {registration_arm_id} uses billing model {model}; customer subscriptions can only be added to a PayAsYouUse registration."
            ),
            arm_resource_id: Some(customer_arm_id),
        });
    }
    Ok(Shape {
        subscription_id,
        spec_tenant,
        registration,
        registration_arm_id,
        customer_arm_id,
    })
}

/// An undecided decision: `Attached` with nothing resolved, for the rules to fill in.
pub fn pending_decision() -> CustomerDecision {
    CustomerDecision {
        reason: Reason::Attached,
        message: String::new(),
        eligible: None,
        arm_resource_id: None,
        tenant_id: None,
        billing_partner_id: None,
        reseller_partner_id: None,
    }
}

/// Rules 0–7 of DESIGN.md §2: the first failing rule gives the reason. A decision that
/// passes them is `Attached` with `eligible` set, pending the duplicate rule ([`find_duplicate`]).
pub fn evaluate_customer(facts: &CustomerFacts<'_>) -> CustomerDecision {
    let meta = match facts.customer_subscription {
        Ok(Some(meta)) => Some(meta.as_ref()),
        _ => None,
    };
    let mut decision = CustomerDecision {
        tenant_id: meta.and_then(|m| m.tenant_id),
        billing_partner_id: meta.and_then(|m| m.billing_partner_id.clone()),
        reseller_partner_id: meta.and_then(|m| m.reseller_partner_id.clone()),
        ..pending_decision()
    };
    let Shape {
        subscription_id,
        spec_tenant,
        registration,
        registration_arm_id,
        customer_arm_id,
    } = match check_shape(facts.customer, facts.registration) {
        Ok(shape) => shape,
        Err(rejection) => return rejection.reject(decision),
    };
    decision.arm_resource_id = Some(customer_arm_id);

    // Rule 3 (an approval that could not be looked up falls to rule 4).
    if let Ok(false) = facts.approval {
        return reject(
            decision,
            Reason::UnauthorizedCspRegistration,
            format!(
                "Registration {registration_arm_id} is not approved for multitenancy; ask Microsoft to approve it before adding customer subscriptions."
            ),
        );
    }

    // Rule 4.
    let lookups = [
        (
            "the multitenancy approval of the registration",
            facts.approval.as_ref().err(),
        ),
        (
            "the registration subscription",
            facts.registration_subscription.as_ref().err(),
        ),
        (
            "the customer subscription",
            facts.customer_subscription.as_ref().err(),
        ),
    ];
    if let Some((what, Some(error))) = lookups.iter().find(|(_, e)| e.is_some()) {
        let reason = lookup_failure_reason(error);
        let message = if reason == Reason::Reconciling {
            format!(
                "The decision is pending: metadata for {what} is not available yet ({error}); it is made as soon as the catalog loads."
            )
        } else {
            format!(
                "Metadata for {what} could not be resolved ({error}); the upstream metadata server failed and the operator retries with backoff."
            )
        };
        return reject(decision, reason, message);
    }

    // Rule 5.
    let Some(meta) = meta else {
        return reject(
            decision,
            Reason::InvalidCustomerSubscriptionId,
            format!(
                "Subscription {subscription_id} is not a known Azure subscription; check spec.subscriptionId."
            ),
        );
    };
    if !meta.state.is_active() {
        return reject(
            decision,
            Reason::InvalidCustomerSubscriptionId,
            format!(
                "Subscription {subscription_id} is {}; only Enabled, Warned or PastDue subscriptions can be added. Re-enable it or use another subscription.",
                meta.state
            ),
        );
    }
    let resolved_tenant = meta.tenant_id;
    if let Some(tenant) = spec_tenant
        && resolved_tenant != Some(tenant)
    {
        return reject(
            decision,
            Reason::InvalidCustomerSubscriptionId,
            format!(
                "Subscription {subscription_id} belongs to tenant {}, not to spec.tenantId {tenant}; fix spec.tenantId or spec.subscriptionId.",
                resolved_tenant.map_or_else(|| "(unknown)".to_string(), |t| t.to_string())
            ),
        );
    }

    // Rule 6.
    if !meta.is_csp() {
        return reject(
            decision,
            Reason::InvalidCSPSubscription,
            format!(
                "Subscription {subscription_id} has offer {:?}, not CSP; only CSP subscriptions can be added to a registration.",
                meta.offer
            ),
        );
    }

    // Rule 7: compare the collecting partner (the indirect provider, not the reseller).
    let registration_partner = match facts.registration_subscription {
        Ok(Some(reg)) => reg.billing_partner_id.as_deref(),
        _ => None,
    };
    let customer_partner = meta.billing_partner_id.as_deref();
    match (customer_partner, registration_partner) {
        (Some(customer), Some(registration)) if customer == registration => {}
        (customer, None) => {
            return reject(
                decision,
                Reason::BadCustomerSubscriptionId,
                format!(
                    "Customer subscription {subscription_id} is collected by CSP partner {}, but registration subscription {} has no CSP billing partner, so registration {registration_arm_id} can add no customers.",
                    customer.unwrap_or("(none)"),
                    GuidText::parse(&registration.spec.subscription_id)
                ),
            );
        }
        (customer, Some(registration_partner)) => {
            return reject(
                decision,
                Reason::BadCustomerSubscriptionId,
                format!(
                    "Customer subscription {subscription_id} is collected by CSP partner {}, but registration {registration_arm_id} is collected by {registration_partner}; a registration can only add its own partner's customers.",
                    customer.unwrap_or("(none)")
                ),
            );
        }
    }

    decision.eligible = Some(Eligible {
        subscription_id,
        tenant_id: spec_tenant.or(resolved_tenant),
    });
    decision.message = format!(
        "Subscription {subscription_id} is attached to registration {registration_arm_id}; its tenant's usage is billed to it."
    );
    decision
}

/// The older sibling that keeps the mapping a younger CustomerSubscription duplicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Duplicate<'a> {
    pub older: &'a str,
    /// True when the subscription matches; otherwise only the tenant does.
    pub same_subscription: bool,
}

/// Rule 8: the oldest sibling, among those older than `me` that passed rules 0–7, that maps the
/// same subscription or the same tenant. Siblings are CustomerSubscriptions of the same
/// Registration; `me` itself may be among them and is ignored.
pub fn find_duplicate<'a, I>(me: (&Seniority, &Eligible), siblings: I) -> Option<Duplicate<'a>>
where
    I: IntoIterator<Item = (&'a Seniority, &'a Eligible)>,
{
    let (my_rank, mine) = me;
    siblings
        .into_iter()
        .filter(|(rank, _)| *rank < my_rank)
        .filter_map(|(rank, other)| {
            let same_subscription = other.subscription_id == mine.subscription_id;
            let same_tenant = mine.tenant_id.is_some() && other.tenant_id == mine.tenant_id;
            (same_subscription || same_tenant).then_some((rank, same_subscription))
        })
        .min_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(rank, same_subscription)| Duplicate {
            older: rank.name.as_str(),
            same_subscription,
        })
}

/// Turns an eligible decision into a `DuplicateCustomerSubscription` rejection.
pub fn reject_duplicate(
    decision: &mut CustomerDecision,
    namespace: &str,
    duplicate: &Duplicate<'_>,
) {
    let Some(eligible) = &decision.eligible else {
        return;
    };
    let what = if duplicate.same_subscription {
        format!("subscription {}", eligible.subscription_id)
    } else {
        format!(
            "a subscription of tenant {}",
            eligible
                .tenant_id
                .map_or_else(|| "(unknown)".to_string(), |t| t.to_string())
        )
    };
    decision.reason = Reason::DuplicateCustomerSubscription;
    decision.message = format!(
        "CustomerSubscription {namespace}/{}, created earlier, already adds {what} to this registration; a registration takes one customer subscription per tenant. Delete one of them.",
        duplicate.older
    );
}
