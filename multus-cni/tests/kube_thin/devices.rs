//! Device IDs for NADs with `k8s.v1.cni.cncf.io/resourceName`: from a PodResources gRPC server
//! on a unix socket (a stand-in for kubelet), else kubelet's checkpoint file, into the delegate's
//! configuration and the network-status `device-info`; the device plugin's device information
//! handed to the delegate in its `CNIDeviceInfoFile`.
use std::os::unix::fs::PermissionsExt as _;

use multus_kube::podresources::{
    proto::{ContainerResources, ListPodResourcesResponse, PodResources},
    testing::{FakeKubelet, devices, write_checkpoint},
};
use serde_json::{Value, json};

use super::{Kube, NETWORKS, TestPod, create_nad};
use crate::common::{PLUGIN_DIR, link_names};

const RESOURCE: &str = "example.com/sriov_nic";

/// A delegate `recmacvlan` in the node's bin directory: records its stdin per command and
/// interface, then runs the real macvlan plugin with it.
fn recording_plugin(k: &Kube) {
    let path = k.node.path("bin").join("recmacvlan");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nin=$(cat)\nprintf '%s' \"$in\" > \"{}/record-$CNI_COMMAND-$CNI_IFNAME.json\"\n\
             printf '%s' \"$in\" | exec {PLUGIN_DIR}/macvlan\n",
            k.node.dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// What the recording plugin got for `command` on `ifname`.
fn recorded(k: &Kube, command: &str, ifname: &str) -> Value {
    let path = k.node.path(&format!("record-{command}-{ifname}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn device_nad(k: &Kube, ns: &multus_testkit::kube::TestNamespace) {
    create_nad(
        ns,
        "sriov-net",
        &json!({"cniVersion": "1.0.0", "type": "recmacvlan", "master": "vpar", "mode": "bridge",
                "capabilities": {"deviceID": true},
                "ipam": k.node.ipam("192.0.2.0/24", None)}),
        &json!({"k8s.v1.cni.cncf.io/resourceName": RESOURCE}),
    );
}

/// Asserts that `ifname` got `id` in its configuration, its runtimeConfig and network-status.
#[track_caller]
fn assert_device(k: &Kube, pod: &TestPod, ifname: &str, id: &str) {
    let conf = recorded(k, "ADD", ifname);
    assert_eq!(conf["deviceID"], id, "{conf}");
    assert_eq!(conf["pciBusID"], id, "{conf}");
    assert_eq!(conf["runtimeConfig"]["deviceID"], id, "{conf}");
    let status: Value = serde_json::from_str(&k.status(pod).unwrap()).unwrap();
    let entry = status
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["interface"] == ifname)
        .unwrap_or_else(|| panic!("no status for {ifname}: {status}"));
    assert_eq!(
        entry["device-info"],
        json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": id}})
    );
}

#[test]
fn device_ids_from_pod_resources_reach_the_delegate() {
    let Some(k) = Kube::new("device_ids_from_pod_resources_reach_the_delegate") else {
        return;
    };
    recording_plugin(&k);
    let ns = k.cluster.namespace("kdev");
    device_nad(&k, &ns);
    let conf = k.conf();
    // The same network twice: each attachment takes the next device, in sorted order.
    let pod = k.pod(&ns, "sriov", &json!({NETWORKS: "sriov-net,sriov-net"}));
    let socket_dir = k.node.path("kubelet/pod-resources");
    std::fs::create_dir_all(&socket_dir).unwrap();
    let answer = ListPodResourcesResponse {
        pod_resources: vec![
            PodResources {
                name: pod.name.clone(),
                namespace: pod.namespace.clone(),
                containers: vec![ContainerResources {
                    name: "app".into(),
                    devices: vec![devices(RESOURCE, &["0000:03:00.4", "0000:03:00.2"])],
                    cpu_ids: vec![],
                }],
            },
            PodResources {
                name: "someone-else".into(),
                namespace: pod.namespace.clone(),
                containers: vec![ContainerResources {
                    name: "app".into(),
                    devices: vec![devices(RESOURCE, &["0000:03:00.1"])],
                    cpu_ids: vec![],
                }],
            },
        ],
    };
    let kubelet = FakeKubelet::start(&socket_dir.join("kubelet.sock"), answer).unwrap();
    k.run("ADD", "c-dev", &pod, &conf).ok();
    assert_eq!(kubelet.calls(), 1);
    assert_eq!(link_names(&pod.netns), vec!["eth0", "lo", "net1", "net2"]);
    assert_device(&k, &pod, "net1", "0000:03:00.2");
    assert_device(&k, &pod, "net2", "0000:03:00.4");
    // DEL gives the delegate the same configuration, from the cache, without asking kubelet.
    k.run("DEL", "c-dev", &pod, &conf).ok();
    assert_eq!(recorded(&k, "DEL", "net2")["deviceID"], "0000:03:00.4");
    assert_eq!(kubelet.calls(), 1);
    k.assert_clean(&pod);
}

#[test]
fn without_the_socket_devices_come_from_the_checkpoint() {
    let Some(k) = Kube::new("without_the_socket_devices_come_from_the_checkpoint") else {
        return;
    };
    recording_plugin(&k);
    let ns = k.cluster.namespace("kchk");
    device_nad(&k, &ns);
    let conf = k.conf();
    let pod = k.pod(&ns, "sriov", &json!({NETWORKS: "sriov-net"}));
    write_checkpoint(
        &k.node.path("kubelet"),
        &[
            (&pod.uid, RESOURCE, &["0000:81:00.6"]),
            ("another-pod", RESOURCE, &["0000:81:00.1"]),
        ],
    )
    .unwrap();
    k.run("ADD", "c-chk", &pod, &conf).ok();
    assert_device(&k, &pod, "net1", "0000:81:00.6");
    k.run("DEL", "c-chk", &pod, &conf).ok();
    k.assert_clean(&pod);
}

/// A delegate `recdevinfo` in the node's bin directory: on ADD it keeps a copy of its
/// `CNIDeviceInfoFile` as it found it, then adds a field to the file (as a plugin that reports
/// device details would), then runs the real macvlan plugin.
fn device_info_plugin(k: &Kube) {
    let path = k.node.path("bin").join("recdevinfo");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nin=$(cat)\n\
             f=$(printf '%s' \"$in\" | jq -r '.runtimeConfig.CNIDeviceInfoFile // empty')\n\
             printf '%s' \"$f\" > \"{dir}/devinfo-path-$CNI_COMMAND-$CNI_IFNAME\"\n\
             if [ \"$CNI_COMMAND\" = ADD ] && [ -f \"$f\" ]; then\n\
               cp \"$f\" \"{dir}/devinfo-found-$CNI_IFNAME.json\"\n\
               jq -c '. + {{\"rewritten-by\": \"delegate\"}}' \"$f\" > \"$f.new\" && mv \"$f.new\" \"$f\"\n\
             fi\n\
             printf '%s' \"$in\" | exec {PLUGIN_DIR}/macvlan\n",
            dir = k.node.dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn published_device_information_reaches_the_delegate_and_goes_on_del() {
    let Some(k) = Kube::new("published_device_information_reaches_the_delegate_and_goes_on_del")
    else {
        return;
    };
    device_info_plugin(&k);
    let ns = k.cluster.namespace("kdinfo");
    create_nad(
        &ns,
        "sriov-net",
        &json!({"cniVersion": "1.0.0", "type": "recdevinfo", "master": "vpar", "mode": "bridge",
                "capabilities": {"deviceID": true, "CNIDeviceInfoFile": true},
                "ipam": k.node.ipam("192.0.2.0/24", None)}),
        &json!({"k8s.v1.cni.cncf.io/resourceName": RESOURCE}),
    );
    // The device plugin published information for one of the pod's two devices.
    let published = json!({"type": "pci", "version": "1.1.0",
                           "pci": {"pci-address": "0000:03:00.2", "pf-pci-address": "0000:03:00.0"}});
    let dp = k.node.path("devinfo/dp");
    std::fs::create_dir_all(&dp).unwrap();
    std::fs::write(
        dp.join("example.com-sriov_nic-0000:03:00.2-device.json"),
        published.to_string(),
    )
    .unwrap();
    let pod = k.pod(&ns, "sriov", &json!({NETWORKS: "sriov-net,sriov-net"}));
    let socket_dir = k.node.path("kubelet/pod-resources");
    std::fs::create_dir_all(&socket_dir).unwrap();
    let answer = ListPodResourcesResponse {
        pod_resources: vec![PodResources {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            containers: vec![ContainerResources {
                name: "app".into(),
                devices: vec![devices(RESOURCE, &["0000:03:00.2", "0000:03:00.4"])],
                cpu_ids: vec![],
            }],
        }],
    };
    let _kubelet = FakeKubelet::start(&socket_dir.join("kubelet.sock"), answer).unwrap();
    let conf = k.conf();
    k.run("ADD", "c-info", &pod, &conf).ok();

    // Each delegate was told its file, named as Multus names it.
    let cni_dir = k.node.path("devinfo/cni");
    let file = |ifname: &str| cni_dir.join(format!("{}-sriov-net-c-info_{ifname}", pod.namespace));
    let told = |command: &str, ifname: &str| {
        std::fs::read_to_string(k.node.path(&format!("devinfo-path-{command}-{ifname}"))).unwrap()
    };
    assert_eq!(told("ADD", "net1"), file("net1").to_str().unwrap());
    assert_eq!(told("ADD", "net2"), file("net2").to_str().unwrap());
    // The published information was in the file when the delegate started; the other device
    // had none to copy.
    let found: Value = serde_json::from_str(
        &std::fs::read_to_string(k.node.path("devinfo-found-net1.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(found, published);
    assert!(!k.node.path("devinfo-found-net2.json").exists());
    // network-status shows what the delegate left in the file, else the PCI address.
    let status: Value = serde_json::from_str(&k.status(&pod).unwrap()).unwrap();
    let info = |ifname: &str| {
        status
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["interface"] == ifname)
            .unwrap_or_else(|| panic!("no status for {ifname}: {status}"))["device-info"]
            .clone()
    };
    let mut rewritten = published.clone();
    rewritten["rewritten-by"] = json!("delegate");
    assert_eq!(info("net1"), rewritten, "{status}");
    assert_eq!(
        info("net2"),
        json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.4"}})
    );

    // DEL tells the delegates the same files and removes them afterwards.
    k.run("DEL", "c-info", &pod, &conf).ok();
    assert_eq!(told("DEL", "net1"), file("net1").to_str().unwrap());
    let left: Vec<_> = std::fs::read_dir(&cni_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "device information left: {left:?}");
    k.assert_clean(&pod);
}
