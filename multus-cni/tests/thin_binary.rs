//! Root integration tests: the real `multus-cni` binary run like a runtime runs it, with
//! Debian's reference plugins as delegates, inside namespaces the tests create.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::{Node, addrs, assert_clean, link_names, root, routes};
use multus_testkit::Netns;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

fn three_network_pod(node: &Node, version: &str, name: &str) -> Netns {
    let delegate_version = if version == "1.1.0" { "1.0.0" } else { version };
    node.macvlan_nad(delegate_version);
    node.bridge_nad(delegate_version);
    node.pod(
        "pods",
        name,
        &format!("uid-{name}"),
        &json!({NETWORKS: "macvlan-net,bridge-net"}),
    );
    let pod = Netns::new("cpd");
    pod.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
    pod
}

#[test]
fn add_and_del_three_networks_in_every_version() {
    if !root("add_and_del_three_networks_in_every_version") {
        return;
    }
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let node = Node::new();
        let pod = three_network_pod(&node, version, "web");
        let conf = node.multus_conf(version);
        let add = node.run("ADD", "c1", Some(&pod), "web", &conf).ok();
        let result = add.json();
        assert_eq!(result["cniVersion"], version, "{version}");

        // The result is the cluster network's, in the configuration's version.
        let ips = result["ips"].as_array().unwrap();
        assert_eq!(ips.len(), 1, "{version}: {result}");
        let address = ips[0]["address"].as_str().unwrap();
        assert!(address.starts_with("203.0.113."), "{version}: {address}");
        assert_eq!(ips[0]["gateway"], "203.0.113.1");
        if version.starts_with("0.") {
            assert_eq!(ips[0]["version"], "4", "{version}: {result}");
        } else {
            assert!(ips[0].get("version").is_none(), "{version}: {result}");
        }
        let sandbox: Vec<&str> = result["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i.get("sandbox").is_some())
            .map(|i| i["name"].as_str().unwrap())
            .collect();
        assert_eq!(sandbox, vec!["eth0"]);

        // eth0, net1 and net2 with their addresses and routes.
        assert_eq!(link_names(&pod), vec!["eth0", "lo", "net1", "net2"]);
        assert_eq!(addrs(&pod, "eth0"), vec![address.to_owned()]);
        assert!(addrs(&pod, "net1")[0].starts_with("192.0.2."), "{version}");
        assert!(
            addrs(&pod, "net2")[0].starts_with("198.51.100."),
            "{version}"
        );
        let r = routes(&pod);
        assert!(
            r.contains(&"default via 203.0.113.1 dev eth0".to_owned()),
            "{r:?}"
        );
        assert!(
            r.contains(&"192.0.2.0/24 via - dev net1".to_owned()),
            "{r:?}"
        );
        assert!(
            r.contains(&"198.51.100.0/24 via - dev net2".to_owned()),
            "{r:?}"
        );
        // The conflist's second plugin (tuning) ran on net2.
        let link = pod.ip(&["-j", "link", "show", "dev", "net2"]);
        let link: Value = serde_json::from_str(&link).unwrap();
        assert_eq!(link[0]["mtu"], 1400, "{version}");
        assert_eq!(node.leases().len(), 3);
        assert_eq!(node.cache_files(), vec!["c1", "results/c1"]);

        if version != "0.3.0" && version != "0.3.1" {
            node.run("CHECK", "c1", Some(&pod), "web", &conf).ok();
        }
        node.run("DEL", "c1", Some(&pod), "web", &conf).ok();
        assert_clean(&node, Some(&pod));
        // DEL is idempotent.
        node.run("DEL", "c1", Some(&pod), "web", &conf).ok();
    }
}

#[test]
fn two_pods_ping_over_net1() {
    let Some(node) = common::root_node("two_pods_ping_over_net1") else {
        return;
    };
    let a = three_network_pod(&node, "1.0.0", "a");
    node.pod(
        "pods",
        "b",
        "uid-b",
        &json!({NETWORKS: "macvlan-net,bridge-net"}),
    );
    let b = Netns::new("cpd");
    let conf = node.multus_conf("1.0.0");
    node.run("ADD", "ca", Some(&a), "a", &conf).ok();
    node.run("ADD", "cb", Some(&b), "b", &conf).ok();
    let b_net1 = addrs(&b, "net1")[0].split('/').next().unwrap().to_owned();
    let out = a
        .exec(
            "ping",
            &[
                "-n", "-c", "3", "-i", "0.2", "-W", "2", "-I", "net1", &b_net1,
            ],
        )
        .unwrap();
    assert!(out.contains("3 received"), "{out}");
    node.run("DEL", "ca", Some(&a), "a", &conf).ok();
    node.run("DEL", "cb", Some(&b), "b", &conf).ok();
    assert_eq!(link_names(&b), vec!["lo"]);
    assert_clean(&node, Some(&a));
}

#[test]
fn two_hundred_add_del_cycles_leave_nothing() {
    let Some(node) = common::root_node("two_hundred_add_del_cycles_leave_nothing") else {
        return;
    };
    let pod = three_network_pod(&node, "1.0.0", "cycle");
    let conf = node.multus_conf("1.0.0");
    // The bridges stay after the first DEL (the bridge plugin never deletes them).
    node.run("ADD", "warm", Some(&pod), "cycle", &conf).ok();
    node.run("DEL", "warm", Some(&pod), "cycle", &conf).ok();
    let node_links = node.links();
    for i in 0..200 {
        let id = format!("cycle{i}");
        let add = node.run("ADD", &id, Some(&pod), "cycle", &conf);
        assert_eq!(add.code, 0, "cycle {i}: {add:?}");
        let del = node.run("DEL", &id, Some(&pod), "cycle", &conf);
        assert_eq!(del.code, 0, "cycle {i}: {del:?}");
    }
    assert_clean(&node, Some(&pod));
    assert_eq!(node.links(), node_links, "links left in the node namespace");
}

#[test]
fn failed_delegate_rolls_back_everything() {
    let Some(node) = common::root_node("failed_delegate_rolls_back_everything") else {
        return;
    };
    node.macvlan_nad("1.0.0");
    // A chain whose second plugin fails after the bridge and host-local did their work: the
    // rollback must undo the failing network itself too, not only the ones before it.
    node.nad(
        "pods",
        "broken",
        &json!({"cniVersion": "1.0.0", "name": "broken", "plugins": [
            {"type": "bridge", "bridge": "br9", "ipam": node.ipam("198.51.100.0/24", None)},
            {"type": "tuning", "sysctl": {"net.no.such.key": "1"}}
        ]}),
    );
    let pod = node.pod_asking("p", "macvlan-net,broken");
    let conf = node.multus_conf("1.0.0");
    let run = node.run("ADD", "c1", Some(&pod), "p", &conf);
    assert_eq!(run.code, 1, "{run:?}");
    let err = run.json();
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("network pods/broken: plugin tuning ADD failed"),
        "{err}"
    );
    assert!(err["code"].as_u64().unwrap() > 0);
    assert_clean(&node, Some(&pod));
}

#[test]
fn del_works_without_nads_and_without_netns() {
    let Some(node) = common::root_node("del_works_without_nads_and_without_netns") else {
        return;
    };
    let pod = three_network_pod(&node, "0.4.0", "gone");
    let conf = node.multus_conf("0.4.0");
    node.run("ADD", "c1", Some(&pod), "gone", &conf).ok();
    assert_eq!(node.leases().len(), 3);
    // The NAD and pod files go, then the namespace itself.
    for f in std::fs::read_dir(node.path("local")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let netns_path = pod.path();
    drop(pod);
    assert!(!netns_path.exists());
    let del = node.run_raw(
        &[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", &netns_path.to_string_lossy()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", common::PLUGIN_DIR),
        ],
        conf.to_string().as_bytes(),
    );
    assert_eq!(del.code, 0, "{del:?}");
    assert_clean(&node, None);
}

#[test]
fn default_route_moves_to_the_requested_network() {
    let Some(node) = common::root_node("default_route_moves_to_the_requested_network") else {
        return;
    };
    node.macvlan_nad("1.0.0");
    let pod = node.pod_asking(
        "gw",
        json!([{"name": "macvlan-net", "default-route": ["192.0.2.1"]}]).to_string(),
    );
    let conf = node.multus_conf("1.0.0");
    let add = node.run("ADD", "c1", Some(&pod), "gw", &conf).ok();
    let r = routes(&pod);
    assert!(
        r.contains(&"default via 192.0.2.1 dev net1".to_owned()),
        "{r:?}"
    );
    assert!(
        !r.iter()
            .any(|r| r.starts_with("default") && r.ends_with("eth0")),
        "{r:?}"
    );
    // The returned (cluster) result no longer claims a default route.
    let result = add.json();
    assert!(
        !result["routes"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["dst"] == "0.0.0.0/0")),
        "{result}"
    );
    node.run("DEL", "c1", Some(&pod), "gw", &conf).ok();
    assert_clean(&node, Some(&pod));
}

#[test]
fn status_follows_the_readiness_indicator() {
    let Some(node) = common::root_node("status_follows_the_readiness_indicator") else {
        return;
    };
    let ready = node.path("ready");
    let mut conf = node.multus_conf("1.1.0");
    conf["readinessindicatorfile"] = json!(ready);
    let status = |conf: &Value| {
        node.run_raw(
            &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", common::PLUGIN_DIR)],
            conf.to_string().as_bytes(),
        )
    };
    let not_ready = status(&conf);
    assert_eq!(not_ready.code, 1);
    assert_eq!(not_ready.json()["code"], 50, "{not_ready:?}");
    // ADD says "try again later" while the cluster network is not ready.
    let pod = Netns::new("cpd");
    let add = node.run("ADD", "c1", Some(&pod), "x", &conf);
    assert_eq!(add.json()["code"], 11, "{add:?}");
    assert_clean(&node, Some(&pod));
    std::fs::write(&ready, "").unwrap();
    status(&conf).ok();
    conf["delegates"][0]["type"] = json!("no-such-plugin");
    assert_eq!(status(&conf).json()["code"], 50);
}

#[test]
fn gc_deletes_attachments_the_runtime_forgot() {
    let Some(node) = common::root_node("gc_deletes_attachments_the_runtime_forgot") else {
        return;
    };
    node.macvlan_nad("1.0.0");
    node.pod("pods", "keep", "u1", &json!({NETWORKS: "macvlan-net"}));
    node.pod("pods", "lost", "u2", &json!({NETWORKS: "macvlan-net"}));
    let keep = Netns::new("cpd");
    let lost = Netns::new("cpd");
    let conf = node.multus_conf("1.1.0");
    node.run("ADD", "keep", Some(&keep), "keep", &conf).ok();
    node.run("ADD", "lost", Some(&lost), "lost", &conf).ok();
    assert_eq!(node.leases().len(), 4);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    node.run_raw(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", common::PLUGIN_DIR)],
        gc.to_string().as_bytes(),
    )
    .ok();
    assert_eq!(node.cache_files(), vec!["keep", "results/keep"]);
    assert_eq!(node.leases().len(), 2);
    assert_eq!(link_names(&lost), vec!["lo"]);
    assert_eq!(link_names(&keep), vec!["eth0", "lo", "net1"]);
    node.run("DEL", "keep", Some(&keep), "keep", &conf).ok();
    assert_clean(&node, Some(&keep));
}

#[test]
fn version_and_stdout_holds_only_the_reply() {
    let Some(node) = common::root_node("version_and_stdout_holds_only_the_reply") else {
        return;
    };
    let v = node
        .run_raw(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.1.0"}"#)
        .ok();
    assert_eq!(
        v.json()["supportedVersions"],
        json!([
            "0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"
        ])
    );
    // Debug logging is on in multus_conf: it must all go to stderr.
    let pod = three_network_pod(&node, "1.0.0", "quiet");
    let conf = node.multus_conf("1.0.0");
    let add = node.run("ADD", "c1", Some(&pod), "quiet", &conf).ok();
    assert_eq!(add.stdout.lines().count(), 1, "{add:?}");
    assert!(add.stderr.contains("attached"), "{add:?}");
    assert!(
        add.stderr
            .contains(r#"network_status=[{"name":"cluster","interface":"eth0""#),
        "{add:?}"
    );
    node.run("DEL", "c1", Some(&pod), "quiet", &conf).ok();
    // logFile without logToStderr: the file gets the lines, stderr and stdout nothing.
    let mut to_file = conf.clone();
    let log = node.path("logs").join("multus.log");
    to_file["logFile"] = json!(log);
    to_file["logToStderr"] = json!(false);
    let add = node.run("ADD", "c2", Some(&pod), "quiet", &to_file).ok();
    assert_eq!(add.stderr, "");
    assert_eq!(add.stdout.lines().count(), 1);
    node.run("DEL", "c2", Some(&pod), "quiet", &to_file).ok();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("attached") && text.contains("DEL done"),
        "{text}"
    );
}

#[test]
fn cluster_network_resolves_like_multus() {
    let Some(node) = common::root_node("cluster_network_resolves_like_multus") else {
        return;
    };
    let pod = Netns::new("cpd");
    let cluster = node.cluster_conf("1.0.0");
    // A file in confDir, named by its CNI name; the same file by absolute path; its directory;
    // and a NAD in multusNamespace.
    let file = node.path("conf").join("10-cluster.conf");
    std::fs::write(&file, cluster.to_string()).unwrap();
    node.nad("kube-system", "cluster-nad", &cluster);
    let forms = [
        json!("cluster"),
        json!(file),
        json!(node.path("conf")),
        json!("cluster-nad"),
    ];
    for form in forms {
        let mut conf = node.multus_conf("1.0.0");
        conf.as_object_mut().unwrap().remove("delegates");
        conf["clusterNetwork"] = form.clone();
        node.pod("pods", "r", "u-r", &json!({}));
        let add = node.run("ADD", "c1", Some(&pod), "r", &conf).ok();
        assert!(
            add.json()["ips"][0]["address"]
                .as_str()
                .unwrap()
                .starts_with("203.0.113."),
            "{form}: {add:?}"
        );
        assert_eq!(link_names(&pod), vec!["eth0", "lo"], "{form}");
        node.run("DEL", "c1", Some(&pod), "r", &conf).ok();
        assert_clean(&node, Some(&pod));
    }
    // The pod's default-network annotation replaces the configured cluster network.
    let mut conf = node.multus_conf("1.0.0");
    conf["delegates"][0]["ipam"] = node.ipam("198.51.100.0/24", None);
    node.pod(
        "pods",
        "r",
        "u-r",
        &json!({"v1.multus-cni.io/default-network": "cluster-nad"}),
    );
    let add = node.run("ADD", "c1", Some(&pod), "r", &conf).ok();
    assert!(addrs(&pod, "eth0")[0].starts_with("203.0.113."), "{add:?}");
    node.run("DEL", "c1", Some(&pod), "r", &conf).ok();
    assert_clean(&node, Some(&pod));
}

#[test]
fn default_networks_skip_system_namespaces_and_isolation_allows_globals() {
    let Some(node) =
        common::root_node("default_networks_skip_system_namespaces_and_isolation_allows_globals")
    else {
        return;
    };
    node.macvlan_nad("1.0.0");
    node.nad(
        "default",
        "shared",
        &json!({"cniVersion": "1.0.0", "type": "bridge", "bridge": "br5",
                "ipam": node.ipam("198.51.100.0/24", None)}),
    );
    let mut conf = node.multus_conf("1.0.0");
    conf["defaultNetworks"] = json!(["pods/macvlan-net"]);
    conf["namespaceIsolation"] = json!(true);
    // A pod in "pods" gets the default network as net1 and may use default/shared.
    node.pod("pods", "d", "u-d", &json!({NETWORKS: "default/shared"}));
    let pod = Netns::new("cpd");
    node.run("ADD", "c1", Some(&pod), "d", &conf).ok();
    assert_eq!(link_names(&pod), vec!["eth0", "lo", "net1", "net2"]);
    assert!(addrs(&pod, "net1")[0].starts_with("192.0.2."));
    assert!(addrs(&pod, "net2")[0].starts_with("198.51.100."));
    // A NAD given in defaultNetworks is named <ns>/<nad>, like an annotation network.
    let cache = common::own_cache_entry(&node, "c1");
    let names: Vec<&str> = cache["delegates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["network"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["cluster", "pods/macvlan-net", "default/shared"]);
    // A NAD given in defaultNetworks is named <ns>/<nad>, like an annotation network.
    let cache = common::own_cache_entry(&node, "c1");
    let names: Vec<&str> = cache["delegates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["network"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["cluster", "pods/macvlan-net", "default/shared"]);
    node.run("DEL", "c1", Some(&pod), "d", &conf).ok();
    // A pod in kube-system gets no default networks.
    let sys = Netns::new("cpd");
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=s";
    let env = |cmd: &'static str, netns: &str| {
        vec![
            ("CNI_COMMAND", cmd.to_owned()),
            ("CNI_CONTAINERID", "c2".to_owned()),
            ("CNI_NETNS", netns.to_owned()),
            ("CNI_IFNAME", "eth0".to_owned()),
            ("CNI_PATH", common::PLUGIN_DIR.to_owned()),
            ("CNI_ARGS", args.to_owned()),
        ]
    };
    let netns = sys.path().to_string_lossy().into_owned();
    for cmd in ["ADD", "DEL"] {
        let e = env(cmd, &netns);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        node.run_raw(&e, conf.to_string().as_bytes()).ok();
        if cmd == "ADD" {
            assert_eq!(link_names(&sys), vec!["eth0", "lo"]);
        }
    }
    assert_clean(&node, Some(&sys));
}

#[test]
fn results_convert_down_to_the_configured_version() {
    let Some(node) = common::root_node("results_convert_down_to_the_configured_version") else {
        return;
    };
    let pod = three_network_pod(&node, "1.0.0", "down");
    for version in ["0.3.0", "0.3.1", "0.4.0"] {
        // The delegates speak 1.0.0; the runtime asked for an older version.
        let mut conf = node.multus_conf(version);
        conf["delegates"][0]["cniVersion"] = json!("1.0.0");
        let add = node.run("ADD", "c1", Some(&pod), "down", &conf).ok();
        let result = add.json();
        assert_eq!(result["cniVersion"], version);
        assert_eq!(result["ips"][0]["version"], "4", "{result}");
        assert_eq!(link_names(&pod), vec!["eth0", "lo", "net1", "net2"]);
        node.run("DEL", "c1", Some(&pod), "down", &conf).ok();
        assert_clean(&node, Some(&pod));
    }
}

/// A plugin whose DEL fails while `<dir>/fail-del` exists (a failure real plugins do not offer).
fn flaky_plugin(node: &Node) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = node.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = node.path("fail-del");
    let script = format!(
        "#!/bin/sh\ncat >/dev/null\n\
         if [ \"$CNI_COMMAND\" = DEL ] && [ -e {marker} ]; then\n\
         echo '{{\"cniVersion\":\"1.0.0\",\"code\":111,\"msg\":\"flaky DEL\"}}'; exit 1; fi\n\
         if [ \"$CNI_COMMAND\" = ADD ]; then echo '{{\"cniVersion\":\"1.0.0\"}}'; fi\n",
        marker = marker.display()
    );
    let path = bin.join("flaky");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    marker
}

#[test]
fn failed_del_keeps_what_is_left_for_the_retry() {
    let Some(node) = common::root_node("failed_del_keeps_what_is_left_for_the_retry") else {
        return;
    };
    let marker = flaky_plugin(&node);
    node.macvlan_nad("1.0.0");
    node.nad(
        "pods",
        "flaky",
        &json!({"cniVersion": "1.0.0", "type": "flaky"}),
    );
    node.pod("pods", "f", "u-f", &json!({NETWORKS: "macvlan-net,flaky"}));
    let pod = Netns::new("cpd");
    let mut conf = node.multus_conf("1.0.0");
    conf["binDir"] = json!(format!(
        "{}:{}",
        node.path("bin").display(),
        common::PLUGIN_DIR
    ));
    node.run("ADD", "c1", Some(&pod), "f", &conf).ok();
    std::fs::write(&marker, "").unwrap();
    let del = node.run("DEL", "c1", Some(&pod), "f", &conf);
    assert_eq!(del.code, 1, "{del:?}");
    assert_eq!(del.json()["code"], 111, "{del:?}");
    // Everything else is gone; the cache holds only the delegate still to delete.
    assert_eq!(link_names(&pod), vec!["lo"]);
    assert!(node.leases().is_empty());
    let cache = common::own_cache_entry(&node, "c1");
    let left: Vec<&str> = cache["delegates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["network"].as_str().unwrap())
        .collect();
    assert_eq!(left, vec!["pods/flaky"]);
    std::fs::remove_file(&marker).unwrap();
    node.run("DEL", "c1", Some(&pod), "f", &conf).ok();
    assert_clean(&node, Some(&pod));

    // With retryDeleteOnError: false the cache goes even when a DEL failed (Multus's default).
    conf["retryDeleteOnError"] = json!(false);
    node.run("ADD", "c2", Some(&pod), "f", &conf).ok();
    std::fs::write(&marker, "").unwrap();
    assert_eq!(node.run("DEL", "c2", Some(&pod), "f", &conf).code, 1);
    assert_clean(&node, Some(&pod));
}

#[test]
fn static_pods_pass_the_uid_check() {
    let Some(node) = common::root_node("static_pods_pass_the_uid_check") else {
        return;
    };
    node.macvlan_nad("1.0.0");
    // The API object of a static pod is a mirror: its uid is not the one kubelet passes.
    node.pod(
        "pods",
        "web-node1",
        "mirror-uid",
        &json!({NETWORKS: "macvlan-net", "kubernetes.io/config.source": "file"}),
    );
    let pod = Netns::new("cpd");
    let conf = node.multus_conf("1.0.0");
    let netns = pod.path().to_string_lossy().into_owned();
    let env = |cmd| {
        [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", common::PLUGIN_DIR),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=pods;K8S_POD_NAME=web-node1;K8S_POD_UID=kubelet-uid",
            ),
        ]
    };
    node.run_raw(&env("ADD"), conf.to_string().as_bytes()).ok();
    assert_eq!(link_names(&pod), vec!["eth0", "lo", "net1"]);
    node.run_raw(&env("DEL"), conf.to_string().as_bytes()).ok();
    assert_clean(&node, Some(&pod));
}
