//! Helpers shared by the dataplane root tests.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers; not every test file uses every helper"
)]

pub mod frames;

use std::{net::SocketAddr, path::Path, time::Duration};

use multus_agent::dataplane::{
    self, AttachMode, AttachRequest, Dataplane, DataplaneError, InterfaceCounters, PinLayout,
    Policy,
};
use multus_testkit::{BpffsDir, Pod, raw_bpf, traffic};

/// Layer-2 size of a default IPv4 ping (56 data + 8 ICMP + 20 IPv4 + 14 Ethernet bytes).
pub const PING_FRAME: u64 = 98;

/// A bpffs directory and a state directory of one test, removed on drop; any number of loaders
/// can share them, as agents after one another do.
pub struct Dirs {
    pub state: tempfile::TempDir,
    pub bpffs: BpffsDir,
}

impl Dirs {
    pub fn new() -> Self {
        Self {
            state: tempfile::tempdir().unwrap(),
            bpffs: BpffsDir::new("mt"),
        }
    }

    pub fn layout(&self) -> PinLayout {
        PinLayout::new(self.bpffs.path(), self.state.path())
    }

    /// Loads a dataplane on these directories; adoption must go without errors.
    pub fn load(&self, mode: AttachMode) -> Dataplane {
        load(&self.bpffs, self.state.path(), mode)
    }

    /// Link pins left: everything under the bpffs directory that is not a map.
    pub fn link_pins(&self) -> Vec<std::path::PathBuf> {
        self.bpffs
            .entries()
            .into_iter()
            .filter(|p| !p.starts_with("maps"))
            .collect()
    }
}

/// A dataplane on directories of its own (dropped before them).
pub struct Fixture {
    pub dataplane: Dataplane,
    pub dirs: Dirs,
}

impl Fixture {
    pub fn new(mode: AttachMode) -> Self {
        let dirs = Dirs::new();
        Self {
            dataplane: dirs.load(mode),
            dirs,
        }
    }

    pub fn layout(&self) -> PinLayout {
        self.dirs.layout()
    }

    pub fn attach(&mut self, pod: &Pod, policy: Option<&Policy>) -> u32 {
        attach(&mut self.dataplane, pod, policy)
    }

    /// Attaches expecting a failure, and returns it.
    pub fn attach_err(&mut self, pod: &Pod, policy: &Policy) -> DataplaneError {
        let netns = pod.netns.path();
        self.dataplane
            .attach(&AttachRequest {
                netns: &netns,
                ifname: &pod.ifname,
                owner: Default::default(),
                policy: Some(policy),
                policy_source: None,
            })
            .expect_err("attach must fail")
    }

    pub fn counters(&self, id: u32) -> InterfaceCounters {
        self.dataplane.counters(id).unwrap()
    }
}

pub fn load(bpffs: &BpffsDir, state: &Path, mode: AttachMode) -> Dataplane {
    let (dataplane, adoption) =
        Dataplane::load(PinLayout::new(bpffs.path(), state), mode).expect("load dataplane");
    assert!(
        adoption.errors.is_empty(),
        "adoption errors: {:?}",
        adoption.errors
    );
    dataplane
}

pub fn attach(dataplane: &mut Dataplane, pod: &Pod, policy: Option<&Policy>) -> u32 {
    let netns = pod.netns.path();
    dataplane
        .attach(&AttachRequest {
            netns: &netns,
            ifname: &pod.ifname,
            owner: Default::default(),
            policy,
            policy_source: None,
        })
        .expect("attach")
        .id
}

/// The TC programs on `pod`'s interface, TCX links and clsact filters, as the kernel reports them.
pub fn tc_programs(pod: &Pod) -> String {
    let mut out = dataplane::tcx_programs(&pod.netns.path(), &pod.ifname)
        .expect("query tcx")
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
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

/// Whether a TCP connection from `pod` to `addr` gets through within a second.
pub fn connects(pod: &Pod, addr: SocketAddr) -> bool {
    traffic::tcp_connect(&pod.netns, addr, Duration::from_secs(1)).is_ok()
}

/// One TCX hook of an interface filled up to the kernel's limit of programs per hook (63) with
/// trivial programs of its own, so the next attach there fails with ERANGE: a real kernel
/// failure in the middle of a batch. Dropping it detaches them.
pub struct FullHook {
    _links: Vec<std::os::fd::OwnedFd>,
}

impl FullHook {
    pub fn new(pod: &Pod, ingress: bool) -> Self {
        let links = dataplane::netns::run_in(&pod.netns.path(), || {
            let ifindex = nix::net::if_::if_nametoindex(pod.ifname.as_str()).unwrap();
            let mut links = Vec::new();
            // Each its own program: the kernel refuses one program twice on a hook.
            loop {
                match raw_bpf::tcx_link(
                    &raw_bpf::load_program(raw_bpf::TC_ACT_UNSPEC).unwrap(),
                    ifindex,
                    ingress,
                ) {
                    Ok(link) => links.push(link),
                    Err(e) if e.raw_os_error() == Some(libc::ERANGE) => break,
                    Err(e) => panic!("filling the hook: {e}"),
                }
                assert!(links.len() <= 1024, "the hook never filled up");
            }
            Ok(links)
        })
        .unwrap();
        Self { _links: links }
    }
}

/// Someone else's TCX program on one hook of an interface, returning `verdict` for every packet
/// (0: TCX_PASS, which ends the hook's chain). Dropping it detaches it.
pub struct ForeignProgram {
    _link: std::os::fd::OwnedFd,
}

impl ForeignProgram {
    pub fn new(pod: &Pod, ingress: bool, verdict: i32) -> Self {
        let link = dataplane::netns::run_in(&pod.netns.path(), || {
            let ifindex = nix::net::if_::if_nametoindex(pod.ifname.as_str()).unwrap();
            Ok(
                raw_bpf::tcx_link(&raw_bpf::load_program(verdict).unwrap(), ifindex, ingress)
                    .unwrap(),
            )
        })
        .unwrap();
        Self { _link: link }
    }
}
