//! The binary with exactly deploy/10-rbac.yaml's ClusterRole: everything works, every request
//! is covered by a rule, and without each rule the binary fails (or, for the writes that must
//! not fail a pod, logs) clearly.

use multus_testkit::kube::{
    KubeconfigAuth, Rest, checked_attributes, cluster_role_rules as rules_of,
    cni_binary_attributes, until,
};
use serde_json::{Value, json};

use super::{Kube, NETWORKS, create_nad, failure};
use crate::common::link_names;

fn cluster_role_rules() -> Vec<Value> {
    rules_of("multus-rs")
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

    let used = checked_attributes(
        &k.proxy.requests(),
        &cluster_role_rules(),
        k.cluster.multus_token(),
    );
    assert_eq!(used, cni_binary_attributes());
    k.run("DEL", "c-rbac", &pod, &conf).ok();
    k.assert_clean(&pod);
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
        let mut kept = rules.clone();
        kept.remove(rule);
        let token = ns.account_with_rules(&format!("probe{rule}"), &kept);
        let rest = Rest::new(k.cluster.addr(), &token);
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

#[test]
fn a_rejected_token_fails_clearly_and_leaves_nothing() {
    let Some(k) = Kube::new("a_rejected_token_fails_clearly_and_leaves_nothing") else {
        return;
    };
    let ns = k.cluster.namespace("k401");
    let pod = k.pod(&ns, "p", &json!({NETWORKS: "macvlan-net"}));
    let mut conf = k.conf();
    conf["kubeconfig"] = json!(k.kubeconfig("bogus", KubeconfigAuth::Token("no-such-token")));
    let (code, msg) = failure(&k.run("ADD", "c-401", &pod, &conf));
    assert_eq!(code, 7, "{msg}");
    assert!(
        msg.contains(&format!("pod {}/p", ns.name()))
            && msg.contains("unauthorized")
            && msg.contains("check the token"),
        "{msg}"
    );
    k.assert_clean(&pod);
}
