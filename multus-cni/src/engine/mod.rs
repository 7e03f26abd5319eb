//! The engine: what both front ends run (the `multus-cni` binary in thin mode, and the agent
//! in-process), once [`crate::front::serve`] has read the request. It turns a [`Request`] into
//! delegate runs, a cache, a CNI result and the network-status list.
mod add;
pub mod cache;
mod check;
mod del;
pub mod devinfo;
mod hooks;
pub mod multus_cache;
pub mod netlink;
mod plan;
mod route;
pub mod status;

use std::sync::Arc;

pub use check::Cached;
pub use hooks::{
    AbandonedDel, Attachment, Device, DeviceProvider, DeviceRequest, HookError, Hooks, Leftover,
    NoDevices, NoHooks, NoPublisher, Publisher,
};
pub use plan::Planned;
use serde_json::Value;
pub use status::NetworkStatus;
use tracing::{info, warn};

use crate::{
    cni::{CniResult, Command, Request},
    config::NetConf,
    delegate::{Exec, ProcessExec},
    error::Result,
    front::Reply,
    network::NetworkSource,
};

/// What a successful ADD produced.
#[derive(Debug, Clone, PartialEq)]
pub struct AddOutput {
    /// The CNI result for the runtime, in the configuration's version (the cluster network's).
    pub result: Value,
    /// The same result, typed.
    pub cni_result: CniResult,
    /// The network-status list (NPWG v1.3), cluster network first.
    pub network_status: Vec<NetworkStatus>,
    /// Every attachment made, cluster network first.
    pub attachments: Vec<Attachment>,
    /// What the pod asked for that no plugin could take (posted as Warning Events).
    pub warnings: Vec<String>,
}

/// The CNI engine. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Engine {
    source: Arc<dyn NetworkSource>,
    exec: Arc<dyn Exec>,
    hooks: Arc<dyn Hooks>,
    devices: Arc<dyn DeviceProvider>,
    publisher: Arc<dyn Publisher>,
}

impl Engine {
    /// An engine looking pods and networks up in `source`, running plugins as processes, with
    /// no hooks and no device provider.
    pub fn new(source: Arc<dyn NetworkSource>) -> Self {
        Self {
            source,
            exec: Arc::new(ProcessExec),
            hooks: Arc::new(NoHooks),
            devices: Arc::new(NoDevices),
            publisher: Arc::new(NoPublisher),
        }
    }

    /// Runs plugins through `exec` instead (to count or wrap them).
    pub fn with_exec(mut self, exec: Arc<dyn Exec>) -> Self {
        self.exec = exec;
        self
    }

    /// Calls `hooks` after ADD's delegates and on DEL.
    pub fn with_hooks(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = hooks;
        self
    }

    /// Resolves `k8s.v1.cni.cncf.io/resourceName` networks to devices through `devices`.
    pub fn with_devices(mut self, devices: Arc<dyn DeviceProvider>) -> Self {
        self.devices = devices;
        self
    }

    /// Tells `publisher` how every ADD ended (network-status, Events).
    pub fn with_publisher(mut self, publisher: Arc<dyn Publisher>) -> Self {
        self.publisher = publisher;
        self
    }

    /// The publisher (network-status and pod Events): also the way to post a Warning Event
    /// on a pod from DEL, GC or the embedder ([`Publisher::warning`]).
    pub fn publisher(&self) -> &Arc<dyn Publisher> {
        &self.publisher
    }

    /// Runs a parsed request end to end and says what to print: never panics, never fails.
    /// Front ends reach it through [`crate::front::serve`].
    pub fn handle(&self, request: &Request, conf: &NetConf) -> Reply {
        let outcome = match request.command {
            Command::Version => return Reply::version(),
            Command::Add => self.add(request, conf).map(|out| {
                for warning in &out.warnings {
                    warn!(container = %request.container_id, "{warning}");
                }
                // Where no publisher writes it to the pod, the log is where a user finds it.
                if tracing::enabled!(tracing::Level::INFO) {
                    let status = serde_json::to_string(&out.network_status).unwrap_or_default();
                    info!(network_status = %status, "network-status");
                }
                Some(out.result.to_string())
            }),
            Command::Del => self.del(request, conf).map(|()| None),
            Command::Check => self.check(request, conf).map(|_| None),
            Command::Status => self.status(request, conf).map(|()| None),
            Command::Gc => self.gc(request, conf).map(|()| None),
        };
        match outcome {
            Ok(stdout) => {
                info!(command = %request.command, container = %request.container_id, "done");
                Reply::success(stdout.unwrap_or_default())
            }
            Err(e) => Reply::failed(conf.cni_version.as_str(), Some(request.command), &e),
        }
    }

    /// ADD: attach the pod to its cluster network and every selected network, then tell the
    /// publisher how it ended.
    pub fn add(&self, request: &Request, conf: &NetConf) -> Result<AddOutput> {
        let outcome = add::run(self, request, conf);
        match &outcome {
            Ok(output) => self.publisher.added(request, conf, output),
            Err(error) => self.publisher.add_failed(request, error),
        }
        outcome
    }

    /// DEL: detach everything cached for the container; idempotent.
    pub fn del(&self, request: &Request, conf: &NetConf) -> Result<()> {
        del::run(self, request, conf)
    }

    /// CHECK: run CHECK on every cached delegate, secondaries included; says what the cache
    /// holds for the container, for the embedder's own checks.
    pub fn check(&self, request: &Request, conf: &NetConf) -> Result<Cached> {
        check::check(self, request, conf)
    }

    /// STATUS: readiness indicator and the cluster network's STATUS.
    pub fn status(&self, request: &Request, conf: &NetConf) -> Result<()> {
        check::status(self, request, conf)
    }

    /// GC: DEL every cached attachment the runtime no longer lists.
    pub fn gc(&self, request: &Request, conf: &NetConf) -> Result<()> {
        del::gc(self, request, conf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_shareable_across_threads() {
        fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<Engine>();
    }
}
