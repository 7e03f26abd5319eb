//! RBAC as the API server sees a request, to check a client against deploy/10-rbac.yaml's
//! ClusterRole.

use serde_json::Value;

use super::{cluster::read_yaml_documents, proxy::Recorded};

/// `(API group, resource[/subresource], verb)` of one request.
pub type Attributes = (String, String, String);

/// The rules of ClusterRole `name` in deploy/10-rbac.yaml (it holds the binary's `multus` and
/// the agent's `multus-agent`).
#[track_caller]
pub fn cluster_role_rules(name: &str) -> Vec<Value> {
    let path = super::cluster::repo_root().join("deploy/10-rbac.yaml");
    let docs = read_yaml_documents(&path).unwrap_or_else(|e| panic!("{e}"));
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no ClusterRole {name} in {}", path.display()));
    role["rules"].as_array().cloned().unwrap_or_default()
}

/// The RBAC attributes of `method path`.
#[track_caller]
pub fn attributes(method: &str, path: &str) -> Attributes {
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

/// Whether one of `rules` allows `attributes`.
pub fn allows(rules: &[Value], (group, resource, verb): &Attributes) -> bool {
    let has = |v: &Value, want: &str| v.as_array().is_some_and(|a| a.iter().any(|x| x == want));
    rules.iter().any(|r| {
        has(&r["apiGroups"], group) && has(&r["resources"], resource) && has(&r["verbs"], verb)
    })
}

/// The distinct attributes of `requests`, sorted, after asserting that each succeeded, was made
/// with `token` and is allowed by `rules`.
#[track_caller]
pub fn checked_attributes(requests: &[Recorded], rules: &[Value], token: &str) -> Vec<Attributes> {
    let mut used: Vec<Attributes> = Vec::new();
    for r in requests {
        assert!((200..300).contains(&r.status), "{r:?}");
        assert_eq!(r.token.as_deref(), Some(token), "{r:?}");
        let attrs = attributes(&r.method, &r.path);
        assert!(allows(rules, &attrs), "{attrs:?} is not in the ClusterRole");
        if !used.contains(&attrs) {
            used.push(attrs);
        }
    }
    used.sort();
    used
}

/// Every request kind of the CNI binary's Kubernetes calls (read the pod and its NADs, write
/// network-status, post Events), sorted as [`checked_attributes`] returns them.
pub fn cni_binary_attributes() -> Vec<Attributes> {
    vec![
        attrs("", "events", "create"),
        attrs("", "pods", "get"),
        attrs("", "pods/status", "update"),
        attrs("k8s.cni.cncf.io", "network-attachment-definitions", "get"),
    ]
}

/// `(group, resource, verb)` as owned strings.
pub fn attrs(group: &str, resource: &str, verb: &str) -> Attributes {
    (group.to_owned(), resource.to_owned(), verb.to_owned())
}
