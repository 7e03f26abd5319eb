//! The network-status write: retried on conflicts, and never the pod's undoing.
use multus_testkit::kube::Recorded;
use serde_json::json;

use super::{Kube, NETWORKS, create_nad};
use crate::common::link_names;

/// The status writes (PUT pods/NAME/status) the proxy saw, as (status code, injected).
fn status_writes(requests: &[Recorded]) -> Vec<(u16, bool)> {
    requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.ends_with("/status"))
        .map(|r| (r.status, r.injected))
        .collect()
}

#[test]
fn status_write_retries_on_conflict() {
    let Some(k) = Kube::new("status_write_retries_on_conflict") else {
        return;
    };
    let ns = k.cluster.namespace("kcf");
    create_nad(&ns, "macvlan-net", &k.macvlan(), &json!({}));
    let conf = k.conf();
    let pod = k.pod(&ns, "busy", &json!({NETWORKS: "macvlan-net"}));
    // Two writers got there first.
    k.proxy.conflict_status_updates(2);
    k.proxy.clear_requests();
    k.run("ADD", "c-busy", &pod, &conf).ok();
    assert_eq!(
        status_writes(&k.proxy.requests()),
        vec![(409, true), (409, true), (200, false)]
    );
    let status = k.status(&pod).expect("written after the conflicts");
    assert!(
        status.contains(&format!("{}/macvlan-net", ns.name())),
        "{status}"
    );
    k.run("DEL", "c-busy", &pod, &conf).ok();
    k.assert_clean(&pod);
}

#[test]
fn a_status_write_that_keeps_failing_does_not_fail_the_pod() {
    let Some(k) = Kube::new("a_status_write_that_keeps_failing_does_not_fail_the_pod") else {
        return;
    };
    let ns = k.cluster.namespace("kcx");
    create_nad(&ns, "macvlan-net", &k.macvlan(), &json!({}));
    let conf = k.conf();
    let pod = k.pod(&ns, "contended", &json!({NETWORKS: "macvlan-net"}));
    k.proxy.conflict_status_updates(100);
    k.proxy.clear_requests();
    let add = k.run("ADD", "c-cont", &pod, &conf).ok();
    // Every attempt lost the race; the pod keeps its interfaces, the log says why.
    let writes = status_writes(&k.proxy.requests());
    assert_eq!(writes, vec![(409, true); 5]);
    assert_eq!(link_names(&pod.netns), vec!["eth0", "lo", "net1"]);
    assert!(
        add.stderr.contains("network-status write failed") && add.stderr.contains("conflict"),
        "{}",
        add.stderr
    );
    assert_eq!(k.status(&pod), None);
    // No Events are posted after a failed write.
    assert!(k.events(&pod).is_empty(), "{:?}", k.events(&pod));
    k.proxy.conflict_status_updates(0);
    k.run("DEL", "c-cont", &pod, &conf).ok();
    k.assert_clean(&pod);
}
