//! The plugin's own configuration (stdin), with Multus's keys, names and defaults.
//!
//! Keys are read one by one from the JSON object so a wrong type is reported with the key's
//! name. Unknown keys are ignored, as Multus does.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value};

use crate::{
    cni::CniVersion,
    error::{Error, Result},
};

/// Default `confDir`.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/multus/net.d";
/// Default `cniDir`.
pub const DEFAULT_CNI_DIR: &str = "/var/lib/cni/multus";
/// Default `binDir`.
pub const DEFAULT_BIN_DIR: &str = "/opt/cni/bin";
/// Default `multusNamespace`.
pub const DEFAULT_MULTUS_NAMESPACE: &str = "kube-system";
/// Default `kubeletRootDir`.
pub const DEFAULT_KUBELET_ROOT_DIR: &str = "/var/lib/kubelet";
/// Default `deviceInfoDir`: the NPWG Device Information spec's directory.
pub const DEFAULT_DEVICE_INFO_DIR: &str = "/var/run/k8s.cni.cncf.io/devinfo";
/// Default `apiTimeoutSeconds`.
pub const DEFAULT_API_TIMEOUT_SECONDS: u64 = 20;
/// The GC key listing the attachments the runtime still knows.
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// Default `retryDeleteAttempts`.
pub const DEFAULT_RETRY_DELETE_ATTEMPTS: u64 = 3;
/// Default `retryDeleteSeconds`.
pub const DEFAULT_RETRY_DELETE_SECONDS: u64 = 300;
/// The `type` of thin mode's configuration (thick mode's is the shim's, `multus-shim`).
pub const THIN_TYPE: &str = "multus";
/// The `type` of thick mode's shim configuration.
pub const SHIM_TYPE: &str = "multus-shim";

/// How much to log (`logLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Only panics: in practice nothing (Multus's default).
    Panic,
    /// Errors.
    Error,
    /// Informational messages.
    Verbose,
    /// Everything.
    Debug,
}

impl LogLevel {
    /// Parses Multus's level names; `None` for an unknown name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "panic" => Self::Panic,
            "error" => Self::Error,
            "verbose" | "info" => Self::Verbose,
            "debug" => Self::Debug,
            _ => return None,
        })
    }
}

/// Log file rotation (`logOptions`), lumberjack's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// Days to keep old files.
    pub max_age: u64,
    /// Size in MB that triggers rotation.
    pub max_size: u64,
    /// Old files to keep.
    pub max_backups: u64,
    /// Compress rotated files (accepted; rotated files are kept uncompressed).
    pub compress: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            max_age: 5,
            max_size: 100,
            max_backups: 5,
            compress: true,
        }
    }
}

impl LogOptions {
    /// Reads a `logOptions` object; a missing key keeps its default, a wrong type is an error
    /// naming `logOptions.<key>`.
    pub fn from_object(o: &Map<String, Value>) -> Result<Self> {
        let lk = Keys { obj: o };
        let d = Self::default();
        Ok(Self {
            max_age: prefixed(lk.u64("maxAge"), "logOptions")?.unwrap_or(d.max_age),
            max_size: prefixed(lk.u64("maxSize"), "logOptions")?.unwrap_or(d.max_size),
            max_backups: prefixed(lk.u64("maxBackups"), "logOptions")?.unwrap_or(d.max_backups),
            compress: prefixed(lk.bool("compress"), "logOptions")?.unwrap_or(d.compress),
        })
    }
}

/// One attachment the runtime still uses (GC's `cni.dev/valid-attachments`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ValidAttachment {
    /// Container id.
    pub container_id: String,
    /// Interface name.
    pub ifname: String,
}

/// The parsed configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`.
    pub cni_version: CniVersion,
    /// `name`.
    pub name: String,
    /// `type`.
    pub plugin_type: String,
    /// `confDir`: on-disk network configurations (NADs with an empty spec, names).
    pub conf_dir: PathBuf,
    /// `cniDir`: the attachment cache.
    pub cni_dir: PathBuf,
    /// `binDir`: searched for delegate plugins before `CNI_PATH`.
    pub bin_dir: Vec<PathBuf>,
    /// `kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `clusterNetwork`: a NAD name, a configuration name in `confDir`, a file or a directory.
    pub cluster_network: Option<String>,
    /// `defaultNetworks`: attached to every pod outside `systemNamespaces`.
    pub default_networks: Vec<String>,
    /// `delegates`: inline configurations, the first being the cluster network.
    pub delegates: Vec<Value>,
    /// `systemNamespaces`.
    pub system_namespaces: Vec<String>,
    /// `multusNamespace`.
    pub multus_namespace: String,
    /// `namespaceIsolation`.
    pub namespace_isolation: bool,
    /// `globalNamespaces` (a comma-separated string in the configuration).
    pub global_namespaces: Vec<String>,
    /// `readinessindicatorfile`.
    pub readiness_indicator_file: Option<PathBuf>,
    /// `logFile`.
    pub log_file: Option<PathBuf>,
    /// `logLevel`.
    pub log_level: LogLevel,
    /// `logLevel` as given when it was not a known level (reported as a warning).
    pub unknown_log_level: Option<String>,
    /// `logToStderr`.
    pub log_to_stderr: bool,
    /// `logOptions`.
    pub log_options: LogOptions,
    /// `capabilities` advertised to the runtime.
    pub capabilities: BTreeMap<String, bool>,
    /// `runtimeConfig` from the runtime (kubelet): applied to the cluster network only.
    pub runtime_config: Map<String, Value>,
    /// `retryDeleteOnError`: keep the cache when a delegate DEL fails. Unset means yes.
    pub retry_delete_on_error: bool,
    /// `retryDeleteAttempts` (this project's key): with `retryDeleteOnError`, a cache entry whose
    /// DEL failed this many times ...
    pub retry_delete_attempts: u64,
    /// `retryDeleteSeconds` (this project's key): ... and whose first failed DEL is at least
    /// this old is given up: dropped, with what may have leaked reported.
    pub retry_delete_seconds: u64,
    /// `localSourceDir` (this project's key): NAD and pod files used without a cluster.
    pub local_source_dir: Option<PathBuf>,
    /// `kubeletRootDir` (this project's key): kubelet's `--root-dir`, where its PodResources
    /// socket and device-plugin checkpoint live.
    pub kubelet_root_dir: PathBuf,
    /// `deviceInfoDir` (this project's key): the device information directory, with the device
    /// plugins' files in `dp/` and those made for delegates in `cni/`.
    pub device_info_dir: PathBuf,
    /// `apiTimeoutSeconds` (this project's key): the longest one Kubernetes API lookup may take,
    /// retries included.
    pub api_timeout_seconds: u64,
    /// `addedInterfaceEvents` (this project's key): post Multus's `AddedInterface` Event per
    /// interface after ADD (one API request each). Default true.
    pub added_interface_events: bool,
    /// `requireCapabilities` (this project's key): a selection asking for `ips`, `mac`, ... on
    /// a network none of whose plugins declares the capability fails the ADD, as the NPWG
    /// specification says. Default false: as Multus, the request is dropped (`ips`/`mac` still
    /// go as legacy `CNI_ARGS`) and a Warning Event names the missing capability.
    pub require_capabilities: bool,
    /// GC's `cni.dev/valid-attachments`.
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// Typed access to the keys of one JSON object, naming the key on a type error.
struct Keys<'a> {
    obj: &'a Map<String, Value>,
}

impl<'a> Keys<'a> {
    fn value(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(wrong_type(key, "a string", other)),
        }
    }

    fn non_empty_string(&self, key: &str) -> Result<Option<String>> {
        Ok(self.string(key)?.filter(|s| !s.is_empty()))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(wrong_type(key, "true or false", other)),
        }
    }

    fn u64(&self, key: &str) -> Result<Option<u64>> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| wrong_type(key, "a non-negative integer", v)),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(wrong_type(&format!("{key}[{i}]"), "a string", other)),
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(other) => Err(wrong_type(key, "a list of strings", other)),
        }
    }

    fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(other) => Err(wrong_type(key, "an object", other)),
        }
    }
}

fn wrong_type(key: &str, expected: &str, got: &Value) -> Error {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    };
    Error::config(key, format!("expected {expected}, got {kind}"))
}

fn path_list(s: &str) -> Vec<PathBuf> {
    crate::cni::request::split_path_list(s)
}

impl NetConf {
    /// Parses the configuration bytes from stdin.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::decode("the network configuration", e))?;
        let Value::Object(obj) = value else {
            return Err(Error::decode(
                "the network configuration",
                "expected a JSON object",
            ));
        };
        Self::from_object(&obj)
    }

    /// Reads the configuration from a parsed JSON object.
    pub fn from_object(obj: &Map<String, Value>) -> Result<Self> {
        let k = Keys { obj };
        let version = k
            .string("cniVersion")?
            .ok_or_else(|| Error::config("cniVersion", "missing"))?;
        let cni_version = CniVersion::parse(&version).ok_or_else(|| Error::Version {
            context: "the network configuration".into(),
            version: version.clone(),
        })?;
        let name = k
            .non_empty_string("name")?
            .ok_or_else(|| Error::config("name", "missing or empty"))?;
        let plugin_type = match k.string("type")? {
            Some(t) if t == THIN_TYPE || t == SHIM_TYPE => t,
            Some(t) => {
                return Err(Error::config(
                    "type",
                    format!(
                        "{t:?} is not this plugin's type (expected {THIN_TYPE:?} or {SHIM_TYPE:?})"
                    ),
                ));
            }
            None => {
                return Err(Error::config(
                    "type",
                    format!("missing (expected {THIN_TYPE:?} or {SHIM_TYPE:?})"),
                ));
            }
        };
        let (log_level, unknown_log_level) = match k.non_empty_string("logLevel")? {
            None => (LogLevel::Panic, None),
            Some(s) => match LogLevel::parse(&s) {
                Some(l) => (l, None),
                None => (LogLevel::Panic, Some(s)),
            },
        };
        let log_options = match k.object("logOptions")? {
            None => LogOptions::default(),
            Some(o) => LogOptions::from_object(o)?,
        };
        let capabilities = match k.object("capabilities")? {
            None => BTreeMap::new(),
            Some(o) => o
                .iter()
                .map(|(cap, v)| match v {
                    Value::Bool(b) => Ok((cap.clone(), *b)),
                    other => Err(wrong_type(
                        &format!("capabilities.{cap}"),
                        "true or false",
                        other,
                    )),
                })
                .collect::<Result<_>>()?,
        };
        let delegates = match k.value("delegates") {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                for (i, d) in items.iter().enumerate() {
                    if !d.is_object() {
                        return Err(wrong_type(&format!("delegates[{i}]"), "an object", d));
                    }
                }
                items.clone()
            }
            Some(other) => return Err(wrong_type("delegates", "a list of objects", other)),
        };
        let cluster_network = k.non_empty_string("clusterNetwork")?;
        // Unset or empty keeps `default`, as Multus reads it (a Go empty string is unset).
        let global_namespaces = match k.string("globalNamespaces")? {
            None => vec!["default".to_owned()],
            Some(s) if s.is_empty() => vec!["default".to_owned()],
            Some(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        let conf = Self {
            cni_version,
            name,
            plugin_type,
            conf_dir: k
                .non_empty_string("confDir")?
                .map_or_else(|| PathBuf::from(DEFAULT_CONF_DIR), PathBuf::from),
            cni_dir: k
                .non_empty_string("cniDir")?
                .map_or_else(|| PathBuf::from(DEFAULT_CNI_DIR), PathBuf::from),
            bin_dir: k
                .non_empty_string("binDir")?
                .map_or_else(|| vec![PathBuf::from(DEFAULT_BIN_DIR)], |s| path_list(&s)),
            kubeconfig: k.non_empty_string("kubeconfig")?.map(PathBuf::from),
            cluster_network,
            default_networks: k.strings("defaultNetworks")?.unwrap_or_default(),
            delegates,
            system_namespaces: k
                .strings("systemNamespaces")?
                .unwrap_or_else(|| vec!["kube-system".to_owned()]),
            multus_namespace: k
                .non_empty_string("multusNamespace")?
                .unwrap_or_else(|| DEFAULT_MULTUS_NAMESPACE.to_owned()),
            namespace_isolation: k.bool("namespaceIsolation")?.unwrap_or(false),
            global_namespaces,
            readiness_indicator_file: k
                .non_empty_string("readinessindicatorfile")?
                .map(PathBuf::from),
            log_file: k.non_empty_string("logFile")?.map(PathBuf::from),
            log_level,
            unknown_log_level,
            log_to_stderr: k.bool("logToStderr")?.unwrap_or(true),
            log_options,
            capabilities,
            runtime_config: k.object("runtimeConfig")?.cloned().unwrap_or_default(),
            retry_delete_on_error: k.bool("retryDeleteOnError")?.unwrap_or(true),
            retry_delete_attempts: k
                .u64("retryDeleteAttempts")?
                .unwrap_or(DEFAULT_RETRY_DELETE_ATTEMPTS),
            retry_delete_seconds: k
                .u64("retryDeleteSeconds")?
                .unwrap_or(DEFAULT_RETRY_DELETE_SECONDS),
            local_source_dir: k.non_empty_string("localSourceDir")?.map(PathBuf::from),
            kubelet_root_dir: k
                .non_empty_string("kubeletRootDir")?
                .map_or_else(|| PathBuf::from(DEFAULT_KUBELET_ROOT_DIR), PathBuf::from),
            device_info_dir: k
                .non_empty_string("deviceInfoDir")?
                .map_or_else(|| PathBuf::from(DEFAULT_DEVICE_INFO_DIR), PathBuf::from),
            api_timeout_seconds: k
                .u64("apiTimeoutSeconds")?
                .unwrap_or(DEFAULT_API_TIMEOUT_SECONDS),
            added_interface_events: k.bool("addedInterfaceEvents")?.unwrap_or(true),
            require_capabilities: k.bool("requireCapabilities")?.unwrap_or(false),
            valid_attachments: valid_attachments(&k)?,
        };
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<()> {
        for (key, path) in [
            ("confDir", &self.conf_dir),
            ("cniDir", &self.cni_dir),
            ("kubeletRootDir", &self.kubelet_root_dir),
            ("deviceInfoDir", &self.device_info_dir),
        ] {
            if !path.is_absolute() {
                return Err(Error::config(key, "must be an absolute path"));
            }
        }
        if let Some(dir) = self.bin_dir.iter().find(|d| !d.is_absolute()) {
            return Err(Error::config(
                "binDir",
                format!("{} is not an absolute path", dir.display()),
            ));
        }
        if self.api_timeout_seconds == 0 {
            return Err(Error::config("apiTimeoutSeconds", "must be at least 1"));
        }
        if self.retry_delete_attempts == 0 {
            return Err(Error::config("retryDeleteAttempts", "must be at least 1"));
        }
        if self.cluster_network.is_none() && self.delegates.is_empty() {
            return Err(Error::config(
                "clusterNetwork",
                "either clusterNetwork or delegates must be set",
            ));
        }
        for (i, ns) in self.default_networks.iter().enumerate() {
            if ns.trim().is_empty() {
                return Err(Error::config(format!("defaultNetworks[{i}]"), "empty name"));
            }
        }
        Ok(())
    }

    /// Whether pods in `namespace` skip `defaultNetworks`.
    pub fn is_system_namespace(&self, namespace: &str) -> bool {
        self.system_namespaces.iter().any(|n| n == namespace)
    }

    /// Whether a pod in `pod_ns` may use a network in `net_ns` under `namespaceIsolation`.
    pub fn may_reference(&self, pod_ns: &str, net_ns: &str) -> bool {
        !self.namespace_isolation
            || pod_ns == net_ns
            || self.global_namespaces.iter().any(|g| g == net_ns)
    }

    /// Where the cache of `container_id` lives.
    pub fn cache_path(&self, container_id: &str) -> PathBuf {
        self.cni_dir.join(container_id)
    }

    /// The directory list for delegate plugins: `binDir`, then `CNI_PATH`.
    pub fn plugin_dirs(&self, cni_path: &[PathBuf]) -> Vec<PathBuf> {
        self.plugin_dirs_after(&[], cni_path)
    }

    /// The directory list for delegate plugins of a cached attachment: `recorded` (the list
    /// its ADD used), then `binDir`, then `CNI_PATH`; each directory once.
    pub fn plugin_dirs_after(&self, recorded: &[PathBuf], cni_path: &[PathBuf]) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::with_capacity(recorded.len() + self.bin_dir.len());
        for p in recorded.iter().chain(&self.bin_dir).chain(cni_path) {
            if !dirs.contains(p) {
                dirs.push(p.clone());
            }
        }
        dirs
    }

    /// The readiness indicator file, if one is configured.
    pub fn readiness_file(&self) -> Option<&Path> {
        self.readiness_indicator_file.as_deref()
    }
}

fn prefixed<T>(r: Result<T>, prefix: &str) -> Result<T> {
    r.map_err(|e| match e {
        Error::Config { key, reason } => Error::config(format!("{prefix}.{key}"), reason),
        other => other,
    })
}

fn valid_attachments(k: &Keys<'_>) -> Result<Option<Vec<ValidAttachment>>> {
    let key = VALID_ATTACHMENTS_KEY;
    let Some(value) = k.value(key) else {
        return Ok(None);
    };
    let Value::Array(items) = value else {
        return Err(wrong_type(key, "a list", value));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(o) = item else {
            return Err(wrong_type(&format!("{key}[{i}]"), "an object", item));
        };
        let ik = Keys { obj: o };
        let field = |name: &str| -> Result<String> {
            prefixed(ik.string(name), &format!("{key}[{i}]"))?
                .ok_or_else(|| Error::config(format!("{key}[{i}].{name}"), "missing"))
        };
        out.push(ValidAttachment {
            container_id: field("containerID")?,
            ifname: field("ifname")?,
        });
    }
    Ok(Some(out))
}

/// Checks a hardware address as Go's `net.ParseMAC` does (Multus validates `mac` and
/// `infiniband-guid` with it): 6, 8 or 20 bytes, as hex pairs all separated by `:` or all by
/// `-`, or as groups of four hex digits separated by `.`.
pub fn valid_hw_addr(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |part: &[u8]| part.iter().all(u8::is_ascii_hexdigit);
    let sizes = [6, 8, 20];
    if b.len() < 14 {
        return false;
    }
    let (group, sep) = match (b[2], b[4]) {
        (b':' | b'-', _) => (2, b[2]),
        (_, b'.') => (4, b'.'),
        _ => return false,
    };
    let stride = group + 1;
    if !(b.len() + 1).is_multiple_of(stride) {
        return false;
    }
    let groups = (b.len() + 1) / stride;
    if !sizes.contains(&(groups * group / 2)) {
        return false;
    }
    b.chunks(stride).enumerate().all(|(i, chunk)| {
        let (digits, rest) = chunk.split_at(group.min(chunk.len()));
        digits.len() == group
            && hex(digits)
            && match rest {
                [] => i + 1 == groups,
                [c] => *c == sep,
                _ => false,
            }
    })
}

/// Checks an `ips` entry: an address or an address with prefix length.
pub fn valid_ip_or_cidr(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok() || s.parse::<ipnet::IpNet>().is_ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[allow(clippy::needless_pass_by_value, reason = "tests pass literals")]
    fn parse(v: Value) -> Result<NetConf> {
        NetConf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn defaults_match_multus() {
        let c = parse(json!({
            "cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus",
            "clusterNetwork": "cbr0", "someFutureKey": {"x": 1}
        }))
        .unwrap();
        assert_eq!(c.conf_dir, PathBuf::from("/etc/cni/multus/net.d"));
        assert_eq!(c.cni_dir, PathBuf::from("/var/lib/cni/multus"));
        assert_eq!(c.bin_dir, vec![PathBuf::from("/opt/cni/bin")]);
        assert_eq!(c.multus_namespace, "kube-system");
        assert_eq!(c.system_namespaces, vec!["kube-system"]);
        assert_eq!(c.global_namespaces, vec!["default"]);
        assert_eq!(c.log_level, LogLevel::Panic);
        assert!(c.log_to_stderr);
        assert!(!c.namespace_isolation);
        assert!(c.retry_delete_on_error);
        assert_eq!((c.retry_delete_attempts, c.retry_delete_seconds), (3, 300));
        assert_eq!(c.log_options, LogOptions::default());
        assert_eq!(c.kubelet_root_dir, PathBuf::from("/var/lib/kubelet"));
        assert_eq!(
            c.device_info_dir,
            PathBuf::from("/var/run/k8s.cni.cncf.io/devinfo")
        );
        assert_eq!(c.api_timeout_seconds, 20);
        assert!(c.added_interface_events);
        assert!(!c.require_capabilities);
        // An empty globalNamespaces is unset (Multus keeps `default` then).
        let empty = parse(json!({
            "cniVersion": "0.3.1", "name": "m", "type": "multus", "clusterNetwork": "cbr0",
            "globalNamespaces": ""
        }))
        .unwrap();
        assert_eq!(empty.global_namespaces, vec!["default"]);
    }

    #[test]
    fn reads_every_key() {
        let c = parse(json!({
            "cniVersion": "1.1.0", "name": "m", "type": "multus",
            "confDir": "/c", "cniDir": "/d", "binDir": "/b1:/b2", "kubeconfig": "/k",
            "clusterNetwork": "/etc/cni/net.d/10-x.conf", "defaultNetworks": ["a", "ns/b"],
            "delegates": [{"type": "bridge"}], "systemNamespaces": ["s1"],
            "multusNamespace": "mns", "namespaceIsolation": true, "globalNamespaces": "g1, g2",
            "readinessindicatorfile": "/r", "logFile": "/l", "logLevel": "debug",
            "logToStderr": false, "logOptions": {"maxAge": 1, "maxSize": 2, "maxBackups": 3, "compress": false},
            "capabilities": {"portMappings": true}, "runtimeConfig": {"portMappings": []},
            "retryDeleteOnError": false, "retryDeleteAttempts": 7, "retryDeleteSeconds": 0,
            "localSourceDir": "/loc",
            "kubeletRootDir": "/var/snap/k8s/kubelet", "apiTimeoutSeconds": 3,
            "deviceInfoDir": "/run/devinfo",
            "addedInterfaceEvents": false, "requireCapabilities": true,
            "cni.dev/valid-attachments": [{"containerID": "c", "ifname": "eth0"}]
        }))
        .unwrap();
        assert_eq!(c.bin_dir, vec![PathBuf::from("/b1"), PathBuf::from("/b2")]);
        assert_eq!(c.global_namespaces, vec!["g1", "g2"]);
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.log_options.max_backups, 3);
        assert!(c.may_reference("a", "g2"));
        assert!(!c.may_reference("a", "b"));
        assert!(c.may_reference("a", "a"));
        assert!(!c.retry_delete_on_error);
        assert_eq!((c.retry_delete_attempts, c.retry_delete_seconds), (7, 0));
        assert_eq!(c.valid_attachments.unwrap()[0].ifname, "eth0");
        assert_eq!(c.capabilities.get("portMappings"), Some(&true));
        assert_eq!(c.kubelet_root_dir, PathBuf::from("/var/snap/k8s/kubelet"));
        assert_eq!(c.api_timeout_seconds, 3);
        assert_eq!(c.device_info_dir, PathBuf::from("/run/devinfo"));
        assert!(!c.added_interface_events);
        assert!(c.require_capabilities);
    }

    #[test]
    fn wrong_types_name_the_key() {
        let base =
            json!({"cniVersion": "0.4.0", "name": "m", "type": "multus", "clusterNetwork": "x"});
        let cases = [
            ("confDir", json!(5), "confDir"),
            ("defaultNetworks", json!("a"), "defaultNetworks"),
            ("defaultNetworks", json!(["a", 1]), "defaultNetworks[1]"),
            ("namespaceIsolation", json!("yes"), "namespaceIsolation"),
            ("delegates", json!([1]), "delegates[0]"),
            ("logOptions", json!({"maxAge": "x"}), "logOptions.maxAge"),
            ("capabilities", json!({"ips": "y"}), "capabilities.ips"),
            ("runtimeConfig", json!([]), "runtimeConfig"),
            ("retryDeleteOnError", json!(1), "retryDeleteOnError"),
            ("apiTimeoutSeconds", json!("5"), "apiTimeoutSeconds"),
            ("apiTimeoutSeconds", json!(0), "apiTimeoutSeconds"),
            ("kubeletRootDir", json!("var/lib/kubelet"), "kubeletRootDir"),
            ("deviceInfoDir", json!("run/devinfo"), "deviceInfoDir"),
            ("retryDeleteAttempts", json!(0), "retryDeleteAttempts"),
            ("retryDeleteSeconds", json!(-1), "retryDeleteSeconds"),
            ("type", json!(1), "type"),
            ("type", json!("bridge"), "type"),
            ("type", Value::Null, "type"),
        ];
        for (key, value, named) in cases {
            let mut v = base.clone();
            v[key] = value;
            let err = parse(v).unwrap_err();
            assert_eq!(err.code(), 7, "{key}: {err}");
            assert!(
                err.to_string().contains(&format!("{named}:")),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn rejects_missing_and_unsupported() {
        assert_eq!(
            parse(json!({"name": "m", "type": "multus", "clusterNetwork": "x"}))
                .unwrap_err()
                .code(),
            7
        );
        assert_eq!(
            parse(
                json!({"cniVersion": "0.2.1", "name": "m", "type": "multus", "clusterNetwork": "x"})
            )
            .unwrap_err()
            .code(),
            1
        );
        assert_eq!(
            parse(json!({"cniVersion": "1.0.0", "name": "m", "type": "multus"}))
                .unwrap_err()
                .code(),
            7
        );
        assert_eq!(NetConf::parse(b"[1]").unwrap_err().code(), 6);
        assert_eq!(NetConf::parse(b"{").unwrap_err().code(), 6);
    }

    #[test]
    fn hardware_addresses() {
        // What Go's net.ParseMAC accepts (Multus's check), and what it refuses.
        for ok in [
            "aa:bb:cc:dd:ee:ff",
            "AA-BB-CC-DD-EE-FF",
            "0000.5e00.5301",
            "00:11:22:33:44:55:66:77",
            "0200.5e10.0000.0001",
            "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01",
        ] {
            assert!(valid_hw_addr(ok), "{ok}");
        }
        for bad in [
            "aa:bb:cc:dd:ee",
            "zz:bb:cc:dd:ee:ff",
            "aa:bb-cc:dd:ee:ff",
            "aa:bb:cc:dd:ee:ff:",
            "aabb.ccdd.eeff.",
            "aa:bb:cc:dd:ee:ff:00",
            "",
        ] {
            assert!(!valid_hw_addr(bad), "{bad}");
        }
        assert!(valid_ip_or_cidr("192.0.2.1"));
        assert!(valid_ip_or_cidr("2001:db8::1/64"));
        assert!(!valid_ip_or_cidr("192.0.2.300/24"));
    }
}
