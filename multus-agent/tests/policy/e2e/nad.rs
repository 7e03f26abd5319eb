//! The NAD policy annotation in Kubernetes mode: in force when ADD returns, changed within a
//! second of an API write, kept when an edit is invalid (with an Event), and `isolate`.
use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use multus_testkit::{
    kube::{Recorded, allows, attributes, attrs, checked_attributes},
    traffic::{udp_count, udp_socket},
};
use serde_json::json;

use super::fixture::{
    KubeNode, POLICY, WITHIN, address, agent_role_rules, attachment_id, invalid_policy_event,
    passes, servers, status_policy, until,
};

#[test]
fn a_denied_packet_sent_right_after_add_returns_is_dropped() {
    let Some(k) = KubeNode::new(
        "a_denied_packet_sent_right_after_add_returns_is_dropped",
        "pol",
    ) else {
        return;
    };
    // Pods on blue may send UDP to port 9, nothing else (ARP passes).
    k.create_nad(
        "blue",
        &["192.0.2.0/24"],
        Some("egress:\n  allow:\n    - ports: udp/9\n"),
    );
    let [server, client] = k.blank_pods(["server", "client"]);
    let agent = k.start_agent();
    let server_ip = k.add_at(&server, 4);
    let denied = udp_socket(&server.netns, SocketAddr::new(server_ip, 7));
    let allowed = udp_socket(&server.netns, SocketAddr::new(server_ip, 9));

    let run = k.node.shim("ADD", &client);
    // Not a moment later: the first datagrams leave right after the shim returned.
    run.ok();
    let client_ip = address(&client, "net1", 4);
    // Every drop series is there at zero before the first drop, so `increase()` sees it.
    let before = k.node.scrape();
    for reason in [
        "policy_deny",
        "default_deny",
        "spoofed",
        "malformed",
        "header_chain",
    ] {
        for direction in ["ingress", "egress"] {
            let labels = [
                ("pod", "client"),
                ("direction", direction),
                ("reason", reason),
                ("policy_source", "nad"),
            ];
            assert_eq!(
                before.value("multus_policy_drop_packets_total", &labels),
                0,
                "{}",
                before.text
            );
        }
    }
    let sender: UdpSocket = udp_socket(&client.netns, SocketAddr::new(client_ip, 0));
    for _ in 0..20 {
        sender.send_to(b"no", (server_ip, 7)).unwrap();
        sender.send_to(b"yes", (server_ip, 9)).unwrap();
    }
    assert_eq!(
        udp_count(&denied, Duration::from_millis(500)),
        0,
        "{}",
        agent.log_text()
    );
    assert_eq!(udp_count(&allowed, Duration::from_millis(300)), 20);

    let metrics = k.node.scrape();
    let drops = metrics.value(
        "multus_policy_drop_packets_total",
        &[
            ("pod", "client"),
            ("direction", "egress"),
            ("reason", "default_deny"),
            ("policy_source", "nad"),
        ],
    );
    assert_eq!(drops, 20, "{}", metrics.text);
    let network = format!("{}/blue", k.ns());
    let status = status_policy(&k.node, attachment_id(&k.node, &client, "net1"));
    assert_eq!(
        status["source"],
        format!("nad:{network}").as_str(),
        "{status}"
    );
    assert_eq!(status["policy"]["egress"]["default"], "deny", "{status}");
    k.del_all(&[&client, &server]);
    assert!(k.node.records().is_empty());
}

#[test]
fn changing_a_nad_annotation_changes_enforcement_within_a_second() {
    let Some(k) = KubeNode::new(
        "changing_a_nad_annotation_changes_enforcement_within_a_second",
        "pol",
    ) else {
        return;
    };
    k.create_nad("blue", &["192.0.2.0/24"], None);
    let [server, client] = k.blank_pods(["server", "client"]);
    let agent = k.start_agent();
    let server_ip = k.add_at(&server, 4);
    k.add(&client);
    let _servers = servers(&server, server_ip, &[8080]);
    let web = SocketAddr::new(server_ip, 8080);
    assert!(passes(&client, web), "no policy yet: {}", agent.log_text());

    let write = Instant::now();
    k.annotate_nad(
        "blue",
        json!({POLICY: "ingress:\n  deny:\n    - ports: tcp/8080\n"}),
    );
    let took = until(write, "the deny", false, || passes(&client, web));
    eprintln!("NAD annotation added: enforced {took:?} after the API write");
    assert!(took < WITHIN, "{took:?}:\n{}", agent.log_text());

    let write = Instant::now();
    k.annotate_nad("blue", json!({POLICY: null}));
    let took = until(write, "the annotation's removal", true, || {
        passes(&client, web)
    });
    eprintln!("NAD annotation removed: enforced {took:?} after the API write");
    assert!(took < WITHIN, "{took:?}:\n{}", agent.log_text());
    let status = status_policy(&k.node, attachment_id(&k.node, &server, "net1"));
    assert!(status["policy"].is_null(), "{status}");
    k.del_all(&[&client, &server]);
}

#[test]
fn an_invalid_annotation_keeps_the_previous_policy_and_produces_one_event() {
    let Some(k) = KubeNode::new(
        "an_invalid_annotation_keeps_the_previous_policy_and_produces_one_event",
        "pol",
    ) else {
        return;
    };
    k.create_nad(
        "blue",
        &["192.0.2.0/24"],
        Some("ingress:\n  deny:\n    - ports: tcp/8080\n"),
    );
    let [server, client, late] = k.blank_pods(["server", "client", "late"]);
    let agent = k.start_agent();
    let server_ip = k.add_at(&server, 4);
    k.add(&client);
    let _servers = servers(&server, server_ip, &[8080, 8081]);
    let (web, other) = (
        SocketAddr::new(server_ip, 8080),
        SocketAddr::new(server_ip, 8081),
    );
    assert!(!passes(&client, web), "{}", agent.log_text());
    assert!(passes(&client, other));

    k.annotate_nad(
        "blue",
        json!({POLICY: "ingress:\n  deny:\n    - ports: [tcp/8080, tcp/70000]\n"}),
    );
    let event = invalid_policy_event(&k, "blue");
    assert_eq!(
        event["involvedObject"]["kind"],
        "NetworkAttachmentDefinition"
    );
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains("ingress.deny[0].ports[1]") && message.contains("70000"),
        "{message}"
    );
    // The previous policy stays in force, for new pods too.
    for _ in 0..5 {
        assert!(!passes(&client, web), "{}", agent.log_text());
        assert!(passes(&client, other));
    }
    let late_ip = k.add_at(&late, 4);
    let _late_servers = servers(&late, late_ip, &[8080]);
    assert!(!passes(&client, SocketAddr::new(late_ip, 8080)));
    let metrics = k.node.scrape();
    assert_eq!(
        metrics.value("multus_agent_policy_errors_total", &[("kind", "nad")]),
        1
    );

    // Another edit of the NAD that leaves the same problem: no second Event.
    k.annotate_nad("blue", json!({"example.com/note": "unrelated"}));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(k.events("InvalidPolicy", "blue").len(), 1);
    assert_eq!(
        k.node
            .scrape()
            .value("multus_agent_policy_errors_total", &[("kind", "nad")]),
        1
    );

    // Fixed: the new policy applies.
    let write = Instant::now();
    k.annotate_nad(
        "blue",
        json!({POLICY: "ingress:\n  deny:\n    - ports: tcp/8081\n"}),
    );
    let took = until(write, "the fixed policy", true, || passes(&client, web));
    assert!(took < WITHIN, "{took:?}");
    assert!(!passes(&client, other));
    k.del_all(&[&late, &client, &server]);

    // Everything the agent did here (caches, policy watches, status writes, the Event) was
    // allowed by its ClusterRole, and used every kind of permission policy added to it. (The
    // agent sees the other tests' objects too; Events about those are theirs. An Event another
    // test's agent posted first answers 409.)
    let rules = agent_role_rules();
    let (conflicts, requests): (Vec<Recorded>, Vec<Recorded>) = k
        .proxy
        .requests()
        .into_iter()
        .filter(|r| {
            !r.path.contains("/namespaces/") || r.path.contains(&format!("/namespaces/{}/", k.ns()))
        })
        .partition(|r| r.method == "POST" && r.status == 409);
    let mut used = checked_attributes(&requests, &rules, &k.token);
    for r in conflicts {
        let a = attributes(&r.method, &r.path);
        assert!(allows(&rules, &a), "{r:?}");
        if !used.contains(&a) {
            used.push(a);
        }
    }
    used.sort();
    let expected = [
        attrs("", "events", "create"),
        attrs("", "namespaces", "list"),
        attrs("", "pods", "get"),
        attrs("", "pods", "list"),
        attrs("", "pods/status", "update"),
        attrs("k8s.cni.cncf.io", "multi-networkpolicies", "list"),
        attrs("k8s.cni.cncf.io", "network-attachment-definitions", "list"),
    ];
    assert_eq!(used, expected);
}

#[test]
fn isolate_separates_two_planes_while_pods_on_one_plane_talk() {
    let Some(k) = KubeNode::new(
        "isolate_separates_two_planes_while_pods_on_one_plane_talk",
        "pol",
    ) else {
        return;
    };
    k.create_nad("blue", &["192.0.2.0/24"], None);
    k.create_nad("red", &["198.51.100.0/24"], None);
    let [b1, b2] = k.blank_pods(["b1", "b2"]);
    let r1 = k.create_pod("r1", "red", json!({}), json!([]));
    let agent = k.start_agent();
    let b1_ip = k.add_at(&b1, 4);
    let b2_ip = k.add_at(&b2, 4);
    let r1_ip = k.add_at(&r1, 4);
    // Both planes share the segment: with on-link routes they reach each other.
    for (pod, other) in [
        (&b1, "198.51.100.0/24"),
        (&b2, "198.51.100.0/24"),
        (&r1, "192.0.2.0/24"),
    ] {
        pod.netns.ip(&["route", "add", other, "dev", "net1"]);
    }
    let _b2_servers = servers(&b2, b2_ip, &[80]);
    let _r1_servers = servers(&r1, r1_ip, &[80]);
    let _b1_servers = servers(&b1, b1_ip, &[80]);
    let (b2_web, r1_web, b1_web) = (
        SocketAddr::new(b2_ip, 80),
        SocketAddr::new(r1_ip, 80),
        SocketAddr::new(b1_ip, 80),
    );
    assert!(passes(&b1, r1_web), "no policy yet: {}", agent.log_text());
    assert!(passes(&r1, b1_web));

    let write = Instant::now();
    for nad in ["blue", "red"] {
        k.annotate_nad(nad, json!({POLICY: "isolate: true"}));
    }
    let took = until(write, "isolation", false, || passes(&b1, r1_web));
    assert!(took < WITHIN, "{took:?}");
    assert!(!passes(&r1, b1_web), "{}", agent.log_text());
    assert!(!passes(&b2, r1_web));
    assert!(passes(&b1, b2_web), "pods on one plane still talk");
    assert!(passes(&b2, b1_web));
    let metrics = k.node.scrape();
    let drops = metrics.value(
        "multus_policy_drop_packets_total",
        &[
            ("pod", "b1"),
            ("direction", "egress"),
            ("reason", "policy_deny"),
            ("policy_source", "nad"),
        ],
    );
    assert!(drops >= 1, "{}", metrics.text);
    k.del_all(&[&b1, &b2, &r1]);
}
