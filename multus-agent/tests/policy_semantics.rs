//! The compiler against NetworkPolicy semantics: a table of policies, peers and packets. Each
//! case compiles the attachment's policy from the fixture cluster plus the case's objects and
//! judges the packet with the reference evaluator (docs/dataplane.md's semantics); every
//! compiled policy must also be one the dataplane can install.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod policy_fixture;

use multus_agent::{
    dataplane::{self, Action},
    policy::{
        AttachmentKey, compile,
        eval::{Direction, Packet, Traffic, verdict},
    },
};
use multus_kube::crd::v1beta2::MultiNetworkPolicy;
use policy_fixture::{BLUE_CONFIG, fixture, ip, key, mnp, nad};

use Action::{Allow, Deny};
use Direction::{Egress as OUT, Ingress as IN};
use Traffic::{Arp, Icmp, NeighbourDiscovery, Sctp, Tcp, Udp};

// Addresses of the fixture's pods on the blue network.
const SERVER: &str = "192.0.2.10";
const CLIENT: &str = "192.0.2.11";
const OTHER: &str = "192.0.2.12";
const CANARY: &str = "192.0.2.13";
const PROD_WEB: &str = "192.0.2.14";
const DEV_CLIENT: &str = "192.0.2.21";
const DEV_WEB: &str = "192.0.2.22";
const MONITOR: &str = "192.0.2.31";
const CLIENT6: &str = "2001:db8:1::11";
const CLIENT_GREEN: &str = "198.51.100.11";
const GREEN_ONLY: &str = "198.51.100.15";
const OUTSIDE: &str = "203.0.113.5";

/// One policy set, one attachment, and packets with their expected verdicts.
struct Case {
    name: &'static str,
    policies: Vec<MultiNetworkPolicy>,
    nad_policy: Option<&'static str>,
    attachment: (&'static str, &'static str),
    checks: Vec<(Direction, &'static str, Traffic, Action)>,
}

fn case(name: &'static str) -> Case {
    Case {
        name,
        policies: Vec::new(),
        nad_policy: None,
        attachment: ("prod/server", "net1"),
        checks: Vec::new(),
    }
}

impl Case {
    /// A policy in `prod` for the blue network.
    fn blue(self, spec: &str) -> Self {
        let name = format!("prod/p{}", self.policies.len());
        self.policy(&name, Some("blue"), spec)
    }

    fn policy(mut self, name: &str, policy_for: Option<&str>, spec: &str) -> Self {
        self.policies.push(mnp(name, policy_for, spec));
        self
    }

    fn nad(mut self, policy: &'static str) -> Self {
        self.nad_policy = Some(policy);
        self
    }

    fn on(mut self, pod: &'static str, interface: &'static str) -> Self {
        self.attachment = (pod, interface);
        self
    }

    fn check(mut self, dir: Direction, peer: &'static str, t: Traffic, want: Action) -> Self {
        self.checks.push((dir, peer, t, want));
        self
    }
}

const SERVER_FROM_CLIENTS: &str = "{podSelector: {matchLabels: {app: server}},
    ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]}";

fn cases() -> Vec<Case> {
    vec![
        case("no policy: everything passes")
            .check(IN, OTHER, Tcp(80), Allow)
            .check(OUT, OUTSIDE, Udp(53), Allow),
        case("podSelector peer: selected pods pass, others are denied")
            .blue(SERVER_FROM_CLIENTS)
            .check(IN, CLIENT, Tcp(80), Allow)
            .check(IN, CANARY, Udp(9), Allow)
            .check(IN, OTHER, Tcp(80), Deny)
            .check(IN, OUTSIDE, Tcp(80), Deny),
        case("a podSelector without namespaceSelector means the policy's namespace only")
            .blue(SERVER_FROM_CLIENTS)
            .check(IN, DEV_CLIENT, Tcp(80), Deny),
        case("an ingress policy leaves egress alone")
            .blue(SERVER_FROM_CLIENTS)
            .check(OUT, OTHER, Tcp(80), Allow),
        case("no ports: every protocol, ICMP included")
            .blue(SERVER_FROM_CLIENTS)
            .check(IN, CLIENT, Icmp, Allow),
        case("ARP and neighbour discovery pass a default deny")
            .blue("{podSelector: {}, policyTypes: [Ingress, Egress]}")
            .check(IN, OTHER, Arp, Allow)
            .check(IN, "fe80::12", NeighbourDiscovery, Allow)
            .check(OUT, OTHER, Arp, Allow)
            .check(IN, OTHER, Icmp, Deny),
        case("an empty podSelector selects every pod of the namespace")
            .blue("{podSelector: {}, ingress: []}")
            .check(IN, CLIENT, Tcp(80), Deny),
        case("a policy selecting other pods does not apply")
            .blue("{podSelector: {matchLabels: {app: client}}, ingress: []}")
            .check(IN, OTHER, Tcp(80), Allow),
        case("a policy in another namespace does not select our pod")
            .policy("dev/deny", Some("prod/blue"), "{podSelector: {}, ingress: []}")
            .check(IN, OTHER, Tcp(80), Allow),
        case("empty from: every source, on the listed ports")
            .blue("{podSelector: {}, ingress: [{ports: [{port: 8080}]}]}")
            .check(IN, MONITOR, Tcp(8080), Allow)
            .check(IN, OUTSIDE, Tcp(8080), Allow)
            .check(IN, MONITOR, Tcp(8081), Deny)
            .check(IN, MONITOR, Udp(8080), Deny),
        case("an empty rule allows everything")
            .blue("{podSelector: {}, ingress: [{}]}")
            .check(IN, OUTSIDE, Udp(53), Allow),
        case("policyTypes [Ingress] without rules denies all ingress")
            .blue("{podSelector: {}, policyTypes: [Ingress]}")
            .check(IN, CLIENT, Tcp(80), Deny)
            .check(OUT, CLIENT, Tcp(80), Allow),
        case("no policyTypes: Ingress always, Egress because there are egress rules")
            .blue("{podSelector: {}, egress: [{to: [{podSelector: {matchLabels: {app: client}}}]}]}")
            .check(OUT, CLIENT, Tcp(80), Allow)
            .check(OUT, OTHER, Tcp(80), Deny)
            .check(IN, OTHER, Tcp(80), Deny),
        case("an egress-only policy leaves ingress open")
            .blue(
                "{podSelector: {}, policyTypes: [Egress],
                  egress: [{to: [{podSelector: {matchLabels: {app: client}}}]}]}",
            )
            .check(IN, OTHER, Tcp(80), Allow)
            .check(OUT, CLIENT, Tcp(80), Allow)
            .check(OUT, CLIENT6, Tcp(80), Allow)
            .check(OUT, OTHER, Tcp(80), Deny)
            .check(OUT, OUTSIDE, Udp(53), Deny),
        case("ingress rules are ignored when policyTypes says Egress only")
            .blue("{podSelector: {}, policyTypes: [Egress], ingress: [{from: [{ipBlock: {cidr: 203.0.113.0/24}}]}]}")
            .check(IN, OTHER, Tcp(80), Allow),
        case("the rules of a policy are a union; a rule's peers and ports both must match")
            .blue(
                "{podSelector: {},
                  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 8080}]},
                            {from: [{ipBlock: {cidr: 203.0.113.0/24}}]}]}",
            )
            .check(IN, CLIENT, Tcp(8080), Allow)
            .check(IN, CLIENT, Tcp(22), Deny)
            .check(IN, OUTSIDE, Tcp(22), Allow)
            .check(IN, OTHER, Tcp(8080), Deny),
        case("several policies: the union of what each allows")
            .blue(SERVER_FROM_CLIENTS)
            .blue("{podSelector: {matchLabels: {tier: back}}, ingress: [{from: [{podSelector: {matchLabels: {app: other}}}]}]}")
            .check(IN, OTHER, Tcp(80), Allow)
            .check(IN, CANARY, Tcp(80), Allow)
            .check(IN, MONITOR, Tcp(80), Deny),
        case("one egress policy and one ingress policy: each direction by its own")
            .blue(SERVER_FROM_CLIENTS)
            .blue("{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{protocol: UDP, port: 53}]}]}")
            .check(IN, CLIENT, Tcp(80), Allow)
            .check(OUT, OUTSIDE, Udp(53), Allow)
            .check(OUT, CLIENT, Tcp(80), Deny),
        case("a namespaceSelector-only peer: every pod of the matching namespaces")
            .blue("{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {team: b}}}]}]}")
            .check(IN, DEV_CLIENT, Tcp(80), Allow)
            .check(IN, DEV_WEB, Tcp(80), Allow)
            .check(IN, CLIENT, Tcp(80), Deny),
        case("podSelector and namespaceSelector in one peer: both must match")
            .blue(
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {env: dev}},
                  podSelector: {matchLabels: {app: web}}}]}]}",
            )
            .check(IN, DEV_WEB, Tcp(80), Allow)
            .check(IN, DEV_CLIENT, Tcp(80), Deny)
            .check(IN, PROD_WEB, Tcp(80), Deny),
        case("an empty namespaceSelector means every namespace")
            .blue(
                "{podSelector: {}, ingress: [{from: [{namespaceSelector: {},
                  podSelector: {matchLabels: {app: client}}}]}]}",
            )
            .check(IN, DEV_CLIENT, Tcp(80), Allow)
            .check(IN, CLIENT, Tcp(80), Allow)
            .check(IN, MONITOR, Tcp(80), Deny),
        case("namespaces match by their name label")
            .blue("{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ops}}}]}]}")
            .check(IN, MONITOR, Tcp(80), Allow)
            .check(IN, DEV_CLIENT, Tcp(80), Deny),
        case("matchExpressions NotIn: pods without the value, or without the label")
            .blue("{podSelector: {}, ingress: [{from: [{podSelector: {matchExpressions: [{key: app, operator: NotIn, values: [client]}]}}]}]}")
            .check(IN, OTHER, Tcp(80), Allow)
            .check(IN, PROD_WEB, Tcp(80), Allow)
            .check(IN, CLIENT, Tcp(80), Deny)
            .check(IN, CANARY, Tcp(80), Deny),
        case("matchExpressions Exists")
            .blue("{podSelector: {}, ingress: [{from: [{podSelector: {matchExpressions: [{key: track, operator: Exists}]}}]}]}")
            .check(IN, CANARY, Tcp(80), Allow)
            .check(IN, CLIENT, Tcp(80), Deny),
        case("matchExpressions DoesNotExist on namespaces")
            .blue("{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: team, operator: DoesNotExist}]}}]}]}")
            .check(IN, MONITOR, Tcp(80), Allow)
            .check(IN, DEV_CLIENT, Tcp(80), Deny)
            .check(IN, CLIENT, Tcp(80), Deny),
        case("matchLabels AND matchExpressions In")
            .blue(
                "{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: client},
                  matchExpressions: [{key: track, operator: In, values: [canary, beta]}]}}]}]}",
            )
            .check(IN, CANARY, Tcp(80), Allow)
            .check(IN, CLIENT, Tcp(80), Deny),
        case("the policy's own podSelector with matchExpressions")
            .blue("{podSelector: {matchExpressions: [{key: tier, operator: In, values: [back]}]}, ingress: []}")
            .check(IN, CLIENT, Tcp(80), Deny),
        case("ipBlock with except")
            .blue("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.0/28]}}]}]}")
            .check(IN, MONITOR, Tcp(80), Allow)
            .check(IN, CLIENT, Tcp(80), Deny)
            .check(IN, OUTSIDE, Tcp(80), Deny),
        case("IPv6 peers: pod addresses and ipBlocks")
            .blue(SERVER_FROM_CLIENTS)
            .blue("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: \"2001:db8:2::/64\", except: [\"2001:db8:2::/120\"]}}]}]}")
            .check(IN, CLIENT6, Tcp(80), Allow)
            .check(IN, "2001:db8:1::12", Tcp(80), Deny)
            .check(IN, "2001:db8:2::1:5", Tcp(80), Allow)
            .check(IN, "2001:db8:2::5", Tcp(80), Deny),
        case("a named port on ingress is the target pod's container port")
            .blue("{podSelector: {}, ingress: [{ports: [{port: http}]}]}")
            .check(IN, CLIENT, Tcp(8080), Allow)
            .check(IN, CLIENT, Tcp(80), Deny),
        case("a named port matches only with its protocol")
            .blue("{podSelector: {}, ingress: [{ports: [{port: dns}]}]}")
            .check(IN, CLIENT, Udp(5353), Deny)
            .check(IN, CLIENT, Tcp(5353), Deny),
        case("a named UDP port")
            .blue("{podSelector: {}, ingress: [{ports: [{protocol: UDP, port: dns}]}]}")
            .check(IN, CLIENT, Udp(5353), Allow),
        case("a named port the pod does not have matches nothing (not every port)")
            .blue("{podSelector: {}, ingress: [{ports: [{port: nosuch}]}]}")
            .check(IN, CLIENT, Tcp(8080), Deny),
        case("a named egress port resolves per peer pod")
            .on("prod/client", "net1")
            .blue(
                "{podSelector: {matchLabels: {app: client}}, policyTypes: [Egress],
                  egress: [{to: [{namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}],
                            ports: [{port: http}]}]}",
            )
            .check(OUT, DEV_WEB, Tcp(80), Allow)
            .check(OUT, DEV_WEB, Tcp(8000), Deny)
            .check(OUT, PROD_WEB, Tcp(8000), Allow)
            .check(OUT, PROD_WEB, Tcp(80), Deny)
            .check(OUT, SERVER, Tcp(8080), Deny),
        case("a named egress port with every destination: pods that have it")
            .on("prod/client", "net1")
            .blue("{podSelector: {}, policyTypes: [Egress], egress: [{ports: [{port: http}]}]}")
            .check(OUT, DEV_WEB, Tcp(80), Allow)
            .check(OUT, SERVER, Tcp(8080), Allow)
            .check(OUT, SERVER, Tcp(80), Deny)
            .check(OUT, OUTSIDE, Tcp(80), Deny),
        case("a named egress port to an ipBlock: pods inside it that have the port")
            .on("prod/client", "net1")
            .blue("{podSelector: {}, policyTypes: [Egress], egress: [{to: [{ipBlock: {cidr: 192.0.2.16/28}}], ports: [{port: http}, {port: 443}]}]}")
            .check(OUT, DEV_WEB, Tcp(80), Allow)
            .check(OUT, "192.0.2.17", Tcp(443), Allow)
            .check(OUT, "192.0.2.17", Tcp(80), Deny)
            .check(OUT, SERVER, Tcp(8080), Deny),
        case("endPort: a range")
            .blue("{podSelector: {}, ingress: [{ports: [{port: 8000, endPort: 8100}]}]}")
            .check(IN, CLIENT, Tcp(8000), Allow)
            .check(IN, CLIENT, Tcp(8100), Allow)
            .check(IN, CLIENT, Tcp(8101), Deny)
            .check(IN, CLIENT, Tcp(7999), Deny),
        case("a protocol without port: every port of it")
            .blue("{podSelector: {}, ingress: [{ports: [{protocol: UDP}, {protocol: SCTP, port: 3868}]}]}")
            .check(IN, CLIENT, Udp(9999), Allow)
            .check(IN, CLIENT, Sctp(3868), Allow)
            .check(IN, CLIENT, Sctp(3869), Deny)
            .check(IN, CLIENT, Tcp(9999), Deny)
            .check(IN, CLIENT, Icmp, Deny),
        case("peers count only with their addresses on the policy's networks")
            .blue(SERVER_FROM_CLIENTS)
            .check(IN, GREEN_ONLY, Tcp(80), Deny)
            .check(IN, CLIENT_GREEN, Tcp(80), Deny),
        // Isolated networks often reuse subnets: a peer's address on green says nothing about
        // who sends from it on blue.
        case("a policy for two networks: on each, peers by their address on that one")
            .policy(
                "prod/both",
                Some("blue,green"),
                "{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]}",
            )
            .check(IN, CLIENT, Tcp(80), Allow)
            .check(IN, GREEN_ONLY, Tcp(80), Deny)
            .check(IN, CLIENT_GREEN, Tcp(80), Deny)
            .check(IN, OTHER, Tcp(80), Deny),
        case("... and on the green attachment, green addresses only")
            .on("prod/server", "net2")
            .policy(
                "prod/both",
                Some("blue,green"),
                "{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]}",
            )
            .check(IN, GREEN_ONLY, Tcp(80), Allow)
            .check(IN, CLIENT_GREEN, Tcp(80), Allow)
            .check(IN, CLIENT, Tcp(80), Deny),
        case("a policy for another network does not apply")
            .policy("prod/green", Some("green"), "{podSelector: {}, ingress: []}")
            .check(IN, OTHER, Tcp(80), Allow),
        case("... but applies on that network's attachment")
            .on("prod/server", "net2")
            .policy("prod/green", Some("prod/green"), "{podSelector: {}, ingress: []}")
            .check(IN, CLIENT_GREEN, Tcp(80), Deny),
        case("policy-for naming a network of another namespace")
            .policy("prod/red", Some("dev/blue"), "{podSelector: {}, ingress: []}")
            .check(IN, OTHER, Tcp(80), Allow),
        case("a policy without policy-for is ignored")
            .policy("prod/unbound", None, "{podSelector: {}, ingress: []}")
            .check(IN, OTHER, Tcp(80), Allow),
        case("NAD policy and MultiNetworkPolicy: both must allow")
            .nad("ingress: {deny: [{from: 192.0.2.13}]}")
            .blue(SERVER_FROM_CLIENTS)
            .check(IN, CLIENT, Tcp(80), Allow)
            .check(IN, CANARY, Tcp(80), Deny)
            .check(IN, OTHER, Tcp(80), Deny),
        case("NAD isolate wins over a MultiNetworkPolicy allowing the world")
            .nad("isolate: true")
            .blue("{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0}}]}]}")
            .check(IN, OUTSIDE, Tcp(80), Deny)
            .check(IN, OTHER, Tcp(80), Allow)
            .check(IN, "2001:db8:9::1", Tcp(80), Deny),
        case("NAD allow rules and MultiNetworkPolicy allow rules intersect")
            .nad("ingress: {allow: [{ports: [tcp/8000-8999]}]}")
            .blue("{podSelector: {}, ingress: [{from: [{podSelector: {matchLabels: {app: client}}}], ports: [{port: 8080}, {port: 22}]}]}")
            .check(IN, CLIENT, Tcp(8080), Allow)
            .check(IN, CLIENT, Tcp(22), Deny)
            .check(IN, OTHER, Tcp(8080), Deny),
    ]
}

#[test]
fn the_compiler_follows_networkpolicy_semantics() {
    let mut checked = 0;
    for case in cases() {
        let mut snapshot = fixture();
        if let Some(doc) = case.nad_policy {
            snapshot.upsert_nad(nad("prod/blue", BLUE_CONFIG, Some(doc)));
        }
        for p in &case.policies {
            let update = snapshot.upsert_mnp(p);
            assert_eq!(update.invalid, None, "{}", case.name);
        }
        let attachment = AttachmentKey {
            pod: key(case.attachment.0),
            interface: case.attachment.1.to_owned(),
        };
        let compiled =
            compile(&snapshot, &attachment).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        if let Some(c) = &compiled {
            dataplane::trie::build(&c.policy)
                .unwrap_or_else(|e| panic!("{}: not installable: {e}", case.name));
        }
        for (direction, peer, traffic, want) in &case.checks {
            let packet = Packet {
                direction: *direction,
                peer: ip(peer),
                traffic: *traffic,
            };
            let got = compiled
                .as_ref()
                .map_or(Allow, |c| verdict(&c.policy, &packet));
            assert_eq!(
                got, *want,
                "{}: {packet:?}\ncompiled: {compiled:#?}",
                case.name
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked} checks");
}

#[test]
fn the_source_names_what_contributed() {
    let mut snapshot = fixture();
    let server = AttachmentKey {
        pod: key("prod/server"),
        interface: "net1".into(),
    };
    assert_eq!(
        compile(&snapshot, &server).unwrap(),
        None,
        "nothing applies"
    );
    snapshot.upsert_nad(nad("prod/blue", BLUE_CONFIG, Some("audit: true")));
    let c = compile(&snapshot, &server).unwrap().unwrap();
    assert_eq!(
        (c.source.kind(), c.source.to_string().as_str()),
        ("nad", "nad:prod/blue")
    );
    assert!(c.policy.audit);
    snapshot.upsert_mnp(&mnp("prod/a", Some("blue"), SERVER_FROM_CLIENTS));
    snapshot.upsert_mnp(&mnp(
        "prod/b",
        Some("blue"),
        "{podSelector: {}, policyTypes: [Egress]}",
    ));
    snapshot.upsert_mnp(&mnp("prod/c", Some("green"), "{podSelector: {}}"));
    let c = compile(&snapshot, &server).unwrap().unwrap();
    assert_eq!(c.source.to_string(), "nad:prod/blue+mnp:prod/a,prod/b");
    assert_eq!(c.source.kind(), "nad+mnp");
    assert!(c.policy.audit, "audit comes from the NAD");
    let client = AttachmentKey {
        pod: key("prod/client"),
        interface: "net1".into(),
    };
    let c = compile(&snapshot, &client).unwrap().unwrap();
    assert_eq!(c.source.to_string(), "nad:prod/blue+mnp:prod/b");
}

#[test]
fn compiling_is_deterministic() {
    // The same objects inserted in another order compile to an equal policy.
    let policies = [
        mnp("prod/a", Some("blue"), SERVER_FROM_CLIENTS),
        mnp(
            "prod/b",
            Some("blue"),
            "{podSelector: {}, ingress: [{from: [{namespaceSelector: {}}], ports: [{port: http}, {port: 22}]}]}",
        ),
    ];
    let server = AttachmentKey {
        pod: key("prod/server"),
        interface: "net1".into(),
    };
    let mut one = fixture();
    let mut two = fixture();
    for p in &policies {
        one.upsert_mnp(p);
    }
    for p in policies.iter().rev() {
        two.upsert_mnp(p);
    }
    assert_eq!(
        compile(&one, &server).unwrap(),
        compile(&two, &server).unwrap()
    );
}
