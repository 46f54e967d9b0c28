//! The instance table and failover: instances join (after their
//! handshake, which the host runs), take sockets by [`Placement`], report
//! heartbeats, drain, and die. A death undoes everything that depended on
//! the instance, in this order:
//!
//! 1. its requests in flight are failed (shims answered `ECONNRESET`,
//!    mitigations noted) — [`pending`](crate::pending);
//! 2. its listener replicas are forgotten; each listener lives on on its
//!    other replicas — [`listener`](crate::listener);
//! 3. its connections and placed sockets are reset (`ECONNRESET` to the
//!    app; blocked connects answered), closing ones forgotten;
//! 4. listeners that waited for its `Closed` stop waiting.
//!
//! Instance ids are never reused; a dead instance stays in the table so a
//! late frame from it is recognised and ignored.

use alloc::vec::Vec;

use ins_protocol::control::Op;
use ins_protocol::msg::{MsgOf, OwnedMitigation, Stats};

use crate::pending::Pending;
use crate::{
    Action, Driver, Handle, InstId, Note, Placement, ShimReply, SockState, Violation, errno,
};

/// Instance liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstState {
    /// Takes new sockets and listeners.
    Live,
    /// Keeps its sockets, gets no new ones.
    Draining,
    /// Gone.
    Dead,
}

/// What the core knows about one instance.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Liveness.
    pub state: InstState,
    /// Per-socket window the instance granted (its `Hello.window`).
    pub window: u32,
    /// Sockets placed on it (connections and listener replicas).
    pub sockets: u32,
    /// Last heartbeat's stats.
    pub stats: Option<Stats>,
    /// When it last spoke (ns, the host's monotonic clock).
    pub last_seen: u64,
    /// Connections it announced.
    pub accepted: u64,
    /// Why it died.
    pub death: Option<Violation>,
    /// Next request id to try ([`pending`](crate::pending)).
    pub(crate) next_req: u32,
}

impl Driver {
    /// An instance finished its handshake. `window` is its `Hello.window`.
    /// Every listener is replayed onto it.
    pub fn instance_joined(&mut self, now: u64, window: u32, out: &mut Vec<Action>) -> InstId {
        let id = self.next_inst;
        self.next_inst = self.next_inst.wrapping_add(1).max(1);
        self.instances.insert(
            id,
            Instance {
                state: InstState::Live,
                window,
                sockets: 0,
                stats: None,
                last_seen: now,
                accepted: 0,
                death: None,
                next_req: 1,
            },
        );
        let listeners = self.listeners.clone();
        for l in listeners {
            self.replicate(l, id, out);
        }
        id
    }

    /// Sends a mitigation command to a live or draining instance; its
    /// reply becomes [`Note::MitigateDone`] with `tag`. False if the
    /// instance is dead or unknown.
    pub fn mitigate(
        &mut self,
        inst: InstId,
        cmd: OwnedMitigation,
        tag: u64,
        out: &mut Vec<Action>,
    ) -> bool {
        if !self.live(inst) {
            return false;
        }
        self.request(inst, Pending::Mitigate { tag }, out, |req| {
            MsgOf::Mitigate { req, cmd }
        });
        true
    }

    /// Stops placing new sockets on an instance (it keeps its own).
    pub fn set_draining(&mut self, inst: InstId) {
        if let Some(i) = self.instances.get_mut(&inst)
            && i.state == InstState::Live
        {
            i.state = InstState::Draining;
        }
    }

    /// Declares an instance dead (channel failure seen by the host, or a
    /// violation found here): its pending requests are answered, its
    /// listener replicas forgotten, its connections reset.
    pub fn instance_failed(&mut self, inst: InstId, why: Violation, out: &mut Vec<Action>) {
        let Some(i) = self.instances.get_mut(&inst) else {
            return;
        };
        if i.state == InstState::Dead {
            return;
        }
        i.state = InstState::Dead;
        i.death = Some(why);
        i.sockets = 0;
        out.push(Action::InstanceDead { inst });
        self.fail_requests_of(inst, out);
        self.forget_replicas_on(inst);
        let reset = self.reset_sockets_on(inst, out);
        // Listeners that were closing and waited for this instance.
        let closing: Vec<Handle> = self
            .socks
            .iter()
            .filter(|(_, s)| s.state == SockState::Closing && s.close_waits.contains(&inst))
            .map(|(&h, _)| h)
            .collect();
        for h in closing {
            self.closed_on(h, inst, out);
        }
        self.notes.push(Note::InstanceDied { inst, why, reset });
    }

    /// Connections and other sockets placed on a dead instance: reset
    /// (closing ones forgotten). Returns how many were reset.
    fn reset_sockets_on(&mut self, inst: InstId, out: &mut Vec<Action>) -> u32 {
        let mut reset = 0u32;
        let handles: Vec<Handle> = self
            .socks
            .iter()
            .filter(|(_, s)| s.inst == Some(inst) && s.listener.is_none())
            .map(|(&h, _)| h)
            .collect();
        for h in handles {
            let Some(s) = self.socks.get_mut(&h) else {
                continue;
            };
            if let Some(w) = s.wire_if_accepted() {
                self.by_wire.remove(&(inst, w));
            }
            s.inst = None;
            if s.state == SockState::Closing {
                // The app is gone already; nothing left to tell.
                self.forget(h, out);
                continue;
            }
            reset += 1;
            let s = self.socks.get_mut(&h).expect("present");
            s.err = errno::ECONNRESET;
            s.state = SockState::Dead;
            s.send_credit = 0;
            let nb = s.nonblocking_connect;
            s.nonblocking_connect = false;
            if let Some((conn, seq)) = s.connect_shim.take() {
                out.push(Action::Reply(ShimReply::new(
                    conn,
                    Op::Connect,
                    seq,
                    errno::ECONNRESET,
                )));
            }
            if nb {
                out.push(Action::ConnectDone {
                    sock: h,
                    errno: errno::ECONNRESET,
                });
            }
            out.push(Action::PeerReset {
                sock: h,
                errno: errno::ECONNRESET,
            });
        }
        reset
    }

    /// Time passes: instances silent for longer than the heartbeat timeout
    /// are declared dead.
    pub fn tick(&mut self, now: u64, out: &mut Vec<Action>) {
        let late: Vec<InstId> = self
            .instances
            .iter()
            .filter(|(_, i)| {
                i.state != InstState::Dead
                    && now.saturating_sub(i.last_seen) > self.cfg.heartbeat_timeout_ns
            })
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            self.instance_failed(id, Violation::HeartbeatTimeout, out);
        }
        self.inband_tick(now, out);
    }

    /// Whether `inst` is known and not dead.
    pub(crate) fn live(&self, inst: InstId) -> bool {
        self.instances
            .get(&inst)
            .is_some_and(|i| i.state != InstState::Dead)
    }

    /// The instance a new socket goes to, by the placement policy.
    pub(crate) fn pick(&mut self) -> Option<InstId> {
        let live = || {
            self.instances
                .iter()
                .filter(|(_, i)| i.state == InstState::Live)
        };
        match self.cfg.placement {
            Placement::LeastBusy => live().min_by_key(|(id, i)| (i.sockets, **id)).map(|x| *x.0),
            Placement::RoundRobin => {
                let after = live().map(|x| *x.0).find(|&id| id > self.rr);
                let pick = after.or_else(|| live().map(|x| *x.0).next());
                if let Some(p) = pick {
                    self.rr = p;
                }
                pick
            }
        }
    }
}
