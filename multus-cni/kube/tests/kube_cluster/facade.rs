//! The blocking API facade against the real server, with faults from the proxy.
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use multus_kube::{ContainerPort, ErrorKind, EventTarget, EventType, NETWORK_STATUS_ANNOTATION};
use multus_testkit::kube::{FaultProxy, Stall};
use serde_json::json;

use super::{admin, cluster, create_nad, create_pod, facade, facade_via_proxy};

const STATUS: &str = r#"[{"name":"cbr0","interface":"eth0","ips":["203.0.113.5"],"mac":"0a:58:cb:00:71:05","default":true,"dns":{}},{"name":"NS/macvlan-conf","interface":"net1","ips":["192.0.2.10"],"mac":"ca:fe:c0:ff:ee:01","dns":{},"default-route":["192.0.2.1"]}]"#;

fn pod_annotation(
    cluster: &multus_testkit::kube::KubeCluster,
    ns: &str,
    pod: &str,
) -> Option<String> {
    let (ns, pod) = (ns.to_owned(), pod.to_owned());
    admin(cluster, |c| async move {
        let got = Api::<Pod>::namespaced(c, &ns).get(&pod).await.unwrap();
        got.metadata
            .annotations
            .and_then(|a| a.get(NETWORK_STATUS_ANNOTATION).cloned())
    })
}

#[test]
fn get_pod_reads_what_the_engine_needs() {
    let Some(cluster) = cluster("get_pod_reads_what_the_engine_needs") else {
        return;
    };
    let ns = cluster.namespace("pod");
    let uid = create_pod(
        &ns,
        "web",
        &json!({"k8s.v1.cni.cncf.io/networks": "macvlan-conf@net5"}),
    );
    let api = facade(cluster.admin_kubeconfig());
    let pod = api.get_pod(ns.name(), "web").unwrap();
    assert_eq!(pod.uid, uid);
    assert_eq!(pod.namespace, ns.name());
    assert_eq!(pod.node_name.as_deref(), Some("node-a"));
    assert_eq!(
        pod.annotations
            .get("k8s.v1.cni.cncf.io/networks")
            .map(String::as_str),
        Some("macvlan-conf@net5")
    );
    assert_eq!(pod.labels.get("tier").map(String::as_str), Some("db"));
    assert_eq!(
        pod.container_ports,
        vec![
            ContainerPort {
                container: "app".into(),
                name: Some("http".into()),
                port: 8080,
                protocol: "TCP".into()
            },
            ContainerPort {
                container: "app".into(),
                name: None,
                port: 5353,
                protocol: "UDP".into()
            },
        ]
    );
}

#[test]
fn get_pod_waits_while_the_pod_is_not_visible() {
    let Some(cluster) = cluster("get_pod_waits_while_the_pod_is_not_visible") else {
        return;
    };
    let ns = cluster.namespace("lag");
    let uid = create_pod(&ns, "late", &json!({}));
    let proxy = FaultProxy::start(cluster.addr());
    let dir = tempfile::tempdir().unwrap();
    let api = facade_via_proxy(cluster, &proxy, cluster.admin_token(), dir.path());
    proxy.not_found_pod_gets(3);
    let pod = api.get_pod(ns.name(), "late").unwrap();
    assert_eq!(pod.uid, uid);
    let gets: Vec<(u16, bool)> = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/pods/late"))
        .map(|r| (r.status, r.injected))
        .collect();
    assert_eq!(
        gets,
        vec![(404, true), (404, true), (404, true), (200, false)]
    );

    // A pod that never shows up: NotFound once pod_wait (3 s) is spent, not before, not long after.
    let started = Instant::now();
    let err = api.get_pod(ns.name(), "never").unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string().contains("pods \"never\" not found"),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn network_status_write_retries_conflicts_and_reads_back_exactly() {
    let Some(cluster) = cluster("network_status_write_retries_conflicts_and_reads_back_exactly")
    else {
        return;
    };
    let ns = cluster.namespace("st");
    let uid = create_pod(&ns, "db", &json!({"keep": "me"}));
    let proxy = FaultProxy::start(cluster.addr());
    let dir = tempfile::tempdir().unwrap();
    let api = facade_via_proxy(cluster, &proxy, cluster.admin_token(), dir.path());
    let status = STATUS.replace("NS", ns.name());
    // Status a kubelet would have written: the annotation write must leave it alone.
    let ns_name = ns.name().to_owned();
    admin(cluster, |c| async move {
        let patch = json!({"status": {"phase": "Running", "podIP": "203.0.113.9",
            "podIPs": [{"ip": "203.0.113.9"}],
            "conditions": [{"type": "Ready", "status": "True"}]}});
        Api::<Pod>::namespaced(c, &ns_name)
            .patch_status("db", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    });

    proxy.conflict_status_updates(2);
    api.set_network_status(ns.name(), "db", Some(&uid), &status)
        .unwrap();
    let calls: Vec<(String, u16)> = proxy
        .requests()
        .iter()
        .map(|r| {
            (
                format!("{} {}", r.method, r.path.rsplit("/pods/").next().unwrap()),
                r.status,
            )
        })
        .collect();
    let expected: Vec<(String, u16)> = [
        ("GET db", 200),
        ("PUT db/status", 409),
        ("GET db", 200),
        ("PUT db/status", 409),
        ("GET db", 200),
        ("PUT db/status", 200),
    ]
    .iter()
    .map(|(c, s)| ((*c).to_owned(), *s))
    .collect();
    assert_eq!(calls, expected);
    assert_eq!(
        pod_annotation(cluster, ns.name(), "db").as_deref(),
        Some(status.as_str())
    );
    let pod = api.get_pod(ns.name(), "db").unwrap();
    let ns_name = ns.name().to_owned();
    let pod_status = admin(cluster, |c| async move {
        Api::<Pod>::namespaced(c, &ns_name)
            .get("db")
            .await
            .unwrap()
            .status
            .unwrap()
    });
    assert_eq!(pod_status.phase.as_deref(), Some("Running"));
    assert_eq!(pod_status.pod_ip.as_deref(), Some("203.0.113.9"));
    assert_eq!(pod_status.conditions.unwrap()[0].type_, "Ready");
    assert_eq!(
        pod.annotations.get("keep").map(String::as_str),
        Some("me"),
        "other annotations kept"
    );

    // More conflicts than attempts: a Conflict error, and the annotation stays as it was.
    proxy.conflict_status_updates(10);
    let err = api
        .set_network_status(ns.name(), "db", Some(&uid), "[]")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert_eq!(
        pod_annotation(cluster, ns.name(), "db").as_deref(),
        Some(status.as_str())
    );

    // A pod recreated under the same name is not written to.
    proxy.conflict_status_updates(0);
    let err = api
        .set_network_status(ns.name(), "db", Some("another-uid"), "[]")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("replaced"), "{err}");
}

#[test]
fn stalled_api_server_fails_in_bounded_time_as_unavailable() {
    let Some(cluster) = cluster("stalled_api_server_fails_in_bounded_time_as_unavailable") else {
        return;
    };
    let ns = cluster.namespace("hang");
    create_pod(&ns, "p", &json!({}));
    for stall in [Stall::Hang, Stall::Refuse] {
        let proxy = FaultProxy::start(cluster.addr());
        let dir = tempfile::tempdir().unwrap();
        let api = facade_via_proxy(cluster, &proxy, cluster.admin_token(), dir.path());
        api.get_pod(ns.name(), "p").unwrap();
        proxy.stall(stall);
        let started = Instant::now();
        let err = api.get_pod(ns.name(), "p").unwrap_err();
        let took = started.elapsed();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{stall:?}: {err}");
        assert!(err.kind().is_try_again_later());
        // retry_budget 4 s + one attempt of at most 2 s + backoff.
        assert!(took < Duration::from_secs(8), "{stall:?} took {took:?}");
        assert!(
            err.to_string().contains("attempts"),
            "{stall:?}: retried: {err}"
        );
        eprintln!("{stall:?}: failed after {took:.1?}: {err}");
        // Healed: the same client works again.
        proxy.stall(Stall::None);
        api.get_pod(ns.name(), "p").unwrap();
    }
}

#[test]
fn events_and_nad_reads() {
    let Some(cluster) = cluster("events_and_nad_reads") else {
        return;
    };
    let ns = cluster.namespace("ev");
    create_pod(&ns, "p", &json!({}));
    create_nad(
        &ns,
        "sriov-net",
        Some(r#"{"cniVersion":"0.3.1","type":"sriov"}"#),
        &json!({"k8s.v1.cni.cncf.io/resourceName": "example.com/sriov_nic"}),
    );
    let api = facade(cluster.admin_kubeconfig());
    let nad = api.get_nad(ns.name(), "sriov-net").unwrap();
    assert_eq!(nad.resource_name(), Some("example.com/sriov_nic"));
    let err = api.get_nad(ns.name(), "missing").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("missing"), "{err}");

    let pod = api.get_pod(ns.name(), "p").unwrap();
    api.post_event(
        &EventTarget::pod(&pod),
        EventType::Warning,
        "InvalidNetworkAnnotation",
        "k8s.v1.cni.cncf.io/networks: \"Bad_Name\" is not a DNS-1123 label",
    )
    .unwrap();
    api.post_event(&EventTarget::nad(&nad), EventType::Normal, "Checked", "ok")
        .unwrap();
    let ns_name = ns.name().to_owned();
    let events = admin(cluster, |c| async move {
        Api::<Event>::namespaced(c, &ns_name)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
    });
    let on_pod = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("InvalidNetworkAnnotation"))
        .expect("the pod event");
    assert_eq!(on_pod.type_.as_deref(), Some("Warning"));
    assert_eq!(
        on_pod.involved_object.uid.as_deref(),
        Some(pod.uid.as_str())
    );
    assert_eq!(on_pod.involved_object.kind.as_deref(), Some("Pod"));
    assert_eq!(
        on_pod.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("multus")
    );
    let on_nad = events
        .iter()
        .find(|e| e.reason.as_deref() == Some("Checked"))
        .expect("the NAD event");
    assert_eq!(
        on_nad.involved_object.kind.as_deref(),
        Some("NetworkAttachmentDefinition")
    );
    assert_eq!(
        on_nad.involved_object.api_version.as_deref(),
        Some("k8s.cni.cncf.io/v1")
    );
}
