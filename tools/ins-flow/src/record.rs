//! Export records: cumulative INS flow reports turned into per-interval
//! deltas, and the field values both encoders write.
//!
//! Direction (both formats): the **source** is the remote peer, the
//! **destination** the INS-side socket. "Forward" counters
//! (IPFIX `octetDeltaCount`, v9 `IN_BYTES`) are what INS *received* from the
//! peer (`bytes_in`/`segs_in`); "reverse" counters (IPFIX RFC 5103
//! `reverseOctetDeltaCount`, v9 `OUT_BYTES`) are what INS sent. For a
//! server behind INS the source is thus the client, as a collector expects.
//!
//! Deltas: an instance reports a flow every active timeout and once when it
//! closes, each time with totals since the flow began. [`DeltaTracker`]
//! remembers the last totals per `(instance, flow_id)` and emits only the
//! difference; an interim report with nothing new is dropped, a final one is
//! always exported and forgets the flow. An interval's start time is the
//! previous report's `last_ns` (the first report uses `start_ns`). Summing all
//! records of one flow at a collector gives the flow's totals. Entries whose
//! final report never arrives are forgotten after an idle limit
//! ([`DeltaTracker::forget_idle`]).

use std::collections::HashMap;
use std::net::SocketAddr;

use ins_protocol::msg::{CloseReason, FlowState};

use crate::schema::InstFlow;

/// One record to export; counters are deltas for one interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportRecord {
    /// Instance id (observation domain / source id).
    pub inst: u32,
    /// Instance-unique flow id.
    pub flow_id: u64,
    /// IP protocol (6 or 17).
    pub proto: u8,
    /// Remote peer.
    pub src: SocketAddr,
    /// INS-side socket (same family as `src`).
    pub dst: SocketAddr,
    /// Bytes peer → INS in this interval.
    pub octets: u64,
    /// Segments peer → INS in this interval.
    pub packets: u64,
    /// Bytes INS → peer in this interval.
    pub rev_octets: u64,
    /// Segments INS → peer in this interval.
    pub rev_packets: u64,
    /// Interval start, Unix milliseconds.
    pub start_ms: u64,
    /// Interval end (latest packet), Unix milliseconds.
    pub end_ms: u64,
    /// Union of TCP flags seen so far (0 for UDP).
    pub tcp_flags: u8,
    /// Close reason ([`CloseReason::None`] for interim records).
    pub reason: CloseReason,
    /// For connection-telemetry records: the telemetry (the counters
    /// above are then totals, not deltas, and `start_ms`/`end_ms` are the
    /// connection's start and the report's time).
    pub conn: Option<ConnExtra>,
}

/// The telemetry of one connection report (an IPFIX record of the
/// connection template).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnExtra {
    /// 0 periodic, 1 on demand, 2 final.
    pub cause: u8,
    /// 0 accepted by INS, 1 initiated through INS.
    pub direction: u8,
    /// Milliseconds since the last byte received.
    pub idle_in_ms: u32,
    /// Milliseconds since the last byte sent.
    pub idle_out_ms: u32,
    /// Milliseconds from open to the first byte received, `u32::MAX` if none.
    pub first_in_ms: u32,
    /// Milliseconds from open to the first byte sent, `u32::MAX` if none.
    pub first_out_ms: u32,
    /// Peer's advertised window, bytes.
    pub peer_window: u32,
    /// Milliseconds the peer's window has been zero.
    pub zero_window_ms: u32,
    /// Bytes the peer acknowledged.
    pub bytes_acked: u64,
    /// Bytes accepted but not yet sent.
    pub unsent: u32,
    /// Bytes sampled each way.
    pub sampled: [u32; 2],
    /// Entropy each way, millibits per byte.
    pub entropy: [u16; 2],
    /// Printable share each way, per mille.
    pub printable: [u16; 2],
    /// Chunk-length histograms each way.
    pub hist: [[u16; 8]; 2],
}

impl ExportRecord {
    /// A connection-telemetry record from a report of instance `inst`,
    /// observed at `now_ms` (Unix milliseconds).
    pub fn from_conn(inst: u32, t: &ins_protocol::msg::ConnTelemetry, now_ms: u64) -> ExportRecord {
        use ins_protocol::msg::telemetry::flags;
        let ms = |ns: u64| u32::try_from(ns / 1_000_000).unwrap_or(u32::MAX);
        let first = |on: bool, ns: u64| {
            if on {
                ms(ns).min(u32::MAX - 1)
            } else {
                u32::MAX
            }
        };
        let age_ms = t.age_ns / 1_000_000;
        ExportRecord {
            inst,
            flow_id: t.flow_id,
            proto: t.proto,
            src: t.remote,
            dst: t.local,
            octets: t.bytes_in,
            packets: t.segs_in,
            rev_octets: t.bytes_out,
            rev_packets: t.segs_out,
            start_ms: now_ms.saturating_sub(age_ms),
            end_ms: now_ms,
            tcp_flags: 0,
            reason: CloseReason::None,
            conn: Some(ConnExtra {
                cause: t.cause as u8,
                direction: u8::from(t.has(flags::OUTBOUND)),
                idle_in_ms: ms(t.idle_in_ns),
                idle_out_ms: ms(t.idle_out_ns),
                first_in_ms: first(t.has(flags::FIRST_IN), t.first_in_ns),
                first_out_ms: first(t.has(flags::FIRST_OUT), t.first_out_ns),
                peer_window: t.peer_window,
                zero_window_ms: ms(t.zero_window_ns),
                bytes_acked: t.bytes_acked,
                unsent: t.unsent,
                sampled: [t.sample_in.sampled, t.sample_out.sampled],
                entropy: [t.sample_in.entropy_milli, t.sample_out.entropy_milli],
                printable: [
                    t.sample_in.printable_permille,
                    t.sample_out.printable_permille,
                ],
                hist: [t.sample_in.hist, t.sample_out.hist],
            }),
        }
    }
}

impl ExportRecord {
    /// Whether the addresses are IPv4.
    pub fn is_v4(&self) -> bool {
        self.src.is_ipv4()
    }

    /// IPFIX `flowEndReason` (IE 136): 1 idle timeout, 2 active timeout,
    /// 3 end of flow detected, 4 forced end, 5 lack of resources.
    pub fn flow_end_reason(&self) -> u8 {
        match self.reason {
            CloseReason::None => 2,
            CloseReason::Timeout => 1,
            CloseReason::Normal | CloseReason::Reset => 3,
            CloseReason::Mitigated | CloseReason::Error => 4,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    bytes_in: u64,
    bytes_out: u64,
    segs_in: u64,
    segs_out: u64,
    last_ns: u64,
}

/// Turns cumulative reports into delta records.
#[derive(Debug, Default)]
pub struct DeltaTracker {
    seen: HashMap<(u32, u64), Seen>,
}

fn ns_to_ms(ns: u64) -> u64 {
    ns / 1_000_000
}

impl DeltaTracker {
    /// An empty tracker.
    pub fn new() -> DeltaTracker {
        DeltaTracker::default()
    }

    /// Flows currently remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no flow is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// The record to export for `f`, or `None` for an interim report that
    /// adds nothing. Counters that went backwards (an instance restarted
    /// and reused the id) start the flow afresh.
    pub fn update(&mut self, f: &InstFlow) -> Option<ExportRecord> {
        let r = &f.rec;
        let key = (f.inst, r.flow_id);
        let prev = self.seen.get(&key).copied().filter(|p| {
            r.bytes_in >= p.bytes_in
                && r.bytes_out >= p.bytes_out
                && r.segs_in >= p.segs_in
                && r.segs_out >= p.segs_out
        });
        let (base, start_ns) = match prev {
            Some(p) => (p, p.last_ns.max(r.start_ns)),
            None => (
                Seen {
                    bytes_in: 0,
                    bytes_out: 0,
                    segs_in: 0,
                    segs_out: 0,
                    last_ns: r.start_ns,
                },
                r.start_ns,
            ),
        };
        let rec = ExportRecord {
            inst: f.inst,
            flow_id: r.flow_id,
            proto: r.proto,
            src: r.remote,
            dst: r.local,
            octets: r.bytes_in - base.bytes_in,
            packets: r.segs_in - base.segs_in,
            rev_octets: r.bytes_out - base.bytes_out,
            rev_packets: r.segs_out - base.segs_out,
            start_ms: ns_to_ms(start_ns),
            end_ms: ns_to_ms(r.last_ns.max(start_ns)),
            tcp_flags: r.tcp_flags,
            reason: r.reason,
            conn: None,
        };
        if r.state == FlowState::Closed {
            self.seen.remove(&key);
            return Some(rec);
        }
        self.seen.insert(
            key,
            Seen {
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
                segs_in: r.segs_in,
                segs_out: r.segs_out,
                last_ns: r.last_ns.max(base.last_ns),
            },
        );
        let empty =
            rec.octets == 0 && rec.packets == 0 && rec.rev_octets == 0 && rec.rev_packets == 0;
        if empty && prev.is_some() {
            None
        } else {
            Some(rec)
        }
    }

    /// Forgets flows whose latest packet is older than `cutoff_ns`
    /// (their final report was lost); returns how many.
    pub fn forget_idle(&mut self, cutoff_ns: u64) -> usize {
        let before = self.seen.len();
        self.seen.retain(|_, s| s.last_ns >= cutoff_ns);
        before - self.seen.len()
    }
}

/// Field content, shared by the IPFIX and NetFlow v9 templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Source IPv4 address (4 bytes).
    SrcV4,
    /// Destination IPv4 address (4 bytes).
    DstV4,
    /// Source IPv6 address (16 bytes).
    SrcV6,
    /// Destination IPv6 address (16 bytes).
    DstV6,
    /// Source port.
    SrcPort,
    /// Destination port.
    DstPort,
    /// IP protocol.
    Proto,
    /// TCP flags.
    TcpFlags,
    /// Forward bytes.
    Octets,
    /// Forward packets.
    Packets,
    /// Reverse bytes.
    RevOctets,
    /// Reverse packets.
    RevPackets,
    /// Start time, absolute Unix milliseconds.
    StartMs,
    /// End time, absolute Unix milliseconds.
    EndMs,
    /// Start time, milliseconds of sysUptime (v9).
    StartUptime,
    /// End time, milliseconds of sysUptime (v9).
    EndUptime,
    /// IPFIX flowEndReason.
    EndReason,
    /// INS instance id.
    InstId,
    /// INS close reason code ([`CloseReason`] as u8).
    InsReason,
    /// INS flow id.
    FlowId,
    /// Telemetry: a field of [`ConnExtra`] (0 for flow records).
    Conn(ConnField),
}

/// The telemetry fields of the connection template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnField {
    /// Report cause.
    Cause,
    /// Direction.
    Direction,
    /// Idle in, ms.
    IdleIn,
    /// Idle out, ms.
    IdleOut,
    /// First byte in, ms.
    FirstIn,
    /// First byte out, ms.
    FirstOut,
    /// Peer window.
    PeerWindow,
    /// Zero-window time, ms.
    ZeroWindow,
    /// Bytes acknowledged.
    BytesAcked,
    /// Unsent bytes.
    Unsent,
    /// Bytes sampled (0 in, 1 out).
    Sampled(usize),
    /// Entropy (0 in, 1 out).
    Entropy(usize),
    /// Printable share (0 in, 1 out).
    Printable(usize),
    /// Length histogram, 8 × u16 (0 in, 1 out).
    Hist(usize),
}

/// One template field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Information element / field type id (without the enterprise bit).
    pub id: u16,
    /// Enterprise number (IPFIX only), `None` for IANA elements.
    pub pen: Option<u32>,
    /// Encoded length in bytes.
    pub len: u16,
    /// What is written.
    pub content: Content,
}

fn put_uint(out: &mut Vec<u8>, v: u64, len: u16) {
    let be = v.to_be_bytes();
    let n = usize::from(len).min(8);
    out.extend_from_slice(&be[8 - n..]);
}

/// Appends `f`'s value for `r` to `out` (network byte order, exactly
/// `f.len` bytes). `boot_ms` is the v9 sysUptime origin in Unix ms.
pub fn put_field(out: &mut Vec<u8>, f: &Field, r: &ExportRecord, boot_ms: u64) {
    let start = out.len();
    let ip = |a: &SocketAddr| match a {
        SocketAddr::V4(a) => a.ip().octets().to_vec(),
        SocketAddr::V6(a) => a.ip().octets().to_vec(),
    };
    match f.content {
        Content::SrcV4 | Content::SrcV6 => out.extend_from_slice(&ip(&r.src)),
        Content::DstV4 | Content::DstV6 => out.extend_from_slice(&ip(&r.dst)),
        Content::SrcPort => put_uint(out, u64::from(r.src.port()), f.len),
        Content::DstPort => put_uint(out, u64::from(r.dst.port()), f.len),
        Content::Proto => put_uint(out, u64::from(r.proto), f.len),
        Content::TcpFlags => put_uint(out, u64::from(r.tcp_flags), f.len),
        Content::Octets => put_uint(out, r.octets, f.len),
        Content::Packets => put_uint(out, r.packets, f.len),
        Content::RevOctets => put_uint(out, r.rev_octets, f.len),
        Content::RevPackets => put_uint(out, r.rev_packets, f.len),
        Content::StartMs => put_uint(out, r.start_ms, f.len),
        Content::EndMs => put_uint(out, r.end_ms, f.len),
        // sysUptime-relative, modulo 2^32 as the v9 uptime itself.
        Content::StartUptime => put_uint(out, r.start_ms.wrapping_sub(boot_ms), f.len),
        Content::EndUptime => put_uint(out, r.end_ms.wrapping_sub(boot_ms), f.len),
        Content::EndReason => put_uint(out, u64::from(r.flow_end_reason()), f.len),
        Content::InstId => put_uint(out, u64::from(r.inst), f.len),
        Content::InsReason => put_uint(out, r.reason as u64, f.len),
        Content::FlowId => put_uint(out, r.flow_id, f.len),
        Content::Conn(c) => {
            let x = r.conn.unwrap_or_default();
            let pick = |a: &[u32; 2], i: usize| u64::from(a.get(i).copied().unwrap_or(0));
            let v = match c {
                ConnField::Cause => u64::from(x.cause),
                ConnField::Direction => u64::from(x.direction),
                ConnField::IdleIn => u64::from(x.idle_in_ms),
                ConnField::IdleOut => u64::from(x.idle_out_ms),
                ConnField::FirstIn => u64::from(x.first_in_ms),
                ConnField::FirstOut => u64::from(x.first_out_ms),
                ConnField::PeerWindow => u64::from(x.peer_window),
                ConnField::ZeroWindow => u64::from(x.zero_window_ms),
                ConnField::BytesAcked => x.bytes_acked,
                ConnField::Unsent => u64::from(x.unsent),
                ConnField::Sampled(i) => pick(&x.sampled, i),
                ConnField::Entropy(i) => u64::from(x.entropy.get(i).copied().unwrap_or(0)),
                ConnField::Printable(i) => u64::from(x.printable.get(i).copied().unwrap_or(0)),
                ConnField::Hist(i) => {
                    for h in x.hist.get(i).copied().unwrap_or_default() {
                        out.extend_from_slice(&h.to_be_bytes());
                    }
                    return;
                }
            };
            put_uint(out, v, f.len);
        }
    }
    debug_assert_eq!(out.len() - start, usize::from(f.len));
}

/// Encoded length of one data record of `fields`.
pub fn record_len(fields: &[Field]) -> usize {
    fields.iter().map(|f| usize::from(f.len)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ins_protocol::msg::FlowRecord;

    fn flow(state: FlowState, bi: u64, bo: u64, si: u64, so: u64, last_s: u64) -> InstFlow {
        InstFlow {
            inst: 3,
            rec: FlowRecord {
                flow_id: 9,
                proto: 6,
                local: "10.0.0.1:80".parse().unwrap(),
                remote: "10.0.0.2:4000".parse().unwrap(),
                bytes_in: bi,
                bytes_out: bo,
                segs_in: si,
                segs_out: so,
                start_ns: 1_000_000_000_000,
                last_ns: last_s * 1_000_000_000,
                state,
                reason: if state == FlowState::Closed {
                    CloseReason::Normal
                } else {
                    CloseReason::None
                },
                tcp_flags: 0x1b,
                sock: 1,
            },
        }
    }

    #[test]
    fn conn_record_fields() {
        use ins_protocol::msg::{ConnTelemetry, PayloadStats, TelemetryCause, telemetry::flags};
        let t = ConnTelemetry {
            flow_id: 5,
            sock: 1,
            proto: 6,
            cause: TelemetryCause::Final,
            flags: flags::FIRST_IN | flags::TCP_INFO,
            local: "10.0.0.1:80".parse().unwrap(),
            remote: "10.0.0.2:4000".parse().unwrap(),
            age_ns: 3_000_000_000,
            bytes_in: 10,
            bytes_out: 0,
            segs_in: 2,
            segs_out: 1,
            idle_in_ns: 2_500_000_000,
            idle_out_ns: 3_000_000_000,
            first_in_ns: 1_000_000,
            first_out_ns: 0,
            bytes_acked: 1,
            zero_window_ns: 0,
            rwnd_limited_us: 0,
            peer_window: 65535,
            rtt_us: 10,
            retrans: 0,
            unsent: 0,
            sample_in: PayloadStats {
                sampled: 10,
                entropy_milli: 3000,
                printable_permille: 1000,
                hist: [1, 0, 0, 0, 0, 0, 0, 2],
            },
            sample_out: PayloadStats::default(),
        };
        let r = ExportRecord::from_conn(4, &t, 1_000_000);
        assert_eq!(
            (r.start_ms, r.end_ms, r.octets, r.src.port()),
            (997_000, 1_000_000, 10, 4000)
        );
        let x = r.conn.unwrap();
        assert_eq!(
            (
                x.cause,
                x.direction,
                x.idle_in_ms,
                x.first_in_ms,
                x.first_out_ms
            ),
            (2, 0, 2500, 1, u32::MAX)
        );
        let mut out = Vec::new();
        let f = |content, len| Field {
            id: 0,
            pen: None,
            len,
            content,
        };
        put_field(&mut out, &f(Content::Conn(ConnField::Hist(0)), 16), &r, 0);
        put_field(&mut out, &f(Content::Conn(ConnField::Entropy(0)), 2), &r, 0);
        assert_eq!(
            out,
            [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0x0b, 0xb8]
        );
    }

    #[test]
    fn deltas_sum_to_totals_and_close_forgets() {
        let mut t = DeltaTracker::new();
        let a = t
            .update(&flow(FlowState::Active, 100, 1000, 2, 3, 1010))
            .unwrap();
        assert_eq!(
            (a.octets, a.rev_octets, a.packets, a.rev_packets),
            (100, 1000, 2, 3)
        );
        assert_eq!((a.start_ms, a.end_ms), (1_000_000, 1_010_000));
        assert_eq!(a.src, "10.0.0.2:4000".parse().unwrap());
        // Nothing new: dropped.
        assert!(
            t.update(&flow(FlowState::Active, 100, 1000, 2, 3, 1010))
                .is_none()
        );
        let b = t
            .update(&flow(FlowState::Active, 150, 1000, 3, 3, 1020))
            .unwrap();
        assert_eq!(
            (b.octets, b.rev_octets, b.packets, b.rev_packets),
            (50, 0, 1, 0)
        );
        assert_eq!((b.start_ms, b.end_ms), (1_010_000, 1_020_000));
        let c = t
            .update(&flow(FlowState::Closed, 150, 1200, 3, 5, 1030))
            .unwrap();
        assert_eq!(
            (c.octets, c.rev_octets, c.packets, c.rev_packets),
            (0, 200, 0, 2)
        );
        assert_eq!(c.flow_end_reason(), 3);
        assert!(t.is_empty());
        // After close the same id starts afresh.
        let d = t
            .update(&flow(FlowState::Active, 10, 0, 1, 0, 1040))
            .unwrap();
        assert_eq!(d.octets, 10);
    }

    #[test]
    fn counter_reset_and_idle_forget() {
        let mut t = DeltaTracker::new();
        t.update(&flow(FlowState::Active, 100, 100, 1, 1, 1010));
        let r = t
            .update(&flow(FlowState::Active, 5, 5, 1, 1, 1011))
            .unwrap();
        assert_eq!(r.octets, 5);
        assert_eq!(t.forget_idle(1012 * 1_000_000_000), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn put_field_widths() {
        let mut t = DeltaTracker::new();
        let r = t
            .update(&flow(FlowState::Active, 0x0102, 0, 1, 0, 1010))
            .unwrap();
        let mut out = Vec::new();
        let f = |content, len| Field {
            id: 0,
            pen: None,
            len,
            content,
        };
        put_field(&mut out, &f(Content::SrcV4, 4), &r, 0);
        put_field(&mut out, &f(Content::SrcPort, 2), &r, 0);
        put_field(&mut out, &f(Content::Octets, 8), &r, 0);
        put_field(&mut out, &f(Content::StartUptime, 4), &r, 999_000);
        assert_eq!(
            out,
            [
                10, 0, 0, 2, 0x0f, 0xa0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0x03, 0xe8
            ]
        );
    }
}
