//! What the binary does when the API server misbehaves: a pod not visible yet, a pod that does
//! not exist, a server that stops answering (ADD fails with 11 and leaves nothing; DEL works
//! from the cache), and Multus's in-cluster rule without a kubeconfig.
use std::time::Instant;

use multus_testkit::kube::Stall;
use serde_json::json;

use super::{Kube, NETWORKS, TestPod, create_nad, failure};
use crate::common::link_names;

/// (status, injected) of the pod GETs the proxy saw.
fn pod_gets(k: &Kube, pod: &TestPod) -> Vec<(u16, bool)> {
    let path = format!("/api/v1/namespaces/{}/pods/{}", pod.namespace, pod.name);
    k.proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .map(|r| (r.status, r.injected))
        .collect()
}

#[test]
fn a_pod_not_visible_yet_is_waited_for() {
    let Some(k) = Kube::new("a_pod_not_visible_yet_is_waited_for") else {
        return;
    };
    let ns = k.cluster.namespace("klag");
    create_nad(&ns, "macvlan-net", &k.macvlan(), &json!({}));
    let conf = k.conf();
    let pod = k.pod(&ns, "late", &json!({NETWORKS: "macvlan-net"}));
    k.proxy.not_found_pod_gets(3);
    k.proxy.clear_requests();
    k.run("ADD", "c-late", &pod, &conf).ok();
    // Three 404s, then the pod; its annotation was honoured.
    let gets = pod_gets(&k, &pod);
    assert_eq!(
        gets[..4],
        [(404, true), (404, true), (404, true), (200, false)]
    );
    assert_eq!(link_names(&pod.netns), vec!["eth0", "lo", "net1"]);
    assert!(k.status(&pod).is_some());
    k.run("DEL", "c-late", &pod, &conf).ok();
    k.assert_clean(&pod);
}

#[test]
fn a_pod_that_never_appears_gets_the_cluster_network_only() {
    let Some(k) = Kube::new("a_pod_that_never_appears_gets_the_cluster_network_only") else {
        return;
    };
    let ns = k.cluster.namespace("kghost");
    let pod = k.pod(&ns, "ghost", &json!({NETWORKS: "macvlan-net"}));
    // Deleted before the runtime calls (the sandbox is being torn down).
    let path = format!("/api/v1/namespaces/{}/pods/ghost", ns.name());
    k.cluster
        .admin()
        .ok("DELETE", &path, Some(&json!({"gracePeriodSeconds": 0})));
    multus_testkit::kube::until("the pod to be gone", || {
        matches!(k.cluster.admin().request("GET", &path, None), Ok((404, _))).then_some(())
    });
    let conf = k.conf();
    k.proxy.clear_requests();
    let add = k.run("ADD", "c-ghost", &pod, &conf).ok();
    assert_eq!(link_names(&pod.netns), vec!["eth0", "lo"]);
    assert!(
        add.stderr.contains("the pod does not exist"),
        "{}",
        add.stderr
    );
    // It was waited for, then nothing was written.
    assert!(pod_gets(&k, &pod).len() > 1);
    assert!(k.proxy.requests().iter().all(|r| r.method == "GET"));
    k.run("DEL", "c-ghost", &pod, &conf).ok();
    k.assert_clean(&pod);
}

#[test]
fn an_api_server_that_stops_answering_fails_add_with_11_and_del_still_works() {
    let Some(k) =
        Kube::new("an_api_server_that_stops_answering_fails_add_with_11_and_del_still_works")
    else {
        return;
    };
    let ns = k.cluster.namespace("kdown");
    create_nad(&ns, "macvlan-net", &k.macvlan(), &json!({}));
    let conf = k.conf();
    let before = k.pod(&ns, "before", &json!({NETWORKS: "macvlan-net"}));
    k.run("ADD", "c-before", &before, &conf).ok();
    let leases = k.node.leases();
    assert_eq!(leases.len(), 2);

    for (stall, container) in [(Stall::Hang, "c-hang"), (Stall::Refuse, "c-refuse")] {
        k.proxy.stall(stall);
        let pod = k.pod(&ns, container, &json!({NETWORKS: "macvlan-net"}));
        let started = Instant::now();
        let (code, msg) = failure(&k.run("ADD", container, &pod, &conf));
        let took = started.elapsed();
        assert_eq!(code, 11, "{stall:?}: {msg}");
        assert!(
            msg.contains(&format!(
                "pod {}/{container}: source unavailable, try again later",
                ns.name()
            )),
            "{stall:?}: {msg}"
        );
        // Bounded by apiTimeoutSeconds (3 s), with a margin for process start and retries.
        assert!(took.as_secs() < 10, "{stall:?} took {took:?}");
        // Nothing of the failed pod: no interface, no lease, no cache entry.
        assert_eq!(link_names(&pod.netns), vec!["lo"], "{stall:?}");
        assert_eq!(k.node.leases(), leases, "{stall:?}");
        assert_eq!(k.node.cache_files(), vec!["c-before", "results/c-before"]);
        k.proxy.stall(Stall::None);
    }

    // DEL needs no API server: the cache has everything.
    k.proxy.stall(Stall::Refuse);
    k.proxy.clear_requests();
    k.run("DEL", "c-before", &before, &conf).ok();
    assert!(k.proxy.requests().is_empty(), "{:?}", k.proxy.requests());
    k.assert_clean(&before);
}

#[test]
fn without_kubeconfig_the_service_account_is_used_in_a_pod() {
    let Some(k) = Kube::new("without_kubeconfig_the_service_account_is_used_in_a_pod") else {
        return;
    };
    let sa_dir = std::path::Path::new("/var/run/secrets/kubernetes.io/serviceaccount");
    if sa_dir.exists() {
        eprintln!("this machine runs in a pod; the in-cluster failure case cannot be shown");
        return;
    }
    let ns = k.cluster.namespace("kinc");
    let pod = k.pod(&ns, "p", &json!({}));
    let mut conf = k.conf();
    conf.as_object_mut().unwrap().remove("kubeconfig");
    // Without the variables there is no cluster: no lookups, the cluster network only.
    k.proxy.clear_requests();
    k.run("ADD", "c-none", &pod, &conf).ok();
    k.run("DEL", "c-none", &pod, &conf).ok();
    assert!(k.proxy.requests().is_empty());
    // With them, the service account's files are used; here they do not exist.
    let netns = pod.netns.path().to_string_lossy().into_owned();
    let args = format!("K8S_POD_NAMESPACE={};K8S_POD_NAME=p", ns.name());
    let run = k.node.run_raw(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c-inc"),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", crate::common::PLUGIN_DIR),
            ("CNI_ARGS", &args),
            ("KUBERNETES_SERVICE_HOST", "192.0.2.1"),
            ("KUBERNETES_SERVICE_PORT", "443"),
        ],
        conf.to_string().as_bytes(),
    );
    let (code, msg) = failure(&run);
    assert_eq!(code, 7, "{msg}");
    assert!(
        msg.contains("in-cluster configuration from /var/run/secrets/kubernetes.io/serviceaccount"),
        "{msg}"
    );
    k.assert_clean(&pod);
}
