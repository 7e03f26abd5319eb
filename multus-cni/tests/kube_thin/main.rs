//! The real `multus-cni` binary against a real kube-apiserver: run like a runtime runs it,
//! inside a node network namespace the test made, with Debian's plugins as delegates. The
//! binary reaches the API server through a fault proxy listening inside that namespace, as the
//! restricted `multus-rs` user of deploy/10-rbac.yaml unless a test says otherwise. Each test works in
//! Kubernetes namespaces of its own.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

#[path = "../common/mod.rs"]
mod common;

mod devices;
mod events;
mod faults;
mod lookups;
mod rbac;
mod status;

use std::path::PathBuf;

use common::{Node, PLUGIN_DIR, Run, link_names};
use multus_testkit::{
    Netns,
    kube::{FaultProxy, KubeCluster, KubeconfigAuth, TestNamespace},
    objects,
};
use serde_json::{Value, json};

/// The networks annotation.
const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
/// The network-status annotation.
const STATUS: &str = "k8s.v1.cni.cncf.io/network-status";

/// One test's world: the cluster, a node namespace with the binary's directories, and the
/// proxy the binary talks to.
struct Kube {
    cluster: &'static KubeCluster,
    node: Node,
    proxy: FaultProxy,
}

/// A pod: its API object and its network namespace.
struct TestPod {
    namespace: String,
    name: String,
    uid: String,
    netns: Netns,
}

impl Kube {
    /// `None` when the test may be skipped (no root or no kube-apiserver, with
    /// MULTUS_TEST_ALLOW_SKIP=1).
    fn new(test: &str) -> Option<Self> {
        let cluster = KubeCluster::get(test)?;
        let node = Node::new();
        std::fs::create_dir_all(node.path("bin")).unwrap();
        let proxy = FaultProxy::start_in_netns(cluster.addr(), &node.netns.path());
        Some(Self {
            cluster,
            node,
            proxy,
        })
    }

    /// A kubeconfig (named `name`, in the node's directory) for the proxy.
    fn kubeconfig(&self, name: &str, auth: KubeconfigAuth<'_>) -> PathBuf {
        let path = self.node.path(&format!("{name}.kubeconfig"));
        self.cluster
            .write_kubeconfig(&path, &self.proxy.url(), auth);
        path
    }

    /// The multus configuration: the bridge cluster network inline, the restricted multus
    /// user's kubeconfig, a 3 s API budget, kubelet's files and the device information under
    /// the node directory.
    fn conf(&self) -> Value {
        let kubeconfig =
            self.kubeconfig("multus", KubeconfigAuth::Token(self.cluster.multus_token()));
        json!({
            "cniVersion": "1.0.0",
            "name": "multus-cni-network",
            "type": "multus",
            "kubeconfig": kubeconfig,
            "confDir": self.node.path("conf"),
            "cniDir": self.node.path("cache"),
            "binDir": format!("{}:{PLUGIN_DIR}", self.node.path("bin").display()),
            "kubeletRootDir": self.node.path("kubelet"),
            "deviceInfoDir": self.node.path("devinfo"),
            "apiTimeoutSeconds": 3,
            "logLevel": "debug",
            "logToStderr": true,
            "delegates": [self.node.cluster_conf("1.0.0")],
        })
    }

    /// The macvlan config on the node's `vpar`, 192.0.2.0/24.
    fn macvlan(&self) -> Value {
        json!({
            "cniVersion": "1.0.0", "type": "macvlan", "master": "vpar", "mode": "bridge",
            "ipam": self.node.ipam("192.0.2.0/24", None),
        })
    }

    /// A bridge conflist on `bridge` with 198.51.100.0/24 and tuning (MTU 1400).
    fn bridge(&self, bridge: &str) -> Value {
        json!({
            "cniVersion": "1.0.0", "name": "bridge-net",
            "plugins": [
                {"type": "bridge", "bridge": bridge, "ipam": self.node.ipam("198.51.100.0/24", None)},
                {"type": "tuning", "mtu": 1400}
            ],
        })
    }

    /// Creates a pod in `ns` with `annotations` (bound to a node nothing runs) and its netns.
    fn pod(&self, ns: &TestNamespace, name: &str, annotations: &Value) -> TestPod {
        let object = ns.create(objects::bound_pod(name, "node-a", annotations.clone()));
        let netns = Netns::new("kpd");
        netns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        TestPod {
            namespace: ns.name().to_owned(),
            name: name.to_owned(),
            uid: object["metadata"]["uid"].as_str().unwrap().to_owned(),
            netns,
        }
    }

    /// Runs `command` for `pod` the way a runtime does.
    fn run(&self, command: &str, container: &str, pod: &TestPod, conf: &Value) -> Run {
        let netns = pod.netns.path().to_string_lossy().into_owned();
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_UID={};\
             K8S_POD_INFRA_CONTAINER_ID={container}",
            pod.namespace, pod.name, pod.uid
        );
        self.node
            .run_with_args(command, container, &netns, &args, conf)
    }

    /// The pod's network-status annotation, as the API server holds it.
    fn status(&self, pod: &TestPod) -> Option<String> {
        let path = format!("/api/v1/namespaces/{}/pods/{}", pod.namespace, pod.name);
        let object = self.cluster.admin().ok("GET", &path, None);
        object["metadata"]["annotations"][STATUS]
            .as_str()
            .map(str::to_owned)
    }

    /// `(type, reason, message)` of the Events about `pod`, oldest first.
    fn events(&self, pod: &TestPod) -> Vec<(String, String, String)> {
        self.cluster.pod_events(&pod.namespace, &pod.name, &pod.uid)
    }

    /// Asserts that nothing of `pod` is left: no interface, lease or cache file.
    #[track_caller]
    fn assert_clean(&self, pod: &TestPod) {
        assert_eq!(
            link_names(&pod.netns),
            vec!["lo"],
            "interfaces left in the pod"
        );
        assert_eq!(
            self.node.leases(),
            Vec::<String>::new(),
            "host-local leases left"
        );
        assert_eq!(
            self.node.cache_files(),
            Vec::<String>::new(),
            "cache files left"
        );
    }
}

/// Creates NAD `name` in `ns` with `config` as spec.config and `annotations`.
fn create_nad(ns: &TestNamespace, name: &str, config: &Value, annotations: &Value) {
    ns.create(objects::nad(name, config, annotations.clone()));
}

/// The CNI error of a failed run: (code, message).
#[track_caller]
fn failure(run: &Run) -> (u64, String) {
    assert_eq!(run.code, 1, "expected a failure: {run:?}");
    let err = run.json();
    (
        err["code"].as_u64().unwrap(),
        err["msg"].as_str().unwrap().to_owned(),
    )
}
