//! TCP listeners of the HTTP endpoints (`/metrics`, `/healthz`, `/readyz`).
//!
//! The unspecified IPv6 address `::` binds dual-stack: one IPv6 socket with `IPV6_V6ONLY` off,
//! which also accepts IPv4 clients (as v4-mapped addresses), so probes and scrapes work on
//! IPv4-only, IPv6-only and dual-stack nodes alike. On a node whose kernel has no IPv6 at all
//! it falls back to `0.0.0.0`. Any other address binds exactly that address.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// How many connections wait in the kernel's queue before the agent accepts them.
const BACKLOG: i32 = 128;

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("binding {address}: {source}")]
pub struct BindError {
    /// The address and port.
    pub address: SocketAddr,
    /// Why.
    #[source]
    pub source: io::Error,
}

/// Binds a non-blocking TCP listener on `address`:`port` (see the module documentation for
/// `::`); returns it with the address it is bound to.
pub fn bind(address: IpAddr, port: u16) -> Result<(std::net::TcpListener, SocketAddr), BindError> {
    let wanted = SocketAddr::new(address, port);
    if address != IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
        return bind_exact(wanted, None).map_err(|source| BindError {
            address: wanted,
            source,
        });
    }
    match bind_exact(wanted, Some(false)) {
        Err(e) if no_ipv6(&e) => {
            let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
            tracing::info!("no IPv6 on this node ({e}): listening on {v4} instead of {wanted}");
            bind_exact(v4, None).map_err(|source| BindError {
                address: v4,
                source,
            })
        }
        other => other.map_err(|source| BindError {
            address: wanted,
            source,
        }),
    }
}

/// Whether `e` says the kernel has no IPv6 (built without it, or booted with
/// `ipv6.disable=1`), as opposed to a port in use or a missing permission.
fn no_ipv6(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL)
    )
}

fn bind_exact(
    address: SocketAddr,
    only_v6: Option<bool>,
) -> io::Result<(std::net::TcpListener, SocketAddr)> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    // A restarted agent rebinds while the previous one's connections are in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if let Some(only_v6) = only_v6 {
        socket.set_only_v6(only_v6)?;
    }
    socket.bind(&SockAddr::from(address))?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    let listener = std::net::TcpListener::from(socket);
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_missing_ipv6_falls_back() {
        for (errno, falls_back) in [
            (libc::EAFNOSUPPORT, true),
            (libc::EPROTONOSUPPORT, true),
            (libc::EADDRNOTAVAIL, true),
            (libc::EADDRINUSE, false),
            (libc::EACCES, false),
        ] {
            assert_eq!(
                no_ipv6(&io::Error::from_raw_os_error(errno)),
                falls_back,
                "errno {errno}"
            );
        }
    }

    #[test]
    fn an_exact_address_is_bound_as_given() {
        let (listener, bound) = bind(IpAddr::V4(Ipv4Addr::LOCALHOST), 0).unwrap();
        assert_eq!(bound.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_ne!(bound.port(), 0);
        // A second listener on the same port is refused, naming the address.
        let err = bind(IpAddr::V4(Ipv4Addr::LOCALHOST), bound.port()).unwrap_err();
        assert!(err.to_string().contains(&bound.to_string()), "{err}");
        drop(listener);
    }
}
