//! The pod annotations that select networks: `k8s.v1.cni.cncf.io/networks` (short or JSON form)
//! and `v1.multus-cni.io/default-network`.
use std::{collections::BTreeSet, net::IpAddr};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::is_dns1123_label;
use crate::{
    cni::request::validate_ifname,
    config::{valid_hw_addr, valid_ip_or_cidr},
    error::{Error, Result},
};

/// The networks a pod asks for.
pub const NETWORKS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/networks";
/// The per-pod replacement of the cluster network.
pub const DEFAULT_NETWORK_ANNOTATION: &str = "v1.multus-cni.io/default-network";

/// A port mapping request (`portMappings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Port on the host.
    #[serde(rename = "hostPort")]
    pub host_port: i64,
    /// Port in the container.
    #[serde(rename = "containerPort")]
    pub container_port: i64,
    /// tcp, udp or sctp (default tcp).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Host address to bind.
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// A bandwidth request in bits per second and bits (`bandwidth`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Ingress rate.
    #[serde(
        rename = "ingressRate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ingress_rate: Option<u64>,
    /// Ingress burst.
    #[serde(
        rename = "ingressBurst",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ingress_burst: Option<u64>,
    /// Egress rate.
    #[serde(
        rename = "egressRate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_rate: Option<u64>,
    /// Egress burst.
    #[serde(
        rename = "egressBurst",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_burst: Option<u64>,
}

/// One entry of the networks annotation (NPWG NetworkSelectionElement plus Multus's fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSelectionElement {
    /// NAD name.
    pub name: String,
    /// NAD namespace (defaults to the pod's; the default-network annotation's to multusNamespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Requested addresses (IP or CIDR).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Requested MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Requested InfiniBand GUID.
    #[serde(
        rename = "infiniband-guid",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub infiniband_guid: Option<String>,
    /// Requested interface name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Pre-3.2 alias of `interface`.
    #[serde(
        rename = "interfaceRequest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub interface_request: Option<String>,
    /// Port mappings.
    #[serde(
        rename = "portMappings",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub port_mappings: Vec<PortMapping>,
    /// Bandwidth limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// Extra plugin arguments, merged into `args.cni`.
    #[serde(rename = "cni-args", default, skip_serializing_if = "Option::is_none")]
    pub cni_args: Option<Map<String, Value>>,
    /// Gateways for the pod's default route through this network.
    #[serde(
        rename = "default-route",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub default_route: Option<Vec<IpAddr>>,
    /// A device id chosen by the user (Multus extension).
    #[serde(rename = "deviceID", default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// IPAMClaim reference (NPWG 1.3); passed on, never combined with `ips`.
    #[serde(
        rename = "ipam-claim-reference",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ipam_claim_reference: Option<String>,
}

impl NetworkSelectionElement {
    /// The requested interface name (`interface`, else the legacy `interfaceRequest`).
    pub fn ifname(&self) -> Option<&str> {
        self.interface
            .as_deref()
            .or(self.interface_request.as_deref())
            .filter(|s| !s.is_empty())
    }

    /// The namespace, which [`parse_networks`] always fills in.
    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace(), self.name)
    }
}

fn bad(annotation: &'static str, reason: impl Into<String>) -> Error {
    Error::Annotation {
        annotation,
        reason: reason.into(),
    }
}

/// Parses `k8s.v1.cni.cncf.io/networks`; names without a namespace get `pod_namespace`.
pub fn parse_networks(value: &str, pod_namespace: &str) -> Result<Vec<NetworkSelectionElement>> {
    let elements = parse_list(NETWORKS_ANNOTATION, value, pod_namespace)?;
    let mut ifnames = BTreeSet::new();
    for e in &elements {
        if let Some(ifname) = e.ifname()
            && !ifnames.insert(ifname.to_owned())
        {
            return Err(bad(
                NETWORKS_ANNOTATION,
                format!("interface name {ifname:?} is requested more than once"),
            ));
        }
    }
    // One gateway per address family across the elements (Multus: no ECMP); an IPv4 gateway on
    // one network and an IPv6 one on another are fine.
    for (family, v4) in [("IPv4", true), ("IPv6", false)] {
        let with_route = elements
            .iter()
            .filter(|e| {
                e.default_route
                    .as_ref()
                    .is_some_and(|g| g.iter().any(|gw| gw.is_ipv4() == v4))
            })
            .count();
        if with_route > 1 {
            return Err(bad(
                NETWORKS_ANNOTATION,
                format!(
                    "default-route is set on more than one network for {family} (one default \
                     route per address family)"
                ),
            ));
        }
    }
    Ok(elements)
}

/// Parses `v1.multus-cni.io/default-network`: exactly one element, its namespace defaulting to
/// `multus_namespace`.
pub fn parse_default_network(
    value: &str,
    multus_namespace: &str,
) -> Result<NetworkSelectionElement> {
    let mut elements = parse_list(DEFAULT_NETWORK_ANNOTATION, value, multus_namespace)?;
    match elements.len() {
        1 => Ok(elements.remove(0)),
        n => Err(bad(
            DEFAULT_NETWORK_ANNOTATION,
            format!("must name exactly one network, names {n}"),
        )),
    }
}

fn parse_list(
    annotation: &'static str,
    value: &str,
    default_namespace: &str,
) -> Result<Vec<NetworkSelectionElement>> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let mut elements = if value.contains(['[', '{', '"']) {
        serde_json::from_str::<Vec<NetworkSelectionElement>>(value).map_err(|e| {
            bad(
                annotation,
                format!("not a JSON list of network selections: {e}"),
            )
        })?
    } else {
        value
            .split(',')
            .map(|item| parse_short(annotation, item.trim()))
            .collect::<Result<Vec<_>>>()?
    };
    for e in &mut elements {
        if e.namespace.as_deref().is_none_or(str::is_empty) {
            e.namespace = Some(default_namespace.to_owned());
        }
        // An empty optional field is unset, as in Multus (Go's zero value): templated
        // annotations write `"mac": ""` and the like.
        for field in [
            &mut e.interface,
            &mut e.interface_request,
            &mut e.mac,
            &mut e.infiniband_guid,
            &mut e.device_id,
        ] {
            if field.as_deref() == Some("") {
                *field = None;
            }
        }
        validate(annotation, e)?;
    }
    Ok(elements)
}

/// `[namespace/]name[@ifname]`.
fn parse_short(annotation: &'static str, item: &str) -> Result<NetworkSelectionElement> {
    if item.is_empty() {
        return Err(bad(annotation, "empty network name in the list"));
    }
    let (rest, ifname) = match item.split_once('@') {
        Some((rest, ifname)) => (rest, Some(ifname.to_owned())),
        None => (item, None),
    };
    let (namespace, name) = match rest.split_once('/') {
        Some((ns, name)) => (Some(ns.to_owned()), name.to_owned()),
        None => (None, rest.to_owned()),
    };
    if namespace.as_deref() == Some("") {
        return Err(bad(annotation, format!("{item:?}: empty namespace")));
    }
    Ok(NetworkSelectionElement {
        name,
        namespace,
        interface: ifname,
        ..Default::default()
    })
}

fn validate(annotation: &'static str, e: &NetworkSelectionElement) -> Result<()> {
    let key = e.key();
    if !is_dns1123_label(&e.name) {
        return Err(bad(
            annotation,
            format!("{key:?}: network name {:?} is not a DNS-1123 label", e.name),
        ));
    }
    if !is_dns1123_label(e.namespace()) {
        return Err(bad(
            annotation,
            format!(
                "{key:?}: namespace {:?} is not a DNS-1123 label",
                e.namespace()
            ),
        ));
    }
    if let Some(ifname) = e.interface.as_deref().or(e.interface_request.as_deref())
        && let Err(reason) = validate_ifname(ifname)
    {
        return Err(bad(
            annotation,
            format!("{key}: interface {ifname:?}: {reason}"),
        ));
    }
    if let Some(ip) = e.ips.iter().find(|ip| !valid_ip_or_cidr(ip)) {
        return Err(bad(
            annotation,
            format!("{key}: ips: {ip:?} is not an IP address or CIDR"),
        ));
    }
    if let Some(mac) = e.mac.as_deref().filter(|m| !valid_hw_addr(m)) {
        return Err(bad(
            annotation,
            format!("{key}: mac {mac:?} is not a MAC address"),
        ));
    }
    if let Some(guid) = e.infiniband_guid.as_deref().filter(|g| !valid_hw_addr(g)) {
        return Err(bad(
            annotation,
            format!("{key}: infiniband-guid {guid:?} is not a hardware address"),
        ));
    }
    for pm in &e.port_mappings {
        for (what, port) in [
            ("hostPort", pm.host_port),
            ("containerPort", pm.container_port),
        ] {
            if !(1..=65535).contains(&port) {
                return Err(bad(
                    annotation,
                    format!("{key}: portMappings: {what} {port} is not in 1-65535"),
                ));
            }
        }
        if !pm.protocol.is_empty()
            && !matches!(
                pm.protocol.to_ascii_lowercase().as_str(),
                "tcp" | "udp" | "sctp"
            )
        {
            return Err(bad(
                annotation,
                format!(
                    "{key}: portMappings: protocol {:?} is not tcp, udp or sctp",
                    pm.protocol
                ),
            ));
        }
        if !pm.host_ip.is_empty() && pm.host_ip.parse::<IpAddr>().is_err() {
            return Err(bad(
                annotation,
                format!(
                    "{key}: portMappings: hostIP {:?} is not an IP address",
                    pm.host_ip
                ),
            ));
        }
    }
    if let Some(bw) = &e.bandwidth {
        for (burst, rate, name) in [
            (bw.ingress_burst, bw.ingress_rate, "ingressBurst"),
            (bw.egress_burst, bw.egress_rate, "egressBurst"),
        ] {
            if burst.is_some() && rate.is_none() {
                return Err(bad(
                    annotation,
                    format!("{key}: bandwidth: {name} needs the matching rate"),
                ));
            }
        }
    }
    if let Some(routes) = &e.default_route {
        let v4 = routes.iter().filter(|r| r.is_ipv4()).count();
        if v4 > 1 || routes.len() - v4 > 1 {
            return Err(bad(
                annotation,
                format!("{key}: default-route: at most one IPv4 and one IPv6 gateway"),
            ));
        }
    }
    if e.ipam_claim_reference.is_some() && !e.ips.is_empty() {
        return Err(bad(
            annotation,
            format!("{key}: ipam-claim-reference and ips cannot be combined"),
        ));
    }
    if e.device_id.as_deref() == Some("") {
        return Err(bad(annotation, format!("{key}: deviceID is empty")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn short_form() {
        let e = parse_networks(" a, other/b@data0 ,c@net5", "pods").unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].key(), "pods/a");
        assert_eq!(e[1].key(), "other/b");
        assert_eq!(e[1].ifname(), Some("data0"));
        assert_eq!(e[2].ifname(), Some("net5"));
        assert!(parse_networks("", "pods").unwrap().is_empty());
        assert!(parse_networks("   ", "pods").unwrap().is_empty());
    }

    #[test]
    fn json_form_every_field() {
        let v = json!([{
            "name": "mv", "namespace": "n2", "ips": ["192.0.2.7/24", "2001:db8::7"],
            "mac": "02:00:00:00:00:07", "infiniband-guid": "00:11:22:33:44:55:66:77",
            "interface": "data1",
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
            "bandwidth": {"ingressRate": 1000, "ingressBurst": 10},
            "cni-args": {"k": "v"}, "default-route": ["192.0.2.1"],
            "deviceID": "0000:00:01.0", "unknownKey": 1
        }, {"name": "b", "interfaceRequest": "old1"}]);
        let e = parse_networks(&v.to_string(), "pods").unwrap();
        assert_eq!(e[0].key(), "n2/mv");
        assert_eq!(e[0].ifname(), Some("data1"));
        assert_eq!(e[0].default_route, Some(vec!["192.0.2.1".parse().unwrap()]));
        assert_eq!(e[0].port_mappings[0].container_port, 80);
        assert_eq!(e[1].key(), "pods/b");
        assert_eq!(e[1].ifname(), Some("old1"));
        // Round trip keeps the wire names.
        let back = serde_json::to_value(&e[0]).unwrap();
        assert_eq!(back["infiniband-guid"], "00:11:22:33:44:55:66:77");
        assert_eq!(back["default-route"], json!(["192.0.2.1"]));
    }

    #[test]
    fn rejects_bad_annotations() {
        let bad = [
            "Bad_Name",
            "a,,b",
            "a,",
            "/a",
            "ns/a/b",
            "a@waytoolonginterfacename",
            "a@x/y",
            "a@x,b@x",
            r#"{"name": "a"}"#,
            r#"[{"name": "a", "ips": ["192.0.2.300"]}]"#,
            r#"[{"name": "a", "mac": "02:00"}]"#,
            r#"[{"name": "a", "infiniband-guid": "02:00:00:00:00"}]"#,
            r#"[{"name": "a", "portMappings": [{"hostPort": 0, "containerPort": 80}]}]"#,
            r#"[{"name": "a", "portMappings": [{"hostPort": 1, "containerPort": 80, "protocol": "icmp"}]}]"#,
            r#"[{"name": "a", "bandwidth": {"egressBurst": 5}}]"#,
            r#"[{"name": "a", "default-route": ["192.0.2.1"]}, {"name": "b", "default-route": ["192.0.2.2"]}]"#,
            r#"[{"name": "a", "default-route": ["192.0.2.1", "192.0.2.2"]}]"#,
            r#"[{"name": "a", "ips": ["192.0.2.1"], "ipam-claim-reference": "c"}]"#,
            r#"[{"name": "a", "ips": "192.0.2.1"}]"#,
            r#"[{"namespace": "x"}]"#,
            r#"[{"name": "a""#,
        ];
        for b in bad {
            let err = parse_networks(b, "pods").unwrap_err();
            assert_eq!(err.code(), 7, "{b}: {err}");
            assert!(err.to_string().contains(NETWORKS_ANNOTATION), "{b}: {err}");
        }
        // What Multus accepts: an empty interface after `@`, a 6-byte GUID (Go's ParseMAC),
        // an IPv4 and an IPv6 default route on two networks, an empty default-route beside one.
        for good in [
            "a@",
            r#"[{"name": "a", "infiniband-guid": "02:00:00:00:00:00"}]"#,
            r#"[{"name": "a", "default-route": ["192.0.2.1"]}, {"name": "b", "default-route": ["2001:db8::1"]}]"#,
            r#"[{"name": "a", "default-route": ["192.0.2.1"]}, {"name": "b", "default-route": []}]"#,
        ] {
            assert!(parse_networks(good, "pods").is_ok(), "{good}");
        }
    }

    #[test]
    fn default_network() {
        let e = parse_default_network("calico", "kube-system").unwrap();
        assert_eq!(e.key(), "kube-system/calico");
        assert!(parse_default_network("a,b", "kube-system").is_err());
        assert!(parse_default_network("", "kube-system").is_err());
    }

    #[test]
    fn empty_optional_fields_are_unset_as_in_multus() {
        let value = json!([
            {"name": "a", "interface": "", "mac": "", "deviceID": "", "infiniband-guid": ""},
            {"name": "b", "interface": "", "interfaceRequest": "net5"},
        ])
        .to_string();
        let got = parse_networks(&value, "pods").unwrap();
        assert_eq!(got[0].ifname(), None);
        assert_eq!(got[0].mac, None);
        assert_eq!(got[0].device_id, None);
        assert_eq!(got[0].infiniband_guid, None);
        assert_eq!(got[1].ifname(), Some("net5"));
        // The short form's empty interface too.
        let short = parse_networks("a@, b", "pods").unwrap();
        assert_eq!(short[0].ifname(), None);
        // Go's ParseMAC forms.
        let dotted = json!([{"name": "a", "mac": "0200.5e10.0001"}]).to_string();
        assert_eq!(
            parse_networks(&dotted, "pods").unwrap()[0].mac.as_deref(),
            Some("0200.5e10.0001")
        );
    }
}
