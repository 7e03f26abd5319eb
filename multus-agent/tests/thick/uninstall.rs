//! `multus-agent uninstall` on a node where the install and the agent ran: afterwards the
//! runtime's first configuration is the primary's and works, nothing of multus is left in the
//! CNI directories, and a pod that outlived the agent is no longer policed.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use multus_testkit::{inside, require_root};
use serde_json::{Value, json};

use crate::support::{Node, PLUGIN_DIR, Run, TestPod, multus_cni_binary, tcx_programs};

/// The CNI directories of the node: net.d with the primary, bin, a service account.
struct CniDirs {
    conf: PathBuf,
    bin: PathBuf,
    sa: PathBuf,
}

impl CniDirs {
    fn new(node: &Node) -> Self {
        let dirs = Self {
            conf: node.path("net.d"),
            bin: node.path("bin"),
            sa: node.path("serviceaccount"),
        };
        for d in [&dirs.conf, &dirs.bin, &dirs.sa] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(dirs.sa.join("token"), "token\n").unwrap();
        std::fs::write(dirs.sa.join("ca.crt"), "ca\n").unwrap();
        dirs
    }

    /// Configuration files as a runtime orders them (by name; .conf, .conflist, .json).
    fn configs(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.conf)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                [".conf", ".conflist", ".json"]
                    .iter()
                    .any(|x| n.ends_with(x))
            })
            .collect();
        names.sort();
        names
    }

    fn all_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for dir in [&self.conf, &self.bin] {
            walk(dir, dir, &mut out);
        }
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.strip_prefix(root).unwrap().display().to_string());
        if p.is_dir() {
            walk(root, &p, out);
        }
    }
}

fn multus_agent(node: &Node, args: &[&str], dirs: &CniDirs) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_multus-agent"))
        .args(args)
        .arg("--cni-conf-dir")
        .arg(&dirs.conf)
        .arg("--cni-bin-dir")
        .arg(&dirs.bin)
        .env_remove("MULTUS_AGENT_CONFIG")
        .env("KUBERNETES_SERVICE_HOST", "192.0.2.1")
        .env("KUBERNETES_SERVICE_PORT", "443")
        .args(if args[0] == "install" {
            vec![
                "--multus-bin-file".into(),
                multus_cni_binary().into_os_string(),
                "--service-account-dir".into(),
                dirs.sa.clone().into_os_string(),
                "--daemon-socket-dir".into(),
                node.path("run").into_os_string(),
            ]
        } else {
            vec![
                "--socket-dir".into(),
                node.path("run").into_os_string(),
                "--bpffs-dir".into(),
                node.bpffs.path().as_os_str().to_owned(),
                "--state-dir".into(),
                node.path("state").into_os_string(),
            ]
        })
        .output()
        .unwrap();
    assert!(out.status.success(), "multus-agent {args:?}: {out:?}");
    out
}

/// Runs a configuration file's single plugin the way a runtime does (name and cniVersion of
/// the list, the plugin's own keys).
fn run_primary(node: &Node, dirs: &CniDirs, file: &str, command: &str, pod: &TestPod) -> Run {
    let list: Value =
        serde_json::from_slice(&std::fs::read(dirs.conf.join(file)).unwrap()).unwrap();
    let plugins = list["plugins"].as_array().unwrap();
    assert_eq!(plugins.len(), 1, "{list}");
    let mut conf = plugins[0].clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    let plugin = Path::new(PLUGIN_DIR).join(conf["type"].as_str().unwrap());
    let netns = pod.netns.path();
    Run::invoke(
        inside::command(&node.netns.path(), plugin).unwrap(),
        &[
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", &pod.container),
            ("CNI_NETNS", &netns.to_string_lossy()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", PLUGIN_DIR),
        ],
        conf.to_string().as_bytes(),
    )
}

/// The programs on `pod`'s `net1`: TCX links, or tc filters on the clsact hooks.
fn programs(pod: &TestPod, mode: &str) -> Vec<String> {
    if mode == "tcx" {
        return tcx_programs(&pod.netns.path(), "net1");
    }
    let mut out = Vec::new();
    for hook in ["ingress", "egress"] {
        let text = pod
            .netns
            .exec("tc", &["filter", "show", "dev", "net1", hook])
            .unwrap();
        out.extend(
            text.lines()
                .filter(|l| l.contains(" name multus_"))
                .map(str::to_owned),
        );
    }
    out
}

#[test]
fn uninstall_leaves_the_primary_alone_working_and_nothing_of_multus() {
    if !require_root("uninstall_leaves_the_primary_alone_working_and_nothing_of_multus") {
        return;
    }
    uninstall_scenario("tcx");
}

#[test]
fn uninstall_removes_the_clsact_filters_of_pods_that_outlive_the_agent() {
    if !require_root("uninstall_removes_the_clsact_filters_of_pods_that_outlive_the_agent") {
        return;
    }
    uninstall_scenario("clsact");
}

fn uninstall_scenario(mode: &str) {
    let node = Node::new();
    node.macvlan_nad("pods", "macvlan-net", "192.0.2.0/24");
    let dirs = CniDirs::new(&node);
    // The primary: the fixture's cluster network as a conflist.
    let mut cluster = node.cluster_conf();
    let version = cluster
        .as_object_mut()
        .unwrap()
        .remove("cniVersion")
        .unwrap();
    let name = cluster.as_object_mut().unwrap().remove("name").unwrap();
    let primary = json!({"cniVersion": version, "name": name, "plugins": [cluster]});
    std::fs::write(dirs.conf.join("10-primary.conflist"), primary.to_string()).unwrap();

    // Installed as the DaemonSet does (thick, with a kubeconfig: the pod's environment).
    multus_agent(&node, &["install", "--once", "--thick"], &dirs);
    assert_eq!(
        dirs.configs(),
        ["00-multus.conflist", "10-primary.conflist"]
    );
    for f in [
        "bin/multus-shim",
        "net.d/multus.d/multus.kubeconfig",
        "net.d/multus.d/multus.token",
        "net.d/multus.d/multus-ca.crt",
    ] {
        assert!(node.path(f).exists(), "{f}");
    }

    // A pod with a secondary network through the agent; the agent then goes away (the
    // DaemonSet deleted) and the pod outlives it, still policed by the pinned programs.
    let mut config = node.agent_config();
    config["attachMode"] = mode.into();
    let mut agent = node.start_agent(&config);
    let pod = TestPod::new("pods", "survivor");
    node.pod_file(&pod, "macvlan-net");
    node.shim("ADD", &pod).ok();
    assert!(agent.terminate(), "{}", agent.log_text());
    assert_eq!(programs(&pod, mode).len(), 2, "{:?}", programs(&pod, mode));
    assert_eq!(node.records().len(), 1);

    let out = multus_agent(&node, &["uninstall", "--thick"], &dirs);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    for line in [
        format!("removed {}", dirs.conf.join("00-multus.conflist").display()),
        format!("removed {}", dirs.bin.join("multus-shim").display()),
        format!(
            "removed {}",
            dirs.conf.join("multus.d/multus.kubeconfig").display()
        ),
        format!("removed {}", dirs.conf.join("multus.d").display()),
        "net1 in".to_owned(),
    ] {
        assert!(report.contains(&line), "{line:?} not in:\n{report}");
    }
    // Nothing of multus in the CNI directories, no pin, no record, nothing on the pod.
    assert_eq!(dirs.all_files(), ["10-primary.conflist"]);
    assert!(
        node.bpffs.entries().is_empty(),
        "{:?}",
        node.bpffs.entries()
    );
    assert!(node.records().is_empty());
    assert!(
        programs(&pod, mode).is_empty(),
        "{:?}",
        programs(&pod, mode)
    );

    // A new pod: the runtime's first configuration is the primary's, and it works alone.
    let first = dirs.configs().remove(0);
    assert_eq!(first, "10-primary.conflist");
    let fresh = TestPod::new("pods", "fresh");
    let add = run_primary(&node, &dirs, &first, "ADD", &fresh).ok();
    assert!(
        add.json()["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("203.0.113."),
        "{add:?}"
    );
    assert_eq!(fresh.links(), ["eth0", "lo"]);
    run_primary(&node, &dirs, &first, "DEL", &fresh).ok();
    assert_eq!(fresh.links(), ["lo"]);

    // Idempotent: a second run finds nothing and says so.
    let again = multus_agent(&node, &["uninstall", "--thick"], &dirs);
    let again = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(
        again.contains("nothing to remove") && !again.contains("removed"),
        "{again}"
    );
}
