//! A node: containerd + runc and kubelet, with the node's primary CNI (a bridge + host-local
//! conflist in the node's net.d, as a user's node has one). Everything it runs and writes is
//! in this value, so a second node is a second value (with its own name and address).
use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;
use serde_json::{Value, json};

use super::{
    control_plane::ControlPlane,
    host::{self, HostDirs, HostLink},
    proc::Proc,
    run, run_out, wait,
};
use crate::{apiserver::cached, shell::note};

/// Where the node's CNI configuration lives (containerd reads it; the product writes there).
pub const NET_D: &str = "/etc/cni/net.d";
/// Where the node's CNI plugins live.
pub const CNI_BIN: &str = "/opt/cni/bin";
/// Debian's reference plugins (containernetworking-plugins), copied into [`CNI_BIN`].
const DEBIAN_PLUGINS: &str = "/usr/lib/cni";
/// The plugins the node's networks use.
const PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "macvlan"];
/// The primary network's conflist, and its network name.
pub const PRIMARY_CONFLIST: &str = "10-e2e-primary.conflist";
/// The primary network's name.
pub const PRIMARY_NETWORK: &str = "e2e-primary";
/// The primary network's subnet (documentation range; the bridge has no address and no route
/// leaves it: pods reach each other only).
pub const PRIMARY_SUBNET: &str = "192.0.2.0/24";
/// The pause image every pod sandbox runs.
pub const PAUSE_IMAGE: &str = "multus-rs.local/pause:e2e";

/// The host directories the node's runtime and the product write into (the DaemonSet's
/// hostPath volumes): what was not there before the node started is removed after it.
pub const HOST_DIRS: &[&str] = &[
    "/etc/cni",
    NET_D,
    "/opt/cni",
    CNI_BIN,
    "/etc/cni/multus",
    "/var/lib/cni",
    "/run/multus",
    "/sys/fs/bpf/multus",
    "/var/lib/kubelet",
    "/run/k8s.cni.cncf.io",
    // containerd's shim sockets (`s/`) and runc's state (`runc/`) live here whatever its
    // state directory.
    "/run/containerd",
];

/// A running node.
#[derive(Debug)]
pub struct Node {
    name: String,
    ip: Ipv4Addr,
    dir: PathBuf,
    containerd_sock: PathBuf,
    bridge: String,
    kubelet: Option<Proc>,
    containerd: Option<Proc>,
    link: Option<HostLink>,
    master: Option<HostLink>,
    host_dirs: HostDirs,
    shared_root: Option<host::SharedRoot>,
    netns_before: BTreeSet<String>,
}

impl Node {
    /// The node's interface for macvlan networks (a veth end of its own: frames between the pods stay
    /// on the node).
    pub fn master(&self) -> &str {
        self.master.as_ref().map_or("", HostLink::name)
    }

    /// Prepares node `index` (1, 2, ...) and starts containerd with the pause image; kubelet
    /// starts with [`Node::start_kubelet`] once the images it needs are imported.
    pub fn start(index: u8, dir: &Path, logs: &Path, pause: &Path) -> anyhow::Result<Self> {
        let name = format!("multus-e2e-{index}");
        let ip = Ipv4Addr::new(203, 0, 113, 224 + index);
        let dir = dir.join(&name);
        std::fs::create_dir_all(&dir)?;
        let mut host_dirs = HostDirs::default();
        for d in HOST_DIRS {
            host_dirs.track(d);
        }
        host::share_netns_dir()?;
        let shared_root = Some(host::SharedRoot::new()?);
        let mut node = Self {
            shared_root,
            link: Some(HostLink::create(&format!("mrse2e-n{index}"), Some(ip))?),
            master: Some(HostLink::create(&format!("mrse2e-m{index}"), None)?),
            containerd_sock: dir.join("containerd/containerd.sock"),
            bridge: format!("mrse2e-br{index}"),
            name,
            ip,
            dir,
            kubelet: None,
            containerd: None,
            host_dirs,
            netns_before: host::cni_netns(),
        };
        node.install_primary_cni()?;
        node.start_containerd(logs)?;
        node.import(pause)?;
        Ok(node)
    }

    fn install_primary_cni(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(CNI_BIN)?;
        std::fs::create_dir_all(NET_D)?;
        for plugin in PLUGINS {
            let to = Path::new(CNI_BIN).join(plugin);
            if !to.exists() {
                let from = Path::new(DEBIAN_PLUGINS).join(plugin);
                std::fs::copy(&from, &to)
                    .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            }
        }
        let conflist = json!({
            "cniVersion": "1.0.0",
            "name": PRIMARY_NETWORK,
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": false,
                "ipMasq": false,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": PRIMARY_SUBNET}]]},
            }],
        });
        let path = Path::new(NET_D).join(PRIMARY_CONFLIST);
        std::fs::write(&path, serde_json::to_string_pretty(&conflist)?)
            .with_context(|| format!("writing {}", path.display()))?;
        note(&format!(
            "primary CNI: {} (bridge {}, {PRIMARY_SUBNET}), plugins {} in {CNI_BIN}",
            path.display(),
            self.bridge,
            PLUGINS.join(" ")
        ));
        Ok(())
    }

    fn start_containerd(&mut self, logs: &Path) -> anyhow::Result<()> {
        let base = self.dir.join("containerd");
        std::fs::create_dir_all(&base)?;
        // restrict_oom_score_adj: the VM may not lower scores (no CAP_SYS_RESOURCE); cgroupfs,
        // as kubelet is told; the sandbox image is imported, never pulled.
        let mut config = crate::containerd_conf::private(&base, &self.containerd_sock, true);
        config.push_str(&format!(
            r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{NET_D}"
"#
        ));
        let path = base.join("config.toml");
        std::fs::write(&path, config)?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&path);
        self.containerd = Some(Proc::spawn(
            &format!("containerd-{}", self.name),
            cmd,
            logs,
        )?);
        wait(Duration::from_secs(30), "containerd", || {
            self.check_running()?;
            Ok(self.ctr(&["version"]).ok())
        })?;
        Ok(())
    }

    /// Runs `ctr` against this node's containerd, in the CRI's namespace.
    pub fn ctr(&self, args: &[&str]) -> anyhow::Result<String> {
        let sock = self.containerd_sock.to_string_lossy().into_owned();
        let mut all = vec!["--address", &sock, "--namespace", "k8s.io"];
        all.extend_from_slice(args);
        run_out("ctr", &all)
    }

    /// Imports an OCI image archive into the node's containerd.
    pub fn import(&self, archive: &Path) -> anyhow::Result<()> {
        let out = self.ctr(&["images", "import", &archive.to_string_lossy()])?;
        note(&format!(
            "imported {} into {}: {}",
            archive.display(),
            self.name,
            out.trim()
        ));
        Ok(())
    }

    /// Starts kubelet and waits until the node is Ready.
    pub fn start_kubelet(&mut self, plane: &ControlPlane, logs: &Path) -> anyhow::Result<()> {
        let root = self.dir.join("kubelet");
        std::fs::create_dir_all(&root)?;
        let kubeconfig = self.dir.join("kubelet.kubeconfig");
        std::fs::copy(plane.admin_kubeconfig(), &kubeconfig)?;
        let port = std::net::TcpListener::bind((self.ip, 0))?
            .local_addr()?
            .port();
        let mut cmd = Command::new(cached("kubelet"));
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args([
                "--container-runtime=remote",
                &format!(
                    "--container-runtime-endpoint=unix://{}",
                    self.containerd_sock.display()
                ),
                &format!("--root-dir={}", root.display()),
                &format!(
                    "--volume-plugin-dir={}",
                    root.join("volume-plugins").display()
                ),
                &format!("--hostname-override={}", self.name),
                &format!("--node-ip={}", self.ip),
                &format!("--address={}", self.ip),
                &format!("--port={port}"),
                "--healthz-port=0",
                "--read-only-port=0",
                "--cgroup-driver=cgroupfs",
                "--cgroups-per-qos=false",
                "--enforce-node-allocatable=",
                "--fail-swap-on=false",
                "--oom-score-adj=0",
                "--eviction-hard=",
                "--image-gc-high-threshold=100",
                "--authorization-mode=AlwaysAllow",
                // Deleted pods leave the API at the next pod sync (1 min by default).
                "--sync-frequency=5s",
                "--anonymous-auth=true",
                "--v=2",
            ]);
        self.kubelet = Some(Proc::spawn(&format!("kubelet-{}", self.name), cmd, logs)?);
        let path = format!("/api/v1/nodes/{}", self.name);
        wait(Duration::from_secs(120), "the node to be Ready", || {
            self.check_running()?;
            Ok(match plane.admin().request("GET", &path, None) {
                Ok((200, node)) => node_ready(&node).then_some(()),
                _ => None,
            })
        })
    }

    /// Fails when containerd or kubelet has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for proc in self.kubelet.iter_mut().chain(self.containerd.iter_mut()) {
            proc.check_running()?;
        }
        Ok(())
    }

    /// Stops kubelet, removes every container and sandbox left, stops containerd, unmounts what
    /// is mounted below the node's directory, removes the runtime's network namespaces, the
    /// node's bridge and links, and what the node and the product wrote into the host's
    /// directories.
    pub fn stop(&mut self) {
        if let Some(mut kubelet) = self.kubelet.take() {
            kubelet.stop(Duration::from_secs(10));
        }
        if self.containerd.is_some() {
            self.remove_containers();
        }
        if let Some(mut containerd) = self.containerd.take() {
            containerd.stop(Duration::from_secs(10));
            self.kill_shims();
        }
        let unmounted = host::unmount_below(&self.dir);
        if unmounted > 0 {
            note(&format!(
                "unmounted {unmounted} mounts below {}",
                self.dir.display()
            ));
        }
        let netns = host::remove_cni_netns(&self.netns_before);
        if !netns.is_empty() {
            note(&format!("removed network namespaces {}", netns.join(" ")));
        }
        let _ = run("ip", &["link", "del", &self.bridge]);
        self.link.take();
        self.master.take();
        self.shared_root.take();
        for path in self.host_dirs.restore() {
            note(&format!("removed {}", path.display()));
        }
    }

    fn remove_containers(&self) {
        let list = |what: &str| -> Vec<String> {
            self.ctr(&[what, "ls", "-q"])
                .map(|out| out.lines().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        for task in self
            .ctr(&["tasks", "ls"])
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
        {
            let _ = self.ctr(&["tasks", "kill", "--signal", "SIGKILL", task]);
            let _ = wait(Duration::from_secs(5), "the task to exit", || {
                Ok(self.ctr(&["tasks", "delete", task]).ok().map(|_| ()))
            });
        }
        for container in list("containers") {
            let _ = self.ctr(&["containers", "rm", &container]);
        }
    }

    /// containerd's shims outlive it (they are re-parented to init); they name the node's
    /// socket on their command line.
    fn kill_shims(&self) {
        let sock = self.containerd_sock.to_string_lossy().into_owned();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in dir.filter_map(Result::ok) {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            if args.first().is_some_and(|a| a.contains("containerd-shim"))
                && args.iter().any(|a| a.contains(&sock))
            {
                note(&format!("killing leftover shim {pid}"));
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a Node object says Ready=True.
pub fn node_ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}
