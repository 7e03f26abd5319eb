//! The generated CRDs on a real API server: accepted, established, and objects of both
//! resources (MultiNetworkPolicy in both versions, with endPort) round-trip.
use k8s_openapi::{
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use multus_kube::crd::{
    IpBlock, MultiNetworkPolicyEgressRule, MultiNetworkPolicyIngressRule, MultiNetworkPolicyPeer,
    MultiNetworkPolicyPort, NetworkAttachmentDefinition, NetworkAttachmentDefinitionSpec, all_crds,
    v1beta1, v1beta2,
};
use multus_testkit::kube::crd_established;

use super::{admin, cluster};

#[test]
fn generated_crds_are_established() {
    let Some(cluster) = cluster("generated_crds_are_established") else {
        return;
    };
    for (_, want) in all_crds() {
        let name = want.metadata.name.clone().unwrap();
        let wanted = name.clone();
        let got: CustomResourceDefinition = admin(cluster, |c| async move {
            Api::<CustomResourceDefinition>::all(c)
                .get(&wanted)
                .await
                .unwrap()
        });
        assert!(
            crd_established(&serde_json::to_value(&got).unwrap()),
            "{name} not established: {:?}",
            got.status
        );
        let served: Vec<(String, bool, bool)> = got
            .spec
            .versions
            .iter()
            .map(|v| (v.name.clone(), v.served, v.storage))
            .collect();
        let expected: Vec<(String, bool, bool)> = want
            .spec
            .versions
            .iter()
            .map(|v| (v.name.clone(), v.served, v.storage))
            .collect();
        assert_eq!(served, expected);
        assert_eq!(got.spec.names.short_names, want.spec.names.short_names);
    }
}

#[test]
fn nad_round_trips_with_and_without_spec() {
    let Some(cluster) = cluster("nad_round_trips_with_and_without_spec") else {
        return;
    };
    let ns = cluster.namespace("crd");
    let config = r#"{"cniVersion":"1.0.0","type":"macvlan","master":"eth1","ipam":{"type":"host-local","subnet":"192.0.2.0/24"}}"#;
    let typed = NetworkAttachmentDefinition {
        metadata: ObjectMeta {
            name: Some("macvlan-conf".to_owned()),
            ..ObjectMeta::default()
        },
        spec: NetworkAttachmentDefinitionSpec {
            config: Some(config.to_owned()),
        },
    };
    let ns_name = ns.name().to_owned();
    let got = admin(cluster, |c| async move {
        let api = Api::<NetworkAttachmentDefinition>::namespaced(c, &ns_name);
        api.create(&PostParams::default(), &typed).await.unwrap();
        api.get("macvlan-conf").await.unwrap()
    });
    assert_eq!(got.spec.config.as_deref(), Some(config));

    // A spec-less NAD (config on disk) is accepted by the schema and read by the facade.
    super::create_nad(&ns, "on-disk", None, &serde_json::json!({}));
    let api = super::facade(cluster.admin_kubeconfig());
    let nad = api.get_nad(ns.name(), "on-disk").unwrap();
    assert_eq!(nad.config, None);
    assert_eq!(
        api.get_nad(ns.name(), "macvlan-conf")
            .unwrap()
            .config
            .as_deref(),
        Some(config)
    );
}

fn ingress_with_range() -> Vec<MultiNetworkPolicyIngressRule> {
    vec![MultiNetworkPolicyIngressRule {
        ports: Some(vec![
            MultiNetworkPolicyPort {
                protocol: Some("TCP".to_owned()),
                port: Some(IntOrString::Int(8000)),
                end_port: Some(8080),
            },
            MultiNetworkPolicyPort {
                protocol: Some("UDP".to_owned()),
                port: Some(IntOrString::String("dns".to_owned())),
                end_port: None,
            },
        ]),
        from: Some(vec![
            MultiNetworkPolicyPeer {
                ip_block: Some(IpBlock {
                    cidr: "198.51.100.0/24".to_owned(),
                    except: Some(vec!["198.51.100.128/25".to_owned()]),
                }),
                ..MultiNetworkPolicyPeer::default()
            },
            MultiNetworkPolicyPeer {
                pod_selector: Some(LabelSelector {
                    match_labels: Some([("app".to_owned(), "client".to_owned())].into()),
                    ..LabelSelector::default()
                }),
                namespace_selector: Some(LabelSelector::default()),
                ip_block: None,
            },
        ]),
    }]
}

fn egress() -> Vec<MultiNetworkPolicyEgressRule> {
    vec![MultiNetworkPolicyEgressRule {
        ports: None,
        to: Some(vec![MultiNetworkPolicyPeer {
            ip_block: Some(IpBlock {
                cidr: "2001:db8::/32".to_owned(),
                except: None,
            }),
            ..MultiNetworkPolicyPeer::default()
        }]),
    }]
}

#[test]
fn multi_network_policy_round_trips_in_both_versions() {
    let Some(cluster) = cluster("multi_network_policy_round_trips_in_both_versions") else {
        return;
    };
    let ns = cluster.namespace("mnp");
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        annotations: Some(
            [(
                multus_kube::crd::POLICY_FOR_ANNOTATION.to_owned(),
                "macvlan-conf".to_owned(),
            )]
            .into(),
        ),
        ..ObjectMeta::default()
    };
    let beta2 = v1beta2::MultiNetworkPolicy {
        metadata: meta("beta2"),
        spec: v1beta2::MultiNetworkPolicySpec {
            pod_selector: LabelSelector {
                match_labels: Some([("app".to_owned(), "demo".to_owned())].into()),
                ..LabelSelector::default()
            },
            ingress: Some(ingress_with_range()),
            egress: Some(egress()),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
        },
    };
    let beta1 = v1beta1::MultiNetworkPolicy {
        metadata: meta("beta1"),
        spec: v1beta1::MultiNetworkPolicySpec {
            pod_selector: LabelSelector::default(),
            ingress: Some(ingress_with_range()),
            egress: None,
            policy_types: Some(vec!["Ingress".to_owned()]),
        },
    };
    let ns_name = ns.name().to_owned();
    let (got2, got1, beta1_as_2) = {
        let (b1, b2) = (beta1.clone(), beta2.clone());
        admin(cluster, |c| async move {
            let api2 = Api::<v1beta2::MultiNetworkPolicy>::namespaced(c.clone(), &ns_name);
            let api1 = Api::<v1beta1::MultiNetworkPolicy>::namespaced(c, &ns_name);
            api2.create(&PostParams::default(), &b2).await.unwrap();
            api1.create(&PostParams::default(), &b1).await.unwrap();
            (
                api2.get("beta2").await.unwrap(),
                api1.get("beta1").await.unwrap(),
                api2.get("beta1").await.unwrap(),
            )
        })
    };
    assert_eq!(got2.spec, beta2.spec, "v1beta2 round trip");
    assert_eq!(got1.spec, beta1.spec, "v1beta1 round trip (endPort kept)");
    // Stored as v1beta2, read back in the other version without loss.
    let ports = beta1_as_2.spec.ingress.unwrap()[0].ports.clone().unwrap();
    assert_eq!(ports[0].end_port, Some(8080));
    assert_eq!(ports[1].port, Some(IntOrString::String("dns".to_owned())));
}
