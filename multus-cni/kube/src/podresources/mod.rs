//! Device IDs allocated to a pod by device plugins: kubelet's PodResources v1 gRPC API (`List`
//! over its unix socket), or, when that socket does not exist, kubelet's device-plugin
//! checkpoint file (matched by pod UID). A NAD with the `resourceName` annotation gets the
//! pod's next device ID of that resource as `runtimeConfig.deviceID`.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    time::Duration,
};

use http::uri::PathAndQuery;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tonic::transport::Endpoint;

use crate::error::{Error, ErrorKind};

#[cfg(feature = "testing")]
pub mod testing;

/// kubelet's PodResources socket.
pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";
/// kubelet's device-plugin checkpoint.
pub const DEFAULT_CHECKPOINT: &str = "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint";
/// The gRPC method of `List` (package `v1`, service `PodResourcesLister`).
pub const LIST_METHOD: &str = "/v1.PodResourcesLister/List";
/// Largest `List` answer accepted (what Multus allows).
const MAX_MESSAGE: usize = 16 << 20;

/// The kubelet PodResources v1 messages, written by hand with the tags of kubelet's
/// `api.proto` (only the fields used here; prost skips the others).
pub mod proto {
    /// `ListPodResourcesRequest`: no fields.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ListPodResourcesRequest {}

    /// `ListPodResourcesResponse`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ListPodResourcesResponse {
        /// One entry per pod.
        #[prost(message, repeated, tag = "1")]
        pub pod_resources: Vec<PodResources>,
    }

    /// `PodResources`: a pod and what its containers were given.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct PodResources {
        /// Pod name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Pod namespace.
        #[prost(string, tag = "2")]
        pub namespace: String,
        /// Containers.
        #[prost(message, repeated, tag = "3")]
        pub containers: Vec<ContainerResources>,
    }

    /// `ContainerResources`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ContainerResources {
        /// Container name.
        #[prost(string, tag = "1")]
        pub name: String,
        /// Devices per resource.
        #[prost(message, repeated, tag = "2")]
        pub devices: Vec<ContainerDevices>,
        /// Exclusive CPUs.
        #[prost(int64, repeated, tag = "3")]
        pub cpu_ids: Vec<i64>,
    }

    /// `ContainerDevices`: the device IDs of one resource.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct ContainerDevices {
        /// e.g. `example.com/sriov_net`.
        #[prost(string, tag = "1")]
        pub resource_name: String,
        /// e.g. PCI addresses.
        #[prost(string, repeated, tag = "2")]
        pub device_ids: Vec<String>,
        /// NUMA placement.
        #[prost(message, optional, tag = "3")]
        pub topology: Option<TopologyInfo>,
    }

    /// `TopologyInfo`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct TopologyInfo {
        /// NUMA nodes.
        #[prost(message, repeated, tag = "1")]
        pub nodes: Vec<NumaNode>,
    }

    /// `NUMANode`.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct NumaNode {
        /// Node id.
        #[prost(int64, tag = "1")]
        pub id: i64,
    }
}

/// Where to look for device allocations.
#[derive(Clone, Debug)]
pub struct PodResourcesConfig {
    /// kubelet's PodResources socket.
    pub socket: PathBuf,
    /// kubelet's device-plugin checkpoint, used when the socket does not exist.
    pub checkpoint: PathBuf,
    /// Limit for connecting and for the `List` call.
    pub timeout: Duration,
}

impl Default for PodResourcesConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(DEFAULT_SOCKET),
            checkpoint: PathBuf::from(DEFAULT_CHECKPOINT),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Where a [`DeviceMap`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceSource {
    /// The PodResources gRPC API.
    PodResources,
    /// The device-plugin checkpoint file.
    Checkpoint,
}

/// The device IDs a pod holds, per resource name, sorted (the order Multus hands them out in).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceMap {
    /// Resource name to device IDs.
    pub devices: BTreeMap<String, Vec<String>>,
    /// Which source answered.
    pub source: DeviceSource,
}

impl DeviceMap {
    /// The device IDs of `resource` (empty when the pod holds none).
    pub fn device_ids(&self, resource: &str) -> &[String] {
        self.devices.get(resource).map_or(&[], Vec::as_slice)
    }
}

/// The pod whose devices are looked up.
#[derive(Clone, Copy, Debug)]
pub struct PodRef<'a> {
    /// Namespace (PodResources matches by namespace and name).
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// UID (the checkpoint matches by UID).
    pub uid: &'a str,
}

/// Looks up the pod's devices (blocking; runs its own small runtime). The gRPC API is asked when
/// its socket exists; otherwise the checkpoint file is read. Neither existing is an error.
pub fn pod_devices(config: &PodResourcesConfig, pod: PodRef<'_>) -> Result<DeviceMap, Error> {
    if config.socket.exists() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Runtime { source })?;
        let pods = runtime.block_on(list(&config.socket, config.timeout))?;
        return Ok(DeviceMap {
            devices: devices_from_list(&pods, pod.namespace, pod.name),
            source: DeviceSource::PodResources,
        });
    }
    if config.checkpoint.exists() {
        return Ok(DeviceMap {
            devices: devices_from_checkpoint(&config.checkpoint, pod.uid)?,
            source: DeviceSource::Checkpoint,
        });
    }
    Err(Error::Devices {
        op: "find device allocations",
        kind: ErrorKind::Other,
        path: config.socket.clone(),
        message: format!(
            "neither the PodResources socket nor the checkpoint {} exists",
            config.checkpoint.display()
        ),
    })
}

/// Calls `List` on the PodResources socket.
pub async fn list(
    socket: &Path,
    timeout: Duration,
) -> Result<proto::ListPodResourcesResponse, Error> {
    let err = |message: String| Error::Devices {
        op: "PodResources List",
        kind: ErrorKind::Unavailable,
        path: socket.to_owned(),
        message,
    };
    let path = socket.to_owned();
    // The URI is required by the API but unused: the connector below dials the socket.
    let channel = Endpoint::from_static("http://localhost")
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| err(format!("connecting: {e}")))?;
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE);
    grpc.ready()
        .await
        .map_err(|e| err(format!("not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<
        proto::ListPodResourcesRequest,
        proto::ListPodResourcesResponse,
    >::default();
    let answer = tokio::time::timeout(
        timeout,
        grpc.unary(
            tonic::Request::new(proto::ListPodResourcesRequest {}),
            PathAndQuery::from_static(LIST_METHOD),
            codec,
        ),
    )
    .await
    .map_err(|_| err(format!("no answer within {timeout:?}")))?
    .map_err(|status| err(format!("{}: {}", status.code(), status.message())))?;
    Ok(answer.into_inner())
}

/// The device IDs of one pod (all containers) from a `List` answer.
pub fn devices_from_list(
    answer: &proto::ListPodResourcesResponse,
    namespace: &str,
    name: &str,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for pod in answer
        .pod_resources
        .iter()
        .filter(|p| p.namespace == namespace && p.name == name)
    {
        for dev in pod.containers.iter().flat_map(|c| &c.devices) {
            out.entry(dev.resource_name.clone())
                .or_default()
                .extend(dev.device_ids.iter().cloned());
        }
    }
    out.into_iter()
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Checkpoint {
    data: CheckpointData,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckpointData {
    #[serde(default)]
    pod_device_entries: Option<Vec<PodDevicesEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PodDevicesEntry {
    #[serde(rename = "PodUID")]
    pod_uid: String,
    resource_name: String,
    #[serde(rename = "DeviceIDs")]
    device_ids: CheckpointDeviceIds,
}

/// kubelet >= 1.20 writes device IDs per NUMA node; older ones a flat list.
#[derive(Deserialize)]
#[serde(untagged)]
enum CheckpointDeviceIds {
    PerNuma(BTreeMap<String, Option<Vec<String>>>),
    Flat(Vec<String>),
}

/// The device IDs of the pod with `uid` from kubelet's checkpoint file.
pub fn devices_from_checkpoint(
    path: &Path,
    uid: &str,
) -> Result<BTreeMap<String, Vec<String>>, Error> {
    let err = |message: String| Error::Devices {
        op: "read device-plugin checkpoint",
        kind: ErrorKind::Other,
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let checkpoint: Checkpoint =
        serde_json::from_str(&text).map_err(|e| err(format!("not a checkpoint: {e}")))?;
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in checkpoint
        .data
        .pod_device_entries
        .iter()
        .flatten()
        .filter(|e| e.pod_uid == uid)
    {
        let ids = out.entry(entry.resource_name.clone()).or_default();
        match &entry.device_ids {
            CheckpointDeviceIds::PerNuma(per_node) => {
                ids.extend(per_node.values().flatten().flatten().cloned());
            }
            CheckpointDeviceIds::Flat(list) => ids.extend(list.iter().cloned()),
        }
    }
    Ok(out
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn checkpoint_both_formats_matched_by_uid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubelet_internal_checkpoint");
        std::fs::write(
            &path,
            r#"{"Data":{"PodDeviceEntries":[
                {"PodUID":"u1","ContainerName":"c","ResourceName":"example.com/nic",
                 "DeviceIDs":{"0":["0000:03:00.3"],"1":["0000:03:00.1"]},"AllocResp":"CgA="},
                {"PodUID":"u1","ContainerName":"d","ResourceName":"example.com/old",
                 "DeviceIDs":["b","a"],"AllocResp":"CgA="},
                {"PodUID":"u2","ContainerName":"c","ResourceName":"example.com/nic",
                 "DeviceIDs":{"0":["0000:04:00.0"]},"AllocResp":"CgA="}],
              "RegisteredDevices":{"example.com/nic":["0000:03:00.1"]}},"Checksum":1}"#,
        )
        .unwrap();
        let got = devices_from_checkpoint(&path, "u1").unwrap();
        assert_eq!(got["example.com/nic"], ["0000:03:00.1", "0000:03:00.3"]);
        assert_eq!(got["example.com/old"], ["a", "b"]);
        assert!(devices_from_checkpoint(&path, "nobody").unwrap().is_empty());
        std::fs::write(&path, "{not json").unwrap();
        let e = devices_from_checkpoint(&path, "u1").unwrap_err();
        assert!(e.to_string().contains("not a checkpoint"), "{e}");
    }

    #[test]
    fn nothing_to_ask_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = PodResourcesConfig {
            socket: dir.path().join("kubelet.sock"),
            checkpoint: dir.path().join("checkpoint"),
            timeout: Duration::from_secs(1),
        };
        let pod = PodRef {
            namespace: "ns",
            name: "p",
            uid: "u",
        };
        let e = pod_devices(&config, pod).unwrap_err();
        assert!(e.to_string().contains("neither"), "{e}");
    }
}
