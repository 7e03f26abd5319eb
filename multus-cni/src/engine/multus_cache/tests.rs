use std::fs;

use base64::Engine as _;
use serde_json::json;

use super::*;

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

/// A pod Multus set up: the cluster network (bridge conf), a macvlan NAD without interface
/// request, and a bridge+tuning conflist NAD asking for `data0`, an IP and a device.
struct Fixture {
    dir: tempfile::TempDir,
    scratch: Value,
}

fn cluster() -> Value {
    json!({"cniVersion": "0.4.0", "name": "cbr0", "type": "bridge", "bridge": "cni0",
           "ipam": {"type": "host-local", "subnet": "203.0.113.0/24"}})
}

fn macvlan() -> Value {
    json!({"cniVersion": "1.0.0", "name": "macvlan-net", "type": "macvlan", "master": "vpar",
           "ipam": {"type": "host-local", "subnet": "192.0.2.0/24"}})
}

fn conflist_without_version() -> Value {
    json!({"name": "bridge-net", "plugins": [
        {"type": "bridge", "bridge": "br1", "capabilities": {"ips": true, "deviceID": true},
         "ipam": {"type": "static"}},
        {"type": "tuning", "mtu": 1400}]})
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("results")).unwrap();
        let scratch = json!([
            {"Name": "cbr0", "Bytes": b64(&cluster())},
            {"Name": "pods/macvlan-net", "Bytes": b64(&macvlan())},
            {"Name": "pods/bridge-net", "ifnameRequest": "data0",
             "ipRequest": ["198.51.100.7/24"], "deviceID": "0000:03:00.1",
             "resourceName": "example.com/nic", "Bytes": b64(&conflist_without_version())},
        ]);
        Self { dir, scratch }
    }

    fn result_file(&self, name: &str, content: &Value) {
        fs::write(
            self.dir.path().join("results").join(name),
            content.to_string(),
        )
        .unwrap();
    }

    fn convert(&self, inv: &Invocation<'_>) -> Converted {
        convert(&self.dir.path().join("c1"), &self.scratch, inv).unwrap()
    }
}

fn del_invocation<'a>(
    dir: &'a Path,
    args: &'a CniArgs,
    rc: &'a Map<String, Value>,
) -> Invocation<'a> {
    Invocation {
        container_id: "c1",
        ifname: Some("eth0"),
        args: Some(args),
        runtime_config: rc,
        cni_version: CniVersion::V1_0_0,
        cni_dir: dir,
    }
}

#[test]
fn del_without_libcni_files_follows_multus_rules() {
    let f = Fixture::new();
    let args = CniArgs::parse(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=pods;K8S_POD_NAME=web;\
         K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u1",
    )
    .unwrap();
    let rc = json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                    "ips": [], "unknownKey": 1});
    let got = f.convert(&del_invocation(
        f.dir.path(),
        &args,
        rc.as_object().unwrap(),
    ));
    let e = &got.entry;
    assert_eq!(e.container_id, "c1");
    assert_eq!(e.ifname, "eth0");
    assert_eq!(
        e.pod,
        Some(CachedPod {
            namespace: "pods".into(),
            name: "web".into(),
            uid: Some("u1".into())
        })
    );
    let names: Vec<(&str, &str, bool)> = e
        .delegates
        .iter()
        .map(|d| (d.network.as_str(), d.ifname.as_str(), d.cluster))
        .collect();
    assert_eq!(
        names,
        vec![
            ("cbr0", "eth0", true),
            ("pods/macvlan-net", "net1", false),
            ("pods/bridge-net", "data0", false)
        ]
    );
    // Multus's pairs first, then the request's (its IgnoreUnknown=1 appended, the K8S_* keys
    // appended again because Multus's own were already filled).
    assert_eq!(
        e.delegates[1].cni_args,
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=pods;K8S_POD_NAME=web;\
         K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u1;IgnoreUnknown=1;K8S_POD_NAMESPACE=pods;\
         K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u1"
    );
    // Runtime config: the runtime's known, non-empty keys for everyone; the records' requests
    // for the secondaries; the device-info file for the device.
    let ports = rc["portMappings"].clone();
    assert_eq!(
        Value::Object(e.delegates[0].runtime_config.clone()),
        json!({"portMappings": ports})
    );
    assert_eq!(
        Value::Object(e.delegates[1].runtime_config.clone()),
        json!({"portMappings": ports})
    );
    assert_eq!(
        Value::Object(e.delegates[2].runtime_config.clone()),
        json!({"portMappings": ports, "ips": ["198.51.100.7/24"], "deviceID": "0000:03:00.1",
               "CNIDeviceInfoFile":
                   "/var/run/k8s.cni.cncf.io/devinfo/cni/pods-bridge-net-c1_data0"})
    );
    // The conflist without cniVersion gets Multus's; the others keep their own bytes.
    let conf2: Value = serde_json::from_str(&e.delegates[2].config).unwrap();
    assert_eq!(conf2["cniVersion"], "1.0.0");
    assert_eq!(conf2["plugins"], conflist_without_version()["plugins"]);
    let conf0: Value = serde_json::from_str(&e.delegates[0].config).unwrap();
    assert_eq!(conf0, cluster());
    assert!(e.delegates.iter().all(|d| d.result.is_none()));
    let results = f.dir.path().join("results");
    assert_eq!(
        got.leftovers,
        vec![
            results.join("cbr0-c1-eth0"),
            results.join("macvlan-net-c1-net1"),
            results.join("bridge-net-c1-data0"),
        ]
    );
}

#[test]
fn del_with_libcni_files_uses_their_result_and_runtime_config() {
    let f = Fixture::new();
    // The cluster network's result in 0.4.0, the macvlan's in 1.0.0 (as the plugins printed
    // them), the conflist's as 0.4.0 while its configuration says 1.0.0 (converted).
    let r0 = json!({"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "sandbox": "/x"}],
        "ips": [{"version": "4", "address": "203.0.113.10/24", "interface": 0}]});
    let r1 = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": "/x"}],
        "ips": [{"address": "192.0.2.10/24", "interface": 0}]});
    let r2 = json!({"cniVersion": "0.4.0", "interfaces": [{"name": "data0", "sandbox": "/x"}],
        "ips": [{"version": "4", "address": "198.51.100.7/24", "interface": 0}]});
    let cached = |ifname: &str, result: &Value, caps: Value| {
        json!({"kind": "cniCacheV1", "containerId": "c1", "ifName": ifname,
               "networkName": "n", "netns": "/var/run/netns/p1", "config": "e30=",
               "cniArgs": [["IgnoreUnknown", "true"], ["K8S_POD_NAMESPACE", "pods"],
                           ["K8S_POD_NAME", "web"], ["K8S_POD_UID", "u1"]],
               "capabilityArgs": caps, "result": result})
    };
    f.result_file("cbr0-c1-eth0", &cached("eth0", &r0, json!({})));
    f.result_file(
        "macvlan-net-c1-net1",
        &cached("net1", &r1, json!({"mac": "x"})),
    );
    let devinfo = "/tmp/devinfo/cni/pods-bridge-net-c1_data0";
    f.result_file(
        "bridge-net-c1-data0",
        &cached(
            "data0",
            &r2,
            json!({"ips": ["198.51.100.7/24"], "CNIDeviceInfoFile": devinfo}),
        ),
    );
    let args = CniArgs::parse("K8S_POD_NAMESPACE=pods;K8S_POD_NAME=web").unwrap();
    let rc = Map::new();
    let got = f.convert(&del_invocation(f.dir.path(), &args, &rc));
    let d = &got.entry.delegates;
    assert_eq!(d[0].result, Some(r0));
    assert_eq!(d[1].result, Some(r1));
    let converted = d[2].result.clone().unwrap();
    assert_eq!(converted["cniVersion"], "1.0.0");
    assert!(converted["ips"][0].get("version").is_none(), "{converted}");
    assert_eq!(converted["ips"][0]["address"], "198.51.100.7/24");
    assert!(d[0].runtime_config.is_empty());
    assert_eq!(
        Value::Object(d[1].runtime_config.clone()),
        json!({"mac": "x"})
    );
    assert_eq!(d[2].runtime_config["CNIDeviceInfoFile"], devinfo);
    // DEL removes the device-information file with its delegate, as for this engine's entries:
    // it is no leftover of the entry.
    assert!(!got.leftovers.iter().any(|l| l == Path::new(devinfo)));
    assert_eq!(got.entry.netns, Some(PathBuf::from("/var/run/netns/p1")));
    // DEL builds CNI_ARGS from the request, not from the cache.
    assert_eq!(
        d[0].cni_args,
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=pods;K8S_POD_NAME=web;\
         K8S_POD_INFRA_CONTAINER_ID=;K8S_POD_UID=;K8S_POD_NAMESPACE=pods;K8S_POD_NAME=web"
    );
}

#[test]
fn gc_takes_ifname_and_args_from_libcni() {
    let f = Fixture::new();
    let r0 = json!({"cniVersion": "0.4.0"});
    f.result_file(
        "cbr0-c1-eth9",
        &json!({"kind": "cniCacheV1", "containerId": "c1", "ifName": "eth9",
                "netns": "/var/run/netns/p1",
                "cniArgs": [["IgnoreUnknown", "true"], ["K8S_POD_NAMESPACE", "pods"],
                            ["K8S_POD_NAME", "web"]], "result": r0}),
    );
    let rc = Map::new();
    let inv = Invocation {
        container_id: "c1",
        ifname: None,
        args: None,
        runtime_config: &rc,
        cni_version: CniVersion::V1_1_0,
        cni_dir: f.dir.path(),
    };
    let got = f.convert(&inv);
    assert_eq!(got.entry.ifname, "eth9");
    assert_eq!(got.entry.delegates[0].ifname, "eth9");
    assert_eq!(got.entry.delegates[1].ifname, "net1");
    assert_eq!(
        got.entry.delegates[1].cni_args,
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=pods;K8S_POD_NAME=web"
    );
    assert_eq!(got.entry.pod.as_ref().unwrap().name, "web");

    // Nothing in libcni's cache: eth0 and Multus's pairs with empty values.
    fs::remove_file(f.dir.path().join("results/cbr0-c1-eth9")).unwrap();
    let got = f.convert(&inv);
    assert_eq!(got.entry.ifname, "eth0");
    assert_eq!(got.entry.pod, None);
    assert_eq!(
        got.entry.delegates[0].cni_args,
        "IgnoreUnknown=true;K8S_POD_NAMESPACE=;K8S_POD_NAME=;K8S_POD_INFRA_CONTAINER_ID=;\
         K8S_POD_UID="
    );
}

#[test]
fn a_corrupt_libcni_file_means_no_prev_result() {
    let f = Fixture::new();
    f.result_file("cbr0-c1-eth0", &json!("garbage"));
    let args = CniArgs::default();
    let rc = Map::new();
    let got = f.convert(&del_invocation(f.dir.path(), &args, &rc));
    assert_eq!(got.entry.delegates[0].result, None);
    assert!(
        got.leftovers
            .contains(&f.dir.path().join("results/cbr0-c1-eth0"))
    );
}

#[test]
fn a_bad_scratch_file_is_a_decode_error() {
    let f = Fixture::new();
    let args = CniArgs::default();
    let rc = Map::new();
    let inv = del_invocation(f.dir.path(), &args, &rc);
    let err = convert(Path::new("/x/c1"), &json!([{"Bytes": "!"}]), &inv).unwrap_err();
    assert_eq!(err.code(), 6);
    assert!(
        err.to_string().contains("Multus's scratch cache /x/c1"),
        "{err}"
    );
}
