//! The connection table: flows a policy allowed, so their replies pass the other direction.
//!
//! A flow is keyed from the pod's point of view (its own address and port first), so a packet and
//! its reply find the same entry. An entry counts only for the policy generation that made it: a
//! new policy starts with a clean slate, and a flow it still allows re-records itself on its next
//! packet. TCP, UDP and SCTP flows are tracked, and ICMP echo (a request opens, a reply answers).
use aya_ebpf::helpers::generated::bpf_ktime_get_coarse_ns;
use multus_common::{
    DIR_EGRESS, FlowKey, FlowValue,
    policy::{FAMILY_V4, FLOW_REFRESH_NS, FLOW_TIMEOUT_DATAGRAM_NS, FLOW_TIMEOUT_STREAM_NS},
};

use crate::{
    maps::FLOWS,
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Packet},
};

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// Records (or refreshes) the flow of an allowed packet.
#[inline(always)]
pub fn record(id: u32, direction: u32, pkt: &Packet, generation: u32) {
    let Some(key) = flow_key(id, direction, pkt, true) else {
        return;
    };
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(flow) = FLOWS.get_ptr_mut(&key) {
        // SAFETY: a map value pointer from the lookup above; a racing writer can only store
        // another timestamp or generation, both whole words.
        unsafe {
            if (*flow).generation == generation {
                if now.wrapping_sub((*flow).last_seen_ns) > FLOW_REFRESH_NS {
                    (*flow).last_seen_ns = now;
                }
                return;
            }
        }
    }
    let value = FlowValue {
        last_seen_ns: now,
        generation,
        pad: 0,
    };
    // A full table evicts its least recently used flow; nothing to do on error.
    let _ = FLOWS.insert(&key, &value, 0);
}

/// Whether a packet the policy would drop answers a flow that was allowed the other way.
#[inline(always)]
pub fn is_reply(id: u32, direction: u32, pkt: &Packet, generation: u32) -> bool {
    let Some(key) = flow_key(id, direction, pkt, false) else {
        return false;
    };
    let Some(flow) = FLOWS.get_ptr_mut(&key) else {
        return false;
    };
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let timeout = match pkt.proto {
        IPPROTO_TCP | IPPROTO_SCTP => FLOW_TIMEOUT_STREAM_NS,
        _ => FLOW_TIMEOUT_DATAGRAM_NS,
    };
    // SAFETY: a map value pointer from the lookup above (see `record`).
    unsafe {
        let idle = now.wrapping_sub((*flow).last_seen_ns);
        if (*flow).generation != generation || idle > timeout {
            return false;
        }
        if idle > FLOW_REFRESH_NS {
            (*flow).last_seen_ns = now;
        }
    }
    true
}

/// The flow key of a packet, or `None` when the packet does not belong to a trackable flow.
/// `opening` selects which ICMP echo message qualifies: a request opens, a reply answers.
#[inline(always)]
fn flow_key(id: u32, direction: u32, pkt: &Packet, opening: bool) -> Option<FlowKey> {
    if !pkt.has_l4 {
        return None;
    }
    let (local, peer, local_port, peer_port) = if direction == DIR_EGRESS {
        (&pkt.src, &pkt.dst, pkt.sport, pkt.dport)
    } else {
        (&pkt.dst, &pkt.src, pkt.dport, pkt.sport)
    };
    let (local_port, peer_port) = match pkt.proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => (local_port, peer_port),
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let wanted = match (pkt.proto == IPPROTO_ICMP, opening) {
                (true, true) => ICMP_ECHO_REQUEST,
                (true, false) => ICMP_ECHO_REPLY,
                (false, true) => ICMPV6_ECHO_REQUEST,
                (false, false) => ICMPV6_ECHO_REPLY,
            };
            if pkt.icmp_type != wanted {
                return None;
            }
            (pkt.icmp_id, 0)
        }
        _ => return None,
    };
    Some(FlowKey {
        attach_id: id,
        proto: pkt.proto,
        pad: [0; 3],
        local_port,
        peer_port,
        local: mapped(pkt.family, local),
        peer: mapped(pkt.family, peer),
    })
}

/// IPv4 addresses as IPv4-mapped IPv6 (`::ffff:a.b.c.d`), so the two families never collide.
#[inline(always)]
fn mapped(family: u8, addr: &[u8; 16]) -> [u8; 16] {
    if family == FAMILY_V4 {
        [
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, addr[0], addr[1], addr[2], addr[3],
        ]
    } else {
        *addr
    }
}
