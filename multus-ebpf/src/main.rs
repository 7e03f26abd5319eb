//! The multus dataplane: one TC classifier per direction, loaded once per node and attached to every
//! secondary interface of every pod. Which interface a packet belongs to is looked up by
//! `(netns cookie, ifindex)`; everything else is map data keyed by the agent's attachment id.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod dataplane {
    use aya_ebpf::{
        EbpfContext as _,
        bindings::TC_ACT_UNSPEC,
        helpers::bpf_probe_read_kernel,
        macros::{classifier, map},
        maps::{HashMap, PerCpuArray},
        programs::TcContext,
    };
    use multus_common::{
        DIR_EGRESS, DIR_INGRESS, DIRECTIONS, DirCounters, IfaceKey, MAX_ATTACHMENTS, counter_index,
    };

    /// `(netns cookie, ifindex)` to attachment id, written by the agent on attach.
    #[map(name = "MULTUS_ATTACH")]
    static ATTACHMENTS: HashMap<IfaceKey, u32> = HashMap::pinned(MAX_ATTACHMENTS, 0);

    /// Traffic counters per attachment and direction, one slot per CPU (no atomics needed).
    #[map(name = "MULTUS_COUNTERS")]
    static COUNTERS: PerCpuArray<DirCounters> =
        PerCpuArray::pinned(MAX_ATTACHMENTS * DIRECTIONS, 0);

    // Field offsets of the running kernel, set by the loader from its BTF (read-only data).
    #[unsafe(no_mangle)]
    static SKB_DEV_OFFSET: u32 = 0;
    #[unsafe(no_mangle)]
    static DEV_NET_OFFSET: u32 = 0;
    #[unsafe(no_mangle)]
    static NET_COOKIE_OFFSET: u32 = 0;

    /// The cookie of the namespace of the packet's device: `skb->dev->nd_net.net->net_cookie`.
    /// (`bpf_get_netns_cookie()` answers the initial namespace for packets without a socket.)
    #[inline(always)]
    fn device_netns_cookie(skb: *mut core::ffi::c_void) -> Option<u64> {
        // SAFETY: read-only globals, frozen by the loader before the program runs.
        let (skb_dev, dev_net, net_cookie) = unsafe {
            (
                core::ptr::read_volatile(&raw const SKB_DEV_OFFSET),
                core::ptr::read_volatile(&raw const DEV_NET_OFFSET),
                core::ptr::read_volatile(&raw const NET_COOKIE_OFFSET),
            )
        };
        // SAFETY: bpf_probe_read_kernel checks every address; a bad one is an error, not a fault.
        unsafe {
            let dev: *const u8 =
                bpf_probe_read_kernel(skb.cast::<u8>().add(skb_dev as usize).cast()).ok()?;
            let net: *const u8 = bpf_probe_read_kernel(dev.add(dev_net as usize).cast()).ok()?;
            bpf_probe_read_kernel(net.add(net_cookie as usize).cast::<u64>()).ok()
        }
    }

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
        let Some(netns_cookie) = device_netns_cookie(skb) else {
            return TC_ACT_UNSPEC;
        };
        let key = IfaceKey {
            netns_cookie,
            // SAFETY: `skb` is the program's context pointer; the verifier checks the access.
            ifindex: unsafe { (*skb.cast::<aya_ebpf::bindings::__sk_buff>()).ifindex },
            pad: 0,
        };
        let Some(id) = ATTACHMENTS.get_ptr(&key) else {
            // Not ours (or being detached): stay out of the way.
            return TC_ACT_UNSPEC;
        };
        // SAFETY: a valid map value pointer returned by the lookup above.
        let id = unsafe { *id };
        if let Some(counters) = COUNTERS.get_ptr_mut(counter_index(id, direction)) {
            // SAFETY: per-CPU slot of this CPU; programs run with preemption disabled.
            unsafe {
                (*counters).packets += 1;
                (*counters).bytes += u64::from(ctx.len());
            }
        }
        // Allowed traffic continues to the next program on the hook.
        TC_ACT_UNSPEC
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
