//! DEL and GC: tear down what the cache recorded (this engine's entries, and those of pods
//! Multus set up), trying every delegate and reporting every error. Nothing here needs the pod,
//! the NADs, the API server or the netns.
use std::path::Path;

use serde_json::{Value, json};
use tracing::{error, info, warn};

use super::{
    Engine,
    cache::{self, CacheEntry, DelRetries},
    devinfo,
    hooks::{AbandonedDel, Attachment, Leftover},
    multus_cache::{self, Converted, Invocation},
    plan::cluster_network_conf,
};
use crate::{
    cni::{Command, Request, result::CniResult},
    config::{NetConf, VALID_ATTACHMENTS_KEY},
    delegate::{DelegateConf, Invoker, Target},
    error::{Error, Result},
    network::PodKey,
};

pub(super) fn run(engine: &Engine, request: &Request, conf: &NetConf) -> Result<()> {
    let path = conf.cache_path(&request.container_id);
    let Some(stored) = cache::read(&path)? else {
        info!(container = %request.container_id, "DEL: nothing cached, nothing to do");
        return Ok(());
    };
    let found = multus_cache::resolve(&path, stored, &Invocation::request(request, conf))?;
    let netns = request.netns.as_deref().filter(|p| p.exists());
    del_entry(engine, conf, &path, found, netns, &request.path)
}

/// DELs one cache entry: the hook, then every delegate in reverse order. The file goes when all
/// succeeded (or, with `retryDeleteOnError: false`, in any case); otherwise it keeps the
/// delegates that still need DEL, in this engine's format, and counts the failure. An entry
/// whose DEL failed `retryDeleteAttempts` times over `retryDeleteSeconds` is given up instead
/// (see [`give_up`]): a DEL that can never succeed must not keep the pod, or GC, failing for
/// ever. The entry's leftovers (libcni's files of a Multus entry) go once the cache file says
/// what is left.
fn del_entry(
    engine: &Engine,
    conf: &NetConf,
    path: &Path,
    found: Converted,
    netns: Option<&Path>,
    cni_path: &[std::path::PathBuf],
) -> Result<()> {
    let Converted {
        mut entry,
        leftovers,
    } = found;
    let mut errors = Vec::new();
    if let Err(e) = engine.hooks.on_del(&attachments(&entry, netns)) {
        errors.push(Error::Hook {
            stage: "DEL",
            code: e.code,
            message: e.message,
        });
    }
    let dirs = conf.plugin_dirs_after(&entry.plugin_dirs, cni_path);
    let invoker = Invoker::new(engine.exec.as_ref(), &dirs);
    errors.extend(del_delegates(&invoker, netns, &mut entry));
    let abandoned = if errors.is_empty() || !conf.retry_delete_on_error {
        cache::remove(path)?;
        None
    } else {
        let abandoned = count_failure(conf, &mut entry, &errors);
        if abandoned.is_some() {
            cache::remove(path)?;
        } else {
            cache::store(path, &entry)?;
        }
        abandoned
    };
    for file in &leftovers {
        if let Err(e) = multus_cache::libcni::remove(file) {
            warn!("DEL: {e}");
        }
    }
    if let Some(abandoned) = abandoned {
        give_up(engine, &abandoned);
        return Ok(());
    }
    match errors.len() {
        0 => {
            info!(container = %entry.container_id, "DEL done");
            Ok(())
        }
        1 => Err(errors.remove(0)),
        _ => Err(Error::Many(errors)),
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Counts a failed DEL of `entry` (which now holds the delegates still to delete). Returns
/// what to report when the entry is to be given up: it failed `retryDeleteAttempts` times and
/// the first failure is `retryDeleteSeconds` old. Both bounds must be reached, so a transient
/// failure (an IPAM daemon restarting) gets its retries for a while, and a permanent one (a
/// plugin that fails its own DEL for good) ends.
pub(super) fn count_failure(
    conf: &NetConf,
    entry: &mut CacheEntry,
    errors: &[Error],
) -> Option<AbandonedDel> {
    let now = now_secs();
    let retries = entry.del_retries.get_or_insert(DelRetries {
        failures: 0,
        since: now,
    });
    retries.failures += 1;
    let failing_for = now.saturating_sub(retries.since);
    if retries.failures < conf.retry_delete_attempts || failing_for < conf.retry_delete_seconds {
        return None;
    }
    let pod = entry.pod.as_ref().map(|p| PodKey {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        uid: p.uid.clone(),
    });
    let leftovers = entry
        .delegates
        .iter()
        .map(|d| {
            let plugins = DelegateConf::from_bytes(d.config.as_bytes(), None, &d.network)
                .map(|c| c.plugin_types())
                .unwrap_or_default();
            let ips = d
                .result
                .clone()
                .and_then(|v| CniResult::from_value(v).ok())
                .map(|r| r.ips.iter().map(|ip| ip.address).collect())
                .unwrap_or_default();
            Leftover {
                network: d.network.clone(),
                ifname: d.ifname.clone(),
                plugins,
                ips,
            }
        })
        .collect();
    let error = errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    Some(AbandonedDel {
        container_id: entry.container_id.clone(),
        pod,
        attempts: retries.failures,
        failing_for,
        leftovers,
        error,
    })
}

/// Reports a given-up entry: an error line in the log naming what may have leaked, and the
/// publisher (a Warning Event on the pod, a metric).
pub(super) fn give_up(engine: &Engine, abandoned: &AbandonedDel) {
    let pod = abandoned
        .pod
        .as_ref()
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .unwrap_or_default();
    error!(container = %abandoned.container_id, %pod, "{}", abandoned.message());
    engine.publisher.del_abandoned(abandoned);
}

/// Runs DEL on every delegate of `entry` in reverse order and leaves in `entry` only those
/// whose DEL failed. Returns the errors.
pub(super) fn del_delegates(
    invoker: &Invoker<'_>,
    netns: Option<&Path>,
    entry: &mut CacheEntry,
) -> Vec<Error> {
    let mut errors = Vec::new();
    let mut keep = Vec::new();
    for d in entry.delegates.iter().rev() {
        let conf = match DelegateConf::from_bytes(d.config.as_bytes(), None, &d.network) {
            Ok(c) => c,
            Err(e) => {
                errors.push(e);
                keep.push(d.clone());
                continue;
            }
        };
        let target = Target {
            container_id: &entry.container_id,
            netns,
            ifname: &d.ifname,
            cni_args: &d.cni_args,
        };
        match invoker.del(
            &d.network,
            &conf,
            &d.runtime_config,
            target,
            d.result.as_ref(),
        ) {
            Ok(()) => {
                info!(network = %d.network, ifname = %d.ifname, "detached");
                if let Some(file) =
                    devinfo::owned(&d.runtime_config, &entry.container_id, &d.ifname)
                    && let Err(e) = devinfo::remove(&file)
                {
                    warn!("DEL: {e}");
                }
            }
            Err(e) => {
                warn!(network = %d.network, "DEL failed: {e}");
                errors.push(e);
                keep.push(d.clone());
            }
        }
    }
    keep.reverse();
    entry.delegates = keep;
    errors
}

/// The attachments `entry` records, as the hooks see them.
pub(super) fn attachments(entry: &CacheEntry, netns: Option<&Path>) -> Vec<Attachment> {
    let pod = entry.pod.as_ref().map(|p| PodKey {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        uid: p.uid.clone(),
    });
    entry
        .delegates
        .iter()
        .map(|d| {
            let result = d
                .result
                .clone()
                .and_then(|v| CniResult::from_value(v).ok())
                .unwrap_or_default();
            Attachment::from_result(
                &entry.container_id,
                netns,
                (&d.network, &d.ifname, d.cluster),
                &result,
                pod.as_ref(),
            )
        })
        .collect()
}

pub(super) fn gc(engine: &Engine, request: &Request, conf: &NetConf) -> Result<()> {
    if !conf.cni_version.has_status_and_gc() {
        return Err(Error::CommandVersion {
            command: "GC",
            needs: "1.1.0",
            version: conf.cni_version.to_string(),
        });
    }
    let valid = conf.valid_attachments.clone().ok_or_else(|| {
        Error::config(
            VALID_ATTACHMENTS_KEY,
            "GC needs the list of valid attachments",
        )
    })?;
    let mut errors = Vec::new();
    for stale in cache::sweep_temp_files(&conf.cni_dir, std::time::Duration::from_secs(600)) {
        info!(file = %stale.display(), "GC: removed a stale temp file");
    }
    for id in cache::list(&conf.cni_dir)? {
        let path = conf.cni_dir.join(&id);
        let found = match cache::read(&path).and_then(|stored| {
            stored
                .map(|s| multus_cache::resolve(&path, s, &Invocation::gc(&id, conf)))
                .transpose()
        }) {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let entry = &found.entry;
        let in_use = valid
            .iter()
            .any(|v| v.container_id == entry.container_id && v.ifname == entry.ifname);
        if in_use {
            continue;
        }
        info!(container = %entry.container_id, "GC: attachment no longer valid, deleting");
        let netns = entry.netns.clone().filter(|p| p.exists());
        if let Err(e) = del_entry(engine, conf, &path, found, netns.as_deref(), &request.path) {
            errors.push(e);
        }
    }
    // The cluster network's own GC, when it speaks 1.1.0.
    match cluster_network_conf(engine, conf) {
        Ok(cluster) if cluster.cni_version().has_status_and_gc() => {
            let list: Vec<Value> = valid
                .iter()
                .map(|v| json!({"containerID": v.container_id, "ifname": v.ifname}))
                .collect();
            let mut extra = serde_json::Map::new();
            extra.insert(VALID_ATTACHMENTS_KEY.into(), Value::Array(list));
            let dirs = conf.plugin_dirs(&request.path);
            let invoker = Invoker::new(engine.exec.as_ref(), &dirs);
            if let Err(e) = invoker.status_or_gc(cluster.name(), &cluster, Command::Gc, &extra) {
                errors.push(e);
            }
        }
        Ok(_) => {}
        Err(e) => errors.push(e),
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(Error::Many(errors)),
    }
}
