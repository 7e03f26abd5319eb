//! The few `bpf(2)` commands aya does not expose, or exposes only behind `&mut`: deleting an
//! element of an array of maps, asking a pinned TCX link which interface it still hangs on, and
//! creating and pinning TCX links from any thread (aya's `SchedClassifier::attach` takes
//! `&mut self`, which would serialise the attaches of one batch).
use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::Path,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
/// `BPF_MAP_TYPE_LRU_HASH`.
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_F_BEFORE`: with no relative program, the front of a TCX hook.
const BPF_F_BEFORE: u32 = 1 << 3;

/// `enum bpf_attach_type` values of the two TCX hooks.
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;

/// `union bpf_attr` for the map element commands.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The start of `union bpf_attr` for `BPF_MAP_CREATE` (the rest stays zero).
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for `BPF_OBJ_GET` and `BPF_OBJ_PIN`.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    pad: u32,
}

/// `union bpf_attr` for `BPF_LINK_CREATE` with its TCX member.
#[repr(C)]
#[derive(Default)]
struct TcxLinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    pad: u32,
    expected_revision: u64,
}

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The start of `struct bpf_link_info` with its TCX member; the rest is padding the kernel
/// requires to be zero.
#[repr(C)]
#[derive(Default)]
struct LinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    pad: u32,
    tcx_ifindex: u32,
    tcx_attach_type: u32,
    rest: [u64; 6],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a properly sized, initialized `bpf_attr` prefix for `cmd`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Deletes element `index` of an array of maps (aya's `ArrayOfMaps` only sets).
pub fn delete_array_of_maps_elem(map: BorrowedFd<'_>, index: u32) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: std::ptr::from_ref(&index) as u64,
        ..MapElemAttr::default()
    };
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(drop)
}

/// Creates an LRU hash map of `max_entries` (aya creates only the plain hash from userspace).
pub fn create_lru_hash(
    name: &str,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type: BPF_MAP_TYPE_LRU_HASH,
        key_size,
        value_size,
        max_entries,
        ..MapCreateAttr::default()
    };
    // The kernel takes up to 15 bytes of name and a NUL.
    for (dst, src) in attr.map_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    let fd = bpf(BPF_MAP_CREATE, &mut attr)?;
    // SAFETY: BPF_MAP_CREATE returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Puts map `inner` into element `index` of an array of maps (the kernel takes only `BPF_ANY`
/// there: a map in the slot is replaced).
pub fn set_array_of_maps_elem(
    map: BorrowedFd<'_>,
    index: u32,
    inner: BorrowedFd<'_>,
) -> io::Result<()> {
    let value = inner.as_raw_fd() as u32;
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: std::ptr::from_ref(&index) as u64,
        value: std::ptr::from_ref(&value) as u64,
        ..MapElemAttr::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// A bpffs path as the kernel wants it.
fn c_path(pin: &Path) -> io::Result<CString> {
    CString::new(pin.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Opens the BPF object pinned at `pin` (`BPF_OBJ_GET`).
pub fn obj_get(pin: &Path) -> io::Result<OwnedFd> {
    let path = c_path(pin)?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        ..ObjAttr::default()
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: BPF_OBJ_GET returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Pins the BPF object `fd` at `pin` (`BPF_OBJ_PIN`); the pin holds its own reference.
pub fn obj_pin(fd: BorrowedFd<'_>, pin: &Path) -> io::Result<()> {
    let path = c_path(pin)?;
    let mut attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        ..ObjAttr::default()
    };
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// Attaches program `prog` to the TCX hook of interface `ifindex` in the calling thread's network
/// namespace and returns the new link (`BPF_LINK_CREATE`). Closing the last descriptor of an
/// unpinned link detaches it.
pub fn tcx_link_create(prog: BorrowedFd<'_>, ifindex: u32, ingress: bool) -> io::Result<OwnedFd> {
    let mut attr = TcxLinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: if ingress {
            BPF_TCX_INGRESS
        } else {
            BPF_TCX_EGRESS
        },
        // First on the hook: a program ahead of ours that returns "pass" ends the hook's
        // chain, so the policy would never see the packet. (A program attached later with the
        // same flag still goes ahead; ours returns "next" for what it allows.)
        flags: BPF_F_BEFORE,
        ..TcxLinkCreateAttr::default()
    };
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: BPF_LINK_CREATE returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The interface a pinned TCX link is attached to; 0 once the interface is gone (defunct link).
pub fn tcx_link_ifindex(pin: &Path) -> io::Result<u32> {
    let fd = obj_get(pin)?;
    let mut info = LinkInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<LinkInfo>() as u32,
        info: std::ptr::from_mut(&mut info) as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info.tcx_ifindex)
}

/// The hardware type (`ARPHRD_*`) of interface `ifname` in the calling thread's network namespace
/// (`SIOCGIFHWADDR`).
pub fn hardware_type(ifname: &str) -> io::Result<u16> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; zero is a valid start.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = ifname.as_bytes();
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (dst, &src) in req.ifr_name.iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads the name and writes the hardware address into `req`.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFHWADDR as libc::Ioctl,
            &raw mut req,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR filled the hardware-address member of the union.
    Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}
