//! Autoscale and the policy file, against the real binaries.
mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn bad_policy_file_is_a_clear_error_and_starts_nothing() {
    let ins = Ins::new("badpolicy");
    std::fs::create_dir_all(&ins.dir).unwrap();
    let p = ins.dir.join("policy.toml");
    std::fs::write(&p, "max_instances = 2\nmin_instances = 3\n").unwrap();
    let o = ins.ctl(&["up", "--policy", p.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("min_instances = 3 is above max_instances = 2"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&p, "max_instancez = 2\n").unwrap();
    let o = ins.ctl(&["up", "--policy", p.to_str().unwrap()]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("max_instancez"), "{}", stderr(&o));
    assert_eq!(code(&ins.ctl(&["status"])), 3, "nothing may be running");
}

#[test]
fn autoscale_spawns_when_loaded_and_retires_when_idle() {
    let mut ins = Ins::new("autoscale");
    std::fs::create_dir_all(&ins.dir).unwrap();
    let p = ins.dir.join("policy.toml");
    std::fs::write(
        &p,
        "autoscale = true\nscale_up_at = 0.5\nmin_instances = 1\nmax_instances = 2\nidle_retire_s = 2\n",
    )
    .unwrap();
    ins.ok(&[
        "up",
        "--instances",
        "1",
        "--policy",
        p.to_str().unwrap(),
        "--",
        "--ins-arg=--max-sockets=64",
        "--ins-arg=--heartbeat-ms=200",
    ]);
    let port = free_port();
    ins.serve(port);
    assert_eq!(ins.list().len(), 1);
    // 40 idle connections: 41 of 64 sockets, above half. (Opening them
    // takes seconds even natively: http.server's backlog is 5.)
    let t0 = Instant::now();
    let held: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    eprintln!("40 connections opened in {:?}", t0.elapsed());
    loop {
        let l = ins.list();
        if l.len() == 2 && l.iter().all(|i| i["heartbeat"] == true) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no second instance: {l:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "autoscale spawned the second instance after {:?}",
        t0.elapsed()
    );
    // It must not go beyond max_instances.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ins.list().len(), 2);
    get(port).expect("fetch while scaled out");
    drop(held);
    // Idle for idle_retire_s: back to min_instances.
    let t1 = Instant::now();
    loop {
        let l = ins.list();
        if l.len() == 1 {
            break;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(15),
            "idle instance not retired: {l:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    get(port).expect("fetch after retiring");
}
