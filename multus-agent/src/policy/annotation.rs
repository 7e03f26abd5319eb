//! The NAD policy annotation: a small JSON or YAML document on a NetworkAttachmentDefinition
//! that says what every attachment to the network enforces (docs/policy.md has the reference).
//!
//! ```yaml
//! ingress:
//!   allow:
//!     - from: 192.0.2.0/24
//!       ports: [tcp/80, udp/5000-5100]
//! egress:
//!   deny:
//!     - to: { cidr: 198.51.100.0/24, except: 198.51.100.8/29 }
//! isolate: true
//! antiSpoof: true
//! audit: false
//! ```
//!
//! Parsing is strict: unknown fields, bad addresses and ports out of range are errors that name
//! the field (`ingress.allow[0].ports[1]: port 70000 out of range (1-65535)`).
use std::{fmt, marker::PhantomData, net::IpAddr};

use ipnet::IpNet;
use serde::{
    Deserialize, Deserializer,
    de::{self, IntoDeserializer, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer},
};

use super::model::{
    Action, AntiSpoof, DirectionPolicy, ObjectKind, Origin, Peer, Policy, PortMatch, PortRange,
    Protocol, Rule,
};
use super::{
    error::FieldError,
    inputs::{LocalAttachment, ObjectKey},
    subnets::subnets,
};

/// IPv6 peers `isolate` keeps allowed besides the network's subnets: link-local addresses and
/// link-local multicast, which neighbour discovery needs.
const ISOLATE_IPV6_LINK: [&str; 2] = ["fe80::/10", "ff02::/16"];
/// IPv4 peers `isolate` keeps allowed besides the network's subnets: link-local multicast
/// (IGMP reports, VRRP, mDNS), which never leaves the segment. Not 169.254.0.0/16: on a
/// secondary network that may be a cloud metadata service.
const ISOLATE_IPV4_LINK: [&str; 1] = ["224.0.0.0/24"];

/// A NAD's policy, read and checked: everything except the attachment's own MAC and addresses,
/// which [`NadPolicy::policy_for`] adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NadPolicy {
    /// What attachments receive (with the `isolate` rule, if any).
    pub ingress: DirectionPolicy,
    /// What attachments send (with the `isolate` rule, if any).
    pub egress: DirectionPolicy,
    /// The network's subnets, when `isolate` is on.
    pub isolated_to: Option<Vec<IpNet>>,
    /// Drop egress frames that do not come from the attachment's MAC and addresses.
    pub anti_spoof: bool,
    /// Count would-be drops, drop nothing.
    pub audit: bool,
}

impl NadPolicy {
    /// Reads a policy document (JSON when it starts with `{`, else YAML). `config` is the
    /// network's CNI config, read only for `isolate`.
    pub fn parse(text: &str, config: Option<&str>) -> Result<Self, FieldError> {
        let doc = read_document(text)?;
        let mut ingress = direction(doc.ingress.map(DirDoc::into_rules), "ingress")?;
        let mut egress = direction(doc.egress.map(DirDoc::into_rules), "egress")?;
        let isolated_to = if doc.isolate {
            let nets = isolate_subnets(config)?;
            let rule = isolate_rule(&nets);
            ingress.rules.push(rule.clone());
            egress.rules.push(rule);
            Some(nets)
        } else {
            None
        };
        Ok(Self {
            ingress,
            egress,
            isolated_to,
            anti_spoof: doc.anti_spoof,
            audit: doc.audit,
        })
    }

    /// The policy one attachment to the network enforces.
    pub fn policy_for(&self, attachment: &LocalAttachment) -> Policy {
        Policy {
            ingress: named(self.ingress.clone(), &attachment.network),
            egress: named(self.egress.clone(), &attachment.network),
            audit: self.audit,
            anti_spoof: self.anti_spoof.then(|| AntiSpoof {
                mac: attachment.mac,
                ips: attachment.ips.clone(),
                router: false,
            }),
        }
    }
}

fn read_document(text: &str) -> Result<Document, FieldError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(FieldError::new("", "empty policy document"));
    }
    if text.starts_with('{') {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = path_of(e.path());
            let inner = e.into_inner();
            let message = match inner.classify() {
                // The path says where; the column of a one-line annotation says little more.
                serde_json::error::Category::Data => strip_location(&inner.to_string()),
                _ => inner.to_string(),
            };
            FieldError::new(path, message)
        })
    } else {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = path_of(e.path());
            // serde_yaml names the path (up to the map an unknown field is in) itself too.
            let message = e.into_inner().to_string();
            let message = match message.split_once(": ") {
                Some((own, rest)) if !own.is_empty() && path.starts_with(own) => rest.to_owned(),
                _ => message,
            };
            FieldError::new(path, message)
        })
    }
}

fn path_of(path: &serde_path_to_error::Path) -> String {
    let s = path.to_string();
    if s == "." { String::new() } else { s }
}

/// `message at line 1 column 42` without the position.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => message[..at].to_owned(),
        _ => message.to_owned(),
    }
}

fn direction(
    rules: Option<(Option<Action>, Vec<Rule>, Vec<Rule>)>,
    path: &str,
) -> Result<DirectionPolicy, FieldError> {
    let Some((default, allow, deny)) = rules else {
        return Ok(DirectionPolicy::default());
    };
    let default = match (default, allow.is_empty()) {
        (Some(Action::Allow), false) => {
            return Err(FieldError::new(
                format!("{path}.allow"),
                "allow rules have no effect under `default: allow` (a direction with allow \
                 rules denies everything else unless it says otherwise)",
            ));
        }
        (Some(action), _) => action,
        (None, false) => Action::Deny,
        (None, true) => Action::Allow,
    };
    let place = |list: Vec<Rule>, key: &str| -> Vec<Rule> {
        list.into_iter()
            .enumerate()
            .map(|(i, r)| r.from(nad_origin(format!("{path}.{key}[{i}]"))))
            .collect()
    };
    let mut rules = place(allow, "allow");
    rules.extend(place(deny, "deny"));
    let default_from = if default == Action::Deny {
        vec![nad_origin(String::new())]
    } else {
        Vec::new()
    };
    Ok(DirectionPolicy {
        default,
        rules,
        default_from,
    })
}

/// A place in the NAD's annotation; [`NadPolicy::policy_for`] names the NAD.
fn nad_origin(path: String) -> Origin {
    Origin {
        kind: ObjectKind::NetworkAttachmentDefinition,
        namespace: String::new(),
        name: String::new(),
        path,
    }
}

/// `dir` with every origin naming the NAD `network`.
fn named(mut dir: DirectionPolicy, network: &ObjectKey) -> DirectionPolicy {
    let origins = dir
        .rules
        .iter_mut()
        .flat_map(|r| r.origins.iter_mut())
        .chain(dir.default_from.iter_mut());
    for o in origins {
        o.namespace.clone_from(&network.namespace);
        o.name.clone_from(&network.name);
    }
    dir
}

fn isolate_subnets(config: Option<&str>) -> Result<Vec<IpNet>, FieldError> {
    let none = || {
        FieldError::new(
            "isolate",
            "the network's CNI config names no subnet (looked for host-local ranges and subnet, \
             static addresses, whereabouts range and ipRanges)",
        )
    };
    let config = config.ok_or_else(none)?;
    let nets = subnets(config).map_err(|e| FieldError::new("isolate", e))?;
    if nets.is_empty() {
        return Err(none());
    }
    Ok(nets)
}

/// Denies every peer outside `subnets` (IPv6 link-local traffic excepted).
fn isolate_rule(subnets: &[IpNet]) -> Rule {
    let (mut v4, mut v6): (Vec<IpNet>, Vec<IpNet>) =
        subnets.iter().partition(|n| matches!(n, IpNet::V4(_)));
    v4.extend(
        ISOLATE_IPV4_LINK
            .iter()
            .filter_map(|s| s.parse::<IpNet>().ok()),
    );
    v6.extend(
        ISOLATE_IPV6_LINK
            .iter()
            .filter_map(|s| s.parse::<IpNet>().ok()),
    );
    let all = |s: &str| s.parse::<IpNet>().ok();
    Rule {
        action: Action::Deny,
        peers: [(all("0.0.0.0/0"), v4), (all("::/0"), v6)]
            .into_iter()
            .filter_map(|(cidr, except)| {
                Some(Peer {
                    cidr: cidr?,
                    except,
                })
            })
            .collect(),
        ports: Vec::new(),
        origins: vec![nad_origin("isolate".to_owned())],
    }
}

// ---- the document as written -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Document {
    #[serde(default)]
    ingress: Option<DirDoc<IngressRule>>,
    #[serde(default)]
    egress: Option<DirDoc<EgressRule>>,
    #[serde(default)]
    isolate: bool,
    #[serde(default)]
    anti_spoof: bool,
    #[serde(default)]
    audit: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, bound(deserialize = "R: Deserialize<'de>"))]
struct DirDoc<R> {
    #[serde(default)]
    default: Option<Action>,
    #[serde(default = "Vec::new")]
    allow: Vec<R>,
    #[serde(default = "Vec::new")]
    deny: Vec<R>,
}

/// A rule of either direction: its peers and ports.
trait DocRule {
    fn into_parts(self) -> (Vec<Peer>, Vec<PortMatch>);
}

impl<R: DocRule> DirDoc<R> {
    fn into_rules(self) -> (Option<Action>, Vec<Rule>, Vec<Rule>) {
        let rules = |list: Vec<R>, action| {
            list.into_iter()
                .map(|r| {
                    let (peers, ports) = r.into_parts();
                    Rule {
                        action,
                        peers,
                        ports,
                        origins: Vec::new(),
                    }
                })
                .collect()
        };
        (
            self.default,
            rules(self.allow, Action::Allow),
            rules(self.deny, Action::Deny),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngressRule {
    #[serde(default)]
    from: OneOrMany<PeerDoc>,
    #[serde(default)]
    ports: OneOrMany<PortDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressRule {
    #[serde(default)]
    to: OneOrMany<PeerDoc>,
    #[serde(default)]
    ports: OneOrMany<PortDoc>,
}

impl DocRule for IngressRule {
    fn into_parts(self) -> (Vec<Peer>, Vec<PortMatch>) {
        (unwrap_all(self.from), unwrap_all(self.ports))
    }
}

impl DocRule for EgressRule {
    fn into_parts(self) -> (Vec<Peer>, Vec<PortMatch>) {
        (unwrap_all(self.to), unwrap_all(self.ports))
    }
}

fn unwrap_all<T: Unwrap>(list: OneOrMany<T>) -> Vec<T::Inner> {
    list.0.into_iter().map(Unwrap::unwrap).collect()
}

trait Unwrap {
    type Inner;
    fn unwrap(self) -> Self::Inner;
}

/// One item, or a list of them (`ports: tcp/80` or `ports: [tcp/80, udp/53]`).
struct OneOrMany<T>(Vec<T>);

impl<T> Default for OneOrMany<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrMany<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one item or a list")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                T::deserialize(s.into_deserializer()).map(|t| vec![t])
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
                T::deserialize(n.into_deserializer()).map(|t| vec![t])
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
                T::deserialize(n.into_deserializer()).map(|t| vec![t])
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|t| vec![t])
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(item) = seq.next_element()? {
                    out.push(item);
                }
                Ok(out)
            }
        }
        d.deserialize_any(V(PhantomData)).map(Self)
    }
}

/// A peer: `192.0.2.0/24`, `192.0.2.7`, or `{cidr: ..., except: ...}`.
struct PeerDoc(Peer);

impl Unwrap for PeerDoc {
    type Inner = Peer;
    fn unwrap(self) -> Peer {
        self.0
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerObject {
    cidr: String,
    #[serde(default)]
    except: OneOrMany<String>,
}

impl<'de> Deserialize<'de> for PeerDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Peer;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CIDR, an address, or {cidr, except}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Peer, E> {
                cidr(s).map(Peer::from).map_err(E::custom)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Peer, A::Error> {
                let obj = PeerObject::deserialize(MapAccessDeserializer::new(map))?;
                peer(&obj).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V).map(Self)
    }
}

fn peer(obj: &PeerObject) -> Result<Peer, String> {
    let net = cidr(&obj.cidr)?;
    let mut except = Vec::new();
    for e in &obj.except.0 {
        let hole = cidr(e)?;
        if !net.contains(&hole) {
            return Err(format!("except {hole} is not inside {net}"));
        }
        except.push(hole);
    }
    Ok(Peer { cidr: net, except })
}

/// A CIDR without host bits, or an address (a one-address prefix).
fn cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!(
                "{s} has host bits set (the network is {})",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    s.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{s:?} is neither an address nor a CIDR"))
}

/// A port match: `tcp`, `tcp/80`, `udp/5000-5100`, `icmp`, `icmpv6`, `arp`, `any`, or
/// `{protocol, port, endPort}`.
struct PortDoc(PortMatch);

impl Unwrap for PortDoc {
    type Inner = PortMatch;
    fn unwrap(self) -> PortMatch {
        self.0
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PortObject {
    protocol: String,
    #[serde(default)]
    port: Option<i64>,
    #[serde(default)]
    end_port: Option<i64>,
}

impl<'de> Deserialize<'de> for PortDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PortMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a port like tcp/80, udp/5000-5100 or icmp, or {protocol, port, endPort}",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<PortMatch, E> {
                short_port(s).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<PortMatch, E> {
                Err(E::custom(needs_protocol(n)))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<PortMatch, E> {
                Err(E::custom(needs_protocol(n)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PortMatch, A::Error> {
                let obj = PortObject::deserialize(MapAccessDeserializer::new(map))?;
                port_object(&obj).map_err(de::Error::custom)
            }
        }
        d.deserialize_any(V).map(Self)
    }
}

fn needs_protocol(n: impl fmt::Display) -> String {
    format!("a port needs its protocol: write tcp/{n} or udp/{n}")
}

fn short_port(s: &str) -> Result<PortMatch, String> {
    let s = s.trim();
    let (name, range) = match s.split_once('/') {
        Some((name, range)) => (name, Some(range)),
        None => (s, None),
    };
    if range.is_none() && !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(needs_protocol(name));
    }
    let protocol = protocol(name)?;
    let ports = match range {
        None => None,
        Some(range) => {
            let (start, end) = match range.split_once('-') {
                Some((a, b)) => (port_number(a)?, port_number(b)?),
                None => {
                    let p = port_number(range)?;
                    (p, p)
                }
            };
            Some(port_range(protocol, start, end)?)
        }
    };
    Ok(PortMatch { protocol, ports })
}

fn port_object(obj: &PortObject) -> Result<PortMatch, String> {
    let protocol = protocol(&obj.protocol)?;
    let ports = match (obj.port, obj.end_port) {
        (None, None) => None,
        (None, Some(_)) => return Err("endPort needs port".to_owned()),
        (Some(p), end) => {
            let start = port_in_range(p)?;
            let end = end.map_or(Ok(start), port_in_range)?;
            Some(port_range(protocol, start, end)?)
        }
    };
    Ok(PortMatch { protocol, ports })
}

fn port_range(protocol: Protocol, start: u16, end: u16) -> Result<PortRange, String> {
    if !protocol.has_ports() {
        return Err(format!("{} has no ports", protocol_name(protocol)));
    }
    if start > end {
        return Err(format!("port range {start}-{end} is empty"));
    }
    Ok(PortRange::new(start, end))
}

fn port_number(s: &str) -> Result<u16, String> {
    let n: i64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a port number"))?;
    port_in_range(n)
}

fn port_in_range(n: i64) -> Result<u16, String> {
    u16::try_from(n)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| format!("port {n} out of range (1-65535)"))
}

/// The protocols a document names, by name.
pub const PROTOCOLS: [(&str, Protocol); 7] = [
    ("tcp", Protocol::Tcp),
    ("udp", Protocol::Udp),
    ("sctp", Protocol::Sctp),
    ("icmp", Protocol::Icmp),
    ("icmpv6", Protocol::Icmpv6),
    ("arp", Protocol::Arp),
    ("any", Protocol::Any),
];

fn protocol(name: &str) -> Result<Protocol, String> {
    PROTOCOLS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
        .map(|&(_, p)| p)
        .ok_or_else(|| {
            format!("unknown protocol {name:?} (expected tcp, udp, sctp, icmp, icmpv6, arp or any)")
        })
}

/// The document's name for a protocol.
pub fn protocol_name(protocol: Protocol) -> &'static str {
    PROTOCOLS
        .iter()
        .find(|&&(_, p)| p == protocol)
        .map_or("?", |&(n, _)| n)
}
