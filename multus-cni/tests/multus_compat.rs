//! Root integration tests: pods that Multus set up, torn down by the `multus-cni` binary.
//!
//! Each test sets a pod up the way Multus's ADD does, with Debian's reference plugins: Multus's
//! scratch cache `<cniDir>/<containerID>` is written first (the JSON list of its delegate
//! records, configurations base64 in `Bytes`), then every delegate's chain runs as libcni runs
//! it (name, version, runtimeConfig by capability, prevResult) and leaves libcni's result cache
//! `<cniDir>/results/<network>-<containerID>-<ifname>`. Then the binary gets DEL, GC or CHECK.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::{path::PathBuf, process::Command};

use base64::Engine as _;
use common::{Node, PLUGIN_DIR, Run, assert_clean, install_spy, link_names, root, spy_saw};
use multus_testkit::Netns;
use serde_json::{Map, Value, json};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One delegate of a Multus pod: its configuration, the scratch record's extra fields
/// (`Name`, `ifnameRequest`, `ipRequest`, ...) and the capability args Multus gave it at ADD.
struct Delegate {
    config: Value,
    record: Value,
    caps: Value,
}

impl Delegate {
    fn new(name: &str, config: Value) -> Self {
        Self {
            config,
            record: json!({"Name": name}),
            caps: json!({}),
        }
    }
}

/// What Multus's ADD left for a pod.
struct MultusPod {
    container: String,
    /// CNI_ARGS as the runtime gave them to Multus.
    args: String,
    /// The final result of each delegate, as libcni cached it.
    results: Vec<Value>,
}

/// A Multus configuration for the node: the test's cache as `cniDir`, the spy's directory
/// before the reference plugins.
fn multus_conf(node: &Node, version: &str) -> Value {
    let mut conf = node.multus_conf(version);
    conf["binDir"] = json!(node.path("bin"));
    conf
}

/// Runs one plugin binary in the node namespace like libcni does.
fn run_plugin(node: &Node, plugin: &str, env: &[(&str, &str)], stdin: &[u8]) -> Run {
    let dirs = [node.path("bin"), PathBuf::from(PLUGIN_DIR)];
    let binary = dirs
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no plugin {plugin}"));
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", node.netns.name()]).arg(binary);
    let path = format!("{}:{PLUGIN_DIR}", node.path("bin").display());
    let mut env = env.to_vec();
    env.push(("CNI_PATH", &path));
    Run::invoke(cmd, &env, stdin)
}

/// `CNI_ARGS` pairs as Multus builds them for a delegate's ADD: its five pairs, the runtime's
/// (filling an empty one, appending the rest), then the legacy `IP`/`MAC` requests.
fn multus_args(runtime: &str, record: &Value) -> Vec<(String, String)> {
    let get = |key: &str| {
        runtime
            .split(';')
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_owned())
            .unwrap_or_default()
    };
    let mut pairs: Vec<(String, String)> = vec![("IgnoreUnknown".into(), "true".into())];
    for key in [
        "K8S_POD_NAMESPACE",
        "K8S_POD_NAME",
        "K8S_POD_INFRA_CONTAINER_ID",
        "K8S_POD_UID",
    ] {
        pairs.push((key.into(), get(key)));
    }
    for (k, v) in runtime.split(';').filter_map(|p| p.split_once('=')) {
        match pairs
            .iter_mut()
            .find(|(pk, pv)| pk == k && pv.is_empty() && !v.is_empty())
        {
            Some(slot) => slot.1 = v.to_owned(),
            None => pairs.push((k.to_owned(), v.to_owned())),
        }
    }
    if let Some(mac) = record.get("macRequest").and_then(Value::as_str) {
        pairs.push(("MAC".into(), mac.into()));
    }
    if let Some(ips) = record.get("ipRequest").and_then(Value::as_array) {
        let ips: Vec<&str> = ips.iter().filter_map(Value::as_str).collect();
        pairs.push(("IP".into(), ips.join(",")));
    }
    pairs
}

/// The scratch record Multus's `json.Marshal` writes for a delegate (the parsed `Conf` or
/// `ConfList` approximated; DEL only trusts `Bytes`).
fn scratch_record(d: &Delegate, bytes: &[u8]) -> Value {
    let parsed = |p: &Value| {
        let mut c = json!({"ipam": {}, "dns": {}});
        for key in ["cniVersion", "name", "type", "capabilities"] {
            if let Some(v) = p.get(key) {
                c[key] = v.clone();
            }
        }
        if let Some(t) = p.pointer("/ipam/type") {
            c["ipam"]["type"] = t.clone();
        }
        c
    };
    let mut record = json!({"IsFilterV4Gateway": false, "IsFilterV6Gateway": false});
    if let Some(plugins) = d.config.get("plugins").and_then(Value::as_array) {
        record["Conf"] = json!({"ipam": {}, "dns": {}});
        record["ConfList"] = json!({
            "cniVersion": d.config.get("cniVersion").cloned().unwrap_or(json!("")),
            "name": d.config["name"],
            "plugins": plugins.iter().map(parsed).collect::<Vec<_>>(),
        });
    } else {
        record["Conf"] = parsed(&d.config);
        record["ConfList"] = json!({});
    }
    for (k, v) in d.record.as_object().unwrap() {
        record[k] = v.clone();
    }
    record["Bytes"] = json!(b64(bytes));
    record
}

/// Sets up `pod` like Multus's ADD: the scratch cache, then each delegate through libcni.
fn multus_add(
    node: &Node,
    container: &str,
    pod: &Netns,
    name: &str,
    delegates: &[Delegate],
) -> MultusPod {
    let args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=pods;K8S_POD_NAME={name};\
         K8S_POD_INFRA_CONTAINER_ID={container};K8S_POD_UID=uid-{name}"
    );
    let cache = node.path("cache");
    std::fs::create_dir_all(cache.join("results")).unwrap();
    let records: Vec<Value> = delegates
        .iter()
        .map(|d| scratch_record(d, d.config.to_string().as_bytes()))
        .collect();
    std::fs::write(cache.join(container), Value::Array(records).to_string()).unwrap();
    let netns = pod.path().to_string_lossy().into_owned();
    let mut results = Vec::new();
    for (idx, d) in delegates.iter().enumerate() {
        let ifname = match d.record.get("ifnameRequest").and_then(Value::as_str) {
            Some(requested) => requested.to_owned(),
            None if idx == 0 => "eth0".to_owned(),
            None => format!("net{idx}"),
        };
        let pairs = multus_args(&args, &d.record);
        let cni_args: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let cni_args = cni_args.join(";");
        let (chain, list_name, list_version) = match d.config.get("plugins") {
            Some(p) => (
                p.as_array().unwrap().clone(),
                d.config["name"].clone(),
                d.config["cniVersion"].clone(),
            ),
            None => (
                vec![d.config.clone()],
                d.config["name"].clone(),
                d.config["cniVersion"].clone(),
            ),
        };
        let mut prev: Option<Value> = None;
        for plugin in &chain {
            let mut stdin = plugin.clone();
            stdin["name"] = list_name.clone();
            stdin["cniVersion"] = list_version.clone();
            let rc: Map<String, Value> = d
                .caps
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| {
                    plugin.pointer(&format!("/capabilities/{k}")) == Some(&json!(true))
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !rc.is_empty() {
                stdin["runtimeConfig"] = Value::Object(rc);
            }
            if let Some(p) = &prev {
                stdin["prevResult"] = p.clone();
            }
            let ty = plugin["type"].as_str().unwrap();
            let run = run_plugin(
                node,
                ty,
                &[
                    ("CNI_COMMAND", "ADD"),
                    ("CNI_CONTAINERID", container),
                    ("CNI_NETNS", &netns),
                    ("CNI_IFNAME", &ifname),
                    ("CNI_ARGS", &cni_args),
                ],
                stdin.to_string().as_bytes(),
            );
            assert_eq!(run.code, 0, "{ty} ADD: {run:?}");
            prev = Some(run.json());
        }
        let result = prev.unwrap();
        let mut cached = json!({
            "kind": "cniCacheV1",
            "containerId": container,
            "config": b64(d.config.to_string().as_bytes()),
            "ifName": ifname,
            "networkName": list_name,
            "netns": netns,
            "cniArgs": pairs.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            "result": result,
        });
        if !d.caps.as_object().unwrap().is_empty() {
            cached["capabilityArgs"] = d.caps.clone();
        }
        let file = format!("{}-{container}-{ifname}", list_name.as_str().unwrap());
        std::fs::write(cache.join("results").join(file), cached.to_string()).unwrap();
        results.push(result);
    }
    MultusPod {
        container: container.to_owned(),
        args,
        results,
    }
}

/// The cluster network (bridge `cni0`, 0.4.0), a macvlan NAD (1.0.0, `net1`), and a
/// bridge + tuning conflist NAD (1.0.0) asking for `data0` and an address, `extra` chained last.
fn three_delegates(node: &Node, extra: Option<Value>) -> Vec<Delegate> {
    let mut cluster = node.cluster_conf("0.4.0");
    cluster["name"] = json!("cbr0");
    let macvlan = json!({"cniVersion": "1.0.0", "name": "macvlan-net", "type": "macvlan",
        "master": "vpar", "mode": "bridge", "ipam": node.ipam("192.0.2.0/24", None)});
    let mut plugins = vec![
        json!({"type": "bridge", "bridge": "br1", "capabilities": {"ips": true},
               "ipam": node.ipam("198.51.100.0/24", None)}),
        json!({"type": "tuning", "mtu": 1400}),
    ];
    plugins.extend(extra);
    let conflist = json!({"cniVersion": "1.0.0", "name": "bridge-net", "plugins": plugins});
    let mut data = Delegate::new("pods/bridge-net", conflist);
    data.record["ifnameRequest"] = json!("data0");
    data.record["ipRequest"] = json!(["198.51.100.77/24"]);
    data.caps = json!({"ips": ["198.51.100.77/24"]});
    vec![
        Delegate::new("cbr0", cluster),
        Delegate::new("pods/macvlan-net", macvlan),
        data,
    ]
}

fn spy_plugin() -> Value {
    json!({"type": "spy", "capabilities": {"ips": true}})
}

/// A node with the spy, and a pod Multus set up with the three delegates, the spy chained last
/// on the conflist.
fn spied_pod(name: &str) -> (Node, PathBuf, Netns, MultusPod) {
    let node = Node::new();
    let seen = install_spy(&node);
    let pod = Netns::new("cpd");
    let p = multus_add(
        &node,
        "c1",
        &pod,
        name,
        &three_delegates(&node, Some(spy_plugin())),
    );
    (node, seen, pod, p)
}

fn run(node: &Node, command: &str, p: &MultusPod, netns: &str, conf: &Value) -> Run {
    node.run_with_args(command, &p.container, netns, &p.args, conf)
}

#[test]
fn del_tears_down_what_multus_set_up() {
    if !root("del_tears_down_what_multus_set_up") {
        return;
    }
    let (node, seen, pod, p) = spied_pod("web");
    assert_eq!(link_names(&pod), vec!["data0", "eth0", "lo", "net1"]);
    assert_eq!(common::addrs(&pod, "data0"), vec!["198.51.100.77/24"]);
    assert_eq!(node.leases().len(), 3);
    assert_eq!(
        node.cache_files(),
        vec![
            "c1",
            "results/bridge-net-c1-data0",
            "results/cbr0-c1-eth0",
            "results/macvlan-net-c1-net1"
        ]
    );
    let conf = multus_conf(&node, "1.0.0");
    let netns = pod.path().to_string_lossy().into_owned();

    // CHECK runs on every delegate with libcni's cached result.
    run(&node, "CHECK", &p, &netns, &conf).ok();
    let (check, _, _) = spy_saw(&seen, "CHECK", 0);
    assert_eq!(check["prevResult"], p.results[2]);
    pod.ip(&["link", "del", "net1"]);
    let broken = run(&node, "CHECK", &p, &netns, &conf);
    assert_eq!(broken.code, 1, "{broken:?}");
    assert!(
        broken.json()["msg"]
            .as_str()
            .unwrap()
            .contains("pods/macvlan-net"),
        "{broken:?}"
    );

    run(&node, "DEL", &p, &netns, &conf).ok();
    assert_clean(&node, Some(&pod));
    // The conflist's last plugin got what libcni would have given it.
    let (stdin, args, ifname) = spy_saw(&seen, "DEL", 0);
    assert_eq!(ifname, "data0");
    assert_eq!(stdin["name"], "bridge-net");
    assert_eq!(stdin["cniVersion"], "1.0.0");
    assert_eq!(stdin["prevResult"], p.results[2]);
    assert_eq!(stdin["runtimeConfig"], json!({"ips": ["198.51.100.77/24"]}));
    assert_eq!(
        args,
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=pods;K8S_POD_NAME=web;\
         K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=uid-web;IgnoreUnknown=1;\
         K8S_POD_NAMESPACE=pods;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=uid-web"
    );
    // Idempotent.
    run(&node, "DEL", &p, &netns, &conf).ok();
    assert!(!seen.join("DEL-1.stdin").exists());
}

#[test]
fn del_works_with_the_netns_gone() {
    let Some(node) = common::root_node("del_works_with_the_netns_gone") else {
        return;
    };
    let pod = Netns::new("cpd");
    let p = multus_add(&node, "c1", &pod, "gone", &three_delegates(&node, None));
    assert_eq!(node.leases().len(), 3);
    let netns = pod.path();
    drop(pod);
    assert!(!netns.exists());
    let conf = multus_conf(&node, "0.4.0");
    run(&node, "DEL", &p, &netns.to_string_lossy(), &conf).ok();
    assert_clean(&node, None);
}

#[test]
fn a_failing_delegate_keeps_the_cache_for_the_retry() {
    if !root("a_failing_delegate_keeps_the_cache_for_the_retry") {
        return;
    }
    let (node, seen, pod, p) = spied_pod("flaky");
    let conf = multus_conf(&node, "1.0.0");
    let netns = pod.path().to_string_lossy().into_owned();
    std::fs::write(seen.join("fail-DEL"), "").unwrap();
    let del = run(&node, "DEL", &p, &netns, &conf);
    assert_eq!(del.code, 1, "{del:?}");
    let err = del.json();
    assert_eq!(err["code"], 111, "{err}");
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains("pods/bridge-net") && msg.contains("spy told to fail"),
        "{msg}"
    );
    // The other delegates (and the chain's other plugins) are done; the cache keeps the one
    // delegate still to delete, in this engine's format, with the cached result embedded;
    // libcni's files are gone.
    assert_eq!(link_names(&pod), vec!["lo"]);
    assert!(node.leases().is_empty());
    assert_eq!(node.cache_files(), vec!["c1"]);
    let cache = common::own_cache_entry(&node, "c1");
    assert_eq!(cache["format"], "multus-rs/v1");
    let left = cache["delegates"].as_array().unwrap();
    assert_eq!(left.len(), 1, "{cache}");
    assert_eq!(left[0]["network"], "pods/bridge-net");
    assert_eq!(left[0]["ifname"], "data0");

    std::fs::remove_file(seen.join("fail-DEL")).unwrap();
    run(&node, "DEL", &p, &netns, &conf).ok();
    assert_clean(&node, Some(&pod));
    // The retry gave the spy the same prevResult and arguments.
    let (first, first_args, _) = spy_saw(&seen, "DEL", 0);
    let (retry, retry_args, _) = spy_saw(&seen, "DEL", 1);
    assert_eq!(retry["prevResult"], first["prevResult"]);
    assert_eq!(retry["prevResult"], p.results[2]);
    assert_eq!(retry_args, first_args);
}

#[test]
fn the_device_info_file_of_a_multus_pod_goes_with_its_delegate() {
    let Some(node) =
        common::root_node("the_device_info_file_of_a_multus_pod_goes_with_its_delegate")
    else {
        return;
    };
    let seen = install_spy(&node);
    let pod = Netns::new("cpd");
    let devinfo = node
        .path("devinfo")
        .join("cni")
        .join("pods-bridge-net-c1_data0");
    std::fs::create_dir_all(devinfo.parent().unwrap()).unwrap();
    std::fs::write(&devinfo, r#"{"type": "pci", "version": "1.1.0"}"#).unwrap();
    let mut delegates = three_delegates(&node, Some(spy_plugin()));
    delegates[2].caps["CNIDeviceInfoFile"] = json!(devinfo);
    let p = multus_add(&node, "c1", &pod, "dev", &delegates);
    let conf = multus_conf(&node, "1.0.0");
    let netns = pod.path().to_string_lossy().into_owned();
    std::fs::write(seen.join("fail-DEL"), "").unwrap();
    let del = run(&node, "DEL", &p, &netns, &conf);
    assert_eq!(del.code, 1, "{del:?}");
    // Its delegate still needs DEL: the file stays with it, as for this engine's own entries.
    assert!(
        devinfo.exists(),
        "removed before its delegate's DEL succeeded"
    );
    std::fs::remove_file(seen.join("fail-DEL")).unwrap();
    let retry = run(&node, "DEL", &p, &netns, &conf);
    assert_eq!(retry.code, 0, "{retry:?}");
    assert!(!devinfo.exists(), "left after its delegate's DEL");
    assert_clean(&node, Some(&pod));
}

#[test]
fn gc_deletes_stale_multus_entries() {
    let Some(node) = common::root_node("gc_deletes_stale_multus_entries") else {
        return;
    };
    let keep = Netns::new("cpd");
    let lost = Netns::new("cpd");
    let two = |node: &Node| {
        let mut d = three_delegates(node, None);
        d.truncate(2);
        d
    };
    let k = multus_add(&node, "keep", &keep, "keep", &two(&node));
    multus_add(&node, "lost", &lost, "lost", &two(&node));
    assert_eq!(node.leases().len(), 4);
    let mut gc = multus_conf(&node, "1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
    node.run_raw(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", PLUGIN_DIR)],
        gc.to_string().as_bytes(),
    )
    .ok();
    assert_eq!(link_names(&lost), vec!["lo"]);
    assert_eq!(link_names(&keep), vec!["eth0", "lo", "net1"]);
    assert_eq!(node.leases().len(), 2);
    assert_eq!(
        node.cache_files(),
        vec![
            "keep",
            "results/cbr0-keep-eth0",
            "results/macvlan-net-keep-net1"
        ]
    );
    let conf = multus_conf(&node, "1.1.0");
    run(&node, "DEL", &k, &keep.path().to_string_lossy(), &conf).ok();
    assert_clean(&node, Some(&keep));
}

/// Multus 4.1 and 4.2 re-encoded a conflist's `Bytes` through libcni's parsed form, which drops
/// every key libcni does not know (host-local's `dataDir`, the bridge's name, ...), and kept
/// the raw plugins in `CNINetworkConfigList`. DEL must use the raw ones, or the lease leaks.
#[test]
fn del_uses_the_raw_conflist_of_multus_4_2_caches() {
    let Some(node) = common::root_node("del_uses_the_raw_conflist_of_multus_4_2_caches") else {
        return;
    };
    let pod = Netns::new("cpd");
    let mut delegates = three_delegates(&node, None);
    delegates.remove(1);
    let p = multus_add(&node, "c1", &pod, "old", &delegates);
    assert_eq!(node.leases().len(), 2);
    // Rewrite the conflist's record as Multus 4.2 wrote it.
    let path = node.path("cache").join("c1");
    let mut records: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let list = &delegates[1].config;
    // In reality the re-encoded bytes lose `dataDir` altogether, which would send host-local to
    // /var/lib/cni/networks on this machine; a decoy directory shows the same mistake here.
    let decoy = node.path("decoy");
    let lossy = json!({"cniVersion": "1.0.0", "name": "bridge-net", "plugins": [
        {"type": "bridge", "capabilities": {"ips": true},
         "ipam": {"type": "host-local", "dataDir": decoy}, "dns": {}},
        {"type": "tuning", "ipam": {}, "dns": {}}]});
    let raw_plugins: Vec<Value> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| json!({"Network": {"type": p["type"]}, "Bytes": b64(p.to_string().as_bytes())}))
        .collect();
    records[1]["Bytes"] = json!(b64(lossy.to_string().as_bytes()));
    records[1]["CNINetworkConfigList"] = json!({"Name": "bridge-net", "CNIVersion": "1.0.0",
        "DisableCheck": false, "Plugins": raw_plugins,
        "Bytes": b64(list.to_string().as_bytes())});
    std::fs::write(&path, records.to_string()).unwrap();

    let conf = multus_conf(&node, "1.0.0");
    run(&node, "DEL", &p, &pod.path().to_string_lossy(), &conf).ok();
    assert_clean(&node, Some(&pod));
}

/// A Multus-era cache holding a 0.2.0 delegate (results with `ip4`, no interfaces): DEL runs
/// its plugins and releases the address, as Multus's libcni would.
#[test]
fn del_of_a_multus_pod_with_a_0_2_0_delegate() {
    let Some(node) = common::root_node("del_of_a_multus_pod_with_a_0_2_0_delegate") else {
        return;
    };
    let pod = Netns::new("cpd");
    let mut cluster = node.cluster_conf("0.4.0");
    cluster["name"] = json!("cbr0");
    let old = json!({"cniVersion": "0.2.0", "name": "old-net", "type": "macvlan",
        "master": "vpar", "mode": "bridge", "ipam": node.ipam("192.0.2.0/24", None)});
    let p = multus_add(
        &node,
        "c1",
        &pod,
        "old",
        &[
            Delegate::new("cbr0", cluster),
            Delegate::new("pods/old-net", old),
        ],
    );
    assert!(p.results[1]["ip4"]["ip"].is_string(), "{}", p.results[1]);
    assert_eq!(node.leases().len(), 2);
    let conf = multus_conf(&node, "1.0.0");
    let netns = pod.path().to_string_lossy().into_owned();
    run(&node, "DEL", &p, &netns, &conf).ok();
    assert_clean(&node, Some(&pod));
}

/// The way back: a pod set up here, then torn down from what Multus reads alone. The cache file
/// is Multus's list of delegate records (this engine's entry rides in the first one, under a key
/// Go's decoder ignores); with that entry and this engine's results file removed, as Multus
/// would see the node after a rollback, DEL runs Multus's teardown from the records: every
/// interface and every lease goes.
#[test]
fn a_pod_set_up_here_is_torn_down_from_multus_records_alone() {
    let Some(node) = common::root_node("a_pod_set_up_here_is_torn_down_from_multus_records_alone")
    else {
        return;
    };
    node.macvlan_nad("1.0.0");
    node.bridge_nad("1.0.0");
    node.pod(
        "pods",
        "back",
        "uid-back",
        &json!({"k8s.v1.cni.cncf.io/networks":
                json!([{"name": "macvlan-net"}, {"name": "bridge-net", "interface": "data0"}])
                    .to_string()}),
    );
    let pod = Netns::new("cpd");
    let conf = node.multus_conf("1.0.0");
    node.run("ADD", "c1", Some(&pod), "back", &conf).ok();
    assert_eq!(link_names(&pod), vec!["data0", "eth0", "lo", "net1"]);
    assert_eq!(node.leases().len(), 3);

    let path = node.path("cache").join("c1");
    let mut file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let records = file
        .as_array_mut()
        .expect("the cache is Multus's list of records");
    assert_eq!(records.len(), 3);
    assert_eq!(records[1]["Name"], "pods/macvlan-net");
    assert_eq!(records[2]["ifnameRequest"], "data0");
    assert!(
        records[0]
            .as_object_mut()
            .unwrap()
            .remove("multusRsEntry")
            .is_some()
    );
    std::fs::write(&path, file.to_string()).unwrap();
    std::fs::remove_file(node.path("cache").join("results").join("c1")).unwrap();

    let netns = pod.path().to_string_lossy().into_owned();
    node.run_with_args(
        "DEL",
        "c1",
        &netns,
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=pods;K8S_POD_NAME=back",
        &conf,
    )
    .ok();
    assert_clean(&node, Some(&pod));
}
