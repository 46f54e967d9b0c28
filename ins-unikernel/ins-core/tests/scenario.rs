//! An executor-shaped walk through the public API with simulated time: flows
//! from an attacking prefix are rate-limited, then blocked and closed as
//! Mitigated, while a legitimate client's flow keeps its interim records.

use std::net::{IpAddr, SocketAddr};

use ins_core::config::InstanceConfig;
use ins_core::flow::{CloseReason, FlowKey, FlowState, FlowTable, Proto, RecordKind};
use ins_core::mitigation::{Admit, LimitSpec, Mitigations, Prefix, Rate};

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

#[test]
fn attack_rate_limited_then_blocked() {
    let cfg = InstanceConfig::default();
    cfg.validate().unwrap();
    let mut flows = FlowTable::new(cfg.flow_config());
    let mut mit = Mitigations::new(cfg.max_mitigation_rules);
    let local: SocketAddr = "192.0.2.1:80".parse().unwrap();
    let attackers: Prefix = "198.51.100.0/24".parse().unwrap();
    let spec = LimitSpec {
        connections: Some(Rate {
            per_sec: 20,
            burst: 10,
        }),
        bytes: Some(Rate {
            per_sec: 200_000,
            burst: 20_000,
        }),
    };
    assert!(mit.limit(attackers, spec, 0).unwrap());

    let legit: SocketAddr = "203.0.113.9:50000".parse().unwrap();
    assert_eq!(mit.admit_connection(legit.ip(), 0), Admit::Accept);
    let legit_id = flows
        .open(
            FlowKey {
                proto: Proto::Tcp,
                local,
                remote: legit,
            },
            FlowState::Established,
            0,
        )
        .unwrap();

    // 5 s of an attacker opening a connection every 2 ms and sending 4 KiB
    // on each open one every 2 ms; the legitimate client sends 1 KiB/ms.
    let mut attack_ids = Vec::new();
    let mut attack_bytes = 0u64;
    let mut records = Vec::new();
    let mut now = 0;
    while now < 5 * S {
        now += MS;
        flows.account_in(legit_id, 1024, now);
        if now % (2 * MS) == 0 {
            let peer =
                SocketAddr::new(IpAddr::from([198, 51, 100, (now / MS % 200) as u8]), 40_000);
            if mit.admit_connection(peer.ip(), now) == Admit::Accept {
                let id = flows
                    .open(
                        FlowKey {
                            proto: Proto::Tcp,
                            local,
                            remote: peer,
                        },
                        FlowState::Established,
                        now,
                    )
                    .unwrap();
                attack_ids.push((id, peer));
            }
            for &(id, peer) in &attack_ids {
                let n = mit.bytes_allowance(peer.ip(), now, 4096);
                flows.account_in(id, n as u64, now);
                attack_bytes += n as u64;
            }
        }
        flows.due_timeouts(now, &mut records);
    }
    // 20/s for 5 s plus a burst of 10
    assert!(
        (100..=115).contains(&attack_ids.len()),
        "{}",
        attack_ids.len()
    );
    let expect = 200_000.0 * 5.0 + 20_000.0;
    let err = (attack_bytes as f64 - expect).abs() / expect;
    println!(
        "admitted {} attack connections, {attack_bytes} attack bytes in 5 s",
        attack_ids.len()
    );
    assert!(err < 0.03, "attack bytes {attack_bytes}");

    // The operator blocks the prefix: new connections refused, existing ones
    // are closed by the executor with reason Mitigated.
    assert!(mit.block(attackers).unwrap());
    assert_eq!(
        mit.admit_connection("198.51.100.77".parse().unwrap(), now),
        Admit::RefuseBlocked
    );
    let mut finals = Vec::new();
    for &(id, peer) in &attack_ids {
        if mit.is_blocked(peer.ip()) {
            finals.extend(flows.close(id, CloseReason::Mitigated, now));
        }
    }
    assert_eq!(finals.len(), attack_ids.len());
    assert_eq!(finals.iter().map(|f| f.bytes_in).sum::<u64>(), attack_bytes);
    assert_eq!(flows.len(), 1);

    // The legitimate flow got no interim record before 10 s, then one.
    assert!(records.iter().all(|r| r.id != legit_id));
    while now < 10 * S {
        now += 100 * MS;
        flows.due_timeouts(now, &mut records);
    }
    let legit_recs: Vec<_> = records.iter().filter(|r| r.id == legit_id).collect();
    assert_eq!(legit_recs.len(), 1);
    assert_eq!(legit_recs[0].kind, RecordKind::Interim);
    assert_eq!(legit_recs[0].bytes_in, 5000 * 1024);
}
