//! The kubeconfig `multus-agent install --watch` writes works against a real API server, and a
//! long-lived client built from it keeps working across a service-account token rotation in
//! which the old token is revoked (Multus #852: "Unauthorized" once the token expired).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::install_support;

use std::{fs, time::Duration};

use install_support::{Host, Install, ProjectedVolume, until};
use multus_kube::{ApiOptions, ClientOptions, ClientSource, KubeApi};
use multus_testkit::kube::KubeCluster;
use serde_json::json;

fn api(kubeconfig: &std::path::Path) -> KubeApi {
    let opts = ApiOptions {
        client: ClientOptions {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
        },
        attempt_timeout: Duration::from_secs(5),
        retry_budget: Duration::from_secs(5),
        pod_wait: Duration::from_secs(1),
        conflict_attempts: 3,
    };
    KubeApi::new(&ClientSource::Kubeconfig(kubeconfig.to_owned()), opts).unwrap()
}

#[test]
fn generated_kubeconfig_works_and_survives_token_rotation() {
    let Some(cluster) = KubeCluster::get("generated_kubeconfig_works_and_survives_token_rotation")
    else {
        return;
    };
    let ns = cluster.namespace("inst");
    ns.create(
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "multus"}}),
    );
    ns.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                     "metadata": {"name": "multus"},
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "multus-rs"},
                     "subjects": [{"kind": "ServiceAccount", "name": "multus", "namespace": ns.name()}]}));
    ns.create(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                     "spec": {"nodeName": "node-a", "automountServiceAccountToken": false,
                              "containers": [{"name": "c", "image": "registry.invalid/c:1"}]}}),
    );

    let host = Host::new();
    host.write_primary(
        "10-bridge.conflist",
        r#"{"cniVersion": "1.0.0", "name": "br", "plugins": [{"type": "bridge"}]}"#,
    );
    let ca = fs::read(cluster.ca_file()).unwrap();
    let mut volume = ProjectedVolume::new(&host.sa);
    let t1 = ns.revocable_token("multus", "s1");
    volume.install(&t1, &ca);

    let kubeconfig = host.conf.join("multus.d/multus.kubeconfig");
    let mut args = host.args();
    args.extend(["--watch", "--kubeconfig-host-path"].map(Into::into));
    args.push(kubeconfig.clone().into());
    let port = cluster.addr().port().to_string();
    let install = Install::spawn(
        &args,
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", &port),
        ],
    );
    let conf = host.wait_json("00-multus.conflist");
    assert_eq!(
        conf["plugins"][0]["kubeconfig"],
        kubeconfig.display().to_string()
    );
    install.wait_log("watching for changes");

    // What the plugin does with the kubeconfig: a client from the file, reading a pod.
    let client = api(&kubeconfig);
    let pod = until("the generated kubeconfig to work", || {
        client.get_pod(ns.name(), "p").ok()
    });
    assert!(!pod.uid.is_empty());

    // Rotation: kubelet projects a new token, the old one is revoked.
    let t2 = ns.revocable_token("multus", "s2");
    volume.install(&t2, &ca);
    let token_copy = host.conf.join("multus.d/multus.token");
    until("the install to copy the new token", || {
        (fs::read(&token_copy).ok()? == t2.as_bytes()).then_some(())
    });
    ns.revoke("s1", &t1);
    let pod = client.get_pod(ns.name(), "p");
    assert!(pod.is_ok(), "the long-lived client lost access: {pod:?}");
    let pod = api(&kubeconfig).get_pod(ns.name(), "p");
    assert!(
        pod.is_ok(),
        "a new client from the kubeconfig fails: {pod:?}"
    );

    let (status, logs) = install.terminate();
    assert!(status.success(), "{logs}");
}
