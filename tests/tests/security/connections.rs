//! Item 1: slow or silent connections must not take the API down. A flood
//! of silent TLS connections from one address, and a client trickling its
//! headers, leave an office's request with a certificate served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kiban_tests::{Backend, TestDb, bounded};
use reqwest::StatusCode;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::api::{Harness, office_t01};
use crate::projections::script::{INSURER, PERSON};

/// More silent connections than the whole server would take before the fix
/// (its `CONNECTIONS_MAX`), all from one address.
const SILENT_CONNECTIONS: usize = kiban_api::CONNECTIONS_MAX + 64;

/// A TLS client trusting the development CA and presenting no certificate.
fn connector(h: &Harness) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_file_iter(&h.pki.tls.client_ca).unwrap() {
        roots.add(certificate.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `server` from the loopback address `from` (Linux
/// routes all of 127.0.0.0/8 to loopback), without a client certificate.
async fn connect_from(
    connector: &TlsConnector,
    from: &str,
    server: SocketAddr,
) -> std::io::Result<TlsStream<tokio::net::TcpStream>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    let tcp = socket.connect(server).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await
}

fn server_address(h: &Harness) -> SocketAddr {
    let port = h.base.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn office_request_is_served(h: &Harness) {
    let path = format!("/v1/persons/{INSURER}/{PERSON}/eligibility");
    let (status, body) = h.get(&office_t01(), &path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_connections_from_one_address_do_not_stall_the_accept_loop() {
    let db = TestDb::new(Backend::Sqlite).await;
    let h = Harness::start(&db).await;
    let (connector, server) = (connector(&h), server_address(&h));
    let hold = CancellationToken::new();
    let (open, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..SILENT_CONNECTIONS {
        let (connector, hold) = (connector.clone(), hold.clone());
        let (open, refused) = (open.clone(), refused.clone());
        tasks.push(tokio::spawn(async move {
            match connect_from(&connector, "127.0.0.2", server).await {
                Ok(stream) => {
                    open.fetch_add(1, Ordering::SeqCst);
                    // Silent: say nothing until the test ends.
                    hold.cancelled().await;
                    drop(stream);
                }
                Err(_) => {
                    refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    // Every silent connection is either taken or refused: the server never
    // leaves a connection waiting in the accept queue.
    bounded(
        "every silent connection answered (taken or refused)",
        async {
            while open.load(Ordering::SeqCst) + refused.load(Ordering::SeqCst) < SILENT_CONNECTIONS
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    assert!(
        refused.load(Ordering::SeqCst) > 0,
        "one address may not hold {SILENT_CONNECTIONS} connections"
    );
    office_request_is_served(&h).await;
    hold.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_trickling_its_headers_is_cut_off_and_offices_are_served() {
    let db = TestDb::new(Backend::Sqlite).await;
    let h = Harness::start(&db).await;
    let (connector, server) = (connector(&h), server_address(&h));
    let mut trickler = connect_from(&connector, "127.0.0.3", server)
        .await
        .expect("a handshake without a certificate (for /healthz) succeeds");
    trickler
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .await
        .unwrap();
    // One header byte every 100 ms, for ever: only the server can end this,
    // by closing the connection at its header-read deadline.
    bounded(
        "the server closes a connection that trickles its headers",
        async {
            let mut buffer = [0_u8; 64];
            loop {
                if trickler.write_all(b"X").await.is_err() || trickler.flush().await.is_err() {
                    break;
                }
                tokio::select! {
                    read = trickler.read(&mut buffer) => match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => panic!("the server answered a request whose head never ended"),
                    },
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        },
    )
    .await;
    office_request_is_served(&h).await;
    h.stop().await;
}
