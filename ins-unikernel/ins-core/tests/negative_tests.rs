//! Inputs the core must refuse or survive without panicking.

use ins_core::config::{ConfigError, InstanceConfig};
use ins_core::flow::{CloseReason, FlowConfig, FlowKey, FlowState, FlowTable, Proto};
use ins_core::mitigation::{LimitSpec, MitigationError, Mitigations, Prefix, Rate};
use ins_core::profile::TcpSettings;

#[test]
fn bad_prefixes_are_errors() {
    for s in [
        "",
        "/",
        "1.2.3.4/",
        "1.2.3.4/-1",
        "1.2.3.4/33",
        "::/129",
        "x/8",
        "1.2.3.4/8/8",
        "1.2.3.4/256",
    ] {
        assert!(s.parse::<Prefix>().is_err(), "{s:?} parsed");
    }
}

#[test]
fn zero_rates_and_full_tables_are_refused() {
    let mut m = Mitigations::new(1);
    let p: Prefix = "10.0.0.0/8".parse().unwrap();
    let zero_burst = LimitSpec {
        bytes: Some(Rate {
            per_sec: 5,
            burst: 0,
        }),
        connections: None,
    };
    assert_eq!(m.limit(p, zero_burst, 0), Err(MitigationError::ZeroRate));
    assert!(m.list().limits.is_empty());
    m.block(p).unwrap();
    assert_eq!(
        m.block("11.0.0.0/8".parse().unwrap()),
        Err(MitigationError::TooManyRules(1))
    );
}

#[test]
fn huge_times_and_sizes_do_not_overflow() {
    let mut m = Mitigations::new(4);
    let p: Prefix = "10.0.0.0/8".parse().unwrap();
    let spec = LimitSpec {
        bytes: Some(Rate {
            per_sec: u64::MAX,
            burst: u64::MAX,
        }),
        connections: None,
    };
    m.limit(p, spec, 0).unwrap();
    let peer = "10.1.1.1".parse().unwrap();
    assert_eq!(m.bytes_allowance(peer, u64::MAX, usize::MAX), usize::MAX);
    assert!(m.next_refill(peer, u64::MAX, usize::MAX).is_some());

    let mut t = FlowTable::new(FlowConfig {
        active_timeout_ns: u64::MAX,
        ..FlowConfig::default()
    });
    let key = FlowKey {
        proto: Proto::Udp,
        local: "1.1.1.1:1".parse().unwrap(),
        remote: "2.2.2.2:2".parse().unwrap(),
    };
    let id = t.open(key, FlowState::Established, u64::MAX - 1).unwrap();
    t.account_in(id, u64::MAX, u64::MAX);
    t.account_in(id, u64::MAX, u64::MAX);
    let mut out = Vec::new();
    t.due_timeouts(u64::MAX, &mut out);
    // At the end of time the idle deadline saturates, so the flow may have
    // expired already; either way its final record has saturated counters.
    out.extend(t.close(id, CloseReason::Error, 0));
    let last = out.last().expect("a final record");
    assert_eq!((last.bytes_in, last.segs_in), (u64::MAX, 2));
    assert!(t.is_empty());
    assert_eq!(t.due_timeouts(u64::MAX, &mut out), 0, "nothing re-fires");
}

#[test]
fn invalid_settings_and_config_are_reported() {
    let s = TcpSettings {
        keepidle: Some(0),
        ..TcpSettings::default()
    };
    assert!(s.validate().is_err());
    let c = InstanceConfig {
        accept_batch: 0,
        ..InstanceConfig::default()
    };
    assert_eq!(c.validate(), Err(ConfigError::Zero("accept_batch")));
}
