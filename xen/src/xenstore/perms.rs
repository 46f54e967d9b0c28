//! Xenstore permissions.
//!
//! A node's permissions are a list: the first entry names the *owner* (who
//! may always read, write and change permissions) and the access everyone
//! not listed gets; each later entry grants one domain an access. The
//! string form of an entry is one letter (`n` none, `r` read, `w` write,
//! `b` both) followed by the domain id in decimal, e.g. `n5`, `r7`.
//! Dom0 (privileged) bypasses the checks.

use crate::domid::DomId;

/// What one entry allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: nothing.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    /// The letter of the string form.
    pub const fn letter(self) -> u8 {
        match self {
            Access::None => b'n',
            Access::Read => b'r',
            Access::Write => b'w',
            Access::Both => b'b',
        }
    }

    /// The access a letter names.
    pub const fn from_letter(b: u8) -> Option<Access> {
        match b {
            b'n' => Some(Access::None),
            b'r' => Some(Access::Read),
            b'w' => Some(Access::Write),
            b'b' => Some(Access::Both),
            _ => None,
        }
    }

    /// Whether it allows reading.
    pub const fn can_read(self) -> bool {
        matches!(self, Access::Read | Access::Both)
    }

    /// Whether it allows writing.
    pub const fn can_write(self) -> bool {
        matches!(self, Access::Write | Access::Both)
    }
}

/// One permission entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permission {
    /// The domain.
    pub domid: DomId,
    /// Its access (for the first entry: everyone else's).
    pub access: Access,
}

impl Permission {
    /// Longest string form: a letter and five digits.
    pub const MAX_LEN: usize = 6;

    /// A permission entry.
    pub const fn new(domid: DomId, access: Access) -> Permission {
        Permission { domid, access }
    }

    /// Parses the string form (`r5`), refusing special domain ids and
    /// non-canonical numbers.
    pub fn parse(bytes: &[u8]) -> Option<Permission> {
        let (&letter, digits) = bytes.split_first()?;
        Some(Permission {
            access: Access::from_letter(letter)?,
            domid: DomId::parse(digits)?,
        })
    }

    /// Writes the string form into `out`, returning the bytes used.
    pub fn format(self, out: &mut [u8; Self::MAX_LEN]) -> &[u8] {
        let mut digits = [0u8; 20];
        let d = crate::decimal::format_u64(u64::from(self.domid.0), &mut digits);
        out[0] = self.access.letter();
        out[1..=d.len()].copy_from_slice(d);
        &out[..=d.len()]
    }
}

/// The access a permission list gives `domid` (owner: both; listed: its
/// entry; anyone else: the first entry's access). The list must not be
/// empty.
pub fn access_of(perms: &[Permission], domid: DomId) -> Option<Access> {
    let (owner, rest) = perms.split_first()?;
    if owner.domid == domid {
        return Some(Access::Both);
    }
    Some(
        rest.iter()
            .rev()
            .find(|p| p.domid == domid)
            .map_or(owner.access, |p| p.access),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_format_and_access() {
        let p = Permission::parse(b"r12").unwrap();
        assert_eq!(p, Permission::new(DomId(12), Access::Read));
        let mut buf = [0u8; Permission::MAX_LEN];
        assert_eq!(p.format(&mut buf), b"r12");
        for bad in [&b""[..], b"r", b"x1", b"r-1", b"r01", b"r65535", b"R1"] {
            assert_eq!(Permission::parse(bad), None, "{bad:?}");
        }
        let list = [
            Permission::new(DomId(3), Access::None),
            Permission::new(DomId(5), Access::Read),
        ];
        assert_eq!(access_of(&list, DomId(3)), Some(Access::Both));
        assert_eq!(access_of(&list, DomId(5)), Some(Access::Read));
        assert_eq!(access_of(&list, DomId(7)), Some(Access::None));
        assert_eq!(access_of(&[], DomId(7)), None);
    }
}
