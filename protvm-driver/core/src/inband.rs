//! Socket options set *in band* on connected streams: a shim's record
//! meets its marker in the socket's byte stream, and the option reaches
//! the instance exactly between the bytes where the app set it.
//!
//! ```text
//!  shim: record Control{SockOpt, seq, level, name, inode} ─▶ inband_record ─┐
//!        marker byte (seq & 0x7f) + SCM_RIGHTS in the pair ─▶ host relay     │ matched by
//!              the host pushes the bytes before it, then asks inband_marker ─┤ (socket, pid, byte)
//!  matched:    Marked::Apply(SockOpt frame): pushed right after those bytes  │
//!  marker first: Marked::Stall: the socket's relay stops (send_credit None) ◀┘
//!              until its record comes (Send SockOpt + Resume), or
//!              `Config::inband_stall_ns` passes: the socket is reset
//! ```
//!
//! Boolean options (`TCP_CORK`, `TCP_NODELAY`, `SO_KEEPALIVE`) need no
//! record: their marker byte names the option and its value
//! ([`marker`]), so the hot path costs the shim one `sendmsg` and the
//! host nothing but the read it does anyway.
//!
//! Shims are untrusted. A record names its socket by inode and proves
//! nothing: it acts only when a marker written by the *same process* (the
//! host reads the writer's pid from the pair, and the shim connection's pid
//! from its credentials) appears in that socket's stream. Records that never
//! meet a marker cost a bounded amount (`Config::max_inband` per socket,
//! the oldest dropped) and go with the socket. A marker no record matches
//! in time resets only its own socket ([`Note::InbandReset`]).
//!
//! Invariants: a socket with a stalled marker gets no more of its app
//! bytes relayed until the marker is settled, so the option stays between
//! the same bytes; a `SockOpt` frame is never a request (no `Reply`).

use alloc::vec::Vec;

use ins_protocol::control::marker::{self, Marker};
use ins_protocol::msg::{MsgOf, OptValue, OwnedMsg, SockType};

use crate::pending::Pending;
use crate::{Action, Driver, Handle, InstId, Note, SockState, errno, opt};

/// A record waiting for its marker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record {
    pid: u32,
    seq: u32,
    level: i32,
    name: i32,
    value: OptValue,
}

/// A marker read before its record: the socket's relay waits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stalled {
    pid: u32,
    tag: u8,
    since: u64,
}

/// What the host does with a marker it read.
// `Apply` holds its frame inline (no allocation on the hot path); the
// value is returned, never stored.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marked {
    /// Push this frame to `inst` right after the bytes before the marker,
    /// then go on relaying.
    Apply {
        /// The socket's instance.
        inst: InstId,
        /// The `SockOpt` frame.
        frame: OwnedMsg,
    },
    /// The record has not come yet: stop relaying this socket (it resumes
    /// with an [`Action::Resume`]).
    Stall,
    /// Nothing to apply (the socket is not connected any more).
    Ignore,
}

/// Counters of the in-band path, for status and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InbandStats {
    /// Records received.
    pub records: u64,
    /// Options applied (frames sent).
    pub applied: u64,
    /// Markers read before their record.
    pub stalls: u64,
    /// Records dropped: unknown socket, not a connected stream, beyond the
    /// per-socket bound, or cancelled by a synchronous `SetOpt`.
    pub dropped: u64,
    /// Sockets reset for a marker no record matched in time.
    pub resets: u64,
}

impl Driver {
    /// A record (`Op::SockOpt`) from a shim in process `pid`: `args` are
    /// `[level, name, inode low, inode high]`, `seq` the record's number.
    pub fn inband_record(
        &mut self,
        pid: u32,
        seq: u32,
        args: [i32; 4],
        value: &[u8],
        out: &mut Vec<Action>,
    ) {
        self.inband.records += 1;
        let inode = u64::from(args[2] as u32) | (u64::from(args[3] as u32) << 32);
        let (level, name) = (args[0], args[1]);
        let cap = self.cfg.max_inband;
        let Some(h) = self.by_inode.get(&inode).copied() else {
            self.inband.dropped += 1;
            return;
        };
        let Some(s) = self.socks.get_mut(&h) else {
            self.inband.dropped += 1;
            return;
        };
        if s.ty != SockType::Stream || value.len() > ins_protocol::msg::MAX_OPT_LEN {
            self.inband.dropped += 1;
            return;
        }
        let rec = Record {
            pid,
            seq,
            level,
            name,
            value: OptValue::new(value),
        };
        if let Some(st) = s.stalled
            && st.pid == pid
            && st.tag == marker::record(seq)
        {
            s.stalled = None;
            self.stalled.retain(|&x| x != h);
            if let Some(m) = self.apply_record(h, rec) {
                out.push(m);
            }
            out.push(Action::Resume { sock: h });
            return;
        }
        // (`while`: the cap may have been lowered since.)
        while !s.inband.is_empty() && s.inband.len() >= cap {
            s.inband.remove(0);
            self.inband.dropped += 1;
        }
        s.inband.push(rec);
    }

    /// The host read marker byte `byte` ([`marker`]), written by process
    /// `pid`, from `sock`'s app side, after relaying every byte before it.
    /// A byte that means nothing resets the socket (actions in `out`).
    pub fn inband_marker(
        &mut self,
        sock: Handle,
        pid: u32,
        byte: u8,
        now: u64,
        out: &mut Vec<Action>,
    ) -> Marked {
        let Some(s) = self.socks.get_mut(&sock) else {
            return Marked::Ignore;
        };
        if s.state != SockState::Connected {
            return Marked::Ignore;
        }
        let tag = match marker::decode(byte) {
            Marker::Record(tag) => tag,
            Marker::Bool { level, name, on } => {
                let rec = Record {
                    pid,
                    seq: 0,
                    level,
                    name,
                    value: OptValue::int(i32::from(on)),
                };
                return match self.apply_record(sock, rec) {
                    Some(Action::Send { inst, frame }) => Marked::Apply { inst, frame },
                    _ => Marked::Ignore,
                };
            }
            Marker::Unknown => {
                self.inband_reset(sock, out);
                return Marked::Ignore;
            }
        };
        let found = s
            .inband
            .iter()
            .position(|r| r.pid == pid && marker::record(r.seq) == tag);
        match found {
            Some(i) => {
                let rec = s.inband.remove(i);
                match self.apply_record(sock, rec) {
                    Some(Action::Send { inst, frame }) => Marked::Apply { inst, frame },
                    _ => Marked::Ignore,
                }
            }
            None => {
                s.stalled = Some(Stalled {
                    pid,
                    tag,
                    since: now,
                });
                self.inband.stalls += 1;
                self.stalled.push(sock);
                Marked::Stall
            }
        }
    }

    /// A synchronous `SetOpt` replaces record `seq` of process `pid`, whose
    /// marker the shim could not write.
    pub fn inband_cancel(&mut self, sock: Handle, pid: u32, seq: u32) {
        if let Some(s) = self.socks.get_mut(&sock)
            && let Some(i) = s.inband.iter().position(|r| r.pid == pid && r.seq == seq)
        {
            s.inband.remove(i);
            self.inband.dropped += 1;
        }
    }

    /// The in-band counters.
    pub fn inband_stats(&self) -> InbandStats {
        self.inband
    }

    /// An option that goes in band — a boolean a marker byte can carry
    /// ([`marker::BOOLS`]: `SO_KEEPALIVE`, `TCP_NODELAY`, `TCP_CORK`) or an
    /// `int` in its range ([`marker::INTS`]: `TCP_KEEPIDLE`,
    /// `TCP_KEEPINTVL`, `TCP_KEEPCNT`, `TCP_USER_TIMEOUT`) — set on a
    /// connected stream
    /// by a host whose app bytes reach the instance's ring in the order the
    /// app writes them (the kernel module: a socket file's `write` has
    /// pushed its frames, or queued them behind earlier ones, before it
    /// returns). The option's `SockOpt` frame goes into `out` now, so it
    /// lands between the bytes written before and after, with no request
    /// and no reply, as a marker's does. `false`: not such an option, value
    /// (shorter than an int, or out of range) or socket; the host sends the synchronous
    /// `SetOpt` instead, which also gives the errno.
    pub fn set_option_in_order(
        &mut self,
        sock: Handle,
        level: i32,
        name: i32,
        value: &[u8],
        out: &mut Vec<Action>,
    ) -> bool {
        let Some(v) = value.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
            return false;
        };
        let v = i32::from_ne_bytes(v);
        let value = if marker::boolean(level, name, v != 0).is_some() {
            i32::from(v != 0)
        } else {
            match marker::int_range(level, name) {
                Some((min, max)) if (min..=max).contains(&v) => v,
                _ => return false,
            }
        };
        if self
            .socks
            .get(&sock)
            .is_none_or(|s| s.ty != SockType::Stream)
        {
            return false;
        }
        let rec = Record {
            pid: 0,
            seq: 0,
            level,
            name,
            value: OptValue::int(value),
        };
        match self.apply_record(sock, rec) {
            Some(a) => {
                out.push(a);
                true
            }
            None => false,
        }
    }

    /// The `SockOpt` frame of `rec` for `sock`'s instance.
    fn apply_record(&mut self, sock: Handle, rec: Record) -> Option<Action> {
        let s = self.socks.get(&sock)?;
        if s.state != SockState::Connected {
            return None;
        }
        let inst = s.inst?;
        self.inband.applied += 1;
        Some(Action::Send {
            inst,
            frame: MsgOf::SockOpt {
                sock: s.wire,
                level: rec.level,
                name: rec.name,
                value: rec.value,
            },
        })
    }

    /// Markers that waited too long for their record: their sockets are
    /// reset (part of [`Driver::tick`]).
    pub(crate) fn inband_tick(&mut self, now: u64, out: &mut Vec<Action>) {
        let limit = self.cfg.inband_stall_ns;
        let late: Vec<Handle> = self
            .stalled
            .iter()
            .copied()
            .filter(|h| {
                self.socks
                    .get(h)
                    .and_then(|s| s.stalled)
                    .is_some_and(|st| now.saturating_sub(st.since) > limit)
            })
            .collect();
        for h in late {
            self.inband_reset(h, out);
        }
    }

    /// Resets a connection whose app wrote a marker no record matched: the
    /// app reads EOF then `ECONNRESET`; the instance aborts its side
    /// (`SO_LINGER {1, 0}`, then both directions shut: an RST at close).
    fn inband_reset(&mut self, h: Handle, out: &mut Vec<Action>) {
        self.stalled.retain(|&x| x != h);
        let Some(s) = self.socks.get_mut(&h) else {
            return;
        };
        s.stalled = None;
        s.inband.clear();
        if s.state != SockState::Connected {
            return;
        }
        s.err = errno::ECONNRESET;
        s.state = SockState::Dead;
        s.send_credit = 0;
        let (inst, wire) = (s.inst, s.wire);
        self.inband.resets += 1;
        self.notes.push(Note::InbandReset { sock: h });
        out.push(Action::PeerReset {
            sock: h,
            errno: errno::ECONNRESET,
        });
        let Some(inst) = inst else { return };
        let mut linger = [0u8; 8];
        linger[..4].copy_from_slice(&1i32.to_ne_bytes());
        out.push(Action::Send {
            inst,
            frame: MsgOf::SockOpt {
                sock: wire,
                level: opt::SOL_SOCKET,
                name: opt::SO_LINGER,
                value: OptValue::new(&linger),
            },
        });
        self.request(inst, Pending::Internal { sock: h }, out, |req| {
            MsgOf::Shutdown {
                sock: h,
                req,
                how: ins_protocol::msg::Shutdown::Both,
            }
        });
    }

    /// `forget`: the socket's records and stall go with it.
    pub(crate) fn inband_forget(&mut self, h: Handle) {
        self.stalled.retain(|&x| x != h);
    }
}
