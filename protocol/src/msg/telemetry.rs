//! Live per-connection telemetry ([`ConnTelemetry`], the body of
//! [`Msg::Telemetry`](super::Msg::Telemetry)): what an instance knows about
//! one open connection, sent periodically, on demand
//! ([`Mitigation::Report`](super::Mitigation::Report)) and once when the
//! connection closes. Statistics only: no payload byte ever leaves the
//! instance through this message.
//!
//! ```text
//! Telemetry body (ConnWire, 240 bytes, little-endian)
//!   0 flow_id u64          8 sock u32     12 proto u8  13 cause u8  14 flags u16
//!  16 local WireAddr      48 remote WireAddr
//!  80 age_ns u64          88 bytes_in u64       96 bytes_out u64
//! 104 segs_in u64        112 segs_out u64
//! 120 idle_in_ns u64     128 idle_out_ns u64
//! 136 first_in_ns u64    144 first_out_ns u64   (0 unless FIRST_IN / FIRST_OUT)
//! 152 bytes_acked u64    160 zero_window_ns u64 168 rwnd_limited_us u64
//! 176 peer_window u32    180 rtt_us u32         184 retrans u32   188 unsent u32
//! 192 sample_in  PayloadWire(24)   216 sample_out PayloadWire(24)
//!
//! PayloadWire: sampled u32 | entropy_milli u16 (≤ 8000) | printable_permille u16 (≤ 1000)
//!              | hist [u16; 8] (chunk sizes, see LEN_BUCKETS)
//! ```
//!
//! Invariants checked by decoding: `proto` is TCP or UDP, `cause` is known,
//! no unknown flag bit, the first-byte times are 0 when their flag is clear,
//! the TCP_INFO fields are 0 when [`flags::TCP_INFO`] is clear, entropy and
//! printable fractions are in range, both addresses are present.

use core::net::SocketAddr;

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::addr::WireAddr;
use super::records::{IPPROTO_TCP, IPPROTO_UDP};
use super::{DecodeError, Fixed, Kind, exact};

/// Upper bounds (inclusive) of the chunk-length histogram buckets, in
/// bytes; the last bucket takes everything larger. A chunk is what one
/// receive from, or one send to, the network moved.
pub const LEN_BUCKETS: [u32; 7] = [63, 127, 255, 511, 1023, 1499, 4095];

/// The histogram bucket of a chunk of `len` bytes.
pub fn len_bucket(len: usize) -> usize {
    LEN_BUCKETS
        .iter()
        .position(|&b| len as u64 <= u64::from(b))
        .unwrap_or(LEN_BUCKETS.len())
}

/// Statistics of the first bytes of one direction of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PayloadStats {
    /// Bytes the statistics cover (at most the instance's sample size).
    pub sampled: u32,
    /// Shannon entropy of the sampled bytes' values, millibits per byte
    /// (0 ..= 8000).
    pub entropy_milli: u16,
    /// Printable ASCII (0x20..=0x7e, `\t`, `\r`, `\n`) share of the sampled
    /// bytes, per mille (0 ..= 1000).
    pub printable_permille: u16,
    /// Chunk counts per length bucket ([`LEN_BUCKETS`]), saturating.
    pub hist: [u16; 8],
}

/// Why a [`ConnTelemetry`] was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TelemetryCause {
    /// The instance's telemetry interval.
    Periodic = 0,
    /// A [`Mitigation::Report`](super::Mitigation::Report) asked for it.
    OnDemand = 1,
    /// The connection closed; this is its last report.
    Final = 2,
}

impl TryFrom<u8> for TelemetryCause {
    type Error = DecodeError;
    fn try_from(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(TelemetryCause::Periodic),
            1 => Ok(TelemetryCause::OnDemand),
            2 => Ok(TelemetryCause::Final),
            _ => Err(DecodeError::BadEnum {
                field: "telemetry cause",
                value: u32::from(v),
            }),
        }
    }
}

/// Bits of [`ConnTelemetry::flags`].
pub mod flags {
    /// The instance initiated the connection (`connect`); clear for
    /// accepted connections.
    pub const OUTBOUND: u16 = 1;
    /// At least one byte was received; `first_in_ns` is valid.
    pub const FIRST_IN: u16 = 2;
    /// At least one byte was sent; `first_out_ns` is valid.
    pub const FIRST_OUT: u16 = 4;
    /// The peer sent FIN.
    pub const PEER_FIN: u16 = 8;
    /// Our side shut its write direction.
    pub const LOCAL_FIN: u16 = 16;
    /// The TCP_INFO fields (`bytes_acked`, `rwnd_limited_us`,
    /// `peer_window`, `rtt_us`, `retrans`) were read; 0 otherwise.
    pub const TCP_INFO: u16 = 32;
    /// The peer's advertised window is zero now.
    pub const ZERO_WINDOW: u16 = 64;
    /// Every bit defined above.
    pub const ALL: u16 = 127;
}

/// One connection's live state. Times are nanoseconds (durations, not
/// clock readings), counters cumulative since the connection opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnTelemetry {
    /// The flow ([`FlowRecord::flow_id`](super::FlowRecord::flow_id)).
    pub flow_id: u64,
    /// The socket id carrying it, 0 if already released.
    pub sock: u32,
    /// [`IPPROTO_TCP`] or [`IPPROTO_UDP`].
    pub proto: u8,
    /// Why it was sent.
    pub cause: TelemetryCause,
    /// [`flags`] bits.
    pub flags: u16,
    /// Local address.
    pub local: SocketAddr,
    /// Remote address.
    pub remote: SocketAddr,
    /// Time since the connection opened.
    pub age_ns: u64,
    /// Payload bytes received.
    pub bytes_in: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
    /// Segments received (TCP_INFO; datagrams for UDP).
    pub segs_in: u64,
    /// Segments sent.
    pub segs_out: u64,
    /// Time since the last byte received (the age if none was).
    pub idle_in_ns: u64,
    /// Time since the last byte sent (the age if none was).
    pub idle_out_ns: u64,
    /// From open to the first byte received (the request), if any.
    pub first_in_ns: u64,
    /// From open to the first byte sent (the response), if any.
    pub first_out_ns: u64,
    /// Bytes the peer acknowledged (`tcpi_bytes_acked`).
    pub bytes_acked: u64,
    /// How long the peer's window has been zero without a break, as seen
    /// by the instance's samples (0 when it is open).
    pub zero_window_ns: u64,
    /// Total time sending was limited by the peer's window
    /// (`tcpi_rwnd_limited`), microseconds.
    pub rwnd_limited_us: u64,
    /// The peer's advertised window in bytes (`tcpi_snd_wnd`).
    pub peer_window: u32,
    /// Smoothed round-trip time (`tcpi_rtt`), microseconds.
    pub rtt_us: u32,
    /// Retransmitted segments (`tcpi_total_retrans`).
    pub retrans: u32,
    /// Bytes accepted from the driver not yet handed to the network
    /// (the instance's buffer; saturating).
    pub unsent: u32,
    /// The first received bytes.
    pub sample_in: PayloadStats,
    /// The first sent bytes.
    pub sample_out: PayloadStats,
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct PayloadWire {
    sampled: U32,
    entropy_milli: U16,
    printable_permille: U16,
    hist: [U16; 8],
}

#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct ConnWire {
    flow_id: U64,
    sock: U32,
    proto: u8,
    cause: u8,
    flags: U16,
    local: WireAddr,
    remote: WireAddr,
    age_ns: U64,
    bytes_in: U64,
    bytes_out: U64,
    segs_in: U64,
    segs_out: U64,
    idle_in_ns: U64,
    idle_out_ns: U64,
    first_in_ns: U64,
    first_out_ns: U64,
    bytes_acked: U64,
    zero_window_ns: U64,
    rwnd_limited_us: U64,
    peer_window: U32,
    rtt_us: U32,
    retrans: U32,
    unsent: U32,
    sample_in: PayloadWire,
    sample_out: PayloadWire,
}

const _: () = assert!(core::mem::size_of::<PayloadWire>() == 24);
/// Size of the Telemetry body.
pub(crate) const CONN_WIRE_LEN: usize = 240;
const _: () = assert!(core::mem::size_of::<ConnWire>() == CONN_WIRE_LEN);

const T: Kind = Kind::Telemetry;

impl PayloadStats {
    fn to_wire(self) -> PayloadWire {
        PayloadWire {
            sampled: U32::new(self.sampled),
            entropy_milli: U16::new(self.entropy_milli),
            printable_permille: U16::new(self.printable_permille),
            hist: self.hist.map(U16::new),
        }
    }

    fn from_wire(w: &PayloadWire) -> Result<PayloadStats, DecodeError> {
        let entropy_milli = w.entropy_milli.get();
        if entropy_milli > 8000 {
            return Err(DecodeError::BadEnum {
                field: "entropy",
                value: u32::from(entropy_milli),
            });
        }
        let printable_permille = w.printable_permille.get();
        if printable_permille > 1000 {
            return Err(DecodeError::BadEnum {
                field: "printable share",
                value: u32::from(printable_permille),
            });
        }
        Ok(PayloadStats {
            sampled: w.sampled.get(),
            entropy_milli,
            printable_permille,
            hist: w.hist.map(|h| h.get()),
        })
    }
}

impl ConnTelemetry {
    pub(crate) fn encode(&self, f: &mut Fixed) {
        f.push(
            ConnWire {
                flow_id: U64::new(self.flow_id),
                sock: U32::new(self.sock),
                proto: self.proto,
                cause: self.cause as u8,
                flags: U16::new(self.flags),
                local: self.local.into(),
                remote: self.remote.into(),
                age_ns: U64::new(self.age_ns),
                bytes_in: U64::new(self.bytes_in),
                bytes_out: U64::new(self.bytes_out),
                segs_in: U64::new(self.segs_in),
                segs_out: U64::new(self.segs_out),
                idle_in_ns: U64::new(self.idle_in_ns),
                idle_out_ns: U64::new(self.idle_out_ns),
                first_in_ns: U64::new(self.first_in_ns),
                first_out_ns: U64::new(self.first_out_ns),
                bytes_acked: U64::new(self.bytes_acked),
                zero_window_ns: U64::new(self.zero_window_ns),
                rwnd_limited_us: U64::new(self.rwnd_limited_us),
                peer_window: U32::new(self.peer_window),
                rtt_us: U32::new(self.rtt_us),
                retrans: U32::new(self.retrans),
                unsent: U32::new(self.unsent),
                sample_in: self.sample_in.to_wire(),
                sample_out: self.sample_out.to_wire(),
            }
            .as_bytes(),
        );
    }

    pub(crate) fn decode(body: &[u8]) -> Result<ConnTelemetry, DecodeError> {
        let w: ConnWire = exact(T, body)?;
        if w.proto != IPPROTO_TCP && w.proto != IPPROTO_UDP {
            return Err(DecodeError::BadEnum {
                field: "telemetry protocol",
                value: u32::from(w.proto),
            });
        }
        let fl = w.flags.get();
        if fl & !flags::ALL != 0 {
            return Err(DecodeError::BadEnum {
                field: "telemetry flags",
                value: u32::from(fl),
            });
        }
        let first_in_ns = w.first_in_ns.get();
        let first_out_ns = w.first_out_ns.get();
        let tcpi_zero = w.bytes_acked.get() == 0
            && w.rwnd_limited_us.get() == 0
            && w.peer_window.get() == 0
            && w.rtt_us.get() == 0
            && w.retrans.get() == 0;
        if (fl & flags::FIRST_IN == 0 && first_in_ns != 0)
            || (fl & flags::FIRST_OUT == 0 && first_out_ns != 0)
            || (fl & flags::TCP_INFO == 0 && !tcpi_zero)
        {
            return Err(DecodeError::Inconsistent { kind: T });
        }
        Ok(ConnTelemetry {
            flow_id: w.flow_id.get(),
            sock: w.sock.get(),
            proto: w.proto,
            cause: TelemetryCause::try_from(w.cause)?,
            flags: fl,
            local: w.local.require(T)?,
            remote: w.remote.require(T)?,
            age_ns: w.age_ns.get(),
            bytes_in: w.bytes_in.get(),
            bytes_out: w.bytes_out.get(),
            segs_in: w.segs_in.get(),
            segs_out: w.segs_out.get(),
            idle_in_ns: w.idle_in_ns.get(),
            idle_out_ns: w.idle_out_ns.get(),
            first_in_ns,
            first_out_ns,
            bytes_acked: w.bytes_acked.get(),
            zero_window_ns: w.zero_window_ns.get(),
            rwnd_limited_us: w.rwnd_limited_us.get(),
            peer_window: w.peer_window.get(),
            rtt_us: w.rtt_us.get(),
            retrans: w.retrans.get(),
            unsent: w.unsent.get(),
            sample_in: PayloadStats::from_wire(&w.sample_in)?,
            sample_out: PayloadStats::from_wire(&w.sample_out)?,
        })
    }

    /// Whether a flag bit is set.
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(len_bucket(0), 0);
        assert_eq!(len_bucket(63), 0);
        assert_eq!(len_bucket(64), 1);
        assert_eq!(len_bucket(1448), 5);
        assert_eq!(len_bucket(1500), 6);
        assert_eq!(len_bucket(4095), 6);
        assert_eq!(len_bucket(4096), 7);
        assert_eq!(len_bucket(usize::MAX), 7);
    }
}
