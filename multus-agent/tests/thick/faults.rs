//! Faults on a thick node: temp files left by writers killed mid-write, the shim's DEL with the
//! agent down on a node whose agent uses non-default directories (configured by the install),
//! and a DEL that can never succeed, given up and counted.
use std::{
    path::Path,
    process::Command,
    time::{Duration, SystemTime},
};

use multus_testkit::{require_root, unique_name, until};
use serde_json::{Value, json};

use super::support::{Node, TestPod};

/// The pid of a process that has exited (and been reaped): no writer of that pid is running.
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Writes `path` with an mtime `age` ago.
fn plant(path: &Path, age: Duration) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, "{\"half\": ").unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

#[test]
fn temp_files_of_killed_writers_are_swept_at_start_and_while_running() {
    if !require_root("temp_files_of_killed_writers_are_swept_at_start_and_while_running") {
        return;
    }
    let node = Node::new();
    let dead = dead_pid();
    let cache = node.path("cache");
    let records = node.path("state").join("attachments");
    // What kill -9 of a writer leaves: the engine's cache and results, and a record, named by
    // the one atomic writer, and as the writers before it named them.
    let left = [
        cache.join(format!(".ctr1.tmp-{dead}-0")),
        cache.join("results").join(format!(".ctr1.tmp-{dead}-3")),
        records.join(format!(".8.json.tmp-{dead}-1")),
        cache.join(format!(".ctr4.tmp{dead}")),
        cache.join("results").join(format!(".ctr4.tmp{dead}")),
        records.join(format!(".7.json.{dead}.tmp")),
    ];
    for f in &left {
        plant(f, Duration::from_secs(60));
    }
    // A write in progress right now (this process is alive, the file is fresh) stays.
    let live = cache.join(format!(".ctr2.tmp{}", std::process::id()));
    plant(&live, Duration::ZERO);
    let mut config = node.agent_config();
    config["reconcileIntervalSeconds"] = json!(1);
    let agent = node.start_agent(&config);
    for f in &left {
        assert!(!f.exists(), "{} survived the start", f.display());
    }
    assert!(live.exists());
    // While it runs: a writer killed now is swept by the reconcile loop.
    let later = cache.join(format!(".ctr3.tmp{dead}"));
    plant(&later, Duration::from_secs(60));
    until("the reconcile loop to sweep the temp file", || {
        (!later.exists()).then_some(())
    });
    assert!(
        live.exists(),
        "a fresh temp file of a live writer was removed"
    );
    assert!(
        agent
            .log_text()
            .contains("removed a temp file left by a killed writer")
    );
}

/// The shim's configuration as the runtime passes it: the installed conflist's plugin with the
/// list's `cniVersion` and `name`.
fn runtime_conf(conflist: &Value) -> Value {
    let mut plugin = conflist["plugins"][0].clone();
    plugin["cniVersion"] = conflist["cniVersion"].clone();
    plugin["name"] = conflist["name"].clone();
    plugin
}

#[test]
fn installed_shim_config_lets_del_unpin_with_the_agent_down() {
    if !require_root("installed_shim_config_lets_del_unpin_with_the_agent_down") {
        return;
    }
    let node = Node::new();
    node.macvlan_nad("pods", "macvlan-net", "192.0.2.0/24");
    // The agent's directories are not the defaults (a temp dir, the test's bpffs dir).
    let mut agent_config = node.agent_config();
    agent_config.as_object_mut().unwrap().remove("delegates");
    let conf_dir = node.path("netd");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::create_dir_all(node.path("bin")).unwrap();
    let primary = conf_dir.join("10-cluster.conflist");
    let cluster = node.cluster_conf();
    let mut plugin = cluster.clone();
    plugin.as_object_mut().unwrap().remove("cniVersion");
    std::fs::write(
        &primary,
        json!({"cniVersion": "1.0.0", "name": "cluster", "plugins": [plugin]}).to_string(),
    )
    .unwrap();
    let agent_file = node.path("agent-install.json");
    std::fs::write(&agent_file, agent_config.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_multus-agent"))
        .args([
            "install",
            "--once",
            "--thick",
            "--skip-binary-copy",
            "--skip-kubeconfig",
        ])
        .arg("--cni-conf-dir")
        .arg(&conf_dir)
        .arg("--cni-bin-dir")
        .arg(node.path("bin"))
        .arg("--agent-config")
        .arg(&agent_file)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let installed: Value =
        serde_json::from_slice(&std::fs::read(conf_dir.join("00-multus.conflist")).unwrap())
            .unwrap();
    let shim = runtime_conf(&installed);
    assert_eq!(shim["bpffsDir"], json!(node.bpffs.path()), "{shim}");
    assert_eq!(
        shim["dataplaneStateDir"],
        json!(node.path("state")),
        "{shim}"
    );
    assert_eq!(shim["daemonSocketDir"], json!(node.path("run")), "{shim}");
    assert_eq!(shim["cniDir"], json!(node.path("cache")), "{shim}");

    let mut agent = node.start_agent(&agent_config);
    let pod = TestPod::new("pods", "web");
    node.pod_file(&pod, "macvlan-net");
    node.cni(&shim, "ADD", &pod).ok();
    assert!(!node.link_pins().is_empty());
    agent.kill9();
    // The agent is down: the shim's DEL runs in-process with the installed keys only.
    node.cni(&shim, "DEL", &pod).ok();
    assert_eq!(pod.links(), ["lo"]);
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.cache_files().is_empty(), "{:?}", node.cache_files());
    assert!(
        node.link_pins().is_empty(),
        "pins left: {:?}",
        node.link_pins()
    );
}

/// A veth in the node namespace to carry a macvlan, removable by the test.
fn master(node: &Node) -> String {
    let name = unique_name("vm");
    node.netns.ip(&[
        "link",
        "add",
        &name,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{name}p"),
    ]);
    node.netns.ip(&["link", "set", &name, "up"]);
    name
}

#[test]
fn a_del_that_can_never_succeed_is_given_up_and_counted() {
    if !require_root("a_del_that_can_never_succeed_is_given_up_and_counted") {
        return;
    }
    let node = Node::new();
    let vm = master(&node);
    let config = json!({"cniVersion": "1.0.0", "type": "macvlan", "master": vm,
                        "mode": "bridge", "ipam": node.ipam("198.51.100.0/24")});
    let doc = json!({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "fragile", "namespace": "pods"},
        "spec": {"config": config.to_string()},
    });
    std::fs::write(node.path("local").join("nad-fragile.json"), doc.to_string()).unwrap();
    let mut agent_config = node.agent_config();
    agent_config["retryDeleteAttempts"] = json!(1);
    agent_config["retryDeleteSeconds"] = json!(0);
    let agent = node.start_agent(&agent_config);
    let pod = TestPod::new("pods", "doomed");
    node.pod_file(&pod, "fragile");
    node.shim("ADD", &pod).ok();
    assert_eq!(node.records().len(), 1);
    node.netns.ip(&["link", "del", &vm]);
    // macvlan's DEL fails for good ("Link not found"); with one attempt allowed, the first
    // failure gives the entry up: DEL succeeds, the dataplane is detached, and it is counted.
    let del = node.shim("DEL", &pod);
    assert_eq!(del.code, 0, "{del:?}");
    assert!(node.cache_files().is_empty(), "{:?}", node.cache_files());
    assert!(node.records().is_empty(), "{:?}", node.records());
    assert!(node.link_pins().is_empty(), "{:?}", node.link_pins());
    assert_eq!(
        node.scrape()
            .value("multus_agent_abandoned_deletes_total", &[]),
        1
    );
    let log = agent.log_text();
    assert!(
        log.contains("may have leaked: net1 of pods/fragile (macvlan) with 198.51.100."),
        "{log}"
    );
}
