//! Binding, TLS, serving and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum_server::tls_rustls::RustlsConfig;

use crate::config::TlsConfig;
use crate::http::conn::{JsonErrors, Limit};
use crate::{AppState, ServerConfig, ServerError, router};

/// A server bound to its address, not yet serving.
pub struct BoundServer {
    listener: std::net::TcpListener,
    addr: SocketAddr,
    state: AppState,
    tls: Option<RustlsConfig>,
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
        let handle = axum_server::Handle::new();
        let make = router(state.clone()).into_make_service();
        let io = |source| ServerError::Io {
            context: format!("serving on {addr}"),
            source,
        };
        let config = &state.config;
        let limit = Limit::new(config.max_connections, config.idle_timeout());
        let header_read = config.header_read_timeout();
        // HTTP/1.1 only (as TLS offers by ALPN); a client has header_read_timeout_ms
        // to send each request's headers, counted from when the server waits for
        // them: after accepting, and between requests on a kept-alive connection.
        let server = async {
            match tls {
                None => {
                    let mut s = axum_server::from_tcp(listener)?
                        .acceptor(JsonErrors(limit))
                        .http1_only();
                    s.http_builder().http1().header_read_timeout(Some(header_read));
                    s.first_request_timeout(header_read)
                        .handle(handle.clone())
                        .serve(make)
                        .await
                }
                Some(cfg) => {
                    // The cap and the idle timeout apply below TLS, from the first byte.
                    let mut s = axum_server::tls_rustls::from_tcp_rustls(listener, cfg)?
                        .map(|tls| JsonErrors(tls.handshake_timeout(header_read).acceptor(limit)))
                        .http1_only();
                    s.http_builder().http1().header_read_timeout(Some(header_read));
                    s.first_request_timeout(header_read)
                        .handle(handle.clone())
                        .serve(make)
                        .await
                }
            }
        };
        tokio::pin!(server);
        let result = tokio::select! {
            r = &mut server => r,
            () = shutdown => {
                state.shutdown.cancel();
                handle.graceful_shutdown(Some(grace));
                server.await
            }
        };
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

/// Loads the certificate chain and key into a rustls config (ring provider, HTTP/1.1).
fn load_tls(t: &TlsConfig) -> Result<RustlsConfig, ServerError> {
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
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(format!("certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(config)))
}
