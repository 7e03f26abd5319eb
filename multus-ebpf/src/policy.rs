//! Deciding a packet's fate from its attachment's policy trie.
//!
//! A packet of a TCP, UDP or SCTP flow that passed on this CPU moments ago, under the same
//! policies, passes at once (see `flows::recently_passed`). Otherwise one peer lookup answers
//! both what the rules say for the packet's peer (deny already beat allow when the agent
//! compiled the trie) and the direction's defaults and flags; a port lookup follows only for
//! peers with more port blocks than fit inline. Then: anti-spoofing (egress), the rules, the
//! direction's default. A packet the rules would drop still passes when it is a reply
//! of a flow allowed the other way (re-checked against this policy when an earlier one allowed
//! it), or an ICMP error about one. ARP, IPv6 neighbour discovery (router advertisements and
//! redirects only on ingress) and DHCP client exchanges pass unless a rule denies them; other
//! non-IP frames always pass.
use aya_ebpf::programs::TcContext;
use multus_common::{
    DIR_EGRESS, DROP_DEFAULT_DENY, DROP_HEADER_CHAIN, DROP_MALFORMED, DROP_POLICY_DENY,
    DROP_SPOOFED, PolicyValue,
    policy::{
        BLOCKS_IN_TRIE, FAMILY_V4, FAMILY_V6, GENERATION_AUDITED, INLINE_BLOCKS, KIND_META,
        KIND_OWN, KIND_PEER, KIND_PORT, META_ANTI_SPOOF, META_ARP_RULES, META_AUDIT, META_PREFIX,
        META_ROUTER, META_TRACK, OWN_PREFIX_BASE, PEER_PREFIX_BASE, PORT_PREFIX_BASE, SPACE_ARP,
        SPACE_IP, VERDICT_ALLOW, VERDICT_DENY, VERDICT_NONE, family_bits,
    },
};

use crate::{
    flows::{self, Reply},
    fragments,
    maps::{PEER_SLOTS, PEERS, PeerSlot, PolicyTrie, Scratch},
    packet::{
        self, FRAG_NONE, ICMP_REDIRECT, IPPROTO_ICMP, IPPROTO_ICMPV6, L3, ND_NEIGHBOUR_ADVERT,
        ND_REDIRECT, ND_ROUTER_ADVERT, ND_ROUTER_SOLICIT, PULL_LEN, Packet,
    },
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
    if let Err(e) = parse(ctx, &mut s.pkt) {
        let reason = match e {
            packet::Malformed::HeaderChain => DROP_HEADER_CHAIN,
            packet::Malformed::Truncated => DROP_MALFORMED,
        };
        return Verdict::Drop {
            reason,
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
    // A packet of a flow that has just passed here passes again, the policy unchanged.
    if flows::recently_passed(s, id, direction) {
        return Verdict::Pass;
    }
    if s.pkt.frag != FRAG_NONE {
        fragments::track(s, id, direction);
    }
    let peer = if direction == DIR_EGRESS {
        s.pkt.dst_words()
    } else {
        s.pkt.src_words()
    };
    let family = s.pkt.family;
    // Every direction and family has a /0 entry; a miss means a trie without one: no opinion.
    let Some(entry) = peer_entry(trie, s, id, direction, family, peer) else {
        return Verdict::Pass;
    };
    let meta = &entry.meta;
    if direction == DIR_EGRESS && meta.flags & META_ANTI_SPOOF != 0 && spoofed(trie, s, entry) {
        return drop(DROP_SPOOFED, entry);
    }
    if s.pkt.l3 == L3::Arp {
        return if meta.flags & META_ARP_RULES != 0
            && port_verdict(trie, s, entry, SPACE_ARP, 0, 0) == VERDICT_DENY
        {
            drop(DROP_POLICY_DENY, entry)
        } else {
            Verdict::Pass
        };
    }
    let (proto, port) = (s.pkt.proto, s.pkt.dport);
    let reason = match port_verdict(trie, s, entry, SPACE_IP, proto, port) {
        VERDICT_ALLOW => None,
        VERDICT_DENY => Some(DROP_POLICY_DENY),
        _ if s.pkt.is_nd(direction == DIR_EGRESS) => return Verdict::Pass,
        _ if s.pkt.is_dhcp_client(direction == DIR_EGRESS) => return Verdict::Pass,
        _ if meta.default == VERDICT_ALLOW => None,
        _ => Some(DROP_DEFAULT_DENY),
    };
    let generation = meta.generation;
    let Some(reason) = reason else {
        if meta.flags & META_TRACK != 0 {
            flows::record(s, id, direction, generation);
        }
        return Verdict::Pass;
    };
    let mut reply = flows::is_reply(s, id, direction, generation);
    if matches!(reply, Reply::No)
        && s.pkt.is_icmp_error()
        && let Some(q) = packet::quoted(ctx, &s.pkt)
    {
        reply = flows::is_related(s, &q, id, direction, generation);
    }
    let passes = match reply {
        Reply::No => false,
        Reply::Yes => true,
        Reply::Recheck { origin } => {
            let allowed = still_allowed(trie, s, origin);
            if allowed {
                flows::restamp(s, generation);
            }
            allowed
        }
    };
    if passes {
        return Verdict::Pass;
    }
    // Audit mode passes the packet all the same: its flow is real and must be known by its
    // opener, but as one the policy does not allow.
    if meta.flags & (META_AUDIT | META_TRACK) == META_AUDIT | META_TRACK {
        flows::record(s, id, direction, GENERATION_AUDITED);
    }
    drop(reason, entry)
}

/// The trie entry of `peer` (the longest prefix containing it), from this CPU's peer cache when
/// it holds the peer under the current epoch, else from the trie (and then cached).
#[inline(always)]
fn peer_entry<'a>(
    trie: &'a PolicyTrie,
    s: &mut Scratch,
    id: u32,
    direction: u32,
    family: u8,
    peer: [u32; 4],
) -> Option<&'a PolicyValue> {
    let epoch = s.last_device.epoch;
    let mix = peer[0] ^ peer[1] ^ peer[2] ^ peer[3];
    let index = ((mix ^ (mix >> 8) ^ (mix >> 16) ^ (mix >> 24)) as usize) & (PEER_SLOTS - 1);
    let cache = PEERS.get_ptr_mut(direction);
    if let Some(cache) = cache {
        // SAFETY: this CPU's slot of the per-CPU map, used by this run only; the entry stays
        // valid for the rest of the run (nothing else writes it while the program runs).
        let slot: &'a PeerSlot = unsafe { &(*cache).slots[index] };
        if slot.used != 0
            && slot.id == id
            && slot.epoch == epoch
            && slot.family == u32::from(family)
            && slot.peer[0] == peer[0]
            && slot.peer[1] == peer[1]
            && slot.peer[2] == peer[2]
            && slot.peer[3] == peer[3]
        {
            return Some(&slot.value);
        }
    }
    s.key.set(
        PEER_PREFIX_BASE + family_bits(family),
        [KIND_PEER, direction as u8, family, 0],
        peer,
    );
    let entry = trie.get(s.key.as_key())?;
    if let Some(cache) = cache {
        // SAFETY: as above.
        let slot = unsafe { &mut (*cache).slots[index] };
        slot.id = id;
        slot.epoch = epoch;
        slot.family = u32::from(family);
        slot.peer = peer;
        copy_value(&mut slot.value, entry);
        slot.used = 1;
    }
    Some(entry)
}

const _: () = assert!(size_of::<PolicyValue>().is_multiple_of(4));

/// Copies a trie value word by word (a struct copy may become a call to a byte loop).
#[inline(always)]
fn copy_value(dst: &mut PolicyValue, src: &PolicyValue) {
    const WORDS: usize = size_of::<PolicyValue>() / 4;
    let (d, s) = (
        core::ptr::from_mut(dst).cast::<u32>(),
        core::ptr::from_ref(src).cast::<u32>(),
    );
    for i in 0..WORDS {
        // SAFETY: both point to a whole `PolicyValue` of `WORDS` 4-aligned words.
        unsafe { core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i))) };
    }
}

/// Whether the policy in force allows the opening packet of the flow in `s.flow` (opened in
/// direction `origin`, from the pod's side on egress, to it on ingress): a flow of an earlier
/// policy carries on only then.
#[inline(always)]
fn still_allowed(trie: &PolicyTrie, s: &mut Scratch, origin: u32) -> bool {
    let family = s.pkt.family;
    let peer = s.flow.peer;
    let peer = if family == FAMILY_V4 {
        [peer[3], 0, 0, 0]
    } else {
        peer
    };
    let proto = s.flow.proto as u8;
    let port = flows::opening_port(s, origin);
    s.key.set(
        PEER_PREFIX_BASE + family_bits(family),
        [KIND_PEER, origin as u8, family, 0],
        peer,
    );
    let Some(entry) = trie.get(s.key.as_key()) else {
        return false;
    };
    match port_verdict(trie, s, entry, SPACE_IP, proto, port) {
        VERDICT_ALLOW => true,
        VERDICT_DENY => false,
        _ => entry.meta.default == VERDICT_ALLOW,
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
    match packet::parse(ctx, pkt) {
        Ok(()) => return Ok(()),
        // Every header of the chain was read: pulling more changes nothing.
        Err(packet::Malformed::HeaderChain) => return Err(packet::Malformed::HeaderChain),
        Err(packet::Malformed::Truncated) => {}
    }
    let len = ctx.len();
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if len <= linear || ctx.pull_data(len.min(PULL_LEN)).is_err() {
        return Err(packet::Malformed::Truncated);
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

/// The verdict of the peer entry's port blocks for `proto` and destination `port` (`space`: IP,
/// or ARP with both zero).
#[inline(always)]
fn port_verdict(
    trie: &PolicyTrie,
    s: &mut Scratch,
    entry: &PolicyValue,
    space: u8,
    proto: u8,
    port: u16,
) -> u8 {
    // "Any protocol" never covers ARP: without a block naming ARP, no rule matched.
    let fallback = if space == SPACE_ARP {
        VERDICT_NONE
    } else {
        entry.verdict
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

/// Whether an egress frame claims a MAC or source address that is not the attachment's, or
/// speaks for someone else in neighbour discovery, or acts as a router without the policy's
/// leave. Unspecified sources (0.0.0.0 of DHCP, :: of duplicate address detection) cannot
/// impersonate anyone and pass.
#[inline(always)]
fn spoofed(trie: &PolicyTrie, s: &mut Scratch, entry: &PolicyValue) -> bool {
    let mac = entry.meta.mac;
    if s.pkt.src_mac != mac || (s.pkt.l3 == L3::Arp && s.pkt.arp_sha != mac) {
        return true;
    }
    let router = entry.meta.flags & META_ROUTER != 0;
    if s.pkt.l3 == L3::Ip && s.pkt.has_l4 && s.pkt.frag == FRAG_NONE {
        match (s.pkt.proto, s.pkt.icmp_type) {
            (IPPROTO_ICMP, ICMP_REDIRECT) | (IPPROTO_ICMPV6, ND_ROUTER_ADVERT | ND_REDIRECT)
                if !router =>
            {
                return true;
            }
            (IPPROTO_ICMPV6, ND_ROUTER_SOLICIT..=ND_REDIRECT) => {
                // The link-layer address the message announces must be the pod's own.
                if s.pkt.nd_unread || (s.pkt.nd_lladdr_kind != 0 && s.pkt.nd_lladdr != mac) {
                    return true;
                }
                // An advertisement speaks for its target: it must be one of the pod's
                // addresses.
                if s.pkt.icmp_type == ND_NEIGHBOUR_ADVERT {
                    let target = s.pkt.nd_target;
                    if !own(trie, s, FAMILY_V6, target) {
                        return true;
                    }
                }
            }
            _ => {}
        }
    }
    if s.pkt.src == [0; 16] {
        return false;
    }
    let family = if s.pkt.l3 == L3::Arp {
        FAMILY_V4
    } else {
        s.pkt.family
    };
    let src = s.pkt.src;
    !own(trie, s, family, src)
}

/// Whether `addr` is one of the attachment's own addresses.
#[inline(always)]
fn own(trie: &PolicyTrie, s: &mut Scratch, family: u8, addr: [u8; 16]) -> bool {
    let words = [
        u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]),
        u32::from_ne_bytes([addr[4], addr[5], addr[6], addr[7]]),
        u32::from_ne_bytes([addr[8], addr[9], addr[10], addr[11]]),
        u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]),
    ];
    s.key.set(
        OWN_PREFIX_BASE + family_bits(family),
        [KIND_OWN, 0, family, 0],
        words,
    );
    trie.get(s.key.as_key()).is_some()
}
