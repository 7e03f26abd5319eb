//! The user's path through the cluster, one checked step at a time.
use std::{path::Path, time::Duration};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

mod agent;
mod metrics;
mod policy;
mod quickstart;
mod restart;
mod teardown;
mod uninstall;

use super::{Cluster, Steps, images::BUSYBOX_IMAGE, node::PRIMARY_SUBNET, wait};

/// How long a pod may take to run (image already imported).
const POD_START: Duration = Duration::from_secs(90);

/// Runs every stage; the first failing step ends the run. Always tears the cluster down.
pub fn run(steps: &mut Steps, logs: &Path, work: &Path) -> anyhow::Result<()> {
    let mut cluster = super::start(steps, logs, work)?;
    let result = stages(steps, &mut cluster);
    cluster.finish(result.is_err());
    result
}

fn stages(steps: &mut Steps, cluster: &mut Cluster) -> anyhow::Result<()> {
    steps.check(
        "a plain pod runs on the primary CNI (bridge + host-local)",
        || plain_pod(cluster).map(drop),
    )?;
    let pins = steps.check(
        "kubectl apply -f deploy/, the image set with kubectl set image: the agent runs",
        || agent::install(cluster),
    )?;
    let quick = steps.check(
        "quickstart: macvlan-conf NAD, samplepod-1 and samplepod-2 run with net1",
        || quickstart::pods(cluster),
    )?;
    steps.check("samplepod-2 pings samplepod-1 over net1", || {
        quickstart::ping_ok(cluster, "samplepod-2", &quick.a_net1)
    })?;
    steps.check(
        "a multus-rs.io/policy annotation denying ICMP in stops the ping; lifting it restores it",
        || policy::nad_annotation(cluster, &quick),
    )?;
    steps.check(
        "a MultiNetworkPolicy allowing ingress from app=b only: b gets in, c does not",
        || policy::multi_network_policy(cluster, &quick),
    )?;
    let scrape = steps.check(
        "/metrics of the agent pod: per-interface series with pod, namespace, network; drops",
        || metrics::check(cluster),
    )?;
    steps.check(
        "agent pod deleted during pings: a new one comes, denied traffic never passes, \
         counters go on, pods keep net1, a new pod gets its attachments",
        || restart::check(cluster, &quick, &scrape),
    )?;
    steps.check(
        "pods deleted: every lease, pin, record and cache file released",
        || teardown::pods(cluster, &pins),
    )?;
    steps.check(
        "uninstall as documented: kubectl delete -f deploy/, deploy/uninstall/ run; pods start \
         with the primary CNI alone",
        || uninstall::check(cluster),
    )?;
    Ok(())
}

/// A pod of the test image running `busybox sh -c SCRIPT`, imported images only (the image is
/// busybox alone: its shell runs its applets without links).
pub fn pod(name: &str, labels: &Value, annotations: &Value, script: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": name,
                "image": BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["/bin/busybox", "sh", "-c", script],
            }],
        },
    })
}

/// The command of the quickstart's samplepod: sleep until told to stop.
pub const SLEEP: &str = "trap : TERM INT; sleep 2147483647 & wait";

/// Creates `pod` with `kubectl apply -f -`.
pub fn apply(cluster: &Cluster, object: &Value) -> anyhow::Result<()> {
    cluster
        .kubectl()
        .run_with(&["apply", "-f", "-"], Some(&object.to_string()))
        .map(drop)
}

/// Waits until pod `name` (namespace default) runs and is ready; returns it.
pub fn wait_running(cluster: &mut Cluster, name: &str) -> anyhow::Result<Value> {
    wait(POD_START, &format!("pod {name} to run"), || {
        cluster.check_running()?;
        let pod = cluster.kubectl().get(&["pod", name])?;
        if pod["status"]["phase"] == "Failed" {
            bail!("pod {name} failed: {}", pod["status"]);
        }
        let ready = pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        Ok(ready.then_some(pod))
    })
}

/// Deletes pod `name` and waits until it is gone.
pub fn delete_pod(cluster: &Cluster, name: &str) -> anyhow::Result<()> {
    cluster
        .kubectl()
        .run(&["delete", "pod", name, "--wait=true", "--timeout=60s"])
        .map(drop)
}

pub fn in_subnet(ip: &str, subnet: &str) -> bool {
    let (Some((net, len)), Ok(ip)) = (subnet.split_once('/'), ip.parse::<std::net::Ipv4Addr>())
    else {
        return false;
    };
    let (Ok(net), Ok(len)) = (net.parse::<std::net::Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

/// Runs a pod without networks annotation, checks eth0 has its address from the primary
/// network, deletes it; returns the pod as it ran.
pub fn plain_pod(cluster: &mut Cluster) -> anyhow::Result<Value> {
    let name = "plain";
    apply(
        cluster,
        &pod(name, &json!({"app": "plain"}), &json!({}), SLEEP),
    )?;
    let pod = wait_running(cluster, name)?;
    let ip = pod["status"]["podIP"]
        .as_str()
        .context("the pod has no podIP")?
        .to_owned();
    ensure!(
        in_subnet(&ip, PRIMARY_SUBNET),
        "pod IP {ip} is not from the primary network {PRIMARY_SUBNET}"
    );
    let addrs = cluster.kubectl().quiet(&[
        "exec",
        name,
        "--",
        "/bin/busybox",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ])?;
    ensure!(
        addrs.contains(&format!("{ip}/")),
        "eth0 in the pod does not carry {ip}: {addrs}"
    );
    crate::shell::note(&format!("pod {name}: eth0 {ip}"));
    delete_pod(cluster, name)?;
    Ok(pod)
}
