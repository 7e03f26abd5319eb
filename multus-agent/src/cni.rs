//! One CNI request in the agent: the engine with the watch caches, the dataplane hooks and the
//! shared publisher (network-status and pod Events), the agent's configuration merged over the
//! runtime's, and the dataplane swept after DEL and GC. Synchronous: the server runs it on a blocking thread.
use std::{collections::BTreeSet, sync::Arc, time::Instant};

use multus_cni::{
    Engine, NetConf,
    cni::{Command, Request, code},
    engine::Cached,
    front::{self, Call, Handler, Reply, Stdin},
};
use tracing::info;

use crate::{attachments::Attachments, config::AgentConfig, metrics::AgentMetrics};

/// Handles CNI requests.
pub struct CniHandler {
    engine: Engine,
    config: Arc<AgentConfig>,
    attachments: Arc<Attachments>,
    metrics: AgentMetrics,
}

impl std::fmt::Debug for CniHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CniHandler").finish_non_exhaustive()
    }
}

impl CniHandler {
    /// A handler running `engine` (whose hooks attach the dataplane and whose publisher writes
    /// network-status and Events).
    pub fn new(
        engine: Engine,
        config: Arc<AgentConfig>,
        attachments: Arc<Attachments>,
        metrics: AgentMetrics,
    ) -> Self {
        Self {
            engine,
            config,
            attachments,
            metrics,
        }
    }

    /// Handles one request: `env` gives the forwarded `CNI_*` variables, `stdin` the runtime's
    /// configuration bytes. Never fails: errors are CNI error replies.
    pub fn handle(&self, env: &dyn Fn(&str) -> Option<String>, stdin: Vec<u8>) -> Reply {
        let started = Instant::now();
        let command = env("CNI_COMMAND").unwrap_or_default();
        let container = env("CNI_CONTAINERID").unwrap_or_default();
        let merge = Some(&self.config.cni_overrides).filter(|o| !o.is_empty());
        let reply = front::serve(&env, Stdin::new(stdin), merge, self);
        let took = started.elapsed();
        self.metrics.request(&command, reply.exit_code == 0, took);
        info!(
            %command,
            %container,
            exit = reply.exit_code,
            took_ms = took.as_secs_f64() * 1000.0,
            "CNI request"
        );
        reply
    }

    /// After DEL: whatever attachment of the container is left (its cache was gone, or the
    /// shim's fallback handled the delegates while the agent was down) is detached too.
    fn sweep(&self, reply: Reply, conf: &NetConf, containers: &BTreeSet<&str>) -> Reply {
        match self.attachments.detach_containers(containers) {
            Ok(_) => reply,
            Err(message) if reply.exit_code == 0 => {
                Reply::error(conf.cni_version.as_str(), code::IO_FAILURE, message)
            }
            Err(_) => reply,
        }
    }

    /// After GC: attachments of containers the runtime no longer lists are detached.
    fn sweep_except(&self, reply: Reply, conf: &NetConf, keep: &BTreeSet<&str>) -> Reply {
        let (ids, errors) = self.attachments.detach_where(|r| {
            !r.owner.container_id.is_empty() && !keep.contains(r.owner.container_id.as_str())
        });
        if !ids.is_empty() {
            info!(
                ?ids,
                "GC detached attachments of containers the runtime no longer has"
            );
        }
        if errors.is_empty() {
            reply
        } else {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Reply::error(conf.cni_version.as_str(), code::IO_FAILURE, text.join("; "))
        }
    }

    /// CHECK: the engine's CHECK of every cached delegate, then the dataplane half: every
    /// secondary interface the cache holds has its attachment. The cache is read once, by the
    /// engine.
    fn check(&self, request: &Request, conf: &NetConf) -> Reply {
        let cached = match self.engine.check(request, conf) {
            Ok(cached) => cached,
            Err(e) => return Reply::failed(conf.cni_version.as_str(), Some(Command::Check), &e),
        };
        match self.check_attached(&request.container_id, &cached) {
            Ok(()) => Reply::success(""),
            Err(message) => Reply::error(conf.cni_version.as_str(), code::PLUGIN_FAILED, message),
        }
    }

    fn check_attached(&self, container_id: &str, cached: &Cached) -> Result<(), String> {
        if cached.by_multus {
            // The engine's CHECK of its delegates passed; the agent never saw this ADD.
            return Err(format!(
                "container {container_id}: set up by Multus, its secondary interfaces have no \
                 eBPF attachment (recreate the pod to police them)"
            ));
        }
        let records = self.attachments.records();
        let missing: Vec<String> = cached
            .attachments
            .iter()
            .filter(|a| !a.cluster)
            .filter(|a| {
                !records
                    .iter()
                    .any(|r| r.owner.container_id == container_id && r.ifname == a.ifname)
            })
            .map(|a| format!("{} ({})", a.ifname, a.network))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "no eBPF attachment on {}: the interface is not policed or counted",
                missing.join(", ")
            ))
        }
    }
}

impl Handler for CniHandler {
    fn run(&self, call: &Call) -> Reply {
        let Call { request, conf } = call;
        match request.command {
            Command::Del => {
                let reply = self.engine.handle(request, conf);
                self.sweep(
                    reply,
                    conf,
                    &BTreeSet::from([request.container_id.as_str()]),
                )
            }
            Command::Gc => {
                let reply = self.engine.handle(request, conf);
                // The engine's GC reports the entries it could not delete; the dataplane of
                // every other container the runtime forgot is swept all the same.
                match &conf.valid_attachments {
                    Some(valid) => {
                        let keep: BTreeSet<&str> =
                            valid.iter().map(|v| v.container_id.as_str()).collect();
                        self.sweep_except(reply, conf, &keep)
                    }
                    _ => reply,
                }
            }
            Command::Check => self.check(request, conf),
            Command::Add | Command::Status | Command::Version => self.engine.handle(request, conf),
        }
    }
}
