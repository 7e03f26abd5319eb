//! `cargo xtask demo`: the Multus quickstart, replayed for real on this machine without a
//! cluster. A node (a network namespace with `eth0`) gets the node install the DaemonSet's init
//! container does and `multus-agent run` in standalone mode; the NAD `macvlan-conf` and two
//! copies of `samplepod` from deploy/examples go into the agent's local source directory; the
//! runtime's CNI calls go through the installed `multus-shim` (the real `multus-cni` binary)
//! to the agent, which runs Debian's bridge, macvlan and host-local plugins and attaches the
//! eBPF programs. Then samplepod-2 pings samplepod-1 over net1, a deny policy goes on the NAD,
//! the ping fails, the drop counters rise in `/metrics`, `multus-agent observe` shows the drops
//! with the rule that made them and `multus-agent explain` says the same without a packet.
//! Every step checks what it shows;
//! the demo fails at the first that does not behave, and removes everything it made.
mod files;
mod node;
mod runtime;
pub mod scrape;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use serde_json::{Value, json};

use self::{
    node::Node,
    runtime::{Runtime, Sandbox, file_name},
    scrape::Scrape,
};
use crate::shell::{Cmd, is_root, note, step};

/// Debian's reference plugins (containernetworking-plugins).
const PLUGIN_DIR: &str = "/usr/lib/cni";
/// The NAD the quickstart attaches as net1.
const NAD: &str = "macvlan-conf";
/// Its network name in metrics and status.
const NETWORK: &str = "default/macvlan-conf";
/// The NAD policy annotation.
const POLICY_ANNOTATION: &str = "multus-rs.io/policy";
/// The policy the demo puts on the NAD: no ICMP in from the network's own subnet.
const DENY_POLICY: &str = "ingress:\n  deny:\n    - from: 198.51.100.0/24\n      ports: icmp\n";
/// Pings per measurement.
const PINGS: u32 = 5;

/// The binaries the demo runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `multus-agent`.
    pub agent: PathBuf,
    /// `multus-cni`.
    pub cni: PathBuf,
}

/// What the demo observed, for its test.
#[derive(Debug)]
pub struct Outcome {
    /// The last scrape of `/metrics` (after the drops, in the full demo).
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the demo's test"))]
    pub metrics: Scrape,
}

/// `cargo xtask demo`: builds the binaries, then runs the demo.
pub fn run() -> anyhow::Result<()> {
    if !is_root() {
        bail!("the demo creates network namespaces and loads eBPF programs: run it as root");
    }
    step("building multus-agent and multus-cni");
    Cmd::new("cargo")
        .args([
            "build",
            "--package",
            "multus-agent",
            "--package",
            "multus-cni",
        ])
        .run()?;
    let target = crate::shell::target_dir("debug");
    run_with(&Binaries {
        agent: target.join("multus-agent"),
        cni: target.join("multus-cni"),
    })
    .map(drop)
}

/// The demo with these binaries.
pub fn run_with(bins: &Binaries) -> anyhow::Result<Outcome> {
    for plugin in ["bridge", "macvlan", "host-local"] {
        let path = Path::new(PLUGIN_DIR).join(plugin);
        ensure!(
            path.is_file(),
            "{} is missing: install containernetworking-plugins (`cargo xtask setup`)",
            path.display()
        );
    }
    let mut node = set_up_node()?;
    let runtime = install(bins, &node)?;
    start_agent(bins, &mut node)?;
    let mut nad = apply_nad(&node)?;
    let pods = create_pods(&node, &runtime)?;
    let net1 = show_interfaces(bins, &node, &pods)?;
    ping_over_net1(&node, &pods, net1)?;
    let metrics = deny_and_ping_again(bins, &node, &pods, net1, &mut nad)?;
    clean_up(node, pods, &runtime)?;
    step("the quickstart behaved as shown");
    Ok(Outcome { metrics })
}

fn set_up_node() -> anyhow::Result<Node> {
    step("a node: a network namespace whose eth0 is the host interface of macvlan-conf");
    let node = Node::new()?;
    note(&format!(
        "namespace {}, files in {}",
        node.netns.name(),
        node.path("").display()
    ));
    let cluster = files::cluster_network(&node.path("net.d"), &node.ipam_data_dir())?;
    note(&format!(
        "the cluster network (what flannel or calico would install), {}:",
        file_name(&cluster)
    ));
    show(&std::fs::read_to_string(&cluster)?);
    Ok(node)
}

/// `multus-agent install` as the DaemonSet's init container runs it, on the node's
/// directories; returns the runtime that then calls the shim.
fn install(bins: &Binaries, node: &Node) -> anyhow::Result<Runtime> {
    step("node install, as the DaemonSet's init container: multus-agent install --once --thick");
    Cmd::new(&bins.agent.to_string_lossy())
        .args(["install", "--once", "--thick", "--skip-kubeconfig"])
        .args([
            "--cni-bin-dir".as_ref(),
            node.path("bin").as_os_str(),
            "--cni-conf-dir".as_ref(),
            node.path("net.d").as_os_str(),
            "--daemon-socket-dir".as_ref(),
            node.path("run").as_os_str(),
            "--multus-cni-dir".as_ref(),
            node.path("cache").as_os_str(),
            "--multus-bin-file".as_ref(),
            bins.cni.as_os_str(),
        ])
        .env("RUST_LOG", "warn")
        .run()?;
    let runtime = Runtime {
        node: node.netns.path(),
        conf_dir: node.path("net.d"),
        cni_path: vec![node.path("bin"), PathBuf::from(PLUGIN_DIR)],
    };
    let network = runtime.network()?;
    ensure!(
        file_name(&network.file).starts_with("00-multus")
            && file_name(&network.plugin) == "multus-shim",
        "the runtime would use {} with {}, not multus",
        network.file.display(),
        network.plugin.display()
    );
    note(&format!(
        "the runtime now uses {}, plugin {}:",
        file_name(&network.file),
        network.plugin.display()
    ));
    show(&serde_json::to_string_pretty(&network.stdin)?);
    Ok(runtime)
}

fn start_agent(bins: &Binaries, node: &mut Node) -> anyhow::Result<()> {
    step("the agent, standalone (no cluster): multus-agent run");
    let pid = node.start_agent(&bins.agent)?.pid();
    note(&format!(
        "pid {pid}, ready; {}:",
        node.path("agent-config.json").display()
    ));
    show(&serde_json::to_string_pretty(&node.agent_config())?);
    Ok(())
}

/// The quickstart's NAD into the local source (the standalone agent's `kubectl apply`).
fn apply_nad(node: &Node) -> anyhow::Result<Value> {
    step(&format!(
        "kubectl apply -f deploy/examples/{NAD}.yaml: into the agent's local source directory"
    ));
    let example = crate::shell::repo_root().join(format!("deploy/examples/{NAD}.yaml"));
    let nad = files::example_nad(&example, &node.ipam_data_dir())?;
    files::write_atomically(&nad_file(node), &nad)?;
    show(nad["spec"]["config"].as_str().unwrap_or_default());
    Ok(nad)
}

fn nad_file(node: &Node) -> PathBuf {
    node.path("local.d").join(format!("{NAD}.json"))
}

/// Two pods from the quickstart's samplepod: their objects into the local source, then the
/// runtime's CNI ADD for each sandbox.
fn create_pods(node: &Node, runtime: &Runtime) -> anyhow::Result<[Sandbox; 2]> {
    step(
        "samplepod-1 and samplepod-2 (deploy/examples/samplepod.yaml, twice): CNI ADD through multus-shim",
    );
    let pods = [
        Sandbox::new("default", "samplepod-1"),
        Sandbox::new("default", "samplepod-2"),
    ];
    let example = crate::shell::repo_root().join("deploy/examples/samplepod.yaml");
    for pod in &pods {
        let doc = files::example_pod(&example, &pod.namespace, &pod.name, &pod.uid)?;
        let file = node.path("local.d").join(format!("pod-{}.json", pod.name));
        files::write_atomically(&file, &doc)?;
        let started = Instant::now();
        let result: Value =
            serde_json::from_str(&runtime.call("ADD", pod)?).context("the ADD result")?;
        let ips: Vec<&str> = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .collect();
        note(&format!(
            "{}: sandbox namespace {}, ADD answered in {:.0?} with the cluster network's {}",
            pod.name,
            pod.netns.name(),
            started.elapsed(),
            ips.join(", ")
        ));
    }
    Ok(pods)
}

/// `ip a` in both pods and the agent's status; returns samplepod-1's net1 address.
fn show_interfaces(bins: &Binaries, node: &Node, pods: &[Sandbox]) -> anyhow::Result<Ipv4Addr> {
    step("kubectl exec samplepod-N -- ip a");
    let mut net1 = Vec::new();
    for pod in pods {
        note(&format!("{}:", pod.name));
        show(&pod.netns.ip(&["-br", "addr"]));
        let eth0 = pod.ipv4("eth0")?;
        ensure!(
            eth0.octets()[..3] == [203, 0, 113],
            "{}: eth0 has {eth0}, not an address of the cluster network",
            pod.name
        );
        let addr = pod.ipv4("net1")?;
        ensure!(
            addr.octets()[..3] == [198, 51, 100] && (200..=216).contains(&addr.octets()[3]),
            "{}: net1 has {addr}, not an address of {NAD}'s range",
            pod.name
        );
        net1.push(addr);
    }
    status(bins, node, pods.len())?;
    Ok(net1[0])
}

fn ping_over_net1(node: &Node, pods: &[Sandbox; 2], dst: Ipv4Addr) -> anyhow::Result<()> {
    step(&format!(
        "ping samplepod-1 ({dst}) from samplepod-2 over net1"
    ));
    let replies = pods[1].ping(dst, PINGS)?;
    note(&format!("{replies}/{PINGS} replies"));
    ensure!(replies == PINGS, "expected {PINGS} replies, got {replies}");
    let metrics = scrape(node)?;
    show_series(&metrics, "multus_interface_", pods)?;
    let received = metrics.sum(
        "multus_interface_receive_packets_total",
        &[
            ("pod", "samplepod-1"),
            ("interface", "net1"),
            ("network_name", NETWORK),
        ],
    );
    ensure!(
        received >= f64::from(PINGS),
        "samplepod-1's net1 counted {received} received packets, expected at least {PINGS}"
    );
    Ok(())
}

/// The deny policy on the NAD, the ping failing, and the drops; returns the last scrape.
fn deny_and_ping_again(
    bins: &Binaries,
    node: &Node,
    pods: &[Sandbox; 2],
    dst: Ipv4Addr,
    nad: &mut Value,
) -> anyhow::Result<Scrape> {
    step(&format!(
        "a deny policy on {NAD}: its {POLICY_ANNOTATION} annotation, edited in the local source"
    ));
    show(DENY_POLICY);
    nad["metadata"]["annotations"] = json!({ POLICY_ANNOTATION: DENY_POLICY });
    files::write_atomically(&nad_file(node), nad)?;
    let took = wait_for_enforcement(&pods[1], dst)?;
    note(&format!(
        "in force within {took:.1?}, on the running pods (nothing restarted)"
    ));

    step("ping again");
    let before = scrape(node)?;
    let replies = pods[1].ping(dst, PINGS)?;
    note(&format!("{replies}/{PINGS} replies"));
    ensure!(replies == 0, "the policy let {replies} pings through");
    let after = scrape(node)?;
    show_series(&after, "multus_policy_drop_", pods)?;
    let drops = |s: &Scrape| {
        s.sum(
            "multus_policy_drop_packets_total",
            &[
                ("pod", "samplepod-1"),
                ("interface", "net1"),
                ("network_name", NETWORK),
                ("direction", "ingress"),
            ],
        )
    };
    let rose = drops(&after) - drops(&before);
    note(&format!(
        "samplepod-1's net1 ingress drops rose by {rose} during the {PINGS} pings"
    ));
    ensure!(
        rose >= f64::from(PINGS),
        "expected the drops to rise by at least {PINGS}, they rose by {rose}"
    );
    status(bins, node, pods.len())?;
    let src = pods[1].ipv4("net1")?;
    observe(bins, node, src, dst)?;
    explain(bins, node, src)?;
    Ok(after)
}

/// The rule the demo's drops must name.
const DENY_RULE: &str = "NetworkAttachmentDefinition default/macvlan-conf: ingress.deny[0]";

/// `multus-agent observe` on the running agent: the drops of the pings, with the rule.
fn observe(bins: &Binaries, node: &Node, src: Ipv4Addr, dst: Ipv4Addr) -> anyhow::Result<()> {
    let args = |json: bool| {
        let mut cmd = Cmd::new(&bins.agent.to_string_lossy()).args([
            "observe".as_ref(),
            "--socket-dir".as_ref(),
            node.path("run").as_os_str(),
            "--pod".as_ref(),
            "default/samplepod-1".as_ref(),
            "--last".as_ref(),
            "3".as_ref(),
        ]);
        if json {
            cmd = cmd.args(["-o", "json"]);
        }
        cmd
    };
    // The agent reads the ring within a second of the drop.
    let deadline = Instant::now() + Duration::from_secs(5);
    let events: Vec<Value> = loop {
        let out = args(true)
            .probe()
            .context("multus-agent observe -o json failed")?;
        let events = out
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<Vec<Value>, _>>()?;
        if events.len() >= 3 || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let table = args(false).probe().context("multus-agent observe failed")?;
    note("multus-agent observe --pod default/samplepod-1 --last 3:");
    show(&table);
    ensure!(
        events.len() == 3
            && events.iter().all(|e| e["direction"] == "ingress"
                && e["reason"] == "policy_deny"
                && e["protocol"] == "icmp"
                && e["src"] == src.to_string()
                && e["dst"] == dst.to_string()
                && e["rule"] == DENY_RULE),
        "expected the last 3 drops of samplepod-1 to be the pings from {src}, denied by \
         {DENY_RULE}; got {events:?}"
    );
    Ok(())
}

/// `multus-agent explain`: the verdict and the rule for a ping from samplepod-2, from the
/// installed policy, without sending one.
fn explain(bins: &Binaries, node: &Node, src: Ipv4Addr) -> anyhow::Result<()> {
    let args = |json: bool| {
        let src = src.to_string();
        let mut cmd = Cmd::new(&bins.agent.to_string_lossy()).args([
            "explain".as_ref(),
            "default/samplepod-1".as_ref(),
            "--bpffs-dir".as_ref(),
            node.bpffs.path().as_os_str(),
            "--state-dir".as_ref(),
            node.path("state").as_os_str(),
            "--direction".as_ref(),
            "ingress".as_ref(),
            "--peer".as_ref(),
            std::ffi::OsStr::new(&src),
            "--protocol".as_ref(),
            "icmp".as_ref(),
        ]);
        if json {
            cmd = cmd.args(["-o", "json"]);
        }
        cmd
    };
    let text = args(false).probe().context("multus-agent explain failed")?;
    note(&format!(
        "multus-agent explain default/samplepod-1 --direction ingress --peer {src} --protocol icmp:"
    ));
    show(&text);
    let said: Value =
        serde_json::from_str(&args(true).probe().context("multus-agent explain -o json")?)?;
    ensure!(
        said["verdict"] == "drop" && said["rule"] == DENY_RULE,
        "explain should say drop by {DENY_RULE}: {said}"
    );
    Ok(())
}

/// Pings once a second until one goes unanswered (20 s at most): the agent applies a NAD's
/// change asynchronously, a moment after the file is written.
fn wait_for_enforcement(pod: &Sandbox, dst: Ipv4Addr) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if pod.ping(dst, 1)? == 0 {
            return Ok(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "pings still pass 20 s after the policy was written: the agent did not put {NAD}'s \
         {POLICY_ANNOTATION} annotation in force on the running pods (standalone mode must \
         watch its local source and apply a changed NAD's policy to its attachments)"
    )
}

/// CNI DEL of both pods as the runtime does when they are deleted, checks that nothing is
/// left, stops the agent and removes the rest.
fn clean_up(mut node: Node, pods: [Sandbox; 2], runtime: &Runtime) -> anyhow::Result<()> {
    step(
        "cleaning up: CNI DEL of both pods, the agent stopped, namespaces, pins and files removed",
    );
    for pod in &pods {
        runtime.call("DEL", pod)?;
        let links = pod.netns.ip(&["-br", "link"]);
        ensure!(
            links.lines().count() == 1 && links.starts_with("lo"),
            "{} still has links after DEL:\n{links}",
            pod.name
        );
    }
    let records = node.files("state");
    ensure!(
        records.is_empty(),
        "attachment records left after DEL: {records:?}"
    );
    let cache = node.files("cache");
    ensure!(
        cache.is_empty(),
        "cached attachments left after DEL: {cache:?}"
    );
    let leases = multus_testkit::ipam::host_local_leases(&node.path("ipam"));
    ensure!(
        leases.is_empty(),
        "address leases left after DEL: {leases:?}"
    );
    if let Some(agent) = node.agent.as_mut() {
        agent.stop()?;
    }
    drop(pods);
    drop(node);
    note("nothing left");
    Ok(())
}

/// Indented lines of `text`.
fn show(text: &str) {
    for line in text.trim_end().lines() {
        note(&format!("  {line}"));
    }
}

fn scrape(node: &Node) -> anyhow::Result<Scrape> {
    let agent = node.agent.as_ref().context("the agent is not running")?;
    let (code, body) = agent.get("/metrics")?;
    ensure!(code == 200, "/metrics answered {code}: {body}");
    Scrape::parse(&body)
}

/// Prints the series starting with `prefix` of the demo's pods.
fn show_series(scrape: &Scrape, prefix: &str, pods: &[Sandbox]) -> anyhow::Result<()> {
    note("/metrics:");
    let mut shown = 0;
    for s in &scrape.samples {
        let ours = s
            .labels
            .get("pod")
            .is_some_and(|p| pods.iter().any(|pod| &pod.name == p));
        if s.name.starts_with(prefix) && ours {
            note(&format!("  {}", s.line));
            shown += 1;
        }
    }
    ensure!(shown > 0, "no {prefix}* series for the demo's pods");
    Ok(())
}

/// `multus-agent status` on the node's pins and records; there must be `expected` rows, all
/// on macvlan-conf's net1.
fn status(bins: &Binaries, node: &Node, expected: usize) -> anyhow::Result<()> {
    let args = |json: bool| {
        let mut cmd = Cmd::new(&bins.agent.to_string_lossy()).args([
            "status".as_ref(),
            "--bpffs-dir".as_ref(),
            node.bpffs.path().as_os_str(),
            "--state-dir".as_ref(),
            node.path("state").as_os_str(),
        ]);
        if json {
            cmd = cmd.args(["--json"]);
        }
        cmd
    };
    let table = args(false).probe().context("multus-agent status failed")?;
    note("multus-agent status:");
    show(&table);
    let rows: Value =
        serde_json::from_str(&args(true).probe().context("multus-agent status --json")?)?;
    let rows = rows
        .as_array()
        .context("multus-agent status --json: not a list")?;
    ensure!(
        rows.len() == expected
            && rows
                .iter()
                .all(|r| r["network"] == NETWORK && r["interface"] == "net1"),
        "expected {expected} attachments of {NETWORK} on net1, got {rows:?}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    /// The binaries `cargo test --workspace` builds next to this test's executable.
    fn built_binaries() -> Binaries {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().and_then(Path::parent).unwrap();
        let bins = Binaries {
            agent: dir.join("multus-agent"),
            cni: dir.join("multus-cni"),
        };
        for bin in [&bins.agent, &bins.cni] {
            assert!(
                bin.is_file(),
                "{} is missing: build it first (`cargo build -p multus-agent -p multus-cni`; \
                 `cargo xtask test` does)",
                bin.display()
            );
        }
        bins
    }

    /// The whole demo, as `cargo xtask demo` runs it: the deny policy's drops show in the
    /// metrics. Then every metric family the agent exported is in the metrics reference, and
    /// every metric the Grafana dashboard queries is one the agent exported, or (a family with
    /// no series during the demo, such as errors) one the reference documents. cAdvisor's own
    /// series aside.
    #[test]
    fn the_demo_runs_end_to_end_and_the_dashboard_reads_real_series() {
        if !multus_testkit::require_root(
            "the_demo_runs_end_to_end_and_the_dashboard_reads_real_series",
        ) {
            return;
        }
        let outcome = run_with(&built_binaries()).unwrap();
        let scrape = &outcome.metrics;
        let drops = scrape.sum(
            "multus_policy_drop_packets_total",
            &[("pod", "samplepod-1"), ("network_name", NETWORK)],
        );
        assert!(drops >= f64::from(PINGS), "{drops}");
        let reference =
            std::fs::read_to_string(crate::shell::repo_root().join("docs/metrics.md")).unwrap();
        // A family's series are its name plus a suffix (`_total`, `_bucket`, `_info`).
        let documented = |name: &str| reference.contains(&format!("`{name}"));
        for family in &scrape.families {
            assert!(
                documented(family),
                "docs/metrics.md does not document {family}"
            );
        }
        let path = crate::shell::repo_root().join("deploy/grafana/multus-dashboard.json");
        let dashboard: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let names = dashboard_metrics(&dashboard);
        assert!(names.len() >= 8, "{names:?}");
        for name in names
            .iter()
            .filter(|n| !n.starts_with("container_network_"))
        {
            assert!(
                scrape.knows(name) || documented(name),
                "the dashboard queries {name}, which the agent does not export"
            );
        }
    }

    /// Metric names in the dashboard's queries.
    fn dashboard_metrics(dashboard: &Value) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut exprs = Vec::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for t in panel["targets"].as_array().into_iter().flatten() {
                exprs.push(t["expr"].as_str().unwrap().to_owned());
            }
        }
        for v in dashboard["templating"]["list"].as_array().unwrap() {
            if let Some(q) = v["query"]["query"].as_str() {
                exprs.push(q.to_owned());
            }
        }
        for expr in exprs {
            let mut word = String::new();
            for c in expr.chars().chain(std::iter::once(' ')) {
                if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                    word.push(c);
                } else {
                    let metric = ["multus_", "pod_network_", "container_network_"]
                        .iter()
                        .any(|p| word.starts_with(p));
                    // A label matcher's name is followed by `=`, a metric by `{`, `[` or `)`.
                    if metric && c != '=' && c != '!' {
                        out.insert(std::mem::take(&mut word));
                    }
                    word.clear();
                }
            }
        }
        out
    }
}
