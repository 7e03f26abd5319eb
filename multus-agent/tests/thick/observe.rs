//! `multus-agent observe` against a running agent: a NAD policy annotation drops real packets,
//! the agent resolves the events, the command prints them with filters.
use std::time::{Duration, Instant};

use multus_testkit::require_root;
use serde_json::{Value, json};

use crate::support::{Node, TestPod, static_neighbours};

/// `multus-agent observe ARGS -o json` on `node`'s socket: one value per line.
fn observe(node: &Node, args: &[&str]) -> Vec<Value> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_multus-agent"))
        .arg("observe")
        .arg("--socket-dir")
        .arg(node.path("run"))
        .args(args)
        .env_remove("MULTUS_AGENT_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn observe_shows_a_nad_deny_drop_with_pod_packet_and_rule() {
    if !require_root("observe_shows_a_nad_deny_drop_with_pod_packet_and_rule") {
        return;
    }
    let node = Node::new();
    // The network denies ICMP from its pods.
    let config = json!({"cniVersion": "1.0.0", "type": "macvlan", "master": "vpar",
                        "mode": "bridge", "ipam": node.ipam("192.0.2.0/24")});
    let nad = json!({
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "storage", "namespace": "infra",
                     "annotations": {"multus-rs.io/policy": "egress:\n  deny:\n    - ports: icmp\n"}},
        "spec": {"config": config.to_string()},
    });
    std::fs::write(
        node.path("local").join("nad-infra-storage.json"),
        nad.to_string(),
    )
    .unwrap();
    let _agent = node.start_agent(&node.agent_config());
    let (a, b) = (TestPod::new("infra", "a"), TestPod::new("infra", "b"));
    for pod in [&a, &b] {
        node.pod_file(pod, "storage");
        node.shim("ADD", pod).ok();
    }
    static_neighbours(&a, &b, "net1");
    let (ip_a, _) = a.addr_and_mac("net1");
    let (ip_b, _) = b.addr_and_mac("net1");
    // The enforcer installs the annotation's policy shortly after the ADD.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.ping(&ip_b, 1) != 0 {
        assert!(Instant::now() < deadline, "the deny never took effect");
    }
    assert_eq!(a.ping(&ip_b, 3), 0);

    let deadline = Instant::now() + Duration::from_secs(5);
    let events = loop {
        let events = observe(&node, &["-o", "json", "--pod", "infra/a"]);
        if events.len() >= 3 || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(events.len() >= 3, "{events:#?}");
    for e in &events {
        assert_eq!(e["namespace"], "infra");
        assert_eq!(e["pod"], "a");
        assert_eq!(e["network"], "infra/storage");
        assert_eq!(e["interface"], "net1");
        assert_eq!(e["direction"], "egress");
        assert_eq!(e["reason"], "policy_deny");
        assert_eq!(e["protocol"], "icmp");
        assert_eq!(e["src"], ip_a.as_str());
        assert_eq!(e["dst"], ip_b.as_str());
        assert_eq!(e["icmp"], json!([8, 0]));
        assert_eq!(
            e["rule"],
            "NetworkAttachmentDefinition infra/storage: egress.deny[0]"
        );
    }
    // Filters: another pod, direction or reason selects none; --last bounds the count.
    assert!(observe(&node, &["-o", "json", "--pod", "infra/b"]).is_empty());
    assert!(observe(&node, &["-o", "json", "--direction", "ingress"]).is_empty());
    assert!(observe(&node, &["-o", "json", "--reason", "spoofed"]).is_empty());
    // --since: a duration back from now, or a time.
    assert!(observe(&node, &["-o", "json", "--since", "10m"]).len() >= 3);
    assert!(observe(&node, &["-o", "json", "--since", "2099-01-01T00:00:00Z"]).is_empty());
    assert_eq!(
        observe(
            &node,
            &["-o", "json", "--network", "storage", "--last", "2"]
        )
        .len(),
        2
    );
    // The table names the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_multus-agent"))
        .args(["observe", "--last", "1", "--socket-dir"])
        .arg(node.path("run"))
        .env_remove("MULTUS_AGENT_CONFIG")
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("TIME"), "{table}");
    assert!(
        table.contains("infra/a") && table.contains(&format!("{ip_a} -> {ip_b} type 8 code 0")),
        "{table}"
    );
    // --follow prints drops that come after it started.
    let mut follow = std::process::Command::new(env!("CARGO_BIN_EXE_multus-agent"))
        .args([
            "observe",
            "--follow",
            "--last",
            "0",
            "-o",
            "json",
            "--socket-dir",
        ])
        .arg(node.path("run"))
        .env_remove("MULTUS_AGENT_CONFIG")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let latest = observe(&node, &["-o", "json", "--last", "1"])[0]["seq"]
        .as_u64()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(rx.try_recv().is_err(), "--last 0 printed old drops");
    assert_eq!(a.ping(&ip_b, 1), 0);
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no line from --follow");
    let followed: Value = serde_json::from_str(&line).unwrap();
    assert!(followed["seq"].as_u64().unwrap() > latest, "{followed}");
    assert_eq!(followed["pod"], "a");
    follow.kill().unwrap();
    follow.wait().unwrap();
    // The event metrics count what the agent read.
    let metrics = node.scrape();
    assert!(metrics.value("multus_agent_drop_events_total", &[]) >= 3);
    for pod in [&a, &b] {
        node.shim("DEL", pod).ok();
    }
}
