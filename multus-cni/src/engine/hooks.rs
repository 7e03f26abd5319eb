//! Seams for the embedding application: hooks around ADD and DEL, and device resolution.
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::Value;

use super::AddOutput;
use crate::{
    cni::{CniResult, Request},
    config::NetConf,
    error::Error,
    network::{PodKey, SourceError},
};

/// One interface the engine attached (or, on DEL, had attached).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// The pod's network namespace; `None` on DEL when the runtime gave none.
    pub netns: Option<PathBuf>,
    /// Interface name inside the pod.
    pub ifname: String,
    /// `<namespace>/<nad>` for NAD networks, the configuration name otherwise.
    pub network: String,
    /// Whether this is the cluster (default) network.
    pub cluster: bool,
    /// Addresses on the interface.
    pub ips: Vec<IpNet>,
    /// The interface's MAC address, when the plugin reported it.
    pub mac: Option<String>,
    /// The pod, when the runtime named it.
    pub pod: Option<PodKey>,
}

impl Attachment {
    /// The attachment `ifname` of `network` as `result` describes it: the sandbox interface of
    /// that name (else the first one), its MAC, and the addresses on it or on no interface.
    pub(crate) fn from_result(
        container_id: &str,
        netns: Option<&Path>,
        (network, ifname, cluster): (&str, &str, bool),
        result: &CniResult,
        pod: Option<&PodKey>,
    ) -> Self {
        let iface = result
            .sandbox_interfaces()
            .find(|(_, i)| i.name == ifname)
            .or_else(|| result.sandbox_interfaces().next());
        let ips = result
            .ips
            .iter()
            .filter(|ip| match (iface, ip.interface) {
                (Some((idx, _)), Some(on)) => on == idx,
                _ => true,
            })
            .map(|ip| ip.address)
            .collect();
        Self {
            container_id: container_id.to_owned(),
            netns: netns.map(Path::to_owned),
            ifname: ifname.to_owned(),
            network: network.to_owned(),
            cluster,
            ips,
            mac: iface.map(|(_, i)| i.mac.clone()).filter(|m| !m.is_empty()),
            pod: pod.cloned(),
        }
    }
}

/// A hook's failure; `code` is the CNI code the runtime gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookError {
    /// CNI error code (100 and up for plugin-specific errors).
    pub code: u32,
    /// What went wrong.
    pub message: String,
}

/// Steps the embedding application runs inside ADD and DEL. Both default to doing nothing.
pub trait Hooks: Send + Sync {
    /// Runs after every delegate succeeded and before ADD answers. An error rolls the whole ADD
    /// back (every delegate is deleted) and is the ADD's error; the hook cleans up its own
    /// partial work.
    fn after_add(&self, attachments: &[Attachment]) -> Result<(), HookError> {
        let _ = attachments;
        Ok(())
    }

    /// Runs on DEL before the delegates are deleted, with what the cache recorded. An error is
    /// reported with the delegates' errors; the delegates are deleted anyway.
    fn on_del(&self, attachments: &[Attachment]) -> Result<(), HookError> {
        let _ = attachments;
        Ok(())
    }
}

/// No hooks.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// Tells the world how an ADD ended: the Kubernetes front ends (thin mode and the agent alike,
/// through `kube::KubePublisher`) write the network-status annotation and post Events. Unlike
/// [`Hooks`], it cannot fail the ADD: it runs after the outcome is settled (the cache complete,
/// or everything rolled back) and before ADD answers.
pub trait Publisher: Send + Sync {
    /// ADD succeeded with `output`, under configuration `conf`.
    fn added(&self, request: &Request, conf: &NetConf, output: &AddOutput) {
        let _ = (request, conf, output);
    }

    /// ADD failed with `error`; nothing of it is left.
    fn add_failed(&self, request: &Request, error: &Error) {
        let _ = (request, error);
    }

    /// DEL (or GC) gave a cache entry up after its DEL failed `retryDeleteAttempts` times over
    /// `retryDeleteSeconds`: the entry is gone, and what it still held may have leaked.
    fn del_abandoned(&self, abandoned: &AbandonedDel) {
        let _ = abandoned;
    }

    /// Posts a Warning Event on `pod` with `reason` (a CamelCase word) and `message`: for what
    /// the engine finds outside ADD (a DEL or GC that leaves something behind, ...). Best
    /// effort; never blocks the request longer than the API's bounds. Blocking: call it from
    /// the request's thread (as the engine runs), never from inside an async task.
    fn warning(&self, pod: &PodKey, reason: &'static str, message: &str) {
        let _ = (pod, reason, message);
    }
}

/// A cache entry given up by a bounded `retryDeleteOnError`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedDel {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// The pod, when the runtime named it at ADD.
    pub pod: Option<PodKey>,
    /// Failed DELs, this one included.
    pub attempts: u64,
    /// Seconds since the first failed DEL.
    pub failing_for: u64,
    /// The delegates whose DEL never succeeded: what they may have left behind.
    pub leftovers: Vec<Leftover>,
    /// The last DEL's error.
    pub error: String,
}

/// One delegate an [`AbandonedDel`] gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// The network.
    pub network: String,
    /// The interface name in the pod.
    pub ifname: String,
    /// The plugin types of its configuration, in chain order.
    pub plugins: Vec<String>,
    /// The addresses its ADD reported (an IPAM lease may still hold them).
    pub ips: Vec<IpNet>,
}

impl AbandonedDel {
    /// One line for logs and Events: what was given up and what may have leaked.
    pub fn message(&self) -> String {
        let what: Vec<String> = self
            .leftovers
            .iter()
            .map(|l| {
                let ips: Vec<String> = l.ips.iter().map(ToString::to_string).collect();
                format!(
                    "{} of {} ({}){}",
                    l.ifname,
                    l.network,
                    l.plugins.join(","),
                    if ips.is_empty() {
                        String::new()
                    } else {
                        format!(" with {}", ips.join(" "))
                    }
                )
            })
            .collect();
        format!(
            "gave up deleting the networks of container {} after {} failed attempts over {} s; \
             may have leaked: {}; last error: {}",
            self.container_id,
            self.attempts,
            self.failing_for,
            if what.is_empty() {
                "nothing known".to_owned()
            } else {
                what.join("; ")
            },
            self.error
        )
    }
}

/// Publishes nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPublisher;

impl Publisher for NoPublisher {}

/// A network whose NAD names a device resource (`k8s.v1.cni.cncf.io/resourceName`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    /// `<namespace>/<nad>`.
    pub network: String,
    /// The resource name.
    pub resource_name: String,
    /// Interface name the network will get.
    pub ifname: String,
}

/// A device assigned to a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The device id (a PCI address for SR-IOV), injected as `deviceID`/`pciBusID`.
    pub device_id: String,
    /// Device information for network-status `device-info`.
    pub device_info: Option<Value>,
    /// `device_info` is the device plugin's own: it is copied to the delegate's
    /// `CNIDeviceInfoFile` before its ADD, as Multus does.
    pub published: bool,
}

/// Resolves device resources to devices for one ADD.
pub trait DeviceProvider: Send + Sync {
    /// One answer per request, in order; `None` when no device is known. Several networks with
    /// the same resource take successive devices.
    fn assign(
        &self,
        pod: Option<&PodKey>,
        requests: &[DeviceRequest],
    ) -> Result<Vec<Option<Device>>, SourceError> {
        let _ = pod;
        Ok(vec![None; requests.len()])
    }
}

/// No device provider: resourceName annotations are ignored.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDevices;

impl DeviceProvider for NoDevices {}
