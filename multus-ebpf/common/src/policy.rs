//! Layout of a compiled policy and of the connection table.
//!
//! One attachment's policy is one LPM trie keyed by [`PolicyKey`]. The first four key bytes say
//! what an entry is; the longest-prefix match then runs over the rest:
//!
//! | kind | bytes 1..4 | data (16 bytes) | prefix length (bits) |
//! |---|---|---|---|
//! | `KIND_META` | direction, 0, 0 | zero | 32 |
//! | `KIND_PEER` | direction, family, 0 | peer address (IPv4 in the first 4 bytes) | 32 + CIDR length |
//! | `KIND_PORT` | 0, space, protocol | port set id (BE u32), port (BE u16) | 64 + port prefix length |
//! | `KIND_OWN` | 0, family, 0 | one of the attachment's own addresses | 32 + 32 or 128 |
//!
//! A peer entry holds the flattened verdict of every rule whose peers contain that prefix: the
//! verdict for any protocol and port, and port blocks that override it for some protocols and
//! port ranges (up to [`INLINE_BLOCKS`] inline, more as `KIND_PORT` entries of a port set). Deny
//! already won over allow at compile time. Every peer entry also repeats its direction's
//! [`DirMeta`], and every direction and family has a `/0` peer entry, so one lookup per packet
//! answers both "what do the rules say" and "what are the defaults".

/// The entry holds a direction's defaults and flags.
pub const KIND_META: u8 = 1;
/// The entry is a peer prefix.
pub const KIND_PEER: u8 = 2;
/// The entry is a protocol/port range of a port set.
pub const KIND_PORT: u8 = 3;
/// The entry is one of the attachment's own addresses (anti-spoofing).
pub const KIND_OWN: u8 = 4;

/// IPv4 family byte.
pub const FAMILY_V4: u8 = 4;
/// IPv6 family byte.
pub const FAMILY_V6: u8 = 6;

/// Port-set space of IP protocols (the protocol byte is the IP protocol number).
pub const SPACE_IP: u8 = 0;
/// Port-set space of ARP (protocol byte and port are zero).
pub const SPACE_ARP: u8 = 1;

/// No rule matched: the direction's default applies.
pub const VERDICT_NONE: u8 = 0;
/// Pass the packet.
pub const VERDICT_ALLOW: u8 = 1;
/// Drop the packet.
pub const VERDICT_DENY: u8 = 2;

/// Meta flag: count would-be drops and pass (audit mode).
pub const META_AUDIT: u8 = 1;
/// Meta flag (egress): check source MAC and address against the attachment's own.
pub const META_ANTI_SPOOF: u8 = 2;
/// Meta flag: the other direction can drop, so allowed flows are recorded for their replies.
pub const META_TRACK: u8 = 4;
/// Meta flag: some rule of this direction names ARP.
pub const META_ARP_RULES: u8 = 8;
/// Meta flag (egress, with anti-spoofing): the pod may act as a router (send IPv6 router
/// advertisements and redirects, ICMP redirects).
pub const META_ROUTER: u8 = 16;

/// Prefix length of a meta entry.
pub const META_PREFIX: u32 = 32;
/// Prefix length of the fixed part of a peer entry (before the address bits).
pub const PEER_PREFIX_BASE: u32 = 32;
/// Prefix length of the fixed part of a port entry (before the port bits).
pub const PORT_PREFIX_BASE: u32 = 64;
/// Prefix length of the fixed part of an own-address entry (before the address bits).
pub const OWN_PREFIX_BASE: u32 = 32;

/// Key of a policy trie entry; see the module docs for the layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// `KIND_*`.
    pub kind: u8,
    /// Direction (`DIR_*`) for meta and peer entries, else zero.
    pub dir: u8,
    /// `FAMILY_*` for peer and own entries, `SPACE_*` for port entries.
    pub space: u8,
    /// IP protocol number for port entries, else zero.
    pub proto: u8,
    /// Address, or port set id and port.
    pub data: [u8; 16],
}

impl PolicyKey {
    /// The meta entry of a direction.
    #[inline(always)]
    pub const fn meta(dir: u8) -> Self {
        Self {
            kind: KIND_META,
            dir,
            space: 0,
            proto: 0,
            data: [0; 16],
        }
    }

    /// A peer entry (or lookup key) of a direction and family.
    #[inline(always)]
    pub const fn peer(dir: u8, family: u8, addr: [u8; 16]) -> Self {
        Self {
            kind: KIND_PEER,
            dir,
            space: family,
            proto: 0,
            data: addr,
        }
    }

    /// A port entry (or lookup key) of a port set.
    #[inline(always)]
    pub const fn port(set: u32, space: u8, proto: u8, port: u16) -> Self {
        let s = set.to_be_bytes();
        let p = port.to_be_bytes();
        Self {
            kind: KIND_PORT,
            dir: 0,
            space,
            proto,
            data: [
                s[0], s[1], s[2], s[3], p[0], p[1], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        }
    }

    /// An own-address entry (or lookup key).
    #[inline(always)]
    pub const fn own(family: u8, addr: [u8; 16]) -> Self {
        Self {
            kind: KIND_OWN,
            dir: 0,
            space: family,
            proto: 0,
            data: addr,
        }
    }
}

/// Full address length in bits of a `FAMILY_*`.
#[inline(always)]
pub const fn family_bits(family: u8) -> u32 {
    if family == FAMILY_V4 { 32 } else { 128 }
}

/// Port blocks a peer entry can carry inline; more go to the trie as a port set.
pub const INLINE_BLOCKS: usize = 4;
/// `PolicyValue::blocks` when the blocks are `KIND_PORT` entries of port set `set`.
pub const BLOCKS_IN_TRIE: u8 = 0xff;

/// A direction's defaults and flags, in its meta entry and repeated in each of its peer entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DirMeta {
    /// The policy's generation; flows recorded under another generation do not count.
    pub generation: u32,
    /// The verdict when no rule matches (`VERDICT_ALLOW` or `VERDICT_DENY`).
    pub default: u8,
    /// `META_*` flags.
    pub flags: u8,
    /// Egress with anti-spoofing: the attachment's MAC.
    pub mac: [u8; 6],
}

/// An inclusive port range of one protocol with its final verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortBlock {
    /// `SPACE_*`.
    pub space: u8,
    /// IP protocol number (ARP: zero).
    pub proto: u8,
    /// First port.
    pub start: u16,
    /// Last port.
    pub end: u16,
    /// `VERDICT_*`.
    pub verdict: u8,
    /// Explicit padding; always zero.
    pub pad: u8,
}

/// Value of a policy trie entry (what each field means depends on the key's kind).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyValue {
    /// Meta and peer entries: the direction's defaults and flags.
    pub meta: DirMeta,
    /// Peer: the verdict for protocols and ports no block covers. Port: the verdict.
    pub verdict: u8,
    /// Peer: how many of `block` are in use, or [`BLOCKS_IN_TRIE`].
    pub blocks: u8,
    /// Explicit padding; always zero.
    pub pad: u16,
    /// Peer with [`BLOCKS_IN_TRIE`]: the port set id.
    pub set: u32,
    /// Peer: port blocks checked in order (they are disjoint).
    pub block: [PortBlock; INLINE_BLOCKS],
}

/// A flow from the pod's point of view; the same key in both directions. Word-sized fields, so
/// the programs build it with a few word stores.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The attachment the flow passes through.
    pub attach_id: u32,
    /// IP protocol number (a u32 so the key has no padding bytes to clear).
    pub proto: u32,
    /// The pod's port (ICMP echo: the identifier).
    pub local_port: u16,
    /// The peer's port (ICMP echo: zero).
    pub peer_port: u16,
    /// The pod's address as network-order bytes in words (IPv4 mapped into IPv6).
    pub local: [u32; 4],
    /// The peer's address, like `local`.
    pub peer: [u32; 4],
}

/// What the connection table remembers of a flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowValue {
    /// `bpf_ktime_get_coarse_ns` when the flow was last seen.
    pub last_seen_ns: u64,
    /// Generation of the policy that allowed the flow. Under another generation the flow is
    /// checked against the policy now in force before it lets a reply through
    /// ([`GENERATION_AUDITED`] for a flow only audit mode let through).
    pub generation: u32,
    /// The direction (`DIR_*`) of the packet that opened the flow.
    pub origin: u8,
    /// A TCP FIN or RST went by: the flow ends after [`FLOW_TIMEOUT_CLOSED_NS`] idle.
    pub closing: u8,
    /// Explicit padding; always zero.
    pub pad: u16,
}

/// The bookkeeping of one attachment's connection table, shared by all CPUs (updated with atomic
/// adds). The LRU evicts silently; the programs count a new flow recorded while the table already
/// held `capacity` flows as an eviction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowBudget {
    /// Flows the table holds, as far as the programs know (new flows recorded minus flows they
    /// removed, at most `capacity`).
    pub live: u64,
    /// New flows recorded while the table was full: each pushed the table's least recently used
    /// flow out.
    pub evictions: u64,
    /// The table's capacity (set by the agent when it creates the table; zero: no table).
    pub capacity: u64,
}

/// A fragmented datagram in flight, from the point of view of one attachment and direction: its
/// non-first fragments carry no layer-4 header and borrow the first fragment's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// The attachment.
    pub attach_id: u32,
    /// IP protocol number in the low byte, direction (`DIR_*`) in the next.
    pub proto_dir: u32,
    /// The IP identification (IPv4: 16 bits; IPv6 fragment header: 32 bits).
    pub id: u32,
    /// Explicit padding; always zero.
    pub pad: u32,
    /// Source address, IPv4 mapped into IPv6 (network-order bytes in words).
    pub src: [u32; 4],
    /// Destination address, like `src`.
    pub dst: [u32; 4],
}

/// The layer-4 fields of a datagram's first fragment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragValue {
    /// TCP, UDP, SCTP source port.
    pub sport: u16,
    /// TCP, UDP, SCTP destination port.
    pub dport: u16,
    /// ICMP echo identifier.
    pub icmp_id: u16,
    /// ICMP type.
    pub icmp_type: u8,
    /// Explicit padding; always zero.
    pub pad: u8,
}

/// The generation of a flow whose opening packet only audit mode let through: no policy has
/// this generation (a policy's is its trie's map id, never zero), so the flow is re-checked as
/// its opener under every policy, the audited one included (its replies are audited too).
pub const GENERATION_AUDITED: u32 = 0;

/// Idle time after which a TCP or SCTP flow no longer lets replies through.
pub const FLOW_TIMEOUT_STREAM_NS: u64 = 3_600 * 1_000_000_000;
/// Idle time after which a TCP flow that saw a FIN or RST no longer lets packets through (long
/// enough for the last ACKs and retransmitted FINs; a closed connection's ports cannot be used
/// to get in for an hour).
pub const FLOW_TIMEOUT_CLOSED_NS: u64 = 10 * 1_000_000_000;
/// Idle time after which a UDP or ICMP flow no longer lets replies through.
pub const FLOW_TIMEOUT_DATAGRAM_NS: u64 = 120 * 1_000_000_000;
/// A flow's timestamp is refreshed at most this often (saves writes to a shared cache line).
pub const FLOW_REFRESH_NS: u64 = 1_000_000_000;
