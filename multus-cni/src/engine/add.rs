//! ADD: plan, cache, run every delegate in order, roll back on the first failure, apply
//! default-route, run the embedder's hook, and build the result and network-status.
use std::path::Path;

use tracing::{info, warn};

use super::{
    AddOutput, Engine,
    cache::{self, CacheEntry, CachedDelegate, CachedPod},
    devinfo,
    hooks::Attachment,
    netlink::RouteSocket,
    plan::{Planned, plan},
    route, status,
};
use crate::{
    cni::{CniVersion, Request, result::CniResult},
    config::NetConf,
    delegate::{Invoker, Target},
    error::{Error, Result},
    network::PodKey,
};

pub(super) fn run(engine: &Engine, request: &Request, conf: &NetConf) -> Result<AddOutput> {
    let netns =
        request
            .netns
            .as_deref()
            .ok_or(Error::Env(crate::cni::request::EnvError::Missing {
                var: "CNI_NETNS",
                command: "ADD",
            }))?;
    if let Some(file) = conf.readiness_file()
        && !file.exists()
    {
        return Err(Error::NotReady {
            path: file.to_owned(),
            code: crate::cni::code::TRY_AGAIN_LATER,
        });
    }
    let pod = pod_key(request);
    let info = match &pod {
        Some(key) => engine.source.pod(key)?,
        None => None,
    };
    if let (Some(key), Some(info)) = (&pod, &info)
        && let (Some(want), Some(have)) = (&key.uid, &info.uid)
        && want != have
        && !info.is_static()
    {
        return Err(Error::network(
            format!("pod {}/{}", key.namespace, key.name),
            format!("K8S_POD_UID is {want} but the pod's uid is {have}"),
        ));
    }
    let mut planned = plan(engine, request, conf, pod.as_ref(), info.as_ref())?;
    let dirs = conf.plugin_dirs(&request.path);
    let invoker = Invoker::new(engine.exec.as_ref(), &dirs);
    for p in &planned {
        invoker.check_plugins(&p.network, &p.conf)?;
        check_masters(p)?;
    }

    let cache_path = conf.cache_path(&request.container_id);
    if cache_path.exists() {
        return Err(Error::AlreadyAttached {
            container_id: request.container_id.clone(),
            path: cache_path,
        });
    }
    let cni_args = request.args.for_delegate();
    let mut entry = CacheEntry {
        format: cache::FORMAT.into(),
        container_id: request.container_id.clone(),
        netns: Some(netns.to_owned()),
        ifname: request.ifname.clone(),
        pod: pod.as_ref().map(|p| CachedPod {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
        }),
        plugin_dirs: dirs.clone(),
        complete: false,
        delegates: planned
            .iter()
            .map(|p| CachedDelegate {
                network: p.network.clone(),
                ifname: p.ifname.clone(),
                cluster: p.cluster,
                config: p.conf.to_json_string(),
                runtime_config: p.runtime_config.clone(),
                cni_args: cni_args.clone(),
                result: None,
            })
            .collect(),
        del_retries: None,
    };
    // Before the first delegate runs: DEL needs these bytes even if this process dies. The
    // netns check runs meanwhile (both take a while: fsync, and setns plus a link dump); when it
    // fails, the cache goes again and nothing was created.
    let (checked, stored) = std::thread::scope(|s| {
        let check = s.spawn(|| check_netns(netns, &planned));
        let stored = cache::store(&cache_path, &entry);
        let checked = check
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (checked, stored)
    });
    if let Err(e) = checked.and(stored) {
        if let Err(cleanup) = cache::remove(&cache_path) {
            warn!("{cleanup}");
        }
        return Err(e);
    }

    // What undoes the delegates added so far when a later step fails.
    let undo = Rollback {
        engine,
        conf,
        invoker: &invoker,
        request,
        cache_path: &cache_path,
    };
    let mut results: Vec<CniResult> = Vec::with_capacity(planned.len());
    for (i, p) in planned.iter_mut().enumerate() {
        // ADD only, as Multus appends them: DEL and CHECK get the cached arguments without.
        let add_args = with_legacy_args(&cni_args, &p.legacy_args);
        let target = Target {
            container_id: &request.container_id,
            netns: Some(netns),
            ifname: &p.ifname,
            cni_args: &add_args,
        };
        let file = devinfo::owned(&p.runtime_config, &request.container_id, &p.ifname);
        if let (Some(file), Some(info)) = (&file, p.published_device_info()) {
            // Best effort, as in Multus: the delegate can do without it.
            if let Err(e) = devinfo::write(file, info) {
                warn!(network = %p.network, "{e}");
            }
        }
        let added = invoker.add(&p.network, &p.conf, &p.runtime_config, target);
        match added {
            Ok((value, parsed)) => {
                info!(network = %p.network, ifname = %p.ifname, "attached");
                // What the delegate left in its device-information file is what it reports.
                p.reported_device_info = file.as_deref().and_then(devinfo::read);
                entry.delegates[i].result = Some(value);
                results.push(parsed);
            }
            Err(e) => {
                warn!(network = %p.network, "ADD failed, rolling back: {e}");
                undo.run(&mut entry, i, true);
                return Err(e);
            }
        }
    }

    let finished = finish(
        engine,
        request,
        conf,
        netns,
        &planned,
        &mut results,
        &mut entry,
        &cache_path,
        pod.as_ref(),
    );
    finished.inspect_err(|e| {
        warn!("ADD failed after the delegates, rolling back: {e}");
        let last = planned.len() - 1;
        undo.run(&mut entry, last, false);
    })
}

/// After the delegates: default-route, the hook, and the completed cache entry.
#[allow(clippy::too_many_arguments)]
fn finish(
    engine: &Engine,
    request: &Request,
    conf: &NetConf,
    netns: &Path,
    planned: &[Planned],
    results: &mut [CniResult],
    entry: &mut CacheEntry,
    cache_path: &Path,
    pod: Option<&PodKey>,
) -> Result<AddOutput> {
    // network-status shows what the plugins returned, as Multus builds it before its
    // default-route edits.
    let returned = results.to_vec();
    // The cached results stay the plugins' own bytes unless default-route edited them.
    if route::apply(netns, planned, results)? {
        for (d, r) in entry.delegates.iter_mut().zip(results.iter()) {
            let version = d
                .result
                .as_ref()
                .and_then(|v| v.get("cniVersion"))
                .and_then(|v| v.as_str())
                .and_then(CniVersion::parse);
            if let Some(version) = version {
                d.result = Some(r.to_value(version));
            }
        }
    }
    let output = output(request, conf, netns, planned, (&returned, results), pod);
    engine
        .hooks
        .after_add(&output.attachments)
        .map_err(|e| Error::Hook {
            stage: "after ADD",
            code: e.code,
            message: e.message,
        })?;
    entry.complete = true;
    cache::store_results(cache_path, entry)?;
    Ok(output)
}

fn pod_key(request: &Request) -> Option<PodKey> {
    request.args.pod().map(|(ns, name)| PodKey {
        namespace: ns.to_owned(),
        name: name.to_owned(),
        uid: request.args.pod_uid.clone(),
    })
}

/// Fails before anything is created when a macvlan or ipvlan `master` is missing on this node:
/// the plugin would fail with a generic code, and Debian's macvlan then fails its DEL too.
fn check_masters(p: &Planned) -> Result<()> {
    for (plugin, master) in p.conf.master_links() {
        if nix::net::if_::if_nametoindex(master.as_str()).is_err() {
            return Err(Error::MasterNotFound {
                network: p.network.clone(),
                plugin,
                master,
            });
        }
    }
    Ok(())
}

/// Fails before anything is created when the netns is unusable or an interface name is taken.
fn check_netns(netns: &Path, planned: &[Planned]) -> Result<()> {
    let mut sock = RouteSocket::open(netns)?;
    let links = sock.links()?;
    for p in planned {
        if links.iter().any(|(_, name)| *name == p.ifname) {
            return Err(Error::Ifname {
                ifname: p.ifname.clone(),
                network: p.network.clone(),
                reason: format!("already exists in {}", netns.display()),
            });
        }
    }
    Ok(())
}

/// What a rollback needs.
struct Rollback<'a> {
    engine: &'a Engine,
    conf: &'a NetConf,
    invoker: &'a Invoker<'a>,
    request: &'a Request,
    cache_path: &'a Path,
}

impl Rollback<'_> {
    /// Deletes delegates `last..=0` in reverse order. The cache goes when every DEL succeeded;
    /// otherwise it keeps exactly those delegates for the runtime's DEL to retry (a failed DEL
    /// counted, as for any DEL).
    ///
    /// With `last_failed`, delegate `last` is the one whose own ADD failed. It gets one DEL,
    /// best effort (the spec lets a runtime DEL after a failed ADD, and a plugin that got as far
    /// as an IPAM lease frees it there), but it is never kept for a retry: a plugin whose ADD
    /// failed cleaned up after itself or created nothing, and its DEL often fails for the very
    /// reason its ADD did (Debian's macvlan without its master: "Link not found"), which would
    /// fail every DEL of the pod for ever.
    fn run(&self, entry: &mut CacheEntry, last: usize, last_failed: bool) {
        entry.delegates.truncate(last + 1);
        let failed_add = entry
            .delegates
            .get(last)
            .filter(|_| last_failed)
            .map(|d| (d.network.clone(), d.ifname.clone()));
        let errors = super::del::del_delegates(self.invoker, self.request.netns.as_deref(), entry);
        for e in &errors {
            warn!("rollback: {e}");
        }
        if let Some((network, ifname)) = failed_add
            && entry
                .delegates
                .iter()
                .any(|d| d.network == network && d.ifname == ifname)
        {
            info!(%network, %ifname, "rollback: the delegate whose ADD failed also failed its DEL; not kept for a retry");
            entry
                .delegates
                .retain(|d| d.network != network || d.ifname != ifname);
        }
        if entry.delegates.is_empty() {
            if let Err(e) = cache::remove(self.cache_path) {
                warn!("rollback: {e}");
            }
            return;
        }
        match super::del::count_failure(self.conf, entry, &errors) {
            Some(abandoned) => {
                if let Err(e) = cache::remove(self.cache_path) {
                    warn!("rollback: {e}");
                }
                super::del::give_up(self.engine, &abandoned);
            }
            None => {
                if let Err(e) = cache::store(self.cache_path, entry) {
                    warn!("rollback: {e}");
                }
            }
        }
    }
}

/// `args` with the legacy pairs appended, as libcni joins Multus's `rt.Args`.
fn with_legacy_args(args: &str, legacy: &[(String, String)]) -> String {
    let mut out = args.to_owned();
    for (k, v) in legacy {
        if !out.is_empty() {
            out.push(';');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// The output of a finished ADD; `returned` are the results as the plugins returned them
/// (network-status), `results` as default-route left them (the CNI result, attachments).
fn output(
    request: &Request,
    conf: &NetConf,
    netns: &Path,
    planned: &[Planned],
    (returned, results): (&[CniResult], &[CniResult]),
    pod: Option<&PodKey>,
) -> AddOutput {
    let mut network_status = Vec::new();
    let mut attachments = Vec::new();
    for (p, r) in planned.iter().zip(returned) {
        network_status.extend(status::entries(&p.network, p.cluster, r, p.device_info()));
    }
    for (p, r) in planned.iter().zip(results) {
        attachments.push(Attachment::from_result(
            &request.container_id,
            Some(netns),
            (&p.network, &p.ifname, p.cluster),
            r,
            pod,
        ));
    }
    let mut cni_result = results.first().cloned().unwrap_or_default();
    conf.cni_version
        .as_str()
        .clone_into(&mut cni_result.cni_version);
    AddOutput {
        result: cni_result.to_value(conf.cni_version),
        cni_result,
        network_status,
        attachments,
        warnings: planned
            .iter()
            .flat_map(|p| p.warnings.iter().cloned())
            .collect(),
    }
}
