//! The malformed and hostile input table: configurations, annotations and environments that
//! must each fail with the right CNI code and message, and leave nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use common::{Node, link_names};
use multus_testkit::Netns;
use serde_json::{Value, json};

const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
const DEFAULT_NETWORK: &str = "v1.multus-cni.io/default-network";

type Edit = Box<dyn Fn(&mut Value, &Node)>;

/// One row: what to change from a valid ADD, and the error expected.
struct Case {
    name: &'static str,
    code: u64,
    msg: &'static str,
    env: Vec<(&'static str, Option<&'static str>)>,
    conf: Option<Edit>,
    stdin: Option<&'static [u8]>,
    annotations: Value,
}

fn case(name: &'static str, code: u64, msg: &'static str) -> Case {
    Case {
        name,
        code,
        msg,
        env: Vec::new(),
        conf: None,
        stdin: None,
        annotations: json!({}),
    }
}

impl Case {
    fn env(mut self, key: &'static str, value: Option<&'static str>) -> Self {
        self.env.push((key, value));
        self
    }

    fn conf(mut self, edit: impl Fn(&mut Value, &Node) + 'static) -> Self {
        self.conf = Some(Box::new(edit));
        self
    }

    fn stdin(mut self, raw: &'static [u8]) -> Self {
        self.stdin = Some(raw);
        self
    }

    fn networks(mut self, value: &str) -> Self {
        self.annotations = json!({NETWORKS: value});
        self
    }

    #[allow(clippy::needless_pass_by_value, reason = "rows pass json! literals")]
    fn networks_json(self, value: Value) -> Self {
        self.networks(&value.to_string())
    }

    fn annotations(mut self, value: Value) -> Self {
        self.annotations = value;
        self
    }
}

fn cases() -> Vec<Case> {
    vec![
        // The environment.
        case("no CNI_COMMAND", 4, "CNI_COMMAND is required").env("CNI_COMMAND", None),
        case("unknown command", 4, "CNI_COMMAND=\"ATTACH\"").env("CNI_COMMAND", Some("ATTACH")),
        case("no container id", 4, "CNI_CONTAINERID is required").env("CNI_CONTAINERID", None),
        case("no netns", 4, "CNI_NETNS is required").env("CNI_NETNS", None),
        case("no ifname", 4, "CNI_IFNAME is required").env("CNI_IFNAME", None),
        case(
            "container id with a path",
            4,
            "CNI_CONTAINERID=\"../../etc/passwd\"",
        )
        .env("CNI_CONTAINERID", Some("../../etc/passwd")),
        case("ifname too long", 4, "longer than 15 bytes")
            .env("CNI_IFNAME", Some("eth0123456789abc")),
        case("ifname with a slash", 4, "CNI_IFNAME=\"a/b\"").env("CNI_IFNAME", Some("a/b")),
        case("CNI_ARGS without =", 4, "malformed pair").env("CNI_ARGS", Some("garbage")),
        case("CNI_ARGS unknown key", 4, "unknown key \"FOO\"").env(
            "CNI_ARGS",
            Some("FOO=1;K8S_POD_NAMESPACE=pods;K8S_POD_NAME=p"),
        ),
        case("CNI_ARGS duplicate key", 4, "more than once").env(
            "CNI_ARGS",
            Some("IgnoreUnknown=1;K8S_POD_NAME=a;K8S_POD_NAME=b"),
        ),
        case(
            "netns does not exist",
            3,
            "network namespace /nonexistent/netns",
        )
        .env("CNI_NETNS", Some("/nonexistent/netns")),
        // The configuration.
        case("stdin not JSON", 6, "decoding the network configuration").stdin(b"{cniVersion"),
        case("stdin a JSON list", 6, "expected a JSON object").stdin(b"[1, 2]"),
        case("empty stdin", 6, "decoding the network configuration").stdin(b""),
        case("no cniVersion", 7, "cniVersion: missing").conf(|c, _| {
            c.as_object_mut().unwrap().remove("cniVersion");
        }),
        case("cniVersion 0.2.1", 1, "\"0.2.1\" is not supported")
            .conf(|c, _| c["cniVersion"] = json!("0.2.1")),
        case(
            "cniVersion from the future",
            1,
            "\"9.0.0\" is not supported",
        )
        .conf(|c, _| c["cniVersion"] = json!("9.0.0")),
        case(
            "cniVersion a number",
            7,
            "cniVersion: expected a string, got a number",
        )
        .conf(|c, _| c["cniVersion"] = json!(1.0)),
        case("no name", 7, "name: missing").conf(|c, _| {
            c.as_object_mut().unwrap().remove("name");
        }),
        case("no type", 7, "type: missing").conf(|c, _| {
            c.as_object_mut().unwrap().remove("type");
        }),
        case(
            "type of another plugin",
            7,
            "type: \"bridge\" is not this plugin's type",
        )
        .conf(|c, _| c["type"] = json!("bridge")),
        case("type a number", 7, "type: expected a string").conf(|c, _| c["type"] = json!(1)),
        case(
            "daemonSocketDir a number",
            7,
            "daemonSocketDir: expected a string",
        )
        .conf(|c, _| {
            c["type"] = json!("multus-shim");
            c["daemonSocketDir"] = json!(5);
        }),
        case("bpffsDir relative", 7, "bpffsDir: must be an absolute path").conf(|c, _| {
            c["type"] = json!("multus-shim");
            c["bpffsDir"] = json!("sys/fs/bpf");
        }),
        case(
            "clusterNetwork file missing",
            7,
            "the file /nonexistent/10-net.conf does not exist",
        )
        .conf(|c, _| c["clusterNetwork"] = json!("/nonexistent/10-net.conf")),
        case(
            "macvlan master missing",
            7,
            "master interface \"nosuchmaster\" does not exist",
        )
        .networks("no-master"),
        case("confDir a number", 7, "confDir: expected a string")
            .conf(|c, _| c["confDir"] = json!(5)),
        case("delegates an object", 7, "delegates: expected a list")
            .conf(|c, _| c["delegates"] = json!({"type": "bridge"})),
        case(
            "delegates[0] a string",
            7,
            "delegates[0]: expected an object",
        )
        .conf(|c, _| c["delegates"] = json!(["bridge"])),
        case(
            "no cluster network",
            7,
            "either clusterNetwork or delegates",
        )
        .conf(|c, _| {
            c.as_object_mut().unwrap().remove("delegates");
        }),
        case(
            "namespaceIsolation a string",
            7,
            "namespaceIsolation: expected true or false",
        )
        .conf(|c, _| c["namespaceIsolation"] = json!("yes")),
        case(
            "defaultNetworks a string",
            7,
            "defaultNetworks: expected a list",
        )
        .conf(|c, _| c["defaultNetworks"] = json!("a,b")),
        case(
            "logOptions.maxAge a string",
            7,
            "logOptions.maxAge: expected",
        )
        .conf(|c, _| c["logOptions"] = json!({"maxAge": "5d"})),
        case("relative cniDir", 7, "cniDir: must be an absolute path")
            .conf(|c, _| c["cniDir"] = json!("cache")),
        case("plugin type with a path", 7, "is not a plain plugin name")
            .conf(|c, _| c["delegates"][0]["type"] = json!("../../../bin/sh")),
        case(
            "plugin not installed",
            7,
            "plugin \"no-such-plugin\" not found in",
        )
        .conf(|c, _| c["delegates"][0]["type"] = json!("no-such-plugin")),
        case(
            "clusterNetwork unknown",
            7,
            "no NetworkAttachmentDefinition kube-system/nowhere",
        )
        .conf(|c, _| c["clusterNetwork"] = json!("nowhere")),
        case(
            "delegate version unsupported",
            1,
            "\"0.2.1\" is not supported",
        )
        .conf(|c, _| c["delegates"][0]["cniVersion"] = json!("0.2.1")),
        case(
            "readiness indicator missing",
            11,
            "readiness indicator file",
        )
        .conf(|c, n| c["readinessindicatorfile"] = json!(n.path("not-ready"))),
        // The networks annotation and the NADs.
        case("bad network name", 7, "is not a DNS-1123 label").networks("Bad_Name"),
        case("annotation ifname too long", 7, "longer than 15 bytes")
            .networks("macvlan-net@abcdefghijklmnop"),
        case("same ifname twice", 7, "requested more than once")
            .networks("macvlan-net@x,bridge-net@x"),
        case(
            "unknown network",
            7,
            "pods/missing-net: NetworkAttachmentDefinition not found",
        )
        .networks("missing-net"),
        case("truncated JSON", 7, "not a JSON list").networks("[{\"name\": \"macvlan-net\""),
        case("JSON bad ip", 7, "is not an IP address or CIDR")
            .networks_json(json!([{"name": "macvlan-net", "ips": ["192.0.2.300/24"]}])),
        case("JSON bad mac", 7, "is not a MAC address")
            .networks_json(json!([{"name": "macvlan-net", "mac": "02:00:00"}])),
        // Refused only with requireCapabilities (by default they go as legacy CNI_ARGS).
        case(
            "ips without the capability",
            7,
            "declares the capability \"ips\"",
        )
        .conf(|c, _| c["requireCapabilities"] = json!(true))
        .networks_json(json!([{"name": "macvlan-net", "ips": ["192.0.2.5/24"]}])),
        case(
            "mac without the capability",
            7,
            "declares the capability \"mac\"",
        )
        .conf(|c, _| c["requireCapabilities"] = json!(true))
        .networks_json(json!([{"name": "macvlan-net", "mac": "02:00:00:00:00:05"}])),
        case(
            "two default routes",
            7,
            "default-route is set on more than one",
        )
        .networks_json(
            json!([{"name": "macvlan-net", "default-route": ["192.0.2.1"]},
                                  {"name": "bridge-net", "default-route": ["198.51.100.1"]}]),
        ),
        case("explicit eth0", 7, "already used by network cluster").networks("macvlan-net@eth0"),
        case(
            "explicit name of an automatic one",
            7,
            "interface net1 for network pods/bridge-net",
        )
        .networks("macvlan-net,bridge-net@net1"),
        case("namespace isolation", 7, "namespaceIsolation")
            .conf(|c, _| c["namespaceIsolation"] = json!(true))
            .networks("other/macvlan-x"),
        case(
            "NAD config not JSON",
            6,
            "decoding configuration of pods/bad-json",
        )
        .networks("bad-json"),
        case(
            "NAD config without type",
            7,
            "pods/no-type: plugin 0: no type",
        )
        .networks("no-type"),
        case("NAD config of an old version", 1, "network pods/old").networks("old"),
        case(
            "default-network names two",
            7,
            "must name exactly one network",
        )
        .annotations(json!({DEFAULT_NETWORK: "a,b"})),
        case("port out of range", 7, "portMappings: hostPort 70000")
            .networks_json(json!([{"name": "macvlan-net",
                "portMappings": [{"hostPort": 70000, "containerPort": 80}]}])),
        case(
            "uid mismatch",
            7,
            "K8S_POD_UID is wrong-uid but the pod's uid is uid-p",
        )
        .env(
            "CNI_ARGS",
            Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=pods;K8S_POD_NAME=p;K8S_POD_UID=wrong-uid"),
        ),
        case("CHECK before 0.4.0", 1, "CHECK needs cniVersion 0.4.0")
            .env("CNI_COMMAND", Some("CHECK"))
            .conf(|c, _| {
                c["cniVersion"] = json!("0.3.1");
                c["delegates"][0]["cniVersion"] = json!("0.3.1");
            }),
        case(
            "GC without valid attachments",
            7,
            "cni.dev/valid-attachments",
        )
        .env("CNI_COMMAND", Some("GC"))
        .conf(|c, _| c["cniVersion"] = json!("1.1.0")),
        case("CHECK of an unknown container", 3, "no cached attachments")
            .env("CNI_COMMAND", Some("CHECK")),
    ]
}

#[test]
fn malformed_and_hostile_inputs_fail_cleanly() {
    let Some(node) = common::root_node("malformed_and_hostile_inputs_fail_cleanly") else {
        return;
    };
    node.macvlan_nad("1.0.0");
    node.bridge_nad("1.0.0");
    node.nad(
        "other",
        "macvlan-x",
        &json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "vpar"}),
    );
    node.nad(
        "pods",
        "no-type",
        &json!({"cniVersion": "1.0.0", "master": "vpar"}),
    );
    node.nad(
        "pods",
        "no-master",
        &json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "nosuchmaster"}),
    );
    node.nad(
        "pods",
        "old",
        &json!({"cniVersion": "0.2.1", "type": "macvlan"}),
    );
    let bad = json!({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
                     "metadata": {"name": "bad-json", "namespace": "pods"},
                     "spec": {"config": "{\"cniVersion\": "}});
    std::fs::write(node.path("local").join("bad.json"), bad.to_string()).unwrap();
    let pod = Netns::new("cpd");
    let netns = pod.path().to_string_lossy().into_owned();
    let node_links = node.links();
    let all = cases();
    assert!(all.len() >= 40, "only {} cases", all.len());
    for c in all {
        node.pod("pods", "p", "uid-p", &c.annotations);
        let mut conf = node.multus_conf("1.0.0");
        if let Some(edit) = &c.conf {
            edit(&mut conf, &node);
        }
        let mut env: Vec<(&str, &str)> = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "hostile"),
            ("CNI_NETNS", &netns),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", common::PLUGIN_DIR),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=pods;K8S_POD_NAME=p",
            ),
        ];
        for (key, value) in &c.env {
            env.retain(|(k, _)| k != key);
            if let Some(v) = value {
                env.push((key, v));
            }
        }
        let conf_bytes = conf.to_string();
        let stdin = c.stdin.unwrap_or(conf_bytes.as_bytes());
        let run = node.run_raw(&env, stdin);
        assert_eq!(run.code, 1, "{}: {run:?}", c.name);
        assert_eq!(run.stdout.lines().count(), 1, "{}: {run:?}", c.name);
        let err = run.json();
        assert_eq!(err["code"], c.code, "{}: {err}", c.name);
        let msg = err["msg"].as_str().unwrap_or_default();
        assert!(msg.contains(c.msg), "{}: {msg:?} lacks {:?}", c.name, c.msg);
        // The reply speaks the configuration's version whenever it has a supported one.
        let want = conf["cniVersion"]
            .as_str()
            .filter(|v| c.stdin.is_none() && *v != "0.2.1" && *v != "9.0.0");
        assert_eq!(
            err["cniVersion"].as_str(),
            Some(want.unwrap_or("1.1.0")),
            "{}: {err}",
            c.name
        );
        // Nothing was created anywhere.
        assert_eq!(link_names(&pod), vec!["lo"], "{}", c.name);
        assert_eq!(node.links(), node_links, "{}", c.name);
        assert!(node.leases().is_empty(), "{}: {:?}", c.name, node.leases());
        assert!(
            node.cache_files().is_empty(),
            "{}: {:?}",
            c.name,
            node.cache_files()
        );
    }
}
