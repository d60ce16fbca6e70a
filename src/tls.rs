//! Optional TLS (`https://`, `wss://`) for deployments without a proxy
//! that terminates it: the certificate chain and key from PEM files, read
//! again on SIGHUP so a renewed certificate takes effect without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use log::{info, warn};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("cannot read the TLS key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("the TLS key does not fit the certificate or is not supported: {0}")]
    Mismatch(String),
}

/// The certificate and key files, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let shown = |path: &Path| path.display().to_string();
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|err| TlsError::Certificate {
            path: shown(&files.cert),
            reason: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificate {
            path: shown(&files.cert),
            reason: "no certificate in it".to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|err| TlsError::Key {
        path: shown(&files.key),
        reason: err.to_string(),
    })?;
    let key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|err| TlsError::Mismatch(err.to_string()))?;
    let certified = CertifiedKey::new(certs, key);
    certified
        .keys_match()
        .map_err(|err| TlsError::Mismatch(err.to_string()))?;
    Ok(certified)
}

/// Hands every handshake the certificate loaded last.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let certified = load(&files)?;
        Ok(Arc::new(ReloadingCert {
            files,
            current: RwLock::new(Arc::new(certified)),
        }))
    }

    /// Reads the files again; on failure the certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certified = Arc::new(load(&self.files)?);
        match self.current.write() {
            Ok(mut current) => *current = certified,
            Err(poisoned) => *poisoned.into_inner() = certified,
        }
        Ok(())
    }

    /// The rustls configuration for the server: TLS 1.2 and 1.3, HTTP/1.1.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|err| TlsError::Mismatch(err.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Reloads on every SIGHUP, for as long as the process runs.
    pub fn reload_on_sighup(self: &Arc<Self>) {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            warn!("cannot listen for SIGHUP; the TLS certificate is read at start only");
            return;
        };
        let certificate = self.clone();
        actix_web::rt::spawn(async move {
            while hangups.recv().await.is_some() {
                match certificate.reload() {
                    Ok(()) => info!("SIGHUP: reloaded the TLS certificate"),
                    Err(err) => warn!("SIGHUP: kept the TLS certificate in use: {err}"),
                }
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        Some(current)
    }
}
