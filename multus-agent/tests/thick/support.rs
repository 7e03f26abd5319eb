//! The fixture of the thick-mode tests: a "node" network namespace with a veth for macvlan
//! parents, where the real `multus-agent` and the real `multus-cni` shim run (entering the
//! namespace only, so bpffs stays visible); pods as further namespaces; a temp directory with
//! the configuration, NAD and pod files, the cache, the socket and host-local's leases; a bpffs
//! directory for the pins. Everything is removed on drop.
#![allow(dead_code, reason = "not every test uses every helper")]

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use multus_testkit::{BpffsDir, Netns, Ping, inside, objects, unique_name};
use serde_json::{Value, json};

/// Debian's reference plugins.
pub const PLUGIN_DIR: &str = "/usr/lib/cni";
/// The networks annotation.
pub use multus_testkit::objects::NETWORKS;
/// Where the agent serves metrics inside the node namespace.
pub const METRICS: &str = "127.0.0.1:9110";
/// Layer-2 size of a default IPv4 ping (56 data + 8 ICMP + 20 IPv4 + 14 Ethernet bytes).
pub const PING_FRAME: u64 = 98;

/// The `multus-cni` binary, built by `cargo test --workspace` next to the agent.
pub fn multus_cni_binary() -> PathBuf {
    let agent = Path::new(env!("CARGO_BIN_EXE_multus-agent"));
    let cni = agent.with_file_name("multus-cni");
    assert!(
        cni.is_file(),
        "{} is missing: build it first (`cargo build -p multus-cni`; `cargo xtask test` does)",
        cni.display()
    );
    cni
}

/// What a CNI invocation returned.
pub use multus_testkit::CniRun as Run;

/// A pod: its network namespace (IPv6 off, so nothing but the test's traffic flows), name,
/// uid and container id.
pub struct TestPod {
    pub netns: Netns,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container: String,
}

impl TestPod {
    pub fn new(namespace: &str, name: &str) -> Self {
        let netns = Netns::new("apd");
        netns.disable_ipv6();
        Self {
            netns,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            uid: unique_name("uid-"),
            container: unique_name("ctr"),
        }
    }

    pub fn cni_args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_UID={}",
            self.namespace, self.name, self.uid
        )
    }

    /// The IPv4 address (without prefix) and MAC of `ifname`.
    pub fn addr_and_mac(&self, ifname: &str) -> (String, String) {
        let out = self.netns.ip(&["-j", "addr", "show", "dev", ifname]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let link = &v[0];
        let ip = link["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["family"] == "inet")
            .and_then(|a| a["local"].as_str())
            .unwrap_or_else(|| panic!("no IPv4 address on {ifname}: {out}"))
            .to_owned();
        let mac = link["address"].as_str().unwrap().to_owned();
        (ip, mac)
    }

    /// Interface names.
    pub fn links(&self) -> Vec<String> {
        self.netns.link_names()
    }

    /// Starts `count` pings to `dst`, 10 ms apart, in the background (stdout piped).
    pub fn spawn_ping(&self, dst: &str, count: u32) -> Child {
        Ping::new(&self.netns, &dst, count).spawn().unwrap()
    }

    /// Sends `count` pings to `dst` and returns the replies.
    pub fn ping(&self, dst: &str, count: u32) -> u32 {
        Ping::new(&self.netns, &dst, count).replies()
    }
}

/// Permanent neighbour entries between two pods' `ifname`s: no ARP on the wire.
pub fn static_neighbours(a: &TestPod, b: &TestPod, ifname: &str) {
    let (ip_a, mac_a) = a.addr_and_mac(ifname);
    let (ip_b, mac_b) = b.addr_and_mac(ifname);
    for (pod, ip, mac) in [(a, &ip_b, &mac_b), (b, &ip_a, &mac_a)] {
        pod.netns.ip(&[
            "neigh",
            "replace",
            ip,
            "lladdr",
            mac,
            "dev",
            ifname,
            "nud",
            "permanent",
        ]);
    }
}

/// The test node.
pub struct Node {
    pub netns: Netns,
    pub dir: tempfile::TempDir,
    pub bpffs: BpffsDir,
}

impl Node {
    pub fn new() -> Self {
        let netns = Netns::new("and");
        // Only the pods' frames may cross the parent: its own IPv6 chatter (neighbour
        // advertisements, MLD reports) reaches every macvlan and spoils exact counts.
        netns.disable_ipv6();
        netns.add_veth_parent();
        let dir = tempfile::Builder::new()
            .prefix("multus-agent-test")
            .tempdir()
            .unwrap();
        for sub in ["run", "state", "cache", "local", "ipam", "conf"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Self {
            netns,
            dir,
            bpffs: BpffsDir::new("at"),
        }
    }

    pub fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// host-local over `subnet` (a /24), .10 to .250.
    pub fn ipam(&self, subnet: &str) -> Value {
        let base = subnet.trim_end_matches(".0/24");
        json!({
            "type": "host-local",
            "dataDir": self.path("ipam"),
            "ranges": [[{"subnet": subnet, "rangeStart": format!("{base}.10"),
                         "rangeEnd": format!("{base}.250")}]],
        })
    }

    /// The cluster network: a macvlan on `vpar` in 203.0.113.0/24.
    pub fn cluster_conf(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "cluster", "type": "macvlan", "master": "vpar",
               "mode": "bridge", "ipam": self.ipam("203.0.113.0/24")})
    }

    /// The agent's configuration: standalone over `local/`, metrics on 127.0.0.1:9110, and the
    /// CNI keys (cluster network, cache, plugins) that override the shim's.
    pub fn agent_config(&self) -> Value {
        json!({
            "socketDir": self.path("run"),
            "metricsAddress": "127.0.0.1",
            "metricsPort": 9110,
            "bpffsDir": self.bpffs.path(),
            "dataplaneStateDir": self.path("state"),
            "localSourceDir": self.path("local"),
            "logLevel": "debug",
            "reconcileIntervalSeconds": 3600,
            "cniDir": self.path("cache"),
            "binDir": PLUGIN_DIR,
            "confDir": self.path("conf"),
            "delegates": [self.cluster_conf()],
        })
    }

    /// The shim's configuration (what 00-multus.conf holds in thick mode).
    pub fn shim_conf(&self) -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "multus-cni-network",
            "type": "multus-shim",
            "daemonSocketDir": self.path("run"),
            "cniDir": self.path("cache"),
            "binDir": PLUGIN_DIR,
            "bpffsDir": self.bpffs.path(),
            "dataplaneStateDir": self.path("state"),
            "logLevel": "debug",
            "logToStderr": true,
        })
    }

    /// Starts the agent with `config` in the node namespace and waits until it is ready.
    pub fn start_agent(&self, config: &Value) -> Agent {
        self.start_agent_in(&self.netns.path(), config, METRICS.parse().unwrap(), &[])
    }

    /// Like [`Node::start_agent`], with the agent's command line run by `wrapper` (a program
    /// and its arguments, the agent's command line appended).
    pub fn start_agent_wrapped(&self, config: &Value, wrapper: &[&str]) -> Agent {
        self.start_agent_in(
            &self.netns.path(),
            config,
            METRICS.parse().unwrap(),
            wrapper,
        )
    }

    /// Starts the agent with `config` in `netns`, its command line run by `wrapper` (empty: none),
    /// and waits until `ready` (an address in that namespace) answers `/readyz`.
    pub fn start_agent_in(
        &self,
        netns: &Path,
        config: &Value,
        ready: SocketAddr,
        wrapper: &[&str],
    ) -> Agent {
        let file = self.path("agent.json");
        std::fs::write(&file, config.to_string()).unwrap();
        let log_path = self.path(&format!("agent-{}.log", unique_name("")));
        let log = std::fs::File::create(&log_path).unwrap();
        let agent = env!("CARGO_BIN_EXE_multus-agent");
        let (program, before) = match wrapper.split_first() {
            Some((program, args)) => (*program, [args, &[agent]].concat()),
            None => (agent, Vec::new()),
        };
        let child = inside::command(netns, program)
            .unwrap()
            .args(before)
            .args(["run", "--config"])
            .arg(&file)
            .env_remove("MULTUS_NODE_NAME")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut agent = Agent {
            child: Some(child),
            log: log_path,
            netns: netns.to_owned(),
            ready,
        };
        agent.wait_ready();
        agent
    }

    /// Runs the agent with `config` to its end (it must fail to start); returns its output.
    pub fn agent_fails_to_start(&self, config: &Value) -> String {
        let file = self.path("agent-second.json");
        std::fs::write(&file, config.to_string()).unwrap();
        let out = inside::command(&self.netns.path(), env!("CARGO_BIN_EXE_multus-agent"))
            .unwrap()
            .args(["run", "--config"])
            .arg(&file)
            .env_remove("MULTUS_NODE_NAME")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "the agent started: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs the real `multus-cni` in the node namespace with the shim configuration.
    pub fn shim(&self, command: &str, pod: &TestPod) -> Run {
        self.cni(&self.shim_conf(), command, pod)
    }

    /// Runs the real `multus-cni` with `conf` for `pod`.
    pub fn cni(&self, conf: &Value, command: &str, pod: &TestPod) -> Run {
        let netns = pod.netns.path();
        self.cni_raw(
            conf,
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", &pod.container),
                ("CNI_NETNS", &netns.to_string_lossy()),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", PLUGIN_DIR),
                ("CNI_ARGS", &pod.cni_args()),
            ],
        )
    }

    /// Runs the real `multus-cni` with `conf` on stdin and exactly `env`.
    pub fn cni_raw(&self, conf: &Value, env: &[(&str, &str)]) -> Run {
        let cmd = inside::command(&self.netns.path(), multus_cni_binary()).unwrap();
        Run::invoke(cmd, env, conf.to_string().as_bytes())
    }

    /// A macvlan configuration on `vpar` over `subnet`.
    pub fn macvlan_config(&self, subnet: &str) -> Value {
        json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "vpar",
               "mode": "bridge", "ipam": self.ipam(subnet)})
    }

    /// A macvlan NAD on `vpar` over `subnet`, as a local file.
    pub fn macvlan_nad(&self, ns: &str, name: &str, subnet: &str) -> Value {
        let config = self.macvlan_config(subnet);
        objects::write_local(
            &self.path("local"),
            ns,
            None,
            objects::nad(name, &config, json!({})),
        );
        config
    }

    /// A pod file asking for `networks`.
    pub fn pod_file(&self, pod: &TestPod, networks: &str) {
        objects::write_local(
            &self.path("local"),
            &pod.namespace,
            Some(&pod.uid),
            objects::pod(&pod.name, json!({NETWORKS: networks})),
        );
    }

    /// `/metrics` from inside the node namespace.
    #[track_caller]
    pub fn scrape(&self) -> Metrics {
        let (status, body) = self.get("/metrics").unwrap();
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// `GET path` on the metrics port.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let addr: SocketAddr = METRICS.parse().unwrap();
        inside::http_get(&self.netns.path(), addr, path)
    }

    /// Link pins left (everything under the bpffs directory that is not a map).
    pub fn link_pins(&self) -> Vec<PathBuf> {
        self.bpffs
            .entries()
            .into_iter()
            .filter(|p| !p.starts_with("maps"))
            .collect()
    }

    /// Attachment records on disk.
    pub fn records(&self) -> Vec<Value> {
        let mut out: Vec<Value> = std::fs::read_dir(self.path("state").join("attachments"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap())
            .collect();
        out.sort_by_key(|r| r["id"].as_u64());
        out
    }

    /// host-local leases left (files named like an address).
    pub fn leases(&self) -> Vec<String> {
        let mut out: Vec<String> = multus_testkit::ipam::host_local_leases(&self.path("ipam"))
            .into_iter()
            .map(|(_, addr)| addr)
            .collect();
        out.sort();
        out
    }

    /// Files in the attachment cache (results included).
    pub fn cache_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for dir in [self.path("cache"), self.path("cache").join("results")] {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    out.push(e.file_name().to_string_lossy().into_owned());
                }
            }
        }
        out
    }

    /// Runs `multus-agent status --json` on this node's directories.
    pub fn status(&self) -> Value {
        self.status_with(&["--json"])
    }

    /// Runs `multus-agent status ARGS` (which print JSON) on this node's directories.
    pub fn status_with(&self, args: &[&str]) -> Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_multus-agent"))
            .arg("status")
            .args(args)
            .arg("--bpffs-dir")
            .arg(self.bpffs.path())
            .arg("--state-dir")
            .arg(self.path("state"))
            .env_remove("MULTUS_AGENT_CONFIG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A running agent; killed on drop (its log is printed when the test failed).
pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
    netns: PathBuf,
    ready: SocketAddr,
}

impl Agent {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = self.ready;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the agent exited with {status}:\n{}", self.log_text());
            }
            if matches!(inside::http_get(&self.netns, addr, "/readyz"), Ok((200, _))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not get ready in 60 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, no chance to clean anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; returns whether it exited cleanly within 30 s.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "--- agent log {} ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// A parsed scrape.
#[derive(Debug)]
pub struct Metrics {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut samples = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|l| !l.is_empty())
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect();
            samples.push((name.to_owned(), labels, value.parse().unwrap()));
        }
        Self {
            samples,
            text: text.to_owned(),
        }
    }

    /// The value of the one series of `name` whose labels include `labels`.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let hits: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert!(
            hits.len() <= 1,
            "{name} {labels:?} matches {} series",
            hits.len()
        );
        hits.first().copied()
    }

    /// Like [`Metrics::get`], failing when the series is missing.
    #[track_caller]
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{}", self.text)) as u64
    }

    /// Label sets of every series of `name`.
    pub fn series(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, _)| l.clone())
            .collect()
    }
}

/// Names of the TCX programs on `ifname` inside `netns`, asked from the kernel.
pub fn tcx_programs(netns: &Path, ifname: &str) -> Vec<String> {
    use aya::programs::{SchedClassifier, TcAttachType};
    inside::run_in(netns, || {
        let index = nix::net::if_::if_nametoindex(ifname).unwrap();
        let mut names = Vec::new();
        for hook in [TcAttachType::Ingress, TcAttachType::Egress] {
            let (_, infos) = SchedClassifier::query_tcx(index, hook).unwrap();
            names.extend(
                infos
                    .iter()
                    .filter_map(|i| i.name_as_str().map(str::to_owned)),
            );
        }
        names
    })
    .unwrap()
}
