//! The programs' one kfunc call, `bpf_cast_to_kern_ctx`, for the running kernel.
//!
//! The eBPF toolchain here cannot declare a kernel function (that takes an extern in the object's
//! BTF, which the Rust compiler does not emit), so the programs carry a placeholder instruction
//! instead ([`KERN_CTX_CALL_PLACEHOLDER`]) and the object is patched before it is loaded: the
//! placeholder becomes the call, with the function's id from the kernel's BTF, or `r0 = 0` on a
//! kernel without it, which the programs take as "read `skb->dev` with the helper".
use multus_common::KERN_CTX_CALL_PLACEHOLDER;

use super::error::DataplaneError;

/// `BPF_ALU64 | BPF_MOV | BPF_K`: `dst = imm`.
const MOV64_IMM: u8 = 0xb7;

/// An eBPF object, copied into 8-byte aligned memory (the object parser reads its headers in
/// place).
pub struct Object {
    words: Vec<u64>,
    len: usize,
}

impl Object {
    /// The object's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` bytes; u8 has no alignment needs.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// `object` with every placeholder instruction turned into the call to the function of BTF id
/// `kfunc`, or into `r0 = 0` without one. An object without a placeholder is not this build's.
pub fn patch(object: &[u8], kfunc: Option<u32>) -> Result<Object, DataplaneError> {
    let mut out = Object {
        words: vec![0; object.len().div_ceil(8)],
        len: object.len(),
    };
    out.bytes_mut().copy_from_slice(object);
    let placeholder = KERN_CTX_CALL_PLACEHOLDER.to_le_bytes();
    let with = replacement(kfunc);
    let mut found = 0;
    // Instructions sit at 8-byte aligned offsets of 8-byte aligned sections.
    for insn in out.bytes_mut().as_chunks_mut::<8>().0 {
        if *insn == placeholder {
            *insn = with;
            found += 1;
        }
    }
    if found == 0 {
        return Err(DataplaneError::ObjectMismatch(
            "no bpf_cast_to_kern_ctx placeholder in the eBPF object",
        ));
    }
    Ok(out)
}

/// The instruction that takes the placeholder's place: the placeholder is the kfunc call already,
/// with a marker where the function's id goes.
fn replacement(kfunc: Option<u32>) -> [u8; 8] {
    match kfunc {
        // r1 stays the context argument; the result comes back in r0.
        Some(id) => {
            let mut call = KERN_CTX_CALL_PLACEHOLDER.to_le_bytes();
            call[4..].copy_from_slice(&id.to_le_bytes());
            call
        }
        None => [MOV64_IMM, 0, 0, 0, 0, 0, 0, 0],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::dataplane::{
        EBPF_OBJECT, attach::HOOKS, btf::NetnsOffsets, load_programs, sizing::MapSizing,
    };

    fn object_with(insns: &[u64]) -> Vec<u8> {
        let mut bytes = b"\x7fELF....".to_vec();
        bytes.resize(16, 0);
        insns.iter().for_each(|i| bytes.extend(i.to_le_bytes()));
        bytes.extend(b"tail");
        bytes
    }

    #[test]
    fn the_placeholder_becomes_the_call_or_a_null_result() {
        let exit = 0x95u64;
        let object = object_with(&[exit, KERN_CTX_CALL_PLACEHOLDER, exit]);
        let call = patch(&object, Some(0x1234)).unwrap();
        assert_eq!(call.bytes().len(), object.len());
        assert_eq!(call.bytes()[..24], object[..24]);
        assert_eq!(call.bytes()[24..32], [0x85, 0x20, 0, 0, 0x34, 0x12, 0, 0]);
        assert_eq!(call.bytes()[32..], object[32..]);
        assert_eq!(call.bytes().as_ptr().align_offset(8), 0);
        let none = patch(&object, None).unwrap();
        assert_eq!(none.bytes()[24..32], [0xb7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(none.bytes()[32..], object[32..]);
    }

    #[test]
    fn an_object_without_the_placeholder_is_refused() {
        let object = object_with(&[0x95]);
        assert!(matches!(
            patch(&object, Some(1)),
            Err(DataplaneError::ObjectMismatch(_))
        ));
    }

    /// The kernel verifies the programs both ways: with the kfunc call, and with the helper
    /// path that kernels before 6.3 take (forced here on a newer one).
    #[test]
    fn the_programs_load_with_the_kfunc_and_without_it() {
        if !multus_testkit::require_root("the_programs_load_with_the_kfunc_and_without_it") {
            return;
        }
        let offsets = NetnsOffsets::from_kernel().unwrap();
        for kfunc in [offsets.cast_to_kern_ctx, None] {
            let pins = multus_testkit::BpffsDir::new("kfn");
            let offsets = NetnsOffsets {
                cast_to_kern_ctx: kfunc,
                ..offsets
            };
            let sizing = MapSizing::default();
            if let Err(e) = load_programs(pins.path(), &offsets, &sizing) {
                panic!("kfunc {kfunc:?}: {e:#?}");
            }
        }
    }

    #[test]
    fn the_embedded_object_carries_one_placeholder_per_program() {
        let placeholder = KERN_CTX_CALL_PLACEHOLDER.to_le_bytes();
        let found = EBPF_OBJECT
            .as_chunks::<8>()
            .0
            .iter()
            .filter(|insn| **insn == placeholder)
            .count();
        assert_eq!(found, HOOKS.len());
    }
}
