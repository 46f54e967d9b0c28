//! Differential conformance: tests/c/conformance.c runs a scripted sequence
//! of valid and invalid socket calls natively and under the shim; every
//! step's return value and errno must match. Every difference is printed.
//!
//! [`KNOWN_GAPS`] names the steps INS does not match yet, each with the
//! reason; their differences are printed but do not fail the test, and a
//! known gap that starts matching fails it (so the list stays true).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use ins_e2e::*;

/// Steps where INS differs from Linux today, and why. Keep in step with the
/// README's "Known gaps".
const KNOWN_GAPS: &[(&str, &str)] = &[
    (
        "udp-recv-after-icmp",
        "an ICMP error on a connected UDP socket is not carried over the ring \
         (no per-datagram error message yet): recv gives EAGAIN, not ECONNREFUSED",
    ),
    (
        "udp-connect-unspec",
        "disconnecting a connected UDP socket (connect AF_UNSPEC) has no ring \
         message or Stack call yet: EOPNOTSUPP",
    ),
    (
        "udp-getpeername-disconnected",
        "follows from udp-connect-unspec: the socket stays connected",
    ),
    (
        "tcp-sendmsg-timestamping-tx",
        "by design: INS carries no transmit timestamps, so a TCP sendmsg asking \
         for them (SO_TIMESTAMPING cmsg) fails with EOPNOTSUPP instead of \
         sending without them",
    ),
    (
        "tcp-sendmsg-timestamping-tx-recv",
        "follows from tcp-sendmsg-timestamping-tx: nothing was sent",
    ),
];

/// Open descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn steps(out: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let mut order = Vec::new();
    let mut map = BTreeMap::new();
    for l in out.lines() {
        if let Some((k, v)) = l.split_once(": ") {
            if !map.contains_key(k) {
                order.push(k.to_string());
            }
            map.insert(k.to_string(), v.to_string());
        }
    }
    (order, map)
}

#[test]
fn socket_calls_match_linux() {
    let _g = serial();
    let ins = Ins::start(1);
    // Outside the ephemeral range: the native run's own sockets (and a
    // connect's source port) cannot take it (a refused connect once
    // reached a listener of the program's own there).
    let closed = closed_port().to_string();
    let mut n = Command::new(c_program("conformance"));
    n.arg(&closed);
    let native = run(n, Duration::from_secs(120));
    assert!(native.ok(), "conformance failed natively\n{native}");
    let driver_fds = fd_count(ins.driver.pid());
    let mut s = ins.shim_cmd(c_program("conformance"));
    s.arg(&closed);
    let shim = run(s, Duration::from_secs(300));
    // The program's sockets are gone with it; a descriptor it passed with
    // SCM_RIGHTS on a TCP socket must not have reached the driver.
    let settled = wait_for(Duration::from_secs(10), || {
        (fd_count(ins.driver.pid()) <= driver_fds).then_some(())
    });
    assert!(
        settled.is_some(),
        "the driver holds {} fds after the program exited, {driver_fds} before",
        fd_count(ins.driver.pid())
    );
    let (order, nmap) = steps(&native.stdout);
    let (_, smap) = steps(&shim.stdout);
    assert!(
        order.len() > 150,
        "the native script printed only {} steps",
        order.len()
    );
    let mut diffs = Vec::new();
    let mut known = Vec::new();
    for k in &order {
        let nv = &nmap[k];
        let gap = KNOWN_GAPS.iter().find(|(step, _)| step == k);
        match (smap.get(k), gap) {
            (Some(sv), Some((_, why))) if sv != nv => {
                known.push(format!("{k} (known gap: {why}):\n    native: {nv}\n    shim:   {sv}"))
            }
            (Some(_), Some(_)) => diffs.push(format!(
                "{k}: listed in KNOWN_GAPS but now matches Linux: remove it from the list"
            )),
            (Some(sv), None) if sv == nv => {}
            (Some(sv), None) => diffs.push(format!("{k}:\n    native: {nv}\n    shim:   {sv}")),
            (None, _) => diffs.push(format!("{k}:\n    native: {nv}\n    shim:   <missing: the program stopped or crashed before this step>")),
        }
    }
    for k in smap.keys() {
        if !nmap.contains_key(k) {
            diffs.push(format!("{k}: only under the shim: {}", smap[k]));
        }
    }
    println!(
        "conformance: {} steps, {} differences, {} known gaps",
        order.len(),
        diffs.len(),
        known.len()
    );
    for d in known.iter().chain(&diffs) {
        println!("{d}");
    }
    assert!(
        diffs.is_empty() && shim.ok(),
        "{} of {} steps differ under the shim (exit {:?}):\n{}\n--- shim stderr\n{}",
        diffs.len(),
        order.len(),
        shim.status,
        diffs.join("\n"),
        shim.stderr
    );
}
