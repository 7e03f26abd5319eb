//! The policy one attachment enforces, as the policy compiler (NAD annotations,
//! MultiNetworkPolicy) produces it and [`crate::dataplane::Dataplane::set_policy`] installs it.
//!
//! Semantics, per direction (ingress: what the pod receives, peer = source; egress: what the pod
//! sends, peer = destination):
//! - A rule matches a packet when the peer is inside one of its [`Peer`]s (and not inside that
//!   peer's `except` CIDRs) and the packet matches one of its [`PortMatch`]es. No peers means any
//!   peer, no port matches means any protocol and port.
//! - If any matching rule denies, the packet is dropped; else if any matching rule allows, it
//!   passes; else the direction's `default` decides. Deny wins across all rules, not just the most
//!   specific prefix.
//! - Packets of a flow allowed in one direction (TCP, UDP, SCTP, ICMP echo) let its replies pass
//!   the other direction, whatever that direction's rules say.
//! - ARP and IPv6 neighbour/multicast-listener discovery pass unless a rule denies them (ARP is
//!   matched only by rules naming [`Protocol::Arp`], with the ARP sender (ingress) or target
//!   (egress) address as the peer); router advertisements and redirects only on ingress (on
//!   egress they meet the rules). A DHCP client's messages and the server's answers pass unless a
//!   rule names them. Other non-IP frames always pass.
//! - A policy change keeps the flows it still allows: a flow's opening packet is checked against
//!   the new policy. Fragments of a datagram share its first fragment's ports.
use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// What a rule, or a direction's default, does with a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Pass the packet.
    #[default]
    Allow,
    /// Drop the packet.
    Deny,
}

/// The protocol a [`PortMatch`] selects (also `explain --protocol`, where `any` is no packet).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (may carry a port range).
    Tcp,
    /// UDP (may carry a port range).
    Udp,
    /// SCTP (may carry a port range).
    Sctp,
    /// ICMP (IPv4).
    Icmp,
    /// ICMPv6.
    Icmpv6,
    /// ARP requests and replies (IPv4 peers only).
    Arp,
    /// Every IP protocol (not ARP).
    #[value(skip)]
    Any,
}

impl Protocol {
    /// The IP protocol number (`None` for ARP and any).
    pub fn number(self) -> Option<u8> {
        match self {
            Self::Tcp => Some(6),
            Self::Udp => Some(17),
            Self::Sctp => Some(132),
            Self::Icmp => Some(1),
            Self::Icmpv6 => Some(58),
            Self::Arp | Self::Any => None,
        }
    }

    /// Whether a port range makes sense for this protocol.
    pub fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp | Self::Sctp)
    }
}

/// An inclusive range of destination ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

impl PortRange {
    /// A range of one port.
    pub fn single(port: u16) -> Self {
        Self {
            start: port,
            end: port,
        }
    }

    /// `start..=end`.
    pub fn new(start: u16, end: u16) -> Self {
        Self { start, end }
    }
}

/// A protocol and, for TCP, UDP and SCTP, an optional range of destination ports (none: all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMatch {
    /// The protocol.
    pub protocol: Protocol,
    /// Destination ports; `None` means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
}

/// A peer CIDR with holes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The peer addresses (host bits are ignored).
    pub cidr: IpNet,
    /// Sub-ranges of `cidr` that are not part of the peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except: Vec<IpNet>,
}

impl From<IpNet> for Peer {
    fn from(cidr: IpNet) -> Self {
        Self {
            cidr,
            except: Vec::new(),
        }
    }
}

/// One allow or deny rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// What a match does.
    pub action: Action,
    /// The peers it applies to; empty means every peer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    /// The protocols and ports it applies to; empty means all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMatch>,
    /// Where it was written (none for a policy given by hand; two for a rule that joins a
    /// NAD's rule with a MultiNetworkPolicy's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<Origin>,
}

impl Rule {
    /// An allow rule for every peer, protocol and port (narrow it with the builder methods).
    pub fn allow() -> Self {
        Self::new(Action::Allow)
    }

    /// A deny rule for every peer, protocol and port (narrow it with the builder methods).
    pub fn deny() -> Self {
        Self::new(Action::Deny)
    }

    fn new(action: Action) -> Self {
        Self {
            action,
            peers: Vec::new(),
            ports: Vec::new(),
            origins: Vec::new(),
        }
    }

    /// Records where the rule was written.
    #[must_use]
    pub fn from(mut self, origin: Origin) -> Self {
        self.origins.push(origin);
        self
    }

    /// Adds a peer CIDR.
    #[must_use]
    pub fn peer(mut self, cidr: IpNet) -> Self {
        self.peers.push(cidr.into());
        self
    }

    /// Adds a peer CIDR with exceptions.
    #[must_use]
    pub fn peer_except(mut self, cidr: IpNet, except: Vec<IpNet>) -> Self {
        self.peers.push(Peer { cidr, except });
        self
    }

    /// Adds a protocol with all its ports.
    #[must_use]
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.ports.push(PortMatch {
            protocol,
            ports: None,
        });
        self
    }

    /// Adds a protocol with a port range.
    #[must_use]
    pub fn ports(mut self, protocol: Protocol, ports: PortRange) -> Self {
        self.ports.push(PortMatch {
            protocol,
            ports: Some(ports),
        });
        self
    }
}

/// The rules and default of one direction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionPolicy {
    /// What happens to a packet no rule matches.
    #[serde(default)]
    pub default: Action,
    /// The rules, in no particular order (deny wins regardless of order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// The objects whose default denies this direction (none when it allows, or for a policy
    /// given by hand).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_from: Vec<Origin>,
}

impl DirectionPolicy {
    /// Rules over a default of deny.
    pub fn deny_by_default(rules: Vec<Rule>) -> Self {
        Self {
            default: Action::Deny,
            rules,
            default_from: Vec::new(),
        }
    }

    /// Rules over a default of allow.
    pub fn allow_by_default(rules: Vec<Rule>) -> Self {
        Self {
            default: Action::Allow,
            rules,
            default_from: Vec::new(),
        }
    }

    /// Whether anything in this direction can be dropped.
    pub fn can_drop(&self) -> bool {
        self.default == Action::Deny || self.rules.iter().any(|r| r.action == Action::Deny)
    }
}

/// The kind of object a policy is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectKind {
    /// A NetworkAttachmentDefinition's policy annotation.
    NetworkAttachmentDefinition,
    /// A MultiNetworkPolicy.
    MultiNetworkPolicy,
}

/// Where a rule, or a direction's default, was written: an object and the place in it, in that
/// object's own terms (`ingress.deny[0]` of a NAD annotation, `ingress[1]` of a
/// MultiNetworkPolicy, `isolate`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// The kind of object.
    pub kind: ObjectKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The place in it; empty for the object as a whole.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

impl Origin {
    /// `kind namespace/name`.
    pub fn object(&self) -> String {
        let kind = match self.kind {
            ObjectKind::NetworkAttachmentDefinition => "NetworkAttachmentDefinition",
            ObjectKind::MultiNetworkPolicy => "MultiNetworkPolicy",
        };
        format!("{kind} {}/{}", self.namespace, self.name)
    }
}

impl fmt::Display for Origin {
    /// `NetworkAttachmentDefinition infra/storage: ingress.deny[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.object())?;
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        Ok(())
    }
}

/// A MAC address, written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A MAC address that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid MAC address {0:?} (expected six hex bytes separated by ':')")]
pub struct InvalidMac(pub String);

impl FromStr for MacAddr {
    type Err = InvalidMac;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(|| InvalidMac(s.to_owned()))?;
            if part.len() != 2 {
                return Err(InvalidMac(s.to_owned()));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| InvalidMac(s.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(InvalidMac(s.to_owned()));
        }
        Ok(Self(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Anti-spoofing: what the pod may send from.
///
/// IPv6 pods also send from their link-local address (neighbour and router solicitations): list
/// it here too. Unspecified sources (`0.0.0.0`, `::`) always pass: they impersonate nobody and
/// DHCP and duplicate address detection need them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AntiSpoof {
    /// The interface's MAC: every egress frame must carry it as its source.
    pub mac: MacAddr,
    /// The interface's addresses: egress IP packets (and ARP) must come from one of them, and
    /// neighbour advertisements may speak only for them.
    pub ips: Vec<IpAddr>,
    /// The pod may act as a router: send IPv6 router advertisements and redirects, and ICMP
    /// redirects. Without it, anti-spoofing drops them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub router: bool,
}

/// Everything one attachment enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// What the pod receives.
    #[serde(default)]
    pub ingress: DirectionPolicy,
    /// What the pod sends.
    #[serde(default)]
    pub egress: DirectionPolicy,
    /// Count what would be dropped, drop nothing.
    #[serde(default)]
    pub audit: bool,
    /// Drop egress frames that do not come from the interface's own MAC and addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_spoof: Option<AntiSpoof>,
}

/// A policy that cannot be installed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// An except CIDR is not inside its peer CIDR.
    #[error("except {except} is not inside peer {cidr}")]
    ExceptOutsideCidr {
        /// The peer.
        cidr: IpNet,
        /// The offending except.
        except: IpNet,
    },
    /// A port range ends before it starts.
    #[error("port range {start}-{end} is empty")]
    EmptyPortRange {
        /// First port.
        start: u16,
        /// Last port.
        end: u16,
    },
    /// A port range on a protocol without ports.
    #[error("protocol {protocol:?} has no ports, but the rule names {start}-{end}")]
    PortsWithoutPortProtocol {
        /// The protocol.
        protocol: Protocol,
        /// First port.
        start: u16,
        /// Last port.
        end: u16,
    },
    /// The compiled policy does not fit one attachment's trie.
    #[error("the policy compiles to {entries} entries, more than the {max} one attachment holds")]
    TooLarge {
        /// Entries needed.
        entries: usize,
        /// Capacity.
        max: u32,
    },
}

impl Policy {
    /// Checks what the compiler cannot represent or what is certainly a mistake.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for rule in self.ingress.rules.iter().chain(&self.egress.rules) {
            for peer in &rule.peers {
                let cidr = peer.cidr.trunc();
                if let Some(except) = peer.except.iter().find(|e| !cidr.contains(&e.trunc())) {
                    return Err(PolicyError::ExceptOutsideCidr {
                        cidr: peer.cidr,
                        except: *except,
                    });
                }
            }
            for m in &rule.ports {
                if let Some(PortRange { start, end }) = m.ports {
                    if !m.protocol.has_ports() {
                        return Err(PolicyError::PortsWithoutPortProtocol {
                            protocol: m.protocol,
                            start,
                            end,
                        });
                    }
                    if start > end {
                        return Err(PolicyError::EmptyPortRange { start, end });
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn macs_parse_and_print() {
        let mac: MacAddr = "02:0a:FF:00:10:9b".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x0a, 0xff, 0x00, 0x10, 0x9b]);
        assert_eq!(mac.to_string(), "02:0a:ff:00:10:9b");
        for bad in [
            "02:0a:ff:00:10",
            "02:0a:ff:00:10:9b:00",
            "2:0a:ff:00:10:9b",
            "zz:0a:ff:00:10:9b",
            "",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_json_form_round_trips_and_defaults_are_open() {
        let json = r#"{
            "ingress": {
                "default": "deny",
                "rules": [
                    { "action": "allow",
                      "peers": [{ "cidr": "192.0.2.0/24", "except": ["192.0.2.8/29"] }],
                      "ports": [{ "protocol": "tcp", "ports": { "start": 80, "end": 81 } },
                                { "protocol": "icmp" }] }
                ]
            },
            "anti_spoof": { "mac": "02:00:00:00:00:01", "ips": ["192.0.2.10", "fe80::1"] }
        }"#;
        let policy: Policy = serde_json::from_str(json).unwrap();
        assert_eq!(policy.ingress.default, Action::Deny);
        assert_eq!(policy.egress, DirectionPolicy::default());
        assert_eq!(
            policy.egress.default,
            Action::Allow,
            "an omitted direction allows"
        );
        assert!(!policy.audit);
        let rule = &policy.ingress.rules[0];
        assert_eq!(
            rule.peers[0].except,
            vec!["192.0.2.8/29".parse::<IpNet>().unwrap()]
        );
        assert_eq!(rule.ports[0].ports, Some(PortRange::new(80, 81)));
        assert_eq!(rule.ports[1].ports, None);
        let again: Policy = serde_json::from_str(&serde_json::to_string(&policy).unwrap()).unwrap();
        assert_eq!(again, policy);
        assert!(serde_json::from_str::<Policy>(r#"{"ingress":{"default":"maybe"}}"#).is_err());
        assert!(
            serde_json::from_str::<Policy>(r#"{"anti_spoof":{"mac":"nope","ips":[]}}"#).is_err()
        );
    }
}
