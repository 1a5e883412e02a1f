//! Low items: development keys and the SQLite database are private to
//! their owner (0600), and development certificates are never served on an
//! address other machines can reach.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use kiban_system::{ApiOptions, SystemBuilder, Tls};
use kiban_tests::bounded;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn development_keys_and_the_sqlite_database_are_readable_by_their_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = kiban_api::dev_pki(&dir.path().join("certs"), &[]).unwrap();
    let mut secrets = vec![pki.tls.server_key.clone()];
    secrets.extend(pki.clients.iter().map(|client| client.pem.clone()));
    for path in &secrets {
        assert_eq!(mode(path), 0o600, "{}", path.display());
    }

    let database = dir.path().join("kiban.db");
    let url = format!("sqlite://{}", database.display());
    let store = kiban_store::Store::open(&url, kiban_store::StoreOptions::default())
        .await
        .unwrap();
    let event = kiban_tests::event_with_id(
        kiban_events::EventId::from_uuid(uuid::Uuid::now_v7()).unwrap(),
        r#"{"n":1}"#,
    );
    store
        .append(
            &kiban_tests::stream("test", "files"),
            kiban_events::ExpectedVersion::Any,
            vec![event],
        )
        .await
        .unwrap();
    for path in [database.clone(), dir.path().join("kiban.db-wal")] {
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_certificates_are_refused_on_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("kiban.db").display());
    let started = bounded(
        "the system to start or refuse",
        SystemBuilder::new(url, dir.path())
            .api(Some(ApiOptions {
                listen: "0.0.0.0:0".parse().unwrap(),
                tls: Tls::Development,
                card_trust: None,
            }))
            .start(),
    )
    .await;
    let error = match started {
        Ok(system) => {
            system.shutdown().await;
            panic!("development certificates were served on 0.0.0.0");
        }
        Err(error) => error,
    };
    assert!(
        format!("{error:#}").contains("development certificates are refused"),
        "{error:#}"
    );
    assert!(
        !dir.path().join("certs").join("ca.pem").exists(),
        "no development CA is made for it"
    );
}
