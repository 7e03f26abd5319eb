//! Pods that Multus set up: their `<cniDir>/<containerID>` holds Multus's scratch cache
//! ([`scratch`]) and each delegate left libcni's result cache ([`libcni`]). [`convert`] turns the
//! two into the teardown Multus's own DEL would run, expressed as this engine's
//! [`CacheEntry`], so DEL, GC and CHECK treat such pods like their own:
//!
//! - delegates in the scratch file's order (DEL runs them in reverse), the first being the
//!   cluster network;
//! - interface names by Multus's rule: the record's `ifnameRequest`, else `CNI_IFNAME` for the
//!   first record, else `net<index>`;
//! - a conf or a conflist as the configuration bytes say; a configuration without
//!   `cniVersion` gets the Multus configuration's (Multus does so for conflists);
//! - `CNI_ARGS` as Multus builds them: `IgnoreUnknown=true`, the four `K8S_*` keys from the
//!   request, then the request's own pairs (an empty `K8S_*` value is filled in, any other pair
//!   appended);
//! - `prevResult` from libcni's cache, converted to the configuration's version, and the
//!   `runtimeConfig` libcni recorded there; without that file, the one Multus would compute
//!   (the runtime's `runtimeConfig`, and for networks other than the first the record's
//!   `ips`, `mac`, `infinibandGUID` and `deviceID`).
//!
//! What is left to remove once the pod is torn down (libcni's files, the device-info files) is
//! returned alongside.
pub mod libcni;
pub mod scratch;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tracing::warn;

use super::{
    cache::{self, CacheEntry, CachedDelegate, CachedPod, Stored},
    devinfo,
};
use crate::{
    cni::{CniResult, CniVersion, Request, args::CniArgs},
    config::NetConf,
    delegate::DelegateConf,
    error::{Error, Result},
};
pub use scratch::ScratchDelegate;

/// The request a Multus entry is torn down for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Invocation<'a> {
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_IFNAME`; `None` for GC, which takes it from libcni's cache (else `eth0`).
    pub ifname: Option<&'a str>,
    /// `CNI_ARGS`; `None` for GC, which takes them from libcni's cache.
    pub args: Option<&'a CniArgs>,
    /// The Multus configuration's `runtimeConfig`.
    pub runtime_config: &'a Map<String, Value>,
    /// The Multus configuration's `cniVersion`.
    pub cni_version: CniVersion,
    /// `cniDir`.
    pub cni_dir: &'a Path,
}

impl<'a> Invocation<'a> {
    /// For a DEL or CHECK request.
    pub fn request(request: &'a Request, conf: &'a NetConf) -> Self {
        Self {
            container_id: &request.container_id,
            ifname: Some(&request.ifname),
            args: Some(&request.args),
            runtime_config: &conf.runtime_config,
            cni_version: conf.cni_version,
            cni_dir: &conf.cni_dir,
        }
    }

    /// For GC of the entry of `container_id`.
    pub fn gc(container_id: &'a str, conf: &'a NetConf) -> Self {
        Self {
            container_id,
            ifname: None,
            args: None,
            runtime_config: &conf.runtime_config,
            cni_version: conf.cni_version,
            cni_dir: &conf.cni_dir,
        }
    }
}

/// A Multus entry as this engine's cache entry, and the files to remove with it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Converted {
    /// The teardown, in this engine's terms.
    pub entry: CacheEntry,
    /// libcni's result files (a delegate's device-info file goes with its own DEL).
    pub leftovers: Vec<PathBuf>,
}

/// The entry to act on from what the cache file at `path` holds: this engine's as it is,
/// Multus's converted for `inv`.
pub(crate) fn resolve(path: &Path, stored: Stored, inv: &Invocation<'_>) -> Result<Converted> {
    match stored {
        Stored::Own(entry) => Ok(Converted {
            entry: *entry,
            leftovers: Vec::new(),
        }),
        Stored::Multus(value) => {
            let converted = convert(path, &value, inv)?;
            tracing::info!(
                container = inv.container_id,
                delegates = converted.entry.delegates.len(),
                "the cache entry was written by Multus"
            );
            Ok(converted)
        }
    }
}

/// Reads Multus's scratch cache at `path` (already parsed as `value`) for `inv`.
pub(crate) fn convert(path: &Path, value: &Value, inv: &Invocation<'_>) -> Result<Converted> {
    let records = scratch::parse(value)
        .map_err(|e| Error::decode(format!("Multus's scratch cache {}", path.display()), e))?;
    let mut leftovers = Vec::new();
    let mut delegates = Vec::with_capacity(records.len());
    let mut netns = None;
    let mut cached_args = None;
    let mut entry_ifname = inv.ifname.unwrap_or_default().to_owned();
    for (index, record) in records.iter().enumerate() {
        let config = with_version(&record.config, inv.cni_version);
        let conf_name = config_name(&config);
        let ifname = match (&record.ifname_request, index, inv.ifname) {
            (Some(requested), _, _) => requested.clone(),
            (None, 0, Some(given)) => given.to_owned(),
            (None, 0, None) => libcni::find_ifname(inv.cni_dir, &conf_name, inv.container_id)
                .unwrap_or_else(|| "eth0".to_owned()),
            (None, _, _) => format!("net{index}"),
        };
        if index == 0 {
            ifname.clone_into(&mut entry_ifname);
        }
        let result_file = libcni::path(inv.cni_dir, &conf_name, inv.container_id, &ifname);
        let cached = result_file.as_deref().and_then(|f| {
            libcni::read(f).unwrap_or_else(|e| {
                warn!("ignoring libcni's cached result: {e}");
                None
            })
        });
        if let Some(file) = result_file {
            leftovers.push(file);
        }
        if let Some(c) = &cached {
            netns = netns.or_else(|| c.netns.clone());
            cached_args = cached_args.or_else(|| c.cni_args.clone());
        }
        let network = if record.name.is_empty() {
            conf_name.clone()
        } else {
            record.name.clone()
        };
        let runtime_config = match &cached {
            Some(c) => c.capability_args.clone(),
            None => multus_runtime_config(index == 0, record, inv, &ifname),
        };
        delegates.push(CachedDelegate {
            network,
            result: cached
                .and_then(|c| c.result)
                .and_then(|r| prev_result(r, &config)),
            ifname,
            cluster: index == 0,
            config: String::from_utf8_lossy(&config).into_owned(),
            runtime_config,
            cni_args: String::new(),
        });
    }
    let (cni_args, pod) = match inv.args {
        Some(args) => (multus_cni_args(args), pod_of(&args.pairs)),
        None => {
            let pairs = cached_args.unwrap_or_else(|| multus_base_args(&CniArgs::default()));
            (join_args(&pairs), pod_of(&pairs))
        }
    };
    for d in &mut delegates {
        d.cni_args.clone_from(&cni_args);
    }
    Ok(Converted {
        entry: CacheEntry {
            format: cache::FORMAT.into(),
            container_id: inv.container_id.to_owned(),
            netns,
            ifname: entry_ifname,
            pod,
            plugin_dirs: Vec::new(),
            complete: true,
            delegates,
            del_retries: None,
        },
        leftovers,
    })
}

/// `config` with `cniVersion` set to `version` when it has none.
fn with_version(config: &[u8], version: CniVersion) -> Vec<u8> {
    match serde_json::from_slice::<Value>(config) {
        Ok(Value::Object(mut obj)) if !obj.get("cniVersion").is_some_and(Value::is_string) => {
            obj.insert("cniVersion".into(), Value::String(version.as_str().into()));
            Value::Object(obj).to_string().into_bytes()
        }
        _ => config.to_vec(),
    }
}

/// The configuration's `name` (libcni's network name), empty when it has none.
fn config_name(config: &[u8]) -> String {
    serde_json::from_slice::<Value>(config)
        .ok()
        .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// The cached result as the configuration's version, as libcni passes it; `None` when it cannot
/// be converted (libcni then deletes without it).
fn prev_result(result: Value, config: &[u8]) -> Option<Value> {
    let version = DelegateConf::from_bytes(config, Some(""), "")
        .ok()?
        .cni_version();
    if result.get("cniVersion").and_then(Value::as_str) == Some(version.as_str()) {
        return Some(result);
    }
    match CniResult::from_value(result) {
        Ok(r) => Some(r.to_value(version)),
        Err(e) => {
            warn!("ignoring libcni's cached result: {e}");
            None
        }
    }
}

/// The `runtimeConfig` Multus computes for a delegate on DEL (`mergeCNIRuntimeConfig`): the
/// runtime's keys Multus knows, overridden for networks other than the first by the record's
/// requests; a device id adds its device-info file.
fn multus_runtime_config(
    first: bool,
    record: &ScratchDelegate,
    inv: &Invocation<'_>,
    ifname: &str,
) -> Map<String, Value> {
    const KNOWN: [&str; 7] = [
        "portMappings",
        "bandwidth",
        "ips",
        "mac",
        "infinibandGUID",
        "deviceID",
        "CNIDeviceInfoFile",
    ];
    let mut rc: Map<String, Value> = KNOWN
        .iter()
        .filter_map(|k| {
            inv.runtime_config
                .get(*k)
                .map(|v| ((*k).to_owned(), v.clone()))
        })
        .collect();
    if !first {
        if !record.ip_request.is_empty() {
            rc.insert("ips".into(), record.ip_request.clone().into());
        }
        let requests = [
            ("mac", &record.mac_request),
            ("infinibandGUID", &record.infiniband_guid_request),
            ("deviceID", &record.device_id),
        ];
        for (key, value) in requests {
            if let Some(v) = value {
                rc.insert(key.into(), Value::String(v.clone()));
            }
        }
    }
    // Multus passes only what is set.
    rc.retain(|_, v| match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    });
    if rc.contains_key("deviceID") {
        // Multus always used the default directory.
        let dir = Path::new(crate::config::DEFAULT_DEVICE_INFO_DIR);
        let file = devinfo::path(dir, &record.name, inv.container_id, ifname);
        rc.insert(
            devinfo::KEY.into(),
            Value::String(file.to_string_lossy().into_owned()),
        );
    }
    rc
}

/// Multus's first five `CNI_ARGS` pairs, from the request's Kubernetes keys.
fn multus_base_args(args: &CniArgs) -> Vec<(String, String)> {
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        ("IgnoreUnknown".into(), "true".into()),
        ("K8S_POD_NAMESPACE".into(), value(&args.pod_namespace)),
        ("K8S_POD_NAME".into(), value(&args.pod_name)),
        (
            "K8S_POD_INFRA_CONTAINER_ID".into(),
            value(&args.infra_container_id),
        ),
        ("K8S_POD_UID".into(), value(&args.pod_uid)),
    ]
}

/// `CNI_ARGS` as Multus gives them to a delegate: its five pairs, then each of the request's
/// pairs, filling one of Multus's keys when that is still empty and appended otherwise.
fn multus_cni_args(args: &CniArgs) -> String {
    let mut pairs = multus_base_args(args);
    for (key, value) in &args.pairs {
        match pairs
            .iter_mut()
            .find(|(k, v)| k == key && v.is_empty() && !value.is_empty())
        {
            Some(slot) => value.clone_into(&mut slot.1),
            None => pairs.push((key.clone(), value.clone())),
        }
    }
    join_args(&pairs)
}

fn join_args(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The pod the last `K8S_*` pairs name (the later pair wins, as for plugins).
fn pod_of(pairs: &[(String, String)]) -> Option<CachedPod> {
    let last = |key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    Some(CachedPod {
        namespace: last("K8S_POD_NAMESPACE")?,
        name: last("K8S_POD_NAME")?,
        uid: last("K8S_POD_UID"),
    })
}

#[cfg(test)]
mod tests;
