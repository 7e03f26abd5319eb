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
