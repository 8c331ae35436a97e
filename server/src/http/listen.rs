//! Serving HTTP on a bound listener: the acceptor stack (connection cap and
//! idle timeout below TLS, JSON answers for hyper's own errors above it),
//! HTTP/1.1 and HTTP/2 (cleartext with prior knowledge, or chosen by ALPN
//! under TLS), the header-read timeout, HTTP/2 keep-alive pings, and the
//! graceful stop. The service it serves is given to it: the crate's `server`
//! module puts the protocols that share the listener together.
//!
//! It owns how HTTP connections are accepted and ended. It must never bind,
//! load certificates or wait for the store: startup and the end of shutdown
//! are the crate's `server` module's.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;

use super::conn::{JsonErrors, Limit};
use crate::state::AppState;

/// Serves `app` on `listener` until `stop` completes, then stops accepting
/// and lets open requests finish for up to `shutdown_grace_ms`.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    state: AppState,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let grace = Duration::from_millis(state.config.shutdown_grace_ms);
    let handle = axum_server::Handle::new();
    let make = app.into_make_service();
    let config = &state.config;
    let limit = Limit::new(config.max_connections, config.idle_timeout());
    let header_read = config.header_read_timeout();
    // An HTTP/2 connection that carries only a quiet stream (a live
    // subscription) is pinged well within the idle timeout, so that it moves
    // bytes and stays open; a peer that stops answering pings is dropped.
    let ping = (config.idle_timeout() / 3).clamp(Duration::from_secs(1), Duration::from_secs(20));
    // A client has header_read_timeout_ms to send each HTTP/1.1 request's
    // headers, counted from when the server waits for them: after accepting,
    // and between requests on a kept-alive connection.
    let server = async {
        match tls {
            None => {
                let mut s = axum_server::from_tcp(listener)?.acceptor(JsonErrors(limit));
                s.http_builder().http1().header_read_timeout(Some(header_read));
                s.http_builder()
                    .http2()
                    .keep_alive_interval(Some(ping))
                    .keep_alive_timeout(ping);
                s.first_request_timeout(header_read)
                    .handle(handle.clone())
                    .serve(make)
                    .await
            }
            Some(tls) => {
                let mut tls = (*tls).clone();
                tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                let cfg = RustlsConfig::from_config(Arc::new(tls));
                // The cap and the idle timeout apply below TLS, from the first byte.
                let mut s = axum_server::tls_rustls::from_tcp_rustls(listener, cfg)?
                    .map(|tls| JsonErrors(tls.handshake_timeout(header_read).acceptor(limit)));
                s.http_builder().http1().header_read_timeout(Some(header_read));
                s.http_builder()
                    .http2()
                    .keep_alive_interval(Some(ping))
                    .keep_alive_timeout(ping);
                s.first_request_timeout(header_read)
                    .handle(handle.clone())
                    .serve(make)
                    .await
            }
        }
    };
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r,
        () = stop => {
            handle.graceful_shutdown(Some(grace));
            server.await
        }
    }
}
