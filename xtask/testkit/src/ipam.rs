//! What host-local IPAM leaves on disk, for checks that nothing leaked.
use std::path::Path;

/// host-local leases under `data_dir`: `(network, address)` for every file named like an address
/// in a network's directory, sorted. A missing directory has none.
pub fn host_local_leases(data_dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for net in std::fs::read_dir(data_dir).into_iter().flatten().flatten() {
        let net_name = net.file_name().to_string_lossy().into_owned();
        for f in std::fs::read_dir(net.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.parse::<std::net::IpAddr>().is_ok() {
                out.push((net_name.clone(), name));
            }
        }
    }
    out.sort();
    out
}
