//! `cargo xtask bench agent`: thick mode (the release `multus-cni` shim and `multus-agent`) in
//! a node namespace made for the bench, in standalone mode over local NAD files.
//!
//! 1. ADD latency through shim + agent against thin mode (the same binary running the engine
//!    itself, same plugins, same files), for a pod with the cluster network plus 1 and plus 4
//!    secondaries; the two alternate run by run. The agent's overhead per attachment is the
//!    difference of each adjacent pair divided by the secondaries; the agent's own attach time
//!    per ADD (all secondaries at once) comes from its `multus_agent_attach_duration_seconds`
//!    histogram. `--attach-mode clsact` measures the agent with clsact filters instead of TCX.
//! 2. The agent's peak RSS with 500 attachments (125 pods with 4 secondaries each).
//! 3. `/metrics` scrape time with 1,000 attachments.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use multus_testkit::{Netns, conf::PLUGIN_DIR, inside};
use serde_json::{Value, json};

use crate::{
    agent_node::AgentNode,
    bench_cni::{ms, percentile},
    shell::{Cmd, is_root, note, step},
};

/// Secondary networks: a macvlan on one parent, a bridge, a macvlan on another parent, a bridge.
const NETWORKS: [&str; 4] = ["mv-a", "br-a", "mv-b", "br-b"];

/// Options of `cargo xtask bench agent`.
#[derive(clap::Args)]
pub struct Args {
    /// Measured ADD/DEL pairs per mode and scenario (at least 50).
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// The agent's `attachMode` (`tcx` or `clsact`; default: the agent's choice).
    #[arg(long)]
    attach_mode: Option<String>,
    /// The agent's `chrootDir` (`/` measures the chroot exec against the same files).
    #[arg(long)]
    chroot_dir: Option<String>,
}

struct Setup {
    node: AgentNode,
}

impl Setup {
    fn path(&self, sub: &str) -> PathBuf {
        self.node.path(sub)
    }

    /// Secondary `i`: each network has its own L2 (a parent or a bridge of its own), so the
    /// documentation subnets can repeat between them.
    fn secondary_conf(&self, i: usize) -> Value {
        let subnet = ["192.0.2.0/24", "198.51.100.0/24"][i % 2];
        match i {
            0 => json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "vpar",
                        "mode": "bridge", "ipam": self.node.ipam(subnet)}),
            2 => json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "vpar2",
                        "mode": "bridge", "ipam": self.node.ipam(subnet)}),
            _ => json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": format!("b{i}"),
                        "ipam": self.node.ipam(subnet)}),
        }
    }

    fn thin_conf(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus",
               "cniDir": self.path("cache"), "binDir": PLUGIN_DIR,
               "confDir": self.path("conf"), "localSourceDir": self.path("local"),
               "delegates": [multus_testkit::conf::cluster_macvlan(&self.path("ipam"))]})
    }

    fn shim_conf(&self) -> Value {
        self.node.shim_conf()
    }

    fn write_pod(&self, name: &str, secondaries: usize) -> anyhow::Result<()> {
        let doc = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "bench",
                         "annotations": {"k8s.v1.cni.cncf.io/networks":
                                         NETWORKS[..secondaries].join(",")}}});
        std::fs::write(
            self.path("local").join(format!("pod-{name}.json")),
            doc.to_string(),
        )?;
        Ok(())
    }

    /// Runs the `multus-cni` binary in the node namespace; fails on a non-zero exit.
    fn cni(
        &self,
        conf: &Value,
        command: &str,
        id: &str,
        pod: &Path,
        name: &str,
    ) -> anyhow::Result<Duration> {
        let out = self.node.cni(conf, command, id, pod, "bench", name)?;
        if out.exit != 0 {
            bail!(
                "multus-cni {command} {id} failed: {}{}",
                out.stdout,
                out.stderr
            );
        }
        Ok(out.took)
    }

    fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        self.node.get(path)
    }
}

/// Runs the bench.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the agent bench creates network namespaces and loads eBPF: run it as root");
    }
    ensure!(args.runs >= 50, "--runs must be at least 50");
    step("building multus-cni and multus-agent (release)");
    Cmd::new("cargo")
        .args([
            "build",
            "--release",
            "--package",
            "multus-cni",
            "--package",
            "multus-agent",
        ])
        .run()?;
    let mut setup = prepare(args.attach_mode.as_deref(), args.chroot_dir.as_deref())?;
    step("starting multus-agent (release) in the node namespace");
    let pid = setup.node.start_agent()?;
    for secondaries in [1usize, 4] {
        latency(&setup, secondaries, args.runs)?;
    }
    capacity(&setup, pid)
}

fn prepare(attach_mode: Option<&str>, chroot_dir: Option<&str>) -> anyhow::Result<Setup> {
    step("namespaces, networks and configuration");
    let bin = crate::shell::target_dir("release");
    let mut node = AgentNode::new(bin, "bench-agent", "bnd", true)?;
    node.netns.ip(&[
        "link", "add", "vpar2", "type", "veth", "peer", "name", "vpeer2",
    ]);
    node.netns.ip(&["link", "set", "vpar2", "up"]);
    node.netns.ip(&["link", "set", "vpeer2", "up"]);
    for (key, value) in [("attachMode", attach_mode), ("chrootDir", chroot_dir)] {
        if let Some(value) = value {
            node.agent_keys.insert(key.to_owned(), json!(value));
        }
    }
    // The capacity step holds 1,000 attachments (250 pods with 4 each): size the maps for it.
    node.agent_keys.insert("maxPods".to_owned(), json!(260));
    let setup = Setup { node };
    for (i, net) in NETWORKS.iter().enumerate() {
        let doc = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": net, "namespace": "bench"},
            "spec": {"config": setup.secondary_conf(i).to_string()}});
        std::fs::write(
            setup.path("local").join(format!("{net}.json")),
            doc.to_string(),
        )?;
    }
    note(&format!(
        "node {}, files in {}",
        setup.node.netns.name(),
        setup.node.dir.display()
    ));
    Ok(setup)
}

/// Sum and count of a histogram in a scrape.
fn histogram(text: &str, name: &str) -> (f64, f64) {
    let value = |suffix: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}_{suffix} ")))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("sum"), value("count"))
}

fn latency(setup: &Setup, secondaries: usize, runs: usize) -> anyhow::Result<()> {
    step(&format!(
        "ADD: cluster network + {secondaries} secondaries, thin vs shim + agent, {runs} runs each"
    ));
    let pod = Netns::new("bpd");
    pod.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
    let name = format!("lat{secondaries}");
    setup.write_pod(&name, secondaries)?;
    let (thin, shim) = (setup.thin_conf(), setup.shim_conf());
    let (_, before) = setup.get("/metrics")?;
    let (mut thin_adds, mut shim_adds, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs + 3 {
        let t = setup.cni(&thin, "ADD", &format!("t{name}{i}"), &pod.path(), &name)?;
        setup.cni(&thin, "DEL", &format!("t{name}{i}"), &pod.path(), &name)?;
        let s = setup.cni(&shim, "ADD", &format!("s{name}{i}"), &pod.path(), &name)?;
        setup.cni(&shim, "DEL", &format!("s{name}{i}"), &pod.path(), &name)?;
        // The first runs warm caches and create the bridges: not counted.
        if i >= 3 {
            thin_adds.push(t);
            shim_adds.push(s);
            overhead.push(s.saturating_sub(t) / secondaries as u32);
        }
    }
    let (_, after) = setup.get("/metrics")?;
    let attach = "multus_agent_attach_duration_seconds";
    let ((sum0, n0), (sum1, n1)) = (histogram(&before, attach), histogram(&after, attach));
    for v in [&mut thin_adds, &mut shim_adds, &mut overhead] {
        v.sort();
    }
    let line = |what: &str, v: &[Duration]| {
        note(&format!(
            "{what}: median {}  p99 {}",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99))
        ));
    };
    line("thin ADD           ", &thin_adds);
    line("shim + agent ADD   ", &shim_adds);
    line(
        "overhead per attachment (shim - thin) / secondaries",
        &overhead,
    );
    let mean_attach = (sum1 - sum0) / (n1 - n0).max(1.0);
    note(&format!(
        "agent attach time per ADD (its own histogram, all {secondaries} at once): mean {:.2} ms \
         over {} ADDs ({:.2} ms per interface); ratio shim/thin median {:.2}x (target: overhead \
         per attachment p99 < 5 ms)",
        mean_attach * 1000.0,
        n1 - n0,
        mean_attach * 1000.0 / secondaries as f64,
        percentile(&shim_adds, 0.5).as_secs_f64()
            / percentile(&thin_adds, 0.5)
                .as_secs_f64()
                .max(f64::MIN_POSITIVE),
    ));
    Ok(())
}

/// Adds pods with 4 secondaries each through the shim, `workers` at a time.
fn fill(setup: &Setup, pods: &[(Netns, String)], workers: usize) -> anyhow::Result<()> {
    let shim = setup.shim_conf();
    for chunk in pods.chunks(workers) {
        std::thread::scope(|s| -> anyhow::Result<()> {
            let handles: Vec<_> = chunk
                .iter()
                .map(|(ns, name)| {
                    let shim = &shim;
                    s.spawn(move || setup.cni(shim, "ADD", &format!("c{name}"), &ns.path(), name))
                })
                .collect();
            for h in handles {
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

fn attached(setup: &Setup) -> anyhow::Result<u64> {
    let (_, text) = setup.get("/metrics")?;
    text.lines()
        .find_map(|l| l.strip_prefix("multus_agent_attached_interfaces "))
        .and_then(|v| v.trim().parse().ok())
        .context("no multus_agent_attached_interfaces in the scrape")
}

fn capacity(setup: &Setup, pid: u32) -> anyhow::Result<()> {
    let (_, idle) = inside::rss_kib(pid)?;
    let mut pods: Vec<(Netns, String)> = Vec::new();
    let add_pods = |n: usize, pods: &mut Vec<(Netns, String)>| -> anyhow::Result<()> {
        let start = pods.len();
        for i in start..start + n {
            let ns = Netns::new("bcp");
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
            let name = format!("cap{i}");
            setup.write_pod(&name, 4)?;
            pods.push((ns, name));
        }
        fill(setup, &pods[start..], 4)
    };
    step("500 attachments: 125 pods with 4 secondaries, 4 ADDs at a time");
    let started = Instant::now();
    add_pods(125, &mut pods)?;
    let (peak, now) = inside::rss_kib(pid)?;
    note(&format!(
        "{} attachments in {:.1} s; agent RSS: idle {:.1} MiB, now {:.1} MiB, peak {:.1} MiB \
         (target: < 64 MiB)",
        attached(setup)?,
        started.elapsed().as_secs_f64(),
        idle as f64 / 1024.0,
        now as f64 / 1024.0,
        peak as f64 / 1024.0
    ));
    step("1,000 attachments: 125 more pods; /metrics scrape time");
    add_pods(125, &mut pods)?;
    let count = attached(setup)?;
    let mut scrapes = Vec::new();
    let mut size = 0;
    for _ in 0..30 {
        let started = Instant::now();
        let (status, body) = setup.get("/metrics")?;
        scrapes.push(started.elapsed());
        ensure!(status == 200, "scrape failed: HTTP {status}");
        size = body.len();
    }
    scrapes.sort();
    let (peak, now) = inside::rss_kib(pid)?;
    note(&format!(
        "{count} attachments: scrape median {}  p99 {}  ({} KiB of text; target: < 100 ms); \
         agent RSS now {:.1} MiB, peak {:.1} MiB",
        ms(percentile(&scrapes, 0.5)),
        ms(percentile(&scrapes, 0.99)),
        size / 1024,
        now as f64 / 1024.0,
        peak as f64 / 1024.0
    ));
    step("cleaning up: DEL of every pod");
    let shim = setup.shim_conf();
    for chunk in pods.chunks(8) {
        std::thread::scope(|s| {
            for (ns, name) in chunk {
                let shim = &shim;
                s.spawn(move || {
                    if let Err(e) = setup.cni(shim, "DEL", &format!("c{name}"), &ns.path(), name) {
                        note(&format!("{e}"));
                    }
                });
            }
        });
    }
    note(&format!("{} attachments left", attached(setup)?));
    Ok(())
}
