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
    /// Device information for network-status.
    pub device_info: Option<Value>,
    /// `device_info` is what the device plugin published: copied to the delegate's
    /// `CNIDeviceInfoFile` before its ADD.
    pub published: bool,
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
    let (mut cluster, cluster_sel) =
        match annotation(DEFAULT_NETWORK_ANNOTATION).filter(|v| !v.trim().is_empty()) {
            Some(value) => {
                let sel = parse_default_network(value, &conf.multus_namespace)?;
                (nad_network(engine, conf, &sel)?, Some(sel))
            }
            None => (cluster_network(engine, conf)?, None),
        };
    // Like Multus, the cluster network is named by its configuration, even when it is a NAD.
    cluster.network = cluster.conf.name().to_owned();
    let mut rc = conf.runtime_config.clone();
    if let Some(sel) = &cluster_sel {
        rc.extend(requested_runtime_config(&cluster, sel)?);
    }
    planned.push(make(
        cluster,
        request.ifname.clone(),
        true,
        rc,
        cluster_sel.as_ref(),
    ));

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
            let rc = requested_runtime_config(&r, &sel)?;
            let idx = planned.len();
            let ifname = sel
                .ifname()
                .map_or_else(|| format!("net{idx}"), str::to_owned);
            planned.push(make(r, ifname, false, rc, Some(&sel)));
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
    if let Some(id) = sel.and_then(|s| s.device_id.as_deref()) {
        conf.set_device_id(id);
        runtime_config.insert("deviceID".into(), Value::String(id.to_owned()));
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
        device_info: None,
        published: false,
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
        let dc = DelegateConf::from_bytes(&bytes, None, &file.display().to_string())?;
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

/// The runtimeConfig a selection asks for, failing when no plugin declares the capability.
fn requested_runtime_config(
    r: &Resolved,
    sel: &NetworkSelectionElement,
) -> Result<Map<String, Value>> {
    let mut rc = Map::new();
    let mut want = |field: &'static str, capability: &'static str, value: Option<Value>| {
        let Some(value) = value else {
            return Ok(());
        };
        if !r.conf.has_capability(capability) {
            return Err(Error::Capability {
                network: r.network.clone(),
                field,
                capability,
            });
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
    Ok(rc)
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

fn check_default_routes(planned: &[Planned]) -> Result<()> {
    if planned.iter().filter(|p| p.default_route.is_some()).count() > 1 {
        return Err(Error::Annotation {
            annotation: DEFAULT_NETWORK_ANNOTATION,
            reason: "default-route is requested by more than one network".into(),
        });
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
        if let Some(Device {
            device_id,
            device_info,
            published,
        }) = device
        {
            let p = &mut planned[i];
            // A device from the resource wins over a deviceID in the annotation.
            p.conf.set_device_id(&device_id);
            p.runtime_config
                .insert("deviceID".into(), Value::String(device_id));
            p.device_info = device_info;
            p.published = published;
        }
    }
    Ok(())
}
