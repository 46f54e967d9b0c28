//! Xen system time (nanoseconds since the host booted, monotonic) and the
//! wall clock, from shared_info.
//!
//! `vcpu_time_info` is guarded by a version counter that is odd while Xen
//! updates it; a reader retries until it sees the same even version before
//! and after. System time = `system_time + scale(tsc - tsc_timestamp)`.
#![allow(unsafe_code)]

use core::sync::atomic::{Ordering, fence};

use crate::abi::shared_info::{
    TIME_MUL, TIME_SHIFT, TIME_SYSTEM, TIME_TSC, TIME_VERSION, WC_NSEC, WC_SEC, WC_SEC_HI,
    WC_VERSION,
};
use crate::page::Mapped;

/// Converts a TSC delta to nanoseconds as `vcpu_time_info` says:
/// `((delta << shift) * mul) >> 32` (a negative shift shifts right).
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift >= 0 {
        delta.checked_shl(shift as u32).unwrap_or(0)
    } else {
        delta.checked_shr(shift.unsigned_abs() as u32).unwrap_or(0)
    };
    ((u128::from(d) * u128::from(mul)) >> 32) as u64
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no memory effects; Xen lets PV guests execute it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Clocks read from shared_info.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    shared: Mapped,
}

impl Clock {
    /// A clock over the mapped shared_info page.
    pub fn new(shared: Mapped) -> Clock {
        Clock { shared }
    }

    fn u64_at(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        let _ = self.shared.view().read(off, &mut b);
        u64::from_le_bytes(b)
    }

    /// Xen system time in nanoseconds (monotonic, shared by all domains).
    pub fn now_ns(&self) -> u64 {
        let v = self.shared.view();
        loop {
            let Ok(v1) = v.load_u32(TIME_VERSION, Ordering::Acquire) else {
                return 0;
            };
            if v1 & 1 == 1 {
                core::hint::spin_loop();
                continue;
            }
            let tsc_ts = self.u64_at(TIME_TSC);
            let sys = self.u64_at(TIME_SYSTEM);
            let mut mul = [0u8; 4];
            let mut shift = [0u8; 1];
            let _ = v.read(TIME_MUL, &mut mul);
            let _ = v.read(TIME_SHIFT, &mut shift);
            let tsc = rdtsc();
            fence(Ordering::Acquire);
            if v.load_u32(TIME_VERSION, Ordering::Acquire) == Ok(v1) {
                return sys.wrapping_add(scale_delta(
                    tsc.wrapping_sub(tsc_ts),
                    u32::from_le_bytes(mul),
                    shift[0] as i8,
                ));
            }
        }
    }

    /// Wall-clock time in nanoseconds since the Unix epoch.
    pub fn wall_ns(&self) -> u64 {
        let v = self.shared.view();
        loop {
            let Ok(v1) = v.load_u32(WC_VERSION, Ordering::Acquire) else {
                return 0;
            };
            if v1 & 1 == 1 {
                core::hint::spin_loop();
                continue;
            }
            let sec = v.load_u32(WC_SEC, Ordering::Relaxed).unwrap_or(0);
            let hi = v.load_u32(WC_SEC_HI, Ordering::Relaxed).unwrap_or(0);
            let nsec = v.load_u32(WC_NSEC, Ordering::Relaxed).unwrap_or(0);
            fence(Ordering::Acquire);
            if v.load_u32(WC_VERSION, Ordering::Acquire) == Ok(v1) {
                let boot = ((u64::from(hi) << 32) | u64::from(sec))
                    .saturating_mul(1_000_000_000)
                    .saturating_add(u64::from(nsec));
                return boot.saturating_add(self.now_ns());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_matches_the_header_formula() {
        // 2 GHz TSC: mul = 2^31 (0.5 ns per tick), shift 0
        assert_eq!(scale_delta(2_000_000_000, 1 << 31, 0), 1_000_000_000);
        // 3 GHz with shift -1: (delta >> 1) * mul >> 32
        let mul = ((1u128 << 32) * 2 / 3) as u32;
        let ns = scale_delta(3_000_000_000, mul, -1);
        assert!((999_999_990..=1_000_000_000).contains(&ns), "{ns}");
        assert_eq!(scale_delta(1, 1 << 31, 1), 1);
        assert_eq!(scale_delta(u64::MAX, u32::MAX, 70), 0, "shift out of range");
    }
}
