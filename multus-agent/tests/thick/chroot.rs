//! `chrootDir`: the agent runs in a mount namespace of its own (as in its container), and a
//! "node" root directory holds what only the node has: plugins in a bin directory of its own,
//! a resolv.conf that host-local reads, the sockets and files of popular primaries. Delegates
//! must see those by their node paths.
use std::{
    os::unix::{fs::PermissionsExt as _, net::UnixListener},
    path::{Path, PathBuf},
};

use multus_testkit::{require_root, unique_name};
use serde_json::{Value, json};

use crate::support::{Node, PLUGIN_DIR, TestPod};

/// Makes the node root's mounts (in the agent's own mount namespace, so they go with it) and
/// runs the rest of the command line: the node's programs and libraries (and Debian's
/// alternatives, which `/usr/sbin/iptables` links through), /proc for
/// `CNI_NETNS=/proc/PID/ns/net`, /dev, and the pods' namespaces.
const MOUNT_NODE_ROOT: &str = r#"set -e
root="$1"; shift
for dir in usr etc/alternatives proc dev run/netns; do mount --rbind "/$dir" "$root/$dir"; done
exec "$@""#;

/// The popular delegates' node paths (Calico, Cilium, flannel, whereabouts, dhcp, portmap's
/// iptables lock, SR-IOV's cache).
const WELL_KNOWN: [&str; 8] = [
    "/etc/cni/net.d/calico-kubeconfig",
    "/var/lib/calico/nodename",
    "/var/run/cilium/cilium.sock",
    "/run/flannel/subnet.env",
    "/etc/cni/net.d/whereabouts.d/whereabouts.conf",
    "/run/cni/dhcp.sock",
    "/run/xtables.lock",
    "/var/lib/cni/sriov",
];

/// A delegate that logs every command it gets into a file of the node (failing where that
/// directory is missing), and on ADD reports which of [`WELL_KNOWN`] (and its `CNI_NETNS`, and
/// the node's iptables) it sees, as the search domains of its result: sockets must be sockets.
const PROBE: &str = r#"#!/bin/sh
cat >/dev/null
if ! echo "$CNI_COMMAND" >>/var/lib/calico/probe.log; then
  printf '{"cniVersion":"1.1.0","code":999,"msg":"no /var/lib/calico here"}'
  exit 1
fi
[ "$CNI_COMMAND" = ADD ] || exit 0
seen=""
for p in /etc/cni/net.d/calico-kubeconfig /var/lib/calico/nodename /run/flannel/subnet.env \
         /etc/cni/net.d/whereabouts.d/whereabouts.conf /run/xtables.lock /var/lib/cni/sriov \
         /usr/sbin/iptables "$CNI_NETNS"; do
  [ -e "$p" ] && seen="$seen\"$p\","
done
for p in /var/run/cilium/cilium.sock /run/cni/dhcp.sock; do
  [ -S "$p" ] && seen="$seen\"$p\","
done
printf '{"cniVersion":"1.1.0","dns":{"search":[%s"end"]}}' "$seen"
"#;

/// The node's root directory, with what only the node has.
struct NodeRoot {
    root: PathBuf,
    /// A directory name unique to this test, below /etc, /opt and /var/lib of the node.
    unique: String,
    _sockets: Vec<UnixListener>,
}

impl NodeRoot {
    fn new(node: &Node) -> Self {
        let root = node.path("noderoot");
        let unique = unique_name("multus-chroot-");
        for dir in ["usr", "etc/alternatives", "proc", "dev", "run/netns"] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        // Debian's merged /usr, as on the node.
        for (link, target) in [
            ("bin", "usr/bin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("sbin", "usr/sbin"),
        ] {
            std::os::unix::fs::symlink(target, root.join(link)).unwrap();
        }
        // CNI_NETNS is /var/run/netns/NAME: /var/run is /run, as on the node.
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::os::unix::fs::symlink("../run", root.join("var/run")).unwrap();
        let r = Self {
            root,
            unique,
            _sockets: Vec::new(),
        };
        // Plugins under names and in a directory the agent's filesystem does not have.
        let bin = r.inside(&r.bin_dir());
        std::fs::create_dir_all(&bin).unwrap();
        for (from, to) in [
            ("macvlan", "node-macvlan"),
            ("host-local", "node-host-local"),
        ] {
            std::fs::copy(Path::new(PLUGIN_DIR).join(from), bin.join(to)).unwrap();
        }
        std::fs::write(bin.join("probe"), PROBE).unwrap();
        std::fs::set_permissions(bin.join("probe"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let resolv = r.inside(&r.resolv_conf());
        std::fs::create_dir_all(resolv.parent().unwrap()).unwrap();
        std::fs::write(&resolv, "nameserver 192.0.2.53\nsearch node.example\n").unwrap();
        r
    }

    /// `path` (a node path) as this test sees it.
    fn inside(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap())
    }

    fn bin_dir(&self) -> PathBuf {
        Path::new("/opt").join(&self.unique).join("bin")
    }

    fn resolv_conf(&self) -> PathBuf {
        Path::new("/etc").join(&self.unique).join("resolv.conf")
    }

    fn data_dir(&self) -> PathBuf {
        Path::new("/var/lib").join(&self.unique).join("networks")
    }

    /// Creates [`WELL_KNOWN`] below the root: files, directories, listening sockets.
    fn populate_well_known(&mut self) {
        for p in WELL_KNOWN {
            let here = self.inside(Path::new(p));
            std::fs::create_dir_all(here.parent().unwrap()).unwrap();
            if p.ends_with(".sock") {
                self._sockets.push(UnixListener::bind(&here).unwrap());
            } else if p.ends_with("sriov") {
                std::fs::create_dir_all(&here).unwrap();
            } else {
                std::fs::write(&here, "node\n").unwrap();
            }
        }
    }

    /// The agent's command line wrapper: its own mount namespace, mounts propagating from the
    /// host as with `mountPropagation: HostToContainer`.
    fn wrapper(&self) -> Vec<String> {
        vec![
            "unshare".into(),
            "--mount".into(),
            "--propagation".into(),
            "slave".into(),
            "sh".into(),
            "-c".into(),
            MOUNT_NODE_ROOT.into(),
            "sh".into(),
            self.root.to_string_lossy().into_owned(),
        ]
    }
}

/// The agent's configuration: the fixture's, with the delegates and plugin directory left to
/// the shim's configuration, so each ADD can name its own.
fn agent_config(node: &Node, chroot: Option<&Path>) -> Value {
    let mut config = node.agent_config();
    let obj = config.as_object_mut().unwrap();
    obj.remove("delegates");
    obj.remove("binDir");
    if let Some(root) = chroot {
        obj.insert("chrootDir".into(), json!(root));
    }
    config
}

/// The shim's configuration with `cluster` as the cluster network and `bin_dir` as binDir.
fn shim_conf(node: &Node, bin_dir: &Path, cluster: Value) -> Value {
    let mut conf = node.shim_conf();
    conf["binDir"] = json!(bin_dir);
    conf["delegates"] = Value::Array(vec![cluster]);
    conf
}

/// A macvlan cluster network whose IPAM reads the node's resolv.conf and keeps its leases in a
/// node directory.
fn cluster(plugin: &str, ipam: &str, r: &NodeRoot) -> Value {
    json!({"cniVersion": "1.0.0", "name": "cluster", "type": plugin, "master": "vpar",
           "mode": "bridge",
           "ipam": {"type": ipam, "dataDir": r.data_dir(), "resolvConf": r.resolv_conf(),
                    "ranges": [[{"subnet": "203.0.113.0/24", "rangeStart": "203.0.113.10",
                                 "rangeEnd": "203.0.113.250"}]]}})
}

/// A pod file without networks: the cluster network alone.
fn pod_file(node: &Node, pod: &TestPod) {
    let doc = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod.name, "namespace": pod.namespace, "uid": pod.uid},
    });
    std::fs::write(
        node.path("local")
            .join(format!("pod-{}-{}.json", pod.namespace, pod.name)),
        doc.to_string(),
    )
    .unwrap();
}

fn leases(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir.join("cluster"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    out.sort();
    out
}

#[test]
fn with_chroot_dir_delegates_see_the_node_and_without_it_they_fail_naming_the_path() {
    if !require_root(
        "with_chroot_dir_delegates_see_the_node_and_without_it_they_fail_naming_the_path",
    ) {
        return;
    }
    let node = Node::new();
    let mut r = NodeRoot::new(&node);
    r.populate_well_known();
    // What the agent's own filesystem lacks (it is the host's, without the node root).
    for p in [r.bin_dir(), r.resolv_conf(), r.data_dir()] {
        assert!(!p.exists(), "{} must exist on the node only", p.display());
    }
    for p in WELL_KNOWN {
        assert!(
            !Path::new(p).exists(),
            "{p} exists on this machine: the probe would prove nothing"
        );
    }
    let pod = TestPod::new("pods", "chroot");
    let probe_pod = TestPod::new("pods", "probe");
    pod_file(&node, &pod);
    pod_file(&node, &probe_pod);
    let wrapper = r.wrapper();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();

    let mut agent = node.start_agent_wrapped(&agent_config(&node, Some(&r.root)), &wrapper);
    // Plugins found and run by their node paths, IPAM found through CNI_PATH below the root,
    // the resolv.conf read and the lease written on the node.
    let conf = shim_conf(
        &node,
        &r.bin_dir(),
        cluster("node-macvlan", "node-host-local", &r),
    );
    let add = node.cni(&conf, "ADD", &pod);
    assert_eq!(add.code, 0, "{add:?}\n{}", agent.log_text());
    // host-local read the resolv.conf (it fails without it, below); macvlan replaces the
    // IPAM's DNS with its own, so the result does not show it.
    let result = add.json();
    let ip = result["ips"][0]["address"].as_str().unwrap();
    assert!(ip.starts_with("203.0.113."), "{result}");
    assert_eq!(pod.links(), ["eth0", "lo"]);
    let node_leases = leases(&r.inside(&r.data_dir()));
    assert_eq!(node_leases, [ip.split('/').next().unwrap()]);
    assert!(
        !r.data_dir().exists(),
        "the lease went to the agent's filesystem"
    );
    let check = node.cni(&conf, "CHECK", &pod);
    assert_eq!(check.code, 0, "{check:?}");
    let del = node.cni(&conf, "DEL", &pod);
    assert_eq!(del.code, 0, "{del:?}");
    assert_eq!(pod.links(), ["lo"]);
    assert!(leases(&r.inside(&r.data_dir())).is_empty());

    // The popular primaries' paths, seen by a delegate on the node's root.
    let mut probe = shim_conf(
        &node,
        &r.bin_dir(),
        json!({"cniVersion": "1.1.0", "name": "cluster", "type": "probe"}),
    );
    probe["cniVersion"] = "1.1.0".into();
    let add = node.cni(&probe, "ADD", &probe_pod);
    assert_eq!(add.code, 0, "{add:?}\n{}", agent.log_text());
    let seen: Vec<String> = add.json()["dns"]["search"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let mut want: Vec<String> = WELL_KNOWN.iter().map(|p| (*p).to_owned()).collect();
    want.push("/usr/sbin/iptables".into());
    want.push(probe_pod.netns.path().to_string_lossy().into_owned());
    want.push("end".into());
    let (mut seen_sorted, mut want_sorted) = (seen.clone(), want);
    seen_sorted.sort();
    want_sorted.sort();
    assert_eq!(seen_sorted, want_sorted, "the delegate saw {seen:?}");
    // STATUS and GC (no container), CHECK and DEL run there too.
    let status = node.cni_raw(&probe, &[("CNI_COMMAND", "STATUS")]);
    assert_eq!(status.code, 0, "{status:?}");
    let check = node.cni(&probe, "CHECK", &probe_pod);
    assert_eq!(check.code, 0, "{check:?}");
    let mut gc = probe.clone();
    gc["cni.dev/valid-attachments"] =
        json!([{"containerID": probe_pod.container, "ifname": "eth0"}]);
    let gc = node.cni_raw(&gc, &[("CNI_COMMAND", "GC"), ("CNI_PATH", PLUGIN_DIR)]);
    assert_eq!(gc.code, 0, "{gc:?}");
    assert_eq!(node.cni(&probe, "DEL", &probe_pod).code, 0);
    let log = std::fs::read_to_string(r.inside(Path::new("/var/lib/calico/probe.log"))).unwrap();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["ADD", "STATUS", "CHECK", "GC", "DEL"],
        "every command ran on the node's root"
    );
    assert!(agent.terminate(), "{}", agent.log_text());
    drop(agent);

    // The same agent without chrootDir: the delegate runs on the agent's filesystem, where
    // the file its configuration names does not exist.
    let agent = node.start_agent_wrapped(&agent_config(&node, None), &wrapper);
    let conf = shim_conf(
        &node,
        Path::new(PLUGIN_DIR),
        cluster("macvlan", "host-local", &r),
    );
    let add = node.cni(&conf, "ADD", &pod);
    assert_ne!(add.code, 0, "{add:?}");
    let msg = add.json()["msg"].as_str().unwrap_or_default().to_owned();
    let details = add.json()["details"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    eprintln!("without chrootDir: {}", add.stdout);
    let resolv = r.resolv_conf().to_string_lossy().into_owned();
    assert!(
        msg.contains(&resolv) || details.contains(&resolv),
        "the error must name {resolv}: {add:?}"
    );
    assert_eq!(pod.links(), ["lo"], "a failed ADD leaves nothing");
    // And the node's own plugin directory is not the agent's.
    let conf = shim_conf(
        &node,
        &r.bin_dir(),
        cluster("node-macvlan", "node-host-local", &r),
    );
    let add = node.cni(&conf, "ADD", &pod);
    assert_ne!(add.code, 0, "{add:?}");
    let text = add.json().to_string();
    assert!(
        text.contains("node-macvlan") && text.contains(&r.bin_dir().to_string_lossy().into_owned()),
        "{text}"
    );
    drop(agent);
}
