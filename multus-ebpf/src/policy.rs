//! Deciding a packet's fate from its attachment's policy trie.
//!
//! One peer lookup answers both what the rules say for the packet's peer (deny already beat allow
//! when the agent compiled the trie) and the direction's defaults and flags; a port lookup
//! follows only for peers with more port blocks than fit inline. Then: anti-spoofing (egress), the
//! rules, the direction's default. A packet the rules would drop still passes when it is a reply
//! of a flow allowed the other way, or an ICMP error about one. ARP and IPv6 neighbour discovery pass unless a rule denies
//! them; other non-IP frames always pass.
use aya_ebpf::programs::TcContext;
use multus_common::{
    DIR_EGRESS, DROP_DEFAULT_DENY, DROP_MALFORMED, DROP_POLICY_DENY, DROP_SPOOFED, PolicyValue,
    policy::{
        BLOCKS_IN_TRIE, FAMILY_V4, INLINE_BLOCKS, KIND_META, KIND_OWN, KIND_PEER, KIND_PORT,
        META_ANTI_SPOOF, META_ARP_RULES, META_AUDIT, META_PREFIX, META_TRACK, OWN_PREFIX_BASE,
        PEER_PREFIX_BASE, PORT_PREFIX_BASE, SPACE_ARP, SPACE_IP, VERDICT_ALLOW, VERDICT_DENY,
        VERDICT_NONE, family_bits,
    },
};

use crate::{
    flows,
    maps::{PolicyTrie, Scratch},
    packet::{self, L3, PULL_LEN, Packet},
};

/// What happens to a packet.
pub enum Verdict {
    /// On to the next program on the hook.
    Pass,
    /// Dropped for a `DROP_*` reason; with `audit`, only counted as such and passed.
    Drop { reason: usize, audit: bool },
}

/// Decides the fate of the packet in `ctx` under `trie`, attachment `id`'s policy.
#[inline(always)]
pub fn decide(
    ctx: &TcContext,
    trie: &PolicyTrie,
    s: &mut Scratch,
    id: u32,
    direction: u32,
) -> Verdict {
    if parse(ctx, &mut s.pkt).is_err() {
        // Without a policy entry at hand, count it against the policy as enforced (not audit).
        return Verdict::Drop {
            reason: DROP_MALFORMED,
            audit: audit_mode(trie, s, direction),
        };
    }
    if s.pkt.l3 == L3::Other {
        if direction == DIR_EGRESS {
            meta_key(s, direction);
            if let Some(meta) = trie.get(s.key.as_key())
                && meta.meta.flags & META_ANTI_SPOOF != 0
                && s.pkt.src_mac != meta.meta.mac
            {
                return drop(DROP_SPOOFED, meta);
            }
        }
        return Verdict::Pass;
    }
    let peer = if direction == DIR_EGRESS {
        s.pkt.dst_words()
    } else {
        s.pkt.src_words()
    };
    let family = s.pkt.family;
    s.key.set(
        PEER_PREFIX_BASE + family_bits(family),
        [KIND_PEER, direction as u8, family, 0],
        peer,
    );
    // Every direction and family has a /0 entry; a miss means a trie without one: no opinion.
    let Some(entry) = trie.get(s.key.as_key()) else {
        return Verdict::Pass;
    };
    let meta = &entry.meta;
    if direction == DIR_EGRESS && meta.flags & META_ANTI_SPOOF != 0 && spoofed(trie, s, entry) {
        return drop(DROP_SPOOFED, entry);
    }
    if s.pkt.l3 == L3::Arp {
        return if meta.flags & META_ARP_RULES != 0
            && port_verdict(trie, s, entry, SPACE_ARP) == VERDICT_DENY
        {
            drop(DROP_POLICY_DENY, entry)
        } else {
            Verdict::Pass
        };
    }
    let reason = match port_verdict(trie, s, entry, SPACE_IP) {
        VERDICT_ALLOW => None,
        VERDICT_DENY => Some(DROP_POLICY_DENY),
        _ if s.pkt.is_nd() => return Verdict::Pass,
        _ if meta.default == VERDICT_ALLOW => None,
        _ => Some(DROP_DEFAULT_DENY),
    };
    match reason {
        None => {
            if meta.flags & META_TRACK != 0 {
                flows::record(s, id, direction, meta.generation);
            }
            Verdict::Pass
        }
        Some(_) if flows::is_reply(s, id, direction, meta.generation) => Verdict::Pass,
        Some(_)
            if s.pkt.is_icmp_error()
                && packet::quoted(ctx, &s.pkt)
                    .is_some_and(|q| flows::is_related(s, &q, id, direction, meta.generation)) =>
        {
            Verdict::Pass
        }
        Some(reason) => drop(reason, entry),
    }
}

#[inline(always)]
fn drop(reason: usize, entry: &PolicyValue) -> Verdict {
    Verdict::Drop {
        reason,
        audit: entry.meta.flags & META_AUDIT != 0,
    }
}

/// Parses into `pkt`, pulling the headers into the linear part once if they are not there.
#[inline(always)]
fn parse(ctx: &TcContext, pkt: &mut Packet) -> Result<(), packet::Malformed> {
    pkt.reset();
    if packet::parse(ctx, pkt).is_ok() {
        return Ok(());
    }
    let len = ctx.len();
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if len <= linear || ctx.pull_data(len.min(PULL_LEN)).is_err() {
        return Err(packet::Malformed);
    }
    pkt.reset();
    packet::parse(ctx, pkt)
}

/// Whether the direction's policy is in audit mode (for packets too broken to look up a peer).
#[inline(always)]
fn audit_mode(trie: &PolicyTrie, s: &mut Scratch, direction: u32) -> bool {
    meta_key(s, direction);
    trie.get(s.key.as_key())
        .is_some_and(|m| m.meta.flags & META_AUDIT != 0)
}

/// The key of a direction's meta entry (`PolicyKey::meta`).
#[inline(always)]
fn meta_key(s: &mut Scratch, direction: u32) {
    s.key
        .set(META_PREFIX, [KIND_META, direction as u8, 0, 0], [0; 4]);
}

/// The verdict of the peer entry's port blocks for the packet (`space`: IP or ARP).
#[inline(always)]
fn port_verdict(trie: &PolicyTrie, s: &mut Scratch, entry: &PolicyValue, space: u8) -> u8 {
    // "Any protocol" never covers ARP: without a block naming ARP, no rule matched.
    let fallback = if space == SPACE_ARP {
        VERDICT_NONE
    } else {
        entry.verdict
    };
    let (proto, port) = if space == SPACE_ARP {
        (0, 0)
    } else {
        (s.pkt.proto, s.pkt.dport)
    };
    if entry.blocks == BLOCKS_IN_TRIE {
        // `PolicyKey::port`: set id and port, big-endian, at the start of the data.
        let [p0, p1] = port.to_be_bytes();
        s.key.set(
            PORT_PREFIX_BASE + 16,
            [KIND_PORT, 0, space, proto],
            [
                u32::from_ne_bytes(entry.set.to_be_bytes()),
                u32::from_ne_bytes([p0, p1, 0, 0]),
                0,
                0,
            ],
        );
        return trie.get(s.key.as_key()).map_or(fallback, |p| p.verdict);
    }
    for i in 0..INLINE_BLOCKS {
        if i >= usize::from(entry.blocks) {
            break;
        }
        let b = &entry.block[i];
        if b.space == space && b.proto == proto && b.start <= port && port <= b.end {
            return b.verdict;
        }
    }
    fallback
}

/// Whether an egress frame claims a MAC or source address that is not the attachment's.
/// Unspecified sources (0.0.0.0 of DHCP, :: of duplicate address detection) cannot impersonate
/// anyone and pass.
#[inline(always)]
fn spoofed(trie: &PolicyTrie, s: &mut Scratch, entry: &PolicyValue) -> bool {
    let mac = entry.meta.mac;
    if s.pkt.src_mac != mac || (s.pkt.l3 == L3::Arp && s.pkt.arp_sha != mac) {
        return true;
    }
    if s.pkt.src == [0; 16] {
        return false;
    }
    let family = if s.pkt.l3 == L3::Arp {
        FAMILY_V4
    } else {
        s.pkt.family
    };
    let src = s.pkt.src_words();
    s.key.set(
        OWN_PREFIX_BASE + family_bits(family),
        [KIND_OWN, 0, family, 0],
        src,
    );
    trie.get(s.key.as_key()).is_none()
}
