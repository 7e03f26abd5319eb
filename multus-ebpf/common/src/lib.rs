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
    DirMeta, FlowBudget, FlowKey, FlowValue, FragKey, FragValue, PolicyKey, PolicyValue, PortBlock,
};

/// Largest attachment id plus one that the object's maps are declared with; ids are in
/// `1..MAX_ATTACHMENTS` (0 means "none"). The agent sizes the per-attachment maps from the node
/// at load time (see the agent's map sizing), so this is only the upper bound.
pub const MAX_ATTACHMENTS: u32 = 16_384;

/// Capacity of one attachment's policy trie (entries are allocated on use, this is a cap).
pub const MAX_POLICY_ENTRIES: u32 = 131_072;

/// Capacity of one attachment's connection table as declared in the object (the template of the
/// array of tables); the agent creates each attachment's table with the capacity it is configured
/// with. Each table is an LRU of its own: a pod opening many flows evicts only its own.
pub const MAX_FLOWS: u32 = 1_024;

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
    /// Array of maps: attachment id to that attachment's LRU connection table (flows a policy
    /// allowed, so their replies pass).
    pub const FLOWS: &str = "MULTUS_FLOWS";
    /// Per attachment: its connection table's capacity, live flows and evictions
    /// ([`super::FlowBudget`]).
    pub const FLOW_BUDGETS: &str = "MULTUS_FLOW_BUDGET";
    /// LRU cache: a device's kernel address to its attachment id (see [`super::DeviceEntry`]).
    pub const DEVICES: &str = "MULTUS_DEVICES";
    /// One-element array: the epoch that device cache entries must carry to count.
    pub const EPOCH: &str = "MULTUS_EPOCH";
    /// LRU map: a fragmented datagram to its first fragment's layer-4 fields.
    pub const FRAGMENTS: &str = "MULTUS_FRAGS";
    /// Ring buffer of [`super::DropEvent`]s.
    pub const EVENTS: &str = "MULTUS_EVENTS";
    /// One-element array: the [`super::EventConfig`] (rate limit of drop events).
    pub const EVENT_CONFIG: &str = "MULTUS_EVENT_CFG";
    /// Per-attachment token bucket state ([`super::EventBucket`]).
    pub const EVENT_BUCKETS: &str = "MULTUS_EVENT_BKT";
    /// Per-CPU, per-attachment event counters ([`super::EventStats`]).
    pub const EVENT_STATS: &str = "MULTUS_EVENT_STATS";
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

/// Traffic counters for one attachment and direction (one copy per CPU in the map; the agent
/// sums the copies into one of these).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
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

impl DirCounters {
    /// Adds `other` (another CPU's copy) to these.
    pub fn add(&mut self, other: &Self) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        for i in 0..DROP_REASONS {
            self.drop_packets[i] += other.drop_packets[i];
            self.drop_bytes[i] += other.drop_bytes[i];
            self.audit_packets[i] += other.audit_packets[i];
            self.audit_bytes[i] += other.audit_bytes[i];
        }
    }

    /// Dropped packets over all reasons.
    pub fn dropped(&self) -> u64 {
        self.drop_packets.iter().sum()
    }

    /// Packets and bytes dropped for `reason` (a `DROP_*` index).
    pub fn drops(&self, reason: impl Into<usize>) -> (u64, u64) {
        let i = reason.into();
        (self.drop_packets[i], self.drop_bytes[i])
    }

    /// Packets and bytes an audit-mode policy would have dropped for `reason`.
    pub fn audited(&self, reason: impl Into<usize>) -> (u64, u64) {
        let i = reason.into();
        (self.audit_packets[i], self.audit_bytes[i])
    }
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

/// Size of the drop event ring buffer in bytes (a power of two multiple of the page size).
pub const EVENT_RING_BYTES: u32 = 1 << 20;

/// `DropEvent::flags`: the packet passed (an audit-mode policy would have dropped it).
pub const EVENT_AUDIT: u8 = 1;
/// `DropEvent::flags`: the layer-4 fields (ports, ICMP type and code) were read.
pub const EVENT_HAS_L4: u8 = 2;
/// `DropEvent::l3`: an IP packet (see `family`).
pub const EVENT_L3_IP: u8 = 2;
/// `DropEvent::l3`: an ARP frame (addresses are the sender and target protocol addresses).
pub const EVENT_L3_ARP: u8 = 1;

/// One dropped (or audit would-be dropped) packet, as the programs report it through the
/// [`maps::EVENTS`] ring buffer. Emitted only on the drop path, after the verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    /// `bpf_ktime_get_ns` at the drop (monotonic, boot-relative).
    pub time_ns: u64,
    /// The attachment id.
    pub attach_id: u32,
    /// `skb->len`.
    pub len: u32,
    /// `DIR_INGRESS` or `DIR_EGRESS`.
    pub direction: u8,
    /// A `DROP_*` reason.
    pub reason: u8,
    /// `EVENT_*` flags.
    pub flags: u8,
    /// 0 other, `EVENT_L3_ARP`, `EVENT_L3_IP`.
    pub l3: u8,
    /// `policy::FAMILY_V4` or `policy::FAMILY_V6`.
    pub family: u8,
    /// IP protocol number.
    pub proto: u8,
    /// ICMP or ICMPv6 type.
    pub icmp_type: u8,
    /// ICMP or ICMPv6 code.
    pub icmp_code: u8,
    /// Source and destination port (host order).
    pub sport: u16,
    pub dport: u16,
    /// Explicit padding; always zero.
    pub pad: u32,
    /// Source and destination address; IPv4 in the first four bytes.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The frame's source MAC (anti-spoofing drops name it).
    pub src_mac: [u8; 6],
    /// Explicit padding; always zero.
    pub pad2: [u8; 2],
}

const _: () = assert!(size_of::<DropEvent>() == 72);

/// The rate limit of drop events, per attachment (a token bucket kept as a theoretical arrival
/// time, GCRA: one word of state, no division in the kernel). Zero `interval_ns` turns events off.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventConfig {
    /// Nanoseconds per token: `1e9 / rate`.
    pub interval_ns: u64,
    /// How far ahead of now the bucket may run: `burst * interval_ns`.
    pub burst_ns: u64,
}

/// Token bucket state of one attachment (both directions share it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventBucket {
    /// The theoretical arrival time of the next event.
    pub tat_ns: u64,
}

/// Event counters of one attachment (one copy per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventStats {
    /// Events written to the ring.
    pub emitted: u64,
    /// Events the rate limit held back.
    pub suppressed: u64,
    /// Events lost because the ring was full.
    pub lost: u64,
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
    // SAFETY: plain `#[repr(C)]` data of u64 fields.
    unsafe impl aya::Pod for super::FlowBudget {}
    // SAFETY: plain `#[repr(C)]` data of u32 fields.
    unsafe impl aya::Pod for super::DeviceEntry {}
    // SAFETY: plain `#[repr(C)]` data of u32 fields.
    unsafe impl aya::Pod for super::FragKey {}
    // SAFETY: plain `#[repr(C)]` data with explicit padding.
    unsafe impl aya::Pod for super::FragValue {}
    // SAFETY: plain `#[repr(C)]` data with explicit padding.
    unsafe impl aya::Pod for super::DropEvent {}
    // SAFETY: plain `#[repr(C)]` data of u64 fields.
    unsafe impl aya::Pod for super::EventConfig {}
    // SAFETY: plain `#[repr(C)]` data of u64 fields.
    unsafe impl aya::Pod for super::EventBucket {}
    // SAFETY: plain `#[repr(C)]` data of u64 fields.
    unsafe impl aya::Pod for super::EventStats {}
}

/// The placeholder the programs carry where they call the kfunc `bpf_cast_to_kern_ctx` (an
/// eBPF call instruction of the kfunc kind, `src_reg` 2, with a marker for the kernel's BTF id).
/// The loader rewrites every such instruction before loading: into the call, with the function's
/// id from the running kernel's BTF, or, on a kernel without the function (before 6.3), into
/// `r0 = 0`, which sends the programs down their helper-call path.
pub const KERN_CTX_CALL_PLACEHOLDER: u64 = (KERN_CTX_CALL_MARKER as u64) << 32
    | (BPF_PSEUDO_KFUNC_CALL as u64) << 12
    | BPF_JMP_CALL as u64;

/// `BPF_JMP | BPF_CALL`, the call instruction's opcode.
const BPF_JMP_CALL: u8 = 0x85;
/// `BPF_PSEUDO_KFUNC_CALL`, in the source register field: `imm` is a kernel BTF id.
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;

/// The `imm` of [`KERN_CTX_CALL_PLACEHOLDER`]: no BTF id is anywhere near it.
pub const KERN_CTX_CALL_MARKER: u32 = 0x5eb2_c0de;
