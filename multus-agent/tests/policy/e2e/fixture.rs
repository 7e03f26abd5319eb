//! The policy tests' fixture: a thick-mode node (the real agent and shim in a node namespace,
//! Debian's macvlan and host-local) in Kubernetes mode against the test API server, with a
//! namespace of its own; NADs, pods and MultiNetworkPolicies created through the API; and
//! probes that tell whether a packet passes between two pods.
#![allow(dead_code, reason = "not every test uses every helper")]

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use multus_testkit::{
    objects,
    traffic::{self, TcpServer},
};
use serde_json::{Value, json};

pub use crate::kube_node::KubeNode;
use crate::support::{Agent, NETWORKS, Node, Run, TestPod};

/// How long a connection attempt may take before the SYN counts as dropped. Pods share one
/// macvlan segment: an answer takes well under a millisecond.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(150);
/// How long enforcement may take to follow a change.
pub const WITHIN: Duration = Duration::from_secs(1);
/// The annotation the NAD's policy is in.
pub const POLICY: &str = "multus-rs.io/policy";

impl KubeNode {
    pub fn ns(&self) -> &str {
        self.ns.name()
    }

    /// Starts the agent in Kubernetes mode; it is ready once its caches and the policy
    /// watches have listed everything.
    pub fn start_agent(&self) -> Agent {
        self.node
            .start_agent(&self.kube_config(agent_config(&self.node)))
    }

    /// A macvlan config on the node's veth with host-local over `subnets` (each a /24 or
    /// /64; IPv4 and IPv6 may be mixed for dual stack).
    pub fn macvlan_config(&self, subnets: &[&str]) -> Value {
        let ranges: Vec<Value> = subnets.iter().map(|s| json!([{"subnet": s}])).collect();
        json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "vpar", "mode": "bridge",
               "ipam": {"type": "host-local", "dataDir": self.node.path("ipam"), "ranges": ranges}})
    }

    /// A NAD over `subnets`, with `policy` in its annotation.
    pub fn create_nad(&self, name: &str, subnets: &[&str], policy: Option<&str>) {
        let annotations = match policy {
            Some(policy) => json!({POLICY: policy}),
            None => json!({}),
        };
        self.ns.create(objects::nad(
            name,
            &self.macvlan_config(subnets),
            annotations,
        ));
    }

    /// Merges `annotations` into the NAD's (a `null` value removes one).
    pub fn annotate_nad(&self, name: &str, annotations: Value) {
        self.cluster.admin().ok(
            "PATCH",
            &format!(
                "/apis/k8s.cni.cncf.io/v1/namespaces/{}/network-attachment-definitions/{name}",
                self.ns()
            ),
            Some(&{
                let mut patch = json!({"metadata": {}});
                patch["metadata"]["annotations"] = annotations;
                patch
            }),
        );
    }

    /// A pod bound to this node asking for `networks`, with `labels` and container `ports`
    /// (`[{"name": "http", "containerPort": 8080}]`), and its network namespace here.
    pub fn create_pod(&self, name: &str, networks: &str, labels: Value, ports: Value) -> TestPod {
        self.create_pod_on(name, networks, labels, ports, &self.name.clone())
    }

    /// Pods on `blue` without labels or ports.
    pub fn blank_pods<const N: usize>(&self, names: [&str; N]) -> [TestPod; N] {
        names.map(|name| self.create_pod(name, "blue", json!({}), json!([])))
    }

    /// Like [`KubeNode::create_pod`], bound to `node`.
    pub fn create_pod_on(
        &self,
        name: &str,
        networks: &str,
        labels: Value,
        ports: Value,
        node: &str,
    ) -> TestPod {
        let mut object = objects::bound_pod(name, node, json!({NETWORKS: networks}));
        object["metadata"]["labels"] = labels;
        object["spec"]["containers"][0]["ports"] = ports;
        let created = self.ns.create(object);
        let mut pod = TestPod::new(self.ns(), name);
        pod.uid = created["metadata"]["uid"].as_str().unwrap().to_owned();
        pod
    }

    /// Merges `patch` into the pod (through the status subresource when `status` is set).
    pub fn patch_pod(&self, name: &str, patch: &Value, status: bool) {
        let sub = if status { "/status" } else { "" };
        self.cluster.admin().ok(
            "PATCH",
            &format!("/api/v1/namespaces/{}/pods/{name}{sub}", self.ns()),
            Some(patch),
        );
    }

    /// A MultiNetworkPolicy (`v1beta2`) for `networks`.
    pub fn create_mnp(&self, name: &str, networks: &str, spec: Value) {
        let mut object = json!({
            "apiVersion": "k8s.cni.cncf.io/v1beta2", "kind": "MultiNetworkPolicy",
            "metadata": {"name": name,
                         "annotations": {"k8s.v1.cni.cncf.io/policy-for": networks}},
        });
        object["spec"] = spec;
        self.ns.create(object);
    }

    /// Replaces a MultiNetworkPolicy's spec.
    pub fn patch_mnp(&self, name: &str, patch: &Value) {
        self.cluster.admin().ok(
            "PATCH",
            &format!(
                "/apis/k8s.cni.cncf.io/v1beta2/namespaces/{}/multi-networkpolicies/{name}",
                self.ns()
            ),
            Some(patch),
        );
    }

    /// ADD through the shim; must succeed.
    #[track_caller]
    pub fn add(&self, pod: &TestPod) -> Run {
        self.node.shim("ADD", pod).ok()
    }

    /// ADD through the shim; returns the pod's address of `family` on net1.
    #[track_caller]
    pub fn add_at(&self, pod: &TestPod, family: u8) -> IpAddr {
        self.add(pod);
        address(pod, "net1", family)
    }

    /// The Events of the test's namespace with `reason` about `name`.
    pub fn events(&self, reason: &str, name: &str) -> Vec<Value> {
        let list = self.cluster.admin().ok(
            "GET",
            &format!("/api/v1/namespaces/{}/events", self.ns()),
            None,
        );
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["reason"] == reason && e["involvedObject"]["name"] == name)
            .collect()
    }

    /// DELs every pod (so their leases and attachments go before the node).
    pub fn del_all(&self, pods: &[&TestPod]) {
        for pod in pods {
            self.node.shim("DEL", pod).ok();
        }
    }
}

/// The global address of `family` (4 or 6) on `pod`'s `ifname` (the ADD result lists only the
/// cluster network's, as Multus's does).
#[track_caller]
pub fn address(pod: &TestPod, ifname: &str, family: u8) -> IpAddr {
    let out = pod.netns.ip(&["-j", "addr", "show", "dev", ifname]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let want = if family == 4 { "inet" } else { "inet6" };
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == want && a["scope"] == "global")
        .find_map(|a| a["local"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no global IPv{family} address on {ifname}: {out}"))
}

/// Whether a TCP SYN from `from` to `to` gets through: an answer (accepted or refused) means
/// it passed; silence until the timeout means it was dropped.
pub fn passes(from: &TestPod, to: SocketAddr) -> bool {
    match traffic::tcp_connect(&from.netns, to, PROBE_TIMEOUT) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionRefused,
    }
}

/// Polls `probe` in short steps until it returns `want`; returns how long after `since` the
/// first probe that saw it started. Fails after 10 s.
#[track_caller]
pub fn until(since: Instant, what: &str, want: bool, mut probe: impl FnMut() -> bool) -> Duration {
    loop {
        let started = Instant::now();
        if probe() == want {
            return started.duration_since(since);
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{what}: not seen within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The node's agent configuration with the cluster network on a segment of its own (another
/// veth in the node namespace): on the secondary networks' segment, the pods' cluster
/// interfaces would answer ARP for their secondary addresses too (Linux answers for any local
/// address by default), and traffic would bypass the interfaces under test.
pub fn agent_config(node: &Node) -> Value {
    if node.netns.exec("ip", &["link", "show", "vclu"]).is_err() {
        node.netns.ip(&[
            "link", "add", "vclu", "type", "veth", "peer", "name", "vclupeer",
        ]);
        node.netns.ip(&["link", "set", "vclu", "up"]);
        node.netns.ip(&["link", "set", "vclupeer", "up"]);
    }
    let mut config = node.agent_config();
    config["delegates"][0]["master"] = json!("vclu");
    config
}

/// The rules of the agent's ClusterRole in deploy/10-rbac.yaml.
pub fn agent_role_rules() -> Vec<Value> {
    multus_testkit::kube::cluster_role_rules("multus-agent")
}

/// The one `InvalidPolicy` Event about `name`, once it is there.
#[track_caller]
pub fn invalid_policy_event(k: &KubeNode, name: &str) -> Value {
    let events = multus_testkit::kube::until("the InvalidPolicy Event", || {
        let events = k.events("InvalidPolicy", name);
        (!events.is_empty()).then_some(events)
    });
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "Warning");
    events[0].clone()
}

/// TCP servers on `ports` of `ip` inside `pod`.
pub fn servers(pod: &TestPod, ip: IpAddr, ports: &[u16]) -> Vec<TcpServer> {
    ports
        .iter()
        .map(|p| TcpServer::start(&pod.netns, SocketAddr::new(ip, *p)))
        .collect()
}

/// Lets `pod` use IPv6 (the fixture's pods start without it) without duplicate address
/// detection, so its addresses work as soon as the plugin sets them.
pub fn enable_ipv6(pod: &TestPod) {
    for (key, value) in [
        ("net.ipv6.conf.all.disable_ipv6", "0"),
        ("net.ipv6.conf.default.disable_ipv6", "0"),
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
    ] {
        pod.netns.sysctl(key, value);
    }
}

/// `multus-agent status --policy ID` on the node's directories.
pub fn status_policy(node: &Node, id: u64) -> Value {
    node.status_with(&["--policy", &id.to_string()])
}

/// The attachment id of `pod`'s `ifname` from the node's records.
#[track_caller]
pub fn attachment_id(node: &Node, pod: &TestPod, ifname: &str) -> u64 {
    node.records()
        .iter()
        .find(|r| r["owner"]["pod"] == pod.name.as_str() && r["ifname"] == ifname)
        .and_then(|r| r["id"].as_u64())
        .unwrap_or_else(|| panic!("no attachment of {}:{ifname}", pod.name))
}
