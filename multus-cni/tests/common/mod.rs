//! Shared set-up for the root integration tests: a "node" network namespace where the
//! `multus-cni` binary and its delegates run (so bridges and the macvlan parent live there),
//! pods as further namespaces, and a temp directory with the configuration, the NAD and pod
//! files, the cache and host-local's leases. Everything is removed on drop.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use multus_testkit::Netns;
use serde_json::{Value, json};

/// Debian's reference plugins.
pub const PLUGIN_DIR: &str = "/usr/lib/cni";

/// What a run of the binary returned.
pub use multus_testkit::CniRun as Run;

/// The node: its namespace, a veth pair for macvlan (`vpar`), and the directories.
pub struct Node {
    pub netns: Netns,
    pub dir: tempfile::TempDir,
}

impl Node {
    /// A node namespace with `vpar` (macvlan parent) up.
    pub fn new() -> Self {
        let netns = Netns::new("cnd");
        netns.ip(&[
            "link", "add", "vpar", "type", "veth", "peer", "name", "vpeer",
        ]);
        netns.ip(&["link", "set", "vpar", "up"]);
        netns.ip(&["link", "set", "vpeer", "up"]);
        let dir = tempfile::Builder::new()
            .prefix("multus-cni-test")
            .tempdir()
            .unwrap();
        for sub in ["conf", "cache", "local", "ipam"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Self { netns, dir }
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// host-local IPAM over `subnet` (a /24) from .10 to .200, with an optional gateway.
    pub fn ipam(&self, subnet: &str, gateway: Option<&str>) -> Value {
        let base = subnet.trim_end_matches(".0/24");
        let mut range = json!({
            "subnet": subnet,
            "rangeStart": format!("{base}.10"),
            "rangeEnd": format!("{base}.200"),
        });
        if let Some(gw) = gateway {
            range["gateway"] = json!(gw);
        }
        json!({
            "type": "host-local",
            "dataDir": self.path("ipam"),
            "ranges": [[range]],
        })
    }

    /// The cluster network: bridge `cni0` with 203.0.113.0/24 and a default route.
    pub fn cluster_conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "cluster",
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "isDefaultGateway": true,
            "ipam": self.ipam("203.0.113.0/24", Some("203.0.113.1")),
        })
    }

    /// The multus configuration with the cluster network inline.
    pub fn multus_conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "multus-cni-network",
            "type": "multus",
            "confDir": self.path("conf"),
            "cniDir": self.path("cache"),
            "binDir": PLUGIN_DIR,
            "localSourceDir": self.path("local"),
            "logLevel": "debug",
            "logToStderr": true,
            "delegates": [self.cluster_conf(if version == "1.1.0" { "1.0.0" } else { version })],
        })
    }

    /// Writes a NAD file `<name>.yaml` in namespace `ns` with `config` as spec.config.
    pub fn nad(&self, ns: &str, name: &str, config: &Value) {
        let doc = json!({
            "apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"config": config.to_string()},
        });
        std::fs::write(
            self.path("local").join(format!("nad-{ns}-{name}.json")),
            doc.to_string(),
        )
        .unwrap();
    }

    /// The macvlan NAD `pods/macvlan-net` on `vpar`, 192.0.2.0/24.
    pub fn macvlan_nad(&self, version: &str) {
        self.nad(
            "pods",
            "macvlan-net",
            &json!({
                "cniVersion": version,
                "type": "macvlan",
                "master": "vpar",
                "mode": "bridge",
                "ipam": self.ipam("192.0.2.0/24", None),
            }),
        );
    }

    /// The bridge NAD `pods/bridge-net` on `br1`, 198.51.100.0/24, as a conflist with tuning.
    pub fn bridge_nad(&self, version: &str) {
        self.nad(
            "pods",
            "bridge-net",
            &json!({
                "cniVersion": version,
                "name": "bridge-net",
                "plugins": [
                    {"type": "bridge", "bridge": "br1", "ipam": self.ipam("198.51.100.0/24", None)},
                    {"type": "tuning", "mtu": 1400}
                ],
            }),
        );
    }

    /// Writes a pod file with the given annotations.
    pub fn pod(&self, ns: &str, name: &str, uid: &str, annotations: &Value) {
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "annotations": annotations},
        });
        std::fs::write(
            self.path("local").join(format!("pod-{ns}-{name}.json")),
            doc.to_string(),
        )
        .unwrap();
    }

    /// Writes pod `pods/name` (uid `uid-name`) asking for `networks` (the annotation's value)
    /// and makes its network namespace.
    pub fn pod_asking(&self, name: &str, networks: impl Into<Value>) -> Netns {
        self.pod(
            "pods",
            name,
            &format!("uid-{name}"),
            &json!({"k8s.v1.cni.cncf.io/networks": networks.into()}),
        );
        Netns::new("cpd")
    }

    /// Runs the binary in the node namespace like a runtime: `env` plus `config` on stdin.
    pub fn run_raw(&self, env: &[(&str, &str)], config: &[u8]) -> Run {
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            self.netns.name(),
            env!("CARGO_BIN_EXE_multus-cni"),
        ]);
        Run::invoke(cmd, env, config)
    }

    /// Runs `command` for a pod (`K8S_POD_NAMESPACE=pods`, `K8S_POD_NAME=name`).
    pub fn run(
        &self,
        command: &str,
        container: &str,
        pod: Option<&Netns>,
        name: &str,
        conf: &Value,
    ) -> Run {
        let netns = pod
            .map(|p| p.path().to_string_lossy().into_owned())
            .unwrap_or_default();
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=pods;K8S_POD_NAME={name}");
        self.run_with_args(command, container, &netns, &args, conf)
    }

    /// Runs `command` with `CNI_ARGS` `args` and `CNI_NETNS` `netns`, interface eth0.
    pub fn run_with_args(
        &self,
        command: &str,
        container: &str,
        netns: &str,
        args: &str,
        conf: &Value,
    ) -> Run {
        self.run_raw(
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", container),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", PLUGIN_DIR),
                ("CNI_ARGS", args),
            ],
            conf.to_string().as_bytes(),
        )
    }

    /// host-local leases left anywhere under the IPAM data dir (files named like an address).
    pub fn leases(&self) -> Vec<String> {
        let mut out: Vec<String> = multus_testkit::ipam::host_local_leases(&self.path("ipam"))
            .into_iter()
            .map(|(net, addr)| format!("{net}/{addr}"))
            .collect();
        out.sort();
        out
    }

    /// Files in the attachment cache, results included (`results/<id>`).
    pub fn cache_files(&self) -> Vec<String> {
        let files = |dir: PathBuf, prefix: &str| -> Vec<String> {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| format!("{prefix}{}", e.file_name().to_string_lossy()))
                .collect()
        };
        let mut out = files(self.path("cache"), "");
        out.extend(files(self.path("cache").join("results"), "results/"));
        out.sort();
        out
    }

    /// Link names in the node namespace.
    pub fn links(&self) -> Vec<String> {
        link_names(&self.netns)
    }
}

/// Asserts that nothing of a pod is left: no interface in `pod` but `lo`, no host-local lease,
/// no cache file.
#[track_caller]
pub fn assert_clean(node: &Node, pod: Option<&Netns>) {
    if let Some(pod) = pod {
        assert_eq!(link_names(pod), vec!["lo"], "interfaces left in the pod");
    }
    assert_eq!(
        node.leases(),
        Vec::<String>::new(),
        "host-local leases left"
    );
    assert_eq!(node.cache_files(), Vec::<String>::new(), "cache files left");
}

/// Link names in a namespace.
pub fn link_names(ns: &Netns) -> Vec<String> {
    let out = ns.ip(&["-j", "link", "show"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let mut names: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

/// IPv4 addresses (with prefix) on `ifname` in `ns`.
pub fn addrs(ns: &Netns, ifname: &str) -> Vec<String> {
    let out = ns.ip(&["-j", "-4", "addr", "show", "dev", ifname]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

/// IPv4 routes in `ns` as "dst via gw dev".
pub fn routes(ns: &Netns) -> Vec<String> {
    let out = ns.ip(&["-j", "-4", "route", "show"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} via {} dev {}",
                r["dst"].as_str().unwrap_or("?"),
                r["gateway"].as_str().unwrap_or("-"),
                r["dev"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// Runs `f` on a thread inside the node namespace (children it spawns start there too).
pub fn in_netns<T: Send>(ns: &Path, f: impl FnOnce() -> T + Send) -> T {
    multus_testkit::inside::run_in(ns, f).unwrap()
}

/// Whether root tests run (see multus_testkit::require_root).
pub fn root(test: &str) -> bool {
    multus_testkit::require_root(test)
}

/// The root guard and a fresh node: `None` (said loudly) when root tests cannot run.
pub fn root_node(test: &str) -> Option<Node> {
    root(test).then(Node::new)
}

/// A chained plugin that records every stdin and `CNI_ARGS` it gets under `<node>/spy/`, passes
/// its prevResult on for ADD, and fails DEL (code 111) while `<node>/spy/fail-DEL` exists.
pub fn install_spy(node: &Node) -> PathBuf {
    let bin = node.path("bin");
    let seen = node.path("spy");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&seen).unwrap();
    let script = format!(
        "#!/bin/sh\nd={seen}\nn=$(ls $d | grep -c \"^$CNI_COMMAND-.*[.]stdin$\")\n\
         cat > $d/$CNI_COMMAND-$n.stdin\nprintf '%s' \"$CNI_ARGS\" > $d/$CNI_COMMAND-$n.args\n\
         printf '%s' \"$CNI_IFNAME\" > $d/$CNI_COMMAND-$n.ifname\n\
         if [ -e $d/fail-$CNI_COMMAND ]; then\n\
         echo '{{\"cniVersion\":\"1.0.0\",\"code\":111,\"msg\":\"spy told to fail\"}}'; exit 1; fi\n\
         if [ \"$CNI_COMMAND\" = ADD ]; then jq -c .prevResult $d/ADD-$n.stdin; fi\n",
        seen = seen.display()
    );
    let path = bin.join("spy");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(
        &path,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .unwrap();
    seen
}

/// What the spy saw for its `n`th run of `command`: stdin and `CNI_ARGS`, and `CNI_IFNAME`.
pub fn spy_saw(seen: &Path, command: &str, n: usize) -> (Value, String, String) {
    let read = |ext: &str| std::fs::read_to_string(seen.join(format!("{command}-{n}.{ext}")));
    (
        serde_json::from_str(&read("stdin").unwrap()).unwrap(),
        read("args").unwrap(),
        read("ifname").unwrap(),
    )
}

/// This engine's cache entry of `container` (embedded in the first record of the file, which is
/// in Multus's format).
pub fn own_cache_entry(node: &Node, container: &str) -> Value {
    let file: Value =
        serde_json::from_slice(&std::fs::read(node.path("cache").join(container)).unwrap())
            .unwrap();
    file[0]["multusRsEntry"].clone()
}
