//! Root tests: policies compiled from MultiNetworkPolicies, a NAD annotation and a snapshot of
//! pods, installed with the real dataplane on macvlan pods, enforce what they say on real
//! traffic.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::common;
use crate::policy_fixture;

use std::net::{IpAddr, SocketAddr};

use common::{Fixture, connects};
use multus_agent::{
    dataplane::{AttachMode, DropReason, Protocol},
    policy::{
        LocalAttachment, NAD_POLICY_ANNOTATION, NadView, NamespaceView, PodView, Snapshot, compile,
    },
};
use multus_testkit::{MacvlanPods, Pod, require_root, traffic::TcpServer};
use policy_fixture::{key, labels, mnp, pod};

const NETWORK: &str = "test/blue";
const CONFIG: &str = r#"{"cniVersion":"1.0.0","name":"blue","type":"macvlan",
  "ipam":{"type":"host-local","ranges":[[{"subnet":"192.0.2.0/24"}],[{"subnet":"2001:db8::/64"}]]}}"#;

/// The snapshot view of a test pod: `test/<name>` with its addresses on the test network.
fn view(p: &Pod, name: &str, l: &[(&str, &str)], ports: &[(&str, Protocol, u16)]) -> PodView {
    let ip4 = p.ip4.to_string();
    let ip6 = p.ip6.to_string();
    pod(
        &format!("test/{name}"),
        l,
        ports,
        &[(NETWORK, &[ip4.as_str(), ip6.as_str()])],
    )
}

fn local(p: &Pod, name: &str) -> LocalAttachment {
    LocalAttachment {
        pod: key(&format!("test/{name}")),
        interface: p.ifname.clone(),
        network: key(NETWORK),
        ips: vec![IpAddr::V4(p.ip4), IpAddr::V6(p.ip6)],
        mac: p.mac.parse().unwrap(),
    }
}

fn snapshot() -> Snapshot {
    let mut s = Snapshot::new();
    s.upsert_namespace(NamespaceView {
        name: "test".into(),
        labels: labels(&[]),
    });
    s
}

#[test]
fn a_compiled_multinetworkpolicy_allows_exactly_the_selected_peer_and_named_port() {
    if !require_root(
        "a_compiled_multinetworkpolicy_allows_exactly_the_selected_peer_and_named_port",
    ) {
        return;
    }
    let net = MacvlanPods::new(3);
    let (server, client, other) = (&net.pods[0], &net.pods[1], &net.pods[2]);
    let mut s = snapshot();
    s.upsert_pod(view(
        server,
        "server",
        &[("app", "server")],
        &[("http", Protocol::Tcp, 8080)],
    ));
    s.upsert_pod(view(client, "client", &[("app", "client")], &[]));
    s.upsert_pod(view(other, "other", &[("app", "other")], &[]));
    s.upsert_mnp(&mnp(
        "test/web",
        Some("blue"),
        "{podSelector: {matchLabels: {app: server}},
          ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: http}]}]}",
    ));
    let key = s.add_local(local(server, "server"));
    let compiled = compile(&s, &key).unwrap().expect("the policy applies");
    assert_eq!(compiled.source.to_string(), "mnp:test/web");

    let mut fx = Fixture::new(AttachMode::Tcx);
    let id = fx.attach(server, Some(&compiled.policy));
    let http = TcpServer::start(&server.netns, SocketAddr::new(IpAddr::V4(server.ip4), 8080));
    let admin = TcpServer::start(&server.netns, SocketAddr::new(IpAddr::V4(server.ip4), 8081));

    assert!(
        connects(client, http.addr()),
        "the selected peer on the named port"
    );
    assert!(!connects(client, admin.addr()), "another port");
    assert!(
        !connects(other, http.addr()),
        "a peer the policy does not select"
    );
    assert_eq!(
        client.ping(IpAddr::V4(server.ip4), 2),
        0,
        "ports given: no ICMP"
    );
    let counters = fx.counters(id);
    assert!(
        counters.ingress.drops(DropReason::DefaultDeny).0 >= 4,
        "{counters:?}"
    );
    assert_eq!(counters.ingress.drops(DropReason::PolicyDeny).0, 0);

    // A new peer appears: recompiled, the same attachment lets it in.
    let update = s.upsert_pod(view(other, "other", &[("app", "client")], &[]));
    assert!(update.affected.contains(&key));
    let recompiled = compile(&s, &key).unwrap().unwrap();
    fx.dataplane.set_policy(id, &recompiled.policy).unwrap();
    assert!(connects(other, http.addr()), "relabelled peer");
    assert!(!connects(other, admin.addr()));
}

#[test]
fn named_egress_ports_resolve_per_peer_over_ipv6_and_the_nad_policy_still_applies() {
    if !require_root(
        "named_egress_ports_resolve_per_peer_over_ipv6_and_the_nad_policy_still_applies",
    ) {
        return;
    }
    let net = MacvlanPods::dual_stack(3);
    let (client, web1, web2) = (&net.pods[0], &net.pods[1], &net.pods[2]);
    let mut s = snapshot();
    s.upsert_pod(view(client, "client", &[("app", "client")], &[]));
    s.upsert_pod(view(
        web1,
        "web1",
        &[("app", "web")],
        &[("http", Protocol::Tcp, 8080)],
    ));
    s.upsert_pod(view(
        web2,
        "web2",
        &[("app", "web")],
        &[("http", Protocol::Tcp, 9090)],
    ));
    s.upsert_mnp(&mnp(
        "test/out",
        Some("blue"),
        "{podSelector: {matchLabels: {app: client}}, policyTypes: [Egress],
          egress: [{to: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: http}]}]}",
    ));
    // The network's own policy denies web2's IPv4 address to everyone on it.
    s.upsert_nad(NadView {
        key: key(NETWORK),
        annotations: [(
            NAD_POLICY_ANNOTATION.to_owned(),
            format!("egress: {{deny: [{{to: {}}}]}}", web2.ip4),
        )]
        .into(),
        config: Some(CONFIG.to_owned()),
    });
    let key = s.add_local(local(client, "client"));
    let compiled = compile(&s, &key).unwrap().unwrap();
    assert_eq!(compiled.source.to_string(), "nad:test/blue+mnp:test/out");

    let mut fx = Fixture::new(AttachMode::Tcx);
    fx.attach(client, Some(&compiled.policy));
    let mut servers = Vec::new();
    for (p, port) in [(web1, 8080), (web1, 9090), (web2, 8080), (web2, 9090)] {
        for ip in [IpAddr::V4(p.ip4), IpAddr::V6(p.ip6)] {
            servers.push(TcpServer::start(&p.netns, SocketAddr::new(ip, port)));
        }
    }
    let reach = |p: &Pod, v6: bool, port: u16| {
        let ip = if v6 {
            IpAddr::V6(p.ip6)
        } else {
            IpAddr::V4(p.ip4)
        };
        connects(client, SocketAddr::new(ip, port))
    };
    assert!(reach(web1, true, 8080), "web1's http over IPv6");
    assert!(reach(web1, false, 8080), "web1's http over IPv4");
    assert!(!reach(web1, true, 9090), "web2's http number is not web1's");
    assert!(reach(web2, true, 9090), "web2's http over IPv6");
    assert!(!reach(web2, true, 8080));
    assert!(!reach(web2, false, 9090), "denied by the NAD policy");
}
