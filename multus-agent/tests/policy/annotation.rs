//! The NAD policy annotation: valid documents in JSON and YAML (short forms, object forms,
//! isolate, anti-spoofing, audit) and a table of invalid ones with their exact messages.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::IpAddr;

use ipnet::IpNet;
use multus_agent::{
    dataplane::{
        Action, AntiSpoof, DirectionPolicy, ObjectKind, Origin, Peer, Policy, PortMatch, PortRange,
        Protocol, Rule,
    },
    policy::{LocalAttachment, NadPolicy, ObjectKey},
};

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn parse(doc: &str) -> NadPolicy {
    NadPolicy::parse(doc, None).unwrap_or_else(|e| panic!("{doc}: {e}"))
}

/// A place in the annotation of a NAD not named yet (`policy_for` names it).
fn at(path: &str) -> Origin {
    Origin {
        kind: ObjectKind::NetworkAttachmentDefinition,
        namespace: String::new(),
        name: String::new(),
        path: path.to_owned(),
    }
}

/// Default deny, by the annotation.
fn closed(rules: Vec<Rule>) -> DirectionPolicy {
    DirectionPolicy {
        default_from: vec![at("")],
        ..DirectionPolicy::deny_by_default(rules)
    }
}

fn tcp(p: u16) -> PortMatch {
    PortMatch {
        protocol: Protocol::Tcp,
        ports: Some(PortRange::single(p)),
    }
}

const HOST_LOCAL: &str = r#"{"cniVersion":"1.0.0","name":"blue","type":"macvlan","master":"eth1",
    "ipam":{"type":"host-local","ranges":[[{"subnet":"192.0.2.0/24"}],[{"subnet":"2001:db8:1::/64"}]]}}"#;

#[test]
fn yaml_with_short_forms() {
    let policy = parse(
        "
ingress:
  allow:
    - from: 192.0.2.0/24
      ports: [tcp/80, udp/5000-5100, icmp]
    - from: [198.51.100.7, 2001:db8::/64]
  deny:
    - from: { cidr: 192.0.2.0/24, except: 192.0.2.8/29 }
      ports: tcp/22
egress:
  deny:
    - to: 203.0.113.0/24
    - ports: arp
audit: true
",
    );
    assert_eq!(
        policy.ingress,
        DirectionPolicy {
            default: Action::Deny,
            rules: vec![
                Rule {
                    action: Action::Allow,
                    peers: vec![net("192.0.2.0/24").into()],
                    ports: vec![
                        tcp(80),
                        PortMatch {
                            protocol: Protocol::Udp,
                            ports: Some(PortRange::new(5000, 5100)),
                        },
                        PortMatch {
                            protocol: Protocol::Icmp,
                            ports: None,
                        },
                    ],
                    origins: vec![at("ingress.allow[0]")],
                },
                Rule {
                    action: Action::Allow,
                    peers: vec![net("198.51.100.7/32").into(), net("2001:db8::/64").into()],
                    ports: vec![],
                    origins: vec![at("ingress.allow[1]")],
                },
                Rule {
                    action: Action::Deny,
                    peers: vec![Peer {
                        cidr: net("192.0.2.0/24"),
                        except: vec![net("192.0.2.8/29")],
                    }],
                    ports: vec![tcp(22)],
                    origins: vec![at("ingress.deny[0]")],
                },
            ],
            default_from: vec![at("")],
        },
        "a direction with allow rules denies the rest"
    );
    assert_eq!(
        policy.egress,
        DirectionPolicy::allow_by_default(vec![
            Rule::deny()
                .peer(net("203.0.113.0/24"))
                .from(at("egress.deny[0]")),
            Rule::deny()
                .protocol(Protocol::Arp)
                .from(at("egress.deny[1]")),
        ])
    );
    assert!(policy.audit);
    assert!(!policy.anti_spoof);
    assert_eq!(policy.isolated_to, None);
}

#[test]
fn json_with_object_forms_equals_the_yaml() {
    let json = parse(
        r#"{"ingress": {"default": "deny",
             "allow": [{"from": [{"cidr": "192.0.2.0/24"}],
                        "ports": [{"protocol": "TCP", "port": 80},
                                  {"protocol": "udp", "port": 5000, "endPort": 5100}]}]},
            "egress": {"default": "deny"},
            "antiSpoof": true}"#,
    );
    let yaml = parse(
        "
ingress:
  allow:
    - from: 192.0.2.0/24
      ports: [TCP/80, udp/5000-5100]
egress:
  default: deny
antiSpoof: true
",
    );
    assert_eq!(json, yaml);
    assert_eq!(json.egress, closed(vec![]));
}

#[test]
fn an_empty_document_allows_everything_and_defaults_can_be_explicit() {
    let open = parse("{}");
    assert_eq!(open.ingress, DirectionPolicy::default());
    assert_eq!(open.egress, DirectionPolicy::default());
    let closed = parse("ingress: {default: deny}\negress: {default: deny, deny: [{ports: arp}]}");
    assert_eq!(closed.ingress, self::closed(vec![]));
    assert_eq!(
        closed.egress,
        self::closed(vec![
            Rule::deny()
                .protocol(Protocol::Arp)
                .from(at("egress.deny[0]"))
        ])
    );
}

#[test]
fn isolate_denies_everything_outside_the_networks_subnets() {
    let policy = NadPolicy::parse("isolate: true", Some(HOST_LOCAL)).unwrap();
    assert_eq!(
        policy.isolated_to,
        Some(vec![net("192.0.2.0/24"), net("2001:db8:1::/64")])
    );
    let rule = Rule {
        action: Action::Deny,
        peers: vec![
            Peer {
                cidr: net("0.0.0.0/0"),
                // Link-local multicast (IGMP, VRRP) stays on the segment; 169.254.0.0/16 is
                // not let out (a metadata service may answer there).
                except: vec![net("192.0.2.0/24"), net("224.0.0.0/24")],
            },
            Peer {
                cidr: net("::/0"),
                except: vec![net("2001:db8:1::/64"), net("fe80::/10"), net("ff02::/16")],
            },
        ],
        ports: vec![],
        origins: vec![at("isolate")],
    };
    assert_eq!(
        policy.ingress,
        DirectionPolicy::allow_by_default(vec![rule.clone()])
    );
    assert_eq!(policy.egress, DirectionPolicy::allow_by_default(vec![rule]));

    // With rules of its own: isolation still denies outside, the rules work inside.
    let both = NadPolicy::parse(
        "isolate: true\ningress: {allow: [{ports: tcp/443}]}",
        Some(HOST_LOCAL),
    )
    .unwrap();
    assert_eq!(both.ingress.default, Action::Deny);
    assert_eq!(both.ingress.rules.len(), 2);

    // Static addresses and whereabouts ranges count as subnets too.
    let static_ipam = r#"{"type":"macvlan","ipam":{"type":"static","addresses":[{"address":"198.51.100.5/25"}]}}"#;
    assert_eq!(
        NadPolicy::parse("isolate: true", Some(static_ipam))
            .unwrap()
            .isolated_to,
        Some(vec![net("198.51.100.0/25")])
    );
}

#[test]
fn anti_spoofing_uses_the_attachments_own_addresses() {
    let policy = parse(r#"{"antiSpoof": true}"#);
    let local = LocalAttachment {
        pod: ObjectKey::new("prod", "web"),
        interface: "net1".into(),
        network: ObjectKey::new("prod", "blue"),
        ips: vec![
            "192.0.2.10".parse::<IpAddr>().unwrap(),
            "fe80::1".parse().unwrap(),
        ],
        mac: "02:00:00:00:00:0a".parse().unwrap(),
    };
    assert_eq!(
        policy.policy_for(&local),
        Policy {
            anti_spoof: Some(AntiSpoof {
                mac: local.mac,
                ips: local.ips.clone(),
                router: false,
            }),
            ..Policy::default()
        }
    );
    assert_eq!(parse("{}").policy_for(&local), Policy::default());
}

#[test]
fn rules_and_defaults_name_the_nad_and_where_they_were_written() {
    let policy = NadPolicy::parse(
        "isolate: true\ningress: {allow: [{ports: tcp/443}], deny: [{from: 192.0.2.9}]}",
        Some(HOST_LOCAL),
    )
    .unwrap();
    let local = LocalAttachment {
        pod: ObjectKey::new("prod", "web"),
        interface: "net1".into(),
        network: ObjectKey::new("infra", "storage"),
        ips: vec![],
        mac: "02:00:00:00:00:0a".parse().unwrap(),
    };
    let ingress = policy.policy_for(&local).ingress;
    let texts: Vec<String> = ingress
        .rules
        .iter()
        .flat_map(|r| &r.origins)
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        texts,
        [
            "NetworkAttachmentDefinition infra/storage: ingress.allow[0]",
            "NetworkAttachmentDefinition infra/storage: ingress.deny[0]",
            "NetworkAttachmentDefinition infra/storage: isolate",
        ]
    );
    assert_eq!(
        ingress
            .default_from
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["NetworkAttachmentDefinition infra/storage"]
    );
}

#[test]
fn invalid_documents_name_the_field() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"ingress":{"allow":[{},{},{"ports":["tcp/70000"]}]}}"#,
            "ingress.allow[2].ports[0]: port 70000 out of range (1-65535)",
        ),
        (
            r#"{"ingress":{"allow":[{"ports":"tcp/0"}]}}"#,
            "ingress.allow[0].ports: port 0 out of range (1-65535)",
        ),
        (
            r#"{"ingress":{"allow":[{"ports":["udp/5100-5000"]}]}}"#,
            "ingress.allow[0].ports[0]: port range 5100-5000 is empty",
        ),
        (
            r#"{"ingress":{"allow":[{"ports":["tcp/http"]}]}}"#,
            r#"ingress.allow[0].ports[0]: "http" is not a port number"#,
        ),
        (
            r#"{"ingress":{"allow":[{"ports":["icmp/8"]}]}}"#,
            "ingress.allow[0].ports[0]: icmp has no ports",
        ),
        (
            r#"{"ingress":{"allow":[{"ports":["gre"]}]}}"#,
            r#"ingress.allow[0].ports[0]: unknown protocol "gre" (expected tcp, udp, sctp, icmp, icmpv6, arp or any)"#,
        ),
        (
            r#"{"ingress":{"allow":[{"ports":[80]}]}}"#,
            "ingress.allow[0].ports[0]: a port needs its protocol: write tcp/80 or udp/80",
        ),
        (
            r#"{"ingress":{"allow":[{"ports":"80"}]}}"#,
            "ingress.allow[0].ports: a port needs its protocol: write tcp/80 or udp/80",
        ),
        (
            r#"{"ingress":{"allow":[{"ports":[{"protocol":"tcp","endPort":90}]}]}}"#,
            "ingress.allow[0].ports[0]: endPort needs port",
        ),
        (
            r#"{"ingress":{"allow":[{"ports":[{"protocol":"tcp","port":80,"end":90}]}]}}"#,
            "ingress.allow[0].ports[0].end: unknown field `end`, expected one of `protocol`, `port`, `endPort`",
        ),
        (
            r#"{"ingress":{"allow":[{"from":"192.0.2.300/24"}]}}"#,
            r#"ingress.allow[0].from: "192.0.2.300/24" is neither an address nor a CIDR"#,
        ),
        (
            r#"{"ingress":{"allow":[{"from":["192.0.2.1/24"]}]}}"#,
            "ingress.allow[0].from[0]: 192.0.2.1/24 has host bits set (the network is 192.0.2.0/24)",
        ),
        (
            r#"{"ingress":{"deny":[{"from":{"cidr":"192.0.2.0/24","except":["10.0.0.0/8"]}}]}}"#,
            "ingress.deny[0].from: except 10.0.0.0/8 is not inside 192.0.2.0/24",
        ),
        (
            r#"{"ingress":{"deny":[{"to":"192.0.2.0/24"}]}}"#,
            "ingress.deny[0].to: unknown field `to`, expected `from` or `ports`",
        ),
        (
            r#"{"egress":{"allow":[{"from":"192.0.2.0/24"}]}}"#,
            "egress.allow[0].from: unknown field `from`, expected `to` or `ports`",
        ),
        (
            r#"{"ingress":{"default":"drop"}}"#,
            "ingress.default: unknown variant `drop`, expected `allow` or `deny`",
        ),
        (
            r#"{"ingress":{"default":"allow","allow":[{"ports":"tcp/80"}]}}"#,
            "ingress.allow: allow rules have no effect under `default: allow` (a direction \
             with allow rules denies everything else unless it says otherwise)",
        ),
        (
            r#"{"ingres":{}}"#,
            "ingres: unknown field `ingres`, expected one of `ingress`, `egress`, `isolate`, `antiSpoof`, `audit`",
        ),
        (
            r#"{"audit":"yes"}"#,
            r#"audit: invalid type: string "yes", expected a boolean"#,
        ),
        (
            r#"{"isolate":true}"#,
            "isolate: the network's CNI config names no subnet (looked for host-local ranges \
             and subnet, static addresses, whereabouts range and ipRanges)",
        ),
        ("  ", "empty policy document"),
        (
            r#"{"ingress": "#,
            "ingress: EOF while parsing a value at line 1 column 11",
        ),
        // YAML messages keep their position: a YAML document is usually several lines long.
        (
            "ingress:\n  allow:\n    - ports: [tcp/80, udp/99999]\n",
            "ingress.allow[0].ports[1]: port 99999 out of range (1-65535) at line 3 column 23",
        ),
        (
            "egress:\n  deny:\n    - to: {cidr: 203.0.113.0/24, expect: 203.0.113.0/25}\n",
            "egress.deny[0].to.expect: unknown field `expect`, expected `cidr` or `except` at line 3 column 34",
        ),
    ];
    for (doc, want) in cases {
        let err = NadPolicy::parse(doc, None).expect_err(doc);
        assert_eq!(err.to_string(), *want, "document: {doc}");
    }
}

#[test]
fn isolate_explains_an_unreadable_config() {
    let err = NadPolicy::parse(
        "isolate: true",
        Some(r#"{"ipam":{"type":"host-local","subnet":"192.0.2.0/33"}}"#),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"isolate: ipam.subnet: "192.0.2.0/33" is not a CIDR"#
    );
    let dhcp = NadPolicy::parse("isolate: true", Some(r#"{"ipam":{"type":"dhcp"}}"#)).unwrap_err();
    assert!(
        dhcp.message
            .starts_with("the network's CNI config names no subnet")
    );
}

/// Every YAML and JSON example in docs/policy.md that is a policy document (or a NAD carrying
/// one) parses.
#[test]
fn the_documented_examples_parse() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/policy.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line) {
            (None, "```yaml" | "```json") => current = Some(String::new()),
            (Some(text), "```") => {
                blocks.push(std::mem::take(text));
                current = None;
            }
            (Some(text), _) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, _) => {}
        }
    }
    let mut parsed = 0;
    for block in &blocks {
        if block.contains("kind: NetworkAttachmentDefinition") {
            let nad: serde_yaml::Value = serde_yaml::from_str(block).unwrap();
            let text = nad["metadata"]["annotations"][multus_agent::policy::NAD_POLICY_ANNOTATION]
                .as_str()
                .unwrap();
            let config = nad["spec"]["config"].as_str();
            NadPolicy::parse(text, config).unwrap_or_else(|e| panic!("{block}: {e}"));
        } else {
            NadPolicy::parse(block, None).unwrap_or_else(|e| panic!("{block}: {e}"));
        }
        parsed += 1;
    }
    assert!(parsed >= 5, "{parsed} examples");
}
