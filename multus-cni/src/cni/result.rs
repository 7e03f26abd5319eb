//! CNI results (0.1.0 to 1.1.0) in one superset type, and their conversion between versions.
//!
//! Differences handled: 0.1.0 and 0.2.0 results hold `ip4`/`ip6` objects (address, gateway,
//! routes) and no interfaces, converted as libcni converts them; results before 1.0.0 carry `"version": "4"|"6"` in each IP config; 1.1.0
//! adds `mtu`, `socketPath` and `pciID` to interfaces and `mtu`, `advmss`, `priority`, `table`
//! and `scope` to routes, which older versions drop.
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use super::version::CniVersion;

/// A result that could not be read.
#[derive(Debug, Error)]
pub enum ResultError {
    /// Not JSON, or not the shape of a result.
    #[error("decoding a CNI result: {0}")]
    Decode(#[from] serde_json::Error),
    /// The result's `cniVersion` is missing or not supported.
    #[error("CNI result version {0:?} is not supported (supported: 0.1.0 to 1.1.0)")]
    Version(String),
}

/// A CNI result, the superset of every supported version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    /// The version the result was written in (rewritten by [`CniResult::to_value`]).
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    /// Interfaces created or used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes installed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS settings.
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// An interface of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// Hardware address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container; empty for host interfaces.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// vhost-user/memif socket path (1.1.0).
    #[serde(
        rename = "socketPath",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub socket_path: Option<String>,
    /// PCI id of the device (1.1.0).
    #[serde(rename = "pciID", default, skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An address of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// "4" or "6" (before 1.0.0 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address with prefix length.
    pub address: IpNet,
    /// Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route of a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Advertised MSS (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// Priority/metric (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Routing table (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Scope (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u32>,
}

impl Route {
    /// Whether the route is a default route (0.0.0.0/0 or ::/0).
    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }
}

/// DNS settings of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

impl CniResult {
    /// Parses a result in any supported version.
    pub fn parse(bytes: &[u8]) -> Result<Self, ResultError> {
        let value: Value = serde_json::from_slice(bytes)?;
        Self::from_value(value)
    }

    /// Reads a result from JSON already parsed.
    pub fn from_value(value: Value) -> Result<Self, ResultError> {
        Self::from_value_as(value, None)
    }

    /// Reads a result whose `cniVersion` may be missing: a plugin's output is then read in
    /// `default`, the version of the configuration it was given (as libcni reads it).
    pub fn from_value_as(value: Value, default: Option<CniVersion>) -> Result<Self, ResultError> {
        let written = value
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let version = match (CniVersion::parse(&written), default) {
            (Some(v), _) => v,
            (None, Some(v)) if written.is_empty() => v,
            (None, _) => return Err(ResultError::Version(written)),
        };
        let mut result: Self = if version.is_legacy() {
            legacy::read(value)?
        } else {
            serde_json::from_value(value)?
        };
        version.as_str().clone_into(&mut result.cni_version);
        for ip in &mut result.ips {
            ip.version = None;
        }
        Ok(result)
    }

    /// The result as JSON in `version`: the fields that version does not have are dropped, and
    /// IP configs get their `version` before 1.0.0.
    pub fn to_value(&self, version: CniVersion) -> Value {
        if version.is_legacy() {
            return legacy::write(self, version);
        }
        let mut out = self.clone();
        out.cni_version = version.as_str().to_owned();
        for ip in &mut out.ips {
            ip.version = version.has_ip_version_field().then(|| {
                if ip.address.addr().is_ipv4() {
                    "4"
                } else {
                    "6"
                }
                .to_owned()
            });
        }
        if version < CniVersion::V1_1_0 {
            for i in &mut out.interfaces {
                i.mtu = None;
                i.socket_path = None;
                i.pci_id = None;
            }
            for r in &mut out.routes {
                r.mtu = None;
                r.advmss = None;
                r.priority = None;
                r.table = None;
                r.scope = None;
            }
        }
        // A struct of strings, numbers and IP types always serialises.
        serde_json::to_value(&out).unwrap_or(Value::Null)
    }

    /// The interfaces inside the container (with a sandbox), with their indexes.
    pub fn sandbox_interfaces(&self) -> impl Iterator<Item = (usize, &Interface)> {
        self.interfaces
            .iter()
            .enumerate()
            .filter(|(_, i)| !i.sandbox.is_empty())
    }
}

/// The 0.1.0/0.2.0 result shape: `{"ip4": {"ip", "gateway", "routes"}, "ip6": ..., "dns"}`.
mod legacy {
    use serde::{Deserialize, Serialize};
    use serde_json::Value;

    use super::{CniResult, CniVersion, Dns, IpConfig, IpNet, ResultError, Route};

    #[derive(Serialize, Deserialize)]
    struct Family {
        ip: IpNet,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gateway: Option<std::net::IpAddr>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        routes: Vec<Route>,
    }

    #[derive(Serialize, Deserialize)]
    struct Legacy {
        #[serde(rename = "cniVersion", default)]
        cni_version: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip4: Option<Family>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ip6: Option<Family>,
        #[serde(default, skip_serializing_if = "Dns::is_empty")]
        dns: Dns,
    }

    /// As libcni converts up: each family's address (no interface), its routes appended.
    pub(super) fn read(value: Value) -> Result<CniResult, ResultError> {
        let old: Legacy = serde_json::from_value(value)?;
        let mut out = CniResult {
            dns: old.dns,
            ..CniResult::default()
        };
        for family in [old.ip4, old.ip6].into_iter().flatten() {
            out.ips.push(IpConfig {
                version: None,
                address: family.ip,
                gateway: family.gateway,
                interface: None,
            });
            out.routes.extend(family.routes);
        }
        Ok(out)
    }

    /// As libcni converts down: the first address of each family, with that family's routes.
    pub(super) fn write(result: &CniResult, version: CniVersion) -> Value {
        let family = |v4: bool| {
            result
                .ips
                .iter()
                .find(|ip| ip.address.addr().is_ipv4() == v4)
                .map(|ip| Family {
                    ip: ip.address,
                    gateway: ip.gateway,
                    routes: result
                        .routes
                        .iter()
                        .filter(|r| r.dst.addr().is_ipv4() == v4)
                        .map(|r| Route {
                            mtu: None,
                            advmss: None,
                            priority: None,
                            table: None,
                            scope: None,
                            ..r.clone()
                        })
                        .collect(),
                })
        };
        let old = Legacy {
            cni_version: version.as_str().to_owned(),
            ip4: family(true),
            ip6: family(false),
            dns: result.dns.clone(),
        };
        // Strings, numbers and IP types always serialise.
        serde_json::to_value(&old).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn v04() -> Value {
        json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "br0", "mac": "aa:bb:cc:dd:ee:01"},
                           {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": "/var/run/netns/p"}],
            "ips": [{"version": "4", "address": "192.0.2.5/24", "gateway": "192.0.2.1", "interface": 1},
                    {"version": "6", "address": "2001:db8::5/64", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}],
            "dns": {"nameservers": ["192.0.2.53"]}
        })
    }

    #[test]
    fn converts_up_and_down() {
        let r = CniResult::from_value(v04()).unwrap();
        let v1 = r.to_value(CniVersion::V1_0_0);
        assert_eq!(v1["cniVersion"], "1.0.0");
        assert!(v1["ips"][0].get("version").is_none());
        assert_eq!(v1["ips"][0]["address"], "192.0.2.5/24");
        assert_eq!(v1["ips"][1]["interface"], 1);
        let back = CniResult::from_value(v1)
            .unwrap()
            .to_value(CniVersion::V0_4_0);
        assert_eq!(back, v04());
        let v030 = r.to_value(CniVersion::V0_3_0);
        assert_eq!(v030["ips"][1]["version"], "6");
    }

    #[test]
    fn drops_newer_fields() {
        let r = CniResult::from_value(json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "net1", "mtu": 1400, "sandbox": "/x", "pciID": "0000:01:00.0"}],
            "routes": [{"dst": "198.51.100.0/24", "priority": 5, "table": 100}]
        }))
        .unwrap();
        let v1 = r.to_value(CniVersion::V1_0_0);
        assert_eq!(
            v1["interfaces"][0],
            json!({"name": "net1", "sandbox": "/x"})
        );
        assert_eq!(v1["routes"][0], json!({"dst": "198.51.100.0/24"}));
        let v11 = r.to_value(CniVersion::V1_1_0);
        assert_eq!(v11["routes"][0]["table"], 100);
        assert!(r.routes.iter().all(|r| !r.is_default()));
    }

    #[test]
    fn legacy_results_and_results_without_a_version() {
        let old = json!({"cniVersion": "0.2.0",
            "ip4": {"ip": "192.0.2.5/24", "gateway": "192.0.2.1",
                    "routes": [{"dst": "0.0.0.0/0", "gw": "192.0.2.1"}]},
            "ip6": {"ip": "2001:db8::5/64"},
            "dns": {"nameservers": ["192.0.2.53"]}});
        let r = CniResult::from_value(old.clone()).unwrap();
        assert_eq!(r.ips.len(), 2);
        assert_eq!(r.ips[0].gateway, Some("192.0.2.1".parse().unwrap()));
        assert!(r.routes[0].is_default());
        let v1 = r.to_value(CniVersion::V1_0_0);
        assert_eq!(v1["ips"][1]["address"], "2001:db8::5/64");
        assert_eq!(r.to_value(CniVersion::V0_2_0), old);
        // No cniVersion: read in the configuration's version, refused without one.
        let bare = json!({"ips": [{"address": "192.0.2.9/24"}]});
        assert!(CniResult::from_value(bare.clone()).is_err());
        let read = CniResult::from_value_as(bare, Some(CniVersion::V1_0_0)).unwrap();
        assert_eq!(read.cni_version, "1.0.0");
        let bare_old = json!({"ip4": {"ip": "192.0.2.9/24"}});
        let read = CniResult::from_value_as(bare_old, Some(CniVersion::V0_1_0)).unwrap();
        assert_eq!(read.ips[0].address.to_string(), "192.0.2.9/24");
    }

    #[test]
    fn rejects_bad_results() {
        assert!(matches!(
            CniResult::parse(br#"{"cniVersion":"0.5.0","ips":[]}"#),
            Err(ResultError::Version(_))
        ));
        assert!(matches!(
            CniResult::parse(br#"{"ips":[]}"#),
            Err(ResultError::Version(_))
        ));
        assert!(CniResult::parse(b"not json").is_err());
        assert!(
            CniResult::parse(br#"{"cniVersion":"1.0.0","ips":[{"address":"300.1.1.1/24"}]}"#)
                .is_err()
        );
    }
}
