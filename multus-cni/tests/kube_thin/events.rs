//! Warnings on the pod when its request cannot be served: an invalid networks annotation and a
//! missing network. The ADD fails (code 7) and leaves nothing.
use std::sync::Arc;

use multus_cni::{
    engine::Publisher,
    kube::{Cluster, KubePublisher, PodApi, api_options},
    network::PodKey,
};
use multus_kube::ClientSource;
use multus_testkit::kube::KubeconfigAuth;
use serde_json::json;

use super::{Kube, NETWORKS, create_nad, failure};
use crate::common::in_netns;

#[test]
fn invalid_annotations_and_missing_networks_fail_with_an_event_on_the_pod() {
    let Some(k) =
        Kube::new("invalid_annotations_and_missing_networks_fail_with_an_event_on_the_pod")
    else {
        return;
    };
    let ns = k.cluster.namespace("kev");
    create_nad(&ns, "macvlan-net", &k.macvlan(), &json!({}));
    let conf = k.conf();
    let cases = [
        (
            "badname",
            json!({NETWORKS: "macvlan-net,Bad_Name"}),
            "InvalidNetworksAnnotation",
            "Bad_Name",
        ),
        (
            "badjson",
            json!({NETWORKS: "[{\"name\": \"macvlan-net\", \"ips\": [\"not-an-ip\"]}]"}),
            "InvalidNetworksAnnotation",
            "not-an-ip",
        ),
        (
            "missing",
            json!({NETWORKS: "macvlan-net,no-such-net"}),
            "NoNetworkFound",
            "no-such-net: NetworkAttachmentDefinition not found",
        ),
    ];
    for (name, annotations, reason, words) in cases {
        let pod = k.pod(&ns, name, &annotations);
        let (code, msg) = failure(&k.run("ADD", &format!("c-{name}"), &pod, &conf));
        assert_eq!(code, 7, "{name}: {msg}");
        assert!(msg.contains(words), "{name}: {msg}");
        k.assert_clean(&pod);
        assert_eq!(k.status(&pod), None, "{name}");
        let events = k.events(&pod);
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        let (event_type, event_reason, message) = &events[0];
        assert_eq!(event_type, "Warning", "{name}");
        assert_eq!(event_reason, reason, "{name}");
        // The Event says what the CNI error says.
        assert_eq!(message, &msg, "{name}");
    }
}

/// `Publisher::warning`, the hook DEL and GC post their own Warnings through: one Event on the
/// pod with the given reason and message, as the restricted user of deploy/10-rbac.yaml.
#[test]
fn the_publishers_warning_hook_posts_on_the_pod() {
    let Some(k) = Kube::new("the_publishers_warning_hook_posts_on_the_pod") else {
        return;
    };
    let ns = k.cluster.namespace("kwh");
    let pod = k.pod(&ns, "warned", &json!({}));
    let kubeconfig = k.kubeconfig("multus", KubeconfigAuth::Token(k.cluster.multus_token()));
    let cluster = Cluster::new(ClientSource::Kubeconfig(kubeconfig), api_options(3));
    let publisher = KubePublisher::new(Arc::new(cluster) as Arc<dyn PodApi>);
    let key = PodKey {
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
        uid: Some(pod.uid.clone()),
    };
    // The proxy listens inside the node's namespace.
    in_netns(&k.node.netns.path(), || {
        publisher.warning(&key, "TestLeftover", "an address stayed behind");
    });
    assert_eq!(
        k.events(&pod),
        [(
            "Warning".to_owned(),
            "TestLeftover".to_owned(),
            "an address stayed behind".to_owned()
        )]
    );
}

#[test]
fn a_del_given_up_posts_a_warning_on_the_pod() {
    let Some(k) = Kube::new("a_del_given_up_posts_a_warning_on_the_pod") else {
        return;
    };
    let ns = k.cluster.namespace("kgu");
    // A macvlan on a parent of its own, removed under the running pod: macvlan's DEL then
    // fails for good ("Link not found").
    let master = multus_testkit::unique_name("vm");
    k.node.netns.ip(&[
        "link",
        "add",
        &master,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{master}p"),
    ]);
    k.node.netns.ip(&["link", "set", &master, "up"]);
    let mut config = k.macvlan();
    config["master"] = json!(master);
    create_nad(&ns, "fragile", &config, &json!({}));
    let mut conf = k.conf();
    conf["retryDeleteAttempts"] = json!(1);
    conf["retryDeleteSeconds"] = json!(0);
    let pod = k.pod(&ns, "doomed", &json!({NETWORKS: "fragile"}));
    k.run("ADD", "c-doomed", &pod, &conf).ok();
    k.node.netns.ip(&["link", "del", &master]);
    // One attempt allowed: the first failed DEL gives the entry up and succeeds.
    k.run("DEL", "c-doomed", &pod, &conf).ok();
    assert!(
        k.node.cache_files().is_empty(),
        "{:?}",
        k.node.cache_files()
    );
    let warnings: Vec<_> = k
        .events(&pod)
        .into_iter()
        .filter(|(t, _, _)| t == "Warning")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let (_, reason, message) = &warnings[0];
    assert_eq!(reason, "FailedNetworkTeardown");
    let network = format!("{}/fragile", ns.name());
    assert!(
        message.contains(&format!(
            "may have leaked: net1 of {network} (macvlan) with 192.0.2."
        )),
        "{message}"
    );
}
