//! The rule table of DESIGN.md §2 as pure functions: facts in, a decision out.
//!
//! No client, no clock, no async. The controllers gather the facts (from reflector stores
//! and the resolver) and write the decisions; everything in between lives here.

pub mod azure;
#[cfg(test)]
mod azure_tests;
mod customer_subscription;
mod reason;
mod registration;
#[cfg(test)]
mod tests;

pub use customer_subscription::{
    CustomerDecision, CustomerFacts, Duplicate, Eligible, Rejection, Seniority, Shape, check_shape,
    evaluate_customer, find_duplicate, pending_decision, reject_duplicate,
};
pub use reason::Reason;
pub use registration::{
    ApprovalDecision, RegistrationDecision, RegistrationFacts, arm_resource_id, cloud_id_owner,
    cluster_blocker, evaluate_registration, registration_key,
};

/// A lookup that failed because no catalog has loaded yet leaves the decision pending
/// (`Reconciling`); every other failure is the upstream's (`MetadataResolverBadGatewayError`).
fn lookup_failure_reason(error: &crate::domain::ResolveError) -> Reason {
    match error {
        crate::domain::ResolveError::CatalogUnavailable { .. } => Reason::Reconciling,
        _ => Reason::MetadataResolverBadGatewayError,
    }
}
