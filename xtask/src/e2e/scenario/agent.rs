//! The product installed as a user installs it: `kubectl apply -f deploy/`, then the image
//! reference set to the imported image with `kubectl set image` (the one documented override).
use std::{collections::BTreeSet, path::Path, time::Duration};

use anyhow::{Context as _, ensure};
use serde_json::Value;

use super::super::{
    AGENT_SELECTOR, Cluster, host,
    images::AGENT_IMAGE,
    node::{CNI_BIN, NET_D},
    wait,
};
use crate::shell::{note, repo_root};

/// Where the agent pins its maps and links (the ConfigMap's `bpffsDir`).
pub const BPFFS_DIR: &str = "/sys/fs/bpf/multus";

/// The running agent pod (one node: one pod) whose containers run the imported image.
pub fn running_pod(cluster: &Cluster) -> anyhow::Result<Option<Value>> {
    let pods = cluster
        .kubectl()
        .get(&["pods", "-n", "kube-system", "-l", AGENT_SELECTOR])?;
    let items = pods["items"].as_array().cloned().unwrap_or_default();
    Ok(items.into_iter().find(|p| {
        let ready = p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        let image = ["initContainers", "containers"].iter().all(|list| {
            p["spec"][list]
                .as_array()
                .is_some_and(|c| c.iter().all(|c| c["image"] == AGENT_IMAGE))
        });
        ready && image && p["metadata"]["deletionTimestamp"].is_null()
    }))
}

/// Waits for a ready agent pod other than `old_uid`; returns it.
pub fn wait_ready(cluster: &mut Cluster, old_uid: Option<&str>) -> anyhow::Result<Value> {
    wait(Duration::from_secs(180), "a ready agent pod", || {
        cluster.check_running()?;
        Ok(running_pod(cluster)?.filter(|p| p["metadata"]["uid"].as_str() != old_uid))
    })
}

/// Installs the product and waits for the agent; returns the pins under bpffs before any pod
/// has an attachment (what the tear-down must come back to).
pub fn install(cluster: &mut Cluster) -> anyhow::Result<BTreeSet<String>> {
    let deploy = repo_root().join("deploy");
    let k = cluster.kubectl().clone();
    k.run(&["apply", "-f", &deploy.to_string_lossy()])?;
    k.run(&[
        "-n",
        "kube-system",
        "set",
        "image",
        "daemonset/multus-agent",
        &format!("*={AGENT_IMAGE}"),
    ])?;
    let pod = wait_ready(cluster, None)?;
    note(&format!(
        "agent pod {} ready on {}",
        pod["metadata"]["name"].as_str().unwrap_or("?"),
        pod["spec"]["nodeName"].as_str().unwrap_or("?")
    ));
    let shim = Path::new(CNI_BIN).join("multus-shim");
    ensure!(
        shim.is_file(),
        "the init container did not install {}",
        shim.display()
    );
    let conf = ["00-multus.conf", "00-multus.conflist"]
        .iter()
        .map(|n| Path::new(NET_D).join(n))
        .find(|p| p.is_file())
        .with_context(|| format!("the init container wrote no 00-multus.conf(list) in {NET_D}"))?;
    note(&format!(
        "installed: {} and {}",
        shim.display(),
        conf.display()
    ));
    Ok(host::files_below(Path::new(BPFFS_DIR)))
}
