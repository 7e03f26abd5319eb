//! Networks resolved through real NAD objects: both annotation forms, clusterNetwork and
//! defaultNetworks from multusNamespace, systemNamespaces, the default-network override and
//! namespaceIsolation with globalNamespaces; the exact network-status written back.
use serde_json::{Value, json};

use super::{Kube, NETWORKS, TestPod, create_nad, failure};
use crate::common::{addrs, link_names, routes};

/// The MAC of `ifname` in the pod.
fn mac(pod: &TestPod, ifname: &str) -> String {
    let link: Value =
        serde_json::from_str(&pod.netns.ip(&["-j", "link", "show", "dev", ifname])).unwrap();
    link[0]["address"].as_str().unwrap().to_owned()
}

/// The IPv4 address of `ifname` in the pod, without prefix.
fn ip(pod: &TestPod, ifname: &str) -> String {
    let a = addrs(&pod.netns, ifname);
    assert_eq!(a.len(), 1, "{ifname}: {a:?}");
    a[0].split('/').next().unwrap().to_owned()
}

/// The network-status entry the pod's `ifname` must have, from what the pod really has.
/// Multus's keys: `default` only when true, `dns` always.
fn entry(pod: &TestPod, network: &str, ifname: &str) -> Value {
    json!({"name": network, "interface": ifname, "ips": [ip(pod, ifname)],
           "mac": mac(pod, ifname), "dns": {}})
}

fn cluster_entry(pod: &TestPod) -> Value {
    json!({"name": "cluster", "interface": "eth0", "ips": [ip(pod, "eth0")],
           "mac": mac(pod, "eth0"), "default": true, "dns": {},
           "gateway": ["203.0.113.1"]})
}

#[test]
fn short_and_json_annotations_through_real_nads_and_the_exact_status() {
    let Some(k) = Kube::new("short_and_json_annotations_through_real_nads_and_the_exact_status")
    else {
        return;
    };
    let a = k.cluster.namespace("ka");
    let b = k.cluster.namespace("kb");
    create_nad(&a, "macvlan-net", &k.macvlan(), &json!({}));
    create_nad(&b, "bridge-net", &k.bridge("br1"), &json!({}));
    create_nad(
        &a,
        "static-net",
        &json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "vpar",
                "capabilities": {"ips": true}, "ipam": {"type": "static"}}),
        &json!({}),
    );
    let conf = k.conf();

    // Short form: own namespace, another namespace, an interface name.
    let short = k.pod(
        &a,
        "short",
        &json!({NETWORKS: format!("macvlan-net, {}/bridge-net@data0", b.name())}),
    );
    let add = k.run("ADD", "c-short", &short, &conf).ok();
    assert_eq!(
        link_names(&short.netns),
        vec!["data0", "eth0", "lo", "net1"]
    );
    assert!(ip(&short, "net1").starts_with("192.0.2."));
    assert!(ip(&short, "data0").starts_with("198.51.100."));
    // The result is the cluster network's.
    let result = add.json();
    assert_eq!(
        result["ips"][0]["address"],
        format!("{}/24", ip(&short, "eth0"))
    );

    // network-status: exactly one entry per interface, from what the pod really has, in the
    // NAD client's text (each entry indented on its own, joined by ",").
    let text = k.status(&short).expect("network-status written");
    assert!(
        text.starts_with("[{\n    \"name\": \"cluster\",\n    \"interface\": \"eth0\""),
        "{text}"
    );
    assert!(text.contains("\n},{\n    \"name\": "), "{text}");
    assert!(text.ends_with("\n}]"), "{text}");
    let status: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        status,
        json!([
            cluster_entry(&short),
            entry(&short, &format!("{}/macvlan-net", a.name()), "net1"),
            entry(&short, &format!("{}/bridge-net", b.name()), "data0"),
        ])
    );
    // Multus's AddedInterface Events, one per interface.
    let mut added: Vec<String> = k
        .events(&short)
        .into_iter()
        .filter(|(t, r, _)| t == "Normal" && r == "AddedInterface")
        .map(|(_, _, m)| m)
        .collect();
    added.sort();
    assert_eq!(
        added,
        vec![
            format!(
                "Add data0 [{}/24] from {}/bridge-net",
                ip(&short, "data0"),
                b.name()
            ),
            format!("Add eth0 [{}/24] from cluster", ip(&short, "eth0")),
            format!(
                "Add net1 [{}/24] from {}/macvlan-net",
                ip(&short, "net1"),
                a.name()
            ),
        ]
    );

    // JSON form: a requested address through the `ips` capability, a namespace field.
    let long = k.pod(
        &a,
        "long",
        &json!({NETWORKS: json!([
            {"name": "static-net", "interface": "mv0", "ips": ["192.0.2.77/24"]},
            {"name": "bridge-net", "namespace": b.name()}
        ]).to_string()}),
    );
    k.run("ADD", "c-long", &long, &conf).ok();
    assert_eq!(addrs(&long.netns, "mv0"), vec!["192.0.2.77/24"]);
    assert!(ip(&long, "net2").starts_with("198.51.100."));
    let status: Value = serde_json::from_str(&k.status(&long).unwrap()).unwrap();
    assert_eq!(
        status,
        json!([
            cluster_entry(&long),
            entry(&long, &format!("{}/static-net", a.name()), "mv0"),
            entry(&long, &format!("{}/bridge-net", b.name()), "net2"),
        ])
    );

    k.run("DEL", "c-short", &short, &conf).ok();
    k.run("DEL", "c-long", &long, &conf).ok();
    k.assert_clean(&short);
    k.assert_clean(&long);
}

#[test]
fn cluster_and_default_networks_come_from_multus_namespace() {
    let Some(k) = Kube::new("cluster_and_default_networks_come_from_multus_namespace") else {
        return;
    };
    let multus = k.cluster.namespace("kmu");
    let apps = k.cluster.namespace("kap");
    let system = k.cluster.namespace("ksy");
    // The cluster network as a NAD without a name in its config: it gets the NAD's.
    let mut cluster_conf = k.node.cluster_conf("1.0.0");
    cluster_conf.as_object_mut().unwrap().remove("name");
    create_nad(&multus, "cluster-net", &cluster_conf, &json!({}));
    create_nad(&multus, "extra-net", &k.macvlan(), &json!({}));
    create_nad(&apps, "bridge-net", &k.bridge("br2"), &json!({}));
    let mut conf = k.conf();
    conf.as_object_mut().unwrap().remove("delegates");
    conf["clusterNetwork"] = json!("cluster-net");
    conf["defaultNetworks"] = json!(["extra-net"]);
    conf["multusNamespace"] = json!(multus.name());
    conf["systemNamespaces"] = json!([system.name()]);

    let app = k.pod(&apps, "app", &json!({NETWORKS: "bridge-net"}));
    k.run("ADD", "c-app", &app, &conf).ok();
    assert_eq!(link_names(&app.netns), vec!["eth0", "lo", "net1", "net2"]);
    assert!(ip(&app, "eth0").starts_with("203.0.113."));
    let status: Value = serde_json::from_str(&k.status(&app).unwrap()).unwrap();
    let names: Vec<String> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        vec![
            // A NAD as the cluster network is named like every NAD network (as Multus names it).
            format!("{}/cluster-net", multus.name()),
            format!("{}/extra-net", multus.name()),
            format!("{}/bridge-net", apps.name()),
        ]
    );

    // A pod in a system namespace gets no defaultNetworks.
    let sys = k.pod(&system, "sys", &json!({}));
    k.run("ADD", "c-sys", &sys, &conf).ok();
    assert_eq!(link_names(&sys.netns), vec!["eth0", "lo"]);

    k.run("DEL", "c-app", &app, &conf).ok();
    k.run("DEL", "c-sys", &sys, &conf).ok();
    k.assert_clean(&app);
    k.assert_clean(&sys);
}

#[test]
fn default_network_annotation_replaces_the_cluster_network() {
    let Some(k) = Kube::new("default_network_annotation_replaces_the_cluster_network") else {
        return;
    };
    let multus = k.cluster.namespace("kdm");
    let apps = k.cluster.namespace("kdp");
    create_nad(
        &multus,
        "alt-cluster",
        &json!({"cniVersion": "1.0.0", "name": "alt", "type": "bridge", "bridge": "cni9",
                "isGateway": true, "isDefaultGateway": true,
                "ipam": k.node.ipam("198.51.100.0/24", Some("198.51.100.1"))}),
        &json!({}),
    );
    create_nad(&apps, "macvlan-net", &k.macvlan(), &json!({}));
    let mut conf = k.conf();
    conf["multusNamespace"] = json!(multus.name());
    let pod = k.pod(
        &apps,
        "override",
        &json!({"v1.multus-cni.io/default-network": "alt-cluster", NETWORKS: "macvlan-net"}),
    );
    let add = k.run("ADD", "c-ovr", &pod, &conf).ok();
    assert!(ip(&pod, "eth0").starts_with("198.51.100."), "{add:?}");
    assert!(
        routes(&pod.netns).contains(&"default via 198.51.100.1 dev eth0".to_owned()),
        "{:?}",
        routes(&pod.netns)
    );
    let status: Value = serde_json::from_str(&k.status(&pod).unwrap()).unwrap();
    assert_eq!(
        status,
        json!([
            // The override's NAD, named `<multusNamespace>/<nad>` as Multus names it.
            {"name": format!("{}/alt-cluster", multus.name()), "interface": "eth0",
             "ips": [ip(&pod, "eth0")],
             "mac": mac(&pod, "eth0"), "default": true, "dns": {},
             "gateway": ["198.51.100.1"]},
            entry(&pod, &format!("{}/macvlan-net", apps.name()), "net1"),
        ])
    );
    k.run("DEL", "c-ovr", &pod, &conf).ok();
    k.assert_clean(&pod);
}

#[test]
fn namespace_isolation_refuses_other_namespaces_but_global_ones() {
    let Some(k) = Kube::new("namespace_isolation_refuses_other_namespaces_but_global_ones") else {
        return;
    };
    let own = k.cluster.namespace("kio");
    let other = k.cluster.namespace("kix");
    let global = k.cluster.namespace("kig");
    create_nad(&other, "macvlan-net", &k.macvlan(), &json!({}));
    create_nad(&global, "macvlan-net", &k.macvlan(), &json!({}));
    let mut conf = k.conf();
    conf["namespaceIsolation"] = json!(true);
    conf["globalNamespaces"] = json!(global.name());

    let refused = k.pod(
        &own,
        "refused",
        &json!({NETWORKS: format!("{}/macvlan-net", other.name())}),
    );
    let (code, msg) = failure(&k.run("ADD", "c-ref", &refused, &conf));
    assert_eq!(code, 7, "{msg}");
    assert!(
        msg.contains(&format!(
            "network {}/macvlan-net: namespaceIsolation",
            other.name()
        )),
        "{msg}"
    );
    k.assert_clean(&refused);
    assert_eq!(k.status(&refused), None);
    let warnings = k.events(&refused);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].0, "Warning");
    assert_eq!(warnings[0].1, "InvalidNetwork");
    assert!(warnings[0].2.contains("namespaceIsolation"), "{warnings:?}");

    let allowed = k.pod(
        &own,
        "allowed",
        &json!({NETWORKS: format!("{}/macvlan-net", global.name())}),
    );
    k.run("ADD", "c-all", &allowed, &conf).ok();
    assert_eq!(link_names(&allowed.netns), vec!["eth0", "lo", "net1"]);
    assert!(
        k.status(&allowed)
            .unwrap()
            .contains(&format!("{}/macvlan-net", global.name()))
    );
    k.run("DEL", "c-all", &allowed, &conf).ok();
    k.assert_clean(&allowed);
}
