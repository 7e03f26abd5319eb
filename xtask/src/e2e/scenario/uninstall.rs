//! Uninstalling as docs/deploy.md says: the product deleted, then deploy/uninstall/ run on the
//! node; afterwards the node starts pods with its primary CNI alone.
use std::{path::Path, time::Duration};

use anyhow::{Context as _, ensure};

use super::{agent::BPFFS_DIR, plain_pod, quickstart::NETWORK_STATUS};
use crate::{
    e2e::{
        AGENT_SELECTOR, Cluster,
        host::files_below,
        images::AGENT_IMAGE,
        node::{CNI_BIN, NET_D},
        wait,
    },
    shell::{note, repo_root},
};

/// The uninstall DaemonSet's pods.
const UNINSTALL_SELECTOR: &str = "app.kubernetes.io/name=multus-uninstall";

/// Runs the documented uninstall and checks the node is back to its primary CNI.
pub fn check(cluster: &mut Cluster) -> anyhow::Result<()> {
    let deploy = repo_root().join("deploy");
    let uninstall = deploy.join("uninstall");
    let k = cluster.kubectl().clone();
    // The agent's logs go with its pod.
    cluster.save_agent_logs();
    k.run(&[
        "delete",
        "-f",
        &deploy.to_string_lossy(),
        "--wait=true",
        "--timeout=120s",
    ])?;
    wait(Duration::from_secs(90), "the agent pod to go", || {
        cluster.check_running()?;
        let pods = k.get(&["pods", "-n", "kube-system", "-l", AGENT_SELECTOR])?;
        Ok(pods["items"]
            .as_array()
            .is_none_or(Vec::is_empty)
            .then_some(()))
    })?;
    k.run(&["apply", "-f", &uninstall.to_string_lossy()])?;
    k.run(&[
        "-n",
        "kube-system",
        "set",
        "image",
        "daemonset/multus-uninstall",
        &format!("*={AGENT_IMAGE}"),
    ])?;
    wait(
        Duration::from_secs(120),
        "the uninstall pod to finish",
        || {
            cluster.check_running()?;
            let pods = k.get(&["pods", "-n", "kube-system", "-l", UNINSTALL_SELECTOR])?;
            let done = pods["items"].as_array().into_iter().flatten().any(|p| {
                p["spec"]["containers"][0]["image"] == AGENT_IMAGE
                    && p["status"]["conditions"].as_array().is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            });
            Ok(done.then_some(()))
        },
    )?;
    let report = k.quiet(&[
        "-n",
        "kube-system",
        "logs",
        "-l",
        UNINSTALL_SELECTOR,
        "-c",
        "uninstall",
        "--tail=-1",
    ])?;
    for line in report.lines() {
        note(&format!("  {line}"));
    }
    k.run(&[
        "delete",
        "-f",
        &uninstall.to_string_lossy(),
        "--wait=true",
        "--timeout=60s",
    ])?;

    for name in ["00-multus.conf", "00-multus.conflist"] {
        let path = Path::new(NET_D).join(name);
        ensure!(!path.exists(), "{} is still there", path.display());
    }
    let shim = Path::new(CNI_BIN).join("multus-shim");
    ensure!(!shim.exists(), "{} is still there", shim.display());
    let pins = files_below(Path::new(BPFFS_DIR));
    ensure!(pins.is_empty(), "pins left under {BPFFS_DIR}: {pins:?}");
    note("no multus configuration, shim or pin left on the node");
    let pod = plain_pod(cluster).context("a pod after the uninstall")?;
    ensure!(
        pod["metadata"]["annotations"][NETWORK_STATUS].is_null(),
        "the pod went through multus after the uninstall: {}",
        pod["metadata"]["annotations"]
    );
    note("the pod started with the primary CNI alone (no network-status)");
    Ok(())
}
