//! How large the dataplane's maps are: sized from the node (how many pods it runs, how many
//! secondary interfaces each may have, how many CPUs it has) rather than for the largest node
//! imaginable. Map memory is charged to the agent's memory cgroup, and per-CPU maps cost their
//! size once per *possible* CPU, so a fixed size that is harmless on 2 CPUs exceeds the
//! DaemonSet's limit on a large node.
use std::path::Path;

use multus_common::{
    DIRECTIONS, DeviceEntry, DirCounters, EVENT_RING_BYTES, EventBucket, EventStats, FlowBudget,
    FlowKey, FlowValue, FragKey, FragValue, IfaceKey, MAX_ATTACHMENTS, MAX_FRAGMENTS, maps,
};
use serde::{Deserialize, Serialize};

/// Kubelet's default `maxPods`.
pub const DEFAULT_MAX_PODS: u32 = 110;
/// Secondary interfaces per pod the default sizing allows for, on average over the node.
pub const DEFAULT_ATTACHMENTS_PER_POD: u32 = 4;
/// Flows each attachment's connection table holds by default.
pub const DEFAULT_FLOWS_PER_ATTACHMENT: u32 = 1_024;

/// The sizes the maps are created with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapSizing {
    /// Attachment ids are `1..max_attachments` (the per-attachment maps have this many slots).
    pub max_attachments: u32,
    /// Capacity of each attachment's connection table (an LRU of its own).
    pub flows_per_attachment: u32,
}

impl Default for MapSizing {
    fn default() -> Self {
        Self::for_node(
            DEFAULT_MAX_PODS,
            DEFAULT_ATTACHMENTS_PER_POD,
            DEFAULT_FLOWS_PER_ATTACHMENT,
        )
    }
}

impl MapSizing {
    /// Room for `max_pods` pods with `attachments_per_pod` secondary interfaces each (id 0 is
    /// never used), within the object's upper bound; at least one attachment and one flow.
    pub fn for_node(max_pods: u32, attachments_per_pod: u32, flows_per_attachment: u32) -> Self {
        let ids = max_pods
            .saturating_mul(attachments_per_pod)
            .saturating_add(1)
            .clamp(2, MAX_ATTACHMENTS);
        Self {
            max_attachments: ids,
            flows_per_attachment: flows_per_attachment.max(1),
        }
    }

    /// The sizing the object declares (what every map had before the agent sized them): the
    /// reference for what node-sizing saves.
    pub fn declared() -> Self {
        Self {
            max_attachments: MAX_ATTACHMENTS,
            flows_per_attachment: multus_common::MAX_FLOWS,
        }
    }

    /// `(map name, max_entries)` of every map whose size follows the number of attachments.
    pub fn map_entries(&self) -> [(&'static str, u32); 8] {
        let ids = self.max_attachments;
        [
            (maps::ATTACHMENTS, ids),
            (maps::DEVICES, ids),
            (maps::COUNTERS, ids * DIRECTIONS),
            (maps::POLICIES, ids),
            (maps::FLOWS, ids),
            (maps::FLOW_BUDGETS, ids),
            (maps::EVENT_BUCKETS, ids),
            (maps::EVENT_STATS, ids),
        ]
    }

    /// The sizing of maps a previous loader pinned in `maps_dir`: pinned maps are reused as
    /// they are (their size cannot change without losing counters, policies and flows), so a
    /// changed configuration applies once the pins are gone. `None` when nothing is pinned.
    pub fn pinned(maps_dir: &Path) -> Option<u32> {
        let info = aya::maps::MapInfo::from_pin(maps_dir.join(maps::ATTACHMENTS)).ok()?;
        Some(info.max_entries())
    }

    /// What the maps cost in kernel memory with `possible_cpus` CPUs, worst case: every
    /// attachment in use with a policy and a full connection table, policy tries not counted
    /// (they grow with the policies: about 260 bytes per CIDR, see docs/dataplane.md).
    pub fn memory(&self, possible_cpus: u32) -> MapMemory {
        let ids = u64::from(self.max_attachments);
        let cpus = u64::from(possible_cpus);
        let per_cpu = ids * u64::from(DIRECTIONS) * value_bytes::<DirCounters>() * cpus
            + ids * value_bytes::<EventStats>() * cpus;
        let flows = ids * lru_hash_bytes::<FlowKey, FlowValue>(self.flows_per_attachment, cpus);
        let shared = hash_bytes::<IfaceKey, u32>(self.max_attachments, cpus)
            + lru_hash_bytes::<u64, DeviceEntry>(self.max_attachments, cpus)
            + lru_hash_bytes::<FragKey, FragValue>(MAX_FRAGMENTS, cpus)
            // Arrays: the two arrays of maps hold a pointer per slot.
            + ids * 8 * 2
            + ids * value_bytes::<FlowBudget>()
            + ids * value_bytes::<EventBucket>()
            + u64::from(EVENT_RING_BYTES);
        MapMemory {
            per_cpu,
            flows,
            shared,
        }
    }
}

/// Kernel memory of the maps, by kind (see [`MapSizing::memory`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapMemory {
    /// Per-CPU maps (counters, drop event statistics), over all possible CPUs.
    pub per_cpu: u64,
    /// Every attachment's connection table, full.
    pub flows: u64,
    /// Everything else, created up front.
    pub shared: u64,
}

impl MapMemory {
    /// All of it.
    pub fn total(&self) -> u64 {
        self.per_cpu + self.flows + self.shared
    }
}

/// A value's size as the kernel stores it (rounded up to 8 bytes).
fn value_bytes<V>() -> u64 {
    (size_of::<V>() as u64).next_multiple_of(8)
}

/// `struct htab_elem` before the key: the hash node, the LRU node or free-list link, the hash.
const HTAB_ELEM_HEADER: u64 = 48;
/// `struct bucket`: list head and lock.
const HTAB_BUCKET: u64 = 16;

/// A preallocated hash map: its elements (plus one spare per CPU) and its buckets.
fn hash_bytes<K, V>(entries: u32, cpus: u64) -> u64 {
    let elem = HTAB_ELEM_HEADER + value_bytes::<K>() + value_bytes::<V>();
    (u64::from(entries) + cpus) * elem + u64::from(entries).next_power_of_two() * HTAB_BUCKET
}

/// An LRU hash map: its elements and buckets (no spares; the per-CPU lists are small).
fn lru_hash_bytes<K, V>(entries: u32, _cpus: u64) -> u64 {
    let elem = HTAB_ELEM_HEADER + value_bytes::<K>() + value_bytes::<V>();
    u64::from(entries) * elem + u64::from(entries).next_power_of_two() * HTAB_BUCKET
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// The DaemonSet's memory limit (deploy/30-daemonset.yaml).
    const DAEMONSET_LIMIT: u64 = 256 * MIB;
    /// What the agent itself needs besides the maps (watch caches, buffers, the runtime): the
    /// maps get the rest.
    const AGENT_WORKING_SET: u64 = 96 * MIB;

    #[test]
    fn default_sizing_fits_the_daemonset_limit_on_a_large_node() {
        for cpus in [2, 64, 128, 256, 512] {
            let memory = MapSizing::default().memory(cpus);
            assert!(
                memory.total() + AGENT_WORKING_SET <= DAEMONSET_LIMIT,
                "{cpus} CPUs: maps {memory:?} = {} MiB, plus {} MiB for the agent, exceed {} MiB",
                memory.total() / MIB,
                AGENT_WORKING_SET / MIB,
                DAEMONSET_LIMIT / MIB
            );
        }
    }

    #[test]
    fn declared_sizing_exceeds_the_limit_from_about_56_cpus() {
        // What every node paid before the maps were sized from it: the counters alone (32,768
        // slots of 176 bytes on every possible CPU) take 5.5 MiB per CPU.
        let declared = MapSizing::declared();
        assert_eq!(
            declared.memory(1).per_cpu,
            u64::from(MAX_ATTACHMENTS) * (2 * 176 + 24)
        );
        assert!(declared.memory(8).per_cpu < DAEMONSET_LIMIT);
        assert!(
            declared.memory(56).per_cpu > DAEMONSET_LIMIT,
            "{:?}",
            declared.memory(56)
        );
        assert!(declared.memory(256).per_cpu > 4 * DAEMONSET_LIMIT);
    }

    #[test]
    fn sizing_follows_the_node_and_stays_within_the_object() {
        let s = MapSizing::for_node(110, 4, 1024);
        assert_eq!(s.max_attachments, 441);
        assert_eq!(MapSizing::for_node(0, 0, 0).max_attachments, 2);
        assert_eq!(MapSizing::for_node(0, 0, 0).flows_per_attachment, 1);
        assert_eq!(
            MapSizing::for_node(100_000, 100, 1).max_attachments,
            MAX_ATTACHMENTS
        );
        let entries = s.map_entries();
        assert!(entries.contains(&(maps::COUNTERS, 882)));
        // Per-CPU memory grows with the node's pods, not with a fixed ceiling.
        let small = MapSizing::for_node(10, 4, 1024).memory(64).per_cpu;
        let large = MapSizing::for_node(110, 4, 1024).memory(64).per_cpu;
        assert!(small * 10 < large * 2, "{small} vs {large}");
    }
}
