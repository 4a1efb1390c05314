//! TLS with rustls (feature `tls`, on by default): client configuration for `wss://` and
//! helpers to load a server certificate.
//!
//! The crypto provider is *ring*, passed explicitly, so nothing depends on a process-wide
//! default provider being installed.

use crate::error::Error;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{self, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use rustls;
pub use tokio_rustls::{server::TlsStream as ServerTlsStream, TlsAcceptor, TlsConnector};

/// Which trust anchors a client starts from; CA files added with
/// [`ClientBuilder::add_root_certificate_pem`](crate::ClientBuilder::add_root_certificate_pem)
/// come on top.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsRoots {
    /// Mozilla's roots as compiled into `webpki-roots` (the default): the same on every
    /// machine.
    #[default]
    WebPki,
    /// The operating system's certificate store.
    Native,
    /// None: only the CA files added explicitly are trusted.
    Empty,
}

/// The client's TLS settings.
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsOptions {
    pub(crate) roots: TlsRoots,
    pub(crate) ca_files: Vec<PathBuf>,
    pub(crate) danger_accept_invalid_certs: bool,
    pub(crate) config: Option<Arc<ClientConfig>>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

impl TlsOptions {
    /// Builds the rustls client configuration (or returns the one given).
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        if let Some(config) = &self.config {
            return Ok(Arc::clone(config));
        }
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()?;
        let mut config = if self.danger_accept_invalid_certs {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
                .with_no_client_auth()
        } else {
            let mut store = RootCertStore::empty();
            match self.roots {
                TlsRoots::WebPki => {
                    store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                }
                TlsRoots::Native => {
                    let found = rustls_native_certs::load_native_certs();
                    if found.certs.is_empty() {
                        if let Some(error) = found.errors.into_iter().next() {
                            return Err(Error::Tls(Box::new(error)));
                        }
                    }
                    store.add_parsable_certificates(found.certs);
                }
                TlsRoots::Empty => {}
            }
            for path in &self.ca_files {
                for cert in load_certs(path)? {
                    store.add(cert)?;
                }
            }
            builder.with_root_certificates(store).with_no_client_auth()
        };
        // We speak HTTP/1.1 only; say so, so an h2-capable server does not pick h2.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The TLS name to verify the server against: a DNS name or an IP address.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(host.to_owned()).map_err(|e| Error::Tls(Box::new(e)))
}

/// Reads every certificate from a PEM file.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::Tls`] when it holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = std::fs::read(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(Error::Tls(
            format!("no certificate in {}", path.display()).into(),
        ));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::Tls`] when it holds no key.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let pem = std::fs::read(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())?
        .ok_or_else(|| Error::Tls(format!("no private key in {}", path.display()).into()))
}

/// A server configuration from a PEM certificate chain and a PEM private key, advertising
/// `http/1.1` by ALPN. Wrap it in a [`TlsAcceptor`] and accept WebSocket connections on the
/// TLS streams it yields.
///
/// # Errors
/// As [`load_certs`] and [`load_private_key`]; [`Error::Tls`] when key and certificate do not
/// fit together.
pub fn server_config(cert_pem: &Path, key_pem: &Path) -> Result<Arc<ServerConfig>, Error> {
    let certs = load_certs(cert_pem)?;
    let key = load_private_key(key_pem)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `danger_accept_invalid_certs`: accepts any certificate for any name, but still checks
/// that the handshake is signed by the key in the certificate presented.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
