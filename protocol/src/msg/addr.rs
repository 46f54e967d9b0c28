//! Socket addresses and address prefixes as they travel on the wire.
//!
//! ```text
//! WireAddr, 32 bytes                       PrefixWire, 20 bytes
//!  0  family   u16 (0, 2 or 10)             0  family   u16 (2 or 10)
//!  2  port     u16 (LE, not network order)  2  len      u8  (≤ 32 / ≤ 128)
//!  4  flowinfo u32 (v6 only, else 0)        3  reserved u8  (0)
//!  8  addr     [u8; 16] (v4: first 4 bytes, 4  addr     [u8; 16] (v4: first 4,
//!              the rest 0)                               the rest 0; host bits 0)
//! 24  scope_id u32 (v6 only, else 0)
//! 28  reserved u32 (0)
//! ```
//!
//! Family 0 ("no address") requires every other byte to be zero. Any byte a
//! family does not use must be zero, so every valid encoding is canonical:
//! decoding and re-encoding gives back the same bytes.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use zerocopy::byteorder::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::{DecodeError, Kind};

/// The `reserved` word (little-endian) of the address header the shim puts
/// before each datagram it writes into a datagram socket's pair
/// (app → driver). It tells the shim's datagrams from *header-less* ones a
/// program wrote past the shim (a raw `syscall(SYS_sendmmsg, …)`), which
/// the driver sends to a connected socket's peer. The driver clears it
/// before decoding the header; every other rule of [`WireAddr`] holds.
pub const PAIR_HEADER_MAGIC: u32 = u32::from_le_bytes(*b"INS1");

/// Address family value for "no address".
pub const AF_UNSPEC: u16 = 0;
/// Address family value for IPv4 (Linux `AF_INET`).
pub const AF_INET: u16 = 2;
/// Address family value for IPv6 (Linux `AF_INET6`).
pub const AF_INET6: u16 = 10;

/// A socket address on the wire: 32 bytes, little-endian (the port too).
///
/// Build one with `From<SocketAddr>` / `From<Option<SocketAddr>>`; read one
/// with [`WireAddr::to_socket_addr`] or, to learn why it is invalid,
/// [`WireAddr::parse`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct WireAddr {
    /// [`AF_UNSPEC`], [`AF_INET`] or [`AF_INET6`].
    pub family: U16,
    /// Port number (host value, stored little-endian).
    pub port: U16,
    /// IPv6 flow information; zero for IPv4.
    pub flowinfo: U32,
    /// IPv6 address, or IPv4 address in the first four bytes (rest zero).
    pub addr: [u8; 16],
    /// IPv6 scope id; zero for IPv4.
    pub scope_id: U32,
    /// Must be zero.
    pub reserved: U32,
}

const _: () = assert!(core::mem::size_of::<WireAddr>() == WireAddr::LEN);

impl WireAddr {
    /// Size on the wire.
    pub const LEN: usize = 32;

    /// The "no address" value (family 0, all zero).
    pub const NONE: WireAddr = WireAddr {
        family: U16::new(AF_UNSPEC),
        port: U16::new(0),
        flowinfo: U32::new(0),
        addr: [0; 16],
        scope_id: U32::new(0),
        reserved: U32::new(0),
    };

    /// The address, or `None` for family 0 and for any invalid encoding
    /// (unknown family, non-zero bytes the family does not use).
    pub fn to_socket_addr(&self) -> Option<SocketAddr> {
        self.check(Kind::Reply).ok().flatten()
    }

    /// Parses and validates 32 wire bytes, for instance the value of a
    /// [`Reply`](super::Msg::Reply) to `GetSockName`/`GetPeerName`.
    /// `Ok(None)` is family 0. Errors are reported against [`Kind::Reply`].
    pub fn parse(bytes: &[u8]) -> Result<Option<SocketAddr>, DecodeError> {
        let wire = WireAddr::read_from_bytes(bytes).map_err(|_| DecodeError::BadLength {
            kind: Kind::Reply,
            len: bytes.len(),
        })?;
        wire.check(Kind::Reply)
    }

    /// Validates against the rules in the module docs; `kind` names the
    /// message in errors.
    pub(crate) fn check(&self, kind: Kind) -> Result<Option<SocketAddr>, DecodeError> {
        let reserved = DecodeError::NonZeroReserved { kind };
        if self.reserved.get() != 0 {
            return Err(reserved);
        }
        match self.family.get() {
            AF_UNSPEC => {
                if self.as_bytes().iter().any(|&b| b != 0) {
                    return Err(reserved);
                }
                Ok(None)
            }
            AF_INET => {
                let [a, b, c, d, rest @ ..] = self.addr;
                if self.flowinfo.get() != 0
                    || self.scope_id.get() != 0
                    || rest.iter().any(|&x| x != 0)
                {
                    return Err(reserved);
                }
                Ok(Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::new(a, b, c, d),
                    self.port.get(),
                ))))
            }
            AF_INET6 => Ok(Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(self.addr),
                self.port.get(),
                self.flowinfo.get(),
                self.scope_id.get(),
            )))),
            other => Err(DecodeError::BadFamily(other)),
        }
    }

    /// Like [`check`](Self::check) but the address is mandatory: family 0
    /// is [`DecodeError::BadFamily`]`(0)`.
    pub(crate) fn require(&self, kind: Kind) -> Result<SocketAddr, DecodeError> {
        self.check(kind)?.ok_or(DecodeError::BadFamily(AF_UNSPEC))
    }
}

impl From<SocketAddr> for WireAddr {
    fn from(sa: SocketAddr) -> Self {
        match sa {
            SocketAddr::V4(v4) => {
                let mut addr = [0u8; 16];
                let [a, b, c, d] = v4.ip().octets();
                addr[..4].copy_from_slice(&[a, b, c, d]);
                WireAddr {
                    family: U16::new(AF_INET),
                    port: U16::new(v4.port()),
                    addr,
                    ..WireAddr::NONE
                }
            }
            SocketAddr::V6(v6) => WireAddr {
                family: U16::new(AF_INET6),
                port: U16::new(v6.port()),
                flowinfo: U32::new(v6.flowinfo()),
                addr: v6.ip().octets(),
                scope_id: U32::new(v6.scope_id()),
                reserved: U32::new(0),
            },
        }
    }
}

impl From<Option<SocketAddr>> for WireAddr {
    fn from(sa: Option<SocketAddr>) -> Self {
        sa.map_or(WireAddr::NONE, WireAddr::from)
    }
}

/// An address prefix (CIDR block) for block lists and rate limits.
///
/// Valid when `len` is at most 32 (IPv4) or 128 (IPv6) and every host bit of
/// `addr` is zero; [`Prefix::new`] checks this, and encoding refuses an
/// invalid prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// Network address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

/// Wire form of a [`Prefix`]: 20 bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct PrefixWire {
    family: U16,
    len: u8,
    reserved: u8,
    addr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<PrefixWire>() == 20);

fn mask4(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32u32.saturating_sub(u32::from(len)))
        .unwrap_or(0)
}

fn mask6(len: u8) -> u128 {
    u128::MAX
        .checked_shl(128u32.saturating_sub(u32::from(len)))
        .unwrap_or(0)
}

impl Prefix {
    /// A validated prefix: [`DecodeError::BadPrefix`] if `len` is too long
    /// for the family or `addr` has host bits set.
    pub fn new(addr: IpAddr, len: u8) -> Result<Prefix, DecodeError> {
        let p = Prefix { addr, len };
        if p.is_valid() {
            Ok(p)
        } else {
            Err(DecodeError::BadPrefix)
        }
    }

    /// The prefix that matches exactly one address (/32 or /128).
    pub fn host(addr: IpAddr) -> Prefix {
        let len = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        Prefix { addr, len }
    }

    /// Whether `len` fits the family and the host bits are zero.
    pub fn is_valid(&self) -> bool {
        match self.addr {
            IpAddr::V4(a) => self.len <= 32 && u32::from(a) & !mask4(self.len) == 0,
            IpAddr::V6(a) => self.len <= 128 && u128::from(a) & !mask6(self.len) == 0,
        }
    }

    /// Whether `ip` lies in this prefix. An IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`) matches IPv4 prefixes, and an IPv4 address matches
    /// IPv6 prefixes through its mapped form, so dual-stack sockets reporting
    /// mapped peers are caught by the same rules.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(i)) => (u32::from(p) ^ u32::from(i)) & mask4(self.len) == 0,
            (IpAddr::V4(p), IpAddr::V6(i)) => i
                .to_ipv4_mapped()
                .is_some_and(|i| (u32::from(p) ^ u32::from(i)) & mask4(self.len) == 0),
            (IpAddr::V6(p), IpAddr::V6(i)) => {
                (u128::from(p) ^ u128::from(i)) & mask6(self.len) == 0
            }
            (IpAddr::V6(p), IpAddr::V4(i)) => {
                (u128::from(p) ^ u128::from(i.to_ipv6_mapped())) & mask6(self.len) == 0
            }
        }
    }

    pub(crate) fn to_wire(self) -> PrefixWire {
        let (family, addr) = match self.addr {
            IpAddr::V4(a) => {
                let mut addr = [0u8; 16];
                addr[..4].copy_from_slice(&a.octets());
                (AF_INET, addr)
            }
            IpAddr::V6(a) => (AF_INET6, a.octets()),
        };
        PrefixWire {
            family: U16::new(family),
            len: self.len,
            reserved: 0,
            addr,
        }
    }

    pub(crate) fn from_wire(w: &PrefixWire, kind: Kind) -> Result<Prefix, DecodeError> {
        if w.reserved != 0 {
            return Err(DecodeError::NonZeroReserved { kind });
        }
        let addr = match w.family.get() {
            AF_INET => {
                let [a, b, c, d, rest @ ..] = w.addr;
                if rest.iter().any(|&x| x != 0) {
                    return Err(DecodeError::NonZeroReserved { kind });
                }
                IpAddr::V4(Ipv4Addr::new(a, b, c, d))
            }
            AF_INET6 => IpAddr::V6(Ipv6Addr::from(w.addr)),
            other => return Err(DecodeError::BadFamily(other)),
        };
        Prefix::new(addr, w.len)
    }
}

impl core::fmt::Display for Prefix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_addr_round_trip_and_rejects() {
        let v4: SocketAddr = "192.0.2.7:8080".parse().unwrap();
        let w = WireAddr::from(v4);
        assert_eq!(w.to_socket_addr(), Some(v4));
        assert_eq!(&w.as_bytes()[..4], &[2, 0, 0x90, 0x1f]);
        assert_eq!(&w.as_bytes()[8..12], &[192, 0, 2, 7]);
        let v6 = SocketAddr::V6(SocketAddrV6::new("2001:db8::1".parse().unwrap(), 443, 7, 3));
        assert_eq!(WireAddr::from(v6).to_socket_addr(), Some(v6));
        assert_eq!(WireAddr::NONE.to_socket_addr(), None);
        assert_eq!(WireAddr::parse(WireAddr::NONE.as_bytes()), Ok(None));

        let mut bad = w;
        bad.addr[5] = 1;
        assert_eq!(
            WireAddr::parse(bad.as_bytes()),
            Err(DecodeError::NonZeroReserved { kind: Kind::Reply })
        );
        let mut bad = w;
        bad.scope_id = U32::new(1);
        assert!(WireAddr::parse(bad.as_bytes()).is_err());
        let mut bad = WireAddr::NONE;
        bad.port = U16::new(1);
        assert!(WireAddr::parse(bad.as_bytes()).is_err());
        let mut bad = w;
        bad.family = U16::new(1);
        assert_eq!(
            WireAddr::parse(bad.as_bytes()),
            Err(DecodeError::BadFamily(1))
        );
        let mut bad = WireAddr::from(v6);
        bad.reserved = U32::new(9);
        assert!(WireAddr::parse(bad.as_bytes()).is_err());
        assert_eq!(
            WireAddr::parse(&[0; 31]),
            Err(DecodeError::BadLength {
                kind: Kind::Reply,
                len: 31
            })
        );
    }

    #[test]
    fn prefix_validation() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(Prefix::new(ip("10.0.0.0"), 8).is_ok());
        assert!(Prefix::new(ip("0.0.0.0"), 0).is_ok());
        assert_eq!(Prefix::new(ip("10.0.0.1"), 8), Err(DecodeError::BadPrefix));
        assert_eq!(Prefix::new(ip("10.0.0.0"), 33), Err(DecodeError::BadPrefix));
        assert!(Prefix::new(ip("2001:db8::"), 32).is_ok());
        assert_eq!(
            Prefix::new(ip("2001:db8::1"), 64),
            Err(DecodeError::BadPrefix)
        );
        assert_eq!(Prefix::new(ip("::"), 129), Err(DecodeError::BadPrefix));
        assert!(Prefix::host(ip("2001:db8::1")).is_valid());
    }

    #[test]
    fn prefix_contains() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let p = Prefix::new(ip("198.51.100.0"), 24).unwrap();
        assert!(p.contains(ip("198.51.100.200")));
        assert!(!p.contains(ip("198.51.101.1")));
        assert!(p.contains(ip("::ffff:198.51.100.9")));
        assert!(!p.contains(ip("::ffff:198.51.99.9")));
        assert!(!p.contains(ip("2001:db8::1")));
        let all4 = Prefix::new(ip("0.0.0.0"), 0).unwrap();
        assert!(all4.contains(ip("1.2.3.4")));
        let p6 = Prefix::new(ip("2001:db8::"), 32).unwrap();
        assert!(p6.contains(ip("2001:db8:ffff::1")));
        assert!(!p6.contains(ip("2001:db9::1")));
        assert!(!p6.contains(ip("1.2.3.4")));
        let mapped = Prefix::new(ip("::ffff:0.0.0.0"), 96).unwrap();
        assert!(mapped.contains(ip("1.2.3.4")));
        let h = Prefix::host(ip("1.2.3.4"));
        assert!(h.contains(ip("1.2.3.4")) && !h.contains(ip("1.2.3.5")));
    }

    #[test]
    fn prefix_wire_rejects() {
        let p = Prefix::new("10.0.0.0".parse().unwrap(), 8).unwrap();
        let w = p.to_wire();
        assert_eq!(Prefix::from_wire(&w, Kind::Mitigate), Ok(p));
        let mut bad = w;
        bad.reserved = 1;
        assert_eq!(
            Prefix::from_wire(&bad, Kind::Mitigate),
            Err(DecodeError::NonZeroReserved {
                kind: Kind::Mitigate
            })
        );
        let mut bad = w;
        bad.addr[15] = 1;
        assert!(Prefix::from_wire(&bad, Kind::Mitigate).is_err());
        let mut bad = w;
        bad.len = 40;
        assert_eq!(
            Prefix::from_wire(&bad, Kind::Mitigate),
            Err(DecodeError::BadPrefix)
        );
        let mut bad = w;
        bad.family = U16::new(0);
        assert_eq!(
            Prefix::from_wire(&bad, Kind::Mitigate),
            Err(DecodeError::BadFamily(0))
        );
    }
}
