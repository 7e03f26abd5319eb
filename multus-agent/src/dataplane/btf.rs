//! Field offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The TC programs find the network namespace of a packet's device by following
//! `skb->dev->nd_net.net->net_cookie` with `bpf_probe_read_kernel`; the offsets of those fields
//! change between kernel builds, so the agent reads them here and hands them to the programs as
//! read-only globals at load time. (`bpf_get_netns_cookie()` cannot be used: for a packet without
//! a socket, such as every received packet, it returns the initial namespace's cookie.) The BTF
//! also says whether the kernel has the kfunc `bpf_cast_to_kern_ctx`, through which the first
//! read is a plain load (see `kfunc`).
use std::{collections::HashMap, path::Path};

/// Where the kernel's own BTF lives.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The offsets the programs need, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetnsOffsets {
    /// `offsetof(struct sk_buff, dev)`.
    pub skb_dev: u32,
    /// `offsetof(struct net_device, nd_net.net)`.
    pub dev_net: u32,
    /// `offsetof(struct net, net_cookie)`.
    pub net_cookie: u32,
    /// The BTF id of the kfunc `bpf_cast_to_kern_ctx` (kernels 6.3+), which reads `skb->dev`
    /// without a helper call; `None` on older kernels.
    pub cast_to_kern_ctx: Option<u32>,
}

/// Why the offsets could not be found.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The data is not BTF this parser understands.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// A struct or field is missing (a kernel too old or built without it).
    #[error("kernel BTF has no {0}")]
    Missing(String),
}

impl NetnsOffsets {
    /// Reads the offsets from the running kernel.
    pub fn from_kernel() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    /// Reads the offsets from a BTF file.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let btf = Btf::parse(&data)?;
        Ok(Self {
            skb_dev: btf.offset_of("sk_buff", &["dev"])?,
            dev_net: btf.offset_of("net_device", &["nd_net", "net"])?,
            net_cookie: btf.offset_of("net", &["net_cookie"])?,
            cast_to_kern_ctx: btf.func_id(b"bpf_cast_to_kern_ctx"),
        })
    }
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
}

struct Type {
    kind: u32,
    /// Offset of the name in the string section (0: anonymous).
    name: u32,
    /// Referenced type for modifiers and typedefs.
    ty: u32,
    members: Vec<Member>,
}

struct Btf<'a> {
    strings: &'a [u8],
    /// Index 0 is `void`.
    types: Vec<Type>,
    structs_by_name: HashMap<&'a [u8], u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed("truncated"))
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        if data.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let section = |off: usize, len: usize| {
            data.get(hdr_len + off..hdr_len + off + len)
                .ok_or(BtfError::Malformed("section out of bounds"))
        };
        let type_data = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;
        let mut btf = Self {
            strings,
            types: vec![Type {
                kind: 0,
                name: 0,
                ty: 0,
                members: Vec::new(),
            }],
            structs_by_name: HashMap::new(),
        };
        let mut at = 0;
        while at < type_data.len() {
            let name = u32_at(type_data, at)?;
            let info = u32_at(type_data, at + 4)?;
            let size_or_type = u32_at(type_data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => at += 12,
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let offset = u32_at(type_data, at + 8)?;
                        members.push(Member {
                            name: u32_at(type_data, at)?,
                            ty: u32_at(type_data, at + 4)?,
                            bit_offset: if kind_flag {
                                offset & 0x00ff_ffff
                            } else {
                                offset
                            },
                        });
                        at += 12;
                    }
                }
                KIND_ENUM | KIND_FUNC_PROTO => at += 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => at += 12 * vlen,
                _ => {}
            }
            let id = u32::try_from(btf.types.len())
                .map_err(|_| BtfError::Malformed("too many types"))?;
            if kind == KIND_STRUCT && name != 0 {
                let n = btf.name(name);
                // Keep the first definition; later ones are duplicates from other units.
                btf.structs_by_name.entry(n).or_insert(id);
            }
            btf.types.push(Type {
                kind,
                name,
                ty: size_or_type,
                members,
            });
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &'a [u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// The id of the function (`BTF_KIND_FUNC`) called `name`.
    fn func_id(&self, name: &[u8]) -> Option<u32> {
        let at = self
            .types
            .iter()
            .position(|t| t.kind == KIND_FUNC && t.name != 0 && self.name(t.name) == name)?;
        u32::try_from(at).ok()
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.ty;
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Byte offset of `path` (nested member names) inside struct `name`; anonymous struct and
    /// union members are searched through, as C lets one name their fields directly.
    fn offset_of(&self, name: &str, path: &[&str]) -> Result<u32, BtfError> {
        let missing = || BtfError::Missing(format!("{name}.{}", path.join(".")));
        let id = *self
            .structs_by_name
            .get(name.as_bytes())
            .ok_or_else(missing)?;
        let mut ty = self.types.get(id as usize).ok_or_else(missing)?;
        let mut bits = 0;
        for field in path {
            let (off, member_ty) = self
                .find_member(ty, field.as_bytes(), 0)
                .ok_or_else(missing)?;
            bits += off;
            ty = member_ty;
        }
        if bits % 8 == 0 {
            Ok(bits / 8)
        } else {
            Err(missing())
        }
    }

    fn find_member(&self, ty: &Type, field: &[u8], depth: u32) -> Option<(u32, &Type)> {
        if depth > 8 || !matches!(ty.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for m in &ty.members {
            let member_ty = self.resolve(m.ty)?;
            if m.name == 0 {
                if let Some((off, t)) = self.find_member(member_ty, field, depth + 1) {
                    return Some((m.bit_offset + off, t));
                }
            } else if self.name(m.name) == field {
                return Some((m.bit_offset, member_ty));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn finds_the_netns_path_in_the_running_kernel() {
        let offsets = NetnsOffsets::from_kernel().unwrap();
        // Sanity bounds: the fields exist and sit inside their structs.
        assert!(offsets.skb_dev > 0 && offsets.skb_dev < 256, "{offsets:?}");
        assert!(offsets.dev_net > 0 && offsets.dev_net < 4096, "{offsets:?}");
        assert!(
            offsets.net_cookie > 0 && offsets.net_cookie < 65_536,
            "{offsets:?}"
        );
    }

    #[test]
    fn finds_the_kfunc_on_kernels_that_have_it() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.trim().split(['.', '-']);
        let major: u32 = parts.next().unwrap().parse().unwrap();
        let minor: u32 = parts.next().unwrap().parse().unwrap();
        let offsets = NetnsOffsets::from_kernel().unwrap();
        if (major, minor) >= (6, 3) {
            let id = offsets
                .cast_to_kern_ctx
                .expect("6.3+ has bpf_cast_to_kern_ctx");
            let data = std::fs::read(VMLINUX_BTF).unwrap();
            let btf = Btf::parse(&data).unwrap();
            let t = &btf.types[id as usize];
            assert_eq!(t.kind, KIND_FUNC);
            assert_eq!(btf.name(t.name), b"bpf_cast_to_kern_ctx");
        } else {
            assert_eq!(offsets.cast_to_kern_ctx, None, "{release}");
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, clearly").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0]).is_err());
    }
}
