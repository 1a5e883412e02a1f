//! The options a [`crate::SystemBuilder`] is given, and the files and URLs
//! they come from: the store URL (an SQLite file's directory is created),
//! the card-consent trust, the checkpoint signing key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kiban_api::{CardTrust, TlsFiles};
use kiban_bus::streams::StreamOptions;
use kiban_store::{PlatformKey, Store, StoreOptions};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::redact::redact_url;

/// The default data directory (SQLite file, certificates, checkpoints).
pub const DEFAULT_DATA_DIR: &str = "./kiban-data";

/// The default API address: loopback only, so a development server is not
/// reachable from the network by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// The development signing key's file name, beside an SQLite database.
pub const DEV_SIGNING_KEY_FILE: &str = "platform-signing.key";

/// The environment variable setting how many events `kiban serve` lets
/// pass between automatic checkpoints (0 turns them off).
pub const CHECKPOINT_EVERY_VAR: &str = "KIBAN_CHECKPOINT_EVERY";

/// The environment variable naming the platform signing key file.
pub const SIGNING_KEY_VAR: &str = "KIBAN_SIGNING_KEY";

/// How often the checkpointer looks at the head, in milliseconds.
pub const CHECKPOINT_POLL_MS: u64 = 5_000;

/// The bus the system ingests from and routes office updates to.
#[derive(Clone, Debug, Default)]
pub enum BusOptions {
    /// The in-process bus (the embedded default).
    #[default]
    InProcess,
    /// NATS JetStream at `url`, with the streams' replicas and limits.
    Nats { url: String, streams: StreamOptions },
}

/// The certificates the HTTPS API serves with.
#[derive(Clone, Debug)]
pub enum Tls {
    /// Production PEM files.
    Files(TlsFiles),
    /// Development certificates under `<data dir>/certs`, made once and
    /// reused; the sample office terminals are registered at start.
    Development,
}

/// The HTTPS API.
#[derive(Clone, Debug)]
pub struct ApiOptions {
    /// Where it listens (port 0 picks one).
    pub listen: std::net::SocketAddr,
    /// Its certificates.
    pub tls: Tls,
    /// The JPKI CA certificates and CRL for card consent; `None` leaves
    /// `POST /v1/consents/card` unavailable (503).
    pub card_trust: Option<CardTrust>,
}

/// Signed checkpoints while the system runs (docs/audit.md).
#[derive(Debug)]
pub struct CheckpointSigning {
    /// The platform key.
    pub key: PlatformKey,
    /// Events between two checkpoints.
    pub every: u64,
    /// How often the head is looked at.
    pub poll: Duration,
}

/// Opens the store, creating the directory of an SQLite file when needed.
pub async fn open_store(url: &str) -> anyhow::Result<Store> {
    open_store_with(url, StoreOptions::default()).await
}

/// [`open_store`] with other options (a scaled-out role's writer mode).
pub async fn open_store_with(url: &str, options: StoreOptions) -> anyhow::Result<Store> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(parent) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).with_context(|| {
                format!("cannot create the data directory {}", parent.display())
            })?;
        }
    }
    Store::open(url, options)
        .await
        .with_context(|| format!("cannot open the store at {}", redact_url(url)))
}

/// The platform key: the given file, or the development file beside an
/// SQLite database (created if missing).
pub fn signing_key(url: &str, file: Option<&Path>) -> anyhow::Result<PlatformKey> {
    if let Some(path) = file {
        return PlatformKey::load(path).context("cannot load the signing key");
    }
    let path = dev_key_path(url).context(
        "with PostgreSQL, pass --signing-key (or KIBAN_SIGNING_KEY): the production key is provisioned by operations",
    )?;
    PlatformKey::load_or_create(&path).context("cannot load or create the development signing key")
}

/// `platform-signing.key` beside an SQLite database file.
pub fn dev_key_path(url: &str) -> Option<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next().unwrap_or(path);
    if path.contains(":memory:") {
        return None;
    }
    let dir = Path::new(path).parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    Some(dir.join(DEV_SIGNING_KEY_FILE))
}

/// The card-consent trust from files: each CA file holds one or more
/// certificates in PEM, or one in DER; the CRL file must exist now (it is
/// read again at every verification, so a refreshed file takes effect at
/// once). JPKI publishes its CA certificates in DER.
pub fn load_card_trust(ca_files: &[PathBuf], crl: &Path) -> anyhow::Result<CardTrust> {
    let mut ca_certificates_der = Vec::new();
    for file in ca_files {
        let bytes = std::fs::read(file)
            .with_context(|| format!("cannot read the card CA file {}", file.display()))?;
        if bytes.windows(10).any(|window| window == b"-----BEGIN") {
            let before = ca_certificates_der.len();
            for certificate in CertificateDer::pem_slice_iter(&bytes) {
                let certificate = certificate.with_context(|| {
                    format!("invalid PEM in the card CA file {}", file.display())
                })?;
                ca_certificates_der.push(certificate.as_ref().to_vec());
            }
            anyhow::ensure!(
                ca_certificates_der.len() > before,
                "no certificate in the card CA file {}",
                file.display()
            );
        } else {
            ca_certificates_der.push(bytes);
        }
    }
    anyhow::ensure!(
        !ca_certificates_der.is_empty(),
        "card consent needs at least one --card-ca"
    );
    std::fs::metadata(crl)
        .with_context(|| format!("cannot read the card CRL file {}", crl.display()))?;
    Ok(CardTrust {
        ca_certificates_der,
        crl_path: crl.to_owned(),
    })
}

/// The automatic checkpoints of `kiban serve`, from the environment: every
/// `KIBAN_CHECKPOINT_EVERY` events (default
/// [`kiban_store::CHECKPOINT_EVERY_DEFAULT`]; 0 turns them off), signed with
/// the key of `KIBAN_SIGNING_KEY` (or the development key beside an SQLite
/// database).
pub fn checkpoint_signing_from_env(url: &str) -> anyhow::Result<Option<CheckpointSigning>> {
    let every = match std::env::var(CHECKPOINT_EVERY_VAR) {
        Ok(value) => value
            .parse::<u64>()
            .with_context(|| format!("{CHECKPOINT_EVERY_VAR} must be a number of events"))?,
        Err(_) => kiban_store::CHECKPOINT_EVERY_DEFAULT,
    };
    if every == 0 {
        tracing::info!("automatic checkpoints are off");
        return Ok(None);
    }
    let file = std::env::var_os(SIGNING_KEY_VAR).map(PathBuf::from);
    let key = signing_key(url, file.as_deref())?;
    Ok(Some(CheckpointSigning {
        key,
        every,
        poll: Duration::from_millis(CHECKPOINT_POLL_MS),
    }))
}
