//! Startup and shutdown: checking the config, loading the certificate,
//! binding, running the protocols, and waiting for store work at the end.
//!
//! It owns the order of startup and shutdown, for every protocol, and which
//! protocol a request on the shared listener goes to: gRPC (content type
//! `application/grpc…`) or the HTTP/JSON API (everything else). It must
//! never answer a request nor accept a connection itself: connections are
//! accepted in `http::listen`, requests answered by each protocol.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{ServerConfig, TlsConfig};
use crate::error::ServerError;
use crate::state::AppState;

/// A server bound to its address, not yet serving.
pub struct BoundServer {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    state: AppState,
    /// The certificate and key, without ALPN (each protocol names its own).
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// Checks the config, loads the TLS files and binds the listen address.
pub async fn bind(store: Arc<annal::Store>, config: ServerConfig) -> Result<BoundServer, ServerError> {
    let tls = match &config.tls {
        Some(t) => Some(load_tls(t)?),
        None => None,
    };
    let listen = config.listen;
    let state = AppState::new(store, config)?;
    let io = |context: String| move |source| ServerError::Io { context, source };
    let listener = std::net::TcpListener::bind(listen).map_err(io(format!("binding {listen}")))?;
    listener
        .set_nonblocking(true)
        .map_err(io("setting the listener non-blocking".into()))?;
    let addr = listener.local_addr().map_err(io("reading the listen address".into()))?;
    Ok(BoundServer {
        listener,
        addr,
        state,
        tls,
    })
}

/// Serves the API over `store` until `shutdown` completes; then stops accepting,
/// ends subscriptions, lets requests finish (up to `shutdown_grace_ms`), waits
/// for running writes, and returns so that the caller can close the store.
pub async fn serve(
    store: Arc<annal::Store>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    bind(store, config).await?.run(shutdown).await
}

impl BoundServer {
    /// The address actually bound (the port, when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (metrics, shutdown token).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes; see [`serve`].
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), ServerError> {
        let BoundServer {
            listener,
            state,
            tls,
            addr,
        } = self;
        let grace = Duration::from_millis(state.config.shutdown_grace_ms);
        let io = |source| ServerError::Io {
            context: format!("serving on {addr}"),
            source,
        };
        // Subscriptions end and readiness fails as soon as shutdown begins.
        let stop = async {
            shutdown.await;
            state.shutdown.cancel();
        };
        let result = crate::http::listen::serve(listener, state.clone(), app(&state), tls, stop).await;
        state.shutdown.cancel();
        // Requests dropped at the end of the grace period may have left store
        // operations running on the blocking pool: wait for them (and for
        // subscription threads, which stop within a poll interval), so that
        // the caller holds the only reference to the store when this returns.
        let deadline = Instant::now() + grace.max(Duration::from_secs(1));
        while (state.operations_in_flight() > 0 || state.subscribers() > 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        result.map_err(io)
    }
}

/// The service of the listener: gRPC requests to the gRPC services, every
/// other request to the HTTP/JSON API.
fn app(state: &AppState) -> axum::Router {
    let http = crate::http::router(state.clone());
    // What a browser may ask on behalf of another site is refused on the
    // gRPC path too: a page can post `application/grpc` bodies over HTTP/1.1.
    let grpc = crate::grpc::router(state.clone()).layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::http::same_site_layer,
    ));
    axum::Router::new().fallback_service(ByProtocol { http, grpc })
}

/// Sends each request to the router of its protocol.
#[derive(Clone)]
struct ByProtocol {
    http: axum::Router,
    grpc: axum::Router,
}

impl tower_service::Service<axum::extract::Request> for ByProtocol {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        // Both routers are always ready.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        let mut router = if crate::grpc::is_grpc(&req) {
            self.grpc.clone()
        } else {
            self.http.clone()
        };
        Box::pin(async move { tower_service::Service::call(&mut router, req).await })
    }
}

/// Loads the certificate chain and key into a rustls config (ring provider).
fn load_tls(t: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |what: &str, path: &std::path::Path, e: &dyn std::fmt::Display| {
        ServerError::Tls(format!("{what} {}: {e}", path.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert)
        .map_err(|e| tls("reading certificates from", &t.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls("reading certificates from", &t.cert, &e))?;
    if certs.is_empty() {
        return Err(tls("reading certificates from", &t.cert, &"no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(&t.key).map_err(|e| tls("reading the key from", &t.key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(format!("certificate and key do not fit: {e}")))?;
    Ok(Arc::new(config))
}
