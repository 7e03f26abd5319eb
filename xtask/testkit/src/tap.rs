//! A packet tap on one interface of a test namespace: an `AF_PACKET` socket that records every
//! frame the interface sends or receives, with its full length, so tests can compare counters
//! against what really went over the link.
//!
//! The kernel shows the tap the same buffers the TC hooks see (whole GSO/GRO super-frames, layer-2
//! header included), received frames *before* TC ingress and sent frames *after* TC egress.
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::Netns;

/// Bytes of each frame kept for inspection.
pub const HEAD_LEN: usize = 128;

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Sent by the interface (as opposed to received).
    pub outgoing: bool,
    /// Full length, layer 2 included.
    pub len: usize,
    /// The first bytes (up to [`HEAD_LEN`]).
    pub head: Vec<u8>,
}

impl Frame {
    /// EtherType (no VLAN handling: the test links carry none).
    pub fn ethertype(&self) -> u16 {
        u16::from_be_bytes([self.head[12], self.head[13]])
    }

    /// For IPv4 TCP/UDP frames: (protocol, source port, destination port).
    pub fn ipv4_ports(&self) -> Option<(u8, u16, u16)> {
        if self.ethertype() != 0x0800 || self.head.len() < 38 {
            return None;
        }
        let ihl = usize::from(self.head[14] & 0x0f) * 4;
        let l4 = 14 + ihl;
        let port = |at: usize| u16::from_be_bytes([self.head[at], self.head[at + 1]]);
        Some((self.head[23], port(l4), port(l4 + 2)))
    }
}

/// A running capture; [`PacketTap::finish`] stops it and returns the frames.
pub struct PacketTap {
    fd: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<io::Result<Vec<Frame>>>>,
}

impl PacketTap {
    /// Starts capturing on `ifname` inside `netns`.
    #[track_caller]
    pub fn start(netns: &Netns, ifname: &str) -> Self {
        let fd = netns
            .enter(|| open(ifname))
            .unwrap_or_else(|e| panic!("packet socket on {ifname} in {}: {e}", netns.name()));
        let fd = Arc::new(fd);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (fd, stop) = (Arc::clone(&fd), Arc::clone(&stop));
            std::thread::spawn(move || read_all(&fd, &stop))
        };
        Self {
            fd,
            stop,
            reader: Some(reader),
        }
    }

    /// Waits until the link has been quiet for `quiet`, stops, and returns every frame. Panics if
    /// the kernel dropped frames on the way to the tap (the capture would be incomplete).
    #[track_caller]
    pub fn finish(mut self, quiet: Duration) -> Vec<Frame> {
        std::thread::sleep(quiet);
        self.stop.store(true, Ordering::Relaxed);
        let frames = match self.reader.take().map(JoinHandle::join) {
            Some(Ok(Ok(frames))) => frames,
            Some(Ok(Err(e))) => panic!("packet tap: {e}"),
            _ => panic!("packet tap reader died"),
        };
        let dropped = dropped(&self.fd).unwrap_or_else(|e| panic!("PACKET_STATISTICS: {e}"));
        assert_eq!(dropped, 0, "the packet tap lost {dropped} frames");
        frames
    }
}

impl Drop for PacketTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn last_error<T>(rc: i32, v: T) -> io::Result<T> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(v)
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live, correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    last_error(rc, ())
}

/// An `AF_PACKET` raw socket for `protocol` (network order) and the link-layer address of
/// `ifname` (in the calling thread's namespace) to bind or send to.
pub(crate) fn packet_socket(
    ifname: &str,
    protocol: u16,
) -> io::Result<(OwnedFd, libc::sockaddr_ll)> {
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol),
        )
    };
    let fd = last_error(raw, raw)?;
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol;
    addr.sll_ifindex = ifindex as i32;
    Ok((fd, addr))
}

fn open(ifname: &str) -> io::Result<OwnedFd> {
    let (fd, addr) = packet_socket(ifname, (libc::ETH_P_ALL as u16).to_be())?;
    // A burst of GSO frames must not overflow the socket while the reader catches up.
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &(64 << 20_i32))?;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 20_000,
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
    // SAFETY: `addr` is a valid sockaddr_ll of the given size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&addr).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    last_error(rc, ())?;
    // Frames queued between socket() and bind() may come from any interface: start clean.
    dropped(&fd)?;
    drain(&fd);
    Ok(fd)
}

fn drain(fd: &OwnedFd) {
    let mut buf = [0u8; 1];
    // SAFETY: `buf` is writable for its length.
    while unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    } >= 0
    {}
}

fn read_all(fd: &OwnedFd, stop: &AtomicBool) -> io::Result<Vec<Frame>> {
    let mut frames = Vec::new();
    loop {
        if stop.load(Ordering::Relaxed) {
            // Whatever is still queued was captured before the stop: keep it.
            while let Some(frame) = recv_frame(fd, libc::MSG_DONTWAIT)? {
                frames.push(frame);
            }
            return Ok(frames);
        }
        if let Some(frame) = recv_frame(fd, 0)? {
            frames.push(frame);
        }
    }
}

/// One frame, or `None` when none came within the receive timeout (or at once, non-blocking).
fn recv_frame(fd: &OwnedFd, flags: i32) -> io::Result<Option<Frame>> {
    let mut buf = [0u8; HEAD_LEN];
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: buffer and address are writable for the sizes given.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_TRUNC | flags,
            std::ptr::from_mut(&mut from).cast(),
            &raw mut from_len,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        };
    }
    let len = n as usize;
    Ok(Some(Frame {
        outgoing: from.sll_pkttype == libc::PACKET_OUTGOING,
        len,
        head: buf[..len.min(HEAD_LEN)].to_vec(),
    }))
}

/// Frames the kernel dropped for this socket since the last call.
fn dropped(fd: &OwnedFd) -> io::Result<u32> {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `stats` is writable for `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            std::ptr::from_mut(&mut stats).cast(),
            &raw mut len,
        )
    };
    last_error(rc, stats.tp_drops)
}
