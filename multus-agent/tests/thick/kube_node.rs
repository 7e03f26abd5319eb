//! A thick-mode node in Kubernetes mode: the agent reaches the test API server through a fault
//! proxy (which records requests), relayed into the node's namespace, as its own
//! ServiceAccount (deploy/10-rbac.yaml's ClusterRole is all it has); and a namespace of the test.
#![allow(dead_code, reason = "not every test uses every field")]
use std::{net::SocketAddr, path::PathBuf};

use multus_testkit::{
    inside::Relay,
    kube::{FaultProxy, KubeCluster, KubeconfigAuth, TestNamespace},
    unique_name,
};
use serde_json::{Value, json};

use crate::support::Node;

/// The node, its cluster and the test's namespace.
pub struct KubeNode {
    pub cluster: &'static KubeCluster,
    pub ns: TestNamespace,
    /// This node's name (pods bound to it are the agent's).
    pub name: String,
    pub proxy: FaultProxy,
    /// The agent's token.
    pub token: String,
    _relay: Relay,
    kubeconfig: PathBuf,
    // Dropped last: the namespaces go after the agent, which lives in the test's scope.
    pub node: Node,
}

impl KubeNode {
    /// A node and a namespace named `<ns_prefix><unique>`; `None` when the test is skipped.
    pub fn new(test: &str, ns_prefix: &str) -> Option<Self> {
        let cluster = KubeCluster::get(test)?;
        let node = Node::new();
        let ns = cluster.namespace(ns_prefix);
        let proxy = FaultProxy::start(cluster.addr());
        let target: SocketAddr = proxy.url().trim_start_matches("http://").parse().unwrap();
        let relay = Relay::start(&node.netns.path(), target).unwrap();
        let answer = cluster.admin().ok(
            "POST",
            "/api/v1/namespaces/kube-system/serviceaccounts/multus-agent/token",
            Some(
                &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                         "spec": {"expirationSeconds": 3600}}),
            ),
        );
        let token = answer["status"]["token"].as_str().unwrap().to_owned();
        let kubeconfig = node.path("agent.kubeconfig");
        cluster.write_kubeconfig(
            &kubeconfig,
            &format!("http://127.0.0.1:{}", relay.port()),
            KubeconfigAuth::Token(&token),
        );
        Some(Self {
            cluster,
            ns,
            name: unique_name("node-"),
            proxy,
            token,
            _relay: relay,
            kubeconfig,
            node,
        })
    }

    /// `config` (a standalone agent configuration) turned to Kubernetes mode on this node.
    pub fn kube_config(&self, mut config: Value) -> Value {
        let obj = config.as_object_mut().unwrap();
        obj.remove("localSourceDir");
        obj.insert("kubeconfig".into(), json!(self.kubeconfig));
        obj.insert("nodeName".into(), json!(self.name));
        config
    }
}
