//! A reference evaluator of [`Policy`]: the verdict the dataplane gives one packet, read
//! straight from the documented semantics (docs/dataplane.md) rather than from the compiled
//! trie. It leaves out what needs state or the pod's own addresses (replies of tracked flows,
//! anti-spoofing) and audit mode. The compiler's tests judge compiled policies with it.
use std::net::IpAddr;

use super::model::{Action, DirectionPolicy, Peer, Policy, PortMatch, Protocol, Rule};

/// Which way a packet goes, seen from the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The pod receives it; the peer is the source.
    Ingress,
    /// The pod sends it; the peer is the destination.
    Egress,
}

/// What a packet carries, as far as policy looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Traffic {
    /// TCP to this destination port.
    Tcp(u16),
    /// UDP to this destination port.
    Udp(u16),
    /// SCTP to this destination port.
    Sctp(u16),
    /// ICMP (IPv4), e.g. an echo request.
    Icmp,
    /// ICMPv6 other than neighbour or multicast-listener discovery.
    Icmpv6,
    /// IPv6 neighbour or multicast-listener discovery (ICMPv6).
    NeighbourDiscovery,
    /// An ARP request or reply (the peer: sender on ingress, target on egress).
    Arp,
    /// Another IP protocol, by number.
    Other(u8),
}

/// One packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Packet {
    /// Its direction.
    pub direction: Direction,
    /// The other end's address.
    pub peer: IpAddr,
    /// Its protocol and port.
    pub traffic: Traffic,
}

/// The verdict for `packet` under `policy`: deny if any matching rule denies; ARP and neighbour
/// discovery pass unless denied; else allow if any matching rule allows; else the default.
pub fn verdict(policy: &Policy, packet: &Packet) -> Action {
    let dir = match packet.direction {
        Direction::Ingress => &policy.ingress,
        Direction::Egress => &policy.egress,
    };
    direction_verdict(dir, packet)
}

/// [`verdict`] for one direction's rules.
pub fn direction_verdict(dir: &DirectionPolicy, packet: &Packet) -> Action {
    let matching = |action| {
        dir.rules
            .iter()
            .any(|r| r.action == action && rule_matches(r, packet))
    };
    if matching(Action::Deny) {
        return Action::Deny;
    }
    if matches!(packet.traffic, Traffic::Arp | Traffic::NeighbourDiscovery) {
        return Action::Allow;
    }
    if matching(Action::Allow) {
        return Action::Allow;
    }
    dir.default
}

/// Whether `rule` matches `packet` (its peers and its ports; the action is not looked at).
pub fn rule_matches(rule: &Rule, packet: &Packet) -> bool {
    let peer_ok = rule.peers.is_empty() || rule.peers.iter().any(|p| peer_contains(p, packet.peer));
    let ports_ok = if rule.ports.is_empty() {
        packet.traffic != Traffic::Arp
    } else {
        rule.ports.iter().any(|m| port_matches(m, packet.traffic))
    };
    peer_ok && ports_ok
}

/// Whether `addr` is in the peer's CIDR and in none of its excepts.
pub fn peer_contains(peer: &Peer, addr: IpAddr) -> bool {
    peer.cidr.trunc().contains(&addr) && !peer.except.iter().any(|e| e.trunc().contains(&addr))
}

fn port_matches(m: &PortMatch, traffic: Traffic) -> bool {
    let in_range = |port: u16| m.ports.is_none_or(|r| (r.start..=r.end).contains(&port));
    match (m.protocol, traffic) {
        (Protocol::Arp, t) => t == Traffic::Arp,
        (_, Traffic::Arp) => false,
        (Protocol::Any, _) => true,
        (Protocol::Tcp, Traffic::Tcp(p))
        | (Protocol::Udp, Traffic::Udp(p))
        | (Protocol::Sctp, Traffic::Sctp(p)) => in_range(p),
        (Protocol::Icmp, Traffic::Icmp)
        | (Protocol::Icmpv6, Traffic::Icmpv6 | Traffic::NeighbourDiscovery) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::policy::model::PortRange;

    fn pkt(direction: Direction, peer: &str, traffic: Traffic) -> Packet {
        Packet {
            direction,
            peer: peer.parse().unwrap(),
            traffic,
        }
    }

    #[test]
    fn the_documented_example() {
        // Allow 10.0.0.0/8 plus deny 10.1.0.0/16 TCP 22 drops 10.1.2.3:22 and passes 10.1.2.3:80.
        let policy = Policy {
            ingress: DirectionPolicy::deny_by_default(vec![
                Rule::allow().peer("10.0.0.0/8".parse().unwrap()),
                Rule::deny()
                    .peer("10.1.0.0/16".parse().unwrap())
                    .ports(Protocol::Tcp, PortRange::single(22)),
            ]),
            ..Policy::default()
        };
        let at = |peer, t| verdict(&policy, &pkt(Direction::Ingress, peer, t));
        assert_eq!(at("10.1.2.3", Traffic::Tcp(22)), Action::Deny);
        assert_eq!(at("10.1.2.3", Traffic::Tcp(80)), Action::Allow);
        assert_eq!(at("11.0.0.1", Traffic::Tcp(80)), Action::Deny);
        assert_eq!(at("11.0.0.1", Traffic::Arp), Action::Allow, "ARP passes");
        assert_eq!(
            at("fe80::1", Traffic::NeighbourDiscovery),
            Action::Allow,
            "ND passes"
        );
        assert_eq!(
            verdict(&policy, &pkt(Direction::Egress, "11.0.0.1", Traffic::Icmp)),
            Action::Allow
        );
    }

    #[test]
    fn arp_is_matched_only_by_rules_naming_it() {
        let deny_all = DirectionPolicy::allow_by_default(vec![Rule::deny()]);
        let arp = pkt(Direction::Ingress, "192.0.2.1", Traffic::Arp);
        assert_eq!(direction_verdict(&deny_all, &arp), Action::Allow);
        let deny_any =
            DirectionPolicy::allow_by_default(vec![Rule::deny().protocol(Protocol::Any)]);
        assert_eq!(direction_verdict(&deny_any, &arp), Action::Allow);
        let deny_arp =
            DirectionPolicy::allow_by_default(vec![Rule::deny().protocol(Protocol::Arp)]);
        assert_eq!(direction_verdict(&deny_arp, &arp), Action::Deny);
        let nd = pkt(Direction::Ingress, "fe80::1", Traffic::NeighbourDiscovery);
        assert_eq!(direction_verdict(&deny_all, &nd), Action::Deny);
    }
}
