//! Root tests of `Dataplane::attach_many`: many interfaces (in several namespaces, and several in
//! one) attached in one call with TCX and clsact, both hooks and the pins in place when it
//! returns, exact counters, and all-or-nothing: a real kernel failure on one hook of one
//! interface leaves no program, pin, map entry or record on any of them.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use crate::common;

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
};

use common::{Dirs, FullHook, PING_FRAME};
use ipnet::IpNet;
use multus_agent::dataplane::{
    self, AttachMode, AttachRequest, AttachmentOwner, Dataplane, DataplaneError, DirectionPolicy,
    DropReason, Policy, Rule,
};
use multus_testkit::{MacvlanPods, Netns, require_root};

/// One interface to attach to, with the namespace guard to look at it through.
struct Iface<'a> {
    ns: &'a Netns,
    path: PathBuf,
    ifname: String,
}

impl<'a> Iface<'a> {
    fn new(ns: &'a Netns, ifname: &str) -> Self {
        Self {
            ns,
            path: ns.path(),
            ifname: ifname.to_owned(),
        }
    }

    fn request(&self, policy: Option<&'a Policy>) -> AttachRequest<'_> {
        AttachRequest {
            netns: &self.path,
            ifname: &self.ifname,
            owner: AttachmentOwner {
                network: format!("test/{}", self.ifname),
                ..AttachmentOwner::default()
            },
            policy,
            policy_source: None,
        }
    }

    /// Our programs on each hook, as the kernel lists them: `(ingress, egress)`.
    fn ours(&self, mode: AttachMode) -> (Vec<String>, Vec<String>) {
        match mode {
            AttachMode::Tcx => {
                let programs = dataplane::tcx_programs(&self.path, &self.ifname).unwrap();
                let on = |hook: &str| {
                    programs
                        .iter()
                        .filter(|p| p.hook == hook && p.name.starts_with("multus"))
                        .map(|p| p.name.clone())
                        .collect()
                };
                (on("ingress"), on("egress"))
            }
            AttachMode::Clsact => {
                let on = |hook: &str| {
                    // No clsact qdisc means no filters: tc fails, and that counts as none.
                    let out = self
                        .ns
                        .exec("tc", &["filter", "show", "dev", &self.ifname, hook])
                        .unwrap_or_default();
                    // One line per filter: "... handle 0x1 <section> direct-action ... name <prog> ..."
                    out.lines()
                        .filter_map(|line| line.split_once(" name ").map(|(_, rest)| rest))
                        .filter_map(|rest| rest.split_whitespace().next())
                        .filter(|name| name.starts_with("multus"))
                        .map(str::to_owned)
                        .collect()
                };
                (on("ingress"), on("egress"))
            }
        }
    }
}

fn both_hooks() -> (Vec<String>, Vec<String>) {
    (vec!["multus_ingress".into()], vec!["multus_egress".into()])
}

fn no_hooks() -> (Vec<String>, Vec<String>) {
    (Vec::new(), Vec::new())
}

/// Nothing of ours on any interface, no pins, no map entries, no records.
fn assert_nothing_left(dataplane: &Dataplane, dirs: &Dirs, ifaces: &[Iface<'_>], mode: AttachMode) {
    for iface in ifaces {
        assert_eq!(
            iface.ours(mode),
            no_hooks(),
            "{} left attached",
            iface.ifname
        );
    }
    assert!(dirs.link_pins().is_empty(), "{:?}", dirs.link_pins());
    assert!(dataplane.attached_ids().unwrap().is_empty());
    assert!(dataplane.attachments().unwrap().is_empty());
}

fn attaches_many_interfaces_in_one_call(mode: AttachMode) {
    const N: u32 = 12;
    let net = MacvlanPods::new(3);
    let (a, b, c) = (&net.pods[0], &net.pods[1], &net.pods[2]);
    // Two more interfaces in a's namespace: both ends of a veth pair.
    a.netns
        .ip(&["link", "add", "bva", "type", "veth", "peer", "name", "bvb"]);
    a.netns.ip(&["link", "set", "bva", "up"]);
    a.netns.ip(&["link", "set", "bvb", "up"]);
    let ifaces = [
        Iface::new(&a.netns, &a.ifname),
        Iface::new(&b.netns, &b.ifname),
        Iface::new(&c.netns, &c.ifname),
        Iface::new(&a.netns, "bva"),
        Iface::new(&a.netns, "bvb"),
    ];
    let dirs = Dirs::new();
    let mut dataplane = dirs.load(mode);
    let requests: Vec<_> = ifaces.iter().map(|i| i.request(None)).collect();

    let records = dataplane.attach_many(&requests).unwrap();

    // One record per request, in request order, each with an id of its own.
    assert_eq!(records.len(), ifaces.len());
    for (record, iface) in records.iter().zip(&ifaces) {
        assert_eq!(
            (&record.netns, &record.ifname),
            (&iface.path, &iface.ifname)
        );
        assert_eq!(record.mode, mode);
        assert_eq!(record.owner.network, format!("test/{}", iface.ifname));
    }
    let ids: BTreeSet<u32> = records.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), records.len(), "ids must differ: {ids:?}");
    assert_eq!(dataplane.attached_ids().unwrap(), ids);
    assert_eq!(dataplane.attachments().unwrap(), records);
    // Both hooks of every interface carry the programs by the time the call returns.
    for iface in &ifaces {
        assert_eq!(iface.ours(mode), both_hooks(), "{}", iface.ifname);
    }
    if mode == AttachMode::Tcx {
        let expected: Vec<PathBuf> = records
            .iter()
            .flat_map(|r| {
                ["egress", "ingress"]
                    .map(|hook| Path::new("links").join(r.id.to_string()).join(hook))
            })
            .collect();
        let mut pins = dirs.link_pins();
        pins.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(pins, expected);
    }
    // Every pinned link hangs on the interface its record names (gc removes any that does not).
    let report = dataplane.gc();
    assert!(report.removed.is_empty(), "{:?}", report.removed);
    assert!(report.errors.is_empty(), "{:?}", report.errors);

    assert_eq!(a.ping(IpAddr::V4(b.ip4), N), N);
    let n = u64::from(N);
    let counters: Vec<_> = records
        .iter()
        .map(|r| dataplane.counters(r.id).unwrap())
        .collect();
    for (i, c) in counters.iter().enumerate().take(2) {
        assert_eq!(
            (c.egress.packets, c.ingress.packets, c.egress.bytes),
            (n, n, n * PING_FRAME),
            "{}: {c:?}",
            ifaces[i].ifname
        );
    }
    for (i, c) in counters.iter().enumerate().skip(2) {
        assert_eq!(
            (c.egress.packets, c.ingress.packets),
            (0, 0),
            "{} saw traffic: {c:?}",
            ifaces[i].ifname
        );
    }

    for record in &records {
        dataplane.detach(record.id).unwrap();
    }
    assert_nothing_left(&dataplane, &dirs, &ifaces, mode);
}

#[test]
fn attaches_many_interfaces_in_one_call_with_tcx() {
    if require_root("attaches_many_interfaces_in_one_call_with_tcx") {
        attaches_many_interfaces_in_one_call(AttachMode::Tcx);
    }
}

#[test]
fn attaches_many_interfaces_in_one_call_with_clsact() {
    if require_root("attaches_many_interfaces_in_one_call_with_clsact") {
        attaches_many_interfaces_in_one_call(AttachMode::Clsact);
    }
}

#[test]
fn a_hook_failing_on_one_interface_rolls_back_the_whole_batch() {
    if !require_root("a_hook_failing_on_one_interface_rolls_back_the_whole_batch") {
        return;
    }
    let net = MacvlanPods::new(3);
    let (a, b, c) = (&net.pods[0], &net.pods[1], &net.pods[2]);
    let ifaces = [
        Iface::new(&a.netns, &a.ifname),
        Iface::new(&b.netns, &b.ifname),
        Iface::new(&c.netns, &c.ifname),
    ];
    let dirs = Dirs::new();
    let mut dataplane = dirs.load(AttachMode::Tcx);
    let requests: Vec<_> = ifaces.iter().map(|i| i.request(None)).collect();
    // c's egress hook holds 64 programs already: the kernel refuses a 65th (ERANGE), while
    // every other hook of the batch attaches fine.
    let full = FullHook::new(c, false);

    let err = dataplane.attach_many(&requests).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("multus_egress") && text.contains(c.netns.name()),
        "the error names the failed hook and interface: {text}"
    );
    assert!(
        matches!(err, DataplaneError::Attach { program, .. } if program == "multus_egress"),
        "only the failed hook is reported, the rollback went cleanly: {err:?}"
    );
    assert_nothing_left(&dataplane, &dirs, &ifaces, AttachMode::Tcx);

    // With room on the hook again the same batch attaches, and reuses the ids.
    drop(full);
    let records = dataplane.attach_many(&requests).unwrap();
    assert_eq!(records.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3]);
    for iface in &ifaces {
        assert_eq!(
            iface.ours(AttachMode::Tcx),
            both_hooks(),
            "{}",
            iface.ifname
        );
    }
    for record in &records {
        dataplane.detach(record.id).unwrap();
    }
    assert_nothing_left(&dataplane, &dirs, &ifaces, AttachMode::Tcx);
}

#[test]
fn a_bad_request_fails_the_batch_before_anything_exists() {
    if !require_root("a_bad_request_fails_the_batch_before_anything_exists") {
        return;
    }
    let net = MacvlanPods::new(2);
    let (a, b) = (&net.pods[0], &net.pods[1]);
    let ifaces = [
        Iface::new(&a.netns, &a.ifname),
        Iface::new(&b.netns, &b.ifname),
    ];
    let missing = Iface::new(&b.netns, "nosuch0");
    // An except outside its CIDR.
    let bad_policy = Policy {
        ingress: DirectionPolicy::allow_by_default(vec![Rule::deny().peer_except(
            "192.0.2.0/28".parse().unwrap(),
            vec!["198.51.100.0/24".parse().unwrap()],
        )]),
        ..Policy::default()
    };
    for mode in [AttachMode::Tcx, AttachMode::Clsact] {
        let dirs = Dirs::new();
        let mut dataplane = dirs.load(mode);
        let err = dataplane
            .attach_many(&[ifaces[0].request(None), missing.request(None)])
            .unwrap_err();
        assert!(err.to_string().contains("nosuch0"), "{err}");
        let err = dataplane
            .attach_many(&[
                ifaces[0].request(None),
                ifaces[1].request(None),
                ifaces[0].request(None),
            ])
            .unwrap_err();
        assert!(matches!(err, DataplaneError::Duplicate { .. }), "{err:?}");
        let err = dataplane
            .attach_many(&[
                ifaces[0].request(None),
                ifaces[1].request(Some(&bad_policy)),
            ])
            .unwrap_err();
        assert!(matches!(err, DataplaneError::Policy(_)), "{err:?}");
        assert_nothing_left(&dataplane, &dirs, &ifaces, mode);
        assert!(dataplane.attach_many(&[]).unwrap().is_empty());
    }
}

#[test]
fn each_interface_of_a_batch_gets_its_own_policy_from_the_first_packet() {
    if !require_root("each_interface_of_a_batch_gets_its_own_policy_from_the_first_packet") {
        return;
    }
    const N: u32 = 5;
    let net = MacvlanPods::new(3);
    let (a, b, c) = (&net.pods[0], &net.pods[1], &net.pods[2]);
    let ifaces = [
        Iface::new(&a.netns, &a.ifname),
        Iface::new(&b.netns, &b.ifname),
    ];
    let deny_b = Policy {
        egress: DirectionPolicy::allow_by_default(vec![
            Rule::deny().peer(IpNet::new(IpAddr::V4(b.ip4), 32).unwrap()),
        ]),
        ..Policy::default()
    };
    let dirs = Dirs::new();
    let mut dataplane = dirs.load(AttachMode::Tcx);
    let records = dataplane
        .attach_many(&[ifaces[0].request(Some(&deny_b)), ifaces[1].request(None)])
        .unwrap();
    assert_eq!(records[0].policy.as_ref(), Some(&deny_b));
    assert_eq!(records[1].policy, None);

    assert_eq!(a.ping(IpAddr::V4(b.ip4), N), 0, "a's policy denies b");
    let on_a = dataplane.counters(records[0].id).unwrap();
    assert!(
        on_a.egress.drops(DropReason::PolicyDeny).0 >= u64::from(N),
        "{on_a:?}"
    );
    assert_eq!(b.ping(IpAddr::V4(c.ip4), N), N, "b has no policy");
    let on_b = dataplane.counters(records[1].id).unwrap();
    assert_eq!(on_b.egress.dropped(), 0, "{on_b:?}");
    assert_eq!(on_b.egress.packets, u64::from(N), "{on_b:?}");
    for record in &records {
        dataplane.detach(record.id).unwrap();
    }
    assert_nothing_left(&dataplane, &dirs, &ifaces, AttachMode::Tcx);
}

#[test]
fn a_failure_before_the_programs_rolls_back_cleanly_in_both_modes() {
    if !require_root("a_failure_before_the_programs_rolls_back_cleanly_in_both_modes") {
        return;
    }
    let net = MacvlanPods::new(2);
    let ifaces = [
        Iface::new(&net.pods[0].netns, &net.pods[0].ifname),
        Iface::new(&net.pods[1].netns, &net.pods[1].ifname),
    ];
    for mode in [AttachMode::Tcx, AttachMode::Clsact] {
        let dirs = Dirs::new();
        let mut dataplane = dirs.load(mode);
        // The record directory turns into a file: the batch cannot record its attachments.
        let records = dirs.layout().records();
        std::fs::remove_dir_all(&records).unwrap();
        std::fs::write(&records, "not a directory").unwrap();
        let requests: Vec<_> = ifaces.iter().map(|i| i.request(None)).collect();

        let err = dataplane.attach_many(&requests).unwrap_err();
        assert!(
            matches!(err, DataplaneError::Io(_)),
            "only the cause is reported, the rollback went cleanly: {err:?}"
        );
        std::fs::remove_file(&records).unwrap();
        std::fs::create_dir(&records).unwrap();
        assert_nothing_left(&dataplane, &dirs, &ifaces, mode);
    }
}
