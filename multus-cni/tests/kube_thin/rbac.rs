//! The binary with exactly deploy/rbac.yaml's ClusterRole: everything works, every request
//! is covered by a rule, and without each rule the binary fails (or, for the writes that must
//! not fail a pod, logs) clearly.
use std::path::Path;

use multus_testkit::kube::{KubeconfigAuth, Rest, TestNamespace, read_yaml_documents};
use serde_json::{Value, json};

use super::{Kube, NETWORKS, create_nad, failure, until};
use crate::common::link_names;

fn cluster_role_rules() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rbac.yaml");
    let docs = read_yaml_documents(&path).unwrap();
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole in deploy/rbac.yaml");
    role["rules"].as_array().unwrap().clone()
}

/// (API group, resource[/subresource], verb) of a request, as RBAC sees it.
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

#[test]
fn the_binary_works_with_exactly_the_cluster_role() {
    let Some(k) = Kube::new("the_binary_works_with_exactly_the_cluster_role") else {
        return;
    };
    let ns = k.cluster.namespace("krb");
    create_nad(&ns, "macvlan-net", &k.macvlan(), &json!({}));
    // The restricted user's token from a file, as a projected service-account token is read.
    let token = k.node.path("token");
    std::fs::write(&token, k.cluster.multus_token()).unwrap();
    let mut conf = k.conf();
    conf["kubeconfig"] = json!(k.kubeconfig("file", KubeconfigAuth::TokenFile(&token)));
    let pod = k.pod(&ns, "p", &json!({NETWORKS: "macvlan-net"}));
    k.proxy.clear_requests();
    k.run("ADD", "c-rbac", &pod, &conf).ok();
    assert!(k.status(&pod).is_some());

    let rules = cluster_role_rules();
    let mut used = Vec::new();
    for r in k.proxy.requests() {
        assert!((200..300).contains(&r.status), "{r:?}");
        assert_eq!(r.token.as_deref(), Some(k.cluster.multus_token()), "{r:?}");
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
    k.run("DEL", "c-rbac", &pod, &conf).ok();
    k.assert_clean(&pod);
}

/// A service account of `ns` bound to the ClusterRole minus rule `rule`: a client as that
/// account, and its token.
fn account_without_rule(
    k: &Kube,
    ns: &TestNamespace,
    rules: &[Value],
    rule: usize,
) -> (Rest, String) {
    let role = format!("multus-minus-{rule}-{}", ns.name());
    let mut kept = rules.to_vec();
    kept.remove(rule);
    k.cluster
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
    (Rest::new(k.cluster.addr(), &token), token)
}

#[test]
fn without_each_rule_the_binary_says_which_permission_is_missing() {
    let Some(k) = Kube::new("without_each_rule_the_binary_says_which_permission_is_missing") else {
        return;
    };
    let ns = k.cluster.namespace("krbm");
    create_nad(&ns, "macvlan-net", &k.macvlan(), &json!({}));
    let rules = cluster_role_rules();
    // The rule each case removes, whether ADD fails, and the words the failure or log holds.
    let cases = [
        (0, true, "cannot get resource \"pods\""),
        (1, false, "cannot update resource \"pods/status\""),
        (
            2,
            true,
            "cannot get resource \"network-attachment-definitions\"",
        ),
        (3, false, "cannot create resource \"events\""),
    ];
    assert_eq!(rules.len(), cases.len(), "a rule without a case");
    let pod_path = |name: &str| format!("/api/v1/namespaces/{}/pods/{name}", ns.name());
    let nad_path = format!(
        "/apis/k8s.cni.cncf.io/v1/namespaces/{}/network-attachment-definitions/macvlan-net",
        ns.name()
    );
    for (rule, add_fails, words) in cases {
        let name = format!("p{rule}");
        let pod = k.pod(&ns, &name, &json!({NETWORKS: "macvlan-net"}));
        let (rest, token) = account_without_rule(&k, &ns, &rules, rule);
        // Wait until the server knows the account and its binding: the reads the rule does not
        // cover succeed.
        until("the binding to take effect", || {
            let ok = |path: &str| matches!(rest.request("GET", path, None), Ok((200, _)));
            (rule == 0 || ok(&pod_path(&name)) && (rule == 2 || ok(&nad_path))).then_some(())
        });
        let mut conf = k.conf();
        conf["kubeconfig"] = json!(k.kubeconfig(&name, KubeconfigAuth::Token(&token)));
        let container = format!("c-{name}");
        let run = k.run("ADD", &container, &pod, &conf);
        let account = format!("system:serviceaccount:{}:probe{rule}", ns.name());
        if add_fails {
            let (code, msg) = failure(&run);
            assert_eq!(code, 7, "rule {rule}: {msg}");
            assert!(
                msg.contains(words) && msg.contains(&account),
                "rule {rule}: {msg}"
            );
            assert!(msg.contains("RBAC"), "rule {rule}: {msg}");
            k.assert_clean(&pod);
        } else {
            assert_eq!(run.code, 0, "rule {rule}: {run:?}");
            assert_eq!(link_names(&pod.netns), vec!["eth0", "lo", "net1"]);
            assert!(
                run.stderr.contains(words) && run.stderr.contains(&account),
                "rule {rule}: {}",
                run.stderr
            );
            k.run("DEL", &container, &pod, &conf).ok();
            k.assert_clean(&pod);
        }
        eprintln!("without rule {rule}: {words}: ok");
    }
}
