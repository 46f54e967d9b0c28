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
