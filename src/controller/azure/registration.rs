//! A Registration in azure mode: the cluster's own rules, then ARM's registration (read once
//! per generation, or until it is found), MultitenancyApproved from what PUTs taught, and
//! every `--azure-resync` the LIST that finds drift.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use kube::Resource;
use rand::Rng;
use tracing::{info, warn};

use super::AzureMode;
use crate::{
    api::{ConditionStatus, Registration, RegistrationAzureStatus, RegistrationStatus},
    conditions::{self, IN_SYNC, MULTITENANCY_APPROVED, READY},
    controller::{
        context::Context,
        events::PendingEvent,
        index::{self, ObjKey},
        write,
    },
    guid::Guid,
    policy::{
        self, Reason,
        azure::{Declared, approval_condition, decide_registration, drift, in_sync_condition},
    },
};

/// What the azure-mode decision of a Registration is, for the shared write path.
pub struct Decided {
    pub desired: RegistrationStatus,
    pub reason: Reason,
    pub message: String,
    /// Undecided: try again with backoff, not before `retry_after`.
    pub retry: bool,
    pub retry_after: Option<Duration>,
    /// When the next LIST is due.
    pub resync_in: Duration,
}

/// The Ready reason ARM's GET already gave this generation, when it is final: the registration
/// is not read again until spec changes (its request id in the message would otherwise
/// rewrite the status at every read). Failures that may heal by themselves are not final.
fn settled(registration: &Registration) -> Option<(Reason, String)> {
    let status = registration.status.as_ref()?;
    let ready = conditions::find(&status.conditions, READY)?;
    if ready.observed_generation != registration.metadata.generation {
        return None;
    }
    [
        Reason::Registered,
        Reason::RegistrationNotFound,
        Reason::RegistrationMismatch,
    ]
    .into_iter()
    .find(|r| r.as_str() == ready.reason)
    .map(|reason| (reason, ready.message.clone()))
}

/// The approval PUTs taught, else what the status says they taught before a restart.
fn learnt_approval(azure: &AzureMode, key: &ObjKey, registration: &Registration) -> Option<bool> {
    azure.approval(key).or_else(|| {
        let status = registration.status.as_ref()?;
        status.azure.as_ref()?;
        let condition = conditions::find(&status.conditions, MULTITENANCY_APPROVED)?;
        match condition.status {
            ConditionStatus::True => Some(true),
            ConditionStatus::False => Some(false),
            ConditionStatus::Unknown => None,
        }
    })
}

fn event(ctx: &Context, registration: &Registration, warning: bool, reason: &str, note: String) {
    ctx.events.send(PendingEvent {
        regarding: registration.object_ref(&()),
        warning,
        reason: reason.to_string(),
        action: "Resync".to_string(),
        note: write::truncate(&note, 1000),
    });
}

/// With jitter, so that Registrations created together do not list together for ever.
fn jittered(interval: Duration) -> Duration {
    interval + interval.mul_f64(0.1 * rand::rng().random::<f64>())
}

pub async fn decide(
    ctx: &Context,
    azure: &AzureMode,
    registration: &Registration,
    key: &ObjKey,
    dependents: &[ObjKey],
) -> Decided {
    let generation = registration.metadata.generation;
    let clock = ctx.clock.as_ref();
    let arm_id = policy::arm_resource_id(registration);
    let arm_key = policy::registration_key(registration);
    let current = registration.status.clone().unwrap_or_default();
    let mut conditions = current.conditions.clone();
    let mut status = RegistrationStatus {
        observed_generation: generation,
        arm_resource_id: Some(arm_id.clone()),
        ..current.clone()
    };

    let same_cloud_id: Vec<_> = ctx
        .index
        .same_cloud_id(registration)
        .iter()
        .filter_map(|k| ctx.registrations.get(k))
        .collect();
    let blocked = policy::cluster_blocker(registration, &same_cloud_id, dependents.len());
    let (reason, message, mut retry, mut retry_after) = if let Some((reason, message)) = blocked {
        conditions::set_condition(&mut conditions, READY, reason, &message, generation, clock);
        (reason, message, false, None)
    } else if let Some((reason, message)) = settled(registration) {
        (reason, message, false, None)
    } else {
        let answer = azure.arm.get_registration(&arm_key).await;
        let verdict = decide_registration(registration, &arm_id, &answer);
        if let Ok(found) = &answer {
            status.azure = Some(RegistrationAzureStatus {
                object_id: found.object_id.clone(),
                cloud_id: found.cloud_id.clone(),
                billing_model: found.billing_model.clone(),
                etag: found.etag.clone(),
                request_id: found.request_id.clone(),
            });
        }
        conditions::set_condition_status(
            &mut conditions,
            READY,
            verdict.status,
            verdict.reason,
            &verdict.message,
            generation,
            clock,
        );
        (
            verdict.reason,
            verdict.message.clone(),
            verdict.is_retried(),
            verdict.retry_after,
        )
    };

    let learnt = learnt_approval(azure, key, registration);
    let (approval, approval_message) = approval_condition(&arm_id, learnt);
    conditions::set_condition(
        &mut conditions,
        MULTITENANCY_APPROVED,
        approval,
        &approval_message,
        generation,
        clock,
    );
    status.multitenancy_approved = learnt;

    let customers: Vec<_> = dependents
        .iter()
        .filter_map(|k| ctx.customers.get(k))
        .collect();
    status.customer_subscription_count = Some(
        i64::try_from(customers.iter().filter(|c| index::is_attached(c)).count())
            .unwrap_or(i64::MAX),
    );

    let now = Instant::now();
    let mut resync_in = azure.resync;
    if reason == Reason::Registered && registration.metadata.deletion_timestamp.is_none() {
        match azure.list_due_in(key, now) {
            Some(wait) => resync_in = wait,
            None => match azure.arm.list_customer_subscriptions(&arm_key).await {
                Ok(in_azure) => {
                    azure.listed(key, now);
                    let in_azure: BTreeSet<String> = in_azure
                        .iter()
                        .filter_map(|c| Guid::parse(&c.name).map(|g| g.to_string()))
                        .collect();
                    let declared: Vec<Declared<ObjKey>> = customers
                        .iter()
                        .filter_map(|c| {
                            Some(Declared {
                                key: ObjKey::of(c.as_ref()),
                                subscription_id: Guid::parse(&c.spec.subscription_id)?.to_string(),
                                attached: index::is_attached(c)
                                    && c.status.as_ref().is_some_and(|s| s.azure.is_some()),
                            })
                        })
                        .collect();
                    let found = drift(&declared, &in_azure);
                    if !found.reattach.is_empty() {
                        warn!(
                            missing = found.reattach.len(),
                            "attached tenants are missing in Azure: adding them again"
                        );
                        let mut affected = index::Affected::default();
                        for customer in &found.reattach {
                            azure.request_reattach(customer);
                            affected.customers.insert(customer.clone());
                        }
                        ctx.router.send(affected);
                    }
                    let prune = registration.spec.prune_unmanaged == Some(true);
                    let mut unmanaged = found.unmanaged;
                    if prune && !unmanaged.is_empty() {
                        unmanaged =
                            prune_unmanaged(ctx, azure, registration, &arm_key, &arm_id, unmanaged)
                                .await;
                    }
                    let (in_sync, in_sync_message) = in_sync_condition(&arm_id, &unmanaged, prune);
                    conditions::set_condition(
                        &mut conditions,
                        IN_SYNC,
                        in_sync,
                        &in_sync_message,
                        generation,
                        clock,
                    );
                    status.unmanaged_customer_subscriptions =
                        Some(i64::try_from(unmanaged.len()).unwrap_or(i64::MAX));
                }
                Err(error) => {
                    warn!(%error, "cannot list the registration's customer subscriptions in Azure");
                    retry = true;
                    retry_after = error.retry_after();
                }
            },
        }
    }
    status.conditions = conditions;
    Decided {
        desired: status,
        reason,
        message,
        retry,
        retry_after,
        resync_in: jittered(resync_in),
    }
}

/// Removes tenants no CustomerSubscription declares (`spec.pruneUnmanaged: true`); returns the
/// ones that are still there.
async fn prune_unmanaged(
    ctx: &Context,
    azure: &AzureMode,
    registration: &Registration,
    arm_key: &crate::domain::RegistrationKey,
    arm_id: &str,
    unmanaged: Vec<String>,
) -> Vec<String> {
    let mut left = Vec::new();
    for subscription_id in unmanaged {
        match azure
            .arm
            .delete_customer_subscription(arm_key, &subscription_id)
            .await
        {
            Ok(deleted) => {
                info!(
                    subscription = subscription_id,
                    request_id = deleted.request_id.as_deref(),
                    "unmanaged tenant removed in Azure"
                );
                event(
                    ctx,
                    registration,
                    false,
                    "Pruned",
                    format!(
                        "Subscription {subscription_id}, which no CustomerSubscription declares, was removed from registration {arm_id} in Azure (spec.pruneUnmanaged is true)."
                    ),
                );
            }
            Err(error) => {
                warn!(subscription = subscription_id, %error, "cannot remove an unmanaged tenant in Azure");
                left.push(subscription_id);
            }
        }
    }
    left
}
