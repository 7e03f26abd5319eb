//! Which network namespace a packet's device lives in.
use aya_ebpf::helpers::bpf_probe_read_kernel;

use crate::maps::{DEV_NET_OFFSET, NET_COOKIE_OFFSET, SKB_DEV_OFFSET};

/// The cookie of the namespace of the packet's device: `skb->dev->nd_net.net->net_cookie`.
/// (`bpf_get_netns_cookie()` answers the initial namespace for packets without a socket.)
#[inline(always)]
pub fn netns_cookie(skb: *mut core::ffi::c_void) -> Option<u64> {
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
