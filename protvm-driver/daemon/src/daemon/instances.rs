//! Instance channels: the rendezvous and handshake (on a thread each), the
//! join, frames out (with an overflow queue that keeps their order while a
//! ring is full), frames in, and the end of a channel.
//!
//! ```text
//!  instance.sock ─accept─▶ handshake thread ─(Endpoint)─▶ wake eventfd ─▶ join
//!  attach-xen ─▶ attach thread (offer_xen, see [`super::xen`]) ─┘
//!  core Send ─▶ Inst::send ─▶ ring (or outq while full) ─▶ flush_all: doorbell once per turn
//!  doorbell ─▶ instance_bell: outq retried, blocked sockets resumed,
//!              frames popped (copied out), decoded, given to the core,
//!              Data written to the pair (relay::deliver)
//! ```
//!
//! Both kinds of channel are an `Endpoint<Any>` here (local memfd rings or
//! Xen grant pages); only the join differs (a Xen instance is no child of
//! ours, so it never takes a supervisor tag).
//!
//! A ring error, an undecodable frame or a hang-up of the rendezvous socket
//! (for Xen: the link's control socket, hung up when the domain or process
//! is gone) fails the channel: the core declares the instance dead
//! ([`Violation::ChannelFailed`]) and the channel is closed.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Instant;

use driver_core::{InstId, LinkFailed, Violation};
use ins_protocol::hello::{Hello, Role};
use ins_protocol::msg::{HEADER_LEN, MAX_OPT_LEN, Msg, OwnedMsg};
use ins_protocol::ring::RingError;
use ins_transport::any::Any;
use ins_transport::{ChannelConfig, Doorbell, Endpoint, EventFd};
use rustix::event::epoll::EventFlags;
use tracing::{debug, info, warn};

use super::Daemon;
use super::event_loop::{K_INST_BELL, K_INST_CTL, add};

/// Frames popped per instance before other work gets a turn.
const RX_BATCH: usize = 256;

/// One instance's channel.
pub(super) struct Inst {
    pub(super) ep: Endpoint<Any>,
    /// The domain and channel of an instance reached over Xen.
    pub(super) xen: Option<super::xen::XenPeer>,
    /// The id it announced in its hello (the supervisor's tag).
    pub(super) hello_id: u32,
    /// Control frames that did not fit the ring, in order.
    outq: VecDeque<Vec<u8>>,
    /// Sockets whose relay stopped for ring space.
    pub(super) blocked: Vec<driver_core::Handle>,
    /// Frames were pushed since the last doorbell.
    pub(super) dirty: bool,
    /// Largest `Data` payload we may push.
    pub(super) max_payload: usize,
    /// Its pid (from the hello).
    pub(super) pid: u32,
    /// When it joined.
    pub(super) joined: Instant,
}

impl Inst {
    /// Whether control frames wait for ring space (data must wait behind
    /// them).
    pub(super) fn queued(&self) -> bool {
        !self.outq.is_empty()
    }

    /// Control frames waiting for ring space.
    pub(super) fn queued_frames(&self) -> usize {
        self.outq.len()
    }

    /// Encodes `frame` and pushes it after everything before it: into the
    /// ring, or the overflow queue while the ring is full.
    pub(super) fn send(&mut self, inst: InstId, frame: &OwnedMsg) -> Result<(), LinkFailed> {
        let mut buf = [0u8; HEADER_LEN + 80 + MAX_OPT_LEN];
        let n = match frame.encode(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                warn!(inst, error = %e, ?frame, "frame encoding");
                return Ok(());
            }
        };
        self.dirty = true;
        if self.outq.is_empty() {
            match self.ep.tx.try_push(&buf[..n]) {
                Ok(()) => return Ok(()),
                Err(RingError::Full) => {}
                Err(e) => {
                    warn!(inst, error = %e, "ring push");
                    return Err(LinkFailed);
                }
            }
        }
        self.outq.push_back(buf[..n].to_vec());
        let _ = self.ep.tx.flush();
        let _ = self.ep.tx.prepare_wait_space(n);
        Ok(())
    }

    /// Pushes queued frames while the ring has space.
    fn retry_queued(&mut self) -> Result<(), RingError> {
        while let Some(f) = self.outq.front() {
            match self.ep.tx.try_push(f) {
                Ok(()) => {
                    self.outq.pop_front();
                    self.dirty = true;
                }
                Err(RingError::Full) => {
                    let need = f.len();
                    let _ = self.ep.tx.flush();
                    if let Ok(true) = self.ep.tx.prepare_wait_space(need) {
                        continue;
                    }
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Runs the rendezvous and handshake of one instance connection on its
/// own thread; the endpoint comes back through `tx`, announced on `wake`.
pub(super) fn spawn_handshake(
    stream: UnixStream,
    cfg: ChannelConfig,
    window: u32,
    tx: mpsc::Sender<(Endpoint<Any>, u32)>,
    wake: &EventFd,
) -> anyhow::Result<()> {
    let wake_fd = wake.as_fd().try_clone_to_owned()?;
    std::thread::Builder::new()
        .name("ins-handshake".into())
        .spawn(move || {
            let mut hello = Hello::new(Role::Driver);
            hello.window = window;
            let r = ins_transport::offer_channel(stream, &cfg)
                .and_then(|raw| raw.handshake(hello, cfg.handshake_timeout))
                .and_then(Endpoint::<Any>::try_from);
            match r {
                Ok(ep) => {
                    let id = ep.peer.instance_id;
                    if tx.send((ep, id)).is_ok() {
                        let _ = rustix::io::write(&wake_fd, &1u64.to_ne_bytes());
                    }
                }
                Err(e) => warn!(error = %e, "instance handshake failed"),
            }
        })?;
    Ok(())
}

impl Daemon {
    /// A handshake finished: the instance joins the core (which replays
    /// every listener onto it), then the standing mitigations. Returns
    /// its number, unless it could not be registered (then it failed).
    pub(super) fn join(
        &mut self,
        ep: Endpoint<Any>,
        hello_id: u32,
        xen: Option<super::xen::XenPeer>,
    ) -> Option<InstId> {
        let peer_pid = ep.peer.pid;
        let mut window = ep.peer.window;
        if window == 0 {
            warn!(
                hello_id,
                "instance announced a zero window; using the driver's window"
            );
            window = self.core.config().window;
        }
        let now = self.now();
        let inst = self.core.instance_joined(now, window, &mut self.actions);
        let max_payload = ep.tx.config().max_frame as usize - HEADER_LEN;
        // Edge-triggered: every notify is an event of its own, so the
        // eventfd is never read (one syscall less per wake-up; its counter
        // cannot reach its 2^64 - 2 limit).
        let r = add(
            &self.epfd,
            ep.rx_bell.as_fd(),
            K_INST_BELL | u64::from(inst),
            EventFlags::IN | EventFlags::ET,
        )
        .and_then(|()| {
            add(
                &self.epfd,
                ep.control.as_fd(),
                K_INST_CTL | u64::from(inst),
                EventFlags::RDHUP | EventFlags::IN,
            )
        });
        info!(
            inst,
            hello_id,
            pid = ep.peer.pid,
            window,
            max_sockets = ep.peer.max_sockets,
            domid = xen.as_ref().map(|p| p.domid),
            "instance joined"
        );
        let event = match &xen {
            None => serde_json::json!({"tag": hello_id, "pid": peer_pid}),
            Some(p) => serde_json::json!({"tag": hello_id, "pid": peer_pid,
                                          "domid": p.domid, "channel": p.channel}),
        };
        let local = xen.is_none();
        self.insts.insert(
            inst,
            Inst {
                ep,
                xen,
                hello_id,
                outq: VecDeque::new(),
                blocked: Vec::new(),
                dirty: false,
                max_payload,
                pid: peer_pid,
                joined: Instant::now(),
            },
        );
        if local
            && let Some(k) = self.sup.by_tag(hello_id)
            && k.inst.is_none()
        {
            k.inst = Some(inst);
        }
        if let Err(e) = r {
            warn!(inst, error = %e, "epoll registration");
            self.fail_instance(inst, Violation::ChannelFailed);
            return None;
        }
        self.apply(None, None);
        self.ctl.instance_event("joined", Some(inst), event);
        self.ctl_replay(inst);
        self.instance_bell(inst);
        Some(inst)
    }

    /// The channel failed (or the instance was stopped): the core undoes
    /// everything that depended on it.
    pub(super) fn fail_instance(&mut self, inst: InstId, why: Violation) {
        self.core.instance_failed(inst, why, &mut self.actions);
        self.apply(None, None);
    }

    /// Publishes what was pushed this turn and rings each doorbell that
    /// needs it.
    pub(super) fn flush_all(&mut self) {
        let mut failed = Vec::new();
        for (&id, x) in self.insts.iter_mut() {
            if !x.dirty {
                continue;
            }
            x.dirty = false;
            match x.ep.tx.flush() {
                Ok(true) => {
                    if let Err(e) = x.ep.tx_bell.notify() {
                        warn!(inst = id, error = %e, "doorbell");
                    }
                }
                Ok(false) => {}
                Err(_) => failed.push(id),
            }
        }
        for id in failed {
            self.fail_instance(id, Violation::ChannelFailed);
        }
    }

    /// The instance rang: ring space may be back (queued frames, blocked
    /// sockets), and frames may wait to be read.
    pub(super) fn instance_bell(&mut self, inst: InstId) {
        let Some(x) = self.insts.get_mut(&inst) else {
            return;
        };
        // A Xen port stays masked until acknowledged (before the ring is
        // looked at, so that no wake-up is lost); an eventfd needs nothing.
        if let Err(e) = x.ep.rx_bell.ack() {
            warn!(inst, error = %e, "doorbell");
            self.fail_instance(inst, Violation::ChannelFailed);
            return;
        }
        if x.retry_queued().is_err() {
            self.fail_instance(inst, Violation::ChannelFailed);
            return;
        }
        if x.outq.is_empty() {
            self.resume.append(&mut x.blocked);
        }
        if let Err(v) = self.frames_in(inst) {
            self.fail_instance(inst, v);
        }
    }

    /// Pops, decodes and hands to the core every frame the instance
    /// published (in batches), until its ring is empty.
    fn frames_in(&mut self, inst: InstId) -> Result<(), Violation> {
        let mut buf = std::mem::take(&mut self.frame_buf);
        let mut failed = Ok(());
        'outer: loop {
            let mut count = 0;
            while count < RX_BATCH {
                let Some(x) = self.insts.get_mut(&inst) else {
                    break 'outer;
                };
                let n = match x.ep.rx.pop(&mut buf) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(e) => {
                        warn!(inst, error = %e, "ring from instance");
                        failed = Err(Violation::ChannelFailed);
                        break 'outer;
                    }
                };
                count += 1;
                let m = match Msg::decode(&buf[..n]) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(inst, error = %e, "undecodable frame from instance");
                        failed = Err(Violation::ChannelFailed);
                        break 'outer;
                    }
                };
                let now = self.now();
                match self.core.instance_frame(inst, &m, now, &mut self.actions) {
                    Ok(Some(h)) => self.deliver(h, &m),
                    Ok(None) => {}
                    Err(v) => {
                        warn!(inst, violation = %v, "instance broke the protocol");
                    }
                }
                if let Msg::Flow(ref r) = m {
                    debug!(inst, ?r, "flow record");
                    self.ctl.flow(inst, *r);
                }
                if let Msg::Telemetry(ref t) = m {
                    self.ctl.telemetry(inst, t);
                }
                self.apply(None, None);
            }
            let Some(x) = self.insts.get_mut(&inst) else {
                break;
            };
            match x.ep.rx.release() {
                Ok(true) => {
                    let _ = x.ep.tx_bell.notify();
                }
                Ok(false) => {}
                Err(_) => {
                    failed = Err(Violation::ChannelFailed);
                    break;
                }
            }
            if count == RX_BATCH {
                continue;
            }
            match x.ep.rx.prepare_wait() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(_) => {
                    failed = Err(Violation::ChannelFailed);
                    break;
                }
            }
        }
        self.frame_buf = buf;
        failed
    }
}
