//! Drop events: on the drop path only (after the verdict), one record per dropped or audited
//! packet into a ring buffer for the agent, rate-limited per attachment so that a flood costs
//! little beyond the drop itself.
use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, programs::TcContext};
use multus_common::{
    DropEvent, EVENT_AUDIT, EVENT_HAS_L4, EVENT_L3_ARP, EVENT_L3_IP, EventStats, MAX_ATTACHMENTS,
};

use crate::{
    maps::{EVENT_BUCKETS, EVENT_CONFIG, EVENT_STATS, EVENTS},
    packet::{FRAG_NONE, IPPROTO_ICMP, IPPROTO_ICMPV6, L3, Packet},
};

/// Reports a drop of the packet in `ctx` (parsed into `pkt`, as far as it parsed).
#[inline(always)]
pub fn report(
    ctx: &TcContext,
    pkt: &Packet,
    id: u32,
    direction: u32,
    reason: usize,
    audit: bool,
    len: u32,
) {
    let Some(config) = EVENT_CONFIG.get(0) else {
        return;
    };
    if config.interval_ns == 0 || id >= MAX_ATTACHMENTS {
        return;
    }
    let Some(stats) = EVENT_STATS.get_ptr_mut(id) else {
        return;
    };
    // SAFETY: this CPU's slot; programs do not migrate while they run.
    let stats: &mut EventStats = unsafe { &mut *stats };
    let Some(bucket) = EVENT_BUCKETS.get_ptr_mut(id) else {
        return;
    };
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // GCRA: the bucket is empty when the next theoretical arrival time runs more than the
    // burst ahead of now. Racing CPUs may each take the same token: at most one extra event per
    // CPU, which is fine for a rate limit of diagnostics.
    // SAFETY: a map value pointer from the lookup; whole-word loads and stores.
    let tat = unsafe { (*bucket).tat_ns };
    let tat = if tat < now { now } else { tat };
    if tat - now > config.burst_ns.saturating_sub(config.interval_ns) {
        stats.suppressed += 1;
        return;
    }
    // SAFETY: as above.
    unsafe { (*bucket).tat_ns = tat + config.interval_ns };
    let Some(mut entry) = EVENTS.reserve::<DropEvent>(0) else {
        stats.lost += 1;
        return;
    };
    let l3 = match pkt.l3 {
        L3::Ip => EVENT_L3_IP,
        L3::Arp => EVENT_L3_ARP,
        L3::Other => 0,
    };
    let mut flags = if audit { EVENT_AUDIT } else { 0 };
    let mut icmp_code = 0;
    if pkt.has_l4 {
        flags |= EVENT_HAS_L4;
        if matches!(pkt.proto, IPPROTO_ICMP | IPPROTO_ICMPV6) && pkt.frag == FRAG_NONE {
            icmp_code = ctx.load::<u8>(usize::from(pkt.l4_off) + 1).unwrap_or(0);
        }
    }
    entry.write(DropEvent {
        time_ns: now,
        attach_id: id,
        len,
        direction: direction as u8,
        reason: reason as u8,
        flags,
        l3,
        family: pkt.family,
        proto: pkt.proto,
        icmp_type: pkt.icmp_type,
        icmp_code,
        sport: pkt.sport,
        dport: pkt.dport,
        pad: 0,
        src: pkt.src,
        dst: pkt.dst,
        src_mac: pkt.src_mac,
        pad2: [0; 2],
    });
    entry.submit(0);
    stats.emitted += 1;
}
