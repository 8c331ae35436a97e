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

use tokio::net::{TcpSocket, TcpStream};

/// Connects to `addr`, with TCP keepalive as asked and no Nagle delay.
///
/// A socket connected to itself is closed, and the error is
/// [`io::ErrorKind::ConnectionRefused`] (nothing listens at `addr`).
pub(crate) async fn connect(addr: SocketAddr, keepalive: bool) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_keepalive(keepalive)?;
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
                match connect(addr, true).await {
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
