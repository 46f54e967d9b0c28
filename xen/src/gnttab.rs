//! Grant tables (`xen/include/public/grant_table.h`), the types both ends
//! of a shared ring need.
//!
//! A domain *grants* one of its pages to a peer by filling an entry of its
//! grant table; the peer *maps* it by (granting domain, grant reference).
//! Only the granting domain can revoke, and revoking succeeds only once the
//! peer has unmapped (the hypervisor keeps the `reading`/`writing` bits set
//! while a mapping exists). INS therefore has the protected side (the
//! driver) grant and the instance map: the driver's memory stays the
//! driver's, and a hostile instance can never make the driver map pages it
//! chose.

use core::fmt;

/// Bytes in a Xen page (x86).
pub const PAGE_SIZE: usize = 4096;

/// Grant entries `0..NR_RESERVED_ENTRIES` are reserved for the toolstack
/// (`GNTTAB_NR_RESERVED_ENTRIES`); no guest ever grants through them.
pub const NR_RESERVED_ENTRIES: u32 = 8;

/// Flags of a v1 grant entry (`GTF_*`).
pub mod flags {
    /// `GTF_permit_access`: the peer may map the frame.
    pub const PERMIT_ACCESS: u16 = 1;
    /// `GTF_readonly`: the peer may map it read-only only.
    pub const READONLY: u16 = 1 << 2;
    /// `GTF_reading`: set by Xen while the peer maps the frame.
    pub const READING: u16 = 1 << 3;
    /// `GTF_writing`: set by Xen while the peer maps the frame writable.
    pub const WRITING: u16 = 1 << 4;
}

/// A v1 grant entry as it sits in the granting domain's table
/// (`struct grant_entry_v1`): `flags` u16, `domid` u16, `frame` u32. Written
/// frame and domid first, then (after a write barrier) flags; revoked by a
/// compare-and-swap of `flags` to 0 that fails while `READING|WRITING`
/// are set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantEntryV1 {
    /// `GTF_*` flags.
    pub flags: u16,
    /// The domain allowed to map.
    pub domid: u16,
    /// The granted frame (gfn).
    pub frame: u32,
}

impl GrantEntryV1 {
    /// Size of one entry in the table.
    pub const SIZE: usize = 8;

    /// Whether the peer still maps the frame (revoking would fail).
    pub const fn in_use(&self) -> bool {
        self.flags & (flags::READING | flags::WRITING) != 0
    }
}

/// A grant reference: an index into the granting domain's grant table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantRef(pub u32);

impl GrantRef {
    /// Parses a canonical decimal grant reference, refusing the reserved
    /// entries (a peer announcing one is broken or hostile).
    pub fn parse(bytes: &[u8]) -> Option<GrantRef> {
        let v = crate::decimal::parse_u32(bytes)?;
        (v >= NR_RESERVED_ENTRIES).then_some(GrantRef(v))
    }
}

impl fmt::Display for GrantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Pages needed for `len` bytes, or `None` on overflow.
pub const fn pages_for(len: usize) -> Option<usize> {
    match len.checked_add(PAGE_SIZE - 1) {
        Some(n) => Some(n / PAGE_SIZE),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_and_pages() {
        assert_eq!(GrantRef::parse(b"7"), None);
        assert_eq!(GrantRef::parse(b"8"), Some(GrantRef(8)));
        assert_eq!(GrantRef::parse(b"x"), None);
        assert_eq!(pages_for(0), Some(0));
        assert_eq!(pages_for(1), Some(1));
        assert_eq!(pages_for(8192), Some(2));
        assert_eq!(pages_for(usize::MAX), None);
        let e = GrantEntryV1 {
            flags: flags::PERMIT_ACCESS | flags::READING,
            domid: 3,
            frame: 9,
        };
        assert!(e.in_use());
    }
}
