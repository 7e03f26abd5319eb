//! The agent's configuration: a JSON file in the style of Multus's `daemon-config.json`.
//!
//! Keys the agent itself uses are read here (a wrong type is an error naming the key). Every
//! other key is a CNI configuration key (`clusterNetwork`, `cniDir`, `binDir`,
//! `defaultNetworks`, ...): as in Multus's thick daemon, those override the keys of the same
//! name in the configuration each CNI request brings (the shim's `00-multus.conf`), except
//! `cniVersion`, `name` and `type`, which stay the runtime's so the result has the version the
//! runtime asked for.
use std::{
    net::{IpAddr, Ipv6Addr},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

use multus_cni::{config::LogOptions, thick};
use serde_json::{Map, Value};

use crate::dataplane::AttachMode;

/// Default metrics port.
pub const DEFAULT_METRICS_PORT: u16 = 9110;
/// Default port of `/healthz` and `/readyz` alone (the probes), apart from the metrics.
pub const DEFAULT_HEALTH_PORT: u16 = 9111;
/// Default directory of NAD and pod files in standalone mode.
pub const DEFAULT_LOCAL_SOURCE_DIR: &str = "/etc/cni/multus/local.d";

/// A configuration problem, naming the key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a JSON object.
    #[error("{path}: not a JSON object: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A key has the wrong type or an invalid value.
    #[error("{key}: {reason}")]
    Key {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Where pods and networks come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceMode {
    /// Watch caches over the API server, reached with this kubeconfig (`None`: in-cluster).
    Kubernetes {
        /// The kubeconfig file; `None` for the pod's service account.
        kubeconfig: Option<PathBuf>,
    },
    /// NAD and pod files in a local directory the agent watches (no cluster).
    Standalone {
        /// The directory.
        dir: PathBuf,
    },
}

/// The agent's settings.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// `socketDir`: the directory of the CNI socket (`multus.sock`), made 0700.
    pub socket_dir: PathBuf,
    /// `metricsAddress`: where `/metrics` (and `/healthz`, `/readyz`) listen; `::` (the
    /// default) is dual-stack, falling back to `0.0.0.0` on a node without IPv6.
    pub metrics_address: IpAddr,
    /// `metricsPort`; 0 turns `/metrics` off.
    pub metrics_port: u16,
    /// `healthAddress`: where `/healthz` and `/readyz` alone listen (`::`: dual-stack).
    pub health_address: IpAddr,
    /// `healthPort`: the probes' port, served whether or not metrics are; 0 turns it off, the
    /// metrics port's number serves both on one listener.
    pub health_port: u16,
    /// `connectionLimit`: socket connections open at once; more wait in the listen queue.
    pub connection_limit: usize,
    /// `requestConcurrency`: CNI requests running the engine at once; more wait their turn.
    pub request_concurrency: usize,
    /// `maxRequestBytes`: the largest request body (the runtime's stdin) accepted.
    pub max_request_bytes: usize,
    /// `dropEventBuffer`: drop events the agent keeps for `multus-agent observe`.
    pub drop_event_buffer: usize,
    /// `dropEventRate`: drop events per second and attachment (0: none).
    pub drop_event_rate: u32,
    /// `dropEventBurst`: drop events an attachment may emit at once.
    pub drop_event_burst: u32,
    /// `maxPods`, `attachmentsPerPod`, `flowsPerAttachment`: how large the dataplane's maps are.
    pub map_sizing: crate::dataplane::MapSizing,
    /// `nodeName` (or `MULTUS_NODE_NAME`): this node, for the pod watch.
    pub node_name: Option<String>,
    /// Kubernetes or standalone.
    pub source: SourceMode,
    /// `podCacheWaitMillis`: how long ADD waits for a pod the cache has not seen, before one
    /// live GET.
    pub pod_cache_wait: Duration,
    /// `bpffsDir`: pins of the dataplane.
    pub bpffs_dir: PathBuf,
    /// `dataplaneStateDir`: attachment records (tmpfs).
    pub dataplane_state_dir: PathBuf,
    /// `attachMode`: `tcx` or `clsact`; default: TCX where the kernel has it.
    pub attach_mode: Option<AttachMode>,
    /// `reconcileIntervalSeconds`: how often attachments of vanished namespaces are removed.
    pub reconcile_interval: Duration,
    /// `shutdownGraceSeconds`: how long requests in flight may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// `logLevel`: `debug`, `verbose` (info), `error` or `panic` (Multus's names) or a tracing
    /// filter.
    pub log_level: String,
    /// `logFormat`: `text` or `json`.
    pub log_json: bool,
    /// `logFile`: also write the log to this file, rotated by size like the CNI binary's.
    pub log_file: Option<PathBuf>,
    /// `logToStderr` (default true): write the log to stderr (the container's log).
    pub log_to_stderr: bool,
    /// `logOptions` (`maxSize` MB, `maxBackups`): rotation of `logFile`. The key also stays a
    /// CNI override, as in Multus.
    pub log_options: LogOptions,
    /// `cniVersion`: the version for generated CNI configurations (node install).
    pub cni_version: Option<String>,
    /// `chrootDir`: delegates run with their root here (the node's `/` as mounted in the
    /// agent's container), so binDir, `CNI_PATH`, `CNI_NETNS` and every path in a delegate's
    /// configuration mean the node's paths, as they do when the runtime runs a plugin.
    pub chroot_dir: Option<PathBuf>,
    /// Every other key: overrides for the CNI configuration of each request.
    pub cni_overrides: Map<String, Value>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            socket_dir: PathBuf::from(thick::DEFAULT_SOCKET_DIR),
            metrics_address: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            metrics_port: DEFAULT_METRICS_PORT,
            health_address: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            health_port: DEFAULT_HEALTH_PORT,
            connection_limit: 256,
            request_concurrency: 4,
            max_request_bytes: 1024 * 1024,
            drop_event_buffer: crate::dataplane::events::DEFAULT_CAPACITY,
            drop_event_rate: crate::dataplane::events::DEFAULT_RATE,
            drop_event_burst: crate::dataplane::events::DEFAULT_BURST,
            map_sizing: crate::dataplane::MapSizing::default(),
            node_name: None,
            source: SourceMode::Standalone {
                dir: PathBuf::from(DEFAULT_LOCAL_SOURCE_DIR),
            },
            pod_cache_wait: Duration::from_millis(1000),
            bpffs_dir: PathBuf::from(thick::DEFAULT_BPFFS_DIR),
            dataplane_state_dir: PathBuf::from(thick::DEFAULT_DATAPLANE_STATE_DIR),
            attach_mode: None,
            reconcile_interval: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(20),
            log_level: "verbose".to_owned(),
            log_json: false,
            log_file: None,
            log_to_stderr: true,
            log_options: LogOptions::default(),
            cni_version: None,
            chroot_dir: None,
            cni_overrides: Map::new(),
        }
    }
}

/// Keys of the CNI configuration that always stay the runtime's.
const RUNTIME_KEYS: [&str; 3] = ["cniVersion", "name", "type"];

/// Reads keys one at a time, naming the key in errors.
struct Keys {
    obj: Map<String, Value>,
}

impl Keys {
    fn take(&mut self, key: &str) -> Option<Value> {
        self.obj.remove(key).filter(|v| !v.is_null())
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(key_err(key, "expected a string")),
        }
    }

    fn path(&mut self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        match self.string(key)? {
            Some(p) if !Path::new(&p).is_absolute() => {
                Err(key_err(key, format!("{p:?} is not an absolute path")))
            }
            other => Ok(other.map(PathBuf::from)),
        }
    }

    fn address(&mut self, key: &str) -> Result<Option<IpAddr>, ConfigError> {
        self.string(key)?
            .map(|a| {
                a.parse()
                    .map_err(|_| key_err(key, format!("{a:?} is not an IP address")))
            })
            .transpose()
    }

    fn bool(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(_) => Err(key_err(key, "expected true or false")),
        }
    }

    fn uint(&mut self, key: &str, max: u64) -> Result<Option<u64>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n <= max => Ok(Some(n)),
                _ => Err(key_err(key, format!("expected an integer from 0 to {max}"))),
            },
        }
    }

    fn positive(&mut self, key: &str, max: u64) -> Result<Option<u64>, ConfigError> {
        match self.uint(key, max)? {
            Some(0) => Err(key_err(key, "must be greater than 0")),
            other => Ok(other),
        }
    }

    /// `key` as an integer in `range`, in the field's type; `default` when the key is absent.
    fn int<T: TryFrom<u64>>(
        &mut self,
        key: &str,
        range: RangeInclusive<u64>,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.uint(key, *range.end())? {
            None => Ok(default),
            Some(0) if *range.start() == 1 => Err(key_err(key, "must be greater than 0")),
            Some(n) if !range.contains(&n) => Err(key_err(
                key,
                format!(
                    "expected an integer from {} to {}",
                    range.start(),
                    range.end()
                ),
            )),
            Some(n) => T::try_from(n).map_err(|_| key_err(key, "out of range")),
        }
    }
}

fn key_err(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

impl AgentConfig {
    /// Reads a configuration file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let obj = match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(obj)) => obj,
            Ok(_) => {
                return Err(ConfigError::Syntax {
                    path: path.to_owned(),
                    reason: "expected an object".to_owned(),
                });
            }
            Err(e) => {
                return Err(ConfigError::Syntax {
                    path: path.to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        Self::from_object(obj)
    }

    /// Reads a configuration from a parsed JSON object.
    pub fn from_object(obj: Map<String, Value>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let mut k = Keys { obj };
        let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
        // Multus writes `socketDir` into the daemon config and `daemonSocketDir` into the shim's.
        let socket_dir = k.path("socketDir")?;
        let daemon_socket_dir = k.path("daemonSocketDir")?;
        let kubeconfig = k.path("kubeconfig")?;
        let local_source_dir = k.path("localSourceDir")?;
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
            && std::env::var_os("KUBERNETES_SERVICE_PORT").is_some();
        let source = match (local_source_dir, kubeconfig) {
            (Some(dir), _) => SourceMode::Standalone { dir },
            (None, Some(kubeconfig)) => SourceMode::Kubernetes {
                kubeconfig: Some(kubeconfig),
            },
            (None, None) if in_cluster => SourceMode::Kubernetes { kubeconfig: None },
            (None, None) => d.source.clone(),
        };
        let metrics_address = k.address("metricsAddress")?.unwrap_or(d.metrics_address);
        let health_address = k.address("healthAddress")?.unwrap_or(d.health_address);
        let attach_mode = k
            .string("attachMode")?
            .map(|m| {
                m.parse::<AttachMode>()
                    .map_err(|e| key_err("attachMode", e))
            })
            .transpose()?;
        let log_json = match k.string("logFormat")?.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(key_err(
                    "logFormat",
                    format!("{other:?} is not text or json"),
                ));
            }
        };
        let log_options = match k.obj.get("logOptions") {
            None | Some(Value::Null) => d.log_options.clone(),
            Some(Value::Object(o)) => LogOptions::from_object(o).map_err(|e| match e {
                multus_cni::Error::Config { key, reason } => key_err(&key, reason),
                other => key_err("logOptions", other.to_string()),
            })?,
            Some(_) => return Err(key_err("logOptions", "expected an object")),
        };
        let config = Self {
            socket_dir: socket_dir.or(daemon_socket_dir).unwrap_or(d.socket_dir),
            metrics_address,
            metrics_port: k.int("metricsPort", 0..=u64::from(u16::MAX), d.metrics_port)?,
            health_address,
            health_port: k.int("healthPort", 0..=u64::from(u16::MAX), d.health_port)?,
            connection_limit: k.int("connectionLimit", 1..=65_536, d.connection_limit)?,
            request_concurrency: k.int("requestConcurrency", 1..=1024, d.request_concurrency)?,
            max_request_bytes: k.int(
                "maxRequestBytes",
                1..=64 * 1024 * 1024,
                d.max_request_bytes,
            )?,
            drop_event_buffer: k.int("dropEventBuffer", 1..=1 << 20, d.drop_event_buffer)?,
            drop_event_rate: k.int("dropEventRate", 0..=1_000_000, d.drop_event_rate)?,
            drop_event_burst: k.int("dropEventBurst", 1..=1_000_000, d.drop_event_burst)?,
            map_sizing: {
                use crate::dataplane::sizing as z;
                z::MapSizing::for_node(
                    k.int("maxPods", 1..=10_000, z::DEFAULT_MAX_PODS)?,
                    k.int("attachmentsPerPod", 1..=64, z::DEFAULT_ATTACHMENTS_PER_POD)?,
                    k.int(
                        "flowsPerAttachment",
                        16..=1 << 20,
                        z::DEFAULT_FLOWS_PER_ATTACHMENT,
                    )?,
                )
            },
            node_name: k.string("nodeName")?,
            source,
            pod_cache_wait: k
                .uint("podCacheWaitMillis", 60_000)?
                .map_or(d.pod_cache_wait, Duration::from_millis),
            bpffs_dir: k.path("bpffsDir")?.unwrap_or(d.bpffs_dir),
            dataplane_state_dir: k
                .path("dataplaneStateDir")?
                .unwrap_or(d.dataplane_state_dir),
            attach_mode,
            reconcile_interval: secs(
                k.positive("reconcileIntervalSeconds", 86_400)?,
                d.reconcile_interval,
            ),
            shutdown_grace: secs(k.uint("shutdownGraceSeconds", 3600)?, d.shutdown_grace),
            log_level: k.string("logLevel")?.unwrap_or(d.log_level),
            log_json,
            log_file: k.path("logFile")?,
            log_to_stderr: k.bool("logToStderr")?.unwrap_or(d.log_to_stderr),
            log_options,
            cni_version: k.string("cniVersion")?,
            chroot_dir: k.path("chrootDir")?,
            cni_overrides: Map::new(),
        };
        // Multus daemon keys that mean nothing here, accepted so a Multus file still loads.
        k.take("enablePprof");
        for key in RUNTIME_KEYS {
            k.take(key);
        }
        Ok(Self {
            cni_overrides: k.obj,
            ..config
        })
    }

    /// The CNI socket.
    pub fn socket_path(&self) -> PathBuf {
        thick::socket_path(&self.socket_dir)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(v: Value) -> Result<AgentConfig, ConfigError> {
        match v {
            Value::Object(o) => AgentConfig::from_object(o),
            _ => unreachable!(),
        }
    }

    #[test]
    fn reads_multus_daemon_keys_and_keeps_cni_keys_as_overrides() {
        let c = parse(json!({
            "cniVersion": "0.3.1", "socketDir": "/host/run/multus", "metricsPort": 9091,
            "connectionLimit": 10, "chrootDir": "/hostroot", "logLevel": "debug",
            "clusterNetwork": "/etc/cni/net.d/10-flannel.conflist", "cniDir": "/var/lib/x",
            "localSourceDir": "/etc/nets", "attachMode": "clsact", "name": "ignored",
        }))
        .unwrap();
        assert_eq!(
            c.socket_path(),
            PathBuf::from("/host/run/multus/multus.sock")
        );
        assert_eq!((c.metrics_port, c.connection_limit), (9091, 10));
        assert_eq!(c.attach_mode, Some(AttachMode::Clsact));
        assert_eq!(c.cni_version.as_deref(), Some("0.3.1"));
        assert_eq!(c.chroot_dir.as_deref(), Some(Path::new("/hostroot")));
        assert_eq!(
            c.source,
            SourceMode::Standalone {
                dir: PathBuf::from("/etc/nets")
            }
        );
        let keys: Vec<_> = c.cni_overrides.keys().map(String::as_str).collect();
        assert_eq!(keys, ["clusterNetwork", "cniDir"]);
    }

    #[test]
    fn log_file_keys_of_the_multus_daemon() {
        let c = parse(json!({
            "logFile": "/var/log/multus-agent.log", "logToStderr": false,
            "logOptions": {"maxSize": 10, "maxBackups": 2},
        }))
        .unwrap();
        assert_eq!(
            c.log_file.as_deref(),
            Some(Path::new("/var/log/multus-agent.log"))
        );
        assert!(!c.log_to_stderr);
        assert_eq!((c.log_options.max_size, c.log_options.max_backups), (10, 2));
        // logOptions stays a CNI key too, as Multus passes it through.
        assert!(c.cni_overrides.contains_key("logOptions"));
        let d = parse(json!({})).unwrap();
        assert!(d.log_file.is_none() && d.log_to_stderr);
    }

    #[test]
    fn drop_event_keys() {
        let d = parse(json!({})).unwrap();
        assert_eq!(
            (d.drop_event_buffer, d.drop_event_rate, d.drop_event_burst),
            (4096, 100, 200)
        );
        let c =
            parse(json!({"dropEventBuffer": 10, "dropEventRate": 0, "dropEventBurst": 5})).unwrap();
        assert_eq!(
            (c.drop_event_buffer, c.drop_event_rate, c.drop_event_burst),
            (10, 0, 5)
        );
        for key in ["dropEventBuffer", "dropEventBurst"] {
            let err = parse(json!({ key: 0 })).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
        let err = parse(json!({"dropEventRate": 2_000_000}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("dropEventRate"), "{err}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        for (v, key) in [
            (json!({"metricsPort": "x"}), "metricsPort"),
            (json!({"metricsPort": 70000}), "metricsPort"),
            (json!({"requestConcurrency": 0}), "requestConcurrency"),
            (json!({"socketDir": "relative"}), "socketDir"),
            (json!({"chrootDir": "hostroot"}), "chrootDir"),
            (json!({"chrootDir": 1}), "chrootDir"),
            (json!({"attachMode": "xdp"}), "attachMode"),
            (json!({"metricsAddress": "nowhere"}), "metricsAddress"),
            (json!({"healthAddress": "::g"}), "healthAddress"),
            (json!({"healthPort": -1}), "healthPort"),
            (json!({"logFile": "agent.log"}), "logFile"),
            (json!({"logToStderr": "no"}), "logToStderr"),
            (
                json!({"logOptions": {"maxSize": "big"}}),
                "logOptions.maxSize",
            ),
        ] {
            let err = parse(v).unwrap_err().to_string();
            assert!(err.starts_with(key), "{err}");
        }
    }

    #[test]
    fn the_shipped_default_file_is_the_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config/agent-config.json");
        let c = AgentConfig::from_file(&path).unwrap();
        let d = AgentConfig::default();
        assert_eq!(c.socket_dir, d.socket_dir);
        assert_eq!(c.metrics_port, d.metrics_port);
        assert_eq!(
            (c.metrics_address, c.health_address, c.health_port),
            (d.metrics_address, d.health_address, d.health_port)
        );
        assert_eq!(c.connection_limit, d.connection_limit);
        assert_eq!(c.request_concurrency, d.request_concurrency);
        assert_eq!(c.max_request_bytes, d.max_request_bytes);
        assert_eq!(c.bpffs_dir, d.bpffs_dir);
        assert_eq!(c.dataplane_state_dir, d.dataplane_state_dir);
        assert_eq!(c.source, d.source);
        assert_eq!(c.pod_cache_wait, d.pod_cache_wait);
        assert_eq!(c.reconcile_interval, d.reconcile_interval);
        assert_eq!(c.shutdown_grace, d.shutdown_grace);
        assert!(c.cni_overrides.is_empty(), "{:?}", c.cni_overrides);
        // The one deliberate difference: the DaemonSet mounts the node's / there.
        assert_eq!(c.chroot_dir.as_deref(), Some(Path::new("/hostroot")));
        assert_eq!(d.chroot_dir, None);
    }
}
