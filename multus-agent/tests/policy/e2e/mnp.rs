//! MultiNetworkPolicies in Kubernetes mode: peers by label (and matchExpressions), ports
//! (named ones included), peers that appear later, an invalid edit, and IPv6.
use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use serde_json::{Value, json};

use crate::{
    e2e::fixture::{
        KubeNode, WITHIN, attachment_id, enable_ipv6, invalid_policy_event, passes, servers,
        status_policy, until,
    },
    support::TestPod,
};

/// Ingress to `app: web` pods only from the peers `from` picks, on `ports`.
fn web_ingress(from: &Value, ports: &Value) -> Value {
    json!({
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [{"podSelector": from}], "ports": ports}],
    })
}

/// The NAD `blue` (no annotation) and the policy `web-in` for it: [`web_ingress`].
fn blue_with_web_policy(k: &KubeNode, from: &Value, ports: &Value) {
    k.create_nad("blue", &["192.0.2.0/24"], None);
    k.create_mnp("web-in", "blue", web_ingress(from, ports));
}

/// Waits until `from` reaches `to` (its network-status has to reach the agent first), and
/// returns that it did.
fn eventually_passes(from: &TestPod, to: SocketAddr) -> bool {
    until(Instant::now(), "the peer to be allowed", true, || {
        passes(from, to)
    });
    true
}

#[test]
fn a_multinetworkpolicy_allows_exactly_the_selected_peers_and_ports() {
    let Some(k) = KubeNode::new(
        "a_multinetworkpolicy_allows_exactly_the_selected_peers_and_ports",
        "pol",
    ) else {
        return;
    };
    blue_with_web_policy(
        &k,
        &json!({"matchLabels": {"role": "client"}}),
        &json!([{"port": "http"}, {"protocol": "TCP", "port": 5000, "endPort": 5001}]),
    );
    let client = k.create_pod("client", "blue", json!({"role": "client"}), json!([]));
    let other = k.create_pod("other", "blue", json!({"role": "other"}), json!([]));
    let web = k.create_pod(
        "web",
        "blue",
        json!({"app": "web"}),
        json!([{"name": "http", "containerPort": 8080}]),
    );
    let agent = k.start_agent();
    k.add(&client);
    k.add(&other);
    let web_ip = k.add_at(&web, 4);
    let _servers = servers(&web, web_ip, &[8080, 5000, 5001, 5002, 9090]);
    let at = |port| SocketAddr::new(web_ip, port);

    assert!(eventually_passes(&client, at(8080)), "{}", agent.log_text());
    assert!(passes(&client, at(5000)));
    assert!(passes(&client, at(5001)));
    assert!(!passes(&client, at(5002)), "a port outside the range");
    assert!(
        !passes(&client, at(9090)),
        "a port the policy does not name"
    );
    for port in [8080, 5000, 9090] {
        assert!(!passes(&other, at(port)), "an unselected peer on {port}");
    }
    let status = status_policy(&k.node, attachment_id(&k.node, &web, "net1"));
    let source = format!("mnp:{}/web-in", k.ns());
    assert_eq!(status["source"], source.as_str(), "{status}");
    // The clients are not selected by the policy: they stay open.
    let status = status_policy(&k.node, attachment_id(&k.node, &client, "net1"));
    assert!(status["source"].is_null(), "{status}");

    // An invalid edit: the previous version stays in force, and the policy gets an Event.
    k.patch_mnp(
        "web-in",
        &json!({"spec": {"ingress": [{"ports": [{"protocol": "TCP", "port": 90, "endPort": 80}]}]}}),
    );
    let event = invalid_policy_event(&k, "web-in");
    assert_eq!(event["involvedObject"]["kind"], "MultiNetworkPolicy");
    let message = event["message"].as_str().unwrap();
    assert!(message.contains("endPort 80 is below port 90"), "{message}");
    assert!(passes(&client, at(8080)));
    assert!(!passes(&other, at(8080)));
    assert!(!passes(&client, at(9090)));
    assert_eq!(
        k.node
            .scrape()
            .value("multus_agent_policy_errors_total", &[("kind", "mnp")]),
        1
    );
    k.del_all(&[&web, &other, &client]);
}

#[test]
fn a_new_peer_is_allowed_within_a_second_of_its_network_status() {
    let Some(k) = KubeNode::new(
        "a_new_peer_is_allowed_within_a_second_of_its_network_status",
        "pol",
    ) else {
        return;
    };
    blue_with_web_policy(&k, &json!({"matchLabels": {"role": "client"}}), &json!([]));
    let web = k.create_pod("web", "blue", json!({"app": "web"}), json!([]));
    // A peer on another node: its interface is made by hand, its network-status written
    // later, as that node's agent would.
    let remote = k.create_pod_on(
        "remote",
        "blue",
        json!({"role": "client"}),
        json!([]),
        "another-node",
    );
    let tmp = multus_testkit::unique_name("rmt");
    k.node.netns.ip(&[
        "link", "add", &tmp, "link", "vpar", "type", "macvlan", "mode", "bridge",
    ]);
    k.node
        .netns
        .ip(&["link", "set", &tmp, "netns", remote.netns.name()]);
    remote.netns.ip(&["link", "set", &tmp, "name", "net1"]);
    remote
        .netns
        .ip(&["addr", "add", "192.0.2.250/24", "dev", "net1"]);
    remote.netns.ip(&["link", "set", "net1", "up"]);
    let agent = k.start_agent();
    let web_ip = k.add_at(&web, 4);
    let _servers = servers(&web, web_ip, &[8080]);
    let target = SocketAddr::new(web_ip, 8080);
    for _ in 0..3 {
        assert!(
            !passes(&remote, target),
            "not a peer before its network-status"
        );
    }

    let status = json!([{"name": format!("{}/blue", k.ns()), "interface": "net1",
                          "ips": ["192.0.2.250"]}]);
    let write = Instant::now();
    k.patch_pod(
        "remote",
        &json!({"metadata": {"annotations": {
            "k8s.v1.cni.cncf.io/network-status": status.to_string()}}}),
        false,
    );
    let took = until(write, "the new peer", true, || passes(&remote, target));
    eprintln!("new peer allowed {took:?} after its network-status was written");
    assert!(took < WITHIN, "{took:?}:\n{}", agent.log_text());

    // Relabelled out of the selector: denied again within a second.
    let write = Instant::now();
    k.patch_pod(
        "remote",
        &json!({"metadata": {"labels": {"role": "former-client"}}}),
        false,
    );
    let took = until(write, "the relabelled peer", false, || {
        passes(&remote, target)
    });
    assert!(took < WITHIN, "{took:?}");
    k.del_all(&[&web]);
}

#[test]
fn match_expressions_not_in_and_exists_pick_peers() {
    let Some(k) = KubeNode::new("match_expressions_not_in_and_exists_pick_peers", "pol") else {
        return;
    };
    blue_with_web_policy(
        &k,
        &json!({"matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["db"]},
            {"key": "role", "operator": "Exists"},
        ]}),
        &json!([{"port": 8080}]),
    );
    let peers = [
        ("web-tier", json!({"role": "a", "tier": "web"}), true),
        ("db-tier", json!({"role": "a", "tier": "db"}), false),
        ("no-role", json!({"tier": "web"}), false),
        ("no-tier", json!({"role": "b"}), true),
    ];
    let pods: Vec<(TestPod, bool)> = peers
        .iter()
        .map(|(name, labels, allowed)| {
            (
                k.create_pod(name, "blue", labels.clone(), json!([])),
                *allowed,
            )
        })
        .collect();
    let web = k.create_pod("web", "blue", json!({"app": "web"}), json!([]));
    let agent = k.start_agent();
    for (pod, _) in &pods {
        k.add(pod);
    }
    let web_ip = k.add_at(&web, 4);
    let _servers = servers(&web, web_ip, &[8080]);
    let target = SocketAddr::new(web_ip, 8080);
    assert!(
        eventually_passes(&pods[0].0, target),
        "{}",
        agent.log_text()
    );
    for (pod, allowed) in &pods {
        assert_eq!(passes(pod, target), *allowed, "{}", pod.name);
    }
    let mut all: Vec<&TestPod> = pods.iter().map(|(p, _)| p).collect();
    all.push(&web);
    k.del_all(&all);
}

#[test]
fn ipv6_peers_are_selected_and_anti_spoofing_keeps_the_link_local_address() {
    let Some(k) = KubeNode::new(
        "ipv6_peers_are_selected_and_anti_spoofing_keeps_the_link_local_address",
        "pol",
    ) else {
        return;
    };
    k.create_nad(
        "blue",
        &["192.0.2.0/24", "2001:db8::/64"],
        Some("antiSpoof: true"),
    );
    k.create_mnp(
        "web-in",
        "blue",
        web_ingress(
            &json!({"matchLabels": {"role": "client"}}),
            &json!([{"port": 8080}]),
        ),
    );
    let client = k.create_pod("client", "blue", json!({"role": "client"}), json!([]));
    let other = k.create_pod("other", "blue", json!({"role": "other"}), json!([]));
    let web = k.create_pod("web", "blue", json!({"app": "web"}), json!([]));
    for pod in [&client, &other, &web] {
        enable_ipv6(pod);
    }
    let agent = k.start_agent();
    k.add(&client);
    k.add(&other);
    let web_ip = k.add_at(&web, 6);
    let _servers = servers(&web, web_ip, &[8080, 9090]);
    let target = SocketAddr::new(web_ip, 8080);
    assert!(eventually_passes(&client, target), "{}", agent.log_text());
    assert!(!passes(&other, target), "an unselected IPv6 peer");
    assert!(
        !passes(&client, SocketAddr::new(web_ip, 9090)),
        "a port the policy does not name"
    );
    let status = status_policy(&k.node, attachment_id(&k.node, &web, "net1"));
    let source = format!("nad:{0}/blue+mnp:{0}/web-in", k.ns());
    assert_eq!(status["source"], source.as_str(), "{status}");
    let ips: Vec<IpAddr> = serde_json::from_value(status["policy"]["anti_spoof"]["ips"].clone())
        .unwrap_or_else(|e| panic!("{e}: {status}"));
    assert!(ips.contains(&web_ip), "{status}");
    assert!(
        ips.iter().any(|ip| match ip {
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
            IpAddr::V4(_) => false,
        }),
        "the link-local address is missing: {status}"
    );
    k.del_all(&[&web, &other, &client]);
}
