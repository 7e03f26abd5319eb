//! Parsing the headers a policy looks at: Ethernet (with up to two VLAN tags), ARP, IPv4, IPv6
//! (with a bounded walk over extension headers), and the ports or ICMP type behind them.
//!
//! Headers are read in place (direct packet access: no helper call per field). When they are not
//! all in the linear part of the buffer, the caller pulls them in once and parses again; a header
//! that is cut short for real makes the packet malformed.
use aya_ebpf::programs::TcContext;
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
/// Extension headers walked; a chain that goes on behind them is dropped (`HeaderChain`).
const MAX_IPV6_EXT_HEADERS: usize = 8;
/// Neighbour discovery options walked in search of the link-layer address option.
const MAX_ND_OPTIONS: usize = 4;
/// ICMPv6 neighbour discovery types.
pub const ND_ROUTER_SOLICIT: u8 = 133;
pub const ND_ROUTER_ADVERT: u8 = 134;
pub const ND_NEIGHBOUR_SOLICIT: u8 = 135;
pub const ND_NEIGHBOUR_ADVERT: u8 = 136;
pub const ND_REDIRECT: u8 = 137;
const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
/// ICMP (IPv4) redirect.
pub const ICMP_REDIRECT: u8 = 5;
/// Where an ICMP error's header may start for its quote to be read.
const MAX_QUOTE_OFFSET: u16 = 1024;

/// What kind of frame this is.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L3 {
    /// Neither IP nor ARP: passes untouched.
    Other = 0,
    /// Ethernet/IPv4 ARP.
    Arp,
    /// IPv4 or IPv6 (see `family`).
    Ip,
}

/// The parsed headers. Aligned, with the addresses first: resetting and copying it compiles to
/// word moves instead of byte loops.
#[repr(C, align(8))]
pub struct Packet {
    /// Source and destination address; IPv4 (and ARP's sender/target) in the first four bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Neighbour solicitation, advertisement, redirect: the target address.
    pub nd_target: [u8; 16],
    /// The IP identification of a fragment (IPv4: 16 bits; IPv6: 32 bits).
    pub frag_id: u32,
    pub src_mac: [u8; 6],
    /// ARP: the sender hardware address.
    pub arp_sha: [u8; 6],
    /// Neighbour discovery: the link-layer address of the first source or target link-layer
    /// address option (`nd_lladdr_kind` says which, zero for none).
    pub nd_lladdr: [u8; 6],
    /// TCP, UDP, SCTP ports.
    pub sport: u16,
    pub dport: u16,
    /// ICMP and ICMPv6 echo identifier.
    pub icmp_id: u16,
    pub l3: L3,
    /// `FAMILY_V4` or `FAMILY_V6` (ARP: `FAMILY_V4`).
    pub family: u8,
    /// IP protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// ICMP and ICMPv6 type.
    pub icmp_type: u8,
    /// Whether the layer-4 fields above are known (read, or borrowed from the first fragment).
    pub has_l4: bool,
    /// `FRAG_NONE`, `FRAG_FIRST` or `FRAG_LATER`.
    pub frag: u8,
    /// Neighbour discovery: the type of the link-layer address option read (1 source, 2
    /// target), or zero.
    pub nd_lladdr_kind: u8,
    /// Neighbour discovery: options were left unread (more than the walk covers).
    pub nd_unread: bool,
    /// TCP flags (FIN, SYN, RST, ...).
    pub tcp_flags: u8,
    /// Offset of the layer-4 header from the start of the frame.
    pub l4_off: u16,
}

/// Not a fragment.
pub const FRAG_NONE: u8 = 0;
/// The first fragment of a datagram (offset 0, more fragments follow): it carries the ports.
pub const FRAG_FIRST: u8 = 1;
/// A fragment at a non-zero offset: no layer-4 header of its own.
pub const FRAG_LATER: u8 = 2;

impl Packet {
    /// Clears what the previous packet left. Word by word with volatile stores: the toolchain
    /// turns plain zero-fills into calls to a byte-loop `memset`.
    #[inline(always)]
    pub fn reset(&mut self) {
        let words = core::ptr::from_mut(self).cast::<u64>();
        for i in 0..size_of::<Self>() / 8 {
            // SAFETY: inside `self`, which is a whole number of aligned u64 words of plain data
            // for which all-zero is valid (`L3::Other`, `false`).
            unsafe { core::ptr::write_volatile(words.add(i), 0) };
        }
        self.family = FAMILY_V4;
    }

    /// The source address as four network-order words.
    #[inline(always)]
    pub fn src_words(&self) -> [u32; 4] {
        // SAFETY: `src` is at offset 0 of an 8-aligned struct.
        unsafe { *core::ptr::from_ref(&self.src).cast::<[u32; 4]>() }
    }

    /// The destination address as four network-order words.
    #[inline(always)]
    pub fn dst_words(&self) -> [u32; 4] {
        // SAFETY: `dst` is at offset 16 of an 8-aligned struct.
        unsafe { *core::ptr::from_ref(&self.dst).cast::<[u32; 4]>() }
    }

    /// An ICMP or ICMPv6 error (destination unreachable, packet too big, time exceeded, parameter
    /// problem): it quotes the start of the packet it is about.
    #[inline(always)]
    pub fn is_icmp_error(&self) -> bool {
        self.has_l4
            && self.frag != FRAG_LATER
            && match self.proto {
                IPPROTO_ICMP => matches!(self.icmp_type, 3 | 11 | 12),
                IPPROTO_ICMPV6 => matches!(self.icmp_type, 1..=4),
                _ => false,
            }
    }

    /// A TCP segment that ends its connection (FIN or RST).
    #[inline(always)]
    pub fn ends_flow(&self) -> bool {
        self.proto == IPPROTO_TCP && self.has_l4 && self.tcp_flags & (TCP_FIN | TCP_RST) != 0
    }

    /// A DHCP client's message (egress, UDP 68 to 67) or a server's answer to it (ingress, UDP
    /// 67 to 68), which pass unless a rule says otherwise: without them a lease is never
    /// renewed under a default deny. A pod sending as a server (from port 67) gets no such
    /// pass.
    #[inline(always)]
    pub fn is_dhcp_client(&self, egress: bool) -> bool {
        let (client, server) = if egress {
            (self.sport, self.dport)
        } else {
            (self.dport, self.sport)
        };
        self.family == FAMILY_V4
            && self.proto == IPPROTO_UDP
            && self.has_l4
            && client == DHCP_CLIENT_PORT
            && server == DHCP_SERVER_PORT
    }

    /// A TCP segment that opens a connection (SYN without ACK).
    #[inline(always)]
    pub fn opens_flow(&self) -> bool {
        self.proto == IPPROTO_TCP && self.has_l4 && self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    /// A TCP SYN-ACK: the answer to a connection opened the other way.
    #[inline(always)]
    pub fn answers_open(&self) -> bool {
        self.proto == IPPROTO_TCP
            && self.has_l4
            && self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
    }

    /// IPv6 neighbour discovery and multicast listener discovery, which pass unless a rule says
    /// otherwise (without them IPv6 stops working on the link). Router advertisements and
    /// redirects are a router's messages: a pod receives them, but sends them only where its
    /// egress rules allow.
    #[inline(always)]
    pub fn is_nd(&self, egress: bool) -> bool {
        self.family == FAMILY_V6
            && self.proto == IPPROTO_ICMPV6
            && self.has_l4
            && self.frag == FRAG_NONE
            && match self.icmp_type {
                130..=133 | 135 | 136 | 143 => true,
                ND_ROUTER_ADVERT | ND_REDIRECT => !egress,
                _ => false,
            }
    }
}

/// Why a packet could not be parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A header is cut short (or not in the linear part yet).
    Truncated,
    /// More IPv6 extension headers (or VLAN tags) than the walk covers: what follows is unknown.
    HeaderChain,
}

/// Bytes worth pulling into the linear part when headers are not there: Ethernet, two VLAN tags,
/// IPv6 with a few extension headers and the start of the layer-4 header.
pub const PULL_LEN: u32 = 256;

/// The linear part of the packet.
struct Linear {
    data: usize,
    end: usize,
}

impl Linear {
    /// The `N` bytes at `offset`, in place, or `Malformed` when they are not in the linear part.
    #[inline(always)]
    fn get<const N: usize>(&self, offset: usize) -> Result<&[u8; N], Malformed> {
        let start = self.data + offset;
        if start + N > self.end {
            return Err(Malformed::Truncated);
        }
        // SAFETY: checked against the end of the linear data just above (the verifier checks
        // too); packet memory outlives the program run and is not written while we read.
        Ok(unsafe { &*(start as *const [u8; N]) })
    }
}

/// Parses the frame at the start of `ctx` into `pkt` (freshly [`Packet::reset`]).
#[inline(always)]
pub fn parse(ctx: &TcContext, pkt: &mut Packet) -> Result<(), Malformed> {
    let at = Linear {
        data: ctx.data(),
        end: ctx.data_end(),
    };
    let eth: &[u8; ETH_HLEN] = at.get(0)?;
    pkt.src_mac = [eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]];
    let mut ethertype = u16::from_be_bytes([eth[12], eth[13]]);
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let tag: &[u8; 4] = at.get(off)?;
        ethertype = u16::from_be_bytes([tag[2], tag[3]]);
        off += 4;
    }
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        return Err(Malformed::HeaderChain);
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(&at, off, pkt),
        ETH_P_IPV6 => parse_ipv6(&at, off, pkt),
        ETH_P_ARP => parse_arp(&at, off, pkt),
        _ => Ok(()),
    }
}

#[inline(always)]
fn parse_arp(at: &Linear, off: usize, pkt: &mut Packet) -> Result<(), Malformed> {
    let arp: &[u8; 28] = at.get(off)?;
    // The hardware type is not checked: Linux takes Ethernet (1) and IEEE 802 (6) alike on an
    // Ethernet device. ARP for another protocol or with other address sizes is nothing a host
    // on an Ethernet/IPv4 link acts on: refused as malformed rather than left unchecked.
    if arp[2..4] != [8, 0] || arp[4] != 6 || arp[5] != 4 {
        return Err(Malformed::Truncated);
    }
    pkt.l3 = L3::Arp;
    pkt.family = FAMILY_V4;
    pkt.arp_sha = [arp[8], arp[9], arp[10], arp[11], arp[12], arp[13]];
    pkt.src[..4].copy_from_slice(&arp[14..18]);
    pkt.dst[..4].copy_from_slice(&arp[24..28]);
    Ok(())
}

#[inline(always)]
fn parse_ipv4(at: &Linear, off: usize, pkt: &mut Packet) -> Result<(), Malformed> {
    let ip: &[u8; 20] = at.get(off)?;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 {
        return Err(Malformed::Truncated);
    }
    pkt.l3 = L3::Ip;
    pkt.family = FAMILY_V4;
    pkt.proto = ip[9];
    pkt.src[..4].copy_from_slice(&ip[12..16]);
    pkt.dst[..4].copy_from_slice(&ip[16..20]);
    let flags_offset = u16::from_be_bytes([ip[6], ip[7]]);
    let more_fragments = flags_offset & 0x2000 != 0;
    pkt.frag_id = u32::from(u16::from_be_bytes([ip[4], ip[5]]));
    if flags_offset & 0x1fff != 0 {
        pkt.frag = FRAG_LATER;
        return Ok(());
    }
    if more_fragments {
        pkt.frag = FRAG_FIRST;
    }
    let end = off + usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    parse_l4(at, off + ihl, end, pkt)
}

#[inline(always)]
fn parse_ipv6(at: &Linear, off: usize, pkt: &mut Packet) -> Result<(), Malformed> {
    let ip: &[u8; 40] = at.get(off)?;
    if ip[0] >> 4 != 6 {
        return Err(Malformed::Truncated);
    }
    pkt.l3 = L3::Ip;
    pkt.family = FAMILY_V6;
    pkt.src.copy_from_slice(&ip[8..24]);
    pkt.dst.copy_from_slice(&ip[24..40]);
    let end = off + 40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    let mut next = ip[6];
    let mut off = off + 40;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ext_header(next) {
            break;
        }
        match next {
            // Fragment header: fixed 8 bytes.
            44 => {
                let h: &[u8; 8] = at.get(off)?;
                next = h[0];
                pkt.frag_id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                    pkt.frag = FRAG_LATER;
                } else if h[3] & 1 != 0 {
                    pkt.frag = FRAG_FIRST;
                }
                off += 8;
            }
            // Authentication header: length in 4-byte units, minus two.
            51 => {
                let h: &[u8; 2] = at.get(off)?;
                next = h[0];
                off += (usize::from(h[1]) + 2) * 4;
            }
            // Hop-by-hop, routing, destination options and the later headers of the same
            // format: length in 8-byte units, minus one.
            _ => {
                let h: &[u8; 2] = at.get(off)?;
                next = h[0];
                off += (usize::from(h[1]) + 1) * 8;
            }
        }
        if pkt.frag == FRAG_LATER {
            // What follows is the middle of a datagram, not headers.
            pkt.proto = next;
            return Ok(());
        }
    }
    if is_ext_header(next) {
        // A rule might match what lies behind the chain; nobody can say.
        return Err(Malformed::HeaderChain);
    }
    pkt.proto = next;
    parse_l4(at, off, end, pkt)
}

/// IPv6 extension headers (RFC 8200 and the later ones in its uniform format). ESP (50) is not
/// one here: what follows it is encrypted, so it counts as the layer-4 protocol.
#[inline(always)]
fn is_ext_header(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}

/// Reads the layer-4 header at `off`; `end` is where the IP packet ends.
#[inline(always)]
fn parse_l4(at: &Linear, off: usize, end: usize, pkt: &mut Packet) -> Result<(), Malformed> {
    pkt.l4_off = off as u16;
    match pkt.proto {
        IPPROTO_TCP => {
            let tcp: &[u8; 14] = at.get(off)?;
            pkt.sport = u16::from_be_bytes([tcp[0], tcp[1]]);
            pkt.dport = u16::from_be_bytes([tcp[2], tcp[3]]);
            pkt.tcp_flags = tcp[13];
            pkt.has_l4 = true;
        }
        IPPROTO_UDP | IPPROTO_SCTP => {
            let ports: &[u8; 4] = at.get(off)?;
            pkt.sport = u16::from_be_bytes([ports[0], ports[1]]);
            pkt.dport = u16::from_be_bytes([ports[2], ports[3]]);
            pkt.has_l4 = true;
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let icmp: &[u8; 8] = at.get(off)?;
            pkt.icmp_type = icmp[0];
            pkt.icmp_id = u16::from_be_bytes([icmp[4], icmp[5]]);
            pkt.has_l4 = true;
            if pkt.proto == IPPROTO_ICMPV6
                && pkt.frag == FRAG_NONE
                && matches!(pkt.icmp_type, ND_ROUTER_SOLICIT..=ND_REDIRECT)
            {
                parse_nd(at, off, end, pkt)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Neighbour discovery (RFC 4861): the target address and the first link-layer address
/// option, which is the one Linux uses.
#[inline(always)]
fn parse_nd(at: &Linear, off: usize, end: usize, pkt: &mut Packet) -> Result<(), Malformed> {
    let mut opt = off + 8;
    if matches!(
        pkt.icmp_type,
        ND_NEIGHBOUR_SOLICIT | ND_NEIGHBOUR_ADVERT | ND_REDIRECT
    ) {
        let target: &[u8; 16] = at.get(off + 8)?;
        pkt.nd_target = *target;
        opt = off + 24;
    }
    if pkt.icmp_type == ND_REDIRECT {
        // The destination address.
        opt += 16;
    } else if pkt.icmp_type == ND_ROUTER_ADVERT {
        // Hop limit, flags, lifetime, reachable time, retransmission timer.
        opt += 8;
    }
    for _ in 0..MAX_ND_OPTIONS {
        if opt >= end {
            return Ok(());
        }
        let h: &[u8; 8] = at.get(opt)?;
        if h[1] == 0 {
            // A zero-length option makes the whole message invalid.
            return Err(Malformed::Truncated);
        }
        if h[0] == 1 || h[0] == 2 {
            pkt.nd_lladdr_kind = h[0];
            pkt.nd_lladdr = [h[2], h[3], h[4], h[5], h[6], h[7]];
            return Ok(());
        }
        opt += usize::from(h[1]) * 8;
    }
    pkt.nd_unread = opt < end;
    Ok(())
}

const _: () = assert!(size_of::<Packet>().is_multiple_of(8));

/// The addresses and ports of the packet an ICMP error quotes.
pub struct Quoted {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
}

/// Reads the TCP, UDP or SCTP packet quoted by the ICMP error `pkt` (same family; IPv6 without
/// extension headers), or `None`.
#[inline(always)]
pub fn quoted(ctx: &TcContext, pkt: &Packet) -> Option<Quoted> {
    let at = Linear {
        data: ctx.data(),
        end: ctx.data_end(),
    };
    // The quoted packet starts after the 8-byte ICMP header. (The bound keeps the offset small
    // enough for the verifier to track packet ranges; real headers end far earlier.)
    if pkt.l4_off > MAX_QUOTE_OFFSET {
        return None;
    }
    let off = usize::from(pkt.l4_off) + 8;
    let mut q = Quoted {
        src: [0; 4],
        dst: [0; 4],
        proto: 0,
        sport: 0,
        dport: 0,
    };
    let l4 = if pkt.family == FAMILY_V4 {
        let ip: &[u8; 20] = at.get(off).ok()?;
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[0] >> 4 != 4 || ihl < 20 {
            return None;
        }
        q.proto = ip[9];
        q.src[0] = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]);
        q.dst[0] = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]);
        off + ihl
    } else {
        let ip: &[u8; 40] = at.get(off).ok()?;
        if ip[0] >> 4 != 6 {
            return None;
        }
        q.proto = ip[6];
        for i in 0..4 {
            let a = 8 + 4 * i;
            let b = 24 + 4 * i;
            q.src[i] = u32::from_ne_bytes([ip[a], ip[a + 1], ip[a + 2], ip[a + 3]]);
            q.dst[i] = u32::from_ne_bytes([ip[b], ip[b + 1], ip[b + 2], ip[b + 3]]);
        }
        off + 40
    };
    if !matches!(q.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        return None;
    }
    let ports: &[u8; 4] = at.get(l4).ok()?;
    q.sport = u16::from_be_bytes([ports[0], ports[1]]);
    q.dport = u16::from_be_bytes([ports[2], ports[3]]);
    Some(q)
}
