//! Live per-connection telemetry: the state the executor keeps for each TCP
//! connection so that it can report, at any moment, how the connection is
//! behaving ([`ins_protocol::msg::ConnTelemetry`]).
//!
//! # What is kept
//!
//! * When the connection opened, when the first and the last byte moved
//!   each way (monotonic nanoseconds from the executor's clock).
//! * Since when the peer's window has been zero, as seen by the samples
//!   (the executor reads the stack's TCP counters only when it reports).
//! * Statistics of the first `sample_bytes` bytes each way: byte-value
//!   counts (for the entropy), printable share and a histogram of chunk
//!   lengths. **Never the bytes themselves.**
//!
//! # Invariants
//!
//! * A [`Sampler`] (about 540 bytes) exists only while its direction has
//!   moved fewer than `sample_bytes` bytes; once full it is folded into a
//!   [`PayloadStats`] and freed, so a long connection keeps about 100
//!   bytes here. An idle connection that never sends allocates none.
//! * Times are clamped: a `now` earlier than the opening time counts as the
//!   opening time, so every duration is ≥ 0.
//! * Entropy is computed in integer fixed point ([`log2_q16`]), so the
//!   crate stays `no_std` without a float library.

use alloc::boxed::Box;

use ins_protocol::msg::telemetry::len_bucket;
use ins_protocol::msg::{ConnTelemetry, PayloadStats, TelemetryCause, telemetry::flags};

use crate::stack::TcpCounters;

/// `log2(x)` in Q16.16 fixed point (`log2(1) = 0`); `x = 0` gives 0.
///
/// Integer part from the highest set bit, fraction by repeated squaring of
/// the mantissa (one bit per step, 16 steps): exact to 2⁻¹⁶.
pub fn log2_q16(x: u64) -> u64 {
    if x == 0 {
        return 0;
    }
    let int = 63 - u64::from(x.leading_zeros());
    // Mantissa in Q1.31: x / 2^int ∈ [1, 2).
    let mut m: u64 = if int >= 31 {
        x >> (int - 31)
    } else {
        x << (31 - int)
    };
    let mut frac = 0u64;
    for bit in (0..16).rev() {
        m = (m * m) >> 31;
        if m >= 1 << 32 {
            m >>= 1;
            frac |= 1 << bit;
        }
    }
    (int << 16) | frac
}

/// Shannon entropy in millibits per byte of a byte-value histogram over
/// `n` bytes: `log2 n − Σ c·log2 c / n`.
pub fn entropy_milli(counts: &[u16; 256], n: u64) -> u16 {
    if n == 0 {
        return 0;
    }
    let sum: u64 = counts
        .iter()
        .filter(|&&c| c > 1)
        .map(|&c| u64::from(c) * log2_q16(u64::from(c)))
        .sum();
    let h_q16 = log2_q16(n).saturating_sub(sum / n);
    let milli = (h_q16 * 1000 + (1 << 15)) >> 16;
    u16::try_from(milli.min(8000)).unwrap_or(8000)
}

fn printable(b: u8) -> bool {
    (0x20..=0x7e).contains(&b) || b == b'\t' || b == b'\r' || b == b'\n'
}

/// Statistics of the first bytes of one direction while they are
/// collected.
#[derive(Clone, Debug)]
pub struct Sampler {
    counts: [u16; 256],
    n: u32,
    printable: u32,
    hist: [u16; 8],
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            counts: [0; 256],
            n: 0,
            printable: 0,
            hist: [0; 8],
        }
    }
}

impl Sampler {
    /// Adds one chunk, of which at most `room` bytes count.
    fn add(&mut self, chunk: &[u8], room: u32) {
        if let Some(h) = self.hist.get_mut(len_bucket(chunk.len())) {
            *h = h.saturating_add(1);
        }
        let take = chunk.len().min(room as usize);
        for &b in chunk.iter().take(take) {
            let c = &mut self.counts[usize::from(b)];
            *c = c.saturating_add(1);
            if printable(b) {
                self.printable += 1;
            }
        }
        self.n = self
            .n
            .saturating_add(u32::try_from(take).unwrap_or(u32::MAX));
    }

    fn stats(&self) -> PayloadStats {
        let n = u64::from(self.n);
        PayloadStats {
            sampled: self.n,
            entropy_milli: entropy_milli(&self.counts, n),
            printable_permille: (u64::from(self.printable) * 1000)
                .checked_div(n)
                .map_or(0, |p| u16::try_from(p).unwrap_or(1000)),
            hist: self.hist,
        }
    }
}

/// One direction: the sampler while it fills, its frozen result after.
#[derive(Clone, Debug, Default)]
struct Direction {
    first: Option<u64>,
    last: Option<u64>,
    sampler: Option<Box<Sampler>>,
    done: Option<PayloadStats>,
}

impl Direction {
    fn on_bytes(&mut self, chunk: &[u8], now: u64, limit: u32) {
        if chunk.is_empty() {
            return;
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
        if self.done.is_some() || limit == 0 {
            return;
        }
        let s = self.sampler.get_or_insert_with(Box::default);
        s.add(chunk, limit.saturating_sub(s.n));
        if s.n >= limit {
            self.done = Some(s.stats());
            self.sampler = None;
        }
    }

    fn stats(&self) -> PayloadStats {
        match (&self.done, &self.sampler) {
            (Some(d), _) => *d,
            (None, Some(s)) => s.stats(),
            (None, None) => PayloadStats::default(),
        }
    }
}

/// What the executor knows about a connection that it does not keep in the
/// flow table: see the module docs.
#[derive(Clone, Debug)]
pub struct ConnTel {
    opened: u64,
    outbound: bool,
    sample_bytes: u32,
    rx: Direction,
    tx: Direction,
    zero_window_since: Option<u64>,
}

/// Counters the executor adds when it builds a report.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReportInput {
    /// Flow id.
    pub flow_id: u64,
    /// Socket id (0 if released).
    pub sock: u32,
    /// Addresses.
    pub local: Option<core::net::SocketAddr>,
    /// Peer.
    pub remote: Option<core::net::SocketAddr>,
    /// Payload bytes received / sent (flow table).
    pub bytes_in: u64,
    /// Payload bytes sent.
    pub bytes_out: u64,
    /// Segments each way (flow table, refreshed from TCP counters).
    pub segs_in: u64,
    /// Segments sent.
    pub segs_out: u64,
    /// Bytes held in the executor's transmit buffer.
    pub buffered: usize,
    /// Peer sent FIN.
    pub peer_fin: bool,
    /// We shut our write side.
    pub local_fin: bool,
}

impl ConnTel {
    /// State for a connection opened at `now`; `sample_bytes` bytes each
    /// way are sampled (0: none).
    pub fn new(now: u64, outbound: bool, sample_bytes: u32) -> ConnTel {
        ConnTel {
            opened: now,
            outbound,
            sample_bytes,
            rx: Direction::default(),
            tx: Direction::default(),
            zero_window_since: None,
        }
    }

    /// Bytes received from the peer.
    pub fn on_in(&mut self, chunk: &[u8], now: u64) {
        let now = now.max(self.opened);
        self.rx.on_bytes(chunk, now, self.sample_bytes);
    }

    /// Bytes handed to the network for the peer.
    pub fn on_out(&mut self, chunk: &[u8], now: u64) {
        let now = now.max(self.opened);
        self.tx.on_bytes(chunk, now, self.sample_bytes);
    }

    /// Heap bytes held now (for the memory budget).
    pub fn heap_bytes(&self) -> usize {
        let s = |d: &Direction| d.sampler.as_ref().map_or(0, |_| size_of::<Sampler>());
        size_of::<ConnTel>() + s(&self.rx) + s(&self.tx)
    }

    /// The report for this connection at `now`, given the stack's TCP
    /// counters (if it has them) and the executor's counters. `None` when
    /// an address is missing (nothing to report about).
    pub fn report(
        &mut self,
        cause: TelemetryCause,
        now: u64,
        tcp: Option<TcpCounters>,
        i: &ReportInput,
    ) -> Option<ConnTelemetry> {
        let (local, remote) = (i.local?, i.remote?);
        let now = now.max(self.opened);
        let age = now - self.opened;
        let mut fl = 0u16;
        let mut set = |bit: u16, on: bool| {
            if on {
                fl |= bit;
            }
        };
        set(flags::OUTBOUND, self.outbound);
        set(flags::FIRST_IN, self.rx.first.is_some());
        set(flags::FIRST_OUT, self.tx.first.is_some());
        set(flags::PEER_FIN, i.peer_fin);
        set(flags::LOCAL_FIN, i.local_fin);
        let mut t = ConnTelemetry {
            flow_id: i.flow_id,
            sock: i.sock,
            proto: ins_protocol::msg::IPPROTO_TCP,
            cause,
            flags: 0,
            local,
            remote,
            age_ns: age,
            bytes_in: i.bytes_in,
            bytes_out: i.bytes_out,
            segs_in: i.segs_in,
            segs_out: i.segs_out,
            idle_in_ns: now - self.rx.last.unwrap_or(self.opened).min(now),
            idle_out_ns: now - self.tx.last.unwrap_or(self.opened).min(now),
            first_in_ns: self.rx.first.map_or(0, |f| f - self.opened),
            first_out_ns: self.tx.first.map_or(0, |f| f - self.opened),
            bytes_acked: 0,
            zero_window_ns: 0,
            rwnd_limited_us: 0,
            peer_window: 0,
            rtt_us: 0,
            retrans: 0,
            unsent: u32::try_from(i.buffered).unwrap_or(u32::MAX),
            sample_in: self.rx.stats(),
            sample_out: self.tx.stats(),
        };
        if let Some(c) = tcp {
            set(flags::TCP_INFO, true);
            t.bytes_acked = c.bytes_acked;
            t.rwnd_limited_us = c.rwnd_limited_us;
            t.rtt_us = c.rtt_us;
            t.retrans = u32::try_from(c.retrans).unwrap_or(u32::MAX);
            t.unsent = t.unsent.saturating_add(c.notsent);
            t.segs_in = t.segs_in.max(c.segs_in);
            t.segs_out = t.segs_out.max(c.segs_out);
            match c.peer_window {
                Some(0) => {
                    set(flags::ZERO_WINDOW, true);
                    let since = *self.zero_window_since.get_or_insert(now);
                    t.zero_window_ns = now - since.min(now);
                }
                Some(w) => {
                    self.zero_window_since = None;
                    t.peer_window = w;
                }
                None => {}
            }
        }
        t.flags = fl;
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::prelude::rust_2024::*;

    #[test]
    fn log2_fixed_point() {
        assert_eq!(log2_q16(1), 0);
        assert_eq!(log2_q16(2), 1 << 16);
        assert_eq!(log2_q16(1024), 10 << 16);
        for x in [3u64, 5, 7, 100, 255, 1000, 65535, 1 << 40] {
            let want = (x as f64).log2();
            let got = log2_q16(x) as f64 / 65536.0;
            assert!((want - got).abs() < 1e-4, "log2({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn entropy_of_known_distributions() {
        let mut c = [0u16; 256];
        c[b'a' as usize] = 100;
        assert_eq!(entropy_milli(&c, 100), 0);
        let mut c = [0u16; 256];
        c[0] = 50;
        c[1] = 50;
        assert_eq!(entropy_milli(&c, 100), 1000);
        let c = [4u16; 256];
        assert_eq!(entropy_milli(&c, 1024), 8000);
        let mut c = [0u16; 256];
        for (i, v) in c.iter_mut().enumerate().take(16) {
            *v = (i as u16 + 1) * 3;
        }
        let n: u64 = c.iter().map(|&v| u64::from(v)).sum();
        let want: f64 = c
            .iter()
            .filter(|&&v| v > 0)
            .map(|&v| {
                let p = f64::from(v) / n as f64;
                -p * p.log2()
            })
            .sum();
        let got = f64::from(entropy_milli(&c, n)) / 1000.0;
        assert!((want - got).abs() < 0.002, "{got} vs {want}");
    }

    #[test]
    fn sampling_stops_at_the_limit_and_frees_the_sampler() {
        let mut t = ConnTel::new(100, false, 10);
        t.on_in(b"GET / HTTP", 150);
        assert!(t.rx.sampler.is_none(), "full after 10 bytes");
        t.on_in(&[0xff; 500], 200);
        let s = t.rx.stats();
        assert_eq!(s.sampled, 10);
        assert_eq!(s.printable_permille, 1000);
        assert_eq!(s.hist[0], 1, "only chunks within the sample are counted");
        let r = t
            .report(
                TelemetryCause::Periodic,
                300,
                None,
                &ReportInput {
                    local: Some("10.0.0.1:80".parse().unwrap()),
                    remote: Some("10.0.0.2:9".parse().unwrap()),
                    ..ReportInput::default()
                },
            )
            .unwrap();
        assert_eq!((r.age_ns, r.first_in_ns, r.idle_in_ns), (200, 50, 100));
        assert_eq!(r.idle_out_ns, 200, "nothing sent: idle since open");
        assert!(r.has(flags::FIRST_IN) && !r.has(flags::FIRST_OUT));
        assert!(!r.has(flags::TCP_INFO));
    }

    #[test]
    fn zero_window_persistence_spans_samples() {
        let mut t = ConnTel::new(0, true, 0);
        let input = ReportInput {
            local: Some("10.0.0.1:80".parse().unwrap()),
            remote: Some("10.0.0.2:9".parse().unwrap()),
            ..ReportInput::default()
        };
        let zero = TcpCounters {
            peer_window: Some(0),
            ..TcpCounters::default()
        };
        let open = TcpCounters {
            peer_window: Some(4096),
            ..TcpCounters::default()
        };
        let r = |t: &mut ConnTel, now, c| t.report(TelemetryCause::Periodic, now, Some(c), &input);
        assert_eq!(r(&mut t, 10, zero).unwrap().zero_window_ns, 0);
        let z = r(&mut t, 30, zero).unwrap();
        assert_eq!(z.zero_window_ns, 20);
        assert!(z.has(flags::ZERO_WINDOW) && z.has(flags::OUTBOUND));
        let o = r(&mut t, 40, open).unwrap();
        assert_eq!((o.zero_window_ns, o.peer_window), (0, 4096));
        assert_eq!(r(&mut t, 50, zero).unwrap().zero_window_ns, 0);
    }

    #[test]
    fn random_bytes_look_random_text_does_not() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut rnd = vec![0u8; 1024];
        for b in &mut rnd {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let mut t = ConnTel::new(0, false, 1024);
        t.on_in(&rnd, 1);
        t.on_out(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>hello</html>",
            2,
        );
        let (i, o) = (t.rx.stats(), t.tx.stats());
        assert!(i.entropy_milli > 7700, "{}", i.entropy_milli);
        assert!(o.entropy_milli < 5000, "{}", o.entropy_milli);
        assert_eq!(o.printable_permille, 1000);
        assert!(i.printable_permille < 450);
    }
}
