//! TLS on the gRPC and HTTP listeners, with rustls and its `ring` provider.
//!
//! The certificate, key and (for mTLS) client CA are read from PEM files. Certificates expire and
//! are renewed by tools that rewrite the files in place (certbot, cert-manager, Vault agents), so
//! the files are re-read every few seconds and a changed set is taken for new connections without
//! a restart. A set that does not load (a half-written file, a key that does not fit the
//! certificate) is logged and the previous one kept: a botched renewal must not take the server
//! off the air.
//!
//! Both listeners share what is loaded; they differ only in the protocol they announce (ALPN):
//! `h2` for gRPC, `http/1.1` for the HTTP side port, which speaks HTTP/1 only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the files are checked for a change. Short enough that a renewed certificate is in use
/// within seconds; reading three small files this often costs nothing.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// Where the PEM files are (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key of the leaf certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// With it, clients must present a certificate signed by one of these CAs (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Why a set of TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no usable PEM {what}: {reason}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("the certificate {cert} and the key {key} cannot be used together: {source}")]
    CertifiedKey {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("the client CA {path} cannot verify clients: {reason}")]
    ClientCa { path: PathBuf, reason: String },
}

/// Which listener a connection arrived on; decides the protocol announced in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// gRPC: HTTP/2 (`h2`), which gRPC clients insist on.
    Grpc,
    /// The HTTP side port: HTTP/1.1 only, so a browser or curl never tries HTTP/2 on it.
    Http,
}

/// The files as last read, to notice a change by content (a timestamp can miss a rewrite within
/// the same second, or be preserved by `cp -p`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

/// The configurations in use, one per listener.
#[derive(Debug)]
struct Loaded {
    grpc: Arc<ServerConfig>,
    http: Arc<ServerConfig>,
}

/// The server side of TLS: the configuration in use, replaced when the files change.
pub struct ServerTls {
    files: TlsFiles,
    loaded: RwLock<Arc<Loaded>>,
    /// The contents last tried (loaded or refused), so a broken set is reported once, not on
    /// every check.
    tried: RwLock<Contents>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the files; at start a set that does not load is an error (there is nothing to fall
    /// back on).
    pub fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let contents = read(&files)?;
        let loaded = build(&files, &contents)?;
        Ok(Arc::new(Self {
            files,
            loaded: RwLock::new(Arc::new(loaded)),
            tried: RwLock::new(contents),
        }))
    }

    /// An acceptor with the configuration in use now, for one new connection on `listener`.
    pub fn acceptor(&self, listener: Listener) -> TlsAcceptor {
        let loaded = match self.loaded.read() {
            Ok(loaded) => loaded.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(match listener {
            Listener::Grpc => loaded.grpc.clone(),
            Listener::Http => loaded.http.clone(),
        })
    }

    /// Re-reads the files and, when they changed, takes them: `Ok(true)` when a new set is in use,
    /// `Ok(false)` when nothing changed, `Err` when the changed set does not load (the previous one
    /// stays in use and the same set is not tried again).
    pub fn reload(&self) -> Result<bool, TlsError> {
        let contents = read(&self.files)?;
        {
            let mut tried = match self.tried.write() {
                Ok(tried) => tried,
                Err(poisoned) => poisoned.into_inner(),
            };
            if *tried == contents {
                return Ok(false);
            }
            *tried = contents.clone();
        }
        let loaded = Arc::new(build(&self.files, &contents)?);
        match self.loaded.write() {
            Ok(mut current) => *current = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
        Ok(true)
    }

    /// Checks the files every `interval` until `stop`, taking a changed set and logging one that
    /// does not load.
    pub async fn watch(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate: the files were just loaded
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.cancelled() => return,
            }
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload()).await {
                Ok(Ok(true)) => tracing::info!(
                    cert = %self.files.cert.display(),
                    "TLS certificate reloaded; new connections use it"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(err)) => tracing::error!(
                    error = %err,
                    "the changed TLS files do not load; still serving the previous certificate"
                ),
                Err(err) => tracing::error!(error = %err, "the TLS reload check failed"),
            }
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn read(files: &TlsFiles) -> Result<Contents, TlsError> {
    Ok(Contents {
        cert: read_file(&files.cert)?,
        key: read_file(&files.key)?,
        client_ca: files.client_ca.as_deref().map(read_file).transpose()?,
    })
}

/// Every certificate in a PEM file; at least one.
fn certificates(
    path: &Path,
    pem: &[u8],
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::Pem {
        path: path.to_owned(),
        what,
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad(err.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE section".into()));
    }
    Ok(certs)
}

fn build(files: &TlsFiles, contents: &Contents) -> Result<Loaded, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert, &contents.cert, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(&contents.key).map_err(|err| TlsError::Pem {
        path: files.key.clone(),
        what: "private key",
        reason: err.to_string(),
    })?;
    let certified_key = |source| TlsError::CertifiedKey {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(certified_key)?;
    let builder = match (&files.client_ca, &contents.client_ca) {
        (Some(path), Some(pem)) => {
            let client_ca = |reason: String| TlsError::ClientCa {
                path: path.clone(),
                reason,
            };
            let mut roots = RootCertStore::empty();
            for cert in certificates(path, pem, "CA certificate")? {
                roots.add(cert).map_err(|err| client_ca(err.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|err| client_ca(err.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut grpc = builder
        .with_single_cert(chain, key)
        .map_err(certified_key)?;
    let mut http = grpc.clone();
    grpc.alpn_protocols = vec![b"h2".to_vec()];
    http.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Loaded {
        grpc: Arc::new(grpc),
        http: Arc::new(http),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
        files: TlsFiles,
    }

    fn files() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            client_ca: None,
        };
        Files { dir, files }
    }

    /// A self-signed certificate for localhost and its key, as PEM.
    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn a_changed_set_is_taken_and_a_broken_one_kept_out_and_reported_once() {
        let Files { dir: _dir, files } = files();
        let (cert, key) = self_signed();
        std::fs::write(&files.cert, &cert).unwrap();
        std::fs::write(&files.key, &key).unwrap();
        let tls = ServerTls::load(files.clone()).unwrap();
        assert!(!tls.reload().unwrap(), "nothing changed");

        // A new certificate with the old key: refused, and the same set is not tried again.
        let (new_cert, new_key) = self_signed();
        std::fs::write(&files.cert, &new_cert).unwrap();
        assert!(matches!(tls.reload(), Err(TlsError::CertifiedKey { .. })));
        assert!(!tls.reload().unwrap(), "the broken set is reported once");

        // Its key arrives: the new set is in use.
        std::fs::write(&files.key, &new_key).unwrap();
        assert!(tls.reload().unwrap());
    }

    #[test]
    fn files_that_do_not_load_stop_the_start() {
        let Files { dir: _dir, files } = files();
        assert!(matches!(
            ServerTls::load(files.clone()),
            Err(TlsError::Read { .. })
        ));
        std::fs::write(&files.cert, "not PEM").unwrap();
        std::fs::write(&files.key, self_signed().1).unwrap();
        assert!(matches!(ServerTls::load(files), Err(TlsError::Pem { .. })));
    }
}
