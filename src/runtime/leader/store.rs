//! Where the Lease lives: read and written through [`LeaseStore`], so that the election can
//! run against the API server ([`KubeLeases`]) or, in tests, against memory.

use std::future::Future;

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, Client, api::PostParams};

/// The three requests the election makes. A write carries the `resourceVersion` that was
/// read and fails with 409 Conflict when another candidate wrote in between.
pub trait LeaseStore: Send + Sync {
    /// The Lease named `name`, `None` when it does not exist.
    fn get(&self, name: &str) -> impl Future<Output = Result<Option<Lease>, kube::Error>> + Send;
    /// Creates the Lease; 409 when it exists already.
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<Lease, kube::Error>> + Send;
    /// Replaces the Lease named `name`; 409 when its `resourceVersion` is not the stored one.
    fn replace(
        &self,
        name: &str,
        lease: &Lease,
    ) -> impl Future<Output = Result<Lease, kube::Error>> + Send;
}

/// The Leases of one namespace on the API server.
#[derive(Clone)]
pub struct KubeLeases {
    api: Api<Lease>,
}

impl KubeLeases {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
        }
    }
}

impl LeaseStore for KubeLeases {
    async fn get(&self, name: &str) -> Result<Option<Lease>, kube::Error> {
        self.api.get_opt(name).await
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, kube::Error> {
        self.api.create(&PostParams::default(), lease).await
    }

    async fn replace(&self, name: &str, lease: &Lease) -> Result<Lease, kube::Error> {
        self.api.replace(name, &PostParams::default(), lease).await
    }
}

/// Whether `error` is the API server's 409 Conflict (or AlreadyExists, also 409).
pub(super) fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}
