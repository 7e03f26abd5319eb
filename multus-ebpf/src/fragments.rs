//! Fragmented datagrams: only the first fragment carries the layer-4 header, so its ports (or
//! ICMP type and identifier) are remembered by (attachment, direction, protocol, addresses, IP
//! identification), and the later fragments borrow them. Every fragment of a datagram then meets
//! the same rules and flows as its first: a datagram larger than the MTU passes or drops whole.
//! A later fragment whose first was not seen (out of order, or evicted) stays without ports:
//! only rules for any port of its protocol match it, and without its first fragment it cannot
//! be reassembled anyway.
use multus_common::{FragValue, policy::FAMILY_V4};

use crate::{
    flows::mapped,
    maps::{FRAGMENTS, Scratch},
    packet::{FRAG_FIRST, FRAG_LATER},
};

/// Remembers a first fragment's layer-4 fields, or fills a later fragment's in.
#[inline(always)]
pub fn track(s: &mut Scratch, id: u32, direction: u32) {
    let pkt = &s.pkt;
    let v4 = pkt.family == FAMILY_V4;
    let (src, dst) = (pkt.src_words(), pkt.dst_words());
    let key = &mut s.frag;
    key.attach_id = id;
    key.proto_dir = u32::from(pkt.proto) | (direction << 8);
    key.id = pkt.frag_id;
    key.pad = 0;
    key.src = mapped(v4, src);
    key.dst = mapped(v4, dst);
    if pkt.frag == FRAG_FIRST {
        if pkt.has_l4 {
            let value = FragValue {
                sport: pkt.sport,
                dport: pkt.dport,
                icmp_id: pkt.icmp_id,
                icmp_type: pkt.icmp_type,
                pad: 0,
            };
            // A full table evicts its least recently used datagram; nothing to do on error.
            let _ = FRAGMENTS.insert(&s.frag, &value, 0);
        }
        return;
    }
    if pkt.frag != FRAG_LATER {
        return;
    }
    if let Some(first) = FRAGMENTS.get_ptr(&s.frag) {
        // SAFETY: a map value pointer from the lookup; plain data.
        let first = unsafe { *first };
        let pkt = &mut s.pkt;
        pkt.sport = first.sport;
        pkt.dport = first.dport;
        pkt.icmp_id = first.icmp_id;
        pkt.icmp_type = first.icmp_type;
        pkt.has_l4 = true;
    }
}
