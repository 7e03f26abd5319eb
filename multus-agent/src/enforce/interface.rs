//! What an interface sends from: its MAC and every address on it, read inside the pod's
//! namespace. Anti-spoofing needs the IPv6 link-local address too, which no CNI result or
//! network-status lists.
use std::{net::IpAddr, path::Path};

use nix::ifaddrs::getifaddrs;

use crate::dataplane::{DataplaneError, MacAddr, netns};

/// An interface's MAC and addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceAddrs {
    /// Its MAC, when it has one.
    pub mac: Option<MacAddr>,
    /// Every IPv4 and IPv6 address on it (link-local included).
    pub ips: Vec<IpAddr>,
}

/// Reads `ifname` inside the namespace at `netns`.
pub fn read(netns: &Path, ifname: &str) -> Result<InterfaceAddrs, DataplaneError> {
    netns::run_in(netns, || {
        let addrs = getifaddrs().map_err(|e| {
            DataplaneError::io(
                "listing interface addresses (getifaddrs) in",
                netns,
                e.into(),
            )
        })?;
        let mut out = InterfaceAddrs::default();
        for a in addrs.filter(|a| a.interface_name == ifname) {
            let Some(addr) = a.address else { continue };
            if let Some(link) = addr.as_link_addr() {
                out.mac = link.addr().map(MacAddr).or(out.mac);
            } else if let Some(v4) = addr.as_sockaddr_in() {
                out.ips.push(IpAddr::V4(v4.ip()));
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                out.ips.push(IpAddr::V6(v6.ip()));
            }
        }
        out.ips.sort();
        out.ips.dedup();
        Ok(out)
    })
}
