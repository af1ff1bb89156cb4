//! The CustomerSubscription controller: gather facts from stores and the resolver, let the
//! policy decide, write the Ready condition.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use kube::{ResourceExt, runtime::controller::Action};
use tracing::instrument;

use super::{Error, context::Context, context::Kind, index::ObjKey, write};
use crate::{
    api::{BillingModel, CustomerSubscription, CustomerSubscriptionStatus},
    conditions::{self, READY},
    domain::{ResolveError, SubscriptionMetadata},
    guid::Guid,
    policy::{self, CustomerDecision, CustomerFacts, Seniority},
    runtime::metrics::CUSTOMER_SUBSCRIPTION,
};

/// Field manager of the status this controller writes.
pub const MANAGER: &str = "azs-csp-operator-customersubscription";

type Lookup = Result<Option<Arc<SubscriptionMetadata>>, ResolveError>;

/// The metadata of the subscription a spec field names; text that is not a GUID names none.
pub(super) async fn lookup_subscription(ctx: &Context, id: &str) -> Lookup {
    match Guid::parse(id) {
        Some(id) => ctx.resolver.subscription(id).await,
        None => Ok(None),
    }
}

/// Rules 0–7 for one CustomerSubscription, with the lookups they need.
pub(super) async fn evaluate(ctx: &Context, customer: &CustomerSubscription) -> CustomerDecision {
    let namespace = customer.namespace().unwrap_or_default();
    let registration = ctx.registrations.get(&ObjKey::new(
        &namespace,
        &customer.spec.registration_ref.name,
    ));
    // Lookups only matter once rules 0–2 pass; skipping them otherwise spares the upstream.
    let needs_lookups = Guid::parse(&customer.spec.subscription_id).is_some()
        && registration.as_ref().is_some_and(|r| {
            r.metadata.deletion_timestamp.is_none()
                && r.spec.billing_model == BillingModel::PayAsYouUse
        });
    let (approval, registration_subscription, customer_subscription) = match &registration {
        Some(reg) if needs_lookups => {
            let key = policy::registration_key(reg);
            futures::join!(
                ctx.resolver.multitenancy_approved(&key),
                lookup_subscription(ctx, &reg.spec.subscription_id),
                lookup_subscription(ctx, &customer.spec.subscription_id),
            )
        }
        _ => (Ok(true), Ok(None), Ok(None)),
    };
    policy::evaluate_customer(&CustomerFacts {
        customer,
        registration: registration.as_deref(),
        approval: &approval,
        registration_subscription: &registration_subscription,
        customer_subscription: &customer_subscription,
    })
}

/// Rule 8 over the older siblings of the same Registration that pass rules 0–7.
async fn apply_duplicate_rule(
    ctx: &Context,
    customer: &CustomerSubscription,
    decision: &mut CustomerDecision,
) {
    let Some(eligible) = decision.eligible.clone() else {
        return;
    };
    let namespace = customer.namespace().unwrap_or_default();
    let me = Seniority::of(customer);
    let registration = ObjKey::new(&namespace, &customer.spec.registration_ref.name);
    let mut older = Vec::new();
    let candidates = ctx.index.duplicate_candidates(
        &registration,
        eligible.subscription_id,
        eligible.tenant_id.map(Into::into),
    );
    for key in candidates {
        let Some(sibling) = ctx.customers.get(&key) else {
            continue;
        };
        let rank = Seniority::of(&sibling);
        if rank >= me || sibling.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(theirs) = evaluate(ctx, &sibling).await.eligible {
            older.push((rank, theirs));
        }
    }
    if let Some(duplicate) =
        policy::find_duplicate((&me, &eligible), older.iter().map(|(r, e)| (r, e)))
    {
        policy::reject_duplicate(decision, &namespace, &duplicate);
    }
}

fn desired_status(
    customer: &CustomerSubscription,
    decision: &CustomerDecision,
    ctx: &Context,
) -> CustomerSubscriptionStatus {
    let generation = customer.metadata.generation;
    let mut conditions = customer
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions::set_condition(
        &mut conditions,
        READY,
        decision.reason,
        &decision.message,
        generation,
        ctx.clock.as_ref(),
    );
    CustomerSubscriptionStatus {
        observed_generation: generation,
        arm_resource_id: decision.arm_resource_id.clone(),
        tenant_id: decision.tenant_id.map(|t| t.to_string()),
        billing_partner_id: decision.billing_partner_id.clone(),
        reseller_partner_id: decision.reseller_partner_id.clone(),
        azure: None,
        usage: customer.status.as_ref().and_then(|s| s.usage.clone()),
        conditions,
    }
}

#[instrument(skip_all, fields(namespace = customer.namespace().unwrap_or_default(), name = customer.name_any()))]
pub async fn reconcile(
    customer: Arc<CustomerSubscription>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_one(customer, &ctx).await;
    let outcome = result.as_ref().map(|_| ()).map_err(Error::category);
    ctx.metrics
        .observe_reconcile(CUSTOMER_SUBSCRIPTION, outcome, started.elapsed());
    result
}

async fn reconcile_one(
    customer: Arc<CustomerSubscription>,
    ctx: &Context,
) -> Result<Action, Error> {
    if let Some(azure) = &ctx.azure {
        return super::azure::customer_subscription::reconcile(ctx, azure, customer).await;
    }
    if customer.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    tracing::debug!(
        resource_version = customer.resource_version().unwrap_or_default(),
        "reconciling"
    );
    let mut decision = evaluate(ctx, &customer).await;
    apply_duplicate_rule(ctx, &customer, &mut decision).await;

    let desired = desired_status(&customer, &decision, ctx);
    let key = ObjKey::of(customer.as_ref());
    let written = write::record_decision(
        ctx,
        customer.as_ref(),
        customer.status.as_ref(),
        &desired,
        decision.reason,
        &decision.message,
    )
    .await?;
    if let Some(written) = written {
        ctx.own_writes.record(&key, written.resource_version);
    }
    Ok(next_action(
        ctx,
        Kind::CustomerSubscription,
        &key,
        decision.reason.is_transient(),
    ))
}

/// After a reconcile that wrote what it decided: an undecided outcome waits for the upstream
/// while it is treated as down (its recovery re-evaluates every waiting object at once), else
/// retries with backoff; a decided one resets the object's backoff and waits for a change (or
/// the resolver's refresh).
pub(super) fn next_action(ctx: &Context, kind: Kind, key: &ObjKey, transient: bool) -> Action {
    let waiter = (kind, key.clone());
    if transient {
        if ctx.waiting.park_while_down(&waiter, || ctx.upstream_down()) {
            return Action::await_change();
        }
        return Action::requeue(ctx.backoff.next_delay(kind, key));
    }
    ctx.waiting.leave(&waiter);
    ctx.backoff.reset(kind, key);
    match ctx.refresh_after() {
        // Refreshed when the re-evaluation after an outage is over (see `Waiting`).
        Some(_) if ctx.waiting.defer_refresh(&waiter) => Action::await_change(),
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    }
}

pub fn error_policy(
    customer: Arc<CustomerSubscription>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    tracing::warn!(namespace = customer.namespace().unwrap_or_default(), name = customer.name_any(), %error, "reconcile failed");
    let delay = ctx
        .backoff
        .next_delay(Kind::CustomerSubscription, &ObjKey::of(customer.as_ref()));
    Action::requeue(delay.max(Duration::from_millis(100)))
}
