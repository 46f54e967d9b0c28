//! The versioned handshake that opens every channel.
//!
//! ```text
//!  driver                                   instance
//!    │ ── rendezvous socket: region + doorbells ──▶ │
//!    │ ◀── Hello { role: Instance, version, … } ─── │   (first frame, instance→driver ring)
//!    │ ─── Hello { role: Driver, version, … } ────▶ │   (first frame, driver→instance ring)
//! ```
//!
//! Each side sends its [`Hello`] as the first frame on its outgoing ring and
//! accepts the peer's only if [`Hello::decode`] succeeds and the versions are
//! compatible ([`Hello::negotiate`]). Until then no other message is valid.
//! The hello is a fixed 64-byte little-endian record so that it can be
//! checked before anything else about the peer is known.

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// `"INS\x01"` read as a little-endian `u32`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"INS\x01");

/// The protocol version this build speaks.
///
/// * 1: the first wire format.
/// * 2: adds `SockOpt` (driver → instance, in-band socket options) and
///   `Telemetry` (instance → driver, live per-connection metrics). A
///   version-1 peer would take either for a protocol violation, so 1 is no
///   longer accepted.
pub const VERSION: u16 = 2;

/// The oldest protocol version this build still accepts.
pub const MIN_VERSION: u16 = 2;

/// Which end of a channel sent a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Role {
    /// The protected-VM side (daemon or kernel module).
    Driver = 1,
    /// An INS instance.
    Instance = 2,
}

impl TryFrom<u16> for Role {
    type Error = HelloError;
    fn try_from(v: u16) -> Result<Self, HelloError> {
        match v {
            1 => Ok(Role::Driver),
            2 => Ok(Role::Instance),
            _ => Err(HelloError::BadRole(v)),
        }
    }
}

/// Why a hello was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HelloError {
    /// Not 64 bytes long.
    BadLength(usize),
    /// The magic number is wrong: not an INS peer.
    BadMagic(u32),
    /// The role field is not a known role.
    BadRole(u16),
    /// The peer has the same role as we do.
    SameRole,
    /// No version both sides speak.
    Incompatible {
        /// The peer's newest version.
        peer_max: u16,
        /// The peer's oldest version.
        peer_min: u16,
    },
    /// A reserved byte is not zero, or min > max.
    Malformed,
}

impl core::fmt::Display for HelloError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HelloError::BadLength(n) => write!(f, "hello is {n} bytes, expected 64"),
            HelloError::BadMagic(m) => write!(f, "bad hello magic {m:#010x}"),
            HelloError::BadRole(r) => write!(f, "unknown role {r}"),
            HelloError::SameRole => f.write_str("peer has the same role"),
            HelloError::Incompatible { peer_max, peer_min } => write!(
                f,
                "peer speaks versions {peer_min}..={peer_max}, we speak {MIN_VERSION}..={VERSION}"
            ),
            HelloError::Malformed => f.write_str("malformed hello"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for HelloError {}

/// The wire form of a hello: 64 bytes, little-endian.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct HelloWire {
    magic: U32,
    role: U16,
    version_max: U16,
    version_min: U16,
    reserved0: U16,
    /// Instance id as assigned by the controller (0 from the driver).
    instance_id: U32,
    /// Capacity in bytes of the ring this side produces into.
    ring_capacity: U32,
    /// Largest frame this side will accept.
    max_frame: U32,
    /// Sockets this side can hold (instances), 0 for the driver.
    max_sockets: U32,
    /// Sender's process or domain id, for logs.
    pid: U32,
    /// Nanoseconds since the Unix epoch on the sender's clock.
    time_ns: U64,
    /// Initial per-socket receive window the sender grants its peer.
    window: U32,
    reserved: [u8; 20],
}

const _: () = assert!(core::mem::size_of::<HelloWire>() == 64);

/// A decoded, validated hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Who sent it.
    pub role: Role,
    /// Newest version the sender speaks.
    pub version_max: u16,
    /// Oldest version the sender speaks.
    pub version_min: u16,
    /// Instance id assigned by the controller (0 from the driver).
    pub instance_id: u32,
    /// Capacity of the ring the sender produces into.
    pub ring_capacity: u32,
    /// Largest frame the sender accepts.
    pub max_frame: u32,
    /// Sockets the sender can hold (instances; 0 from the driver).
    pub max_sockets: u32,
    /// Sender's process or domain id.
    pub pid: u32,
    /// Sender's clock, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// Initial per-socket receive window the sender grants: the peer may
    /// send this many stream or datagram bytes on a new socket before the
    /// first `Credit` arrives. Listeners are credited in connections, by
    /// the backlog of their `Listen`, not by this.
    pub window: u32,
}

impl Hello {
    /// Size of the encoded hello.
    pub const LEN: usize = 64;

    /// A hello for this build's versions.
    pub fn new(role: Role) -> Self {
        Hello {
            role,
            version_max: VERSION,
            version_min: MIN_VERSION,
            instance_id: 0,
            ring_capacity: 0,
            max_frame: 0,
            max_sockets: 0,
            pid: 0,
            time_ns: 0,
            window: 0,
        }
    }

    /// Encodes into 64 bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let wire = HelloWire {
            magic: U32::new(MAGIC),
            role: U16::new(self.role as u16),
            version_max: U16::new(self.version_max),
            version_min: U16::new(self.version_min),
            reserved0: U16::new(0),
            instance_id: U32::new(self.instance_id),
            ring_capacity: U32::new(self.ring_capacity),
            max_frame: U32::new(self.max_frame),
            max_sockets: U32::new(self.max_sockets),
            pid: U32::new(self.pid),
            time_ns: U64::new(self.time_ns),
            window: U32::new(self.window),
            reserved: [0; 20],
        };
        let mut out = [0u8; Self::LEN];
        out.copy_from_slice(wire.as_bytes());
        out
    }

    /// Decodes and validates a hello (magic, role, reserved bytes, version
    /// range). Does not check compatibility: see [`Hello::negotiate`].
    pub fn decode(bytes: &[u8]) -> Result<Hello, HelloError> {
        let wire =
            HelloWire::read_from_bytes(bytes).map_err(|_| HelloError::BadLength(bytes.len()))?;
        if wire.magic.get() != MAGIC {
            return Err(HelloError::BadMagic(wire.magic.get()));
        }
        let role = Role::try_from(wire.role.get())?;
        if wire.reserved0.get() != 0
            || wire.reserved.iter().any(|&b| b != 0)
            || wire.version_min.get() > wire.version_max.get()
        {
            return Err(HelloError::Malformed);
        }
        Ok(Hello {
            role,
            version_max: wire.version_max.get(),
            version_min: wire.version_min.get(),
            instance_id: wire.instance_id.get(),
            ring_capacity: wire.ring_capacity.get(),
            max_frame: wire.max_frame.get(),
            max_sockets: wire.max_sockets.get(),
            pid: wire.pid.get(),
            time_ns: wire.time_ns.get(),
            window: wire.window.get(),
        })
    }

    /// The version to speak with a peer that sent `peer`, if any: the newest
    /// version both support. Refuses a peer of our own role.
    pub fn negotiate(&self, peer: &Hello) -> Result<u16, HelloError> {
        if peer.role == self.role {
            return Err(HelloError::SameRole);
        }
        let hi = self.version_max.min(peer.version_max);
        let lo = self.version_min.max(peer.version_min);
        if hi < lo {
            return Err(HelloError::Incompatible {
                peer_max: peer.version_max,
                peer_min: peer.version_min,
            });
        }
        Ok(hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_negotiate() {
        let mut a = Hello::new(Role::Instance);
        a.instance_id = 7;
        a.ring_capacity = 1 << 20;
        a.time_ns = 123;
        let b = Hello::decode(&a.encode()).unwrap();
        assert_eq!(a, b);
        assert_eq!(Hello::new(Role::Driver).negotiate(&b), Ok(VERSION));
        assert_eq!(
            Hello::new(Role::Instance).negotiate(&b),
            Err(HelloError::SameRole)
        );
    }

    #[test]
    fn rejects_bad_input() {
        let good = Hello::new(Role::Driver).encode();
        assert_eq!(Hello::decode(&good[..63]), Err(HelloError::BadLength(63)));
        let mut bad = good;
        bad[0] ^= 1;
        assert!(matches!(Hello::decode(&bad), Err(HelloError::BadMagic(_))));
        let mut bad = good;
        bad[4] = 9;
        assert_eq!(Hello::decode(&bad), Err(HelloError::BadRole(9)));
        let mut bad = good;
        bad[63] = 1;
        assert_eq!(Hello::decode(&bad), Err(HelloError::Malformed));
        let mut future = Hello::new(Role::Instance);
        future.version_min = VERSION + 1;
        future.version_max = VERSION + 3;
        let peer = Hello::decode(&future.encode()).unwrap();
        assert!(matches!(
            Hello::new(Role::Driver).negotiate(&peer),
            Err(HelloError::Incompatible { .. })
        ));
    }
}
