//! Failover: two instances, nginx under load, `kill -9` of one instance.
//! nginx keeps serving new connections through the other, connections on
//! the dead one are reset, the driver stays up.

use std::time::Duration;

use ins_e2e::*;

#[test]
fn kill_one_instance_under_load() {
    let _g = serial();
    let mut ins = Ins::start_with(2, &["--heartbeat-timeout-ms", "1000"]);
    let ng = Nginx::start(
        Some(&ins),
        &NginxOpts {
            big_files: false,
            ..NginxOpts::default()
        },
    );
    let pids = ins.instance_pids();
    let listening = |pid: u32| {
        tcp_sockets_of(&[pid])
            .iter()
            .any(|l| l.starts_with("LISTEN") && l.contains(&format!(":{} ", ng.port)))
    };
    let both = wait_for(Duration::from_secs(10), || {
        (listening(pids[0]) && listening(pids[1])).then_some(())
    });
    assert!(
        both.is_some(),
        "the listener is not replicated on both instances\n{}",
        ins.diagnostics()
    );
    // Idle keep-alive connections spread over both instances.
    let mut kept = Vec::new();
    for _ in 0..24 {
        let mut k = KeepAlive::connect(ng.addr(), Duration::from_secs(5)).expect("connect");
        let r = k.get("/small.html").expect("first GET");
        assert_eq!(r.status, 200);
        kept.push(k);
    }
    let per_instance: Vec<usize> = pids
        .iter()
        .map(|p| {
            tcp_sockets_of(&[*p])
                .iter()
                .filter(|l| l.starts_with("ESTAB"))
                .count()
        })
        .collect();
    println!("established connections per instance before the kill: {per_instance:?}");
    let load = Load::start(ng.addr(), "/small.html", ng.file("small.html").to_vec(), 2);
    std::thread::sleep(Duration::from_millis(800));
    let before = load.snapshot();
    ins.instances[0].kill();
    std::thread::sleep(Duration::from_millis(2500));
    let settle = load.snapshot();
    std::thread::sleep(Duration::from_millis(2000));
    let st = load.finish();
    println!(
        "load: before kill {} ok / {} failed; within 2.5 s after the kill {} ok / {} failed {:?}; afterwards {} ok / {} failed",
        before.ok,
        before.failed,
        settle.ok - before.ok,
        settle.failed - before.failed,
        settle.errors,
        st.ok - settle.ok,
        st.failed - settle.failed
    );
    assert!(
        ins.driver_alive(),
        "the driver died when an instance was killed\n{}",
        ins.diagnostics()
    );
    assert!(
        before.failed == 0 && before.ok > 0,
        "load failed before the kill: {before:?}"
    );
    assert!(
        st.ok > settle.ok + 10,
        "nginx stopped serving after the kill: {st:?}\n{}",
        ins.diagnostics()
    );
    assert_eq!(
        st.failed, settle.failed,
        "new connections failed after the failover settled: {st:?}"
    );
    for i in 0..30 {
        let r = http_get(ng.addr(), "/small.html", Duration::from_secs(5));
        assert!(
            matches!(&r, Ok(r) if r.status == 200),
            "fetch {i} after failover: {r:?}"
        );
    }
    // Kept connections: those on the dead instance are gone, the others
    // still serve.
    let (mut alive, mut dead) = (0, 0);
    for k in kept.iter_mut() {
        match k.get("/small.html") {
            Ok(r) if r.status == 200 => alive += 1,
            _ => dead += 1,
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let resets = ng.error_log().matches("Connection reset by peer").count();
    println!(
        "kept connections: {alive} still served, {dead} lost; nginx logged {resets} connection resets"
    );
    assert!(
        dead >= 1 && alive >= 1,
        "expected kept connections on both instances: {alive} alive, {dead} lost"
    );
    assert!(
        resets >= 1,
        "nginx saw no ECONNRESET on the dead instance's connections\n{}\n{}",
        ng.diagnostics(),
        ins.diagnostics()
    );
    assert!(ins.driver_alive(), "the driver died");
}
