//! deploy/rbac.yaml's ClusterRole against the facade: exactly enough, and each rule needed.
use std::path::Path;

use multus_kube::{Error, ErrorKind, EventTarget, EventType, KubeApi};
use multus_testkit::kube::{FaultProxy, KubeconfigAuth, MULTUS_USER, Rest, read_yaml_documents};
use serde_json::{Value, json};

use super::{cluster, create_nad, create_pod, facade, facade_via_proxy, until};

fn cluster_role_rules() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rbac.yaml");
    let docs = read_yaml_documents(&path).unwrap();
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole in deploy/rbac.yaml");
    role["rules"].as_array().unwrap().clone()
}

/// (API group, resource[/subresource], verb) of a request path, as RBAC sees it.
fn attributes(method: &str, path: &str) -> (String, String, String) {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest),
        _ => panic!("unexpected path {path}"),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [res] => ((*res).to_owned(), false),
        [res, _name] => ((*res).to_owned(), true),
        [res, _name, sub] => (format!("{res}/{sub}"), true),
        _ => panic!("unexpected path {path}"),
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => panic!("unexpected method {method}"),
    };
    (group, resource, verb.to_owned())
}

fn allows(rules: &[Value], (group, resource, verb): &(String, String, String)) -> bool {
    let has = |v: &Value, want: &str| v.as_array().is_some_and(|a| a.iter().any(|x| x == want));
    rules.iter().any(|r| {
        has(&r["apiGroups"], group) && has(&r["resources"], resource) && has(&r["verbs"], verb)
    })
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
    // The token of user system:serviceaccount:kube-system:multus, bound by deploy/rbac.yaml.
    let api = facade_via_proxy(cluster, &proxy, cluster.multus_token(), dir.path());
    for result in all_calls(&api, ns.name()) {
        result.unwrap();
    }
    let rules = cluster_role_rules();
    let mut used: Vec<(String, String, String)> = Vec::new();
    for r in proxy.requests() {
        assert!((200..300).contains(&r.status), "{r:?}");
        assert_eq!(r.token.as_deref(), Some(cluster.multus_token()), "{r:?}");
        let attrs = attributes(&r.method, &r.path);
        assert!(
            allows(&rules, &attrs),
            "{attrs:?} is not in the ClusterRole"
        );
        if !used.contains(&attrs) {
            used.push(attrs);
        }
    }
    used.sort();
    let s = |g: &str, r: &str, v: &str| (g.to_owned(), r.to_owned(), v.to_owned());
    assert_eq!(
        used,
        vec![
            s("", "events", "create"),
            s("", "pods", "get"),
            s("", "pods/status", "update"),
            s("k8s.cni.cncf.io", "network-attachment-definitions", "get"),
        ]
    );
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
        let role = format!("multus-minus-{rule}-{}", ns.name());
        let mut kept = rules.clone();
        kept.remove(rule);
        cluster
            .admin()
            .create(
                &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                            "metadata": {"name": role}, "rules": kept}),
            )
            .unwrap();
        let sa = format!("probe{rule}");
        ns.create(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}}));
        ns.create(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                         "metadata": {"name": sa},
                         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                         "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns.name()}]}));
        let token = ns.service_account_token(&sa, None);
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
