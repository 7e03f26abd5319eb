//! One canonical form per meaning, as far as cheaply possible: rules with the same action and
//! ports merged into one (their peers united), peers and ports sorted and deduplicated, peers
//! that an except swallows whole removed. The same inputs then always compile to an equal
//! [`Policy`], so the caller can skip updates that change nothing (a new policy in the
//! dataplane starts a new generation of tracked flows).
use std::collections::BTreeMap;

use ipnet::IpNet;

use super::model::{Action, DirectionPolicy, Origin, Peer, Policy, PortMatch, Rule};

/// `policy` in canonical form; it matches exactly the same packets.
pub fn canonical(policy: Policy) -> Policy {
    Policy {
        ingress: direction(policy.ingress),
        egress: direction(policy.egress),
        ..policy
    }
}

/// Which peers a rule covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum PeerSet {
    /// Every peer (a rule without peers).
    All,
    /// These (never empty).
    Some(Vec<Peer>),
    /// None at all: the rule matches nothing.
    Nothing,
}

type PortKey = (u8, Option<(u16, u16)>);
/// Rules with one action, one port list and one origin: the action, the ports, their peers
/// united and the origin. Rules of different origins stay apart, so that a drop can name the
/// one rule that decided; the trie holds the same entries either way.
type Group = (Action, Vec<PortMatch>, PeerSet, Vec<Origin>);

fn port_key(m: &PortMatch) -> (PortKey, PortMatch) {
    ((m.protocol as u8, m.ports.map(|r| (r.start, r.end))), *m)
}

fn direction(dir: DirectionPolicy) -> DirectionPolicy {
    let mut groups: BTreeMap<(u8, Vec<PortKey>, Vec<Origin>), Group> = BTreeMap::new();
    for rule in dir.rules {
        let peers = peer_set(&rule.peers);
        if peers == PeerSet::Nothing {
            continue;
        }
        let mut ports: Vec<(PortKey, PortMatch)> = rule.ports.iter().map(port_key).collect();
        ports.sort_unstable_by_key(|(k, _)| *k);
        ports.dedup_by_key(|(k, _)| *k);
        let key = (
            u8::from(rule.action == Action::Deny),
            ports.iter().map(|(k, _)| *k).collect(),
            rule.origins.clone(),
        );
        let ports = ports.into_iter().map(|(_, m)| m).collect();
        let entry = groups
            .entry(key)
            .or_insert_with(|| (rule.action, ports, PeerSet::Nothing, rule.origins));
        entry.2 = union(std::mem::replace(&mut entry.2, PeerSet::Nothing), peers);
    }
    let rules = groups
        .into_values()
        .map(|(action, ports, peers, origins)| Rule {
            action,
            peers: match peers {
                PeerSet::Some(list) => sorted_peers(list),
                PeerSet::All | PeerSet::Nothing => Vec::new(),
            },
            ports,
            origins,
        })
        .collect();
    DirectionPolicy {
        default: dir.default,
        rules,
        default_from: dir.default_from,
    }
}

fn union(a: PeerSet, b: PeerSet) -> PeerSet {
    match (a, b) {
        (PeerSet::All, _) | (_, PeerSet::All) => PeerSet::All,
        (PeerSet::Nothing, x) | (x, PeerSet::Nothing) => x,
        (PeerSet::Some(mut x), PeerSet::Some(y)) => {
            x.extend(y);
            PeerSet::Some(x)
        }
    }
}

/// A rule's peers, cleaned: host bits cleared, excepts outside the CIDR or inside another
/// except dropped, peers that an except covers whole removed.
pub(crate) fn peer_set(peers: &[Peer]) -> PeerSet {
    if peers.is_empty() {
        return PeerSet::All;
    }
    let cleaned: Vec<Peer> = peers.iter().filter_map(clean_peer).collect();
    if cleaned.is_empty() {
        PeerSet::Nothing
    } else {
        PeerSet::Some(cleaned)
    }
}

fn clean_peer(peer: &Peer) -> Option<Peer> {
    let cidr = peer.cidr.trunc();
    let except: Vec<IpNet> = peer.except.iter().map(IpNet::trunc).collect();
    if except.iter().any(|e| e.contains(&cidr)) {
        return None;
    }
    let mut except: Vec<IpNet> = except.into_iter().filter(|e| cidr.contains(e)).collect();
    except.sort_unstable();
    except.dedup();
    let kept: Vec<IpNet> = except
        .iter()
        .filter(|e| !except.iter().any(|o| o != *e && o.contains(*e)))
        .copied()
        .collect();
    Some(Peer { cidr, except: kept })
}

fn sorted_peers(mut peers: Vec<Peer>) -> Vec<Peer> {
    peers.sort_unstable_by(|a, b| (a.cidr, &a.except).cmp(&(b.cidr, &b.except)));
    peers.dedup();
    peers
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::policy::model::{PortRange, Protocol};

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn rules_with_equal_ports_merge_and_order_does_not_matter() {
        let a = Rule::allow()
            .peer(net("192.0.2.2/32"))
            .ports(Protocol::Tcp, PortRange::single(80));
        let b = Rule::allow()
            .peer(net("192.0.2.1/32"))
            .ports(Protocol::Tcp, PortRange::single(80));
        let c = Rule::deny().peer(net("192.0.2.1/32"));
        let one = canonical(Policy {
            ingress: DirectionPolicy::deny_by_default(vec![a.clone(), b.clone(), c.clone()]),
            ..Policy::default()
        });
        let two = canonical(Policy {
            ingress: DirectionPolicy::deny_by_default(vec![c, b, a]),
            ..Policy::default()
        });
        assert_eq!(one, two);
        assert_eq!(one.ingress.rules.len(), 2);
        assert_eq!(
            one.ingress.rules[0].peers,
            vec![
                Peer::from(net("192.0.2.1/32")),
                Peer::from(net("192.0.2.2/32"))
            ]
        );
    }

    #[test]
    fn a_rule_for_every_peer_absorbs_the_others_and_empty_peer_lists_vanish() {
        let all = Rule::allow().protocol(Protocol::Udp);
        let some = Rule::allow()
            .peer(net("192.0.2.0/24"))
            .protocol(Protocol::Udp);
        let swallowed =
            Rule::allow().peer_except(net("198.51.100.0/24"), vec![net("198.51.100.0/23")]);
        let dir = direction(DirectionPolicy::deny_by_default(vec![
            some,
            all.clone(),
            swallowed,
        ]));
        assert_eq!(dir.rules, vec![all]);
    }
}
