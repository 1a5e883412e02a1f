//! Item 17: a body over the route's limit is refused on its
//! `Content-Length`, before `100 Continue`, and a client that sends it at
//! once reads the 413 rather than a reset.

use std::sync::Arc;

use kiban_tests::{Backend, TestDb, bounded};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use crate::api::{Harness, federation};
use crate::projections::script::{INSURER, WAITING_PERSON};

/// A 2 MB JSON body: far over the commands' 64 KiB.
const BODY_BYTES: usize = 2 * 1024 * 1024;

/// A TLS connection to the harness as the federation (a client certificate,
/// so the request gets past authentication to the body).
async fn connect(h: &Harness) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(&h.pki.tls.client_ca).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let pem = &h.pki.client(&federation()).unwrap().pem;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(pem)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(pem).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let port = h.base.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

fn head(expect_continue: bool) -> String {
    format!(
        "POST /v1/persons/{INSURER}/{WAITING_PERSON}/consents HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Idempotency-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {BODY_BYTES}\r\n{}\r\n",
        uuid::Uuid::now_v7(),
        if expect_continue {
            "Expect: 100-continue\r\n"
        } else {
            ""
        }
    )
}

/// Reads until the end of the first response head.
async fn first_response_head(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> String {
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_body_is_refused_before_100_continue() {
    let db = TestDb::new(Backend::Sqlite).await;
    let h = Harness::start(&db).await;
    let mut stream = connect(&h).await;
    stream.write_all(head(true).as_bytes()).await.unwrap();
    // The client waits for `100 Continue` before sending its body; the
    // server must answer 413 instead.
    let answer = bounded("the first answer", first_response_head(&mut stream)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_sending_a_large_body_at_once_reads_the_413() {
    let db = TestDb::new(Backend::Sqlite).await;
    let h = Harness::start(&db).await;
    for _ in 0..4 {
        let mut stream = connect(&h).await;
        stream.write_all(head(false).as_bytes()).await.unwrap();
        let body = vec![b' '; BODY_BYTES];
        let sent = stream.write_all(&body).await;
        assert!(
            sent.is_ok(),
            "the server closed while the body was sent: {sent:?}"
        );
        let answer = bounded("the answer", first_response_head(&mut stream)).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
    h.stop().await;
}
