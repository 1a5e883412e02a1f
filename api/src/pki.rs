//! Certificates: the development PKI (rcgen) and the rustls server
//! configuration with client-certificate verification.
//!
//! Production takes PEM paths ([`TlsFiles`]); [`dev_pki`] creates a
//! development CA, a server certificate for `127.0.0.1`/`localhost` and one
//! sample client certificate per principal kind, as PEM files in a directory
//! (`kiban serve` uses `./kiban-data/certs`), each with a PKCS#12 twin
//! ([`write_pkcs12`]) that browsers import.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose,
    SanType,
};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use sha2::Digest;

use crate::principal::Principal;

/// The CA signer type of [`new_ca`] and [`dev_pki_with_issuer`].
pub use rcgen::{Issuer, KeyPair};

/// Why certificates could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    /// rcgen refused to generate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration refused: {0}")]
    Tls(String),
    /// The PKCS#12 file could not be encoded.
    #[error("PKCS#12: {0}")]
    Pkcs12(#[from] p12_keystore::error::Error),
}

/// The password of the development PKCS#12 files. Fixed and printed by
/// `kiban serve`, because the files only carry development certificates
/// whose CA key is not even kept; browsers refuse to import a PKCS#12
/// file without a password in some versions, so it is not empty.
pub const DEV_PKCS12_PASSWORD: &str = "kiban-dev";

/// Where the PEM files of a server are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The platform CA that issues client certificates (one or more PEM
    /// certificates).
    pub client_ca: PathBuf,
    /// The server's certificate chain.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// Certificate revocation lists of the client CA(s) (PEM or DER; one
    /// per issuing CA). Empty: no revocation check. Each file is looked at
    /// (size, modification time, inode) at every handshake and read again
    /// when it changed, so a refreshed list takes effect at the next
    /// connection (see [`server_config`]).
    pub client_crls: Vec<PathBuf>,
}

/// A client certificate and key in one PEM file (what `curl --cert` and
/// reqwest's `Identity::from_pem` take).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFiles {
    /// The principal it names.
    pub principal: Principal,
    /// Certificate followed by key.
    pub pem: PathBuf,
    /// The same certificate (with the CA) and key as PKCS#12, encrypted
    /// with [`DEV_PKCS12_PASSWORD`]: what a browser imports.
    pub p12: PathBuf,
    /// SHA-256 fingerprint of the certificate (a terminal's credential).
    pub fingerprint: String,
}

/// What [`dev_pki`] made.
#[derive(Debug, Clone)]
pub struct DevPki {
    /// The server's files (the CA also verifies clients).
    pub tls: TlsFiles,
    /// One client certificate per principal kind.
    pub clients: Vec<ClientFiles>,
}

impl DevPki {
    /// The client files of `principal`.
    pub fn client(&self, principal: &Principal) -> Option<&ClientFiles> {
        self.clients.iter().find(|c| &c.principal == principal)
    }
}

/// The sample principals of the development PKI.
pub fn dev_principals() -> Vec<Principal> {
    [
        "kiban:office:1312345678:terminal:T-01",
        "kiban:insurer:131016",
        "kiban:medical:1398765432",
        "kiban:auditor:dev-auditor",
        "kiban:federation",
    ]
    .iter()
    .filter_map(|uri| Principal::from_uri(uri))
    .collect()
}

/// Creates a development CA, a server certificate for 127.0.0.1 and
/// localhost, and a client certificate for each of `principals` (the
/// [`dev_principals`] when empty) under `dir`. Existing files are
/// overwritten: a new CA each time.
pub fn dev_pki(dir: &Path, principals: &[Principal]) -> Result<DevPki, PkiError> {
    dev_pki_with_issuer(dir, principals).map(|(pki, _)| pki)
}

/// [`dev_pki`], also returning the CA's issuer (which signs further
/// certificates and [`revocation_list`]s; the CA key is never written to
/// disk).
pub fn dev_pki_with_issuer(
    dir: &Path,
    principals: &[Principal],
) -> Result<(DevPki, Issuer<'static, KeyPair>), PkiError> {
    fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
    let (ca_pem, issuer) = new_ca("kiban development CA")?;
    let ca_path = dir.join("ca.pem");
    write(&ca_path, &ca_pem)?;
    let mut server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    server
        .distinguished_name
        .push(DnType::CommonName, "kiban server");
    server
        .extended_key_usages
        .push(ExtendedKeyUsagePurpose::ServerAuth);
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;
    let tls = TlsFiles {
        client_ca: ca_path,
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
        client_crls: Vec::new(),
    };
    write(&tls.server_cert, &server_cert.pem())?;
    write_secret(&tls.server_key, server_key.serialize_pem())?;
    let defaults = dev_principals();
    let principals = if principals.is_empty() {
        &defaults[..]
    } else {
        principals
    };
    let mut clients = Vec::new();
    for (index, principal) in principals.iter().enumerate() {
        let (pem, fingerprint) = client_certificate(principal, &issuer)?;
        let path = dir.join(format!("client-{}-{index}.pem", principal.kind()));
        write_secret(&path, &pem)?;
        let p12 = path.with_extension("p12");
        write_pkcs12(&path, &tls.client_ca, &p12, DEV_PKCS12_PASSWORD)?;
        clients.push(ClientFiles {
            principal: principal.clone(),
            pem: path,
            p12,
            fingerprint,
        });
    }
    Ok((DevPki { tls, clients }, issuer))
}

/// A certificate revocation list (DER) signed by `issuer` that revokes
/// `revoked` (DER certificates issued by it), for `--client-crl`.
pub fn revocation_list(
    issuer: &Issuer<'_, KeyPair>,
    revoked: &[CertificateDer<'_>],
) -> Result<Vec<u8>, PkiError> {
    use der::Decode as _;
    let revoked_certs = revoked
        .iter()
        .map(|certificate| {
            let parsed = x509_cert::Certificate::from_der(certificate.as_ref())
                .map_err(|e| PkiError::Tls(format!("cannot parse a revoked certificate: {e}")))?;
            Ok(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(
                    parsed.tbs_certificate.serial_number.as_bytes(),
                ),
                revocation_time: rcgen::date_time_ymd(2025, 1, 1),
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>, PkiError>>()?;
    let params = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2025, 1, 1),
        next_update: rcgen::date_time_ymd(2125, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    Ok(params.signed_by(issuer)?.der().to_vec())
}

/// A self-signed CA: its PEM and the issuer that signs with it.
pub fn new_ca(name: &str) -> Result<(String, Issuer<'static, KeyPair>), PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    Ok((certificate.pem(), Issuer::new(params, key)))
}

/// A client certificate for `principal` signed by `issuer`, as PEM
/// (certificate then key), and its fingerprint.
pub fn client_certificate(
    principal: &Principal,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, principal.kind());
    let uri = principal.to_uri().try_into()?;
    params.subject_alt_names.push(SanType::URI(uri));
    params
        .extended_key_usages
        .push(ExtendedKeyUsagePurpose::ClientAuth);
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, issuer)?;
    let fingerprint = crate::principal::fingerprint(certificate.der());
    Ok((
        format!("{}{}", certificate.pem(), key.serialize_pem()),
        fingerprint,
    ))
}

/// Writes the certificate and PKCS#8 key of the PEM file `pem` (as
/// [`client_certificate`] makes it), with the CA certificate of `ca` in its
/// chain, to `p12` as PKCS#12 encrypted with `password` (PBES2: PBKDF2 with
/// HMAC-SHA256 and AES-256-CBC, HMAC-SHA256 MAC: what OpenSSL 3, NSS —
/// Chromium and Firefox — and macOS import).
pub fn write_pkcs12(pem: &Path, ca: &Path, p12: &Path, password: &str) -> Result<(), PkiError> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKeyChain};
    let mut chain = certificates(pem)?;
    chain.extend(certificates(ca)?);
    let key = match PrivateKeyDer::from_pem_file(pem).map_err(|e| PkiError::Pem {
        path: pem.to_owned(),
        reason: e.to_string(),
    })? {
        PrivateKeyDer::Pkcs8(key) => key.secret_pkcs8_der().to_vec(),
        _ => {
            return Err(PkiError::Pem {
                path: pem.to_owned(),
                reason: "the key is not PKCS#8".to_owned(),
            });
        }
    };
    let chain = chain
        .iter()
        .map(|der| Certificate::from_der(der.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    // The local key id ties the key to its certificate; the certificate's
    // fingerprint is unique and stable.
    let local_key_id = sha2::Sha256::digest(chain[0].as_der());
    let alias = pem
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kiban".to_owned());
    let mut store = KeyStore::new();
    store.add_entry(
        &alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(key, local_key_id, chain)),
    );
    let bytes = store.writer(password).write()?;
    write_secret(p12, &bytes)
}

/// The rustls server configuration: the server's certificate, and client
/// certificates verified against the platform CA and, when
/// `files.client_crls` names any, its revocation lists. A client without a
/// certificate is let in (so `/healthz` and `/readyz` work) and refused by
/// every other route; a certificate from another CA, or one a list revokes,
/// fails the handshake.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for certificate in certificates(&files.client_ca)? {
        roots
            .add(certificate)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
    }
    let verifier = RevocableClients::new(Arc::new(roots), provider.clone(), &files.client_crls)?;
    let key = PrivateKeyDer::from_pem_file(&files.server_key).map_err(|e| PkiError::Pem {
        path: files.server_key.clone(),
        reason: e.to_string(),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(certificates(&files.server_cert)?, key)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What identifies one version of a file without reading it: size,
/// modification time and inode (a file renamed into place has a new one).
pub(crate) type FileStamp = Option<(u64, Option<std::time::SystemTime>, u64)>;

/// The [`FileStamp`] of `path` now (one `stat`).
pub(crate) fn stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt as _;
    let metadata = fs::metadata(path).ok()?;
    Some((metadata.len(), metadata.modified().ok(), metadata.ino()))
}

/// The client-certificate verifier: rustls's WebPKI verifier over the
/// platform CA, rebuilt with the revocation lists whenever one of their
/// files changed (looked at on every handshake: one `stat` per file).
///
/// Only the end-entity certificate's revocation is checked, against the
/// list of its issuer; a certificate whose issuer has no list is refused
/// (so a wrong file refuses every certificate rather than none). A list
/// past its `nextUpdate` still applies: kiban does not fetch lists, the
/// operator replaces the file. A changed file that cannot be read or
/// parsed leaves the previous lists in force and logs a warning; at start
/// it is an error.
#[derive(Debug)]
struct RevocableClients {
    roots: Arc<RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    crls: Vec<PathBuf>,
    hints: Vec<rustls::DistinguishedName>,
    current: std::sync::RwLock<(Vec<FileStamp>, Arc<dyn ClientCertVerifier>)>,
}

impl RevocableClients {
    fn new(
        roots: Arc<RootCertStore>,
        provider: Arc<rustls::crypto::CryptoProvider>,
        crls: &[PathBuf],
    ) -> Result<RevocableClients, PkiError> {
        let stamps = crls.iter().map(|path| stamp(path)).collect();
        let verifier = build_verifier(&roots, &provider, crls)?;
        Ok(RevocableClients {
            hints: roots.subjects(),
            roots,
            provider,
            crls: crls.to_vec(),
            current: std::sync::RwLock::new((stamps, verifier)),
        })
    }

    /// The verifier for the lists as they are on disk now.
    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        let read = |lock: &std::sync::RwLock<(Vec<FileStamp>, Arc<dyn ClientCertVerifier>)>| {
            let guard = lock
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (guard.0.clone(), guard.1.clone())
        };
        let (seen, verifier) = read(&self.current);
        if self.crls.is_empty() {
            return verifier;
        }
        let now: Vec<FileStamp> = self.crls.iter().map(|path| stamp(path)).collect();
        if now == seen {
            return verifier;
        }
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.0 != now {
            // Remember the stamps either way: a broken file is reported
            // once per change, not at every handshake.
            current.0 = now;
            match build_verifier(&self.roots, &self.provider, &self.crls) {
                Ok(verifier) => {
                    tracing::info!("client revocation lists re-read");
                    current.1 = verifier;
                }
                Err(error) => tracing::warn!(
                    %error,
                    "a client revocation list changed but cannot be used; the previous lists stay in force"
                ),
            }
        }
        current.1.clone()
    }
}

fn build_verifier(
    roots: &Arc<RootCertStore>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    crls: &[PathBuf],
) -> Result<Arc<dyn ClientCertVerifier>, PkiError> {
    let mut lists = Vec::new();
    for path in crls {
        lists.extend(revocation_lists(path)?);
    }
    let builder = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .allow_unauthenticated();
    let builder = if lists.is_empty() {
        builder
    } else {
        builder.with_crls(lists).only_check_end_entity_revocation()
    };
    builder.build().map_err(|e| PkiError::Tls(e.to_string()))
}

/// The revocation lists in `path`: PEM (`X509 CRL` blocks) or one DER list.
fn revocation_lists(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, PkiError> {
    let bytes = fs::read(path).map_err(|source| io(path, source))?;
    let pem = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if !pem.is_empty() {
        return Ok(pem);
    }
    // Anything else is taken as DER; building the verifier parses it.
    Ok(vec![CertificateRevocationListDer::from(bytes)])
}

impl ClientCertVerifier for RevocableClients {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| PkiError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certificates.is_empty() {
        return Err(PkiError::Pem {
            path: path.to_owned(),
            reason: "no certificate in the file".to_owned(),
        });
    }
    Ok(certificates)
}

fn write(path: &Path, contents: &str) -> Result<(), PkiError> {
    fs::write(path, contents).map_err(|source| io(path, source))
}

/// Writes a file holding a private key: readable and writable by its owner
/// only (0600), also when it replaces an older file.
fn write_secret(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), PkiError> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| io(path, source))?;
    // `mode` applies only when the file is created.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(contents.as_ref()))
        .map_err(|source| io(path, source))
}

fn io(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.to_owned(),
        source,
    }
}
