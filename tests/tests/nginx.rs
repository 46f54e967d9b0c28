//! nginx (Debian package; master + 2 workers, sendfile, keep-alive) serving
//! static files through INS: byte-for-byte fetches, reload under load,
//! graceful quit without stuck connections.

use std::process::Command;
use std::time::Duration;

use ins_e2e::*;

#[test]
fn nginx_serves_static_files_byte_for_byte() {
    let _g = serial();
    let ins = Ins::start(1);
    let ng = Nginx::start(Some(&ins), &NginxOpts::default());
    let out = TempDir::new("fetch");
    // One curl per file (new connection each).
    for (name, content) in &ng.files {
        let url = format!("http://127.0.0.1:{}/{name}", ng.port);
        let (o, body) = curl_fetch(Command::new(require("curl")), &url, &out.path().join(name));
        assert!(
            o.ok(),
            "curl {url} failed\n{o}\n{}\n{}",
            ng.diagnostics(),
            ins.diagnostics()
        );
        assert_eq!(body.len(), content.len(), "length of {name}");
        assert!(
            body == *content,
            "{name}: fetched bytes differ from the file"
        );
    }
    // All files over one keep-alive connection, twice.
    let mut c = Command::new(require("curl"));
    c.args([
        "-sS",
        "--fail",
        "--max-time",
        "60",
        "-w",
        "%{num_connects}\\n",
    ]);
    for round in 0..2 {
        for (name, _) in &ng.files {
            c.arg(format!("http://127.0.0.1:{}/{name}", ng.port))
                .arg("-o")
                .arg(out.path().join(format!("ka-{round}-{name}")));
        }
    }
    let o = run(c, Duration::from_secs(90));
    assert!(o.ok(), "keep-alive curl failed\n{o}\n{}", ng.diagnostics());
    let connects: u32 = o
        .stdout
        .lines()
        .filter_map(|l| l.trim().parse::<u32>().ok())
        .sum();
    assert_eq!(
        connects, 1,
        "curl should have reused one keep-alive connection: {o}"
    );
    for round in 0..2 {
        for (name, content) in &ng.files {
            let body =
                std::fs::read(out.path().join(format!("ka-{round}-{name}"))).unwrap_or_default();
            assert!(
                body == *content,
                "keep-alive fetch {round} of {name}: bytes differ"
            );
        }
    }
    // A range request (sendfile with an offset).
    let o = run(
        {
            let mut c = Command::new(require("curl"));
            c.args(["-sS", "--fail", "-r", "1000000-1000099"])
                .arg(format!("http://127.0.0.1:{}/10m.bin", ng.port))
                .arg("-o")
                .arg(out.path().join("range"));
            c
        },
        Duration::from_secs(30),
    );
    assert!(o.ok(), "range curl failed\n{o}");
    let body = std::fs::read(out.path().join("range")).unwrap_or_default();
    assert!(
        body == ng.file("10m.bin")[1_000_000..1_000_100],
        "range bytes differ"
    );
    // The shim, not the host stack, holds nginx's sockets: nginx owns no
    // INET sockets at all.
    let nginx_inet = tcp_sockets_of(&[ng.master.pid()]);
    assert!(
        nginx_inet.is_empty(),
        "nginx master holds host TCP sockets: {nginx_inet:?}"
    );
}

#[test]
fn nginx_reload_under_load_keeps_serving() {
    let _g = serial();
    let ins = Ins::start(1);
    let ng = Nginx::start(
        Some(&ins),
        &NginxOpts {
            big_files: false,
            ..NginxOpts::default()
        },
    );
    let load = Load::start(ng.addr(), "/small.html", ng.file("small.html").to_vec(), 3);
    std::thread::sleep(Duration::from_millis(1000));
    let before = load.snapshot();
    for i in 0..2 {
        let o = ng.signal("reload");
        assert!(o.ok(), "nginx -s reload #{i} failed\n{o}");
        std::thread::sleep(Duration::from_millis(1500));
    }
    let st = load.finish();
    println!(
        "reload under load: {} requests ok ({} before the first reload), {} failed {:?}",
        st.ok, before.ok, st.failed, st.errors
    );
    let el = ng.error_log();
    assert!(
        el.matches("reconfiguring").count() >= 2,
        "nginx did not log two reloads:\n{}",
        ng.diagnostics()
    );
    assert!(
        before.ok > 0,
        "no request succeeded before the reload: {before:?}\n{}",
        ins.diagnostics()
    );
    assert!(
        st.ok > before.ok + 10,
        "serving stopped after the reload: {st:?}"
    );
    assert_eq!(
        st.failed,
        0,
        "requests failed during reload: {st:?}\n{}",
        ng.diagnostics()
    );
    // New workers serve.
    let r = http_get(ng.addr(), "/small.html", Duration::from_secs(5)).expect("GET after reload");
    assert_eq!(r.status, 200);
}

#[test]
fn nginx_quit_leaves_no_stuck_connections() {
    let _g = serial();
    let mut ins = Ins::start(1);
    let base_driver = ins.driver_socket_fds();
    let pids = ins.instance_pids();
    let base_inst = tcp_sockets_of(&pids);
    assert!(
        base_inst.is_empty(),
        "instance holds TCP sockets before any app: {base_inst:?}"
    );
    let mut ng = Nginx::start(
        Some(&ins),
        &NginxOpts {
            big_files: true,
            ..NginxOpts::default()
        },
    );
    // Traffic: fetches, and idle keep-alive connections left open.
    let mut kept = Vec::new();
    for _ in 0..8 {
        let mut k = KeepAlive::connect(ng.addr(), Duration::from_secs(5)).expect("connect");
        let r = k.get("/1m.bin").expect("GET /1m.bin");
        assert!(
            r.status == 200 && r.body == ng.file("1m.bin"),
            "keep-alive fetch differs"
        );
        kept.push(k);
    }
    let during = tcp_sockets_of(&pids);
    assert!(
        during.len() >= 9,
        "expected the listener and 8 connections in the instance, ss shows:\n{}",
        during.join("\n")
    );
    let o = ng.signal("quit");
    assert!(o.ok(), "nginx -s quit failed\n{o}");
    let st = ng.master.wait_timeout(Duration::from_secs(20));
    assert!(
        st.is_some(),
        "nginx did not exit within 20 s of -s quit\n{}",
        ng.diagnostics()
    );
    // Every kept connection was closed by nginx (EOF to the client).
    for (i, k) in kept.iter_mut().enumerate() {
        let r = k.get("/small.html");
        assert!(r.is_err(), "connection {i} still served after nginx quit");
    }
    drop(kept);
    let left = wait_for(Duration::from_secs(10), || {
        let s: Vec<String> = tcp_sockets_of(&pids)
            .into_iter()
            .filter(|l| !l.starts_with("TIME-WAIT"))
            .collect();
        s.is_empty().then_some(())
    });
    assert!(
        left.is_some(),
        "instance still holds TCP sockets 10 s after nginx quit:\n{}\n{}",
        tcp_sockets_of(&pids).join("\n"),
        ins.diagnostics()
    );
    let drv = wait_for(Duration::from_secs(10), || {
        (ins.driver_socket_fds() <= base_driver).then_some(())
    });
    assert!(
        drv.is_some(),
        "driver holds {} socket fds 10 s after nginx quit (before nginx: {base_driver})\n{}",
        ins.driver_socket_fds(),
        ins.diagnostics()
    );
    assert!(ins.driver_alive(), "driver died");
}

/// Debian's default site listens on both families (`listen 80
/// default_server; listen [::]:80 default_server;`): nginx binds
/// `0.0.0.0:P`, then `[::]:P` with `IPV6_V6ONLY` (its `ipv6only=on`
/// default), which Linux allows. Natively first (the config is valid),
/// then under the shim: it starts and serves the same bytes over
/// 127.0.0.1 and ::1.
#[test]
fn nginx_debian_default_site_dual_stack() {
    let _g = serial();
    let opts = NginxOpts {
        big_files: false,
        listen: "listen @PORT@ default_server;\n        listen [::]:@PORT@ default_server;".into(),
        ..NginxOpts::default()
    };
    let fetch_both = |ng: &Nginx, what: &str, diag: &dyn Fn() -> String| {
        for host in ["127.0.0.1", "[::1]"] {
            let url = format!("http://{host}:{}/small.html", ng.port);
            let o = run(
                {
                    let mut c = Command::new(require("curl"));
                    c.args(["-sS", "--fail", "--max-time", "10", &url]);
                    c
                },
                Duration::from_secs(20),
            );
            assert!(
                o.ok(),
                "{what}: curl {url} failed\n{o}\n{}\n{}",
                ng.diagnostics(),
                diag()
            );
            assert_eq!(o.stdout.as_bytes(), ng.file("small.html"), "{what}: {url}");
        }
    };
    {
        let ng = Nginx::start(None, &opts);
        fetch_both(&ng, "native", &String::new);
    }
    let ins = Ins::start(1);
    let ng = Nginx::start(Some(&ins), &opts);
    fetch_both(&ng, "under the shim", &|| ins.diagnostics());
    let el = ng.error_log();
    assert!(
        !el.contains("bind()"),
        "nginx logged a bind failure under the shim:\n{el}"
    );
}
