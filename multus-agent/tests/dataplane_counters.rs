//! Root tests of the dataplane module: real programs attached to macvlan interfaces in test
//! namespaces, real pings, exact counters, and nothing left behind.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{net::IpAddr, path::Path};

use multus_agent::dataplane::{self, AttachMode, AttachRequest, Dataplane, PinLayout};
use multus_testkit::{BpffsDir, MacvlanPods, Pod, require_root};

/// Layer-2 size of a default ping (56 data + 8 ICMP + 20 IPv4 + 14 Ethernet bytes).
const PING_FRAME: u64 = 98;

fn load(bpffs: &BpffsDir, state: &Path, mode: AttachMode) -> Dataplane {
    let (dataplane, adoption) =
        Dataplane::load(PinLayout::new(bpffs.path(), state), mode).expect("load dataplane");
    assert!(
        adoption.errors.is_empty(),
        "adoption errors: {:?}",
        adoption.errors
    );
    dataplane
}

fn attach(dataplane: &mut Dataplane, pod: &Pod) -> u32 {
    let netns = pod.netns.path();
    dataplane
        .attach(&AttachRequest {
            netns: &netns,
            ifname: &pod.ifname,
            owner: Default::default(),
            policy: None,
        })
        .expect("attach")
        .id
}

/// The TC programs on `pod`'s interface, TCX links and clsact filters, as the kernel reports them.
fn tc_programs(pod: &Pod) -> String {
    let mut out = dataplane::tcx_programs(&pod.netns.path(), &pod.ifname)
        .expect("query tcx")
        .join(" ");
    for hook in ["ingress", "egress"] {
        out.push(' ');
        // No clsact qdisc means no filters: tc fails, and that counts as none.
        out.push_str(
            &pod.netns
                .exec("tc", &["filter", "show", "dev", &pod.ifname, hook])
                .unwrap_or_default(),
        );
    }
    out
}

fn exact_counts(mode: AttachMode) {
    const N: u32 = 25;
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let bpffs = BpffsDir::new("mt");
    let state = tempfile::tempdir().unwrap();
    let mut dataplane = load(&bpffs, state.path(), mode);
    let id = attach(&mut dataplane, a);
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
    assert_eq!(c.egress.drop_packets, [0; 4]);

    dataplane.detach(id).unwrap();
    let left = tc_programs(a);
    assert!(
        !left.contains("multus"),
        "programs still attached after detach: {left}"
    );
    assert!(
        bpffs.entries().iter().all(|p| p.starts_with("maps")),
        "link pins left after detach: {:?}",
        bpffs.entries()
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
    let bpffs = BpffsDir::new("mt");
    let state = tempfile::tempdir().unwrap();
    let mut dataplane = load(&bpffs, state.path(), AttachMode::Tcx);
    let id_a = attach(&mut dataplane, a);
    let id_b = attach(&mut dataplane, b);
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
    let bpffs = BpffsDir::new("mt");
    let state = tempfile::tempdir().unwrap();
    let mut first = load(&bpffs, state.path(), AttachMode::Tcx);
    let id = attach(&mut first, a);
    assert_eq!(a.ping(IpAddr::V4(b.ip4), 4), 4);
    drop(first);

    // Pinned links keep counting while no loader runs.
    assert_eq!(a.ping(IpAddr::V4(b.ip4), 2), 2);
    let (mut second, adoption) =
        Dataplane::load(PinLayout::new(bpffs.path(), state.path()), AttachMode::Tcx).unwrap();
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
    let bpffs = BpffsDir::new("mt");
    let state = tempfile::tempdir().unwrap();
    let mut dataplane = load(&bpffs, state.path(), AttachMode::Tcx);
    let err = dataplane
        .attach(&AttachRequest {
            netns: &net.pods[0].netns.path(),
            ifname: "nosuch0",
            owner: Default::default(),
            policy: None,
        })
        .unwrap_err();
    assert!(err.to_string().contains("nosuch0"), "{err}");
    let err = dataplane
        .attach(&AttachRequest {
            netns: Path::new("/var/run/netns/multus-no-such-netns"),
            ifname: "net1",
            owner: Default::default(),
            policy: None,
        })
        .unwrap_err();
    assert!(err.to_string().contains("multus-no-such-netns"), "{err}");
    assert!(dataplane.attachments().unwrap().is_empty());
    assert!(bpffs.entries().iter().all(|p| p.starts_with("maps")));
}
