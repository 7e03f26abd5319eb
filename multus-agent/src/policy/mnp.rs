//! MultiNetworkPolicy objects, read and checked once: which networks they are for
//! (`k8s.v1.cni.cncf.io/policy-for`), which pods they select, and their rules with
//! NetworkPolicy's defaults filled in. Resolving peers and named ports against the cluster
//! happens per attachment, in [`super::resolve`].
use std::collections::BTreeSet;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use multus_kube::crd::{
    MultiNetworkPolicyPeer, MultiNetworkPolicyPort, POLICY_FOR_ANNOTATION, v1beta1, v1beta2,
};

use super::model::{Peer, PortRange, Protocol};
use super::{
    error::{FieldError, ObjectError},
    inputs::{ObjectKey, PodView, port_protocol},
    selector::Selector,
};

/// A MultiNetworkPolicy as the compiler uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MnpEntry {
    /// Namespace and name.
    pub key: ObjectKey,
    /// The networks it is for; `None` when the annotation does not parse (then it may be for
    /// any network). Empty without the annotation: such a policy is ignored, as upstream.
    pub networks: Option<BTreeSet<ObjectKey>>,
    /// The pods it selects in its namespace; `None` when the selector is invalid.
    pub target: Option<Selector>,
    /// Its rules, or the first problem found in the object.
    pub rules: Result<MnpRules, ObjectError>,
}

/// The rules of the directions a policy covers (`policyTypes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MnpRules {
    /// `Some` when the policy covers ingress: selected pods then receive only what these allow.
    pub ingress: Option<Vec<MnpRule>>,
    /// `Some` when the policy covers egress.
    pub egress: Option<Vec<MnpRule>>,
}

/// One ingress or egress rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MnpRule {
    /// `from`/`to`; `None` when absent or empty: every peer.
    pub peers: Option<Vec<MnpPeer>>,
    /// `ports`; `None` when absent or empty: every protocol and port.
    pub ports: Option<Vec<MnpPort>>,
}

/// One peer of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MnpPeer {
    /// Pods by label, in the policy's namespace (`namespaces: None`) or in the namespaces the
    /// selector picks.
    Pods {
        /// `podSelector` (absent: every pod).
        pods: Selector,
        /// `namespaceSelector`.
        namespaces: Option<Selector>,
    },
    /// `ipBlock`.
    Block(Peer),
}

/// One port of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MnpPort {
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// Which ports.
    pub port: PortSpec,
}

/// The port part of an [`MnpPort`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// Every port of the protocol.
    All,
    /// `port`, or `port`..=`endPort`.
    Range(PortRange),
    /// A named container port: of the target pod on ingress, of each peer pod on egress.
    Named(String),
}

impl MnpEntry {
    /// Reads a policy. Problems are kept in [`MnpEntry::rules`] (the first one found).
    pub fn parse(policy: &v1beta2::MultiNetworkPolicy) -> Self {
        let key = ObjectKey::new(
            policy.metadata.namespace.as_deref().unwrap_or("default"),
            policy.metadata.name.as_deref().unwrap_or_default(),
        );
        let error = |field| ObjectError::MultiNetworkPolicy {
            policy: key.clone(),
            field,
        };
        let policy_for = policy
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(POLICY_FOR_ANNOTATION));
        let networks = match policy_for {
            None => Ok(BTreeSet::new()),
            Some(list) => policy_for_networks(list, &key.namespace),
        };
        let target = Selector::parse(&policy.spec.pod_selector, "spec.podSelector");
        let rules = match (&networks, &target) {
            (Err(e), _) | (_, Err(e)) => Err(error(e.clone())),
            (Ok(nets), Ok(_)) if nets.is_empty() => Ok(MnpRules::default()),
            _ => rules(&policy.spec).map_err(error),
        };
        Self {
            networks: networks.ok(),
            target: target.ok(),
            rules,
            key,
        }
    }

    /// Reads a `v1beta1` policy (the same fields as `v1beta2`).
    pub fn parse_v1beta1(policy: &v1beta1::MultiNetworkPolicy) -> Self {
        let spec = &policy.spec;
        Self::parse(&v1beta2::MultiNetworkPolicy {
            metadata: policy.metadata.clone(),
            spec: v1beta2::MultiNetworkPolicySpec {
                pod_selector: spec.pod_selector.clone(),
                ingress: spec.ingress.clone(),
                egress: spec.egress.clone(),
                policy_types: spec.policy_types.clone(),
            },
        })
    }

    /// Whether it has no `policy-for` annotation (and so applies to nothing).
    pub fn ignored(&self) -> bool {
        self.networks.as_ref().is_some_and(BTreeSet::is_empty)
    }

    /// Whether it applies, or may apply as far as an invalid object can tell, to `pod`'s
    /// attachment to `network`.
    pub fn may_apply(&self, network: &ObjectKey, pod: &PodView) -> bool {
        pod.key.namespace == self.key.namespace
            && self.networks.as_ref().is_none_or(|n| n.contains(network))
            && self.target.as_ref().is_none_or(|t| t.matches(&pod.labels))
    }

    /// The problem with the object, if any.
    pub fn error(&self) -> Option<&ObjectError> {
        self.rules.as_ref().err()
    }
}

/// `a, other-ns/b` → `{ns/a, other-ns/b}`.
fn policy_for_networks(list: &str, namespace: &str) -> Result<BTreeSet<ObjectKey>, FieldError> {
    let path = format!("metadata.annotations[{POLICY_FOR_ANNOTATION}]");
    let mut out = BTreeSet::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let parts: Vec<&str> = item.split('/').collect();
        let key = match parts[..] {
            [name] if !name.is_empty() => ObjectKey::new(namespace, name),
            [ns, name] if !ns.is_empty() && !name.is_empty() => ObjectKey::new(ns, name),
            _ => {
                return Err(FieldError::new(
                    path,
                    format!("{item:?} is neither <namespace>/<name> nor <name>"),
                ));
            }
        };
        out.insert(key);
    }
    Ok(out)
}

fn rules(spec: &v1beta2::MultiNetworkPolicySpec) -> Result<MnpRules, FieldError> {
    let (mut ingress, mut egress) = (false, false);
    match spec.policy_types.as_deref() {
        None | Some([]) => {
            ingress = true;
            egress = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        }
        Some(types) => {
            for (i, t) in types.iter().enumerate() {
                if t.eq_ignore_ascii_case("Ingress") {
                    ingress = true;
                } else if t.eq_ignore_ascii_case("Egress") {
                    egress = true;
                } else {
                    return Err(FieldError::new(
                        format!("spec.policyTypes[{i}]"),
                        format!("unknown policy type {t:?} (expected Ingress or Egress)"),
                    ));
                }
            }
        }
    }
    // Rules of a direction the policy does not cover are ignored, but still checked: a typo in
    // them is a typo.
    let ingress_rules = spec
        .ingress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            let at = format!("spec.ingress[{i}]");
            read_rule(r.from.as_deref(), r.ports.as_deref(), &at, "from")
        })
        .collect::<Result<Vec<_>, _>>()?;
    let egress_rules = spec
        .egress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| {
            let at = format!("spec.egress[{i}]");
            read_rule(r.to.as_deref(), r.ports.as_deref(), &at, "to")
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(MnpRules {
        ingress: ingress.then_some(ingress_rules),
        egress: egress.then_some(egress_rules),
    })
}

fn read_rule(
    peers: Option<&[MultiNetworkPolicyPeer]>,
    ports: Option<&[MultiNetworkPolicyPort]>,
    at: &str,
    peers_key: &str,
) -> Result<MnpRule, FieldError> {
    Ok(MnpRule {
        peers: each(peers, &format!("{at}.{peers_key}"), peer)?,
        ports: each(ports, &format!("{at}.ports"), port)?,
    })
}

/// Reads every item of a list that is not empty, at `path[i]`.
fn each<T, U>(
    list: Option<&[T]>,
    path: &str,
    read: impl Fn(&T, &str) -> Result<U, FieldError>,
) -> Result<Option<Vec<U>>, FieldError> {
    non_empty(list)
        .map(|items| {
            items
                .iter()
                .enumerate()
                .map(|(i, item)| read(item, &format!("{path}[{i}]")))
                .collect()
        })
        .transpose()
}

fn non_empty<T>(list: Option<&[T]>) -> Option<&[T]> {
    list.filter(|l| !l.is_empty())
}

fn peer(peer: &MultiNetworkPolicyPeer, at: &str) -> Result<MnpPeer, FieldError> {
    match (&peer.ip_block, &peer.pod_selector, &peer.namespace_selector) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(FieldError::new(
            at,
            "ipBlock cannot be combined with podSelector or namespaceSelector",
        )),
        (Some(block), None, None) => {
            let cidr = block_cidr(&block.cidr, &format!("{at}.ipBlock.cidr"))?;
            let mut except = Vec::new();
            for (k, e) in block.except.iter().flatten().enumerate() {
                let path = format!("{at}.ipBlock.except[{k}]");
                let hole = block_cidr(e, &path)?;
                if !cidr.contains(&hole) {
                    return Err(FieldError::new(
                        path,
                        format!("{hole} is not inside {cidr}"),
                    ));
                }
                except.push(hole);
            }
            Ok(MnpPeer::Block(Peer { cidr, except }))
        }
        (None, None, None) => Err(FieldError::new(
            at,
            "a peer needs podSelector, namespaceSelector or ipBlock",
        )),
        (None, pods, namespaces) => Ok(MnpPeer::Pods {
            pods: match pods {
                Some(s) => Selector::parse(s, &format!("{at}.podSelector"))?,
                None => Selector::default(),
            },
            namespaces: namespaces
                .as_ref()
                .map(|s| Selector::parse(s, &format!("{at}.namespaceSelector")))
                .transpose()?,
        }),
    }
}

/// A CIDR (host bits cleared, as Kubernetes reads it) or a single address.
fn block_cidr(s: &str, path: &str) -> Result<IpNet, FieldError> {
    let s = s.trim();
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| FieldError::new(path, format!("{s:?} is not a CIDR")))
}

fn port(port: &MultiNetworkPolicyPort, at: &str) -> Result<MnpPort, FieldError> {
    let protocol = match &port.protocol {
        None => Protocol::Tcp,
        Some(name) => port_protocol(name).ok_or_else(|| {
            FieldError::new(
                format!("{at}.protocol"),
                format!("unknown protocol {name:?} (expected TCP, UDP or SCTP)"),
            )
        })?,
    };
    let number = |n: i32, field: &str| {
        u16::try_from(n).ok().filter(|&p| p != 0).ok_or_else(|| {
            FieldError::new(
                format!("{at}.{field}"),
                format!("{field} {n} out of range (1-65535)"),
            )
        })
    };
    let port = match (&port.port, port.end_port) {
        (None, None) => PortSpec::All,
        (None, Some(_)) => {
            return Err(FieldError::new(
                format!("{at}.endPort"),
                "endPort needs a numeric port",
            ));
        }
        (Some(IntOrString::Int(p)), end) => {
            let start = number(*p, "port")?;
            let end = match end {
                None => start,
                Some(e) => {
                    let end = number(e, "endPort")?;
                    if end < start {
                        return Err(FieldError::new(
                            format!("{at}.endPort"),
                            format!("endPort {end} is below port {start}"),
                        ));
                    }
                    end
                }
            };
            PortSpec::Range(PortRange::new(start, end))
        }
        (Some(IntOrString::String(name)), end) => {
            if end.is_some() {
                return Err(FieldError::new(
                    format!("{at}.endPort"),
                    format!("endPort needs a numeric port, not the named port {name:?}"),
                ));
            }
            if !valid_port_name(name) {
                return Err(FieldError::new(
                    format!("{at}.port"),
                    format!(
                        "{name:?} is not a port name (1-15 lowercase letters, digits and \
                         single dashes, at least one letter; numbers go unquoted)"
                    ),
                ));
            }
            PortSpec::Named(name.clone())
        }
    };
    Ok(MnpPort { protocol, port })
}

/// Kubernetes' IANA_SVC_NAME rule for container port names.
fn valid_port_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}
