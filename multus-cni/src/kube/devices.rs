//! [`PodResourcesDevices`]: device IDs for NADs with `k8s.v1.cni.cncf.io/resourceName`, from
//! kubelet's PodResources API (or its device-plugin checkpoint), with the device information
//! the device plugin published.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use multus_kube::podresources::{DeviceMap, PodRef, PodResourcesConfig, pod_devices};
use serde_json::{Value, json};
use tracing::{debug, warn};

use super::Cluster;
use crate::{
    engine::{Device, DeviceProvider, DeviceRequest, devinfo},
    network::{PodKey, SourceError},
};

/// Where device plugins publish device information, below `deviceInfoDir` (NPWG Device
/// Information spec).
pub const DEVICE_PLUGIN_SUBDIR: &str = "dp";
/// The Device Information spec version of the entries made here.
const DEVICE_INFO_VERSION: &str = "1.1.0";

/// Assigns the pod's allocated devices to the networks that name their resource.
#[derive(Debug, Clone)]
pub struct PodResourcesDevices {
    config: PodResourcesConfig,
    device_info_dir: PathBuf,
    cluster: Option<Arc<Cluster>>,
}

impl PodResourcesDevices {
    /// Devices from kubelet below `kubelet_root_dir` (its `--root-dir`): the socket
    /// `pod-resources/kubelet.sock`, else the checkpoint `device-plugins/kubelet_internal_checkpoint`;
    /// device information from the device plugins' files in `<device_info_dir>/dp`.
    /// With `cluster`, a pod UID missing from `CNI_ARGS` is taken from the pod read at lookup.
    pub fn new(
        kubelet_root_dir: &Path,
        device_info_dir: &Path,
        cluster: Option<Arc<Cluster>>,
    ) -> Self {
        Self {
            config: PodResourcesConfig {
                socket: kubelet_root_dir.join("pod-resources/kubelet.sock"),
                checkpoint: kubelet_root_dir.join("device-plugins/kubelet_internal_checkpoint"),
                timeout: Duration::from_secs(10),
            },
            device_info_dir: device_info_dir.join(DEVICE_PLUGIN_SUBDIR),
            cluster,
        }
    }
}

impl DeviceProvider for PodResourcesDevices {
    fn assign(
        &self,
        pod: Option<&PodKey>,
        requests: &[DeviceRequest],
    ) -> Result<Vec<Option<Device>>, SourceError> {
        let Some(pod) = pod else {
            warn!("networks name device resources but the runtime named no pod; no devices");
            return Ok(vec![None; requests.len()]);
        };
        // kubelet's checkpoint is keyed by kubelet's UID (a static pod's differs from its
        // mirror's), so the runtime's K8S_POD_UID comes first.
        let uid = pod
            .uid
            .clone()
            .or_else(|| {
                self.cluster
                    .as_ref()
                    .and_then(|c| c.known_pod(&pod.namespace, &pod.name))
                    .map(|p| p.uid)
            })
            .unwrap_or_default();
        let pod_ref = PodRef {
            namespace: &pod.namespace,
            name: &pod.name,
            uid: &uid,
        };
        let map = pod_devices(&self.config, pod_ref).map_err(|e| {
            let what = format!("devices of pod {}/{}", pod.namespace, pod.name);
            // A socket that exists but fails is kubelet being busy or restarting.
            if e.kind().is_try_again_later() {
                SourceError::Unavailable {
                    what,
                    reason: e.to_string(),
                }
            } else {
                SourceError::Invalid {
                    what,
                    reason: e.to_string(),
                }
            }
        })?;
        debug!(source = ?map.source, devices = ?map.devices, "device allocations");
        Ok(assign(&map, requests, &self.device_info_dir))
    }
}

/// Gives each request the next unused device ID of its resource, in sorted order (so two
/// networks on one resource get different devices), with its device information.
pub fn assign(
    map: &DeviceMap,
    requests: &[DeviceRequest],
    device_info_dir: &Path,
) -> Vec<Option<Device>> {
    let mut next: BTreeMap<&str, usize> = BTreeMap::new();
    requests
        .iter()
        .map(|r| {
            let index = next.entry(r.resource_name.as_str()).or_default();
            let Some(id) = map.device_ids(&r.resource_name).get(*index) else {
                warn!(
                    network = %r.network,
                    resource = %r.resource_name,
                    "the pod holds no (further) device of the network's resource"
                );
                return None;
            };
            *index += 1;
            let published = published_info(device_info_dir, &r.resource_name, id);
            Some(Device {
                device_id: id.clone(),
                published: published.is_some(),
                device_info: published.or_else(|| pci_info(id)),
            })
        })
        .collect()
}

/// The device information the device plugin wrote for `device_id`
/// (`<dir>/<resource>-<id>-device.json`, `/` in either turned into `-`).
pub fn published_info(dir: &Path, resource: &str, device_id: &str) -> Option<Value> {
    devinfo::read(&dir.join(format!(
        "{}-{}-device.json",
        resource.replace('/', "-"),
        device_id.replace('/', "-")
    )))
}

/// For a PCI address without published information, a `pci` entry naming it.
fn pci_info(device_id: &str) -> Option<Value> {
    is_pci_address(device_id).then(|| {
        json!({"type": "pci", "version": DEVICE_INFO_VERSION, "pci": {"pci-address": device_id}})
    })
}

/// `DDDD:BB:DD.F` in hex, as kubelet and SR-IOV device plugins name PCI functions.
fn is_pci_address(id: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut parts = id.split(':');
    let (Some(domain), Some(bus), Some(rest), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some((device, function)) = rest.split_once('.') else {
        return false;
    };
    hex(domain, 4)
        && hex(bus, 2)
        && hex(device, 2)
        && function.len() == 1
        && function.bytes().all(|b| (b'0'..=b'7').contains(&b))
}

#[cfg(test)]
mod tests {
    use multus_kube::podresources::DeviceSource;

    use super::*;

    fn request(network: &str, resource: &str) -> DeviceRequest {
        DeviceRequest {
            network: network.into(),
            resource_name: resource.into(),
            ifname: "net1".into(),
        }
    }

    #[test]
    fn successive_devices_per_resource_with_info() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("example.com-nic-0000:03:00.2-device.json"),
            r#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:00.2","pf-pci-address":"0000:03:00.0"}}"#,
        )
        .unwrap();
        let map = DeviceMap {
            devices: BTreeMap::from([
                (
                    "example.com/nic".into(),
                    vec!["0000:03:00.2".into(), "0000:03:00.3".into()],
                ),
                ("example.com/gpu".into(), vec!["gpu-0".into()]),
            ]),
            source: DeviceSource::PodResources,
        };
        let got = assign(
            &map,
            &[
                request("ns/a", "example.com/nic"),
                request("ns/g", "example.com/gpu"),
                request("ns/b", "example.com/nic"),
                request("ns/c", "example.com/nic"),
                request("ns/d", "example.com/none"),
            ],
            dir.path(),
        );
        let ids: Vec<Option<&str>> = got
            .iter()
            .map(|d| d.as_ref().map(|d| d.device_id.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                Some("0000:03:00.2"),
                Some("gpu-0"),
                Some("0000:03:00.3"),
                None,
                None
            ]
        );
        // The device plugin's file wins; a PCI address without one gets a pci entry; other
        // IDs get nothing.
        let info = |i: usize| got[i].as_ref().unwrap().device_info.clone();
        assert_eq!(info(0).unwrap()["pci"]["pf-pci-address"], "0000:03:00.0");
        assert_eq!(
            info(2).unwrap(),
            json!({"type": "pci", "version": "1.1.0", "pci": {"pci-address": "0000:03:00.3"}})
        );
        assert_eq!(info(1), None);
        let published: Vec<bool> = got.iter().flatten().map(|d| d.published).collect();
        assert_eq!(published, [true, false, false]);
    }

    #[test]
    fn pci_addresses() {
        assert!(is_pci_address("0000:03:00.1"));
        assert!(is_pci_address("0000:af:1f.7"));
        for bad in [
            "gpu-0",
            "03:00.1",
            "0000:03:00.8",
            "0000:03:00",
            "0000:03:0g.1",
            "0000:03:00.1:x",
        ] {
            assert!(!is_pci_address(bad), "{bad}");
        }
    }
}
