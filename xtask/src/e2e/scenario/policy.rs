//! Policy through the API: the NAD's `multus-rs.io/policy` annotation, and a MultiNetworkPolicy.
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use serde_json::json;

use super::{
    apply,
    quickstart::{self, NAD, Quickstart, ping, ping_ok, still_running},
};
use crate::{
    e2e::{Cluster, wait},
    shell::note,
};

/// The NAD annotation (docs/policy.md).
const ANNOTATION: &str = "multus-rs.io/policy";
/// No ICMP in from the network's subnet.
const DENY_ICMP: &str = "ingress:\n  deny:\n    - from: 198.51.100.0/24\n      ports: icmp\n";
/// How long a policy change may take to show.
const IN_FORCE: Duration = Duration::from_secs(15);
/// The NAD as kubectl names it.
const NAD_RESOURCE: &str = "network-attachment-definitions.k8s.cni.cncf.io";

/// Waits until pings from `from` to `ip` go unanswered, then checks three more are too.
pub fn ping_fails(cluster: &Cluster, from: &str, ip: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    wait(
        IN_FORCE,
        &format!("pings from {from} to {ip} to fail"),
        || Ok((!ping(cluster, from, ip)).then_some(())),
    )?;
    let took = started.elapsed();
    for _ in 0..3 {
        ensure!(
            !ping(cluster, from, ip),
            "a ping from {from} to {ip} passed again"
        );
    }
    Ok(took)
}

fn uids(cluster: &Cluster, names: &[&str]) -> anyhow::Result<Vec<(String, String)>> {
    names
        .iter()
        .map(|n| {
            let pod = cluster.kubectl().get(&["pod", n])?;
            let uid = pod["metadata"]["uid"].as_str().context("pod without uid")?;
            Ok(((*n).to_owned(), uid.to_owned()))
        })
        .collect()
}

/// Deny ICMP with the NAD's annotation, then lift it.
pub fn nad_annotation(cluster: &mut Cluster, quick: &Quickstart) -> anyhow::Result<()> {
    let before = uids(cluster, &["samplepod-1", "samplepod-2"])?;
    let k = cluster.kubectl().clone();
    k.run(&[
        "annotate",
        "--overwrite",
        &format!("{NAD_RESOURCE}/{NAD}"),
        &format!("{ANNOTATION}={DENY_ICMP}"),
    ])?;
    let took = ping_fails(cluster, "samplepod-2", &quick.a_net1)?;
    note(&format!("pings denied {took:.1?} after the annotation"));
    for (name, uid) in &before {
        still_running(cluster, name, uid)?;
    }
    k.run(&[
        "annotate",
        &format!("{NAD_RESOURCE}/{NAD}"),
        &format!("{ANNOTATION}-"),
    ])?;
    ping_ok(cluster, "samplepod-2", &quick.a_net1)?;
    note("pings answered again once the annotation is gone");
    for (name, uid) in &before {
        still_running(cluster, name, uid)?;
    }
    Ok(())
}

/// samplepod-3 (app=c) joins; a MultiNetworkPolicy on samplepod-1 (app=a) lets only app=b in.
pub fn multi_network_policy(cluster: &mut Cluster, quick: &Quickstart) -> anyhow::Result<()> {
    quickstart::start_sample(cluster, "samplepod-3", "c")?;
    ping_ok(cluster, "samplepod-3", &quick.a_net1)?;
    note("before the policy samplepod-3 (app=c) reaches samplepod-1");
    let policy = json!({
        "apiVersion": "k8s.cni.cncf.io/v1beta1",
        "kind": "MultiNetworkPolicy",
        "metadata": {
            "name": "a-from-b",
            "annotations": {"k8s.v1.cni.cncf.io/policy-for": NAD},
        },
        "spec": {
            "podSelector": {"matchLabels": {"app": "a"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}],
        },
    });
    note("$ kubectl apply -f - (MultiNetworkPolicy a-from-b: app=a accepts app=b only)");
    apply(cluster, &policy)?;
    let took = ping_fails(cluster, "samplepod-3", &quick.a_net1)?;
    note(&format!(
        "samplepod-3 (app=c) kept out {took:.1?} after the policy"
    ));
    for _ in 0..3 {
        ensure!(
            ping(cluster, "samplepod-2", &quick.a_net1),
            "samplepod-2 (app=b) is kept out too"
        );
    }
    note("samplepod-2 (app=b) still gets in");
    Ok(())
}
