//! Reverse indexes over the watched objects, maintained from watch events, so that a change
//! requeues exactly the objects it affects instead of a full list.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex},
};

use kube::ResourceExt;

use crate::{
    api::{CustomerSubscription, Registration},
    conditions,
    domain::RegistrationKey,
    guid::GuidText,
    policy::registration_key,
    resolver::MetadataChange,
};

/// Namespace and name of a namespaced object. The strings are shared, so the copies the
/// index keeps in its several maps cost a pointer each.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ObjKey {
    pub fn of<K: ResourceExt>(obj: &K) -> Self {
        Self {
            namespace: obj.namespace().unwrap_or_default().into(),
            name: obj.name_any().into(),
        }
    }

    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// What the index keeps of a CustomerSubscription: what other objects' decisions read.
#[derive(Clone, Debug, PartialEq)]
struct CustomerEntry {
    registration: ObjKey,
    subscription: GuidText,
    tenants: Vec<GuidText>,
    generation: Option<i64>,
    deleting: bool,
    attached: bool,
}

impl CustomerEntry {
    /// Siblings decide on this one's spec, tenants and deletion (rule 8), not on its status.
    fn same_for_siblings(&self, other: &Self) -> bool {
        (
            &self.registration,
            &self.subscription,
            &self.tenants,
            self.generation,
            self.deleting,
        ) == (
            &other.registration,
            &other.subscription,
            &other.tenants,
            other.generation,
            other.deleting,
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
struct RegistrationEntry {
    cloud_id: GuidText,
    subscription: GuidText,
    key: RegistrationKey,
    generation: Option<i64>,
    deleting: bool,
}

/// Objects to requeue after an event.
#[derive(Debug, Default, PartialEq)]
pub struct Affected {
    pub registrations: BTreeSet<ObjKey>,
    pub customers: BTreeSet<ObjKey>,
}

impl Affected {
    pub fn extend(&mut self, other: Affected) {
        self.registrations.extend(other.registrations);
        self.customers.extend(other.customers);
    }
}

/// The objects filed under one key. Most subscriptions and tenants have exactly one, so
/// that case holds no collection at all.
#[derive(Debug)]
enum Members {
    One(ObjKey),
    Many(HashSet<ObjKey>),
}

impl Members {
    fn insert(&mut self, key: &ObjKey) {
        match self {
            Members::One(existing) if existing == key => {}
            Members::One(existing) => {
                *self = Members::Many([existing.clone(), key.clone()].into());
            }
            Members::Many(set) => {
                set.insert(key.clone());
            }
        }
    }

    /// Removes `key`; returns whether nothing is left.
    fn remove(&mut self, key: &ObjKey) -> bool {
        match self {
            Members::One(existing) => existing == key,
            Members::Many(set) => {
                set.remove(key);
                set.is_empty()
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &ObjKey> {
        let (one, many) = match self {
            Members::One(key) => (Some(key), None),
            Members::Many(set) => (None, Some(set)),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

type Multi<K> = HashMap<K, Members>;

fn insert<K: std::hash::Hash + Eq>(map: &mut Multi<K>, key: K, value: &ObjKey) {
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(mut members) => members.get_mut().insert(value),
        std::collections::hash_map::Entry::Vacant(slot) => {
            slot.insert(Members::One(value.clone()));
        }
    }
}

fn remove<K: std::hash::Hash + Eq>(map: &mut Multi<K>, key: &K, value: &ObjKey) {
    if map
        .get_mut(key)
        .is_some_and(|members| members.remove(value))
    {
        map.remove(key);
    }
}

fn lookup<'a, K, Q>(map: &'a Multi<K>, key: &Q) -> impl Iterator<Item = &'a ObjKey>
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
{
    map.get(key).into_iter().flat_map(Members::iter)
}

/// The copy of `value` already filed in `map` when there is one, so that equal names are
/// stored once.
fn shared<K, V>(map: &HashMap<K, V>, value: K) -> K
where
    K: std::hash::Hash + Eq + Clone,
{
    map.get_key_value(&value)
        .map_or(value, |(existing, _)| existing.clone())
}

#[derive(Default)]
struct State {
    customers: HashMap<ObjKey, CustomerEntry>,
    customers_by_registration: Multi<ObjKey>,
    customers_by_subscription: Multi<GuidText>,
    customers_by_tenant: Multi<GuidText>,
    registrations: HashMap<ObjKey, RegistrationEntry>,
    registrations_by_cloud_id: Multi<GuidText>,
    registrations_by_subscription: Multi<GuidText>,
    registrations_by_key: Multi<RegistrationKey>,
}

/// The dependency index shared by both controllers.
#[derive(Default)]
pub struct Index {
    state: Mutex<State>,
}

fn customer_entry(state: &State, customer: &CustomerSubscription) -> CustomerEntry {
    let spec = &customer.spec;
    let mut tenants: Vec<GuidText> = Vec::new();
    let resolved = customer.status.as_ref().and_then(|s| s.tenant_id.as_ref());
    for tenant in spec.tenant_id.iter().chain(resolved) {
        let tenant = GuidText::parse(tenant);
        if !tenants.contains(&tenant) {
            tenants.push(tenant);
        }
    }
    let registration = ObjKey::new(
        &customer.namespace().unwrap_or_default(),
        &spec.registration_ref.name,
    );
    CustomerEntry {
        registration: shared(&state.customers_by_registration, registration),
        subscription: GuidText::parse(&spec.subscription_id),
        tenants,
        generation: customer.metadata.generation,
        deleting: customer.metadata.deletion_timestamp.is_some(),
        attached: is_attached(customer),
    }
}

fn registration_entry(registration: &Registration) -> RegistrationEntry {
    RegistrationEntry {
        cloud_id: GuidText::parse(&registration.spec.cloud_id),
        subscription: GuidText::parse(&registration.spec.subscription_id),
        key: registration_key(registration),
        generation: registration.metadata.generation,
        deleting: registration.metadata.deletion_timestamp.is_some(),
    }
}

impl State {
    fn siblings_sharing(&self, me: &ObjKey, entry: &CustomerEntry, out: &mut BTreeSet<ObjKey>) {
        let same_namespace = |k: &&ObjKey| k.namespace == me.namespace && *k != me;
        out.extend(
            lookup(&self.customers_by_subscription, &entry.subscription)
                .filter(same_namespace)
                .cloned(),
        );
        for tenant in &entry.tenants {
            out.extend(
                lookup(&self.customers_by_tenant, tenant)
                    .filter(same_namespace)
                    .cloned(),
            );
        }
    }

    fn remove_customer(&mut self, key: &ObjKey) -> Option<CustomerEntry> {
        let old = self.customers.remove(key)?;
        remove(&mut self.customers_by_registration, &old.registration, key);
        remove(&mut self.customers_by_subscription, &old.subscription, key);
        for tenant in &old.tenants {
            remove(&mut self.customers_by_tenant, tenant, key);
        }
        Some(old)
    }

    fn remove_registration(&mut self, key: &ObjKey) -> Option<RegistrationEntry> {
        let old = self.registrations.remove(key)?;
        remove(&mut self.registrations_by_cloud_id, &old.cloud_id, key);
        remove(
            &mut self.registrations_by_subscription,
            &old.subscription,
            key,
        );
        remove(&mut self.registrations_by_key, &old.key, key);
        Some(old)
    }

    fn dependents(&self, registration: &ObjKey) -> impl Iterator<Item = &ObjKey> {
        lookup(&self.customers_by_registration, registration)
    }

    fn registration_changed(
        &self,
        key: &ObjKey,
        old: Option<&RegistrationEntry>,
        new: Option<&RegistrationEntry>,
    ) -> Affected {
        let mut affected = Affected::default();
        for entry in [old, new].into_iter().flatten() {
            affected.registrations.extend(
                lookup(&self.registrations_by_cloud_id, &entry.cloud_id)
                    .filter(|k| *k != key)
                    .cloned(),
            );
        }
        // Dependents decide on the spec and deletion state only, not on the status this
        // operator writes; requeueing them on every status write would fan out for nothing.
        let relevant = |e: &RegistrationEntry| {
            (
                e.generation,
                e.deleting,
                e.key.clone(),
                e.subscription.clone(),
            )
        };
        if old.map(relevant) != new.map(relevant) {
            affected.customers.extend(self.dependents(key).cloned());
        }
        affected
    }
}

impl Index {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a created or updated CustomerSubscription. Its Registration is requeued only
    /// when what it counts changes (a dependent comes, goes, moves, attaches or detaches), so
    /// that the operator's own status writes do not rewrite the Registration each time.
    pub fn apply_customer(&self, customer: &CustomerSubscription) -> Affected {
        let mut state = self.lock();
        let key = ObjKey::of(customer);
        let key = shared(&state.customers, key);
        let entry = customer_entry(&state, customer);
        let mut affected = Affected::default();
        let old = state.customers.get(&key);
        if old == Some(&entry) {
            return affected;
        }
        let registration_counts_change = old.is_none_or(|old| {
            old.registration != entry.registration || old.attached != entry.attached
        });
        let siblings_decide_again = old.is_none_or(|old| !old.same_for_siblings(&entry));
        let old = state.remove_customer(&key);
        if let Some(old) = &old {
            if registration_counts_change {
                affected.registrations.insert(old.registration.clone());
            }
            if siblings_decide_again {
                state.siblings_sharing(&key, old, &mut affected.customers);
            }
        }
        insert(
            &mut state.customers_by_registration,
            entry.registration.clone(),
            &key,
        );
        insert(
            &mut state.customers_by_subscription,
            entry.subscription.clone(),
            &key,
        );
        for tenant in &entry.tenants {
            insert(&mut state.customers_by_tenant, tenant.clone(), &key);
        }
        if registration_counts_change {
            affected.registrations.insert(entry.registration.clone());
        }
        if siblings_decide_again {
            state.siblings_sharing(&key, &entry, &mut affected.customers);
        }
        state.customers.insert(key, entry);
        affected
    }

    /// Forgets a deleted CustomerSubscription.
    pub fn delete_customer(&self, key: &ObjKey) -> Affected {
        let mut state = self.lock();
        let mut affected = Affected::default();
        if let Some(old) = state.remove_customer(key) {
            affected.registrations.insert(old.registration.clone());
            state.siblings_sharing(key, &old, &mut affected.customers);
        }
        affected
    }

    /// Records a created or updated Registration.
    pub fn apply_registration(&self, registration: &Registration) -> Affected {
        let key = ObjKey::of(registration);
        let entry = registration_entry(registration);
        let mut state = self.lock();
        let old = state.remove_registration(&key);
        insert(
            &mut state.registrations_by_cloud_id,
            entry.cloud_id.clone(),
            &key,
        );
        insert(
            &mut state.registrations_by_subscription,
            entry.subscription.clone(),
            &key,
        );
        insert(&mut state.registrations_by_key, entry.key.clone(), &key);
        let affected = state.registration_changed(&key, old.as_ref(), Some(&entry));
        state.registrations.insert(key, entry);
        affected
    }

    /// Forgets a deleted Registration.
    pub fn delete_registration(&self, key: &ObjKey) -> Affected {
        let mut state = self.lock();
        let old = state.remove_registration(key);
        state.registration_changed(key, old.as_ref(), None)
    }

    /// Forgets every CustomerSubscription in `namespace` (all namespaces when `None`) that is
    /// not in `keep`: what a relist found gone.
    pub fn retain_customers(&self, namespace: Option<&str>, keep: &HashSet<ObjKey>) -> Affected {
        let stale = stale_keys(self.lock().customers.keys(), namespace, keep);
        self.delete_all(stale, Index::delete_customer)
    }

    /// See [`Index::retain_customers`].
    pub fn retain_registrations(
        &self,
        namespace: Option<&str>,
        keep: &HashSet<ObjKey>,
    ) -> Affected {
        let stale = stale_keys(self.lock().registrations.keys(), namespace, keep);
        self.delete_all(stale, Index::delete_registration)
    }

    fn delete_all(&self, keys: Vec<ObjKey>, delete: fn(&Index, &ObjKey) -> Affected) -> Affected {
        let mut affected = Affected::default();
        for key in keys {
            affected.extend(delete(self, &key));
        }
        affected
    }

    /// CustomerSubscriptions that name the Registration `registration`.
    pub fn dependents(&self, registration: &ObjKey) -> Vec<ObjKey> {
        self.lock().dependents(registration).cloned().collect()
    }

    /// CustomerSubscriptions of `registration` that may map the same subscription or tenant:
    /// the candidates of the duplicate rule. A sibling's tenant is its spec.tenantId or, once
    /// written, the resolved one in its status; a sibling whose resolved tenant is not written
    /// yet is found when it is, because that write requeues the siblings sharing it.
    pub fn duplicate_candidates(
        &self,
        registration: &ObjKey,
        subscription: impl Into<GuidText>,
        tenant: Option<GuidText>,
    ) -> Vec<ObjKey> {
        let state = self.lock();
        let subscription = subscription.into();
        let by_subscription = lookup(&state.customers_by_subscription, &subscription);
        let by_tenant = tenant
            .iter()
            .flat_map(|t| lookup(&state.customers_by_tenant, t));
        let mut candidates: Vec<ObjKey> = by_subscription
            .chain(by_tenant)
            .filter(|k| {
                state
                    .customers
                    .get(*k)
                    .is_some_and(|entry| &entry.registration == registration)
            })
            .cloned()
            .collect();
        candidates.sort();
        candidates.dedup();
        candidates
    }

    /// Other Registrations with the same cloudId (case-insensitive).
    pub fn same_cloud_id(&self, registration: &Registration) -> Vec<ObjKey> {
        let key = ObjKey::of(registration);
        let cloud_id = GuidText::parse(&registration.spec.cloud_id);
        lookup(&self.lock().registrations_by_cloud_id, &cloud_id)
            .filter(|k| **k != key)
            .cloned()
            .collect()
    }

    /// Objects whose decision may change with an upstream metadata change.
    pub fn affected_by(&self, change: &MetadataChange) -> Affected {
        let state = self.lock();
        let mut affected = Affected::default();
        if change.everything {
            affected
                .registrations
                .extend(state.registrations.keys().cloned());
            affected.customers.extend(state.customers.keys().cloned());
            return affected;
        }
        for subscription in &change.subscriptions {
            let subscription = GuidText::from(*subscription);
            affected
                .customers
                .extend(lookup(&state.customers_by_subscription, &subscription).cloned());
            affected
                .registrations
                .extend(lookup(&state.registrations_by_subscription, &subscription).cloned());
        }
        for key in &change.registrations {
            affected
                .registrations
                .extend(lookup(&state.registrations_by_key, key).cloned());
        }
        // A registration's subscription and approval feed its dependents' decisions too.
        let registrations: Vec<ObjKey> = affected.registrations.iter().cloned().collect();
        for registration in &registrations {
            affected
                .customers
                .extend(state.dependents(registration).cloned());
        }
        affected
    }
}

/// Keys in `namespace` (all when `None`) that are not in `keep`.
fn stale_keys<'a>(
    keys: impl Iterator<Item = &'a ObjKey>,
    namespace: Option<&str>,
    keep: &HashSet<ObjKey>,
) -> Vec<ObjKey> {
    keys.filter(|k| namespace.is_none_or(|ns| &*k.namespace == ns) && !keep.contains(*k))
        .cloned()
        .collect()
}

/// Whether a CustomerSubscription's Ready condition is True.
pub fn is_attached(customer: &CustomerSubscription) -> bool {
    customer
        .status
        .as_ref()
        .and_then(|s| conditions::find(&s.conditions, conditions::READY))
        .is_some_and(|c| c.status == crate::api::ConditionStatus::True)
}

#[cfg(test)]
#[path = "index_tests.rs"]
pub(super) mod tests;
