//! A small L2 segment: pods (network namespaces) with a macvlan each, all on one veth parent that
//! lives in a "node" namespace of its own, so nothing touches the machine's real network.
//!
//! Addresses come from the documentation ranges: pod `i` gets 192.0.2.(10+i)/24 and, when IPv6
//! is on, 2001:db8::(10+i)/64.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::{
    netns::{Netns, unique_name},
    ping::Ping,
};

/// One pod of a [`MacvlanPods`] segment.
#[derive(Debug)]
pub struct Pod {
    /// The pod's network namespace.
    pub netns: Netns,
    /// Interface name inside the pod.
    pub ifname: String,
    /// IPv4 address of the interface.
    pub ip4: Ipv4Addr,
    /// IPv6 address of the interface (configured only with IPv6 on).
    pub ip6: Ipv6Addr,
    /// MAC address of the interface.
    pub mac: String,
}

impl Pod {
    /// Sends exactly `count` pings to `dst` (fast interval, one-second deadline per reply) and
    /// returns how many replies came back.
    pub fn ping(&self, dst: IpAddr, count: u32) -> u32 {
        Ping::new(&self.netns, &dst, count).replies()
    }

    /// Like [`Pod::ping`], from source address `src`.
    pub fn ping_from(&self, dst: IpAddr, count: u32, src: IpAddr) -> u32 {
        Ping::new(&self.netns, &dst, count).source(&src).replies()
    }

    /// Forgets every neighbour entry (the static ones too), so ARP has to run again.
    #[track_caller]
    pub fn forget_neighbours(&self) {
        self.netns
            .ip(&["neigh", "flush", "dev", &self.ifname, "nud", "all"]);
    }
}

/// Pods on one macvlan segment (bridge mode over a veth parent). Dropping it removes the pods'
/// namespaces first (and their macvlans with them), then the node namespace and its veth.
#[derive(Debug)]
pub struct MacvlanPods {
    /// The pods, in creation order.
    pub pods: Vec<Pod>,
    /// The namespace holding the veth parent.
    pub node: Netns,
}

impl MacvlanPods {
    /// `n` pods with IPv4 only and IPv6 disabled, and static neighbour entries between all of
    /// them, so the only packets on the wire are the ones a test sends.
    #[track_caller]
    pub fn new(n: u8) -> Self {
        Self::build(n, false, None)
    }

    /// Like [`MacvlanPods::new`], with every pod's interface at the same interface index (each
    /// in its own namespace), the case that makes ifindex useless as a node-wide key.
    #[track_caller]
    pub fn same_ifindex(n: u8, ifindex: u32) -> Self {
        Self::build(n, false, Some(ifindex))
    }

    /// Like [`MacvlanPods::new`] with IPv6 addresses too (neighbour discovery left to run).
    #[track_caller]
    pub fn dual_stack(n: u8) -> Self {
        Self::build(n, true, None)
    }

    #[track_caller]
    fn build(n: u8, ipv6: bool, ifindex: Option<u32>) -> Self {
        let node = Netns::new("mvn");
        // The veth pair only carries the pods' frames: without this, its own IPv6 chatter
        // (router solicitations, MLD reports) reaches every pod and spoils exact counts.
        node.disable_ipv6();
        node.add_veth_parent();
        let parent = "vpar";
        let mut pods = Vec::new();
        for i in 0..n {
            let netns = Netns::new("mvp");
            if !ipv6 {
                netns.disable_ipv6();
            }
            let tmp = unique_name("mv");
            let index = ifindex.map(|i| i.to_string());
            let mut add = vec!["link", "add", &tmp];
            if let Some(index) = &index {
                // Free again in the node namespace once the previous pod's link moved out.
                add.extend(["index", index.as_str()]);
            }
            add.extend(["link", parent, "type", "macvlan", "mode", "bridge"]);
            node.ip(&add);
            node.ip(&["link", "set", &tmp, "netns", netns.name()]);
            let ifname = "net1".to_owned();
            netns.ip(&["link", "set", &tmp, "name", &ifname]);
            let ip4 = Ipv4Addr::new(192, 0, 2, 10 + i);
            let ip6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 10 + u16::from(i));
            netns.ip(&["addr", "add", &format!("{ip4}/24"), "dev", &ifname]);
            if ipv6 {
                netns.ip(&["addr", "add", &format!("{ip6}/64"), "dev", &ifname, "nodad"]);
            }
            netns.ip(&["link", "set", &ifname, "up"]);
            let mac = link_mac(&netns, &ifname);
            pods.push(Pod {
                netns,
                ifname,
                ip4,
                ip6,
                mac,
            });
        }
        for a in &pods {
            for b in pods.iter().filter(|b| b.ip4 != a.ip4) {
                a.netns.ip(&[
                    "neigh",
                    "replace",
                    &b.ip4.to_string(),
                    "lladdr",
                    &b.mac,
                    "dev",
                    &a.ifname,
                    "nud",
                    "permanent",
                ]);
            }
        }
        Self { pods, node }
    }
}

impl Drop for MacvlanPods {
    fn drop(&mut self) {
        // Pods first: their macvlans go with their namespaces before the parent does.
        self.pods.clear();
    }
}

#[track_caller]
fn link_mac(netns: &Netns, ifname: &str) -> String {
    let out = netns.ip(&["-br", "link", "show", "dev", ifname]);
    out.split_whitespace()
        .nth(2)
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no MAC in `ip -br link show dev {ifname}`: {out}"))
}
