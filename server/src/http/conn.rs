//! Connections: a cap on how many are open, and an idle timeout on each.
//!
//! [`Limit`] is the first acceptor every accepted TCP connection goes through
//! (before TLS): past `max_connections` open ones, it refuses the connection,
//! which is then closed at once. Each connection it lets through is wrapped in
//! a [`Guarded`] stream that holds its place until closed and fails (hyper
//! then closes it) once it has been idle for `idle_timeout_ms`: no byte has
//! moved either way for that long, or no request has been open on it for
//! that long. The second rule is what ends an idle HTTP/2 connection: the
//! server pings it (so that a quiet stream keeps moving bytes), and the
//! client's answers to those pings move bytes with no request at all. A
//! request is open from when the service is called until its response body
//! is finished or dropped ([`Counted`]). The time to send a request's headers
//! is hyper's own `header_read_timeout`.
//!
//! It owns the bytes on an HTTP connection below the router. It must never
//! look inside a request beyond rewriting hyper's own bare error answers.

use std::future::{Future, Ready, ready};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum_server::accept::Accept;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// The acceptor that caps connections and adds the idle timeout.
#[derive(Clone)]
pub(crate) struct Limit {
    slots: Arc<Semaphore>,
    idle: Duration,
}

impl Limit {
    pub(crate) fn new(max_connections: usize, idle: Duration) -> Limit {
        Limit {
            slots: Arc::new(Semaphore::new(max_connections)),
            idle,
        }
    }
}

impl<S> Accept<tokio::net::TcpStream, S> for Limit {
    type Stream = Guarded<tokio::net::TcpStream>;
    type Service = Counted<S>;
    type Future = Ready<io::Result<(Guarded<tokio::net::TcpStream>, Counted<S>)>>;

    fn accept(&self, stream: tokio::net::TcpStream, service: S) -> Self::Future {
        // Small writes (HTTP/2 frames of a gRPC stream) go out at once instead
        // of waiting for the peer's delayed acknowledgement; a socket that
        // refuses the option is served as it is.
        let _ = stream.set_nodelay(true);
        // Dropping `stream` (on refusal) closes the connection.
        ready(match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let requests = Arc::new(Requests::new());
                Ok((
                    Guarded::new(stream, self.idle, permit, requests.clone()),
                    Counted {
                        inner: service,
                        requests,
                    },
                ))
            }
            Err(_) => Err(io::Error::other("too many connections")),
        })
    }
}

/// The requests open on one connection, shared by its [`Guarded`] stream
/// and its [`Counted`] service: how many are open, and since when none has
/// been (the last one's end, or the connection's start).
struct Requests(Mutex<(usize, Instant)>);

impl Requests {
    fn new() -> Requests {
        Requests(Mutex::new((0, Instant::now())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Instant)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Since when no request has been open, or `None` while one is.
    fn none_open_since(&self) -> Option<Instant> {
        let (open, since) = *self.lock();
        (open == 0).then_some(since)
    }
}

/// One open request of a connection, until dropped.
struct OpenRequest(Arc<Requests>);

impl OpenRequest {
    fn new(requests: &Arc<Requests>) -> OpenRequest {
        requests.lock().0 += 1;
        OpenRequest(requests.clone())
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let mut r = self.0.lock();
        *r = (r.0.saturating_sub(1), Instant::now());
    }
}

/// A connection's service, which counts its open requests: a request is
/// open from when it is called until its response body is finished or
/// dropped (a subscription's streamed body keeps it open).
#[derive(Clone)]
pub(crate) struct Counted<S> {
    inner: S,
    requests: Arc<Requests>,
}

impl<S, B> tower_service::Service<Request<B>> for Counted<S>
where
    S: tower_service::Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let open = OpenRequest::new(&self.requests);
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            // The body holds the place until hyper is done with it.
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _open = &open;
                    frame
                }))
            }))
        })
    }
}

/// A connection that holds its place among `max_connections` and times out when idle.
pub(crate) struct Guarded<I> {
    inner: I,
    idle: Duration,
    last_activity: Instant,
    requests: Arc<Requests>,
    timer: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl<I> Guarded<I> {
    fn new(inner: I, idle: Duration, slot: OwnedSemaphorePermit, requests: Arc<Requests>) -> Self {
        let now = Instant::now();
        Guarded {
            inner,
            idle,
            last_activity: now,
            requests,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            _slot: slot,
        }
    }

    fn active(&mut self) {
        self.last_activity = Instant::now();
    }

    /// When the connection is idle too long: `idle` after the last byte
    /// moved, or after the last request ended if none is open now.
    fn deadline(&self) -> Instant {
        let bytes = self.last_activity + self.idle;
        match self.requests.none_open_since() {
            Some(since) => bytes.min(since + self.idle),
            None => bytes,
        }
    }

    /// Called while the connection waits: an error once it has been idle too long.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.deadline();
            if self.timer.deadline() != deadline {
                // Activity since the timer was set, or a request opened or ended: move it.
                self.timer.as_mut().reset(deadline);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if self.deadline() <= Instant::now() => {
                    return Poll::Ready(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the connection was idle too long",
                    ));
                }
                Poll::Ready(()) => {}
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Guarded<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Guarded<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.active();
                }
                Poll::Ready(r)
            }
            // A client that stops reading is idle too.
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.poll_idle(cx).map(Err),
            r => r,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The acceptor that gives hyper's own error answers the API's JSON shape.
///
/// hyper answers a request it cannot parse (a raw byte that is not UTF-8 in
/// the path, a malformed request line or header, headers too large) by itself,
/// before the router sees it, with an empty body. The router never answers an
/// error with an empty body (every one is `{"error", "message"}`), so an error
/// head with `content-length: 0` written on the connection is hyper's: it is
/// replaced by the same status with a JSON body. It wraps the stream above TLS.
#[derive(Clone)]
pub(crate) struct JsonErrors<A>(pub(crate) A);

impl<A, I, S> Accept<I, S> for JsonErrors<A>
where
    A: Accept<I, S>,
    A::Future: Send + 'static,
    A::Stream: Send + 'static,
    A::Service: Send + 'static,
{
    type Stream = Rewriting<A::Stream>;
    type Service = A::Service;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<(Self::Stream, Self::Service)>> + Send>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        let inner = self.0.accept(stream, service);
        Box::pin(async move {
            let (stream, service) = inner.await?;
            Ok((
                Rewriting {
                    inner: stream,
                    out: Vec::new(),
                    sent: 0,
                },
                service,
            ))
        })
    }
}

/// A connection whose bare error answers are rewritten; see [`JsonErrors`].
pub(crate) struct Rewriting<I> {
    inner: I,
    /// A rewritten answer still to be written, and how much of it was.
    out: Vec<u8>,
    sent: usize,
}

impl<I: AsyncWrite + Unpin> Rewriting<I> {
    /// Writes what is left of a rewritten answer.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewriting<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewriting<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        if let Some(answer) = json_error_answer(buf) {
            self.out = answer;
            self.sent = 0;
            // The bare answer counts as written; the JSON one goes out now or on flush.
            return match self.poll_drain(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Ready(Ok(buf.len())),
            };
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // One slice at a time, so that a head is seen whole.
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
        self.poll_write(cx, first)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// If `buf` is exactly a bare error head (status 4xx or 5xx, `content-length:
/// 0`, no content type), the same answer with a JSON error body.
fn json_error_answer(buf: &[u8]) -> Option<Vec<u8>> {
    let rest = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    if !matches!(rest.first(), Some(b'4' | b'5')) || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = std::str::from_utf8(buf).ok()?;
    let mut lines = head.trim_end().split("\r\n");
    let status_line = lines.next()?;
    let mut empty = false;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-type") || name.eq_ignore_ascii_case("transfer-encoding") {
            return None;
        }
        if name.eq_ignore_ascii_case("content-length") {
            empty = value.trim() == "0";
        }
    }
    if !empty {
        return None;
    }
    let status: u16 = status_line.get(9..12)?.parse().ok()?;
    let (code, message) = match status {
        400 => (
            "invalid_request",
            "the request could not be read: a malformed request line or header (such as a path with a byte \
             that is not UTF-8 or not percent-encoded)",
        ),
        408 => ("timeout", "the request's headers did not arrive in time"),
        413 | 414 | 431 => ("request_too_large", "the request line or headers are too large"),
        505 => ("invalid_request", "this HTTP version is not supported"),
        s if s >= 500 => ("internal", "the server could not answer the request"),
        _ => ("invalid_request", "the request could not be read"),
    };
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bare_error_heads_are_rewritten() {
        let bare = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let answer = String::from_utf8(json_error_answer(bare).unwrap()).unwrap();
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"));
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "invalid_request");
        for other in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        ] {
            assert!(json_error_answer(other).is_none(), "{}", String::from_utf8_lossy(other));
        }
    }
}
