//! A newcomer opens the office web screen in their own browser (issue 21,
//! item 6): development mode writes a PKCS#12 file per client certificate,
//! creates a development staff account, and prints how to log in. The
//! system runs as `kiban serve` does (SQLite, the in-process bus, HTTPS with
//! development certificates); the printed lines are parsed, so what is
//! tested is what a newcomer reads.

use kiban_api::Principal;
use kiban_api::ui::staff::{self, LoginOutcome};
use kiban_events::ids::OfficeNumber;
use kiban_projections::Db;
use kiban_system::{ApiOptions, System, SystemBuilder, Tls};
use kiban_tests::{Backend, TestDb};

/// The system as `kiban serve` starts it in development mode (the
/// in-process bus, HTTPS with development certificates under `dir`).
pub(crate) async fn start(db: &TestDb, dir: &std::path::Path) -> System {
    SystemBuilder::new(db.url(), dir)
        .api(Some(ApiOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: Tls::Development,
            card_trust: None,
        }))
        .start()
        .await
        .unwrap()
}

/// The text between `before` and the next `until` in `text`.
fn between<'a>(text: &'a str, before: &str, until: char) -> &'a str {
    let start = text
        .find(before)
        .unwrap_or_else(|| panic!("{before:?} not printed in {text}"))
        + before.len();
    let rest = &text[start..];
    &rest[..rest.find(until).unwrap_or(rest.len())]
}

/// Opens `p12` with `password` as a browser would (OpenSSL, the same
/// PKCS#12 rules as NSS) and returns the fingerprint of its key's
/// certificate, read by the crate that wrote it.
fn open_pkcs12(p12: &str, password: &str) -> String {
    let output = std::process::Command::new("openssl")
        .args(["pkcs12", "-in", p12, "-passin"])
        .arg(format!("pass:{password}"))
        .args(["-nodes", "-noout"])
        .output()
        .expect("openssl (scripts/test installs it)");
    assert!(
        output.status.success(),
        "openssl cannot open {p12}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(p12).unwrap();
    assert!(
        p12_keystore::KeyStore::from_pkcs12(&bytes, "not the password").is_err(),
        "a wrong password opens {p12}"
    );
    let store = p12_keystore::KeyStore::from_pkcs12(&bytes, password).unwrap();
    let (_, chain) = store.private_key_chain().expect("a key with its chain");
    assert_eq!(chain.chain().len(), 2, "the certificate and the CA");
    kiban_api::principal::fingerprint(chain.chain()[0].as_der())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_mode_prints_a_browser_login_that_works() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let system = start(&db, dir.path()).await;
    let printed = system.ui_login_lines().join("\n");
    let base = system.base_url().unwrap();
    assert!(
        printed.contains(&format!("{base}/ui/caseload")),
        "{printed}"
    );
    let p12 = between(&printed, "import the terminal certificate ", ' ').to_owned();
    let p12_password = between(&printed, "(password ", ')').to_owned();
    let office = between(&printed, "log in as office ", ' ').to_owned();
    let user = between(&printed, "user ID ", ',').to_owned();
    let password = between(&printed, ", password ", '\n').to_owned();

    // The PKCS#12 file opens with the printed password and holds the
    // registered terminal's certificate.
    let terminal = Principal::from_uri(&format!("kiban:office:{office}:terminal:T-01")).unwrap();
    let files = kiban_system::dev_client(&system, &terminal).expect("the terminal's files");
    assert_eq!(files.p12.to_str(), Some(p12.as_str()));
    assert_eq!(open_pkcs12(&p12, &p12_password), files.fingerprint);

    // The printed staff account logs in at that terminal.
    let accounts = Db::open(db.url()).await.unwrap();
    let office = OfficeNumber::parse(&office).unwrap();
    let login = |user: String, password: String| {
        let (accounts, office) = (accounts.clone(), office.clone());
        async move {
            staff::login(
                &accounts,
                &office,
                "T-01",
                &user,
                &password,
                chrono::Utc::now(),
            )
            .await
            .unwrap()
        }
    };
    let opened = login(user.clone(), password.clone()).await;
    assert!(matches!(opened, LoginOutcome::Opened(_)), "{opened:?}");
    system.shutdown().await;

    // A certificates directory from before PKCS#12 files gets them on the
    // next start; the account is kept, not reset.
    std::fs::remove_file(&p12).unwrap();
    let system = start(&db, dir.path()).await;
    assert_eq!(open_pkcs12(&p12, &p12_password), files.fingerprint);
    let opened = login(user, password).await;
    assert!(matches!(opened, LoginOutcome::Opened(_)), "{opened:?}");
    system.shutdown().await;
    accounts.close().await;
}
