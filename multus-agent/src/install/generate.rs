//! Rendering `00-multus.conf` / `00-multus.conflist` from the primary configuration.
//!
//! Thin: `type: multus` with the primary embedded as `delegates[0]`. Thick: `type:
//! multus-shim` with the primary referenced by path as `clusterNetwork` and the agent's socket
//! directory as `daemonSocketDir`. Both advertise the union of the primary's capabilities.
//! Below CNI 1.0.0 the file is a single-plugin `.conf`, from 1.0.0 on a `.conflist` holding the
//! one multus plugin (as Multus does).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use multus_cni::{cni::CniVersion, config::LogLevel};
use serde_json::{Map, Value, json};

use super::{
    error::{InstallError, Result},
    primary::{Primary, supported},
};

/// The network name Multus gives its configuration.
pub const NETWORK_NAME: &str = "multus-cni-network";
/// The single-plugin file name.
pub const CONF_FILE: &str = "00-multus.conf";
/// The conflist file name (CNI 1.0.0 and newer).
pub const CONFLIST_FILE: &str = "00-multus.conflist";
/// The default socket directory written for the shim (Multus's `/run/multus`).
pub use multus_cni::thick::DEFAULT_SOCKET_DIR;

/// How the runtime reaches the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The `multus` binary runs the engine itself.
    Thin,
    /// The `multus-shim` binary forwards to the agent's socket in `daemon_socket_dir`.
    Thick {
        /// Where the agent's socket lives (`daemonSocketDir`).
        daemon_socket_dir: PathBuf,
    },
}

impl Mode {
    /// The plugin `type` in the generated configuration, which is also the file name the
    /// binary is installed under in the CNI bin directory.
    pub fn plugin_type(&self) -> &'static str {
        match self {
            Self::Thin => "multus",
            Self::Thick { .. } => "multus-shim",
        }
    }
}

/// Everything of the generated configuration that does not come from the primary.
#[derive(Debug, Clone)]
pub struct ConfigOptions {
    /// Thin or thick.
    pub mode: Mode,
    /// `cniVersion` of the multus configuration; `None` takes the primary's.
    pub cni_version: Option<CniVersion>,
    /// Use the primary's `name` instead of `multus-cni-network`.
    pub override_network_name: bool,
    /// `kubeconfig`, as the host sees it.
    pub kubeconfig: Option<PathBuf>,
    /// `namespaceIsolation`.
    pub namespace_isolation: bool,
    /// `globalNamespaces` (comma separated).
    pub global_namespaces: Option<String>,
    /// `logLevel`.
    pub log_level: Option<LogLevel>,
    /// `logFile`.
    pub log_file: Option<PathBuf>,
    /// `logToStderr` (written only when false, its default being true).
    pub log_to_stderr: bool,
    /// `readinessindicatorfile`.
    pub readiness_indicator_file: Option<PathBuf>,
    /// `binDir`.
    pub bin_dir: Option<PathBuf>,
    /// `confDir`.
    pub conf_dir: Option<PathBuf>,
    /// `cniDir`.
    pub cni_dir: Option<PathBuf>,
    /// Thick mode: keys the shim's DEL needs when the agent is down (`bpffsDir`,
    /// `dataplaneStateDir`, ...), taken from the agent's configuration.
    pub shim_keys: Vec<(&'static str, PathBuf)>,
}

impl Default for ConfigOptions {
    fn default() -> Self {
        Self {
            mode: Mode::Thin,
            cni_version: None,
            override_network_name: false,
            kubeconfig: None,
            namespace_isolation: false,
            global_namespaces: None,
            log_level: None,
            log_file: None,
            log_to_stderr: true,
            readiness_indicator_file: None,
            bin_dir: None,
            conf_dir: None,
            cni_dir: None,
            shim_keys: Vec::new(),
        }
    }
}

/// A rendered multus configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// [`CONF_FILE`] or [`CONFLIST_FILE`].
    pub file_name: &'static str,
    /// The file's content (pretty JSON, newline-terminated).
    pub bytes: Vec<u8>,
    /// Its `cniVersion`.
    pub cni_version: CniVersion,
}

/// The file a configuration of `version` is written to.
pub fn file_name(version: CniVersion) -> &'static str {
    if version >= CniVersion::V1_0_0 {
        CONFLIST_FILE
    } else {
        CONF_FILE
    }
}

/// Multus's compatibility rule: from 0.4.0 on the runtime may send CHECK, which is passed on to
/// the delegates, so a multus configuration at 0.4.0 or newer cannot delegate to a primary
/// older than 0.4.0.
pub fn check_versions(multus: CniVersion, primary: CniVersion, path: &Path) -> Result<()> {
    if multus >= CniVersion::V0_4_0 && primary < CniVersion::V0_4_0 {
        return Err(InstallError::Version {
            path: path.to_owned(),
            reason: format!(
                "cniVersion {primary} is older than 0.4.0 while the multus configuration would \
                 be {multus}: from 0.4.0 on the runtime sends CHECK, which a {primary} plugin \
                 does not know; set --cni-version {primary} or upgrade the primary to 0.4.0 or \
                 newer"
            ),
        });
    }
    Ok(())
}

/// The union of the capabilities the primary's plugins declare as `true`.
pub fn capabilities(primary: &Map<String, Value>) -> BTreeMap<String, bool> {
    let plugins: Vec<&Map<String, Value>> = match primary.get("plugins") {
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_object).collect(),
        _ => vec![primary],
    };
    plugins
        .iter()
        .filter_map(|p| p.get("capabilities").and_then(Value::as_object))
        .flat_map(|caps| caps.iter())
        .filter(|(_, on)| on.as_bool() == Some(true))
        .map(|(name, _)| (name.clone(), true))
        .collect()
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Panic => "panic",
        LogLevel::Error => "error",
        LogLevel::Verbose => "verbose",
        LogLevel::Debug => "debug",
    }
}

fn path_value(p: &Path) -> Value {
    Value::String(p.display().to_string())
}

/// Renders the multus configuration for `primary`.
pub fn render(primary: &Primary, opts: &ConfigOptions) -> Result<Rendered> {
    let primary_version = primary.conf.cni_version();
    let version = opts.cni_version.unwrap_or(primary_version);
    check_versions(version, primary_version, &primary.path)?;
    let name = if opts.override_network_name {
        primary.conf.name().to_owned()
    } else {
        NETWORK_NAME.to_owned()
    };

    let mut plugin = Map::new();
    plugin.insert("type".into(), opts.mode.plugin_type().into());
    let caps = capabilities(&primary.json);
    if !caps.is_empty() {
        plugin.insert("capabilities".into(), json!(caps));
    }
    if let Some(k) = &opts.kubeconfig {
        plugin.insert("kubeconfig".into(), path_value(k));
    }
    if opts.namespace_isolation {
        plugin.insert("namespaceIsolation".into(), true.into());
    }
    if let Some(g) = &opts.global_namespaces {
        plugin.insert("globalNamespaces".into(), g.as_str().into());
    }
    if let Some(level) = opts.log_level {
        plugin.insert("logLevel".into(), level_name(level).into());
    }
    if let Some(f) = &opts.log_file {
        plugin.insert("logFile".into(), path_value(f));
    }
    if !opts.log_to_stderr {
        plugin.insert("logToStderr".into(), false.into());
    }
    if let Some(f) = &opts.readiness_indicator_file {
        plugin.insert("readinessindicatorfile".into(), path_value(f));
    }
    for (key, dir) in [
        ("binDir", &opts.bin_dir),
        ("confDir", &opts.conf_dir),
        ("cniDir", &opts.cni_dir),
    ] {
        if let Some(dir) = dir {
            plugin.insert(key.into(), path_value(dir));
        }
    }
    match &opts.mode {
        Mode::Thin => {
            plugin.insert(
                "delegates".into(),
                Value::Array(vec![Value::Object(primary.json.clone())]),
            );
        }
        Mode::Thick { daemon_socket_dir } => {
            plugin.insert("clusterNetwork".into(), path_value(&primary.path));
            plugin.insert("daemonSocketDir".into(), path_value(daemon_socket_dir));
            for (key, dir) in &opts.shim_keys {
                plugin.insert((*key).into(), path_value(dir));
            }
        }
    }

    let file_name = file_name(version);
    let mut top = Map::new();
    top.insert("cniVersion".into(), version.as_str().into());
    top.insert("name".into(), name.into());
    let doc = if file_name == CONFLIST_FILE {
        top.insert("plugins".into(), Value::Array(vec![Value::Object(plugin)]));
        top
    } else {
        top.extend(plugin);
        top
    };
    let mut bytes =
        serde_json::to_vec_pretty(&Value::Object(doc)).map_err(|e| InstallError::Primary {
            path: primary.path.clone(),
            reason: format!("encoding the multus configuration: {e}"),
        })?;
    bytes.push(b'\n');
    Ok(Rendered {
        file_name,
        bytes,
        cni_version: version,
    })
}

/// Parses a `--cni-version` value.
pub fn parse_version(s: &str) -> Result<CniVersion> {
    CniVersion::parse(s).ok_or_else(|| InstallError::Option {
        option: "--cni-version",
        reason: format!(
            "{s:?} is not supported by multus-cni (supported: {})",
            supported()
        ),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use multus_cni::NetConf;

    use super::*;
    use crate::install::primary::{Lookup, load};

    fn primary(dir: &Path, name: &str, text: &str) -> Primary {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        match load(&path).unwrap() {
            Lookup::Ready(p) => p,
            other => panic!("{other:?}"),
        }
    }

    fn parse(r: &Rendered) -> Value {
        serde_json::from_slice(&r.bytes).unwrap()
    }

    const FLANNEL: &str = r#"{"cniVersion": "0.3.1", "name": "cbr0", "plugins": [
        {"type": "flannel", "delegate": {"isDefaultGateway": true}},
        {"type": "portmap", "capabilities": {"portMappings": true}},
        {"type": "bandwidth", "capabilities": {"bandwidth": true, "ips": false}}]}"#;

    #[test]
    fn thin_conf_embeds_primary_and_union_of_capabilities() {
        let dir = tempfile::tempdir().unwrap();
        let p = primary(dir.path(), "10-flannel.conflist", FLANNEL);
        let opts = ConfigOptions {
            kubeconfig: Some("/etc/cni/net.d/multus.d/multus.kubeconfig".into()),
            namespace_isolation: true,
            global_namespaces: Some("default,infra".into()),
            log_level: LogLevel::parse("DEBUG"),
            log_file: Some("/var/log/multus.log".into()),
            log_to_stderr: false,
            readiness_indicator_file: Some("/run/flannel/subnet.env".into()),
            bin_dir: Some("/opt/cni/bin".into()),
            ..ConfigOptions::default()
        };
        let r = render(&p, &opts).unwrap();
        assert_eq!(r.file_name, CONF_FILE);
        let primary_json: Value = serde_json::from_str(FLANNEL).unwrap();
        assert_eq!(
            parse(&r),
            json!({
                "cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus",
                "capabilities": {"bandwidth": true, "portMappings": true},
                "kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig",
                "namespaceIsolation": true, "globalNamespaces": "default,infra",
                "logLevel": "debug", "logFile": "/var/log/multus.log", "logToStderr": false,
                "readinessindicatorfile": "/run/flannel/subnet.env", "binDir": "/opt/cni/bin",
                "delegates": [primary_json],
            })
        );
        // The engine accepts what we write.
        let conf = NetConf::parse(&r.bytes).unwrap();
        assert!(conf.namespace_isolation);
    }

    #[test]
    fn conf_primary_capabilities_and_override_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = primary(
            dir.path(),
            "10-bridge.conf",
            r#"{"cniVersion": "0.4.0", "name": "br", "type": "bridge",
                "capabilities": {"mac": true, "ips": true, "portMappings": false}}"#,
        );
        let opts = ConfigOptions {
            override_network_name: true,
            ..ConfigOptions::default()
        };
        let v = parse(&render(&p, &opts).unwrap());
        assert_eq!(v["name"], "br");
        assert_eq!(v["capabilities"], json!({"ips": true, "mac": true}));
        assert!(v.get("kubeconfig").is_none());
        assert!(v.get("logToStderr").is_none());
    }

    #[test]
    fn one_point_oh_switches_to_conflist() {
        let dir = tempfile::tempdir().unwrap();
        let p = primary(
            dir.path(),
            "10-bridge.conflist",
            r#"{"cniVersion": "1.0.0", "name": "br", "plugins": [
                {"type": "bridge", "capabilities": {"ips": true}}]}"#,
        );
        let r = render(&p, &ConfigOptions::default()).unwrap();
        assert_eq!(r.file_name, CONFLIST_FILE);
        let v = parse(&r);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["name"], NETWORK_NAME);
        assert_eq!(v["plugins"].as_array().unwrap().len(), 1);
        let plugin = &v["plugins"][0];
        assert_eq!(plugin["type"], "multus");
        assert_eq!(plugin["capabilities"], json!({"ips": true}));
        assert_eq!(plugin["delegates"][0]["name"], "br");
        assert!(v.get("type").is_none() && v.get("delegates").is_none());
        // A runtime hands the plugin its list's name and version; the engine accepts that.
        let mut stdin = plugin.as_object().unwrap().clone();
        stdin.insert("cniVersion".into(), v["cniVersion"].clone());
        stdin.insert("name".into(), v["name"].clone());
        NetConf::parse(&serde_json::to_vec(&stdin).unwrap()).unwrap();

        // --cni-version below 1.0.0 gives a .conf even with a 1.0.0 primary.
        let opts = ConfigOptions {
            cni_version: Some(CniVersion::V0_4_0),
            ..ConfigOptions::default()
        };
        assert_eq!(render(&p, &opts).unwrap().file_name, CONF_FILE);
    }

    #[test]
    fn thick_references_primary_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = primary(dir.path(), "10-flannel.conflist", FLANNEL);
        let opts = ConfigOptions {
            mode: Mode::Thick {
                daemon_socket_dir: DEFAULT_SOCKET_DIR.into(),
            },
            ..ConfigOptions::default()
        };
        let r = render(&p, &opts).unwrap();
        let v = parse(&r);
        assert_eq!(
            v,
            json!({
                "cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus-shim",
                "capabilities": {"bandwidth": true, "portMappings": true},
                "clusterNetwork": p.path.display().to_string(),
                "daemonSocketDir": "/run/multus",
            })
        );
        let conf = NetConf::parse(&r.bytes).unwrap();
        assert_eq!(
            conf.cluster_network.as_deref(),
            Some(p.path.display().to_string().as_str())
        );
    }

    #[test]
    fn incompatible_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = primary(
            dir.path(),
            "10-old.conf",
            r#"{"cniVersion": "0.3.1", "name": "old", "type": "bridge"}"#,
        );
        let opts = ConfigOptions {
            cni_version: Some(CniVersion::V1_0_0),
            ..ConfigOptions::default()
        };
        let err = render(&p, &opts).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("10-old.conf"), "{msg}");
        assert!(msg.contains("0.3.1 is older than 0.4.0"), "{msg}");
        assert!(msg.contains("--cni-version 0.3.1"), "{msg}");
        // Same version, or multus older than the primary: fine.
        for v in [CniVersion::V0_3_0, CniVersion::V0_3_1] {
            let opts = ConfigOptions {
                cni_version: Some(v),
                ..ConfigOptions::default()
            };
            render(&p, &opts).unwrap();
        }
        assert!(parse_version("0.2.1").is_err());
        assert!(
            parse_version("2.0.0")
                .unwrap_err()
                .to_string()
                .contains("1.1.0")
        );
    }
}
