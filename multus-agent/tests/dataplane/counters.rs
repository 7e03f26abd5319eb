//! Root tests of the dataplane module: real programs attached to macvlan interfaces in test
//! namespaces, real pings, exact counters, and nothing left behind.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::common;

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use common::{Dirs, PING_FRAME, attach, tc_programs};
use multus_agent::dataplane::{AttachMode, AttachRequest, Dataplane};
use multus_testkit::{
    MacvlanPods, PacketTap, require_root,
    traffic::{self, TcpServer},
};

fn exact_counts(mode: AttachMode) {
    const N: u32 = 25;
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let dirs = Dirs::new();
    let mut dataplane = dirs.load(mode);
    let id = attach(&mut dataplane, a, None);
    assert!(
        tc_programs(a).contains("multus_ingress") && tc_programs(a).contains("multus_egress"),
        "programs not attached: {}",
        tc_programs(a)
    );

    assert_eq!(
        a.ping(IpAddr::V4(b.ip4), N),
        N,
        "every ping must be answered"
    );

    let c = dataplane.counters(id).unwrap();
    let n = u64::from(N);
    assert_eq!(c.egress.packets, n, "echo requests sent: {c:?}");
    assert_eq!(c.ingress.packets, n, "echo replies received: {c:?}");
    assert_eq!(c.egress.bytes, n * PING_FRAME, "{c:?}");
    assert_eq!(c.ingress.bytes, n * PING_FRAME, "{c:?}");
    assert_eq!(c.egress.dropped(), 0);

    dataplane.detach(id).unwrap();
    let left = tc_programs(a);
    assert!(
        !left.contains("multus"),
        "programs still attached after detach: {left}"
    );
    assert!(
        dirs.link_pins().is_empty(),
        "link pins left after detach: {:?}",
        dirs.link_pins()
    );
    assert!(dataplane.attachments().unwrap().is_empty());
}

#[test]
fn counts_exact_packets_and_bytes_with_tcx() {
    if require_root("counts_exact_packets_and_bytes_with_tcx") {
        exact_counts(AttachMode::Tcx);
    }
}

#[test]
fn counts_exact_packets_and_bytes_with_clsact() {
    if require_root("counts_exact_packets_and_bytes_with_clsact") {
        exact_counts(AttachMode::Clsact);
    }
}

#[test]
fn same_ifindex_in_two_namespaces_counts_separately() {
    if !require_root("same_ifindex_in_two_namespaces_counts_separately") {
        return;
    }
    let net = MacvlanPods::same_ifindex(3, 4242);
    let (a, b, c) = (&net.pods[0], &net.pods[1], &net.pods[2]);
    let dirs = Dirs::new();
    let mut dataplane = dirs.load(AttachMode::Tcx);
    let id_a = attach(&mut dataplane, a, None);
    let id_b = attach(&mut dataplane, b, None);
    assert_ne!(id_a, id_b);
    let records = dataplane.attachments().unwrap();
    assert_eq!(records[0].ifindex, 4242);
    assert_eq!(records[1].ifindex, 4242);
    assert_ne!(records[0].netns_cookie, records[1].netns_cookie);

    assert_eq!(a.ping(IpAddr::V4(c.ip4), 3), 3);
    assert_eq!(b.ping(IpAddr::V4(c.ip4), 7), 7);
    assert_eq!(dataplane.counters(id_a).unwrap().egress.packets, 3);
    assert_eq!(dataplane.counters(id_b).unwrap().egress.packets, 7);

    let again = dataplane.attach(&AttachRequest {
        netns: &a.netns.path(),
        ifname: &a.ifname,
        owner: Default::default(),
        policy: None,
        policy_source: None,
    });
    assert!(again.is_err(), "attaching twice must fail");
    dataplane.detach(id_a).unwrap();
    dataplane.detach(id_b).unwrap();
}

#[test]
fn a_new_loader_adopts_links_and_counters_continue() {
    if !require_root("a_new_loader_adopts_links_and_counters_continue") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let dirs = Dirs::new();
    let mut first = dirs.load(AttachMode::Tcx);
    let id = attach(&mut first, a, None);
    assert_eq!(a.ping(IpAddr::V4(b.ip4), 4), 4);
    drop(first);

    // Pinned links keep counting while no loader runs.
    assert_eq!(a.ping(IpAddr::V4(b.ip4), 2), 2);
    let (mut second, adoption) = Dataplane::load(dirs.layout(), AttachMode::Tcx).unwrap();
    assert_eq!(adoption.adopted, vec![id]);
    assert_eq!(second.counters(id).unwrap().egress.packets, 6);
    assert_eq!(a.ping(IpAddr::V4(b.ip4), 3), 3);
    assert_eq!(second.counters(id).unwrap().egress.packets, 9);
    second.detach(id).unwrap();
    assert!(!tc_programs(a).contains("multus"));
}

#[test]
fn attach_to_a_missing_interface_leaves_nothing() {
    if !require_root("attach_to_a_missing_interface_leaves_nothing") {
        return;
    }
    let net = MacvlanPods::new(1);
    let dirs = Dirs::new();
    let mut dataplane = dirs.load(AttachMode::Tcx);
    let err = dataplane
        .attach(&AttachRequest {
            netns: &net.pods[0].netns.path(),
            ifname: "nosuch0",
            owner: Default::default(),
            policy: None,
            policy_source: None,
        })
        .unwrap_err();
    assert!(err.to_string().contains("nosuch0"), "{err}");
    let err = dataplane
        .attach(&AttachRequest {
            netns: Path::new("/var/run/netns/multus-no-such-netns"),
            ifname: "net1",
            owner: Default::default(),
            policy: None,
            policy_source: None,
        })
        .unwrap_err();
    assert!(err.to_string().contains("multus-no-such-netns"), "{err}");
    assert!(dataplane.attachments().unwrap().is_empty());
    assert!(dirs.link_pins().is_empty());
}

#[test]
fn counts_a_tcp_transfer_exactly() {
    if !require_root("counts_a_tcp_transfer_exactly") {
        return;
    }
    const BYTES: usize = 3 * 1024 * 1024 + 17;
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let dirs = Dirs::new();
    let mut dataplane = dirs.load(AttachMode::Tcx);
    let id = attach(&mut dataplane, a, None);
    let server = TcpServer::start(&b.netns, SocketAddr::new(IpAddr::V4(b.ip4), 5001));
    let tap = PacketTap::start(&a.netns, &a.ifname);

    let received = traffic::tcp_transfer(&a.netns, server.addr(), BYTES, Duration::from_secs(10))
        .expect("transfer");
    assert_eq!(received, BYTES as u64, "the server got every byte");

    // The tap sees the same buffers as the programs (GSO super-frames included): the counters
    // must equal what it saw, frame for frame and byte for byte.
    let frames = tap.finish(Duration::from_millis(300));
    assert!(
        frames.iter().all(|f| f
            .ipv4_ports()
            .is_some_and(|(p, s, d)| p == 6 && (s == 5001 || d == 5001))),
        "only the transfer was on the link"
    );
    let (sent, got): (Vec<_>, Vec<_>) = frames.iter().partition(|f| f.outgoing);
    let total =
        |frames: &[&multus_testkit::Frame]| frames.iter().map(|f| f.len as u64).sum::<u64>();
    let c = dataplane.counters(id).unwrap();
    assert_eq!(c.egress.packets, sent.len() as u64, "{c:?}");
    assert_eq!(c.egress.bytes, total(&sent), "{c:?}");
    assert_eq!(c.ingress.packets, got.len() as u64, "{c:?}");
    assert_eq!(c.ingress.bytes, total(&got), "{c:?}");
    // The payload plus at least one 54-byte header per frame went out.
    assert!(c.egress.bytes >= BYTES as u64 + 54 * c.egress.packets);
    dataplane.detach(id).unwrap();
}
