//! `tls`: HTTPS on the app's port with `--tls-cert FILE --tls-key FILE` (PEM), and the
//! certificate rotated by a reload: connections made after it get the new certificate,
//! and connections already open keep theirs (their handshake is done) and are not
//! dropped. A pair that does not load (a file missing, a key that does not match the
//! certificate) fails the reload, naming the file, and the old certificate stays.
//!
//! rustls asks a `ResolvesServerCert` for the certificate at each handshake; this one
//! holds the current pair behind a lock that a reload swaps, so nothing else changes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use futures_rustls::rustls::crypto::CryptoProvider;
use futures_rustls::rustls::pki_types::pem::PemObject;
use futures_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use futures_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use futures_rustls::rustls::sign::CertifiedKey;
use futures_rustls::rustls::ServerConfig;
use futures_rustls::TlsAcceptor;
use lifecycle::prelude::*;

/// The component.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<Current>,
    provider: Arc<CryptoProvider>,
}

/// The pair new handshakes get.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

impl Tls {
    /// Loads the pair (an error names the file and what is wrong), and the acceptor
    /// `http` wraps its connections with (offering HTTP/2 and HTTP/1.1 by ALPN).
    pub fn load(cert: &Path, key: &Path) -> Result<(Tls, TlsAcceptor), String> {
        let provider = Arc::new(futures_rustls::rustls::crypto::ring::default_provider());
        let current = Arc::new(Current(RwLock::new(Arc::new(load(cert, key, &provider)?))));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tls = Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current,
            provider,
        };
        Ok((tls, TlsAcceptor::from(Arc::new(config))))
    }
}

/// The certificate chain of `cert` and the private key of `key`, checked to match.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| {
        format!(
            "{} and {} do not make a pair: {e}",
            cert.display(),
            key.display()
        )
    })
}

#[async_trait]
impl Component for Tls {
    fn name(&self) -> &str {
        "tls"
    }

    async fn start(&mut self, _: &StartContext) -> Result<(), BoxError> {
        Ok(()) // loaded by `main`, before the port was taken
    }

    async fn stop(&mut self, _: &StopContext) -> Result<(), BoxError> {
        Ok(())
    }

    async fn reload(&mut self, _: &ReloadContext) -> Result<(), BoxError> {
        let pair = Arc::new(load(&self.cert, &self.key, &self.provider)?);
        *self.current.0.write().unwrap_or_else(|e| e.into_inner()) = pair;
        tracing::info!(cert = %self.cert.display(), "certificate reloaded: new connections get it");
        Ok(())
    }
}
