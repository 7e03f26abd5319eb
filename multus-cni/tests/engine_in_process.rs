//! Root tests of the engine used as a library (as the agent will): network-status, hooks,
//! capabilities and device ids, with the real plugins, from a thread inside a node namespace.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::sync::{Arc, Mutex};

use common::{addrs, in_netns, link_names};
use multus_cni::{
    Engine, NetConf,
    cni::Request,
    delegate::{CountingExec, ProcessExec},
    engine::{Attachment, Device, DeviceProvider, DeviceRequest, HookError, Hooks},
    network::{LocalFiles, PodKey, SourceError},
};
use multus_testkit::Netns;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

fn request(command: &str, container: &str, pod: &Netns, name: &str, conf: &Value) -> Request {
    let netns = pod.path().to_string_lossy().into_owned();
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=pods;K8S_POD_NAME={name}");
    let env = move |k: &str| -> Option<String> {
        Some(match k {
            "CNI_COMMAND" => command.to_owned(),
            "CNI_CONTAINERID" => container.to_owned(),
            "CNI_NETNS" => netns.clone(),
            "CNI_IFNAME" => "eth0".to_owned(),
            "CNI_PATH" => common::PLUGIN_DIR.to_owned(),
            "CNI_ARGS" => args.clone(),
            _ => return None,
        })
    };
    Request::from_env(env, conf.to_string().into_bytes()).unwrap()
}

#[derive(Default)]
struct Recorder {
    added: Mutex<Vec<Attachment>>,
    deleted: Mutex<Vec<Attachment>>,
    fail_add: bool,
}

impl Hooks for Recorder {
    fn after_add(&self, attachments: &[Attachment]) -> Result<(), HookError> {
        self.added.lock().unwrap().extend_from_slice(attachments);
        if self.fail_add {
            return Err(HookError {
                code: 120,
                message: "dataplane refused".into(),
            });
        }
        Ok(())
    }

    fn on_del(&self, attachments: &[Attachment]) -> Result<(), HookError> {
        self.deleted.lock().unwrap().extend_from_slice(attachments);
        Ok(())
    }
}

#[test]
fn network_status_hooks_and_counting() {
    let Some(node) = common::root_node("network_status_hooks_and_counting") else {
        return;
    };
    node.macvlan_nad("1.0.0");
    node.bridge_nad("1.0.0");
    node.pod(
        "pods",
        "st",
        "u-st",
        &json!({NETWORKS: "macvlan-net,bridge-net@data0"}),
    );
    let pod = Netns::new("cpd");
    let conf = node.multus_conf("1.1.0");
    let nc = NetConf::parse(conf.to_string().as_bytes()).unwrap();
    let hooks = Arc::new(Recorder::default());
    let exec = Arc::new(CountingExec::new(ProcessExec));
    let engine = Engine::new(Arc::new(LocalFiles::new(node.path("local"))))
        .with_hooks(Arc::clone(&hooks) as Arc<dyn Hooks>)
        .with_exec(Arc::clone(&exec) as Arc<dyn multus_cni::delegate::Exec>);
    let out = in_netns(&node.netns.path(), || {
        engine.add(&request("ADD", "c1", &pod, "st", &conf), &nc)
    })
    .unwrap();
    // bridge (eth0), macvlan (net1), bridge + tuning (data0); IPAM runs inside them.
    assert_eq!(exec.calls(), 4);
    assert!(exec.nanos() > 0);

    let status = serde_json::to_value(&out.network_status).unwrap();
    let s = status.as_array().unwrap();
    assert_eq!(s.len(), 3, "{status}");
    assert_eq!(s[0]["name"], "cluster");
    assert_eq!(s[0]["interface"], "eth0");
    assert_eq!(s[0]["default"], true);
    assert_eq!(s[0]["gateway"], json!(["203.0.113.1"]));
    // Multus's keys only: no `default-route`, `default` only when true, `dns` always.
    assert!(s[0].get("default-route").is_none(), "{status}");
    assert_eq!(s[1]["name"], "pods/macvlan-net");
    assert_eq!(s[1]["interface"], "net1");
    assert!(s[1].get("default").is_none(), "{status}");
    assert_eq!(s[1]["dns"], json!({}));
    assert_eq!(s[2]["name"], "pods/bridge-net");
    assert_eq!(s[2]["interface"], "data0");
    for (entry, ifname) in s.iter().zip(["eth0", "net1", "data0"]) {
        let ip = entry["ips"][0].as_str().unwrap();
        assert_eq!(addrs(&pod, ifname), vec![format!("{ip}/24")]);
        let link: Value =
            serde_json::from_str(&pod.ip(&["-j", "link", "show", "dev", ifname])).unwrap();
        assert_eq!(entry["mac"], link[0]["address"], "{ifname}");
    }
    assert_eq!(out.result["cniVersion"], "1.1.0");

    // The hook saw every attachment with its addresses, MAC and pod.
    let added = hooks.added.lock().unwrap().clone();
    assert_eq!(added.len(), 3);
    assert_eq!(added[1].network, "pods/macvlan-net");
    assert!(added[1].ips[0].to_string().starts_with("192.0.2."));
    assert_eq!(added[1].netns.as_deref(), Some(pod.path().as_path()));
    assert_eq!(added[1].pod.as_ref().unwrap().name, "st");
    assert!(added[0].cluster && !added[1].cluster);

    in_netns(&node.netns.path(), || {
        engine.del(&request("DEL", "c1", &pod, "st", &conf), &nc)
    })
    .unwrap();
    let deleted = hooks.deleted.lock().unwrap().clone();
    assert_eq!(deleted, added, "DEL's hook gets what ADD's hook got");
    assert_eq!(link_names(&pod), vec!["lo"]);
    assert!(node.leases().is_empty());
}

#[test]
fn a_failing_hook_rolls_the_add_back() {
    let Some(node) = common::root_node("a_failing_hook_rolls_the_add_back") else {
        return;
    };
    node.macvlan_nad("1.0.0");
    node.pod("pods", "h", "u-h", &json!({NETWORKS: "macvlan-net"}));
    let pod = Netns::new("cpd");
    let conf = node.multus_conf("1.0.0");
    let hooks = Arc::new(Recorder {
        fail_add: true,
        ..Recorder::default()
    });
    let engine = Engine::new(Arc::new(LocalFiles::new(node.path("local")))).with_hooks(hooks);
    let reply = in_netns(&node.netns.path(), || {
        let req = request("ADD", "c1", &pod, "h", &conf);
        engine.handle(&req, &NetConf::parse(&req.config).unwrap())
    });
    assert_eq!(reply.exit_code, 1);
    let err: Value = serde_json::from_str(&reply.stdout).unwrap();
    assert_eq!(err["code"], 120);
    assert!(err["msg"].as_str().unwrap().contains("dataplane refused"));
    assert_eq!(link_names(&pod), vec!["lo"]);
    assert!(node.leases().is_empty());
    assert!(node.cache_files().is_empty());
}

struct OneDevice;

impl DeviceProvider for OneDevice {
    fn assign(
        &self,
        _pod: Option<&PodKey>,
        requests: &[DeviceRequest],
    ) -> Result<Vec<Option<Device>>, SourceError> {
        Ok(requests
            .iter()
            .map(|r| {
                (r.resource_name == "example.com/nic").then(|| Device {
                    device_id: "0000:00:1f.6".into(),
                    device_info: Some(json!({"type": "pci", "version": "1.1.0"})),
                    published: false,
                })
            })
            .collect())
    }
}

#[test]
fn requested_ips_reach_only_capable_plugins_and_devices_resolve() {
    let Some(node) =
        common::root_node("requested_ips_reach_only_capable_plugins_and_devices_resolve")
    else {
        return;
    };
    // macvlan + static IPAM, taking the address from runtimeConfig ips.
    let doc = json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "static-net", "namespace": "pods",
                     "annotations": {"k8s.v1.cni.cncf.io/resourceName": "example.com/nic"}},
        "spec": {"config": json!({"cniVersion": "1.0.0", "name": "static-net", "plugins": [
            {"type": "macvlan", "master": "vpar", "capabilities": {"ips": true},
             "ipam": {"type": "static"}}]}).to_string()},
    });
    std::fs::write(node.path("local").join("static.json"), doc.to_string()).unwrap();
    node.pod(
        "pods",
        "ip",
        "u-ip",
        &json!({NETWORKS: json!([{"name": "static-net", "ips": ["192.0.2.77/24"],
                                  "cni-args": {"note": "x"}}]).to_string()}),
    );
    let pod = Netns::new("cpd");
    let conf = node.multus_conf("1.0.0");
    let nc = NetConf::parse(conf.to_string().as_bytes()).unwrap();
    let engine = Engine::new(Arc::new(LocalFiles::new(node.path("local"))))
        .with_devices(Arc::new(OneDevice));
    let out = in_netns(&node.netns.path(), || {
        engine.add(&request("ADD", "c1", &pod, "ip", &conf), &nc)
    })
    .unwrap();
    assert_eq!(addrs(&pod, "net1"), vec!["192.0.2.77/24"]);
    assert_eq!(out.network_status[1].ips, vec!["192.0.2.77"]);
    assert_eq!(
        out.network_status[1].device_info,
        Some(json!({"type": "pci", "version": "1.1.0"}))
    );
    // The cache holds the exact bytes handed to the delegate, device id and cni-args included.
    let cache = common::own_cache_entry(&node, "c1");
    let cached: Value =
        serde_json::from_str(cache["delegates"][1]["config"].as_str().unwrap()).unwrap();
    assert_eq!(cached["plugins"][0]["deviceID"], "0000:00:1f.6");
    assert_eq!(cached["plugins"][0]["args"]["cni"]["note"], "x");
    assert_eq!(
        cache["delegates"][1]["runtimeConfig"]["ips"],
        json!(["192.0.2.77/24"])
    );
    in_netns(&node.netns.path(), || {
        engine.del(&request("DEL", "c1", &pod, "ip", &conf), &nc)
    })
    .unwrap();
    assert_eq!(link_names(&pod), vec!["lo"]);
}
