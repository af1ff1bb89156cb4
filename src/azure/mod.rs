//! Azure mode's outside world (DESIGN.md §8): the identity the operator calls ARM with, the
//! ARM client with its breaker and write budget. What ARM's answers mean is decided in
//! `policy::azure`; the controllers wire the two together.
//!
//! - [`credential`]: workload identity, client secret, managed identity (azure_identity);
//! - [`client`]: the five calls over azure_core's pipeline;
//! - [`write_budget`]: the client-side token bucket and the `Retry-After` gate.

pub mod client;
pub mod credential;
pub mod write_budget;

use std::{path::Path, sync::Arc, time::Duration};

pub use client::{ArmClient, ArmClientError, ArmSettings};
pub use credential::{CredentialError, CredentialKind, CredentialSettings};
pub use write_budget::{WriteBudget, WriteRate};

use crate::upstream::tls::{self, TlsConfigError};

#[derive(thiserror::Error, Debug)]
pub enum TransportError {
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// The HTTP transport of the SDK pipelines (ARM and Entra ID): the project's reqwest with
/// ring-only rustls, the system roots plus `ca_file`, and a per-request timeout. Passing it
/// explicitly keeps the SDK from building its own client, which wants a process-wide crypto
/// provider (shared/notes/azure-sdk.md).
pub fn transport(
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<azure_core::http::Transport, TransportError> {
    let config = tls::client_config(ca_file)?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .build()
        .map_err(|e| TransportError::Build(e.to_string()))?;
    Ok(azure_core::http::Transport::new(Arc::new(client)))
}
