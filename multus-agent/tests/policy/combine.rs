//! Property tests of the policy algebra on random policies and packets, judged by the reference
//! evaluator: the intersection lets a packet through exactly when both policies do, and the
//! canonical form changes no verdict. Addresses and ports come from a small space so that
//! prefixes nest, excepts bite and port ranges overlap often.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use multus_agent::{
    dataplane::{self, Action, DirectionPolicy, Peer, Policy, PortMatch, PortRange, Rule},
    policy::{
        annotation::PROTOCOLS,
        canonical::canonical,
        combine::intersect,
        eval::{Direction, Packet, Traffic, verdict},
    },
};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn addr(&mut self, v6: bool) -> IpAddr {
        let (a, b, c) = (
            self.below(2) as u8,
            self.below(3) as u8,
            self.below(24) as u8,
        );
        if v6 {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                u16::from(a),
                0,
                0,
                0,
                u16::from(b),
                u16::from(c),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, a, b, c))
        }
    }

    fn net(&mut self, v6: bool) -> IpNet {
        let lens: &[u8] = if v6 {
            &[0, 32, 48, 112, 120, 124, 128]
        } else {
            &[0, 8, 16, 24, 28, 30, 32]
        };
        let len = lens[self.below(lens.len() as u64) as usize];
        IpNet::new(self.addr(v6), len).unwrap().trunc()
    }

    fn peer(&mut self) -> Peer {
        let v6 = self.chance(30);
        let cidr = self.net(v6);
        let mut except = Vec::new();
        for _ in 0..self.below(3) {
            let max = cidr.max_prefix_len();
            if cidr.prefix_len() == max {
                break;
            }
            let addr = self.addr(v6);
            if cidr.contains(&addr) {
                let len =
                    cidr.prefix_len() + 1 + self.below(u64::from(max - cidr.prefix_len())) as u8;
                except.push(IpNet::new(addr, len).unwrap().trunc());
            }
        }
        Peer { cidr, except }
    }

    fn port_match(&mut self) -> PortMatch {
        let protocol = PROTOCOLS[self.below(PROTOCOLS.len() as u64) as usize].1;
        let ports = (protocol.has_ports() && self.chance(70)).then(|| {
            let start = 1 + self.below(20) as u16;
            PortRange::new(start, start + self.below(6) as u16)
        });
        PortMatch { protocol, ports }
    }

    fn rule(&mut self) -> Rule {
        Rule {
            action: if self.chance(35) {
                Action::Deny
            } else {
                Action::Allow
            },
            peers: (0..self.below(3)).map(|_| self.peer()).collect(),
            ports: (0..self.below(3)).map(|_| self.port_match()).collect(),
            origins: Vec::new(),
        }
    }

    fn direction(&mut self) -> DirectionPolicy {
        DirectionPolicy {
            default: if self.chance(50) {
                Action::Deny
            } else {
                Action::Allow
            },
            rules: (0..self.below(5)).map(|_| self.rule()).collect(),
            default_from: Vec::new(),
        }
    }

    fn policy(&mut self) -> Policy {
        Policy {
            ingress: self.direction(),
            egress: self.direction(),
            ..Policy::default()
        }
    }

    fn packet(&mut self) -> Packet {
        let v6 = self.chance(30);
        let port = 1 + self.below(28) as u16;
        let traffic = match self.below(8) {
            0 => Traffic::Tcp(port),
            1 => Traffic::Udp(port),
            2 => Traffic::Sctp(port),
            3 if v6 => Traffic::Icmpv6,
            3 => Traffic::Icmp,
            4 if v6 => Traffic::NeighbourDiscovery,
            4 => Traffic::Arp,
            5 => Traffic::Other(47),
            _ => Traffic::Tcp(port),
        };
        Packet {
            direction: if self.chance(50) {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            peer: self.addr(v6),
            traffic,
        }
    }
}

#[test]
fn the_intersection_passes_exactly_what_both_pass() {
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let (mut allowed, mut denied) = (0u32, 0u32);
    for round in 0..400 {
        let a = rng.policy();
        let b = rng.policy();
        let both = intersect(&a, &b);
        both.validate().unwrap();
        let tidy = canonical(both.clone());
        dataplane::trie::build(&tidy)
            .unwrap_or_else(|e| panic!("round {round}: not installable: {e}\n{tidy:#?}"));
        for _ in 0..150 {
            let p = rng.packet();
            let want = if verdict(&a, &p) == Action::Allow && verdict(&b, &p) == Action::Allow {
                Action::Allow
            } else {
                Action::Deny
            };
            assert_eq!(
                verdict(&both, &p),
                want,
                "round {round}: {p:?}\na: {a:#?}\nb: {b:#?}\nboth: {both:#?}"
            );
            assert_eq!(verdict(&tidy, &p), want, "round {round}: canonical: {p:?}");
            match want {
                Action::Allow => allowed += 1,
                Action::Deny => denied += 1,
            }
        }
    }
    // Both outcomes must be common, or the test proves little.
    assert!(
        allowed > 5_000 && denied > 5_000,
        "{allowed} allowed, {denied} denied"
    );
}

#[test]
fn the_canonical_form_changes_no_verdict() {
    let mut rng = Rng(0x0bad_5eed_1234_5678);
    for round in 0..400 {
        let p = rng.policy();
        let c = canonical(p.clone());
        assert_eq!(canonical(c.clone()), c, "round {round}: canonical twice");
        for _ in 0..150 {
            let packet = rng.packet();
            assert_eq!(
                verdict(&c, &packet),
                verdict(&p, &packet),
                "round {round}: {packet:?}\npolicy: {p:#?}\ncanonical: {c:#?}"
            );
        }
    }
}

#[test]
fn audit_and_anti_spoofing_come_from_the_first_policy() {
    let nad = Policy {
        audit: true,
        anti_spoof: Some(dataplane::AntiSpoof {
            mac: "02:00:00:00:00:01".parse().unwrap(),
            ips: vec!["192.0.2.10".parse().unwrap()],
            router: false,
        }),
        ..Policy::default()
    };
    let both = intersect(&nad, &Policy::default());
    assert!(both.audit);
    assert_eq!(both.anti_spoof, nad.anti_spoof);
    assert_eq!(intersect(&Policy::default(), &nad).anti_spoof, None);
}
