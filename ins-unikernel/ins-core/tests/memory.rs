//! Measures the heap cost per flow with a counting allocator: the figure the
//! 8 KiB-per-idle-connection budget depends on.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};

use ins_core::flow::{FlowConfig, FlowKey, FlowState, FlowTable, Proto};
use ins_core::mitigation::{Mitigations, Prefix};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments, so
// `System`'s guarantees are ours; the counter is only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn remote(i: u32) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + i)),
        40_000 + (i % 20_000) as u16,
    )
}

// One test function only: the counter is global, parallel tests would disturb it.
#[test]
fn heap_bytes_per_flow_and_rule() {
    const N: u32 = 50_000;
    let local: SocketAddr = "192.0.2.1:443".parse().unwrap();

    let before = LIVE.load(Ordering::Relaxed);
    let mut t = FlowTable::new(FlowConfig::default());
    for i in 0..N {
        let key = FlowKey {
            proto: Proto::Tcp,
            local,
            remote: remote(i),
        };
        t.open(key, FlowState::Established, u64::from(i)).unwrap();
    }
    let tcp = (LIVE.load(Ordering::Relaxed) - before) as f64 / f64::from(N);
    drop(t);

    let before = LIVE.load(Ordering::Relaxed);
    let mut t = FlowTable::new(FlowConfig::default());
    for i in 0..N {
        let key = FlowKey {
            proto: Proto::Udp,
            local,
            remote: remote(i),
        };
        t.open(key, FlowState::Established, u64::from(i)).unwrap();
    }
    let udp = (LIVE.load(Ordering::Relaxed) - before) as f64 / f64::from(N);
    drop(t);

    let before = LIVE.load(Ordering::Relaxed);
    let mut m = Mitigations::new(1 << 20);
    for i in 0..N {
        m.block(Prefix::host(IpAddr::V4(Ipv4Addr::from_bits(
            0x0a00_0000 + i,
        ))))
        .unwrap();
    }
    let rule = (LIVE.load(Ordering::Relaxed) - before) as f64 / f64::from(N);

    println!("heap bytes per TCP flow {tcp:.0}, per UDP flow {udp:.0}, per block rule {rule:.0}");
    // Hash tables grow by doubling, so the figure includes up to 2x slack.
    assert!(tcp < 600.0, "TCP flow costs {tcp:.0} B");
    assert!(udp < 900.0, "UDP flow costs {udp:.0} B");
    assert!(rule < 200.0, "block rule costs {rule:.0} B");
}
