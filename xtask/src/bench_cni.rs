//! `cargo xtask bench cni`: the release `multus-cni` binary run like a runtime runs it, inside a
//! node namespace made for the bench, for a pod with the cluster network plus 1 and plus 4
//! secondary networks (macvlan and bridge, host-local IPAM). For each ADD and DEL it records the
//! wall time and the time the binary itself reports spent in delegate processes (its `timing`
//! log line). The baseline, run in the same process on the same namespaces, calls the same
//! plugins directly, as a runtime without multus would. Two builds of the binary run side by
//! side: the glibc one and the static (musl) one the image ships, and the time each spends
//! outside delegates (what multus adds to a call) is printed next to the other's.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use multus_testkit::Netns;
use serde_json::{Value, json};

use crate::shell::{Cmd, is_root, note, step};

const PLUGIN_DIR: &str = "/usr/lib/cni";

/// Options of `cargo xtask bench cni`.
#[derive(clap::Args)]
pub struct Args {
    /// Measured ADD/DEL pairs per scenario (at least 50).
    #[arg(long, default_value_t = 50)]
    runs: usize,
}

pub(crate) struct Setup {
    pub(crate) node: Netns,
    pub(crate) pod: Netns,
    pub(crate) dir: PathBuf,
    pub(crate) binary: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One invocation: wall time, and the binary's own total and delegate times.
pub(crate) struct Sample {
    pub(crate) wall: Duration,
    pub(crate) total: Duration,
    pub(crate) delegates: Duration,
}

/// Runs the bench.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the cni bench creates network namespaces: run it as root");
    }
    ensure!(args.runs >= 50, "--runs must be at least 50");
    // The static shim as the image ships it: built together with the agent, as for the image,
    // so that both builds agree on features and neither rebuilds the other's.
    let static_dir = crate::static_build::build(crate::image::PACKAGES, &["multus-cni"])?;
    let setup = prepare(release_binary()?)?;
    let builds = [
        ("glibc", setup.binary.clone()),
        ("static", static_dir.join("multus-cni")),
    ];
    in_node(&setup, || {
        for secondaries in [1usize, 4] {
            scenario(&setup, &builds, secondaries, args.runs)?;
        }
        Ok(())
    })
}

/// Builds the release `multus-cni` and returns its path.
pub(crate) fn release_binary() -> anyhow::Result<PathBuf> {
    step("building multus-cni (release)");
    Cmd::new("cargo")
        .args(["build", "--release", "--package", "multus-cni"])
        .run()?;
    Ok(crate::shell::target_dir("release").join("multus-cni"))
}

/// Runs `f` on a thread inside the node namespace: the processes it starts (the binary, or the
/// plugins for a baseline) start there too.
pub(crate) fn in_node(
    setup: &Setup,
    f: impl FnOnce() -> anyhow::Result<()> + Send,
) -> anyhow::Result<()> {
    let node_path = setup.node.path();
    multus_testkit::inside::run_in(&node_path, f)
        .with_context(|| format!("entering {}", node_path.display()))?
}

pub(crate) fn prepare(binary: PathBuf) -> anyhow::Result<Setup> {
    step("namespaces, networks and configuration");
    let node = Netns::new("bnd");
    node.add_veth_parent();
    let pod = Netns::new("bpd");
    pod.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
    let dir = std::env::temp_dir().join(format!("multus-bench-{}", std::process::id()));
    let setup = Setup {
        node,
        pod,
        dir,
        binary,
    };
    for sub in ["local", "cache", "ipam", "conf"] {
        std::fs::create_dir_all(setup.dir.join(sub))?;
    }
    for (i, net) in secondary_names().iter().enumerate() {
        let doc = json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": net, "namespace": "bench"},
            "spec": {"config": secondary_conf(&setup, i).to_string()},
        });
        std::fs::write(
            setup.dir.join("local").join(format!("{net}.json")),
            doc.to_string(),
        )?;
    }
    note(&format!(
        "node {}, pod {}, files in {}",
        setup.node.name(),
        setup.pod.name(),
        setup.dir.display()
    ));
    Ok(setup)
}

pub(crate) fn secondary_names() -> [&'static str; 4] {
    ["mv-a", "br-a", "mv-b", "br-b"]
}

/// host-local over `subnet`, with the bench's data dir.
fn ipam(setup: &Setup, subnet: &str) -> Value {
    json!({"type": "host-local", "dataDir": setup.dir.join("ipam"), "ranges": [[{"subnet": subnet}]]})
}

/// Secondary network `i`: macvlan on vpar or a bridge, each in its own documentation /25.
pub(crate) fn secondary_conf(setup: &Setup, i: usize) -> Value {
    let subnets = [
        "192.0.2.0/25",
        "198.51.100.0/25",
        "192.0.2.128/25",
        "198.51.100.128/25",
    ];
    let subnet = subnets[i % subnets.len()];
    let name = secondary_names()[i % 4];
    if i.is_multiple_of(2) {
        json!({"cniVersion": "1.0.0", "name": name, "type": "macvlan", "master": "vpar",
               "mode": "bridge", "ipam": ipam(setup, subnet)})
    } else {
        json!({"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": format!("b{i}"),
               "ipam": ipam(setup, subnet)})
    }
}

fn cluster_conf(setup: &Setup) -> Value {
    json!({"cniVersion": "1.0.0", "name": "cluster", "type": "bridge", "bridge": "cni0",
           "isGateway": true, "isDefaultGateway": true,
           "ipam": ipam(setup, "203.0.113.0/24")})
}

pub(crate) fn multus_conf(setup: &Setup) -> Value {
    json!({
        "cniVersion": "1.0.0", "name": "multus-cni-network", "type": "multus",
        "confDir": setup.dir.join("conf"), "cniDir": setup.dir.join("cache"),
        "binDir": PLUGIN_DIR, "localSourceDir": setup.dir.join("local"),
        "logLevel": "verbose", "logToStderr": true,
        "delegates": [cluster_conf(setup)],
    })
}

pub(crate) fn write_pod(setup: &Setup, secondaries: usize) -> anyhow::Result<()> {
    let nets = secondary_names()[..secondaries].join(",");
    let doc = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bench", "namespace": "bench", "uid": "bench-uid",
                     "annotations": {"k8s.v1.cni.cncf.io/networks": nets}}});
    std::fs::write(setup.dir.join("local").join("pod.json"), doc.to_string())?;
    Ok(())
}

/// Runs `program` with the CNI environment and `stdin`; fails on a non-zero exit.
pub(crate) fn invoke(
    program: &Path,
    command: &str,
    container: &str,
    netns: &Path,
    ifname: &str,
    stdin: &[u8],
) -> anyhow::Result<(Duration, String)> {
    let start = Instant::now();
    let mut child = Command::new(program)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", PLUGIN_DIR)
        .env(
            "CNI_ARGS",
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=bench",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", program.display()))?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin)?;
    }
    let out = child.wait_with_output()?;
    let wall = start.elapsed();
    if !out.status.success() {
        bail!(
            "{} {command} failed: {}{}",
            program.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((wall, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// A sample from the wall time and the binary's `timing` line (`total_us`, `delegate_us`).
pub(crate) fn sample(wall: Duration, stderr: &str) -> anyhow::Result<Sample> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("timing"))
        .context("no timing line on stderr")?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_micros)
            .with_context(|| format!("no {name} in the timing line: {line}"))
    };
    Ok(Sample {
        wall,
        total: field("total_us=")?,
        delegates: field("delegate_us=")?,
    })
}

/// One scenario: each build's ADD and DEL, and the plugins called directly, interleaved.
fn scenario(
    setup: &Setup,
    builds: &[(&str, PathBuf)],
    secondaries: usize,
    runs: usize,
) -> anyhow::Result<()> {
    step(&format!(
        "cluster network + {secondaries} secondaries, {runs} runs each"
    ));
    write_pod(setup, secondaries)?;
    let conf = multus_conf(setup).to_string();
    let netns = setup.pod.path();
    // Baseline: the same plugins called directly, one process per network, like a runtime
    // without multus would call its single network's plugin.
    let mut configs = vec![("eth0".to_owned(), cluster_conf(setup))];
    for i in 0..secondaries {
        configs.push((format!("net{}", i + 1), secondary_conf(setup, i)));
    }
    let direct = |command: &str, id: &str| -> anyhow::Result<Duration> {
        let mut total = Duration::ZERO;
        let ordered: Vec<_> = if command == "DEL" {
            configs.iter().rev().collect()
        } else {
            configs.iter().collect()
        };
        for (ifname, c) in ordered {
            let plugin = Path::new(PLUGIN_DIR).join(c["type"].as_str().unwrap_or_default());
            let stdin = c.to_string();
            total += invoke(&plugin, command, id, &netns, ifname, stdin.as_bytes())?.0;
        }
        Ok(total)
    };
    let mut adds: Vec<Vec<Sample>> = builds.iter().map(|_| Vec::new()).collect();
    let mut dels: Vec<Vec<Sample>> = builds.iter().map(|_| Vec::new()).collect();
    let (mut base_add, mut base_del) = (Vec::new(), Vec::new());
    // The builds and the baseline alternate (the builds' order too), so all see the same
    // machine load.
    for i in 0..runs + 3 {
        let mut order: Vec<usize> = (0..builds.len()).collect();
        if i % 2 == 1 {
            order.reverse();
        }
        for b in order {
            let (label, binary) = &builds[b];
            let id = format!("bench-{label}{i}");
            let (wall, err) = invoke(binary, "ADD", &id, &netns, "eth0", conf.as_bytes())?;
            let add = sample(wall, &err)?;
            let (wall, err) = invoke(binary, "DEL", &id, &netns, "eth0", conf.as_bytes())?;
            let del = sample(wall, &err)?;
            // The first runs warm caches (and create the bridges); they are not counted.
            if i >= 3 {
                adds[b].push(add);
                dels[b].push(del);
            }
        }
        let base_id = format!("base{i}");
        let (b_add, b_del) = (direct("ADD", &base_id)?, direct("DEL", &base_id)?);
        if i >= 3 {
            base_add.push(b_add);
            base_del.push(b_del);
        }
    }
    for (b, (label, _)) in builds.iter().enumerate() {
        report(&format!("{label} ADD"), &adds[b], &base_add);
        report(&format!("{label} DEL"), &dels[b], &base_del);
    }
    side_by_side("ADD", builds, &adds);
    side_by_side("DEL", builds, &dels);
    Ok(())
}

/// The time each build spends outside delegate processes (its own work plus its process start
/// and exit: what multus adds to the call), next to each other.
fn side_by_side(what: &str, builds: &[(&str, PathBuf)], samples: &[Vec<Sample>]) {
    let overhead = |s: &[Sample]| {
        let mut v: Vec<Duration> = s
            .iter()
            .map(|s| s.wall.saturating_sub(s.delegates))
            .collect();
        v.sort();
        v
    };
    let per_build: Vec<Vec<Duration>> = samples.iter().map(|s| overhead(s)).collect();
    let cells: Vec<String> = builds
        .iter()
        .zip(&per_build)
        .map(|((label, _), o)| {
            format!(
                "{label} median {} p99 {}",
                ms(percentile(o, 0.5)),
                ms(percentile(o, 0.99))
            )
        })
        .collect();
    let ratio = match per_build.as_slice() {
        [first, .., last] => format!(
            "  | {}/{} {:.2}x",
            builds[builds.len() - 1].0,
            builds[0].0,
            percentile(last, 0.5).as_secs_f64()
                / percentile(first, 0.5).as_secs_f64().max(f64::MIN_POSITIVE)
        ),
        _ => String::new(),
    };
    note(&format!(
        "{what} overhead (wall time outside delegates): {}{ratio}",
        cells.join("  | ")
    ));
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn report(what: &str, samples: &[Sample], baseline: &[Duration]) {
    let mut wall: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
    wall.sort();
    let mut base = baseline.to_vec();
    base.sort();
    let total: Duration = samples.iter().map(|s| s.wall).sum();
    let inside: Duration = samples.iter().map(|s| s.delegates).sum();
    let own = 1.0 - inside.as_secs_f64() / total.as_secs_f64().max(f64::MIN_POSITIVE);
    let (med, p99) = (percentile(&wall, 0.5), percentile(&wall, 0.99));
    let base_med = percentile(&base, 0.5);
    note(&format!(
        "{what}: median {}  p99 {}  (n={})  | plugins called directly: median {}  p99 {}  | \
         ratio {:.2}x",
        ms(med),
        ms(p99),
        wall.len(),
        ms(base_med),
        ms(percentile(&base, 0.99)),
        med.as_secs_f64() / base_med.as_secs_f64().max(f64::MIN_POSITIVE),
    ));
    let mut engine: Vec<Duration> = samples
        .iter()
        .map(|s| s.total.saturating_sub(s.delegates))
        .collect();
    engine.sort();
    let mut process: Vec<Duration> = samples
        .iter()
        .map(|s| s.wall.saturating_sub(s.total))
        .collect();
    process.sort();
    note(&format!(
        "{what}: time outside delegate processes {:.1}% of the wall time (target for ADD: < 10%): \
         engine median {}, process start/exit median {}",
        own * 100.0,
        ms(percentile(&engine, 0.5)),
        ms(percentile(&process, 0.5)),
    ));
}
