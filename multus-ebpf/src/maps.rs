//! The maps and read-only globals of the programs. Every map is pinned by name, so a new loader
//! reuses them: counters continue, policies and flows stay in force.
use aya_ebpf::{
    btf_maps::{ArrayOfMaps, LpmTrie},
    macros::{btf_map, map},
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use multus_common::{
    DIRECTIONS, DirCounters, FlowKey, FlowValue, IfaceKey, MAX_ATTACHMENTS, MAX_FLOWS,
    MAX_POLICY_ENTRIES, PolicyKey, PolicyValue,
};

/// `(netns cookie, ifindex)` to attachment id, written by the agent on attach.
#[map(name = "MULTUS_ATTACH")]
pub static ATTACHMENTS: HashMap<IfaceKey, u32> = HashMap::pinned(MAX_ATTACHMENTS, 0);

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

/// Flows a policy allowed, so that their replies pass the other direction.
#[map(name = "MULTUS_FLOWS")]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::pinned(MAX_FLOWS, 0);

// Field offsets of the running kernel, set by the loader from its BTF (read-only data).
#[unsafe(no_mangle)]
pub static SKB_DEV_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
pub static DEV_NET_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
pub static NET_COOKIE_OFFSET: u32 = 0;
