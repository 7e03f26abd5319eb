//! Multus's scratch cache, `<cniDir>/<containerID>`: the JSON array of Multus's delegate records
//! (`DelegateNetConf`) that Multus writes before its first delegate runs, cluster network first.
//!
//! What a record holds (Go's `encoding/json` of the struct; keys match case-insensitively, as Go
//! reads them): `Bytes` (the exact configuration given to the delegate, base64 as Go encodes a
//! byte slice), `Name` (`<namespace>/<nad>`, or the configuration's name), `ifnameRequest`,
//! `macRequest`, `infinibandGUIDRequest`, `ipRequest`, `deviceID`, `resourceName`, and the parsed
//! `Conf`/`ConfList`. Not serialised: which record is the cluster network (always the first) and
//! the port mapping and bandwidth requests. Caches of Multus 4.1 and 4.2 also carry
//! `CNINetworkConfigList` (libcni's parsed conflist with each plugin's raw bytes) while their
//! `Bytes` of such a conflist were re-encoded from the parsed form and lost every plugin key
//! libcni does not know; Multus since PR #1521 rebuilds the conflist from the raw plugin bytes,
//! and so does [`parse`].
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::delegate::conf::merge_into_args_cni;

/// One delegate record of Multus's scratch cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScratchDelegate {
    /// `Name`: `<namespace>/<nad>` for NAD networks, else the configuration's name; may be empty.
    pub name: String,
    /// `ifnameRequest`: the interface name the pod asked for.
    pub ifname_request: Option<String>,
    /// `macRequest`.
    pub mac_request: Option<String>,
    /// `infinibandGUIDRequest`.
    pub infiniband_guid_request: Option<String>,
    /// `ipRequest`.
    pub ip_request: Vec<String>,
    /// `deviceID`: the device-plugin device given to the network.
    pub device_id: Option<String>,
    /// `resourceName`.
    pub resource_name: Option<String>,
    /// The configuration bytes the delegate got (a conf or a conflist).
    pub config: Vec<u8>,
}

/// The key of the first record under which this engine keeps its own entry when it writes its
/// cache in Multus's format (Go's decoder ignores keys that match no field).
pub const OWN_ENTRY_KEY: &str = "multusRsEntry";

/// Multus's records for `entry`'s delegates, cluster network first: what Multus's DEL needs to
/// tear them down (`Bytes`, `Name`, `ifnameRequest` and the requests that become runtimeConfig),
/// with `Conf`/`ConfList` trimmed to the fields Go's structs hold, as Multus writes them.
pub fn records(entry: &crate::engine::cache::CacheEntry) -> Vec<Value> {
    entry
        .delegates
        .iter()
        .map(|d| {
            let config: Value = serde_json::from_str(&d.config).unwrap_or(Value::Null);
            let is_list = config.get("plugins").is_some_and(Value::is_array)
                && !config
                    .get("type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| !t.is_empty());
            let mut r = Map::new();
            let empty = || serde_json::json!({"ipam": {}, "dns": {}});
            if is_list {
                let plugins: Vec<Value> = config["plugins"]
                    .as_array()
                    .map(|p| p.iter().map(trimmed).collect())
                    .unwrap_or_default();
                let mut list = Map::new();
                for key in ["cniVersion", "name"] {
                    if let Some(v) = config.get(key).filter(|v| v.is_string()) {
                        list.insert(key.to_owned(), v.clone());
                    }
                }
                list.insert("plugins".into(), Value::Array(plugins));
                r.insert("Conf".into(), empty());
                r.insert("ConfList".into(), Value::Object(list));
            } else {
                r.insert("Conf".into(), trimmed(&config));
                r.insert("ConfList".into(), serde_json::json!({}));
            }
            r.insert("Name".into(), Value::String(d.network.clone()));
            if !d.cluster {
                r.insert("ifnameRequest".into(), Value::String(d.ifname.clone()));
            }
            let rc = |key: &str| d.runtime_config.get(key).filter(|v| v.is_string()).cloned();
            if let Some(mac) = rc("mac") {
                r.insert("macRequest".into(), mac);
            }
            if let Some(guid) = rc("infinibandGUID") {
                r.insert("infinibandGUIDRequest".into(), guid);
            }
            if let Some(id) = rc("deviceID") {
                r.insert("deviceID".into(), id);
            }
            if let Some(Value::Array(ips)) = d.runtime_config.get("ips")
                && ips.iter().all(Value::is_string)
            {
                r.insert("ipRequest".into(), Value::Array(ips.clone()));
            }
            r.insert("IsFilterV4Gateway".into(), Value::Bool(false));
            r.insert("IsFilterV6Gateway".into(), Value::Bool(false));
            r.insert(
                "Bytes".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(&d.config)),
            );
            Value::Object(r)
        })
        .collect()
}

/// A plugin configuration as Go's `types.NetConf` keeps it: only fields of the right type, so
/// Multus's decoder cannot fail on a plugin's own keys.
fn trimmed(conf: &Value) -> Value {
    let mut out = Map::new();
    for key in ["cniVersion", "name", "type"] {
        if let Some(v) = conf.get(key).filter(|v| v.is_string()) {
            out.insert(key.to_owned(), v.clone());
        }
    }
    if let Some(Value::Object(caps)) = conf.get("capabilities") {
        let caps: Map<String, Value> = caps
            .iter()
            .filter(|(_, v)| v.is_boolean())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        out.insert("capabilities".into(), Value::Object(caps));
    }
    let mut ipam = Map::new();
    if let Some(t) = conf.pointer("/ipam/type").filter(|v| v.is_string()) {
        ipam.insert("type".into(), t.clone());
    }
    out.insert("ipam".into(), Value::Object(ipam));
    out.insert("dns".into(), Value::Object(Map::new()));
    Value::Object(out)
}

/// Whether `bytes` look like Multus's scratch cache: a JSON array (or `null`, Go's encoding of
/// an empty list) rather than an object.
pub fn is_scratch(value: &Value) -> bool {
    matches!(value, Value::Array(_) | Value::Null)
}

/// Reads Multus's scratch cache from its parsed JSON. The error says which record and field is
/// wrong.
pub fn parse(value: &Value) -> Result<Vec<ScratchDelegate>, String> {
    let records = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(records) => records,
        _ => return Err("not a JSON list of delegates".to_owned()),
    };
    records
        .iter()
        .enumerate()
        .map(|(i, r)| match r {
            Value::Object(r) => record(r).map_err(|e| format!("delegate {i}: {e}")),
            _ => Err(format!("delegate {i}: not a JSON object")),
        })
        .collect()
}

fn record(r: &Map<String, Value>) -> Result<ScratchDelegate, String> {
    let mut config = bytes_field(r, "Bytes")?
        .filter(|b| !b.is_empty())
        .ok_or("Bytes (the delegate's configuration) is missing")?;
    if let Some(list) = field(r, "CNINetworkConfigList").and_then(Value::as_object) {
        match lossless_conflist(list, &config) {
            Ok(Some(restored)) => config = restored,
            Ok(None) => {}
            // Multus refuses the whole cache here; the re-encoded bytes still name every
            // plugin, so they are the better fallback for a teardown.
            Err(e) => tracing::warn!("keeping the re-encoded conflist: {e}"),
        }
    }
    Ok(ScratchDelegate {
        name: string_field(r, "Name")?.unwrap_or_default(),
        ifname_request: string_field(r, "ifnameRequest")?.filter(|s| !s.is_empty()),
        mac_request: string_field(r, "macRequest")?.filter(|s| !s.is_empty()),
        infiniband_guid_request: string_field(r, "infinibandGUIDRequest")?
            .filter(|s| !s.is_empty()),
        ip_request: ip_request(r)?,
        device_id: string_field(r, "deviceID")?.filter(|s| !s.is_empty()),
        resource_name: string_field(r, "resourceName")?.filter(|s| !s.is_empty()),
        config,
    })
}

/// The value of `key`, matched like Go's decoder: exactly, else ignoring ASCII case.
fn field<'a>(r: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    r.get(key)
        .or_else(|| {
            r.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
        .filter(|v| !v.is_null())
}

fn string_field(r: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match field(r, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key} is not a string")),
    }
}

fn bytes_field(r: &Map<String, Value>, key: &str) -> Result<Option<Vec<u8>>, String> {
    match field(r, key) {
        None => Ok(None),
        Some(Value::String(s)) => base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(Some)
            .map_err(|e| format!("{key} is not base64: {e}")),
        Some(_) => Err(format!("{key} is not a base64 string")),
    }
}

/// `ipRequest`: a list since Multus 3.x; a comma-separated string before.
fn ip_request(r: &Map<String, Value>) -> Result<Vec<String>, String> {
    match field(r, "ipRequest") {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "ipRequest has a non-string entry".to_owned())
            })
            .collect(),
        Some(_) => Err("ipRequest is not a list".to_owned()),
    }
}

/// Rebuilds a conflist from `CNINetworkConfigList`: the list-level keys of its `Bytes`, the
/// plugins from each plugin's own `Bytes`, then the keys Multus injected into the re-encoded
/// `housekeeping` bytes (`deviceID`, `pciBusID`, and `args.cni`). `None` when the record carries
/// no conflist (direct plugin delegates had the field, empty).
fn lossless_conflist(
    list: &Map<String, Value>,
    housekeeping: &[u8],
) -> Result<Option<Vec<u8>>, String> {
    let list_bytes = bytes_field(list, "Bytes")?.unwrap_or_default();
    let plugins = match field(list, "Plugins") {
        None => Vec::new(),
        Some(Value::Array(p)) => p.clone(),
        Some(_) => return Err("CNINetworkConfigList.Plugins is not a list".to_owned()),
    };
    if list_bytes.is_empty() && plugins.is_empty() {
        return Ok(None);
    }
    let Value::Object(mut whole) = json_object(&list_bytes, "CNINetworkConfigList.Bytes")? else {
        return Err("CNINetworkConfigList.Bytes is not a JSON object".to_owned());
    };
    let mut raw_plugins = Vec::with_capacity(plugins.len());
    for (i, p) in plugins.iter().enumerate() {
        let what = format!("CNINetworkConfigList.Plugins[{i}].Bytes");
        let bytes = p
            .as_object()
            .map(|p| bytes_field(p, "Bytes"))
            .transpose()?
            .flatten()
            .ok_or_else(|| format!("{what} is missing"))?;
        raw_plugins.push(json_object(&bytes, &what)?);
    }
    let Value::Object(kept) = json_object(housekeeping, "Bytes")? else {
        return Err("Bytes is not a JSON object".to_owned());
    };
    let kept_plugins = kept
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or("Bytes has no plugins list")?;
    if kept_plugins.len() != raw_plugins.len() {
        return Err(format!(
            "Bytes has {} plugins, CNINetworkConfigList {}",
            kept_plugins.len(),
            raw_plugins.len()
        ));
    }
    for (raw, kept) in raw_plugins.iter_mut().zip(kept_plugins) {
        if let (Some(raw), Some(kept)) = (raw.as_object_mut(), kept.as_object()) {
            merge_injected(raw, kept);
        }
    }
    whole.insert("plugins".into(), Value::Array(raw_plugins));
    serde_json::to_vec(&Value::Object(whole))
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Copies what Multus injects into a plugin (device ids, `args.cni`) from `kept` into `raw`.
fn merge_injected(raw: &mut Map<String, Value>, kept: &Map<String, Value>) {
    for key in ["deviceID", "pciBusID"] {
        if let Some(v) = kept.get(key) {
            raw.insert(key.into(), v.clone());
        }
    }
    if let Some(kept_cni) = kept
        .get("args")
        .and_then(|a| a.get("cni"))
        .and_then(Value::as_object)
    {
        merge_into_args_cni(raw, kept_cni);
    }
}

fn json_object(bytes: &[u8], what: &str) -> Result<Value, String> {
    match serde_json::from_slice(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(format!("{what} is not a JSON object")),
        Err(e) => Err(format!("{what} is not JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::STANDARD.encode(v.to_string())
    }

    fn config(d: &ScratchDelegate) -> Value {
        serde_json::from_slice(&d.config).unwrap()
    }

    /// A cache as Multus 4.3 writes it: a cluster network conf and a NAD conflist with every
    /// request field.
    #[test]
    fn reads_a_current_cache() {
        let cluster = json!({"cniVersion": "1.0.0", "name": "cbr0", "type": "bridge",
            "bridge": "cni0", "ipam": {"type": "host-local", "subnet": "203.0.113.0/24"}});
        let nad = json!({"cniVersion": "1.0.0", "name": "macvlan-conf", "plugins": [
            {"type": "macvlan", "master": "eth1", "capabilities": {"ips": true},
             "ipam": {"type": "static"}},
            {"type": "tuning", "sysctl": {"net.core.somaxconn": "500"}}]});
        let cache = json!([
            {"Conf": {"cniVersion": "1.0.0", "name": "cbr0", "type": "bridge",
                      "ipam": {"type": "host-local"}, "dns": {}},
             "ConfList": {"cniVersion": "", "name": ""},
             "Name": "cbr0", "IsFilterV4Gateway": false, "IsFilterV6Gateway": false,
             "Bytes": b64(&cluster)},
            {"Conf": {"ipam": {}, "dns": {}},
             "ConfList": {"cniVersion": "1.0.0", "name": "macvlan-conf",
                          "plugins": [{"type": "macvlan"}, {"type": "tuning"}]},
             "Name": "pods/macvlan-conf", "ifnameRequest": "data0",
             "macRequest": "02:00:00:00:00:01", "infinibandGUIDRequest": "",
             "ipRequest": ["192.0.2.5/24"], "default-route": ["192.0.2.1"],
             "IsFilterV4Gateway": false, "IsFilterV6Gateway": true,
             "deviceID": "0000:03:00.1", "resourceName": "intel.com/sriov",
             "Bytes": b64(&nad)}
        ]);
        let got = parse(&cache).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "cbr0");
        assert_eq!(got[0].ifname_request, None);
        assert_eq!(config(&got[0]), cluster);
        assert_eq!(
            got[1],
            ScratchDelegate {
                name: "pods/macvlan-conf".into(),
                ifname_request: Some("data0".into()),
                mac_request: Some("02:00:00:00:00:01".into()),
                infiniband_guid_request: None,
                ip_request: vec!["192.0.2.5/24".into()],
                device_id: Some("0000:03:00.1".into()),
                resource_name: Some("intel.com/sriov".into()),
                config: got[1].config.clone(),
            }
        );
        assert_eq!(config(&got[1]), nad);
    }

    /// Multus 3.x: no `Name`, `ipRequest` as a string, keys in another case.
    #[test]
    fn reads_old_caches() {
        let conf = json!({"cniVersion": "0.3.1", "name": "n", "type": "macvlan"});
        let cache = json!([{"conf": {}, "IFNAMEREQUEST": "net7",
            "ipRequest": "192.0.2.1/24, 192.0.2.2/24", "bytes": b64(&conf)}]);
        let got = parse(&cache).unwrap();
        assert_eq!(got[0].name, "");
        assert_eq!(got[0].ifname_request.as_deref(), Some("net7"));
        assert_eq!(got[0].ip_request, vec!["192.0.2.1/24", "192.0.2.2/24"]);
        assert_eq!(config(&got[0]), conf);
        assert_eq!(parse(&Value::Null).unwrap(), Vec::new());
        assert_eq!(parse(&json!([])).unwrap(), Vec::new());
    }

    /// Multus 4.1/4.2 conflists: `Bytes` lost the plugins' own keys, `CNINetworkConfigList`
    /// still has them; the rebuilt conflist keeps both the raw keys and what Multus injected.
    #[test]
    fn restores_lossless_conflists() {
        let raw0 = json!({"type": "calico", "datastore_type": "kubernetes",
            "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"},
            "ipam": {"type": "calico-ipam"}});
        let raw1 = json!({"type": "portmap", "snat": true, "capabilities": {"portMappings": true}});
        let list = json!({"cniVersion": "0.3.1", "name": "k8s-pod-network",
            "plugins": [raw0, raw1]});
        // What Multus 4.2 wrote as Bytes: only the keys libcni parses, plus its injections.
        let lossy = json!({"cniVersion": "0.3.1", "name": "k8s-pod-network", "plugins": [
            {"type": "calico", "ipam": {"type": "calico-ipam"}, "dns": {},
             "deviceID": "0000:01:00.2", "pciBusID": "0000:01:00.2",
             "args": {"cni": {"foo": "bar"}}},
            {"type": "portmap", "capabilities": {"portMappings": true}, "ipam": {}, "dns": {}}]});
        let cache = json!([{
            "Name": "k8s-pod-network",
            "CNINetworkConfigList": {"Name": "k8s-pod-network", "CNIVersion": "0.3.1",
                "DisableCheck": false,
                "Plugins": [{"Network": {"type": "calico"}, "Bytes": b64(&raw0)},
                            {"Network": {"type": "portmap"}, "Bytes": b64(&raw1)}],
                "Bytes": b64(&list)},
            "Bytes": b64(&lossy)}]);
        let got = config(&parse(&cache).unwrap()[0]);
        assert_eq!(got["plugins"][0]["datastore_type"], "kubernetes");
        assert_eq!(
            got["plugins"][0]["kubernetes"]["kubeconfig"],
            "/etc/cni/net.d/calico-kubeconfig"
        );
        assert_eq!(got["plugins"][0]["pciBusID"], "0000:01:00.2");
        assert_eq!(got["plugins"][0]["args"], json!({"cni": {"foo": "bar"}}));
        assert_eq!(got["plugins"][1], raw1);
        assert_eq!(got["name"], "k8s-pod-network");

        // A direct plugin delegate of the same era carried the field empty.
        let conf = json!({"cniVersion": "0.3.1", "name": "n", "type": "bridge"});
        let empty = json!([{"CNINetworkConfigList": {"Name": "", "CNIVersion": "",
            "DisableCheck": false, "Plugins": null, "Bytes": null}, "Bytes": b64(&conf)}]);
        assert_eq!(config(&parse(&empty).unwrap()[0]), conf);

        // A list that does not match the bytes: the re-encoded bytes are kept.
        let mismatched = json!([{"CNINetworkConfigList": {
            "Plugins": [{"Bytes": b64(&raw0)}], "Bytes": b64(&list)}, "Bytes": b64(&lossy)}]);
        assert_eq!(config(&parse(&mismatched).unwrap()[0]), lossy);
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        for (bad, says) in [
            (json!({"not": "a list"}), "not a JSON list"),
            (json!([1]), "delegate 0: not a JSON object"),
            (json!([{"Name": "n"}]), "delegate 0: Bytes"),
            (json!([{"Bytes": ""}]), "delegate 0: Bytes"),
            (json!([{"Bytes": "%%%"}]), "Bytes is not base64"),
            (json!([{"Bytes": 5}]), "Bytes is not a base64 string"),
            (
                json!([{"Bytes": "e30=", "Name": 1}]),
                "Name is not a string",
            ),
            (json!([{"Bytes": "e30=", "ipRequest": [1]}]), "ipRequest"),
            (json!([{"Bytes": "e30=", "ipRequest": {}}]), "ipRequest"),
        ] {
            let err = parse(&bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(is_scratch(&json!([])) && is_scratch(&Value::Null));
        assert!(!is_scratch(&json!({"format": "multus-rs/v1"})));
    }
}
