//! CHECK (every cached delegate, secondaries included, also of pods Multus set up) and STATUS (readiness and the cluster
//! network).
use serde_json::Map;

use super::{
    Attachment, Engine,
    cache::{self, Stored},
    del::attachments,
    multus_cache::{self, Invocation},
    plan::cluster_network_conf,
};
use crate::{
    cni::{Command, Request, code},
    config::NetConf,
    delegate::{DelegateConf, Invoker, Target},
    error::{Error, Result},
};

/// What the cache holds for a container, as CHECK read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// Every cached attachment, cluster network first.
    pub attachments: Vec<Attachment>,
    /// Multus wrote the entry: this engine's hooks never saw the container's ADD.
    pub by_multus: bool,
}

pub(super) fn check(engine: &Engine, request: &Request, conf: &NetConf) -> Result<Cached> {
    if !conf.cni_version.has_check() {
        return Err(Error::CommandVersion {
            command: "CHECK",
            needs: "0.4.0",
            version: conf.cni_version.to_string(),
        });
    }
    let path = conf.cache_path(&request.container_id);
    let unknown = || Error::UnknownContainer {
        container_id: request.container_id.clone(),
        path: path.clone(),
    };
    let stored = cache::read(&path)?.ok_or_else(unknown)?;
    let by_multus = matches!(stored, Stored::Multus(_));
    let entry = multus_cache::resolve(&path, stored, &Invocation::request(request, conf))?.entry;
    if !entry.complete {
        return Err(unknown());
    }
    let dirs = conf.plugin_dirs_after(&entry.plugin_dirs, &request.path);
    let invoker = Invoker::new(engine.exec.as_ref(), &dirs);
    for d in &entry.delegates {
        let dc = DelegateConf::from_bytes(d.config.as_bytes(), None, &d.network)?;
        // CHECK does not exist before 0.4.0: such delegates are skipped, not failed.
        if !dc.cni_version().has_check() {
            continue;
        }
        let prev = d.result.as_ref().ok_or_else(unknown)?;
        let target = Target {
            container_id: &request.container_id,
            netns: request.netns.as_deref(),
            ifname: &d.ifname,
            cni_args: &d.cni_args,
        };
        invoker.check(&d.network, &dc, &d.runtime_config, target, prev)?;
    }
    Ok(Cached {
        attachments: attachments(&entry, request.netns.as_deref()),
        by_multus,
    })
}

pub(super) fn status(engine: &Engine, request: &Request, conf: &NetConf) -> Result<()> {
    if !conf.cni_version.has_status_and_gc() {
        return Err(Error::CommandVersion {
            command: "STATUS",
            needs: "1.1.0",
            version: conf.cni_version.to_string(),
        });
    }
    if let Some(file) = conf.readiness_file()
        && !file.exists()
    {
        return Err(Error::NotReady {
            path: file.to_owned(),
            code: code::NOT_AVAILABLE,
        });
    }
    let cluster: DelegateConf = cluster_network_conf(engine, conf).map_err(|e| Error::Plugin {
        network: conf
            .cluster_network
            .clone()
            .unwrap_or_else(|| "delegates[0]".into()),
        plugin: conf.name.clone(),
        command: "STATUS",
        code: code::NOT_AVAILABLE,
        msg: format!("the cluster network cannot be resolved: {e}"),
        details: String::new(),
    })?;
    let dirs = conf.plugin_dirs(&request.path);
    let invoker = Invoker::new(engine.exec.as_ref(), &dirs);
    invoker
        .check_plugins(cluster.name(), &cluster)
        .map_err(|e| Error::Plugin {
            network: cluster.name().to_owned(),
            plugin: cluster.plugin_types().join(","),
            command: "STATUS",
            code: code::NOT_AVAILABLE,
            msg: e.to_string(),
            details: String::new(),
        })?;
    if cluster.cni_version().has_status_and_gc() {
        invoker.status_or_gc(cluster.name(), &cluster, Command::Status, &Map::new())?;
    }
    Ok(())
}
