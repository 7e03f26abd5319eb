//! Deciding a packet's fate from its attachment's policy trie.
//!
//! Order: anti-spoofing (egress), then the rules (one peer lookup, at most one port lookup: deny
//! already beat allow when the agent compiled the trie), then the direction's default. A packet the
//! rules would drop still passes when it is a reply of a flow allowed the other way. ARP and IPv6
//! neighbour discovery pass unless a rule denies them; other non-IP frames always pass.
use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use multus_common::{
    DIR_EGRESS, DROP_DEFAULT_DENY, DROP_MALFORMED, DROP_POLICY_DENY, DROP_SPOOFED, PolicyKey,
    PolicyValue,
    policy::{
        FAMILY_V4, META_ANTI_SPOOF, META_ARP_RULES, META_PREFIX, META_TRACK, OWN_PREFIX_BASE,
        PEER_HAS_PORTS, PEER_PREFIX_BASE, PORT_PREFIX_BASE, SPACE_ARP, SPACE_IP, VERDICT_ALLOW,
        VERDICT_DENY, VERDICT_NONE, family_bits,
    },
};

use crate::{
    flows,
    maps::PolicyTrie,
    packet::{self, L3, Packet},
};

/// What happens to a packet.
pub enum Verdict {
    /// On to the next program on the hook.
    Pass,
    /// Dropped (or, in audit mode, counted and passed) for a `DROP_*` reason.
    Drop(usize),
}

/// The meta entry of a direction; `None` only while a trie is being built, which never happens
/// to a trie the programs can see (it is filled before it is swapped in).
#[inline(always)]
pub fn meta(trie: &PolicyTrie, direction: u32) -> Option<&PolicyValue> {
    trie.get(&Key::new(META_PREFIX, PolicyKey::meta(direction as u8)))
}

#[inline(always)]
pub fn decide(
    ctx: &TcContext,
    trie: &PolicyTrie,
    meta: &PolicyValue,
    id: u32,
    direction: u32,
) -> Verdict {
    let mut pkt = Packet::new();
    if packet::parse(ctx, &mut pkt).is_err() {
        return Verdict::Drop(DROP_MALFORMED);
    }
    if direction == DIR_EGRESS && meta.flags & META_ANTI_SPOOF != 0 && spoofed(trie, meta, &pkt) {
        return Verdict::Drop(DROP_SPOOFED);
    }
    match pkt.l3 {
        L3::Other => Verdict::Pass,
        L3::Arp => {
            if meta.flags & META_ARP_RULES != 0
                && rules(trie, direction, &pkt, SPACE_ARP) == VERDICT_DENY
            {
                Verdict::Drop(DROP_POLICY_DENY)
            } else {
                Verdict::Pass
            }
        }
        L3::Ip => {
            let reason = match rules(trie, direction, &pkt, SPACE_IP) {
                VERDICT_ALLOW => None,
                VERDICT_DENY => Some(DROP_POLICY_DENY),
                _ if pkt.is_nd() => return Verdict::Pass,
                _ if meta.verdict == VERDICT_ALLOW => None,
                _ => Some(DROP_DEFAULT_DENY),
            };
            match reason {
                None => {
                    if meta.flags & META_TRACK != 0 {
                        flows::record(id, direction, &pkt, meta.id);
                    }
                    Verdict::Pass
                }
                Some(_) if flows::is_reply(id, direction, &pkt, meta.id) => Verdict::Pass,
                Some(reason) => Verdict::Drop(reason),
            }
        }
    }
}

/// The flattened verdict of the rules for the packet's peer, protocol and port.
#[inline(always)]
fn rules(trie: &PolicyTrie, direction: u32, pkt: &Packet, space: u8) -> u8 {
    let peer = if direction == DIR_EGRESS {
        pkt.dst
    } else {
        pkt.src
    };
    let key = Key::new(
        PEER_PREFIX_BASE + family_bits(pkt.family),
        PolicyKey::peer(direction as u8, pkt.family, peer),
    );
    let Some(entry) = trie.get(&key) else {
        return VERDICT_NONE;
    };
    let (set, fallback) = (entry.id, entry.verdict);
    if entry.flags & PEER_HAS_PORTS == 0 {
        // ARP only matches rules that name it, never "any protocol".
        return if space == SPACE_ARP {
            VERDICT_NONE
        } else {
            fallback
        };
    }
    let (proto, port) = if space == SPACE_ARP {
        (0, 0)
    } else {
        (pkt.proto, pkt.dport)
    };
    let key = Key::new(
        PORT_PREFIX_BASE + 16,
        PolicyKey::port(set, space, proto, port),
    );
    match trie.get(&key) {
        Some(entry) => entry.verdict,
        None if space == SPACE_ARP => VERDICT_NONE,
        None => fallback,
    }
}

/// Whether an egress frame claims a MAC or source address that is not the attachment's.
/// Unspecified sources (0.0.0.0 of DHCP, :: of duplicate address detection) cannot
/// impersonate anyone and pass.
#[inline(always)]
fn spoofed(trie: &PolicyTrie, meta: &PolicyValue, pkt: &Packet) -> bool {
    if pkt.src_mac != meta.mac {
        return true;
    }
    match pkt.l3 {
        L3::Other => false,
        L3::Arp => pkt.arp_sha != meta.mac || !own_or_unspecified(trie, FAMILY_V4, &pkt.src),
        L3::Ip => !own_or_unspecified(trie, pkt.family, &pkt.src),
    }
}

#[inline(always)]
fn own_or_unspecified(trie: &PolicyTrie, family: u8, addr: &[u8; 16]) -> bool {
    if *addr == [0; 16] {
        return true;
    }
    let bits = family_bits(family);
    trie.get(&Key::new(
        OWN_PREFIX_BASE + bits,
        PolicyKey::own(family, *addr),
    ))
    .is_some()
}
