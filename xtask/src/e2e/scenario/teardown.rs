//! The tear-down a user does: the pods deleted, and nothing of theirs left on the node.
use std::{collections::BTreeSet, path::Path, time::Duration};

use anyhow::ensure;

use super::agent::BPFFS_DIR;
use crate::{
    e2e::{Cluster, host::files_below, wait},
    shell::note,
};

/// The agent's attachment records (`dataplaneStateDir`).
const RECORDS: &str = "/run/multus/dataplane";
/// The DEL cache (`cniDir`).
const CACHE: &str = "/var/lib/cni/multus";
/// host-local's leases, one directory per network.
const LEASES: &str = "/var/lib/cni/networks";

/// What the node still holds for pods.
fn left(pins_before: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let pins = files_below(Path::new(BPFFS_DIR));
    out.extend(
        pins.difference(pins_before)
            .map(|p| format!("pin {BPFFS_DIR}/{p}")),
    );
    out.extend(
        files_below(Path::new(RECORDS))
            .into_iter()
            .map(|f| format!("record {RECORDS}/{f}")),
    );
    out.extend(
        files_below(Path::new(CACHE))
            .into_iter()
            .map(|f| format!("cache {CACHE}/{f}")),
    );
    out.extend(
        multus_testkit::ipam::host_local_leases(Path::new(LEASES))
            .into_iter()
            .map(|(net, addr)| format!("lease {LEASES}/{net}/{addr}")),
    );
    out
}

/// Deletes every sample pod and waits until nothing of theirs is left.
pub fn pods(cluster: &mut Cluster, pins_before: &BTreeSet<String>) -> anyhow::Result<()> {
    let held = left(pins_before);
    ensure!(
        !held.is_empty(),
        "the running pods hold nothing on the node: the check would prove nothing"
    );
    note(&format!(
        "the pods hold {} leases, pins, records and cache files",
        held.len()
    ));
    cluster.kubectl().run(&[
        "delete",
        "pod",
        "samplepod-1",
        "samplepod-2",
        "samplepod-3",
        "samplepod-4",
        "--wait=true",
        "--timeout=60s",
    ])?;
    let result = wait(
        Duration::from_secs(30),
        "the node to release everything",
        || Ok(left(pins_before).is_empty().then_some(())),
    );
    if result.is_err() {
        anyhow::bail!("left after the pods were deleted: {:?}", left(pins_before));
    }
    note("nothing left");
    Ok(())
}
