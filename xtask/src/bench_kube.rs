//! `cargo xtask bench kube`: what talking to Kubernetes costs the thin binary. The release
//! `multus-cni` runs like a runtime runs it in a node namespace, for a pod with the cluster
//! network plus 1 and plus 4 secondaries, three ways taking turns run by run: networks from
//! local files (the baseline: no API at all), from a real kube-apiserver (pod and NAD GETs, the
//! network-status write and one `AddedInterface` Event per interface), and from the API server
//! without the Events. The API server is the test one (with its etcd on local disk), reached
//! through a TCP relay so TLS and connection reuse are the client's own.
use std::path::Path;

use anyhow::{Context as _, bail, ensure};
use multus_testkit::kube::{KubeCluster, KubeconfigAuth, TcpRelay};
use serde_json::{Value, json};

use crate::{
    bench_cni::{
        Sample, Setup, in_node, invoke, ms, multus_conf, percentile, prepare, release_binary,
        sample, secondary_conf, secondary_names, write_pod,
    },
    shell::{is_root, note, step},
};

/// Options of `cargo xtask bench kube`.
#[derive(clap::Args)]
pub struct Args {
    /// Measured ADD/DEL pairs per scenario and variant (at least 50).
    #[arg(long, default_value_t = 50)]
    runs: usize,
}

/// The bench's namespace and pod (the names the CNI_ARGS of `invoke` carry).
const NAMESPACE: &str = "bench";
const POD: &str = "bench";

/// Runs the bench.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the kube bench creates network namespaces: run it as root");
    }
    ensure!(args.runs >= 50, "--runs must be at least 50");
    let apiserver = crate::apiserver::ensure()?;
    let setup = prepare(release_binary()?)?;
    step("test API server");
    let cluster = cluster(&apiserver)?;
    let relay = TcpRelay::start_in_netns(cluster.addr(), &setup.node.path());
    let kubeconfig = setup.dir.join("multus.kubeconfig");
    cluster.write_kubeconfig(
        &kubeconfig,
        &relay.url(),
        KubeconfigAuth::Token(cluster.multus_token()),
    );
    objects(cluster, &setup)?;
    for secondaries in [1usize, 4] {
        // API requests of the bench itself go from here, outside the node namespace.
        annotate(cluster, secondaries)?;
        in_node(&setup, || {
            scenario(&setup, &kubeconfig, secondaries, args.runs)
        })?;
    }
    Ok(())
}

fn cluster(apiserver: &Path) -> anyhow::Result<&'static KubeCluster> {
    if multus_testkit::cache::apiserver_binary() != apiserver {
        bail!(
            "the fixture would not find {}: set {}",
            apiserver.display(),
            multus_testkit::cache::APISERVER_VAR
        );
    }
    KubeCluster::get("cargo xtask bench kube").context("the test API server cannot run here")
}

/// The namespace, the secondary networks as NADs, and the pod.
fn objects(cluster: &KubeCluster, setup: &Setup) -> anyhow::Result<()> {
    let admin = cluster.admin();
    let create = |object: Value| admin.create(&object).map_err(anyhow::Error::msg);
    create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}))?;
    for (i, net) in secondary_names().iter().enumerate() {
        create(json!({
            "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": net, "namespace": NAMESPACE},
            "spec": {"config": secondary_conf(setup, i).to_string()},
        }))?;
    }
    create(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": POD, "namespace": NAMESPACE},
        "spec": {"nodeName": "bench-node", "automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "registry.invalid/app:1"}]},
    }))?;
    Ok(())
}

/// Points the API pod's networks annotation at the first `secondaries` networks.
fn annotate(cluster: &KubeCluster, secondaries: usize) -> anyhow::Result<()> {
    let nets = secondary_names()[..secondaries].join(",");
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{POD}");
    let patch = json!({"metadata": {"annotations": {"k8s.v1.cni.cncf.io/networks": nets}}});
    match cluster.admin().request("PATCH", &path, Some(&patch)) {
        Ok((200, _)) => Ok(()),
        Ok((status, body)) => bail!("PATCH {path}: HTTP {status}: {body}"),
        Err(e) => bail!("{e}"),
    }
}

/// One way of running the binary.
struct Variant {
    name: &'static str,
    conf: String,
    adds: Vec<Sample>,
    dels: Vec<Sample>,
}

fn scenario(
    setup: &Setup,
    kubeconfig: &Path,
    secondaries: usize,
    runs: usize,
) -> anyhow::Result<()> {
    step(&format!(
        "cluster network + {secondaries} secondaries, {runs} runs per variant"
    ));
    write_pod(setup, secondaries)?;
    let local = multus_conf(setup);
    let mut api = local.clone();
    api["kubeconfig"] = json!(kubeconfig);
    let mut quiet = api.clone();
    quiet["addedInterfaceEvents"] = json!(false);
    let mut variants: Vec<Variant> = [
        ("local files", local),
        ("API server", api),
        ("API server, no Events", quiet),
    ]
    .into_iter()
    .map(|(name, conf)| Variant {
        name,
        conf: conf.to_string(),
        adds: Vec::new(),
        dels: Vec::new(),
    })
    .collect();
    let netns = setup.pod.path();
    // The variants take turns, so all see the same machine load.
    for i in 0..runs + 3 {
        for (v, variant) in variants.iter_mut().enumerate() {
            let id = format!("k{secondaries}-{v}-{i}");
            let conf = variant.conf.as_bytes();
            let (wall, err) = invoke(&setup.binary, "ADD", &id, &netns, "eth0", conf)?;
            let add = sample(wall, &err)?;
            let (wall, err) = invoke(&setup.binary, "DEL", &id, &netns, "eth0", conf)?;
            let del = sample(wall, &err)?;
            // The first runs warm caches and connections; they are not counted.
            if i >= 3 {
                variant.adds.push(add);
                variant.dels.push(del);
            }
        }
    }
    let base_add = median_wall(&variants[0].adds);
    for v in &variants {
        report(v, base_add);
    }
    Ok(())
}

fn median_wall(samples: &[Sample]) -> std::time::Duration {
    let mut wall: Vec<_> = samples.iter().map(|s| s.wall).collect();
    wall.sort();
    percentile(&wall, 0.5)
}

fn report(v: &Variant, base_add: std::time::Duration) {
    let sorted = |f: &dyn Fn(&Sample) -> std::time::Duration, samples: &[Sample]| {
        let mut d: Vec<_> = samples.iter().map(f).collect();
        d.sort();
        d
    };
    let add = sorted(&|s| s.wall, &v.adds);
    let own = sorted(&|s| s.total.saturating_sub(s.delegates), &v.adds);
    let del = sorted(&|s| s.wall, &v.dels);
    note(&format!(
        "{:<22} ADD median {}  p99 {}  ({:.2}x local files)  | outside delegates median {}  | \
         DEL median {}  (n={})",
        v.name,
        ms(percentile(&add, 0.5)),
        ms(percentile(&add, 0.99)),
        percentile(&add, 0.5).as_secs_f64() / base_add.as_secs_f64().max(f64::MIN_POSITIVE),
        ms(percentile(&own, 0.5)),
        ms(percentile(&del, 0.5)),
        add.len(),
    ));
}
