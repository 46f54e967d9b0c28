// SPDX-License-Identifier: GPL-2.0

//! `ins_selftest`: runs the project's `no_std` crates inside the kernel and
//! prints one line per check to the kernel log, then
//! `ins_selftest: N passed, M failed`. tests/kmod loads it in QEMU and
//! checks the lines.
//!
//! * `protocol-msg`: an instance message and a shim control message encode
//!   and decode back to themselves; a frame with a reserved byte set is
//!   refused.
//! * `ring`: frames of many sizes through ins-protocol's SPSC ring over a
//!   kmalloc'd region, with wrap-around, content and order checked.
//! * `ring-hostile`: a producer index that a hostile peer wrote past the
//!   capacity fails the consumer (sticky), never a panic.
//! * `driver-core`: a `Driver` with one instance takes a shim's `socket` and
//!   `bind`, asks the instance to open and bind, and answers the shim once
//!   the instance replies (BTreeMap/VecDeque/Vec from `alloc` at work).

// The `alloc` that driver-core uses; its entry points are in kalloc.rs.
#[allow(unused_extern_crates)]
extern crate alloc;

#[path = "kalloc.rs"]
mod kalloc;
#[path = "kregion.rs"]
mod kregion;

use alloc::vec::Vec as AVec;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};
use core::sync::atomic::Ordering;

use driver_core::{Action, Config, Driver, ReplyFd};
use ins_protocol::control::{Control, Op};
use ins_protocol::msg::{Family, Msg, OwnedMsg, SockType};
use ins_protocol::region::RegionView;
use ins_protocol::ring::{init_ring, Consumer, Producer, RingConfig, RingError};
use kernel::prelude::*;
use kregion::KRegion;

module! {
    type: InsSelftest,
    name: "ins_selftest",
    author: "INS",
    description: "Runs ins-protocol and driver-core in the kernel",
    license: "GPL",
}

type Check = core::result::Result<(), &'static str>;

/// A named check.
type Named = (&'static str, fn() -> Check);

fn ensure(cond: bool, why: &'static str) -> Check {
    if cond {
        Ok(())
    } else {
        Err(why)
    }
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), port)
}

/// A shim's `bind(127.0.0.1:port)` request.
fn bind_request(seq: u32, port: u16) -> Control<'static> {
    Control {
        addr: Some(localhost(port)),
        ..Control::request(Op::Bind, seq)
    }
}

fn protocol_msg() -> Check {
    let mut buf = [0u8; 256];
    let m = Msg::Connect {
        sock: 5,
        req: 9,
        addr: localhost(8080),
    };
    let n = m.encode(&mut buf).map_err(|_| "encode Connect")?;
    let frame = buf.get(..n).ok_or("encoded length")?;
    ensure(
        Msg::decode(frame) == Ok(m),
        "Connect did not decode to itself",
    )?;
    pr_info!("protocol-msg: Connect encodes to {} bytes and back\n", n);

    let c = bind_request(42, 80);
    let n = c.encode(&mut buf).map_err(|_| "encode Control")?;
    let packet = buf.get(..n).ok_or("encoded length")?;
    ensure(
        Control::decode(packet) == Ok(c),
        "Control did not decode to itself",
    )?;
    pr_info!(
        "protocol-msg: Control Bind encodes to {} bytes and back\n",
        n
    );

    // The control header's last 12 bytes are reserved and must be zero.
    let last = n.checked_sub(1).ok_or("empty packet")?;
    if let Some(b) = buf.get_mut(last) {
        *b = 1;
    }
    let bad = buf.get(..n).ok_or("encoded length")?;
    ensure(Control::decode(bad).is_err(), "reserved byte accepted")?;
    Ok(())
}

fn pattern(i: u32, j: usize) -> u8 {
    (i as usize).wrapping_mul(31).wrapping_add(j) as u8
}

fn ring() -> Check {
    const FRAMES: u32 = 3000;
    let cfg = RingConfig::new(4096, 1024).map_err(|_| "ring config")?;
    let region = KRegion::new(cfg.region_len()).map_err(|_| "kmalloc")?;
    init_ring(&region, 0, cfg).map_err(|_| "init_ring")?;
    let mut tx = Producer::new(&region, 0, cfg).map_err(|_| "producer")?;
    let mut rx = Consumer::new(&region, 0, cfg).map_err(|_| "consumer")?;
    let mut frame = [0u8; 1024];
    let mut got = [0u8; 1024];
    let (mut sent, mut recvd, mut bytes, mut fulls) = (0u32, 0u32, 0usize, 0u32);
    while recvd < FRAMES {
        // Fill until full (or all sent), then drain everything.
        while sent < FRAMES {
            let len = 1 + (sent as usize * 37) % 1000;
            let f = frame.get_mut(..len).ok_or("frame length")?;
            for (j, b) in f.iter_mut().enumerate() {
                *b = pattern(sent, j);
            }
            match tx.try_push(f) {
                Ok(()) => sent += 1,
                Err(RingError::Full) => {
                    fulls += 1;
                    break;
                }
                Err(_) => return Err("push failed"),
            }
        }
        tx.flush().map_err(|_| "flush")?;
        while let Some(n) = rx.pop(&mut got).map_err(|_| "pop failed")? {
            let expect = 1 + (recvd as usize * 37) % 1000;
            ensure(n == expect, "frame length differs")?;
            let g = got.get(..n).ok_or("popped length")?;
            ensure(
                g.iter().enumerate().all(|(j, b)| *b == pattern(recvd, j)),
                "frame content differs",
            )?;
            recvd += 1;
            bytes += n;
        }
        rx.release().map_err(|_| "release")?;
    }
    ensure(fulls > 0, "ring never filled: no wrap-around tested")?;
    pr_info!(
        "ring: {} frames, {} bytes through a {}-byte ring ({} times full)\n",
        recvd,
        bytes,
        cfg.capacity,
        fulls
    );
    Ok(())
}

fn ring_hostile() -> Check {
    let cfg = RingConfig::new(4096, 1024).map_err(|_| "ring config")?;
    let region = KRegion::new(cfg.region_len()).map_err(|_| "kmalloc")?;
    init_ring(&region, 0, cfg).map_err(|_| "init_ring")?;
    let mut rx = Consumer::new(&region, 0, cfg).map_err(|_| "consumer")?;
    // A hostile producer publishes an index beyond the capacity (the
    // header's first word is `prod`).
    RegionView::new(&region)
        .store_u32(0, 4 * cfg.capacity, Ordering::Release)
        .map_err(|_| "store")?;
    let mut buf = [0u8; 64];
    ensure(
        matches!(rx.pop(&mut buf), Err(RingError::Corrupt(_))),
        "bad index not detected",
    )?;
    ensure(
        matches!(rx.pop(&mut buf), Err(RingError::Corrupt(_))),
        "failure not sticky",
    )?;
    pr_info!("ring-hostile: producer index past capacity -> Corrupt (sticky)\n");
    Ok(())
}

fn driver_core() -> Check {
    let mut d = Driver::new(Config {
        window: 65536,
        ..Config::default()
    });
    let mut out = AVec::new();
    let inst = d.instance_joined(0, 65536, &mut out);
    out.clear();
    let sock = d.new_socket(100, 2, 1, 0).map_err(|_| "new_socket")?;
    let req = bind_request(7, 8080);
    d.shim_request(1, &req, Some(sock), &mut out);
    // The instance is asked to open the socket and bind it; the shim waits.
    let frames: AVec<OwnedMsg> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send { inst: i, frame } if *i == inst => Some(*frame),
            _ => None,
        })
        .collect();
    let opened = frames.iter().any(|f| {
        matches!(
            f.borrowed(),
            Msg::Open {
                family: Family::Inet,
                ty: SockType::Stream,
                ..
            }
        )
    });
    let bound = frames
        .iter()
        .any(|f| matches!(f.borrowed(), Msg::Bind { addr, .. } if addr == localhost(8080)));
    ensure(opened && bound, "no Open+Bind sent to the instance")?;
    ensure(
        !out.iter().any(|a| matches!(a, Action::Reply(_))),
        "shim answered before the instance",
    )?;
    let n_frames = frames.len();
    // The instance answers every request with success.
    out.clear();
    for f in &frames {
        let m = f.borrowed();
        let r = m.req();
        if r == 0 {
            continue;
        }
        let reply = Msg::Reply {
            sock: m.sock(),
            req: r,
            errno: 0,
            value: &[],
        };
        d.instance_frame(inst, &reply, 1, &mut out)
            .map_err(|_| "instance reply refused")?;
    }
    let ok = out.iter().any(|a| {
        matches!(a, Action::Reply(r) if r.conn == 1 && r.ctl.seq == 7 && r.ctl.op == Op::Bind
            && r.ctl.status == 0 && r.fd == ReplyFd::None)
    });
    ensure(ok, "no successful Bind reply to the shim")?;
    ensure(d.socket_count() == 1, "socket table")?;
    pr_info!(
        "driver-core: bind -> {} frames to instance {}, reply status 0 after its answer\n",
        n_frames,
        inst
    );
    Ok(())
}

struct InsSelftest;

impl kernel::Module for InsSelftest {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let checks: [Named; 4] = [
            ("protocol-msg", protocol_msg),
            ("ring", ring),
            ("ring-hostile", ring_hostile),
            ("driver-core", driver_core),
        ];
        let (mut passed, mut failed) = (0, 0);
        for (name, check) in checks {
            match check() {
                Ok(()) => {
                    passed += 1;
                    pr_info!("PASS {}\n", name);
                }
                Err(why) => {
                    failed += 1;
                    pr_err!("FAIL {}: {}\n", name, why);
                }
            }
        }
        pr_info!("{} passed, {} failed\n", passed, failed);
        Ok(InsSelftest)
    }
}

impl Drop for InsSelftest {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}
