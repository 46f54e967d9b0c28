//! Property tests for the wire messages: every variant round-trips with
//! arbitrary field values, decoding arbitrary or mutated bytes never panics
//! and accepts only canonical frames, and setting any reserved byte is
//! reported as `NonZeroReserved`.
//!
//! Byte offsets below are the documented wire layout (see `ins_protocol::msg`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use ins_protocol::msg::*;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::Union;

/// Test values borrow their byte slices for `'static`; leaking a few hundred
/// small vectors per test run is fine.
fn leak(v: Vec<u8>) -> &'static [u8] {
    Box::leak(v.into_boxed_slice())
}

fn bytes(min: usize, max: usize) -> impl Strategy<Value = &'static [u8]> {
    vec(any::<u8>(), min..=max).prop_map(leak)
}

fn any_sock() -> impl Strategy<Value = u32> {
    1..=u32::MAX
}

fn driver_sock() -> impl Strategy<Value = u32> {
    1..INSTANCE_SOCK_BIT
}

fn instance_sock() -> impl Strategy<Value = u32> {
    INSTANCE_SOCK_BIT..=u32::MAX
}

fn errno() -> impl Strategy<Value = i32> {
    1..=MAX_ERRNO
}

fn pkt_info() -> impl Strategy<Value = PktInfo> {
    let v4 =
        (any::<u32>(), any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(ifindex, s, a)| PktInfo4 {
            ifindex,
            spec_dst: Ipv4Addr::from(s),
            addr: Ipv4Addr::from(a),
        });
    let v6 = (any::<u32>(), any::<[u8; 16]>()).prop_map(|(ifindex, a)| PktInfo6 {
        ifindex,
        addr: Ipv6Addr::from(a),
    });
    (proptest::option::of(v4), proptest::option::of(v6)).prop_map(|(v4, v6)| PktInfo { v4, v6 })
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(a, p)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(a), p))),
        (any::<[u8; 16]>(), any::<u16>(), any::<u32>(), any::<u32>()).prop_map(|(a, p, f, s)| {
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(a), p, f, s))
        }),
    ]
}

fn prefix() -> impl Strategy<Value = Prefix> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, len)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            Prefix::new(IpAddr::V4(Ipv4Addr::from(a & mask)), len).unwrap()
        }),
        (any::<u128>(), 0u8..=128).prop_map(|(a, len)| {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            Prefix::new(IpAddr::V6(Ipv6Addr::from(a & mask)), len).unwrap()
        }),
    ]
}

fn tcp_settings() -> impl Strategy<Value = TcpSettings> {
    (
        "[!-~]{0,16}",
        any::<(u32, u32)>(),
        0u8..=2,
        0u8..=2,
        any::<(u32, u32, u32)>(),
    )
        .prop_map(
            |(cc, (sndbuf, rcvbuf), nodelay, keepalive, (keepidle, keepintvl, keepcnt))| {
                let mut t = TcpSettings {
                    sndbuf,
                    rcvbuf,
                    nodelay,
                    keepalive,
                    keepidle,
                    keepintvl,
                    keepcnt,
                    ..TcpSettings::default()
                };
                t.set_congestion(&cc).unwrap();
                t
            },
        )
}

fn mitigation() -> impl Strategy<Value = Mitigation<'static>> {
    prop_oneof![
        prefix().prop_map(Mitigation::Block),
        prefix().prop_map(Mitigation::Unblock),
        prefix().prop_map(Mitigation::ClearRateLimit),
        (prefix(), any::<(u32, u32, u64, u64)>()).prop_map(|(prefix, (a, b, c, d))| {
            Mitigation::RateLimit {
                prefix,
                conn_per_sec: a,
                conn_burst: b,
                bytes_per_sec: c,
                bytes_burst: d,
            }
        }),
        any::<u64>().prop_map(|flow_id| Mitigation::CloseFlow { flow_id }),
        (
            any::<u64>(),
            any::<i32>(),
            any::<i32>(),
            bytes(0, MAX_OPT_LEN)
        )
            .prop_map(|(flow_id, level, name, value)| Mitigation::SetFlowOpt {
                flow_id,
                level,
                name,
                value,
            }),
        tcp_settings().prop_map(Mitigation::TcpSettings),
        Just(Mitigation::Drain),
        Just(Mitigation::Resume),
        any::<u64>().prop_map(|flow_id| Mitigation::Report { flow_id }),
    ]
}

fn stats() -> impl Strategy<Value = Stats> {
    (
        any::<(u64, u64)>(),
        any::<(u32, u32, u32, u32, u32)>(),
        any::<(u64, u64, u64, u64, u64)>(),
    )
        .prop_map(
            |((seq, uptime_ns), (su, sm, c, l, aq), (bi, bo, si, so, d))| Stats {
                seq,
                uptime_ns,
                sockets_used: su,
                sockets_max: sm,
                connections: c,
                listeners: l,
                accept_queue: aq,
                bytes_in: bi,
                bytes_out: bo,
                segs_in: si,
                segs_out: so,
                dropped_conns: d,
            },
        )
}

fn flow_record() -> impl Strategy<Value = FlowRecord> {
    (
        any::<u64>(),
        prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP)],
        socket_addr(),
        socket_addr(),
        any::<(u64, u64, u64, u64, u64, u64)>(),
        prop_oneof![Just(FlowState::Active), Just(FlowState::Closed)],
        prop_oneof![
            Just(CloseReason::None),
            Just(CloseReason::Normal),
            Just(CloseReason::Reset),
            Just(CloseReason::Timeout),
            Just(CloseReason::Mitigated),
            Just(CloseReason::Error),
        ],
        any::<u8>(),
        any::<u32>(),
    )
        .prop_map(
            |(flow_id, proto, local, remote, (bi, bo, si, so, st, la), state, reason, tf, sock)| {
                FlowRecord {
                    flow_id,
                    proto,
                    local,
                    remote,
                    bytes_in: bi,
                    bytes_out: bo,
                    segs_in: si,
                    segs_out: so,
                    start_ns: st,
                    last_ns: la,
                    state,
                    reason,
                    tcp_flags: tf,
                    sock,
                }
            },
        )
}

fn payload_stats() -> impl Strategy<Value = PayloadStats> {
    (any::<u32>(), 0u16..=8000, 0u16..=1000, any::<[u16; 8]>()).prop_map(
        |(sampled, entropy_milli, printable_permille, hist)| PayloadStats {
            sampled,
            entropy_milli,
            printable_permille,
            hist,
        },
    )
}

/// Valid telemetry: fields that a clear flag says are absent are zero.
fn telemetry() -> impl Strategy<Value = ConnTelemetry> {
    (
        (
            any::<u64>(),
            any::<u32>(),
            prop_oneof![Just(IPPROTO_TCP), Just(IPPROTO_UDP)],
        ),
        prop_oneof![
            Just(TelemetryCause::Periodic),
            Just(TelemetryCause::OnDemand),
            Just(TelemetryCause::Final),
        ],
        0u16..=telemetry::flags::ALL,
        (socket_addr(), socket_addr()),
        any::<[u64; 7]>(),
        any::<[u64; 3]>(),
        any::<[u32; 4]>(),
        (payload_stats(), payload_stats()),
    )
        .prop_map(
            |(
                (flow_id, sock, proto),
                cause,
                fl,
                (local, remote),
                c,
                t,
                w,
                (sample_in, sample_out),
            )| {
                use telemetry::flags;
                let on = |bit: u16, v: u64| if fl & bit != 0 { v } else { 0 };
                let on32 = |bit: u16, v: u32| if fl & bit != 0 { v } else { 0 };
                ConnTelemetry {
                    flow_id,
                    sock,
                    proto,
                    cause,
                    flags: fl,
                    local,
                    remote,
                    age_ns: c[0],
                    bytes_in: c[1],
                    bytes_out: c[2],
                    segs_in: c[3],
                    segs_out: c[4],
                    idle_in_ns: c[5],
                    idle_out_ns: c[6],
                    first_in_ns: on(flags::FIRST_IN, t[0]),
                    first_out_ns: on(flags::FIRST_OUT, t[1]),
                    bytes_acked: on(flags::TCP_INFO, t[2]),
                    zero_window_ns: t[2] / 3,
                    rwnd_limited_us: on(flags::TCP_INFO, t[0] / 7),
                    peer_window: on32(flags::TCP_INFO, w[0]),
                    rtt_us: on32(flags::TCP_INFO, w[1]),
                    retrans: on32(flags::TCP_INFO, w[2]),
                    unsent: w[3],
                    sample_in,
                    sample_out,
                }
            },
        )
}

fn family() -> impl Strategy<Value = Family> {
    prop_oneof![Just(Family::Inet), Just(Family::Inet6)]
}

fn sock_type() -> impl Strategy<Value = SockType> {
    prop_oneof![Just(SockType::Stream), Just(SockType::Dgram)]
}

fn how() -> impl Strategy<Value = Shutdown> {
    prop_oneof![
        Just(Shutdown::Read),
        Just(Shutdown::Write),
        Just(Shutdown::Both)
    ]
}

/// Every message variant with arbitrary valid field values.
fn msg() -> impl Strategy<Value = Msg<'static>> {
    let arms: Vec<BoxedStrategy<Msg<'static>>> = vec![
        (
            driver_sock(),
            any::<u32>(),
            family(),
            sock_type(),
            any::<i32>(),
        )
            .prop_map(|(sock, req, family, ty, proto)| Msg::Open {
                sock,
                req,
                family,
                ty,
                proto,
            })
            .boxed(),
        (any_sock(), any::<u32>(), socket_addr())
            .prop_map(|(sock, req, addr)| Msg::Bind { sock, req, addr })
            .boxed(),
        (any_sock(), any::<u32>(), any::<u32>())
            .prop_map(|(sock, req, backlog)| Msg::Listen { sock, req, backlog })
            .boxed(),
        (any_sock(), any::<u32>(), socket_addr())
            .prop_map(|(sock, req, addr)| Msg::Connect { sock, req, addr })
            .boxed(),
        (any_sock(), any::<u32>(), how())
            .prop_map(|(sock, req, how)| Msg::Shutdown { sock, req, how })
            .boxed(),
        (any_sock(), any::<u32>())
            .prop_map(|(sock, req)| Msg::Close { sock, req })
            .boxed(),
        (
            any_sock(),
            any::<u32>(),
            any::<i32>(),
            any::<i32>(),
            bytes(0, MAX_OPT_LEN),
        )
            .prop_map(|(sock, req, level, name, value)| Msg::SetOpt {
                sock,
                req,
                level,
                name,
                value,
            })
            .boxed(),
        (
            any_sock(),
            any::<i32>(),
            any::<i32>(),
            bytes(0, MAX_OPT_LEN),
        )
            .prop_map(|(sock, level, name, value)| Msg::SockOpt {
                sock,
                level,
                name,
                value,
            })
            .boxed(),
        (
            any_sock(),
            any::<u32>(),
            any::<i32>(),
            any::<i32>(),
            0..=MAX_OPT_LEN as u32,
        )
            .prop_map(|(sock, req, level, name, max_len)| Msg::GetOpt {
                sock,
                req,
                level,
                name,
                max_len,
            })
            .boxed(),
        (any_sock(), any::<u32>())
            .prop_map(|(sock, req)| Msg::GetSockName { sock, req })
            .boxed(),
        (any_sock(), any::<u32>())
            .prop_map(|(sock, req)| Msg::GetPeerName { sock, req })
            .boxed(),
        (any::<u32>(), mitigation())
            .prop_map(|(req, cmd)| Msg::Mitigate { req, cmd })
            .boxed(),
        (any_sock(), bytes(1, 600))
            .prop_map(|(sock, bytes)| Msg::Data { sock, bytes })
            .boxed(),
        (
            any_sock(),
            proptest::option::of(socket_addr()),
            pkt_info(),
            bytes(0, 600),
        )
            .prop_map(|(sock, addr, info, bytes)| Msg::DataTo {
                sock,
                addr,
                info,
                bytes,
            })
            .boxed(),
        (any_sock(), any::<u32>())
            .prop_map(|(sock, bytes)| Msg::Credit { sock, bytes })
            .boxed(),
        any_sock().prop_map(|sock| Msg::Eof { sock }).boxed(),
        (any::<u32>(), any::<u32>(), bytes(0, MAX_OPT_LEN))
            .prop_map(|(sock, req, value)| Msg::Reply {
                sock,
                req,
                errno: 0,
                value,
            })
            .boxed(),
        (any::<u32>(), any::<u32>(), errno())
            .prop_map(|(sock, req, errno)| Msg::Reply {
                sock,
                req,
                errno,
                value: &[],
            })
            .boxed(),
        (
            any_sock(),
            proptest::option::of(socket_addr()),
            proptest::option::of(socket_addr()),
        )
            .prop_map(|(sock, local, peer)| Msg::Connected {
                sock,
                errno: 0,
                local,
                peer,
            })
            .boxed(),
        (any_sock(), errno())
            .prop_map(|(sock, errno)| Msg::Connected {
                sock,
                errno,
                local: None,
                peer: None,
            })
            .boxed(),
        (driver_sock(), instance_sock(), socket_addr(), socket_addr())
            .prop_map(|(listener, sock, peer, local)| Msg::Accepted {
                listener,
                sock,
                peer,
                local,
            })
            .boxed(),
        (any_sock(), errno())
            .prop_map(|(sock, errno)| Msg::Reset { sock, errno })
            .boxed(),
        any_sock().prop_map(|sock| Msg::Closed { sock }).boxed(),
        stats().prop_map(Msg::Heartbeat).boxed(),
        flow_record().prop_map(Msg::Flow).boxed(),
        telemetry().prop_map(Msg::Telemetry).boxed(),
    ];
    Union::new(arms)
}

fn encode(m: &Msg<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; m.encoded_len()];
    let n = m.encode(&mut buf).expect("valid message encodes");
    assert_eq!(n, buf.len());
    buf
}

/// Offsets (from the frame start) of reserved bytes, and of bytes an IPv4
/// address does not use, for a message; empty if it has none.
fn reserved_offsets(m: &Msg<'_>) -> Vec<usize> {
    // WireAddr at `at`: reserved u32 at +28; for v4 also flowinfo (+4..8),
    // address bytes +12..24 and scope_id (+24..28). Family 0: all but the
    // family field (+2..32).
    fn wa(at: usize, a: Option<SocketAddr>) -> Vec<usize> {
        match a {
            None => (at + 2..at + 32).collect(),
            Some(SocketAddr::V4(_)) => (at + 4..at + 8).chain(at + 12..at + 32).collect(),
            Some(SocketAddr::V6(_)) => (at + 28..at + 32).collect(),
        }
    }
    fn prefix(at: usize, p: &Prefix) -> Vec<usize> {
        let mut v = vec![at + 3];
        if p.addr.is_ipv4() {
            v.extend(at + 8..at + 20);
        }
        v
    }
    match m {
        Msg::Listen { .. }
        | Msg::Shutdown { .. }
        | Msg::Credit { .. }
        | Msg::Reply { .. }
        | Msg::Reset { .. } => (20..24).collect(),
        Msg::GetOpt { .. } => (28..32).collect(),
        Msg::Bind { addr, .. } | Msg::Connect { addr, .. } => wa(16, Some(*addr)),
        Msg::DataTo { addr, info, .. } => {
            // PktInfoWire at 48: reserved +2..4 and +36..40, and every byte
            // of an absent part.
            let mut v = wa(16, *addr);
            v.extend((50..52).chain(84..88));
            if info.v4.is_none() {
                v.extend(52..64);
            }
            if info.v6.is_none() {
                v.extend(64..84);
            }
            v
        }
        Msg::Connected { local, peer, .. } => {
            let mut v: Vec<usize> = (20..24).collect();
            v.extend(wa(24, *local));
            v.extend(wa(56, *peer));
            v
        }
        Msg::Accepted { peer, local, .. } => {
            let mut v: Vec<usize> = (20..24).collect();
            v.extend(wa(24, Some(*peer)));
            v.extend(wa(56, Some(*local)));
            v
        }
        Msg::Heartbeat(_) => (52..56).collect(),
        Msg::Flow(r) => {
            let mut v = wa(32, Some(r.local));
            v.extend(wa(64, Some(r.remote)));
            v
        }
        Msg::Telemetry(t) => {
            let mut v = wa(32, Some(t.local));
            v.extend(wa(64, Some(t.remote)));
            v
        }
        Msg::Mitigate { cmd, .. } => {
            let mut v: Vec<usize> = (18..24).collect();
            match cmd {
                Mitigation::Block(p) | Mitigation::Unblock(p) | Mitigation::ClearRateLimit(p) => {
                    v.extend(prefix(24, p));
                    v.extend(44..48);
                }
                Mitigation::RateLimit { prefix: p, .. } => {
                    v.extend(prefix(24, p));
                    v.extend(44..48);
                }
                Mitigation::TcpSettings(_) => {
                    v.extend(50..52);
                    v.extend(64..72);
                }
                _ => {}
            }
            v
        }
        _ => Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_variant_round_trips(m in msg()) {
        let frame = encode(&m);
        prop_assert_eq!(Msg::decode(&frame), Ok(m));
        prop_assert_eq!(frame.len() - HEADER_LEN, u32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize);
        prop_assert_eq!(m.sock(), u32::from_le_bytes(frame[8..12].try_into().unwrap()));
        prop_assert_eq!(m.kind() as u16, u16::from_le_bytes([frame[0], frame[1]]));
        // One byte short never fits.
        let mut small = vec![0u8; frame.len() - 1];
        prop_assert_eq!(m.encode(&mut small), Err(EncodeError::BufferTooSmall { need: frame.len() }));
    }

    #[test]
    fn decode_arbitrary_bytes_never_panics(data in vec(any::<u8>(), 0..300)) {
        if let Ok(m) = Msg::decode(&data) {
            prop_assert_eq!(encode(&m), data);
        }
    }

    /// Frames with a valid header but arbitrary bodies reach the per-kind
    /// validation, which random bytes alone rarely do.
    #[test]
    fn decode_arbitrary_bodies_never_panics(
        kind in prop::sample::select(Kind::ALL.to_vec()),
        sock in prop_oneof![Just(0u32), driver_sock(), instance_sock()],
        req in prop_oneof![Just(0u32), any::<u32>()],
        body in vec(any::<u8>(), 0..200),
    ) {
        let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
        frame.extend((kind as u16).to_le_bytes());
        frame.extend(0u16.to_le_bytes());
        frame.extend((body.len() as u32).to_le_bytes());
        frame.extend(sock.to_le_bytes());
        frame.extend(req.to_le_bytes());
        frame.extend(&body);
        if let Ok(m) = Msg::decode(&frame) {
            prop_assert_eq!(m.kind(), kind);
            prop_assert_eq!(encode(&m), frame);
        }
    }

    /// Valid frames with random bytes changed: never a panic, and anything
    /// still accepted re-encodes to exactly the same bytes (canonical form).
    #[test]
    fn mutated_frames_decode_canonically(
        m in msg(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut frame = encode(&m);
        for (i, b) in edits {
            let i = i.index(frame.len());
            frame[i] = b;
        }
        if let Ok(d) = Msg::decode(&frame) {
            prop_assert_eq!(encode(&d), frame);
        }
    }

    #[test]
    fn header_flags_are_refused(m in msg(), flags in 1u16..) {
        let mut frame = encode(&m);
        frame[2..4].copy_from_slice(&flags.to_le_bytes());
        prop_assert_eq!(Msg::decode(&frame), Err(DecodeError::BadFlags { kind: m.kind(), flags }));
    }

    #[test]
    fn truncated_or_extended_frames_are_refused(m in msg(), cut in 1usize..40) {
        let frame = encode(&m);
        let cut = cut.min(frame.len());
        // The header's length no longer matches.
        prop_assert!(Msg::decode(&frame[..frame.len() - cut]).is_err());
        let mut longer = frame.clone();
        longer.push(0);
        prop_assert!(Msg::decode(&longer).is_err());
    }

    #[test]
    fn prefix_contains_its_addresses(p in prefix(), host in any::<u128>()) {
        // Any address that agrees with the prefix on its first `len` bits.
        let ip = match p.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(p.len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) | (host as u32 & !mask)))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(p.len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) | (host & !mask)))
            }
        };
        prop_assert!(p.contains(ip));
        if let IpAddr::V4(v4) = ip {
            prop_assert!(p.contains(IpAddr::V6(v4.to_ipv6_mapped())));
        }
        // Flipping a bit inside the prefix leaves it.
        if p.len > 0 {
            let outside = match ip {
                IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) ^ (1 << (32 - u32::from(p.len))))),
                IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) ^ (1 << (128 - u32::from(p.len))))),
            };
            prop_assert!(!p.contains(outside));
        }
    }
}

#[test]
fn wire_addr_parse_matches_conversion() {
    let a: SocketAddr = "[2001:db8::7]:9".parse().unwrap();
    let w = WireAddr::from(a);
    use zerocopy::IntoBytes;
    assert_eq!(WireAddr::parse(w.as_bytes()), Ok(Some(a)));
}

// Many kinds have no reserved bytes, so this property rejects a large share
// of its inputs; it gets its own reject budget (the default of 1024 made it
// fail by chance).
proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        max_global_rejects: 1_000_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn setting_a_reserved_byte_is_refused(
        m in msg(),
        pick in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let offsets = reserved_offsets(&m);
        prop_assume!(!offsets.is_empty());
        let mut frame = encode(&m);
        let at = offsets[pick.index(offsets.len())];
        prop_assert_eq!(frame[at], 0, "offset {} of {:?} is not a zero byte", at, m.kind());
        frame[at] ^= flip;
        prop_assert_eq!(Msg::decode(&frame), Err(DecodeError::NonZeroReserved { kind: m.kind() }));
    }
}

/// Telemetry's own consistency rules: a value the flags say is absent,
/// an unknown flag, cause or protocol, an out-of-range statistic.
#[test]
fn telemetry_rules_are_enforced() {
    use telemetry::flags;
    let t = ConnTelemetry {
        flow_id: 7,
        sock: 0x8000_0001,
        proto: IPPROTO_TCP,
        cause: TelemetryCause::Periodic,
        flags: flags::FIRST_IN | flags::TCP_INFO,
        local: "10.0.0.1:80".parse().unwrap(),
        remote: "10.0.0.2:5000".parse().unwrap(),
        age_ns: 5,
        bytes_in: 10,
        bytes_out: 0,
        segs_in: 2,
        segs_out: 1,
        idle_in_ns: 1,
        idle_out_ns: 5,
        first_in_ns: 1,
        first_out_ns: 0,
        bytes_acked: 1,
        zero_window_ns: 0,
        rwnd_limited_us: 0,
        peer_window: 65535,
        rtt_us: 20,
        retrans: 0,
        unsent: 0,
        sample_in: PayloadStats {
            sampled: 10,
            entropy_milli: 3000,
            printable_permille: 1000,
            hist: [1, 0, 0, 0, 0, 0, 0, 0],
        },
        sample_out: PayloadStats::default(),
    };
    let good = encode(&Msg::Telemetry(t));
    assert_eq!(Msg::decode(&good), Ok(Msg::Telemetry(t)));
    let body = HEADER_LEN;
    let bad = |at: usize, bytes: &[u8]| {
        let mut f = good.clone();
        f[at..at + bytes.len()].copy_from_slice(bytes);
        Msg::decode(&f).map(|_| ())
    };
    let inconsistent: Result<(), DecodeError> = Err(DecodeError::Inconsistent {
        kind: Kind::Telemetry,
    });
    // first_out without FIRST_OUT
    assert_eq!(bad(body + 144, &[1]), inconsistent);
    // TCP_INFO cleared while its fields are set
    assert_eq!(bad(body + 14, &[flags::FIRST_IN as u8, 0]), inconsistent);
    // unknown flag bit, cause, protocol
    assert!(matches!(
        bad(body + 14, &[0x80, 0x00]),
        Err(DecodeError::BadEnum { .. })
    ));
    assert!(matches!(
        bad(body + 13, &[3]),
        Err(DecodeError::BadEnum { .. })
    ));
    assert!(matches!(
        bad(body + 12, &[1]),
        Err(DecodeError::BadEnum { .. })
    ));
    // entropy above 8 bits, printable share above 1000
    assert!(matches!(
        bad(body + 196, &8001u16.to_le_bytes()),
        Err(DecodeError::BadEnum { .. })
    ));
    assert!(matches!(
        bad(body + 222, &1001u16.to_le_bytes()),
        Err(DecodeError::BadEnum { .. })
    ));
    // a missing address
    assert!(bad(body + 16, &[0, 0]).is_err());
    // the Report command round-trips and keeps sock 0
    let r = Msg::Mitigate {
        req: 3,
        cmd: Mitigation::Report { flow_id: 0 },
    };
    assert_eq!(Msg::decode(&encode(&r)), Ok(r));
}
