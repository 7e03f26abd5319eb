//! A node for the xtask runs that drive the release binaries (the stress run, the agent
//! bench): a network namespace with `vpar` (a veth end, the macvlan parent), Debian's plugins,
//! a bpffs directory and records on tmpfs as in production, the release `multus-agent` running
//! in it, and the release `multus-cni` invoked like a runtime invokes it.
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
pub struct AgentNode {
    pub netns: Netns,
    pub dir: PathBuf,
    pub state: PathBuf,
    pub bpffs: BpffsDir,
    pub bin: PathBuf,
    pub source: Source,
    /// Keys of the agent's configuration beyond the node's directories and the source.
    pub agent_keys: serde_json::Map<String, Value>,
    agent: Option<Child>,
}

impl Drop for AgentNode {
    fn drop(&mut self) {
        self.kill_agent();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

impl AgentNode {
    /// A node namespace (named `prefix`-something) with `vpar` and the directories; `name` tells
    /// this run's directories from others'. Without `ipv6` the node has IPv4 only.
    pub fn new(bin: PathBuf, name: &str, prefix: &str, ipv6: bool) -> anyhow::Result<Self> {
        let netns = Netns::new(prefix);
        if !ipv6 {
            netns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
            netns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        }
        netns.ip(&[
            "link", "add", "vpar", "type", "veth", "peer", "name", "vpeer",
        ]);
        netns.ip(&["link", "set", "vpar", "up"]);
        netns.ip(&["link", "set", "vpeer", "up"]);
        let pid = std::process::id();
        let node = Self {
            netns,
            dir: std::env::temp_dir().join(format!("multus-{name}-{pid}")),
            // Records live on tmpfs in production (/run), like bpffs: not on the disk.
            state: PathBuf::from(format!("/run/multus-{name}-{pid}")),
            bpffs: BpffsDir::new(prefix),
            bin,
            source: Source::Standalone,
            agent_keys: serde_json::Map::new(),
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

    /// host-local IPAM on `subnet`, its leases in the node's `ipam/`.
    pub fn ipam(&self, subnet: &str) -> Value {
        multus_testkit::conf::host_local(&self.path("ipam"), subnet)
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
        for (key, value) in &self.agent_keys {
            conf[key] = value.clone();
        }
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

    /// `command` for pod `ns/name` (container `id`, netns `netns`) with `conf` on stdin.
    pub fn cni(
        &self,
        conf: &Value,
        command: &str,
        id: &str,
        netns: &Path,
        ns: &str,
        name: &str,
    ) -> anyhow::Result<Outcome> {
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}");
        self.cni_raw(
            conf.to_string().as_bytes(),
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
}
