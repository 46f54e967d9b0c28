//! scale 1→4→2 under a bounded load, against the real binaries.
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;

struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `clients` threads doing sequential GETs, each paced to at most
    /// 50 requests per second.
    fn start(port: u16, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed, errors) =
                    (stop.clone(), ok.clone(), failed.clone(), errors.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match get(port) {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                errors.lock().unwrap().push(e);
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            errors,
            threads,
        }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
    }
}

#[test]
fn scale_1_4_2_under_load() {
    let mut ins = Ins::new("scale");
    ins.ok(&["up", "--instances", "1"]);
    let port = free_port();
    ins.serve(port);
    let load = Load::start(port, 2);
    std::thread::sleep(Duration::from_millis(500));

    let (ok0, f0) = load.counts();
    let out = ins.ok(&["scale", "4"]);
    assert!(out.contains("scaled to 4"), "{out}");
    assert_eq!(out.matches(" live").count(), 3, "progress lines: {out}");
    std::thread::sleep(Duration::from_millis(500));
    let (ok1, f1) = load.counts();
    assert!(ok1 > ok0, "no requests served while scaling up");
    assert_eq!(
        f1 - f0,
        0,
        "failed requests during scale-up: {:?}",
        load.errors.lock().unwrap()
    );
    // The listener is replicated onto every new instance (stats arrive
    // with the next heartbeat, once a second).
    let until = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let l = ins.list();
        assert_eq!(l.len(), 4);
        if l.iter().all(|i| i["listeners"].as_u64() == Some(1)) {
            break;
        }
        assert!(std::time::Instant::now() < until, "{l:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let out = ins.ok(&["scale", "2"]);
    assert!(out.contains("draining"), "progress lines: {out}");
    assert_eq!(out.matches(" stopped").count(), 2, "progress lines: {out}");
    std::thread::sleep(Duration::from_millis(500));
    let (ok2, f2) = load.counts();
    assert!(ok2 > ok1);
    let errors = load.errors.lock().unwrap().clone();
    eprintln!(
        "scale-up: {} ok, 0 failed; scale-down: {} ok, {} failed {errors:?}",
        ok1 - ok0,
        ok2 - ok1,
        f2 - f1
    );
    load.finish();
    assert_eq!(ins.list().len(), 2);
    // After the scale-down, every request succeeds again.
    for i in 0..20 {
        get(port).unwrap_or_else(|e| panic!("fetch {i} after scale-down: {e}"));
    }
    assert_eq!(f2 - f1, 0, "failed requests during scale-down: {errors:?}");
}

#[test]
fn rotation_replaces_instances_without_failed_requests() {
    let mut ins = Ins::new("rotate");
    std::fs::create_dir_all(&ins.dir).unwrap();
    let p = ins.dir.join("policy.toml");
    std::fs::write(&p, "rotate_s = 1\ndrain_timeout_ms = 3000\n").unwrap();
    ins.ok(&["up", "--instances", "2", "--policy", p.to_str().unwrap()]);
    let port = free_port();
    ins.serve(port);
    let first: Vec<u64> = ins
        .list()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    let load = Load::start(port, 2);
    let t0 = std::time::Instant::now();
    // Both original instances replaced.
    loop {
        let l = ins.list();
        let ids: Vec<u64> = l.iter().map(|i| i["id"].as_u64().unwrap()).collect();
        if !ids.iter().any(|i| first.contains(i)) && l.len() >= 2 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "not rotated: {first:?} → {ids:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, failed) = load.counts();
    let errors = load.errors.lock().unwrap().clone();
    load.finish();
    eprintln!("rotation: {ok} ok, {failed} failed in {:?}", t0.elapsed());
    assert!(ok > 0);
    assert_eq!(failed, 0, "failed requests during rotation: {errors:?}");
}
