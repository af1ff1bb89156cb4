//! TLS client configuration for the clients of services outside the cluster (the http
//! metadata resolver, ARM and Entra ID).
//!
//! Built by hand rather than through reqwest's own TLS options so that the only crypto
//! provider is `ring`, the one kube is built with: reqwest's built-in path would otherwise
//! want a process-wide default provider (or link aws-lc-rs).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};

#[derive(thiserror::Error, Debug)]
pub enum TlsConfigError {
    #[error("cannot read the CA file {path}: {source}")]
    ReadCaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA file {path} contains no PEM certificate")]
    NoCertificates { path: PathBuf },
    #[error("the CA file {path} has an unusable certificate: {reason}")]
    InvalidCertificate { path: PathBuf, reason: String },
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A rustls client configuration trusting the system roots plus the certificates of
/// `ca_file` (PEM, one or more).
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(
        added,
        ignored,
        load_errors = native.errors.len(),
        "loaded system root certificates"
    );
    if let Some(path) = ca_file {
        for cert in read_pem_certificates(path)? {
            roots
                .add(cert)
                .map_err(|e| TlsConfigError::InvalidCertificate {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })?;
        }
    }
    if roots.is_empty() {
        tracing::warn!("no trusted root certificates: https requests will fail");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let pem = std::fs::read(path).map_err(|source| TlsConfigError::ReadCaFile {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::InvalidCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificates {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}
