//! Connections: a cap on how many are open, and an idle timeout on each.
//!
//! [`Limit`] is the first acceptor every accepted TCP connection goes through
//! (before TLS): past `max_connections` open ones, it refuses the connection,
//! which is then closed at once. Each connection it lets through is wrapped in
//! a [`Guarded`] stream that holds its place until closed and fails once no
//! byte has moved either way for `idle_timeout_ms` (hyper then closes it). The
//! time to send a request's headers is hyper's own `header_read_timeout`.

use std::future::{Ready, ready};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
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

impl<I, S> Accept<I, S> for Limit {
    type Stream = Guarded<I>;
    type Service = S;
    type Future = Ready<io::Result<(Guarded<I>, S)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        // Dropping `stream` (on refusal) closes the connection.
        ready(match self.slots.clone().try_acquire_owned() {
            Ok(permit) => Ok((Guarded::new(stream, self.idle, permit), service)),
            Err(_) => Err(io::Error::other("too many connections")),
        })
    }
}

/// A connection that holds its place among `max_connections` and times out when idle.
pub(crate) struct Guarded<I> {
    inner: I,
    idle: Duration,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl<I> Guarded<I> {
    fn new(inner: I, idle: Duration, slot: OwnedSemaphorePermit) -> Self {
        let now = Instant::now();
        Guarded {
            inner,
            idle,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            _slot: slot,
        }
    }

    fn active(&mut self) {
        self.last_activity = Instant::now();
    }

    /// Called while the connection waits: an error once it has been idle too long.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.last_activity + self.idle;
            if self.timer.deadline() != deadline {
                // Activity since the timer was set: move it (only ever later).
                self.timer.as_mut().reset(deadline);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if self.last_activity + self.idle <= Instant::now() => {
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
