//! Root tests of policy enforcement: real programs on macvlan interfaces of test namespaces, real
//! traffic (ping, TCP, UDP, hand-built frames), exact drop counters, and nothing left behind.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::common;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Dirs, Fixture, PING_FRAME, connects, tc_programs};
use ipnet::IpNet;
use multus_agent::dataplane::Dataplane;
use multus_agent::dataplane::{
    AntiSpoof, AttachMode, DataplaneError, DirectionPolicy, DropReason, InterfaceCounters, Policy,
    PortRange, Protocol, Rule,
};
use multus_testkit::{
    MacvlanPods, PacketTap, Ping, Pod, require_root,
    traffic::{self, TcpServer, Udp4},
};

fn host(ip: Ipv4Addr) -> IpNet {
    IpNet::new(IpAddr::V4(ip), 32).unwrap()
}

fn cidr(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn v4(pod: &Pod) -> IpAddr {
    IpAddr::V4(pod.ip4)
}

fn egress(policy: DirectionPolicy) -> Policy {
    Policy {
        egress: policy,
        ..Policy::default()
    }
}

fn ingress(policy: DirectionPolicy) -> Policy {
    Policy {
        ingress: policy,
        ..Policy::default()
    }
}

/// Every counter of `later` is at least the one of `earlier`.
fn never_backwards(earlier: &InterfaceCounters, later: &InterfaceCounters) -> bool {
    let dir = |a: &multus_agent::dataplane::DirectionCounters,
               b: &multus_agent::dataplane::DirectionCounters| {
        a.packets <= b.packets
            && a.bytes <= b.bytes
            && a.drop_packets
                .iter()
                .zip(&b.drop_packets)
                .all(|(x, y)| x <= y)
            && a.drop_bytes.iter().zip(&b.drop_bytes).all(|(x, y)| x <= y)
    };
    dir(&earlier.ingress, &later.ingress) && dir(&earlier.egress, &later.egress)
}

#[test]
fn a_denied_cidr_blocks_ping_and_counts_every_drop() {
    if !require_root("a_denied_cidr_blocks_ping_and_counts_every_drop") {
        return;
    }
    const N: u64 = 10;
    let net = MacvlanPods::new(3);
    let (a, b, c) = (&net.pods[0], &net.pods[1], &net.pods[2]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let deny_b = egress(DirectionPolicy::allow_by_default(vec![
        Rule::deny().peer(host(b.ip4)),
    ]));
    let id = fx.attach(a, Some(&deny_b));

    assert_eq!(a.ping(v4(b), N as u32), 0, "the denied peer answered");
    // ping resends a probe the kernel refused (ENOBUFS), so it may try more than N times: every
    // echo request the program saw was dropped, and nothing came back.
    let after = fx.counters(id);
    let seen = after.egress.packets;
    assert!(seen >= N, "{after:?}");
    assert_eq!(
        after.egress.drops(DropReason::PolicyDeny),
        (seen, seen * PING_FRAME)
    );
    assert_eq!(after.egress.dropped(), seen, "{after:?}");
    assert_eq!(after.ingress.packets, 0, "no reply can come back");

    // UDP does not retry: the drop counter rises by exactly the datagrams sent.
    let sink = traffic::udp_socket(&b.netns, SocketAddr::new(v4(b), 9999));
    let source = traffic::udp_socket(&a.netns, SocketAddr::new(v4(a), 0));
    for _ in 0..N {
        source.send_to(b"x", sink.local_addr().unwrap()).unwrap();
    }
    assert_eq!(traffic::udp_count(&sink, Duration::from_millis(200)), 0);
    let udp_frame = 14 + 20 + 8 + 1;
    assert_eq!(
        fx.counters(id).egress.drops(DropReason::PolicyDeny),
        (seen + N, seen * PING_FRAME + N * udp_frame)
    );
    assert_eq!(a.ping(v4(c), 3), 3, "other peers are not affected");

    // Replaced in place: the same attachment now lets the peer through.
    let before = fx.dataplane.policy_generation(id).unwrap();
    fx.dataplane
        .set_policy(id, &egress(DirectionPolicy::allow_by_default(Vec::new())))
        .unwrap();
    assert_ne!(fx.dataplane.policy_generation(id).unwrap(), before);
    assert_eq!(a.ping(v4(b), 3), 3);
    assert_eq!(fx.counters(id).egress.dropped(), seen + N, "no new drops");

    // Cleared: counting only.
    fx.dataplane.clear_policy(id).unwrap();
    assert_eq!(fx.dataplane.policy_generation(id).unwrap(), None);
    assert!(fx.dataplane.attachment(id).unwrap().policy.is_none());
    assert_eq!(a.ping(v4(b), 2), 2);
}

#[test]
fn an_ingress_deny_counts_on_the_receiving_side() {
    if !require_root("an_ingress_deny_counts_on_the_receiving_side") {
        return;
    }
    const N: u64 = 7;
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut fx = Fixture::new(AttachMode::Clsact);
    let policy = ingress(DirectionPolicy::allow_by_default(vec![
        Rule::deny()
            .peer(cidr("192.0.2.0/28"))
            .protocol(Protocol::Icmp),
    ]));
    let id = fx.attach(b, Some(&policy));
    assert_eq!(a.ping(v4(b), N as u32), 0);
    let counters = fx.counters(id);
    assert_eq!(counters.ingress.packets, N);
    assert_eq!(
        counters.ingress.drops(DropReason::PolicyDeny),
        (N, N * PING_FRAME)
    );
    assert_eq!(counters.egress.packets, 0);
}

#[test]
fn only_tcp_port_80_is_allowed_in() {
    if !require_root("only_tcp_port_80_is_allowed_in") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let policy = ingress(DirectionPolicy::deny_by_default(vec![
        Rule::allow().ports(Protocol::Tcp, PortRange::single(80)),
    ]));
    let id = fx.attach(b, Some(&policy));
    let port80 = TcpServer::start(&b.netns, SocketAddr::new(v4(b), 80));
    let port81 = TcpServer::start(&b.netns, SocketAddr::new(v4(b), 81));
    let tap = PacketTap::start(&b.netns, &b.ifname);

    let sent = traffic::tcp_transfer(&a.netns, port80.addr(), 100_000, Duration::from_secs(5))
        .expect("port 80 must be reachable");
    assert_eq!(sent, 100_000);
    assert!(!connects(a, port81.addr()), "port 81 must be blocked");

    // The tap sees received frames before TC ingress: every frame to port 81 it saw was dropped,
    // and nothing else was.
    let frames = tap.finish(Duration::from_millis(200));
    let to_81 = frames
        .iter()
        .filter(|f| !f.outgoing && f.ipv4_ports().is_some_and(|(p, _, d)| p == 6 && d == 81))
        .collect::<Vec<_>>();
    assert!(!to_81.is_empty());
    let counters = fx.counters(id);
    assert_eq!(
        counters.ingress.drops(DropReason::DefaultDeny),
        (to_81.len() as u64, to_81.iter().map(|f| f.len as u64).sum()),
        "{counters:?}"
    );
    assert_eq!(counters.ingress.dropped(), to_81.len() as u64);
}

#[test]
fn ingress_default_deny_lets_replies_to_own_connections_in() {
    if !require_root("ingress_default_deny_lets_replies_to_own_connections_in") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    // No static neighbours: ARP has to get through the default deny too.
    a.forget_neighbours();
    b.forget_neighbours();
    let mut fx = Fixture::new(AttachMode::Tcx);
    let policy = ingress(DirectionPolicy::deny_by_default(Vec::new()));
    let id = fx.attach(a, Some(&policy));
    let server_b = TcpServer::start(&b.netns, SocketAddr::new(v4(b), 8080));
    let server_a = TcpServer::start(&a.netns, SocketAddr::new(v4(a), 8080));

    assert_eq!(
        traffic::tcp_transfer(&a.netns, server_b.addr(), 50_000, Duration::from_secs(5)).unwrap(),
        50_000,
        "replies of the pod's own connection must come in"
    );
    assert_eq!(a.ping(v4(b), 3), 3, "echo replies must come in");
    assert!(fx.dataplane.flows(id).unwrap() >= 2);
    assert!(!connects(b, server_a.addr()), "new connections in must not");
    assert_eq!(b.ping(v4(a), 2), 0);
    assert!(fx.counters(id).ingress.drops(DropReason::DefaultDeny).0 >= 3);
}

#[test]
fn ipv6_works_under_a_policy_naming_only_ipv4_peers() {
    if !require_root("ipv6_works_under_a_policy_naming_only_ipv4_peers") {
        return;
    }
    let net = MacvlanPods::dual_stack(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let policy = ingress(DirectionPolicy::deny_by_default(vec![
        Rule::allow()
            .peer(cidr("192.0.2.0/24"))
            .protocol(Protocol::Tcp),
    ]));
    let id = fx.attach(a, Some(&policy));
    let b6 = IpAddr::V6(b.ip6);
    let a6 = IpAddr::V6(a.ip6);
    let server_b = TcpServer::start(&b.netns, SocketAddr::new(b6, 8080));
    let server_a6 = TcpServer::start(&a.netns, SocketAddr::new(a6, 8080));
    let server_a4 = TcpServer::start(&a.netns, SocketAddr::new(v4(a), 8080));

    // Neighbour discovery has to pass A's default deny both ways for any of this to work.
    assert_eq!(a.ping(b6, 3), 3, "IPv6 ping out (and its replies in)");
    assert_eq!(
        traffic::tcp_transfer(&a.netns, server_b.addr(), 20_000, Duration::from_secs(5)).unwrap(),
        20_000
    );
    assert!(
        connects(b, server_a4.addr()),
        "the named IPv4 peers reach TCP"
    );
    assert!(!connects(b, server_a6.addr()), "IPv6 peers are not named");
    assert_eq!(b.ping(a6, 2), 0);
    let neighbours = a.netns.ip(&["-6", "neigh", "show", "dev", &a.ifname]);
    assert!(neighbours.contains(&b.ip6.to_string()), "{neighbours}");
    assert!(fx.counters(id).ingress.drops(DropReason::DefaultDeny).0 >= 3);
}

#[test]
fn deny_wins_over_a_broader_allow_and_excepts_cut_holes() {
    if !require_root("deny_wins_over_a_broader_allow_and_excepts_cut_holes") {
        return;
    }
    let net = MacvlanPods::new(3);
    let (a, b, c) = (&net.pods[0], &net.pods[1], &net.pods[2]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    // b is 192.0.2.11 (inside the /28), c is 192.0.2.12 (excepted).
    let policy = egress(DirectionPolicy::deny_by_default(vec![
        Rule::allow().peer_except(cidr("192.0.2.0/24"), vec![host(c.ip4)]),
        Rule::deny()
            .peer(cidr("192.0.2.0/28"))
            .ports(Protocol::Tcp, PortRange::single(22)),
    ]));
    let id = fx.attach(a, Some(&policy));
    let web = TcpServer::start(&b.netns, SocketAddr::new(v4(b), 80));
    let ssh = TcpServer::start(&b.netns, SocketAddr::new(v4(b), 22));
    let c_web = TcpServer::start(&c.netns, SocketAddr::new(v4(c), 80));

    assert!(connects(a, web.addr()), "allowed by the /24");
    assert!(!connects(a, ssh.addr()), "the /28 deny on port 22 wins");
    assert_eq!(a.ping(v4(b), 2), 2);
    assert!(!connects(a, c_web.addr()), "excepted from the allow");
    assert_eq!(a.ping(v4(c), 2), 0);
    let counters = fx.counters(id);
    assert!(counters.egress.drops(DropReason::PolicyDeny).0 >= 1);
    assert!(counters.egress.drops(DropReason::DefaultDeny).0 >= 3);
}

#[test]
fn anti_spoofing_drops_forged_sources() {
    if !require_root("anti_spoofing_drops_forged_sources") {
        return;
    }
    const N: u64 = 5;
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let policy = Policy {
        anti_spoof: Some(AntiSpoof {
            mac: a.mac.parse().unwrap(),
            ips: vec![v4(a)],
            router: false,
        }),
        ..Policy::default()
    };
    let id = fx.attach(a, Some(&policy));
    assert_eq!(a.ping(v4(b), 3), 3, "the pod's own address passes");

    // An address the policy does not know about.
    a.netns
        .ip(&["addr", "add", "192.0.2.99/24", "dev", &a.ifname]);
    let spoofed = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
    assert_eq!(a.ping_from(v4(b), 2, spoofed), 0);
    let before = fx.counters(id).egress.drops(DropReason::Spoofed).0;
    assert!(before >= 2);
    let sink = traffic::udp_socket(&b.netns, SocketAddr::new(v4(b), 9999));
    let source = traffic::udp_socket(&a.netns, SocketAddr::new(spoofed, 0));
    for _ in 0..N {
        source.send_to(b"x", sink.local_addr().unwrap()).unwrap();
    }
    assert_eq!(traffic::udp_count(&sink, Duration::from_millis(200)), 0);
    assert_eq!(
        fx.counters(id).egress.drops(DropReason::Spoofed).0,
        before + N
    );

    // Hand-built frames: only the one with both the right MAC and address arrives.
    let honest = Udp4 {
        src_mac: traffic::parse_mac(&a.mac),
        dst_mac: traffic::parse_mac(&b.mac),
        src: a.ip4,
        dst: b.ip4,
        sport: 4000,
        dport: 9999,
    };
    let forged_ip = Udp4 {
        src: Ipv4Addr::new(192, 0, 2, 98),
        ..honest
    };
    let forged_mac = Udp4 {
        src_mac: [0x02, 0, 0, 0, 0x99, 0x99],
        ..honest
    };
    traffic::send_frame(&a.netns, &a.ifname, &honest.frame(b"multus")).unwrap();
    for frame in [forged_ip, forged_mac] {
        // The kernel reports the drop to the sender (ENOBUFS); the counters are what we check.
        let _ = traffic::send_frame(&a.netns, &a.ifname, &frame.frame(b"multus"));
    }
    assert_eq!(traffic::udp_count(&sink, Duration::from_millis(300)), 1);
    assert_eq!(
        fx.counters(id).egress.drops(DropReason::Spoofed).0,
        before + N + 2
    );
}

#[test]
fn audit_mode_passes_everything_and_counts_would_be_drops() {
    if !require_root("audit_mode_passes_everything_and_counts_would_be_drops") {
        return;
    }
    const N: u64 = 6;
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let policy = Policy {
        egress: DirectionPolicy::deny_by_default(Vec::new()),
        ingress: DirectionPolicy::allow_by_default(vec![Rule::deny().peer(host(b.ip4))]),
        audit: true,
        anti_spoof: None,
    };
    let id = fx.attach(a, Some(&policy));
    assert_eq!(
        a.ping(v4(b), N as u32),
        N as u32,
        "audit mode drops nothing"
    );
    let counters = fx.counters(id);
    assert_eq!(
        counters.egress.audited(DropReason::DefaultDeny),
        (N, N * PING_FRAME)
    );
    assert_eq!(
        counters.ingress.audited(DropReason::PolicyDeny),
        (N, N * PING_FRAME)
    );
    assert_eq!(counters.egress.dropped() + counters.ingress.dropped(), 0);
}

#[test]
fn a_new_loader_keeps_enforcing_while_a_denied_flow_runs() {
    if !require_root("a_new_loader_keeps_enforcing_while_a_denied_flow_runs") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let dirs = Dirs::new();
    let mut first = dirs.load(AttachMode::Tcx);
    let policy = egress(DirectionPolicy::allow_by_default(vec![
        Rule::deny()
            .peer(host(b.ip4))
            .ports(Protocol::Udp, PortRange::single(9999)),
    ]));
    let id = common::attach(&mut first, a, Some(&policy));
    let sink = traffic::udp_socket(&b.netns, SocketAddr::new(v4(b), 9999));
    let tap = PacketTap::start(&b.netns, &b.ifname);

    // A steady denied flow from a thread, while loaders come and go.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let socket = traffic::udp_socket(&a.netns, SocketAddr::new(v4(a), 0));
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        let dst = SocketAddr::new(v4(b), 9999);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if socket.send_to(b"denied", dst).is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    let mut samples = Vec::new();
    let mut sample = |dp: &Dataplane, for_: Duration| {
        let until = Instant::now() + for_;
        while Instant::now() < until {
            samples.push(dp.counters(id).unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    sample(&first, Duration::from_millis(200));
    // No loader at all for a while: the pinned links and maps keep enforcing.
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    let second = dirs.load(AttachMode::Tcx);
    sample(&second, Duration::from_millis(200));
    // A third loader swaps its programs in while the second still runs.
    let third = dirs.load(AttachMode::Tcx);
    drop(second);
    sample(&third, Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let last = third.counters(id).unwrap();
    samples.push(last);

    assert_eq!(traffic::udp_count(&sink, Duration::from_millis(200)), 0);
    let leaked = tap
        .finish(Duration::from_millis(100))
        .iter()
        .filter(|f| f.ipv4_ports().is_some_and(|(p, _, d)| p == 17 && d == 9999))
        .count();
    assert_eq!(leaked, 0, "frames of the denied flow reached the peer");
    for pair in samples.windows(2) {
        assert!(never_backwards(&pair[0], &pair[1]), "{pair:?}");
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent > 300, "the flow ran ({sent} datagrams)");
    assert_eq!(last.egress.drops(DropReason::PolicyDeny).0, sent);
    assert_eq!(last.egress.dropped(), sent);
    let mut third = third;
    third.detach(id).unwrap();
}

#[test]
fn a_policy_swap_is_atomic_for_the_packets() {
    if !require_root("a_policy_swap_is_atomic_for_the_packets") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    // Both policies allow b, in opposite ways: a packet that saw the defaults of one and the rules
    // of the other would be dropped.
    let open = egress(DirectionPolicy::allow_by_default(vec![
        Rule::deny().peer(cidr("198.51.100.0/24")),
    ]));
    let closed = egress(DirectionPolicy::deny_by_default(vec![
        Rule::allow().peer(host(b.ip4)),
    ]));
    let id = fx.attach(a, Some(&open));
    let stop = Arc::new(AtomicBool::new(false));
    let flips = std::thread::scope(|scope| {
        let pinger = scope.spawn(|| {
            let out = Ping::new(&a.netns, &b.ip4, 400)
                .interval("0.002")
                .output()
                .unwrap();
            stop.store(true, Ordering::Relaxed);
            out
        });
        let mut flips = 0;
        while !stop.load(Ordering::Relaxed) {
            let next = if flips % 2 == 0 { &closed } else { &open };
            fx.dataplane.set_policy(id, next).unwrap();
            flips += 1;
        }
        let out = pinger.join().unwrap();
        assert!(out.contains("400 received"), "{out}");
        flips
    });
    assert!(flips >= 20, "only {flips} policy swaps happened");
    assert_eq!(fx.counters(id).egress.dropped(), 0);
}

#[test]
fn arp_passes_unless_a_rule_denies_it() {
    if !require_root("arp_passes_unless_a_rule_denies_it") {
        return;
    }
    let net = MacvlanPods::new(3);
    let (a, b, c) = (&net.pods[0], &net.pods[1], &net.pods[2]);
    for pod in &net.pods {
        pod.forget_neighbours();
    }
    let mut fx = Fixture::new(AttachMode::Tcx);
    let policy = ingress(DirectionPolicy::allow_by_default(vec![
        Rule::deny().peer(host(b.ip4)).protocol(Protocol::Arp),
    ]));
    let id = fx.attach(a, Some(&policy));
    assert_eq!(c.ping(v4(a), 2), 2, "ARP from others passes");
    assert_eq!(b.ping(v4(a), 1), 0, "b cannot resolve a");
    let drops = fx.counters(id).ingress.drops(DropReason::PolicyDeny).0;
    assert!(drops >= 1, "ARP requests of b dropped: {drops}");
    let neighbours = b.netns.ip(&["neigh", "show", "dev", &b.ifname]);
    assert!(!neighbours.contains("lladdr"), "{neighbours}");
}

#[test]
fn an_invalid_policy_changes_nothing() {
    if !require_root("an_invalid_policy_changes_nothing") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let good = egress(DirectionPolicy::allow_by_default(vec![
        Rule::deny().peer(host(b.ip4)),
    ]));
    let id = fx.attach(a, Some(&good));
    let generation = fx.dataplane.policy_generation(id).unwrap();
    let bad = egress(DirectionPolicy::allow_by_default(vec![
        Rule::deny().peer_except(cidr("192.0.2.0/28"), vec![cidr("198.51.100.0/24")]),
    ]));
    let err = fx.dataplane.set_policy(id, &bad).unwrap_err();
    assert!(matches!(err, DataplaneError::Policy(_)), "{err}");
    assert!(err.to_string().contains("198.51.100.0/24"), "{err}");
    assert_eq!(fx.dataplane.policy_generation(id).unwrap(), generation);
    assert_eq!(fx.dataplane.attachment(id).unwrap().policy, Some(good));
    assert_eq!(a.ping(v4(b), 2), 0, "the old policy still holds");

    // Attaching with an invalid policy fails before anything is attached.
    let err = fx.attach_err(b, &bad);
    assert!(matches!(err, DataplaneError::Policy(_)), "{err}");
    assert!(!tc_programs(b).contains("multus"));
    assert_eq!(fx.dataplane.attachments().unwrap().len(), 1);
}

#[test]
fn detach_leaves_no_pin_entry_policy_flow_or_link() {
    if !require_root("detach_leaves_no_pin_entry_policy_flow_or_link") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    for mode in [AttachMode::Tcx, AttachMode::Clsact] {
        let mut fx = Fixture::new(mode);
        let policy = ingress(DirectionPolicy::deny_by_default(Vec::new()));
        let id = fx.attach(a, Some(&policy));
        assert_eq!(a.ping(v4(b), 2), 2);
        assert!(fx.dataplane.flows(id).unwrap() > 0);
        assert!(fx.dataplane.policy_generation(id).unwrap().is_some());

        fx.dataplane.detach(id).unwrap();
        assert!(
            !tc_programs(a).contains("multus"),
            "{mode}: {}",
            tc_programs(a)
        );
        let pins = fx.dirs.link_pins();
        assert!(pins.is_empty(), "{mode}: {pins:?}");
        assert!(fx.dataplane.attached_ids().unwrap().is_empty());
        assert_eq!(fx.dataplane.policy_generation(id).unwrap(), None);
        assert_eq!(fx.dataplane.flows(id).unwrap(), 0);
        assert!(fx.dataplane.attachments().unwrap().is_empty());
        assert!(matches!(
            fx.dataplane.detach(id),
            Err(DataplaneError::UnknownAttachment(_))
        ));
    }
}

#[test]
fn gc_removes_attachments_whose_namespace_is_gone() {
    if !require_root("gc_removes_attachments_whose_namespace_is_gone") {
        return;
    }
    let mut net = MacvlanPods::new(3);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let policy = ingress(DirectionPolicy::deny_by_default(Vec::new()));
    let keep = fx.attach(&net.pods[0], Some(&policy));
    let gone = fx.attach(&net.pods[1], Some(&policy));
    let gone_clsact = {
        let mut other = Dataplane::load(fx.layout(), AttachMode::Clsact).unwrap().0;
        common::attach(&mut other, &net.pods[2], Some(&policy))
    };
    assert_eq!(net.pods[1].ping(v4(&net.pods[0]), 1), 0);
    assert!(fx.dataplane.gc().removed.is_empty(), "everything is alive");

    // The pods' namespaces go away without anyone detaching.
    net.pods.truncate(1);
    let report = fx.dataplane.gc();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.removed, vec![gone, gone_clsact]);
    let ids: Vec<u32> = fx
        .dataplane
        .attachments()
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec![keep]);
    assert_eq!(
        fx.dataplane
            .attached_ids()
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![keep]
    );
    for id in [gone, gone_clsact] {
        assert_eq!(fx.dataplane.policy_generation(id).unwrap(), None);
    }
    let pins = fx.dirs.link_pins();
    let prefix = format!("links/{keep}/");
    assert!(pins.iter().all(|p| p.starts_with(&prefix)), "{pins:?}");
    // The survivor still enforces.
    let a = &net.pods[0];
    assert!(fx.dataplane.policy_generation(keep).unwrap().is_some());
    assert!(tc_programs(a).contains("multus_ingress"));
    assert!(fx.dataplane.gc().removed.is_empty());
}

#[test]
fn icmp_errors_about_own_flows_come_in_and_others_do_not() {
    if !require_root("icmp_errors_about_own_flows_come_in_and_others_do_not") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let id = fx.attach(
        a,
        Some(&ingress(DirectionPolicy::deny_by_default(Vec::new()))),
    );

    // Nothing listens on b's port 9999: b's kernel answers "port unreachable", which must reach
    // the connected socket through the default deny.
    let socket = traffic::udp_socket(&a.netns, SocketAddr::new(v4(a), 0));
    socket.connect(SocketAddr::new(v4(b), 9999)).unwrap();
    socket.send(b"anyone?").unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 16];
    let refused = loop {
        match socket.recv(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break true,
            _ if Instant::now() > deadline => break false,
            _ => {}
        }
    };
    assert!(
        refused,
        "the ICMP error about the pod's own flow was dropped"
    );
    let before = fx.counters(id).ingress;
    assert_eq!(before.dropped(), 0, "{before:?}");

    // An error quoting a flow the pod never had is subject to the rules.
    let quoted = Udp4 {
        src_mac: traffic::parse_mac(&a.mac),
        dst_mac: traffic::parse_mac(&b.mac),
        src: a.ip4,
        dst: b.ip4,
        sport: 1111,
        dport: 2222,
    }
    .frame(b"");
    let forged = traffic::icmp4_error_frame(
        (traffic::parse_mac(&b.mac), traffic::parse_mac(&a.mac)),
        b.ip4,
        a.ip4,
        (3, 3),
        &quoted[14..],
    );
    traffic::send_frame(&b.netns, &b.ifname, &forged).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while fx.counters(id).ingress.dropped() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = fx.counters(id).ingress;
    assert_eq!(after.drops(DropReason::DefaultDeny).0, 1, "{after:?}");
}
