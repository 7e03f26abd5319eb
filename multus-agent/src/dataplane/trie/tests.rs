//! The trie builder checked against a direct reading of the policy semantics: a software model of
//! the programs' trie lookups over the compiled entries must give the verdict that evaluating
//! every rule by hand gives, for random policies and packets.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::policy::model::{AntiSpoof, Peer, PortMatch, PortRange};

/// What a packet looks like to the rules.
#[derive(Clone, Copy, Debug)]
enum Probe {
    Ip { proto: u8, port: u16 },
    Arp,
}

/// Rules evaluated one by one, as the policy docs define them.
fn by_hand(rules: &[Rule], peer: IpAddr, probe: Probe) -> u8 {
    let matching = rules.iter().filter(|rule| {
        let peer_ok = rule.peers.is_empty()
            || rule.peers.iter().any(|p| {
                p.cidr.trunc().contains(&peer)
                    && !p.except.iter().any(|e| e.trunc().contains(&peer))
            });
        let port_ok = match probe {
            Probe::Arp => rule.ports.iter().any(|m| m.protocol == Protocol::Arp),
            Probe::Ip { proto, port } => {
                rule.ports.is_empty()
                    || rule.ports.iter().any(|m| {
                        (m.protocol == Protocol::Any || m.protocol.number() == Some(proto))
                            && m.ports.is_none_or(|r| r.start <= port && port <= r.end)
                    })
            }
        };
        peer_ok && port_ok
    });
    let actions: Vec<Action> = matching.map(|r| r.action).collect();
    if actions.contains(&Action::Deny) {
        VERDICT_DENY
    } else if actions.contains(&Action::Allow) {
        VERDICT_ALLOW
    } else {
        VERDICT_NONE
    }
}

fn key_bytes(key: &PolicyKey) -> [u8; 20] {
    let mut out = [0; 20];
    out[..4].copy_from_slice(&[key.kind, key.dir, key.space, key.proto]);
    out[4..].copy_from_slice(&key.data);
    out
}

fn prefix_matches(stored: &[u8; 20], probe: &[u8; 20], bits: u32) -> bool {
    (0..bits as usize).all(|i| {
        let mask = 0x80 >> (i % 8);
        stored[i / 8] & mask == probe[i / 8] & mask
    })
}

/// The kernel's longest-prefix match over the compiled entries.
fn lookup(entries: &[Entry], key: PolicyKey, prefix_len: u32) -> Option<PolicyValue> {
    let probe = key_bytes(&key);
    entries
        .iter()
        .filter(|e| {
            e.prefix_len <= prefix_len && prefix_matches(&key_bytes(&e.key), &probe, e.prefix_len)
        })
        .max_by_key(|e| e.prefix_len)
        .map(|e| e.value)
}

/// What the programs compute (multus-ebpf/src/policy.rs `port_verdict` after the peer lookup).
fn by_trie(entries: &[Entry], dir: u8, peer: IpAddr, probe: Probe) -> u8 {
    let (family, prefix) = Prefix::of(&IpNet::from(peer));
    let key = PolicyKey::peer(dir, family, prefix.addr.to_be_bytes());
    let entry = lookup(entries, key, PEER_PREFIX_BASE + family_bits(family))
        .expect("every direction and family has a root entry");
    let (space, proto, port, fallback) = match probe {
        Probe::Arp => (SPACE_ARP, 0, 0, VERDICT_NONE),
        Probe::Ip { proto, port } => (SPACE_IP, proto, port, entry.verdict),
    };
    if entry.blocks == BLOCKS_IN_TRIE {
        let key = PolicyKey::port(entry.set, space, proto, port);
        return lookup(entries, key, PORT_PREFIX_BASE + 16).map_or(fallback, |v| v.verdict);
    }
    entry.block[..usize::from(entry.blocks)]
        .iter()
        .find(|b| b.space == space && b.proto == proto && b.start <= port && port <= b.end)
        .map_or(fallback, |b| b.verdict)
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(port: u16) -> Probe {
    Probe::Ip { proto: 6, port }
}

fn check(policy: &Policy, cases: &[(&str, Probe, u8)]) {
    let compiled = build(policy).unwrap();
    for &(peer, probe, want) in cases {
        let peer = ip(peer);
        assert_eq!(
            by_trie(&compiled.entries, DIR_INGRESS as u8, peer, probe),
            want,
            "{peer} {probe:?}"
        );
        assert_eq!(
            by_hand(&policy.ingress.rules, peer, probe),
            want,
            "{peer} {probe:?}"
        );
    }
}

#[test]
fn deny_wins_across_prefixes() {
    // The example of the issue: the longer deny prefix must not hide the shorter allow.
    let policy = Policy {
        ingress: DirectionPolicy::deny_by_default(vec![
            Rule::allow().peer(net("10.0.0.0/8")),
            Rule::deny()
                .peer(net("10.1.0.0/16"))
                .ports(Protocol::Tcp, PortRange::single(22)),
        ]),
        ..Policy::default()
    };
    check(
        &policy,
        &[
            ("10.1.2.3", tcp(80), VERDICT_ALLOW),
            ("10.1.2.3", tcp(22), VERDICT_DENY),
            (
                "10.1.2.3",
                Probe::Ip {
                    proto: 17,
                    port: 22,
                },
                VERDICT_ALLOW,
            ),
            ("10.2.0.1", tcp(22), VERDICT_ALLOW),
            ("11.0.0.1", tcp(80), VERDICT_NONE),
        ],
    );
}

#[test]
fn excepts_punch_holes_and_nested_rules_still_apply() {
    let policy = Policy {
        ingress: DirectionPolicy::deny_by_default(vec![
            Rule::allow().peer_except(net("192.0.2.0/24"), vec![net("192.0.2.8/29")]),
            Rule::allow()
                .peer(net("192.0.2.10/32"))
                .protocol(Protocol::Icmp),
            Rule::deny()
                .peer(net("192.0.2.0/25"))
                .ports(Protocol::Tcp, PortRange::new(1000, 2000)),
        ]),
        ..Policy::default()
    };
    let icmp = Probe::Ip { proto: 1, port: 0 };
    check(
        &policy,
        &[
            ("192.0.2.1", tcp(80), VERDICT_ALLOW),
            ("192.0.2.1", tcp(1500), VERDICT_DENY),
            ("192.0.2.9", tcp(80), VERDICT_NONE),
            ("192.0.2.10", icmp, VERDICT_ALLOW),
            ("192.0.2.10", tcp(80), VERDICT_NONE),
            ("192.0.2.10", tcp(1000), VERDICT_DENY),
            ("192.0.2.200", tcp(1500), VERDICT_ALLOW),
            ("192.0.2.200", Probe::Arp, VERDICT_NONE),
        ],
    );
}

#[test]
fn arp_is_only_matched_by_rules_naming_it() {
    let policy = Policy {
        ingress: DirectionPolicy::allow_by_default(vec![
            Rule::deny()
                .peer(net("192.0.2.11/32"))
                .protocol(Protocol::Arp),
            Rule::deny().peer(net("192.0.2.12/32")),
        ]),
        ..Policy::default()
    };
    check(
        &policy,
        &[
            ("192.0.2.11", Probe::Arp, VERDICT_DENY),
            ("192.0.2.11", tcp(80), VERDICT_NONE),
            ("192.0.2.12", Probe::Arp, VERDICT_NONE),
            ("192.0.2.12", tcp(80), VERDICT_DENY),
        ],
    );
    let compiled = build(&policy).unwrap();
    let meta = compiled
        .entries
        .iter()
        .find(|e| e.key == PolicyKey::meta(DIR_INGRESS as u8))
        .unwrap();
    assert_ne!(meta.value.meta.flags & META_ARP_RULES, 0);
}

#[test]
fn rules_without_peers_cover_both_families() {
    let policy = Policy {
        ingress: DirectionPolicy::deny_by_default(vec![
            Rule::allow().ports(Protocol::Tcp, PortRange::single(80)),
            Rule::deny()
                .peer(net("2001:db8::/64"))
                .protocol(Protocol::Tcp),
        ]),
        ..Policy::default()
    };
    check(
        &policy,
        &[
            ("192.0.2.1", tcp(80), VERDICT_ALLOW),
            ("2001:db8:1::1", tcp(80), VERDICT_ALLOW),
            ("2001:db8::1", tcp(80), VERDICT_DENY),
            ("2001:db8::1", tcp(81), VERDICT_DENY),
            ("2001:db8:1::1", tcp(81), VERDICT_NONE),
        ],
    );
}

#[test]
fn many_port_blocks_go_to_the_trie_as_a_shared_set() {
    let ports: Vec<u16> = vec![22, 80, 443, 8080, 9090];
    let mut allow_many = Rule::allow().peer(net("192.0.2.0/25"));
    let mut deny_many = Rule::deny().peer(net("192.0.2.128/25"));
    for p in &ports {
        allow_many = allow_many.ports(Protocol::Tcp, PortRange::single(*p));
        deny_many = deny_many.ports(Protocol::Tcp, PortRange::single(*p));
    }
    let policy = Policy {
        ingress: DirectionPolicy::deny_by_default(vec![
            allow_many,
            deny_many,
            Rule::allow()
                .peer(net("198.51.100.0/24"))
                .ports(Protocol::Udp, PortRange::new(1, 2)),
        ]),
        ..Policy::default()
    };
    let mut cases = Vec::new();
    for p in &ports {
        cases.push(("192.0.2.1", tcp(*p), VERDICT_ALLOW));
        cases.push(("192.0.2.200", tcp(*p), VERDICT_DENY));
    }
    cases.push(("192.0.2.1", tcp(81), VERDICT_NONE));
    cases.push((
        "198.51.100.7",
        Probe::Ip { proto: 17, port: 2 },
        VERDICT_ALLOW,
    ));
    check(&policy, &cases);
    let compiled = build(&policy).unwrap();
    let peers = |blocks: u8| {
        compiled
            .entries
            .iter()
            .filter(|e| e.key.kind == KIND_PEER && e.value.blocks == blocks)
            .count()
    };
    assert_eq!(peers(BLOCKS_IN_TRIE), 2, "five blocks do not fit inline");
    assert_eq!(peers(1), 1, "one block does");
}

#[test]
fn port_prefixes_cover_exactly_the_range() {
    for (start, end) in [
        (0, 65535),
        (0, 0),
        (65535, 65535),
        (80, 80),
        (1000, 2000),
        (1, 65534),
        (1024, 2047),
    ] {
        let blocks = port_prefixes(start, end);
        let mut covered = 0u32;
        let mut next = u32::from(start);
        for (first, len) in blocks {
            assert_eq!(u32::from(first), next, "blocks are contiguous");
            let size = 1u32 << (16 - len);
            assert_eq!(u32::from(first) % size, 0, "blocks are aligned");
            covered += size;
            next += size;
        }
        assert_eq!(covered, u32::from(end) - u32::from(start) + 1);
    }
    assert_eq!(port_prefixes(0, 65535), vec![(0, 0)]);
    assert_eq!(port_prefixes(80, 80), vec![(80, 16)]);
}

#[test]
fn bad_policies_are_refused_with_the_reason() {
    let bad_except = Policy {
        egress: DirectionPolicy::allow_by_default(vec![
            Rule::deny().peer_except(net("192.0.2.0/25"), vec![net("192.0.2.128/26")]),
        ]),
        ..Policy::default()
    };
    let err = build(&bad_except).unwrap_err().to_string();
    assert!(
        err.contains("192.0.2.128/26") && err.contains("192.0.2.0/25"),
        "{err}"
    );

    let mixed_family = Policy {
        egress: DirectionPolicy::allow_by_default(vec![
            Rule::deny().peer_except(net("192.0.2.0/24"), vec![net("2001:db8::/64")]),
        ]),
        ..Policy::default()
    };
    assert!(matches!(
        build(&mixed_family),
        Err(PolicyError::ExceptOutsideCidr { .. })
    ));

    let empty_range = Policy {
        ingress: DirectionPolicy::allow_by_default(vec![
            Rule::deny().ports(Protocol::Udp, PortRange::new(90, 80)),
        ]),
        ..Policy::default()
    };
    assert!(matches!(
        build(&empty_range),
        Err(PolicyError::EmptyPortRange { start: 90, end: 80 })
    ));

    let icmp_ports = Policy {
        ingress: DirectionPolicy::allow_by_default(vec![Rule {
            action: Action::Deny,
            peers: Vec::new(),
            ports: vec![PortMatch {
                protocol: Protocol::Icmp,
                ports: Some(PortRange::single(8)),
            }],
            origins: Vec::new(),
        }]),
        ..Policy::default()
    };
    assert!(matches!(
        build(&icmp_ports),
        Err(PolicyError::PortsWithoutPortProtocol {
            protocol: Protocol::Icmp,
            ..
        })
    ));
}

#[test]
fn a_policy_that_drops_nothing_remembers_no_flows() {
    let compiled = build(&Policy::default()).unwrap();
    for e in &compiled.entries {
        assert_eq!(e.value.meta.flags & META_TRACK, 0, "{:?}", e.key);
    }
}

#[test]
fn meta_flags_follow_the_policy() {
    let policy = Policy {
        ingress: DirectionPolicy::deny_by_default(Vec::new()),
        egress: DirectionPolicy::allow_by_default(Vec::new()),
        audit: true,
        anti_spoof: Some(AntiSpoof {
            mac: "02:00:00:00:00:01".parse().unwrap(),
            ips: vec![ip("192.0.2.10"), ip("2001:db8::10")],
            router: false,
        }),
    };
    let mut compiled = build(&policy).unwrap();
    compiled.set_generation(42);
    let meta = |dir: u32| {
        compiled
            .entries
            .iter()
            .find(|e| e.key == PolicyKey::meta(dir as u8))
            .unwrap()
            .value
    };
    let ingress = meta(DIR_INGRESS).meta;
    let egress = meta(DIR_EGRESS).meta;
    assert_eq!((ingress.generation, egress.generation), (42, 42));
    assert_eq!(ingress.default, VERDICT_DENY);
    assert_eq!(egress.default, VERDICT_ALLOW);
    // Flows are remembered both ways as soon as one direction can drop (ingress here): egress
    // for the replies, ingress for who opened a flow.
    assert_eq!(egress.flags, META_AUDIT | META_TRACK | META_ANTI_SPOOF);
    assert_eq!(ingress.flags, META_AUDIT | META_TRACK);
    assert_eq!(egress.mac, [2, 0, 0, 0, 0, 1]);
    // Peer entries repeat their direction's meta: the programs look up nothing else.
    let peers: Vec<_> = compiled
        .entries
        .iter()
        .filter(|e| e.key.kind == KIND_PEER)
        .collect();
    assert_eq!(peers.len(), 4, "a root per direction and family");
    for p in peers {
        let want = if p.key.dir == DIR_EGRESS as u8 {
            egress
        } else {
            ingress
        };
        assert_eq!(p.value.meta, want);
    }
    let own: Vec<_> = compiled
        .entries
        .iter()
        .filter(|e| e.key.kind == multus_common::policy::KIND_OWN)
        .collect();
    assert_eq!(own.len(), 2);
    assert_eq!(own[0].prefix_len, OWN_PREFIX_BASE + 32);
    assert_eq!(own[1].prefix_len, OWN_PREFIX_BASE + 128);

    // A pod allowed to act as a router.
    let mut router = policy.clone();
    if let Some(a) = router.anti_spoof.as_mut() {
        a.router = true;
    }
    let compiled = build(&router).unwrap();
    let egress = compiled
        .entries
        .iter()
        .find(|e| e.key == PolicyKey::meta(DIR_EGRESS as u8))
        .unwrap();
    assert_eq!(
        egress.value.meta.flags,
        META_AUDIT | META_TRACK | META_ANTI_SPOOF | META_ROUTER
    );
}

#[test]
fn ten_thousand_cidrs_fit_with_one_entry_each() {
    let rules: Vec<Rule> = (0..10_000u32)
        .map(|i| {
            let addr = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i << 8)));
            Rule::deny().peer(IpNet::new(addr, 24).unwrap())
        })
        .collect();
    let policy = Policy {
        ingress: DirectionPolicy::allow_by_default(rules),
        ..Policy::default()
    };
    let compiled = build(&policy).unwrap();
    // 10,000 peer entries, a root per direction and family, and the two meta entries.
    assert_eq!(compiled.entries.len(), 10_006);
}

/// A small deterministic generator, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An address in a small universe, so that random prefixes overlap a lot.
    fn addr(&mut self, v6: bool) -> IpAddr {
        let low = self.below(1 << 12) as u32;
        if v6 {
            IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8u128 << 96) | (u128::from(low) << 8),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (low << 8)))
        }
    }

    fn net(&mut self, v6: bool) -> IpNet {
        let addr = self.addr(v6);
        let len = if v6 {
            96 + self.below(33)
        } else {
            8 + self.below(25)
        } as u8;
        IpNet::new(addr, len).unwrap().trunc()
    }

    fn port_match(&mut self) -> PortMatch {
        let protocol = [
            Protocol::Tcp,
            Protocol::Udp,
            Protocol::Sctp,
            Protocol::Icmp,
            Protocol::Icmpv6,
            Protocol::Arp,
            Protocol::Any,
        ][self.below(7) as usize];
        let ports = (protocol.has_ports() && self.below(3) > 0).then(|| {
            let a = self.below(100) as u16;
            let b = self.below(100) as u16;
            PortRange::new(a.min(b), a.max(b))
        });
        PortMatch { protocol, ports }
    }

    fn rule(&mut self) -> Rule {
        let action = if self.below(2) == 0 {
            Action::Allow
        } else {
            Action::Deny
        };
        let peers = (0..self.below(3))
            .map(|_| {
                let v6 = self.below(3) == 0;
                let cidr = self.net(v6);
                let except = (0..self.below(2))
                    .map(|_| {
                        let extra = self.below(8) as u8;
                        let max = if cidr.addr().is_ipv4() { 32 } else { 128 };
                        let len = (cidr.prefix_len() + 1 + extra).min(max);
                        let bits = self.below(1 << 12);
                        let inside = match cidr {
                            IpNet::V4(n) => {
                                let host = (bits as u32) << 8 & !u32::from(n.netmask());
                                IpAddr::V4(Ipv4Addr::from(u32::from(n.network()) | host))
                            }
                            IpNet::V6(n) => {
                                let host = u128::from(bits) << 8 & !u128::from(n.netmask());
                                IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | host))
                            }
                        };
                        IpNet::new(inside, len).unwrap().trunc()
                    })
                    .filter(|e| cidr.contains(e))
                    .collect();
                Peer { cidr, except }
            })
            .collect();
        let ports = (0..self.below(3)).map(|_| self.port_match()).collect();
        Rule {
            action,
            peers,
            ports,
            origins: Vec::new(),
        }
    }

    fn probe(&mut self) -> Probe {
        match self.below(8) {
            0 => Probe::Arp,
            n => Probe::Ip {
                proto: [6, 17, 132, 1, 58, 47, 6][n as usize - 1],
                port: if self.below(10) == 0 {
                    u16::MAX
                } else {
                    self.below(110) as u16
                },
            },
        }
    }
}

#[test]
fn random_policies_match_the_rules_read_by_hand() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seen = [0u32; 3];
    for round in 0..300 {
        let rules: Vec<Rule> = (0..1 + rng.below(8)).map(|_| rng.rule()).collect();
        let policy = Policy {
            egress: DirectionPolicy::deny_by_default(rules.clone()),
            ..Policy::default()
        };
        let compiled = build(&policy).unwrap();
        for _ in 0..300 {
            let v6 = rng.below(3) == 0;
            let peer = rng.addr(v6);
            // Nudge some probes onto prefix edges.
            let peer = match (peer, rng.below(4)) {
                (IpAddr::V4(a), 0) => IpAddr::V4(Ipv4Addr::from(u32::from(a) | 0xff)),
                (IpAddr::V6(a), 0) => IpAddr::V6(Ipv6Addr::from(u128::from(a) | 0xffff)),
                (p, _) => p,
            };
            let probe = rng.probe();
            let want = by_hand(&rules, peer, probe);
            assert_eq!(
                by_trie(&compiled.entries, DIR_EGRESS as u8, peer, probe),
                want,
                "round {round}: {peer} {probe:?} with {rules:#?}"
            );
            seen[usize::from(want)] += 1;
        }
    }
    // The generator must exercise every outcome, or the comparison proves little.
    assert!(seen.iter().all(|&n| n > 5_000), "verdicts seen: {seen:?}");
}
