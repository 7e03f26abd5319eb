//! Hand-built frames for the dataplane's bypass tests: IPv6 with extension header chains, ARP of
//! any hardware type, neighbour discovery. Checksums are filled in where a receiving stack would
//! look at them, so a frame that passes is one a real host would take.
use std::net::{Ipv4Addr, Ipv6Addr};

/// Ethernet header.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// The IPv6 upper-layer checksum of `l4` (its checksum field zero) for `proto`.
pub fn checksum6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, l4: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, proto]);
    fold(sum16(&pseudo) + sum16(l4))
}

/// A TCP SYN header (20 bytes) with its checksum for IPv6.
pub fn tcp_syn6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let sum = checksum6(src, dst, 6, &t);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    t
}

/// An IPv6 frame: `ext` destination-options headers (8 bytes each, padding only) in front of
/// `l4` of protocol `proto`, hop limit `hops`.
pub fn ipv6_frame(
    macs: ([u8; 6], [u8; 6]),
    (src, dst): (Ipv6Addr, Ipv6Addr),
    ext: usize,
    proto: u8,
    hops: u8,
    l4: &[u8],
) -> Vec<u8> {
    let mut f = ethernet(macs.1, macs.0, 0x86dd);
    let payload = ext * 8 + l4.len();
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload as u16).to_be_bytes());
    f.push(if ext == 0 { proto } else { 60 });
    f.push(hops);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    for i in 0..ext {
        let next = if i + 1 == ext { proto } else { 60 };
        // Next header, length 0 (8 bytes), a PadN option filling the other six.
        f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    f.extend_from_slice(l4);
    f
}

/// An ICMPv6 message (`body` after type, code and checksum) with its checksum.
pub fn icmp6(src: Ipv6Addr, dst: Ipv6Addr, icmp_type: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![icmp_type, 0, 0, 0];
    m.extend_from_slice(body);
    let sum = checksum6(src, dst, 58, &m);
    m[2..4].copy_from_slice(&sum.to_be_bytes());
    m
}

/// A neighbour advertisement (solicited, override) for `target` with a target link-layer
/// address option carrying `lladdr`.
pub fn neighbour_advert(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    lladdr: [u8; 6],
) -> Vec<u8> {
    let mut body = vec![0x60, 0, 0, 0];
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&lladdr);
    icmp6(src, dst, 136, &body)
}

/// A router advertisement (default router for 1800 s) with a source link-layer address option.
pub fn router_advert(src: Ipv6Addr, dst: Ipv6Addr, lladdr: [u8; 6]) -> Vec<u8> {
    let mut body = vec![64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&lladdr);
    icmp6(src, dst, 134, &body)
}

/// An ARP message (`op` 1 request, 2 reply) with hardware type `hrd`.
pub fn arp(
    macs: ([u8; 6], [u8; 6]),
    hrd: u16,
    op: u16,
    (sha, spa): ([u8; 6], Ipv4Addr),
    (tha, tpa): ([u8; 6], Ipv4Addr),
) -> Vec<u8> {
    let mut f = ethernet(macs.1, macs.0, 0x0806);
    f.extend_from_slice(&hrd.to_be_bytes());
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

/// The link-local address of `ifname` in `netns` (IPv6 must be on).
#[track_caller]
pub fn link_local(netns: &multus_testkit::Netns, ifname: &str) -> Ipv6Addr {
    let out = netns.ip(&["-6", "-br", "addr", "show", "dev", ifname, "scope", "link"]);
    out.split_whitespace()
        .find_map(|w| w.split('/').next()?.parse::<Ipv6Addr>().ok())
        .unwrap_or_else(|| panic!("no link-local address on {ifname}: {out}"))
}

/// An IPv4 TCP segment without payload carrying `flags` (checksums left zero: only the
/// dataplane's verdict is looked at).
pub fn tcp4(
    macs: ([u8; 6], [u8; 6]),
    (src, dst): (Ipv4Addr, Ipv4Addr),
    (sport, dport): (u16, u16),
    flags: u8,
) -> Vec<u8> {
    let mut f = ethernet(macs.1, macs.0, 0x0800);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = fold(sum16(&ip));
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&1024u16.to_be_bytes());
    f.extend_from_slice(&t);
    f
}
