//! The HTTP listeners of the real agent: dual-stack by default (an IPv6-only node answers, and
//! the same socket takes IPv4 clients), and the probes on their own port whether or not
//! metrics are exported.
use std::net::SocketAddr;

use multus_testkit::{Netns, inside, require_root};
use serde_json::Value;

use crate::support::{METRICS, Node};

fn get(netns: &Netns, addr: &str, path: &str) -> (u16, String) {
    let addr: SocketAddr = addr.parse().unwrap();
    inside::http_get(&netns.path(), addr, path)
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// The address families of the addresses configured in `netns`.
fn families(netns: &Netns) -> Vec<String> {
    let v: Value = serde_json::from_str(&netns.ip(&["-j", "addr", "show"])).unwrap();
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| a["family"].as_str().unwrap_or("").to_owned())
        .collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn the_default_listeners_answer_on_a_node_with_only_ipv6_and_take_ipv4_on_the_same_socket() {
    if !require_root(
        "the_default_listeners_answer_on_a_node_with_only_ipv6_and_take_ipv4_on_the_same_socket",
    ) {
        return;
    }
    let node = Node::new();
    // A node with IPv6 addresses only: ::1 on the loopback and one documentation address.
    let v6 = Netns::new("al6");
    v6.ip(&["addr", "del", "127.0.0.1/8", "dev", "lo"]);
    v6.ip(&["addr", "add", "2001:db8:18::1/128", "dev", "lo", "nodad"]);
    assert_eq!(
        families(&v6),
        ["inet6"],
        "the namespace must have only IPv6"
    );

    let mut config = node.agent_config();
    let obj = config.as_object_mut().unwrap();
    // The shipped defaults: `::` for both, metrics on 9110, probes on 9111.
    obj.remove("metricsAddress");
    obj.remove("metricsPort");
    let agent = node.start_agent_in(&v6.path(), &config, "[::1]:9111".parse().unwrap(), &[]);

    assert_eq!(get(&v6, "[::1]:9111", "/healthz").0, 200);
    assert_eq!(get(&v6, "[2001:db8:18::1]:9111", "/readyz").0, 200);
    let (status, body) = get(&v6, "[2001:db8:18::1]:9110", "/metrics");
    assert_eq!(status, 200, "{}", agent.log_text());
    assert!(body.contains("multus_agent_build_info{"), "{body}");
    assert_eq!(get(&v6, "[::1]:9110", "/readyz").0, 200);
    // The health port serves the probes only.
    assert_eq!(get(&v6, "[::1]:9111", "/metrics").0, 404);

    // An IPv4 address appears after the agent started: the same sockets answer on it
    // (IPV6_V6ONLY off, the client seen as a v4-mapped address).
    v6.ip(&["addr", "add", "192.0.2.18/32", "dev", "lo"]);
    assert_eq!(get(&v6, "192.0.2.18:9111", "/healthz").0, 200);
    assert_eq!(get(&v6, "192.0.2.18:9110", "/metrics").0, 200);
    let log = agent.log_text();
    assert!(
        log.contains("[::]:9110") && log.contains("[::]:9111"),
        "the agent should say where it listens:\n{log}"
    );
}

#[test]
fn with_metrics_off_the_probes_still_answer_on_the_health_port() {
    if !require_root("with_metrics_off_the_probes_still_answer_on_the_health_port") {
        return;
    }
    // The node namespace has IPv6 turned off (sysctl): the default `::` still binds, and
    // takes IPv4 clients.
    let node = Node::new();
    let mut config = node.agent_config();
    config["metricsPort"] = 0.into();
    let mut agent = node.start_agent_in(
        &node.netns.path(),
        &config,
        "127.0.0.1:9111".parse().unwrap(),
        &[],
    );
    assert_eq!(get(&node.netns, "127.0.0.1:9111", "/healthz").0, 200);
    assert_eq!(get(&node.netns, "127.0.0.1:9111", "/readyz").0, 200);
    assert_eq!(get(&node.netns, "127.0.0.1:9111", "/metrics").0, 404);
    // Nothing listens on the metrics port.
    let refused = inside::http_get(&node.netns.path(), METRICS.parse().unwrap(), "/metrics");
    assert!(refused.is_err(), "{refused:?}");
    assert!(agent.terminate(), "{}", agent.log_text());
}

#[test]
fn one_port_number_for_both_serves_metrics_and_probes_on_one_listener() {
    if !require_root("one_port_number_for_both_serves_metrics_and_probes_on_one_listener") {
        return;
    }
    let node = Node::new();
    let mut config = node.agent_config();
    config["healthPort"] = 9110.into();
    let agent = node.start_agent(&config);
    assert_eq!(get(&node.netns, METRICS, "/healthz").0, 200);
    assert_eq!(get(&node.netns, METRICS, "/metrics").0, 200);
    let log = agent.log_text();
    assert!(!log.contains(":9111"), "{log}");
}
