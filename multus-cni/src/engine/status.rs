//! The network-status list (NPWG v1.3, `k8s.v1.cni.cncf.io/network-status`).
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cni::result::{CniResult, Dns};

/// The network-status annotation key.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

/// One entry of the network-status list: the NAD client's `NetworkStatus`, whose field order
/// and key presence Multus's text has (tools parse it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// `<namespace>/<nad>`, or the configuration name of the cluster network.
    pub name: String,
    /// Interface name in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Addresses of the interface, without prefix length.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// MTU, when the plugin reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// True for exactly one entry: the cluster network's (the key is absent when false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// DNS settings from the plugin; always present, `{}` when the plugin reported none.
    #[serde(default)]
    pub dns: Dns,
    /// Device information (SR-IOV and friends).
    #[serde(
        rename = "device-info",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_info: Option<Value>,
    /// The gateways of the result's default routes (the key Multus writes; the specification
    /// calls it `default-route`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<String>,
}

/// The entries for one attachment, built as the NAD client's `CreateNetworkStatuses` does for
/// Multus: a result with exactly one interface gives one entry (with every address); otherwise
/// one entry per sandbox interface (addresses by interface index, those without an index on the
/// last entry, the default-route gateways on every entry), and none without sandbox interfaces.
pub fn entries(
    network: &str,
    cluster: bool,
    result: &CniResult,
    device_info: Option<&Value>,
) -> Vec<NetworkStatus> {
    let gateways: Vec<String> = result
        .routes
        .iter()
        .filter(|r| r.dst.addr().is_unspecified())
        // A default route without a gateway: Go would print "<nil>"; it is left out.
        .filter_map(|r| r.gw.map(|g| g.to_string()))
        .collect();
    let mut dns = result.dns.clone();
    dns.domain = dns.domain.filter(|d| !d.is_empty());
    let entry = |iface: Option<&crate::cni::result::Interface>, default: bool| NetworkStatus {
        name: network.to_owned(),
        interface: iface.map(|i| i.name.clone()),
        ips: Vec::new(),
        mac: iface.map(|i| i.mac.clone()).filter(|m| !m.is_empty()),
        mtu: iface.and_then(|i| i.mtu).filter(|m| *m != 0),
        default,
        dns: dns.clone(),
        device_info: device_info.cloned(),
        gateway: gateways.clone(),
    };
    if result.interfaces.len() == 1 {
        let sandbox = result.sandbox_interfaces().last().map(|(_, i)| i);
        let mut one = entry(sandbox, cluster);
        one.ips = result.ips.iter().map(|ip| addr(&ip.address)).collect();
        return vec![one];
    }
    // The cluster network's flag goes on the interface of the first address with a gateway,
    // else on the first sandbox interface.
    let gw_interface = cluster
        .then(|| {
            result
                .ips
                .iter()
                .find(|ip| ip.gateway.is_some() && ip.interface.is_some())
                .and_then(|ip| ip.interface)
        })
        .flatten();
    let mut out: Vec<(usize, NetworkStatus)> = Vec::new();
    for (n, (idx, iface)) in result.sandbox_interfaces().enumerate() {
        let default = cluster
            && match gw_interface {
                Some(gw) => gw == idx,
                None => n == 0,
            };
        out.push((idx, entry(Some(iface), default)));
    }
    for ip in &result.ips {
        let target = match ip.interface {
            Some(index) => out.iter_mut().find(|(idx, _)| *idx == index),
            None => out.last_mut(),
        };
        if let Some((_, status)) = target {
            status.ips.push(addr(&ip.address));
        }
    }
    out.into_iter().map(|(_, s)| s).collect()
}

/// The annotation's text exactly as Multus writes it through the NAD client: each entry
/// indented by four spaces on its own (`json.MarshalIndent(entry, "", "    ")`), joined by `,`
/// inside `[` `]`, with Go's escaping of `<`, `>`, `&`, U+2028 and U+2029.
pub fn annotation_text(status: &[NetworkStatus]) -> String {
    use serde::Serialize as _;
    let mut parts = Vec::with_capacity(status.len());
    for entry in status {
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(
            &mut out,
            serde_json::ser::PrettyFormatter::with_indent(b"    "),
        );
        // Plain data into memory: serializing cannot fail, and serde_json writes UTF-8.
        if entry.serialize(&mut ser).is_ok() {
            parts.push(String::from_utf8_lossy(&out).into_owned());
        }
    }
    let mut text = String::with_capacity(parts.iter().map(String::len).sum::<usize>() + 2);
    text.push('[');
    text.push_str(&parts.join(","));
    text.push(']');
    go_escape(&text)
}

/// Go's encoding/json escapes these even inside strings; outside strings JSON has none of them.
fn go_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

fn addr(net: &IpNet) -> String {
    net.addr().to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn result(v: Value) -> CniResult {
        CniResult::from_value(v).unwrap()
    }

    #[test]
    fn bridge_result_to_status() {
        let r = result(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0", "mac": "aa:00:00:00:00:01"},
                           {"name": "veth1", "mac": "aa:00:00:00:00:02"},
                           {"name": "eth0", "mac": "aa:00:00:00:00:03", "sandbox": "/run/netns/p"}],
            "ips": [{"address": "198.51.100.5/24", "gateway": "198.51.100.1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "198.51.100.1"}],
            "dns": {"nameservers": ["198.51.100.53"]}
        }));
        let s = entries("cbr0", true, &r, None);
        assert_eq!(s.len(), 1);
        let v = serde_json::to_value(&s[0]).unwrap();
        assert_eq!(
            v,
            json!({"name": "cbr0", "interface": "eth0", "ips": ["198.51.100.5"],
                   "mac": "aa:00:00:00:00:03", "default": true,
                   "dns": {"nameservers": ["198.51.100.53"]},
                   "gateway": ["198.51.100.1"]})
        );
        let secondary = entries("ns/mv", false, &r, Some(&json!({"type": "pci"})));
        let v = serde_json::to_value(&secondary[0]).unwrap();
        assert!(v.get("default").is_none(), "{v}");
        assert_eq!(secondary[0].device_info, Some(json!({"type": "pci"})));
    }

    #[test]
    fn no_sandbox_interface_no_entry_and_unindexed_ips_on_the_last() {
        // An IPAM-style result without interfaces: the NAD client makes no entry.
        let r = result(json!({
            "cniVersion": "0.3.1",
            "ips": [{"version": "4", "address": "192.0.2.9/24"}]
        }));
        assert!(entries("ns/x", false, &r, None).is_empty());
        // Host interfaces only: none either.
        let host = result(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "h1"}, {"name": "h2"}],
            "ips": [{"address": "192.0.2.9/24"}]
        }));
        assert!(entries("ns/x", false, &host, None).is_empty());
        // Exactly one interface, even a host one: one entry with every address.
        let single = result(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "h1", "mac": "02:00:00:00:00:01"}],
            "ips": [{"address": "192.0.2.9/24", "interface": 0}]
        }));
        let s = entries("ns/x", false, &single, None);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].interface, None);
        assert_eq!(s[0].mac, None);
        assert_eq!(s[0].ips, vec!["192.0.2.9"]);
        let r2 = result(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "a", "sandbox": "/x"}, {"name": "b", "sandbox": "/x"}],
            "ips": [{"address": "192.0.2.1/24", "interface": 0}, {"address": "192.0.2.2/24"}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "192.0.2.254"}]
        }));
        let s2 = entries("n", true, &r2, None);
        assert_eq!(s2.len(), 2);
        assert_eq!(s2[1].ips, vec!["192.0.2.2"]);
        // No address has a gateway: the first sandbox interface is the default.
        assert!(s2[0].default && !s2[1].default);
        // The gateway goes on every sandbox entry.
        assert_eq!(s2[0].gateway, vec!["192.0.2.254"]);
        assert_eq!(s2[1].gateway, vec!["192.0.2.254"]);
    }

    #[test]
    fn default_goes_to_the_interface_with_a_gateway() {
        let r = result(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "a", "sandbox": "/x"}, {"name": "b", "sandbox": "/x"}],
            "ips": [{"address": "192.0.2.1/24", "interface": 0},
                    {"address": "198.51.100.1/24", "gateway": "198.51.100.254", "interface": 1}]
        }));
        let s = entries("c", true, &r, None);
        assert!(!s[0].default && s[1].default);
        let v = serde_json::to_value(&s[0]).unwrap();
        assert_eq!(v["dns"], json!({}));
        assert!(v.get("gateway").is_none() && v.get("default-route").is_none());
    }

    #[test]
    fn text_is_the_nad_clients() {
        let cluster = result(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0", "mac": "aa:00:00:00:00:01"},
                           {"name": "eth0", "mac": "aa:00:00:00:00:03", "sandbox": "/run/netns/p"}],
            "ips": [{"address": "203.0.113.5/24", "gateway": "203.0.113.1", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "203.0.113.1"}]
        }));
        let macvlan = result(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "net1", "mac": "02:00:00:aa:bb:cc", "sandbox": "/run/netns/p"}],
            "ips": [{"address": "192.0.2.10/24", "interface": 0}],
            "dns": {"domain": "a<b>&c"}
        }));
        let mut all = entries("cbr0", true, &cluster, None);
        all.extend(entries("pods/macvlan-conf", false, &macvlan, None));
        // What json.MarshalIndent(entry, "", "    ") joined by "," in "[...]" gives.
        let want = r#"[{
    "name": "cbr0",
    "interface": "eth0",
    "ips": [
        "203.0.113.5"
    ],
    "mac": "aa:00:00:00:00:03",
    "default": true,
    "dns": {},
    "gateway": [
        "203.0.113.1"
    ]
},{
    "name": "pods/macvlan-conf",
    "interface": "net1",
    "ips": [
        "192.0.2.10"
    ],
    "mac": "02:00:00:aa:bb:cc",
    "dns": {
        "domain": "a\u003cb\u003e\u0026c"
    }
}]"#;
        assert_eq!(annotation_text(&all), want);
        assert_eq!(annotation_text(&[]), "[]");
    }
}
