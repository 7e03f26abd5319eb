//! The manifests in deploy/: every one parses into its typed Kubernetes object (and back, so a
//! misspelt field cannot hide), `kubectl apply -f deploy/` creates them in a working order,
//! the DaemonSet mounts the paths the agent's and the installer's defaults use (read from the
//! code), the ClusterRoles grant exactly the requests the code makes, and the examples are
//! valid for the policy compiler. The top-level manifests and the examples are also created on
//! the test API server.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use clap::Parser;
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{ConfigMap, Container, Pod, PodSpec, Service, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::util::intstr::IntOrString,
};
use multus_agent::{
    access::AGENT,
    config::AgentConfig,
    install::cli::InstallArgs,
    policy::{NAD_POLICY_ANNOTATION, mnp::MnpEntry},
    uninstall::UninstallArgs,
};
use multus_kube::{
    access::{Access, CNI_BINARY, Identity},
    crd::{NetworkAttachmentDefinition, v1beta2::MultiNetworkPolicy},
};
use multus_testkit::kube::{KubeCluster, read_yaml_documents};
use serde::{Deserialize as _, Serialize, de::DeserializeOwned};
use serde_json::Value;

/// One document of a manifest file.
#[derive(Debug, Clone)]
struct Doc {
    file: String,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The files `kubectl apply -f DIR` reads, in its order (by name, not recursive).
fn applied_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
        })
        .collect();
    files.sort();
    files
}

fn docs_of(files: &[PathBuf]) -> Vec<Doc> {
    let mut docs = Vec::new();
    for file in files {
        let values = read_yaml_documents(file).unwrap_or_else(|e| panic!("{e}"));
        assert!(!values.is_empty(), "{}: no document", file.display());
        for value in values {
            docs.push(Doc {
                file: file.file_name().unwrap().to_string_lossy().into_owned(),
                value,
            });
        }
    }
    docs
}

/// The objects `kubectl apply -f deploy/` creates, in order.
fn deploy_docs() -> Vec<Doc> {
    docs_of(&applied_files(&repo().join("deploy")))
}

fn example_docs() -> Vec<Doc> {
    docs_of(&applied_files(&repo().join("deploy/examples")))
}

/// Parses `doc` as `T` and checks that writing it back gives the same JSON: a field the type
/// does not know (a typo, a field of another API version) would be missing.
#[track_caller]
fn typed<T: DeserializeOwned + Serialize>(doc: &Doc) -> T {
    let object: T = serde_json::from_value(doc.value.clone()).unwrap_or_else(|e| {
        panic!("{} {}/{}: {e}", doc.file, doc.kind(), doc.name());
    });
    let back = serde_json::to_value(&object).unwrap();
    assert_eq!(
        back,
        doc.value,
        "{} {}/{}: fields the typed object does not keep",
        doc.file,
        doc.kind(),
        doc.name()
    );
    object
}

/// The typed top-level objects.
#[derive(Default)]
struct Deploy {
    crds: Vec<CustomResourceDefinition>,
    accounts: Vec<ServiceAccount>,
    roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    config_maps: Vec<ConfigMap>,
    daemon_sets: Vec<DaemonSet>,
    services: Vec<Service>,
}

fn parse_deploy() -> Deploy {
    let mut d = Deploy::default();
    for doc in deploy_docs() {
        let api = doc.value["apiVersion"].as_str().unwrap_or("").to_owned();
        match (api.as_str(), doc.kind()) {
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => d.crds.push(typed(&doc)),
            ("v1", "ServiceAccount") => d.accounts.push(typed(&doc)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => d.roles.push(typed(&doc)),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                d.bindings.push(typed(&doc));
            }
            ("v1", "ConfigMap") => d.config_maps.push(typed(&doc)),
            ("apps/v1", "DaemonSet") => d.daemon_sets.push(typed(&doc)),
            ("v1", "Service") => d.services.push(typed(&doc)),
            (api, kind) => panic!(
                "{}: {api} {kind} is not a kind this test knows: add it",
                doc.file
            ),
        }
    }
    d
}

#[test]
fn every_top_level_manifest_is_a_typed_object_in_a_working_order() {
    let docs = deploy_docs();
    let d = parse_deploy();
    let crd_names: BTreeSet<&str> = d
        .crds
        .iter()
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    assert_eq!(
        crd_names,
        BTreeSet::from([
            "multi-networkpolicies.k8s.cni.cncf.io",
            "network-attachment-definitions.k8s.cni.cncf.io",
        ])
    );
    assert_eq!(d.daemon_sets.len(), 1);
    // kubectl creates in file order: what a pod of the DaemonSet needs exists before it.
    let position = |kind: &str, name: &str| {
        docs.iter()
            .position(|doc| doc.kind() == kind && doc.name() == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in deploy/"))
    };
    let ds = &d.daemon_sets[0];
    let spec = pod_spec(ds);
    let ds_at = position("DaemonSet", ds.metadata.name.as_deref().unwrap());
    let account = spec.service_account_name.as_deref().unwrap();
    assert!(position("ServiceAccount", account) < ds_at, "{account}");
    assert!(position("ClusterRoleBinding", AGENT.cluster_role) < ds_at);
    for volume in spec.volumes.iter().flatten() {
        if let Some(cm) = &volume.config_map {
            assert!(position("ConfigMap", &cm.name) < ds_at, "{}", cm.name);
        }
    }
    // Every namespaced object goes where the ServiceAccounts are.
    for doc in &docs {
        if let Some(ns) = doc.value["metadata"]["namespace"].as_str() {
            assert_eq!(ns, AGENT.namespace, "{} {}", doc.file, doc.name());
        }
    }
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .unwrap()
}

fn container<'a>(containers: &'a [Container], name: &str) -> &'a Container {
    containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// Where `path` inside `container` comes from: the host path (when its mount is a hostPath
/// volume), whether it is writable, and the mount's propagation.
#[derive(Debug, PartialEq, Eq)]
struct Mounted {
    host: Option<PathBuf>,
    writable: bool,
    propagation: Option<String>,
}

#[track_caller]
fn mounted(spec: &PodSpec, container: &Container, path: &Path) -> Mounted {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| path.starts_with(&m.mount_path))
        .max_by_key(|m| Path::new(&m.mount_path).components().count())
        .unwrap_or_else(|| {
            panic!(
                "container {}: nothing is mounted at or above {}",
                container.name,
                path.display()
            )
        });
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("no volume {}", mount.name));
    let rest = path.strip_prefix(&mount.mount_path).unwrap();
    Mounted {
        host: volume
            .host_path
            .as_ref()
            .map(|h| Path::new(&h.path).join(rest)),
        writable: !mount.read_only.unwrap_or(false),
        propagation: mount.mount_propagation.clone(),
    }
}

/// A path the container must see at the same path as the host (the shim on the host, the
/// runtime or kubelet use it too).
#[track_caller]
fn host_path_same(spec: &PodSpec, c: &Container, path: &Path, writable: bool, what: &str) {
    let m = mounted(spec, c, path);
    assert_eq!(
        m.host.as_deref(),
        Some(path),
        "{what} ({}) must be the host's own path",
        path.display()
    );
    if writable {
        assert!(m.writable, "{what} ({}) must be writable", path.display());
    }
}

/// The value after `flag` in a command line.
fn flag_value<'a>(command: &'a [String], flag: &str) -> Option<&'a str> {
    command
        .iter()
        .position(|a| a == flag)
        .and_then(|i| command.get(i + 1))
        .map(String::as_str)
}

/// The agent's effective configuration: the file its command names, from the ConfigMap.
fn agent_config(d: &Deploy, spec: &PodSpec, agent: &Container) -> AgentConfig {
    let command = agent.command.clone().unwrap_or_default();
    assert_eq!(
        command.get(1).map(String::as_str),
        Some("run"),
        "{command:?}"
    );
    let file = Path::new(flag_value(&command, "--config").expect("run --config FILE"));
    let mount = agent
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| file.parent() == Some(Path::new(&m.mount_path)))
        .unwrap_or_else(|| panic!("{} is not in a mounted directory", file.display()));
    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap();
    let cm_name = &volume.config_map.as_ref().expect("a ConfigMap volume").name;
    let cm = d
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(cm_name))
        .unwrap_or_else(|| panic!("no ConfigMap {cm_name} in deploy/"));
    let key = file.file_name().unwrap().to_str().unwrap();
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("ConfigMap {cm_name} has no key {key}"));
    let Value::Object(obj) = serde_json::from_str(text).unwrap() else {
        panic!("{key} is not a JSON object");
    };
    AgentConfig::from_object(obj).unwrap()
}

/// The CNI key `key` of the agent's configuration (it overrides the shim's), else `default`.
fn cni_path(config: &AgentConfig, key: &str, default: &str) -> PathBuf {
    PathBuf::from(
        config
            .cni_overrides
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or(default),
    )
}

#[derive(Parser)]
struct Install {
    #[command(flatten)]
    args: InstallArgs,
}

#[test]
fn the_daemon_set_mounts_what_the_agent_and_the_installer_use() {
    let d = parse_deploy();
    let ds = &d.daemon_sets[0];
    let spec = pod_spec(ds);
    let agent = container(&spec.containers, "agent");
    let init = container(
        spec.init_containers.as_deref().unwrap_or_default(),
        "install",
    );
    let config = agent_config(&d, spec, agent);

    // The agent's own paths, as the shim on the host and the next agent see them.
    host_path_same(spec, agent, &config.socket_dir, true, "socketDir");
    host_path_same(spec, agent, &config.bpffs_dir, true, "bpffsDir");
    host_path_same(
        spec,
        agent,
        &config.dataplane_state_dir,
        true,
        "dataplaneStateDir",
    );
    // The engine's, with Multus's defaults unless the configuration overrides them: the DEL
    // cache is also read by the shim when the agent is down, delegates run by path.
    use multus_cni::config::{
        DEFAULT_BIN_DIR, DEFAULT_CNI_DIR, DEFAULT_CONF_DIR, DEFAULT_DEVICE_INFO_DIR,
        DEFAULT_KUBELET_ROOT_DIR,
    };
    let cni_dir = cni_path(&config, "cniDir", DEFAULT_CNI_DIR);
    host_path_same(spec, agent, &cni_dir, true, "cniDir");
    // Delegates run on the node's root (chrootDir): it is the node's / and sees mounts made
    // after the agent started (pods' namespaces); binDir and host-local's leases are read
    // through it.
    let chroot = config
        .chroot_dir
        .clone()
        .expect("the shipped agent sets chrootDir");
    let root = mounted(spec, agent, &chroot);
    assert_eq!(
        root.host.as_deref(),
        Some(Path::new("/")),
        "chrootDir is the node's /"
    );
    assert!(
        root.writable,
        "delegates write below chrootDir (leases, sockets)"
    );
    assert_eq!(root.propagation.as_deref(), Some("HostToContainer"));
    let on_node = |p: &Path| chroot.join(p.strip_prefix("/").unwrap());
    let bin_dir = cni_path(&config, "binDir", DEFAULT_BIN_DIR);
    assert_eq!(
        mounted(spec, agent, &on_node(&bin_dir)).host.as_deref(),
        Some(bin_dir.as_path()),
        "binDir is found below chrootDir"
    );
    host_path_same(
        spec,
        agent,
        &cni_path(&config, "confDir", DEFAULT_CONF_DIR),
        false,
        "confDir",
    );
    // host-local's leases, next to the cache, are written on the node through chrootDir.
    let leases = cni_dir.parent().unwrap().join("networks");
    let m = mounted(spec, agent, &on_node(&leases));
    assert_eq!(m.host.as_deref(), Some(leases.as_path()));
    assert!(m.writable, "host-local's dataDir");
    // kubelet's device sources, below kubeletRootDir.
    let kubelet = cni_path(&config, "kubeletRootDir", DEFAULT_KUBELET_ROOT_DIR);
    for default in [
        multus_kube::podresources::DEFAULT_SOCKET,
        multus_kube::podresources::DEFAULT_CHECKPOINT,
    ] {
        let rel = Path::new(default)
            .strip_prefix(DEFAULT_KUBELET_ROOT_DIR)
            .unwrap();
        host_path_same(spec, agent, &kubelet.join(rel), false, default);
    }
    // Device information: read from the device plugins, written for the delegates.
    let device_info = cni_path(&config, "deviceInfoDir", DEFAULT_DEVICE_INFO_DIR);
    host_path_same(
        spec,
        agent,
        &device_info.join("dp"),
        false,
        "deviceInfoDir/dp",
    );
    host_path_same(
        spec,
        agent,
        &device_info.join("cni"),
        true,
        "deviceInfoDir/cni",
    );
    // Pods' namespaces appear after the agent started: mounts must propagate into it.
    let netns = mounted(spec, agent, Path::new("/var/run/netns/any"));
    assert_eq!(netns.host.as_deref(), Some(Path::new("/var/run/netns/any")));
    assert_eq!(netns.propagation.as_deref(), Some("HostToContainer"));

    // The installer, with its flags parsed by its own command line.
    let command = init.command.clone().unwrap_or_default();
    assert!(command[0].ends_with("/multus-agent"), "{command:?}");
    assert_eq!(command[1], "install");
    let install = Install::try_parse_from(&command[1..]).unwrap().args;
    assert!(install.thick, "the DaemonSet runs the agent: thick mode");
    assert!(
        !install.watch,
        "an init container must finish: install --once"
    );
    assert_eq!(
        install.daemon_socket_dir, config.socket_dir,
        "the shim must dial where the agent listens"
    );
    // The shim's DEL with the agent down needs the agent's directories: the installer reads
    // the agent's own configuration file.
    let agent_file = install
        .agent_config
        .clone()
        .expect("install --agent-config FILE");
    assert_eq!(
        Some(agent_file.to_string_lossy().as_ref()),
        flag_value(agent.command.as_deref().unwrap_or_default(), "--config"),
        "the installer reads the file the agent runs with"
    );
    let _ = mounted(spec, init, &agent_file);
    let init_bin = mounted(spec, init, &install.cni_bin_dir);
    assert!(init_bin.writable);
    assert_eq!(
        init_bin.host,
        mounted(spec, agent, &on_node(&bin_dir)).host,
        "the shim goes where the agent runs delegates from"
    );
    let init_conf = mounted(spec, init, &install.cni_conf_dir);
    assert!(init_conf.writable);
    assert_eq!(init_conf.host.as_deref(), Some(Path::new("/etc/cni/net.d")));
    // 00-multus.conf names the primary by the path the installer sees (clusterNetwork): the
    // agent must see it at the same path.
    let autoconfig = install
        .multus_autoconfig_dir
        .clone()
        .unwrap_or_else(|| install.cni_conf_dir.clone());
    assert_eq!(
        mounted(spec, agent, &autoconfig).host,
        mounted(spec, init, &autoconfig).host
    );
    // The watch container keeps 00-multus.conf(list) following the primary: the same
    // configuration as the init container's, written to the same host directory.
    let watcher = container(&spec.containers, "install-watch");
    let command = watcher.command.clone().unwrap_or_default();
    assert_eq!(command[1], "install");
    let watch = Install::try_parse_from(&command[1..]).unwrap().args;
    assert!(watch.watch, "install --watch");
    assert!(
        watch.skip_binary_copy,
        "the init container installed the binary"
    );
    assert_eq!(
        mounted(spec, watcher, &watch.cni_conf_dir),
        mounted(spec, init, &install.cni_conf_dir)
    );
    assert_eq!(watch.agent_config, install.agent_config);
    // The ConfigMap's file is the repository's deploy/config/agent-config.json.
    let (mut install, mut watch) = (install.clone(), watch);
    install.agent_config = Some(repo().join("deploy/config/agent-config.json"));
    watch.agent_config = install.agent_config.clone();
    let (a, b) = (
        install.to_options(|_| None).unwrap(),
        watch.to_options(|_| None).unwrap(),
    );
    assert_eq!(format!("{:?}", a.config), format!("{:?}", b.config));
    assert_eq!(
        (&a.autoconfig_dir, &a.master_cni_file_name),
        (&b.autoconfig_dir, &b.master_cni_file_name)
    );
    // The binary it copies: multus-cni next to multus-agent (deploy/Dockerfile puts both in one
    // directory; the xtask image test checks that side).
    assert!(install.multus_bin_file.is_none() && !install.skip_binary_copy);
    assert_eq!(
        Path::new(&agent.command.as_ref().unwrap()[0]),
        Path::new(&command[0])
    );
}

#[derive(Parser)]
struct Uninstall {
    #[command(flatten)]
    args: UninstallArgs,
}

/// The objects of `deploy/uninstall/`, which `kubectl apply -f deploy/` does not read.
fn uninstall_docs() -> Vec<Doc> {
    let files = applied_files(&repo().join("deploy/uninstall"));
    assert!(!files.is_empty());
    for f in &files {
        assert!(
            !applied_files(&repo().join("deploy")).contains(f),
            "{} would be applied with the install",
            f.display()
        );
    }
    docs_of(&files)
}

#[test]
fn the_uninstall_daemon_set_removes_what_the_install_and_the_agent_left() {
    let d = parse_deploy();
    let spec = pod_spec(&d.daemon_sets[0]);
    let agent = container(&spec.containers, "agent");
    let init = container(
        spec.init_containers.as_deref().unwrap_or_default(),
        "install",
    );
    let config = agent_config(&d, spec, agent);
    let install = Install::try_parse_from(&init.command.clone().unwrap()[1..])
        .unwrap()
        .args;

    let docs = uninstall_docs();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].kind(), "DaemonSet");
    let ds: DaemonSet = typed(&docs[0]);
    assert_eq!(ds.metadata.namespace.as_deref(), Some(AGENT.namespace));
    assert_ne!(ds.metadata.name, d.daemon_sets[0].metadata.name);
    let uspec = pod_spec(&ds);
    assert_eq!(uspec.host_pid, Some(true), "records name /proc/PID/ns/net");
    let containers: Vec<&Container> = uspec
        .init_containers
        .iter()
        .flatten()
        .chain(&uspec.containers)
        .collect();
    assert_eq!(containers.len(), 2);
    for c in containers {
        let command = c.command.clone().unwrap();
        assert_eq!(command[1], "uninstall");
        let args = Uninstall::try_parse_from(&command[1..]).unwrap().args;
        assert!(args.thick && !args.force, "{command:?}");
        let o = args.to_options().unwrap();
        assert_eq!(o.binaries, ["multus-shim"]);
        // Each directory is the one the install and the agent used on the node.
        let same = |here: &Path, theirs: Mounted, what: &str| {
            let m = mounted(uspec, c, here);
            assert_eq!(m.host, theirs.host, "{what}");
            assert!(m.writable, "{what}");
        };
        same(
            &o.cni_conf_dir,
            mounted(spec, init, &install.cni_conf_dir),
            "conf dir",
        );
        same(
            &o.cni_bin_dir,
            mounted(spec, init, &install.cni_bin_dir),
            "bin dir",
        );
        same(
            &o.socket_dir,
            mounted(spec, agent, &config.socket_dir),
            "socketDir",
        );
        same(
            &o.bpffs_dir,
            mounted(spec, agent, &config.bpffs_dir),
            "bpffsDir",
        );
        same(
            &o.state_dir,
            mounted(spec, agent, &config.dataplane_state_dir),
            "dataplaneStateDir",
        );
        let netns = mounted(uspec, c, Path::new("/var/run/netns/any"));
        assert_eq!(netns.host.as_deref(), Some(Path::new("/var/run/netns/any")));
        assert_eq!(netns.propagation.as_deref(), Some("HostToContainer"));
    }
    // The init container does the work (rollout status waits for it on every node); the
    // container after it stays, so the DaemonSet shows each node done.
    let done = &uspec.containers[0];
    assert!(
        done.command
            .as_ref()
            .unwrap()
            .iter()
            .any(|a| a == "--keep-running")
    );
}

#[test]
fn the_daemon_set_runs_everywhere_privileged_guaranteed_and_probed() {
    let d = parse_deploy();
    let ds = &d.daemon_sets[0];
    let spec = pod_spec(ds);
    let agent = container(&spec.containers, "agent");
    let config = agent_config(&d, spec, agent);

    assert_eq!(ds.metadata.namespace.as_deref(), Some(AGENT.namespace));
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some(AGENT.service_account)
    );
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.host_pid, Some(true));
    assert_eq!(
        agent.security_context.as_ref().and_then(|s| s.privileged),
        Some(true)
    );
    // Tolerates every taint.
    assert!(
        spec.tolerations.iter().flatten().any(|t| {
            t.operator.as_deref() == Some("Exists") && t.key.is_none() && t.effect.is_none()
        }),
        "{:?}",
        spec.tolerations
    );
    // Guaranteed QoS: every container, init containers included, has requests = limits.
    let all: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .collect();
    for c in &all {
        let r = c.resources.as_ref().unwrap();
        let (requests, limits) = (r.requests.clone().unwrap(), r.limits.clone().unwrap());
        assert_eq!(requests, limits, "container {}", c.name);
        assert!(
            requests.contains_key("cpu") && requests.contains_key("memory"),
            "container {}",
            c.name
        );
        // One image, the version this tree builds.
        let image = c.image.as_deref().unwrap();
        assert_eq!(
            image.rsplit_once(':').map(|(_, tag)| tag),
            Some(env!("CARGO_PKG_VERSION")),
            "{image}"
        );
    }
    // The node's name from the downward API.
    let node = agent
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "MULTUS_NODE_NAME")
        .expect("MULTUS_NODE_NAME");
    assert_eq!(
        node.value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("spec.nodeName")
    );
    // Probes on the health port, which answers whatever metricsPort says; both listen on
    // every address of the node, IPv4 and IPv6.
    assert!(config.metrics_address.is_unspecified() && config.metrics_port != 0);
    assert!(config.health_address.is_unspecified() && config.health_port != 0);
    assert!(config.metrics_address.is_ipv6() && config.health_address.is_ipv6());
    let port_of = |p: &IntOrString| match p {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => agent
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .unwrap_or_else(|| panic!("no port named {name}")),
    };
    for (probe, path) in [
        (&agent.liveness_probe, "/healthz"),
        (&agent.readiness_probe, "/readyz"),
    ] {
        let get = probe.as_ref().and_then(|p| p.http_get.as_ref()).unwrap();
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(port_of(&get.port), i32::from(config.health_port));
    }
    // Requests in flight finish before the kubelet's SIGKILL.
    assert!(
        spec.termination_grace_period_seconds.unwrap()
            > i64::try_from(config.shutdown_grace.as_secs()).unwrap()
    );
    // The metrics Service reaches the agents' metrics port.
    let labels = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap();
    assert_eq!(d.services.len(), 1);
    let svc = d.services[0].spec.as_ref().unwrap();
    for (k, v) in svc.selector.as_ref().unwrap() {
        assert_eq!(labels.get(k), Some(v), "selector {k}");
    }
    let port = &svc.ports.as_ref().unwrap()[0];
    assert_eq!(
        port_of(port.target_port.as_ref().unwrap()),
        i32::from(config.metrics_port)
    );
}

/// Every `(group, resource, verb)` a ClusterRole grants; wildcards are refused.
fn grants(role: &ClusterRole) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "{rule:?}"
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert!(
                        ![group, resource, verb].iter().any(|s| s.contains('*')),
                        "wildcard in {rule:?}"
                    );
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

fn key(a: &Access) -> (String, String, String) {
    (a.group.to_owned(), a.resource.to_owned(), a.verb.to_owned())
}

#[test]
fn each_cluster_role_grants_exactly_the_requests_its_code_makes() {
    let d = parse_deploy();
    let identities: [(&str, Identity); 2] = [
        ("multus_kube::access::CNI_BINARY", CNI_BINARY),
        ("multus_agent::access::AGENT", AGENT),
    ];
    assert_eq!(
        d.roles.len(),
        identities.len(),
        "a ClusterRole without an identity in the code"
    );
    let mut problems = Vec::new();
    for (table, id) in identities {
        assert!(
            d.accounts.iter().any(|a| {
                a.metadata.name.as_deref() == Some(id.service_account)
                    && a.metadata.namespace.as_deref() == Some(id.namespace)
            }),
            "no ServiceAccount {}/{}",
            id.namespace,
            id.service_account
        );
        assert!(
            d.bindings.iter().any(|b| {
                b.role_ref.kind == "ClusterRole"
                    && b.role_ref.name == id.cluster_role
                    && b.subjects.iter().flatten().any(|s| {
                        s.kind == "ServiceAccount"
                            && s.name == id.service_account
                            && s.namespace.as_deref() == Some(id.namespace)
                    })
            }),
            "ClusterRole {} is not bound to {}/{}",
            id.cluster_role,
            id.namespace,
            id.service_account
        );
        let role = d
            .roles
            .iter()
            .find(|r| r.metadata.name.as_deref() == Some(id.cluster_role))
            .unwrap_or_else(|| panic!("no ClusterRole {}", id.cluster_role));
        let granted = grants(role);
        let requests = id.requests();
        for access in &requests {
            if !granted.contains(&key(access)) {
                problems.push(format!(
                    "ClusterRole {} does not grant {access}, which {} make(s)",
                    id.cluster_role,
                    id.paths_making(access).join(", ")
                ));
            }
        }
        let made: BTreeSet<_> = requests.iter().map(key).collect();
        for (group, resource, verb) in granted.difference(&made) {
            problems.push(format!(
                "ClusterRole {} grants {verb} {resource} ({group:?}), which no code path in {table} \
                 makes: remove it from the role or add the code path to the table",
                id.cluster_role
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn the_examples_are_valid_objects_and_policies() {
    let mut nads = Vec::new();
    let mut features = BTreeSet::new();
    let mut kinds = BTreeMap::new();
    for doc in example_docs() {
        *kinds.entry(doc.kind().to_owned()).or_insert(0) += 1;
        match doc.kind() {
            "NetworkAttachmentDefinition" => {
                let nad: NetworkAttachmentDefinition = typed(&doc);
                let config = nad.spec.config.clone().expect("spec.config");
                let conf: Value = serde_json::from_str(&config)
                    .unwrap_or_else(|e| panic!("{}: spec.config: {e}", doc.name()));
                assert!(conf["type"].is_string() || conf["plugins"].is_array());
                if let Some(text) = nad
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(NAD_POLICY_ANNOTATION))
                {
                    multus_agent::policy::annotation::NadPolicy::parse(text, Some(&config))
                        .unwrap_or_else(|e| panic!("{}: {e}", doc.name()));
                    let parsed: Value = serde_yaml::from_str(text).unwrap();
                    features.extend(parsed.as_object().unwrap().keys().cloned());
                }
                nads.push(nad.metadata.name.clone().unwrap());
            }
            "MultiNetworkPolicy" => {
                let mnp: MultiNetworkPolicy = typed(&doc);
                let entry = MnpEntry::parse(&mnp);
                assert!(entry.error().is_none(), "{:?}", entry.error());
                assert!(!entry.ignored(), "{}: no policy-for", doc.name());
            }
            "Pod" => {
                let pod: Pod = typed(&doc);
                let networks = pod
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(multus_cni::network::annotation::NETWORKS_ANNOTATION))
                    .expect("the pod asks for a network");
                let parsed =
                    multus_cni::network::annotation::parse_networks(networks, "default").unwrap();
                for selection in parsed {
                    assert!(
                        nads.contains(&selection.name),
                        "{} asks for {}, which no example defines before it",
                        doc.name(),
                        selection.name
                    );
                }
            }
            other => panic!("{}: unexpected {other}", doc.file),
        }
    }
    // The quickstart's pair, and a policy example of every field of the annotation.
    assert!(nads.contains(&"macvlan-conf".to_owned()) && nads.contains(&"bridge-conf".to_owned()));
    assert_eq!(
        features,
        BTreeSet::from(["ingress", "egress", "isolate", "antiSpoof", "audit"].map(str::to_owned))
    );
    assert!(kinds.get("MultiNetworkPolicy").is_some_and(|n| *n >= 1));
    assert!(kinds.get("Pod").is_some_and(|n| *n >= 3), "{kinds:?}");
}

/// The ServiceMonitor's fields this deployment uses, refusing any other (typos).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitor {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: ServiceMonitorSpec,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitorSpec {
    selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    namespace_selector: NamespaceSelector,
    endpoints: Vec<Endpoint>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NamespaceSelector {
    match_names: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Endpoint {
    port: String,
    path: String,
    interval: String,
    honor_labels: bool,
    relabelings: Vec<Relabeling>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Relabeling {
    source_labels: Vec<String>,
    target_label: String,
}

#[test]
fn the_service_monitor_scrapes_the_metrics_service() {
    let docs: Vec<Doc> = docs_of(&applied_files(&repo().join("deploy/monitoring")))
        .into_iter()
        .filter(|d| d.kind() == "ServiceMonitor")
        .collect();
    assert_eq!(docs.len(), 1);
    let sm: ServiceMonitor = serde_json::from_value(docs[0].value.clone()).unwrap();
    assert_eq!(
        (sm.api_version.as_str(), sm.kind.as_str()),
        ("monitoring.coreos.com/v1", "ServiceMonitor")
    );
    let d = parse_deploy();
    let svc = &d.services[0];
    let labels = svc.metadata.labels.clone().unwrap();
    for (k, v) in sm.spec.selector.match_labels.as_ref().unwrap() {
        assert_eq!(labels.get(k), Some(v));
    }
    assert_eq!(
        sm.spec.namespace_selector.match_names,
        [svc.metadata.namespace.clone().unwrap()]
    );
    assert_eq!(
        sm.metadata.namespace.as_deref(),
        svc.metadata.namespace.as_deref()
    );
    // kube-prometheus-stack's default serviceMonitorSelector.
    assert!(
        sm.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key("release")),
        "no release label"
    );
    let port = svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .name
        .clone();
    let endpoint = &sm.spec.endpoints[0];
    assert_eq!(Some(&endpoint.port), port.as_ref());
    assert_eq!(endpoint.path, "/metrics");
    assert!(!endpoint.interval.is_empty());
    // The per-interface series' own namespace and pod labels must win over the target's.
    assert!(endpoint.honor_labels);
    assert!(
        endpoint
            .relabelings
            .iter()
            .all(|r| !r.source_labels.is_empty() && !r.target_label.is_empty())
    );
}

/// Drops `metadata.namespace`, for objects created in a test namespace.
fn without_namespace(mut v: Value) -> Value {
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("namespace");
    }
    v
}

#[test]
fn the_api_server_accepts_the_manifests_and_the_examples() {
    let Some(cluster) = KubeCluster::get("the_api_server_accepts_the_manifests_and_the_examples")
    else {
        return;
    };
    // The cluster already holds the CRDs and RBAC from deploy/ (applied the same way); create
    // the rest as `kubectl apply -f deploy/` would.
    for doc in deploy_docs() {
        if matches!(
            doc.kind(),
            "CustomResourceDefinition" | "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding"
        ) {
            continue;
        }
        let created = cluster
            .admin()
            .create(&doc.value)
            .unwrap_or_else(|e| panic!("{} {}: {e}", doc.file, doc.name()));
        assert_eq!(created["metadata"]["name"], doc.value["metadata"]["name"]);
    }
    // The uninstall DaemonSet (applied on its own, later), in a namespace of its own.
    let uns = cluster.namespace("uni");
    for doc in uninstall_docs() {
        let created = uns.create(without_namespace(doc.value.clone()));
        assert_eq!(created["metadata"]["name"], doc.value["metadata"]["name"]);
    }
    // The examples, in a namespace of their own (pods need its default ServiceAccount, which
    // no controller makes here).
    let ns = cluster.namespace("exa");
    ns.create(
        serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                                  "metadata": {"name": "default"}}),
    );
    for doc in example_docs() {
        let mut object = without_namespace(doc.value.clone());
        if doc.kind() == "Pod" {
            // No token controller runs here to give the account its token.
            object["spec"]["automountServiceAccountToken"] = Value::Bool(false);
        }
        let created = ns.create(object);
        // What the server stored is what the file says (no field pruned by the CRD schemas).
        if doc.kind() != "Pod" {
            for field in ["spec", "metadata"] {
                let (want, have) = (&doc.value[field], &created[field]);
                for (k, v) in want.as_object().unwrap() {
                    if k != "namespace" {
                        assert_eq!(&have[k], v, "{} {}: {field}.{k}", doc.file, doc.name());
                    }
                }
            }
        }
    }
}

/// The names Multus's own manifests give its cluster objects (ServiceAccount, ClusterRole and
/// ClusterRoleBinding `multus`, the DaemonSets `kube-multus-ds*`, the ConfigMaps
/// `multus-cni-config` and `multus-daemon-config`). `kubectl apply -f deploy/` on a cluster still
/// running Multus must not touch one of them: Multus's role cut to `get` stops its informers,
/// and deleting Multus's objects afterwards would delete these.
#[test]
fn no_object_takes_a_name_multus_uses() {
    let taken = |kind: &str, name: &str| match kind {
        "ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" => name == "multus",
        "DaemonSet" => name.starts_with("kube-multus-ds"),
        "ConfigMap" => matches!(name, "multus-cni-config" | "multus-daemon-config"),
        _ => false,
    };
    let docs = deploy_docs();
    assert!(
        docs.iter().any(|d| d.kind() == "ClusterRole"),
        "no ClusterRole read"
    );
    for doc in &docs {
        assert!(
            !taken(doc.kind(), doc.name()),
            "{}: {} {} has the name of Multus's own",
            doc.file,
            doc.kind(),
            doc.name()
        );
    }
    // The thin binary's identity is the one deploy/ binds.
    assert_ne!(CNI_BINARY.service_account, "multus");
    assert_ne!(CNI_BINARY.cluster_role, "multus");
}

/// `deploy/Kustomization`, the kustomize base.
fn kustomization(dir: &Path) -> Value {
    let path = dir.join("Kustomization");
    let path = if path.is_file() {
        path
    } else {
        dir.join("kustomization.yaml")
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap()
}

/// kubectl (`cargo xtask setup` installs Debian's when there is none).
fn kubectl() -> std::process::Command {
    let probe = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "kubectl is needed to render and apply the manifests; `cargo xtask setup` installs \
         Debian's kubernetes-client: {probe:?}"
    );
    std::process::Command::new("kubectl")
}

/// `kubectl kustomize DIR` as JSON documents.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = kubectl().arg("kustomize").arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(doc).unwrap();
        if !value.is_null() {
            docs.push(value);
        }
    }
    docs
}

fn identity(v: &Value) -> (String, String, String) {
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    (
        s(&v["kind"]),
        s(&v["metadata"]["namespace"]),
        s(&v["metadata"]["name"]),
    )
}

/// `kubectl apply -k deploy/` and `kubectl apply -f deploy/` create the same objects: the
/// base lists exactly the files `-f` reads, in its order, and `-f` finds no kustomization
/// among them; `kubectl kustomize` renders exactly those objects.
#[test]
fn the_kustomize_base_is_what_apply_f_applies() {
    let deploy = repo().join("deploy");
    for name in ["kustomization.yaml", "kustomization.yml"] {
        assert!(
            !deploy.join(name).exists(),
            "`kubectl apply -f deploy/` would try to apply {name}"
        );
    }
    let k = kustomization(&deploy);
    assert_eq!(k["kind"], "Kustomization");
    let listed: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let applied: Vec<String> = applied_files(&deploy)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, applied);
    // Nothing but the resources: the base is the manifests as they are.
    let keys: BTreeSet<&str> = k.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["apiVersion", "kind", "resources"]));

    let mut want: Vec<Value> = deploy_docs().into_iter().map(|d| d.value).collect();
    let mut have = kustomize(&deploy);
    want.sort_by_key(identity);
    have.sort_by_key(identity);
    assert_eq!(have.len(), want.len());
    for (have, want) in have.iter().zip(&want) {
        assert_eq!(have, want, "{:?}", identity(want));
    }
}

/// The example overlay: another namespace for every namespaced object (and the binding's
/// ServiceAccount), the image from another registry with this version's tag, and the agent's
/// configuration from its own file, which the agent reads.
#[test]
fn the_example_overlay_sets_namespace_image_and_agent_config() {
    let overlay = repo().join("overlays/example");
    let k = kustomization(&overlay);
    // kubectl 1.20's kustomize (v2) takes directories in `bases` only; current kustomize still
    // reads `bases` (deprecated), so one file works with both.
    assert_eq!(k["bases"], serde_json::json!(["../../deploy"]));
    for r in k["resources"].as_array().unwrap() {
        assert!(
            overlay.join(r.as_str().unwrap()).is_file(),
            "{r}: not a file"
        );
    }
    let namespace = k["namespace"].as_str().unwrap().to_owned();
    assert_ne!(namespace, AGENT.namespace);
    let d = parse_deploy();
    let base_image = pod_spec(&d.daemon_sets[0]).containers[0]
        .image
        .clone()
        .unwrap();
    let (base_name, _) = base_image.rsplit_once(':').unwrap();
    let image = &k["images"][0];
    assert_eq!(image["name"], base_name);
    assert_eq!(image["newTag"], env!("CARGO_PKG_VERSION"));
    let new_image = format!(
        "{}:{}",
        image["newName"].as_str().unwrap(),
        image["newTag"].as_str().unwrap()
    );
    let generator = &k["configMapGenerator"][0];
    assert_eq!(
        generator["name"],
        d.config_maps[0].metadata.name.clone().unwrap()
    );
    assert_eq!(generator["namespace"], AGENT.namespace);
    assert_eq!(generator["behavior"], "replace");
    let file = generator["files"][0].as_str().unwrap();
    let config_text = std::fs::read_to_string(overlay.join(file)).unwrap();
    AgentConfig::from_file(&overlay.join(file)).unwrap();

    let rendered = kustomize(&overlay);
    let kinds: BTreeSet<String> = rendered.iter().map(|v| identity(v).0).collect();
    assert!(kinds.contains("Namespace"), "{kinds:?}");
    for v in &rendered {
        let (kind, ns, name) = identity(v);
        let cluster_scoped = matches!(
            kind.as_str(),
            "Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        );
        assert_eq!(ns.is_empty(), cluster_scoped, "{kind} {name}");
        if !cluster_scoped {
            assert_eq!(ns, namespace, "{kind} {name}");
        }
        match kind.as_str() {
            "Namespace" => assert_eq!(name, namespace),
            "ClusterRoleBinding" => {
                for s in v["subjects"].as_array().unwrap() {
                    assert_eq!(s["namespace"], namespace.as_str(), "{name}");
                }
            }
            "DaemonSet" => {
                let ds: DaemonSet = serde_json::from_value(v.clone()).unwrap();
                let spec = pod_spec(&ds);
                for c in spec
                    .init_containers
                    .iter()
                    .flatten()
                    .chain(&spec.containers)
                {
                    assert_eq!(c.image.as_deref(), Some(new_image.as_str()), "{}", c.name);
                }
            }
            "ConfigMap" => {
                let cm: ConfigMap = serde_json::from_value(v.clone()).unwrap();
                assert_eq!(cm.data.unwrap()[file], config_text);
            }
            _ => {}
        }
    }
}

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers
/// (`{...}`) and ranges (`[...]`), that are not functions (followed by `(`), keywords, or the
/// label lists of `by`, `without`, `on`, `ignoring`, `group_left` and `group_right`.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 6] = ["and", "or", "unless", "bool", "offset", "atan2"];
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    let skip_to = |i: &mut usize, close: char| {
        while *i < chars.len() && chars[*i] != close {
            if chars[*i] == '"' || chars[*i] == '\'' {
                let quote = chars[*i];
                *i += 1;
                while *i < chars.len() && chars[*i] != quote {
                    *i += if chars[*i] == '\\' { 2 } else { 1 };
                }
            }
            *i += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                skip_to(&mut i, c);
                i += 1;
            }
            '{' => skip_to(&mut i, '}'),
            '[' => skip_to(&mut i, ']'),
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let before_paren = chars.get(next) == Some(&'(');
                // `sum by (...) (...)`: an aggregation whose grouping comes first.
                let rest: String = chars[next..].iter().collect();
                let before_grouping = ["by", "without"].iter().any(|k| {
                    rest.strip_prefix(k)
                        .is_some_and(|r| r.starts_with([' ', '(']))
                });
                if LABEL_LISTS.contains(&word.as_str()) {
                    if before_paren {
                        i = next;
                        skip_to(&mut i, ')');
                    }
                } else if !before_paren && !before_grouping && !KEYWORDS.contains(&word.as_str()) {
                    out.insert(word);
                }
            }
            // Numbers and durations (`5m`, `1e3`) start with a digit.
            c if c.is_ascii_digit() => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

#[test]
fn promql_metric_names_are_found_and_nothing_else() {
    assert_eq!(
        promql_metrics(
            r#"sum by (node, pod) (rate(multus_policy_drop_packets_total{reason="a{b}"}[5m] offset 1h)) > 1e3 and on(node) up{job="x"} == bool 0"#
        ),
        BTreeSet::from([
            "multus_policy_drop_packets_total".to_owned(),
            "up".to_owned()
        ])
    );
    assert_eq!(
        promql_metrics("histogram_quantile(0.99, sum without (le) (rate(a_bucket[5m])))"),
        BTreeSet::from(["a_bucket".to_owned()])
    );
}

/// Series Prometheus makes itself for every target.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// Every alert of deploy/monitoring's PrometheusRule selects only series the agent exports
/// (the names come from the agent's own metric registration), has a severity, a summary and a
/// description, and is documented in docs/metrics.md with what to do.
#[test]
fn every_alert_names_metrics_the_agent_exports_and_is_documented() {
    let exported = multus_agent::scrape::series_names();
    let docs: Vec<Doc> = docs_of(&applied_files(&repo().join("deploy/monitoring")))
        .into_iter()
        .filter(|d| d.kind() == "PrometheusRule")
        .collect();
    assert_eq!(docs.len(), 1);
    let rule = &docs[0].value;
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], AGENT.namespace);
    // kube-prometheus-stack's default ruleSelector.
    assert!(rule["metadata"]["labels"]["release"].is_string());
    let groups: Vec<RuleGroup> = serde_json::from_value(rule["spec"]["groups"].clone()).unwrap();
    let reference = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let mut alerts = BTreeSet::new();
    let mut problems = Vec::new();
    for group in &groups {
        assert!(!group.name.is_empty());
        for r in &group.rules {
            assert!(alerts.insert(r.alert.clone()), "{} twice", r.alert);
            let names = promql_metrics(&r.expr);
            assert!(!names.is_empty(), "{}: no metric in {}", r.alert, r.expr);
            for name in names {
                if !exported.contains(&name) && !PROMETHEUS_SERIES.contains(&name.as_str()) {
                    problems.push(format!(
                        "{} selects {name}, which the agent does not export",
                        r.alert
                    ));
                }
            }
            assert!(
                ["critical", "warning", "info"]
                    .contains(&r.labels.get("severity").map_or("", String::as_str)),
                "{}: severity",
                r.alert
            );
            for key in ["summary", "description"] {
                assert!(r.annotations.contains_key(key), "{}: no {key}", r.alert);
            }
            if let Some(f) = &r.for_ {
                assert!(f.ends_with('m') || f.ends_with('s'), "{}: for {f}", r.alert);
            }
            if !reference.contains(&format!("`{}`", r.alert)) {
                problems.push(format!("docs/metrics.md does not document {}", r.alert));
            }
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    for wanted in [
        "MultusAgentDown",
        "MultusAgentNotReady",
        "MultusAgentCacheNotSynced",
        "MultusAgentAttachErrors",
        "MultusPolicyErrors",
        "MultusInterfaceDropsRising",
    ] {
        assert!(alerts.contains(wanted), "no {wanted} in {alerts:?}");
    }
}

/// Every query of the Grafana dashboard selects series the agent exports (or cAdvisor's
/// `container_network_*`, which it joins with), without running the agent.
#[test]
fn every_dashboard_query_names_metrics_the_agent_exports() {
    let exported = multus_agent::scrape::series_names();
    let path = repo().join("deploy/grafana/multus-dashboard.json");
    let dashboard: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().unwrap().to_owned());
        }
    }
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(SELECTOR, LABEL): the selector is the query.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .map_or(q, |(selector, _)| selector);
            exprs.push(inner.to_owned());
        }
    }
    let mut selected = BTreeSet::new();
    for expr in &exprs {
        for name in promql_metrics(expr) {
            assert!(
                exported.contains(&name) || name.starts_with("container_network_"),
                "the dashboard queries {name} ({expr}), which the agent does not export"
            );
            selected.insert(name);
        }
    }
    for wanted in [
        "multus_policy_audit_packets_total",
        "multus_agent_policy_errors_total",
        "multus_agent_cache_synced",
    ] {
        assert!(selected.contains(wanted), "no panel reads {wanted}");
    }
}

/// The real kubectl against the test API server (server-side dry run): `apply -f deploy/`
/// (which must skip `deploy/Kustomization`) and `apply -k deploy/` name the same objects, and
/// the example overlay applies.
#[test]
fn kubectl_applies_deploy_with_f_and_with_k_and_the_overlay() {
    let Some(cluster) =
        KubeCluster::get("kubectl_applies_deploy_with_f_and_with_k_and_the_overlay")
    else {
        return;
    };
    let apply = |args: &[&str]| -> BTreeSet<String> {
        let out = kubectl()
            .arg("--kubeconfig")
            .arg(cluster.admin_kubeconfig())
            .args(["apply", "--dry-run=server", "-o", "name"])
            .args(args)
            .current_dir(repo())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl apply {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let with_f = apply(&["-f", "deploy/"]);
    let with_k = apply(&["-k", "deploy/"]);
    assert_eq!(with_f, with_k);
    assert_eq!(with_f.len(), deploy_docs().len(), "{with_f:?}");
    assert!(with_f.contains("daemonset.apps/multus-agent"), "{with_f:?}");
    // The overlay's namespace, made for real: a dry-run Namespace holds nothing.
    let overlay = kustomization(&repo().join("overlays/example"));
    let namespace = overlay["namespace"].as_str().unwrap();
    let _ = cluster.admin().create(&serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
    }));
    let with_overlay = apply(&["-k", "overlays/example/"]);
    assert_eq!(with_overlay.len(), with_k.len() + 1, "{with_overlay:?}");
    assert!(with_overlay.contains(&format!("namespace/{namespace}")));
}
