//! The event loop: one epoll set, one thread.
//!
//! Epoll data words: the top byte is the kind ([`K_INST_BELL`] …), the rest
//! an instance number, shim connection number, controller number or socket
//! handle. Socket ends are edge-triggered: the relay reads until `EAGAIN`
//! (or until the instance's credit or the ring's space runs out; a `Credit`
//! or a doorbell then resumes it).
//!
//! One turn: wait (at most 100 ms) → handle every event → relay the
//! sockets that were resumed → every 100 ms the core's tick and the
//! balancer → ring a doorbell for every instance whose ring got frames →
//! notes out → controller output out.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use driver_core::{Handle, InstId, Violation};
use ins_transport::any::Any;
use ins_transport::{ChannelConfig, Doorbell, Endpoint, EventFd};
use rustix::event::epoll::{self, EventData, EventFlags};
use tracing::{info, warn};

use super::Daemon;
use super::instances::spawn_handshake;
use crate::shimio;

/// `DIR/instance.sock`.
pub(super) const K_INST_LISTENER: u64 = 1 << 56;
/// `DIR/shim.sock`.
pub(super) const K_SHIM_LISTENER: u64 = 2 << 56;
/// The signalfd (SIGTERM, SIGINT).
pub(super) const K_SIGNAL: u64 = 3 << 56;
/// The wake-up eventfd (a handshake finished, or an attach thread reports).
pub(super) const K_WAKE: u64 = 4 << 56;
/// An instance's doorbell; low bits: the instance.
pub(super) const K_INST_BELL: u64 = 5 << 56;
/// An instance's rendezvous socket (hang-up = gone); low bits: the instance.
pub(super) const K_INST_CTL: u64 = 6 << 56;
/// A shim connection; low bits: its number.
pub(super) const K_SHIM: u64 = 7 << 56;
/// A socket pair's driver end; low bits: the handle.
pub(super) const K_SOCK: u64 = 8 << 56;
/// `DIR/ctl.sock`.
pub(super) const K_CTL_LISTENER: u64 = 9 << 56;
/// A controller connection; low bits: its number.
pub(super) const K_CTL: u64 = 10 << 56;
/// `DIR/monitor.sock`.
pub(super) const K_MON_LISTENER: u64 = 11 << 56;
/// The metrics listener (`--metrics`).
pub(super) const K_METRICS_LISTENER: u64 = 12 << 56;
/// A metrics scraper; low bits: its number.
pub(super) const K_METRICS: u64 = 13 << 56;
const KIND: u64 = 0xff << 56;

/// How often the core's tick and the balancer run.
const TICK: Duration = Duration::from_millis(100);

/// Adds `fd` to the epoll set with token `data`.
pub(super) fn add(
    ep: &OwnedFd,
    fd: BorrowedFd<'_>,
    data: u64,
    flags: EventFlags,
) -> io::Result<()> {
    epoll::add(ep, fd, EventData::new_u64(data), flags)?;
    Ok(())
}

/// The fixed event sources, made at startup.
pub(super) struct Sources {
    /// SIGTERM / SIGINT.
    pub(super) sig: OwnedFd,
    /// Rung by handshake threads.
    pub(super) wake: EventFd,
    /// `DIR/instance.sock`.
    pub(super) inst_listener: UnixListener,
    /// `DIR/shim.sock`.
    pub(super) shim_listener: OwnedFd,
    /// Ring geometry and handshake timeout for new channels.
    pub(super) channel: ChannelConfig,
    /// The driver's per-socket window, announced in its hello.
    pub(super) window: u32,
}

impl Daemon {
    /// Puts the fixed sources into the epoll set.
    pub(super) fn register_sources(&self, src: &Sources) -> io::Result<()> {
        add(
            &self.epfd,
            src.inst_listener.as_fd(),
            K_INST_LISTENER,
            EventFlags::IN,
        )?;
        add(
            &self.epfd,
            src.shim_listener.as_fd(),
            K_SHIM_LISTENER,
            EventFlags::IN,
        )?;
        add(&self.epfd, src.sig.as_fd(), K_SIGNAL, EventFlags::IN)?;
        add(
            &self.epfd,
            self.ctl.listener.as_fd(),
            K_CTL_LISTENER,
            EventFlags::IN,
        )?;
        add(&self.epfd, src.wake.as_fd(), K_WAKE, EventFlags::IN)?;
        if let Some((l, _, _)) = &self.ctl.monitor {
            add(&self.epfd, l.as_fd(), K_MON_LISTENER, EventFlags::IN)?;
        }
        if let Some(m) = &self.metrics {
            add(
                &self.epfd,
                m.listener().as_fd(),
                K_METRICS_LISTENER,
                EventFlags::IN,
            )?;
        }
        Ok(())
    }

    /// Runs the loop until a signal or a `shutdown` request.
    pub(super) fn serve(&mut self, src: &Sources) -> anyhow::Result<()> {
        let (tx, rx) = mpsc::channel::<(Endpoint<Any>, u32)>();
        let mut events: Vec<epoll::Event> = Vec::with_capacity(1024);
        let mut last_tick = Instant::now();
        loop {
            let ts = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 100_000_000,
            };
            events.clear();
            match epoll::wait(
                &self.epfd,
                rustix::buffer::spare_capacity(&mut events),
                Some(&ts),
            ) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e).context("epoll_wait"),
            }
            for ev in &events {
                let data = ev.data.u64();
                let flags = ev.flags;
                let id = data & !KIND;
                match data & KIND {
                    K_SIGNAL => {
                        info!("signal received, shutting down");
                        return Ok(());
                    }
                    K_WAKE => {
                        let _ = src.wake.drain();
                        while let Ok((ep, hello_id)) = rx.try_recv() {
                            self.join(ep, hello_id, None);
                        }
                        self.xen_events();
                    }
                    K_INST_LISTENER => loop {
                        match src.inst_listener.accept() {
                            Ok((stream, _)) => spawn_handshake(
                                stream,
                                src.channel.clone(),
                                src.window,
                                tx.clone(),
                                &src.wake,
                            )?,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(e) => {
                                warn!(error = %e, "accept on the instance socket");
                                break;
                            }
                        }
                    },
                    K_SHIM_LISTENER => loop {
                        match shimio::accept(src.shim_listener.as_fd()) {
                            Ok(Some(fd)) => self.new_shim(fd)?,
                            Ok(None) => break,
                            Err(e) => {
                                warn!(error = %e, "accept on the shim socket");
                                break;
                            }
                        }
                    },
                    K_INST_BELL => self.instance_bell(id as InstId),
                    K_INST_CTL => {
                        let inst = id as InstId;
                        // Deliver what it published before it went away.
                        self.instance_bell(inst);
                        self.fail_instance(inst, Violation::ChannelFailed);
                    }
                    K_SHIM => self.shim_readable(id),
                    K_CTL_LISTENER => self.ctl_accept(false),
                    K_MON_LISTENER => self.ctl_accept(true),
                    K_CTL => self.ctl_readable(id),
                    K_SOCK => self.sock_event(id as Handle, flags),
                    K_METRICS_LISTENER => self.metrics_accept(),
                    K_METRICS => self.metrics_event(id),
                    _ => {}
                }
            }
            self.run_resumes();
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                let now = self.now();
                self.core.tick(now, &mut self.actions);
                self.apply(None, None);
                self.watch_reset();
                self.run_resumes();
                self.log_notes();
                self.balancer_tick();
                self.metrics_expire();
            }
            self.flush_all();
            self.log_notes();
            self.ctl_flush();
            if self.ctl.shutdown {
                info!("shutdown requested on the control socket");
                return Ok(());
            }
        }
    }

    /// Readiness on a socket pair's driver end.
    fn sock_event(&mut self, h: Handle, flags: EventFlags) {
        if flags.contains(EventFlags::HUP)
            && let Some(s) = self.socks.get_mut(&h)
        {
            s.hup = true;
        }
        if flags.contains(EventFlags::OUT) {
            self.sock_writable(h);
        }
        if flags.intersects(EventFlags::IN | EventFlags::HUP | EventFlags::RDHUP | EventFlags::ERR)
        {
            self.relay_out(h);
        }
    }
}
