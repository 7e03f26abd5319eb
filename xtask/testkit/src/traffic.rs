//! Traffic inside test namespaces: a TCP server that reports what it received, bounded client
//! connects and transfers, UDP sockets, and hand-built Ethernet frames sent through a packet
//! socket. Every wait has a timeout.
use std::{
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::netns::Netns;

/// How long a server waits for a client's data before giving up on it.
const SERVER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP server inside a namespace: reads each connection to its end, then answers with the
/// number of bytes it read (8 bytes, big-endian) and closes. Stops on drop.
pub struct TcpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpServer {
    /// Listens on `addr` inside `netns`.
    #[track_caller]
    pub fn start(netns: &Netns, addr: SocketAddr) -> Self {
        let listener = netns
            .enter(|| TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("listening on {addr} in {}: {e}", netns.name()));
        if let Err(e) = listener.set_nonblocking(true) {
            panic!("non-blocking listener: {e}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || serve(&listener, &stop))
        };
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                std::thread::spawn(move || {
                    let _ = count_and_answer(conn);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
}

fn count_and_answer(mut conn: TcpStream) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(SERVER_READ_TIMEOUT))?;
    let mut buf = [0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        match conn.read(&mut buf)? {
            0 => break,
            n => total += n as u64,
        }
    }
    conn.write_all(&total.to_be_bytes())?;
    conn.shutdown(Shutdown::Write)
}

/// Connects from inside `netns` to `addr`, giving up after `timeout`.
pub fn tcp_connect(netns: &Netns, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    netns.enter(|| TcpStream::connect_timeout(&addr, timeout))
}

/// Sends `bytes` bytes from inside `netns` to a [`TcpServer`] at `addr` and returns the count the
/// server reported back.
pub fn tcp_transfer(
    netns: &Netns,
    addr: SocketAddr,
    bytes: usize,
    timeout: Duration,
) -> io::Result<u64> {
    let mut conn = tcp_connect(netns, addr, timeout)?;
    conn.set_write_timeout(Some(timeout))?;
    conn.set_read_timeout(Some(timeout))?;
    let chunk = [0x5au8; 16 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        conn.write_all(&chunk[..n])?;
        left -= n;
    }
    conn.shutdown(Shutdown::Write)?;
    let mut answer = [0u8; 8];
    conn.read_exact(&mut answer)?;
    // Wait for the server's FIN, so the whole exchange is over when we return.
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest)?;
    Ok(u64::from_be_bytes(answer))
}

/// A UDP socket bound to `addr` inside `netns`, with a short read timeout.
#[track_caller]
pub fn udp_socket(netns: &Netns, addr: SocketAddr) -> UdpSocket {
    let socket = netns
        .enter(|| UdpSocket::bind(addr))
        .unwrap_or_else(|e| panic!("binding UDP {addr} in {}: {e}", netns.name()));
    if let Err(e) = socket.set_read_timeout(Some(Duration::from_millis(50))) {
        panic!("UDP read timeout: {e}");
    }
    socket
}

/// Receives datagrams on `socket` until none has come for `quiet`, and returns how many came.
pub fn udp_count(socket: &UdpSocket, quiet: Duration) -> usize {
    let mut buf = [0u8; 2048];
    let mut count = 0;
    let mut idle = Duration::ZERO;
    while idle < quiet {
        match socket.recv(&mut buf) {
            Ok(_) => {
                count += 1;
                idle = Duration::ZERO;
            }
            Err(_) => idle += Duration::from_millis(50),
        }
    }
    count
}

/// Parses `aa:bb:cc:dd:ee:ff`.
#[track_caller]
pub fn parse_mac(mac: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    let parts: Vec<_> = mac.split(':').collect();
    assert_eq!(parts.len(), 6, "MAC {mac}");
    for (byte, part) in out.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16).unwrap_or_else(|e| panic!("MAC {mac}: {e}"));
    }
    out
}

/// Addresses and ports of a hand-built IPv4/UDP frame.
#[derive(Clone, Copy, Debug)]
pub struct Udp4 {
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

impl Udp4 {
    /// The Ethernet frame carrying `payload` (UDP checksum 0, allowed for IPv4).
    pub fn frame(&self, payload: &[u8]) -> Vec<u8> {
        let udp_len = 8 + payload.len();
        let ip_len = 20 + udp_len;
        let mut f = Vec::with_capacity(14 + ip_len);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.extend_from_slice(&ipv4_header(self.src, self.dst, 17, ip_len));
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }
}

/// An Ethernet frame carrying an ICMP error (`icmp_type`, `code`) from `src` to `dst` that quotes
/// `quoted` (an IPv4 header and the first bytes behind it), as a router or host would send it.
pub fn icmp4_error_frame(
    macs: ([u8; 6], [u8; 6]),
    src: Ipv4Addr,
    dst: Ipv4Addr,
    (icmp_type, code): (u8, u8),
    quoted: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![icmp_type, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quoted);
    let sum = checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let ip_len = 20 + icmp.len();
    let mut f = Vec::with_capacity(14 + ip_len);
    f.extend_from_slice(&macs.1);
    f.extend_from_slice(&macs.0);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&ipv4_header(src, dst, 1, ip_len));
    f.extend_from_slice(&icmp);
    f
}

/// An IPv4 header without options for a packet of `total_len` bytes, checksum filled in.
fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, total_len: usize) -> [u8; 20] {
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one raw Ethernet frame out of `ifname` inside `netns` (it passes TC egress like any
/// other frame the interface sends).
pub fn send_frame(netns: &Netns, ifname: &str, frame: &[u8]) -> io::Result<()> {
    netns.enter(|| {
        let (fd, mut addr) = crate::tap::packet_socket(ifname, 0)?;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: buffer and address are valid for the sizes given.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::from_ref(&addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    })
}
