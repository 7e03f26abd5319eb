//! Where the stress run's pods and NADs live: local files (standalone mode) or the test
//! kube-apiserver (Kubernetes mode, pods bound to the stress node).
use std::{net::SocketAddr, path::Path};

use anyhow::{Context as _, anyhow};
use multus_testkit::{
    inside::Relay,
    kube::{KubeCluster, KubeconfigAuth, TestNamespace},
    unique_name,
};
use serde_json::{Value, json};

use super::node::{Source, StressChecks as _, StressNode};

const NETWORKS_KEY: &str = "k8s.v1.cni.cncf.io/networks";

/// Pods and NADs of one mode.
pub trait Pods {
    /// The pods' namespace.
    fn namespace(&self) -> &str;
    /// Points `node`'s agent at this source and creates the NADs.
    fn prepare(&self, node: &mut StressNode) -> anyhow::Result<()>;
    /// Creates NAD `name` in the pods' namespace with `config`.
    fn create_nad(&self, node: &StressNode, name: &str, config: &Value) -> anyhow::Result<()>;
    /// Creates pod `name` asking for `networks`.
    fn create(&self, node: &StressNode, name: &str, networks: &str) -> anyhow::Result<()>;
    /// Deletes pod `name`.
    fn delete(&self, node: &StressNode, name: &str) -> anyhow::Result<()>;
}

/// Standalone mode: files in the agent's local source directory.
pub struct LocalPods;

impl LocalPods {
    pub fn new() -> Self {
        Self
    }
}

fn pod_file(node: &StressNode, name: &str) -> std::path::PathBuf {
    node.path("local").join(format!("pod-{name}.json"))
}

impl Pods for LocalPods {
    fn namespace(&self) -> &str {
        "stress"
    }

    fn prepare(&self, node: &mut StressNode) -> anyhow::Result<()> {
        node.source = Source::Standalone;
        for (name, config) in node.nad_configs() {
            self.create_nad(node, name, &config)?;
        }
        Ok(())
    }

    fn create_nad(&self, node: &StressNode, name: &str, config: &Value) -> anyhow::Result<()> {
        let doc = json!({"apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": "stress"},
            "spec": {"config": config.to_string()}});
        std::fs::write(
            node.path("local").join(format!("nad-{name}.json")),
            doc.to_string(),
        )?;
        Ok(())
    }

    fn create(&self, node: &StressNode, name: &str, networks: &str) -> anyhow::Result<()> {
        let doc = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "stress",
                         "annotations": {NETWORKS_KEY: networks}}});
        std::fs::write(pod_file(node, name), doc.to_string())?;
        Ok(())
    }

    fn delete(&self, node: &StressNode, name: &str) -> anyhow::Result<()> {
        std::fs::remove_file(pod_file(node, name))?;
        Ok(())
    }
}

/// Kubernetes mode: the test cluster, a namespace of the run, pods bound to the node.
pub struct KubePods {
    cluster: &'static KubeCluster,
    ns: TestNamespace,
    node_name: String,
    relay: std::sync::Mutex<Option<Relay>>,
}

impl KubePods {
    /// The cluster (started on first use); `None` when it cannot run here.
    pub fn new() -> anyhow::Result<Option<Self>> {
        let Some(cluster) = KubeCluster::get("cargo xtask stress") else {
            return Ok(None);
        };
        Ok(Some(Self {
            cluster,
            ns: cluster.namespace("stress"),
            node_name: unique_name("node-"),
            relay: std::sync::Mutex::new(None),
        }))
    }

    fn pod_path(&self, name: &str) -> String {
        format!("/api/v1/namespaces/{}/pods/{name}", self.ns.name())
    }
}

impl Pods for KubePods {
    fn namespace(&self) -> &str {
        self.ns.name()
    }

    fn prepare(&self, node: &mut StressNode) -> anyhow::Result<()> {
        // The agent lives in the node's namespace; the server listens on the machine's loopback.
        let relay = Relay::start(&node.netns.path(), self.cluster.addr())
            .context("relaying the API server into the node")?;
        let kubeconfig = node.path("agent.kubeconfig");
        write_kubeconfig(self.cluster, &kubeconfig, relay.port());
        *self.relay.lock().map_err(|_| anyhow!("relay lock"))? = Some(relay);
        node.source = Source::Kubernetes {
            kubeconfig,
            node: self.node_name.clone(),
        };
        for (name, config) in node.nad_configs() {
            self.create_nad(node, name, &config)?;
        }
        Ok(())
    }

    fn create_nad(&self, _node: &StressNode, name: &str, config: &Value) -> anyhow::Result<()> {
        let nad = json!({"apiVersion": "k8s.cni.cncf.io/v1",
            "kind": "NetworkAttachmentDefinition",
            "metadata": {"name": name, "namespace": self.ns.name()},
            "spec": {"config": config.to_string()}});
        self.cluster
            .admin()
            .create(&nad)
            .map(drop)
            .map_err(|e| anyhow!("creating NAD {name}: {e}"))
    }

    fn create(&self, _node: &StressNode, name: &str, networks: &str) -> anyhow::Result<()> {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.ns.name(),
                         "annotations": {NETWORKS_KEY: networks}},
            "spec": {"nodeName": self.node_name, "automountServiceAccountToken": false,
                     "containers": [{"name": "app", "image": "registry.invalid/app:1"}]}});
        self.cluster
            .admin()
            .create(&pod)
            .map(drop)
            .map_err(|e| anyhow!("creating pod {name}: {e}"))
    }

    fn delete(&self, _node: &StressNode, name: &str) -> anyhow::Result<()> {
        let body: Value = json!({"gracePeriodSeconds": 0});
        match self
            .cluster
            .admin()
            .request("DELETE", &self.pod_path(name), Some(&body))
        {
            Ok((200 | 202 | 404, _)) => Ok(()),
            Ok((status, body)) => Err(anyhow!("deleting pod {name}: HTTP {status}: {body}")),
            Err(e) => Err(anyhow!("deleting pod {name}: {e}")),
        }
    }
}

fn write_kubeconfig(cluster: &KubeCluster, path: &Path, port: u16) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    cluster.write_kubeconfig(
        path,
        &format!("https://{addr}"),
        KubeconfigAuth::Token(cluster.admin_token()),
    );
}
