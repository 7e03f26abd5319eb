//! Standalone mode (networks and pods from local files).
use std::{os::unix::fs::PermissionsExt as _, time::Duration};

use multus_testkit::{inside, ping, require_root};

use crate::support::{
    Metrics, Node, PING_FRAME, PLUGIN_DIR, Run, TestPod, static_neighbours, tcx_programs,
};

const NET: &str = "pods/macvlan-net";

fn net_labels(pod: &TestPod) -> [(&'static str, &str); 4] {
    [
        ("namespace", pod.namespace.as_str()),
        ("pod", pod.name.as_str()),
        ("interface", "net1"),
        ("network_name", NET),
    ]
}

#[test]
fn add_through_the_shim_returns_after_the_programs_are_attached() {
    if !require_root("add_through_the_shim_returns_after_the_programs_are_attached") {
        return;
    }
    let node = macvlan_node();
    let agent = node.start_agent(&node.agent_config());
    let pod = TestPod::new("pods", "web");
    node.pod_file(&pod, "macvlan-net");

    // Root only: the directory is 0700, the socket 0600.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&node.path("run")), 0o700);
    assert_eq!(mode(&node.path("run").join("multus.sock")), 0o600);
    let mut status_conf = node.shim_conf();
    status_conf["cniVersion"] = "1.1.0".into();
    let status = node.cni_raw(&status_conf, &[("CNI_COMMAND", "STATUS")]);
    assert_eq!(status.code, 0, "{status:?}");

    let add = node.shim("ADD", &pod).ok();
    // Checked right after ADD returned: nothing may still be on its way.
    let programs = tcx_programs(&pod.netns.path(), "net1");
    assert_eq!(
        programs,
        ["multus_ingress", "multus_egress"],
        "{}",
        agent.log_text()
    );
    assert!(
        tcx_programs(&pod.netns.path(), "eth0").is_empty(),
        "the cluster network is not ours"
    );
    let records = node.records();
    assert_eq!(records.len(), 1, "{records:?}");
    let owner = &records[0]["owner"];
    assert_eq!(owner["namespace"], "pods");
    assert_eq!(owner["pod"], "web");
    assert_eq!(owner["network"], NET);
    assert_eq!(owner["container_id"], pod.container.as_str());
    let metrics = node.scrape();
    for name in [
        "multus_interface_receive_packets_total",
        "multus_interface_receive_bytes_total",
        "multus_interface_transmit_packets_total",
        "multus_interface_transmit_bytes_total",
        "pod_network_name_info",
    ] {
        assert_eq!(metrics.value(name, &net_labels(&pod)), 0, "{name}");
    }
    assert_eq!(metrics.value("multus_agent_attached_interfaces", &[]), 1);
    // The result is the cluster network's, as thin mode gives it.
    assert!(
        add.json()["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("203.0.113."),
        "{add:?}"
    );

    node.shim("DEL", &pod).ok();
    assert_eq!(pod.links(), ["lo"]);
    assert!(node.records().is_empty());
    assert!(node.link_pins().is_empty(), "{:?}", node.link_pins());
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.cache_files().is_empty(), "{:?}", node.cache_files());
    let metrics = node.scrape();
    assert_eq!(metrics.value("multus_agent_attached_interfaces", &[]), 0);
    assert!(metrics.series("pod_network_name_info").is_empty());
    // The pod file was written while the agent ran: its watcher saw it.
    assert!(
        metrics.value("multus_agent_source_events_total", &[("cache", "local")]) >= 1,
        "{}",
        metrics.text
    );
}

/// A node with the NAD `pods/macvlan-net` (macvlan on `vpar`, 192.0.2.0/24).
fn macvlan_node() -> Node {
    let node = Node::new();
    node.macvlan_nad("pods", "macvlan-net", "192.0.2.0/24");
    node
}

/// Two pods on the macvlan network through the shim, with static neighbours between their
/// `net1`s so only the test's packets are on the wire.
fn two_pods(node: &Node) -> (TestPod, TestPod) {
    let (a, b) = (TestPod::new("pods", "a"), TestPod::new("pods", "b"));
    for pod in [&a, &b] {
        node.pod_file(pod, "macvlan-net");
        node.shim("ADD", pod).ok();
    }
    static_neighbours(&a, &b, "net1");
    (a, b)
}

fn counters(metrics: &Metrics, pod: &TestPod) -> [u64; 4] {
    let labels = net_labels(pod);
    [
        metrics.value("multus_interface_transmit_packets_total", &labels),
        metrics.value("multus_interface_transmit_bytes_total", &labels),
        metrics.value("multus_interface_receive_packets_total", &labels),
        metrics.value("multus_interface_receive_bytes_total", &labels),
    ]
}

fn delta(after: [u64; 4], before: [u64; 4]) -> [u64; 4] {
    let mut out = [0; 4];
    for i in 0..4 {
        assert!(
            after[i] >= before[i],
            "a counter went back: {before:?} -> {after:?}"
        );
        out[i] = after[i] - before[i];
    }
    out
}

#[test]
fn metrics_count_known_traffic_exactly_with_the_right_labels() {
    if !require_root("metrics_count_known_traffic_exactly_with_the_right_labels") {
        return;
    }
    const N: u64 = 20;
    let node = macvlan_node();
    let _agent = node.start_agent(&node.agent_config());
    let (a, b) = two_pods(&node);
    let (ip_b, _) = b.addr_and_mac("net1");
    let before = node.scrape();
    assert_eq!(u64::from(a.ping(&ip_b, N as u32)), N);
    let after = node.scrape();
    let frame = PING_FRAME;
    assert_eq!(
        delta(counters(&after, &a), counters(&before, &a)),
        [N, N * frame, N, N * frame],
        "pod a: tx packets, tx bytes, rx packets, rx bytes"
    );
    assert_eq!(
        delta(counters(&after, &b), counters(&before, &b)),
        [N, N * frame, N, N * frame],
        "pod b"
    );
    // OpenShift's join metric, one per secondary interface.
    let info = after.series("pod_network_name_info");
    assert_eq!(info.len(), 2, "{info:?}");
    for pod in [&a, &b] {
        assert_eq!(after.value("pod_network_name_info", &net_labels(pod)), 0);
    }
    assert_eq!(
        after.value(
            "multus_cni_request_duration_seconds_count",
            &[("command", "ADD"), ("result", "success")]
        ),
        2
    );
    assert_eq!(
        after.value(
            "multus_agent_attach_operations_total",
            &[("operation", "attach"), ("result", "success")]
        ),
        2
    );
    assert!(
        after.text.contains("multus_agent_build_info{"),
        "{}",
        after.text
    );
    for pod in [&a, &b] {
        node.shim("DEL", pod).ok();
    }
}

#[test]
fn killed_agent_restarts_adopts_everything_and_counters_never_go_back() {
    if !require_root("killed_agent_restarts_adopts_everything_and_counters_never_go_back") {
        return;
    }
    let node = macvlan_node();
    let mut agent = node.start_agent(&node.agent_config());
    let (a, b) = two_pods(&node);
    let (ip_b, _) = b.addr_and_mac("net1");
    let s0 = counters(&node.scrape(), &a);
    // About three seconds of pings; the agent dies and comes back in the middle.
    let ping = a.spawn_ping(&ip_b, 300);
    std::thread::sleep(Duration::from_millis(500));
    let s1 = counters(&node.scrape(), &a);
    agent.kill9();
    std::thread::sleep(Duration::from_millis(300));
    let agent = node.start_agent(&node.agent_config());
    let s2 = counters(&node.scrape(), &a);
    let out = ping.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    let (sent, replies) = ping::summary(&summary)
        .map(|(sent, replies)| (u64::from(sent), u64::from(replies)))
        .unwrap_or_else(|| panic!("no ping summary: {summary}"));
    let s3 = counters(&node.scrape(), &a);
    delta(s1, s0);
    delta(s2, s1);
    // Every packet was counted, also while no agent ran: the pinned links never stopped.
    assert_eq!(
        delta(s3, s0),
        [sent, sent * PING_FRAME, replies, replies * PING_FRAME],
        "{summary}"
    );
    assert!(s1[0] > s0[0] && s2[0] > s1[0], "{s0:?} {s1:?} {s2:?}");
    let metrics = node.scrape();
    assert_eq!(
        metrics.value(
            "multus_agent_attach_operations_total",
            &[("operation", "adopt"), ("result", "success")]
        ),
        2,
        "{}",
        agent.log_text()
    );
    assert_eq!(metrics.value("multus_agent_attached_interfaces", &[]), 2);
    for pod in [&a, &b] {
        assert_eq!(
            tcx_programs(&pod.netns.path(), "net1"),
            ["multus_ingress", "multus_egress"]
        );
    }
    // The adopted attachments are managed as before: DEL removes them.
    for pod in [&a, &b] {
        node.shim("DEL", pod).ok();
    }
    assert!(node.records().is_empty());
    assert!(node.link_pins().is_empty(), "{:?}", node.link_pins());
}

#[test]
fn with_the_agent_down_add_waits_and_del_leaves_nothing_behind() {
    if !require_root("with_the_agent_down_add_waits_and_del_leaves_nothing_behind") {
        return;
    }
    let node = macvlan_node();
    let mut agent = node.start_agent(&node.agent_config());
    let pod = TestPod::new("pods", "web");
    node.pod_file(&pod, "macvlan-net");
    node.shim("ADD", &pod).ok();
    assert_eq!(node.leases().len(), 2);
    agent.kill9();

    let other = TestPod::new("pods", "other");
    node.pod_file(&other, "macvlan-net");
    let add = node.shim("ADD", &other);
    assert_eq!(add.error_code(), 11, "{add:?}");
    assert!(
        add.json()["msg"]
            .as_str()
            .unwrap()
            .contains("not reachable"),
        "{add:?}"
    );
    assert_eq!(other.links(), ["lo"]);
    let status = node.cni_raw(&node.shim_conf(), &[("CNI_COMMAND", "STATUS")]);
    assert_eq!(status.error_code(), 50, "{status:?}");

    // DEL runs in the shim from the cache: interfaces, leases, cache and link pins go.
    node.shim("DEL", &pod).ok();
    assert_eq!(pod.links(), ["lo"]);
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.cache_files().is_empty(), "{:?}", node.cache_files());
    assert!(node.link_pins().is_empty(), "{:?}", node.link_pins());
    // A retried DEL is fine too.
    node.shim("DEL", &pod).ok();

    // The agent finishes the rest (map entry and record) when it starts.
    assert_eq!(node.records().len(), 1);
    let _agent = node.start_agent(&node.agent_config());
    assert!(node.records().is_empty(), "{:?}", node.records());
    assert_eq!(
        node.scrape().value("multus_agent_attached_interfaces", &[]),
        0
    );
    assert_eq!(node.status(), serde_json::json!([]));
}

#[test]
fn an_attach_failure_fails_the_add_and_rolls_it_back() {
    if !require_root("an_attach_failure_fails_the_add_and_rolls_it_back") {
        return;
    }
    let node = macvlan_node();
    let _agent = node.start_agent(&node.agent_config());
    let pod = TestPod::new("pods", "web");
    node.pod_file(&pod, "macvlan-net");
    // The record directory turns into a file: the dataplane cannot record the attachment.
    let records = node.path("state").join("attachments");
    std::fs::remove_dir_all(&records).unwrap();
    std::fs::write(&records, "not a directory").unwrap();

    let add = node.shim("ADD", &pod);
    assert_eq!(add.error_code(), 100, "{add:?}");
    let msg = add.json()["msg"].as_str().unwrap().to_owned();
    assert!(msg.contains("attaching the dataplane to net1"), "{msg}");
    // Fail closed: no interface, no address, no cache, no program left.
    assert_eq!(pod.links(), ["lo"]);
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.cache_files().is_empty(), "{:?}", node.cache_files());
    assert!(node.link_pins().is_empty(), "{:?}", node.link_pins());
    assert_eq!(
        node.scrape().value(
            "multus_agent_attach_operations_total",
            &[("operation", "attach"), ("result", "error")]
        ),
        1
    );

    std::fs::remove_file(&records).unwrap();
    std::fs::create_dir(&records).unwrap();
    node.shim("ADD", &pod).ok();
    assert_eq!(tcx_programs(&pod.netns.path(), "net1").len(), 2);
    node.shim("DEL", &pod).ok();
}

#[test]
fn sigterm_stops_serving_and_leaves_the_attachments_working() {
    if !require_root("sigterm_stops_serving_and_leaves_the_attachments_working") {
        return;
    }
    let node = macvlan_node();
    let mut agent = node.start_agent(&node.agent_config());
    let (a, b) = two_pods(&node);
    let (ip_b, _) = b.addr_and_mac("net1");
    let before = counters(&node.scrape(), &a);
    let second = node.agent_fails_to_start(&node.agent_config());
    assert!(second.contains("another agent is serving"), "{second}");
    assert!(
        agent.terminate(),
        "the agent must exit cleanly:\n{}",
        agent.log_text()
    );
    assert!(
        !node.path("run").join("multus.sock").exists(),
        "socket left behind"
    );
    // Still enforcing and counting while no agent runs.
    assert_eq!(tcx_programs(&a.netns.path(), "net1").len(), 2);
    assert_eq!(a.ping(&ip_b, 5), 5);
    let _agent = node.start_agent(&node.agent_config());
    assert_eq!(
        delta(counters(&node.scrape(), &a), before),
        [5, 5 * PING_FRAME, 5, 5 * PING_FRAME]
    );
    let status = node.status();
    let rows = status.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{status}");
    let row = rows.iter().find(|r| r["pod"] == "a").unwrap();
    assert_eq!(row["network"], NET);
    assert_eq!(row["interface"], "net1");
    assert_eq!(row["counters"]["egress"]["packets"], 5 + before[0]);
    assert!(row["policy"].is_null());
    for pod in [&a, &b] {
        node.shim("DEL", pod).ok();
    }
}

#[test]
fn a_hundred_concurrent_adds_all_succeed_with_bounded_memory() {
    if !require_root("a_hundred_concurrent_adds_all_succeed_with_bounded_memory") {
        return;
    }
    const PODS: usize = 100;
    let node = macvlan_node();
    let agent = node.start_agent(&node.agent_config());
    let (_, idle) = inside::rss_kib(agent.pid()).unwrap();
    let pods: Vec<TestPod> = (0..PODS)
        .map(|i| {
            let pod = TestPod::new("pods", &format!("burst-{i}"));
            node.pod_file(&pod, "macvlan-net");
            pod
        })
        .collect();
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|pod| s.spawn(|| node.shim("ADD", pod)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let failed: Vec<&Run> = runs.iter().filter(|r| r.code != 0).collect();
    assert!(
        failed.is_empty(),
        "{} ADDs failed, first: {:?}",
        failed.len(),
        failed[0]
    );
    let (peak, now) = inside::rss_kib(agent.pid()).unwrap();
    eprintln!(
        "agent RSS: idle {idle} KiB, peak {peak} KiB during {PODS} concurrent ADDs, now {now} KiB"
    );
    // The engine runs at most requestConcurrency (4) requests at once, the others wait with
    // their headers read: memory does not grow with the burst.
    assert!(peak < 64 * 1024, "agent peak RSS {peak} KiB");
    assert_eq!(node.records().len(), PODS);
    assert_eq!(
        node.scrape().value("multus_agent_attached_interfaces", &[]),
        PODS as u64
    );
    let runs: Vec<Run> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .map(|pod| s.spawn(|| node.shim("DEL", pod)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        runs.iter().all(|r| r.code == 0),
        "{:?}",
        runs.iter().find(|r| r.code != 0)
    );
    assert!(node.records().is_empty());
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.link_pins().is_empty());
}

#[test]
fn check_and_gc_cover_the_dataplane() {
    if !require_root("check_and_gc_cover_the_dataplane") {
        return;
    }
    let node = macvlan_node();
    let _agent = node.start_agent(&node.agent_config());
    let (a, b) = two_pods(&node);
    node.shim("CHECK", &a).ok();
    // GC (CNI 1.1.0): the runtime still has only pod a.
    let mut gc_conf = node.shim_conf();
    gc_conf["cniVersion"] = "1.1.0".into();
    gc_conf["cni.dev/valid-attachments"] =
        serde_json::json!([{"containerID": a.container, "ifname": "eth0"}]);
    node.cni_raw(&gc_conf, &[("CNI_COMMAND", "GC"), ("CNI_PATH", PLUGIN_DIR)])
        .ok();
    assert_eq!(b.links(), ["lo"]);
    let records = node.records();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["owner"]["pod"], "a");
    assert_eq!(tcx_programs(&a.netns.path(), "net1").len(), 2);
    node.shim("CHECK", &a).ok();
    node.shim("DEL", &a).ok();
    node.shim("DEL", &b).ok();
    assert!(node.leases().is_empty(), "{:?}", node.leases());
}

#[test]
fn an_oversized_request_is_refused_with_a_clear_error() {
    if !require_root("an_oversized_request_is_refused_with_a_clear_error") {
        return;
    }
    let node = macvlan_node();
    let mut config = node.agent_config();
    config["maxRequestBytes"] = 100.into();
    let _agent = node.start_agent(&config);
    let pod = TestPod::new("pods", "web");
    let add = node.shim("ADD", &pod);
    assert_eq!(add.error_code(), 7, "{add:?}");
    assert!(
        add.json()["msg"]
            .as_str()
            .unwrap()
            .contains("maxRequestBytes"),
        "{add:?}"
    );
    assert_eq!(pod.links(), ["lo"]);
}

/// Rewrites the cache of `pod` (made by this engine) as Multus leaves it: its scratch cache
/// (`Name` and the configuration in `Bytes` per delegate, cluster network first) and one libcni
/// result file per delegate. The interfaces are the same, with no eBPF attachment.
fn as_multus_cache(node: &Node, pod: &TestPod) {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let cache = node.path("cache");
    let results = cache.join("results");
    let ours: serde_json::Value =
        serde_json::from_slice(&std::fs::read(results.join(&pod.container)).unwrap()).unwrap();
    let mut records = Vec::new();
    for d in ours["delegates"].as_array().unwrap() {
        let config = d["config"].as_str().unwrap();
        records.push(serde_json::json!({"Name": d["network"], "Bytes": b64(config)}));
        let name: serde_json::Value = serde_json::from_str(config).unwrap();
        let name = name["name"].as_str().unwrap();
        let ifname = d["ifname"].as_str().unwrap();
        let cached = serde_json::json!({"kind": "cniCacheV1", "containerId": pod.container,
            "config": b64(config), "ifName": ifname, "networkName": name,
            "netns": pod.netns.path(), "result": d["result"]});
        std::fs::write(
            results.join(format!("{name}-{}-{ifname}", pod.container)),
            cached.to_string(),
        )
        .unwrap();
    }
    std::fs::remove_file(results.join(&pod.container)).unwrap();
    std::fs::write(
        cache.join(&pod.container),
        serde_json::Value::Array(records).to_string(),
    )
    .unwrap();
}

#[test]
fn a_pod_multus_set_up_is_checked_and_deleted_through_the_agent() {
    if !require_root("a_pod_multus_set_up_is_checked_and_deleted_through_the_agent") {
        return;
    }
    let node = macvlan_node();
    let _agent = node.start_agent(&node.agent_config());
    let pod = TestPod::new("pods", "old");
    node.pod_file(&pod, "macvlan-net");
    // Set up without the agent (thin mode), then left as Multus leaves a pod.
    let mut thin = node.agent_config();
    thin["cniVersion"] = "1.0.0".into();
    thin["name"] = "multus-cni-network".into();
    thin["type"] = "multus".into();
    node.cni(&thin, "ADD", &pod).ok();
    as_multus_cache(&node, &pod);
    assert_eq!(pod.links(), ["eth0", "lo", "net1"]);
    assert!(node.records().is_empty());

    // The delegates' CHECK passes; the agent says the secondary is not policed.
    let check = node.shim("CHECK", &pod);
    assert_eq!(check.error_code(), 100, "{check:?}");
    let msg = check.json()["msg"].as_str().unwrap().to_owned();
    assert!(msg.contains("set up by Multus"), "{msg}");

    node.shim("DEL", &pod).ok();
    assert_eq!(pod.links(), ["lo"]);
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(node.cache_files().is_empty(), "{:?}", node.cache_files());
}
