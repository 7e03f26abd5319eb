//! `default-route`, as Multus applies it: once any network of the pod carries the key (even an
//! empty list), every default route of the pod goes, of both address families, except that a
//! network asking for a gateway gets its default route of that family via that gateway. So
//! `"default-route": []` leaves the pod without the other attachments' default routes (NPWG),
//! and an IPv4 gateway on one network and an IPv6 one on another both hold. The results are
//! edited to match, so the CNI result tells the truth.
use std::{net::IpAddr, path::Path};

use ipnet::IpNet;
use tracing::info;

use super::{netlink::RouteSocket, plan::Planned};
use crate::{
    cni::result::{CniResult, Route},
    error::{Error, Result},
};

/// Applies the `default-route` requests of `planned`, if any. Returns whether `results` were
/// edited.
pub(super) fn apply(netns: &Path, planned: &[Planned], results: &mut [CniResult]) -> Result<bool> {
    if planned.iter().all(|p| p.default_route.is_none()) {
        return Ok(false);
    }
    let mut sock = RouteSocket::open(netns)?;
    for route in sock.default_routes()? {
        sock.delete_route(&route)?;
    }
    for result in results.iter_mut() {
        result.routes.retain(|r| !r.is_default());
    }
    for (i, p) in planned.iter().enumerate() {
        let Some(gateways) = p.default_route.as_ref().filter(|g| !g.is_empty()) else {
            continue;
        };
        let oif = sock.link_index(&p.ifname)?.ok_or_else(|| Error::Ifname {
            ifname: p.ifname.clone(),
            network: p.network.clone(),
            reason: "the plugin did not create it, so default-route cannot use it".into(),
        })?;
        for gw in gateways {
            sock.add_default_route(*gw, oif)?;
            info!(%gw, ifname = %p.ifname, network = %p.network, "default route set");
            if let Some(result) = results.get_mut(i) {
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
