//! MultiNetworkPolicies → the rules of one attachment, with NetworkPolicy semantics: a direction
//! any applying policy covers is default deny, and allows the union of those policies' rules.
//! Peers are pods anywhere in the cluster, by their addresses on the attachment's network (one of
//! the policy's networks: isolated L2 networks often reuse subnets, so a peer's address on
//! another network says nothing about who sends from it on this one); named ports resolve
//! against the target pod (ingress) or against each peer pod (egress).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

use super::model::{
    Action, DirectionPolicy, ObjectKind, Origin, Peer, Policy, PortMatch, PortRange, Protocol, Rule,
};
use super::{
    eval::peer_contains,
    inputs::{ObjectKey, PodView},
    mnp::{MnpEntry, MnpPeer, MnpRule, MnpRules, PortSpec},
    selector::Selector,
    snapshot::Snapshot,
};

/// The policy the applying MultiNetworkPolicies give `target`'s attachment to `network`; `None`
/// when none applies.
pub fn mnp_policy(
    snapshot: &Snapshot,
    target: &PodView,
    network: &ObjectKey,
    applying: &[(&MnpEntry, &MnpRules)],
) -> Option<Policy> {
    if applying.is_empty() {
        return None;
    }
    let resolver = Resolver {
        snapshot,
        target,
        nets: BTreeSet::from([network.clone()]),
    };
    let direction = |egress: bool| {
        let mut covering = Vec::new();
        let mut rules = Vec::new();
        let name = if egress { "egress" } else { "ingress" };
        for (entry, mnp_rules) in applying {
            let list = if egress {
                &mnp_rules.egress
            } else {
                &mnp_rules.ingress
            };
            if let Some(list) = list {
                covering.push(mnp_origin(entry, String::new()));
                for (i, rule) in list.iter().enumerate() {
                    let start = rules.len();
                    resolver.rule(entry, rule, egress, &mut rules);
                    let origin = mnp_origin(entry, format!("{name}[{i}]"));
                    for r in &mut rules[start..] {
                        r.origins = vec![origin.clone()];
                    }
                }
            }
        }
        if covering.is_empty() {
            DirectionPolicy::default()
        } else {
            DirectionPolicy {
                default_from: covering,
                ..DirectionPolicy::deny_by_default(rules)
            }
        }
    };
    Some(Policy {
        ingress: direction(false),
        egress: direction(true),
        audit: false,
        anti_spoof: None,
    })
}

/// A place in a MultiNetworkPolicy (`ingress[1]`), or the whole policy (`path` empty).
fn mnp_origin(entry: &MnpEntry, path: String) -> Origin {
    Origin {
        kind: ObjectKind::MultiNetworkPolicy,
        namespace: entry.key.namespace.clone(),
        name: entry.key.name.clone(),
        path,
    }
}

struct Resolver<'a> {
    snapshot: &'a Snapshot,
    target: &'a PodView,
    /// The attachment's network: the only one whose addresses count for peers.
    nets: BTreeSet<ObjectKey>,
}

impl Resolver<'_> {
    fn rule(&self, entry: &MnpEntry, rule: &MnpRule, egress: bool, out: &mut Vec<Rule>) {
        // `None`: every peer; `Some(empty)`: peers given, none of them has an address.
        // Resolved only where needed: named egress ports resolve per pod instead.
        let peers = || -> Option<Vec<Peer>> {
            rule.peers.as_ref().map(|list| {
                list.iter()
                    .flat_map(|p| self.peer_cidrs(entry, p))
                    .collect()
            })
        };
        let Some(ports) = &rule.ports else {
            push(out, peers(), Vec::new());
            return;
        };
        let mut fixed = Vec::new();
        let mut named = Vec::new();
        for port in ports {
            match &port.port {
                PortSpec::All => fixed.push(PortMatch {
                    protocol: port.protocol,
                    ports: None,
                }),
                PortSpec::Range(r) => fixed.push(PortMatch {
                    protocol: port.protocol,
                    ports: Some(*r),
                }),
                PortSpec::Named(name) => named.push((port.protocol, name.as_str())),
            }
        }
        if !egress {
            fixed.extend(
                named_ports(self.target, &named).map(|(protocol, port)| PortMatch {
                    protocol,
                    ports: Some(PortRange::single(port)),
                }),
            );
            // Ports were given: if none resolves, the rule matches nothing (an empty list
            // would mean every port).
            if !fixed.is_empty() {
                push(out, peers(), fixed);
            }
            return;
        }
        if !fixed.is_empty() {
            push(out, peers(), fixed);
        }
        if named.is_empty() {
            return;
        }
        // Egress: each destination pod says what its named ports are.
        let mut by_port: BTreeMap<(Protocol, u16), BTreeSet<IpAddr>> = BTreeMap::new();
        for (pod, ips) in self.peer_pods(entry, rule.peers.as_deref()) {
            for key in named_ports(pod, &named) {
                by_port.entry(key).or_default().extend(&ips);
            }
        }
        for ((protocol, port), ips) in by_port {
            push(
                out,
                Some(
                    ips.into_iter()
                        .map(|ip| Peer::from(IpNet::from(ip)))
                        .collect(),
                ),
                vec![PortMatch {
                    protocol,
                    ports: Some(PortRange::single(port)),
                }],
            );
        }
    }

    /// The addresses a peer stands for.
    fn peer_cidrs(&self, entry: &MnpEntry, peer: &MnpPeer) -> Vec<Peer> {
        match peer {
            MnpPeer::Block(block) => vec![block.clone()],
            MnpPeer::Pods { pods, namespaces } => self
                .selected(entry, pods, namespaces.as_ref())
                .flat_map(|pod| ips_on(pod, &self.nets))
                .map(|ip| Peer::from(IpNet::from(ip)))
                .collect(),
        }
    }

    /// Pods on the attachment's network picked by a pod/namespace selector pair.
    fn selected<'a>(
        &'a self,
        entry: &'a MnpEntry,
        pods: &'a Selector,
        namespaces: Option<&'a Selector>,
    ) -> impl Iterator<Item = &'a PodView> + 'a {
        let snapshot = self.snapshot;
        let in_scope: Vec<&'a str> = match namespaces {
            None => vec![entry.key.namespace.as_str()],
            Some(sel) => snapshot
                .pod_namespaces()
                .filter(|ns| sel.matches_namespace(ns, snapshot.namespace_labels(ns)))
                .collect(),
        };
        self.nets
            .iter()
            .flat_map(move |net| {
                in_scope
                    .clone()
                    .into_iter()
                    .flat_map(move |ns| snapshot.pods_on_in(net, ns))
            })
            .filter(move |pod| pods.matches(&pod.labels))
    }

    /// Every pod with an interface on the attachment's network.
    fn on_network(&self) -> impl Iterator<Item = &PodView> + '_ {
        self.nets.iter().flat_map(|n| self.snapshot.pods_on(n))
    }

    /// Destination pods of an egress rule with the addresses the rule lets it reach them on.
    fn peer_pods<'a>(
        &'a self,
        entry: &'a MnpEntry,
        peers: Option<&'a [MnpPeer]>,
    ) -> Vec<(&'a PodView, Vec<IpAddr>)> {
        let nets = &self.nets;
        let Some(peers) = peers else {
            return self
                .on_network()
                .map(|pod| (pod, ips_on(pod, nets).collect()))
                .collect();
        };
        let mut found: BTreeMap<&ObjectKey, (&PodView, BTreeSet<IpAddr>)> = BTreeMap::new();
        for peer in peers {
            match peer {
                MnpPeer::Pods { pods, namespaces } => {
                    for pod in self.selected(entry, pods, namespaces.as_ref()) {
                        found
                            .entry(&pod.key)
                            .or_insert_with(|| (pod, BTreeSet::new()))
                            .1
                            .extend(ips_on(pod, nets));
                    }
                }
                MnpPeer::Block(block) => {
                    for pod in self.on_network() {
                        let inside: Vec<IpAddr> = ips_on(pod, nets)
                            .filter(|ip| peer_contains(block, *ip))
                            .collect();
                        if !inside.is_empty() {
                            found
                                .entry(&pod.key)
                                .or_insert_with(|| (pod, BTreeSet::new()))
                                .1
                                .extend(inside);
                        }
                    }
                }
            }
        }
        found
            .into_values()
            .map(|(pod, ips)| (pod, ips.into_iter().collect()))
            .collect()
    }
}

/// `pod`'s container ports with one of these names and protocols.
fn named_ports<'a>(
    pod: &'a PodView,
    named: &'a [(Protocol, &str)],
) -> impl Iterator<Item = (Protocol, u16)> + 'a {
    pod.ports
        .iter()
        .filter(|p| {
            named
                .iter()
                .any(|(proto, name)| *proto == p.protocol && *name == p.name)
        })
        .map(|p| (p.protocol, p.port))
}

/// `pod`'s addresses on any of `networks`.
fn ips_on<'a>(
    pod: &'a PodView,
    networks: &'a BTreeSet<ObjectKey>,
) -> impl Iterator<Item = IpAddr> + 'a {
    pod.networks
        .iter()
        .filter(|n| networks.contains(&n.network))
        .flat_map(|n| n.ips.iter().copied())
}

/// Adds an allow rule unless its peers were given and none has an address.
fn push(out: &mut Vec<Rule>, peers: Option<Vec<Peer>>, ports: Vec<PortMatch>) {
    let peers = match peers {
        None => Vec::new(),
        Some(list) if list.is_empty() => return,
        Some(list) => list,
    };
    out.push(Rule {
        action: Action::Allow,
        peers,
        ports,
        origins: Vec::new(),
    });
}
