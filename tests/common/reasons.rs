//! The Ready reasons of this operator's objects, and waiting for one.

use azs_csp_operator::api::{Condition, CustomerSubscription, Registration};
use azs_csp_testkit::cluster::{TestNamespace, wait_for};

fn ready(conditions: &[Condition]) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == "Ready")
}

/// The Ready reason of a CustomerSubscription, when written for its current generation.
pub fn customer_reason(cs: &CustomerSubscription) -> Option<String> {
    let status = cs.status.as_ref()?;
    let condition = ready(&status.conditions)?;
    (condition.observed_generation == cs.metadata.generation).then(|| condition.reason.clone())
}

/// The Ready reason of a Registration, when written for its current generation.
pub fn registration_reason(reg: &Registration) -> Option<String> {
    let status = reg.status.as_ref()?;
    let condition = ready(&status.conditions)?;
    (condition.observed_generation == reg.metadata.generation).then(|| condition.reason.clone())
}

/// Waits until the CustomerSubscription's Ready reason (current generation) is `reason`.
pub async fn wait_customer_reason(
    ns: &TestNamespace,
    name: &str,
    reason: &str,
) -> CustomerSubscription {
    wait_for(
        &ns.api::<CustomerSubscription>(),
        name,
        &format!("Ready reason {reason}"),
        |cs| customer_reason(cs).as_deref() == Some(reason),
    )
    .await
}

/// Waits until the Registration's Ready reason (current generation) is `reason`.
pub async fn wait_registration_reason(
    ns: &TestNamespace,
    name: &str,
    reason: &str,
) -> Registration {
    wait_for(
        &ns.api::<Registration>(),
        name,
        &format!("Ready reason {reason}"),
        |r| registration_reason(r).as_deref() == Some(reason),
    )
    .await
}
