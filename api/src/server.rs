//! [`serve`]: the HTTPS server — rustls with client certificates, one task
//! per connection, all owned by the server task and stopped by the
//! shutdown token.
//!
//! Behind a load balancer that passes TLS through (docs/deploy.md), every
//! connection comes from the balancer's address. A balancer named in
//! [`TrustedProxies`] must then begin each connection with a PROXY protocol
//! v2 header (HAProxy's `send-proxy-v2`), which tells the client's address:
//! the per-address limit and the logs use that address. A connection from
//! a trusted balancer without the header is refused; a connection from any
//! other address is taken as it comes, so a header it sends is not TLS and
//! its handshake fails (the header is believed from the balancers only).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::pki::{PkiError, TlsFiles, server_config};
use crate::principal::ClientIdentity;
use crate::routes::router;
use crate::state::AppState;

/// Longest a TLS handshake may take, in milliseconds: a client that has not
/// finished in ten seconds is gone or hostile, and holds a connection slot.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// Longest the server waits for the complete head (request line and
/// headers) of a request, in milliseconds, counted from the moment the
/// connection is ready for it: after the handshake for the first request,
/// after the previous response for the next one. It is therefore also the
/// idle keep-alive timeout: a connection that sends nothing for this long is
/// closed, and a client trickling header bytes is cut off at the deadline
/// however steadily it trickles. A response being streamed (`/updates`) is
/// not idle and is not cut.
pub const HEADER_READ_TIMEOUT_MS: u64 = 20_000;

/// Most connections open at once. A connection beyond it is closed at once
/// (accepting never waits for a slot, so a flood cannot stall the accept
/// loop). Office terminals keep one connection each; a thousand per process
/// is far above one API process's share and bounds memory and descriptors.
pub const CONNECTIONS_MAX: usize = 1024;

/// Most connections open at once from one client address (an IPv4 address,
/// or an IPv6 /64, which one host usually holds whole). A connection beyond
/// it is closed at once. An office behind one NAT gateway opens one per
/// terminal; 256 also leaves room for `kiban bench api`'s load generator,
/// which opens up to `REQUESTS_IN_FLIGHT_MAX` connections from loopback. One
/// address can thus hold at most a quarter of [`CONNECTIONS_MAX`].
pub const CONNECTIONS_PER_ADDRESS_MAX: usize = 256;

/// The connection limits and timeouts of a server: the constants above by
/// default; tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections at once ([`CONNECTIONS_MAX`]).
    pub connections_max: usize,
    /// Most connections at once from one address ([`CONNECTIONS_PER_ADDRESS_MAX`]).
    pub connections_per_address_max: usize,
    /// The TLS handshake timeout ([`HANDSHAKE_TIMEOUT_MS`]).
    pub handshake_timeout: Duration,
    /// The header-read and idle keep-alive timeout ([`HEADER_READ_TIMEOUT_MS`]).
    pub header_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            connections_max: CONNECTIONS_MAX,
            connections_per_address_max: CONNECTIONS_PER_ADDRESS_MAX,
            handshake_timeout: Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
            header_read_timeout: Duration::from_millis(HEADER_READ_TIMEOUT_MS),
        }
    }
}

/// Longest PROXY protocol v2 header accepted, in bytes: the 16 fixed bytes
/// and the addresses of an IPv6 connection (36) leave room for the few
/// type-length-values a balancer may add; a longer one is refused.
pub const PROXY_HEADER_BYTES_MAX: usize = 1024;

/// The load balancers whose connections begin with a PROXY protocol v2
/// header (`kiban serve --proxy-protocol-from`); none by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// The balancers in `networks`.
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    /// Whether a connection from `address` must send the header (an
    /// IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn trusts(&self, address: IpAddr) -> bool {
        let address = match address {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The networks.
    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }
}

/// Parses a `--proxy-protocol-from` value: a network (`10.0.0.0/24`,
/// `fd00::/64`) or one address (`127.0.0.1`, taken as `/32` or `/128`).
pub fn parse_proxy_source(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is neither a network (10.0.0.0/24) nor an address"))
}

/// Why a trusted balancer's connection was refused.
#[derive(Debug, thiserror::Error)]
enum ProxyHeaderError {
    #[error("no PROXY protocol v2 header from a trusted load balancer")]
    Missing,
    #[error("a PROXY protocol v2 header of {0} bytes (at most {PROXY_HEADER_BYTES_MAX})")]
    TooLong(usize),
    #[error("an invalid PROXY protocol v2 header: {0}")]
    Invalid(#[from] ppp::v2::ParseError),
    #[error("the connection ended in the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the PROXY protocol v2 header at the start of `tcp` (exactly its
/// bytes: the TLS handshake follows) and returns the client's address it
/// names. A `LOCAL` header (the balancer's own connection, e.g. a health
/// check) or one without IP addresses names the balancer itself: `peer`.
async fn read_proxy_header(
    tcp: &mut TcpStream,
    peer: SocketAddr,
) -> Result<SocketAddr, ProxyHeaderError> {
    use ppp::v2::{Addresses, Command, Header, PROTOCOL_PREFIX};
    let mut header = vec![0u8; 16];
    tcp.read_exact(&mut header).await?;
    if !header.starts_with(PROTOCOL_PREFIX) {
        return Err(ProxyHeaderError::Missing);
    }
    let length = 16 + usize::from(u16::from_be_bytes([header[14], header[15]]));
    if length > PROXY_HEADER_BYTES_MAX {
        return Err(ProxyHeaderError::TooLong(length));
    }
    header.resize(length, 0);
    tcp.read_exact(&mut header[16..]).await?;
    let parsed = Header::try_from(header.as_slice())?;
    Ok(match (parsed.command, parsed.addresses) {
        (Command::Proxy, Addresses::IPv4(ip)) => {
            SocketAddr::from((ip.source_address, ip.source_port))
        }
        (Command::Proxy, Addresses::IPv6(ip)) => {
            SocketAddr::from((ip.source_address, ip.source_port))
        }
        _ => peer,
    })
}

/// The client's address, as each request of a connection carries it (an
/// extension): the TCP peer, or behind a trusted load balancer the address
/// its PROXY protocol header named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress(pub SocketAddr);

/// How the server listens.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The address to bind (port 0 picks one).
    pub listen: SocketAddr,
    /// The certificates.
    pub tls: TlsFiles,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The certificates could not be loaded.
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The bound address.
    pub local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Waits until the server has stopped (after the shutdown token was
    /// cancelled and open connections finished their requests).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Binds `config.listen` and serves the API over HTTPS until `shutdown` is
/// cancelled.
pub async fn serve(
    config: &ServeConfig,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<Server, ServeError> {
    serve_limited(config, ConnectionLimits::default(), state, shutdown).await
}

/// [`serve`] with other connection limits and timeouts than the defaults.
pub async fn serve_limited(
    config: &ServeConfig,
    limits: ConnectionLimits,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<Server, ServeError> {
    serve_behind(config, limits, TrustedProxies::default(), state, shutdown).await
}

/// [`serve_limited`] behind the load balancers in `proxies`, whose
/// connections begin with a PROXY protocol v2 header.
pub async fn serve_behind(
    config: &ServeConfig,
    limits: ConnectionLimits,
    proxies: TrustedProxies,
    state: AppState,
    shutdown: CancellationToken,
) -> Result<Server, ServeError> {
    let streams = state.inner.streams.clone();
    let app = router(state);
    serve_app(config, limits, proxies, app, Some(streams), shutdown).await
}

/// Serves `app` behind the same listener, TLS and client-certificate stack
/// as [`serve`] (the connection's [`ClientIdentity`] is inserted into every
/// request). `kiban bench api` measures a trivial handler this way: the
/// ceiling of the stack itself.
pub async fn serve_router(
    config: &ServeConfig,
    app: axum::Router,
    shutdown: CancellationToken,
) -> Result<Server, ServeError> {
    serve_router_behind(
        config,
        ConnectionLimits::default(),
        TrustedProxies::default(),
        app,
        shutdown,
    )
    .await
}

/// [`serve_router`] with other limits, behind the load balancers in
/// `proxies`.
pub async fn serve_router_behind(
    config: &ServeConfig,
    limits: ConnectionLimits,
    proxies: TrustedProxies,
    app: axum::Router,
    shutdown: CancellationToken,
) -> Result<Server, ServeError> {
    serve_app(config, limits, proxies, app, None, shutdown).await
}

async fn serve_app(
    config: &ServeConfig,
    limits: ConnectionLimits,
    proxies: TrustedProxies,
    app: axum::Router,
    streams: Option<CancellationToken>,
    shutdown: CancellationToken,
) -> Result<Server, ServeError> {
    let tls = server_config(&config.tls)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            address: config.listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServeError::Bind {
        address: config.listen,
        source,
    })?;
    let task = tokio::spawn(accept_loop(
        listener,
        limits,
        Arc::new(proxies),
        TlsAcceptor::from(tls),
        app,
        streams,
        shutdown,
    ));
    Ok(Server { local_addr, task })
}

async fn accept_loop(
    listener: TcpListener,
    limits: ConnectionLimits,
    proxies: Arc<TrustedProxies>,
    acceptor: TlsAcceptor,
    app: axum::Router,
    streams: Option<CancellationToken>,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    let per_address = PerAddress::new(limits.connections_per_address_max);
    loop {
        let (mut tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Refuse rather than wait: a connection over a limit is closed at
        // once, and the loop goes back to accepting the next one.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("connection refused: connections_max reached");
            continue;
        };
        if !proxies.trusts(peer.ip()) {
            let Some(address_slot) = per_address.try_acquire(peer.ip()) else {
                tracing::debug!(client = %peer.ip(), "connection refused: connections_per_address_max reached");
                continue;
            };
            let (acceptor, app, shutdown) = (acceptor.clone(), app.clone(), shutdown.clone());
            connections.spawn(async move {
                serve_connection(tcp, peer, limits, acceptor, app, shutdown).await;
                drop(address_slot);
                drop(slot);
            });
            continue;
        }
        // A trusted balancer: the client's address comes in the PROXY
        // header, read within the handshake's time.
        let (acceptor, app, shutdown) = (acceptor.clone(), app.clone(), shutdown.clone());
        let per_address = per_address.clone();
        connections.spawn(async move {
            let header = tokio::time::timeout(
                limits.handshake_timeout,
                read_proxy_header(&mut tcp, peer),
            );
            let client = match header.await {
                Ok(Ok(client)) => client,
                Ok(Err(error)) => {
                    tracing::debug!(balancer = %peer.ip(), %error, "connection refused");
                    return;
                }
                Err(_) => return,
            };
            let Some(address_slot) = per_address.try_acquire(client.ip()) else {
                tracing::debug!(client = %client.ip(), "connection refused: connections_per_address_max reached");
                return;
            };
            serve_connection(tcp, client, limits, acceptor, app, shutdown).await;
            drop(address_slot);
            drop(slot);
        });
    }
    if let Some(streams) = streams {
        streams.cancel();
    }
    connections.close();
    connections.wait().await;
}

/// Connections open per client address.
#[derive(Clone)]
struct PerAddress {
    max: usize,
    // A sync mutex: held for one map update, never across an await.
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerAddress {
    fn new(max: usize) -> PerAddress {
        PerAddress {
            max,
            open: Arc::default(),
        }
    }

    /// A slot for one more connection from `address`, or `None` at the
    /// limit. The slot is given back when dropped.
    fn try_acquire(&self, address: IpAddr) -> Option<AddressSlot> {
        let key = address_key(address);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            key,
            open: self.clone(),
        })
    }
}

struct AddressSlot {
    key: IpAddr,
    open: PerAddress,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .open
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The address a limit counts against: an IPv4 address (IPv4-mapped IPv6
/// included), or the /64 network of an IPv6 address.
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

async fn serve_connection(
    tcp: TcpStream,
    client: SocketAddr,
    limits: ConnectionLimits,
    acceptor: TlsAcceptor,
    app: axum::Router,
    shutdown: CancellationToken,
) {
    let handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp));
    let tls = match handshake.await {
        Ok(Ok(tls)) => tls,
        // A failed handshake (no trust in the client's CA, a scanner) is the
        // client's problem: nothing to log at warning level.
        Ok(Err(error)) => {
            tracing::debug!(client = %client.ip(), %error, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let identity = ClientIdentity::from_certificate(
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|certificate| certificate.as_ref()),
    );
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(identity.clone());
        request.extensions_mut().insert(ClientAddress(client));
        app.clone().oneshot(request)
    });
    // Without a timer hyper silently ignores its header-read timeout.
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(client = %client.ip(), %error, "connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The PROXY protocol (v2) from trusted load balancers, over real
    //! loopback TCP and TLS: a raw client writes the header a balancer
    //! would (`ppp`'s builder), with a made-up client address, then speaks
    //! TLS; the server's router answers the client address it was given.

    use std::io;
    use std::sync::Arc;

    use rustls::RootCertStore;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_rustls::TlsConnector;

    use super::*;

    /// A server whose every answer is the client address of its request.
    struct Echo {
        server: Server,
        ca: std::path::PathBuf,
        shutdown: CancellationToken,
        _dir: tempfile::TempDir,
    }

    async fn echo(proxies: &[&str], per_address: usize) -> Echo {
        let dir = tempfile::tempdir().unwrap();
        let pki = crate::dev_pki(dir.path(), &[]).unwrap();
        let app = axum::Router::new().fallback(
            |axum::Extension(ClientAddress(client)): axum::Extension<ClientAddress>| async move {
                client.ip().to_string()
            },
        );
        let limits = ConnectionLimits {
            connections_per_address_max: per_address,
            ..ConnectionLimits::default()
        };
        let proxies = TrustedProxies::new(
            proxies
                .iter()
                .map(|p| parse_proxy_source(p).unwrap())
                .collect(),
        );
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: pki.tls.clone(),
        };
        let shutdown = CancellationToken::new();
        let server = serve_router_behind(&config, limits, proxies, app, shutdown.clone())
            .await
            .unwrap();
        Echo {
            server,
            ca: pki.tls.client_ca.clone(),
            shutdown,
            _dir: dir,
        }
    }

    impl Echo {
        /// Connects from loopback; with `header`, first writes a PROXY v2
        /// header naming `header` as the client; then TLS.
        async fn connect(
            &self,
            header: Option<&str>,
        ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
            let mut tcp = TcpStream::connect(self.server.local_addr).await?;
            if let Some(client) = header {
                let client: SocketAddr = client.parse().unwrap();
                // Both addresses of one family, as a balancer sends them.
                let server = match (client, self.server.local_addr) {
                    (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
                        SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
                    }
                    (_, server) => server,
                };
                let bytes = ppp::v2::Builder::with_addresses(
                    ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                    ppp::v2::Protocol::Stream,
                    (client, server),
                )
                .build()?;
                tcp.write_all(&bytes).await?;
            }
            let mut roots = RootCertStore::empty();
            for certificate in CertificateDer::pem_file_iter(&self.ca).unwrap() {
                roots.add(certificate.unwrap()).unwrap();
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            TlsConnector::from(Arc::new(config))
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
        }

        async fn stop(self) {
            self.shutdown.cancel();
            self.server.wait().await;
        }
    }

    /// Sends one keep-alive request and returns the answer's body (the
    /// client address the server saw); an error if the server closed.
    async fn client_address(
        tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    ) -> io::Result<String> {
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await?;
        let mut answer = Vec::new();
        let mut buffer = [0u8; 1024];
        loop {
            let read = tls.read(&mut buffer).await?;
            if read == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            answer.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&answer).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return Ok(body.to_owned());
                }
            }
        }
    }

    /// Connects (with the header) and asks; an error if refused at any
    /// point (TCP, the header, TLS or the request).
    async fn ask(echo: &Echo, header: Option<&str>) -> io::Result<String> {
        let mut tls = echo.connect(header).await?;
        client_address(&mut tls).await
    }

    #[tokio::test]
    async fn a_trusted_balancers_header_names_the_client_and_the_per_address_limit_counts_it() {
        let echo = echo(&["127.0.0.1/32"], 2).await;
        let mut first = echo.connect(Some("203.0.113.7:40000")).await.unwrap();
        assert_eq!(client_address(&mut first).await.unwrap(), "203.0.113.7");
        let mut second = echo.connect(Some("203.0.113.7:40001")).await.unwrap();
        assert_eq!(client_address(&mut second).await.unwrap(), "203.0.113.7");
        // Both are open: a third from the same client is over its limit of
        // two, although the balancer itself has only two connections.
        let third = ask(&echo, Some("203.0.113.7:40002")).await;
        assert!(
            third.is_err(),
            "a third connection of 203.0.113.7: {third:?}"
        );
        // Another client behind the same balancer is not.
        assert_eq!(
            ask(&echo, Some("198.51.100.9:1")).await.unwrap(),
            "198.51.100.9"
        );
        // An IPv6 client, counted as its /64.
        assert_eq!(
            ask(&echo, Some("[2001:db8::1]:443")).await.unwrap(),
            "2001:db8::1"
        );
        // Once one closes, the client connects again.
        drop(first);
        let again = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Ok(address) = ask(&echo, Some("203.0.113.7:40003")).await {
                    return address;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("a slot of 203.0.113.7 is free again");
        assert_eq!(again, "203.0.113.7");
        drop(second);
        echo.stop().await;
    }

    #[tokio::test]
    async fn a_trusted_balancer_without_the_header_is_refused() {
        let echo = echo(&["127.0.0.1"], 256).await;
        let refused = ask(&echo, None).await;
        assert!(refused.is_err(), "{refused:?}");
        // With the header, the same address is served.
        assert_eq!(
            ask(&echo, Some("192.0.2.1:5000")).await.unwrap(),
            "192.0.2.1"
        );
        echo.stop().await;
    }

    #[tokio::test]
    async fn a_header_from_an_untrusted_address_is_refused_and_its_own_address_counts() {
        let echo = echo(&["10.0.0.0/8"], 1).await;
        let refused = ask(&echo, Some("203.0.113.7:40000")).await;
        assert!(refused.is_err(), "{refused:?}");
        // Without a header it is a client like any other, with its own
        // address, under its own limit of one.
        let mut direct = echo.connect(None).await.unwrap();
        assert_eq!(client_address(&mut direct).await.unwrap(), "127.0.0.1");
        let second = ask(&echo, None).await;
        assert!(
            second.is_err(),
            "a second connection of 127.0.0.1: {second:?}"
        );
        drop(direct);
        echo.stop().await;
    }

    #[test]
    fn proxy_sources_are_networks_or_addresses() {
        assert_eq!(
            parse_proxy_source("10.0.1.0/24").unwrap().to_string(),
            "10.0.1.0/24"
        );
        assert_eq!(
            parse_proxy_source("127.0.0.1").unwrap().to_string(),
            "127.0.0.1/32"
        );
        assert_eq!(
            parse_proxy_source("fd00::1").unwrap().to_string(),
            "fd00::1/128"
        );
        assert!(parse_proxy_source("a balancer").is_err());
        let proxies = TrustedProxies::new(vec![parse_proxy_source("127.0.0.1").unwrap()]);
        assert!(proxies.trusts("127.0.0.1".parse().unwrap()));
        assert!(proxies.trusts("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!proxies.trusts("127.0.0.2".parse().unwrap()));
    }
}
