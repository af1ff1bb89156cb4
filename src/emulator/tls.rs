//! The emulator's certificates and its TLS listener.
//!
//! Given a certificate (`tls.crt` and `tls.key` in `--tls-dir`), the emulator serves it.
//! Otherwise it makes a CA and a server certificate for 127.0.0.1, ::1 and localhost, and
//! writes `ca.crt`, `tls.crt` and `tls.key` there, so that clients can trust `ca.crt`.

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// The names the generated server certificate is valid for: loopback only.
const SERVER_NAMES: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

/// A client that never finishes its handshake must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(thiserror::Error, Debug)]
pub enum TlsError {
    #[error("cannot {action} {path}: {source}")]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} holds no usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("cannot make the emulator's certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Where the served certificate came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateSource {
    /// `tls.crt` and `tls.key` were already in the directory.
    Given,
    /// A CA and a server certificate were made and written.
    Generated { ca_file: PathBuf },
}

fn file_error<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> TlsError + 'p {
    move |source| TlsError::File {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The server configuration for `dir`: its certificate when it has one, else a new one.
pub fn server_config(dir: &Path) -> Result<(rustls::ServerConfig, CertificateSource), TlsError> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    let source = if cert_path.exists() && key_path.exists() {
        CertificateSource::Given
    } else {
        generate(dir)?;
        CertificateSource::Generated {
            ca_file: dir.join(CA_FILE),
        }
    };
    let cert_pem = std::fs::read(&cert_path).map_err(file_error("read", &cert_path))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|chain| !chain.is_empty())
        .ok_or_else(|| TlsError::Pem {
            path: cert_path.clone(),
            what: "certificate",
        })?;
    let key_pem = std::fs::read(&key_path).map_err(file_error("read", &key_path))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::Pem {
        path: key_path.clone(),
        what: "private key",
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, source))
}

/// Makes a CA and a loopback server certificate it signs; writes them into `dir`.
fn generate(dir: &Path) -> Result<(), TlsError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.distinguished_name = name("azs-csp-operator emulator CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server_params = CertificateParams::new(SERVER_NAMES.map(str::to_owned).to_vec())?;
    server_params.distinguished_name = name("azs-csp-operator emulator");
    server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // Python's ssl (and OpenSSL's strict mode) wants the issuer's key named in the leaf.
    server_params.use_authority_key_identifier_extension = true;
    let server_cert = server_params.signed_by(&server_key, &issuer)?;

    std::fs::create_dir_all(dir).map_err(file_error("create", dir))?;
    for (file, contents, private) in [
        (CA_FILE, ca_cert.pem(), false),
        (CERT_FILE, server_cert.pem(), false),
        (KEY_FILE, server_key.serialize_pem(), true),
    ] {
        let path = dir.join(file);
        write_file(&path, contents.as_bytes(), private).map_err(file_error("write", &path))?;
    }
    Ok(())
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Writes a file of the TLS directory; a private one is readable by its owner only.
pub(super) fn write_file(path: &Path, contents: &[u8], private: bool) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    options.open(path)?.write_all(contents)
}

/// A TCP listener whose connections arrive after their TLS handshake. Handshakes run in their
/// own tasks, so one slow client does not hold up the others.
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: rustls::ServerConfig) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (sender, ready) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if sender.is_closed() {
                    return;
                }
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { local_addr, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ends only with the listener; nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_serves_what_is_there() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, first) = server_config(dir.path()).expect("generated");
        assert_eq!(
            first,
            CertificateSource::Generated {
                ca_file: dir.path().join(CA_FILE)
            }
        );
        for file in [CA_FILE, CERT_FILE, KEY_FILE] {
            assert!(dir.path().join(file).exists(), "{file}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is private");
        }
        let cert_before = std::fs::read(dir.path().join(CERT_FILE)).expect("cert");
        let (_, second) = server_config(dir.path()).expect("given");
        assert_eq!(second, CertificateSource::Given);
        assert_eq!(
            std::fs::read(dir.path().join(CERT_FILE)).expect("cert"),
            cert_before
        );
    }

    #[test]
    fn a_broken_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(CERT_FILE), "not pem").expect("write");
        std::fs::write(dir.path().join(KEY_FILE), "not pem").expect("write");
        assert!(matches!(
            server_config(dir.path()),
            Err(TlsError::Pem {
                what: "certificate",
                ..
            })
        ));
    }
}
