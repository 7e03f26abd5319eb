//! Standalone mode: the same NAD annotation in a local file, followed within a second of an
//! edit; MultiNetworkPolicy and Pod documents in the same directory; what changed while the
//! agent was down applies when it starts again.
use std::{net::SocketAddr, time::Instant};

use multus_testkit::require_root;
use serde_json::{Value, json};

use crate::{
    e2e::fixture::{
        POLICY, WITHIN, address, agent_config, attachment_id, passes, servers, status_policy, until,
    },
    support::{Node, TestPod},
};

/// Writes the NAD `pods/blue` (macvlan on the node's veth, host-local over 192.0.2.0/24) with
/// `policy` as its annotation. The file is replaced atomically, as editors and config
/// management do.
fn write_nad(node: &Node, policy: Option<&str>) {
    let config = json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "vpar",
                        "mode": "bridge", "ipam": node.ipam("192.0.2.0/24")});
    let mut doc = json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "blue", "namespace": "pods"},
        "spec": {"config": config.to_string()},
    });
    if let Some(policy) = policy {
        doc["metadata"]["annotations"] = json!({POLICY: policy});
    }
    write_doc(node, "nad-blue.json", &doc);
}

fn write_doc(node: &Node, file: &str, doc: &Value) {
    let dir = node.path("local");
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, doc.to_string()).unwrap();
    std::fs::rename(&tmp, dir.join(file)).unwrap();
}

/// A pod file with labels and container ports, asking for `blue`.
fn pod_file(node: &Node, pod: &TestPod, labels: &Value, ports: &Value) {
    let doc = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid,
                     "labels": labels,
                     "annotations": {"k8s.v1.cni.cncf.io/networks": "blue"}},
        "spec": {"containers": [{"name": "app", "image": "none", "ports": ports}]},
    });
    write_doc(node, &format!("pod-{}.json", pod.name), &doc);
}

#[test]
fn editing_a_nad_file_changes_enforcement_within_a_second() {
    if !require_root("editing_a_nad_file_changes_enforcement_within_a_second") {
        return;
    }
    let node = Node::new();
    write_nad(&node, None);
    let server = TestPod::new("pods", "server");
    let client = TestPod::new("pods", "client");
    pod_file(&node, &server, &json!({}), &json!([]));
    pod_file(&node, &client, &json!({}), &json!([]));
    let agent = node.start_agent(&agent_config(&node));
    let server_ip = {
        node.shim("ADD", &server).ok();
        address(&server, "net1", 4)
    };
    node.shim("ADD", &client).ok();
    let _servers = servers(&server, server_ip, &[8080]);
    let web = SocketAddr::new(server_ip, 8080);
    assert!(passes(&client, web), "no policy yet: {}", agent.log_text());

    let edit = Instant::now();
    write_nad(&node, Some("ingress:\n  deny:\n    - ports: tcp/8080\n"));
    let took = until(edit, "the file's deny", false, || passes(&client, web));
    eprintln!("NAD file edited: enforced {took:?} later");
    assert!(took < WITHIN, "{took:?}:\n{}", agent.log_text());

    // A broken edit keeps the policy.
    std::fs::write(node.path("local").join("nad-blue.json"), "{\"kind\": ").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!passes(&client, web), "{}", agent.log_text());

    // Audit mode: nothing is dropped, what would have been is counted.
    let edit = Instant::now();
    write_nad(
        &node,
        Some("audit: true\ningress:\n  deny:\n    - ports: tcp/8080\n"),
    );
    let took = until(edit, "audit mode", true, || passes(&client, web));
    assert!(took < WITHIN, "{took:?}");
    let audited = node.scrape().value(
        "multus_policy_audit_packets_total",
        &[
            ("pod", "server"),
            ("direction", "ingress"),
            ("reason", "policy_deny"),
            ("policy_source", "nad"),
        ],
    );
    assert!(audited >= 1, "{audited}");

    let edit = Instant::now();
    write_nad(&node, None);
    until(edit, "the annotation's removal", true, || {
        status_policy(&node, attachment_id(&node, &server, "net1"))["source"].is_null()
    });
    assert!(passes(&client, web));
    for pod in [&client, &server] {
        node.shim("DEL", pod).ok();
    }
}

#[test]
fn standalone_multinetworkpolicies_select_local_pods_and_catch_up_after_a_restart() {
    if !require_root(
        "standalone_multinetworkpolicies_select_local_pods_and_catch_up_after_a_restart",
    ) {
        return;
    }
    let node = Node::new();
    write_nad(&node, None);
    write_doc(
        &node,
        "mnp.yaml",
        &json!({
            "apiVersion": "k8s.cni.cncf.io/v1beta1", "kind": "MultiNetworkPolicy",
            "metadata": {"name": "web-in", "namespace": "pods",
                         "annotations": {"k8s.v1.cni.cncf.io/policy-for": "blue"}},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                  "ports": [{"port": "http"}]}]},
        }),
    );
    let web = TestPod::new("pods", "web");
    let client = TestPod::new("pods", "client");
    let other = TestPod::new("pods", "other");
    pod_file(
        &node,
        &web,
        &json!({"app": "web"}),
        &json!([{"name": "http", "containerPort": 8080}]),
    );
    pod_file(&node, &client, &json!({"role": "client"}), &json!([]));
    pod_file(&node, &other, &json!({}), &json!([]));
    let mut agent = node.start_agent(&agent_config(&node));
    let web_ip = {
        node.shim("ADD", &web).ok();
        address(&web, "net1", 4)
    };
    // Peers added after the pod they talk to: their addresses reach its policy at their ADD.
    node.shim("ADD", &client).ok();
    node.shim("ADD", &other).ok();
    let _servers = servers(&web, web_ip, &[8080, 9090]);
    let (http, other_port) = (SocketAddr::new(web_ip, 8080), SocketAddr::new(web_ip, 9090));
    assert!(passes(&client, http), "{}", agent.log_text());
    assert!(!passes(&client, other_port));
    assert!(!passes(&other, http));

    // While the agent is down, the client loses its label; the pinned policy keeps
    // enforcing the old one until the agent is back and catches up.
    agent.kill9();
    // The policy in force is on record: status shows it with the agent down.
    let id = attachment_id(&node, &web, "net1");
    let status = status_policy(&node, id);
    assert_eq!(status["source"], "mnp:pods/web-in", "{status}");
    assert_eq!(status["policy"]["ingress"]["default"], "deny", "{status}");
    pod_file(&node, &client, &json!({"role": "none"}), &json!([]));
    assert!(passes(&client, http));
    let _agent = node.start_agent(&agent_config(&node));
    assert!(!passes(&client, http), "not caught up at start");
    assert_eq!(
        status_policy(&node, id)["source"],
        "mnp:pods/web-in",
        "{:?}",
        node.records()
    );
    for pod in [&other, &client, &web] {
        node.shim("DEL", pod).ok();
    }
}
