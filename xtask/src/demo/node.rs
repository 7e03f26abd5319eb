//! The demo's node: a network namespace with `eth0` (a veth, the host interface macvlan-conf
//! uses), a directory tree in place of the node's CNI and multus directories, a bpffs
//! directory for the pins, and `multus-agent run` in standalone mode. Everything goes when it
//! is dropped, also after a failure.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use multus_testkit::{BpffsDir, Netns, inside};
use serde_json::{Value, json};

/// Where the agent serves `/metrics`, `/healthz` and `/readyz`, inside the node's namespace.
pub const METRICS: &str = "127.0.0.1:9110";

/// The node. Fields drop in order: the agent first, the namespace, then the files.
pub struct Node {
    /// The agent, once started.
    pub agent: Option<Agent>,
    /// The node's network namespace.
    pub netns: Netns,
    /// Pins of the dataplane.
    pub bpffs: BpffsDir,
    dir: tempfile::TempDir,
}

impl Node {
    /// Makes the namespace (IPv6 off, so only the demo's packets flow) with `eth0` and its
    /// veth peer up, and the directories.
    pub fn new() -> anyhow::Result<Self> {
        let netns = Netns::new("mdn");
        netns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        netns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        netns.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0-peer",
        ]);
        netns.ip(&["link", "set", "eth0", "up"]);
        netns.ip(&["link", "set", "eth0-peer", "up"]);
        let dir = tempfile::Builder::new()
            .prefix("multus-demo-")
            .tempdir()
            .context("creating the demo's directory")?;
        for sub in ["bin", "net.d", "run", "state", "cache", "local.d", "ipam"] {
            std::fs::create_dir_all(dir.path().join(sub))
                .with_context(|| format!("creating {sub}"))?;
        }
        Ok(Self {
            agent: None,
            netns,
            bpffs: BpffsDir::new("mdb"),
            dir,
        })
    }

    /// A path below the demo's directory.
    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// host-local's settings with its leases kept in the demo's directory.
    pub fn ipam_data_dir(&self) -> PathBuf {
        self.path("ipam")
    }

    /// The agent's configuration: standalone over `local.d`, metrics on the node's loopback,
    /// the dataplane's pins and records in the demo's directories.
    pub fn agent_config(&self) -> Value {
        json!({
            "socketDir": self.path("run"),
            "metricsAddress": "127.0.0.1",
            "metricsPort": 9110,
            "bpffsDir": self.bpffs.path(),
            "dataplaneStateDir": self.path("state"),
            "localSourceDir": self.path("local.d"),
            "logLevel": "verbose",
        })
    }

    /// Starts `multus-agent run` inside the node's namespace and waits for `/readyz`.
    pub fn start_agent(&mut self, binary: &Path) -> anyhow::Result<&Agent> {
        let config = self.path("agent-config.json");
        std::fs::write(&config, serde_json::to_vec_pretty(&self.agent_config())?)
            .context("writing the agent's configuration")?;
        let log = self.path("agent.log");
        let out = std::fs::File::create(&log).context("creating the agent's log")?;
        let child = inside::command(&self.netns.path(), binary)?
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("MULTUS_NODE_NAME")
            .env_remove("MULTUS_AGENT_CONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let agent = self.agent.insert(Agent {
            child: Some(child),
            log,
            netns: self.netns.path(),
        });
        agent.wait_ready()?;
        Ok(agent)
    }

    /// Files below `sub` (recursively), relative to it.
    pub fn files(&self, sub: &str) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(root, &path, out);
                } else if let Ok(rel) = path.strip_prefix(root) {
                    out.push(rel.display().to_string());
                }
            }
        }
        let root = self.path(sub);
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.sort();
        out
    }
}

/// The running agent; killed when dropped if it is still running.
pub struct Agent {
    child: Option<Child>,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
    netns: PathBuf,
}

impl Agent {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("the agent exited with {status}:\n{}", self.log_tail(30));
            }
            if matches!(self.get("/readyz"), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the agent was not ready after 60 s:\n{}", self.log_tail(30));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET path` on the metrics port, from inside the node's namespace.
    pub fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let addr: SocketAddr = METRICS.parse()?;
        Ok(inside::http_get(&self.netns, addr, path)?)
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM, then waits up to 30 s for a clean exit.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .context("signalling the agent")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                bail!("the agent exited with {status}:\n{}", self.log_tail(30));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("the agent did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
