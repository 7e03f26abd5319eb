//! The multus dataplane: one TC classifier per direction, loaded once per node and attached to every
//! secondary interface of every pod. Which interface a packet belongs to is looked up by
//! `(netns cookie, ifindex)`; everything else is map data keyed by the agent's attachment id:
//! counters, the attachment's policy trie, and the flows its policy allowed.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// The BPF target has no compare-and-swap, so core's atomics lack `fetch_add`; the flow table's
// counters use the plain atomic add intrinsic instead (the eBPF build runs with build-std).
#![cfg_attr(target_arch = "bpf", allow(internal_features))]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
// The one kfunc call (see `device`) is an instruction written out in inline assembly.
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

#[cfg(target_arch = "bpf")]
mod device;
#[cfg(target_arch = "bpf")]
mod events;
#[cfg(target_arch = "bpf")]
mod flows;
#[cfg(target_arch = "bpf")]
mod fragments;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod policy;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        EbpfContext as _,
        bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC},
        macros::classifier,
        programs::TcContext,
    };
    use multus_common::{DIR_EGRESS, DIR_INGRESS, DROP_REASONS, DirCounters, counter_index};

    use crate::{
        device::attachment_id,
        events,
        maps::{COUNTERS, POLICIES, SCRATCH},
        policy::{self, Verdict},
    };

    /// Pod-side receive path.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "the classifier macro fixes the signature"
    )]
    #[classifier]
    pub fn multus_ingress(ctx: TcContext) -> i32 {
        handle(&ctx, DIR_INGRESS)
    }

    /// Pod-side transmit path.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "the classifier macro fixes the signature"
    )]
    #[classifier]
    pub fn multus_egress(ctx: TcContext) -> i32 {
        handle(&ctx, DIR_EGRESS)
    }

    #[inline(always)]
    fn handle(ctx: &TcContext, direction: u32) -> i32 {
        let skb = ctx.as_ptr();
        // SAFETY: `skb` is the program's context pointer; the verifier checks the access.
        let ifindex = unsafe { (*skb.cast::<aya_ebpf::bindings::__sk_buff>()).ifindex };
        let Some(scratch) = SCRATCH.get_ptr_mut(direction) else {
            return TC_ACT_UNSPEC;
        };
        // SAFETY: this CPU's slot for this direction, used by this run only (programs do not
        // migrate while they run).
        let scratch = unsafe { &mut *scratch };
        let Some(id) = attachment_id(skb, ifindex, &mut scratch.last_device) else {
            // Not ours (or being detached): stay out of the way.
            return TC_ACT_UNSPEC;
        };
        let Some(counters) = COUNTERS.get_ptr_mut(counter_index(id, direction)) else {
            return TC_ACT_UNSPEC;
        };
        let len = u64::from(ctx.len());
        // SAFETY: per-CPU slot of this CPU; programs do not migrate while they run.
        unsafe {
            (*counters).packets += 1;
            (*counters).bytes += len;
        }
        // No policy: the attachment only counts.
        let Some(trie) = POLICIES.get(id) else {
            return TC_ACT_UNSPEC;
        };
        match policy::decide(ctx, trie, scratch, id, direction) {
            // Allowed traffic continues to the next program on the hook.
            Verdict::Pass => TC_ACT_UNSPEC,
            Verdict::Drop { reason, audit } => {
                // SAFETY: as above.
                unsafe { count_drop(&mut *counters, reason, len, audit) };
                events::report(ctx, &scratch.pkt, id, direction, reason, audit, len as u32);
                if audit { TC_ACT_UNSPEC } else { TC_ACT_SHOT }
            }
        }
    }

    #[inline(always)]
    fn count_drop(c: &mut DirCounters, reason: usize, len: u64, audit: bool) {
        if reason >= DROP_REASONS {
            return;
        }
        let (packets, bytes) = if audit {
            (&mut c.audit_packets, &mut c.audit_bytes)
        } else {
            (&mut c.drop_packets, &mut c.drop_bytes)
        };
        if let Some(p) = packets.get_mut(reason) {
            *p += 1;
        }
        if let Some(b) = bytes.get_mut(reason) {
            *b += len;
        }
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }

    /// GPL-compatible, required by GPL-only helpers such as `bpf_probe_read_kernel`.
    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
