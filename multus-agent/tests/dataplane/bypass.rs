//! Root tests for the ways around a policy and the traffic a policy wrongly lost: IPv6
//! extension header chains, ARP of another hardware type, neighbour discovery spoofing and rogue
//! router advertisements, fragmented datagrams, flows across a policy change, and the per-CPU
//! shortcut for flows that have just passed (which must not outlive a policy change, carry a
//! forged MAC or skip an audit). Real programs on macvlan interfaces of test namespaces; every
//! attack is a frame built by the test and sent through a packet socket, every check is what
//! arrived and what the counters say.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::common;

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, UdpSocket},
    time::Duration,
};

use common::{
    Fixture,
    frames::{self, link_local},
};
use ipnet::IpNet;
use multus_agent::dataplane::{
    AntiSpoof, AttachMode, DirectionPolicy, DropReason, Policy, PortRange, Protocol, Rule,
};
use multus_testkit::{
    MacvlanPods, PacketTap, Pod, require_root,
    traffic::{self, TcpServer, parse_mac},
};

fn mac(pod: &Pod) -> [u8; 6] {
    parse_mac(&pod.mac)
}

fn host(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// Sends `frame` out of `from`'s interface and says whether `to` received it (the tap sees
/// received frames before TC ingress, so this is about `from`'s egress).
fn arrives(from: &Pod, to: &Pod, frame: &[u8]) -> bool {
    let [arrived] = arrive_in_turn(from, to, [frame], |_| {});
    arrived
}

/// Sends `frames` out of `from`'s interface one after the other, running `before(i)` before
/// frame `i`, and says which of them `to` received.
fn arrive_in_turn<const N: usize>(
    from: &Pod,
    to: &Pod,
    frames: [&[u8]; N],
    mut before: impl FnMut(usize),
) -> [bool; N] {
    let tap = PacketTap::start(&to.netns, &to.ifname);
    for (i, frame) in frames.iter().enumerate() {
        before(i);
        // A dropped frame may be reported to the sender (ENOBUFS): the tap is what counts.
        let _ = traffic::send_frame(&from.netns, &from.ifname, frame);
    }
    let seen = tap.finish(Duration::from_millis(150));
    frames.map(|frame| {
        let head = &frame[..frame.len().min(multus_testkit::tap::HEAD_LEN)];
        seen.iter().any(|f| !f.outgoing && f.head == head)
    })
}

/// Receives one datagram of up to 64 KiB on `socket` within two seconds.
fn recv_big(socket: &UdpSocket) -> Option<(usize, SocketAddr)> {
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = vec![0u8; 65_536];
    socket.recv_from(&mut buf).ok()
}

#[test]
fn an_ipv6_extension_header_chain_hides_no_port() {
    if !require_root("an_ipv6_extension_header_chain_hides_no_port") {
        return;
    }
    let net = MacvlanPods::dual_stack(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let policy = Policy {
        egress: DirectionPolicy::allow_by_default(vec![
            Rule::deny().ports(Protocol::Tcp, PortRange::single(22)),
        ]),
        ..Policy::default()
    };
    let id = fx.attach(a, Some(&policy));
    let syn = |ext: usize, port: u16| {
        frames::ipv6_frame(
            (mac(a), mac(b)),
            (a.ip6, b.ip6),
            ext,
            6,
            64,
            &frames::tcp_syn6(a.ip6, b.ip6, 40000, port),
        )
    };
    // (extension headers, port, whether it may pass, the reason it drops for)
    let cases = [
        (0, 22, false, DropReason::PolicyDeny),
        (4, 22, false, DropReason::PolicyDeny),
        (5, 22, false, DropReason::PolicyDeny),
        (8, 22, false, DropReason::PolicyDeny),
        (9, 22, false, DropReason::HeaderChain),
        (12, 22, false, DropReason::HeaderChain),
        // The chain's length alone decides, not the port behind it.
        (9, 80, false, DropReason::HeaderChain),
        (0, 80, true, DropReason::PolicyDeny),
        (5, 80, true, DropReason::PolicyDeny),
        (8, 80, true, DropReason::PolicyDeny),
    ];
    for (ext, port, passes, reason) in cases {
        let before = fx.counters(id).egress;
        let arrived = arrives(a, b, &syn(ext, port));
        let after = fx.counters(id).egress;
        assert_eq!(
            arrived, passes,
            "SYN to port {port} behind {ext} extension headers: {after:?}"
        );
        let dropped = after.drops(reason).0 - before.drops(reason).0;
        assert_eq!(
            (dropped, after.dropped() - before.dropped()),
            if passes { (0, 0) } else { (1, 1) },
            "{ext} headers, port {port}: counted under {reason:?}? {after:?}"
        );
    }
}

#[test]
fn arp_of_any_hardware_type_meets_anti_spoofing_and_arp_rules() {
    if !require_root("arp_of_any_hardware_type_meets_anti_spoofing_and_arp_rules") {
        return;
    }
    let net = MacvlanPods::new(3);
    let (a, b, c) = (&net.pods[0], &net.pods[1], &net.pods[2]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let guarded = Policy {
        anti_spoof: Some(AntiSpoof {
            mac: a.mac.parse().unwrap(),
            ips: vec![IpAddr::V4(a.ip4)],
            router: false,
        }),
        ..Policy::default()
    };
    let id_a = fx.attach(a, Some(&guarded));
    // b refuses ARP from a.
    let no_arp_from_a = Policy {
        ingress: DirectionPolicy::allow_by_default(vec![
            Rule::deny()
                .peer(host(IpAddr::V4(a.ip4)))
                .protocol(Protocol::Arp),
        ]),
        ..Policy::default()
    };
    let id_b = fx.attach(b, Some(&no_arp_from_a));
    let reply = |hrd: u16, claimed: Ipv4Addr| {
        frames::arp((mac(a), mac(b)), hrd, 2, (mac(a), claimed), (mac(b), b.ip4))
    };
    // Ethernet (1) and IEEE 802 (6): Linux takes both on an Ethernet device.
    for hrd in [1, 6] {
        let before = fx.counters(id_a).egress.drops(DropReason::Spoofed).0;
        assert!(
            !arrives(
                a,
                c,
                &frames::arp((mac(a), mac(c)), hrd, 2, (mac(a), b.ip4), (mac(c), c.ip4))
            ),
            "hardware type {hrd}: a claimed b's address to c"
        );
        assert_eq!(
            fx.counters(id_a).egress.drops(DropReason::Spoofed).0,
            before + 1
        );
        // a's honest ARP leaves a, and b's rule drops it on arrival.
        let b_before = fx.counters(id_b).ingress.drops(DropReason::PolicyDeny).0;
        let _ = traffic::send_frame(&a.netns, &a.ifname, &reply(hrd, a.ip4));
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(
            fx.counters(id_a).egress.dropped(),
            before + 1,
            "hardware type {hrd}: a's own address must pass"
        );
        assert_eq!(
            fx.counters(id_b).ingress.drops(DropReason::PolicyDeny).0,
            b_before + 1,
            "hardware type {hrd}: b's ARP rule must see it"
        );
    }
    // ARP for another protocol than IPv4 is nothing a host here acts on: malformed.
    let mut odd = reply(1, a.ip4);
    odd[16..18].copy_from_slice(&0x86ddu16.to_be_bytes());
    let before = fx.counters(id_a).egress.drops(DropReason::Malformed).0;
    assert!(!arrives(a, b, &odd));
    assert_eq!(
        fx.counters(id_a).egress.drops(DropReason::Malformed).0,
        before + 1
    );
}

#[test]
fn neighbour_discovery_cannot_claim_others_or_act_as_a_router() {
    if !require_root("neighbour_discovery_cannot_claim_others_or_act_as_a_router") {
        return;
    }
    let net = MacvlanPods::dual_stack(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let ll_a = link_local(&a.netns, &a.ifname);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let anti_spoof = AntiSpoof {
        mac: a.mac.parse().unwrap(),
        ips: vec![IpAddr::V4(a.ip4), IpAddr::V6(a.ip6), IpAddr::V6(ll_a)],
        router: false,
    };
    let guarded = Policy {
        anti_spoof: Some(anti_spoof.clone()),
        ..Policy::default()
    };
    let id = fx.attach(a, Some(&guarded));
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    let to_b = |src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]| {
        frames::ipv6_frame((mac(a), mac(b)), (src, dst), 0, 58, 255, icmp)
    };
    let na = |target: Ipv6Addr, lladdr: [u8; 6]| {
        to_b(
            a.ip6,
            b.ip6,
            &frames::neighbour_advert(a.ip6, b.ip6, target, lladdr),
        )
    };
    let ra = to_b(
        ll_a,
        all_nodes,
        &frames::router_advert(ll_a, all_nodes, mac(a)),
    );
    let spoofed = |fx: &Fixture| fx.counters(id).egress.drops(DropReason::Spoofed).0;

    assert!(arrives(a, b, &na(a.ip6, mac(a))), "a speaks for itself");
    assert!(arrives(a, b, &na(ll_a, mac(a))), "and for its link-local");
    assert_eq!(fx.counters(id).egress.dropped(), 0);
    assert!(!arrives(a, b, &na(b.ip6, mac(a))), "a claimed b's address");
    assert!(
        !arrives(a, b, &na(a.ip6, mac(b))),
        "a announced another link-layer address for itself"
    );
    assert!(!arrives(a, b, &ra), "a rogue router advertisement left");
    assert_eq!(spoofed(&fx), 3);
    // Real neighbour discovery still works both ways.
    assert_eq!(a.ping(IpAddr::V6(b.ip6), 2), 2);
    assert_eq!(b.ping(IpAddr::V6(a.ip6), 2), 2);

    // A pod the policy lets act as a router may advertise.
    let router = Policy {
        anti_spoof: Some(AntiSpoof {
            router: true,
            ..anti_spoof
        }),
        ..Policy::default()
    };
    fx.dataplane.set_policy(id, &router).unwrap();
    assert!(arrives(a, b, &ra));
    assert_eq!(spoofed(&fx), 3);

    // Under a default-deny egress, advertisements and redirects are a router's to send: they
    // need a rule. Neighbour advertisements keep passing, and a received advertisement too.
    let closed = Policy {
        egress: DirectionPolicy::deny_by_default(Vec::new()),
        ingress: DirectionPolicy::deny_by_default(Vec::new()),
        ..Policy::default()
    };
    fx.dataplane.set_policy(id, &closed).unwrap();
    let before = fx.counters(id);
    assert!(
        !arrives(a, b, &ra),
        "a router advertisement left under default deny"
    );
    let mut redirect_body = vec![0u8; 4];
    redirect_body.extend_from_slice(&b.ip6.octets());
    redirect_body.extend_from_slice(&a.ip6.octets());
    let redirect = to_b(
        ll_a,
        b.ip6,
        &frames::icmp6(ll_a, b.ip6, 137, &redirect_body),
    );
    assert!(
        !arrives(a, b, &redirect),
        "a redirect left under default deny"
    );
    assert!(arrives(a, b, &na(a.ip6, mac(a))));
    let after = fx.counters(id);
    assert_eq!(
        after.egress.drops(DropReason::DefaultDeny).0
            - before.egress.drops(DropReason::DefaultDeny).0,
        2,
        "{after:?}"
    );
    let ll_b = link_local(&b.netns, &b.ifname);
    let ra_to_a = frames::ipv6_frame(
        (mac(b), mac(a)),
        (ll_b, all_nodes),
        0,
        58,
        255,
        &frames::router_advert(ll_b, all_nodes, mac(b)),
    );
    traffic::send_frame(&b.netns, &b.ifname, &ra_to_a).unwrap();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        fx.counters(id).ingress.dropped(),
        before.ingress.dropped(),
        "a pod receives router advertisements"
    );
}

#[test]
fn datagrams_larger_than_the_mtu_pass_and_drop_whole() {
    if !require_root("datagrams_larger_than_the_mtu_pass_and_drop_whole") {
        return;
    }
    const BIG: usize = 4000;
    let net = MacvlanPods::dual_stack(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    // a takes UDP on port 9999 and replies of its own flows, nothing else (a deny rule for port
    // 9997 says so twice); it sends anything but UDP to port 9998.
    let policy = Policy {
        ingress: DirectionPolicy::deny_by_default(vec![
            Rule::allow().ports(Protocol::Udp, PortRange::single(9999)),
            Rule::deny().ports(Protocol::Udp, PortRange::single(9997)),
        ]),
        egress: DirectionPolicy::allow_by_default(vec![
            Rule::deny().ports(Protocol::Udp, PortRange::single(9998)),
        ]),
        ..Policy::default()
    };
    let id = fx.attach(a, Some(&policy));
    let payload = vec![0x5a; BIG];
    for (ip_a, ip_b) in [
        (IpAddr::V4(a.ip4), IpAddr::V4(b.ip4)),
        (IpAddr::V6(a.ip6), IpAddr::V6(b.ip6)),
    ] {
        // In on an allowed port.
        let server = traffic::udp_socket(&a.netns, SocketAddr::new(ip_a, 9999));
        let client = traffic::udp_socket(&b.netns, SocketAddr::new(ip_b, 0));
        client
            .send_to(&payload, server.local_addr().unwrap())
            .unwrap();
        assert_eq!(
            recv_big(&server).map(|r| r.0),
            Some(BIG),
            "{ip_a}: a datagram in fragments to an allowed port: {:?}",
            fx.counters(id)
        );

        // A big reply to a's own small datagram.
        let mine = traffic::udp_socket(&a.netns, SocketAddr::new(ip_a, 0));
        let peer = traffic::udp_socket(&b.netns, SocketAddr::new(ip_b, 7777));
        mine.send_to(b"hello", peer.local_addr().unwrap()).unwrap();
        let (_, from) = recv_big(&peer).expect("a's datagram reached b");
        peer.send_to(&payload, from).unwrap();
        assert_eq!(
            recv_big(&mine).map(|r| r.0),
            Some(BIG),
            "{ip_a}: a reply in fragments: {:?}",
            fx.counters(id)
        );

        // In to a denied port: every fragment meets the deny rule, not only the first.
        let denied = traffic::udp_socket(&a.netns, SocketAddr::new(ip_a, 9997));
        let before = fx.counters(id).ingress.drops(DropReason::PolicyDeny).0;
        client
            .send_to(&payload, denied.local_addr().unwrap())
            .unwrap();
        assert!(recv_big(&denied).is_none());
        assert_eq!(
            fx.counters(id).ingress.drops(DropReason::PolicyDeny).0 - before,
            3,
            "{ip_a}: every fragment is dropped by the port rule"
        );

        // Out to a denied port: not one fragment leaves. (The sender's stack stops fragmenting
        // at the first fragment's drop, so the count is not the datagram's fragments.)
        let sink = traffic::udp_socket(&b.netns, SocketAddr::new(ip_b, 9998));
        let before = fx.counters(id).egress;
        let tap = PacketTap::start(&b.netns, &b.ifname);
        let _ = mine.send_to(&payload, sink.local_addr().unwrap());
        let from_a = tap
            .finish(Duration::from_millis(200))
            .iter()
            .filter(|f| {
                !f.outgoing && f.head[6..12] == mac(a) && matches!(f.ethertype(), 0x0800 | 0x86dd)
            })
            .count();
        assert_eq!(from_a, 0, "{ip_a}: fragments of a denied datagram left");
        assert!(recv_big(&sink).is_none());
        let after = fx.counters(id).egress;
        let dropped =
            after.drops(DropReason::PolicyDeny).0 - before.drops(DropReason::PolicyDeny).0;
        assert!(dropped >= 1, "{ip_a}: {after:?}");
    }
}

#[test]
fn flows_a_new_policy_still_allows_survive_it_and_others_stop() {
    if !require_root("flows_a_new_policy_still_allows_survive_it_and_others_stop") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let closed_in = |extra: Vec<Rule>| Policy {
        ingress: DirectionPolicy::deny_by_default(Vec::new()),
        egress: DirectionPolicy::allow_by_default(extra),
        ..Policy::default()
    };
    let id = fx.attach(a, Some(&closed_in(Vec::new())));
    let unrelated = || vec![Rule::deny().peer("198.51.100.0/24".parse().unwrap())];

    // A UDP flow a opened, and b answering it.
    let mine = traffic::udp_socket(&a.netns, SocketAddr::new(IpAddr::V4(a.ip4), 0));
    let peer = traffic::udp_socket(&b.netns, SocketAddr::new(IpAddr::V4(b.ip4), 7777));
    mine.send_to(b"open", peer.local_addr().unwrap()).unwrap();
    let (_, from) = recv_big(&peer).unwrap();
    peer.send_to(b"r1", from).unwrap();
    assert!(recv_big(&mine).is_some());

    // A TCP connection a opened, half way through.
    let server = TcpServer::start(&b.netns, SocketAddr::new(IpAddr::V4(b.ip4), 8080));
    let mut conn = traffic::tcp_connect(&a.netns, server.addr(), Duration::from_secs(2)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    conn.write_all(&[1u8; 20_000]).unwrap();

    // A recompile that changes nothing for these flows.
    fx.dataplane
        .set_policy(id, &closed_in(unrelated()))
        .unwrap();
    peer.send_to(b"r2", from).unwrap();
    assert!(
        recv_big(&mine).is_some(),
        "the UDP reply after an unrelated policy change: {:?}",
        fx.counters(id)
    );
    conn.write_all(&[2u8; 20_000]).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut answer = [0u8; 8];
    conn.read_exact(&mut answer)
        .expect("the TCP connection after an unrelated policy change");
    assert_eq!(u64::from_be_bytes(answer), 40_000);
    // The server's FIN, and ours, before the next change.
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    drop(conn);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fx.counters(id).ingress.dropped(), 0);

    // A policy that no longer lets a talk to b: b's replies stop.
    let mut cut = unrelated();
    cut.push(Rule::deny().peer(host(IpAddr::V4(b.ip4))));
    fx.dataplane.set_policy(id, &closed_in(cut)).unwrap();
    let before = fx.counters(id).ingress.drops(DropReason::DefaultDeny).0;
    peer.send_to(b"r3", from).unwrap();
    assert!(
        recv_big(&mine).is_none(),
        "a reply of a flow the policy now denies"
    );
    assert_eq!(
        fx.counters(id).ingress.drops(DropReason::DefaultDeny).0,
        before + 1
    );
}

#[test]
fn a_program_ahead_on_the_hook_cannot_wave_packets_past_the_policy() {
    if !require_root("a_program_ahead_on_the_hook_cannot_wave_packets_past_the_policy") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    // Someone else's programs were there first, and pass everything (TCX_PASS ends the chain).
    let _egress = common::ForeignProgram::new(a, false, 0);
    let _ingress = common::ForeignProgram::new(a, true, 0);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let policy = Policy {
        egress: DirectionPolicy::allow_by_default(vec![Rule::deny().peer(host(IpAddr::V4(b.ip4)))]),
        ingress: DirectionPolicy::allow_by_default(vec![
            Rule::deny().peer(host(IpAddr::V4(b.ip4))),
        ]),
        ..Policy::default()
    };
    let id = fx.attach(a, Some(&policy));
    assert_eq!(a.ping(IpAddr::V4(b.ip4), 2), 0, "a's pings left");
    assert_eq!(b.ping(IpAddr::V4(a.ip4), 2), 0, "b's pings came in");
    let counters = fx.counters(id);
    assert!(
        counters.egress.drops(DropReason::PolicyDeny).0 >= 2,
        "{counters:?}"
    );
    assert!(
        counters.ingress.drops(DropReason::PolicyDeny).0 >= 2,
        "{counters:?}"
    );
}

#[test]
fn only_ethernet_interfaces_are_attached() {
    if !require_root("only_ethernet_interfaces_are_attached") {
        return;
    }
    let net = MacvlanPods::new(1);
    let pod = &net.pods[0];
    // A layer-3 tunnel device: packets start with the IP header, no Ethernet.
    pod.netns
        .ip(&["tuntap", "add", "dev", "tun0", "mode", "tun"]);
    pod.netns.ip(&["link", "set", "tun0", "up"]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let netns = pod.netns.path();
    let err = fx
        .dataplane
        .attach(&multus_agent::dataplane::AttachRequest {
            netns: &netns,
            ifname: "tun0",
            owner: Default::default(),
            policy: Some(&Policy::default()),
            policy_source: None,
        })
        .expect_err("a tun device must be refused");
    assert!(
        matches!(
            err,
            multus_agent::dataplane::DataplaneError::NotEthernet { .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("tun0"), "{err}");
    assert!(fx.dataplane.attachments().unwrap().is_empty());
    assert!(fx.dataplane.attached_ids().unwrap().is_empty());
    // The macvlan next to it is fine.
    fx.attach(pod, None);
}

#[test]
fn a_closed_connection_lets_nothing_in_once_its_grace_period_is_over() {
    if !require_root("a_closed_connection_lets_nothing_in_once_its_grace_period_is_over") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let policy = Policy {
        ingress: DirectionPolicy::deny_by_default(Vec::new()),
        ..Policy::default()
    };
    let id = fx.attach(a, Some(&policy));
    let server = TcpServer::start(&b.netns, SocketAddr::new(IpAddr::V4(b.ip4), 8080));
    let open = |bytes: usize| {
        let mut conn =
            traffic::tcp_connect(&a.netns, server.addr(), Duration::from_secs(2)).unwrap();
        conn.write_all(&vec![7u8; bytes]).unwrap();
        conn
    };
    // One connection run to its end (FIN both ways), one left open and idle.
    let mut closed = open(1000);
    let closed_port = closed.local_addr().unwrap().port();
    closed.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    closed.read_to_end(&mut rest).unwrap();
    drop(closed);
    let idle = open(10);
    let idle_port = idle.local_addr().unwrap().port();
    // b's side of either connection, sent by hand.
    let from_b = |port: u16| frames::tcp4((mac(b), mac(a)), (b.ip4, a.ip4), (8080, port), 0x10);
    let drops = |fx: &Fixture| fx.counters(id).ingress.drops(DropReason::DefaultDeny).0;
    let send = |port: u16| {
        traffic::send_frame(&b.netns, &b.ifname, &from_b(port)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
    };
    let before = drops(&fx);
    send(closed_port);
    assert_eq!(
        drops(&fx),
        before,
        "late segments of a closing connection pass"
    );
    std::thread::sleep(Duration::from_secs(11));
    send(idle_port);
    assert_eq!(drops(&fx), before, "an idle open connection lives on");
    send(closed_port);
    assert_eq!(
        drops(&fx),
        before + 1,
        "a closed connection's ports let b in after its grace period: {:?}",
        fx.counters(id)
    );
    drop(idle);
}

#[test]
fn dhcp_client_messages_pass_a_default_deny_and_nothing_like_them_does() {
    if !require_root("dhcp_client_messages_pass_a_default_deny_and_nothing_like_them_does") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let closed = Policy {
        ingress: DirectionPolicy::deny_by_default(Vec::new()),
        egress: DirectionPolicy::deny_by_default(Vec::new()),
        ..Policy::default()
    };
    let id = fx.attach(a, Some(&closed));
    let udp = |from: &Pod, to: &Pod, (src, dst): (Ipv4Addr, Ipv4Addr), ports: (u16, u16)| {
        traffic::Udp4 {
            src_mac: mac(from),
            dst_mac: if dst == Ipv4Addr::BROADCAST {
                [0xff; 6]
            } else {
                mac(to)
            },
            src,
            dst,
            sport: ports.0,
            dport: ports.1,
        }
        .frame(b"dhcp")
    };
    // The client's discover (from 0.0.0.0 to everyone) and its unicast renewal leave.
    let discover = udp(a, b, (Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST), (68, 67));
    assert!(arrives(a, b, &discover), "DHCP discover");
    assert!(
        arrives(a, b, &udp(a, b, (a.ip4, b.ip4), (68, 67))),
        "DHCP renewal"
    );
    assert_eq!(fx.counters(id).egress.dropped(), 0);
    // Other ports, and a pod answering as a server, do not.
    assert!(!arrives(a, b, &udp(a, b, (a.ip4, b.ip4), (68, 69))));
    assert!(!arrives(a, b, &udp(a, b, (a.ip4, b.ip4), (67, 68))));
    assert_eq!(fx.counters(id).egress.drops(DropReason::DefaultDeny).0, 2);

    // The server's answers come in; lookalikes do not.
    let deliver = |frame: Vec<u8>| {
        let before = fx.counters(id).ingress.dropped();
        traffic::send_frame(&b.netns, &b.ifname, &frame).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        fx.counters(id).ingress.dropped() == before
    };
    assert!(
        deliver(udp(b, a, (b.ip4, Ipv4Addr::BROADCAST), (67, 68))),
        "DHCP offer"
    );
    assert!(deliver(udp(b, a, (b.ip4, a.ip4), (67, 68))), "DHCP ack");
    assert!(!deliver(udp(b, a, (b.ip4, a.ip4), (67, 69))));
    assert!(!deliver(udp(b, a, (b.ip4, a.ip4), (66, 68))));
    // A rule still decides when it names them.
    let no_dhcp = Policy {
        egress: DirectionPolicy::deny_by_default(vec![
            Rule::deny().ports(Protocol::Udp, PortRange::single(67)),
        ]),
        ..closed
    };
    fx.dataplane.set_policy(id, &no_dhcp).unwrap();
    assert!(!arrives(a, b, &discover));
}

/// A TCP connection to `to` from `from`, a fixed port, within `wait`. It ends with a reset, so
/// the port is free again at once (no TIME_WAIT) for the next connection from it.
fn connect_from(pod: &Pod, from: SocketAddr, to: SocketAddr, wait: Duration) -> bool {
    use socket2::{Domain, SockAddr, Socket, Type};
    pod.netns
        .enter(|| -> std::io::Result<()> {
            let socket = Socket::new(Domain::for_address(to), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            socket.bind(&SockAddr::from(from))?;
            socket.connect_timeout(&SockAddr::from(to), wait)?;
            socket.set_linger(Some(Duration::ZERO))?;
            Ok(())
        })
        .is_ok()
}

/// What the flow table remembers of a connection the pod only answered must not let that
/// connection's ports back in once the policy shuts them out: the flow was opened by the peer,
/// whatever direction the programs first recorded it in. Three ways in, each tried with the
/// ports of an earlier, allowed exchange:
/// - a UDP exchange allowed by an ingress rule while egress allows everything (so egress, not
///   ingress, would need to remember it for replies);
/// - a TCP connection likewise, reset by the client (its SYN-ACK was the first packet recorded,
///   and nothing marks the flow closed);
/// - a UDP exchange an audit-mode policy let through though it would have dropped it.
#[test]
fn ports_of_a_flow_the_pod_only_answered_do_not_get_in_after_a_policy_change() {
    if !require_root("ports_of_a_flow_the_pod_only_answered_do_not_get_in_after_a_policy_change") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let mut fx = Fixture::new(AttachMode::Tcx);
    let only_b_in = |audit: bool| Policy {
        ingress: DirectionPolicy::deny_by_default(if audit {
            Vec::new()
        } else {
            vec![Rule::allow().peer(host(IpAddr::V4(b.ip4)))]
        }),
        egress: DirectionPolicy::allow_by_default(Vec::new()),
        audit,
        ..Policy::default()
    };
    let closed = Policy {
        ingress: DirectionPolicy::deny_by_default(Vec::new()),
        egress: DirectionPolicy::allow_by_default(Vec::new()),
        ..Policy::default()
    };
    let id = fx.attach(a, Some(&only_b_in(false)));
    let server = traffic::udp_socket(&a.netns, SocketAddr::new(IpAddr::V4(a.ip4), 7777));
    let tcp = TcpServer::start(&a.netns, SocketAddr::new(IpAddr::V4(a.ip4), 8080));

    // One UDP exchange from b's fixed port: a request in, an answer out.
    let exchange = |client: &UdpSocket, tag: &[u8]| -> bool {
        if client.send_to(tag, server.local_addr().unwrap()).is_err() {
            return false;
        }
        match recv_big(&server) {
            Some((_, from)) => {
                server.send_to(b"answer", from).unwrap();
                assert!(recv_big(client).is_some(), "{tag:?}: the answer");
                true
            }
            None => false,
        }
    };

    let udp_client = traffic::udp_socket(&b.netns, SocketAddr::new(IpAddr::V4(b.ip4), 40_001));
    assert!(exchange(&udp_client, b"allowed"), "{:?}", fx.counters(id));
    let tcp_from = SocketAddr::new(IpAddr::V4(b.ip4), 40_002);
    assert!(
        connect_from(b, tcp_from, tcp.addr(), Duration::from_secs(2)),
        "the allowed connection: {:?}",
        fx.counters(id)
    );

    // Every way in is tried, and all that got in are reported together.
    let mut got_in = Vec::new();
    fx.dataplane.set_policy(id, &closed).unwrap();
    let before = fx.counters(id).ingress.drops(DropReason::DefaultDeny).0;
    if exchange(&udp_client, b"udp after") {
        got_in.push("a UDP datagram from the ports of an answered exchange, under default deny");
    }
    if connect_from(b, tcp_from, tcp.addr(), Duration::from_millis(700)) {
        got_in.push("a TCP connection from the ports of an answered one, under default deny");
    }
    let dropped = fx.counters(id).ingress.drops(DropReason::DefaultDeny).0 - before;

    // Audit mode let an exchange through that its policy would drop: the flow is b's all the
    // same, and enforcing the policy shuts it out.
    fx.dataplane.set_policy(id, &only_b_in(true)).unwrap();
    let audited = traffic::udp_socket(&b.netns, SocketAddr::new(IpAddr::V4(b.ip4), 40_003));
    assert!(exchange(&audited, b"audited"), "{:?}", fx.counters(id));
    fx.dataplane.set_policy(id, &closed).unwrap();
    if exchange(&audited, b"enforced") {
        got_in.push("a UDP datagram an audit-mode policy let through, once it was enforced");
    }
    assert!(
        got_in.is_empty(),
        "got in: {got_in:#?}\n{:?}",
        fx.counters(id)
    );
    assert!(dropped >= 2, "{dropped} drops counted");
}

/// This thread, and the threads it starts from now on, on one CPU until dropped: the programs'
/// per-CPU caches then see every packet the test sends.
struct OneCpu(nix::sched::CpuSet);

impl OneCpu {
    fn pin() -> Self {
        use nix::{sched, unistd::Pid};
        let before = sched::sched_getaffinity(Pid::from_raw(0)).unwrap();
        let first = (0..sched::CpuSet::count())
            .find(|&c| before.is_set(c).unwrap_or(false))
            .unwrap();
        let mut one = sched::CpuSet::new();
        one.set(first).unwrap();
        sched::sched_setaffinity(Pid::from_raw(0), &one).unwrap();
        Self(before)
    }
}

impl Drop for OneCpu {
    fn drop(&mut self) {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &self.0);
    }
}

#[test]
fn a_flow_that_just_passed_meets_anti_spoofing_and_a_new_policy_with_its_next_packet() {
    if !require_root(
        "a_flow_that_just_passed_meets_anti_spoofing_and_a_new_policy_with_its_next_packet",
    ) {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let _cpu = OneCpu::pin();
    let mut fx = Fixture::new(AttachMode::Tcx);
    let anti_spoof = Some(AntiSpoof {
        mac: a.mac.parse().unwrap(),
        ips: vec![IpAddr::V4(a.ip4)],
        router: false,
    });
    // Ingress can drop, so the flows of both directions are recorded.
    let open = Policy {
        ingress: DirectionPolicy::deny_by_default(Vec::new()),
        egress: DirectionPolicy::allow_by_default(Vec::new()),
        anti_spoof: anti_spoof.clone(),
        ..Policy::default()
    };
    let id = fx.attach(a, Some(&open));
    let udp = |src_mac: [u8; 6], payload: &[u8]| {
        traffic::Udp4 {
            src_mac,
            dst_mac: mac(b),
            src: a.ip4,
            dst: b.ip4,
            sport: 4000,
            dport: 9999,
        }
        .frame(payload)
    };
    let forged_mac = [0x02, 0, 0, 0, 0x99, 0x99];
    for i in 0..3u8 {
        assert!(arrives(a, b, &udp(mac(a), &[b'a', i])), "honest packet {i}");
    }
    // The same flow from another MAC, right behind an honest packet.
    let [honest, forged] = arrive_in_turn(
        a,
        b,
        [&udp(mac(a), b"honest"), &udp(forged_mac, b"forged")],
        |_| {},
    );
    assert!(honest, "{:?}", fx.counters(id));
    assert!(!forged, "a forged MAC on a flow that had just passed");
    assert_eq!(fx.counters(id).egress.drops(DropReason::Spoofed).0, 1);

    // A policy closing the flow's port takes effect with its very next packet.
    let closed = Policy {
        egress: DirectionPolicy::allow_by_default(vec![
            Rule::deny().ports(Protocol::Udp, PortRange::single(9999)),
        ]),
        ..open
    };
    let [before, after] = arrive_in_turn(
        a,
        b,
        [&udp(mac(a), b"before"), &udp(mac(a), b"after")],
        |i| {
            if i == 1 {
                fx.dataplane.set_policy(id, &closed).unwrap();
            }
        },
    );
    assert!(before, "{:?}", fx.counters(id));
    assert!(!after, "the packet right after the policy closed its port");
    assert_eq!(fx.counters(id).egress.drops(DropReason::PolicyDeny).0, 1);
}

#[test]
fn every_datagram_of_a_flow_an_audit_mode_policy_would_drop_is_audited() {
    if !require_root("every_datagram_of_a_flow_an_audit_mode_policy_would_drop_is_audited") {
        return;
    }
    const N: u64 = 8;
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let _cpu = OneCpu::pin();
    let mut fx = Fixture::new(AttachMode::Tcx);
    let policy = Policy {
        egress: DirectionPolicy::allow_by_default(vec![
            Rule::deny().ports(Protocol::Udp, PortRange::single(9999)),
        ]),
        audit: true,
        ..Policy::default()
    };
    let id = fx.attach(a, Some(&policy));
    let sink = traffic::udp_socket(&b.netns, SocketAddr::new(IpAddr::V4(b.ip4), 9999));
    let source = traffic::udp_socket(&a.netns, SocketAddr::new(IpAddr::V4(a.ip4), 4000));
    for _ in 0..N {
        source
            .send_to(b"audited", sink.local_addr().unwrap())
            .unwrap();
    }
    assert_eq!(
        traffic::udp_count(&sink, Duration::from_millis(300)) as u64,
        N
    );
    let counters = fx.counters(id);
    assert_eq!(counters.egress.audited(DropReason::PolicyDeny).0, N);
    assert_eq!(counters.egress.dropped(), 0);
}
