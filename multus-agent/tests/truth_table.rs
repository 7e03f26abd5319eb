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
    assert!(CASES.len() >= 40, "{} cases", CASES.len());
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
    for (name, specs) in CASES {
        let mut snapshot = Snapshot::new();
        for ns in NAMESPACES {
            snapshot.upsert_namespace(NamespaceView {
                name: ns.to_owned(),
                labels: namespace_labels(ns),
            });
        }
        snapshot.upsert_nad(nad(NETWORK, NETWORK_CONFIG, None));
        for m in &members {
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
        for ((pod, m), id) in net.pods.iter().zip(&members).zip(&ids) {
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

        // Every probe, many at a time; a failed probe the model expects through is tried once
        // more with a longer wait, so a slow machine is not a wrong verdict.
        let mut jobs = Vec::new();
        for (i, src) in members.iter().enumerate() {
            for (j, dst) in members.iter().enumerate() {
                if i == j {
                    continue;
                }
                for proto in [Proto::Tcp, Proto::Udp] {
                    for port in PORTS {
                        for v6 in [false, true] {
                            let p = (proto, port, v6);
                            jobs.push((i, j, p, expected(&model, src, dst, p)));
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
