//! Invoking one delegate configuration (a plugin or a chain) for ADD, DEL, CHECK, STATUS and GC,
//! the way libcni does: each plugin of a chain gets the list's name and version, the runtime
//! config it declares capabilities for, and the previous plugin's result.
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tracing::debug;

use super::{conf::DelegateConf, exec::Exec};
use crate::{
    cni::{Command, ErrorReply, code, result::CniResult},
    error::{Error, Result},
};

/// Where an attachment is made: the per-attachment part of a delegate's environment.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS` (empty when absent).
    pub netns: Option<&'a Path>,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// `CNI_ARGS`.
    pub cni_args: &'a str,
}

/// Runs delegate configurations through an [`Exec`], finding plugins in `dirs`.
pub struct Invoker<'a> {
    exec: &'a dyn Exec,
    dirs: &'a [PathBuf],
    cni_path: String,
}

impl<'a> Invoker<'a> {
    /// An invoker searching `dirs` (also passed to plugins as `CNI_PATH`, for IPAM plugins).
    pub fn new(exec: &'a dyn Exec, dirs: &'a [PathBuf]) -> Self {
        let cni_path = dirs
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        Self {
            exec,
            dirs,
            cni_path,
        }
    }

    /// Checks that every plugin of `conf` exists, before anything runs.
    pub fn check_plugins(&self, network: &str, conf: &DelegateConf) -> Result<()> {
        for ty in conf.plugin_types() {
            self.find(network, &ty)?;
        }
        Ok(())
    }

    fn find(&self, network: &str, ty: &str) -> Result<PathBuf> {
        self.exec
            .find(ty, self.dirs)
            .ok_or_else(|| Error::PluginNotFound {
                network: network.to_owned(),
                plugin: ty.to_owned(),
                searched: match (self.cni_path.is_empty(), self.exec.root()) {
                    (true, _) => "no directories (binDir and CNI_PATH are empty)".to_owned(),
                    (false, None) => self.cni_path.clone(),
                    (false, Some(root)) => {
                        format!("{} below chrootDir {}", self.cni_path, root.display())
                    }
                },
            })
    }

    /// ADD through the chain; returns the last plugin's result as the JSON it printed (in the
    /// chain's version) and parsed.
    pub fn add(
        &self,
        network: &str,
        conf: &DelegateConf,
        runtime_config: &Map<String, Value>,
        target: Target<'_>,
    ) -> Result<(Value, CniResult)> {
        let mut prev: Option<(Value, CniResult)> = None;
        for (i, ty) in conf.plugin_types().iter().enumerate() {
            let stdin =
                conf.plugin_stdin(i, runtime_config, prev.as_ref().map(|p| &p.0), &Map::new());
            let out = self.run_one(network, ty, Command::Add, Some(target), &stdin)?;
            let value: Value = serde_json::from_slice(&out).map_err(|e| Error::PluginOutput {
                network: network.to_owned(),
                plugin: ty.clone(),
                command: "ADD",
                source: e.into(),
            })?;
            // A result without cniVersion is in the configuration's version (as libcni reads it).
            let parsed = CniResult::from_value_as(value.clone(), Some(conf.cni_version()))
                .map_err(|source| Error::PluginOutput {
                    network: network.to_owned(),
                    plugin: ty.clone(),
                    command: "ADD",
                    source,
                })?;
            prev = Some((value, parsed));
        }
        prev.ok_or_else(|| Error::network(network, "configuration has no plugins"))
    }

    /// DEL through the chain in reverse; `prev_result` is the cached ADD result (passed from
    /// 0.4.0 on). Every plugin is tried; the first error is returned.
    pub fn del(
        &self,
        network: &str,
        conf: &DelegateConf,
        runtime_config: &Map<String, Value>,
        target: Target<'_>,
        prev_result: Option<&Value>,
    ) -> Result<()> {
        let prev = prev_result.filter(|_| conf.cni_version().has_check());
        let mut first_err = None;
        for (i, ty) in conf.plugin_types().iter().enumerate().rev() {
            let stdin = conf.plugin_stdin(i, runtime_config, prev, &Map::new());
            if let Err(e) = self.run_one(network, ty, Command::Del, Some(target), &stdin) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// CHECK through the chain with the cached ADD result; nothing for a conflist with
    /// `disableCheck` (as libcni).
    pub fn check(
        &self,
        network: &str,
        conf: &DelegateConf,
        runtime_config: &Map<String, Value>,
        target: Target<'_>,
        prev_result: &Value,
    ) -> Result<()> {
        if conf.list_disables("disableCheck") {
            debug!(network, "disableCheck: CHECK skipped");
            return Ok(());
        }
        for (i, ty) in conf.plugin_types().iter().enumerate() {
            let stdin = conf.plugin_stdin(i, runtime_config, Some(prev_result), &Map::new());
            self.run_one(network, ty, Command::Check, Some(target), &stdin)?;
        }
        Ok(())
    }

    /// STATUS (without `extra`) or GC (with `cni.dev/valid-attachments` in `extra`) on every
    /// plugin of the chain; no GC for a conflist with `disableGC` (as libcni).
    pub fn status_or_gc(
        &self,
        network: &str,
        conf: &DelegateConf,
        command: Command,
        extra: &Map<String, Value>,
    ) -> Result<()> {
        if command == Command::Gc && conf.list_disables("disableGC") {
            debug!(network, "disableGC: GC skipped");
            return Ok(());
        }
        for (i, ty) in conf.plugin_types().iter().enumerate() {
            let stdin = conf.plugin_stdin(i, &Map::new(), None, extra);
            self.run_one(network, ty, command, None, &stdin)?;
        }
        Ok(())
    }

    fn run_one(
        &self,
        network: &str,
        ty: &str,
        command: Command,
        target: Option<Target<'_>>,
        stdin: &[u8],
    ) -> Result<Vec<u8>> {
        let plugin = self.find(network, ty)?;
        let mut env = vec![
            ("CNI_COMMAND", command.as_str().to_owned()),
            ("CNI_PATH", self.cni_path.clone()),
        ];
        if let Some(t) = target {
            env.push(("CNI_CONTAINERID", t.container_id.to_owned()));
            env.push((
                "CNI_NETNS",
                t.netns
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ));
            env.push(("CNI_IFNAME", t.ifname.to_owned()));
            env.push(("CNI_ARGS", t.cni_args.to_owned()));
        }
        debug!(network, plugin = %plugin.display(), %command, ifname = target.map(|t| t.ifname), "running delegate");
        let out = self
            .exec
            .run(&plugin, &env, stdin)
            .map_err(|source| Error::Exec {
                network: network.to_owned(),
                plugin: plugin.clone(),
                source,
            })?;
        if out.success {
            return Ok(out.stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(match serde_json::from_slice::<ErrorReply>(&out.stdout) {
            Ok(reply) => Error::Plugin {
                network: network.to_owned(),
                plugin: ty.to_owned(),
                command: command.as_str(),
                code: reply.code,
                msg: reply.msg,
                details: if reply.details.is_empty() {
                    stderr
                } else {
                    reply.details
                },
            },
            Err(_) => Error::Plugin {
                network: network.to_owned(),
                plugin: ty.to_owned(),
                command: command.as_str(),
                code: code::PLUGIN_FAILED,
                msg: format!("exited with {} without a CNI error", out.status),
                details: if stderr.is_empty() {
                    String::from_utf8_lossy(&out.stdout).trim().to_owned()
                } else {
                    stderr
                },
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::delegate::{ChrootExec, ProcessExec};

    #[test]
    fn a_missing_plugin_names_the_directories_and_the_root_they_were_searched_below() {
        let root = tempfile::tempdir().unwrap();
        let conf = DelegateConf::from_value(
            json!({"cniVersion": "1.0.0", "type": "calico"}),
            Some("k8s-pod-network"),
            "clusterNetwork",
        )
        .unwrap();
        let dirs = vec![PathBuf::from("/opt/cni/bin")];
        let chroot = ChrootExec::new(root.path());
        let err = Invoker::new(&chroot, &dirs)
            .check_plugins("k8s-pod-network", &conf)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"calico\"")
                && err.contains(&format!(
                    "/opt/cni/bin below chrootDir {}",
                    root.path().display()
                )),
            "{err}"
        );
        let err = Invoker::new(&ProcessExec, &dirs)
            .check_plugins("k8s-pod-network", &conf)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("not found in /opt/cni/bin"), "{err}");
    }
}
