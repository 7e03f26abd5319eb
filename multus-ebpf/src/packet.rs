//! Parsing the headers a policy looks at: Ethernet (with up to two VLAN tags), ARP, IPv4, IPv6
//! (with a bounded walk over extension headers), and the ports or ICMP type behind them.
//!
//! Reads go through `bpf_skb_load_bytes`, which also works when headers sit outside the linear
//! part of the buffer. A header that is cut short makes the packet malformed.
use aya_ebpf::{EbpfContext as _, helpers::generated::bpf_skb_load_bytes, programs::TcContext};
use multus_common::policy::{FAMILY_V4, FAMILY_V6};

/// EtherTypes and IP protocol numbers the programs care about.
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

const ETH_HLEN: usize = 14;
const MAX_VLAN_TAGS: usize = 2;
const MAX_IPV6_EXT_HEADERS: usize = 4;

/// What kind of frame this is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    /// Neither IP nor ARP: passes untouched.
    Other,
    /// Ethernet/IPv4 ARP.
    Arp,
    /// IPv4 or IPv6 (see `family`).
    Ip,
}

/// The parsed headers.
pub struct Packet {
    pub l3: L3,
    /// `FAMILY_V4` or `FAMILY_V6` (ARP: `FAMILY_V4`).
    pub family: u8,
    pub src_mac: [u8; 6],
    /// Source and destination address; IPv4 (and ARP's sender/target) in the first four bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// ARP: the sender hardware address.
    pub arp_sha: [u8; 6],
    /// IP protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// Whether the layer-4 fields below were read (not for non-first fragments).
    pub has_l4: bool,
    /// TCP, UDP, SCTP ports.
    pub sport: u16,
    pub dport: u16,
    /// ICMP and ICMPv6 type and echo identifier.
    pub icmp_type: u8,
    pub icmp_id: u16,
}

impl Packet {
    pub const fn new() -> Self {
        Self {
            l3: L3::Other,
            family: FAMILY_V4,
            src_mac: [0; 6],
            src: [0; 16],
            dst: [0; 16],
            arp_sha: [0; 6],
            proto: 0,
            has_l4: false,
            sport: 0,
            dport: 0,
            icmp_type: 0,
            icmp_id: 0,
        }
    }

    /// IPv6 neighbour discovery and multicast listener discovery, which pass unless a rule says
    /// otherwise (without them IPv6 stops working on the link).
    #[inline(always)]
    pub fn is_nd(&self) -> bool {
        self.family == FAMILY_V6
            && self.proto == IPPROTO_ICMPV6
            && self.has_l4
            && matches!(self.icmp_type, 130..=137 | 143)
    }
}

/// The packet could not be parsed.
pub struct Malformed;

/// Copies exactly `N` bytes at `offset` into `dst`.
#[inline(always)]
fn load_into<const N: usize>(
    ctx: &TcContext,
    offset: usize,
    dst: &mut [u8; N],
) -> Result<(), Malformed> {
    // SAFETY: `dst` is valid for `N` bytes; the helper checks the packet bounds itself.
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr(),
            offset as u32,
            dst.as_mut_ptr().cast(),
            N as u32,
        )
    };
    if ret == 0 { Ok(()) } else { Err(Malformed) }
}

/// Reads `N` bytes at `offset`.
#[inline(always)]
fn load<const N: usize>(ctx: &TcContext, offset: usize) -> Result<[u8; N], Malformed> {
    let mut buf = [0u8; N];
    load_into(ctx, offset, &mut buf)?;
    Ok(buf)
}

/// The first four bytes of an address, where IPv4 addresses go.
#[inline(always)]
fn v4_slot(addr: &mut [u8; 16]) -> Result<&mut [u8; 4], Malformed> {
    addr.first_chunk_mut::<4>().ok_or(Malformed)
}

/// Parses the frame at the start of `ctx` into `pkt` (which starts out as [`Packet::new`]).
#[inline(always)]
pub fn parse(ctx: &TcContext, pkt: &mut Packet) -> Result<(), Malformed> {
    load_into(ctx, 6, &mut pkt.src_mac)?;
    let mut ethertype = u16::from_be_bytes(load::<2>(ctx, 12)?);
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = u16::from_be_bytes(load::<2>(ctx, off + 2)?);
        off += 4;
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(ctx, off, pkt),
        ETH_P_IPV6 => parse_ipv6(ctx, off, pkt),
        ETH_P_ARP => parse_arp(ctx, off, pkt),
        _ => Ok(()),
    }
}

#[inline(always)]
fn parse_arp(ctx: &TcContext, off: usize, pkt: &mut Packet) -> Result<(), Malformed> {
    let head: [u8; 8] = load(ctx, off)?;
    // Only Ethernet/IPv4 ARP names IPv4 peers; anything else is left alone like non-IP.
    if head[0..4] != [0, 1, 8, 0] || head[4] != 6 || head[5] != 4 {
        return Ok(());
    }
    load_into(ctx, off + 8, &mut pkt.arp_sha)?;
    load_into(ctx, off + 14, v4_slot(&mut pkt.src)?)?;
    load_into(ctx, off + 24, v4_slot(&mut pkt.dst)?)?;
    pkt.l3 = L3::Arp;
    pkt.family = FAMILY_V4;
    Ok(())
}

#[inline(always)]
fn parse_ipv4(ctx: &TcContext, off: usize, pkt: &mut Packet) -> Result<(), Malformed> {
    let head: [u8; 12] = load(ctx, off)?;
    let ihl = usize::from(head[0] & 0x0f) * 4;
    if head[0] >> 4 != 4 || ihl < 20 {
        return Err(Malformed);
    }
    load_into(ctx, off + 12, v4_slot(&mut pkt.src)?)?;
    load_into(ctx, off + 16, v4_slot(&mut pkt.dst)?)?;
    pkt.l3 = L3::Ip;
    pkt.family = FAMILY_V4;
    pkt.proto = head[9];
    let fragment_offset = u16::from_be_bytes([head[6], head[7]]) & 0x1fff;
    if fragment_offset == 0 {
        parse_l4(ctx, off + ihl, pkt)?;
    }
    Ok(())
}

#[inline(always)]
fn parse_ipv6(ctx: &TcContext, off: usize, pkt: &mut Packet) -> Result<(), Malformed> {
    let head: [u8; 8] = load(ctx, off)?;
    if head[0] >> 4 != 6 {
        return Err(Malformed);
    }
    load_into(ctx, off + 8, &mut pkt.src)?;
    load_into(ctx, off + 24, &mut pkt.dst)?;
    pkt.l3 = L3::Ip;
    pkt.family = FAMILY_V6;
    let mut next = head[6];
    let mut off = off + 40;
    let mut first_fragment = true;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-byte units, minus one.
            0 | 43 | 60 => {
                let h: [u8; 2] = load(ctx, off)?;
                next = h[0];
                off += (usize::from(h[1]) + 1) * 8;
            }
            // Fragment header: fixed 8 bytes.
            44 => {
                let h: [u8; 4] = load(ctx, off)?;
                next = h[0];
                first_fragment = u16::from_be_bytes([h[2], h[3]]) & 0xfff8 == 0;
                off += 8;
            }
            // Authentication header: length in 4-byte units, minus two.
            51 => {
                let h: [u8; 2] = load(ctx, off)?;
                next = h[0];
                off += (usize::from(h[1]) + 2) * 4;
            }
            _ => break,
        }
    }
    pkt.proto = next;
    if first_fragment {
        parse_l4(ctx, off, pkt)?;
    }
    Ok(())
}

#[inline(always)]
fn parse_l4(ctx: &TcContext, off: usize, pkt: &mut Packet) -> Result<(), Malformed> {
    match pkt.proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => {
            let ports: [u8; 4] = load(ctx, off)?;
            pkt.sport = u16::from_be_bytes([ports[0], ports[1]]);
            pkt.dport = u16::from_be_bytes([ports[2], ports[3]]);
            pkt.has_l4 = true;
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let icmp: [u8; 6] = load(ctx, off)?;
            pkt.icmp_type = icmp[0];
            pkt.icmp_id = u16::from_be_bytes([icmp[4], icmp[5]]);
            pkt.has_l4 = true;
        }
        _ => {}
    }
    Ok(())
}
