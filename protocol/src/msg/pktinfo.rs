//! Packet information of a datagram (Linux `IP_PKTINFO`, `IPV6_PKTINFO`)
//! and the header of a datagram on a socket's Unix pair.
//!
//! Instance → driver → app, a [`PktInfo`] is what the instance's kernel
//! reported for a received datagram (the control messages of its host
//! socket, present only when the option is on there): the interface, the
//! datagram's destination address and, for IPv4, the local address a
//! reply would come from (`ipi_spec_dst`). App → driver → instance, it is
//! what the app passed to `sendmsg` (source address, interface), which the
//! instance passes to its own `sendmsg`.
//!
//! ```text
//! PktInfoWire, 40 bytes                    pair header, 72 bytes
//!  0  present  u16 (bit 0 v4, bit 1 v6)     0  WireAddr (32): app → driver the
//!  2  reserved u16 (0)                          destination, its reserved word
//!  4  ifindex4 u32                              PAIR_HEADER_MAGIC; driver → app
//!  8  spec_dst [u8; 4]                          the source, reserved 0
//! 12  addr4    [u8; 4]                     32  PktInfoWire (40)
//! 16  ifindex6 u32                         72  payload
//! 20  addr6    [u8; 16]
//! 36  reserved u32 (0)
//! ```
//!
//! Every byte of an absent part is zero, as are the reserved fields and
//! unknown `present` bits, so every valid encoding is canonical. Interface
//! indexes are carried as the 32 bits the app or kernel gave (Linux's
//! `ipi_ifindex` is a signed `int`).

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{DecodeError, Kind, WireAddr};

/// `struct in_pktinfo`: an IPv4 datagram's interface, the local address
/// used for replies, and its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PktInfo4 {
    /// `ipi_ifindex`.
    pub ifindex: u32,
    /// `ipi_spec_dst`.
    pub spec_dst: Ipv4Addr,
    /// `ipi_addr`.
    pub addr: Ipv4Addr,
}

/// `struct in6_pktinfo`: an IPv6 datagram's address and interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PktInfo6 {
    /// `ipi6_ifindex`.
    pub ifindex: u32,
    /// `ipi6_addr`.
    pub addr: Ipv6Addr,
}

/// The packet information of one datagram; both parts absent is "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PktInfo {
    /// `IP_PKTINFO`.
    pub v4: Option<PktInfo4>,
    /// `IPV6_PKTINFO`.
    pub v6: Option<PktInfo6>,
}

const PRESENT_V4: u16 = 1;
const PRESENT_V6: u16 = 2;

/// Wire form of a [`PktInfo`]: 40 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct PktInfoWire {
    present: U16,
    reserved: U16,
    ifindex4: U32,
    spec_dst: [u8; 4],
    addr4: [u8; 4],
    ifindex6: U32,
    addr6: [u8; 16],
    reserved2: U32,
}

const _: () = assert!(core::mem::size_of::<PktInfoWire>() == PktInfo::WIRE_LEN);

impl PktInfo {
    /// Size on the wire.
    pub const WIRE_LEN: usize = 40;

    /// No information.
    pub const NONE: PktInfo = PktInfo { v4: None, v6: None };

    /// Whether neither part is present.
    pub fn is_none(&self) -> bool {
        self.v4.is_none() && self.v6.is_none()
    }

    /// The wire form.
    pub fn to_wire(&self) -> PktInfoWire {
        let mut w = PktInfoWire::new_zeroed();
        let mut present = 0;
        if let Some(i) = self.v4 {
            present |= PRESENT_V4;
            w.ifindex4 = U32::new(i.ifindex);
            w.spec_dst = i.spec_dst.octets();
            w.addr4 = i.addr.octets();
        }
        if let Some(i) = self.v6 {
            present |= PRESENT_V6;
            w.ifindex6 = U32::new(i.ifindex);
            w.addr6 = i.addr.octets();
        }
        w.present = U16::new(present);
        w
    }

    /// Validates a wire form (rules in the module docs); `kind` names the
    /// message in errors.
    pub(crate) fn from_wire(w: &PktInfoWire, kind: Kind) -> Result<PktInfo, DecodeError> {
        let reserved = DecodeError::NonZeroReserved { kind };
        let present = w.present.get();
        if present & !(PRESENT_V4 | PRESENT_V6) != 0
            || w.reserved.get() != 0
            || w.reserved2.get() != 0
        {
            return Err(reserved);
        }
        let v4 = if present & PRESENT_V4 != 0 {
            Some(PktInfo4 {
                ifindex: w.ifindex4.get(),
                spec_dst: Ipv4Addr::from(w.spec_dst),
                addr: Ipv4Addr::from(w.addr4),
            })
        } else {
            if w.ifindex4.get() != 0 || w.spec_dst != [0; 4] || w.addr4 != [0; 4] {
                return Err(reserved);
            }
            None
        };
        let v6 = if present & PRESENT_V6 != 0 {
            Some(PktInfo6 {
                ifindex: w.ifindex6.get(),
                addr: Ipv6Addr::from(w.addr6),
            })
        } else {
            if w.ifindex6.get() != 0 || w.addr6 != [0; 16] {
                return Err(reserved);
            }
            None
        };
        Ok(PktInfo { v4, v6 })
    }
}

/// Length of the header before each datagram on a socket's Unix pair.
pub const PAIR_HEADER_LEN: usize = WireAddr::LEN + PktInfo::WIRE_LEN;

/// The pair header for a datagram: `addr` (`None`: family 0) and `info`;
/// `reserved` goes into the address's reserved word (0, or
/// [`PAIR_HEADER_MAGIC`](super::PAIR_HEADER_MAGIC) app → driver).
pub fn encode_pair_header(
    addr: Option<SocketAddr>,
    info: &PktInfo,
    reserved: u32,
) -> [u8; PAIR_HEADER_LEN] {
    let mut out = [0u8; PAIR_HEADER_LEN];
    let mut a = WireAddr::from(addr);
    a.reserved = U32::new(reserved);
    out[..WireAddr::LEN].copy_from_slice(a.as_bytes());
    out[WireAddr::LEN..].copy_from_slice(info.to_wire().as_bytes());
    out
}

/// Decodes and validates a pair header whose address reserved word is 0
/// (the driver clears the magic first). Errors name [`Kind::DataTo`].
pub fn decode_pair_header(bytes: &[u8]) -> Result<(Option<SocketAddr>, PktInfo), DecodeError> {
    let kind = Kind::DataTo;
    let bad = DecodeError::BadLength {
        kind,
        len: bytes.len(),
    };
    let (a, rest) = WireAddr::read_from_prefix(bytes).map_err(|_| bad)?;
    let w = PktInfoWire::read_from_bytes(rest).map_err(|_| bad)?;
    Ok((a.check(kind)?, PktInfo::from_wire(&w, kind)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both() -> PktInfo {
        PktInfo {
            v4: Some(PktInfo4 {
                ifindex: 1,
                spec_dst: Ipv4Addr::new(127, 0, 0, 1),
                addr: Ipv4Addr::new(127, 0, 0, 2),
            }),
            v6: Some(PktInfo6 {
                ifindex: u32::MAX,
                addr: Ipv6Addr::LOCALHOST,
            }),
        }
    }

    #[test]
    fn round_trip() {
        let a: SocketAddr = "[::1]:53".parse().unwrap();
        for info in [PktInfo::NONE, both()] {
            let h = encode_pair_header(Some(a), &info, 0);
            assert_eq!(decode_pair_header(&h), Ok((Some(a), info)));
        }
        let h = encode_pair_header(None, &PktInfo::NONE, 0);
        assert_eq!(h, [0u8; PAIR_HEADER_LEN]);
        assert_eq!(decode_pair_header(&h), Ok((None, PktInfo::NONE)));
    }

    #[test]
    fn rejects() {
        let a: SocketAddr = "10.0.0.1:53".parse().unwrap();
        let ok = encode_pair_header(Some(a), &PktInfo::NONE, 0);
        let res = DecodeError::NonZeroReserved { kind: Kind::DataTo };
        // Every byte of the (absent) info is checked.
        for i in WireAddr::LEN..PAIR_HEADER_LEN {
            let mut bad = ok;
            bad[i] = 4;
            assert_eq!(decode_pair_header(&bad), Err(res), "byte {i}");
        }
        // The magic must have been cleared.
        let magic = encode_pair_header(Some(a), &PktInfo::NONE, 7);
        assert_eq!(decode_pair_header(&magic), Err(res));
        assert!(matches!(
            decode_pair_header(&ok[..PAIR_HEADER_LEN - 1]),
            Err(DecodeError::BadLength { .. })
        ));
        assert!(matches!(
            decode_pair_header(&[0u8; PAIR_HEADER_LEN + 1]),
            Err(DecodeError::BadLength { .. })
        ));
        // A present part's fields are the values; the other's must be 0.
        let mut only6 = both();
        only6.v4 = None;
        let mut bad = encode_pair_header(Some(a), &only6, 0);
        bad[WireAddr::LEN + 8] = 1;
        assert_eq!(decode_pair_header(&bad), Err(res));
    }
}
