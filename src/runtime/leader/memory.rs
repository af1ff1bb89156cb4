//! A [`LeaseStore`] in memory, with the API server's optimistic concurrency: the election's
//! unit tests run on it under a paused clock.

use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::coordination::v1::Lease;
use kube::core::Status;

use super::store::LeaseStore;

/// One Lease shared by every clone, as one API server is shared by every candidate.
#[derive(Clone, Default)]
pub struct MemoryLeases {
    state: Arc<Mutex<State>>,
}

/// A write by another candidate.
type Interference = Box<dyn FnOnce(&mut Lease) + Send>;

#[derive(Default)]
struct State {
    lease: Option<Lease>,
    version: u64,
    /// Every request fails with 503 while set.
    unavailable: bool,
    /// Applied just before the next write, as if another candidate wrote first.
    interfere: Option<Interference>,
    writes: usize,
}

fn failure(code: u16, reason: &str) -> kube::Error {
    kube::Error::Api(Status::failure(reason, reason).with_code(code).boxed())
}

impl MemoryLeases {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The stored Lease.
    pub fn lease(&self) -> Option<Lease> {
        self.with(|s| s.lease.clone())
    }

    /// The stored holder (`None` when released).
    pub fn holder(&self) -> Option<String> {
        self.lease()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    }

    /// Successful creates and replaces so far.
    pub fn writes(&self) -> usize {
        self.with(|s| s.writes)
    }

    pub fn set_unavailable(&self, unavailable: bool) {
        self.with(|s| s.unavailable = unavailable);
    }

    /// Another writer changes the stored Lease right before the next write arrives.
    pub fn interfere_with_next_write(&self, change: impl FnOnce(&mut Lease) + Send + 'static) {
        self.with(|s| s.interfere = Some(Box::new(change)));
    }

    fn store(state: &mut State, mut lease: Lease) -> Lease {
        state.version += 1;
        state.writes += 1;
        lease.metadata.resource_version = Some(state.version.to_string());
        state.lease = Some(lease.clone());
        lease
    }

    fn write(&self, lease: &Lease, create: bool) -> Result<Lease, kube::Error> {
        self.with(|state| {
            if state.unavailable {
                return Err(failure(503, "ServiceUnavailable"));
            }
            if let Some(change) = state.interfere.take() {
                let mut theirs = state.lease.clone().unwrap_or_else(|| Lease {
                    metadata: lease.metadata.clone(),
                    spec: None,
                });
                change(&mut theirs);
                Self::store(state, theirs);
            }
            let current = state
                .lease
                .as_ref()
                .map(|l| l.metadata.resource_version.clone());
            match (create, current) {
                (true, Some(_)) => Err(failure(409, "AlreadyExists")),
                (false, None) => Err(failure(404, "NotFound")),
                (false, Some(version)) if version != lease.metadata.resource_version => {
                    Err(failure(409, "Conflict"))
                }
                _ => Ok(Self::store(state, lease.clone())),
            }
        })
    }
}

impl LeaseStore for MemoryLeases {
    async fn get(&self, _name: &str) -> Result<Option<Lease>, kube::Error> {
        self.with(|state| {
            if state.unavailable {
                return Err(failure(503, "ServiceUnavailable"));
            }
            Ok(state.lease.clone())
        })
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, kube::Error> {
        self.write(lease, true)
    }

    async fn replace(&self, _name: &str, lease: &Lease) -> Result<Lease, kube::Error> {
        self.write(lease, false)
    }
}
