//! [`TlsOptions`]: TLS on the gRPC channels (client → master, master → worker,
//! worker → worker) through rustls with the ring provider, mutual TLS optional.
//!
//! One value serves both sides of a task:
//! - as a **server**, a task with an [identity](TlsOptions::with_identity_files) serves
//!   TLS; with a [client CA](TlsOptions::with_client_ca_file) it asks every peer for a
//!   certificate, refuses the handshake of a peer whose certificate that CA did not sign,
//!   and takes worker-service calls only from peers that presented one (clients of the
//!   master service may come without one: the cluster token authenticates them);
//! - as a **client** (a task reaching its peers, or a user's `grpcs://` session), it
//!   verifies the server's certificate against the [CA](TlsOptions::with_ca_file) and
//!   presents its identity, when it has one, as its client certificate.
//!
//! Certificates and keys are PEM. They are parsed when the options are built, so a bad
//! file is reported naming the file, never at the first connection. The private key is
//! never printed: [`TlsOptions`]'s `Debug` shows only which parts are set.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::error::GrpcError;

/// A certificate chain and its private key, PEM.
type PemIdentity = (Arc<[u8]>, Arc<[u8]>);

/// TLS settings of a task or a client: the CA that verifies servers, this side's
/// certificate and key, and the CA that verifies clients (mutual TLS).
#[derive(Clone, Default)]
pub struct TlsOptions {
    ca: Option<Arc<[u8]>>,
    identity: Option<PemIdentity>,
    client_ca: Option<Arc<[u8]>>,
    domain: Option<String>,
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca", &self.ca.is_some())
            .field(
                "identity",
                &self.identity.as_ref().map(|_| "<certificate and key>"),
            )
            .field("client_ca", &self.client_ca.is_some())
            .field("domain", &self.domain)
            .finish()
    }
}

fn tls_error(what: impl Into<String>, detail: impl fmt::Display) -> GrpcError {
    GrpcError::Tls {
        what: what.into(),
        detail: detail.to_string(),
    }
}

fn read(path: &Path, role: &str) -> Result<Vec<u8>, GrpcError> {
    std::fs::read(path).map_err(|e| tls_error(format!("{role} file {}", path.display()), e))
}

/// The certificates of a PEM text; at least one, each parseable as X.509 by webpki.
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, GrpcError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(what, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(what, "holds no CERTIFICATE block"));
    }
    Ok(certs)
}

/// Checks that every certificate of `pem` can be a trust anchor.
fn check_ca(pem: &[u8], what: &str) -> Result<(), GrpcError> {
    let mut roots = rustls::RootCertStore::empty();
    for (i, c) in certificates(pem, what)?.into_iter().enumerate() {
        roots
            .add(c)
            .map_err(|e| tls_error(what, format!("certificate {} is not usable: {e}", i + 1)))?;
    }
    Ok(())
}

fn check_identity(
    cert: &[u8],
    key: &[u8],
    cert_what: &str,
    key_what: &str,
) -> Result<(), GrpcError> {
    certificates(cert, cert_what)?;
    PrivateKeyDer::from_pem_slice(key).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            tls_error(key_what, "holds no PRIVATE KEY block")
        }
        // The error never quotes the key's bytes.
        e => tls_error(key_what, format!("not a valid PEM private key: {e}")),
    })?;
    Ok(())
}

/// The ring provider as the process default, for the rustls configurations tonic builds
/// with `ServerConfig::builder()` (which needs one when several providers are compiled
/// in). Keeps any default installed earlier.
fn install_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

impl TlsOptions {
    /// No CA, no identity: add them with the `with_*` methods.
    pub fn new() -> TlsOptions {
        TlsOptions::default()
    }

    /// Verifies the servers this side connects to against the CA certificate(s) in PEM
    /// `pem` (the cluster CA).
    ///
    /// # Errors
    ///
    /// [`GrpcError::Tls`] when `pem` holds no certificate or one that cannot be a trust
    /// anchor.
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Result<TlsOptions, GrpcError> {
        let pem = pem.into();
        check_ca(&pem, "the CA certificate")?;
        self.ca = Some(pem.into());
        Ok(self)
    }

    /// [`with_ca_pem`](Self::with_ca_pem) reading `path`.
    ///
    /// # Errors
    ///
    /// [`GrpcError::Tls`] naming the file when it cannot be read or holds no usable
    /// certificate.
    pub fn with_ca_file(self, path: impl AsRef<Path>) -> Result<TlsOptions, GrpcError> {
        let path = path.as_ref();
        let pem = read(path, "CA certificate")?;
        let what = format!("CA certificate file {}", path.display());
        check_ca(&pem, &what)?;
        Ok(TlsOptions {
            ca: Some(pem.into()),
            ..self
        })
    }

    /// This side's certificate chain (leaf first) and private key, in PEM: a server
    /// serves TLS with it; a client presents it when the server asks (mutual TLS).
    ///
    /// # Errors
    ///
    /// [`GrpcError::Tls`] when the chain holds no certificate or the key no private key.
    /// (Whether the key matches the certificate is checked when a server starts.)
    pub fn with_identity_pem(
        self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Result<TlsOptions, GrpcError> {
        let (cert, key) = (cert.into(), key.into());
        check_identity(&cert, &key, "the TLS certificate", "the TLS private key")?;
        Ok(TlsOptions {
            identity: Some((cert.into(), key.into())),
            ..self
        })
    }

    /// [`with_identity_pem`](Self::with_identity_pem) reading `cert` and `key`.
    ///
    /// # Errors
    ///
    /// [`GrpcError::Tls`] naming the file that cannot be read or holds no certificate or
    /// key.
    pub fn with_identity_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsOptions, GrpcError> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let cert_pem = read(cert, "TLS certificate")?;
        let key_pem = read(key, "TLS key")?;
        check_identity(
            &cert_pem,
            &key_pem,
            &format!("TLS certificate file {}", cert.display()),
            &format!("TLS key file {}", key.display()),
        )?;
        Ok(TlsOptions {
            identity: Some((cert_pem.into(), key_pem.into())),
            ..self
        })
    }

    /// Mutual TLS: a server asks every peer for a certificate signed by the CA in PEM
    /// `pem`, refuses other certificates, and serves worker-service calls only to peers
    /// that presented one.
    ///
    /// # Errors
    ///
    /// [`GrpcError::Tls`] when `pem` holds no usable certificate.
    pub fn with_client_ca_pem(self, pem: impl Into<Vec<u8>>) -> Result<TlsOptions, GrpcError> {
        let pem = pem.into();
        check_ca(&pem, "the client CA certificate")?;
        Ok(TlsOptions {
            client_ca: Some(pem.into()),
            ..self
        })
    }

    /// [`with_client_ca_pem`](Self::with_client_ca_pem) reading `path`.
    ///
    /// # Errors
    ///
    /// [`GrpcError::Tls`] naming the file when it cannot be read or holds no usable
    /// certificate.
    pub fn with_client_ca_file(self, path: impl AsRef<Path>) -> Result<TlsOptions, GrpcError> {
        let path = path.as_ref();
        let pem = read(path, "client CA certificate")?;
        check_ca(
            &pem,
            &format!("client CA certificate file {}", path.display()),
        )?;
        Ok(TlsOptions {
            client_ca: Some(pem.into()),
            ..self
        })
    }

    /// Verifies servers under this name instead of the host of the address dialled (for
    /// certificates issued to a name while the cluster spec lists IP addresses).
    pub fn with_domain(self, domain: impl Into<String>) -> TlsOptions {
        TlsOptions {
            domain: Some(domain.into()),
            ..self
        }
    }

    /// Whether a CA to verify servers is set.
    pub fn has_ca(&self) -> bool {
        self.ca.is_some()
    }

    /// Whether this side has a certificate and key (a server with one serves TLS).
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// Whether a server with these options asks its peers for certificates (mutual TLS).
    pub fn is_mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The server side, when this side has an identity; `handshake_timeout` bounds a
    /// peer that opens a connection and never finishes the handshake.
    pub(crate) fn server_config(&self, handshake_timeout: Duration) -> Option<ServerTlsConfig> {
        let (cert, key) = self.identity.as_ref()?;
        install_provider();
        let mut config = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .timeout(handshake_timeout);
        if let Some(ca) = &self.client_ca {
            // Optional at the handshake (clients of the master service may have no
            // certificate); a certificate that is presented must verify, and the worker
            // service requires one (`auth::Guard`).
            config = config
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(true);
        }
        Some(config)
    }

    /// The client side: verify the server against the CA, present the identity if any.
    pub(crate) fn client_config(&self, handshake_timeout: Duration) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().timeout(handshake_timeout);
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(d) = &self.domain {
            config = config.domain_name(d.clone());
        }
        config
    }
}

/// `e` and its sources, joined: tonic's transport errors say little at the top level.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let next = inner.to_string();
        if !s.contains(&next) {
            s.push_str(": ");
            s.push_str(&next);
        }
        source = inner.source();
    }
    s
}
