//! Root tests of drop events: real programs on macvlan interfaces of test namespaces, real
//! packets, the ring buffer drained and resolved into records naming pod, 5-tuple and rule.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::{common, policy_fixture};

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use common::Dirs;
use ipnet::IpNet;
use multus_agent::{
    dataplane::{
        AntiSpoof, AttachMode, AttachRequest, AttachmentOwner, AttachmentRecord, Dataplane,
        DirectionPolicy, DropReason, Policy, PortRange, Protocol, Rule,
        events::{self, DropRecord, EventLimit, EventReader},
    },
    policy::{LocalAttachment, NamespaceView, Snapshot, compile_attachment},
};
use multus_testkit::{MacvlanPods, Pod, require_root, traffic};

const SOURCE: &str = "nad:infra/storage";
const SOURCE_TEXT: &str = "NetworkAttachmentDefinition infra/storage";

struct Events {
    dataplane: Dataplane,
    reader: EventReader,
    _dirs: Dirs,
}

impl Events {
    fn new() -> Self {
        let dirs = Dirs::new();
        let mut dataplane = dirs.load(AttachMode::Tcx);
        dataplane.set_event_limit(EventLimit::default()).unwrap();
        let reader = dataplane.take_event_reader().expect("a reader");
        assert!(dataplane.take_event_reader().is_none(), "one reader only");
        Self {
            dataplane,
            reader,
            _dirs: dirs,
        }
    }

    fn attach(&mut self, pod: &Pod, name: &str, policy: &Policy) -> AttachmentRecord {
        let netns = pod.netns.path();
        self.dataplane
            .attach(&AttachRequest {
                netns: &netns,
                ifname: &pod.ifname,
                owner: AttachmentOwner {
                    namespace: "infra".to_owned(),
                    pod: name.to_owned(),
                    network: "infra/storage".to_owned(),
                    container_id: "c0ffee".to_owned(),
                },
                policy: Some(policy),
                policy_source: Some(SOURCE),
            })
            .expect("attach")
    }

    /// `multus-agent explain` over this dataplane's pins and records.
    fn explain_command(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_multus-agent"))
            .arg("explain")
            .arg("--bpffs-dir")
            .arg(self._dirs.bpffs.path())
            .arg("--state-dir")
            .arg(self._dirs.state.path())
            .args(args)
            .env_remove("MULTUS_AGENT_CONFIG")
            .output()
            .unwrap()
    }

    /// `multus-agent explain infra/a -o json ARGS`, which must succeed.
    fn explain(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["infra/a", "-o", "json"];
        all.extend(args);
        let out = self.explain_command(&all);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Every event in the ring after a short settle, resolved against `record`.
    fn records(&mut self, record: &AttachmentRecord) -> Vec<DropRecord> {
        let boot = events::boot_time();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            self.reader.wait(Duration::from_millis(50)).unwrap();
            for ev in self.reader.drain() {
                assert_eq!(ev.attach_id, record.id, "an event of another attachment");
                out.push(events::resolve(&ev, Some(record), boot));
            }
        }
        out
    }
}

fn v4(pod: &Pod) -> IpAddr {
    IpAddr::V4(pod.ip4)
}

fn host(ip: Ipv4Addr) -> IpNet {
    IpNet::new(IpAddr::V4(ip), 32).unwrap()
}

fn send_udp(from: &Pod, src: IpAddr, to: SocketAddr, n: usize) -> u16 {
    let source = traffic::udp_socket(&from.netns, SocketAddr::new(src, 0));
    for _ in 0..n {
        // A drop on egress may come back as ENOBUFS; the events are what is checked.
        let _ = source.send_to(b"x", to);
    }
    source.local_addr().unwrap().port()
}

#[test]
fn a_deny_rule_drop_names_pod_five_tuple_and_rule() {
    if !require_root("a_deny_rule_drop_names_pod_five_tuple_and_rule") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut ev = Events::new();
    let policy = Policy {
        egress: DirectionPolicy::allow_by_default(vec![
            Rule::allow()
                .peer(host(b.ip4))
                .ports(Protocol::Tcp, PortRange::single(80)),
            Rule::deny()
                .peer(host(b.ip4))
                .ports(Protocol::Udp, PortRange::new(9000, 9999)),
        ]),
        ..Policy::default()
    };
    let record = ev.attach(a, "client", &policy);
    let sink = traffic::udp_socket(&b.netns, SocketAddr::new(v4(b), 9999));
    let sport = send_udp(a, v4(a), sink.local_addr().unwrap(), 3);
    assert_eq!(traffic::udp_count(&sink, Duration::from_millis(200)), 0);

    let records = ev.records(&record);
    assert_eq!(records.len(), 3, "{records:#?}");
    for r in &records {
        assert_eq!(
            (r.namespace.as_str(), r.pod.as_str(), r.network.as_str()),
            ("infra", "client", "infra/storage")
        );
        assert_eq!(r.interface, a.ifname);
        assert_eq!(r.direction, "egress");
        assert_eq!(r.reason, DropReason::PolicyDeny.label());
        assert!(!r.audit);
        assert_eq!(r.protocol, "udp");
        assert_eq!((r.src, r.dst), (Some(v4(a)), Some(v4(b))));
        assert_eq!((r.sport, r.dport), (Some(sport), Some(9999)));
        assert_eq!(r.len, 14 + 20 + 8 + 1);
        assert_eq!(r.rule, format!("{SOURCE_TEXT}: egress.rules[1] (deny)"));
    }
    let counts = ev.dataplane.event_counts(record.id).unwrap();
    assert_eq!((counts.emitted, counts.suppressed, counts.lost), (3, 0, 0));

    // A default deny names the direction's default; ping (ICMP echo, type 8 code 0).
    ev.dataplane
        .set_policy_from(
            record.id,
            &Policy {
                ingress: DirectionPolicy::deny_by_default(Vec::new()),
                ..Policy::default()
            },
            Some("mnp:infra/db-policy,infra/other"),
        )
        .unwrap();
    let record = ev.dataplane.attachment(record.id).unwrap();
    assert_eq!(b.ping(v4(a), 1), 0);
    let records = ev.records(&record);
    assert!(!records.is_empty());
    for r in &records {
        assert_eq!(r.direction, "ingress");
        assert_eq!(r.reason, DropReason::DefaultDeny.label());
        assert_eq!((r.src, r.dst), (Some(v4(b)), Some(v4(a))));
        assert_eq!(r.protocol, "icmp");
        assert_eq!(r.icmp, Some((8, 0)));
        assert_eq!(
            r.rule,
            "MultiNetworkPolicy infra/db-policy, infra/other: default deny (ingress)"
        );
    }
}

#[test]
fn an_anti_spoof_drop_names_the_forged_source() {
    if !require_root("an_anti_spoof_drop_names_the_forged_source") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut ev = Events::new();
    let policy = Policy {
        anti_spoof: Some(AntiSpoof {
            mac: a.mac.parse().unwrap(),
            ips: vec![v4(a)],
            router: false,
        }),
        ..Policy::default()
    };
    let record = ev.attach(a, "forger", &policy);
    a.netns
        .ip(&["addr", "add", "192.0.2.99/24", "dev", &a.ifname]);
    let spoofed = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
    let sink = traffic::udp_socket(&b.netns, SocketAddr::new(v4(b), 9999));
    let sport = send_udp(a, spoofed, sink.local_addr().unwrap(), 2);
    assert_eq!(traffic::udp_count(&sink, Duration::from_millis(200)), 0);

    let records: Vec<_> = ev
        .records(&record)
        .into_iter()
        .filter(|r| r.protocol == "udp")
        .collect();
    assert_eq!(records.len(), 2, "{records:#?}");
    for r in &records {
        assert_eq!((r.pod.as_str(), r.direction.as_str()), ("forger", "egress"));
        assert_eq!(r.reason, DropReason::Spoofed.label());
        assert_eq!((r.src, r.dst), (Some(spoofed), Some(v4(b))));
        assert_eq!((r.sport, r.dport), (Some(sport), Some(9999)));
        assert_eq!(
            r.rule,
            "antiSpoof: source 192.0.2.99 is not the interface's"
        );
    }
}

#[test]
fn audit_mode_reports_would_be_drops_as_audit_events() {
    if !require_root("audit_mode_reports_would_be_drops_as_audit_events") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut ev = Events::new();
    let policy = Policy {
        egress: DirectionPolicy::allow_by_default(vec![Rule::deny().peer(host(b.ip4))]),
        audit: true,
        ..Policy::default()
    };
    let record = ev.attach(a, "auditee", &policy);
    let sink = traffic::udp_socket(&b.netns, SocketAddr::new(v4(b), 7000));
    send_udp(a, v4(a), sink.local_addr().unwrap(), 2);
    assert_eq!(traffic::udp_count(&sink, Duration::from_millis(200)), 2);
    let records: Vec<_> = ev
        .records(&record)
        .into_iter()
        .filter(|r| r.protocol == "udp")
        .collect();
    assert_eq!(records.len(), 2, "{records:#?}");
    assert!(records.iter().all(|r| r.audit && r.dport == Some(7000)));
    assert!(
        records
            .iter()
            .all(|r| r.rule == format!("{SOURCE_TEXT}: egress.rules[0] (deny)"))
    );
}

#[test]
fn a_flood_emits_at_most_burst_plus_rate_and_counts_the_rest() {
    if !require_root("a_flood_emits_at_most_burst_plus_rate_and_counts_the_rest") {
        return;
    }
    const RATE: u32 = 50;
    const BURST: u32 = 20;
    const FLOOD: Duration = Duration::from_secs(1);
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut ev = Events::new();
    ev.dataplane
        .set_event_limit(EventLimit {
            rate: RATE,
            burst: BURST,
        })
        .unwrap();
    let policy = Policy {
        egress: DirectionPolicy::allow_by_default(vec![Rule::deny().peer(host(b.ip4))]),
        ..Policy::default()
    };
    let record = ev.attach(a, "flooder", &policy);
    let sink = traffic::udp_socket(&b.netns, SocketAddr::new(v4(b), 9999));
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < FLOOD {
        send_udp(a, v4(a), sink.local_addr().unwrap(), 1000);
        sent += 1000;
    }
    let elapsed = started.elapsed();
    let records = ev.records(&record);
    let counts = ev.dataplane.event_counts(record.id).unwrap();
    let drops = ev.dataplane.counters(record.id).unwrap().egress.dropped();
    assert!(drops >= sent, "{drops}");
    // The bucket starts full (BURST) and refills at RATE per second; CPUs racing for the same
    // token may each take it, at most once per CPU and refill.
    let cpus = std::thread::available_parallelism().unwrap().get() as f64;
    let allowed = f64::from(BURST) + f64::from(RATE) * elapsed.as_secs_f64() + cpus;
    assert!(
        (records.len() as f64) <= allowed,
        "{} events in {elapsed:?}, allowed {allowed}",
        records.len()
    );
    // The refill is seen too: more than the burst alone.
    assert!(
        records.len() as u32 >= BURST + RATE / 2,
        "{}",
        records.len()
    );
    assert_eq!(counts.emitted, records.len() as u64);
    assert_eq!(counts.lost, 0);
    assert_eq!(counts.emitted + counts.suppressed, drops, "{counts:?}");
    println!(
        "flood: {drops} drops in {elapsed:?}: {} events, {} suppressed",
        counts.emitted, counts.suppressed
    );

    // Rate zero: no events at all, nothing counted as suppressed.
    ev.dataplane
        .set_event_limit(EventLimit { rate: 0, burst: 0 })
        .unwrap();
    send_udp(a, v4(a), sink.local_addr().unwrap(), 10);
    assert!(ev.records(&record).is_empty());
    assert_eq!(ev.dataplane.event_counts(record.id).unwrap(), counts);
}

/// The network of the compiled-policy test: pods a and b (192.0.2.10 and .11) are inside its
/// subnet, 192.0.2.99 is not.
const STORAGE_CONFIG: &str = r#"{"cniVersion":"1.0.0","name":"storage","type":"macvlan",
  "ipam":{"type":"host-local","subnet":"192.0.2.8/30"}}"#;

/// Compiles `infra/a`'s policy on `infra/storage` from `snapshot` and installs it.
fn install_compiled(
    ev: &mut Events,
    snapshot: &Snapshot,
    local: &LocalAttachment,
    id: u32,
) -> AttachmentRecord {
    let compiled = compile_attachment(snapshot, local)
        .expect("compiles")
        .expect("a policy applies");
    ev.dataplane
        .set_policy_from(id, &compiled.policy, Some(&compiled.source.to_string()))
        .expect("install")
}

#[test]
fn compiled_policies_name_the_nad_rule_the_mnp_default_isolate_and_anti_spoofing() {
    use policy_fixture::{mnp, nad, pod};
    if !require_root(
        "compiled_policies_name_the_nad_rule_the_mnp_default_isolate_and_anti_spoofing",
    ) {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut ev = Events::new();
    let record = ev.attach(a, "a", &Policy::default());
    let mut snapshot = Snapshot::new();
    snapshot.upsert_namespace(NamespaceView {
        name: "infra".to_owned(),
        labels: Default::default(),
    });
    let (a_ip, b_ip) = (a.ip4.to_string(), b.ip4.to_string());
    for (name, ip) in [("infra/a", &a_ip), ("infra/b", &b_ip)] {
        snapshot.upsert_pod(pod(
            name,
            &[("app", "db")],
            &[],
            &[("infra/storage", &[ip.as_str()])],
        ));
    }
    let local = LocalAttachment {
        pod: policy_fixture::key("infra/a"),
        interface: a.ifname.clone(),
        network: policy_fixture::key("infra/storage"),
        ips: vec![v4(a)],
        mac: a.mac.parse().unwrap(),
    };

    // A deny rule of the NAD's annotation.
    let annotation = format!("egress: {{deny: [{{to: {b_ip}, ports: udp/9000-9999}}]}}");
    snapshot.upsert_nad(nad("infra/storage", STORAGE_CONFIG, Some(&annotation)));
    let record = install_compiled(&mut ev, &snapshot, &local, record.id);
    let sink = traffic::udp_socket(&b.netns, SocketAddr::new(v4(b), 9999));
    let sport = send_udp(a, v4(a), sink.local_addr().unwrap(), 2);
    let records = ev.records(&record);
    assert_eq!(records.len(), 2, "{records:#?}");
    for r in &records {
        assert_eq!((r.pod.as_str(), r.direction.as_str()), ("a", "egress"));
        assert_eq!(r.reason, DropReason::PolicyDeny.label());
        assert_eq!(
            (r.protocol.as_str(), r.src, r.dst),
            ("udp", Some(v4(a)), Some(v4(b)))
        );
        assert_eq!((r.sport, r.dport), (Some(sport), Some(9999)));
        assert_eq!(
            r.rule,
            "NetworkAttachmentDefinition infra/storage: egress.deny[0]"
        );
    }

    // A MultiNetworkPolicy's default deny, over the same NAD: only the policy that isolates
    // ingress is named.
    snapshot.upsert_mnp(&mnp(
        "infra/db-policy",
        Some("infra/storage"),
        "{podSelector: {matchLabels: {app: db}}, policyTypes: [Ingress], ingress: [{ports: [{port: 5432}]}]}",
    ));
    let record = install_compiled(&mut ev, &snapshot, &local, record.id);
    let source = record.policy_source.clone().unwrap();
    assert_eq!(source, "nad:infra/storage+mnp:infra/db-policy");
    let sink_a = traffic::udp_socket(&a.netns, SocketAddr::new(v4(a), 5432));
    let sport = send_udp(b, v4(b), sink_a.local_addr().unwrap(), 1);
    let records = ev.records(&record);
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!((r.pod.as_str(), r.direction.as_str()), ("a", "ingress"));
    assert_eq!(r.reason, DropReason::DefaultDeny.label());
    assert_eq!(
        (r.protocol.as_str(), r.src, r.dst),
        ("udp", Some(v4(b)), Some(v4(a)))
    );
    assert_eq!((r.sport, r.dport), (Some(sport), Some(5432)));
    assert_eq!(
        r.rule,
        "MultiNetworkPolicy infra/db-policy: default deny (ingress)"
    );

    // `explain` says the same from the pins and records, and names the rules that pass.
    let b_peer = b_ip.as_str();
    let said = ev.explain(&[
        "--direction",
        "ingress",
        "--peer",
        b_peer,
        "--protocol",
        "udp",
        "--port",
        "5432",
    ]);
    assert_eq!(
        (said["verdict"].as_str(), said["reason"].as_str()),
        (Some("drop"), Some("default_deny"))
    );
    assert_eq!(
        said["rule"],
        "MultiNetworkPolicy infra/db-policy: default deny (ingress)"
    );
    assert_eq!(said["source"], "nad:infra/storage+mnp:infra/db-policy");
    let said = ev.explain(&[
        "--direction",
        "ingress",
        "--peer",
        b_peer,
        "--protocol",
        "tcp",
        "--port",
        "5432",
    ]);
    assert_eq!(
        (said["verdict"].as_str(), said["reason"].as_str()),
        (Some("pass"), None)
    );
    assert_eq!(
        said["rule"],
        "MultiNetworkPolicy infra/db-policy: ingress[0]"
    );
    let said = ev.explain(&[
        "--direction",
        "egress",
        "--peer",
        b_peer,
        "--protocol",
        "udp",
        "--port",
        "9000",
    ]);
    assert_eq!(
        (said["verdict"].as_str(), said["reason"].as_str()),
        (Some("drop"), Some("policy_deny"))
    );
    assert_eq!(
        said["rule"],
        "NetworkAttachmentDefinition infra/storage: egress.deny[0]"
    );
    let said = ev.explain(&[
        "--direction",
        "egress",
        "--peer",
        b_peer,
        "--protocol",
        "udp",
        "--port",
        "8999",
    ]);
    assert_eq!(said["verdict"], "pass");
    assert_eq!(
        said["rule"],
        "NetworkAttachmentDefinition infra/storage + MultiNetworkPolicy infra/db-policy: \
         default allow (egress)"
    );
    let unknown = ev.explain_command(&[
        "infra/nobody",
        "--direction",
        "egress",
        "--peer",
        b_peer,
        "--protocol",
        "icmp",
    ]);
    assert!(!unknown.status.success());
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        stderr.contains("no attachment of pod infra/nobody"),
        "{stderr}"
    );
    // A record that no longer says what the trie holds is reported, not papered over.
    let path = ev._dirs.layout().record(record.id);
    let mut tampered = record.clone();
    if let Some(p) = tampered.policy.as_mut() {
        p.egress.rules.clear();
    }
    tampered.save(&path).unwrap();
    let out = ev.explain_command(&[
        "infra/a",
        "--direction",
        "egress",
        "--peer",
        b_peer,
        "--protocol",
        "udp",
        "--port",
        "9000",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr.contains("disagree"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("DROP (policy_deny)"));
    record.save(&path).unwrap();

    // isolate: a peer outside the network's subnet; antiSpoof: a source not the pod's.
    snapshot.remove_mnp(&policy_fixture::key("infra/db-policy"));
    snapshot.upsert_nad(nad(
        "infra/storage",
        STORAGE_CONFIG,
        Some("isolate: true\nantiSpoof: true"),
    ));
    let record = install_compiled(&mut ev, &snapshot, &local, record.id);
    b.netns
        .ip(&["addr", "add", "192.0.2.99/24", "dev", &b.ifname]);
    let outside = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
    let sport = send_udp(b, outside, sink_a.local_addr().unwrap(), 1);
    let records: Vec<_> = ev
        .records(&record)
        .into_iter()
        .filter(|r| r.protocol == "udp")
        .collect();
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!(
        (r.direction.as_str(), r.src, r.dst),
        ("ingress", Some(outside), Some(v4(a)))
    );
    assert_eq!((r.sport, r.dport), (Some(sport), Some(5432)));
    assert_eq!(r.reason, DropReason::PolicyDeny.label());
    assert_eq!(r.rule, "NetworkAttachmentDefinition infra/storage: isolate");

    a.netns
        .ip(&["addr", "add", "192.0.2.98/24", "dev", &a.ifname]);
    let forged = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 98));
    let sport = send_udp(a, forged, sink.local_addr().unwrap(), 1);
    let records: Vec<_> = ev
        .records(&record)
        .into_iter()
        .filter(|r| r.protocol == "udp")
        .collect();
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!(
        (r.direction.as_str(), r.src, r.dst),
        ("egress", Some(forged), Some(v4(b)))
    );
    assert_eq!((r.sport, r.dport), (Some(sport), Some(9999)));
    assert_eq!(r.reason, DropReason::Spoofed.label());
    assert_eq!(
        r.rule,
        "antiSpoof: source 192.0.2.98 is not the interface's"
    );
}

#[test]
fn a_full_ring_counts_lost_events_and_the_metrics_show_them() {
    if !require_root("a_full_ring_counts_lost_events_and_the_metrics_show_them") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let dirs = Dirs::new();
    let mut dataplane = dirs.load(AttachMode::Tcx);
    // No rate limit to speak of: every drop wants an event, and nobody reads the ring yet.
    dataplane
        .set_event_limit(EventLimit {
            rate: 10_000_000,
            burst: 1_000_000,
        })
        .unwrap();
    let reader = dataplane.take_event_reader().expect("a reader");
    let policy = Policy {
        egress: DirectionPolicy::allow_by_default(vec![Rule::deny().peer(host(b.ip4))]),
        ..Policy::default()
    };
    let netns = a.netns.path();
    let id = dataplane
        .attach(&AttachRequest {
            netns: &netns,
            ifname: &a.ifname,
            owner: AttachmentOwner::default(),
            policy: Some(&policy),
            policy_source: Some(SOURCE),
        })
        .unwrap()
        .id;
    let sink = traffic::udp_socket(&b.netns, SocketAddr::new(v4(b), 9999));
    // The ring holds 1 MiB of 72-byte events with their 8-byte headers: about 13,000.
    let ring_events = u64::from(multus_common::EVENT_RING_BYTES) / 80;
    let mut sent = 0;
    while sent < 4 * ring_events {
        send_udp(a, v4(a), sink.local_addr().unwrap(), 1000);
        sent += 1000;
    }
    let counts = dataplane.event_counts(id).unwrap();
    let drops = dataplane.counters(id).unwrap().egress.dropped();
    assert!(counts.lost > 0, "{counts:?}");
    assert!(counts.emitted <= ring_events + 1, "{counts:?}");
    assert_eq!(
        counts.emitted + counts.suppressed + counts.lost,
        drops,
        "{counts:?}"
    );

    // The agent's reader drains what the ring holds and carries the lost count to the metrics.
    let metrics = multus_agent::metrics::AgentMetrics::default();
    let log = std::sync::Arc::new(events::EventLog::new(100_000));
    multus_agent::observe::spawn_reader(
        reader,
        dirs.layout(),
        std::sync::Arc::clone(&log),
        metrics.clone(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while metrics.drop_event_totals().2 < counts.lost && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let (emitted, _, lost) = metrics.drop_event_totals();
    assert_eq!(lost, counts.lost);
    assert_eq!(emitted, counts.emitted);
    assert_eq!(log.select(|_| true, None).len() as u64, counts.emitted);
    println!(
        "full ring: {drops} drops, {} events, {} lost",
        counts.emitted, counts.lost
    );
}
