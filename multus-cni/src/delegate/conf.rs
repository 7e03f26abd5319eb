//! A delegate's network configuration: a single plugin configuration or a conflist, kept as the
//! JSON object it came as so the bytes handed to plugins (and cached for DEL) lose nothing.
use serde_json::{Map, Value};

use crate::{
    cni::CniVersion,
    error::{Error, Result},
};

/// Whether the configuration is a single plugin or a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfKind {
    /// One plugin (`type` at the top level).
    Single,
    /// A conflist (`plugins`).
    List,
}

/// One delegate network configuration, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DelegateConf {
    json: Map<String, Value>,
    kind: ConfKind,
    name: String,
    cni_version: CniVersion,
}

impl DelegateConf {
    /// Parses configuration bytes; `fallback_name` is injected when `name` is missing (NPWG
    /// §3.4.2). `origin` names the source in errors.
    pub fn from_bytes(bytes: &[u8], fallback_name: Option<&str>, origin: &str) -> Result<Self> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::decode(format!("configuration of {origin}"), e))?;
        Self::from_value(value, fallback_name, origin)
    }

    /// Validates a parsed configuration; see [`DelegateConf::from_bytes`].
    pub fn from_value(value: Value, fallback_name: Option<&str>, origin: &str) -> Result<Self> {
        let Value::Object(mut json) = value else {
            return Err(Error::network(origin, "configuration is not a JSON object"));
        };
        let name = match json.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            None | Some(Value::Null | Value::String(_)) => {
                let Some(fallback) = fallback_name else {
                    return Err(Error::network(origin, "configuration has no name"));
                };
                json.insert("name".into(), Value::String(fallback.to_owned()));
                fallback.to_owned()
            }
            Some(_) => return Err(Error::network(origin, "name is not a string")),
        };
        let cni_version = version_of(&json, origin)?;
        // As libcni and Multus decide: a `type` makes it a single plugin, `plugins` beside it
        // notwithstanding.
        let has_type = matches!(json.get("type"), Some(Value::String(t)) if !t.is_empty());
        let kind = if !has_type && json.contains_key("plugins") {
            ConfKind::List
        } else {
            ConfKind::Single
        };
        let conf = Self {
            json,
            kind,
            name,
            cni_version,
        };
        conf.validate_plugins(origin)?;
        Ok(conf)
    }

    fn validate_plugins(&self, origin: &str) -> Result<()> {
        if self.kind == ConfKind::List {
            match self.json.get("plugins") {
                Some(Value::Array(p)) if !p.is_empty() => {}
                Some(Value::Array(_)) => {
                    return Err(Error::network(origin, "conflist has no plugins"));
                }
                _ => return Err(Error::network(origin, "plugins is not a list")),
            }
        }
        let plugins = self.json_plugins();
        if self.kind == ConfKind::List && plugins.len() != self.plugin_count() {
            return Err(Error::network(
                origin,
                "every entry of plugins must be an object",
            ));
        }
        for (i, p) in plugins.iter().enumerate() {
            let ty = match p.get("type") {
                Some(Value::String(t)) => t,
                Some(_) => {
                    return Err(Error::network(
                        origin,
                        format!("plugin {i}: type is not a string"),
                    ));
                }
                None => return Err(Error::network(origin, format!("plugin {i}: no type"))),
            };
            if ty.is_empty() || ty == "." || ty == ".." || ty.contains('/') || ty.contains('\0') {
                return Err(Error::network(
                    origin,
                    format!("plugin {i}: type {ty:?} is not a plain plugin name"),
                ));
            }
            if let Some(caps) = p.get("capabilities")
                && !caps.is_object()
            {
                return Err(Error::network(
                    origin,
                    format!("plugin {i}: capabilities is not an object"),
                ));
            }
        }
        Ok(())
    }

    fn plugin_count(&self) -> usize {
        match self.json.get("plugins") {
            Some(Value::Array(p)) => p.len(),
            _ => 1,
        }
    }

    fn json_plugins(&self) -> Vec<&Map<String, Value>> {
        match self.kind {
            ConfKind::Single => vec![&self.json],
            ConfKind::List => self
                .json
                .get("plugins")
                .and_then(Value::as_array)
                .map(|p| p.iter().filter_map(Value::as_object).collect())
                .unwrap_or_default(),
        }
    }

    fn json_plugins_mut(&mut self) -> Vec<&mut Map<String, Value>> {
        match self.kind {
            ConfKind::Single => vec![&mut self.json],
            ConfKind::List => self
                .json
                .get_mut("plugins")
                .and_then(Value::as_array_mut)
                .map(|p| p.iter_mut().filter_map(Value::as_object_mut).collect())
                .unwrap_or_default(),
        }
    }

    /// The configuration's `name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration's `cniVersion`.
    pub fn cni_version(&self) -> CniVersion {
        self.cni_version
    }

    /// Single or list.
    pub fn kind(&self) -> ConfKind {
        self.kind
    }

    /// The plugin types, in chain order.
    pub fn plugin_types(&self) -> Vec<String> {
        self.json_plugins()
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str).map(str::to_owned))
            .collect()
    }

    /// The host interfaces the chain's macvlan and ipvlan plugins stack on: (plugin type,
    /// `master`) for each that names one in the host's namespace (not `linkInContainer`).
    pub fn master_links(&self) -> Vec<(String, String)> {
        self.json_plugins()
            .iter()
            .filter_map(|p| {
                let ty = p.get("type").and_then(Value::as_str)?;
                let master = p.get("master").and_then(Value::as_str)?;
                let in_container = p.get("linkInContainer").and_then(Value::as_bool) == Some(true);
                (matches!(ty, "macvlan" | "ipvlan") && !master.is_empty() && !in_container)
                    .then(|| (ty.to_owned(), master.to_owned()))
            })
            .collect()
    }

    /// Whether plugin `index` declares `capabilities.<cap>: true`.
    pub fn plugin_has_capability(&self, index: usize, cap: &str) -> bool {
        self.json_plugins().get(index).is_some_and(|p| {
            p.get("capabilities")
                .and_then(|c| c.get(cap))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
    }

    /// Whether a conflist turns `key` (`disableCheck`, `disableGC`) on: `true`, or the strings
    /// `"true"`/`"false"` in any case, as libcni reads them. A single plugin has no such keys.
    pub fn list_disables(&self, key: &str) -> bool {
        self.kind == ConfKind::List
            && match self.json.get(key) {
                Some(Value::Bool(b)) => *b,
                Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
                _ => false,
            }
    }

    /// Whether any plugin declares `cap`.
    pub fn has_capability(&self, cap: &str) -> bool {
        (0..self.plugin_count()).any(|i| self.plugin_has_capability(i, cap))
    }

    /// Merges `args` into every plugin's `args.cni`; the given keys win (NPWG `cni-args`).
    pub fn merge_cni_args(&mut self, args: &Map<String, Value>) {
        for plugin in self.json_plugins_mut() {
            merge_into_args_cni(plugin, args);
        }
    }

    /// Sets `deviceID` and `pciBusID` in every plugin, as Multus does for device-plugin networks.
    pub fn set_device_id(&mut self, device_id: &str) {
        for plugin in self.json_plugins_mut() {
            plugin.insert("deviceID".into(), Value::String(device_id.to_owned()));
            plugin.insert("pciBusID".into(), Value::String(device_id.to_owned()));
        }
    }

    /// The configuration as compact JSON: the exact bytes cached for DEL.
    pub fn to_json_string(&self) -> String {
        Value::Object(self.json.clone()).to_string()
    }

    /// The stdin for plugin `index` of the chain: the plugin's configuration with the list's
    /// `cniVersion` and `name`, `runtimeConfig` holding only the capabilities the plugin
    /// declares, and `prevResult` when given.
    /// `extra` adds keys such as GC's `cni.dev/valid-attachments`.
    pub fn plugin_stdin(
        &self,
        index: usize,
        runtime_config: &Map<String, Value>,
        prev_result: Option<&Value>,
        extra: &Map<String, Value>,
    ) -> Vec<u8> {
        let mut conf = self
            .json_plugins()
            .get(index)
            .map(|p| (*p).clone())
            .unwrap_or_default();
        if self.kind == ConfKind::List {
            conf.insert(
                "cniVersion".into(),
                Value::String(self.cni_version.as_str().into()),
            );
            conf.insert("name".into(), Value::String(self.name.clone()));
        }
        let rc: Map<String, Value> = runtime_config
            .iter()
            .filter(|(cap, _)| self.plugin_has_capability(index, cap))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !rc.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(rc));
        }
        match prev_result {
            Some(prev) => {
                conf.insert("prevResult".into(), prev.clone());
            }
            None => {
                conf.remove("prevResult");
            }
        }
        for (k, v) in extra {
            conf.insert(k.clone(), v.clone());
        }
        Value::Object(conf).to_string().into_bytes()
    }
}

/// The configuration's version as libcni picks it: the highest supported one of `cniVersions`
/// when it lists any, else `cniVersion`, and 0.1.0 without either (what a plugin assumes).
fn version_of(json: &Map<String, Value>, origin: &str) -> Result<CniVersion> {
    if let Some(Value::Array(versions)) = json.get("cniVersions")
        && let Some(best) = versions
            .iter()
            .filter_map(Value::as_str)
            .filter_map(CniVersion::parse)
            .max()
    {
        return Ok(best);
    }
    let version = match json.get("cniVersion") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        None | Some(Value::Null | Value::String(_)) => return Ok(CniVersion::V0_1_0),
        Some(_) => return Err(Error::network(origin, "cniVersion is not a string")),
    };
    CniVersion::parse(&version).ok_or_else(|| Error::Version {
        context: format!("network {origin}"),
        version,
    })
}

/// Merges `args` into one plugin configuration's `args.cni` (made an object when it is not);
/// the given keys win.
pub(crate) fn merge_into_args_cni(plugin: &mut Map<String, Value>, args: &Map<String, Value>) {
    let outer = plugin
        .entry("args")
        .or_insert_with(|| Value::Object(Map::new()));
    if !outer.is_object() {
        *outer = Value::Object(Map::new());
    }
    let Some(outer) = outer.as_object_mut() else {
        return;
    };
    let cni = outer
        .entry("cni")
        .or_insert_with(|| Value::Object(Map::new()));
    if !cni.is_object() {
        *cni = Value::Object(Map::new());
    }
    if let Some(cni) = cni.as_object_mut() {
        for (k, v) in args {
            cni.insert(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn versions_as_lenient_as_libcni() {
        let v = |conf: Value| DelegateConf::from_value(conf, None, "t").map(|c| c.cni_version());
        assert_eq!(
            v(json!({"name": "n", "type": "a"})).unwrap(),
            CniVersion::V0_1_0
        );
        assert_eq!(
            v(json!({"cniVersion": "0.2.0", "name": "n", "type": "a"})).unwrap(),
            CniVersion::V0_2_0
        );
        assert_eq!(
            v(
                json!({"cniVersion": "0.3.1", "cniVersions": ["0.4.0", "1.0.0", "9.9.9"],
                     "name": "n", "plugins": [{"type": "a"}]})
            )
            .unwrap(),
            CniVersion::V1_0_0
        );
        assert_eq!(
            v(json!({"cniVersion": "0.2.1", "name": "n", "type": "a"}))
                .unwrap_err()
                .code(),
            1
        );
    }

    #[test]
    fn disable_check_and_gc_on_lists_only() {
        let list = |extra: Value| {
            let mut v = json!({"cniVersion": "1.1.0", "name": "n", "plugins": [{"type": "a"}]});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            DelegateConf::from_value(v, None, "t").unwrap()
        };
        assert!(list(json!({"disableCheck": true})).list_disables("disableCheck"));
        assert!(list(json!({"disableGC": "True"})).list_disables("disableGC"));
        assert!(!list(json!({"disableGC": "false"})).list_disables("disableGC"));
        assert!(!list(json!({})).list_disables("disableCheck"));
        let single = DelegateConf::from_value(
            json!({"cniVersion": "1.1.0", "name": "n", "type": "a", "disableCheck": true}),
            None,
            "t",
        )
        .unwrap();
        assert!(!single.list_disables("disableCheck"));
    }

    #[test]
    fn a_type_beside_plugins_is_a_single_plugin() {
        let c = DelegateConf::from_value(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "macvlan",
                   "plugins": [{"type": "bridge"}, {"type": "tuning"}]}),
            None,
            "t",
        )
        .unwrap();
        assert_eq!(c.kind(), ConfKind::Single);
        assert_eq!(c.plugin_types(), ["macvlan"]);
    }

    #[test]
    fn single_and_list() {
        let c = DelegateConf::from_value(
            json!({"cniVersion": "0.4.0", "type": "bridge", "bridge": "br0"}),
            Some("nad1"),
            "ns/nad1",
        )
        .unwrap();
        assert_eq!(c.name(), "nad1");
        assert_eq!(c.kind(), ConfKind::Single);
        assert_eq!(c.plugin_types(), vec!["bridge"]);
        let l = DelegateConf::from_value(
            json!({"cniVersion": "1.0.0", "name": "l", "plugins": [
                {"type": "macvlan", "capabilities": {"ips": true}},
                {"type": "tuning"}
            ]}),
            None,
            "ns/l",
        )
        .unwrap();
        assert!(l.has_capability("ips"));
        assert!(!l.plugin_has_capability(1, "ips"));
        let rc = json!({"ips": ["192.0.2.9/24"], "mac": "aa:bb:cc:dd:ee:ff"});
        let stdin: Value =
            serde_json::from_slice(&l.plugin_stdin(0, rc.as_object().unwrap(), None, &Map::new()))
                .unwrap();
        assert_eq!(stdin["name"], "l");
        assert_eq!(stdin["cniVersion"], "1.0.0");
        assert_eq!(stdin["runtimeConfig"], json!({"ips": ["192.0.2.9/24"]}));
        let prev = json!({"cniVersion": "1.0.0"});
        let stdin1: Value = serde_json::from_slice(&l.plugin_stdin(
            1,
            rc.as_object().unwrap(),
            Some(&prev),
            &Map::new(),
        ))
        .unwrap();
        assert!(stdin1.get("runtimeConfig").is_none());
        assert_eq!(stdin1["prevResult"], prev);
    }

    #[test]
    fn rejects_bad_configs() {
        let bad = [
            json!({"cniVersion": "0.4.0"}),
            json!({"cniVersion": "0.4.0", "type": "../../bin/sh"}),
            json!({"cniVersion": "0.4.0", "type": ""}),
            json!({"cniVersion": "0.4.0", "type": 3}),
            json!({"cniVersion": "9.9.9", "type": "bridge"}),
            json!({"cniVersion": "0.2.1", "type": "bridge"}),
            json!({"cniVersion": "0.4.0", "plugins": []}),
            json!({"cniVersion": "0.4.0", "plugins": [1]}),
            json!({"cniVersion": "0.4.0", "plugins": "x"}),
            json!({"cniVersion": "0.4.0", "type": "x", "capabilities": []}),
            json!("str"),
        ];
        for b in bad {
            assert!(
                DelegateConf::from_value(b.clone(), Some("n"), "t").is_err(),
                "{b}"
            );
        }
        assert!(
            DelegateConf::from_value(json!({"cniVersion": "0.4.0", "type": "x"}), None, "t")
                .is_err()
        );
    }

    #[test]
    fn cni_args_and_device_id() {
        let mut l = DelegateConf::from_value(
            json!({"cniVersion": "1.0.0", "name": "l", "plugins": [
                {"type": "a", "args": {"cni": {"keep": 1, "over": 1}}}, {"type": "b"}
            ]}),
            None,
            "t",
        )
        .unwrap();
        l.merge_cni_args(json!({"over": 2, "new": "x"}).as_object().unwrap());
        l.set_device_id("0000:01:00.1");
        let v: Value = serde_json::from_str(&l.to_json_string()).unwrap();
        assert_eq!(
            v["plugins"][0]["args"]["cni"],
            json!({"keep": 1, "over": 2, "new": "x"})
        );
        assert_eq!(
            v["plugins"][1]["args"]["cni"],
            json!({"over": 2, "new": "x"})
        );
        assert_eq!(v["plugins"][1]["pciBusID"], "0000:01:00.1");
    }
}
