//! What the compiler reads: pods, namespaces and NADs as plain values, and the local
//! attachments it compiles for. Where they come from (watch caches, local files, tests) does not
//! matter to it.
use std::{collections::BTreeMap, fmt, net::IpAddr};

use multus_kube::{NETWORK_STATUS_ANNOTATION, NadInfo, PodInfo};
use serde::{Deserialize, Serialize};

use super::model::{MacAddr, Protocol};

/// `namespace/name` of a namespaced object; for a network, the name network-status gives it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// `namespace/name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Reads `namespace/name`; `None` for anything else (a cluster network's plain name).
    pub fn parse(s: &str) -> Option<Self> {
        let (namespace, name) = s.split_once('/')?;
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        Some(Self::new(namespace, name))
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A named container port: what a named port in a MultiNetworkPolicy resolves to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NamedPort {
    /// The port's name.
    pub name: String,
    /// TCP, UDP or SCTP.
    pub protocol: Protocol,
    /// The number.
    pub port: u16,
}

/// One secondary interface of a pod, from its network-status annotation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodNetwork {
    /// The network (`<namespace>/<nad>`).
    pub network: ObjectKey,
    /// Interface name inside the pod.
    pub interface: String,
    /// Its addresses.
    pub ips: Vec<IpAddr>,
}

/// What policy needs from a pod. The caller leaves out pods that have finished (Succeeded or
/// Failed): their addresses may already belong to someone else.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodView {
    /// Namespace and name.
    pub key: ObjectKey,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Its containers' named ports.
    pub ports: Vec<NamedPort>,
    /// Its secondary interfaces.
    pub networks: Vec<PodNetwork>,
}

impl PodView {
    /// The pod's addresses on `network`.
    pub fn ips_on<'a>(&'a self, network: &'a ObjectKey) -> impl Iterator<Item = IpAddr> + 'a {
        self.networks
            .iter()
            .filter(move |n| &n.network == network)
            .flat_map(|n| n.ips.iter().copied())
    }

    /// Labels, named ports and interfaces from a pod as the API facade reads it. A network-status
    /// annotation that does not parse gives no interfaces (logged): such a pod is nobody's peer.
    pub fn from_pod_info(pod: &PodInfo) -> Self {
        let networks = match pod.annotations.get(NETWORK_STATUS_ANNOTATION) {
            Some(status) => parse_network_status(status).unwrap_or_else(|e| {
                tracing::warn!(pod = %format_args!("{}/{}", pod.namespace, pod.name),
                    error = %e, "network-status annotation ignored");
                Vec::new()
            }),
            None => Vec::new(),
        };
        let ports = pod
            .container_ports
            .iter()
            .filter_map(|p| {
                let name = p.name.as_ref().filter(|n| !n.is_empty())?;
                Some(NamedPort {
                    name: name.clone(),
                    protocol: port_protocol(&p.protocol)?,
                    port: u16::try_from(p.port).ok().filter(|&n| n != 0)?,
                })
            })
            .collect();
        Self {
            key: ObjectKey::new(&pod.namespace, &pod.name),
            labels: pod.labels.clone(),
            ports,
            networks,
        }
    }
}

/// TCP, UDP or SCTP by its Kubernetes name (any case; empty means TCP).
pub fn port_protocol(name: &str) -> Option<Protocol> {
    match name.to_ascii_uppercase().as_str() {
        "" | "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

#[derive(Deserialize)]
struct StatusEntry {
    name: String,
    #[serde(default)]
    interface: Option<String>,
    #[serde(default)]
    ips: Vec<String>,
}

/// The secondary interfaces listed in a network-status annotation: entries named
/// `<namespace>/<nad>` (the cluster network's entry is skipped). Addresses may carry a prefix
/// length, which is dropped.
pub fn parse_network_status(json: &str) -> Result<Vec<PodNetwork>, NetworkStatusError> {
    let entries: Vec<StatusEntry> =
        serde_json::from_str(json).map_err(|e| NetworkStatusError(e.to_string()))?;
    let mut out = Vec::new();
    for entry in entries {
        let Some(network) = ObjectKey::parse(&entry.name) else {
            continue;
        };
        let ips = entry
            .ips
            .iter()
            .map(|ip| {
                let addr = ip.split_once('/').map_or(ip.as_str(), |(a, _)| a);
                addr.parse()
                    .map_err(|_| NetworkStatusError(format!("{}: bad address {ip:?}", entry.name)))
            })
            .collect::<Result<_, _>>()?;
        out.push(PodNetwork {
            network,
            interface: entry.interface.unwrap_or_default(),
            ips,
        });
    }
    Ok(out)
}

/// A network-status annotation that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network-status: {0}")]
pub struct NetworkStatusError(pub String);

/// A namespace's labels (namespace selectors match them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceView {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// The NAD annotation holding the network's policy document ([`super::annotation`] reads it).
pub const NAD_POLICY_ANNOTATION: &str = "multus-rs.io/policy";

/// A NetworkAttachmentDefinition: its policy annotation and the CNI config the `isolate`
/// shorthand reads the subnets from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NadView {
    /// Namespace and name (the network's name).
    pub key: ObjectKey,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// The CNI config (conf or conflist JSON): `spec.config`, or the file a NAD without one
    /// stands for.
    pub config: Option<String>,
}

impl From<&NadInfo> for NadView {
    fn from(nad: &NadInfo) -> Self {
        Self {
            key: ObjectKey::new(&nad.namespace, &nad.name),
            annotations: nad.annotations.clone(),
            config: nad.config.clone(),
        }
    }
}

/// Names one local attachment: a pod's interface.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttachmentKey {
    /// The pod.
    pub pod: ObjectKey,
    /// The interface inside it.
    pub interface: String,
}

impl fmt::Display for AttachmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.pod, self.interface)
    }
}

/// A secondary interface on this node that gets a policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalAttachment {
    /// The pod.
    pub pod: ObjectKey,
    /// The interface inside it.
    pub interface: String,
    /// The network it is attached to (`<namespace>/<nad>`).
    pub network: ObjectKey,
    /// Every address the interface sends from, for anti-spoofing: the network-status ones and,
    /// for IPv6, its link-local address (which network-status does not list).
    pub ips: Vec<IpAddr>,
    /// Its MAC address.
    pub mac: MacAddr,
}

impl LocalAttachment {
    /// Its key.
    pub fn key(&self) -> AttachmentKey {
        AttachmentKey {
            pod: self.pod.clone(),
            interface: self.interface.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn network_status_keeps_nad_entries_only() {
        let json = r#"[
            {"name": "kindnet", "interface": "eth0", "ips": ["10.244.1.5"], "default": true},
            {"name": "prod/blue", "interface": "net1", "ips": ["192.0.2.10", "2001:db8::a/64"],
             "mac": "02:00:00:00:00:01", "dns": {}}
        ]"#;
        let nets = parse_network_status(json).unwrap();
        assert_eq!(
            nets,
            vec![PodNetwork {
                network: ObjectKey::new("prod", "blue"),
                interface: "net1".into(),
                ips: vec![
                    "192.0.2.10".parse().unwrap(),
                    "2001:db8::a".parse().unwrap()
                ],
            }]
        );
        assert!(parse_network_status("{").is_err());
        let bad = parse_network_status(r#"[{"name":"a/b","ips":["x"]}]"#).unwrap_err();
        assert_eq!(bad.to_string(), r#"network-status: a/b: bad address "x""#);
    }

    #[test]
    fn pods_from_the_facade() {
        let pod = PodInfo {
            namespace: "prod".into(),
            name: "web".into(),
            uid: "u".into(),
            annotations: [(
                NETWORK_STATUS_ANNOTATION.to_owned(),
                r#"[{"name":"prod/blue","interface":"net1","ips":["192.0.2.10"]}]"#.to_owned(),
            )]
            .into(),
            labels: [("app".to_owned(), "web".to_owned())].into(),
            node_name: None,
            container_ports: vec![
                multus_kube::ContainerPort {
                    container: "c".into(),
                    name: Some("http".into()),
                    port: 8080,
                    protocol: "TCP".into(),
                },
                multus_kube::ContainerPort {
                    container: "c".into(),
                    name: None,
                    port: 9,
                    protocol: "UDP".into(),
                },
            ],
        };
        let view = PodView::from_pod_info(&pod);
        assert_eq!(view.key, ObjectKey::new("prod", "web"));
        assert_eq!(
            view.ports,
            vec![NamedPort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080
            }]
        );
        let blue = ObjectKey::new("prod", "blue");
        assert_eq!(
            view.ips_on(&blue).collect::<Vec<_>>(),
            vec!["192.0.2.10".parse::<IpAddr>().unwrap()]
        );
    }
}
