//! The PV console: a byte ring shared with the console daemon in dom0
//! (`io/console.h`). Debian's release Xen denies `console_io` writes from
//! domUs, so this is the only way out for a domU's log.
//!
//! We produce `out` (2048 bytes, free-running `u32` indices `out_cons`,
//! `out_prod`); the daemon consumes it and is kicked through the console
//! event channel. The daemon is dom0's and trusted for availability, not
//! for the indices: an impossible `prod - cons` is treated as a full ring
//! (nothing written, never an out-of-bounds write).
//!
//! When the ring stays full (no daemon), a write gives up after a bounded
//! number of yields and drops the rest, counting the bytes: logging must
//! never hang the instance.

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use ins_protocol::region::{RegionView, SharedRegion};

use crate::abi::console::{OUT, OUT_CONS, OUT_LEN, OUT_PROD};
use crate::page::Mapped;

/// Queues as much of `bytes` as fits in the ring's `out` half and publishes
/// it; returns how many bytes were queued.
pub fn push<R: SharedRegion>(ring: &RegionView<R>, bytes: &[u8]) -> usize {
    let (Ok(cons), Ok(prod)) = (
        ring.load_u32(OUT_CONS, Ordering::Acquire),
        ring.load_u32(OUT_PROD, Ordering::Relaxed),
    ) else {
        return 0;
    };
    let used = prod.wrapping_sub(cons);
    if used >= OUT_LEN {
        return 0;
    }
    let n = bytes.len().min((OUT_LEN - used) as usize);
    let mut done = 0;
    while done < n {
        let at = (prod.wrapping_add(done as u32) % OUT_LEN) as usize;
        let chunk = (n - done).min(OUT_LEN as usize - at);
        if ring.write(OUT + at, &bytes[done..done + chunk]).is_err() {
            break;
        }
        done += chunk;
    }
    if done > 0 {
        let _ = ring.store_u32(OUT_PROD, prod.wrapping_add(done as u32), Ordering::Release);
    }
    done
}

/// Yields to wait for the daemon before dropping output.
const FULL_RING_YIELDS: u32 = 1000;

/// The console ring and its event channel.
#[derive(Clone, Copy, Debug)]
pub struct Console {
    ring: Mapped,
    port: u32,
}

static DROPPED: AtomicU64 = AtomicU64::new(0);
static GLOBAL_VA: AtomicUsize = AtomicUsize::new(0);
static GLOBAL_PORT: AtomicU32 = AtomicU32::new(0);

impl Console {
    /// The console on `ring` (the page of `start_info.console.domU.mfn`),
    /// kicked through `port`.
    pub fn new(ring: Mapped, port: u32) -> Console {
        Console { ring, port }
    }

    /// Writes all of `bytes`, waiting (bounded) for room.
    pub fn write(&self, mut bytes: &[u8]) {
        let view = self.ring.view();
        let mut idle = 0;
        while !bytes.is_empty() {
            let n = push(&view, bytes);
            if n > 0 {
                let _ = crate::hypercall::evtchn_send(self.port);
                bytes = &bytes[n..];
                idle = 0;
            } else if idle < FULL_RING_YIELDS {
                crate::hypercall::sched_yield();
                idle += 1;
            } else {
                DROPPED.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                return;
            }
        }
    }

    /// Makes this the console of [`print!`](crate::print) and the panic
    /// handler.
    pub fn install(&self) {
        GLOBAL_PORT.store(self.port, Ordering::Relaxed);
        GLOBAL_VA.store(self.ring.va(), Ordering::Release);
    }

    /// The installed console, if any.
    pub fn global() -> Option<Console> {
        let va = GLOBAL_VA.load(Ordering::Acquire);
        if va == 0 {
            return None;
        }
        // SAFETY: `install` stored the address of a live console page,
        // which stays mapped for the life of the domain.
        #[allow(unsafe_code)]
        let ring = unsafe { Mapped::new(va, 1) };
        Some(Console::new(ring, GLOBAL_PORT.load(Ordering::Relaxed)))
    }

    /// Bytes dropped because the ring stayed full.
    pub fn dropped() -> u64 {
        DROPPED.load(Ordering::Relaxed)
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write(s.as_bytes());
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    if let Some(mut c) = Console::global() {
        let _ = fmt::Write::write_fmt(&mut c, args);
    }
}

/// Prints to the installed console (nothing before one is installed).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Prints a line to the installed console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use ins_protocol::region::HeapRegion;

    fn drain(ring: &RegionView<HeapRegion>, out: &mut std::vec::Vec<u8>) {
        let cons = ring.load_u32(OUT_CONS, Ordering::Relaxed).unwrap();
        let prod = ring.load_u32(OUT_PROD, Ordering::Relaxed).unwrap();
        for k in 0..prod.wrapping_sub(cons) {
            let mut b = [0u8];
            let i = cons.wrapping_add(k);
            ring.read(OUT + (i % OUT_LEN) as usize, &mut b).unwrap();
            out.push(b[0]);
        }
        ring.store_u32(OUT_CONS, prod, Ordering::Relaxed).unwrap();
    }

    #[test]
    fn wraps_and_fills() {
        let ring = RegionView::new(HeapRegion::new(4096));
        // start near the u32 wrap and off the ring's start
        ring.store_u32(OUT_CONS, u32::MAX - 100, Ordering::Relaxed)
            .unwrap();
        ring.store_u32(OUT_PROD, u32::MAX - 100, Ordering::Relaxed)
            .unwrap();
        let data: std::vec::Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(push(&ring, &data), 2048, "a full ring takes 2048 bytes");
        assert_eq!(push(&ring, &data[2048..]), 0, "then nothing");
        let mut got = std::vec::Vec::new();
        drain(&ring, &mut got);
        let mut off = 2048;
        while off < data.len() {
            off += push(&ring, &data[off..]);
            drain(&ring, &mut got);
        }
        assert!(got == data, "bytes differ or are missing");
    }

    #[test]
    fn impossible_indices_write_nothing() {
        let ring = RegionView::new(HeapRegion::new(4096));
        ring.store_u32(OUT_CONS, 10, Ordering::Relaxed).unwrap();
        ring.store_u32(OUT_PROD, 5000, Ordering::Relaxed).unwrap();
        assert_eq!(push(&ring, b"x"), 0);
        ring.store_u32(OUT_PROD, 5, Ordering::Relaxed).unwrap();
        assert_eq!(push(&ring, b"x"), 0, "prod behind cons");
    }
}
