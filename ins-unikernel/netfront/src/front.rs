//! The netfront device: xenbus handshake, granted buffers, smoltcp
//! `Device`.
//!
//! Set-up ([`Netfront::connect`]): read `backend`, `backend-id` and `mac`
//! under `device/vif/<n>`; wait for the backend's `InitWait`; grant two
//! ring pages and every buffer page to the backend (rx writable, tx
//! read-only), allocate an unbound event channel for it; write
//! `tx-ring-ref`, `rx-ring-ref`, `event-channel`, `request-rx-copy`,
//! `feature-rx-notify`, `feature-no-csum-offload` and `state=Connected` in
//! one transaction; wait for the backend's `Connected`; post every rx
//! buffer.
//!
//! Receive: each rx response is copied out of the ring once and parsed
//! ([`crate::proto::parse_rx`]); the packet bytes are copied out of the
//! (backend-writable) page into a private buffer before the page is posted
//! again. Transmit: smoltcp writes into a private buffer, which is copied
//! into a free, granted tx page. A ring the backend broke stops the device
//! (counted; nothing more is sent or received).

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use ins_xen::xenstore::{Client, Stream, TxId};
use ins_xen_pv::events::Events;
use ins_xen_pv::gnttab::GrantTable;
use ins_xen_pv::hypercall;
use ins_xen_pv::mm::Memory;
use ins_xen_pv::page::{Mapped, PageBox};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::proto::{self, PAGE, RX_ENTRY, Slots, TX_ENTRY, TX_RSP};
use crate::ring::{FrontRing, RING_SIZE};

/// Xenbus states (`io/xenbus.h`).
mod state {
    pub const INIT_WAIT: u32 = 2;
    pub const CONNECTED: u32 = 4;
    pub const CLOSING: u32 = 5;
}

/// Limits of a netfront.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Device index (`device/vif/<n>`).
    pub index: u32,
    /// Receive buffers posted (pages, at most 256).
    pub rx_buffers: u16,
    /// Transmit buffers (pages, at most 256).
    pub tx_buffers: u16,
    /// Largest frame accepted from smoltcp (Ethernet MTU + header).
    pub mtu: usize,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            index: 0,
            rx_buffers: 128,
            tx_buffers: 64,
            mtu: 1514,
        }
    }
}

/// Why set-up failed.
#[derive(Debug)]
pub enum NetError {
    /// A xenstore operation failed.
    Xenstore(String),
    /// A value in xenstore is malformed.
    BadValue(&'static str),
    /// The backend went away or refused.
    Backend(u32),
    /// Out of heap pages or grant references.
    NoMemory,
    /// A hypercall failed.
    Xen(String),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::Xenstore(e) => write!(f, "xenstore: {e}"),
            NetError::BadValue(k) => write!(f, "malformed xenstore value {k}"),
            NetError::Backend(s) => write!(f, "backend in state {s}"),
            NetError::NoMemory => f.write_str("out of pages or grant references"),
            NetError::Xen(e) => write!(f, "hypercall: {e}"),
        }
    }
}

fn xs<E: fmt::Display>(e: E) -> NetError {
    NetError::Xenstore(format!("{e}"))
}

/// Counters of a netfront.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Frames received and handed to smoltcp.
    pub rx_frames: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Rx responses dropped (error status, empty, out of page, flags).
    pub rx_dropped: u64,
    /// Tx responses with an error status.
    pub tx_errors: u64,
    /// Responses naming no outstanding request (a hostile or broken backend).
    pub bad_ids: u64,
    /// Frames smoltcp produced with no free tx buffer, or too large.
    pub tx_dropped: u64,
    /// Ring protocol violations (the device then stops).
    pub ring_errors: u64,
    /// Notifications sent to the backend.
    pub kicks: u64,
}

struct Buf {
    page: PageBox,
    gref: u32,
}

/// A connected netfront.
pub struct Netfront {
    tx: FrontRing<Mapped>,
    rx: FrontRing<Mapped>,
    tx_slots: Slots,
    rx_slots: Slots,
    tx_bufs: Vec<Buf>,
    rx_bufs: Vec<Buf>,
    tx_free: Vec<u16>,
    ring_pages: [PageBox; 2],
    ready: VecDeque<Vec<u8>>,
    scratch: Vec<u8>,
    port: u32,
    events: Events,
    mac: [u8; 6],
    mtu: usize,
    broken: bool,
    counters: NetCounters,
}

fn parse_mac(s: &[u8]) -> Option<[u8; 6]> {
    let s = core::str::from_utf8(s).ok()?;
    let mut mac = [0u8; 6];
    let mut parts = s.trim_end_matches('\0').split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn parse_u32(v: &[u8]) -> Option<u32> {
    core::str::from_utf8(v)
        .ok()?
        .trim_end_matches('\0')
        .parse()
        .ok()
}

fn backend_state<S: Stream>(c: &mut Client<S>, path: &str) -> Result<u32, NetError> {
    let v = c.read(TxId::NONE, path).map_err(xs)?;
    parse_u32(&v).ok_or(NetError::BadValue("backend state"))
}

/// Waits (on a watch) until the backend's state is at least `want`.
fn wait_backend<S: Stream>(c: &mut Client<S>, path: &str, want: u32) -> Result<(), NetError> {
    loop {
        let s = backend_state(c, path)?;
        if s >= state::CLOSING {
            return Err(NetError::Backend(s));
        }
        if s >= want {
            return Ok(());
        }
        c.wait_event().map_err(xs)?;
    }
}

fn grant_page(
    gt: &mut GrantTable,
    mem: &Memory,
    dom: u16,
    page: &PageBox,
    readonly: bool,
) -> Result<u32, NetError> {
    let mfn = mem.va_to_mfn(page.va()).ok_or(NetError::NoMemory)?;
    gt.grant(dom, mfn, readonly).map_err(|_| NetError::NoMemory)
}

impl Netfront {
    /// Connects to the backend of `device/vif/<cfg.index>` (see the module
    /// docs for the sequence).
    pub fn connect<S: Stream>(
        c: &mut Client<S>,
        gt: &mut GrantTable,
        mem: &Memory,
        events: Events,
        cfg: &NetConfig,
    ) -> Result<Netfront, NetError> {
        let fe = format!("device/vif/{}", cfg.index);
        let backend = String::from_utf8(c.read(TxId::NONE, &format!("{fe}/backend")).map_err(xs)?)
            .map_err(|_| NetError::BadValue("backend"))?;
        let backend = String::from(backend.trim_end_matches('\0'));
        let dom = parse_u32(
            &c.read(TxId::NONE, &format!("{fe}/backend-id"))
                .map_err(xs)?,
        )
        .and_then(|d| u16::try_from(d).ok())
        .ok_or(NetError::BadValue("backend-id"))?;
        let mac = parse_mac(&c.read(TxId::NONE, &format!("{fe}/mac")).map_err(xs)?)
            .ok_or(NetError::BadValue("mac"))?;
        let be_state = format!("{backend}/state");
        c.watch(&be_state, "netfront").map_err(xs)?;
        wait_backend(c, &be_state, state::INIT_WAIT)?;

        let ring_pages = [
            PageBox::new().ok_or(NetError::NoMemory)?,
            PageBox::new().ok_or(NetError::NoMemory)?,
        ];
        let tx = FrontRing::init(ring_pages[0].mapped().view(), TX_ENTRY)
            .map_err(|_| NetError::NoMemory)?;
        let rx = FrontRing::init(ring_pages[1].mapped().view(), RX_ENTRY)
            .map_err(|_| NetError::NoMemory)?;
        let tx_ref = grant_page(gt, mem, dom, &ring_pages[0], false)?;
        let rx_ref = grant_page(gt, mem, dom, &ring_pages[1], false)?;
        let n_rx = cfg.rx_buffers.clamp(1, RING_SIZE as u16);
        let n_tx = cfg.tx_buffers.clamp(1, RING_SIZE as u16);
        let mut rx_bufs = Vec::with_capacity(usize::from(n_rx));
        for _ in 0..n_rx {
            let page = PageBox::new().ok_or(NetError::NoMemory)?;
            let gref = grant_page(gt, mem, dom, &page, false)?;
            rx_bufs.push(Buf { page, gref });
        }
        let mut tx_bufs = Vec::with_capacity(usize::from(n_tx));
        for _ in 0..n_tx {
            let page = PageBox::new().ok_or(NetError::NoMemory)?;
            let gref = grant_page(gt, mem, dom, &page, true)?;
            tx_bufs.push(Buf { page, gref });
        }
        let port =
            hypercall::evtchn_alloc_unbound(dom).map_err(|e| NetError::Xen(format!("{e}")))?;
        let _ = events.unmask(port);

        c.transaction(8, |c, t| {
            c.write(
                t,
                &format!("{fe}/tx-ring-ref"),
                format!("{tx_ref}").as_bytes(),
            )?;
            c.write(
                t,
                &format!("{fe}/rx-ring-ref"),
                format!("{rx_ref}").as_bytes(),
            )?;
            c.write(
                t,
                &format!("{fe}/event-channel"),
                format!("{port}").as_bytes(),
            )?;
            c.write(t, &format!("{fe}/request-rx-copy"), b"1")?;
            c.write(t, &format!("{fe}/feature-rx-notify"), b"1")?;
            c.write(t, &format!("{fe}/feature-no-csum-offload"), b"1")?;
            c.write(
                t,
                &format!("{fe}/state"),
                format!("{}", state::CONNECTED).as_bytes(),
            )?;
            Ok(())
        })
        .map_err(xs)?;
        wait_backend(c, &be_state, state::CONNECTED)?;
        let _ = c.unwatch(&be_state, "netfront");

        let mut nf = Netfront {
            tx,
            rx,
            tx_slots: Slots::default(),
            rx_slots: Slots::default(),
            tx_free: (0..n_tx).rev().collect(),
            tx_bufs,
            rx_bufs,
            ring_pages,
            ready: VecDeque::new(),
            scratch: vec![0; cfg.mtu.min(PAGE)],
            port,
            events,
            mac,
            mtu: cfg.mtu.min(PAGE),
            broken: false,
            counters: NetCounters::default(),
        };
        for id in 0..n_rx {
            nf.post_rx(id);
        }
        nf.push_rx();
        Ok(nf)
    }

    /// The MAC address the toolstack assigned.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The event channel to wait on.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Counters.
    pub fn counters(&self) -> NetCounters {
        self.counters
    }

    /// Whether the backend broke the ring protocol (the device stopped).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Pages this device holds (rings and buffers).
    pub fn pages(&self) -> usize {
        self.ring_pages.len() + self.rx_bufs.len() + self.tx_bufs.len()
    }

    fn kick(&mut self) {
        self.counters.kicks += 1;
        let _ = self.events.notify(self.port);
    }

    fn post_rx(&mut self, id: u16) {
        let Some(b) = self.rx_bufs.get(usize::from(id)) else {
            return;
        };
        if self.rx_slots.start(id) && !self.rx.put_request(&proto::rx_request(id, b.gref)) {
            self.rx_slots.complete(id);
        }
    }

    fn push_rx(&mut self) {
        if self.rx.push() {
            self.kick();
        }
    }

    fn broke(&mut self) {
        self.counters.ring_errors += 1;
        self.broken = true;
    }

    /// Takes every rx response: copies packets out, posts buffers again.
    fn harvest(&mut self) {
        if self.broken {
            return;
        }
        for _ in 0..4 {
            match self.rx.responses_ready() {
                Ok(0) => {}
                Ok(_) => {
                    let mut e = [0u8; RX_ENTRY];
                    while self.rx.take_response(&mut e) {
                        match proto::parse_rx(&e, &mut self.rx_slots) {
                            Ok(d) => {
                                match d.packet {
                                    Ok((off, len)) => {
                                        let mut frame = vec![0u8; usize::from(len)];
                                        let page = self.rx_bufs[usize::from(d.id)].page.mapped();
                                        if page.view().read(usize::from(off), &mut frame).is_ok() {
                                            self.ready.push_back(frame);
                                            self.counters.rx_frames += 1;
                                        }
                                    }
                                    Err(_) => self.counters.rx_dropped += 1,
                                }
                                self.post_rx(d.id);
                            }
                            Err(_) => self.counters.bad_ids += 1,
                        }
                    }
                }
                Err(_) => return self.broke(),
            }
            self.push_rx();
            match self.rx.final_check() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(_) => return self.broke(),
            }
        }
    }

    /// Reclaims tx buffers the backend is done with.
    fn reap_tx(&mut self) {
        if self.broken {
            return;
        }
        for _ in 0..4 {
            match self.tx.responses_ready() {
                Ok(0) => {}
                Ok(_) => {
                    let mut e = [0u8; TX_RSP];
                    while self.tx.take_response(&mut e) {
                        match proto::parse_tx(&e, &mut self.tx_slots) {
                            Ok(d) => {
                                if d.result.is_err() {
                                    self.counters.tx_errors += 1;
                                }
                                self.tx_free.push(d.id);
                            }
                            Err(_) => self.counters.bad_ids += 1,
                        }
                    }
                }
                Err(_) => return self.broke(),
            }
            match self.tx.final_check() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(_) => return self.broke(),
            }
        }
    }

    /// Sends the frame in `self.scratch[..len]`.
    fn send_scratch(&mut self, len: usize) {
        let Some(id) = self.tx_free.pop() else {
            self.counters.tx_dropped += 1;
            return;
        };
        let b = &self.tx_bufs[usize::from(id)];
        let gref = b.gref;
        if b.page
            .mapped()
            .view()
            .write(0, &self.scratch[..len])
            .is_err()
            || !self.tx_slots.start(id)
        {
            self.tx_free.push(id);
            self.counters.tx_dropped += 1;
            return;
        }
        if !self
            .tx
            .put_request(&proto::tx_request(gref, 0, 0, id, len as u16))
        {
            self.tx_slots.complete(id);
            self.tx_free.push(id);
            self.counters.tx_dropped += 1;
            return;
        }
        self.counters.tx_frames += 1;
        if self.tx.push() {
            self.kick();
        }
    }
}

/// A received frame (already a private copy).
pub struct RxToken(Vec<u8>);

/// Room to send one frame.
pub struct TxToken<'a>(&'a mut Netfront);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let nf = self.0;
        if len > nf.mtu {
            nf.counters.tx_dropped += 1;
            let mut junk = vec![0u8; len];
            return f(&mut junk);
        }
        let mut buf = core::mem::take(&mut nf.scratch);
        let r = f(&mut buf[..len]);
        nf.scratch = buf;
        nf.send_scratch(len);
        r
    }
}

impl phy::Device for Netfront {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(RxToken, TxToken<'_>)> {
        if self.ready.is_empty() {
            self.harvest();
        }
        let f = self.ready.pop_front()?;
        Some((RxToken(f), TxToken(self)))
    }

    fn transmit(&mut self, _t: Instant) -> Option<TxToken<'_>> {
        if self.broken {
            return None;
        }
        if self.tx_free.is_empty() {
            self.reap_tx();
        }
        (!self.tx_free.is_empty()).then_some(TxToken(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.mtu;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xenstore_values() {
        assert_eq!(
            parse_mac(b"00:16:3e:0a:0b:ff"),
            Some([0, 0x16, 0x3e, 0x0a, 0x0b, 0xff])
        );
        assert_eq!(parse_mac(b"00:16:3e:0a:0b"), None);
        assert_eq!(parse_mac(b"00:16:3e:0a:0b:ff:00"), None);
        assert_eq!(parse_mac(b"zz:16:3e:0a:0b:ff"), None);
        assert_eq!(parse_u32(b"4"), Some(4));
        assert_eq!(parse_u32(b"x"), None);
    }
}
