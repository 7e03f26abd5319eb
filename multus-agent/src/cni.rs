//! One CNI request in the agent: the engine with the watch caches, the dataplane hooks and the
//! shared publisher (network-status and pod Events), the agent's configuration merged over the
//! runtime's, and the dataplane swept after DEL and GC. Synchronous: the server runs it on a blocking thread.
use std::{collections::BTreeSet, sync::Arc, time::Instant};

use multus_cni::{
    Engine, NetConf,
    cli::thick,
    cni::{Command, ErrorReply, Request, code, version::version_reply},
    engine::{Reply, cache},
};
use tracing::{error, info};

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

fn failure(version: &str, code: u32, message: String) -> Reply {
    Reply {
        stdout: ErrorReply::new(version, code, message).to_json(),
        exit_code: 1,
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
    pub fn handle(&self, env: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Reply {
        let started = Instant::now();
        let command = env("CNI_COMMAND").unwrap_or_default();
        let container = env("CNI_CONTAINERID").unwrap_or_default();
        let reply = self.dispatch(env, stdin);
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

    fn dispatch(&self, env: &dyn Fn(&str) -> Option<String>, stdin: &[u8]) -> Reply {
        let request = match Request::from_env(env, stdin.to_vec()) {
            Ok(request) => request,
            Err(e) => {
                let e = multus_cni::Error::from(e);
                error!("{e}");
                return thick::error_reply(stdin, e.code(), e.to_string());
            }
        };
        if request.command == Command::Version {
            return Reply {
                stdout: version_reply().to_string(),
                exit_code: 0,
            };
        }
        let conf = match self
            .config
            .merge_into(&request.config)
            .and_then(|merged| NetConf::parse(&merged))
        {
            Ok(conf) => conf,
            Err(e) => {
                error!(command = %request.command, "{e}");
                return thick::error_reply(&request.config, e.code(), e.to_string());
            }
        };
        match request.command {
            Command::Add => self.add(&request, &conf),
            Command::Del => {
                let reply = self.engine.handle_with(&request, &conf);
                self.sweep(
                    reply,
                    &conf,
                    &BTreeSet::from([request.container_id.as_str()]),
                )
            }
            Command::Gc => {
                let reply = self.engine.handle_with(&request, &conf);
                // The engine's GC reports the entries it could not delete; the dataplane of
                // every other container the runtime forgot is swept all the same.
                match &conf.valid_attachments {
                    Some(valid) => {
                        let keep: BTreeSet<&str> =
                            valid.iter().map(|v| v.container_id.as_str()).collect();
                        self.sweep_except(reply, &conf, &keep)
                    }
                    _ => reply,
                }
            }
            Command::Check => {
                let reply = self.engine.handle_with(&request, &conf);
                if reply.exit_code != 0 {
                    return reply;
                }
                match self.check_attached(&request, &conf) {
                    Ok(()) => reply,
                    Err(message) => {
                        failure(conf.cni_version.as_str(), code::PLUGIN_FAILED, message)
                    }
                }
            }
            Command::Status | Command::Version => self.engine.handle_with(&request, &conf),
        }
    }

    fn add(&self, request: &Request, conf: &NetConf) -> Reply {
        match self.engine.add(request, conf) {
            Ok(out) => Reply {
                stdout: out.result.to_string(),
                exit_code: 0,
            },
            Err(e) => {
                error!(command = "ADD", container = %request.container_id, code = e.code(), "{e}");
                failure(conf.cni_version.as_str(), e.code(), e.to_string())
            }
        }
    }

    /// After DEL: whatever attachment of the container is left (its cache was gone, or the
    /// shim's fallback handled the delegates while the agent was down) is detached too.
    fn sweep(&self, reply: Reply, conf: &NetConf, containers: &BTreeSet<&str>) -> Reply {
        match self.attachments.detach_containers(containers) {
            Ok(_) => reply,
            Err(message) if reply.exit_code == 0 => {
                failure(conf.cni_version.as_str(), code::IO_FAILURE, message)
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
            failure(conf.cni_version.as_str(), code::IO_FAILURE, text.join("; "))
        }
    }

    /// CHECK's dataplane half: every secondary interface in the cache has its attachment.
    fn check_attached(&self, request: &Request, conf: &NetConf) -> Result<(), String> {
        let path = conf.cache_path(&request.container_id);
        let entry = match cache::read(&path).map_err(|e| e.to_string())? {
            None => return Ok(()),
            Some(cache::Stored::Own(entry)) => entry,
            // The engine's CHECK of its delegates passed; the agent never saw this ADD.
            Some(cache::Stored::Multus(_)) => {
                return Err(format!(
                    "container {}: set up by Multus, its secondary interfaces have no eBPF \
                     attachment (recreate the pod to police them)",
                    request.container_id
                ));
            }
        };
        let records = self.attachments.records();
        let missing: Vec<String> = entry
            .delegates
            .iter()
            .filter(|d| !d.cluster)
            .filter(|d| {
                !records
                    .iter()
                    .any(|r| r.owner.container_id == request.container_id && r.ifname == d.ifname)
            })
            .map(|d| format!("{} ({})", d.ifname, d.network))
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
