//! The write side: status by server-side apply, skipped when nothing would change, and one
//! Event per change of reason.

use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    core::TypeMeta,
};
use serde::Serialize;
use serde_json::json;
use tracing::debug;

use super::{
    Error,
    context::{Context, Kind},
    customer_subscription,
    events::PendingEvent,
    registration,
};
use crate::{
    api::{
        Condition, CustomerSubscription, CustomerSubscriptionStatus, Registration,
        RegistrationStatus,
    },
    policy::Reason,
    runtime::metrics::{CUSTOMER_SUBSCRIPTION, REGISTRATION},
};

/// A namespaced object whose status this operator writes, with what its controller writes and
/// counts it under.
pub trait StatusOwner:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
    /// Which controller's object it is, for what is kept per object.
    const KIND: Kind;
    /// The `controller` label of its metrics.
    const METRICS_LABEL: &'static str;
    /// The field manager of the status its controller writes.
    const FIELD_MANAGER: &'static str;

    /// `apiVersion` and `kind` of a server-side apply body, from [`kube::Resource`].
    fn type_meta() -> TypeMeta {
        TypeMeta::resource::<Self>()
    }
}

impl StatusOwner for CustomerSubscription {
    const KIND: Kind = Kind::CustomerSubscription;
    const METRICS_LABEL: &'static str = CUSTOMER_SUBSCRIPTION;
    const FIELD_MANAGER: &'static str = customer_subscription::MANAGER;
}

impl StatusOwner for Registration {
    const KIND: Kind = Kind::Registration;
    const METRICS_LABEL: &'static str = REGISTRATION;
    const FIELD_MANAGER: &'static str = registration::MANAGER;
}

/// What a status write produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The object's resourceVersion after the write.
    pub resource_version: String,
}

/// Applies `status` to `obj` as its controller's field manager, unless it equals the current
/// one. Returns what the write produced, `None` when no write was needed.
pub async fn apply_status<K, S>(
    ctx: &Context,
    obj: &K,
    current: Option<&S>,
    desired: &S,
) -> Result<Option<Written>, Error>
where
    K: StatusOwner,
    S: Serialize + PartialEq,
{
    if current == Some(desired) {
        return Ok(None);
    }
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let TypeMeta { api_version, kind } = K::type_meta();
    let body = json!({
        "apiVersion": api_version,
        "kind": kind,
        "status": desired,
    });
    let manager = K::FIELD_MANAGER;
    let updated = api
        .patch_status(
            &name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(body),
        )
        .await
        .map_err(|source| Error::Write {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    ctx.metrics.status_written(K::METRICS_LABEL);
    debug!(%namespace, %name, manager, "status written");
    Ok(Some(Written {
        resource_version: updated.resource_version().unwrap_or_default(),
    }))
}

/// Sets the finalizers `manager` owns on `obj` to `finalizers` (server-side apply of metadata
/// only, under a field manager of its own, so that status applies never touch them and other
/// owners' finalizers stay).
pub async fn apply_finalizers<K: StatusOwner>(
    ctx: &Context,
    obj: &K,
    manager: &str,
    finalizers: &[&str],
) -> Result<(), Error> {
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let TypeMeta { api_version, kind } = K::type_meta();
    let body = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "finalizers": finalizers},
    });
    api.patch(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(body),
    )
    .await
    .map_err(|source| Error::Write {
        namespace,
        name,
        source,
    })?;
    ctx.metrics.finalizer_written();
    Ok(())
}

/// Removes `finalizer` from `obj` with a JSON patch that tests it is still where it was: unlike
/// an apply, it cannot recreate an object that is already gone (its answer is then 404, or a
/// failed test when the list changed: both leave nothing to do).
pub async fn remove_finalizer<K: StatusOwner>(
    ctx: &Context,
    obj: &K,
    finalizer: &str,
) -> Result<(), Error> {
    let Some(index) = obj.finalizers().iter().position(|f| f == finalizer) else {
        return Ok(());
    };
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let path = format!("/metadata/finalizers/{index}");
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": path, "value": finalizer},
        {"op": "remove", "path": path},
    ]))
    .map_err(|e| Error::InvalidPatch(e.to_string()))?;
    match api
        .patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 422 => {
            debug!(%namespace, %name, code = status.code, "finalizer already gone");
            return Ok(());
        }
        Err(source) => {
            return Err(Error::Write {
                namespace,
                name,
                source,
            });
        }
    }
    ctx.metrics.finalizer_written();
    Ok(())
}

/// A status whose conditions include the Ready condition of a decision.
pub trait WithConditions: Sized {
    fn conditions(&self) -> &[Condition];
    /// The status without what the usage controller owns (`status.usage` and the `Usage`
    /// condition): a decision's apply neither writes nor compares them, so it never takes
    /// them over with stale values from the cache, and they never make it write.
    fn without_usage(&self) -> Self;
}

fn conditions_without_usage(conditions: &[Condition]) -> Vec<Condition> {
    conditions
        .iter()
        .filter(|c| c.type_ != crate::conditions::USAGE)
        .cloned()
        .collect()
}

impl WithConditions for CustomerSubscriptionStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn without_usage(&self) -> Self {
        Self {
            usage: None,
            conditions: conditions_without_usage(&self.conditions),
            ..self.clone()
        }
    }
}

impl WithConditions for RegistrationStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn without_usage(&self) -> Self {
        Self {
            usage: None,
            conditions: conditions_without_usage(&self.conditions),
            ..self.clone()
        }
    }
}

/// Writes a decided status (nothing when it equals the current one) and, when the Ready reason
/// changed, one Event. Returns what the write produced, `None` when none was needed.
pub async fn record_decision<K, S>(
    ctx: &Context,
    obj: &K,
    current: Option<&S>,
    desired: &S,
    reason: Reason,
    message: &str,
) -> Result<Option<Written>, Error>
where
    K: StatusOwner,
    S: Serialize + PartialEq + WithConditions,
{
    let previous = current
        .and_then(|status| crate::conditions::find(status.conditions(), crate::conditions::READY))
        .map(|c| c.reason.clone());
    let current_main = current.map(S::without_usage);
    let written = apply_status(ctx, obj, current_main.as_ref(), &desired.without_usage()).await?;
    if written.is_some() && previous.as_deref() != Some(reason.as_str()) {
        tracing::info!(
            kind = K::kind(&()).as_ref(),
            reason = reason.as_str(),
            previous = previous.as_deref().unwrap_or(""),
            "decision changed"
        );
        publish_reason_change(ctx, obj, previous.as_deref(), reason, message);
    }
    Ok(written)
}

/// Queues one Event for a change of Ready reason: Normal for success, Warning otherwise.
pub fn publish_reason_change<K>(
    ctx: &Context,
    obj: &K,
    previous: Option<&str>,
    reason: Reason,
    message: &str,
) where
    K: Resource<DynamicType = ()>,
{
    if previous == Some(reason.as_str()) {
        return;
    }
    ctx.events.send(PendingEvent {
        regarding: obj.object_ref(&()),
        warning: reason.status() != crate::api::ConditionStatus::True,
        reason: reason.as_str().to_string(),
        action: "Evaluate".to_string(),
        note: truncate(message, 1000),
    });
}

pub fn truncate(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}
