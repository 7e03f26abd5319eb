//! Root tests of DELs that cannot succeed, with Debian's real plugins: a macvlan NAD whose
//! master is missing, a delegate that fails its own ADD and DEL, a master removed under a
//! running pod (macvlan's DEL then fails for good), and GC over such an entry next to healthy
//! ones. `retryDeleteOnError` must retry a failed DEL, but only within its bounds.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::{Node, assert_clean, link_names};
use multus_testkit::Netns;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";

/// A veth pair in the node namespace whose first end carries macvlans; removed on drop (when
/// the test has not removed it already).
struct Master<'a> {
    node: &'a Node,
    name: String,
}

impl<'a> Master<'a> {
    fn new(node: &'a Node) -> Self {
        let name = multus_testkit::unique_name("vm");
        let peer = format!("{name}p");
        node.netns
            .ip(&["link", "add", &name, "type", "veth", "peer", "name", &peer]);
        node.netns.ip(&["link", "set", &name, "up"]);
        Self { node, name }
    }

    fn remove(&self) {
        self.node.netns.ip(&["link", "del", &self.name]);
    }
}

impl Drop for Master<'_> {
    fn drop(&mut self) {
        let _ = self.node.netns.exec("ip", &["link", "del", &self.name]);
    }
}

fn macvlan_on(node: &Node, name: &str, master: &str) {
    node.nad(
        "pods",
        name,
        &json!({"cniVersion": "1.0.0", "type": "macvlan", "master": master, "mode": "bridge",
                "ipam": node.ipam("192.0.2.0/24", None)}),
    );
}

/// The multus configuration with the bounds tests can reach: two failed DELs, no wait.
fn bounded_conf(node: &Node, version: &str) -> Value {
    let mut conf = node.multus_conf(version);
    conf["retryDeleteAttempts"] = json!(2);
    conf["retryDeleteSeconds"] = json!(0);
    conf
}

fn cached_networks(node: &Node, container: &str) -> Vec<String> {
    // Read through the engine's reader: the file is Multus's list with this engine's entry in it.
    match multus_cni::engine::cache::read(&node.path("cache").join(container)).unwrap() {
        Some(multus_cni::engine::cache::Stored::Own(entry)) => {
            entry.delegates.iter().map(|d| d.network.clone()).collect()
        }
        Some(other) => panic!("not this engine's entry: {other:?}"),
        None => Vec::new(),
    }
}

#[test]
fn missing_macvlan_master_is_a_config_error_naming_it() {
    let Some(node) = common::root_node("missing_macvlan_master_is_a_config_error_naming_it") else {
        return;
    };
    let missing = multus_testkit::unique_name("nomaster");
    macvlan_on(&node, "orphan", &missing);
    let pod = node.pod_asking("p", "orphan");
    let conf = node.multus_conf("1.0.0");
    let node_links = node.links();
    let add = node.run("ADD", "c1", Some(&pod), "p", &conf);
    assert_eq!(add.error_code(), 7, "{add:?}");
    let msg = add.json()["msg"].as_str().unwrap().to_owned();
    assert!(
        msg.contains(&format!("master interface \"{missing}\" does not exist")),
        "{msg}"
    );
    assert!(msg.contains("network pods/orphan"), "{msg}");
    // Nothing was created, the cluster network never ran, and DEL has nothing to do.
    assert_clean(&node, Some(&pod));
    assert_eq!(node.links(), node_links);
    node.run("DEL", "c1", Some(&pod), "p", &conf).ok();
}

#[test]
fn a_delegate_whose_add_failed_is_not_kept_for_del() {
    let Some(node) = common::root_node("a_delegate_whose_add_failed_is_not_kept_for_del") else {
        return;
    };
    // Debian's macvlan checks the MTU against its master's in loadConf, which its DEL runs
    // too: this delegate fails its ADD, and fails every DEL of it for the same reason.
    node.nad(
        "pods",
        "too-big",
        &json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "vpar", "mtu": 65000,
                "ipam": node.ipam("192.0.2.0/24", None)}),
    );
    let pod = node.pod_asking("p", "too-big");
    let conf = node.multus_conf("1.0.0");
    let add = node.run("ADD", "c1", Some(&pod), "p", &conf);
    assert_eq!(add.code, 1, "{add:?}");
    assert!(add.stdout.contains("invalid MTU"), "{add:?}");
    // The cluster network was rolled back, the failed delegate got its one DEL (which failed:
    // see the log) and is not kept: the pod's DEL succeeds at once.
    assert!(
        cached_networks(&node, "c1").is_empty(),
        "{:?}",
        node.cache_files()
    );
    assert_clean(&node, Some(&pod));
    node.run("DEL", "c1", Some(&pod), "p", &conf).ok();
}

#[test]
fn a_del_that_can_never_succeed_is_given_up_within_its_bounds() {
    let Some(node) =
        common::root_node("a_del_that_can_never_succeed_is_given_up_within_its_bounds")
    else {
        return;
    };
    let master = Master::new(&node);
    macvlan_on(&node, "mv", &master.name);
    let pod = node.pod_asking("p", "mv");
    let conf = bounded_conf(&node, "1.0.0");
    node.run("ADD", "c1", Some(&pod), "p", &conf).ok();
    let leases = node.leases();
    let macvlan_ip = leases
        .iter()
        .find_map(|l| l.split('/').nth(1).filter(|ip| ip.starts_with("192.0.2.")))
        .unwrap()
        .to_owned();
    // The master goes (and net1 with it): macvlan's DEL now fails with "Link not found".
    master.remove();
    assert_eq!(link_names(&pod), vec!["eth0", "lo"]);
    let first = node.run("DEL", "c1", Some(&pod), "p", &conf);
    assert_eq!(first.code, 1, "{first:?}");
    assert!(first.stdout.contains("Link not found"), "{first:?}");
    // Retried: only the macvlan is left, the cluster network is gone.
    assert_eq!(cached_networks(&node, "c1"), vec!["pods/mv"]);
    // The second failure reaches the bound: the entry is given up, DEL succeeds, and the log
    // names what may have leaked (macvlan's lease, which its DEL never reached).
    let second = node.run("DEL", "c1", Some(&pod), "p", &conf);
    assert_eq!(second.code, 0, "{second:?}");
    assert!(
        second
            .stderr
            .contains("gave up deleting the networks of container c1"),
        "{}",
        second.stderr
    );
    assert!(
        second
            .stderr
            .contains("may have leaked: net1 of pods/mv (macvlan)")
    );
    assert!(second.stderr.contains(&macvlan_ip), "{}", second.stderr);
    assert_eq!(node.cache_files(), Vec::<String>::new());
    assert_eq!(node.leases().len(), 1, "only macvlan's lease leaked");
    node.run("DEL", "c1", Some(&pod), "p", &conf).ok();
}

#[test]
fn gc_is_not_held_hostage_by_one_entry() {
    let Some(node) = common::root_node("gc_is_not_held_hostage_by_one_entry") else {
        return;
    };
    let master = Master::new(&node);
    macvlan_on(&node, "mv", &master.name);
    node.macvlan_nad("1.0.0");
    node.pod("pods", "bad", "u1", &json!({NETWORKS: "mv"}));
    node.pod("pods", "good", "u2", &json!({NETWORKS: "macvlan-net"}));
    let bad = Netns::new("cpd");
    let good = Netns::new("cpd");
    let conf = bounded_conf(&node, "1.1.0");
    node.run("ADD", "bad", Some(&bad), "bad", &conf).ok();
    node.run("ADD", "good", Some(&good), "good", &conf).ok();
    master.remove();
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let run_gc = || {
        node.run_raw(
            &[("CNI_COMMAND", "GC"), ("CNI_PATH", common::PLUGIN_DIR)],
            gc.to_string().as_bytes(),
        )
    };
    // The first GC deletes the healthy entry and reports only the one that failed.
    let first = run_gc();
    assert_eq!(first.code, 1, "{first:?}");
    let msg = first.json()["msg"].as_str().unwrap().to_owned();
    assert!(msg.contains("network pods/mv"), "{msg}");
    assert!(!msg.contains("macvlan-net"), "{msg}");
    assert_eq!(link_names(&good), vec!["lo"]);
    assert_eq!(cached_networks(&node, "good"), Vec::<String>::new());
    assert_eq!(cached_networks(&node, "bad"), vec!["pods/mv"]);
    // The second reaches the bound: GC succeeds, the entry is gone.
    let second = run_gc();
    assert_eq!(second.code, 0, "{second:?}");
    assert!(
        second
            .stderr
            .contains("gave up deleting the networks of container bad")
    );
    assert_eq!(node.cache_files(), Vec::<String>::new());
    run_gc().ok();
}
