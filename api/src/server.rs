//! [`serve`]: the HTTPS server — rustls with client certificates, one task
//! per connection, all owned by the server task and stopped by the
//! shutdown token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
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

/// Most connections open at once; the next connection waits for a slot.
/// Office terminals keep one connection each; a thousand per process is
/// far above one API process's share and bounds memory and descriptors.
pub const CONNECTIONS_MAX: usize = 1024;

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
    let streams = state.inner.streams.clone();
    serve_app(config, router(state), Some(streams), shutdown).await
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
    serve_app(config, app, None, shutdown).await
}

async fn serve_app(
    config: &ServeConfig,
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
        TlsAcceptor::from(tls),
        app,
        streams,
        shutdown,
    ));
    Ok(Server { local_addr, task })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: axum::Router,
    streams: Option<CancellationToken>,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let (acceptor, app, shutdown) = (acceptor.clone(), app.clone(), shutdown.clone());
        connections.spawn(async move {
            serve_connection(tcp, acceptor, app, shutdown).await;
            drop(slot);
        });
    }
    if let Some(streams) = streams {
        streams.cancel();
    }
    connections.close();
    connections.wait().await;
}

async fn serve_connection(
    tcp: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    app: axum::Router,
    shutdown: CancellationToken,
) {
    let handshake = tokio::time::timeout(
        Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
        acceptor.accept(tcp),
    );
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
    let connection =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
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
