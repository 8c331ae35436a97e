//! TCP connections a target opens itself, refusing a socket the kernel
//! connected to itself.
//!
//! On Linux, a connection to a port of the local ephemeral range
//! (`net.ipv4.ip_local_port_range`, 32768-60999 by default) on this host,
//! while nothing listens there, can be given that very port as its own
//! local port and then connects to itself (a TCP simultaneous open). Such a
//! socket holds the target's port, so the target cannot start again while
//! it lives, and what the client writes comes back to it as the "server's"
//! answer: a client that waits for a reply longer than the one it sent
//! waits for ever. This happened to the PostgreSQL target while its server
//! was down for a restart. Every connection made here is checked, and one
//! connected to itself is closed at once and reported as refused.
//!
//! This module owns opening sockets; it must never speak a protocol.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// How a connection watches a link that went quiet: TCP keepalive probes
/// (when to start, how often, how many unanswered before the connection is
/// dropped) and how long sent data may stay unacknowledged.
#[derive(Debug, Clone, Default)]
pub(crate) struct Liveness {
    /// Whether keepalive probes are sent at all.
    pub(crate) keepalive: bool,
    /// Idle time before the first probe (the system's default when `None`).
    pub(crate) idle: Option<Duration>,
    /// Time between probes (the system's default when `None`).
    pub(crate) interval: Option<Duration>,
    /// Probes left unanswered before the connection is dropped.
    pub(crate) retries: Option<u32>,
    /// How long sent data may stay unacknowledged before the connection is
    /// dropped (`TCP_USER_TIMEOUT`, Linux; the system's default when `None`).
    pub(crate) user_timeout: Option<Duration>,
}

/// Connects to `addr`, watching the link as `liveness` says, with no Nagle
/// delay.
///
/// A socket connected to itself is closed, and the error is
/// [`io::ErrorKind::ConnectionRefused`] (nothing listens at `addr`).
pub(crate) async fn connect(addr: SocketAddr, liveness: &Liveness) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    let sock = socket2::SockRef::from(&socket);
    if liveness.keepalive {
        let mut probes = socket2::TcpKeepalive::new();
        if let Some(idle) = liveness.idle {
            probes = probes.with_time(idle);
        }
        if let Some(interval) = liveness.interval {
            probes = probes.with_interval(interval);
        }
        if let Some(retries) = liveness.retries {
            probes = probes.with_retries(retries);
        }
        sock.set_tcp_keepalive(&probes)?;
    }
    #[cfg(target_os = "linux")]
    sock.set_tcp_user_timeout(liveness.user_timeout)?;
    // A socket connected to itself and closed lies in TIME_WAIT on the
    // target's port for a minute; a server binding there with SO_REUSEADDR
    // (as PostgreSQL and nats-server do) may do so only if this socket
    // allowed it too.
    socket.set_reuseaddr(true)?;
    let stream = socket.connect(addr).await?;
    if connected_to_itself(&stream)? {
        drop(stream);
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "nothing listens at {addr}: the connection was given that address as its own and \
                 connected to itself (the port lies in this host's ephemeral range); closed"
            ),
        ));
    }
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Whether the socket's two ends are the same address.
fn connected_to_itself(stream: &TcpStream) -> io::Result<bool> {
    Ok(stream.local_addr()? == stream.peer_addr()?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An even port of the ephemeral range that nothing listens at (next to
    /// one the kernel just handed out for a listener). Linux gives
    /// connections even ports first (and listeners asking for any port odd
    /// ones), so the search below finds an even port far sooner.
    #[cfg(target_os = "linux")]
    pub(crate) fn free_ephemeral_port() -> u16 {
        loop {
            let any = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = any.local_addr().expect("addr").port();
            let even = if port.is_multiple_of(2) { port } else { port - 1 };
            drop(any);
            if std::net::TcpListener::bind(("127.0.0.1", even)).is_ok() {
                return even;
            }
        }
    }

    /// The link's watch is set on the socket as asked: keepalive's idle
    /// time, interval and probe count, and the timeout of unacknowledged data.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_connection_watches_its_link_as_asked() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let asked = Liveness {
            keepalive: true,
            idle: Some(Duration::from_secs(7)),
            interval: Some(Duration::from_secs(3)),
            retries: Some(4),
            user_timeout: Some(Duration::from_secs(9)),
        };
        let stream = rt.block_on(connect(addr, &asked)).expect("connect");
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.keepalive().expect("keepalive"));
        assert_eq!(sock.tcp_keepalive_time().expect("idle"), Duration::from_secs(7));
        assert_eq!(sock.tcp_keepalive_interval().expect("interval"), Duration::from_secs(3));
        assert_eq!(sock.tcp_keepalive_retries().expect("retries"), 4);
        assert_eq!(
            sock.tcp_user_timeout().expect("user timeout"),
            Some(Duration::from_secs(9))
        );
        let plain = rt.block_on(connect(addr, &Liveness::default())).expect("connect");
        assert!(!socket2::SockRef::from(&plain).keepalive().expect("keepalive"));
    }

    // Linux's choice of local ports (even ports to connections) is what
    // makes this fast and certain.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_connection_the_kernel_connects_to_itself_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let addr: SocketAddr = ([127, 0, 0, 1], free_ephemeral_port()).into();
        // Connecting again and again to a closed port of the ephemeral range
        // is, sooner or later, given that port as the local one (about 18,000
        // attempts on this machine's kernel, under a second).
        let (mut refused, mut to_itself) = (0u32, 0u32);
        rt.block_on(async {
            for _ in 0..120_000 {
                match connect(addr, &Liveness::default()).await {
                    Ok(stream) => panic!(
                        "connected to {addr} where nothing listens: {:?} -> {:?}",
                        stream.local_addr(),
                        stream.peer_addr()
                    ),
                    Err(e) if e.to_string().contains("connected to itself") => {
                        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
                        to_itself += 1;
                        break;
                    }
                    Err(e) => {
                        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
                        refused += 1;
                    }
                }
            }
        });
        assert_eq!(
            to_itself, 1,
            "the kernel never connected a socket to itself in {refused} attempts"
        );
        // A server can listen there at once (std's listener, like
        // PostgreSQL's and nats-server's, binds with SO_REUSEADDR).
        std::net::TcpListener::bind(addr).expect("the port is free for a server once the socket is closed");
    }
}
