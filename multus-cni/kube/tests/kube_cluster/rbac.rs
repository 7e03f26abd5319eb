//! deploy/10-rbac.yaml's ClusterRole against the facade: exactly enough, and each rule needed.

use multus_kube::{Error, ErrorKind, EventTarget, EventType, KubeApi};
use multus_testkit::kube::{
    FaultProxy, KubeconfigAuth, MULTUS_USER, Rest, checked_attributes,
    cluster_role_rules as rules_of, cni_binary_attributes, until,
};
use serde_json::{Value, json};

use super::{cluster, create_nad, create_pod, facade, facade_via_proxy};

fn cluster_role_rules() -> Vec<Value> {
    rules_of("multus-rs")
}

/// Every call the thin binary makes, on `pod`/`nad` in `ns`.
fn all_calls(api: &KubeApi, ns: &str) -> Vec<Result<(), Error>> {
    let pod = api.get_pod(ns, "p");
    let nad = api.get_nad(ns, "n").map(drop);
    let status = pod
        .as_ref()
        .ok()
        .map(|p| api.set_network_status(ns, "p", Some(&p.uid), "[]"));
    let event = pod.as_ref().ok().map(|p| {
        api.post_event(
            &EventTarget::pod(p),
            EventType::Warning,
            "Probe",
            "rbac probe",
        )
    });
    vec![
        pod.map(drop),
        nad,
        status.unwrap_or(Ok(())),
        event.unwrap_or(Ok(())),
    ]
}

#[test]
fn cluster_role_is_exactly_what_the_facade_needs() {
    let Some(cluster) = cluster("cluster_role_is_exactly_what_the_facade_needs") else {
        return;
    };
    let ns = cluster.namespace("rbac");
    create_pod(&ns, "p", &json!({}));
    create_nad(&ns, "n", Some(r#"{"type":"bridge"}"#), &json!({}));
    let proxy = FaultProxy::start(cluster.addr());
    let dir = tempfile::tempdir().unwrap();
    // The token of user system:serviceaccount:kube-system:multus-rs, bound by deploy/10-rbac.yaml.
    let api = facade_via_proxy(cluster, &proxy, cluster.multus_token(), dir.path());
    for result in all_calls(&api, ns.name()) {
        result.unwrap();
    }
    let used = checked_attributes(
        &proxy.requests(),
        &cluster_role_rules(),
        cluster.multus_token(),
    );
    assert_eq!(used, cni_binary_attributes());
    // Nothing beyond: listing pods or reading secrets is refused for this user.
    let rest = Rest::new(cluster.addr(), cluster.multus_token());
    for path in [
        format!("/api/v1/namespaces/{}/pods", ns.name()),
        format!("/api/v1/namespaces/{}/secrets", ns.name()),
    ] {
        let (status, body) = rest.request("GET", &path, None).unwrap();
        assert_eq!(status, 403, "{path}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(MULTUS_USER),
            "{body}"
        );
    }
}

#[test]
fn each_rule_is_needed_and_its_absence_is_a_clear_forbidden() {
    let Some(cluster) = cluster("each_rule_is_needed_and_its_absence_is_a_clear_forbidden") else {
        return;
    };
    let ns = cluster.namespace("rbacm");
    create_pod(&ns, "p", &json!({}));
    create_nad(&ns, "n", Some(r#"{"type":"bridge"}"#), &json!({}));
    let rules = cluster_role_rules();
    // Which call needs which rule, and the words the refusal must contain.
    let expect = [
        (0, "cannot get resource \"pods\""),
        (2, "cannot update resource \"pods/status\""),
        (1, "cannot get resource \"network-attachment-definitions\""),
        (3, "cannot create resource \"events\""),
    ];
    assert_eq!(rules.len(), expect.len(), "a rule without a test");
    let dir = tempfile::tempdir().unwrap();
    for (rule, (call, words)) in expect.iter().enumerate() {
        let mut kept = rules.clone();
        kept.remove(rule);
        let sa = format!("probe{rule}");
        let token = ns.account_with_rules(&sa, &kept);
        let kubeconfig = dir.path().join(format!("{sa}.kubeconfig"));
        cluster.write_kubeconfig(
            &kubeconfig,
            &cluster.server_url(),
            KubeconfigAuth::Token(&token),
        );
        let api = facade(&kubeconfig);
        // Wait until the server knows the account and the binding (its caches lag a little):
        // every call but the one needing the removed rule succeeds.
        let results = until("the binding to take effect", || {
            let results = all_calls(&api, ns.name());
            let others_ok = results
                .iter()
                .enumerate()
                .all(|(i, r)| i == *call || r.is_ok());
            others_ok.then_some(results)
        });
        let err = results[*call]
            .as_ref()
            .expect_err("the call without its rule");
        assert_eq!(err.kind(), ErrorKind::Forbidden, "rule {rule}: {err}");
        let text = err.to_string();
        assert!(text.contains(words), "rule {rule}: {text}");
        assert!(
            text.contains(&format!("system:serviceaccount:{}:{sa}", ns.name())),
            "{text}"
        );
        eprintln!("without rule {rule}: {text}");
    }
}
