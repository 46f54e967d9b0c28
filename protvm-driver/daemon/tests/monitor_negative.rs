//! Malformed requests on the management and monitor sockets: each gets a
//! JSON error reply (`"ok":false` with a `kind`), changes nothing that
//! `status` or `list` shows, and leaves the connection usable.
//!
//! Needs the `ins` binary beside the test executable (build it with the
//! same profile: `cargo build -p ins`) or in `$INS_BIN`.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::Driver;
use serde_json::Value;

struct Json {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Json {
    fn connect(p: &Path) -> Json {
        let w = UnixStream::connect(p).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Json { w, r }
    }

    fn raw(&mut self, bytes: &[u8]) -> Value {
        self.w.write_all(bytes).unwrap();
        let mut l = String::new();
        self.r.read_line(&mut l).expect("a reply line");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {l:?}"))
    }

    fn req(&mut self, s: &str) -> Value {
        self.raw(format!("{s}\n").as_bytes())
    }
}

/// What must not change: instances (id, pid, state, sockets), mitigations,
/// policy, target, the socket count.
fn snapshot(c: &mut Json) -> (Value, Value) {
    let st = c.req(r#"{"cmd":"status"}"#);
    assert_eq!(st["ok"], true, "{st}");
    let li = c.req(r#"{"cmd":"list"}"#);
    assert_eq!(li["ok"], true, "{li}");
    let insts: Vec<Value> = li["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| serde_json::json!([i["id"], i["pid"], i["state"], i["driver_sockets"]]))
        .collect();
    (
        serde_json::json!([
            st["instances"],
            st["mitigations"],
            st["policy"],
            st["sockets"]
        ]),
        Value::from(insts),
    )
}

#[test]
fn malformed_requests_get_errors_and_change_nothing() {
    let mut d = Driver::start(&["--ctl-max-line", "1024"]);
    d.add_instance(1);
    for sock in ["ctl.sock", "monitor.sock"] {
        let mut c = Json::connect(&d.dir.join(sock));
        // One standing mitigation, so that "nothing changed" has content.
        let r = c.req(r#"{"cmd":"block","prefix":"192.0.2.0/24"}"#);
        assert_eq!(r["ok"], true, "{r}");
        let before = snapshot(&mut c);
        assert_eq!(before.1.as_array().unwrap().len(), 1, "one instance");

        let huge = format!(
            "{{\"cmd\":\"block\",\"prefix\":\"10.1.0.0/16\",\"pad\":\"{}\"}}\n",
            "x".repeat(5000)
        );
        // An overlong line whose tail is a valid command: the tail must
        // not be executed.
        let tail = format!(
            "{}{{\"cmd\":\"block\",\"prefix\":\"10.2.0.0/16\"}}\n",
            "y".repeat(9000)
        );
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("not JSON", b"hello driver\n".to_vec(), "bad-request"),
            (
                "truncated JSON",
                b"{\"cmd\":\"block\",\"prefix\":\"10.0.0.0/8\"\n".to_vec(),
                "bad-request",
            ),
            (
                "invalid UTF-8",
                b"\xff\xfe{\"cmd\":\"list\"}\n".to_vec(),
                "bad-request",
            ),
            ("JSON array", b"[1,2,3]\n".to_vec(), "bad-request"),
            ("JSON string", b"\"status\"\n".to_vec(), "bad-request"),
            (
                "unknown cmd",
                b"{\"cmd\":\"frobnicate\"}\n".to_vec(),
                "bad-request",
            ),
            ("cmd not a string", b"{\"cmd\":5}\n".to_vec(), "bad-request"),
            (
                "missing cmd",
                b"{\"prefix\":\"10.0.0.0/8\"}\n".to_vec(),
                "bad-request",
            ),
            (
                "missing prefix",
                b"{\"cmd\":\"block\"}\n".to_vec(),
                "bad-request",
            ),
            (
                "prefix not a string",
                b"{\"cmd\":\"block\",\"prefix\":42}\n".to_vec(),
                "bad-request",
            ),
            (
                "prefix too long",
                b"{\"cmd\":\"block\",\"prefix\":\"10.0.0.0/33\"}\n".to_vec(),
                "bad-prefix",
            ),
            (
                "prefix host bits",
                b"{\"cmd\":\"block\",\"prefix\":\"10.0.0.1/8\"}\n".to_vec(),
                "bad-prefix",
            ),
            (
                "prefix not an address",
                b"{\"cmd\":\"unblock\",\"prefix\":\"evil.example\"}\n".to_vec(),
                "bad-prefix",
            ),
            (
                "v6 prefix too long",
                b"{\"cmd\":\"block\",\"prefix\":\"::/129\"}\n".to_vec(),
                "bad-prefix",
            ),
            (
                "negative conn rate",
                b"{\"cmd\":\"limit\",\"prefix\":\"10.0.0.0/8\",\"conn_rate\":-5}\n".to_vec(),
                "bad-request",
            ),
            (
                "string byte rate",
                b"{\"cmd\":\"limit\",\"prefix\":\"10.0.0.0/8\",\"byte_rate\":\"fast\"}\n".to_vec(),
                "bad-request",
            ),
            (
                "fractional rate",
                b"{\"cmd\":\"limit\",\"prefix\":\"10.0.0.0/8\",\"conn_rate\":1.5}\n".to_vec(),
                "bad-request",
            ),
            (
                "conn rate overflow",
                b"{\"cmd\":\"limit\",\"prefix\":\"10.0.0.0/8\",\"conn_rate\":99999999999}\n"
                    .to_vec(),
                "bad-request",
            ),
            (
                "id as string",
                b"{\"cmd\":\"stop\",\"id\":\"1\"}\n".to_vec(),
                "bad-request",
            ),
            (
                "negative id",
                b"{\"cmd\":\"drain\",\"id\":-1}\n".to_vec(),
                "bad-request",
            ),
            (
                "unknown instance",
                b"{\"cmd\":\"stop\",\"id\":99}\n".to_vec(),
                "unknown-instance",
            ),
            (
                "missing id",
                b"{\"cmd\":\"drain\"}\n".to_vec(),
                "bad-request",
            ),
            (
                "negative scale",
                b"{\"cmd\":\"scale\",\"n\":-1}\n".to_vec(),
                "bad-request",
            ),
            (
                "spawn count string",
                b"{\"cmd\":\"spawn\",\"count\":\"many\"}\n".to_vec(),
                "bad-request",
            ),
            (
                "spawn count huge",
                b"{\"cmd\":\"spawn\",\"count\":18446744073709551615}\n".to_vec(),
                "bad-request",
            ),
            (
                "bad flow",
                b"{\"cmd\":\"close\",\"flow\":\"x:y\"}\n".to_vec(),
                "bad-request",
            ),
            (
                "negative flows limit",
                b"{\"cmd\":\"flows\",\"limit\":-1}\n".to_vec(),
                "bad-request",
            ),
            (
                "follow not bool",
                b"{\"cmd\":\"flows\",\"follow\":\"yes\"}\n".to_vec(),
                "bad-request",
            ),
            (
                "unknown event type",
                b"{\"cmd\":\"subscribe\",\"types\":[\"bogus\"]}\n".to_vec(),
                "bad-request",
            ),
            (
                "types not array",
                b"{\"cmd\":\"subscribe\",\"types\":\"flow\"}\n".to_vec(),
                "bad-request",
            ),
            ("line over max length", huge.into_bytes(), "bad-request"),
            (
                "overlong line with a command at its end",
                tail.into_bytes(),
                "bad-request",
            ),
        ];
        assert!(cases.len() >= 10);
        for (what, bytes, kind) in &cases {
            let r = c.raw(bytes);
            assert_eq!(r["ok"], false, "{sock}: {what}: {r}");
            assert_eq!(r["kind"], *kind, "{sock}: {what}: {r}");
            assert!(
                r["error"].as_str().is_some_and(|e| !e.is_empty()),
                "{sock}: {what}: error text: {r}"
            );
            let after = snapshot(&mut c);
            assert_eq!(after, before, "{sock}: {what} changed the driver's state");
            let ok = c.req(r#"{"cmd":"list"}"#);
            assert_eq!(ok["ok"], true, "{sock}: good command after {what}: {ok}");
        }
        // Nothing subscribed by the failed subscribe/follow requests.
        let st = c.req(r#"{"cmd":"status"}"#);
        assert_eq!(st["monitor"]["subscribers"], 0, "{st}");
        // A good mitigation still works on the same connection.
        let r = c.req(r#"{"cmd":"unblock","prefix":"192.0.2.0/24"}"#);
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["instances"], 1, "{r}");
        let st = c.req(r#"{"cmd":"status"}"#);
        assert_eq!(st["mitigations"], serde_json::json!([]), "{st}");
        println!(
            "{sock}: {} malformed requests refused, state unchanged",
            cases.len()
        );
    }
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "driver still running"
    );
}

/// `request` as uid/gid 65534 (nobody/nogroup) via setpriv; returns the
/// reply line, or `ERR <python error>` when the connect itself failed.
fn as_nobody(sock: &Path, req: &str) -> String {
    let py = "import socket,sys\n\
              s=socket.socket(socket.AF_UNIX)\n\
              try:\n s.connect(sys.argv[1])\nexcept OSError as e:\n print('ERR', e.errno); sys.exit(0)\n\
              s.sendall(sys.argv[2].encode()+b'\\n')\n\
              print(s.makefile().readline().strip())";
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            py,
        ])
        .arg(sock)
        .arg(req)
        .output()
        .expect("setpriv (util-linux) and python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn monitor_socket_mode_group_and_peer_credentials() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to act as another uid");
        return;
    }
    // Group access for gid 65534 on monitor.sock; ctl.sock stays 0600.
    let d = Driver::start(&["--monitor-mode", "660", "--monitor-group", "nogroup"]);
    let mon = d.dir.join("monitor.sock");
    common::wait_for(|| mon.exists(), "monitor.sock");
    {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(&mon).unwrap();
        assert_eq!((m.mode() & 0o777, m.gid()), (0o660, 65534));
    }
    std::fs::set_permissions(&d.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let r = as_nobody(&mon, r#"{"cmd":"status"}"#);
    let v: Value = serde_json::from_str(&r).unwrap_or_else(|e| panic!("{e}: {r}"));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["monitor"]["socket"]["group"], 65534, "{v}");
    // ctl.sock (0600, root's) is closed to nobody by the kernel.
    let r = as_nobody(&d.dir.join("ctl.sock"), r#"{"cmd":"status"}"#);
    assert_eq!(r, "ERR 13", "EACCES on ctl.sock");
    let log = d.log_text();
    assert!(
        log.contains("uid=65534 gid=65534 sock=\"monitor\"")
            || log.contains("uid=65534 gid=65534 sock=monitor"),
        "peer credentials logged:\n{log}"
    );

    // Mode 0606 (other access, group none): the kernel lets nobody in by
    // the other bits; a group-only mode 0660 with root's group does not.
    let d2 = Driver::start(&["--monitor-mode", "660"]);
    std::fs::set_permissions(&d2.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let r = as_nobody(&d2.dir.join("monitor.sock"), r#"{"cmd":"status"}"#);
    assert_eq!(r, "ERR 13", "nobody is not in root's group");

    // The daemon's own check (SO_PEERCRED): a peer the kernel admits
    // through a supplementary group (root's, gid 0) but whose primary gid
    // is not the socket's group is refused with a JSON error (sent at once) and logged.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--groups", "0", "/usr/bin/python3", "-c"])
        .arg("import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nprint(s.makefile().readline().strip())")
        .arg(d2.dir.join("monitor.sock"))
        .output()
        .unwrap();
    let r = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let v: Value = serde_json::from_str(&r)
        .unwrap_or_else(|e| panic!("{e}: {r:?} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["kind"], "permission-denied", "{v}");
    assert!(
        d2.log_text().contains("controller refused"),
        "refusal logged"
    );

    let d3 = Driver::start(&["--monitor-mode", "0"]);
    assert!(
        !d3.dir.join("monitor.sock").exists(),
        "--monitor-mode 0: no socket"
    );
}
