//! The connection table: flows a policy allowed, so their replies pass the other direction.
//!
//! A flow is keyed from the pod's point of view (its own address and port first), so a packet and
//! its reply find the same entry. An entry remembers the policy generation that allowed it and
//! the direction it was opened in: after a policy change the caller checks the opening packet
//! against the new policy ([`Reply::Recheck`]) and, when it is still allowed, the flow carries on
//! under the new generation. TCP, UDP and SCTP flows are tracked, and ICMP echo (a request
//! opens, a reply answers); ICMP errors about a tracked flow count as its replies.
//!
//! Each attachment has a table of its own (an LRU the agent creates with the policy), so a pod
//! opening flows by the thousand evicts only its own least recently used flows, never another
//! pod's idle ones; [`FlowBudget`] counts those evictions.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
};
use multus_common::{
    DIR_EGRESS, DIR_INGRESS, FlowBudget, FlowKey, FlowValue,
    policy::{
        FAMILY_V4, FLOW_REFRESH_NS, FLOW_TIMEOUT_CLOSED_NS, FLOW_TIMEOUT_DATAGRAM_NS,
        FLOW_TIMEOUT_STREAM_NS, GENERATION_AUDITED,
    },
};

use crate::{
    maps::{FLOW_BUDGETS, FLOWS, FlowTable, RECENT_SLOTS, Scratch},
    packet::{
        FRAG_NONE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, L3, Quoted,
    },
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// Whether the packet belongs to a TCP, UDP or SCTP flow that passed in this direction on this
/// CPU, from the same MAC, less than [`RECENT_JIFFIES`] ago and under the same epoch: then the
/// policies are the ones that passed it and it passes again without a look at the policy or the
/// connection table. The policy's verdict depends on nothing else for such a packet (the peer,
/// the protocol and the destination port are the flow's; anti-spoofing looks at the source
/// address, the flow's too, and the MAC). Packets that open or close a TCP connection and
/// fragments always take the full path.
#[inline(always)]
pub fn recently_passed(s: &mut Scratch, id: u32, direction: u32) -> bool {
    let pkt = &s.pkt;
    if pkt.l3 != L3::Ip
        || pkt.frag != FRAG_NONE
        || !matches!(pkt.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
        || pkt.opens_flow()
        || pkt.ends_flow()
        || !flow_key(s, id, direction, true)
    {
        return false;
    }
    recently_confirmed(s, jiffies())
}

/// Records (or refreshes) the flow of an allowed packet.
///
/// A flow is known by the packet that opened it, which a policy change re-checks: a new flow's
/// origin is this packet's direction, except for a TCP SYN-ACK (the SYN went the other way), and
/// a TCP SYN starts a new connection on those ports whatever the table held for them. A packet
/// of a flow an earlier policy allowed leaves it alone: only its opener can carry it over (see
/// [`Reply::Recheck`]). An audit-mode would-be drop ([`GENERATION_AUDITED`]) is recorded but
/// never confirmed: each of its packets must be audited again.
#[inline(always)]
pub fn record(s: &mut Scratch, id: u32, direction: u32, generation: u32) {
    if !flow_key(s, id, direction, true) {
        return;
    }
    let tick = jiffies();
    let ends = s.pkt.ends_flow();
    let opens = s.pkt.opens_flow();
    let passed = generation != GENERATION_AUDITED;
    if passed && !ends && !opens && recently_confirmed(s, tick) {
        return;
    }
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let Some(table) = FLOWS.get(id) else {
        return;
    };
    match table.get_ptr_mut(&s.flow) {
        // SAFETY (these arms): a map value pointer from the lookup; a racing writer
        // can only store another timestamp, generation or flag, all whole words or bytes.
        Some(flow) if opens => unsafe {
            // The ports are used again by a new connection, opened here and now.
            (*flow).last_seen_ns = now;
            (*flow).generation = generation;
            (*flow).origin = direction as u8;
            (*flow).closing = 0;
        },
        Some(flow) if unsafe { (*flow).generation } == generation => unsafe {
            if now.wrapping_sub((*flow).last_seen_ns) > FLOW_REFRESH_NS {
                (*flow).last_seen_ns = now;
            }
            if ends {
                (*flow).closing = 1;
            }
        },
        // A flow of an earlier policy, and this packet goes the way its opener went (same ports,
        // same peer): the policy in force allows the opener too, so the flow carries on.
        Some(flow) if u32::from(unsafe { (*flow).origin }) == direction => unsafe {
            (*flow).generation = generation;
            (*flow).last_seen_ns = now;
            if ends {
                (*flow).closing = 1;
            }
        },
        // A flow of an earlier policy going the other way: only its opener can carry it over.
        Some(_) => return,
        // A FIN or RST opens nothing.
        None if ends => return,
        None => {
            let origin = if s.pkt.answers_open() {
                direction ^ 1
            } else {
                direction
            };
            let value = FlowValue {
                last_seen_ns: now,
                generation,
                origin: origin as u8,
                closing: 0,
                pad: 0,
            };
            // Only one CPU creates a flow (the others find it there): the count stays exact.
            // A full table evicts its least recently used flow.
            if table
                .insert(&s.flow, &value, u64::from(BPF_NOEXIST))
                .is_ok()
            {
                counted_insert(id);
                // A lookup marks the entry referenced. The kernel's LRU evicts unreferenced
                // entries first, and with most flows referenced by their replies those are the
                // newest: a busy table would evict a flow before its first reply came back.
                let _ = table.get_ptr(&s.flow);
            }
        }
    }
    if passed {
        confirm(s, tick);
    }
}

/// Whether a flow-table entry lets a packet through.
pub enum Reply {
    /// No live flow.
    No,
    /// A live flow of the policy in force.
    Yes,
    /// A live flow of an earlier policy, opened in direction `origin`: it counts if the policy
    /// in force still allows its opening packet (see [`restamp`]).
    Recheck { origin: u32 },
}

/// Whether a packet the policy would drop answers a flow that was allowed the other way.
#[inline(always)]
pub fn is_reply(s: &mut Scratch, id: u32, direction: u32, generation: u32) -> Reply {
    // A TCP SYN opens a connection: it answers none, even on the ports of an earlier one.
    if s.pkt.opens_flow() || !flow_key(s, id, direction, false) {
        return Reply::No;
    }
    let tick = jiffies();
    let ends = s.pkt.ends_flow();
    if !ends && recently_confirmed(s, tick) {
        return Reply::Yes;
    }
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let Some(table) = FLOWS.get(id) else {
        return Reply::No;
    };
    let Some(flow) = table.get_ptr_mut(&s.flow) else {
        return Reply::No;
    };
    // SAFETY: a map value pointer from the lookup above (see `record`).
    unsafe {
        let idle = now.wrapping_sub((*flow).last_seen_ns);
        if idle > timeout(s.pkt.proto, (*flow).closing) {
            // Dead: make room at once rather than when the LRU gets to it.
            counted_remove(table, &s.flow, id);
            return Reply::No;
        }
        if (*flow).generation != generation {
            return Reply::Recheck {
                origin: u32::from((*flow).origin),
            };
        }
        if idle > FLOW_REFRESH_NS {
            (*flow).last_seen_ns = now;
        }
        if ends {
            (*flow).closing = 1;
        }
    }
    confirm(s, tick);
    Reply::Yes
}

/// Moves the flow in `s.flow`, which the policy in force was found to allow, to `generation`.
#[inline(always)]
pub fn restamp(s: &mut Scratch, generation: u32) {
    let Some(table) = FLOWS.get(s.flow.attach_id) else {
        return;
    };
    if let Some(flow) = table.get_ptr_mut(&s.flow) {
        // SAFETY: a map value pointer from the lookup; whole-word stores.
        unsafe {
            (*flow).generation = generation;
            (*flow).last_seen_ns = bpf_ktime_get_coarse_ns();
        }
    }
}

/// The opening packet of the flow in `s.flow` as seen in direction `origin`: the destination
/// port a rule matches (zero for ICMP echo).
#[inline(always)]
pub fn opening_port(s: &Scratch, origin: u32) -> u16 {
    let f = &s.flow;
    match f.proto as u8 {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP if origin == DIR_INGRESS => f.local_port,
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => f.peer_port,
        _ => 0,
    }
}

/// Whether an ICMP error the policy would drop is about a flow the table holds (it quotes a packet
/// of that flow, which went the other way): "fragmentation needed" and friends for the pod's own
/// connections get through.
#[inline(always)]
pub fn is_related(s: &mut Scratch, q: &Quoted, id: u32, direction: u32, generation: u32) -> Reply {
    // The quoted packet travelled the other way: from the pod's point of view on egress, its
    // source is the pod's side.
    let (local, peer, local_port, peer_port) = if direction == DIR_EGRESS {
        (q.dst, q.src, q.dport, q.sport)
    } else {
        (q.src, q.dst, q.sport, q.dport)
    };
    let v4 = s.pkt.family == FAMILY_V4;
    let flow = &mut s.flow;
    flow.attach_id = id;
    flow.proto = u32::from(q.proto);
    flow.local_port = local_port;
    flow.peer_port = peer_port;
    flow.local = mapped(v4, local);
    flow.peer = mapped(v4, peer);
    let Some(table) = FLOWS.get(id) else {
        return Reply::No;
    };
    let Some(entry) = table.get_ptr(&s.flow) else {
        return Reply::No;
    };
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: a map value pointer from the lookup above.
    unsafe {
        if now.wrapping_sub((*entry).last_seen_ns) > timeout(q.proto, (*entry).closing) {
            Reply::No
        } else if (*entry).generation == generation {
            Reply::Yes
        } else {
            Reply::Recheck {
                origin: u32::from((*entry).origin),
            }
        }
    }
}

/// How long a flow of `proto` lives idle.
#[inline(always)]
fn timeout(proto: u8, closing: u8) -> u64 {
    match proto {
        _ if closing != 0 => FLOW_TIMEOUT_CLOSED_NS,
        IPPROTO_TCP | IPPROTO_SCTP => FLOW_TIMEOUT_STREAM_NS,
        _ => FLOW_TIMEOUT_DATAGRAM_NS,
    }
}

/// Whether a packet of `s.flow` from the same MAC passed in this direction on this CPU, under
/// this epoch (so under the policy in force), less than [`RECENT_JIFFIES`] ago, the connection
/// table holding its flow then. (An entry evicted from a full table in between is re-recorded at
/// most that much later.)
#[inline(always)]
fn recently_confirmed(s: &Scratch, tick: u64) -> bool {
    let recent = &s.recent[recent_slot(&s.flow)];
    recent.epoch == s.last_device.epoch
        && tick.wrapping_sub(recent.checked_jiffies) < RECENT_JIFFIES
        && same_flow(&recent.key, &s.flow)
        && recent.mac == s.pkt.src_mac
}

/// Remembers that the packet of `s.flow` passed, under this run's epoch.
#[inline(always)]
fn confirm(s: &mut Scratch, tick: u64) {
    let epoch = s.last_device.epoch;
    let mac = s.pkt.src_mac;
    let recent = &mut s.recent[recent_slot(&s.flow)];
    recent.key = s.flow;
    recent.epoch = epoch;
    recent.checked_jiffies = tick;
    recent.mac = mac;
}

/// How long a confirmed flow skips the table: 256 jiffies, one second at the common HZ of 250
/// (0.26 s at 1000, 2.6 s at 100), well inside the shortest flow timeout (10 s, closed TCP).
const RECENT_JIFFIES: u64 = 256;

/// The kernel's tick counter: the verifier turns the helper call into one load on 64-bit
/// kernels, which makes it the cheap clock of the per-packet fast path.
#[inline(always)]
fn jiffies() -> u64 {
    // SAFETY: plain helper call without arguments.
    unsafe { bpf_jiffies64() }
}

/// The slot of a flow among the recently confirmed ones.
#[inline(always)]
fn recent_slot(flow: &FlowKey) -> usize {
    let mix =
        u32::from(flow.local_port) ^ u32::from(flow.peer_port) ^ flow.peer[3] ^ flow.attach_id;
    ((mix ^ (mix >> 8) ^ (mix >> 16)) as usize) & (RECENT_SLOTS - 1)
}

/// Word-by-word comparison (array equality would become a call to a byte-loop `bcmp`).
#[inline(always)]
fn same_flow(a: &FlowKey, b: &FlowKey) -> bool {
    a.attach_id == b.attach_id
        && a.proto == b.proto
        && a.local_port == b.local_port
        && a.peer_port == b.peer_port
        && a.local[0] == b.local[0]
        && a.local[1] == b.local[1]
        && a.local[2] == b.local[2]
        && a.local[3] == b.local[3]
        && a.peer[0] == b.peer[0]
        && a.peer[1] == b.peer[1]
        && a.peer[2] == b.peer[2]
        && a.peer[3] == b.peer[3]
}

/// Fills `s.flow` with the packet's flow key; `false` when the packet does not belong to a
/// trackable flow. `opening` selects which ICMP echo message qualifies: a request opens, a reply
/// answers.
#[inline(always)]
fn flow_key(s: &mut Scratch, id: u32, direction: u32, opening: bool) -> bool {
    let pkt = &s.pkt;
    if !pkt.has_l4 {
        return false;
    }
    let egress = direction == DIR_EGRESS;
    let (local_port, peer_port) = match pkt.proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP if egress => (pkt.sport, pkt.dport),
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => (pkt.dport, pkt.sport),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let wanted = match (pkt.proto == IPPROTO_ICMP, opening) {
                (true, true) => ICMP_ECHO_REQUEST,
                (true, false) => ICMP_ECHO_REPLY,
                (false, true) => ICMPV6_ECHO_REQUEST,
                (false, false) => ICMPV6_ECHO_REPLY,
            };
            if pkt.icmp_type != wanted {
                return false;
            }
            (pkt.icmp_id, 0)
        }
        _ => return false,
    };
    let (local, peer) = if egress {
        (pkt.src_words(), pkt.dst_words())
    } else {
        (pkt.dst_words(), pkt.src_words())
    };
    let v4 = pkt.family == FAMILY_V4;
    let proto = u32::from(pkt.proto);
    let flow = &mut s.flow;
    flow.attach_id = id;
    flow.proto = proto;
    flow.local_port = local_port;
    flow.peer_port = peer_port;
    flow.local = mapped(v4, local);
    flow.peer = mapped(v4, peer);
    true
}

/// Counts a flow the programs created in attachment `id`'s table: one more live flow, or, when
/// the table was full already, one eviction (the LRU made room by dropping one of its flows).
#[inline(always)]
fn counted_insert(id: u32) {
    let Some(budget) = FLOW_BUDGETS.get_ptr_mut(id) else {
        return;
    };
    // SAFETY: a map value pointer from the lookup; the counters are only ever changed by atomic
    // adds, and a racing reader sees a whole word.
    unsafe {
        let budget: *mut FlowBudget = budget;
        if (*budget).live >= (*budget).capacity {
            atomic_add(&raw mut (*budget).evictions, 1);
        } else {
            atomic_add(&raw mut (*budget).live, 1);
        }
    }
}

/// Removes a flow from attachment `id`'s table and counts it gone (only the CPU whose delete
/// succeeded counts it).
#[inline(always)]
fn counted_remove(table: &FlowTable, key: &FlowKey, id: u32) {
    if table.remove(key).is_err() {
        return;
    }
    let Some(budget) = FLOW_BUDGETS.get_ptr_mut(id) else {
        return;
    };
    // SAFETY: as in `counted_insert`.
    unsafe {
        let budget: *mut FlowBudget = budget;
        if (*budget).live > 0 {
            atomic_add(&raw mut (*budget).live, u64::MAX);
        }
    }
}

/// An atomic add whose result is not used: the BPF target has no compare-and-swap, so core's
/// atomic types offer no `fetch_add`, but the instruction set has a plain atomic add.
///
/// # Safety
/// `dst` must point to a live, aligned map value word.
#[inline(always)]
unsafe fn atomic_add(dst: *mut u64, value: u64) {
    // SAFETY: per this function's contract.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            dst, value,
        );
    }
}

/// IPv4 addresses as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so the two families never collide
/// (in the connection table and the fragment table alike).
#[inline(always)]
pub fn mapped(v4: bool, addr: [u32; 4]) -> [u32; 4] {
    if v4 {
        [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), addr[0]]
    } else {
        addr
    }
}
