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
use multus_testkit::{BpffsDir, Pod, traffic};

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
                match raw_bpf::tcx_link(&raw_bpf::load_pass_program(), ifindex, ingress) {
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
            Ok(raw_bpf::tcx_link(&raw_bpf::load_program(verdict), ifindex, ingress).unwrap())
        })
        .unwrap();
        Self { _link: link }
    }
}

/// The two `bpf(2)` calls [`FullHook`] needs, for a program that only returns TC_ACT_UNSPEC.
/// Written apart from the dataplane's own syscall code on purpose: the test's sabotage must not
/// share a bug with what it tests.
mod raw_bpf {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
    const BPF_TCX_INGRESS: u32 = 46;
    const BPF_TCX_EGRESS: u32 = 47;

    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
    }

    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
    }

    fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
        // SAFETY: `attr` is a valid `bpf_attr` prefix for `cmd` and lives for the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                std::ptr::from_mut(attr),
                size_of::<T>() as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this descriptor; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    pub fn load_pass_program() -> OwnedFd {
        // TC_ACT_UNSPEC
        load_program(-1)
    }

    /// A program that returns `verdict`.
    pub fn load_program(verdict: i32) -> OwnedFd {
        // r0 = verdict; exit
        let [v0, v1, v2, v3] = verdict.to_le_bytes();
        let insns: [u64; 2] = [
            u64::from_le_bytes([0xb7, 0, 0, 0, v0, v1, v2, v3]),
            u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
        ];
        let license = c"GPL";
        let mut attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_SCHED_CLS,
            insn_cnt: 2,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
        };
        bpf(BPF_PROG_LOAD, &mut attr).expect("loading a test program")
    }

    /// Fails with ERANGE once the hook is full.
    pub fn tcx_link(prog: &OwnedFd, ifindex: u32, ingress: bool) -> std::io::Result<OwnedFd> {
        let mut attr = LinkCreate {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: if ingress {
                BPF_TCX_INGRESS
            } else {
                BPF_TCX_EGRESS
            },
            flags: 0,
        };
        bpf(BPF_LINK_CREATE, &mut attr)
    }
}
