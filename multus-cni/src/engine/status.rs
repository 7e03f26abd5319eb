//! The network-status list (NPWG v1.3, `k8s.v1.cni.cncf.io/network-status`).
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cni::result::{CniResult, Dns};

/// The network-status annotation key.
pub const NETWORK_STATUS_ANNOTATION: &str = "k8s.v1.cni.cncf.io/network-status";

/// One entry of the network-status list.
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
    /// True for exactly one entry: the cluster network's.
    pub default: bool,
    /// DNS settings from the plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// Default-route gateways (NPWG v1.3 key).
    #[serde(
        rename = "default-route",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub default_route: Vec<String>,
    /// The same gateways under the key Multus writes, for its consumers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateway: Vec<String>,
    /// Device information (SR-IOV and friends).
    #[serde(
        rename = "device-info",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub device_info: Option<Value>,
}

/// The entries for one attachment: one per sandbox interface of the result (IPs without an
/// interface index go to the last), or one for `ifname` when the plugin reported none.
pub fn entries(
    network: &str,
    ifname: &str,
    cluster: bool,
    result: &CniResult,
    device_info: Option<&Value>,
) -> Vec<NetworkStatus> {
    let gateways: Vec<String> = result
        .routes
        .iter()
        .filter(|r| r.is_default())
        .filter_map(|r| r.gw.map(|g| g.to_string()))
        .collect();
    let dns = (!result.dns.is_empty()).then(|| result.dns.clone());
    let ips_of = |index: Option<usize>| -> Vec<String> {
        result
            .ips
            .iter()
            .filter(|ip| ip.interface == index)
            .map(|ip| addr(&ip.address))
            .collect()
    };
    let entry = |interface: &str, ips: Vec<String>, mac: Option<String>, mtu| NetworkStatus {
        name: network.to_owned(),
        interface: Some(interface.to_owned()),
        ips,
        mac,
        mtu,
        default: false,
        dns: dns.clone(),
        default_route: Vec::new(),
        gateway: Vec::new(),
        device_info: device_info.cloned(),
    };
    let sandbox: Vec<_> = result.sandbox_interfaces().collect();
    let mut out: Vec<NetworkStatus> = sandbox
        .iter()
        .map(|(idx, iface)| {
            let mac = Some(iface.mac.clone()).filter(|m| !m.is_empty());
            entry(&iface.name, ips_of(Some(*idx)), mac, iface.mtu)
        })
        .collect();
    if out.is_empty() {
        let all = result.ips.iter().map(|ip| addr(&ip.address)).collect();
        out.push(entry(ifname, all, None, None));
    } else if let Some(last) = out.last_mut() {
        last.ips.extend(ips_of(None));
    }
    // Gateways and the default flag go on the interface that has a gateway, else the first.
    let with_gw = sandbox
        .iter()
        .position(|(idx, _)| {
            result
                .ips
                .iter()
                .any(|ip| ip.interface == Some(*idx) && ip.gateway.is_some())
        })
        .unwrap_or(0);
    if let Some(entry) = out.get_mut(with_gw) {
        entry.default = cluster;
        entry.default_route.clone_from(&gateways);
        entry.gateway = gateways;
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

    #[test]
    fn bridge_result_to_status() {
        let r = CniResult::from_value(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0", "mac": "aa:00:00:00:00:01"},
                           {"name": "veth1", "mac": "aa:00:00:00:00:02"},
                           {"name": "eth0", "mac": "aa:00:00:00:00:03", "sandbox": "/run/netns/p"}],
            "ips": [{"address": "198.51.100.5/24", "gateway": "198.51.100.1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "198.51.100.1"}],
            "dns": {"nameservers": ["198.51.100.53"]}
        }))
        .unwrap();
        let s = entries("cbr0", "eth0", true, &r, None);
        assert_eq!(s.len(), 1);
        let v = serde_json::to_value(&s[0]).unwrap();
        assert_eq!(
            v,
            json!({"name": "cbr0", "interface": "eth0", "ips": ["198.51.100.5"],
                   "mac": "aa:00:00:00:00:03", "default": true,
                   "dns": {"nameservers": ["198.51.100.53"]},
                   "default-route": ["198.51.100.1"], "gateway": ["198.51.100.1"]})
        );
        let secondary = entries("ns/mv", "net1", false, &r, Some(&json!({"type": "pci"})));
        assert!(!secondary[0].default);
        assert_eq!(secondary[0].device_info, Some(json!({"type": "pci"})));
    }

    #[test]
    fn no_interfaces_and_unindexed_ips() {
        let r = CniResult::from_value(json!({
            "cniVersion": "0.3.1",
            "ips": [{"version": "4", "address": "192.0.2.9/24"}]
        }))
        .unwrap();
        let s = entries("ns/x", "net3", false, &r, None);
        assert_eq!(s[0].interface.as_deref(), Some("net3"));
        assert_eq!(s[0].ips, vec!["192.0.2.9"]);
        let r2 = CniResult::from_value(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "a", "sandbox": "/x"}, {"name": "b", "sandbox": "/x"}],
            "ips": [{"address": "192.0.2.1/24", "interface": 0}, {"address": "192.0.2.2/24"}]
        }))
        .unwrap();
        let s2 = entries("n", "a", false, &r2, None);
        assert_eq!(s2.len(), 2);
        assert_eq!(s2[1].ips, vec!["192.0.2.2"]);
    }
}
