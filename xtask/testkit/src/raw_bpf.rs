//! The two `bpf(2)` calls a program that only returns a fixed verdict needs: load it and link it
//! to a TCX hook. Written apart from the dataplane's own syscall code on purpose: tests that use
//! such a program as sabotage (someone else's program first on the hook) must not share a bug
//! with what they test, and the dataplane bench uses one to measure what a hook costs at all.
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// TC_ACT_UNSPEC: on to the next program, or the packet's way if none.
pub const TC_ACT_UNSPEC: i32 = -1;

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
    let (attr, size) = (std::ptr::from_mut(attr), size_of::<T>() as libc::c_uint);
    // SAFETY: `attr` is a valid `bpf_attr` prefix for `cmd` and lives for the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    // Negative is an error, in errno; a descriptor fits an i32.
    let fd = i32::try_from(ret)
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(std::io::Error::last_os_error)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads a TC program that returns `verdict` and does nothing else.
pub fn load_program(verdict: i32) -> std::io::Result<OwnedFd> {
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
    bpf(BPF_PROG_LOAD, &mut attr)
}

/// Links `prog` to the TCX hook of `ifindex` (in the caller's namespace), after the programs
/// there; the link lives as long as the descriptor. Fails with ERANGE once the hook is full.
pub fn tcx_link(prog: &OwnedFd, ifindex: u32, ingress: bool) -> std::io::Result<OwnedFd> {
    let attach_type = [BPF_TCX_EGRESS, BPF_TCX_INGRESS][usize::from(ingress)];
    // No flags: appended after whatever is on the hook.
    let mut attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        flags: 0,
    };
    bpf(BPF_LINK_CREATE, &mut attr)
}
