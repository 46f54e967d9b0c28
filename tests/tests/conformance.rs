//! Differential conformance: tests/c/conformance.c runs a scripted sequence
//! of valid and invalid socket calls natively and under the shim; every
//! step's return value and errno must match. Every difference is printed.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use ins_e2e::*;

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
    let closed = free_port().to_string();
    let mut n = Command::new(c_program("conformance"));
    n.arg(&closed);
    let native = run(n, Duration::from_secs(120));
    assert!(native.ok(), "conformance failed natively\n{native}");
    let mut s = ins.shim_cmd(c_program("conformance"));
    s.arg(&closed);
    let shim = run(s, Duration::from_secs(300));
    let (order, nmap) = steps(&native.stdout);
    let (_, smap) = steps(&shim.stdout);
    assert!(
        order.len() > 150,
        "the native script printed only {} steps",
        order.len()
    );
    let mut diffs = Vec::new();
    for k in &order {
        let nv = &nmap[k];
        match smap.get(k) {
            Some(sv) if sv == nv => {}
            Some(sv) => diffs.push(format!("{k}:\n    native: {nv}\n    shim:   {sv}")),
            None => diffs.push(format!("{k}:\n    native: {nv}\n    shim:   <missing: the program stopped or crashed before this step>")),
        }
    }
    for k in smap.keys() {
        if !nmap.contains_key(k) {
            diffs.push(format!("{k}: only under the shim: {}", smap[k]));
        }
    }
    println!(
        "conformance: {} steps, {} differences",
        order.len(),
        diffs.len()
    );
    for d in &diffs {
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
