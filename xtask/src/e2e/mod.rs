//! `cargo xtask e2e`: a real one-node Kubernetes on this machine (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, containerd + runc, kubelet), then the product run the
//! way a user runs it: the image imported, `kubectl apply -f deploy/`, the quickstart through
//! kubelet, policy through the API, metrics, an agent restart, and the tear-down. Every step says
//! what it does and checks it; the run ends with `N passed, M failed`, dumps the logs on a
//! failure, and removes everything it started and wrote, on failure too. Needs root.
mod control_plane;
mod host;
mod images;
mod kubectl;
mod node;
mod proc;
mod scenario;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use self::{control_plane::ControlPlane, kubectl::Kubectl, node::Node};
use crate::{
    apiserver,
    shell::{is_root, note, step, target_dir},
};

/// Debian packages the node needs (etcd comes with the API server's packages).
const PACKAGES: &[&str] = &["containerd", "runc", "busybox-static"];
/// Held for the whole run: the node's directories (/etc/cni/net.d, /opt/cni/bin, ...) and
/// addresses are the host's, so two runs cannot share the machine.
const LOCK: &str = "/run/multus-e2e.lock";

/// Runs `program ARGS`; fails with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    run_out(program, args).map(drop)
}

/// Runs `program ARGS`; returns stdout, or fails with stderr.
pub fn run_out(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `f` every 250 ms until it gives a value; an error from `f` ends the wait at once.
pub fn wait<T>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Counts the steps that passed and failed.
#[derive(Debug, Default)]
pub struct Steps {
    passed: usize,
    failed: usize,
}

impl Steps {
    /// Runs one step: prints `==> what`, then `ok` or what went wrong.
    pub fn check<T>(
        &mut self,
        what: &str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        step(what);
        let started = Instant::now();
        match f() {
            Ok(v) => {
                self.passed += 1;
                note(&format!("ok ({:.1?})", started.elapsed()));
                Ok(v)
            }
            Err(e) => {
                self.failed += 1;
                note(&format!("FAILED: {e:#}"));
                Err(e.context(format!("step `{what}`")))
            }
        }
    }
}

/// The running cluster: the control plane, its nodes, and where their files are.
#[derive(Debug)]
pub struct Cluster {
    // Dropped first: nodes stop before the control plane.
    nodes: Vec<Node>,
    plane: ControlPlane,
    kubectl: Kubectl,
    logs: PathBuf,
}

impl Cluster {
    /// kubectl as the cluster admin.
    pub fn kubectl(&self) -> &Kubectl {
        &self.kubectl
    }

    /// The (only) node.
    pub fn node(&self) -> &Node {
        &self.nodes[0]
    }

    /// Fails when a process of the cluster has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.plane.check_running()?;
        self.nodes.iter_mut().try_for_each(Node::check_running)
    }

    /// Saves the agent's logs (the pod is gone after the tear-down) next to the others.
    fn save_agent_logs(&self) {
        for container in ["install", "agent"] {
            let out = self.kubectl.quiet(&agent_logs(container, "--tail=-1"));
            if let Ok(text) = out {
                let _ = std::fs::write(self.logs.join(format!("agent-{container}.log")), text);
            }
        }
    }
}

/// `kubectl` arguments for the logs of the agent pods' `container`, `tail` as kubectl takes it.
fn agent_logs<'a>(container: &'a str, tail: &'a str) -> [&'a str; 8] {
    [
        "-n",
        "kube-system",
        "logs",
        "-l",
        AGENT_SELECTOR,
        "-c",
        container,
        tail,
    ]
}

/// Takes the machine-wide lock of the run.
fn lock() -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let file = std::fs::File::create(LOCK).with_context(|| format!("creating {LOCK}"))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        anyhow::anyhow!("another `cargo xtask e2e` holds {LOCK} ({e}); one run at a time")
    })
}

/// `cargo xtask e2e`.
pub fn run_all() -> anyhow::Result<()> {
    if !is_root() {
        bail!("`cargo xtask e2e` runs a kubelet, containerd and the agent: run it as root");
    }
    crate::prereqs::ensure_debian_packages(PACKAGES)?;
    if run_out("kubectl", &["version", "--client"]).is_err() {
        crate::prereqs::ensure_debian_packages(&["kubernetes-client"])?;
    }
    apiserver::ensure_all()?;
    let _lock = lock()?;

    let logs = target_dir("e2e").join("logs");
    if logs.exists() {
        std::fs::remove_dir_all(&logs)?;
    }
    std::fs::create_dir_all(&logs)?;
    let work = std::env::temp_dir().join(format!("multus-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let mut steps = Steps::default();
    let result = scenario::run(&mut steps, &logs, &work);
    let _ = std::fs::remove_dir_all(&work);
    step(&format!(
        "{} passed, {} failed (logs in {})",
        steps.passed,
        steps.failed,
        logs.display()
    ));
    result
}

/// Prints what helps to understand a failure: the pods, the events and the agent's logs (when
/// the API server answers), and the last lines of every process's log.
fn dump(logs: &Path, kubectl: Option<&Kubectl>) {
    step("logs of the failure (full logs in the directory below)");
    note(&logs.display().to_string());
    if let Some(k) = kubectl {
        let install = agent_logs("install", "--tail=40");
        let agent = agent_logs("agent", "--tail=80");
        for args in [
            &["get", "nodes,pods", "-A", "-o", "wide"][..],
            &["get", "events", "-A", "--sort-by=.lastTimestamp"][..],
            &install[..],
            &agent[..],
        ] {
            eprintln!("--- kubectl {}", args.join(" "));
            match k.quiet(args) {
                Ok(out) => eprintln!("{}", out.trim_end()),
                Err(e) => eprintln!("{e:#}"),
            }
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(logs)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("--- {} (last 40 of {} lines)", file.display(), lines.len());
        for line in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("{line}");
        }
    }
}

/// The agent pods' label selector.
pub const AGENT_SELECTOR: &str = "app.kubernetes.io/name=multus-agent";

/// Starts the cluster: control plane, node with the images, node Ready. On failure it dumps
/// the logs and removes what it started.
fn start(steps: &mut Steps, logs: &Path, work: &Path) -> anyhow::Result<Cluster> {
    let images = steps.check("build the images (pause, busybox, multus-rs)", || {
        images::build(&work.join("images"))
    })?;
    let plane = steps
        .check(
            "control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler",
            || ControlPlane::start(&work.join("control-plane"), logs),
        )
        .inspect_err(|_| dump(logs, None))?;
    let kubectl = Kubectl::new(plane.admin_kubeconfig());
    let mut cluster = Cluster {
        nodes: Vec::new(),
        plane,
        kubectl,
        logs: logs.to_owned(),
    };
    let result = (|| {
        let node = steps.check("node: primary CNI, containerd with the pause image", || {
            Node::start(1, work, logs, &images.pause)
        })?;
        cluster.nodes.push(node);
        steps.check("images imported into the node's containerd", || {
            cluster.nodes[0].import(&images.busybox)?;
            cluster.nodes[0].import(&images.agent)
        })?;
        steps.check("kubelet registers the node and it goes Ready", || {
            let Cluster { nodes, plane, .. } = &mut cluster;
            nodes[0].start_kubelet(plane, logs)
        })
    })();
    match result {
        Ok(()) => Ok(cluster),
        Err(e) => {
            cluster.finish(true);
            Err(e)
        }
    }
}

impl Cluster {
    /// Tears down: on failure, dumps the logs first.
    pub fn finish(self, failed: bool) {
        if failed {
            dump(&self.logs, Some(&self.kubectl));
        }
        self.save_agent_logs();
        step("tear-down: node, control plane, host directories");
        drop(self);
    }
}
