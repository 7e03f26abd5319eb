//! The stress node: a network namespace set up like the demo's node (a veth pair as the macvlan
//! parent, Debian's plugins, a bpffs directory, records on tmpfs), the release `multus-agent`
//! running in it, and the release `multus-cni` shim invoked like a runtime invokes it.
use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use multus_testkit::{
    BpffsDir, Netns,
    conf::{NodeDirs, PLUGIN_DIR},
    inside,
};
use serde_json::{Value, json};

const METRICS: &str = "127.0.0.1:9110";
/// The secondary networks every stress pod asks for.
pub const NETWORKS: &str = "mv,br";

/// Where the pods and NADs come from.
pub enum Source {
    /// Local files in `<dir>/local`.
    Standalone,
    /// The test API server, through a relay into the node's namespace; `kubeconfig` and this
    /// node's name.
    Kubernetes { kubeconfig: PathBuf, node: String },
}

/// What one CNI invocation returned.
#[derive(Debug)]
pub struct Outcome {
    pub exit: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Outcome {
    /// The CNI error code of a failed call (0 when it succeeded or printed no code).
    pub fn code(&self) -> u64 {
        serde_json::from_str::<Value>(&self.stdout)
            .ok()
            .and_then(|v| v["code"].as_u64())
            .unwrap_or(0)
    }
}

/// The node.
pub struct StressNode {
    pub netns: Netns,
    pub dir: PathBuf,
    pub state: PathBuf,
    pub bpffs: BpffsDir,
    pub bin: PathBuf,
    pub source: Source,
    agent: Option<Child>,
}

impl Drop for StressNode {
    fn drop(&mut self) {
        self.kill_agent();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl StressNode {
    /// A node namespace with `vpar` (the macvlan parent) and the directories.
    pub fn new(bin: PathBuf, tag: &str) -> anyhow::Result<Self> {
        let netns = Netns::new("snd");
        netns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        netns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        netns.ip(&[
            "link", "add", "vpar", "type", "veth", "peer", "name", "vpeer",
        ]);
        netns.ip(&["link", "set", "vpar", "up"]);
        netns.ip(&["link", "set", "vpeer", "up"]);
        let pid = std::process::id();
        let node = Self {
            netns,
            dir: std::env::temp_dir().join(format!("multus-stress-{tag}-{pid}")),
            // Records live on tmpfs in production (/run), like bpffs.
            state: PathBuf::from(format!("/run/multus-stress-{tag}-{pid}")),
            bpffs: BpffsDir::new("sts"),
            bin,
            source: Source::Standalone,
            agent: None,
        };
        for sub in ["local", "cache", "ipam", "conf", "run"] {
            std::fs::create_dir_all(node.path(sub))?;
        }
        Ok(node)
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.join(sub)
    }

    fn ipam(&self, subnet: &str) -> Value {
        multus_testkit::conf::host_local(&self.path("ipam"), subnet)
    }

    /// The two secondary networks: a macvlan on `vpar` and a bridge of its own.
    pub fn nad_configs(&self) -> [(&'static str, Value); 2] {
        [
            (
                "mv",
                json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "vpar",
                       "mode": "bridge", "ipam": self.ipam("192.0.2.0/24")}),
            ),
            (
                "br",
                json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "sbr1",
                       "ipam": self.ipam("198.51.100.0/24")}),
            ),
        ]
    }

    fn dirs(&self) -> NodeDirs<'_> {
        NodeDirs {
            dir: &self.dir,
            bpffs: self.bpffs.path(),
            state: &self.state,
        }
    }

    /// The shim's configuration, as the install writes it for this agent.
    pub fn shim_conf(&self) -> Value {
        self.dirs().shim()
    }

    fn agent_conf(&self) -> Value {
        let mut conf = self.dirs().agent();
        // Temp files of killed writers are swept every second.
        conf["reconcileIntervalSeconds"] = json!(1);
        // Bursts of 80: let more of them run at once than the default 4.
        conf["requestConcurrency"] = json!(8);
        match &self.source {
            Source::Standalone => conf["localSourceDir"] = json!(self.path("local")),
            Source::Kubernetes { kubeconfig, node } => {
                conf["kubeconfig"] = json!(kubeconfig);
                conf["nodeName"] = json!(node);
            }
        }
        conf
    }

    /// Starts the agent and waits until it is ready.
    pub fn start_agent(&mut self) -> anyhow::Result<u32> {
        let config = self.path("agent.json");
        std::fs::write(&config, self.agent_conf().to_string())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("agent.log"))?;
        let child = inside::command(&self.netns.path(), self.bin.join("multus-agent"))?
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("MULTUS_NODE_NAME")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting multus-agent")?;
        let pid = child.id();
        self.agent = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(self.get("/readyz"), Ok((200, _))) {
            if let Some(child) = self.agent.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "the agent exited with {status}; see {}",
                    self.path("agent.log").display()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "the agent did not get ready in 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(pid)
    }

    /// SIGKILL: nothing gets cleaned up.
    pub fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// `GET path` on the metrics port inside the node.
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let addr: SocketAddr = METRICS.parse()?;
        Ok(inside::http_get(&self.netns.path(), addr, path)?)
    }

    /// One value of an unlabelled series of `/metrics`.
    pub fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (_, text) = self.get("/metrics")?;
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {name} in the scrape"))
    }

    /// Runs the shim (`conf` on stdin) in the node namespace with `env` as its `CNI_*`.
    pub fn cni_raw(&self, conf: &[u8], env: &[(&str, &str)]) -> anyhow::Result<Outcome> {
        let mut cmd = inside::command(&self.netns.path(), self.bin.join("multus-cni"))?;
        for (k, _) in std::env::vars() {
            if k.starts_with("CNI_") {
                cmd.env_remove(k);
            }
        }
        let started = Instant::now();
        let mut child = cmd
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running multus-cni")?;
        if let Some(mut stdin) = child.stdin.take() {
            // A child that exits before reading all of it is the call's own answer.
            let _ = stdin.write_all(conf);
        }
        let out = child.wait_with_output()?;
        Ok(Outcome {
            exit: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: started.elapsed(),
        })
    }

    /// `command` for pod `name` (container `id`, netns `netns`) with the shim configuration.
    pub fn cni(
        &self,
        command: &str,
        id: &str,
        netns: &Path,
        ns: &str,
        name: &str,
    ) -> anyhow::Result<Outcome> {
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}");
        self.cni_raw(
            self.shim_conf().to_string().as_bytes(),
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", &netns.to_string_lossy()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", PLUGIN_DIR),
                ("CNI_ARGS", &args),
            ],
        )
    }

    /// Everything a pod could leave behind on this node, as readable lines; empty when clean.
    /// `base_links` are the node's own links (the parent, the bridge once created).
    pub fn leftovers(&self, base_links: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for lease in self.leases() {
            out.push(format!("lease {lease}"));
        }
        for link in node_links(&self.netns) {
            if !base_links.contains(&link) {
                out.push(format!("link {link} in the node"));
            }
        }
        for pin in self.bpffs.entries() {
            if !pin.starts_with("maps") {
                out.push(format!("pin {}", pin.display()));
            }
        }
        for (dir, what) in [
            (self.path("cache"), "cache"),
            (self.path("cache").join("results"), "cache result"),
            (self.state.join("attachments"), "record or temp file"),
        ] {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    out.push(format!("{what} {}", e.path().display()));
                }
            }
        }
        if self.agent.is_some() {
            match self.metric("multus_agent_attached_interfaces") {
                Ok(n) if n > 0.0 => out.push(format!("{n} map entries (attached interfaces)")),
                Ok(_) => {}
                Err(e) => out.push(format!("scrape: {e}")),
            }
        }
        out
    }

    /// host-local leases (files named like an address).
    pub fn leases(&self) -> Vec<String> {
        let mut out: Vec<String> = multus_testkit::ipam::host_local_leases(&self.path("ipam"))
            .into_iter()
            .map(|(_, addr)| addr)
            .collect();
        out.sort();
        out
    }
}

/// Link names in a namespace.
pub fn node_links(ns: &Netns) -> Vec<String> {
    let out = ns.ip(&["-j", "link", "show"]);
    let mut names: Vec<String> = serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}
