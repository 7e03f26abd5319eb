//! The map ABI shared by the TC programs in `multus-ebpf` and the agent's dataplane module.
//!
//! Every type here is `#[repr(C)]` with explicit padding, so the kernel side and the userspace side
//! agree on the layout byte for byte. Per-interface state is keyed by an attachment id that the agent
//! assigns: an ifindex is only unique inside one network namespace.
//!
//! A policy is one LPM trie per attachment (see [`PolicyKey`]), swapped in whole through the
//! [`maps::POLICIES`] array of maps, so a packet always sees one complete policy.
#![no_std]

pub mod policy;

pub use policy::{
    DirMeta, FlowKey, FlowValue, FragKey, FragValue, PolicyKey, PolicyValue, PortBlock,
};

/// Largest attachment id plus one; ids are in `1..MAX_ATTACHMENTS` (0 means "none").
pub const MAX_ATTACHMENTS: u32 = 16_384;

/// Capacity of one attachment's policy trie (entries are allocated on use, this is a cap).
pub const MAX_POLICY_ENTRIES: u32 = 131_072;

/// Capacity of the node-wide connection table (an LRU: the least recently used flow goes first).
pub const MAX_FLOWS: u32 = 65_536;

/// Capacity of the node-wide fragment table (an LRU of datagrams in flight in fragments).
pub const MAX_FRAGMENTS: u32 = 8_192;

/// Direction index for packets the pod receives (TC ingress on the pod-side interface).
pub const DIR_INGRESS: u32 = 0;
/// Direction index for packets the pod sends (TC egress on the pod-side interface).
pub const DIR_EGRESS: u32 = 1;
/// Number of directions.
pub const DIRECTIONS: u32 = 2;

/// Number of drop reasons counted per attachment and direction.
pub const DROP_REASONS: usize = 5;
/// A rule with a deny action matched.
pub const DROP_POLICY_DENY: usize = 0;
/// No rule matched and the direction's default action is deny.
pub const DROP_DEFAULT_DENY: usize = 1;
/// The packet's source address or MAC is not the attachment's own (anti-spoofing).
pub const DROP_SPOOFED: usize = 2;
/// The packet could not be parsed (truncated headers).
pub const DROP_MALFORMED: usize = 3;
/// An IPv6 extension header chain too long to walk to its end: what lies behind it (the layer-4
/// protocol and ports a rule might match) is unknown.
pub const DROP_HEADER_CHAIN: usize = 4;

/// Map names, shared so the loader finds them and pins them under the same names.
pub mod maps {
    /// `(netns cookie, ifindex)` to attachment id.
    pub const ATTACHMENTS: &str = "MULTUS_ATTACH";
    /// Per-CPU counters indexed by [`super::counter_index`].
    pub const COUNTERS: &str = "MULTUS_COUNTERS";
    /// Array of maps: attachment id to that attachment's policy trie.
    pub const POLICIES: &str = "MULTUS_POLICY";
    /// LRU connection table: flows a policy allowed, so their replies pass.
    pub const FLOWS: &str = "MULTUS_FLOWS";
    /// LRU cache: a device's kernel address to its attachment id (see [`super::DeviceEntry`]).
    pub const DEVICES: &str = "MULTUS_DEVICES";
    /// One-element array: the epoch that device cache entries must carry to count.
    pub const EPOCH: &str = "MULTUS_EPOCH";
    /// LRU map: a fragmented datagram to its first fragment's layer-4 fields.
    pub const FRAGMENTS: &str = "MULTUS_FRAGS";
}

/// Names of the read-only globals the loader sets from the kernel's BTF.
pub mod globals {
    /// `offsetof(struct sk_buff, dev)`.
    pub const SKB_DEV: &str = "SKB_DEV_OFFSET";
    /// `offsetof(struct net_device, nd_net.net)`.
    pub const DEV_NET: &str = "DEV_NET_OFFSET";
    /// `offsetof(struct net, net_cookie)`.
    pub const NET_COOKIE: &str = "NET_COOKIE_OFFSET";
}

/// Program names (the Rust function names of the classifiers).
pub mod programs {
    /// The TC ingress classifier.
    pub const INGRESS: &str = "multus_ingress";
    /// The TC egress classifier.
    pub const EGRESS: &str = "multus_egress";
}

/// Identifies one interface across the whole node: the netns cookie makes the ifindex unique.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfaceKey {
    /// The network namespace's cookie (`SO_NETNS_COOKIE`).
    pub netns_cookie: u64,
    /// The interface index inside that namespace.
    pub ifindex: u32,
    /// Explicit padding; always zero.
    pub pad: u32,
}

/// Traffic counters for one attachment and direction (one copy per CPU in the map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirCounters {
    /// Packets seen by the program, dropped or not.
    pub packets: u64,
    /// Bytes seen (`skb->len`, layer 2 included).
    pub bytes: u64,
    /// Dropped packets, indexed by the `DROP_*` reasons.
    pub drop_packets: [u64; DROP_REASONS],
    /// Dropped bytes, indexed by the `DROP_*` reasons.
    pub drop_bytes: [u64; DROP_REASONS],
    /// Packets an audit-mode policy would have dropped (and passed), by `DROP_*` reason.
    pub audit_packets: [u64; DROP_REASONS],
    /// Bytes an audit-mode policy would have dropped, by `DROP_*` reason.
    pub audit_bytes: [u64; DROP_REASONS],
}

/// What the programs remember about a device they have seen. Looking a packet's interface up by
/// `(netns cookie, ifindex)` takes three kernel reads; by device address, one. The agent bumps
/// the epoch whenever attachments change, which invalidates every cached entry at once (a freed
/// device's address can come back as another device).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeviceEntry {
    /// The attachment id.
    pub id: u32,
    /// The epoch the entry was made in.
    pub epoch: u32,
}

/// Index into the counters array of an attachment's direction.
#[inline(always)]
pub const fn counter_index(attach_id: u32, direction: u32) -> u32 {
    attach_id * DIRECTIONS + direction
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with explicit padding and no pointers.
    unsafe impl aya::Pod for super::IfaceKey {}
    // SAFETY: plain `#[repr(C)]` data of u64 fields.
    unsafe impl aya::Pod for super::DirCounters {}
    // SAFETY: plain `#[repr(C)]` data of bytes.
    unsafe impl aya::Pod for super::PolicyKey {}
    // SAFETY: plain `#[repr(C)]` data with explicit padding.
    unsafe impl aya::Pod for super::PolicyValue {}
    // SAFETY: plain `#[repr(C)]` data with explicit padding.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: plain `#[repr(C)]` data with explicit padding.
    unsafe impl aya::Pod for super::FlowValue {}
    // SAFETY: plain `#[repr(C)]` data of u32 fields.
    unsafe impl aya::Pod for super::DeviceEntry {}
    // SAFETY: plain `#[repr(C)]` data of u32 fields.
    unsafe impl aya::Pod for super::FragKey {}
    // SAFETY: plain `#[repr(C)]` data with explicit padding.
    unsafe impl aya::Pod for super::FragValue {}
}
