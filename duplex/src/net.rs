//! Listening-socket tuning for WebSocket servers.
//!
//! A WebSocket client always speaks first (the HTTP upgrade request, or a TLS ClientHello
//! before it), so a server loses nothing by not hearing of a connection until its first
//! bytes have arrived, and gains a wake-up: [`defer_accept`].

use std::io;
use std::time::Duration;
use tokio::net::TcpListener;

/// Asks the kernel to complete `accept` only once the client has sent data, waiting up to
/// `wait` for it (Linux's `TCP_DEFER_ACCEPT`, nginx's `deferred`, HAProxy's `defer-accept`).
///
/// What it saves: the server is woken once per connection, for the request, instead of once
/// for the connection and again for its request; and a connection that sends nothing (a
/// port scan, a load balancer's TCP-only health check) is not accepted while it stays silent:
/// one that closes within `wait` is accepted only to read its end, and one silent for longer
/// is accepted with its next acknowledgement and then meets the server's own handshake
/// timeout, as without this option. On the handshake benchmark it took 7–12 % off the
/// server's CPU per handshake (docs/performance.md, eighth pass).
///
/// Only for protocols where the client speaks first, as WebSocket's does. The kernel keeps
/// `wait` in whole seconds (rounded up, at least one).
///
/// # Errors
/// The `setsockopt` error. On systems other than Linux this does nothing and returns `Ok`.
pub fn defer_accept(listener: &TcpListener, wait: Duration) -> io::Result<()> {
    let secs = i32::try_from(
        wait.as_secs()
            .saturating_add(u64::from(wait.subsec_nanos() > 0)),
    )
    .unwrap_or(i32::MAX)
    .max(1);
    sys::set_defer_accept(listener, secs)
}

/// The `TCP_DEFER_ACCEPT` value of `listener` in seconds as the kernel reports it (it keeps a
/// count of SYN-ACK retransmissions, so this is the wait rounded to its schedule); 0 when
/// unset, and always 0 on systems other than Linux.
///
/// # Errors
/// The `getsockopt` error.
pub fn deferred_accept(listener: &TcpListener) -> io::Result<Duration> {
    sys::defer_accept(listener).map(|secs| Duration::from_secs(u64::from(secs.unsigned_abs())))
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::os::fd::AsRawFd;
    use tokio::net::TcpListener;

    pub(super) fn set_defer_accept(listener: &TcpListener, secs: i32) -> io::Result<()> {
        let value: libc::c_int = secs;
        // SAFETY: the descriptor is the listener's, open for as long as `listener` is
        // borrowed; the option value is a live `c_int` and its exact size is passed.
        let rc = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    pub(super) fn defer_accept(listener: &TcpListener) -> io::Result<i32> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: as above; `value` and `len` are live and `len` holds `value`'s size, which
        // the kernel does not write past.
        let rc = unsafe {
            libc::getsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                std::ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::io;
    use tokio::net::TcpListener;

    pub(super) fn set_defer_accept(_: &TcpListener, _: i32) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn defer_accept(_: &TcpListener) -> io::Result<i32> {
        Ok(0)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn the_option_is_set_and_read_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert_eq!(deferred_accept(&listener).unwrap(), Duration::ZERO);
        defer_accept(&listener, Duration::from_millis(1)).unwrap();
        assert!(deferred_accept(&listener).unwrap() >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_connection_is_accepted_once_its_client_has_spoken() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        defer_accept(&listener, Duration::from_secs(30)).unwrap();
        let addr = listener.local_addr().unwrap();
        // The client's connect completes (the kernel answers the SYN) although nothing
        // accepts it yet.
        let mut client = TcpStream::connect(addr).await.unwrap();
        // Silent, it is not handed to the server: a short, bounded look.
        let early = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(early.is_err(), "accepted before the client sent anything");
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let (mut server, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .expect("accepted once data arrived")
            .unwrap();
        let mut buf = [0u8; 16];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"GET / HTTP/1.1\r\n");
    }
}
