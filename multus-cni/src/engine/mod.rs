//! The engine: one entry point for both front ends (the `multus-cni` binary in thin mode, and
//! the agent in-process). It turns a [`Request`] into delegate runs, a cache, a CNI result and
//! the network-status list.
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

pub use hooks::{
    AbandonedDel, Attachment, Device, DeviceProvider, DeviceRequest, HookError, Hooks, Leftover,
    NoDevices, NoHooks, NoPublisher, Publisher,
};
pub use plan::Planned;
use serde_json::Value;
pub use status::NetworkStatus;
use tracing::{error, info, warn};

use crate::{
    cni::{CniResult, Command, ErrorReply, Request, version::version_reply},
    config::NetConf,
    delegate::{Exec, ProcessExec},
    error::{Error, Result},
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

/// What to print and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Everything for stdout (the result, the VERSION reply, or the error JSON); may be empty.
    pub stdout: String,
    /// The process exit status: 0 on success, 1 on error.
    pub exit_code: i32,
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

    /// Handles a request end to end and says what to print: never panics, never fails.
    pub fn handle(&self, request: &Request) -> Reply {
        if request.command == Command::Version {
            return Reply {
                stdout: version_reply().to_string(),
                exit_code: 0,
            };
        }
        match NetConf::parse(&request.config) {
            Ok(conf) => self.handle_with(request, &conf),
            Err(e) => error_reply(&stdin_version(&request.config), &e, request.command),
        }
    }

    /// Like [`Engine::handle`] with the configuration already parsed.
    pub fn handle_with(&self, request: &Request, conf: &NetConf) -> Reply {
        let outcome = match request.command {
            Command::Version => Ok(Some(version_reply().to_string())),
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
            Command::Check => self.check(request, conf).map(|()| None),
            Command::Status => self.status(request, conf).map(|()| None),
            Command::Gc => self.gc(request, conf).map(|()| None),
        };
        match outcome {
            Ok(stdout) => {
                info!(command = %request.command, container = %request.container_id, "done");
                Reply {
                    stdout: stdout.unwrap_or_default(),
                    exit_code: 0,
                }
            }
            Err(e) => error_reply(conf.cni_version.as_str(), &e, request.command),
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

    /// CHECK: run CHECK on every cached delegate, secondaries included.
    pub fn check(&self, request: &Request, conf: &NetConf) -> Result<()> {
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

/// The supported `cniVersion` of a configuration that may not parse, for error replies.
pub(crate) fn stdin_version(config: &[u8]) -> String {
    serde_json::from_slice::<Value>(config)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .filter(|v| crate::cni::CniVersion::parse(v).is_some())
        .unwrap_or_else(|| crate::cni::CniVersion::LATEST.as_str().to_owned())
}

fn error_reply(version: &str, e: &Error, command: Command) -> Reply {
    error!(%command, code = e.code(), "{e}");
    Reply {
        stdout: ErrorReply::new(version, e.code(), e.to_string()).to_json(),
        exit_code: 1,
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
