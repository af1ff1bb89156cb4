//! A CustomerSubscription in azure mode: local rules 0–2 and 8, then the PUT (once per
//! generation, or when drift finds the tenant gone), ARM's answer as Ready; on deletion the
//! DELETE behind the `csp.azurestack.io/azure-detach` finalizer.

use std::{sync::Arc, time::Duration};

use kube::{Resource, ResourceExt, runtime::controller::Action};
use tracing::{info, warn};

use super::{AzureMode, DELETION_POLICY, DETACH_FINALIZER, FINALIZER_MANAGER};
use crate::{
    api::{
        ConditionStatus, CustomerSubscription, CustomerSubscriptionAzureStatus,
        CustomerSubscriptionStatus, Registration,
    },
    conditions::{self, READY},
    controller::{
        Error,
        context::{Context, Kind},
        customer_subscription::next_action,
        events::PendingEvent,
        index::{self, ObjKey},
        write,
    },
    domain::RegistrationKey,
    guid::Guid,
    policy::{
        self, CustomerDecision, Eligible, Seniority, Shape,
        azure::{Verdict, approval_learnt, decide_put, detaching},
    },
};

fn has_finalizer(customer: &CustomerSubscription) -> bool {
    customer.finalizers().iter().any(|f| f == DETACH_FINALIZER)
}

/// Whether ARM already decided this generation: nothing to send until the spec changes (or
/// drift asks for a re-PUT). Undecided outcomes and a refused identity are retried.
fn settled(customer: &CustomerSubscription) -> bool {
    let Some(status) = &customer.status else {
        return false;
    };
    status.azure.is_some()
        && conditions::find(&status.conditions, READY).is_some_and(|ready| {
            ready.observed_generation == customer.metadata.generation
                && ready.status != ConditionStatus::Unknown
                && ready.reason != policy::Reason::AzureAuthorizationFailed.as_str()
        })
}

/// What rule 8 compares: the subscription, and the tenant from spec or from Azure's answer.
fn eligible(customer: &CustomerSubscription, shape: &Shape<'_>) -> Eligible {
    Eligible {
        subscription_id: shape.subscription_id,
        tenant_id: shape.spec_tenant.or_else(|| {
            customer
                .status
                .as_ref()
                .and_then(|s| s.tenant_id.as_deref())
                .and_then(Guid::parse)
        }),
    }
}

/// Whether Azure refused this object (Ready False from an ARM answer): it maps nothing there.
fn refused_by_azure(customer: &CustomerSubscription) -> bool {
    customer.status.as_ref().is_some_and(|status| {
        status.azure.is_some()
            && conditions::find(&status.conditions, READY)
                .is_some_and(|ready| ready.status == ConditionStatus::False)
    })
}

/// Rule 8 in azure mode: an older sibling that passes rules 0–2 and that Azure did not refuse
/// holds the mapping, and a second PUT would overwrite it in Azure.
fn duplicate_of(
    ctx: &Context,
    customer: &CustomerSubscription,
    mine: &Eligible,
    decision: &mut CustomerDecision,
) {
    let namespace = customer.namespace().unwrap_or_default();
    let me = Seniority::of(customer);
    let registration = ObjKey::new(&namespace, &customer.spec.registration_ref.name);
    let registration_object = ctx.registrations.get(&registration);
    let mut older = Vec::new();
    for key in ctx.index.duplicate_candidates(
        &registration,
        mine.subscription_id,
        mine.tenant_id.map(Into::into),
    ) {
        let Some(sibling) = ctx.customers.get(&key) else {
            continue;
        };
        let rank = Seniority::of(&sibling);
        if rank >= me || sibling.metadata.deletion_timestamp.is_some() || refused_by_azure(&sibling)
        {
            continue;
        }
        if let Ok(shape) = policy::check_shape(&sibling, registration_object.as_deref()) {
            older.push((rank, eligible(&sibling, &shape)));
        }
    }
    if let Some(duplicate) = policy::find_duplicate((&me, mine), older.iter().map(|(r, e)| (r, e)))
    {
        decision.eligible = Some(mine.clone());
        policy::reject_duplicate(decision, &namespace, &duplicate);
    }
}

/// The status for a decision made without ARM (a local rule failed).
fn local_status(
    customer: &CustomerSubscription,
    decision: &CustomerDecision,
    ctx: &Context,
) -> CustomerSubscriptionStatus {
    let generation = customer.metadata.generation;
    let mut conditions = current_conditions(customer);
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
        usage: current_usage(customer),
        conditions,
        ..CustomerSubscriptionStatus::default()
    }
}

/// The usage controller's totals, carried so that they never look like a change to write.
fn current_usage(customer: &CustomerSubscription) -> Option<crate::api::UsageTotals> {
    customer.status.as_ref().and_then(|s| s.usage.clone())
}

fn current_conditions(customer: &CustomerSubscription) -> Vec<crate::api::Condition> {
    customer
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default()
}

/// The status for ARM's verdict.
fn azure_status(
    customer: &CustomerSubscription,
    verdict: &Verdict,
    arm_resource_id: &str,
    tenant_id: Option<String>,
    ctx: &Context,
) -> CustomerSubscriptionStatus {
    let generation = customer.metadata.generation;
    let mut conditions = current_conditions(customer);
    conditions::set_condition_status(
        &mut conditions,
        READY,
        verdict.status,
        verdict.reason,
        &verdict.message,
        generation,
        ctx.clock.as_ref(),
    );
    CustomerSubscriptionStatus {
        observed_generation: generation,
        arm_resource_id: Some(arm_resource_id.to_string()),
        tenant_id,
        azure: Some(CustomerSubscriptionAzureStatus {
            request_id: verdict.request_id.clone(),
        }),
        usage: current_usage(customer),
        conditions,
        ..CustomerSubscriptionStatus::default()
    }
}

fn event(
    ctx: &Context,
    customer: &CustomerSubscription,
    warning: bool,
    reason: &str,
    action: &str,
    note: String,
) {
    ctx.events.send(PendingEvent {
        regarding: customer.object_ref(&()),
        warning,
        reason: reason.to_string(),
        action: action.to_string(),
        note: write::truncate(&note, 1000),
    });
}

/// After an undecided outcome: wait for ARM while it is treated as down, else back off, never
/// sooner than ARM's `Retry-After`.
fn retry_later(ctx: &Context, key: &ObjKey, retry_after: Option<Duration>) -> Action {
    let waiter = (Kind::CustomerSubscription, key.clone());
    if ctx.waiting.park_while_down(&waiter, || ctx.upstream_down()) {
        return Action::await_change();
    }
    let delay = ctx.backoff.next_delay(Kind::CustomerSubscription, key);
    Action::requeue(delay.max(retry_after.unwrap_or_default()))
}

pub async fn reconcile(
    ctx: &Context,
    azure: &AzureMode,
    customer: Arc<CustomerSubscription>,
) -> Result<Action, Error> {
    let key = ObjKey::of(customer.as_ref());
    if customer.metadata.deletion_timestamp.is_some() {
        return detach(ctx, azure, &customer, &key).await;
    }
    let namespace = customer.namespace().unwrap_or_default();
    let registration_key = ObjKey::new(&namespace, &customer.spec.registration_ref.name);
    let registration = ctx.registrations.get(&registration_key);
    let mut decision = policy::pending_decision();
    let shape = match policy::check_shape(&customer, registration.as_deref()) {
        Ok(shape) => shape,
        Err(rejection) => {
            let decision = rejection.reject(decision);
            return record_local(ctx, &customer, &key, &decision).await;
        }
    };
    decision.arm_resource_id = Some(shape.customer_arm_id.clone());
    let mine = eligible(&customer, &shape);
    duplicate_of(ctx, &customer, &mine, &mut decision);
    if decision.reason == policy::Reason::DuplicateCustomerSubscription {
        return record_local(ctx, &customer, &key, &decision).await;
    }
    let reattach = azure.reattach_requested(&key);
    if !reattach && (settled(&customer) || azure.is_decided(&key, customer.metadata.generation)) {
        return Ok(Action::await_change());
    }

    if !has_finalizer(&customer) {
        // Before the PUT: a tenant added in Azure is always one the operator can remove.
        write::apply_finalizers(
            ctx,
            customer.as_ref(),
            FINALIZER_MANAGER,
            &[DETACH_FINALIZER],
        )
        .await?;
    }
    let arm_key = policy::registration_key(shape.registration);
    let answer = azure
        .arm
        .put_customer_subscription(&arm_key, shape.subscription_id, shape.spec_tenant)
        .await;
    let verdict = decide_put(
        &shape.subscription_id.to_string(),
        &shape.registration_arm_id,
        &answer,
    );
    if let Some(approved) = approval_learnt(&answer)
        && azure.learn_approval(&registration_key, approved)
    {
        let mut affected = index::Affected::default();
        affected.registrations.insert(registration_key.clone());
        ctx.router.send(affected);
    }
    let tenant_id = match &answer {
        Ok(added) => added
            .tenant_id
            .as_deref()
            .and_then(Guid::parse)
            .or(shape.spec_tenant),
        Err(_) => shape.spec_tenant,
    }
    .map(|t| t.to_string());
    let desired = azure_status(&customer, &verdict, &shape.customer_arm_id, tenant_id, ctx);
    let written = write::record_decision(
        ctx,
        customer.as_ref(),
        customer.status.as_ref(),
        &desired,
        verdict.reason,
        &verdict.message,
    )
    .await?;
    if let Some(written) = written {
        ctx.own_writes.record(&key, written.resource_version);
    }
    if verdict.status == ConditionStatus::False {
        // Younger siblings refused as duplicates of this one are decided again: Azure has
        // refused it, so it maps nothing there and no longer holds the subscription or tenant.
        let mut affected = index::Affected::default();
        affected.customers.extend(
            ctx.index
                .duplicate_candidates(
                    &registration_key,
                    mine.subscription_id,
                    mine.tenant_id.map(Into::into),
                )
                .into_iter()
                .filter(|sibling| *sibling != key),
        );
        ctx.router.send(affected);
    }
    if answer.is_ok() && reattach {
        azure.reattach_done(&key);
        info!(
            subscription = %shape.subscription_id,
            "tenant added again after it went missing in Azure"
        );
        event(
            ctx,
            &customer,
            false,
            "Reattached",
            "Reattach",
            format!(
                "Subscription {} was missing from registration {} in Azure and has been added again.",
                shape.subscription_id, shape.registration_arm_id
            ),
        );
    }
    if verdict.is_retried() {
        return Ok(retry_later(ctx, &key, verdict.retry_after));
    }
    if answer.is_err() {
        azure.reattach_done(&key);
    }
    azure.decided(&key, customer.metadata.generation);
    ctx.backoff.reset(Kind::CustomerSubscription, &key);
    ctx.waiting.leave(&(Kind::CustomerSubscription, key));
    Ok(Action::await_change())
}

async fn record_local(
    ctx: &Context,
    customer: &CustomerSubscription,
    key: &ObjKey,
    decision: &CustomerDecision,
) -> Result<Action, Error> {
    let desired = local_status(customer, decision, ctx);
    let written = write::record_decision(
        ctx,
        customer,
        customer.status.as_ref(),
        &desired,
        decision.reason,
        &decision.message,
    )
    .await?;
    if let Some(written) = written {
        ctx.own_writes.record(key, written.resource_version);
    }
    Ok(next_action(
        ctx,
        Kind::CustomerSubscription,
        key,
        decision.reason.is_transient(),
    ))
}

/// Where the tenant of a deleted CustomerSubscription lives in Azure, if the operator can tell.
fn detach_target(
    customer: &CustomerSubscription,
    registration: Option<&Registration>,
) -> Option<(RegistrationKey, String, String)> {
    let registration = registration?;
    let subscription_id = Guid::parse(&customer.spec.subscription_id)?.to_string();
    let arm_id = policy::arm_resource_id(registration);
    Some((
        policy::registration_key(registration),
        subscription_id,
        arm_id,
    ))
}

/// Whether another live CustomerSubscription of the same Registration holds the same tenant
/// in Azure: then removing it would take that one's tenant away.
fn held_by_sibling(ctx: &Context, customer: &CustomerSubscription, subscription_id: &str) -> bool {
    let namespace = customer.namespace().unwrap_or_default();
    let registration = ObjKey::new(&namespace, &customer.spec.registration_ref.name);
    let me = ObjKey::of(customer);
    ctx.index
        .duplicate_candidates(&registration, subscription_id, None)
        .into_iter()
        .filter(|key| *key != me)
        .filter_map(|key| ctx.customers.get(&key))
        .any(|sibling| {
            sibling.metadata.deletion_timestamp.is_none() && index::is_attached(&sibling)
        })
}

async fn detach(
    ctx: &Context,
    azure: &AzureMode,
    customer: &CustomerSubscription,
    key: &ObjKey,
) -> Result<Action, Error> {
    if !has_finalizer(customer) {
        return Ok(Action::await_change());
    }
    let orphan = customer
        .annotations()
        .get(DELETION_POLICY)
        .is_some_and(|p| p == "orphan");
    let registration = ctx.registrations.get(&ObjKey::new(
        &customer.namespace().unwrap_or_default(),
        &customer.spec.registration_ref.name,
    ));
    match detach_target(customer, registration.as_deref()) {
        _ if orphan => info!("deletion policy orphan: the tenant stays in Azure"),
        None => warn!(
            "the Registration is gone: the tenant cannot be removed in Azure and may remain there"
        ),
        Some((_, subscription_id, _)) if held_by_sibling(ctx, customer, &subscription_id) => info!(
            subscription = subscription_id,
            "another CustomerSubscription holds this tenant in Azure: it stays"
        ),
        Some((arm_key, subscription_id, arm_id)) => {
            match azure
                .arm
                .delete_customer_subscription(&arm_key, &subscription_id)
                .await
            {
                Ok(deleted) => {
                    info!(
                        subscription = subscription_id,
                        existed = deleted.existed,
                        request_id = deleted.request_id.as_deref(),
                        "tenant removed in Azure"
                    );
                    event(
                        ctx,
                        customer,
                        false,
                        "Detached",
                        "Detach",
                        format!(
                            "Subscription {subscription_id} was removed from registration {arm_id} in Azure{}; its tenant's usage now goes to the registration subscription.",
                            deleted
                                .request_id
                                .as_deref()
                                .map(|id| format!(" (x-ms-request-id {id})"))
                                .unwrap_or_default()
                        ),
                    );
                }
                Err(error) => {
                    let verdict = detaching(&subscription_id, &arm_id, &error);
                    let desired = azure_status(
                        customer,
                        &verdict,
                        &format!("{arm_id}/customerSubscriptions/{subscription_id}"),
                        customer.status.as_ref().and_then(|s| s.tenant_id.clone()),
                        ctx,
                    );
                    write::record_decision(
                        ctx,
                        customer,
                        customer.status.as_ref(),
                        &desired,
                        verdict.reason,
                        &verdict.message,
                    )
                    .await?;
                    return Ok(retry_later(ctx, key, verdict.retry_after));
                }
            }
        }
    }
    write::remove_finalizer(ctx, customer, DETACH_FINALIZER).await?;
    azure.forget_customer(key);
    ctx.backoff.reset(Kind::CustomerSubscription, key);
    ctx.waiting
        .leave(&(Kind::CustomerSubscription, key.clone()));
    Ok(Action::await_change())
}
