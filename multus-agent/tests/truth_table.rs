//! The truth-table suite, as NetworkPolicy implementations are tested (the upstream netpol e2e
//! framework, Cyclonus): nine pods in three namespaces on one network, a set of
//! MultiNetworkPolicies per case, and every probe (source pod, destination pod, protocol, port,
//! address family) compared with the verdict of an independent model. The model reads the same
//! policy text and follows the NetworkPolicy specification; it shares no code with the compiler.
//! The compiler's output is installed with real programs on real interfaces and every probe is
//! a real connection or datagram. A failing case prints its whole truth table.
//!
//! A case is one line: a name and the policies, as `(namespace, spec in YAML)`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;
mod policy_fixture;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::Fixture;
use ipnet::IpNet;
use multus_agent::{
    dataplane::{AttachMode, Protocol},
    explain::explain_attachment,
    policy::{
        LocalAttachment, NamespaceView, Snapshot,
        compile::compile_attachment,
        eval::{Direction, Packet, Traffic},
    },
};
use multus_testkit::{MacvlanPods, Pod, require_root, traffic};
use policy_fixture::{key, labels, mnp, nad, pod};
use serde_json::Value;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const PORTS: [u16; 2] = [80, 81];
const NETWORK: &str = "x/net";
const NETWORK_CONFIG: &str = r#"{"cniVersion":"1.0.0","name":"net","type":"macvlan",
  "ipam":{"type":"host-local","ranges":[[{"subnet":"192.0.2.0/24"}],[{"subnet":"2001:db8::/64"}]]}}"#;
/// Every pod's container ports: `serve-80` is TCP 80 and `serve-81` is UDP 81, so named ports
/// resolve per protocol.
const NAMED_PORTS: [(&str, &str, u16); 2] = [("serve-80", "TCP", 80), ("serve-81", "UDP", 81)];

/// Probe protocols (SCTP is left for later: the development machine's kernel has no SCTP
/// sockets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
        }
    }
}

/// One of the nine pods: its place, labels and addresses.
#[derive(Clone, Debug)]
struct Member {
    ns: &'static str,
    name: &'static str,
    ip4: IpAddr,
    ip6: IpAddr,
}

impl Member {
    fn labels(&self) -> BTreeMap<String, String> {
        labels(&[
            ("pod", self.name),
            ("pod-ns", &format!("{}-{}", self.ns, self.name)),
        ])
    }

    fn ip(&self, v6: bool) -> IpAddr {
        if v6 { self.ip6 } else { self.ip4 }
    }

    fn id(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }
}

fn namespace_labels(ns: &str) -> BTreeMap<String, String> {
    let mut l = labels(&[("ns", ns)]);
    l.insert("kubernetes.io/metadata.name".to_owned(), ns.to_owned());
    l
}

// ---------------------------------------------------------------------------------------------
// The model: NetworkPolicy semantics, read from the specification.
// ---------------------------------------------------------------------------------------------

/// A label selector (`matchLabels` and `matchExpressions`); `{}` selects everything.
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if let Some(Value::Object(m)) = selector.get("matchLabels") {
        for (k, v) in m {
            if labels.get(k).map(String::as_str) != v.as_str() {
                return false;
            }
        }
    }
    if let Some(Value::Array(exprs)) = selector.get("matchExpressions") {
        for e in exprs {
            let key = e["key"].as_str().unwrap();
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let have = labels.get(key).map(String::as_str);
            let ok = match e["operator"].as_str().unwrap() {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => have.is_none_or(|h| !values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                other => panic!("operator {other}"),
            };
            if !ok {
                return false;
            }
        }
    }
    true
}

/// Whether a rule's peer list admits `peer` (a pod of the test, seen at address `addr`) for a
/// policy in namespace `policy_ns`.
fn peer_matches(peers: Option<&Value>, policy_ns: &str, peer: &Member, addr: IpAddr) -> bool {
    let list = match peers.and_then(Value::as_array) {
        None => return true,
        Some(list) if list.is_empty() => return true,
        Some(list) => list,
    };
    list.iter().any(|p| {
        if let Some(block) = p.get("ipBlock") {
            let cidr: IpNet = block["cidr"].as_str().unwrap().parse().unwrap();
            let excepted = block
                .get("except")
                .and_then(Value::as_array)
                .is_some_and(|e| {
                    e.iter().any(|c| {
                        c.as_str()
                            .unwrap()
                            .parse::<IpNet>()
                            .unwrap()
                            .contains(&addr)
                    })
                });
            return cidr.contains(&addr) && !excepted;
        }
        let ns_ok = match p.get("namespaceSelector") {
            Some(sel) => selects(sel, &namespace_labels(peer.ns)),
            // A podSelector alone means the policy's own namespace.
            None => peer.ns == policy_ns,
        };
        let pod_ok = p
            .get("podSelector")
            .is_none_or(|sel| selects(sel, &peer.labels()));
        ns_ok && pod_ok
    })
}

/// Whether a rule's port list admits `proto`/`port` on the pod whose ports named ports name.
fn port_matches(ports: Option<&Value>, proto: Proto, port: u16) -> bool {
    let list = match ports.and_then(Value::as_array) {
        None => return true,
        Some(list) if list.is_empty() => return true,
        Some(list) => list,
    };
    list.iter().any(|p| {
        let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
        if protocol != proto.name() {
            return false;
        }
        match p.get("port") {
            None => true,
            Some(Value::Number(n)) => {
                let start = n.as_u64().unwrap() as u16;
                let end = p
                    .get("endPort")
                    .and_then(Value::as_u64)
                    .map_or(start, |e| e as u16);
                start <= port && port <= end
            }
            Some(Value::String(name)) => NAMED_PORTS
                .iter()
                .any(|(n, pr, number)| n == name && *pr == protocol && *number == port),
            Some(other) => panic!("port {other}"),
        }
    })
}

/// Whether `pod`'s traffic in one direction (`egress`: to `peer`; else from it) is allowed by
/// the policies: isolated in that direction if any policy selects it for it, and then allowed
/// when any of those policies' rules admits the peer and the port.
fn direction_allows(
    policies: &[(&str, Value)],
    pod: &Member,
    peer: &Member,
    egress: bool,
    (proto, port, v6): (Proto, u16, bool),
) -> bool {
    let field = if egress { "egress" } else { "ingress" };
    let peers_field = if egress { "to" } else { "from" };
    let mut isolated = false;
    for (ns, spec) in policies {
        if *ns != pod.ns || !selects(&spec["podSelector"], &pod.labels()) {
            continue;
        }
        let types: Vec<&str> = match spec.get("policyTypes").and_then(Value::as_array) {
            Some(t) => t.iter().filter_map(Value::as_str).collect(),
            None if spec.get("egress").is_some() => vec!["Ingress", "Egress"],
            None => vec!["Ingress"],
        };
        if !types.contains(&(if egress { "Egress" } else { "Ingress" })) {
            continue;
        }
        isolated = true;
        for rule in spec
            .get(field)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if peer_matches(rule.get(peers_field), ns, peer, peer.ip(v6))
                && port_matches(rule.get("ports"), proto, port)
            {
                return true;
            }
        }
    }
    !isolated
}

/// The model's verdict for one probe: the source's egress and the destination's ingress must
/// both allow it.
fn expected(policies: &[(&str, Value)], src: &Member, dst: &Member, probe: Probe) -> bool {
    direction_allows(policies, src, dst, true, probe)
        && direction_allows(policies, dst, src, false, probe)
}

type Probe = (Proto, u16, bool);

// ---------------------------------------------------------------------------------------------
// The model of the NAD annotation (docs/policy.md, "The NAD annotation"): per direction, deny
// rules win, then allow rules, then the default (deny when there are allow rules, else allow);
// `isolate` denies every peer outside the network's subnets both ways; `audit` drops nothing;
// `antiSpoof` concerns only frames a pod sends as someone else, never these probes. A packet
// must pass both the NAD's policy and the MultiNetworkPolicies.
// ---------------------------------------------------------------------------------------------

/// The network's subnets from its CNI config (`ipam.ranges[][].subnet`).
fn subnets(config: &str) -> Vec<IpNet> {
    let v: Value = serde_json::from_str(config).unwrap();
    v["ipam"]["ranges"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r.as_array().into_iter().flatten())
        .map(|r| r["subnet"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// One item or a list, as the annotation allows.
fn items(v: Option<&Value>) -> Vec<&Value> {
    match v {
        None => Vec::new(),
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one) => vec![one],
    }
}

/// An annotation peer: a CIDR, an address, or `{cidr, except}`.
fn nad_peer_matches(peer: &Value, addr: IpAddr) -> bool {
    let net = |s: &str| -> IpNet {
        if s.contains('/') {
            s.parse().unwrap()
        } else {
            IpNet::from(s.parse::<IpAddr>().unwrap())
        }
    };
    match peer {
        Value::String(s) => net(s).contains(&addr),
        Value::Object(m) => {
            net(m["cidr"].as_str().unwrap()).contains(&addr)
                && !items(m.get("except"))
                    .iter()
                    .any(|e| net(e.as_str().unwrap()).contains(&addr))
        }
        other => panic!("peer {other}"),
    }
}

/// An annotation port: `tcp`, `udp/81`, `tcp/80-81`, `any`, or `{protocol, port, endPort}`.
fn nad_port_matches(port: &Value, proto: Proto, number: u16) -> bool {
    let (protocol, range) = match port {
        Value::String(s) => {
            let (p, r) = s.split_once('/').unwrap_or((s, ""));
            let range = if r.is_empty() {
                None
            } else {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                Some((a.parse::<u16>().unwrap(), b.parse::<u16>().unwrap()))
            };
            (p.to_ascii_lowercase(), range)
        }
        Value::Object(m) => {
            let start = m.get("port").and_then(Value::as_u64).map(|p| p as u16);
            let end = m.get("endPort").and_then(Value::as_u64).map(|p| p as u16);
            (
                m["protocol"].as_str().unwrap().to_ascii_lowercase(),
                start.map(|s| (s, end.unwrap_or(s))),
            )
        }
        other => panic!("port {other}"),
    };
    let proto_ok = protocol == "any" || protocol == proto.name().to_ascii_lowercase();
    proto_ok && range.is_none_or(|(a, b)| a <= number && number <= b)
}

/// Whether the annotation lets `pod` send to (`egress`) or receive from `peer` the probe.
fn nad_direction_allows(
    nad: &Value,
    subnets: &[IpNet],
    peer: &Member,
    egress: bool,
    (proto, port, v6): Probe,
) -> bool {
    let addr = peer.ip(v6);
    if nad.get("isolate").and_then(Value::as_bool) == Some(true)
        && !subnets.iter().any(|n| n.contains(&addr))
    {
        return false;
    }
    let Some(dir) = nad.get(if egress { "egress" } else { "ingress" }) else {
        return true;
    };
    let peers_field = if egress { "to" } else { "from" };
    let rule_matches = |rule: &&Value| {
        let peers = items(rule.get(peers_field));
        let ports = items(rule.get("ports"));
        (peers.is_empty() || peers.iter().any(|p| nad_peer_matches(p, addr)))
            && (ports.is_empty() || ports.iter().any(|p| nad_port_matches(p, proto, port)))
    };
    if items(dir.get("deny")).iter().any(rule_matches) {
        return false;
    }
    let allows = items(dir.get("allow"));
    if allows.iter().any(rule_matches) {
        return true;
    }
    match dir.get("default").and_then(Value::as_str) {
        Some("allow") => true,
        Some("deny") => false,
        _ => allows.is_empty(),
    }
}

/// The NAD of a case: its annotation (as a value) and its network's subnets.
struct NadModel {
    policy: Value,
    subnets: Vec<IpNet>,
}

impl NadModel {
    fn audit(&self) -> bool {
        self.policy.get("audit").and_then(Value::as_bool) == Some(true)
    }
}

/// What would be enforced (audit aside): both the NAD's policy and the MultiNetworkPolicies.
fn enforced(
    nad: Option<&NadModel>,
    policies: &[(&str, Value)],
    src: &Member,
    dst: &Member,
    probe: Probe,
) -> bool {
    let nad_ok = nad.is_none_or(|n| {
        nad_direction_allows(&n.policy, &n.subnets, dst, true, probe)
            && nad_direction_allows(&n.policy, &n.subnets, src, false, probe)
    });
    nad_ok && expected(policies, src, dst, probe)
}

// ---------------------------------------------------------------------------------------------
// The cases.
// ---------------------------------------------------------------------------------------------

type Case = (&'static str, &'static [(&'static str, &'static str)]);

#[rustfmt::skip]
const CASES: &[Case] = &[
    ("no policy: everything passes", &[]),
    ("deny all ingress in y", &[("y", "{podSelector: {}, policyTypes: [Ingress]}")]),
    ("deny all egress in x", &[("x", "{podSelector: {}, policyTypes: [Egress]}")]),
    ("deny all both ways for x/a", &[("x", "{podSelector: {matchLabels: {pod: a}}, policyTypes: [Ingress, Egress]}")]),
    ("allow all ingress (empty rule)", &[("y", "{podSelector: {}, ingress: [{}]}")]),
    ("ingress from the same namespace only", &[("x", "{podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}")]),
    ("ingress from pods b of the same namespace", &[("y", "{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {pod: b}}}]}]}")]),
    ("ingress from namespace z by namespaceSelector", &[("x", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: z}}}]}]}")]),
    ("ingress from pods c in namespaces y (both selectors: AND)", &[("x", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}, podSelector: {matchLabels: {pod: c}}}]}]}")]),
    ("ingress from namespaces y or pods c here (two peers: OR)", &[("x", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}, {podSelector: {matchLabels: {pod: c}}}]}]}")]),
    ("ingress from every namespace (empty namespaceSelector)", &[("z", "{podSelector: {matchLabels: {pod: a}}, ingress: [{from: [{namespaceSelector: {}}]}]}")]),
    ("ingress on TCP 80 only", &[("y", "{podSelector: {}, ingress: [{ports: [{port: 80}]}]}")]),
    ("ingress on UDP 81 only", &[("y", "{podSelector: {}, ingress: [{ports: [{protocol: UDP, port: 81}]}]}")]),
    ("ingress on TCP 80-81 by endPort", &[("z", "{podSelector: {}, ingress: [{ports: [{port: 80, endPort: 81}]}]}")]),
    ("ingress on every UDP port", &[("x", "{podSelector: {}, ingress: [{ports: [{protocol: UDP}]}]}")]),
    ("ingress on named ports", &[("x", "{podSelector: {}, ingress: [{ports: [{port: serve-80}, {protocol: UDP, port: serve-81}]}]}")]),
    ("a named port with the wrong protocol matches nothing", &[("x", "{podSelector: {}, ingress: [{ports: [{protocol: UDP, port: serve-80}]}]}")]),
    ("ingress from namespace y on TCP 81", &[("z", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: y}}}], ports: [{port: 81}]}]}")]),
    ("matchExpressions In", &[("x", "{podSelector: {matchExpressions: [{key: pod, operator: In, values: [a, b]}]}, ingress: [{from: [{podSelector: {matchExpressions: [{key: pod, operator: In, values: [c]}]}}]}]}")]),
    ("matchExpressions NotIn on namespaces", &[("y", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: ns, operator: NotIn, values: [x]}]}}]}]}")]),
    ("matchExpressions Exists and DoesNotExist", &[("z", "{podSelector: {matchExpressions: [{key: pod, operator: Exists}]}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: team, operator: DoesNotExist}]}, podSelector: {matchLabels: {pod: a}}}]}]}")]),
    ("the kubernetes.io/metadata.name label", &[("x", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: z}}}]}]}")]),
    ("ipBlock of one pod's IPv4 address", &[("y", "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 192.0.2.10/32}}]}]}")]),
    ("ipBlock with except", &[("y", "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 192.0.2.0/28, except: [192.0.2.10/31]}}]}]}")]),
    ("ipBlock of IPv6 addresses", &[("z", "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: \"2001:db8::10/125\"}}]}]}")]),
    ("egress to namespace z only", &[("x", "{podSelector: {}, egress: [{to: [{namespaceSelector: {matchLabels: {ns: z}}}]}]}")]),
    ("egress on UDP 81 only", &[("y", "{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{protocol: UDP, port: 81}]}]}")]),
    ("egress to named ports of the destination", &[("z", "{podSelector: {}, egress: [{ports: [{port: serve-80}]}]}")]),
    ("egress to an ipBlock with except", &[("x", "{podSelector: {matchLabels: {pod: b}}, egress: [{to: [{ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.16/30]}}]}]}")]),
    ("egress denied, ingress allowed elsewhere: both must allow", &[("x", "{podSelector: {}, policyTypes: [Egress]}"), ("y", "{podSelector: {}, ingress: [{}]}")]),
    ("two policies: the union of their rules", &[("y", "{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {pod: a}}}]}]}"), ("y", "{podSelector: {}, ingress: [{ports: [{port: 81}]}]}")]),
    ("two policies, one for some pods only", &[("z", "{podSelector: {matchLabels: {pod: b}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}}]}]}"), ("z", "{podSelector: {}, ingress: [{from: [{podSelector: {}}]}]}")]),
    ("a policy selecting no pod isolates nothing", &[("x", "{podSelector: {matchLabels: {pod: nobody}}, policyTypes: [Ingress, Egress]}")]),
    ("policyTypes Egress only: ingress rules ignored", &[("y", "{podSelector: {}, policyTypes: [Egress], ingress: [], egress: [{to: [{podSelector: {}}]}]}")]),
    ("ingress and egress in one policy", &[("z", "{podSelector: {matchLabels: {pod: c}}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}}]}], egress: [{ports: [{protocol: UDP}]}]}")]),
    ("isolation everywhere but DNS-like UDP 81", &[("x", "{podSelector: {}, policyTypes: [Ingress, Egress], egress: [{ports: [{protocol: UDP, port: 81}]}], ingress: [{ports: [{protocol: UDP, port: 81}]}]}"), ("y", "{podSelector: {}, policyTypes: [Ingress, Egress], egress: [{ports: [{protocol: UDP, port: 81}]}], ingress: [{ports: [{protocol: UDP, port: 81}]}]}"), ("z", "{podSelector: {}, policyTypes: [Ingress, Egress], egress: [{ports: [{protocol: UDP, port: 81}]}], ingress: [{ports: [{protocol: UDP, port: 81}]}]}")]),
    ("egress to pods a anywhere", &[("y", "{podSelector: {}, egress: [{to: [{namespaceSelector: {}, podSelector: {matchLabels: {pod: a}}}]}]}")]),
    ("ingress from pod-ns labels", &[("x", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {pod-ns: z-b}}}]}]}")]),
    ("empty from list is every source", &[("y", "{podSelector: {matchLabels: {pod: c}}, ingress: [{from: [], ports: [{port: 80}]}]}")]),
    ("deny all in every namespace", &[("x", "{podSelector: {}, policyTypes: [Ingress, Egress]}"), ("y", "{podSelector: {}, policyTypes: [Ingress, Egress]}"), ("z", "{podSelector: {}, policyTypes: [Ingress, Egress]}")]),
    ("then open y/b to everyone on TCP 81", &[("x", "{podSelector: {}, policyTypes: [Ingress]}"), ("y", "{podSelector: {matchLabels: {pod: b}}, ingress: [{ports: [{port: 81}]}]}")]),
];

/// A case with the network's own policy: a name, the NAD's CNI config (`None`: the usual one,
/// whose subnets hold every pod), its `multus-rs.io/policy` annotation, and MultiNetworkPolicies.
type NadCase = (
    &'static str,
    Option<&'static str>,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// The network's subnets hold x's and y's pods (192.0.2.10-15, 2001:db8::a-f), not z's.
const NARROW_CONFIG: &str = r#"{"cniVersion":"1.0.0","name":"net","type":"macvlan",
  "ipam":{"type":"host-local","ranges":[[{"subnet":"192.0.2.8/29"}],[{"subnet":"2001:db8::8/125"}]]}}"#;

#[rustfmt::skip]
const NAD_CASES: &[NadCase] = &[
    ("NAD isolate: pods outside the network's subnets are cut off both ways", Some(NARROW_CONFIG), "isolate: true", &[]),
    ("NAD isolate wins over a MultiNetworkPolicy allowing everything", Some(NARROW_CONFIG), "isolate: true", &[("z", "{podSelector: {}, ingress: [{}], egress: [{}]}")]),
    ("NAD isolate with allow rules inside the subnets", Some(NARROW_CONFIG), "isolate: true\ningress: {allow: [{ports: [tcp/80, udp/81]}]}", &[]),
    ("NAD ingress allow list: the rest is denied", None, "ingress: {allow: [{from: 192.0.2.8/29, ports: [tcp/80, udp/81]}, {from: \"2001:db8::10/124\", ports: tcp}]}", &[]),
    ("NAD deny wins over the NAD's allow", None, "ingress: {allow: [{from: 192.0.2.0/24}], deny: [{from: {cidr: 192.0.2.0/24, except: 192.0.2.12/30}, ports: tcp/81}]}", &[]),
    ("NAD deny wins over a MultiNetworkPolicy's allow", None, "egress: {deny: [{to: [192.0.2.16/30, \"2001:db8::10/126\"], ports: udp}]}", &[("x", "{podSelector: {}, egress: [{}]}"), ("z", "{podSelector: {}, ingress: [{}]}")]),
    ("NAD egress default deny with allowed ports", None, "egress: {default: deny, allow: [{ports: [tcp/80, {protocol: udp, port: 80, endPort: 81}]}]}", &[]),
    ("NAD and MultiNetworkPolicy narrow each other", None, "ingress: {allow: [{ports: tcp}]}", &[("y", "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}}]}]}")]),
    ("NAD IPv6-only deny leaves IPv4 alone", None, "ingress: {deny: [{from: \"2001:db8::/64\", ports: udp/81}]}", &[]),
    ("NAD single addresses as peers", None, "egress: {deny: [{to: [192.0.2.14, \"2001:db8::e\"]}]}", &[]),
    ("NAD antiSpoof lets every legitimate probe through", None, "antiSpoof: true", &[]),
    ("NAD antiSpoof with isolate and a deny", Some(NARROW_CONFIG), "antiSpoof: true\nisolate: true\ningress: {deny: [{ports: udp/80}]}", &[]),
    ("NAD audit drops nothing", None, "audit: true\ningress: {default: deny}\negress: {deny: [{to: 192.0.2.0/24, ports: tcp/81}]}", &[]),
    ("NAD audit covers the MultiNetworkPolicies too", Some(NARROW_CONFIG), r#"{"audit": true, "isolate": true}"#, &[("x", "{podSelector: {}, policyTypes: [Ingress, Egress]}")]),
];

/// Every case: the MultiNetworkPolicy ones (the usual NAD, no annotation), then the NAD ones.
fn all_cases() -> Vec<NadCaseRef> {
    CASES
        .iter()
        .map(|&(name, specs)| (name, None, None, specs))
        .chain(
            NAD_CASES
                .iter()
                .map(|&(name, config, nad, specs)| (name, config, Some(nad), specs)),
        )
        .collect()
}

/// A case as the harness runs it: name, NAD config, annotation, MultiNetworkPolicies.
type NadCaseRef = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    &'static [(&'static str, &'static str)],
);

// ---------------------------------------------------------------------------------------------
// The harness.
// ---------------------------------------------------------------------------------------------

/// A UDP echo server inside a pod, stopped on drop.
struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    fn start(pod: &Pod, addr: SocketAddr) -> Self {
        let socket = traffic::udp_socket(&pod.netns, addr);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(&buf[..n], from);
                    }
                }
            })
        };
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether one probe gets through (and, for UDP, its answer back) within `wait`.
fn probe(pod: &Pod, from: IpAddr, to: SocketAddr, proto: Proto, wait: Duration) -> bool {
    match proto {
        Proto::Tcp => pod
            .netns
            .enter(|| std::net::TcpStream::connect_timeout(&to, wait))
            .is_ok(),
        Proto::Udp => {
            let socket: UdpSocket = traffic::udp_socket(&pod.netns, SocketAddr::new(from, 0));
            socket.set_read_timeout(Some(wait)).unwrap();
            if socket.send_to(b"probe", to).is_err() {
                return false;
            }
            let mut buf = [0u8; 16];
            socket.recv_from(&mut buf).is_ok()
        }
    }
}

/// Every probe of a case with its expected and observed verdicts, printed as one table per
/// protocol, port and family (rows: sources, columns: destinations; `.` allowed, `X` denied,
/// `!`/`?` where the dataplane allowed/denied against the model).
fn table(members: &[Member], results: &BTreeMap<(usize, usize, Probe), (bool, bool)>) -> String {
    let mut out = String::new();
    for proto in [Proto::Tcp, Proto::Udp] {
        for port in PORTS {
            for v6 in [false, true] {
                let family = if v6 { "IPv6" } else { "IPv4" };
                let _ = writeln!(out, "{} {port} {family}", proto.name());
                let _ = write!(out, "{:>6}", "");
                for m in members {
                    let _ = write!(out, " {:>3}", m.id());
                }
                out.push('\n');
                for (i, src) in members.iter().enumerate() {
                    let _ = write!(out, "{:>6}", src.id());
                    for j in 0..members.len() {
                        let cell = match results.get(&(i, j, (proto, port, v6))) {
                            None => "-",
                            Some((true, true)) => ".",
                            Some((false, false)) => "X",
                            Some((false, true)) => "!",
                            Some((true, false)) => "?",
                        };
                        let _ = write!(out, " {cell:>3}");
                    }
                    out.push('\n');
                }
            }
        }
    }
    out
}

#[test]
fn the_dataplane_follows_the_networkpolicy_model() {
    if !require_root("the_dataplane_follows_the_networkpolicy_model") {
        return;
    }
    let _serial = serial();
    let cases = all_cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    if let Err(e) = sctp_socket() {
        println!("SCTP probes left out: this kernel has no SCTP sockets ({e})");
    }
    let net = MacvlanPods::dual_stack(9);
    let members: Vec<Member> = net
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| Member {
            ns: NAMESPACES[i / 3],
            name: PODS[i % 3],
            ip4: IpAddr::V4(p.ip4),
            ip6: IpAddr::V6(p.ip6),
        })
        .collect();
    let mut servers = Vec::new();
    let mut echoes = Vec::new();
    for (pod, m) in net.pods.iter().zip(&members) {
        for v6 in [false, true] {
            for port in PORTS {
                let addr = SocketAddr::new(m.ip(v6), port);
                servers.push(traffic::TcpServer::start(&pod.netns, addr));
                echoes.push(UdpEcho::start(pod, addr));
            }
        }
    }
    let mut fx = Fixture::new(AttachMode::Tcx);
    let ids: Vec<u32> = net.pods.iter().map(|p| fx.attach(p, None)).collect();

    let mut failures = Vec::new();
    // `TRUTH_TABLE_ONLY=text` runs the cases whose name contains it (for working on a case).
    let only = std::env::var("TRUTH_TABLE_ONLY").ok();
    for (name, config, annotation, specs) in cases {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let config = config.unwrap_or(NETWORK_CONFIG);
        let nad_model = annotation.map(|a| NadModel {
            policy: serde_yaml::from_str(a).unwrap(),
            subnets: subnets(config),
        });
        let model = install(&mut fx, &net, &members, &ids, (config, annotation, specs));

        // Every probe, many at a time; a failed probe the model expects through is tried once
        // more with a longer wait, so a slow machine is not a wrong verdict.
        let mut jobs = Vec::new();
        let mut would_drop = 0;
        let audited_before: u64 = ids.iter().map(|id| audited(&fx, *id)).sum();
        for (i, src) in members.iter().enumerate() {
            for (j, dst) in members.iter().enumerate() {
                if i == j {
                    continue;
                }
                for proto in [Proto::Tcp, Proto::Udp] {
                    for port in PORTS {
                        for v6 in [false, true] {
                            let p = (proto, port, v6);
                            let enforced = enforced(nad_model.as_ref(), &model, src, dst, p);
                            // Audit mode drops nothing: every probe gets through.
                            let audit = nad_model.as_ref().is_some_and(NadModel::audit);
                            would_drop += usize::from(!enforced);
                            jobs.push((i, j, p, enforced || audit));
                        }
                    }
                }
            }
        }
        let results: BTreeMap<(usize, usize, Probe), (bool, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .chunks(jobs.len().div_ceil(48))
                .map(|chunk| {
                    let (pods, members) = (&net.pods, &members);
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|&(i, j, (proto, port, v6), want)| {
                                let to = SocketAddr::new(members[j].ip(v6), port);
                                let from = members[i].ip(v6);
                                let mut got =
                                    probe(&pods[i], from, to, proto, Duration::from_millis(300));
                                if !got && want {
                                    got = probe(&pods[i], from, to, proto, Duration::from_secs(2));
                                }
                                ((i, j, (proto, port, v6)), (want, got))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        failures.extend(explain_disagreements(&fx, &ids, &members, &results, name));
        let wrong = results.values().filter(|(want, got)| want != got).count();
        let audited_now: u64 = ids.iter().map(|id| audited(&fx, *id)).sum();
        if nad_model.as_ref().is_some_and(NadModel::audit)
            && would_drop > 0
            && audited_now == audited_before
        {
            failures.push(format!(
                "case {name:?}: {would_drop} probes would be dropped, none was counted as audited"
            ));
        }
        if wrong > 0 {
            failures.push(format!(
                "case {name:?}: {wrong} of {} probes disagree with the model\n{}",
                results.len(),
                table(&members, &results)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `multus-agent explain`'s verdicts, read from the installed tries, against what every probe
/// observed: the source's egress and the destination's ingress must both pass exactly when the
/// probe got through. One line per probe that disagrees, and any disagreement `explain` itself
/// reports between a trie and its record.
fn explain_disagreements(
    fx: &Fixture,
    ids: &[u32],
    members: &[Member],
    results: &BTreeMap<(usize, usize, Probe), (bool, bool)>,
    case: &str,
) -> Vec<String> {
    let layout = fx.layout();
    let records: Vec<_> = ids
        .iter()
        .map(|id| fx.dataplane.attachment(*id).unwrap())
        .collect();
    let mut out = Vec::new();
    for (&(i, j, (proto, port, v6)), &(_, got)) in results {
        let traffic = match proto {
            Proto::Tcp => Traffic::Tcp(port),
            Proto::Udp => Traffic::Udp(port),
        };
        let ask = |at: usize, direction, peer: &Member| {
            let packet = Packet {
                direction,
                peer: peer.ip(v6),
                traffic,
            };
            explain_attachment(&layout, &records[at], &packet).unwrap()
        };
        let egress = ask(i, Direction::Egress, &members[j]);
        let ingress = ask(j, Direction::Ingress, &members[i]);
        for e in [&egress, &ingress] {
            if let Some(d) = &e.disagreement {
                out.push(format!("case {case:?}: explain: {d}"));
            }
        }
        if (egress.passes() && ingress.passes()) != got {
            out.push(format!(
                "case {case:?}: {} -> {} {} {port} {}: observed {}, explain says egress {} \
                 ({}), ingress {} ({})",
                members[i].id(),
                members[j].id(),
                proto.name(),
                if v6 { "IPv6" } else { "IPv4" },
                if got { "pass" } else { "drop" },
                egress.verdict,
                egress.rule,
                ingress.verdict,
                ingress.rule,
            ));
        }
    }
    out
}

/// Compiles a case's objects (the NAD with its config and annotation, the MultiNetworkPolicies)
/// for every pod and installs the result; returns the MultiNetworkPolicies for the model.
fn install(
    fx: &mut Fixture,
    net: &MacvlanPods,
    members: &[Member],
    ids: &[u32],
    (config, annotation, specs): (&str, Option<&str>, &[(&'static str, &'static str)]),
) -> Vec<(&'static str, Value)> {
    let mut snapshot = Snapshot::new();
    for ns in NAMESPACES {
        snapshot.upsert_namespace(NamespaceView {
            name: ns.to_owned(),
            labels: namespace_labels(ns),
        });
    }
    snapshot.upsert_nad(nad(NETWORK, config, annotation));
    for m in members {
        let ports: Vec<(&str, Protocol, u16)> = NAMED_PORTS
            .iter()
            .map(|(n, p, port)| {
                (
                    *n,
                    if *p == "TCP" {
                        Protocol::Tcp
                    } else {
                        Protocol::Udp
                    },
                    *port,
                )
            })
            .collect();
        let ips = [m.ip4.to_string(), m.ip6.to_string()];
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        let pod_labels: Vec<(String, String)> = m.labels().into_iter().collect();
        let pod_labels: Vec<(&str, &str)> = pod_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        snapshot.upsert_pod(pod(
            &m.id(),
            &pod_labels,
            &ports,
            &[(NETWORK, ips.as_slice())],
        ));
    }
    let mut model = Vec::new();
    for (i, (ns, spec)) in specs.iter().enumerate() {
        snapshot.upsert_mnp(&mnp(&format!("{ns}/p{i}"), Some(NETWORK), spec));
        let value: Value = serde_yaml::from_str(spec).unwrap();
        model.push((*ns, value));
    }
    for ((pod, m), id) in net.pods.iter().zip(members).zip(ids) {
        let local = LocalAttachment {
            pod: key(&m.id()),
            interface: "net1".to_owned(),
            network: key(NETWORK),
            ips: vec![m.ip4, m.ip6],
            mac: pod.mac.parse().unwrap(),
        };
        match compile_attachment(&snapshot, &local).unwrap() {
            Some(compiled) => fx.dataplane.set_policy(*id, &compiled.policy).unwrap(),
            None => fx.dataplane.clear_policy(*id).unwrap(),
        }
    }
    model
}

/// One test of this file at a time: each runs dozens of probing threads, and a probe that times
/// out because the other test loads the machine would read as a drop.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Packets attachment `id`'s policy would have dropped in audit mode, both directions.
fn audited(fx: &Fixture, id: u32) -> u64 {
    let c = fx.counters(id);
    c.ingress.audit_packets.iter().sum::<u64>() + c.egress.audit_packets.iter().sum::<u64>()
}

/// Attachment `id`'s dropped packets by reason, ingress and egress.
fn drops(fx: &Fixture, id: u32) -> (Vec<u64>, Vec<u64>) {
    let c = fx.counters(id);
    (
        c.ingress.drop_packets.to_vec(),
        c.egress.drop_packets.to_vec(),
    )
}

/// An SCTP socket, to tell whether the kernel has SCTP at all.
fn sctp_socket() -> std::io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is closed at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_SCTP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: our own descriptor.
    unsafe { libc::close(fd) };
    Ok(())
}

/// Two policy sets the suite flips between while probes run. Under both, x's pods take nothing
/// in but replies, and y's pods take x's on TCP 80 and UDP 81; `B` also lets x in on every
/// other port and z in everywhere.
const CHANGING_A: &[(&str, &str)] = &[
    ("x", "{podSelector: {}, policyTypes: [Ingress]}"),
    (
        "y",
        "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}}], ports: [{port: 80}, {protocol: UDP, port: 81}]}]}",
    ),
];
const CHANGING_B: &[(&str, &str)] = &[
    ("x", "{podSelector: {}, policyTypes: [Ingress]}"),
    (
        "y",
        "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {ns: x}}}]}, {from: [{namespaceSelector: {matchLabels: {ns: z}}}]}]}",
    ),
];

#[test]
fn policies_changing_while_probes_run() {
    if !require_root("policies_changing_while_probes_run") {
        return;
    }
    let _serial = serial();
    let net = MacvlanPods::dual_stack(9);
    let members: Vec<Member> = net
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| Member {
            ns: NAMESPACES[i / 3],
            name: PODS[i % 3],
            ip4: IpAddr::V4(p.ip4),
            ip6: IpAddr::V6(p.ip6),
        })
        .collect();
    let mut servers = Vec::new();
    let mut echoes = Vec::new();
    for (pod, m) in net.pods.iter().zip(&members) {
        for v6 in [false, true] {
            for port in PORTS {
                let addr = SocketAddr::new(m.ip(v6), port);
                servers.push(traffic::TcpServer::start(&pod.netns, addr));
                echoes.push(UdpEcho::start(pod, addr));
            }
        }
    }
    let mut fx = Fixture::new(AttachMode::Tcx);
    let ids: Vec<u32> = net.pods.iter().map(|p| fx.attach(p, None)).collect();
    let case = |specs| (NETWORK_CONFIG, None, specs);
    let model_a = install(&mut fx, &net, &members, &ids, case(CHANGING_A));
    let model_b: Vec<(&str, Value)> = CHANGING_B
        .iter()
        .map(|(ns, spec)| (*ns, serde_yaml::from_str(spec).unwrap()))
        .collect();

    // The probes both policy sets agree on, and the ones they do not.
    let mut stable = Vec::new();
    let mut changing = 0;
    for (i, src) in members.iter().enumerate() {
        for (j, dst) in members.iter().enumerate() {
            for proto in [Proto::Tcp, Proto::Udp] {
                for port in PORTS {
                    for v6 in [false, true] {
                        let p = (proto, port, v6);
                        let (a, b) = (
                            expected(&model_a, src, dst, p),
                            expected(&model_b, src, dst, p),
                        );
                        if i == j {
                            continue;
                        } else if a == b {
                            stable.push((i, j, p, a));
                        } else {
                            changing += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(changing > 0 && stable.iter().any(|s| s.3) && stable.iter().any(|s| !s.3));

    // An established UDP exchange x/a -> y/b:81 that both allow: its answers reach x/a only as
    // replies of its flow, through every recompile.
    let (xa, yb) = (&net.pods[0], &net.pods[4]);
    let exchange = traffic::udp_socket(&xa.netns, SocketAddr::new(members[0].ip4, 0));
    exchange
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let peer = SocketAddr::new(IpAddr::V4(yb.ip4), 81);

    let drops_before: Vec<_> = ids.iter().map(|id| drops(&fx, *id)).collect();
    let stop = AtomicBool::new(false);
    let flips = 12;
    let started = std::time::Instant::now();
    let (wrong, lost) = std::thread::scope(|s| {
        let exchanger = s.spawn(|| {
            let mut lost = 0;
            let mut buf = [0u8; 16];
            while !stop.load(Ordering::Relaxed) {
                exchange.send_to(b"ping", peer).unwrap();
                if exchange.recv_from(&mut buf).is_err() {
                    lost += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            lost
        });
        let probers: Vec<_> = stable
            .chunks(stable.len().div_ceil(24))
            .map(|chunk| {
                let (pods, members, stop) = (&net.pods, &members, &stop);
                s.spawn(move || {
                    let mut wrong = Vec::new();
                    let mut rounds = 0;
                    while !stop.load(Ordering::Relaxed) {
                        rounds += 1;
                        for &(i, j, (proto, port, v6), want) in chunk {
                            let to = SocketAddr::new(members[j].ip(v6), port);
                            // Shorter than TCP's first SYN retransmission (1 s): a dropped SYN
                            // or answer is a failed probe, not a late success.
                            let got = probe(
                                &pods[i],
                                members[i].ip(v6),
                                to,
                                proto,
                                Duration::from_millis(900),
                            );
                            if got != want {
                                wrong.push(format!(
                                    "{} -> {} {} {port} {}: expected {want}, got {got}",
                                    members[i].id(),
                                    members[j].id(),
                                    proto.name(),
                                    if v6 { "IPv6" } else { "IPv4" }
                                ));
                            }
                        }
                    }
                    (wrong, rounds)
                })
            })
            .collect();
        // The flips last longer than one round of a prober's probes (at most 900 ms each).
        let round = Duration::from_millis(900) * u32::try_from(stable.len().div_ceil(24)).unwrap();
        for flip in 0..flips {
            std::thread::sleep(Duration::from_millis(150));
            let specs = if flip % 2 == 0 {
                CHANGING_B
            } else {
                CHANGING_A
            };
            install(&mut fx, &net, &members, &ids, case(specs));
        }
        while started.elapsed() < round {
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        let mut wrong = Vec::new();
        for h in probers {
            let (w, rounds) = h.join().unwrap();
            // Every prober went through its probes while the policies changed.
            assert!(rounds >= 1);
            wrong.extend(w);
        }
        (wrong, exchanger.join().unwrap())
    });
    assert!(
        wrong.is_empty(),
        "{} probes both policy sets agree on went the other way while they changed:\n{}\n\
         drops (ingress, egress) by reason while they changed:\n{}",
        wrong.len(),
        wrong.join("\n"),
        members
            .iter()
            .zip(ids.iter().zip(&drops_before))
            .map(|(m, (id, before))| {
                let now = drops(&fx, *id);
                let diff = |a: &[u64], b: &[u64]| -> Vec<u64> {
                    a.iter().zip(b).map(|(a, b)| a - b).collect()
                };
                format!(
                    "{}: {:?} {:?} {:?}",
                    m.id(),
                    diff(&now.0, &before.0),
                    diff(&now.1, &before.1),
                    fx.counters(*id).flows
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        lost, 0,
        "answers of an established flow lost across {flips} policy changes"
    );

    // After the last change (to A), the probes the two sets disagree on follow A.
    let mut results = BTreeMap::new();
    for (i, src) in members.iter().enumerate() {
        for (j, dst) in members.iter().enumerate() {
            for proto in [Proto::Tcp, Proto::Udp] {
                for port in PORTS {
                    for v6 in [false, true] {
                        let p = (proto, port, v6);
                        if i == j
                            || expected(&model_a, src, dst, p) == expected(&model_b, src, dst, p)
                        {
                            continue;
                        }
                        let want = expected(&model_a, src, dst, p);
                        let to = SocketAddr::new(dst.ip(v6), port);
                        let mut got = probe(
                            &net.pods[i],
                            src.ip(v6),
                            to,
                            proto,
                            Duration::from_millis(300),
                        );
                        if !got && want {
                            got =
                                probe(&net.pods[i], src.ip(v6), to, proto, Duration::from_secs(2));
                        }
                        results.insert((i, j, p), (want, got));
                    }
                }
            }
        }
    }
    let wrong = results.values().filter(|(want, got)| want != got).count();
    assert_eq!(wrong, 0, "after the changes\n{}", table(&members, &results));
    drop((servers, echoes));
}
