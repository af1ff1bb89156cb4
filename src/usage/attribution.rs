//! Who is billed for a record (DESIGN.md §9): local subscription → directory tenant → the
//! CustomerSubscription of this Registration Attached for that tenant no later than the
//! record's `usageStartTime` → its Azure subscription; otherwise the registration subscription.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kube::ResourceExt;
use serde::Serialize;

use crate::{
    api::{ConditionStatus, CustomerSubscription},
    conditions,
    guid::Guid,
    policy::Reason,
};

/// The stamp's local subscriptions and their directory tenants (`Subscriptions.Admin`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Directory {
    tenants: HashMap<Guid, Guid>,
}

impl Directory {
    /// From `(subscriptionId, tenantId)` pairs; an entry whose ids are not GUIDs is left out
    /// (its records are then rejected as `unknown_subscription`).
    pub fn new<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let tenants = entries
            .into_iter()
            .filter_map(|(subscription, tenant)| {
                Some((Guid::parse(subscription)?, Guid::parse(tenant)?))
            })
            .collect();
        Self { tenants }
    }

    pub fn tenant_of(&self, local_subscription: Guid) -> Option<Guid> {
        self.tenants.get(&local_subscription).copied()
    }
}

/// A CustomerSubscription, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CustomerRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for CustomerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A tenant attached to the registration: since when, and which Azure subscription it bills.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub customer: CustomerRef,
    pub tenant_id: Guid,
    pub subscription_id: Guid,
    /// The `lastTransitionTime` of its Ready condition (True, `Attached`).
    pub attached_since: DateTime<Utc>,
}

impl Attachment {
    /// The attachment `object` holds to the Registration `registration` (its namespace and
    /// name), `None` unless it references it, is Ready=True/`Attached` with a transition time,
    /// and has a tenant (resolved in status, or declared in spec) and a subscription.
    pub fn of(
        object: &CustomerSubscription,
        registration_namespace: &str,
        registration: &str,
    ) -> Option<Self> {
        let namespace = object.namespace()?;
        if namespace != registration_namespace || object.spec.registration_ref.name != registration
        {
            return None;
        }
        let status = object.status.as_ref()?;
        let ready = conditions::find(&status.conditions, conditions::READY)?;
        if ready.status != ConditionStatus::True || ready.reason != Reason::Attached.as_str() {
            return None;
        }
        let since = ready.last_transition_time.as_ref()?.0;
        let attached_since =
            DateTime::from_timestamp_nanos(i64::try_from(since.as_nanosecond()).ok()?);
        let tenant = status
            .tenant_id
            .as_deref()
            .or(object.spec.tenant_id.as_deref())?;
        Some(Self {
            customer: CustomerRef {
                namespace,
                name: object.name_any(),
            },
            tenant_id: Guid::parse(tenant)?,
            subscription_id: Guid::parse(&object.spec.subscription_id)?,
            attached_since,
        })
    }
}

/// The Registration's attached tenants, looked up by tenant.
#[derive(Clone, Debug, Default)]
pub struct Attachments {
    /// Per tenant, earliest attachment first.
    by_tenant: HashMap<Guid, Vec<Attachment>>,
}

impl Attachments {
    pub fn new(attachments: impl IntoIterator<Item = Attachment>) -> Self {
        let mut by_tenant: HashMap<Guid, Vec<Attachment>> = HashMap::new();
        for attachment in attachments {
            by_tenant
                .entry(attachment.tenant_id)
                .or_default()
                .push(attachment);
        }
        for list in by_tenant.values_mut() {
            // Two for one tenant cannot both be Attached (rule 8); should they be, the older
            // attachment wins, as rule 8 keeps the older object.
            list.sort_by(|a, b| {
                (a.attached_since, &a.customer).cmp(&(b.attached_since, &b.customer))
            });
        }
        Self { by_tenant }
    }

    /// The attachment billing `tenant`'s usage that starts at `usage_start`.
    pub fn billing(&self, tenant: Guid, usage_start: DateTime<Utc>) -> Option<&Attachment> {
        self.billing_slot(tenant, usage_start).map(|(_, a)| a)
    }

    /// [`Self::billing`], with a key that names the attachment among these: a party can be
    /// looked up per record without building its [`BilledTo`].
    pub fn billing_slot(
        &self,
        tenant: Guid,
        usage_start: DateTime<Utc>,
    ) -> Option<(Slot, &Attachment)> {
        self.by_tenant
            .get(&tenant)?
            .iter()
            .enumerate()
            .find(|(_, a)| a.attached_since <= usage_start)
            .map(|(i, a)| (Slot::Customer(tenant, i), a))
    }
}

/// Who a record is billed to among one [`Attachments`]: one of its attachments, or the
/// registration subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    Customer(Guid, usize),
    Registration,
}

/// Where a record is billed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BilledTo {
    /// The customer subscription mapped to the record's tenant.
    Customer {
        customer: CustomerRef,
        subscription_id: Guid,
    },
    /// The registration subscription: every tenant not attached (yet).
    Registration { subscription_id: Guid },
}

impl BilledTo {
    /// The Azure subscription billed: the CloudEvent's `subject`.
    pub fn subscription_id(&self) -> Guid {
        match self {
            BilledTo::Customer {
                subscription_id, ..
            }
            | BilledTo::Registration { subscription_id } => *subscription_id,
        }
    }

    /// `customer` or `registration`, as the event's `billedTo`.
    pub fn kind(&self) -> &'static str {
        match self {
            BilledTo::Customer { .. } => "customer",
            BilledTo::Registration { .. } => "registration",
        }
    }

    pub fn customer(&self) -> Option<&CustomerRef> {
        match self {
            BilledTo::Customer { customer, .. } => Some(customer),
            BilledTo::Registration { .. } => None,
        }
    }
}

impl Attachment {
    /// What a record billed to this attachment is billed to.
    pub fn billed(&self) -> BilledTo {
        BilledTo::Customer {
            customer: self.customer.clone(),
            subscription_id: self.subscription_id,
        }
    }
}

/// Who pays for usage of `tenant` starting at `usage_start`.
pub fn attribute(
    tenant: Guid,
    usage_start: DateTime<Utc>,
    attachments: &Attachments,
    registration_subscription: Guid,
) -> BilledTo {
    match attachments.billing(tenant, usage_start) {
        Some(attachment) => attachment.billed(),
        None => BilledTo::Registration {
            subscription_id: registration_subscription,
        },
    }
}

#[cfg(test)]
#[path = "attribution_tests.rs"]
mod tests;
