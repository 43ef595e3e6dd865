//! TLS material named by the config: listener certificates and upstream CA bundles.
//!
//! Everything is read and checked while the config loads (so `check-config` and a refused
//! reload catch a missing file, a PEM without a certificate or a key that does not match its
//! certificate) and kept parsed in the runtime config. Listeners never read files themselves:
//! they answer from a [`CertSlot`], which a reload refills with the new config's certificate,
//! so new handshakes get it while open connections keep theirs.

use arc_swap::ArcSwap;
use pingora_core::protocols::tls::CaType;
use pingora_core::utils::tls::{parse_x509, WrappedX509};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which file of a pair a problem is in, so the error can name `…tls.cert` or `…tls.key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Cert,
    Key,
}

/// A listener's certificate chain and key, loaded and checked.
#[derive(Clone)]
pub struct TlsCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub certified: Arc<CertifiedKey>,
}

// Never prints key material.
impl std::fmt::Debug for TlsCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// The process-wide rustls crypto provider (ring, the one pingora's `rustls` feature builds).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let _ =
        rustls::crypto::CryptoProvider::install_default(rustls::crypto::ring::default_provider());
    rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))
}

/// Reads a PEM certificate chain (leaf first) and its private key and checks that they belong
/// together.
pub fn load_cert(cert: &Path, key: &Path) -> Result<TlsCert, (Part, String)> {
    let cert_pem = read(cert).map_err(|e| (Part::Cert, e))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (Part::Cert, format!("`{}`: bad PEM: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err((
            Part::Cert,
            format!("`{}` holds no PEM certificate", cert.display()),
        ));
    }
    for c in &chain {
        if x509_parser::parse_x509_certificate(c.as_ref()).is_err() {
            return Err((
                Part::Cert,
                format!(
                    "`{}` holds a certificate that does not parse",
                    cert.display()
                ),
            ));
        }
    }
    let key_pem = read(key).map_err(|e| (Part::Key, e))?;
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        (
            Part::Key,
            format!("`{}` holds no usable PEM private key: {e}", key.display()),
        )
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| (Part::Key, format!("`{}`: {e}", key.display())))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) => {}
        // A key type whose public half rustls cannot derive: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err((
                Part::Key,
                format!(
                    "`{}` does not match the certificate in `{}`",
                    key.display(),
                    cert.display()
                ),
            ))
        }
    }
    Ok(TlsCert {
        cert: cert.to_owned(),
        key: key.to_owned(),
        certified: Arc::new(certified),
    })
}

/// Reads a PEM bundle of CA certificates for verifying an upstream.
pub fn load_ca(path: &Path) -> Result<Arc<CaType>, String> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{}`: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no PEM certificate", path.display()));
    }
    let mut out = Vec::with_capacity(certs.len());
    for c in certs {
        // pingora's wrapper panics on a certificate it cannot parse: parse it here first.
        if x509_parser::parse_x509_certificate(c.as_ref()).is_err() {
            return Err(format!(
                "`{}` holds a certificate that does not parse",
                path.display()
            ));
        }
        out.push(WrappedX509::new(c.to_vec(), parse_x509));
    }
    Ok(Arc::from(out.into_boxed_slice()))
}

/// The certificate a TLS listener presents, swapped whole on reload: handshakes after the
/// swap get the new one, connections already open keep the session they negotiated.
pub struct CertSlot(ArcSwap<CertifiedKey>);

impl std::fmt::Debug for CertSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertSlot")
    }
}

impl CertSlot {
    pub fn new(c: &TlsCert) -> Arc<Self> {
        Arc::new(CertSlot(ArcSwap::new(c.certified.clone())))
    }

    pub fn replace(&self, c: &TlsCert) {
        self.0.store(c.certified.clone());
    }
}

impl ResolvesServerCert for CertSlot {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}
