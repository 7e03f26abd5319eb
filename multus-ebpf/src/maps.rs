//! The maps and read-only globals of the programs. Every shared map is pinned by name, so a new
//! loader reuses them: counters continue, policies, flows and the device cache stay in force.
use aya_ebpf::{
    btf_maps::{ArrayOfMaps, LpmTrie, LruHashMap as BtfLruHashMap},
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
};
use multus_common::{
    DIRECTIONS, DeviceEntry, DirCounters, EVENT_RING_BYTES, EventBucket, EventConfig, EventStats,
    FlowBudget, FlowKey, FlowValue, FragKey, FragValue, IfaceKey, MAX_ATTACHMENTS, MAX_FLOWS,
    MAX_FRAGMENTS, MAX_POLICY_ENTRIES, PolicyKey, PolicyValue,
};

use crate::packet::Packet;

/// `(netns cookie, ifindex)` to attachment id, written by the agent on attach.
#[map(name = "MULTUS_ATTACH")]
pub static ATTACHMENTS: HashMap<IfaceKey, u32> = HashMap::pinned(MAX_ATTACHMENTS, 0);

/// Device address to attachment id, filled by the programs (see `device`).
#[map(name = "MULTUS_DEVICES")]
pub static DEVICES: LruHashMap<u64, DeviceEntry> = LruHashMap::pinned(MAX_ATTACHMENTS, 0);

/// The epoch device cache entries must carry; the agent bumps it when attachments change.
#[map(name = "MULTUS_EPOCH")]
pub static EPOCH: Array<u32> = Array::pinned(1, 0);

/// Traffic counters per attachment and direction, one slot per CPU (no atomics needed).
#[map(name = "MULTUS_COUNTERS")]
pub static COUNTERS: PerCpuArray<DirCounters> =
    PerCpuArray::pinned(MAX_ATTACHMENTS * DIRECTIONS, 0);

/// One policy trie per attachment. The agent fills a new trie and swaps it in with one update, so
/// a packet sees the whole old policy or the whole new one; the kernel frees the old trie once no
/// program can still be using it.
pub type PolicyTrie = LpmTrie<PolicyKey, PolicyValue, { MAX_POLICY_ENTRIES as usize }>;

#[btf_map(name = "MULTUS_POLICY", pin_by_name)]
pub static POLICIES: ArrayOfMaps<PolicyTrie, { MAX_ATTACHMENTS as usize }> = ArrayOfMaps::new();

/// One attachment's connection table: an LRU of its own, so one pod's flows can only evict its
/// own. The agent creates it with the attachment's policy (`MAX_FLOWS` is the template's size).
pub type FlowTable = BtfLruHashMap<FlowKey, FlowValue, { MAX_FLOWS as usize }>;

/// Flows a policy allowed, so that their replies pass the other direction: one table per
/// attachment.
#[btf_map(name = "MULTUS_FLOWS", pin_by_name)]
pub static FLOWS: ArrayOfMaps<FlowTable, { MAX_ATTACHMENTS as usize }> = ArrayOfMaps::new();

/// Capacity, live flows and evictions of each attachment's connection table.
#[map(name = "MULTUS_FLOW_BUDGET")]
pub static FLOW_BUDGETS: Array<FlowBudget> = Array::pinned(MAX_ATTACHMENTS, 0);

/// Datagrams in flight in fragments: the first fragment's layer-4 fields (see `fragments`).
#[map(name = "MULTUS_FRAGS")]
pub static FRAGMENTS: LruHashMap<FragKey, FragValue> = LruHashMap::pinned(MAX_FRAGMENTS, 0);

/// Drop events for the agent (see `events`).
#[map(name = "MULTUS_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::pinned(EVENT_RING_BYTES, 0);

/// The rate limit of drop events, written by the agent.
#[map(name = "MULTUS_EVENT_CFG")]
pub static EVENT_CONFIG: Array<EventConfig> = Array::pinned(1, 0);

/// Token bucket of each attachment's drop events.
#[map(name = "MULTUS_EVENT_BKT")]
pub static EVENT_BUCKETS: Array<EventBucket> = Array::pinned(MAX_ATTACHMENTS, 0);

/// Emitted, suppressed and lost drop events per attachment, one slot per CPU.
#[map(name = "MULTUS_EVENT_STATS")]
pub static EVENT_STATS: PerCpuArray<EventStats> = PerCpuArray::pinned(MAX_ATTACHMENTS, 0);

/// The device the previous packet on this CPU and direction came from: consecutive packets of
/// one interface skip even the device cache lookup.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LastDevice {
    pub dev: u64,
    pub id: u32,
    pub epoch: u32,
}

/// Slots of the per-CPU recently-confirmed flows (a power of two: the slot is picked by masking).
pub const RECENT_SLOTS: usize = 8;

/// A flow a recent packet on this CPU and direction belonged to, which passed under the epoch's
/// policies from `mac`, and when the connection table was last seen to hold it: a steady flow
/// skips the policy and the table (and the clock) for about a second.
#[repr(C, align(8))]
pub struct RecentFlow {
    pub key: FlowKey,
    /// `MULTUS_EPOCH` when the packet passed: the agent bumps it with every policy change.
    pub epoch: u32,
    /// `bpf_jiffies64()` at the check (an inlined load, where the nanosecond clock is a call).
    pub checked_jiffies: u64,
    /// The packet's source MAC (anti-spoofing checks it on egress).
    pub mac: [u8; 6],
    pub pad: [u8; 2],
}

/// A policy trie key laid out like `Key<PolicyKey>` but aligned and in words, so building one
/// compiles to a few word stores (the map API's key type is packed, which forces byte-by-byte
/// code, and zero-fills would become calls to a byte-loop `memset`).
#[repr(C, align(8))]
pub struct LpmKey {
    pub prefix_len: u32,
    /// `PolicyKey::{kind, dir, space, proto}` in memory order.
    pub head: [u8; 4],
    /// `PolicyKey::data` as network-order words.
    pub data: [u32; 4],
}

impl LpmKey {
    /// Sets every byte of the key, one word store each (volatile: the toolchain would merge
    /// zero stores into a call to a byte-loop `memset`).
    #[inline(always)]
    pub fn set(&mut self, prefix_len: u32, head: [u8; 4], data: [u32; 4]) {
        // SAFETY: plain stores into fields of `self`.
        unsafe {
            core::ptr::write_volatile(&raw mut self.prefix_len, prefix_len);
            core::ptr::write_volatile(&raw mut self.head, head);
            for (i, word) in data.into_iter().enumerate() {
                core::ptr::write_volatile(self.data.as_mut_ptr().add(i), word);
            }
        }
    }

    /// The key as the map API wants it (same bytes).
    #[inline(always)]
    pub fn as_key(&self) -> &Key<PolicyKey> {
        // SAFETY: identical layout (u32 prefix length, then the key); the packed type has
        // alignment 1, so any address is suitably aligned for it.
        unsafe { &*core::ptr::from_ref(self).cast::<Key<PolicyKey>>() }
    }
}

/// Per-CPU state of one direction: working memory of a program run (the 512-byte BPF stack is
/// too small for the parsed packet and the lookup keys together) and the small caches that
/// carry over from one packet to the next. One slot per direction: an ingress run can never
/// clobber an egress run on the same CPU.
#[repr(C, align(8))]
pub struct Scratch {
    pub last_device: LastDevice,
    /// Flows this CPU recently confirmed, direct-mapped by ports and peer (one slot would
    /// thrash when flows interleave).
    pub recent: [RecentFlow; RECENT_SLOTS],
    pub pkt: Packet,
    pub key: LpmKey,
    pub flow: FlowKey,
    pub frag: FragKey,
}

const _: () = assert!(size_of::<LpmKey>() == size_of::<Key<PolicyKey>>());

#[map(name = "MULTUS_SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(DIRECTIONS, 0);

/// Slots of the per-CPU peer cache (a power of two: the slot is picked by masking).
pub const PEER_SLOTS: usize = 8;

/// A peer's policy trie entry as a lookup found it: valid while the epoch is the same (the agent
/// bumps it with every policy change, as it does for attachment changes).
#[repr(C, align(8))]
pub struct PeerSlot {
    pub id: u32,
    pub epoch: u32,
    pub family: u32,
    /// Non-zero once the slot holds an entry.
    pub used: u32,
    pub peer: [u32; 4],
    pub value: PolicyValue,
}

/// The last peers' trie entries of one direction on one CPU, direct-mapped by address: the
/// longest-prefix match over a large policy is the costliest step of a packet, and most packets
/// come from (or go to) a peer the CPU has just seen.
#[repr(C, align(8))]
pub struct PeerCache {
    pub slots: [PeerSlot; PEER_SLOTS],
}

#[map(name = "MULTUS_PEERS")]
pub static PEERS: PerCpuArray<PeerCache> = PerCpuArray::with_max_entries(DIRECTIONS, 0);

// Field offsets of the running kernel, set by the loader from its BTF (read-only data).
#[unsafe(no_mangle)]
pub static SKB_DEV_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
pub static DEV_NET_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
pub static NET_COOKIE_OFFSET: u32 = 0;
