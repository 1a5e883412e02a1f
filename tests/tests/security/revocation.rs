//! Item 9: client certificates of every principal kind can be revoked. A
//! revocation list of the client CA (`--client-crl`) is looked at on every
//! handshake; a certificate it revokes is refused at the TLS handshake,
//! whatever the principal kind, as soon as the file is replaced.

use kiban_api::Principal;
use kiban_api::pki::revocation_list;
use kiban_tests::{Backend, TestDb, bounded};
use reqwest::StatusCode;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::api::{Harness, auditor, federation, medical, office_t01, other_insurer, own_insurer};

/// A request on a new connection (a new handshake) as `who`: the status,
/// or the error when the handshake or the request failed.
async fn healthz(h: &Harness, who: &Principal) -> Result<StatusCode, reqwest::Error> {
    let request = h
        .client(Some(who))
        .get(format!("{}/healthz", h.base))
        .send();
    bounded("healthz", request).await.map(|r| r.status())
}

fn certificate(h: &Harness, who: &Principal) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(&h.pki.client(who).expect("issued").pem).unwrap()
}

/// Replaces the list the way an operator publishes one: a new file renamed
/// over the old.
fn publish(h: &Harness, contents: &[u8]) {
    let path = &h.pki.tls.client_crls[0];
    let next = path.with_extension("next");
    std::fs::write(&next, contents).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_client_certificate_of_any_kind_is_refused_at_the_handshake() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (h, issuer) = Harness::start_revocable(&db).await;
    let revoked = [own_insurer(), medical(), auditor(), federation()];
    let kept = [office_t01(), other_insurer()];
    for who in revoked.iter().chain(&kept) {
        let status = healthz(&h, who).await;
        assert_eq!(status.ok(), Some(StatusCode::OK), "{}", who.to_uri());
    }

    let certificates: Vec<_> = revoked.iter().map(|who| certificate(&h, who)).collect();
    publish(&h, &revocation_list(&issuer, &certificates).unwrap());
    for who in &revoked {
        let outcome = healthz(&h, who).await;
        assert!(
            outcome.is_err(),
            "{} is revoked and must not get an answer: {outcome:?}",
            who.to_uri()
        );
    }
    for who in &kept {
        let status = healthz(&h, who).await;
        assert_eq!(status.ok(), Some(StatusCode::OK), "{}", who.to_uri());
    }
    // A /v1 route too, not only the health check: the certificate is
    // refused before any route is reached.
    let outcome = bounded(
        "insurer request",
        h.client(Some(&own_insurer()))
            .get(format!(
                "{}/v1/insurers/{}",
                h.base,
                crate::projections::script::INSURER
            ))
            .send(),
    )
    .await;
    assert!(outcome.is_err(), "{outcome:?}");

    // A broken replacement keeps the revocations in force.
    publish(&h, b"not a revocation list");
    assert!(healthz(&h, &own_insurer()).await.is_err());
    let status = healthz(&h, &office_t01()).await;
    assert_eq!(status.ok(), Some(StatusCode::OK));

    // A list that no longer names the auditor lets it in again.
    publish(&h, &revocation_list(&issuer, &certificates[..1]).unwrap());
    let status = healthz(&h, &auditor()).await;
    assert_eq!(status.ok(), Some(StatusCode::OK));
    assert!(healthz(&h, &own_insurer()).await.is_err());
    h.stop().await;
}
