//! The Multus quickstart through kubelet: the `macvlan-conf` NAD of deploy/examples and two
//! sample pods annotated with it.
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use super::{SLEEP, apply, in_subnet, pod, wait_running};
use crate::{
    e2e::{Cluster, node::PRIMARY_NETWORK, wait},
    shell::{note, repo_root},
};

/// The network annotation the sample pods carry.
pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
/// The annotation the product writes.
pub const NETWORK_STATUS: &str = "k8s.v1.cni.cncf.io/network-status";
/// The NAD and its network's name.
pub const NAD: &str = "macvlan-conf";
/// `<namespace>/<name>` of the NAD.
pub const NETWORK: &str = "default/macvlan-conf";
/// The NAD's subnet.
const SUBNET: &str = "198.51.100.0/24";

/// The sample pods and their net1 addresses.
#[derive(Debug)]
pub struct Quickstart {
    /// samplepod-1's net1 address.
    pub a_net1: String,
    /// samplepod-2's.
    pub b_net1: String,
}

/// The example NAD with `master` set to the node's interface for it (the one edit the
/// quickstart asks of a user: the example names `eth0`).
fn nad(master: &str) -> anyhow::Result<String> {
    let path = repo_root().join("deploy/examples/macvlan-conf.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let from = r#""master": "eth0""#;
    ensure!(
        text.contains(from),
        "{} does not name {from}",
        path.display()
    );
    Ok(text.replace(from, &format!(r#""master": "{master}""#)))
}

/// A sample pod (the quickstart's samplepod, with the test image) labelled `app=<app>`.
pub fn sample_pod(name: &str, app: &str) -> Value {
    pod(name, &json!({"app": app}), &json!({NETWORKS: NAD}), SLEEP)
}

/// Creates pod `name` and waits until it runs with eth0 (default) and net1 (macvlan-conf) in its
/// network-status; returns net1's address.
pub fn start_sample(cluster: &mut Cluster, name: &str, app: &str) -> anyhow::Result<String> {
    apply(cluster, &sample_pod(name, app))?;
    let pod = wait_running(cluster, name)?;
    let net1 = net1_address(&pod)?;
    note(&format!("{name} (app={app}): net1 {net1}"));
    Ok(net1)
}

/// net1's address from the pod's network-status, after checking it lists eth0 as the default.
pub fn net1_address(pod: &Value) -> anyhow::Result<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("?");
    let text = pod["metadata"]["annotations"][NETWORK_STATUS]
        .as_str()
        .with_context(|| format!("pod {name} has no {NETWORK_STATUS}"))?;
    let status: Vec<Value> = serde_json::from_str(text)
        .with_context(|| format!("pod {name}: {NETWORK_STATUS} is not a list: {text}"))?;
    let eth0 = status
        .iter()
        .find(|s| s["interface"] == "eth0")
        .with_context(|| format!("pod {name}: no eth0 in {text}"))?;
    ensure!(
        eth0["default"] == true && eth0["name"] == PRIMARY_NETWORK,
        "pod {name}: eth0 is not the default {PRIMARY_NETWORK}: {eth0}"
    );
    let net1 = status
        .iter()
        .find(|s| s["interface"] == "net1")
        .with_context(|| format!("pod {name}: no net1 in {text}"))?;
    ensure!(
        net1["name"] == NETWORK,
        "pod {name}: net1 is not {NETWORK}: {net1}"
    );
    let ip = net1["ips"][0]
        .as_str()
        .with_context(|| format!("pod {name}: net1 has no address: {net1}"))?;
    ensure!(
        in_subnet(ip, SUBNET),
        "pod {name}: net1 {ip} is not in {SUBNET}"
    );
    Ok(ip.to_owned())
}

/// The NAD and samplepod-1 (app=a), samplepod-2 (app=b).
pub fn pods(cluster: &mut Cluster) -> anyhow::Result<Quickstart> {
    let master = cluster.node().master().to_owned();
    note(&format!(
        "deploy/examples/macvlan-conf.yaml with master {master} (the node's interface for it)"
    ));
    cluster
        .kubectl()
        .run_with(&["apply", "-f", "-"], Some(&nad(&master)?))?;
    let a_net1 = start_sample(cluster, "samplepod-1", "a")?;
    let b_net1 = start_sample(cluster, "samplepod-2", "b")?;
    Ok(Quickstart { a_net1, b_net1 })
}

/// Whether one ping from pod `from` to `ip` is answered within a second.
pub fn ping(cluster: &Cluster, from: &str, ip: &str) -> bool {
    cluster
        .kubectl()
        .quiet(&[
            "exec",
            from,
            "--",
            "/bin/busybox",
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            ip,
        ])
        .is_ok()
}

/// Pings until one is answered (within 15 s: a fresh attachment answers its first ARP late).
pub fn ping_ok(cluster: &Cluster, from: &str, ip: &str) -> anyhow::Result<()> {
    note(&format!(
        "$ kubectl exec {from} -- /bin/busybox ping -c 1 -W 1 {ip}"
    ));
    wait(
        Duration::from_secs(15),
        &format!("{from} to get a reply from {ip}"),
        || Ok(ping(cluster, from, ip).then_some(())),
    )
}

/// Checks that pod `name` still runs, never restarted, with the same uid.
pub fn still_running(cluster: &Cluster, name: &str, uid: &str) -> anyhow::Result<()> {
    let pod = cluster.kubectl().get(&["pod", name])?;
    if pod["metadata"]["uid"] != uid {
        bail!("pod {name} was replaced");
    }
    ensure!(
        pod["status"]["phase"] == "Running",
        "pod {name} is {}",
        pod["status"]["phase"]
    );
    let restarts = pod["status"]["containerStatuses"][0]["restartCount"].as_u64();
    ensure!(restarts == Some(0), "pod {name} restarted: {restarts:?}");
    Ok(())
}
