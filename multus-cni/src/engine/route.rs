//! `default-route`: the pod's default route goes via the requested gateway on the requesting
//! network's interface; default routes of that address family on every other interface go.
//! The results are edited to match, so the CNI result and network-status tell the truth.
use std::{net::IpAddr, path::Path};

use ipnet::IpNet;
use tracing::info;

use super::{netlink::RouteSocket, plan::Planned};
use crate::{
    cni::result::{CniResult, Route},
    error::{Error, Result},
};

/// Applies the one `default-route` request of `planned`, if any. Returns whether `results`
/// were edited.
pub(super) fn apply(netns: &Path, planned: &[Planned], results: &mut [CniResult]) -> Result<bool> {
    let Some((owner, gateways)) = planned
        .iter()
        .enumerate()
        .find_map(|(i, p)| p.default_route.as_ref().map(|g| (i, g)))
    else {
        return Ok(false);
    };
    if gateways.is_empty() {
        return Ok(false);
    }
    let mut sock = RouteSocket::open(netns)?;
    let ifname = &planned[owner].ifname;
    let oif = sock.link_index(ifname)?.ok_or_else(|| Error::Ifname {
        ifname: ifname.clone(),
        network: planned[owner].network.clone(),
        reason: "the plugin did not create it, so default-route cannot use it".into(),
    })?;
    for gw in gateways {
        let v4 = gw.is_ipv4();
        for route in sock.default_routes()? {
            if route.gateway.is_some_and(|g| g.is_ipv4() == v4)
                || (route.gateway.is_none()
                    && (route.family == netlink_packet_route::AddressFamily::Inet) == v4)
            {
                sock.delete_route(&route)?;
            }
        }
        sock.add_default_route(*gw, oif)?;
        info!(%gw, ifname, network = %planned[owner].network, "default route set");
        for (i, result) in results.iter_mut().enumerate() {
            result
                .routes
                .retain(|r| !(r.is_default() && r.dst.addr().is_ipv4() == v4));
            if i == owner {
                result.routes.push(default_route(*gw));
            }
        }
    }
    Ok(true)
}

fn default_route(gw: IpAddr) -> Route {
    let dst = match gw {
        IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
        IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
    };
    Route {
        dst,
        gw: Some(gw),
        mtu: None,
        advmss: None,
        priority: None,
        table: None,
        scope: None,
    }
}
