//! The Registration controller: deletion protection, the Ready and MultitenancyApproved
//! conditions, and the count of attached customers.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use kube::{ResourceExt, runtime::controller::Action};
use tracing::{info, instrument};

use super::{
    Error, context::Context, context::Kind, customer_subscription::lookup_subscription,
    customer_subscription::next_action, index::ObjKey, index::is_attached, write,
};
use crate::{
    api::{Registration, RegistrationStatus},
    conditions::{self, MULTITENANCY_APPROVED, READY},
    policy::{self, RegistrationDecision, RegistrationFacts},
    runtime::metrics::REGISTRATION,
};

/// Field manager of the status this controller writes.
pub const MANAGER: &str = "azs-csp-operator-registration";
/// Field manager of the finalizer, separate so that status applies never touch metadata.
pub const FINALIZER_MANAGER: &str = "azs-csp-operator-finalizer";
/// Holds a Registration while CustomerSubscriptions reference it.
pub const FINALIZER: &str = "csp.azurestack.io/registration-protection";

fn has_finalizer(registration: &Registration) -> bool {
    registration.finalizers().iter().any(|f| f == FINALIZER)
}

async fn set_finalizer(
    ctx: &Context,
    registration: &Registration,
    present: bool,
) -> Result<(), Error> {
    let finalizers: &[&str] = if present { &[FINALIZER] } else { &[] };
    write::apply_finalizers(ctx, registration, FINALIZER_MANAGER, finalizers).await
}

fn desired_status(
    registration: &Registration,
    decision: &RegistrationDecision,
    ctx: &Context,
) -> RegistrationStatus {
    let generation = registration.metadata.generation;
    let mut conditions = registration
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let clock = ctx.clock.as_ref();
    conditions::set_condition(
        &mut conditions,
        READY,
        decision.reason,
        &decision.message,
        generation,
        clock,
    );
    let approval = &decision.approval;
    conditions::set_condition(
        &mut conditions,
        MULTITENANCY_APPROVED,
        approval.reason,
        &approval.message,
        generation,
        clock,
    );
    RegistrationStatus {
        observed_generation: generation,
        arm_resource_id: Some(decision.arm_resource_id.clone()),
        billing_partner_id: decision.billing_partner_id.clone(),
        multitenancy_approved: approval.approved,
        customer_subscription_count: Some(decision.customer_subscription_count),
        azure: None,
        unmanaged_customer_subscriptions: None,
        usage: registration.status.as_ref().and_then(|s| s.usage.clone()),
        conditions,
    }
}

/// Whether `desired` differs from `current` in `customerSubscriptionCount` and nothing else.
fn only_the_count_differs(current: &RegistrationStatus, desired: &RegistrationStatus) -> bool {
    current.customer_subscription_count != desired.customer_subscription_count
        && *current
            == RegistrationStatus {
                customer_subscription_count: current.customer_subscription_count,
                ..desired.clone()
            }
}

#[instrument(skip_all, fields(namespace = registration.namespace().unwrap_or_default(), name = registration.name_any()))]
pub async fn reconcile(
    registration: Arc<Registration>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_one(registration, &ctx).await;
    let outcome = result.as_ref().map(|_| ()).map_err(Error::category);
    ctx.metrics
        .observe_reconcile(REGISTRATION, outcome, started.elapsed());
    result
}

async fn reconcile_one(registration: Arc<Registration>, ctx: &Context) -> Result<Action, Error> {
    let key = ObjKey::of(registration.as_ref());
    let dependents = ctx.index.dependents(&key);
    let deleting = registration.metadata.deletion_timestamp.is_some();
    if deleting && dependents.is_empty() {
        if has_finalizer(&registration) {
            set_finalizer(ctx, &registration, false).await?;
            info!("no CustomerSubscription references it any more; deletion may proceed");
        }
        return Ok(Action::await_change());
    }
    if !deleting && !has_finalizer(&registration) {
        set_finalizer(ctx, &registration, true).await?;
    }

    if let Some(azure) = &ctx.azure {
        let decided =
            super::azure::registration::decide(ctx, azure, &registration, &key, &dependents).await;
        if let Some(wait) = write_spaced(
            ctx,
            &registration,
            &key,
            &decided.desired,
            decided.reason,
            &decided.message,
        )
        .await?
        {
            // Only the count changed: written later; the LIST is not repeated before its time.
            return Ok(Action::requeue(wait.min(decided.resync_in)));
        }
        if decided.retry {
            let waiter = (Kind::Registration, key.clone());
            if ctx.waiting.park_while_down(&waiter, || ctx.upstream_down()) {
                return Ok(Action::await_change());
            }
            let delay = ctx.backoff.next_delay(Kind::Registration, &key);
            return Ok(Action::requeue(
                delay.max(decided.retry_after.unwrap_or_default()),
            ));
        }
        ctx.backoff.reset(Kind::Registration, &key);
        ctx.waiting.leave(&(Kind::Registration, key.clone()));
        return Ok(Action::requeue(decided.resync_in));
    }

    let lookup_key = policy::registration_key(&registration);
    let (subscription, approval) = futures::join!(
        lookup_subscription(ctx, &registration.spec.subscription_id),
        ctx.resolver.multitenancy_approved(&lookup_key),
    );
    let same_cloud_id: Vec<Arc<Registration>> = ctx
        .index
        .same_cloud_id(&registration)
        .iter()
        .filter_map(|k| ctx.registrations.get(k))
        .collect();
    let attached = dependents
        .iter()
        .filter_map(|k| ctx.customers.get(k))
        .filter(|c| is_attached(c))
        .count();
    let decision = policy::evaluate_registration(&RegistrationFacts {
        registration: &registration,
        same_cloud_id: &same_cloud_id,
        subscription: &subscription,
        approval: &approval,
        referencing_customers: dependents.len(),
        attached_customers: attached,
    });

    let desired = desired_status(&registration, &decision, ctx);
    if let Some(wait) = write_spaced(
        ctx,
        &registration,
        &key,
        &desired,
        decision.reason,
        &decision.message,
    )
    .await?
    {
        return Ok(Action::requeue(wait));
    }
    let transient = decision.reason.is_transient() || decision.approval.reason.is_transient();
    Ok(next_action(ctx, Kind::Registration, &key, transient))
}

/// Writes `desired` (and the Event of a new Ready reason), unless only the count changed and
/// that write must wait: then returns how long.
async fn write_spaced(
    ctx: &Context,
    registration: &Registration,
    key: &ObjKey,
    desired: &RegistrationStatus,
    reason: crate::policy::Reason,
    message: &str,
) -> Result<Option<Duration>, Error> {
    if let Some(current) = registration.status.as_ref()
        && only_the_count_differs(current, desired)
        && let Some(wait) = ctx.count_spacing.wait(
            key,
            desired.customer_subscription_count.unwrap_or_default(),
            Instant::now(),
        )
    {
        return Ok(Some(wait));
    }
    let written = write::record_decision(
        ctx,
        registration,
        registration.status.as_ref(),
        desired,
        reason,
        message,
    )
    .await?;
    if written.is_some() {
        ctx.count_spacing.written(key, Instant::now());
    }
    Ok(None)
}

pub fn error_policy(registration: Arc<Registration>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(namespace = registration.namespace().unwrap_or_default(), name = registration.name_any(), %error, "reconcile failed");
    let delay = ctx
        .backoff
        .next_delay(Kind::Registration, &ObjKey::of(registration.as_ref()));
    Action::requeue(delay.max(Duration::from_millis(100)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Condition, ConditionStatus};

    fn status(count: i64, reason: &str) -> RegistrationStatus {
        RegistrationStatus {
            observed_generation: Some(1),
            customer_subscription_count: Some(count),
            conditions: vec![Condition {
                type_: READY.into(),
                status: ConditionStatus::True,
                reason: reason.into(),
                message: "m".into(),
                last_transition_time: None,
                observed_generation: Some(1),
            }],
            ..RegistrationStatus::default()
        }
    }

    #[test]
    fn only_a_count_change_may_wait() {
        let cases = [
            (status(1, "Registered"), status(2, "Registered"), true),
            (status(1, "Registered"), status(1, "Registered"), false),
            (status(1, "Registered"), status(2, "DeletionBlocked"), false),
            (status(1, "Registered"), status(1, "DeletionBlocked"), false),
            (
                status(1, "Registered"),
                RegistrationStatus {
                    observed_generation: Some(2),
                    ..status(2, "Registered")
                },
                false,
            ),
        ];
        for (current, desired, want) in cases {
            assert_eq!(
                only_the_count_differs(&current, &desired),
                want,
                "{current:?} → {desired:?}"
            );
        }
    }
}
