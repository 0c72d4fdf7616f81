//! The injector's certificate, re-read when its files change: cert-manager
//! rotates the Secret, the kubelet swaps the mounted files, and new
//! connections get the new certificate without a restart.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::proxy::tls::{self, TlsError};

/// How often the files are compared with what was loaded. Reading two small
/// files is cheap, and a mounted Secret changes by an atomic symlink swap
/// that no single file's events describe well, so the contents are compared.
pub const POLL: Duration = Duration::from_secs(1);

/// The current TLS config and the file contents it was built from.
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Loaded>,
}

struct Loaded {
    config: Arc<ServerConfig>,
    files: (Vec<u8>, Vec<u8>),
}

impl Certs {
    /// Load the certificate chain and key (PEM); an error names the file.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Certs, TlsError> {
        let files = read_both(&cert, &key)?;
        let config = build(&cert, &key)?;
        Ok(Certs {
            cert,
            key,
            current: RwLock::new(Loaded { config, files }),
        })
    }

    /// The config new connections use.
    pub fn config(&self) -> Arc<ServerConfig> {
        match self.current.read() {
            Ok(c) => c.config.clone(),
            Err(poisoned) => poisoned.into_inner().config.clone(),
        }
    }

    /// Reload when either file's contents differ from what was loaded:
    /// `Ok(true)` when a new certificate is in use. A pair that does not
    /// load (a half-written rotation, a key that does not match) leaves the
    /// old certificate in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let files = read_both(&self.cert, &self.key)?;
        let unchanged = match self.current.read() {
            Ok(c) => c.files == files,
            Err(poisoned) => poisoned.into_inner().files == files,
        };
        if unchanged {
            return Ok(false);
        }
        let config = build(&self.cert, &self.key)?;
        let mut current = match self.current.write() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = Loaded { config, files };
        Ok(true)
    }

    /// Check the files every [`POLL`] until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            match self.reload_if_changed() {
                Ok(true) => {
                    failing = false;
                    tracing::info!(cert = %self.cert.display(), "certificate reloaded");
                }
                Ok(false) => failing = false,
                // Once per failure streak: a broken rotation must be seen,
                // not flood the log every second.
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "certificate not reloaded; the previous one stays in use");
                }
                Err(_) => {}
            }
        }
    }
}

fn read_both(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &std::path::Path, certs: bool| {
        std::fs::read(path).map_err(|e| {
            let path = path.display().to_string();
            let message = e.to_string();
            if certs {
                TlsError::Certs { path, message }
            } else {
                TlsError::Key { path, message }
            }
        })
    };
    Ok((read(cert, true)?, read(key, false)?))
}

/// The proxy's TLS loading, answering HTTP/1.1 only: the header timeout
/// that cuts slow clients is HTTP/1's, and the API server speaks it.
fn build(cert: &std::path::Path, key: &std::path::Path) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = Arc::unwrap_or_clone(tls::server_config(cert, key)?);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
