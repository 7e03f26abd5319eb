//! Which attachment a packet belongs to.
//!
//! The node-wide identity of an interface is `(netns cookie, ifindex)`, found by following
//! `skb->dev->nd_net.net->net_cookie` (`bpf_get_netns_cookie()` answers the initial namespace for
//! packets without a socket). `skb->dev` is one load through `bpf_cast_to_kern_ctx` (kernels
//! 6.3+; a helper call before); the other two reads are helper calls, so the result is cached
//! by device address: in a per-CPU slot for the previous packet's device, then in an LRU map. A
//! cached entry counts only in the epoch it was made in; the agent bumps the epoch whenever
//! attachments change, because a freed device's address can come back as another device.
use aya_ebpf::helpers::bpf_probe_read_kernel;
use multus_common::{DeviceEntry, IfaceKey, KERN_CTX_CALL_PLACEHOLDER};

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

/// The kernel's `struct sk_buff` behind the program's context (`bpf_cast_to_kern_ctx`, kernels
/// 6.3+): its `dev` is then one load instead of a helper call. Null where the kernel lacks the
/// function (the loader then put `r0 = 0` in the call's place).
#[inline(always)]
fn kern_ctx(skb: *mut core::ffi::c_void) -> *const u8 {
    let kern: *const u8;
    // SAFETY: the placeholder becomes either the kfunc call, which takes the context in r1 and
    // returns in r0 and clobbers r1 to r5 like any call, or `r0 = 0`; neither writes memory.
    unsafe {
        core::arch::asm!(
            ".8byte {call}",
            call = const KERN_CTX_CALL_PLACEHOLDER,
            inlateout("r1") skb => _,
            lateout("r0") kern,
            lateout("r2") _,
            lateout("r3") _,
            lateout("r4") _,
            lateout("r5") _,
            options(nostack, readonly),
        );
    }
    kern
}

/// The attachment id of the packet's device, or `None` when it is not ours.
#[inline(always)]
pub fn attachment_id(
    skb: *mut core::ffi::c_void,
    ifindex: u32,
    last: &mut LastDevice,
) -> Option<u32> {
    let skb_dev = global(&raw const SKB_DEV_OFFSET);
    let kern = kern_ctx(skb);
    let dev: u64 = if kern.is_null() {
        // SAFETY: bpf_probe_read_kernel checks every address; a bad one is an error, not a fault.
        unsafe { bpf_probe_read_kernel(skb.cast::<u8>().add(skb_dev).cast()) }.ok()?
    } else {
        // SAFETY: `kern` is the kernel's `struct sk_buff` of this packet and `skb_dev` the
        // offset of its `dev` field in the running kernel; the verifier checks the load against
        // the kernel's BTF.
        unsafe { core::ptr::read_volatile(kern.add(skb_dev).cast::<u64>()) }
    };
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
