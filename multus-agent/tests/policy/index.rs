//! Which local attachments a change affects: exact answers for the typical changes, and a
//! sequence of changes checked against recompiling every attachment before and after (no
//! attachment whose policy changes may be missing).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::policy_fixture;

use std::collections::BTreeSet;

use multus_agent::{
    dataplane::Protocol,
    policy::{AttachmentKey, NamespaceView, Snapshot, Update, compile},
};
use policy_fixture::{BLUE_CONFIG, GREEN_CONFIG, fixture, key, labels, local, mnp, nad, pod};

fn at(pod: &str, interface: &str) -> AttachmentKey {
    AttachmentKey {
        pod: key(pod),
        interface: interface.into(),
    }
}

fn set(keys: &[&AttachmentKey]) -> BTreeSet<AttachmentKey> {
    keys.iter().map(|&k| k.clone()).collect()
}

const SERVER_FROM_CLIENTS: &str = "{podSelector: {matchLabels: {app: server}},
    ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]}";

#[test]
fn typical_changes_affect_exactly_the_attachments_they_should() {
    let mut s = fixture();
    let server = at("prod/server", "net1");
    let server_green = at("prod/server", "net2");
    let client = at("prod/client", "net1");

    // A policy affects the attachments it selects, on its networks.
    let u = s.upsert_mnp(&mnp("prod/web", Some("blue"), SERVER_FROM_CLIENTS));
    assert_eq!(u.affected, set(&[&server]));
    assert_eq!(
        s.upsert_mnp(&mnp("prod/web", Some("blue"), SERVER_FROM_CLIENTS)),
        Update::default(),
        "the same object again changes nothing"
    );

    // A new peer pod: only the attachments whose policies pick it.
    let u = s.upsert_pod(pod(
        "prod/client2",
        &[("app", "client")],
        &[],
        &[("prod/blue", &["192.0.2.40"])],
    ));
    assert_eq!(u.affected, set(&[&server]));
    let u = s.upsert_pod(pod(
        "prod/bystander",
        &[("app", "bystander")],
        &[],
        &[("prod/blue", &["192.0.2.41"])],
    ));
    assert_eq!(u.affected, set(&[]));
    // A peer on another network only, or in another namespace, does not count either.
    let u = s.upsert_pod(pod(
        "prod/client3",
        &[("app", "client")],
        &[],
        &[("prod/green", &["198.51.100.40"])],
    ));
    assert_eq!(u.affected, set(&[]));
    let u = s.upsert_pod(pod(
        "dev/client2",
        &[("app", "client")],
        &[],
        &[("prod/blue", &["192.0.2.42"])],
    ));
    assert_eq!(u.affected, set(&[]));

    // A peer losing its label, and a peer going away.
    let u = s.upsert_pod(pod(
        "prod/client2",
        &[("app", "gone")],
        &[],
        &[("prod/blue", &["192.0.2.40"])],
    ));
    assert_eq!(u.affected, set(&[&server]));
    let u = s.remove_pod(&key("prod/client2"));
    assert_eq!(u.affected, set(&[]), "it was no peer any more");
    let u = s.remove_pod(&key("prod/canary"));
    assert_eq!(u.affected, set(&[&server]));

    // The target pod's own labels decide which policies select it.
    let mut relabelled = s.pod(&key("prod/client")).unwrap().clone();
    relabelled.labels.insert("tier".into(), "front".into());
    let u = s.upsert_pod(relabelled);
    assert!(u.affected.contains(&client), "{:?}", u.affected);
    assert!(
        u.affected.contains(&server),
        "client is a peer of the server"
    );

    // Namespace labels matter to namespace selectors only.
    s.upsert_mnp(&mnp(
        "prod/from-dev",
        Some("blue"),
        "{podSelector: {matchLabels: {app: server}}, ingress: [{from: [{namespaceSelector: {matchLabels: {env: dev}}}]}]}",
    ));
    let u = s.upsert_namespace(NamespaceView {
        name: "ops".into(),
        labels: labels(&[("env", "dev")]),
    });
    assert_eq!(u.affected, set(&[&server]));
    let u = s.upsert_namespace(NamespaceView {
        name: "ops".into(),
        labels: labels(&[("env", "dev"), ("owner", "x")]),
    });
    assert_eq!(
        u.affected,
        set(&[&server]),
        "still matches: may change nothing, but is asked"
    );
    let u = s.upsert_namespace(NamespaceView {
        name: "ops".into(),
        labels: labels(&[("env", "dev"), ("owner", "x")]),
    });
    assert_eq!(u.affected, set(&[]), "unchanged labels");
    let u = s.upsert_namespace(NamespaceView {
        name: "staging".into(),
        labels: labels(&[("env", "staging")]),
    });
    assert_eq!(u.affected, set(&[]));

    // A NAD: every attachment to its network.
    let u = s.upsert_nad(nad("prod/green", GREEN_CONFIG, Some("audit: true")));
    assert_eq!(u.affected, set(&[&server_green]));
    let u = s.upsert_nad(nad("prod/blue", BLUE_CONFIG, Some("isolate: true")));
    assert_eq!(u.affected, set(&[&server, &client]));
    let u = s.remove_nad(&key("prod/green"));
    assert_eq!(u.affected, set(&[&server_green]));

    // A policy that moves to another network affects both sides.
    let u = s.upsert_mnp(&mnp("prod/web", Some("green"), SERVER_FROM_CLIENTS));
    assert_eq!(u.affected, set(&[&server, &at("prod/server", "net2")]));
    let u = s.remove_mnp(&key("prod/web"));
    assert_eq!(u.affected, set(&[&at("prod/server", "net2")]));
}

#[test]
fn named_egress_ports_make_every_pod_on_the_network_a_possible_peer() {
    let mut s = fixture();
    s.upsert_mnp(&mnp(
        "prod/out",
        Some("blue"),
        "{podSelector: {matchLabels: {app: client}}, policyTypes: [Egress], egress: [{ports: [{port: http}]}]}",
    ));
    let u = s.upsert_pod(pod(
        "ops/newweb",
        &[("app", "anything")],
        &[("http", Protocol::Tcp, 8443)],
        &[("prod/blue", &["192.0.2.50"])],
    ));
    assert_eq!(u.affected, set(&[&at("prod/client", "net1")]));
}

/// Compiles every local attachment, as comparable text.
fn compile_all(s: &Snapshot) -> Vec<(AttachmentKey, String)> {
    s.locals()
        .map(|l| {
            let k = l.key();
            let result = format!("{:?}", compile(s, &k));
            (k, result)
        })
        .collect()
}

type Step = Box<dyn Fn(&mut Snapshot) -> Update>;

fn upsert(policy: (&'static str, Option<&'static str>, &'static str)) -> Step {
    Box::new(move |s| s.upsert_mnp(&mnp(policy.0, policy.1, policy.2)))
}

#[test]
fn no_affected_attachment_is_ever_missed() {
    let mut s = fixture();
    for (p, n) in [
        ("dev/web", "prod/blue"),
        ("ops/monitor", "prod/blue"),
        ("prod/web", "prod/green"),
    ] {
        let l = local(&s, p, n);
        s.add_local(l);
    }
    let policies: [(&'static str, Option<&'static str>, &'static str); 4] = [
        ("prod/a", Some("blue"), SERVER_FROM_CLIENTS),
        (
            "prod/b",
            Some("blue,green"),
            "{podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [client]}]},
              ingress: [{from: [{namespaceSelector: {matchLabels: {team: b}}}], ports: [{port: http}]}],
              egress: [{to: [{ipBlock: {cidr: 192.0.2.0/27}}], ports: [{port: http}]}]}",
        ),
        (
            "dev/c",
            Some("prod/blue"),
            "{podSelector: {}, policyTypes: [Egress], egress: [{to: [{podSelector: {matchLabels: {app: server}}, namespaceSelector: {}}]}]}",
        ),
        (
            "ops/d",
            Some("prod/blue"),
            "{podSelector: {matchLabels: {app: monitor}}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}}]}]}",
        ),
    ];
    let steps: Vec<(&str, Step)> = vec![
        ("policy a", upsert(policies[0])),
        ("policy b", upsert(policies[1])),
        ("policy c", upsert(policies[2])),
        ("policy d", upsert(policies[3])),
        (
            "new client",
            Box::new(|s| {
                s.upsert_pod(pod(
                    "prod/c2",
                    &[("app", "client")],
                    &[],
                    &[("prod/blue", &["192.0.2.60", "2001:db8:1::60"])],
                ))
            }),
        ),
        (
            "new dev web",
            Box::new(|s| {
                s.upsert_pod(pod(
                    "dev/w2",
                    &[("app", "web")],
                    &[("http", Protocol::Tcp, 81)],
                    &[("prod/blue", &["192.0.2.23"])],
                ))
            }),
        ),
        (
            "new pod in block with http",
            Box::new(|s| {
                s.upsert_pod(pod(
                    "ops/h",
                    &[],
                    &[("http", Protocol::Tcp, 82)],
                    &[("prod/blue", &["192.0.2.24"])],
                ))
            }),
        ),
        (
            "server gets a new label",
            Box::new(|s| {
                s.upsert_pod(pod(
                    "prod/server",
                    &[("app", "server"), ("x", "y")],
                    &[("http", Protocol::Tcp, 8080)],
                    &[
                        ("prod/blue", &["192.0.2.10", "2001:db8:1::10"]),
                        ("prod/green", &["198.51.100.10"]),
                    ],
                ))
            }),
        ),
        (
            "server's http port moves",
            Box::new(|s| {
                s.upsert_pod(pod(
                    "prod/server",
                    &[("app", "server"), ("x", "y")],
                    &[("http", Protocol::Tcp, 8081)],
                    &[
                        ("prod/blue", &["192.0.2.10", "2001:db8:1::10"]),
                        ("prod/green", &["198.51.100.10"]),
                    ],
                ))
            }),
        ),
        (
            "dev web's address changes",
            Box::new(|s| {
                s.upsert_pod(pod(
                    "dev/web",
                    &[("app", "web")],
                    &[("http", Protocol::Tcp, 80)],
                    &[("prod/blue", &["192.0.2.25"])],
                ))
            }),
        ),
        (
            "ops gets a team",
            Box::new(|s| {
                s.upsert_namespace(NamespaceView {
                    name: "ops".into(),
                    labels: labels(&[("team", "c")]),
                })
            }),
        ),
        (
            "dev loses its team",
            Box::new(|s| {
                s.upsert_namespace(NamespaceView {
                    name: "dev".into(),
                    labels: labels(&[("env", "dev")]),
                })
            }),
        ),
        (
            "prod gets team b",
            Box::new(|s| {
                s.upsert_namespace(NamespaceView {
                    name: "prod".into(),
                    labels: labels(&[("team", "b")]),
                })
            }),
        ),
        (
            "blue isolates",
            Box::new(|s| s.upsert_nad(nad("prod/blue", BLUE_CONFIG, Some("isolate: true")))),
        ),
        (
            "green audits",
            Box::new(|s| {
                s.upsert_nad(nad(
                    "prod/green",
                    GREEN_CONFIG,
                    Some("{\"audit\": true, \"ingress\": {\"deny\": [{\"ports\": \"arp\"}]}}"),
                ))
            }),
        ),
        (
            "policy a changes selector",
            Box::new(|s| {
                s.upsert_mnp(&mnp("prod/a", Some("blue"), "{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]}"))
            }),
        ),
        (
            "policy b breaks",
            Box::new(|s| {
                s.upsert_mnp(&mnp(
                    "prod/b",
                    Some("blue,green"),
                    "{podSelector: {}, ingress: [{ports: [{port: 0}]}]}",
                ))
            }),
        ),
        (
            "client moves off blue",
            Box::new(|s| {
                s.upsert_pod(pod(
                    "prod/c2",
                    &[("app", "client")],
                    &[],
                    &[("prod/green", &["198.51.100.60"])],
                ))
            }),
        ),
        (
            "monitor relabelled",
            Box::new(|s| {
                s.upsert_pod(pod(
                    "ops/monitor",
                    &[("app", "web")],
                    &[("http", Protocol::Tcp, 9000)],
                    &[("prod/blue", &["192.0.2.31"])],
                ))
            }),
        ),
        (
            "policy b fixed",
            Box::new(|s| {
                s.upsert_mnp(&mnp("prod/b", Some("green"), "{podSelector: {}, egress: [{to: [{namespaceSelector: {}}], ports: [{port: http}]}]}"))
            }),
        ),
        (
            "web on green relabelled",
            Box::new(|s| {
                s.upsert_pod(pod(
                    "prod/web",
                    &[("app", "web2")],
                    &[("http", Protocol::Tcp, 8001)],
                    &[
                        ("prod/blue", &["192.0.2.14"]),
                        ("prod/green", &["198.51.100.14"]),
                    ],
                ))
            }),
        ),
        (
            "dev web removed",
            Box::new(|s| s.remove_pod(&key("dev/web"))),
        ),
        ("ops removed", Box::new(|s| s.remove_namespace("ops"))),
        (
            "blue NAD removed",
            Box::new(|s| s.remove_nad(&key("prod/blue"))),
        ),
        (
            "policy c removed",
            Box::new(|s| s.remove_mnp(&key("dev/c"))),
        ),
        (
            "policy a removed",
            Box::new(|s| s.remove_mnp(&key("prod/a"))),
        ),
    ];
    let (mut changed_total, mut affected_total) = (0, 0);
    for (name, step) in &steps {
        let before = compile_all(&s);
        let update = step(&mut s);
        let after = compile_all(&s);
        let changed: BTreeSet<AttachmentKey> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a)
            .map(|(b, _)| b.0.clone())
            .collect();
        assert!(
            changed.is_subset(&update.affected),
            "{name}: changed {changed:?}, reported {:?}",
            update.affected
        );
        changed_total += changed.len();
        affected_total += update.affected.len();
    }
    assert!(
        changed_total >= 20,
        "the steps must change policies: {changed_total}"
    );
    // Precise enough to be worth having: far from "everything, every time".
    assert!(
        affected_total < steps.len() * s.locals().count(),
        "{affected_total} reported for {changed_total} changed"
    );
}
