//! Device IDs from a real gRPC PodResources server on a unix socket (a small tonic server that
//! speaks kubelet's v1 `List`), and from the checkpoint file when there is no socket.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
use std::{path::Path, time::Duration};

use multus_kube::podresources::{
    DeviceSource, PodRef, PodResourcesConfig, pod_devices,
    proto::{ContainerResources, ListPodResourcesResponse, PodResources},
    testing::{FakeKubelet, devices},
};

fn allocation() -> ListPodResourcesResponse {
    ListPodResourcesResponse {
        pod_resources: vec![
            PodResources {
                name: "sriov-pod".into(),
                namespace: "tenant-a".into(),
                containers: vec![
                    ContainerResources {
                        name: "app".into(),
                        devices: vec![devices(
                            "example.com/sriov_nic",
                            &["0000:03:00.4", "0000:03:00.2"],
                        )],
                        cpu_ids: vec![2, 3],
                    },
                    ContainerResources {
                        name: "sidecar".into(),
                        devices: vec![
                            devices("example.com/sriov_nic", &["0000:03:00.3"]),
                            devices("example.com/gpu", &["gpu-0"]),
                        ],
                        cpu_ids: vec![],
                    },
                ],
            },
            // Same name in another namespace: must not be mixed in.
            PodResources {
                name: "sriov-pod".into(),
                namespace: "tenant-b".into(),
                containers: vec![ContainerResources {
                    name: "app".into(),
                    devices: vec![devices("example.com/sriov_nic", &["0000:04:00.1"])],
                    cpu_ids: vec![],
                }],
            },
        ],
    }
}

fn config(dir: &Path) -> PodResourcesConfig {
    PodResourcesConfig {
        socket: dir.join("kubelet.sock"),
        checkpoint: dir.join("kubelet_internal_checkpoint"),
        timeout: Duration::from_secs(2),
    }
}

const POD: PodRef<'static> = PodRef {
    namespace: "tenant-a",
    name: "sriov-pod",
    uid: "4b6d7c1e-0000-4000-8000-000000000001",
};

#[test]
fn device_ids_from_the_pod_resources_socket() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let kubelet = FakeKubelet::start(&config.socket, allocation()).unwrap();
    let got = pod_devices(&config, POD).unwrap();
    assert_eq!(got.source, DeviceSource::PodResources);
    assert_eq!(
        got.device_ids("example.com/sriov_nic"),
        ["0000:03:00.2", "0000:03:00.3", "0000:03:00.4"]
    );
    assert_eq!(got.device_ids("example.com/gpu"), ["gpu-0"]);
    assert!(got.device_ids("example.com/other").is_empty());
    let other = pod_devices(
        &config,
        PodRef {
            name: "nobody",
            ..POD
        },
    )
    .unwrap();
    assert!(other.devices.is_empty());
    assert_eq!(kubelet.calls(), 2);
    // A checkpoint is ignored while the socket exists.
    std::fs::write(&config.checkpoint, "{}").unwrap();
    assert_eq!(
        pod_devices(&config, POD).unwrap().source,
        DeviceSource::PodResources
    );
    drop(kubelet);
}

#[test]
fn a_dead_socket_is_an_error_not_a_silent_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    // A socket file nobody listens on, as kubelet leaves behind when it is down.
    drop(std::os::unix::net::UnixListener::bind(&config.socket).unwrap());
    std::fs::write(
        &config.checkpoint,
        r#"{"Data":{"PodDeviceEntries":[]},"Checksum":0}"#,
    )
    .unwrap();
    let err = pod_devices(&config, POD).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("PodResources List") && text.contains("kubelet.sock"),
        "{text}"
    );
}

#[test]
fn checkpoint_fallback_when_the_socket_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    std::fs::write(
        &config.checkpoint,
        format!(
            r#"{{"Data":{{"PodDeviceEntries":[
                {{"PodUID":"{uid}","ContainerName":"app","ResourceName":"example.com/sriov_nic",
                  "DeviceIDs":{{"0":["0000:03:00.5"],"1":["0000:81:00.1"]}},"AllocResp":"CgA="}},
                {{"PodUID":"someone-else","ContainerName":"app","ResourceName":"example.com/sriov_nic",
                  "DeviceIDs":{{"0":["0000:03:00.6"]}},"AllocResp":"CgA="}}],
              "RegisteredDevices":{{"example.com/sriov_nic":["0000:03:00.5","0000:03:00.6","0000:81:00.1"]}}}},
              "Checksum":12345}}"#,
            uid = POD.uid
        ),
    )
    .unwrap();
    let got = pod_devices(&config, POD).unwrap();
    assert_eq!(got.source, DeviceSource::Checkpoint);
    assert_eq!(
        got.device_ids("example.com/sriov_nic"),
        ["0000:03:00.5", "0000:81:00.1"]
    );
}
