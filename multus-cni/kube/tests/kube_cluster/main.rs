//! Tests against a real kube-apiserver (with etcd), one per test process, each test in its
//! own namespace. Faults the server does not produce on demand come from the fault proxy.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod access;
mod crds;
mod facade;
mod rbac;
mod token;

use std::{path::Path, time::Duration};

use kube::{Client, Config, config::KubeConfigOptions};
use multus_kube::{ApiOptions, ClientOptions, ClientSource, KubeApi};
use multus_testkit::kube::{FaultProxy, KubeCluster, KubeconfigAuth, TestNamespace};
use serde_json::{Value, json};

/// The cluster, or `None` when skipping is allowed and it cannot run.
fn cluster(test: &str) -> Option<&'static KubeCluster> {
    KubeCluster::get(test)
}

/// Tight bounds so failure tests finish quickly.
fn test_options() -> ApiOptions {
    ApiOptions {
        client: ClientOptions {
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(2),
        },
        attempt_timeout: Duration::from_secs(2),
        retry_budget: Duration::from_secs(4),
        pod_wait: Duration::from_secs(3),
        conflict_attempts: 5,
    }
}

/// The facade from a kubeconfig file.
fn facade(kubeconfig: &Path) -> KubeApi {
    KubeApi::new(
        &ClientSource::Kubeconfig(kubeconfig.to_owned()),
        test_options(),
    )
    .unwrap()
}

/// The facade through `proxy` with a bearer token; the kubeconfig lives in `dir`.
fn facade_via_proxy(cluster: &KubeCluster, proxy: &FaultProxy, token: &str, dir: &Path) -> KubeApi {
    let path = dir.join("proxy.kubeconfig");
    cluster.write_kubeconfig(&path, &proxy.url(), KubeconfigAuth::Token(token));
    facade(&path)
}

/// Runs `f` with an admin kube-rs client on a fresh runtime.
fn admin<T, F, Fut>(cluster: &KubeCluster, f: F) -> T
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(cluster.admin_kubeconfig()).unwrap();
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
        f(Client::try_from(config).unwrap()).await
    })
}

/// Creates a pod (bound to a node that does not exist: nothing runs it) and returns its UID.
fn create_pod(ns: &TestNamespace, name: &str, annotations: &Value) -> String {
    let pod = ns.create(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations, "labels": {"app": "demo", "tier": "db"}},
        "spec": {
            "nodeName": "node-a",
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "app", "image": "registry.invalid/app:1",
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                          {"containerPort": 5353, "protocol": "UDP"}]
            }]
        }
    }));
    pod["metadata"]["uid"].as_str().unwrap().to_owned()
}

/// Creates a NAD with `config` (or without a spec when `None`).
fn create_nad(ns: &TestNamespace, name: &str, config: Option<&str>, annotations: &Value) -> Value {
    let mut nad = json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": name, "annotations": annotations},
    });
    if let Some(config) = config {
        nad["spec"] = json!({"config": config});
    }
    ns.create(nad)
}
