//! Per-socket state of the executor, kept small: an idle connection holds
//! no buffers (the transmit buffer exists only while bytes wait for the
//! kernel, and is freed when drained).

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::net::SocketAddr;

use ins_protocol::msg::OptValue;

use crate::hash::HashSet;

use crate::flow::FlowId;
use crate::stack::{PktInfo, SockType};
use crate::telemetry::ConnTel;

/// Lifecycle of a socket as the executor sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Opened (maybe bound), neither listening nor connected.
    Fresh,
    /// Listening; `credit` counts connection announcements.
    Listening,
    /// A stream connect is in flight.
    Connecting,
    /// Connected stream, or a UDP socket that has a default peer or is used
    /// with addresses.
    Open,
    /// The connection failed or was reset; a `Reset` was sent, the flow is
    /// closed. Only `Close` (and harmless queries) remain meaningful.
    Dead,
}

/// An in-band option (`SockOpt`) that waits for the bytes before it.
#[derive(Debug)]
pub(super) struct PendingOpt {
    /// Pending bytes still to hand to the kernel before it applies.
    pub(super) at: usize,
    pub(super) level: i32,
    pub(super) name: i32,
    pub(super) value: OptValue,
}

/// Bytes from the driver that the kernel has not taken yet, and the
/// in-band options between them (in stream order).
#[derive(Debug, Default)]
pub(super) struct TxBuf {
    pub(super) buf: Vec<u8>,
    pub(super) off: usize,
    pub(super) opts: Vec<PendingOpt>,
}

impl TxBuf {
    pub(super) fn pending(&self) -> &[u8] {
        self.buf.get(self.off..).unwrap_or(&[])
    }

    pub(super) fn len(&self) -> usize {
        self.buf.len().saturating_sub(self.off)
    }

    pub(super) fn consume(&mut self, n: usize) {
        for o in &mut self.opts {
            o.at = o.at.saturating_sub(n);
        }
        self.off = self.off.saturating_add(n).min(self.buf.len());
        if self.off == self.buf.len() {
            self.buf.clear();
            self.off = 0;
        } else if self.off > self.buf.len() / 2 && self.off > 4096 {
            // Compact so appends do not grow the vector past the window.
            self.buf.drain(..self.off);
            self.off = 0;
        }
    }
}

/// Datagram-only state.
#[derive(Debug, Default)]
pub(super) struct UdpState {
    /// Open UDP flows carried by this socket.
    pub(super) flows: HashSet<FlowId>,
    /// A received datagram (source, packet information, bytes) waiting
    /// for driver credit.
    pub(super) held: Option<(SocketAddr, PktInfo, Vec<u8>)>,
}

/// One socket of the executor's table.
#[derive(Debug)]
pub(super) struct Sock<H> {
    pub(super) handle: H,
    /// False once the handle was released (mitigation or protocol abort);
    /// the id lives on until the driver's `Close`.
    pub(super) handle_open: bool,
    pub(super) ty: SockType,
    pub(super) phase: Phase,
    /// TCP flow of a connection.
    pub(super) flow: Option<FlowId>,
    pub(super) peer: Option<SocketAddr>,
    pub(super) local: Option<SocketAddr>,
    /// What the executor may still push to the driver: bytes for streams
    /// and datagrams, connection announcements for listeners.
    pub(super) credit: u32,
    /// Driver bytes received and not yet credited back (≤ our window).
    pub(super) outstanding: u32,
    /// Of `outstanding`, bytes already consumed (written or dropped) that a
    /// `Credit` will return.
    pub(super) to_credit: u32,
    pub(super) tx: Option<Box<TxBuf>>,
    /// The kernel may have something to read (or accept) that we have not
    /// taken yet.
    pub(super) readable: bool,
    /// In the ready queue.
    pub(super) queued: bool,
    /// `Eof` or `Reset` sent: nothing more will be read.
    pub(super) rx_done: bool,
    /// Driver sent `Eof`/`Shutdown(Write)`: shut the write side once `tx`
    /// drains.
    pub(super) shut_wr_pending: bool,
    /// Write side shut (or dead): further driver data is refused.
    pub(super) wr_closed: bool,
    /// Rate-limit retry time, if deferred.
    pub(super) deferred: Option<u64>,
    /// A hang-up, read-closed or error was reported (sticky): reads go on
    /// until end of stream or `EAGAIN`, short or not.
    pub(super) closed_hint: bool,
    pub(super) udp: Option<Box<UdpState>>,
    /// Live telemetry of a TCP connection (while telemetry is on).
    pub(super) tel: Option<Box<ConnTel>>,
}

impl<H> Sock<H> {
    pub(super) fn new(handle: H, ty: SockType, credit: u32) -> Self {
        Sock {
            handle,
            handle_open: true,
            ty,
            phase: Phase::Fresh,
            flow: None,
            peer: None,
            local: None,
            credit,
            outstanding: 0,
            to_credit: 0,
            tx: None,
            readable: false,
            queued: false,
            rx_done: false,
            shut_wr_pending: false,
            wr_closed: false,
            deferred: None,
            closed_hint: false,
            udp: match ty {
                SockType::Datagram => Some(Box::default()),
                SockType::Stream => None,
            },
            tel: None,
        }
    }

    pub(super) fn tx_len(&self) -> usize {
        self.tx.as_ref().map_or(0, |t| t.len())
    }
}
