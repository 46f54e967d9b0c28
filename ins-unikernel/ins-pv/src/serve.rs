//! The instance's loop over the driver's ring: ins-core's executor over
//! smoltcp (the same sans-IO executor the Linux `ins` runs over its
//! kernel sockets).
//!
//! ```text
//!  loop {
//!    pop ≤ RX_BATCH frames from the driver's ring → Executor::on_frame
//!    release them (raise the ring port if the driver waits for space)
//!    on_tick if the executor's deadline passed (heartbeats, flows)
//!    on_ring_space if frames wait and the outgoing ring has room again
//!    flush the outgoing ring (raise the port if the driver waits for data)
//!    the driver: alive word, and its xenstore state after a watch event
//!    arm the waits (rx.prepare_wait, tx.prepare_wait_space), then
//!    poll the stack: sleeps in SCHEDOP_poll on netfront's, the ring's,
//!      the liveness and xenstore's ports and the timer, until the
//!      executor's next deadline (0 when work is left)
//!    stack events → Executor::on_events, flush
//!  }
//! ```
//!
//! No lost wake-up: the ring waits are armed (they re-check after a full
//! fence) before every sleep, and a port that fires after that stays
//! pending, so `SCHEDOP_poll` returns at once. Event floods from the
//! driver only make the loop look at ring indices again.

use alloc::vec::Vec;

use ins_core::executor::Executor;
use ins_core::outbox::RingOutbox;
use ins_protocol::ring::RingError;
use ins_xen_pv::events::Events;
use ins_xen_pv::page::Mapped;
use ins_xen_pv::println;
use ins_xen_pv::time::Clock;

use crate::chan::{Channel, Gone, Xs};
use crate::demo::S;

/// Frames taken from the driver's ring before other work gets a turn.
const RX_BATCH: usize = 256;

/// Publishes the pushed frames, raising the ring port if the driver
/// waits for them.
fn flush(ob: &mut RingOutbox<Mapped>, events: &Events, port: u32) -> Result<(), RingError> {
    if ob.publish()? {
        let _ = events.notify(port);
    }
    Ok(())
}

/// Why the loop ended.
#[derive(Debug)]
pub enum End {
    /// The driver let go of the pages or closed the channel.
    Driver(Gone),
    /// A ring was corrupt (the driver broke the protocol) or xenstore failed.
    Error(alloc::string::String),
}

impl core::fmt::Display for End {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            End::Driver(Gone::Unmapped) => f.write_str("the driver let go of the pages"),
            End::Driver(Gone::Closing) => f.write_str("the driver closed the channel"),
            End::Error(e) => f.write_str(e),
        }
    }
}

/// Serves the driver's requests until it goes away.
pub fn run(
    exec: &mut Executor<S>,
    ch: &mut Channel,
    xs: &mut Xs,
    events: Events,
    clock: Clock,
) -> End {
    let ring_port = ch.ring_port;
    let mut rxbuf = alloc::vec![0u8; ch.rx.config().max_frame as usize];
    let mut evs = Vec::new();
    let ring_err = |what: &str, e: RingError| End::Error(alloc::format!("{what}: {e}"));
    loop {
        let now = clock.now_ns();
        let wall = clock.wall_ns();
        let (ch_rx, ob) = (&mut ch.rx, &mut ch.outbox);
        let mut popped = 0;
        while popped < RX_BATCH {
            match ch_rx.pop(&mut rxbuf) {
                Ok(Some(n)) => {
                    exec.on_frame(&rxbuf[..n], now, wall, ob);
                    popped += 1;
                }
                Ok(None) => break,
                Err(e) => return ring_err("the driver's ring", e),
            }
        }
        match ch_rx.release() {
            Ok(true) => {
                let _ = events.notify(ring_port);
            }
            Ok(_) => {}
            Err(e) => return ring_err("the driver's ring", e),
        }
        if exec.next_deadline().is_some_and(|d| d <= now) {
            exec.on_tick(now, wall, ob);
        }
        if let Some(need) = exec.wants_ring_space() {
            match ob.fits(need) {
                Ok(true) => exec.on_ring_space(now, wall, ob),
                Ok(false) => {}
                Err(e) => return ring_err("our ring", e),
            }
        }
        if let Err(e) = flush(ob, &events, ring_port) {
            return ring_err("our ring", e);
        }

        match ch.check_driver(xs, false) {
            Ok(Some(g)) => return End::Driver(g),
            Ok(None) => {}
            Err(e) => return End::Error(e.0),
        }

        let mut timeout = exec
            .next_deadline()
            .map(|d| d.saturating_sub(clock.now_ns()));
        match ch.rx.prepare_wait() {
            Ok(true) => timeout = Some(0),
            Ok(false) if popped == RX_BATCH => timeout = Some(0),
            Ok(false) => {}
            Err(e) => return ring_err("the driver's ring", e),
        }
        if let Some(need) = exec.wants_ring_space() {
            match ch.outbox.tx.prepare_wait_space(need) {
                Ok(true) => timeout = Some(0),
                Ok(false) => {}
                Err(e) => return ring_err("our ring", e),
            }
        }
        evs.clear();
        if let Err(e) = ins_core::stack::Stack::poll_events(exec.stack_mut(), timeout, &mut evs) {
            println!("ins-pv: stack poll: errno {}", e.0);
        }
        if !evs.is_empty() {
            let ob = &mut ch.outbox;
            exec.on_events(&evs, clock.now_ns(), clock.wall_ns(), ob);
            if let Err(e) = flush(ob, &events, ring_port) {
                return ring_err("our ring", e);
            }
        }
    }
}
