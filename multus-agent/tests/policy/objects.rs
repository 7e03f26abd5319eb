//! Invalid policy objects: MultiNetworkPolicies and NAD annotations are reported with the
//! object and the field, block exactly the attachments they (may) apply to, and v1beta1
//! objects read like v1beta2 ones.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::policy_fixture;

use multus_agent::policy::{AttachmentKey, CompileError, MnpEntry, ObjectError, compile};
use multus_kube::crd::v1beta1;
use policy_fixture::{GREEN_CONFIG, fixture, key, mnp, nad};

fn server() -> AttachmentKey {
    AttachmentKey {
        pod: key("prod/server"),
        interface: "net1".into(),
    }
}

#[test]
fn invalid_policies_name_the_object_and_the_field() {
    let cases: &[(Option<&str>, &str, &str)] = &[
        (
            Some("blue/x/y"),
            "{podSelector: {}}",
            r#"metadata.annotations[k8s.v1.cni.cncf.io/policy-for]: "blue/x/y" is neither <namespace>/<name> nor <name>"#,
        ),
        (
            Some("blue"),
            "{podSelector: {matchExpressions: [{key: app, operator: In}]}}",
            "spec.podSelector.matchExpressions[0].values: operator In needs at least one value",
        ),
        (
            Some("blue"),
            "{podSelector: {}, policyTypes: [Ingress, Outgress]}",
            r#"spec.policyTypes[1]: unknown policy type "Outgress" (expected Ingress or Egress)"#,
        ),
        (
            Some("blue"),
            "{podSelector: {}, ingress: [{}, {ports: [{port: 80}, {port: 70000}]}]}",
            "spec.ingress[1].ports[1].port: port 70000 out of range (1-65535)",
        ),
        (
            Some("blue"),
            "{podSelector: {}, ingress: [{ports: [{port: 90, endPort: 80}]}]}",
            "spec.ingress[0].ports[0].endPort: endPort 80 is below port 90",
        ),
        (
            Some("blue"),
            "{podSelector: {}, ingress: [{ports: [{port: http, endPort: 80}]}]}",
            r#"spec.ingress[0].ports[0].endPort: endPort needs a numeric port, not the named port "http""#,
        ),
        (
            Some("blue"),
            "{podSelector: {}, ingress: [{ports: [{endPort: 80}]}]}",
            "spec.ingress[0].ports[0].endPort: endPort needs a numeric port",
        ),
        (
            Some("blue"),
            "{podSelector: {}, ingress: [{ports: [{port: \"80\"}]}]}",
            r#"spec.ingress[0].ports[0].port: "80" is not a port name (1-15 lowercase letters, digits and single dashes, at least one letter; numbers go unquoted)"#,
        ),
        (
            Some("blue"),
            "{podSelector: {}, egress: [{ports: [{protocol: ICMP}]}]}",
            r#"spec.egress[0].ports[0].protocol: unknown protocol "ICMP" (expected TCP, UDP or SCTP)"#,
        ),
        (
            Some("blue"),
            "{podSelector: {}, egress: [{to: [{}]}]}",
            "spec.egress[0].to[0]: a peer needs podSelector, namespaceSelector or ipBlock",
        ),
        (
            Some("blue"),
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 192.0.2.0/24}, podSelector: {}}]}]}",
            "spec.ingress[0].from[0]: ipBlock cannot be combined with podSelector or namespaceSelector",
        ),
        (
            Some("blue"),
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 192.0.2.0/24, except: [198.51.100.0/24]}}]}]}",
            "spec.ingress[0].from[0].ipBlock.except[0]: 198.51.100.0/24 is not inside 192.0.2.0/24",
        ),
        (
            Some("blue"),
            "{podSelector: {}, ingress: [{from: [{ipBlock: {cidr: 192.0.2/24}}]}]}",
            r#"spec.ingress[0].from[0].ipBlock.cidr: "192.0.2/24" is not a CIDR"#,
        ),
        (
            Some("blue"),
            "{podSelector: {}, ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: team, operator: Has}]}}]}]}",
            r#"spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].operator: unknown operator "Has" (expected In, NotIn, Exists or DoesNotExist)"#,
        ),
        // Rules of a direction the policy does not cover are checked all the same.
        (
            Some("blue"),
            "{podSelector: {}, policyTypes: [Egress], ingress: [{ports: [{port: 0}]}]}",
            "spec.ingress[0].ports[0].port: port 0 out of range (1-65535)",
        ),
    ];
    for (policy_for, spec, field) in cases {
        let mut snapshot = fixture();
        let update = snapshot.upsert_mnp(&mnp("prod/bad", *policy_for, spec));
        let err = update.invalid.unwrap_or_else(|| panic!("accepted: {spec}"));
        assert_eq!(
            err.to_string(),
            format!("MultiNetworkPolicy prod/bad: {field}")
        );
        assert_eq!(err.object(), ("MultiNetworkPolicy", &key("prod/bad")));
        assert!(
            update.affected.contains(&server()),
            "{spec}: the server may be selected"
        );
        match compile(&snapshot, &server()) {
            Err(CompileError::InvalidObjects { errors, .. }) => assert_eq!(errors, vec![err]),
            other => panic!("{spec}: {other:?}"),
        }
    }
}

#[test]
fn an_invalid_policy_blocks_only_what_it_may_apply_to() {
    let mut snapshot = fixture();
    // Valid selector, invalid rules: only pods it selects are blocked.
    snapshot.upsert_mnp(&mnp(
        "prod/clients-only",
        Some("blue"),
        "{podSelector: {matchLabels: {app: client}}, ingress: [{ports: [{port: 0}]}]}",
    ));
    assert!(compile(&snapshot, &server()).unwrap().is_none());
    let client = AttachmentKey {
        pod: key("prod/client"),
        interface: "net1".into(),
    };
    assert!(matches!(
        compile(&snapshot, &client),
        Err(CompileError::InvalidObjects { .. })
    ));
    // For another network: the server's blue attachment is not concerned, its green one is.
    snapshot.remove_mnp(&key("prod/clients-only"));
    snapshot.upsert_mnp(&mnp(
        "prod/green-bad",
        Some("green"),
        "{podSelector: {}, egress: [{to: [{}]}]}",
    ));
    assert!(compile(&snapshot, &server()).unwrap().is_none());
    let green = AttachmentKey {
        pod: key("prod/server"),
        interface: "net2".into(),
    };
    let err = compile(&snapshot, &green).unwrap_err();
    assert_eq!(
        err.to_string(),
        "attachment prod/server:net2: MultiNetworkPolicy prod/green-bad: spec.egress[0].to[0]: \
         a peer needs podSelector, namespaceSelector or ipBlock"
    );
    // An unreadable selector may select anyone in the namespace.
    snapshot.upsert_mnp(&mnp(
        "prod/any",
        Some("blue"),
        "{podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}}",
    ));
    assert!(compile(&snapshot, &server()).is_err());
}

#[test]
fn an_invalid_nad_annotation_blocks_its_networks_attachments() {
    let mut snapshot = fixture();
    let update = snapshot.upsert_nad(nad(
        "prod/green",
        GREEN_CONFIG,
        Some("egress: {deny: [{to: 198.51.100.0/33}]}"),
    ));
    let err = update.invalid.clone().unwrap();
    assert_eq!(
        err.to_string(),
        "NetworkAttachmentDefinition prod/green: annotation multus-rs.io/policy: \
         egress.deny[0].to: \"198.51.100.0/33\" is neither an address nor a CIDR at line 1 column 22"
    );
    assert!(matches!(err, ObjectError::NadAnnotation { .. }));
    let green = AttachmentKey {
        pod: key("prod/server"),
        interface: "net2".into(),
    };
    assert_eq!(update.affected, [green.clone()].into());
    assert!(compile(&snapshot, &green).is_err());
    assert!(compile(&snapshot, &server()).unwrap().is_none());
    // Fixed: compiles again.
    let fixed = snapshot.upsert_nad(nad(
        "prod/green",
        GREEN_CONFIG,
        Some("egress: {deny: [{to: 198.51.100.0/25}]}"),
    ));
    assert_eq!(fixed.invalid, None);
    assert!(compile(&snapshot, &green).unwrap().is_some());
}

#[test]
fn v1beta1_objects_read_like_v1beta2() {
    let doc = "apiVersion: k8s.cni.cncf.io/v1beta1\nkind: MultiNetworkPolicy\n\
               metadata: {name: old, namespace: prod, annotations: {k8s.v1.cni.cncf.io/policy-for: blue}}\n\
               spec: {podSelector: {}, ingress: [{ports: [{port: 8000, endPort: 8100}]}]}\n";
    let old: v1beta1::MultiNetworkPolicy = serde_yaml::from_str(doc).unwrap();
    let entry = MnpEntry::parse_v1beta1(&old);
    let new = MnpEntry::parse(&mnp(
        "prod/old",
        Some("blue"),
        "{podSelector: {}, ingress: [{ports: [{port: 8000, endPort: 8100}]}]}",
    ));
    assert_eq!(entry, new);
    let mut snapshot = fixture();
    snapshot.upsert_mnp_entry(entry);
    let compiled = compile(&snapshot, &server()).unwrap().unwrap();
    assert_eq!(compiled.source.to_string(), "mnp:prod/old");
}
