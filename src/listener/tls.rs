//! gRPC over TLS: the certificate chain, its key and, for mutual TLS, the CA client
//! certificates must be signed by. The files are re-read when their modification time or size
//! changes (polled) and on SIGHUP; a handshake uses the configuration current when it starts,
//! so open connections and their streams are untouched. A bad new file is logged and counted,
//! and the last good configuration stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;

use super::metrics::{ListenerMetrics, ReloadLabels};

/// Which of the TLS files a problem is in (the app names the setting from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// The certificate chain.
    Cert,
    /// The private key.
    Key,
    /// The CA of client certificates.
    ClientCa,
}

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file was read but holds nothing usable, or the certificate and key do not match.
    #[error("{path}: {problem}")]
    Invalid {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

impl TlsError {
    /// The file the problem is in.
    pub fn file(&self) -> TlsFile {
        match self {
            TlsError::Read { file, .. } | TlsError::Invalid { file, .. } => *file,
        }
    }
}

/// Where the TLS files are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf.
    pub key: PathBuf,
    /// PEM CA certificate(s): when set, clients must present a certificate signed by one.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn all(&self) -> impl Iterator<Item = &Path> {
        [Some(self.cert.as_path()), Some(self.key.as_path())]
            .into_iter()
            .chain(std::iter::once(self.client_ca.as_deref()))
            .flatten()
    }
}

/// The files' modification time and size when last read: a change means re-read.
type Stamps = Vec<Option<(SystemTime, u64)>>;

/// The current TLS configuration, swapped whole when the files change.
#[derive(Debug)]
pub struct ReloadableTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<Stamps>,
}

impl ReloadableTls {
    /// Reads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let stamps = stamps(&files);
        let config = server_config(&files)?;
        Ok(Self {
            files,
            current: RwLock::new(Arc::new(config)),
            stamps: Mutex::new(stamps),
        })
    }

    /// An acceptor with the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(config) => config.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(config)
    }

    /// Re-reads the files now; on an error the current configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        match self.current.write() {
            Ok(mut current) => *current = Arc::new(config),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(config),
        }
        Ok(())
    }

    /// Whether a file changed since the last call (or the load).
    fn changed(&self) -> bool {
        let now = stamps(&self.files);
        let Ok(mut last) = self.stamps.lock() else {
            return true;
        };
        let changed = *last != now;
        *last = now;
        changed
    }

    /// Re-reads the files when they change (checked every `interval`) or on SIGHUP, until
    /// `shutdown`; logs and counts each reload.
    pub async fn watch(
        self: Arc<Self>,
        interval: Duration,
        metrics: Arc<ListenerMetrics>,
        shutdown: CancellationToken,
    ) {
        let mut hangups = hangups();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => false,
                Some(()) = next_hangup(&mut hangups) => true,
            };
            if !self.changed() && !forced {
                continue;
            }
            let result = match self.reload() {
                Ok(()) => {
                    tracing::info!(forced, "gRPC TLS files re-read; new connections use them");
                    "ok"
                }
                Err(error) => {
                    tracing::error!(%error, "gRPC TLS files not reloaded; keeping the previous ones");
                    "error"
                }
            };
            metrics
                .tls_reloads
                .get_or_create(&ReloadLabels { result })
                .inc();
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

/// SIGHUP, when the platform has it and a handler can be installed.
fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    {
        match hangups {
            Some(signal) => signal.recv().await,
            None => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = hangups;
        std::future::pending().await
    }
}

fn stamps(files: &TlsFiles) -> Stamps {
    files
        .all()
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

fn read(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        file,
        path: path.to_owned(),
        source,
    })
}

fn invalid(file: TlsFile, path: &Path, problem: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        file,
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

fn certificates(file: TlsFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(file, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(file, path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(file, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The rustls server configuration from the files: HTTP/2 and HTTP/1.1 (gRPC-Web) by ALPN,
/// client certificates required when a client CA is given.
fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let chain = certificates(TlsFile::Cert, &files.cert)?;
    let key_pem = read(TlsFile::Key, &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        invalid(
            TlsFile::Key,
            &files.key,
            format!("not a PEM private key: {e}"),
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(TlsFile::Cert, &files.cert, e))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(TlsFile::ClientCa, path)? {
                roots
                    .add(cert)
                    .map_err(|e| invalid(TlsFile::ClientCa, path, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| invalid(TlsFile::ClientCa, path, e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        invalid(
            TlsFile::Key,
            &files.key,
            format!(
                "does not fit the certificate in {}: {e}",
                files.cert.display()
            ),
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
