//! Domain identifiers (`domid_t` in `xen/include/public/xen.h`).

use core::fmt;

/// A domain id. Real domains are `0..DomId::FIRST_RESERVED`; the values
/// from `0x7FF0` up name special domains (`DOMID_SELF`, `DOMID_IO`, …) and
/// are never the id of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomId(pub u16);

impl DomId {
    /// Domain 0, where the toolstack and xenstored run in this lab.
    pub const DOM0: DomId = DomId(0);
    /// The first reserved value (`DOMID_FIRST_RESERVED`).
    pub const FIRST_RESERVED: u16 = 0x7FF0;
    /// `DOMID_SELF`: "the calling domain" in hypercalls.
    pub const SELF: DomId = DomId(0x7FF0);

    /// Whether this names a real domain (not a reserved special value).
    pub const fn is_real(self) -> bool {
        self.0 < Self::FIRST_RESERVED
    }

    /// Parses the canonical decimal form xenstore carries (`domid`, keys
    /// written by peers), refusing special values.
    pub fn parse(bytes: &[u8]) -> Option<DomId> {
        let v = crate::decimal::parse_u32(bytes)?;
        let id = DomId(u16::try_from(v).ok()?);
        id.is_real().then_some(id)
    }
}

impl fmt::Display for DomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_real_domains_only() {
        assert_eq!(DomId::parse(b"0"), Some(DomId::DOM0));
        assert_eq!(DomId::parse(b"32751"), Some(DomId(0x7FEF)));
        assert_eq!(DomId::parse(b"32752"), None);
        assert_eq!(DomId::parse(b"65536"), None);
        assert_eq!(DomId::parse(b"007"), None);
    }
}
