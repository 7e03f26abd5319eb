//! Both the NAD's policy and the MultiNetworkPolicies must let a packet through: the
//! intersection of two policies, built as one new deny-wins rule set.
//!
//! Per direction, with `D` the packets some deny rule matches, `A` those some allow rule
//! matches and `d` the default, a packet passes one policy when it is outside `D` and inside
//! `A` (or `d` is allow). It passes both when it is outside `D1 ∪ D2` and, for each policy whose
//! default is deny, inside its `A`. So the result denies `D1 ∪ D2`, and:
//! - both defaults allow: default allow, no allow rules needed;
//! - one default denies: default deny, that policy's allow rules;
//! - both deny: default deny, and an allow rule for every pair of allow rules: their peers
//!   intersected and their ports intersected.
//!
//! ARP and neighbour discovery pass unless a deny rule matches them in either policy, so the
//! union of the deny rules is exact for them too.
use super::model::{Action, DirectionPolicy, Peer, Policy, PortMatch, PortRange, Protocol, Rule};

use super::canonical::{PeerSet, peer_set};

/// The policy that lets a packet through when both `first` and `second` do. Audit mode and
/// anti-spoofing come from `first`.
pub fn intersect(first: &Policy, second: &Policy) -> Policy {
    Policy {
        ingress: intersect_direction(&first.ingress, &second.ingress),
        egress: intersect_direction(&first.egress, &second.egress),
        audit: first.audit,
        anti_spoof: first.anti_spoof.clone(),
    }
}

/// [`intersect`] for one direction.
pub fn intersect_direction(a: &DirectionPolicy, b: &DirectionPolicy) -> DirectionPolicy {
    let denies = a
        .rules
        .iter()
        .chain(&b.rules)
        .filter(|r| r.action == Action::Deny)
        .cloned();
    let allows = |d: &DirectionPolicy| -> Vec<Rule> {
        d.rules
            .iter()
            .filter(|r| r.action == Action::Allow)
            .cloned()
            .collect()
    };
    let (default, allowed) = match (a.default, b.default) {
        (Action::Allow, Action::Allow) => (Action::Allow, Vec::new()),
        (Action::Deny, Action::Allow) => (Action::Deny, allows(a)),
        (Action::Allow, Action::Deny) => (Action::Deny, allows(b)),
        (Action::Deny, Action::Deny) => {
            let (xs, ys) = (allows(a), allows(b));
            let pairs = xs
                .iter()
                .flat_map(|x| ys.iter().filter_map(move |y| intersect_rule(x, y)))
                .collect();
            (Action::Deny, pairs)
        }
    };
    // The objects that deny by default stay named: a packet no allow rule matches is dropped
    // by them.
    let default_from = [a, b]
        .into_iter()
        .filter(|d| d.default == Action::Deny)
        .flat_map(|d| d.default_from.iter().cloned())
        .collect();
    DirectionPolicy {
        default,
        rules: denies.chain(allowed).collect(),
        default_from,
    }
}

/// The allow rule matching what both `x` and `y` match; `None` when nothing is.
fn intersect_rule(x: &Rule, y: &Rule) -> Option<Rule> {
    let peers = match (peer_set(&x.peers), peer_set(&y.peers)) {
        (PeerSet::Nothing, _) | (_, PeerSet::Nothing) => return None,
        (PeerSet::All, PeerSet::All) => Vec::new(),
        (PeerSet::All, PeerSet::Some(p)) | (PeerSet::Some(p), PeerSet::All) => p,
        (PeerSet::Some(p), PeerSet::Some(q)) => {
            let both: Vec<Peer> = p
                .iter()
                .flat_map(|a| q.iter().filter_map(move |b| intersect_peer(a, b)))
                .collect();
            if both.is_empty() {
                return None;
            }
            both
        }
    };
    let ports = intersect_ports(&x.ports, &y.ports)?;
    Some(Rule {
        action: Action::Allow,
        peers,
        ports,
        origins: x.origins.iter().chain(&y.origins).cloned().collect(),
    })
}

/// The addresses in both peers. CIDRs are nested or disjoint: the result is the inner CIDR
/// with the excepts of both that fall inside it.
fn intersect_peer(a: &Peer, b: &Peer) -> Option<Peer> {
    let (inner, outer) = if a.cidr.contains(&b.cidr) {
        (b, a)
    } else if b.cidr.contains(&a.cidr) {
        (a, b)
    } else {
        return None;
    };
    let mut except = inner.except.clone();
    for hole in &outer.except {
        if hole.contains(&inner.cidr) {
            return None;
        }
        if inner.cidr.contains(hole) {
            except.push(*hole);
        }
    }
    Some(Peer {
        cidr: inner.cidr,
        except,
    })
}

/// Port matches in both lists; an empty list means every IP protocol (not ARP). `None` when
/// they share nothing.
fn intersect_ports(x: &[PortMatch], y: &[PortMatch]) -> Option<Vec<PortMatch>> {
    let every_ip = [PortMatch {
        protocol: Protocol::Any,
        ports: None,
    }];
    if x.is_empty() && y.is_empty() {
        return Some(Vec::new());
    }
    let x = if x.is_empty() { &every_ip[..] } else { x };
    let y = if y.is_empty() { &every_ip[..] } else { y };
    let both: Vec<PortMatch> = x
        .iter()
        .flat_map(|a| y.iter().filter_map(move |b| intersect_port(a, b)))
        .collect();
    (!both.is_empty()).then_some(both)
}

fn intersect_port(a: &PortMatch, b: &PortMatch) -> Option<PortMatch> {
    match (a.protocol, b.protocol) {
        (Protocol::Arp, Protocol::Arp) => Some(*a),
        (Protocol::Arp, _) | (_, Protocol::Arp) => None,
        (Protocol::Any, _) => Some(*b),
        (_, Protocol::Any) => Some(*a),
        (p, q) if p != q => None,
        (_, _) => {
            let ports = match (a.ports, b.ports) {
                (None, r) | (r, None) => r,
                (Some(r), Some(s)) => {
                    let (start, end) = (r.start.max(s.start), r.end.min(s.end));
                    if start > end {
                        return None;
                    }
                    Some(PortRange::new(start, end))
                }
            };
            Some(PortMatch {
                protocol: a.protocol,
                ports,
            })
        }
    }
}
