//! Root tests: what the delegates get, as Multus (and libcni under it) hands it: a selection
//! element's requests, default-route, a conflist's disableCheck/disableGC, a file cluster
//! network's subdirectory plugins. Real plugins (macvlan, static, host-local, bridge) and a spy
//! chained after them that records its stdin and `CNI_ARGS`; the `multus-cni` binary over local
//! NAD and pod files.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::{Node, addrs, assert_clean, install_spy, routes, spy_saw};
use multus_testkit::Netns;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// The node's configuration with the spy's directory as `binDir` (the reference plugins come
/// from `CNI_PATH`).
fn conf(node: &Node) -> Value {
    let mut conf = node.multus_conf("1.0.0");
    conf["binDir"] = json!(node.path("bin"));
    conf
}

/// Every key anywhere in `v` (objects nested in objects and lists).
fn keys(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                out.extend(keys(v));
            }
        }
        Value::Array(a) => a.iter().for_each(|v| out.extend(keys(v))),
        _ => {}
    }
    out
}

/// A pod cannot name a device: the annotation's `deviceID` reaches only plugins that declare
/// the `deviceID` capability, as `runtimeConfig.deviceID`, and is written into no plugin's
/// configuration (no `deviceID`, no `pciBusID`), nor into the cache DEL replays.
#[test]
fn annotation_device_id_is_a_capability_arg_only() {
    let Some(node) = common::root_node("annotation_device_id_is_a_capability_arg_only") else {
        return;
    };
    let seen = install_spy(&node);
    node.nad(
        "pods",
        "vf-net",
        &json!({"cniVersion": "1.0.0", "name": "vf-net", "plugins": [
            {"type": "macvlan", "master": "vpar", "mode": "bridge",
             "ipam": node.ipam("192.0.2.0/24", None)},
            {"type": "spy"},
            {"type": "spy", "capabilities": {"deviceID": true}},
        ]}),
    );
    let id = "0000:af:00.1";
    node.pod(
        "pods",
        "vf",
        "u-vf",
        &json!({NETWORKS: json!([{"name": "vf-net", "deviceID": id}]).to_string()}),
    );
    let pod = Netns::new("cpd");
    let conf = conf(&node);
    node.run("ADD", "c1", Some(&pod), "vf", &conf).ok();

    let (plain, _, _) = spy_saw(&seen, "ADD", 0);
    let plain_keys = keys(&plain);
    for key in ["deviceID", "pciBusID", "runtimeConfig"] {
        assert!(!plain_keys.iter().any(|k| k == key), "{key}: {plain}");
    }
    let (capable, _, _) = spy_saw(&seen, "ADD", 1);
    assert_eq!(capable["runtimeConfig"]["deviceID"], id, "{capable}");
    assert!(capable.get("deviceID").is_none(), "{capable}");
    assert!(capable.get("pciBusID").is_none(), "{capable}");
    let cache = common::own_cache_entry(&node, "c1");
    let config: Value =
        serde_json::from_str(cache["delegates"][1]["config"].as_str().unwrap()).unwrap();
    for plugin in config["plugins"].as_array().unwrap() {
        for key in ["deviceID", "pciBusID"] {
            assert!(plugin.get(key).is_none(), "{key}: {config}");
        }
    }

    node.run("DEL", "c1", Some(&pod), "vf", &conf).ok();
    assert_clean(&node, Some(&pod));
}

/// The NAD of the issue: macvlan with static IPAM and no `capabilities`. The pod asks for a MAC
/// and an address; as under Multus the pod starts with both, because the legacy `MAC=` and
/// `IP=` `CNI_ARGS` reach the plugins (macvlan reads `MAC`, static reads `IP`), appended after
/// the runtime's in Multus's order, on ADD only. The dropped capability requests are said.
#[test]
fn legacy_mac_and_ip_args_reach_plugins_without_the_capability() {
    let Some(node) =
        common::root_node("legacy_mac_and_ip_args_reach_plugins_without_the_capability")
    else {
        return;
    };
    let seen = install_spy(&node);
    node.nad(
        "pods",
        "macvlan-conf",
        &json!({"cniVersion": "1.0.0", "name": "macvlan-conf", "plugins": [
            {"type": "macvlan", "master": "vpar", "mode": "bridge", "ipam": {"type": "static"}},
            {"type": "spy"},
        ]}),
    );
    let mac = "02:00:00:aa:bb:cc";
    node.pod(
        "pods",
        "legacy",
        "u-legacy",
        &json!({NETWORKS: json!([{"name": "macvlan-conf", "interface": "data0",
                                  "mac": mac, "ips": ["192.0.2.77/24"]}]).to_string()}),
    );
    let pod = Netns::new("cpd");
    let conf = conf(&node);
    let run = node.run("ADD", "c1", Some(&pod), "legacy", &conf).ok();

    assert_eq!(addrs(&pod, "data0"), vec!["192.0.2.77/24"]);
    let link: Value = serde_json::from_str(&pod.ip(&["-j", "link", "show", "data0"])).unwrap();
    assert_eq!(link[0]["address"], mac);
    let (stdin, args, ifname) = spy_saw(&seen, "ADD", 0);
    assert_eq!(ifname, "data0");
    assert!(
        args.ends_with(&format!(";MAC={mac};IP=192.0.2.77/24")),
        "{args}"
    );
    assert!(args.starts_with("IgnoreUnknown="), "{args}");
    assert!(stdin.get("runtimeConfig").is_none(), "{stdin}");
    for capability in ["\"ips\"", "\"mac\""] {
        assert!(
            run.stderr.contains(capability) && run.stderr.contains("pods/macvlan-conf"),
            "the dropped request is not said: {}",
            run.stderr
        );
    }

    node.run("DEL", "c1", Some(&pod), "legacy", &conf).ok();
    let (_, del_args, _) = spy_saw(&seen, "DEL", 0);
    assert!(
        !del_args.contains("MAC=") && !del_args.contains("IP="),
        "{del_args}"
    );
    assert_clean(&node, Some(&pod));
}

/// With `requireCapabilities` the NPWG rule holds: the same request fails with code 7 before
/// any plugin runs, and nothing is left.
#[test]
fn require_capabilities_refuses_what_no_plugin_declares() {
    let Some(node) = common::root_node("require_capabilities_refuses_what_no_plugin_declares")
    else {
        return;
    };
    let seen = install_spy(&node);
    node.nad(
        "pods",
        "macvlan-conf",
        &json!({"cniVersion": "1.0.0", "name": "macvlan-conf", "plugins": [
            {"type": "macvlan", "master": "vpar", "mode": "bridge", "ipam": {"type": "static"}},
            {"type": "spy"},
        ]}),
    );
    node.pod(
        "pods",
        "strict",
        "u-strict",
        &json!({NETWORKS: json!([{"name": "macvlan-conf", "mac": "02:00:00:aa:bb:cc",
                                  "ips": ["192.0.2.77/24"]}]).to_string()}),
    );
    let pod = Netns::new("cpd");
    let mut conf = conf(&node);
    conf["requireCapabilities"] = json!(true);
    let run = node.run("ADD", "c1", Some(&pod), "strict", &conf);
    assert_eq!(run.error_code(), 7, "{run:?}");
    let msg = run.json()["msg"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("pods/macvlan-conf") && msg.contains("\"ips\""),
        "{msg}"
    );
    assert!(
        std::fs::read_dir(&seen).unwrap().next().is_none(),
        "a plugin ran"
    );
    assert_clean(&node, Some(&pod));
}

/// Default routes of both families in `pod`, as "dst via gw dev".
fn default_routes(pod: &Netns) -> Vec<String> {
    let mut out = Vec::new();
    for family in ["-4", "-6"] {
        let v: Value =
            serde_json::from_str(&pod.ip(&["-j", family, "route", "show", "default"])).unwrap();
        for r in v.as_array().unwrap() {
            out.push(format!(
                "{} via {} dev {}",
                r["dst"].as_str().unwrap_or("?"),
                r["gateway"].as_str().unwrap_or("-"),
                r["dev"].as_str().unwrap_or("?")
            ));
        }
    }
    out
}

/// `default-route` as Multus applies it: an IPv4 gateway on one network and an IPv6 one on
/// another both hold (one per family across the pod), and an empty list leaves the pod without
/// the other attachments' default routes.
#[test]
fn default_route_per_family_and_empty_list() {
    let Some(node) = common::root_node("default_route_per_family_and_empty_list") else {
        return;
    };
    node.macvlan_nad("1.0.0");
    node.nad(
        "pods",
        "v6-net",
        &json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "vpar", "mode": "bridge",
                "ipam": {"type": "static", "addresses": [{"address": "2001:db8::10/64"}]}}),
    );
    node.pod(
        "pods",
        "both",
        "u-both",
        &json!({NETWORKS: json!([
            {"name": "macvlan-net", "default-route": ["192.0.2.1"]},
            {"name": "v6-net", "default-route": ["2001:db8::1"]},
        ]).to_string()}),
    );
    let conf = node.multus_conf("1.0.0");
    let pod = Netns::new("cpd");
    let add = node.run("ADD", "c1", Some(&pod), "both", &conf);
    assert_eq!(add.code, 0, "{add:?}");
    assert_eq!(
        default_routes(&pod),
        [
            "default via 192.0.2.1 dev net1",
            "default via 2001:db8::1 dev net2"
        ]
    );
    node.run("DEL", "c1", Some(&pod), "both", &conf).ok();
    assert_clean(&node, Some(&pod));

    // An empty list: the cluster network's default route goes too.
    node.pod(
        "pods",
        "none",
        "u-none",
        &json!({NETWORKS: json!([{"name": "macvlan-net", "default-route": []}]).to_string()}),
    );
    let pod = Netns::new("cpd");
    let add = node.run("ADD", "c2", Some(&pod), "none", &conf).ok();
    assert_eq!(
        default_routes(&pod),
        Vec::<String>::new(),
        "{:?}",
        routes(&pod)
    );
    let result = add.json();
    assert!(
        !result["routes"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["dst"] == "0.0.0.0/0")),
        "{result}"
    );
    node.run("DEL", "c2", Some(&pod), "none", &conf).ok();
    assert_clean(&node, Some(&pod));
}

/// `disableCheck` and `disableGC` on a conflist are honoured as libcni honours them: its
/// plugins get no CHECK, and the cluster network no GC; without the keys they get both.
#[test]
fn disable_check_and_disable_gc_are_honoured() {
    let Some(node) = common::root_node("disable_check_and_disable_gc_are_honoured") else {
        return;
    };
    let seen = install_spy(&node);
    for (name, disabled) in [("quiet-net", true), ("loud-net", false)] {
        node.nad(
            "pods",
            name,
            &json!({"cniVersion": "1.0.0", "name": name, "disableCheck": disabled, "plugins": [
                {"type": "macvlan", "master": "vpar", "mode": "bridge",
                 "ipam": node.ipam("192.0.2.0/24", None)},
                {"type": "spy"},
            ]}),
        );
    }
    let conf = conf(&node);
    let checks = || {
        std::fs::read_dir(&seen)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("CHECK-"))
            .filter(|e| e.file_name().to_string_lossy().ends_with(".stdin"))
            .count()
    };
    node.pod("pods", "quiet", "u-q", &json!({NETWORKS: "quiet-net"}));
    let pod = Netns::new("cpd");
    node.run("ADD", "c1", Some(&pod), "quiet", &conf).ok();
    node.run("CHECK", "c1", Some(&pod), "quiet", &conf).ok();
    assert_eq!(checks(), 0, "disableCheck: the chain got CHECK");
    node.run("DEL", "c1", Some(&pod), "quiet", &conf).ok();
    node.pod("pods", "loud", "u-l", &json!({NETWORKS: "loud-net"}));
    node.run("ADD", "c2", Some(&pod), "loud", &conf).ok();
    node.run("CHECK", "c2", Some(&pod), "loud", &conf).ok();
    assert_eq!(checks(), 1, "without disableCheck the chain gets CHECK");
    node.run("DEL", "c2", Some(&pod), "loud", &conf).ok();
    assert_clean(&node, Some(&pod));

    // GC goes to the cluster network (1.1.0) only; here a chain of the spy alone.
    let gcs = || {
        std::fs::read_dir(&seen)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("GC-"))
            .filter(|e| e.file_name().to_string_lossy().ends_with(".stdin"))
            .count()
    };
    for (disabled, want) in [(true, 0), (false, 1)] {
        let mut gc_conf = conf.clone();
        gc_conf["cniVersion"] = json!("1.1.0");
        gc_conf["delegates"] = json!([{"cniVersion": "1.1.0", "name": "cluster",
                                        "disableGC": disabled, "plugins": [{"type": "spy"}]}]);
        gc_conf["cni.dev/valid-attachments"] = json!([]);
        let run = node.run_raw(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", common::PLUGIN_DIR)],
            gc_conf.to_string().as_bytes(),
        );
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(gcs(), want, "disableGC {disabled}");
    }
}

/// A conflist file as `clusterNetwork` gets the plugins of `<dir>/<name>/*.conf` chained after
/// its own, as libcni loads it (Multus 4.2.1), unless `loadOnlyInlinedPlugins` says not to.
#[test]
fn a_cluster_network_file_chains_its_subdirectory_plugins() {
    let Some(node) = common::root_node("a_cluster_network_file_chains_its_subdirectory_plugins")
    else {
        return;
    };
    let seen = install_spy(&node);
    let dir = node.path("net.d");
    std::fs::create_dir_all(dir.join("cluster")).unwrap();
    std::fs::write(
        dir.join("cluster").join("50-spy.conf"),
        json!({"type": "spy", "fromSubdirectory": true}).to_string(),
    )
    .unwrap();
    let file = dir.join("10-cluster.conflist");
    let mut conf = conf(&node);
    conf.as_object_mut().unwrap().remove("delegates");
    conf["clusterNetwork"] = json!(file);
    let ran = || std::fs::read_dir(&seen).unwrap().count();
    for (only_inline, chained) in [(false, true), (true, false)] {
        let mut list = node.cluster_conf("1.0.0");
        let plugin = list.as_object_mut().unwrap().clone();
        list = json!({"cniVersion": "1.0.0", "name": "cluster",
                      "loadOnlyInlinedPlugins": only_inline, "plugins": [plugin]});
        list["plugins"][0].as_object_mut().unwrap().remove("name");
        list["plugins"][0]
            .as_object_mut()
            .unwrap()
            .remove("cniVersion");
        std::fs::write(&file, list.to_string()).unwrap();
        node.pod("pods", "p", "u-p", &json!({}));
        let pod = Netns::new("cpd");
        let before = ran();
        node.run("ADD", "c1", Some(&pod), "p", &conf).ok();
        assert_eq!(
            ran() > before,
            chained,
            "loadOnlyInlinedPlugins {only_inline}"
        );
        if chained {
            let (stdin, _, ifname) = spy_saw(&seen, "ADD", 0);
            assert_eq!(ifname, "eth0");
            assert_eq!(stdin["fromSubdirectory"], true, "{stdin}");
            assert_eq!(stdin["name"], "cluster", "{stdin}");
            assert!(stdin["prevResult"]["ips"].is_array(), "{stdin}");
        }
        node.run("DEL", "c1", Some(&pod), "p", &conf).ok();
        assert_clean(&node, Some(&pod));
    }
}

/// Versions as lenient as libcni: a NAD without `cniVersion` (the plugin assumes 0.1.0), a NAD
/// of 0.2.0 (an `ip4` result), and a conflist whose `cniVersions` lists a newer one than its
/// `cniVersion` (the highest supported wins) all attach, and go on DEL.
#[test]
fn old_and_unversioned_delegates_attach() {
    let Some(node) = common::root_node("old_and_unversioned_delegates_attach") else {
        return;
    };
    let seen = install_spy(&node);
    let macvlan = |subnet: &str| {
        json!({"type": "macvlan", "master": "vpar", "mode": "bridge",
               "ipam": node.ipam(subnet, None)})
    };
    node.nad("pods", "bare-net", &macvlan("192.0.2.0/24"));
    let mut old = macvlan("198.51.100.0/24");
    old["cniVersion"] = json!("0.2.0");
    node.nad("pods", "old-net", &old);
    node.nad(
        "pods",
        "multi-net",
        &json!({"cniVersion": "0.3.1", "cniVersions": ["0.3.1", "1.0.0", "9.9.9"],
                "name": "multi-net",
                "plugins": [macvlan("203.0.113.0/24"), {"type": "spy"}]}),
    );
    node.pod(
        "pods",
        "old",
        "u-old",
        &json!({NETWORKS: "bare-net,old-net,multi-net"}),
    );
    let pod = Netns::new("cpd");
    let mut conf = conf(&node);
    // The cluster network on a subnet of its own: the three NADs take the others.
    conf["delegates"][0]["ipam"] = node.ipam("192.0.2.0/24", None);
    conf["delegates"][0]["ipam"]["ranges"][0][0]["rangeStart"] = json!("192.0.2.201");
    conf["delegates"][0]["ipam"]["ranges"][0][0]["rangeEnd"] = json!("192.0.2.250");
    conf["delegates"][0]
        .as_object_mut()
        .unwrap()
        .remove("isDefaultGateway");
    conf["delegates"][0]
        .as_object_mut()
        .unwrap()
        .remove("isGateway");
    let add = node.run("ADD", "c1", Some(&pod), "old", &conf);
    assert_eq!(add.code, 0, "{add:?}");
    assert!(addrs(&pod, "net1")[0].starts_with("192.0.2."));
    assert!(addrs(&pod, "net2")[0].starts_with("198.51.100."));
    assert!(addrs(&pod, "net3")[0].starts_with("203.0.113."));
    let (stdin, _, _) = spy_saw(&seen, "ADD", 0);
    assert_eq!(stdin["cniVersion"], "1.0.0", "{stdin}");
    node.run("DEL", "c1", Some(&pod), "old", &conf).ok();
    assert_clean(&node, Some(&pod));
}
