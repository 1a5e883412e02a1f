//! [`serve`]: the HTTPS server — rustls with client certificates, one task
//! per connection, all owned by the server task and stopped by the
//! shutdown token.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
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
    let streams = state.inner.streams.clone();
    serve_app(config, limits, router(state), Some(streams), shutdown).await
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
    serve_app(config, ConnectionLimits::default(), app, None, shutdown).await
}

async fn serve_app(
    config: &ServeConfig,
    limits: ConnectionLimits,
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
    acceptor: TlsAcceptor,
    app: axum::Router,
    streams: Option<CancellationToken>,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(limits.connections_max));
    let per_address = PerAddress::new(limits.connections_per_address_max);
    loop {
        let (tcp, peer) = tokio::select! {
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
        let Some(address_slot) = per_address.try_acquire(peer.ip()) else {
            tracing::debug!("connection refused: connections_per_address_max reached");
            continue;
        };
        let (acceptor, app, shutdown) = (acceptor.clone(), app.clone(), shutdown.clone());
        connections.spawn(async move {
            serve_connection(tcp, limits, acceptor, app, shutdown).await;
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
    tcp: tokio::net::TcpStream,
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
            tracing::debug!(%error, "TLS handshake failed");
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
                tracing::debug!(%error, "connection ended with an error");
            }
        }
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
