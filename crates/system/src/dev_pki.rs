//! Development certificates (development mode: no `--tls-*` paths): a CA,
//! a server certificate for 127.0.0.1 and localhost, and one client
//! certificate per sample principal (PEM, and PKCS#12 for browsers), made
//! once under `<data dir>/certs` and reused; the registration of the sample
//! office terminals in the store, so that their certificates are accepted;
//! and a development staff account for the office web screen.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use kiban_api::paths;
use kiban_api::pki::{ClientFiles, DEV_PKCS12_PASSWORD, write_pkcs12};
use kiban_api::principal::fingerprint;
use kiban_api::ui::staff;
use kiban_api::{DevPki, Principal, TlsFiles};
use kiban_engine::{CommandContext, Engine};
use kiban_events::domain::office::{Office, OfficeCommand, office_stream};
use kiban_events::domain::{ServiceTypeCode, Sha256Digest};
use kiban_events::envelope::{Actor, EventId};
use kiban_events::ids::OfficeNumber;
use kiban_store::Store;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The service type development offices are registered with: 43 居宅介護支援
/// (care-plan support), the office kind that files proxy applications.
pub const DEV_OFFICE_SERVICE_TYPE: &str = "43";

/// The sample principals of development mode: kiban-api's five, a second
/// terminal of the sample office (the demo reports it lost) and a second
/// office.
pub fn dev_principals() -> Vec<Principal> {
    let mut principals = kiban_api::dev_principals();
    for uri in [
        "kiban:office:1312345678:terminal:T-02",
        "kiban:office:1319876543:terminal:T-01",
    ] {
        principals.extend(Principal::from_uri(uri));
    }
    principals
}

/// What `certs/manifest.json` records: which principal each client file is.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    clients: Vec<ManifestEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestEntry {
    uri: String,
    file: String,
}

const MANIFEST: &str = "manifest.json";

/// The file name of a principal's client certificate:
/// `office-1312345678-T-01.pem`, `insurer-131016.pem`, ...
fn client_file_name(principal: &Principal) -> String {
    let uri = principal.to_uri();
    let name = uri
        .trim_start_matches("kiban:")
        .replace(":terminal:", "-")
        .replace(':', "-");
    format!("{name}.pem")
}

/// The development certificates under `dir`: made on first use (a CA, a
/// server certificate for 127.0.0.1 and localhost, one client certificate
/// per [`dev_principals`]) and reused afterwards, so that terminals
/// registered with their fingerprints stay valid across restarts.
pub fn dev_certificates(dir: &Path) -> anyhow::Result<DevPki> {
    let wanted = dev_principals();
    if let Some(pki) = load_dev_certificates(dir, &wanted)? {
        return Ok(pki);
    }
    let mut pki = kiban_api::dev_pki(dir, &wanted).with_context(|| {
        format!(
            "cannot create development certificates in {}",
            dir.display()
        )
    })?;
    let mut manifest = Manifest {
        clients: Vec::new(),
    };
    for client in &mut pki.clients {
        let file = client_file_name(&client.principal);
        let path = dir.join(&file);
        std::fs::rename(&client.pem, &path)
            .with_context(|| format!("cannot rename {}", client.pem.display()))?;
        client.pem = path;
        let p12 = client.pem.with_extension("p12");
        std::fs::rename(&client.p12, &p12)
            .with_context(|| format!("cannot rename {}", client.p12.display()))?;
        client.p12 = p12;
        manifest.clients.push(ManifestEntry {
            uri: client.principal.to_uri(),
            file,
        });
    }
    std::fs::write(dir.join(MANIFEST), serde_json::to_vec_pretty(&manifest)?)
        .context("cannot write the certificate manifest")?;
    Ok(pki)
}

fn load_dev_certificates(dir: &Path, wanted: &[Principal]) -> anyhow::Result<Option<DevPki>> {
    let Ok(text) = std::fs::read(dir.join(MANIFEST)) else {
        return Ok(None);
    };
    let manifest: Manifest = serde_json::from_slice(&text).context("certs/manifest.json")?;
    let tls = TlsFiles {
        client_ca: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server-key.pem"),
        client_crls: Vec::new(),
    };
    let have: BTreeSet<&str> = manifest.clients.iter().map(|c| c.uri.as_str()).collect();
    let want: Vec<String> = wanted.iter().map(Principal::to_uri).collect();
    let complete = want.iter().all(|uri| have.contains(uri.as_str()))
        && [&tls.client_ca, &tls.server_cert, &tls.server_key]
            .iter()
            .all(|path| path.exists());
    if !complete {
        return Ok(None);
    }
    let mut clients = Vec::new();
    for entry in &manifest.clients {
        let Some(principal) = Principal::from_uri(&entry.uri) else {
            continue;
        };
        let pem = dir.join(&entry.file);
        let certificate = CertificateDer::from_pem_file(&pem)
            .with_context(|| format!("cannot read the certificate in {}", pem.display()))?;
        // Certificates made before PKCS#12 twins existed get theirs now.
        let p12 = pem.with_extension("p12");
        if !p12.exists() {
            write_pkcs12(&pem, &tls.client_ca, &p12, DEV_PKCS12_PASSWORD)
                .with_context(|| format!("cannot write {}", p12.display()))?;
        }
        clients.push(ClientFiles {
            principal,
            fingerprint: fingerprint(certificate.as_ref()),
            pem,
            p12,
        });
    }
    Ok(Some(DevPki { tls, clients }))
}

/// Registers (as the federation) every office and office terminal of the
/// development certificates that the store does not know yet; a terminal
/// already registered with another certificate is reported, not changed.
pub async fn bootstrap_dev_terminals(
    engine: &Engine<Store>,
    pki: &DevPki,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    for client in &pki.clients {
        let Principal::Office { office, terminal } = &client.principal else {
            continue;
        };
        let stream = office_stream(office);
        let context = || {
            CommandContext::new(
                EventId::from_uuid(Uuid::now_v7()).expect("a v7 id is not nil"),
                Actor::Federation,
                now,
            )
        };
        let (state, _) = engine.load::<Office>(&stream).await?;
        if state.office.is_none() {
            let register = OfficeCommand::Register {
                office: office.clone(),
                service_types: vec![ServiceTypeCode::parse(DEV_OFFICE_SERVICE_TYPE)?],
            };
            engine
                .execute::<Office>(&stream, &register, &context())
                .await?;
        }
        let (state, _) = engine.load::<Office>(&stream).await?;
        let credential = Sha256Digest::parse(&client.fingerprint)?;
        match state.terminals.get(terminal) {
            None => {
                let register = OfficeCommand::RegisterTerminal {
                    terminal: terminal.clone(),
                    credential,
                };
                engine
                    .execute::<Office>(&stream, &register, &context())
                    .await?;
            }
            Some(known) if known.credential != credential => {
                tracing::warn!(
                    terminal = terminal.as_str(),
                    %office,
                    "the terminal is registered with another certificate (a different certs \
                     directory?); its sample certificate will be refused"
                );
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The office of the development staff account (the sample office).
pub const DEV_STAFF_OFFICE: &str = "1312345678";
/// The development staff account's user ID.
pub const DEV_STAFF_USER: &str = "dev.staff";
/// The development staff account's password: fixed and printed, like the
/// development certificates' (a development server is only reachable with
/// a client certificate from `<data dir>/certs` anyway).
pub const DEV_STAFF_PASSWORD: &str = "kiban-dev-password";

/// Creates the development staff account of the sample office when it does
/// not exist; an existing account (perhaps given another password with
/// `kiban admin staff add`) is left as it is. True when it was created.
pub async fn bootstrap_dev_staff(db: &kiban_projections::Db) -> anyhow::Result<bool> {
    let office = OfficeNumber::parse(DEV_STAFF_OFFICE)?;
    if staff::lockout(db, &office, DEV_STAFF_USER).await?.is_some() {
        return Ok(false);
    }
    staff::add_staff(db, &office, DEV_STAFF_USER, DEV_STAFF_PASSWORD)
        .await
        .context("cannot create the development staff account")?;
    Ok(true)
}

/// How to open the office web screen in a browser with the development
/// certificates (what `kiban serve` and `kiban demo` print; docs/ui.md has
/// the steps per browser).
pub fn ui_login_lines(dev: &DevPki, ca: &Path, base: &str) -> Vec<String> {
    let terminal = Principal::from_uri(&format!("kiban:office:{DEV_STAFF_OFFICE}:terminal:T-01"));
    let Some(files) = terminal.and_then(|p| dev.client(&p).cloned()) else {
        return Vec::new();
    };
    vec![
        format!("office web screen: {base}/ui/caseload (steps per browser: docs/ui.md)"),
        format!("  1. trust the CA {} for websites", ca.display()),
        format!(
            "  2. import the terminal certificate {} (password {DEV_PKCS12_PASSWORD})",
            files.p12.display()
        ),
        format!(
            "  3. log in as office {DEV_STAFF_OFFICE} staff: user ID {DEV_STAFF_USER}, password {DEV_STAFF_PASSWORD}"
        ),
    ]
}

/// Ready-to-paste curl commands for the development certificates, against
/// the API at `base` whose client CA is `ca`.
pub fn curl_examples(dev: &DevPki, ca: &Path, base: &str) -> Vec<String> {
    let ca = ca.display();
    let mut lines = vec![format!("curl --cacert {ca} {base}/healthz")];
    let examples = [
        (
            "kiban:office:1312345678:terminal:T-01",
            paths::caseload("1312345678"),
        ),
        ("kiban:insurer:131016", paths::insurer("131016", "")),
        (
            "kiban:medical:1398765432",
            paths::opinion_requests("1398765432"),
        ),
        ("kiban:federation", paths::TERMINALS.to_owned()),
        ("kiban:auditor:dev-auditor", paths::ACCESS_LOG.to_owned()),
        ("kiban:auditor:dev-auditor", paths::OPENAPI.to_owned()),
    ];
    for (uri, path) in examples {
        let Some(files) = Principal::from_uri(uri).and_then(|p| dev.client(&p).cloned()) else {
            continue;
        };
        let pem = files.pem.display();
        lines.push(format!(
            "curl --cacert {ca} --cert {pem} --key {pem} {base}{path}"
        ));
    }
    lines
}
