//! A small cluster for the policy compiler's tests: namespaces, pods on two networks of
//! namespace `prod` (blue: 192.0.2.0/24 and 2001:db8:1::/64, green: 198.51.100.0/24), and
//! MultiNetworkPolicies written as YAML.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers; not every test file uses every helper"
)]

use std::{collections::BTreeMap, net::IpAddr};

use multus_agent::{
    dataplane::Protocol,
    policy::{
        LocalAttachment, NadView, NamedPort, NamespaceView, ObjectKey, PodNetwork, PodView,
        Snapshot,
    },
};
use multus_kube::crd::v1beta2::MultiNetworkPolicy;

/// The blue network's CNI config (host-local, dual stack).
pub const BLUE_CONFIG: &str = r#"{"cniVersion":"1.0.0","name":"blue","type":"macvlan",
  "ipam":{"type":"host-local","ranges":[[{"subnet":"192.0.2.0/24"}],[{"subnet":"2001:db8:1::/64"}]]}}"#;
/// The green network's CNI config.
pub const GREEN_CONFIG: &str = r#"{"cniVersion":"1.0.0","name":"green","type":"macvlan",
  "ipam":{"type":"host-local","subnet":"198.51.100.0/24"}}"#;

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub fn key(s: &str) -> ObjectKey {
    ObjectKey::parse(s).expect("namespace/name")
}

/// A pod: `ns/name`, labels, named ports (`name`, protocol, number), and
/// `(network, addresses)` pairs.
pub fn pod(
    name: &str,
    pod_labels: &[(&str, &str)],
    ports: &[(&str, Protocol, u16)],
    networks: &[(&str, &[&str])],
) -> PodView {
    PodView {
        key: key(name),
        labels: labels(pod_labels),
        ports: ports
            .iter()
            .map(|(n, protocol, port)| NamedPort {
                name: (*n).to_owned(),
                protocol: *protocol,
                port: *port,
            })
            .collect(),
        networks: networks
            .iter()
            .enumerate()
            .map(|(i, (net, ips))| PodNetwork {
                network: key(net),
                interface: format!("net{}", i + 1),
                ips: ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            })
            .collect(),
    }
}

/// A MultiNetworkPolicy `ns/name` for `policy_for` (no annotation when `None`) with a spec
/// written in YAML.
pub fn mnp(name: &str, policy_for: Option<&str>, spec: &str) -> MultiNetworkPolicy {
    let k = key(name);
    let annotations = policy_for
        .map(|p| format!(", annotations: {{k8s.v1.cni.cncf.io/policy-for: \"{p}\"}}"))
        .unwrap_or_default();
    let doc = format!(
        "apiVersion: k8s.cni.cncf.io/v1beta2\nkind: MultiNetworkPolicy\n\
         metadata: {{name: {}, namespace: {}{annotations}}}\nspec: {spec}\n",
        k.name, k.namespace
    );
    serde_yaml::from_str(&doc).unwrap_or_else(|e| panic!("{doc}: {e}"))
}

/// A NAD of the fixture's networks, with a policy annotation when given.
pub fn nad(name: &str, config: &str, policy: Option<&str>) -> NadView {
    NadView {
        key: key(name),
        annotations: policy
            .map(|p| {
                [(
                    multus_agent::policy::NAD_POLICY_ANNOTATION.to_owned(),
                    p.to_owned(),
                )]
                .into()
            })
            .unwrap_or_default(),
        config: Some(config.to_owned()),
    }
}

/// The local attachment of `pod`'s interface on `network`, as the fixture's pods have them.
pub fn local(snapshot: &Snapshot, pod: &str, network: &str) -> LocalAttachment {
    let view = snapshot.pod(&key(pod)).expect("pod in the fixture");
    let net = view
        .networks
        .iter()
        .find(|n| n.network == key(network))
        .expect("pod on the network");
    LocalAttachment {
        pod: view.key.clone(),
        interface: net.interface.clone(),
        network: net.network.clone(),
        ips: net.ips.clone(),
        mac: "02:00:00:00:00:01".parse().unwrap(),
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The fixture cluster, with the attachments of `prod/server` (blue and green) and
/// `prod/client` (blue) registered as local.
pub fn fixture() -> Snapshot {
    let mut s = Snapshot::new();
    for (name, l) in [
        ("prod", labels(&[("team", "a"), ("env", "prod")])),
        ("dev", labels(&[("team", "b"), ("env", "dev")])),
        ("ops", labels(&[])),
    ] {
        s.upsert_namespace(NamespaceView {
            name: name.to_owned(),
            labels: l,
        });
    }
    s.upsert_nad(nad("prod/blue", BLUE_CONFIG, None));
    s.upsert_nad(nad("prod/green", GREEN_CONFIG, None));
    use Protocol::{Tcp, Udp};
    let pods = [
        pod(
            "prod/server",
            &[("app", "server"), ("tier", "back")],
            &[
                ("http", Tcp, 8080),
                ("metrics", Tcp, 9090),
                ("dns", Udp, 5353),
            ],
            &[
                ("prod/blue", &["192.0.2.10", "2001:db8:1::10"]),
                ("prod/green", &["198.51.100.10"]),
            ],
        ),
        pod(
            "prod/client",
            &[("app", "client")],
            &[],
            &[
                ("prod/blue", &["192.0.2.11", "2001:db8:1::11"]),
                ("prod/green", &["198.51.100.11"]),
            ],
        ),
        pod(
            "prod/other",
            &[("app", "other")],
            &[],
            &[("prod/blue", &["192.0.2.12"])],
        ),
        pod(
            "prod/canary",
            &[("app", "client"), ("track", "canary")],
            &[],
            &[("prod/blue", &["192.0.2.13"])],
        ),
        pod(
            "prod/web",
            &[("app", "web")],
            &[("http", Tcp, 8000)],
            &[
                ("prod/blue", &["192.0.2.14"]),
                ("prod/green", &["198.51.100.14"]),
            ],
        ),
        pod(
            "prod/greenonly",
            &[("app", "client")],
            &[],
            &[("prod/green", &["198.51.100.15"])],
        ),
        pod(
            "dev/client",
            &[("app", "client")],
            &[],
            &[("prod/blue", &["192.0.2.21"])],
        ),
        pod(
            "dev/web",
            &[("app", "web")],
            &[("http", Tcp, 80)],
            &[("prod/blue", &["192.0.2.22"])],
        ),
        pod(
            "ops/monitor",
            &[("app", "monitor")],
            &[],
            &[("prod/blue", &["192.0.2.31"])],
        ),
    ];
    for p in pods {
        s.upsert_pod(p);
    }
    for (p, n) in [
        ("prod/server", "prod/blue"),
        ("prod/server", "prod/green"),
        ("prod/client", "prod/blue"),
    ] {
        let l = local(&s, p, n);
        s.add_local(l);
    }
    s
}
