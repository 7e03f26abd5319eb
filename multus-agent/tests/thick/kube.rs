//! Kubernetes mode against a real API server: the agent watches pods of its node, NADs and
//! namespaces, answers ADD from its caches and writes network-status back.
use std::time::{Duration, Instant};

use multus_kube::podresources::testing::write_checkpoint;
use multus_testkit::{
    kube::{attributes, attrs},
    objects, until,
};
use serde_json::{Value, json};

use crate::{
    kube_node::KubeNode,
    support::{NETWORKS, TestPod, tcx_programs},
};

impl KubeNode {
    fn agent_config(&self) -> Value {
        self.kube_config(self.node.agent_config())
    }

    fn create_nad(&self, name: &str) {
        self.create_nad_with(name, &json!({}));
    }

    /// A macvlan NAD in the API with these annotations.
    fn create_nad_with(&self, name: &str, annotations: &Value) {
        let config = self.node.macvlan_config("192.0.2.0/24");
        self.ns
            .create(objects::nad(name, &config, annotations.clone()));
    }

    /// A pod in the API, bound to `node`, and its namespace here.
    fn create_pod(&self, name: &str, node: &str) -> TestPod {
        self.create_pod_asking(name, node, "macvlan-net")
    }

    /// A pod in the API, bound to `node`, with `networks` as its networks annotation.
    fn create_pod_asking(&self, name: &str, node: &str, networks: &str) -> TestPod {
        let mut object = objects::bound_pod(name, node, json!({NETWORKS: networks}));
        object["metadata"]["labels"] = json!({"app": "demo"});
        object["spec"]["containers"][0]["env"] =
            json!([{"name": "TRIMMED", "value": "by the agent"}]);
        object["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 8080}]);
        let created = self.ns.create(object);
        let mut pod = TestPod::new(self.ns.name(), name);
        pod.uid = created["metadata"]["uid"].as_str().unwrap().to_owned();
        pod
    }

    fn pod_object(&self, name: &str) -> Value {
        self.cluster.admin().ok(
            "GET",
            &format!("/api/v1/namespaces/{}/pods/{name}", self.ns.name()),
            None,
        )
    }

    /// The Events on `pod` (this UID) as (type, reason, message), oldest first.
    fn events(&self, pod: &TestPod) -> Vec<(String, String, String)> {
        self.cluster.pod_events(&pod.namespace, &pod.name, &pod.uid)
    }

    /// Requests through the proxy for one pod (`GET .../pods/NAME`, `PUT .../pods/NAME/status`)
    /// and for single NADs.
    fn object_requests(&self, pod: &str) -> Vec<String> {
        let pod_path = format!("/api/v1/namespaces/{}/pods/{pod}", self.ns.name());
        self.proxy
            .requests()
            .into_iter()
            .filter(|r| {
                r.path.starts_with(&pod_path) || r.path.contains("/network-attachment-definitions/")
            })
            .map(|r| format!("{} {}", r.method, r.path.replace(&pod_path, "POD")))
            .collect()
    }
}

#[test]
fn add_is_served_from_the_watch_caches_and_network_status_is_written() {
    let Some(k) = KubeNode::new(
        "add_is_served_from_the_watch_caches_and_network_status_is_written",
        "agt",
    ) else {
        return;
    };
    k.create_nad("macvlan-net");
    let pod = k.create_pod("web", &k.name);
    // Ready means synced: the pod and the NAD are in the caches before any ADD.
    let agent = k.node.start_agent(&k.agent_config());
    k.proxy.clear_requests();

    k.node.shim("ADD", &pod).ok();
    assert_eq!(
        tcx_programs(&pod.netns.path(), "net1"),
        ["multus_ingress", "multus_egress"]
    );
    // No API round trip to resolve the pod or its network: only the status write.
    assert_eq!(
        k.object_requests("web"),
        ["GET POD", "PUT POD/status"],
        "{}",
        agent.log_text()
    );
    let network = format!("{}/macvlan-net", k.ns.name());
    let object = k.pod_object("web");
    let status: Value = serde_json::from_str(
        object["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status[0]["name"], "cluster");
    assert_eq!(status[1]["name"], network.as_str());
    assert_eq!(status[1]["interface"], "net1");
    assert!(
        status[1]["ips"][0]
            .as_str()
            .unwrap()
            .starts_with("192.0.2."),
        "{status}"
    );
    let records = k.node.records();
    assert_eq!(records[0]["owner"]["namespace"], k.ns.name());
    assert_eq!(records[0]["owner"]["pod"], "web");
    assert_eq!(records[0]["owner"]["network"], network.as_str());
    let metrics = k.node.scrape();
    for cache in ["pods", "nads", "namespaces"] {
        assert_eq!(
            metrics.value("multus_agent_cache_synced", &[("cache", cache)]),
            1
        );
    }
    assert_eq!(
        metrics.value(
            "multus_agent_network_status_writes_total",
            &[("result", "success")]
        ),
        1
    );
    assert_eq!(
        metrics.value(
            "multus_interface_receive_packets_total",
            &[
                ("namespace", k.ns.name()),
                ("pod", "web"),
                ("network_name", &network)
            ]
        ),
        0
    );
    k.node.shim("DEL", &pod).ok();
    assert!(k.node.records().is_empty());
    assert!(k.node.leases().is_empty());
}

#[test]
fn a_pod_missing_from_the_cache_is_waited_for_then_read_live() {
    let Some(k) = KubeNode::new(
        "a_pod_missing_from_the_cache_is_waited_for_then_read_live",
        "agt",
    ) else {
        return;
    };
    k.create_nad("macvlan-net");
    let agent = k.node.start_agent(&k.agent_config());
    // Bound to another node: this agent's pod watch never delivers it.
    let pod = k.create_pod("elsewhere", "some-other-node");
    k.proxy.clear_requests();
    let started = Instant::now();
    k.node.shim("ADD", &pod).ok();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "the cache wait was skipped: {took:?}"
    );
    assert_eq!(
        k.object_requests("elsewhere"),
        ["GET POD", "GET POD", "PUT POD/status"],
        "one live read, then the status write:\n{}",
        agent.log_text()
    );
    k.node.shim("DEL", &pod).ok();
}

#[test]
fn a_failed_status_write_never_fails_the_pod() {
    let Some(k) = KubeNode::new("a_failed_status_write_never_fails_the_pod", "agt") else {
        return;
    };
    k.create_nad("macvlan-net");
    let pod = k.create_pod("web", &k.name);
    let _agent = k.node.start_agent(&k.agent_config());
    k.proxy.conflict_status_updates(100);
    k.node.shim("ADD", &pod).ok();
    assert_eq!(tcx_programs(&pod.netns.path(), "net1").len(), 2);
    let metrics = k.node.scrape();
    assert_eq!(
        metrics.value(
            "multus_agent_network_status_writes_total",
            &[("result", "error")]
        ),
        1
    );
    assert_eq!(
        metrics.value(
            "multus_agent_errors_total",
            &[("component", "network_status")]
        ),
        1
    );
    k.proxy.conflict_status_updates(0);
    k.node.shim("DEL", &pod).ok();
}

#[test]
fn on_restart_attachments_of_pods_gone_from_the_node_are_removed() {
    let Some(k) = KubeNode::new(
        "on_restart_attachments_of_pods_gone_from_the_node_are_removed",
        "agt",
    ) else {
        return;
    };
    k.create_nad("macvlan-net");
    let gone = k.create_pod("gone", &k.name);
    let kept = k.create_pod("kept", &k.name);
    let mut agent = k.node.start_agent(&k.agent_config());
    k.node.shim("ADD", &gone).ok();
    k.node.shim("ADD", &kept).ok();
    agent.kill9();
    // While the agent is down the pod is deleted, and no DEL reaches the agent.
    k.cluster.admin().ok(
        "DELETE",
        &format!("/api/v1/namespaces/{}/pods/gone", k.ns.name()),
        Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})),
    );
    let agent = k.node.start_agent(&k.agent_config());
    until("the attachment of the deleted pod to go", || {
        let pods: Vec<String> = k
            .node
            .records()
            .iter()
            .map(|r| r["owner"]["pod"].as_str().unwrap_or_default().to_owned())
            .collect();
        (pods == ["kept"]).then_some(())
    });
    assert!(
        tcx_programs(&gone.netns.path(), "net1").is_empty(),
        "{}",
        agent.log_text()
    );
    assert_eq!(tcx_programs(&kept.netns.path(), "net1").len(), 2);
    for pod in [&gone, &kept] {
        k.node.shim("DEL", pod).ok();
    }
    assert!(k.node.leases().is_empty());
}

/// Every request the agent makes, from its start (lists and watches) through ADDs (the status
/// writes, a pod it must read live), is one `multus_agent::access::AGENT` lists: the table the
/// ClusterRole is checked against (multus-agent/tests/manifests.rs).
#[test]
fn every_request_the_agent_makes_is_in_its_access_table() {
    let Some(k) = KubeNode::new(
        "every_request_the_agent_makes_is_in_its_access_table",
        "agt",
    ) else {
        return;
    };
    k.create_nad("macvlan-net");
    let agent = k.node.start_agent(&k.agent_config());
    // One pod of this node (from the cache) and one the pod watch never delivers (read live).
    for pod in [
        k.create_pod("web", &k.name),
        k.create_pod("elsewhere", "some-other-node"),
    ] {
        k.node.shim("ADD", &pod).ok();
        k.node.shim("DEL", &pod).ok();
    }
    let listed: Vec<_> = multus_agent::access::AGENT
        .requests()
        .iter()
        .map(|a| attrs(a.group, a.resource, a.verb))
        .collect();
    let mut made: Vec<_> = k
        .proxy
        .requests()
        .iter()
        .map(|r| attributes(&r.method, &r.path))
        .collect();
    made.sort();
    made.dedup();
    // Watches carry `?watch=1`, which the proxy does not record: they show as lists.
    for request in &made {
        assert!(
            listed.contains(request),
            "the agent made {request:?}, which multus_agent::access::AGENT does not list:\n{}",
            agent.log_text()
        );
    }
    for needed in [
        attrs("", "pods", "list"),
        attrs("", "namespaces", "list"),
        attrs("k8s.cni.cncf.io", "network-attachment-definitions", "list"),
        attrs("", "pods", "get"),
        attrs("", "pods/status", "update"),
    ] {
        assert!(made.contains(&needed), "{needed:?} not made: {made:?}");
    }
}

/// Thick mode resolves device resources as thin mode does: a NAD naming a resource gets the
/// device kubelet allocated to the pod (from its checkpoint here: no PodResources socket), and
/// network-status reports it.
#[test]
fn device_ids_of_resource_networks_reach_network_status() {
    const RESOURCE: &str = "example.com/sriov_vf";
    let Some(k) = KubeNode::new(
        "device_ids_of_resource_networks_reach_network_status",
        "agt",
    ) else {
        return;
    };
    k.create_nad_with(
        "macvlan-net",
        &json!({"k8s.v1.cni.cncf.io/resourceName": RESOURCE}),
    );
    let pod = k.create_pod("sriov", &k.name);
    let kubelet = k.node.path("kubelet");
    write_checkpoint(
        &kubelet,
        &[
            (&pod.uid, RESOURCE, &["0000:81:00.6"]),
            ("another-pod", RESOURCE, &["0000:81:00.1"]),
        ],
    )
    .unwrap();
    let mut config = k.agent_config();
    config["kubeletRootDir"] = json!(kubelet);
    let agent = k.node.start_agent(&config);

    k.node.shim("ADD", &pod).ok();
    let object = k.pod_object("sriov");
    let status: Value = serde_json::from_str(
        object["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status[1]["interface"], "net1", "{status}");
    assert_eq!(
        status[1]["device-info"],
        json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:81:00.6"}}),
        "{status}\n{}",
        agent.log_text()
    );
    k.node.shim("DEL", &pod).ok();
    assert!(k.node.records().is_empty());
    assert!(k.node.leases().is_empty());
}

/// Thick mode posts the pod Events thin mode posts, through the same publisher: Multus's
/// `AddedInterface` per interface, a `MissingCapability` Warning for a request no plugin of the
/// network declares (the MAC still reaches macvlan as the legacy `MAC=` argument, as under
/// Multus), and `NoNetworkFound` when the pod names a network that does not exist.
#[test]
fn thick_mode_posts_the_pods_events() {
    let Some(k) = KubeNode::new("thick_mode_posts_the_pods_events", "agt") else {
        return;
    };
    k.create_nad("macvlan-net");
    let mac = "02:00:00:aa:bb:cc";
    let pod = k.create_pod_asking(
        "web",
        &k.name,
        &json!([{"name": "macvlan-net", "interface": "data0", "mac": mac}]).to_string(),
    );
    let missing = k.create_pod_asking("lost", &k.name, "macvlan-net,no-such-net");
    let agent = k.node.start_agent(&k.agent_config());

    k.node.shim("ADD", &pod).ok();
    let link = pod.netns.ip(&["-j", "link", "show", "data0"]);
    let link: Value = serde_json::from_str(&link).unwrap();
    assert_eq!(link[0]["address"], mac, "{}", agent.log_text());
    let network = format!("{}/macvlan-net", k.ns.name());
    let events = until("the Events of the ADD", || {
        let events = k.events(&pod);
        (events.len() >= 3).then_some(events)
    });
    // Events in the same second sort by type and text: look them up by reason.
    let of = |reason: &str| -> Vec<&(String, String, String)> {
        events.iter().filter(|e| e.1 == reason).collect()
    };
    assert_eq!(events.len(), 3, "{events:?}\n{}", agent.log_text());
    let warning = of("MissingCapability");
    assert_eq!(warning.len(), 1, "{events:?}");
    assert_eq!(warning[0].0, "Warning");
    assert!(
        warning[0].2.contains(&network) && warning[0].2.contains("\"mac\""),
        "{events:?}"
    );
    let added: Vec<&str> = of("AddedInterface").iter().map(|e| e.2.as_str()).collect();
    assert_eq!(added.len(), 2, "{events:?}");
    assert!(
        added.iter().any(|m| m.starts_with("Add eth0 [")),
        "{added:?}"
    );
    assert!(
        added
            .iter()
            .any(|m| m.starts_with("Add data0 [192.0.2.") && m.ends_with(&network)),
        "{added:?}"
    );

    let failed = k.node.shim("ADD", &missing);
    assert_eq!(failed.error_code(), 7, "{failed:?}");
    let events = until("the Warning of the failed ADD", || {
        let events = k.events(&missing);
        (!events.is_empty()).then_some(events)
    });
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "Warning");
    assert_eq!(events[0].1, "NoNetworkFound");
    assert!(events[0].2.contains("no-such-net"), "{events:?}");

    k.node.shim("DEL", &pod).ok();
    k.node.shim("DEL", &missing).ok();
    assert!(k.node.records().is_empty());
    assert!(k.node.leases().is_empty());
}
