//! What kubelet's container runtime does with CNI, for one pod sandbox: take the first network
//! configuration of the configuration directory (by name, as libcni does), find its plugin in
//! `CNI_PATH`, and run it on the node with the `CNI_*` variables and the configuration on stdin.
use std::{
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context as _, bail};
use multus_testkit::{Netns, inside, unique_name};
use serde_json::Value;

/// A pod sandbox: its network namespace and the identity kubelet passes in `CNI_ARGS`.
pub struct Sandbox {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's UID.
    pub uid: String,
    /// The sandbox (infra container) id.
    pub container_id: String,
    /// The sandbox's network namespace.
    pub netns: Netns,
}

impl Sandbox {
    /// A new sandbox for pod `namespace/name`, with IPv6 off in its namespace so that only the
    /// demo's own packets are counted.
    pub fn new(namespace: &str, name: &str) -> Self {
        let netns = Netns::new("msp");
        netns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        netns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: unique_name("demo-uid-"),
            container_id: unique_name("demo-sandbox-"),
            netns,
        }
    }

    /// The IPv4 address of `ifname`.
    pub fn ipv4(&self, ifname: &str) -> anyhow::Result<Ipv4Addr> {
        let out = self.netns.ip(&["-j", "-4", "addr", "show", "dev", ifname]);
        let v: Value = serde_json::from_str(&out).context("ip -j addr")?;
        v[0]["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|a| a["local"].as_str()?.parse().ok())
            .with_context(|| format!("{}: no IPv4 address on {ifname}", self.name))
    }

    /// `count` pings to `dst`, 200 ms apart, each waiting 1 s at most; the replies.
    pub fn ping(&self, dst: Ipv4Addr, count: u32) -> anyhow::Result<u32> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", self.netns.name(), "ping", "-n", "-q", "-c"])
            .arg(count.to_string())
            .args(["-i", "0.2", "-W", "1"])
            .arg(dst.to_string())
            .output()
            .context("running ping")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find(|l| l.contains("packets transmitted"))
            .and_then(|l| l.split(',').nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no ping summary in: {text}"))
    }

    fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            self.namespace, self.name, self.container_id, self.uid
        )
    }
}

/// The node's CNI set-up as the runtime sees it.
pub struct Runtime {
    /// The node's network namespace, where plugins run.
    pub node: PathBuf,
    /// The CNI configuration directory (kubelet's `/etc/cni/net.d`).
    pub conf_dir: PathBuf,
    /// The plugin directories, searched in order (`CNI_PATH`).
    pub cni_path: Vec<PathBuf>,
}

/// The network configuration the runtime uses and the plugin it runs.
pub struct Network {
    /// The file it came from.
    pub file: PathBuf,
    /// What the plugin gets on stdin.
    pub stdin: Value,
    /// The plugin binary.
    pub plugin: PathBuf,
}

impl Runtime {
    /// The first `.conf`, `.conflist` or `.json` file by name, as libcni picks it. A list is
    /// run plugin by plugin; the demo's has one, which gets the list's name and version.
    pub fn network(&self) -> anyhow::Result<Network> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.conf_dir)
            .with_context(|| format!("reading {}", self.conf_dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "conf" || x == "conflist" || x == "json")
            })
            .collect();
        files.sort();
        let file = files
            .into_iter()
            .next()
            .with_context(|| format!("no network configuration in {}", self.conf_dir.display()))?;
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let conf: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        let stdin = match conf.get("plugins").and_then(Value::as_array) {
            None => conf.clone(),
            Some(plugins) if plugins.len() == 1 => {
                let mut plugin = plugins[0].clone();
                plugin["name"] = conf["name"].clone();
                plugin["cniVersion"] = conf["cniVersion"].clone();
                plugin
            }
            Some(plugins) => bail!(
                "{}: {} plugins; the demo's runtime runs single-plugin lists only",
                file.display(),
                plugins.len()
            ),
        };
        let kind = stdin["type"]
            .as_str()
            .with_context(|| format!("{}: no plugin type", file.display()))?;
        let plugin = self
            .cni_path
            .iter()
            .map(|dir| dir.join(kind))
            .find(|p| p.is_file())
            .with_context(|| format!("plugin {kind} not found in CNI_PATH"))?;
        Ok(Network {
            file,
            stdin,
            plugin,
        })
    }

    /// Runs `command` (ADD, DEL, CHECK) for `sandbox` with interface `eth0`, in the node's
    /// namespace; returns the plugin's stdout (the result, or nothing for DEL).
    pub fn call(&self, command: &str, sandbox: &Sandbox) -> anyhow::Result<String> {
        let network = self.network()?;
        let cni_path = std::env::join_paths(&self.cni_path).context("CNI_PATH")?;
        let mut cmd = inside::command(&self.node, &network.plugin)
            .with_context(|| format!("entering {}", self.node.display()))?;
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", &sandbox.container_id)
            .env("CNI_NETNS", sandbox.netns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", cni_path)
            .env("CNI_ARGS", sandbox.cni_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", network.plugin.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(network.stdin.to_string().as_bytes())
                .context("writing the plugin's stdin")?;
        }
        let out = child.wait_with_output().context("waiting for the plugin")?;
        let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !out.status.success() {
            bail!(
                "CNI {command} of {}/{} failed ({}): {stdout}\n{}",
                sandbox.namespace,
                sandbox.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(stdout)
    }
}

/// The file name of `path`, for display.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
