//! Which delegates a pod gets, in order: the cluster network (or the pod's default-network
//! override) as the runtime's interface, `delegates[1..]` and `defaultNetworks`, then the
//! networks annotation; with interface names, runtime config and capability checks.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value};

use super::{
    Engine, devinfo,
    hooks::{Device, DeviceRequest},
};
use crate::{
    cni::Request,
    config::NetConf,
    delegate::DelegateConf,
    error::{Error, Result},
    network::{
        DEFAULT_NETWORK_ANNOTATION, NETWORKS_ANNOTATION, NetworkAttachmentDefinition,
        NetworkSelectionElement, PodInfo, PodKey, parse_default_network, parse_networks,
    },
};

/// One delegate the engine will run.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// `<namespace>/<nad>`, or the configuration name for inline and file networks.
    pub network: String,
    /// Interface name inside the pod.
    pub ifname: String,
    /// Whether this is the cluster network.
    pub cluster: bool,
    /// The configuration, with cni-args and device id merged in.
    pub conf: DelegateConf,
    /// `runtimeConfig` for the plugins (each gets only what it declares).
    pub runtime_config: Map<String, Value>,
    /// Requested default-route gateways.
    pub default_route: Option<Vec<IpAddr>>,
    /// NAD resource name, for the device provider.
    resource_name: Option<String>,
    /// The device the provider assigned, as it answered (its id is merged into `conf`).
    pub device: Option<Device>,
    /// What the delegate left in its device-information file after ADD.
    pub reported_device_info: Option<Value>,
    /// The legacy `CNI_ARGS` pairs Multus appends for ADD (`MAC=`, then `IP=a,b`): the static
    /// IPAM reads `IP`; tuning, sriov and ovs read `MAC`.
    pub legacy_args: Vec<(String, String)>,
    /// Requests no plugin of the network can take (Warning Events after ADD).
    pub warnings: Vec<String>,
}

impl Planned {
    /// The device information for network-status: what the delegate reported, else what the
    /// device provider knew.
    pub fn device_info(&self) -> Option<&Value> {
        self.reported_device_info
            .as_ref()
            .or_else(|| self.device.as_ref()?.device_info.as_ref())
    }

    /// The device plugin's own information, to copy to the delegate's device-information file
    /// before its ADD (as Multus does).
    pub fn published_device_info(&self) -> Option<&Value> {
        self.device
            .as_ref()
            .filter(|d| d.published)?
            .device_info
            .as_ref()
    }
}

/// A network before interface naming.
struct Resolved {
    network: String,
    conf: DelegateConf,
    resource_name: Option<String>,
}

/// Builds the plan for an ADD.
pub(super) fn plan(
    engine: &Engine,
    request: &Request,
    conf: &NetConf,
    pod: Option<&PodKey>,
    info: Option<&PodInfo>,
) -> Result<Vec<Planned>> {
    let annotation = |key: &str| {
        info.and_then(|i| i.annotations.get(key))
            .map(String::as_str)
    };
    let mut planned = Vec::new();

    // The cluster network, or the pod's override of it.
    // A NAD (clusterNetwork, or the pod's override) is named `<namespace>/<nad>`, a file or an
    // inline delegate by its configuration's name, as Multus names them in network-status.
    let (cluster, cluster_sel) =
        match annotation(DEFAULT_NETWORK_ANNOTATION).filter(|v| !v.trim().is_empty()) {
            Some(value) => {
                let sel = parse_default_network(value, &conf.multus_namespace)?;
                (nad_network(engine, conf, &sel)?, Some(sel))
            }
            None => (cluster_network(engine, conf)?, None),
        };
    let mut rc = conf.runtime_config.clone();
    let mut warnings = Vec::new();
    if let Some(sel) = &cluster_sel {
        let (requested, missing) = requested_runtime_config(conf, &cluster, sel)?;
        rc.extend(requested);
        warnings = missing;
    }
    let mut first = make(
        cluster,
        request.ifname.clone(),
        true,
        rc,
        cluster_sel.as_ref(),
    );
    first.warnings = warnings;
    planned.push(first);

    // Further inline delegates and defaultNetworks (not for pods in system namespaces).
    let pod_ns = pod.map(|p| p.namespace.as_str());
    let mut extra = Vec::new();
    if conf.cluster_network.is_none() {
        for (i, d) in conf.delegates.iter().enumerate().skip(1) {
            extra.push(inline(d, i)?);
        }
    }
    if !pod_ns.is_some_and(|ns| conf.is_system_namespace(ns)) {
        for name in &conf.default_networks {
            extra.push(named_network(engine, conf, name)?);
        }
    }
    for r in extra {
        let idx = planned.len();
        planned.push(make(r, format!("net{idx}"), false, Map::new(), None));
    }

    // The networks annotation.
    if let Some(value) = annotation(NETWORKS_ANNOTATION) {
        let pod_ns = pod_ns.unwrap_or("default");
        for sel in parse_networks(value, pod_ns)? {
            if !conf.may_reference(pod_ns, sel.namespace()) {
                return Err(Error::network(
                    sel.key(),
                    format!(
                        "namespaceIsolation: pods in {pod_ns} may only use networks of their own \
                         namespace or of {}",
                        conf.global_namespaces.join(", ")
                    ),
                ));
            }
            let r = nad_network(engine, conf, &sel)?;
            let (rc, warnings) = requested_runtime_config(conf, &r, &sel)?;
            let idx = planned.len();
            let ifname = sel
                .ifname()
                .map_or_else(|| format!("net{idx}"), str::to_owned);
            let mut p = make(r, ifname, false, rc, Some(&sel));
            p.warnings = warnings;
            planned.push(p);
        }
    }

    check_ifnames(&planned)?;
    check_default_routes(&planned)?;
    assign_devices(engine, pod, &mut planned)?;
    // Every delegate with a device gets its device-information file, as Multus names it.
    for p in &mut planned {
        if p.runtime_config.contains_key("deviceID") {
            let file = devinfo::path(
                &conf.device_info_dir,
                &p.network,
                &request.container_id,
                &p.ifname,
            );
            p.runtime_config.insert(
                devinfo::KEY.into(),
                Value::String(file.to_string_lossy().into_owned()),
            );
        }
    }
    Ok(planned)
}

fn make(
    r: Resolved,
    ifname: String,
    cluster: bool,
    runtime_config: Map<String, Value>,
    sel: Option<&NetworkSelectionElement>,
) -> Planned {
    let mut conf = r.conf;
    let mut runtime_config = runtime_config;
    if let Some(args) = sel.and_then(|s| s.cni_args.as_ref()) {
        conf.merge_cni_args(args);
    }
    // The annotation's deviceID is a capability arg only, as in Multus: it reaches plugins that
    // declare `deviceID`, and is never written into the configuration (only a device the
    // device plugin allocated to the pod is, in `assign_devices`).
    if let Some(id) = sel.and_then(|s| s.device_id.as_deref()) {
        runtime_config.insert("deviceID".into(), Value::String(id.to_owned()));
    }
    let mut legacy_args = Vec::new();
    if let Some(mac) = sel.and_then(|s| s.mac.as_deref()) {
        legacy_args.push(("MAC".to_owned(), mac.to_owned()));
    }
    if let Some(sel) = sel.filter(|s| !s.ips.is_empty()) {
        legacy_args.push(("IP".to_owned(), sel.ips.join(",")));
    }
    Planned {
        network: r.network,
        ifname: sel
            .and_then(NetworkSelectionElement::ifname)
            .map_or(ifname, str::to_owned),
        cluster,
        conf,
        runtime_config,
        default_route: sel.and_then(|s| s.default_route.clone()),
        resource_name: r.resource_name,
        device: None,
        reported_device_info: None,
        legacy_args,
        warnings: Vec::new(),
    }
}

/// The cluster network: `delegates[0]`, or `clusterNetwork` resolved like Multus does.
pub(super) fn cluster_network_conf(engine: &Engine, conf: &NetConf) -> Result<DelegateConf> {
    cluster_network(engine, conf).map(|r| r.conf)
}

fn cluster_network(engine: &Engine, conf: &NetConf) -> Result<Resolved> {
    match (&conf.cluster_network, conf.delegates.first()) {
        (Some(name), _) => named_network(engine, conf, name),
        (None, Some(d)) => inline(d, 0),
        (None, None) => Err(Error::config(
            "clusterNetwork",
            "neither clusterNetwork nor delegates is set",
        )),
    }
}

fn inline(value: &Value, index: usize) -> Result<Resolved> {
    let origin = format!("delegates[{index}]");
    let conf = DelegateConf::from_value(value.clone(), None, &origin).map_err(|e| match e {
        Error::Network { reason, .. } => Error::config(origin.clone(), reason),
        other => other,
    })?;
    Ok(Resolved {
        network: conf.name().to_owned(),
        conf,
        resource_name: None,
    })
}

/// A `clusterNetwork`/`defaultNetworks` entry: an absolute file or directory, a NAD in
/// multusNamespace (or `ns/name`), or the name of a configuration in confDir.
fn named_network(engine: &Engine, conf: &NetConf, name: &str) -> Result<Resolved> {
    let path = Path::new(name);
    if path.is_absolute() {
        let file = if path.is_dir() {
            first_conf_file(path)?.ok_or_else(|| {
                Error::network(name, "directory holds no .conf, .conflist or .json file")
            })?
        } else {
            path.to_owned()
        };
        let bytes = std::fs::read(&file).map_err(|e| match e.kind() {
            // Multus's "cannot find network": the name resolves to nothing, a configuration
            // problem (7), not an I/O failure of the node (5).
            std::io::ErrorKind::NotFound => Error::NetworkNotFound {
                network: name.to_owned(),
                reason: format!("the file {} does not exist", file.display()),
            },
            _ => Error::io("reading", &file, e),
        })?;
        let origin = file.display().to_string();
        let mut value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::decode(format!("configuration of {origin}"), e))?;
        if let Some(dir) = file.parent() {
            append_subdirectory_plugins(&mut value, dir, &origin)?;
        }
        let dc = DelegateConf::from_value(value, None, &origin)?;
        return Ok(Resolved {
            network: dc.name().to_owned(),
            conf: dc,
            resource_name: None,
        });
    }
    let (ns, nad_name) = name
        .split_once('/')
        .unwrap_or((conf.multus_namespace.as_str(), name));
    if let Some(nad) = engine.source.network(ns, nad_name)? {
        return Ok(Resolved {
            network: nad.key(),
            conf: nad_conf(conf, &nad)?,
            resource_name: nad.resource_name().map(str::to_owned),
        });
    }
    match conf_by_name(&conf.conf_dir, name)? {
        Some(dc) => Ok(Resolved {
            network: dc.name().to_owned(),
            conf: dc,
            resource_name: None,
        }),
        None => Err(Error::NetworkNotFound {
            network: name.to_owned(),
            reason: format!(
                "not found: no NetworkAttachmentDefinition {ns}/{nad_name} and no configuration \
                 named {name:?} in {}",
                conf.conf_dir.display()
            ),
        }),
    }
}

/// libcni's subdirectory chaining for a conflist file (Multus 4.2.1 loads a file
/// `clusterNetwork` so): the plugins of `<dir>/<name>/*.conf`, in name order, follow the
/// inline ones, unless `loadOnlyInlinedPlugins` is true. A single-plugin file is left alone.
fn append_subdirectory_plugins(value: &mut Value, dir: &Path, origin: &str) -> Result<()> {
    let Some(obj) = value.as_object_mut() else {
        return Ok(());
    };
    let is_list = !matches!(obj.get("type"), Some(Value::String(t)) if !t.is_empty());
    let only_inline = match obj.get("loadOnlyInlinedPlugins") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    let Some(name) = obj.get("name").and_then(Value::as_str) else {
        return Ok(());
    };
    // A name that is not a plain file name names no subdirectory.
    if !is_list || only_inline || name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Ok(());
    }
    let sub = dir.join(name);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&sub) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "conf"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("listing", &sub, e)),
    };
    files.sort();
    let mut extra = Vec::with_capacity(files.len());
    for file in &files {
        let bytes = std::fs::read(file).map_err(|e| Error::io("reading", file, e))?;
        let plugin: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::decode(format!("plugin configuration {}", file.display()), e))?;
        if !plugin.is_object() {
            return Err(Error::network(
                origin,
                format!("{} is not a JSON object", file.display()),
            ));
        }
        extra.push(plugin);
    }
    if extra.is_empty() {
        return Ok(());
    }
    tracing::debug!(network = name, plugins = extra.len(), dir = %sub.display(), "plugins from the subdirectory chained");
    match obj
        .entry("plugins")
        .or_insert_with(|| Value::Array(Vec::new()))
    {
        Value::Array(plugins) => plugins.extend(extra),
        _ => return Err(Error::network(origin, "plugins is not a list")),
    }
    Ok(())
}

fn nad_network(engine: &Engine, conf: &NetConf, sel: &NetworkSelectionElement) -> Result<Resolved> {
    let nad = engine
        .source
        .network(sel.namespace(), &sel.name)?
        .ok_or_else(|| Error::NetworkNotFound {
            network: sel.key(),
            reason: "NetworkAttachmentDefinition not found".to_owned(),
        })?;
    Ok(Resolved {
        network: nad.key(),
        conf: nad_conf(conf, &nad)?,
        resource_name: nad.resource_name().map(str::to_owned),
    })
}

/// A NAD's configuration: `spec.config`, or a file in confDir named like the NAD when empty.
fn nad_conf(conf: &NetConf, nad: &NetworkAttachmentDefinition) -> Result<DelegateConf> {
    if nad.config.trim().is_empty() {
        return conf_by_name(&conf.conf_dir, &nad.name)?.ok_or_else(|| {
            Error::network(
                nad.key(),
                format!(
                    "spec.config is empty and {} has no configuration named {:?}",
                    conf.conf_dir.display(),
                    nad.name
                ),
            )
        });
    }
    DelegateConf::from_bytes(nad.config.as_bytes(), Some(&nad.name), &nad.key())
}

fn conf_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("listing", dir, e)),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "conf" | "conflist" | "json"))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn first_conf_file(dir: &Path) -> Result<Option<PathBuf>> {
    Ok(conf_files(dir)?.into_iter().next())
}

/// The configuration in `dir` whose `name` is `name`; conflists first (NPWG §3.4.1).
fn conf_by_name(dir: &Path, name: &str) -> Result<Option<DelegateConf>> {
    let files = conf_files(dir)?;
    let (lists, others): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|p| p.extension().is_some_and(|e| e == "conflist"));
    for file in lists.into_iter().chain(others) {
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        if value.get("name").and_then(Value::as_str) == Some(name) {
            return DelegateConf::from_value(value, None, &file.display().to_string()).map(Some);
        }
    }
    Ok(None)
}

/// The runtimeConfig a selection asks for, and a warning per request no plugin declares the
/// capability for. Like Multus (and libcni), such a request is dropped from runtimeConfig, and
/// `ips`/`mac` still reach the plugins as legacy `CNI_ARGS`; with `requireCapabilities` it
/// fails the ADD instead, as the NPWG specification says.
fn requested_runtime_config(
    conf: &NetConf,
    r: &Resolved,
    sel: &NetworkSelectionElement,
) -> Result<(Map<String, Value>, Vec<String>)> {
    let mut rc = Map::new();
    let mut warnings = Vec::new();
    let mut want = |field: &'static str, capability: &'static str, value: Option<Value>| {
        let Some(value) = value else {
            return Ok(());
        };
        if !r.conf.has_capability(capability) {
            let missing = Error::Capability {
                network: r.network.clone(),
                field,
                capability,
            };
            if conf.require_capabilities {
                return Err(missing);
            }
            let legacy = match field {
                "ips" => "; it is passed only as the legacy CNI_ARGS IP=",
                "mac" => "; it is passed only as the legacy CNI_ARGS MAC=",
                _ => "; it is ignored",
            };
            warnings.push(format!("{missing}{legacy}"));
            return Ok(());
        }
        rc.insert(capability.to_owned(), value);
        Ok(())
    };
    want(
        "ips",
        "ips",
        (!sel.ips.is_empty()).then(|| Value::from(sel.ips.clone())),
    )?;
    want("mac", "mac", sel.mac.clone().map(Value::String))?;
    want(
        "infiniband-guid",
        "infinibandGUID",
        sel.infiniband_guid.clone().map(Value::String),
    )?;
    want(
        "portMappings",
        "portMappings",
        (!sel.port_mappings.is_empty())
            .then(|| serde_json::to_value(&sel.port_mappings).unwrap_or_default()),
    )?;
    want(
        "bandwidth",
        "bandwidth",
        sel.bandwidth
            .as_ref()
            .map(|b| serde_json::to_value(b).unwrap_or_default()),
    )?;
    Ok((rc, warnings))
}

fn check_ifnames(planned: &[Planned]) -> Result<()> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for p in planned {
        if let Some(other) = seen.insert(&p.ifname, &p.network) {
            return Err(Error::Ifname {
                ifname: p.ifname.clone(),
                network: p.network.clone(),
                reason: format!("already used by network {other}"),
            });
        }
    }
    Ok(())
}

/// At most one default-route gateway per address family across the pod's networks (Multus:
/// "does not support ECMP for default-route").
fn check_default_routes(planned: &[Planned]) -> Result<()> {
    for (family, v4) in [("IPv4", true), ("IPv6", false)] {
        let networks: Vec<&str> = planned
            .iter()
            .filter(|p| {
                p.default_route
                    .as_ref()
                    .is_some_and(|g| g.iter().any(|gw| gw.is_ipv4() == v4))
            })
            .map(|p| p.network.as_str())
            .collect();
        if networks.len() > 1 {
            return Err(Error::Annotation {
                annotation: NETWORKS_ANNOTATION,
                reason: format!(
                    "default-route is set on more than one network for {family} ({}): one \
                     default route per address family",
                    networks.join(", ")
                ),
            });
        }
    }
    Ok(())
}

fn assign_devices(engine: &Engine, pod: Option<&PodKey>, planned: &mut [Planned]) -> Result<()> {
    let wanted: Vec<usize> = (0..planned.len())
        .filter(|&i| planned[i].resource_name.is_some())
        .collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let requests: Vec<DeviceRequest> = wanted
        .iter()
        .map(|&i| DeviceRequest {
            network: planned[i].network.clone(),
            resource_name: planned[i].resource_name.clone().unwrap_or_default(),
            ifname: planned[i].ifname.clone(),
        })
        .collect();
    let devices = engine.devices.assign(pod, &requests)?;
    for (&i, device) in wanted.iter().zip(devices) {
        if let Some(device) = device {
            let p = &mut planned[i];
            // A device from the resource wins over a deviceID in the annotation.
            p.conf.set_device_id(&device.device_id);
            p.runtime_config
                .insert("deviceID".into(), Value::String(device.device_id.clone()));
            p.device = Some(device);
        }
    }
    Ok(())
}
