//! Which attachment a packet belongs to.
//!
//! The node-wide identity of an interface is `(netns cookie, ifindex)`, found by following
//! `skb->dev->nd_net.net->net_cookie` (`bpf_get_netns_cookie()` answers the initial namespace for
//! packets without a socket). Each of those kernel reads is a helper call, so the result is cached
//! by device address: in a per-CPU slot for the previous packet's device, then in an LRU map. A
//! cached entry counts only in the epoch it was made in; the agent bumps the epoch whenever
//! attachments change, because a freed device's address can come back as another device.
use aya_ebpf::helpers::bpf_probe_read_kernel;
use multus_common::{DeviceEntry, IfaceKey};

use crate::maps::{
    ATTACHMENTS, DEV_NET_OFFSET, DEVICES, EPOCH, LastDevice, NET_COOKIE_OFFSET, SKB_DEV_OFFSET,
};

/// A read-only global. Volatile, so the compiler does not fold in the zero it was compiled with;
/// the verifier then sees the constant the loader froze.
#[inline(always)]
fn global(value: *const u32) -> usize {
    // SAFETY: a pointer to one of our read-only globals, frozen before any program runs.
    unsafe { core::ptr::read_volatile(value) as usize }
}

/// The attachment id of the packet's device, or `None` when it is not ours.
#[inline(always)]
pub fn attachment_id(
    skb: *mut core::ffi::c_void,
    ifindex: u32,
    last: &mut LastDevice,
) -> Option<u32> {
    let skb_dev = global(&raw const SKB_DEV_OFFSET);
    // SAFETY: bpf_probe_read_kernel checks every address; a bad one is an error, not a fault.
    let dev: u64 = unsafe { bpf_probe_read_kernel(skb.cast::<u8>().add(skb_dev).cast()) }.ok()?;
    let epoch = EPOCH.get(0).copied().unwrap_or(0);
    if last.dev == dev && last.epoch == epoch {
        return Some(last.id);
    }
    let id = match DEVICES.get_ptr(&dev) {
        // SAFETY: a map value pointer from the lookup above.
        Some(entry) if unsafe { (*entry).epoch } == epoch => unsafe { (*entry).id },
        _ => {
            let id = lookup_slow(dev, ifindex)?;
            let _ = DEVICES.insert(&dev, &DeviceEntry { id, epoch }, 0);
            id
        }
    };
    *last = LastDevice { dev, id, epoch };
    Some(id)
}

/// Reads the device's namespace cookie and looks `(cookie, ifindex)` up.
#[inline(always)]
fn lookup_slow(dev: u64, ifindex: u32) -> Option<u32> {
    let dev = dev as *const u8;
    let (dev_net, net_cookie) = (
        global(&raw const DEV_NET_OFFSET),
        global(&raw const NET_COOKIE_OFFSET),
    );
    // SAFETY: bpf_probe_read_kernel checks every address; a bad one is an error, not a fault.
    let netns_cookie = unsafe {
        let net: *const u8 = bpf_probe_read_kernel(dev.add(dev_net).cast()).ok()?;
        bpf_probe_read_kernel(net.add(net_cookie).cast::<u64>()).ok()?
    };
    let key = IfaceKey {
        netns_cookie,
        ifindex,
        pad: 0,
    };
    // SAFETY: a map value pointer from the lookup.
    ATTACHMENTS.get_ptr(&key).map(|id| unsafe { *id })
}
