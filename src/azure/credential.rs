//! The identity the operator calls ARM with, from the Azure SDK for Rust (DESIGN.md §8):
//! workload identity (the default), a client secret, or a managed identity. `AZURE_TENANT_ID`,
//! `AZURE_CLIENT_ID`, `AZURE_FEDERATED_TOKEN_FILE` and `AZURE_AUTHORITY_HOST` are read by the
//! SDK itself, as the Azure Workload Identity webhook injects them.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use azure_core::{
    credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions},
    error::ErrorKind,
    http::ClientOptions,
};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

/// Which credential `--azure-credential` names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// A federated ServiceAccount token exchanged for an Entra ID token (AKS workload identity).
    WorkloadIdentity,
    /// An app registration's client secret: `AZURE_CLIENT_SECRET` or `--azure-client-secret-file`.
    ClientSecret,
    /// The managed identity of the node or pod (IMDS).
    ManagedIdentity,
}

#[derive(thiserror::Error, Debug)]
pub enum CredentialError {
    #[error("{flag} {kind} needs {variable}")]
    Missing {
        flag: &'static str,
        kind: &'static str,
        variable: &'static str,
    },
    #[error("cannot read the client secret file {path}: {source}")]
    ReadSecret {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the {kind} credential: {reason}")]
    Build { kind: &'static str, reason: String },
}

/// What the credential is built from besides the SDK's own variables.
pub struct CredentialSettings {
    pub kind: CredentialKind,
    /// `--azure-client-secret-file`: read on every token request, so a fixed Secret heals.
    pub client_secret_file: Option<PathBuf>,
    /// The transport (with `--azure-ca-file` trusted) for Entra ID.
    pub client_options: ClientOptions,
    /// The flag that chose the credential, named when something it needs is missing.
    pub flag: &'static str,
    /// Tenant and client instead of `AZURE_TENANT_ID` and `AZURE_CLIENT_ID` (the usage
    /// source's own directory: `--usage-tenant-id`, `--usage-client-id`).
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
}

impl CredentialSettings {
    /// `--azure-credential KIND`, everything else from the SDK's variables.
    pub fn azure(
        kind: CredentialKind,
        client_secret_file: Option<PathBuf>,
        client_options: ClientOptions,
    ) -> Self {
        Self {
            kind,
            client_secret_file,
            client_options,
            flag: "--azure-credential",
            tenant_id: None,
            client_id: None,
        }
    }

    fn value(
        &self,
        given: &Option<String>,
        name: &'static str,
        kind: &'static str,
    ) -> Result<String, CredentialError> {
        match given.as_ref().filter(|v| !v.is_empty()) {
            Some(value) => Ok(value.clone()),
            None => variable(name, self.flag, kind),
        }
    }
}

fn variable(
    name: &'static str,
    flag: &'static str,
    kind: &'static str,
) -> Result<String, CredentialError> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or(CredentialError::Missing {
            flag,
            kind,
            variable: name,
        })
}

/// Builds the credential `settings` name.
pub fn build(settings: CredentialSettings) -> Result<Arc<dyn TokenCredential>, CredentialError> {
    match settings.kind {
        CredentialKind::WorkloadIdentity => {
            const KIND: &str = "workload-identity";
            let options = WorkloadIdentityCredentialOptions {
                client_id: Some(settings.value(&settings.client_id, "AZURE_CLIENT_ID", KIND)?),
                tenant_id: Some(settings.value(&settings.tenant_id, "AZURE_TENANT_ID", KIND)?),
                token_file_path: Some(
                    variable("AZURE_FEDERATED_TOKEN_FILE", settings.flag, KIND)?.into(),
                ),
                credential_options: ClientAssertionCredentialOptions {
                    client_options: settings.client_options,
                },
            };
            let credential = WorkloadIdentityCredential::new(Some(options)).map_err(|e| {
                CredentialError::Build {
                    kind: KIND,
                    reason: e.to_string(),
                }
            })?;
            Ok(credential)
        }
        CredentialKind::ClientSecret => {
            const KIND: &str = "client-secret";
            let tenant_id = settings.value(&settings.tenant_id, "AZURE_TENANT_ID", KIND)?;
            let client_id = settings.value(&settings.client_id, "AZURE_CLIENT_ID", KIND)?;
            let flag = settings.flag;
            let source = match settings.client_secret_file {
                Some(path) => {
                    // Fail at startup on an unreadable file rather than at the first PUT.
                    read_secret(&path)?;
                    SecretSource::File(path)
                }
                None => SecretSource::Fixed(variable("AZURE_CLIENT_SECRET", flag, KIND).map_err(
                    |_| CredentialError::Missing {
                        flag,
                        kind: KIND,
                        variable: "AZURE_CLIENT_SECRET or a client secret file",
                    },
                )?),
            };
            Ok(Arc::new(SecretCredential {
                tenant_id,
                client_id,
                source,
                client_options: settings.client_options,
                current: Mutex::new(None),
            }))
        }
        CredentialKind::ManagedIdentity => {
            // The SDK reads no variable for a user-assigned identity: AZURE_CLIENT_ID names it,
            // as the chart sets it; without it the system-assigned identity signs in.
            let options = ManagedIdentityCredentialOptions {
                client_options: settings.client_options,
                user_assigned_id: settings
                    .client_id
                    .clone()
                    .or_else(|| std::env::var("AZURE_CLIENT_ID").ok())
                    .filter(|id| !id.is_empty())
                    .map(UserAssignedId::ClientId),
            };
            let credential = ManagedIdentityCredential::new(Some(options)).map_err(|e| {
                CredentialError::Build {
                    kind: "managed-identity",
                    reason: e.to_string(),
                }
            })?;
            Ok(credential)
        }
    }
}

fn read_secret(path: &Path) -> Result<String, CredentialError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| CredentialError::ReadSecret {
            path: path.to_path_buf(),
            source,
        })
}

enum SecretSource {
    Fixed(String),
    /// A mounted Secret: Kubernetes replaces the file when the Secret changes.
    File(PathBuf),
}

/// The SDK's `ClientSecretCredential` over a secret that may change: the file is read at each
/// token request and the SDK credential (with its token cache) is rebuilt when the secret
/// differs. The SDK has no credential that re-reads a secret, and a rotated or fixed Secret
/// must heal without a restart.
struct SecretCredential {
    tenant_id: String,
    client_id: String,
    source: SecretSource,
    client_options: ClientOptions,
    /// The secret the current SDK credential was built with, and that credential.
    current: Mutex<Option<(String, Arc<ClientSecretCredential>)>>,
}

impl std::fmt::Debug for SecretCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("SecretCredential")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl SecretCredential {
    fn credential(&self) -> azure_core::Result<Arc<ClientSecretCredential>> {
        let secret = match &self.source {
            SecretSource::Fixed(secret) => secret.clone(),
            SecretSource::File(path) => read_secret(path).map_err(|e| {
                azure_core::Error::with_message(ErrorKind::Credential, e.to_string())
            })?,
        };
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((known, credential)) = current.as_ref()
            && *known == secret
        {
            return Ok(credential.clone());
        }
        let credential = ClientSecretCredential::new(
            &self.tenant_id,
            self.client_id.clone(),
            Secret::new(secret.clone()),
            Some(ClientSecretCredentialOptions {
                client_options: self.client_options.clone(),
            }),
        )?;
        *current = Some((secret, credential.clone()));
        Ok(credential)
    }
}

#[async_trait::async_trait]
impl TokenCredential for SecretCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.credential()?.get_token(scopes, options).await
    }
}
