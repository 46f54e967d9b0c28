//! Live connection telemetry from the executor: periodic reports on the
//! telemetry timer, on-demand reports (`Mitigate{Report}`), the final
//! report before the flow record, and the timings and first-byte
//! statistics they carry. Runs over the in-memory stack of `common`.

mod common;

use common::*;
use ins_core::Errno;
use ins_core::config::InstanceConfig;
use ins_core::stack::Readiness;
use ins_protocol::msg::{ConnTelemetry, Mitigation, Msg, TelemetryCause, telemetry::flags};

const MS: u64 = 1_000_000;

fn tel_cfg() -> InstanceConfig {
    InstanceConfig {
        telemetry: true,
        telemetry_interval_ns: 100 * MS,
        telemetry_sample_bytes: 64,
        ..cfg()
    }
}

fn reports(frames: &[Vec<u8>]) -> Vec<ConnTelemetry> {
    decode(frames)
        .into_iter()
        .filter_map(|m| match m {
            Msg::Telemetry(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn tick(rig: &mut Rig, to: u64) -> Vec<Vec<u8>> {
    rig.now = to;
    rig.ex.on_tick(rig.now, 5_000_000, &mut rig.out);
    rig.out.take()
}

#[test]
fn periodic_on_demand_and_final_reports() {
    let mut rig = Rig::new(tel_cfg());
    rig.listen(4);
    let t0 = rig.now;
    let (id, h) = accept_one(&mut rig, "203.0.113.5:4000");
    assert!(
        rig.ex.next_deadline().is_some_and(|d| d <= t0 + 100 * MS),
        "the telemetry timer is armed"
    );

    // 10 ms in: the request arrives. 30 ms in: the response goes out.
    rig.now = t0 + 10 * MS;
    rig.ex
        .stack_mut()
        .socks
        .get_mut(&h)
        .unwrap()
        .rx
        .extend(b"GET / HTTP/1.1\r\n\r\n");
    rig.event(h, Readiness::READABLE);
    rig.now = t0 + 30 * MS;
    let body = vec![0xabu8; 100];
    assert!(
        rig.send(Msg::Data {
            sock: id,
            bytes: &body
        })
        .is_empty()
    );

    // The timer fires at 100 ms: one periodic report for the connection.
    let f = tick(&mut rig, t0 + 100 * MS);
    let r = reports(&f);
    assert_eq!(r.len(), 1, "{:?}", decode(&f));
    let p = r[0];
    assert_eq!(p.cause, TelemetryCause::Periodic);
    assert_eq!(p.sock, id);
    assert_eq!(p.remote, "203.0.113.5:4000".parse().unwrap());
    assert_eq!((p.bytes_in, p.bytes_out), (18, 100));
    assert_eq!((p.first_in_ns, p.first_out_ns), (10 * MS, 30 * MS));
    assert_eq!(
        (p.idle_in_ns, p.idle_out_ns, p.age_ns),
        (90 * MS, 70 * MS, 100 * MS)
    );
    assert!(p.has(flags::FIRST_IN | flags::FIRST_OUT) && !p.has(flags::OUTBOUND));
    assert!(p.has(flags::TCP_INFO), "the fake stack has TCP counters");
    assert_eq!((p.segs_in, p.segs_out), (3, 4));
    // Inbound: 18 printable bytes; outbound: 64 of 100 bytes sampled, all one value.
    assert_eq!(p.sample_in.sampled, 18);
    assert_eq!(p.sample_in.printable_permille, 1000);
    assert_eq!((p.sample_out.sampled, p.sample_out.entropy_milli), (64, 0));
    assert_eq!(p.sample_out.hist[1], 1, "one 100-byte chunk");

    // Not again before the next interval.
    assert!(reports(&tick(&mut rig, t0 + 150 * MS)).is_empty());
    assert_eq!(reports(&tick(&mut rig, t0 + 200 * MS)).len(), 1);

    // On demand: this flow, every flow, an unknown flow.
    let f = rig.send(Msg::Mitigate {
        req: 40,
        cmd: Mitigation::Report { flow_id: p.flow_id },
    });
    let r = reports(&f);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].cause, TelemetryCause::OnDemand);
    assert_eq!(replies(&f), vec![(0, 40, 0)]);
    let f = rig.send(Msg::Mitigate {
        req: 41,
        cmd: Mitigation::Report { flow_id: 0 },
    });
    assert_eq!(reports(&f).len(), 1);
    let f = rig.send(Msg::Mitigate {
        req: 42,
        cmd: Mitigation::Report { flow_id: 999 },
    });
    assert!(reports(&f).is_empty());
    assert_eq!(replies(&f), vec![(0, 42, Errno::ENOENT.0)]);

    // Close: the final report comes right before the final flow record.
    let f = rig.send(Msg::Close { sock: id, req: 43 });
    let kinds: Vec<&'static str> = decode(&f)
        .into_iter()
        .filter_map(|m| match m {
            Msg::Telemetry(t) => {
                assert_eq!(t.cause, TelemetryCause::Final);
                Some("telemetry")
            }
            Msg::Flow(_) => Some("flow"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["telemetry", "flow"]);
    // Gone: no more periodic reports.
    assert!(reports(&tick(&mut rig, t0 + 400 * MS)).is_empty());
}

#[test]
fn telemetry_off_sends_nothing_and_refuses_reports() {
    let mut rig = Rig::new(InstanceConfig {
        telemetry: false,
        ..tel_cfg()
    });
    rig.listen(4);
    let t0 = rig.now;
    let (id, _) = accept_one(&mut rig, "203.0.113.5:4000");
    assert!(reports(&tick(&mut rig, t0 + 500 * MS)).is_empty());
    let f = rig.send(Msg::Mitigate {
        req: 7,
        cmd: Mitigation::Report { flow_id: 0 },
    });
    assert_eq!(replies(&f), vec![(0, 7, Errno::EOPNOTSUPP.0)]);
    let f = rig.send(Msg::Close { sock: id, req: 8 });
    assert!(reports(&f).is_empty());
}

#[test]
fn periodic_off_still_reports_on_demand_and_at_close() {
    let mut rig = Rig::new(InstanceConfig {
        telemetry_interval_ns: 0,
        ..tel_cfg()
    });
    rig.listen(4);
    let t0 = rig.now;
    let (id, _) = accept_one(&mut rig, "203.0.113.5:4000");
    assert!(reports(&tick(&mut rig, t0 + 5_000 * MS)).is_empty());
    let f = rig.send(Msg::Mitigate {
        req: 7,
        cmd: Mitigation::Report { flow_id: 0 },
    });
    assert_eq!(reports(&f).len(), 1);
    let f = rig.send(Msg::Close { sock: id, req: 8 });
    assert_eq!(reports(&f).len(), 1);
}
