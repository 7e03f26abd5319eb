//! Root tests of the connection table's bounds: each attachment has a table of its own, so a pod
//! opening flows by the thousand evicts only its own, and the evictions are counted. Real
//! programs on macvlan interfaces of test namespaces, real UDP traffic.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use common::Dirs;
use multus_agent::dataplane::{
    AttachMode, Dataplane, DirectionPolicy, DropReason, MapSizing, Policy,
};
use multus_testkit::{MacvlanPods, Pod, require_root, traffic};

/// Flows each attachment's table holds in these tests: small, so a flood overflows it fast.
const TABLE: u32 = 64;

/// Closed to what the pod did not ask for: replies come in only as flows of what it sent.
fn closed_in() -> Policy {
    Policy {
        ingress: DirectionPolicy::deny_by_default(Vec::new()),
        egress: DirectionPolicy::allow_by_default(Vec::new()),
        ..Policy::default()
    }
}

fn udp(pod: &Pod, port: u16) -> UdpSocket {
    let socket = traffic::udp_socket(&pod.netns, SocketAddr::new(IpAddr::V4(pod.ip4), port));
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    socket
}

/// Whether `socket` receives a datagram within its read timeout.
fn receives(socket: &UdpSocket) -> bool {
    let mut buf = [0u8; 64];
    socket.recv_from(&mut buf).is_ok()
}

#[test]
fn a_pod_flooding_new_flows_evicts_only_its_own() {
    if !require_root("a_pod_flooding_new_flows_evicts_only_its_own") {
        return;
    }
    let net = MacvlanPods::new(3);
    let (flooder, quiet, peer) = (&net.pods[0], &net.pods[1], &net.pods[2]);
    let dirs = Dirs::new();
    let sizing = MapSizing {
        flows_per_attachment: TABLE,
        ..MapSizing::default()
    };
    let (mut dataplane, _) = Dataplane::load_sized(dirs.layout(), AttachMode::Tcx, sizing).unwrap();
    let flooder_id = common::attach(&mut dataplane, flooder, Some(&closed_in()));
    let quiet_id = common::attach(&mut dataplane, quiet, Some(&closed_in()));

    // Each pod opens one flow to the peer, and the peer's answer comes back.
    let server = udp(peer, 7000);
    let quiet_socket = udp(quiet, 0);
    let flooder_socket = udp(flooder, 0);
    let mut answer_to = Vec::new();
    for socket in [&quiet_socket, &flooder_socket] {
        socket
            .send_to(b"open", server.local_addr().unwrap())
            .unwrap();
        let mut buf = [0u8; 64];
        let (_, from) = server.recv_from(&mut buf).unwrap();
        server.send_to(b"answer", from).unwrap();
        assert!(receives(socket), "the first answer to {from}");
        answer_to.push(from);
    }
    let quiet_addr = answer_to[0];
    assert_eq!(dataplane.flows(quiet_id).unwrap(), 1);

    // The flooder opens twenty times its table's worth of flows, one datagram each from a new
    // port to the peer's (which listens: no ICMP errors come back, which would look the flows
    // up and give them the LRU's second chance).
    let flood = 20 * u16::try_from(TABLE).unwrap();
    let first_flood = udp(flooder, 0);
    first_flood
        .send_to(b"x", server.local_addr().unwrap())
        .unwrap();
    for _ in 1..flood {
        udp(flooder, 0)
            .send_to(b"x", server.local_addr().unwrap())
            .unwrap();
    }
    // Longer than the programs' per-CPU memory of a recently confirmed flow (one second), so
    // the answers below are looked up in the tables.
    std::thread::sleep(Duration::from_millis(1_500));

    let stats = dataplane.flow_table_stats(flooder_id).unwrap();
    assert_eq!(stats.capacity, u64::from(TABLE));
    let held = dataplane.flows(flooder_id).unwrap();
    assert!(
        held <= TABLE as usize,
        "the flooder's table holds {held} flows"
    );
    // Every new flow beyond the table's capacity pushed an older one out. The count is of
    // flows recorded into a full table; the kernel's LRU may make room a little early, or
    // refuse a flow while other CPUs hold its free entries, so allow one table's worth.
    let (flood64, table64) = (u64::from(flood), u64::from(TABLE));
    assert!(
        stats.evictions + 2 * table64 >= flood64 && stats.evictions <= flood64,
        "{flood} new flows into a table of {TABLE}: {stats:?}"
    );

    // The quiet pod's idle flow is still there: the peer's next answer gets in.
    server.send_to(b"again", quiet_addr).unwrap();
    assert!(
        receives(&quiet_socket),
        "the quiet pod's idle flow was evicted by another pod's flood: {:?}",
        dataplane.counters(quiet_id).unwrap()
    );
    let quiet_stats = dataplane.flow_table_stats(quiet_id).unwrap();
    assert_eq!(quiet_stats.evictions, 0, "{quiet_stats:?}");
    assert_eq!(dataplane.flows(quiet_id).unwrap(), 1);

    // The flooder's oldest flood flow was pushed out: the peer's answer to it now meets the
    // default deny. (Its first flow, answered before the flood, may well survive: the kernel's
    // LRU gives entries that were looked up again a second chance over one-packet flows.)
    let before = dataplane.counters(flooder_id).unwrap();
    server
        .send_to(b"late", first_flood.local_addr().unwrap())
        .unwrap();
    assert!(
        !receives(&first_flood),
        "the flooder's first flood flow outlived {flood} newer ones in a table of {TABLE}"
    );
    let after = dataplane.counters(flooder_id).unwrap();
    assert_eq!(
        after.ingress.drops(DropReason::DefaultDeny).0,
        before.ingress.drops(DropReason::DefaultDeny).0 + 1
    );
    // The counters carry the table's state for the metrics.
    assert_eq!(after.flows.capacity, u64::from(TABLE));
    assert!(after.flows.evictions >= stats.evictions);
}

#[test]
fn a_detached_interface_takes_its_table_and_count_with_it() {
    if !require_root("a_detached_interface_takes_its_table_and_count_with_it") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (pod, peer) = (&net.pods[0], &net.pods[1]);
    let dirs = Dirs::new();
    let sizing = MapSizing {
        flows_per_attachment: TABLE,
        ..MapSizing::default()
    };
    let (mut dataplane, _) = Dataplane::load_sized(dirs.layout(), AttachMode::Tcx, sizing).unwrap();
    // No policy, no table.
    let id = common::attach(&mut dataplane, pod, None);
    assert_eq!(dataplane.flow_table_stats(id).unwrap().capacity, 0);
    dataplane.set_policy(id, &closed_in()).unwrap();
    assert_eq!(
        dataplane.flow_table_stats(id).unwrap().capacity,
        u64::from(TABLE)
    );
    let socket = udp(pod, 0);
    for port in 10_000..10_000 + 2 * TABLE as u16 {
        let _ = socket.send_to(b"x", SocketAddr::new(IpAddr::V4(peer.ip4), port));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(dataplane.flow_table_stats(id).unwrap().evictions > 0);
    // A policy change keeps the table (its flows are re-checked, not dropped).
    dataplane.set_policy(id, &closed_in()).unwrap();
    assert!(dataplane.flows(id).unwrap() > 0);
    dataplane.detach(id).unwrap();
    assert!(matches!(
        dataplane.flow_table_stats(id),
        Ok(s) if s == Default::default()
    ));
    assert_eq!(dataplane.flows(id).unwrap(), 0);
}
