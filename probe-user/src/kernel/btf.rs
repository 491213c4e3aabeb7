//! A small reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`): just
//! enough to find struct member offsets, enum values and function arities.
//! Rust eBPF has no CO-RE relocations, so this is how the kernel programs
//! learn the running kernel's layout (see docs/architecture.md).
use std::collections::HashMap;

use crate::error::Error;

const MAGIC: u16 = 0xeb9f;
/// Deepest nesting of anonymous members or arrays followed (the kernel's
/// own BTF nests a handful deep).
const MAX_NESTING: u32 = 16;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub type_id: u32,
    pub bit_offset: u32,
    /// Non-zero for bitfields.
    pub bitfield_size: u32,
}

#[derive(Debug, Clone)]
pub enum Type {
    /// Placeholder for id 0 (`void`) and kinds we never look into.
    Other,
    Int {
        name: String,
        size: u32,
    },
    Ptr {
        target: u32,
    },
    Array {
        elem: u32,
        len: u32,
    },
    Struct {
        name: String,
        size: u32,
        members: Vec<Member>,
    },
    /// A typedef or a qualifier (const, volatile, ...): see through it.
    Alias {
        name: String,
        target: u32,
    },
    Enum {
        name: String,
        values: Vec<(String, i64)>,
    },
    Func {
        name: String,
        proto: u32,
    },
    FuncProto {
        params: u32,
    },
}

/// A member's location inside its outermost struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberLocation {
    pub bit_offset: u32,
    /// Bits of a bitfield; otherwise the member's size in bits.
    pub bits: u32,
    pub is_bitfield: bool,
}

pub struct Btf {
    types: Vec<Type>,
    by_name: HashMap<String, Vec<u32>>,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, Error> {
    b.get(off..off + 2).map(|s| u16::from_le_bytes([s[0], s[1]])).ok_or_else(|| Error::Btf("truncated BTF".into()))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, Error> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| Error::Btf("truncated BTF".into()))
}

impl Btf {
    pub const VMLINUX: &'static str = "/sys/kernel/btf/vmlinux";

    /// The kernel's BTF, from `path` ([`Btf::VMLINUX`] unless a
    /// [`super::DevKnobs`] says otherwise).
    pub fn from_file(path: &std::path::Path) -> Result<Btf, Error> {
        let data = std::fs::read(path).map_err(|e| {
            Error::Btf(format!(
                "cannot read {}: {e}; sockprobe needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (5.5 or later)",
                path.display()
            ))
        })?;
        Self::parse(&data).map_err(|e| Error::Btf(format!("{}: {e}", path.display())))
    }

    pub fn parse(data: &[u8]) -> Result<Btf, Error> {
        if u16_at(data, 0)? != MAGIC {
            return Err(Error::Btf("bad BTF magic (big-endian BTF is not supported)".into()));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| Error::Btf("BTF string section out of bounds".into()))?;
        let name = |off: u32| -> String {
            let s = strings.get(off as usize..).unwrap_or(&[]);
            let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            String::from_utf8_lossy(&s[..end]).into_owned()
        };

        let mut types = vec![Type::Other];
        let mut pos = hdr_len + type_off;
        let end = pos + type_len;
        while pos < end {
            let name_off = u32_at(data, pos)?;
            let info = u32_at(data, pos + 4)?;
            let size_or_type = u32_at(data, pos + 8)?;
            pos += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let ty = match kind {
                KIND_INT => {
                    pos += 4;
                    Type::Int { name: name(name_off), size: size_or_type }
                }
                KIND_PTR => Type::Ptr { target: size_or_type },
                KIND_ARRAY => {
                    let elem = u32_at(data, pos)?;
                    let len = u32_at(data, pos + 8)?;
                    pos += 12;
                    Type::Array { elem, len }
                }
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let m_name = u32_at(data, pos)?;
                        let m_type = u32_at(data, pos + 4)?;
                        let m_off = u32_at(data, pos + 8)?;
                        pos += 12;
                        let (bit_offset, bitfield_size) =
                            if kind_flag { (m_off & 0xff_ffff, m_off >> 24) } else { (m_off, 0) };
                        members.push(Member { name: name(m_name), type_id: m_type, bit_offset, bitfield_size });
                    }
                    Type::Struct { name: name(name_off), size: size_or_type, members }
                }
                KIND_ENUM => {
                    let mut values = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let v_name = u32_at(data, pos)?;
                        let raw = u32_at(data, pos + 4)?;
                        pos += 8;
                        let value = if kind_flag { raw as i32 as i64 } else { raw as i64 };
                        values.push((name(v_name), value));
                    }
                    Type::Enum { name: name(name_off), values }
                }
                KIND_ENUM64 => {
                    let mut values = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let v_name = u32_at(data, pos)?;
                        let lo = u32_at(data, pos + 4)? as u64;
                        let hi = u32_at(data, pos + 8)? as u64;
                        pos += 12;
                        values.push((name(v_name), ((hi << 32) | lo) as i64));
                    }
                    Type::Enum { name: name(name_off), values }
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    Type::Alias { name: name(name_off), target: size_or_type }
                }
                KIND_FUNC => Type::Func { name: name(name_off), proto: size_or_type },
                KIND_FUNC_PROTO => {
                    pos += 8 * vlen;
                    Type::FuncProto { params: vlen as u32 }
                }
                KIND_VAR => {
                    pos += 4;
                    Type::Other
                }
                KIND_DATASEC => {
                    pos += 12 * vlen;
                    Type::Other
                }
                KIND_DECL_TAG => {
                    pos += 4;
                    Type::Other
                }
                KIND_FWD | KIND_FLOAT => Type::Other,
                other => return Err(Error::Btf(format!("unknown BTF kind {other}"))),
            };
            types.push(ty);
        }

        let mut by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (id, ty) in types.iter().enumerate() {
            let n = match ty {
                Type::Struct { name, .. }
                | Type::Enum { name, .. }
                | Type::Func { name, .. }
                | Type::Alias { name, .. }
                | Type::Int { name, .. } => name,
                _ => continue,
            };
            if !n.is_empty() {
                by_name.entry(n.clone()).or_default().push(id as u32);
            }
        }
        Ok(Btf { types, by_name })
    }

    fn ty(&self, id: u32) -> &Type {
        self.types.get(id as usize).unwrap_or(&Type::Other)
    }

    /// Follows typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.ty(id) {
                Type::Alias { target, .. } => id = *target,
                _ => break,
            }
        }
        id
    }

    fn size_of(&self, id: u32) -> u32 {
        self.size_at_depth(id, 0)
    }

    /// Arrays of arrays nest, but not without end: a crafted (or broken)
    /// BTF whose array contains itself stops here.
    fn size_at_depth(&self, id: u32, depth: u32) -> u32 {
        if depth > MAX_NESTING {
            return 0;
        }
        match self.ty(self.resolve(id)) {
            Type::Int { size, .. } | Type::Struct { size, .. } => *size,
            Type::Ptr { .. } => 8,
            Type::Enum { .. } => 4,
            Type::Array { elem, len } => self.size_at_depth(*elem, depth + 1).saturating_mul(*len),
            _ => 0,
        }
    }

    fn struct_named(&self, name: &str) -> Option<u32> {
        self.by_name
            .get(name)?
            .iter()
            .copied()
            .find(|&id| matches!(self.ty(id), Type::Struct { members, .. } if !members.is_empty()))
    }

    /// Finds `name` among the members of struct/union `id`, looking through
    /// anonymous structs and unions. Returns (bit offset, member).
    fn find_member(&self, id: u32, name: &str) -> Option<(u32, Member)> {
        self.find_member_at_depth(id, name, 0)
    }

    fn find_member_at_depth(&self, id: u32, name: &str, depth: u32) -> Option<(u32, Member)> {
        // Found by fuzzing: an anonymous member of its own type recursed
        // until the stack overflowed.
        if depth > MAX_NESTING {
            return None;
        }
        let Type::Struct { members, .. } = self.ty(self.resolve(id)) else { return None };
        for m in members {
            if m.name == name {
                return Some((m.bit_offset, m.clone()));
            }
        }
        for m in members.iter().filter(|m| m.name.is_empty()) {
            if let Some((off, found)) = self.find_member_at_depth(m.type_id, name, depth + 1) {
                return Some((m.bit_offset.saturating_add(off), found));
            }
        }
        None
    }

    /// Location of `struct_name.path[0].path[1]...`, offsets summed.
    pub fn member(&self, struct_name: &str, path: &[&str]) -> Option<MemberLocation> {
        let mut id = self.struct_named(struct_name)?;
        let mut bit_offset = 0;
        let mut last = None;
        for part in path {
            let (off, m) = self.find_member(id, part)?;
            bit_offset = u32::saturating_add(bit_offset, off);
            id = m.type_id;
            last = Some(m);
        }
        let m = last?;
        let (bits, is_bitfield) = if m.bitfield_size != 0 {
            (m.bitfield_size, true)
        } else {
            (self.size_of(m.type_id).saturating_mul(8), false)
        };
        Some(MemberLocation { bit_offset, bits, is_bitfield })
    }

    /// Value of enumerator `name`, in whichever enum defines it.
    pub fn enum_value(&self, name: &str) -> Option<i64> {
        self.types.iter().find_map(|t| match t {
            Type::Enum { values, .. } => values.iter().find(|(n, _)| n == name).map(|(_, v)| *v),
            _ => None,
        })
    }

    /// All enumerators of the enum named `name`.
    pub fn enum_values(&self, name: &str) -> Option<Vec<(String, i64)>> {
        self.by_name.get(name)?.iter().find_map(|&id| match self.ty(id) {
            Type::Enum { values, .. } if !values.is_empty() => Some(values.clone()),
            _ => None,
        })
    }

    /// Arguments of the tracepoint `name` as a tp_btf program sees them
    /// (`btf_trace_<name>` minus its leading context pointer), if it exists.
    pub fn tracepoint_arity(&self, name: &str) -> Option<u32> {
        let id = *self.by_name.get(&format!("btf_trace_{name}"))?.first()?;
        let Type::Ptr { target } = self.ty(self.resolve(id)) else { return None };
        match self.ty(self.resolve(*target)) {
            Type::FuncProto { params } => Some(params.saturating_sub(1)),
            _ => None,
        }
    }

    /// Parameter count of the kernel function `name`, if BTF knows it.
    pub fn function_arity(&self, name: &str) -> Option<u32> {
        self.by_name.get(name)?.iter().find_map(|&id| match self.ty(id) {
            Type::Func { proto, .. } => match self.ty(*proto) {
                Type::FuncProto { params } => Some(*params),
                _ => None,
            },
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: `struct s { int a; struct { char b; }; u8 c:2; }`,
    /// `enum e { X = 7 }`, `typedef void (*btf_trace_tp)(void *, int, int)`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0c\0e\0X\0btf_trace_tp\0char\0".to_vec();
        let s = |name: &str| -> u32 {
            let needle = format!("\0{name}\0");
            strings.windows(needle.len()).position(|w| w == needle.as_bytes()).unwrap() as u32 + 1
        };
        let mut t = Vec::new();
        let mut put = |v: u32| t.extend_from_slice(&v.to_le_bytes());
        // 1: int (4 bytes)
        put(s("int"));
        put(KIND_INT << 24);
        put(4);
        put(32);
        // 2: char
        put(s("char"));
        put(KIND_INT << 24);
        put(1);
        put(8);
        // 3: anonymous struct { char b; }
        put(0);
        put(KIND_STRUCT << 24 | 1);
        put(1);
        put(s("b"));
        put(2);
        put(0);
        // 4: struct s, kind_flag for bitfield offsets
        put(s("s"));
        put(1 << 31 | KIND_STRUCT << 24 | 3);
        put(12);
        put(s("a"));
        put(1);
        put(0);
        put(0);
        put(3);
        put(32);
        put(s("c"));
        put(2);
        put(2 << 24 | 66);
        // 5: enum e { X = 7 }
        put(s("e"));
        put(KIND_ENUM << 24 | 1);
        put(4);
        put(s("X"));
        put(7);
        // 6: func proto (void *, int, int)
        put(0);
        put(KIND_FUNC_PROTO << 24 | 3);
        put(0);
        for ty in [0, 1, 1] {
            put(0);
            put(ty);
        }
        // 7: ptr -> 6
        put(0);
        put(KIND_PTR << 24);
        put(6);
        // 8: typedef btf_trace_tp -> 7
        put(s("btf_trace_tp"));
        put(KIND_TYPEDEF << 24);
        put(7);

        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.push(1);
        out.push(0);
        for v in [24u32, 0, t.len() as u32, t.len() as u32, strings.len() as u32] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&t);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn members_through_anonymous_structs_and_bitfields() {
        let btf = Btf::parse(&sample()).expect("sample BTF parses");
        let a = btf.member("s", &["a"]).unwrap();
        assert_eq!((a.bit_offset, a.bits, a.is_bitfield), (0, 32, false));
        let b = btf.member("s", &["b"]).unwrap();
        assert_eq!((b.bit_offset, b.bits), (32, 8));
        let c = btf.member("s", &["c"]).unwrap();
        assert_eq!((c.bit_offset, c.bits, c.is_bitfield), (66, 2, true));
        assert!(btf.member("s", &["nope"]).is_none());
    }

    #[test]
    fn enums_and_tracepoint_arity() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.enum_value("X"), Some(7));
        assert_eq!(btf.enum_values("e").unwrap(), vec![("X".to_string(), 7)]);
        assert_eq!(btf.tracepoint_arity("tp"), Some(2));
        assert_eq!(btf.tracepoint_arity("missing"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
        assert!(Btf::parse(&[]).is_err());
    }
}
