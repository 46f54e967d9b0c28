//! Flow accounting: one record per connection (TCP) or per local/remote pair
//! (UDP), with bytes and segments each way, first/last seen, state and close
//! reason.
//!
//! # Records
//!
//! The table produces [`FlowSnapshot`]s: a [`RecordKind::Final`] one when a
//! flow closes ([`FlowTable::close`], or a UDP idle timeout), and
//! [`RecordKind::Interim`] ones from [`FlowTable::due_timeouts`] every *active
//! timeout* (default 10 s) while a flow lives. **Every record reports
//! cumulative totals since the flow opened**, never deltas; a collector that
//! wants deltas subtracts the previous record of the same [`FlowId`]. An
//! interim record is skipped for a flow with no activity (no bytes, segment
//! update, flag or state change) since its previous record, so idle
//! connections cost nothing.
//!
//! # Invariants
//!
//! * Flow ids are assigned from 1 upward and never reused by a table.
//! * Time is monotonic nanoseconds passed in by the caller; the table clamps a
//!   `now` that goes backwards to the latest one it has seen, so first ≤ last
//!   always holds.
//! * Every live flow has exactly one entry in the timer queue for its next
//!   active-timeout record, and a UDP flow one more for its idle check; a
//!   closed flow has none. Accounting calls are O(1) (one hash lookup) and do
//!   not touch the queue; timers cost O(log n) when they fire. Nothing scans
//!   all flows.
//! * The table holds at most `max_flows` flows; [`FlowTable::open`] fails with
//!   [`FlowError::TableFull`] beyond that (a flood of spoofed UDP sources
//!   cannot grow it without bound).
//! * Counters saturate instead of wrapping.
//!
//! Memory: about [`FlowTable::APPROX_BYTES_PER_FLOW`] bytes per TCP flow
//! (entry, hash-table slot and timer entry); UDP flows add an index entry.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::net::SocketAddr;

use crate::hash::HashMap;

/// Identifies a flow within one table; assigned from 1 upward.
pub type FlowId = u64;

/// Transport protocol of a flow (values are IANA protocol numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Proto {
    /// TCP.
    Tcp = 6,
    /// UDP.
    Udp = 17,
}

/// The 5-tuple of a flow (protocol, local and remote address and port).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Transport protocol.
    pub proto: Proto,
    /// The instance's end.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
}

/// Lifecycle state of a flow as the executor last set it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowState {
    /// Outgoing connect in progress.
    Connecting,
    /// Data may flow.
    Established,
    /// One side has shut down.
    Closing,
    /// Closed; only seen in final records.
    Closed,
}

/// Why a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// Orderly close (FIN, or the application closed).
    Normal,
    /// Reset by the peer or the stack.
    Reset,
    /// Idle timeout (UDP) or a TCP timeout.
    Timeout,
    /// Closed by a mitigation (block list, rate limit, operator close).
    Mitigated,
    /// A socket error other than reset.
    Error,
}

/// Whether a record is an interim (active timeout) or the final one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// The flow is still open; totals so far.
    Interim,
    /// The flow closed; this is its last record.
    Final,
}

/// TCP flag bits as they appear in the TCP header (for [`FlowTable::add_tcp_flags`]).
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
}

/// A flow record: cumulative totals since the flow opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSnapshot {
    /// The flow.
    pub id: FlowId,
    /// Its 5-tuple.
    pub key: FlowKey,
    /// Interim or final.
    pub kind: RecordKind,
    /// Bytes received from the remote end.
    pub bytes_in: u64,
    /// Bytes sent to the remote end.
    pub bytes_out: u64,
    /// Segments (TCP, from `TCP_INFO`) or datagrams (UDP) received.
    pub segs_in: u64,
    /// Segments (TCP) or datagrams (UDP) sent.
    pub segs_out: u64,
    /// When the flow opened (ns, the caller's monotonic clock).
    pub first_ns: u64,
    /// Last activity (ns).
    pub last_ns: u64,
    /// State at the time of the record ([`FlowState::Closed`] in final records).
    pub state: FlowState,
    /// Why it closed; `None` in interim records.
    pub close_reason: Option<CloseReason>,
    /// OR of the TCP flags seen, 0 if unknown.
    pub tcp_flags: u8,
}

/// Settings of a [`FlowTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// Interval of interim records for long flows (ns). Default 10 s.
    pub active_timeout_ns: u64,
    /// A UDP flow with no traffic for this long closes with
    /// [`CloseReason::Timeout`] (ns). Default 30 s.
    pub udp_idle_timeout_ns: u64,
    /// Most flows held at once. Default 262,144.
    pub max_flows: usize,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            active_timeout_ns: 10_000_000_000,
            udp_idle_timeout_ns: 30_000_000_000,
            max_flows: 262_144,
        }
    }
}

/// Errors of [`FlowTable::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The table holds `max_flows` flows already.
    #[error("flow table full ({0} flows)")]
    TableFull(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Active,
    Idle,
}

#[derive(Clone, Debug)]
struct Flow {
    key: FlowKey,
    state: FlowState,
    tcp_flags: u8,
    /// Activity since the last record.
    dirty: bool,
    bytes_in: u64,
    bytes_out: u64,
    segs_in: u64,
    segs_out: u64,
    first_ns: u64,
    last_ns: u64,
    /// Deadline of this flow's `Timer::Active` entry.
    report_due: u64,
    /// Deadline of this flow's `Timer::Idle` entry (UDP only).
    idle_due: u64,
}

// Per-flow cost must stay a small part of the 8 KiB per idle connection budget.
const _: () = assert!(FlowTable::APPROX_BYTES_PER_FLOW < 512);

/// The flow table. See the module docs.
#[derive(Debug)]
pub struct FlowTable {
    cfg: FlowConfig,
    flows: HashMap<FlowId, Flow>,
    udp_index: HashMap<(SocketAddr, SocketAddr), FlowId>,
    timers: BTreeSet<(u64, FlowId, Timer)>,
    next_id: FlowId,
    clock: u64,
    /// Scratch for `due_timeouts`, kept to avoid an allocation per call.
    rearm: Vec<(u64, FlowId)>,
}

impl FlowTable {
    /// Approximate heap bytes per TCP flow: the flow entry in its hash table
    /// (with the id key, the control byte and the 7/8 load factor) plus one
    /// timer entry with B-tree node overhead.
    pub const APPROX_BYTES_PER_FLOW: usize =
        (size_of::<(FlowId, Flow)>() + 1) * 8 / 7 + size_of::<(u64, FlowId, Timer)>() * 3 / 2;

    /// An empty table.
    pub fn new(cfg: FlowConfig) -> Self {
        FlowTable {
            cfg,
            flows: HashMap::default(),
            udp_index: HashMap::default(),
            timers: BTreeSet::new(),
            next_id: 1,
            clock: 0,
            rearm: Vec::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    /// Number of open flows.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether no flow is open.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    fn tick(&mut self, now: u64) -> u64 {
        self.clock = self.clock.max(now);
        self.clock
    }

    /// Opens a flow and returns its id.
    ///
    /// For UDP this is get-or-open: a flow already open for the same
    /// (local, remote) pair is returned (and counts as activity). TCP flows are
    /// always new: the executor opens one per accepted or connected socket.
    pub fn open(&mut self, key: FlowKey, state: FlowState, now: u64) -> Result<FlowId, FlowError> {
        let now = self.tick(now);
        if key.proto == Proto::Udp
            && let Some(&id) = self.udp_index.get(&(key.local, key.remote))
        {
            if let Some(f) = self.flows.get_mut(&id) {
                f.last_ns = now;
                f.dirty = true;
            }
            return Ok(id);
        }
        if self.flows.len() >= self.cfg.max_flows {
            return Err(FlowError::TableFull(self.cfg.max_flows));
        }
        let id = self.next_id;
        self.next_id += 1;
        let report_due = now.saturating_add(self.cfg.active_timeout_ns);
        let idle_due = now.saturating_add(self.cfg.udp_idle_timeout_ns);
        self.timers.insert((report_due, id, Timer::Active));
        if key.proto == Proto::Udp {
            self.timers.insert((idle_due, id, Timer::Idle));
            self.udp_index.insert((key.local, key.remote), id);
        }
        self.flows.insert(
            id,
            Flow {
                key,
                state,
                tcp_flags: 0,
                dirty: true,
                bytes_in: 0,
                bytes_out: 0,
                segs_in: 0,
                segs_out: 0,
                first_ns: now,
                last_ns: now,
                report_due,
                idle_due,
            },
        );
        Ok(id)
    }

    /// The open UDP flow for a (local, remote) pair, if any.
    pub fn udp_lookup(&self, local: SocketAddr, remote: SocketAddr) -> Option<FlowId> {
        self.udp_index.get(&(local, remote)).copied()
    }

    fn touch(&mut self, id: FlowId, now: u64) -> Option<&mut Flow> {
        let now = self.tick(now);
        let f = self.flows.get_mut(&id)?;
        f.last_ns = now;
        f.dirty = true;
        Some(f)
    }

    /// Counts `bytes` received from the remote end (for UDP also one datagram).
    /// Returns false if the flow is not open.
    pub fn account_in(&mut self, id: FlowId, bytes: u64, now: u64) -> bool {
        match self.touch(id, now) {
            Some(f) => {
                f.bytes_in = f.bytes_in.saturating_add(bytes);
                if f.key.proto == Proto::Udp {
                    f.segs_in = f.segs_in.saturating_add(1);
                }
                true
            }
            None => false,
        }
    }

    /// Counts `bytes` sent to the remote end (for UDP also one datagram).
    /// Returns false if the flow is not open.
    pub fn account_out(&mut self, id: FlowId, bytes: u64, now: u64) -> bool {
        match self.touch(id, now) {
            Some(f) => {
                f.bytes_out = f.bytes_out.saturating_add(bytes);
                if f.key.proto == Proto::Udp {
                    f.segs_out = f.segs_out.saturating_add(1);
                }
                true
            }
            None => false,
        }
    }

    /// Stores absolute segment counters (from `TCP_INFO`). Does not move
    /// last-seen: counters may be read long after the segments passed.
    /// Returns false if the flow is not open.
    pub fn set_segments(&mut self, id: FlowId, segs_in: u64, segs_out: u64) -> bool {
        match self.flows.get_mut(&id) {
            Some(f) => {
                if f.segs_in != segs_in || f.segs_out != segs_out {
                    f.segs_in = segs_in;
                    f.segs_out = segs_out;
                    f.dirty = true;
                }
                true
            }
            None => false,
        }
    }

    /// ORs TCP header flags into the flow's flag set (see [`tcp_flags`]).
    pub fn add_tcp_flags(&mut self, id: FlowId, flags: u8) -> bool {
        match self.flows.get_mut(&id) {
            Some(f) => {
                if f.tcp_flags | flags != f.tcp_flags {
                    f.tcp_flags |= flags;
                    f.dirty = true;
                }
                true
            }
            None => false,
        }
    }

    /// Sets the lifecycle state. Returns false if the flow is not open.
    pub fn set_state(&mut self, id: FlowId, state: FlowState, now: u64) -> bool {
        match self.touch(id, now) {
            Some(f) => {
                f.state = state;
                true
            }
            None => false,
        }
    }

    fn snap(id: FlowId, f: &Flow, kind: RecordKind, reason: Option<CloseReason>) -> FlowSnapshot {
        FlowSnapshot {
            id,
            key: f.key,
            kind,
            bytes_in: f.bytes_in,
            bytes_out: f.bytes_out,
            segs_in: f.segs_in,
            segs_out: f.segs_out,
            first_ns: f.first_ns,
            last_ns: f.last_ns,
            state: if kind == RecordKind::Final {
                FlowState::Closed
            } else {
                f.state
            },
            close_reason: reason,
            tcp_flags: f.tcp_flags,
        }
    }

    /// An interim view of an open flow (does not count as a record).
    pub fn snapshot(&self, id: FlowId) -> Option<FlowSnapshot> {
        self.flows
            .get(&id)
            .map(|f| Self::snap(id, f, RecordKind::Interim, None))
    }

    /// Appends an interim view of every open flow to `out` (for listing; O(n)).
    pub fn snapshot_all(&self, out: &mut Vec<FlowSnapshot>) {
        out.extend(
            self.flows
                .iter()
                .map(|(&id, f)| Self::snap(id, f, RecordKind::Interim, None)),
        );
    }

    /// Closes a flow and returns its final record, or `None` if it is not open.
    /// `now` is the close time; it becomes last-seen.
    pub fn close(&mut self, id: FlowId, reason: CloseReason, now: u64) -> Option<FlowSnapshot> {
        let now = self.tick(now);
        let mut f = self.flows.remove(&id)?;
        f.last_ns = now;
        self.timers.remove(&(f.report_due, id, Timer::Active));
        if f.key.proto == Proto::Udp {
            self.timers.remove(&(f.idle_due, id, Timer::Idle));
            self.udp_index.remove(&(f.key.local, f.key.remote));
        }
        Some(Self::snap(id, &f, RecordKind::Final, Some(reason)))
    }

    /// Closes every open flow with `reason` (instance shutdown), appending the
    /// final records to `out`.
    pub fn close_all(&mut self, reason: CloseReason, now: u64, out: &mut Vec<FlowSnapshot>) {
        let ids: Vec<FlowId> = self.flows.keys().copied().collect();
        for id in ids {
            out.extend(self.close(id, reason, now));
        }
    }

    /// The earliest time at which [`FlowTable::due_timeouts`] has work, if any:
    /// the executor's next timer.
    pub fn next_deadline(&self) -> Option<u64> {
        self.timers.first().map(|&(t, _, _)| t)
    }

    /// Fires every timer due at `now`: appends an interim record for each
    /// active flow whose active timeout passed (and schedules the next one at
    /// `now + active_timeout`), and a final record with
    /// [`CloseReason::Timeout`] for each UDP flow idle for the idle timeout.
    /// Returns the number of records appended.
    pub fn due_timeouts(&mut self, now: u64, out: &mut Vec<FlowSnapshot>) -> usize {
        let now = self.tick(now);
        let start = out.len();
        while let Some(&(due, id, timer)) = self.timers.first() {
            if due > now {
                break;
            }
            self.timers.pop_first();
            let Some(f) = self.flows.get_mut(&id) else {
                debug_assert!(false, "timer for a closed flow");
                continue;
            };
            match timer {
                Timer::Active => {
                    if f.dirty {
                        f.dirty = false;
                        out.push(Self::snap(id, f, RecordKind::Interim, None));
                    }
                    // Re-armed after the loop, so a deadline that saturates
                    // at `now` cannot fire twice in one call.
                    f.report_due = now.saturating_add(self.cfg.active_timeout_ns);
                    self.rearm.push((f.report_due, id));
                }
                Timer::Idle => {
                    let idle_end = f.last_ns.saturating_add(self.cfg.udp_idle_timeout_ns);
                    if idle_end > now {
                        f.idle_due = idle_end;
                        self.timers.insert((idle_end, id, Timer::Idle));
                    } else {
                        // Last seen stays the last activity, not the expiry time.
                        let mut f = self.flows.remove(&id).expect("present: just looked up");
                        self.timers.remove(&(f.report_due, id, Timer::Active));
                        self.udp_index.remove(&(f.key.local, f.key.remote));
                        f.dirty = false;
                        out.push(Self::snap(
                            id,
                            &f,
                            RecordKind::Final,
                            Some(CloseReason::Timeout),
                        ));
                    }
                }
            }
        }
        for (due, id) in self.rearm.drain(..) {
            // Skip flows that an idle timeout closed later in the same call.
            if self.flows.get(&id).is_some_and(|f| f.report_due == due) {
                self.timers.insert((due, id, Timer::Active));
            }
        }
        out.len() - start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::prelude::rust_2024::*;

    const S: u64 = 1_000_000_000;

    fn tcp_key(port: u16) -> FlowKey {
        FlowKey {
            proto: Proto::Tcp,
            local: "10.0.0.1:80".parse().unwrap(),
            remote: SocketAddr::new("192.0.2.7".parse().unwrap(), port),
        }
    }

    fn udp_key(port: u16) -> FlowKey {
        FlowKey {
            proto: Proto::Udp,
            ..tcp_key(port)
        }
    }

    #[test]
    fn ids_monotonic_and_accounting() {
        let mut t = FlowTable::new(FlowConfig::default());
        let a = t.open(tcp_key(1000), FlowState::Established, 5).unwrap();
        let b = t.open(tcp_key(1000), FlowState::Established, 6).unwrap();
        assert_eq!((a, b), (1, 2));
        assert!(t.account_in(a, 100, 10));
        assert!(t.account_in(a, 50, 20));
        assert!(t.account_out(a, 7, 30));
        assert!(t.set_segments(a, 4, 3));
        assert!(t.add_tcp_flags(a, tcp_flags::SYN | tcp_flags::ACK));
        let s = t.close(a, CloseReason::Reset, 40).unwrap();
        assert_eq!(
            (s.bytes_in, s.bytes_out, s.segs_in, s.segs_out),
            (150, 7, 4, 3)
        );
        assert_eq!((s.first_ns, s.last_ns), (5, 40));
        assert_eq!(s.kind, RecordKind::Final);
        assert_eq!(s.state, FlowState::Closed);
        assert_eq!(s.close_reason, Some(CloseReason::Reset));
        assert_eq!(s.tcp_flags, 0x12);
        assert!(t.close(a, CloseReason::Normal, 50).is_none());
        assert!(!t.account_in(a, 1, 60));
        assert_eq!(t.len(), 1);
        // the remaining flow's only timer is its active timeout
        assert_eq!(t.next_deadline(), Some(6 + 10 * S));
    }

    #[test]
    fn clock_going_backwards_is_clamped() {
        let mut t = FlowTable::new(FlowConfig::default());
        let a = t.open(tcp_key(1), FlowState::Established, 100).unwrap();
        t.account_in(a, 1, 50);
        let s = t.close(a, CloseReason::Normal, 10).unwrap();
        assert_eq!((s.first_ns, s.last_ns), (100, 100));
    }

    #[test]
    fn active_timeout_emits_cumulative_interim_records() {
        let mut t = FlowTable::new(FlowConfig::default());
        let a = t.open(tcp_key(1), FlowState::Established, 0).unwrap();
        let mut out = Vec::new();
        t.account_in(a, 1000, S);
        assert_eq!(t.due_timeouts(10 * S - 1, &mut out), 0);
        assert_eq!(t.due_timeouts(10 * S, &mut out), 1);
        assert_eq!(out[0].kind, RecordKind::Interim);
        assert_eq!(out[0].bytes_in, 1000);
        assert_eq!(out[0].close_reason, None);
        t.account_in(a, 500, 15 * S);
        assert_eq!(t.due_timeouts(20 * S, &mut out), 1);
        assert_eq!(out[1].bytes_in, 1500, "cumulative, not delta");
        // no activity in (20 s, 30 s]: no record, but the timer stays armed
        assert_eq!(t.due_timeouts(30 * S, &mut out), 0);
        t.account_out(a, 1, 35 * S);
        assert_eq!(t.due_timeouts(40 * S, &mut out), 1);
        assert_eq!(out[2].bytes_out, 1);
        assert_eq!(
            t.close(a, CloseReason::Normal, 41 * S).unwrap().bytes_in,
            1500
        );
        assert_eq!(t.next_deadline(), None, "closing removes the timer");
    }

    #[test]
    fn late_tick_reschedules_from_now() {
        let cfg = FlowConfig {
            active_timeout_ns: 10,
            ..FlowConfig::default()
        };
        let mut t = FlowTable::new(cfg);
        let a = t.open(tcp_key(1), FlowState::Established, 0).unwrap();
        let mut out = Vec::new();
        t.account_in(a, 1, 1);
        assert_eq!(
            t.due_timeouts(25, &mut out),
            1,
            "one record even if two periods passed"
        );
        assert_eq!(t.next_deadline(), Some(35));
    }

    #[test]
    fn udp_get_or_open_and_idle_timeout() {
        let mut t = FlowTable::new(FlowConfig::default());
        let a = t.open(udp_key(53), FlowState::Established, 0).unwrap();
        let b = t.open(udp_key(53), FlowState::Established, S).unwrap();
        let c = t.open(udp_key(54), FlowState::Established, S).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(t.udp_lookup(udp_key(53).local, udp_key(53).remote), Some(a));
        t.account_in(a, 100, 2 * S);
        t.account_out(a, 60, 20 * S);
        t.account_out(a, 40, 20 * S);
        let mut out = Vec::new();
        // c idles from 1 s: closes at 31 s; a is active until 20 s: closes at 50 s.
        t.due_timeouts(31 * S, &mut out);
        let finals: Vec<_> = out.iter().filter(|s| s.kind == RecordKind::Final).collect();
        assert_eq!(finals.len(), 1);
        assert_eq!(finals[0].id, c);
        assert_eq!(finals[0].close_reason, Some(CloseReason::Timeout));
        assert_eq!(finals[0].last_ns, S);
        out.clear();
        t.due_timeouts(50 * S - 1, &mut out);
        assert!(out.iter().all(|s| s.kind == RecordKind::Interim));
        out.clear();
        t.due_timeouts(50 * S, &mut out);
        assert_eq!(out.len(), 1);
        let s = out[0];
        assert_eq!(
            (s.id, s.kind, s.close_reason),
            (a, RecordKind::Final, Some(CloseReason::Timeout))
        );
        assert_eq!(
            (s.bytes_in, s.bytes_out, s.segs_in, s.segs_out),
            (100, 100, 1, 2)
        );
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
        // the pair can open a new flow afterwards
        assert_eq!(
            t.open(udp_key(53), FlowState::Established, 51 * S).unwrap(),
            3
        );
    }

    #[test]
    fn table_full() {
        let cfg = FlowConfig {
            max_flows: 2,
            ..FlowConfig::default()
        };
        let mut t = FlowTable::new(cfg);
        t.open(tcp_key(1), FlowState::Established, 0).unwrap();
        let u = t.open(udp_key(2), FlowState::Established, 0).unwrap();
        assert_eq!(
            t.open(tcp_key(3), FlowState::Established, 0),
            Err(FlowError::TableFull(2))
        );
        // get-or-open of an existing UDP flow still works when full
        assert_eq!(t.open(udp_key(2), FlowState::Established, 0), Ok(u));
        t.close(u, CloseReason::Normal, 1);
        assert!(t.open(tcp_key(3), FlowState::Established, 1).is_ok());
    }

    #[test]
    fn close_all_and_memory() {
        let mut t = FlowTable::new(FlowConfig::default());
        for p in 0..100 {
            t.open(tcp_key(p), FlowState::Established, 0).unwrap();
            t.open(udp_key(p), FlowState::Established, 0).unwrap();
        }
        let mut out = Vec::new();
        t.close_all(CloseReason::Mitigated, 5, &mut out);
        assert_eq!(out.len(), 200);
        assert!(t.is_empty() && t.next_deadline().is_none());
        assert!(
            out.iter()
                .all(|s| s.close_reason == Some(CloseReason::Mitigated))
        );
    }
}
