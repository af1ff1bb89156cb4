//! Azure mode's controllers (DESIGN.md §8): the same watches, caches and writes as local mode,
//! but a CustomerSubscription that passes the local rules is PUT to ARM and ARM's answer is
//! its condition; a Registration is read from ARM and its tenants there compared with the
//! declared ones every `--azure-resync`.
//!
//! What the two controllers share beyond the [`Context`](super::Context) lives in
//! [`AzureMode`]: the ARM client, what PUTs taught about approvals, the objects drift asked to
//! PUT again, and when each Registration was last listed.

pub mod customer_subscription;
pub mod registration;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use super::index::ObjKey;
use crate::azure::ArmClient;

/// The finalizer that removes the tenant in Azure before a CustomerSubscription goes.
pub const DETACH_FINALIZER: &str = "csp.azurestack.io/azure-detach";
/// The annotation whose value `orphan` keeps the tenant in Azure when the object is deleted.
pub const DELETION_POLICY: &str = "csp.azurestack.io/deletion-policy";
/// Field manager of the detach finalizer.
pub const FINALIZER_MANAGER: &str = "azs-csp-operator-azure-detach";

/// Azure mode's state, shared by both controllers.
pub struct AzureMode {
    pub arm: Arc<ArmClient>,
    /// `--azure-resync`.
    pub resync: Duration,
    /// Multitenancy approval per Registration, as PUT answers taught it.
    approvals: Mutex<HashMap<ObjKey, bool>>,
    /// CustomerSubscriptions drift found missing in Azure: PUT them again, settled or not.
    reattach: Mutex<HashSet<ObjKey>>,
    /// When each Registration's tenants were last listed.
    listed: Mutex<HashMap<ObjKey, Instant>>,
    /// The generation ARM last decided for each CustomerSubscription. The cache may not have
    /// the status written for it yet when the next reconcile runs (the finalizer's own watch
    /// event comes first): this keeps that reconcile from sending the PUT again.
    decided: Mutex<HashMap<ObjKey, Option<i64>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AzureMode {
    pub fn new(arm: Arc<ArmClient>, resync: Duration) -> Self {
        Self {
            arm,
            resync,
            approvals: Mutex::default(),
            reattach: Mutex::default(),
            listed: Mutex::default(),
            decided: Mutex::default(),
        }
    }

    /// Records that ARM decided `generation` of `customer` for good.
    pub fn decided(&self, customer: &ObjKey, generation: Option<i64>) {
        lock(&self.decided).insert(customer.clone(), generation);
    }

    /// Whether ARM decided `generation` of `customer` for good.
    pub fn is_decided(&self, customer: &ObjKey, generation: Option<i64>) -> bool {
        lock(&self.decided).get(customer) == Some(&generation)
    }

    /// Forgets what is kept for a CustomerSubscription that is gone.
    pub fn forget_customer(&self, customer: &ObjKey) {
        lock(&self.decided).remove(customer);
        lock(&self.reattach).remove(customer);
    }

    /// Records what a PUT taught about `registration`'s approval; true when it changed.
    pub fn learn_approval(&self, registration: &ObjKey, approved: bool) -> bool {
        lock(&self.approvals).insert(registration.clone(), approved) != Some(approved)
    }

    pub fn approval(&self, registration: &ObjKey) -> Option<bool> {
        lock(&self.approvals).get(registration).copied()
    }

    pub fn request_reattach(&self, customer: &ObjKey) {
        lock(&self.decided).remove(customer);
        lock(&self.reattach).insert(customer.clone());
    }

    pub fn reattach_requested(&self, customer: &ObjKey) -> bool {
        lock(&self.reattach).contains(customer)
    }

    /// The re-PUT asked for happened (or the object went).
    pub fn reattach_done(&self, customer: &ObjKey) {
        lock(&self.reattach).remove(customer);
    }

    /// How long until `registration` is due to be listed again; `None` when it is due now.
    pub fn list_due_in(&self, registration: &ObjKey, now: Instant) -> Option<Duration> {
        let listed = lock(&self.listed).get(registration).copied()?;
        let due = listed + self.resync;
        (due > now).then(|| due - now)
    }

    pub fn listed(&self, registration: &ObjKey, at: Instant) {
        lock(&self.listed).insert(registration.clone(), at);
    }

    /// Forgets what is kept for a Registration that is gone.
    pub fn forget_registration(&self, registration: &ObjKey) {
        lock(&self.approvals).remove(registration);
        lock(&self.listed).remove(registration);
    }
}
