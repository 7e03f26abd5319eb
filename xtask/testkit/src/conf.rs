//! Network configurations the stress run and the agent bench both give their nodes.
use std::path::Path;

use serde_json::{Value, json};

/// host-local IPAM on the /24 `subnet` (`"192.0.2.0/24"`), handing out .2 to .254, its leases
/// in `data_dir`.
pub fn host_local(data_dir: &Path, subnet: &str) -> Value {
    let base = subnet.trim_end_matches(".0/24");
    json!({"type": "host-local", "dataDir": data_dir,
           "ranges": [[{"subnet": subnet, "rangeStart": format!("{base}.2"),
                        "rangeEnd": format!("{base}.254")}]]})
}

/// The cluster network: a macvlan on `vpar` in 203.0.113.0/24, its leases in `ipam_dir`.
pub fn cluster_macvlan(ipam_dir: &Path) -> Value {
    json!({"cniVersion": "1.0.0", "name": "cluster", "type": "macvlan", "master": "vpar",
           "mode": "bridge", "ipam": host_local(ipam_dir, "203.0.113.0/24")})
}

/// Where Debian's reference CNI plugins are installed.
pub const PLUGIN_DIR: &str = "/usr/lib/cni";

/// The directories a test node gives its shim and agent: `dir` holds `run/`, `cache/`, `conf/`
/// and `ipam/`; `bpffs` and `state` are the pin and record directories.
pub struct NodeDirs<'a> {
    /// The node's scratch directory.
    pub dir: &'a Path,
    /// Its bpffs directory.
    pub bpffs: &'a Path,
    /// Its dataplane record directory.
    pub state: &'a Path,
}

impl NodeDirs<'_> {
    /// The shim's configuration, as the install writes it for this node's agent.
    pub fn shim(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus-shim",
               "daemonSocketDir": self.dir.join("run"), "cniDir": self.dir.join("cache"),
               "binDir": PLUGIN_DIR, "bpffsDir": self.bpffs,
               "dataplaneStateDir": self.state})
    }

    /// The agent's configuration with the cluster network as its only delegate, quiet logs and
    /// metrics on 127.0.0.1:9110; callers add their own keys.
    pub fn agent(&self) -> Value {
        json!({"socketDir": self.dir.join("run"), "metricsAddress": "127.0.0.1",
               "metricsPort": 9110, "bpffsDir": self.bpffs,
               "dataplaneStateDir": self.state,
               "logLevel": "error", "cniDir": self.dir.join("cache"), "binDir": PLUGIN_DIR,
               "confDir": self.dir.join("conf"),
               "delegates": [cluster_macvlan(&self.dir.join("ipam"))]})
    }
}
