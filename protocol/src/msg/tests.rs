//! Unit tests for the message codec: one or more per decode error, plus the
//! exact byte layout of a few frames.

use super::*;
use core::net::{IpAddr, SocketAddr};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn enc(m: &Msg<'_>) -> ([u8; 512], usize) {
    let mut buf = [0u8; 512];
    let n = m.encode(&mut buf).unwrap();
    assert_eq!(n, m.encoded_len());
    (buf, n)
}

/// Encodes `m`, applies `f` to the frame, and decodes it.
fn mutate(m: &Msg<'_>, f: impl FnOnce(&mut [u8])) -> Result<(), DecodeError> {
    let (mut buf, n) = enc(m);
    f(&mut buf[..n]);
    Msg::decode(&buf[..n]).map(|_| ())
}

const LISTEN: Msg<'static> = Msg::Listen {
    sock: 5,
    req: 9,
    backlog: 128,
};

#[test]
fn header_layout() {
    let (buf, n) = enc(&LISTEN);
    assert_eq!(n, 24);
    assert_eq!(
        &buf[..24],
        &[
            3, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 9, 0, 0, 0, 128, 0, 0, 0, 0, 0, 0, 0
        ]
    );
    assert_eq!(Msg::decode(&buf[..n]), Ok(LISTEN));
}

#[test]
fn short_frame() {
    assert_eq!(
        Msg::decode(&[3, 0, 0]),
        Err(DecodeError::Short { need: 16, have: 3 })
    );
    assert_eq!(
        Msg::decode(&[]),
        Err(DecodeError::Short { need: 16, have: 0 })
    );
}

#[test]
fn unknown_kind() {
    assert_eq!(
        mutate(&LISTEN, |b| b[0] = 0x99),
        Err(DecodeError::UnknownKind(0x99))
    );
    assert_eq!(Kind::try_from(0), Err(DecodeError::UnknownKind(0)));
    for k in Kind::ALL {
        assert_eq!(Kind::try_from(k as u16), Ok(k));
    }
}

#[test]
fn flags_must_be_zero() {
    assert_eq!(
        mutate(&LISTEN, |b| b[2] = 1),
        Err(DecodeError::BadFlags {
            kind: Kind::Listen,
            flags: 1
        })
    );
}

#[test]
fn header_len_must_match_frame() {
    assert_eq!(
        mutate(&LISTEN, |b| b[4] = 7),
        Err(DecodeError::LengthMismatch {
            header: 7,
            actual: 8
        })
    );
    let (buf, n) = enc(&LISTEN);
    assert_eq!(
        Msg::decode(&buf[..n - 1]),
        Err(DecodeError::LengthMismatch {
            header: 8,
            actual: 7
        })
    );
}

#[test]
fn fixed_body_size_is_exact() {
    // Listen with a 4-byte body and a matching header length.
    let mut f = [0u8; 20];
    f[0] = Kind::Listen as u8;
    f[4] = 4;
    f[8] = 1;
    assert_eq!(
        Msg::decode(&f),
        Err(DecodeError::BadLength {
            kind: Kind::Listen,
            len: 4
        })
    );
    // Close with a body.
    let mut f = [0u8; 17];
    f[0] = Kind::Close as u8;
    f[4] = 1;
    f[8] = 1;
    assert_eq!(
        Msg::decode(&f),
        Err(DecodeError::BadLength {
            kind: Kind::Close,
            len: 1
        })
    );
    // SetOpt shorter than its fixed part.
    let mut f = [0u8; 20];
    f[0] = Kind::SetOpt as u8;
    f[4] = 4;
    f[8] = 1;
    assert_eq!(
        Msg::decode(&f),
        Err(DecodeError::BadLength {
            kind: Kind::SetOpt,
            len: 4
        })
    );
}

#[test]
fn reserved_bytes_must_be_zero() {
    assert_eq!(
        mutate(&LISTEN, |b| b[23] = 1),
        Err(DecodeError::NonZeroReserved { kind: Kind::Listen })
    );
    let reply = Msg::Reply {
        sock: 1,
        req: 2,
        errno: 0,
        value: &[],
    };
    assert_eq!(
        mutate(&reply, |b| b[20] = 1),
        Err(DecodeError::NonZeroReserved { kind: Kind::Reply })
    );
    let getopt = Msg::GetOpt {
        sock: 1,
        req: 2,
        level: 1,
        name: 2,
        max_len: 4,
    };
    assert_eq!(
        mutate(&getopt, |b| b[31] = 1),
        Err(DecodeError::NonZeroReserved { kind: Kind::GetOpt })
    );
    // A v4 address with a byte set beyond its four address bytes.
    let bind = Msg::Bind {
        sock: 1,
        req: 2,
        addr: sa("10.0.0.1:80"),
    };
    assert_eq!(
        mutate(&bind, |b| b[16 + 8 + 4] = 1),
        Err(DecodeError::NonZeroReserved { kind: Kind::Bind })
    );
}

#[test]
fn socket_id_rules() {
    assert_eq!(
        mutate(&LISTEN, |b| b[8] = 0),
        Err(DecodeError::BadSock {
            kind: Kind::Listen,
            sock: 0
        })
    );
    let open = Msg::Open {
        sock: 3,
        req: 1,
        family: Family::Inet6,
        ty: SockType::Dgram,
        proto: 17,
    };
    assert_eq!(
        mutate(&open, |b| b[11] = 0x80),
        Err(DecodeError::BadSock {
            kind: Kind::Open,
            sock: 0x8000_0003
        })
    );
    let hb = Msg::Heartbeat(Stats::default());
    assert_eq!(
        mutate(&hb, |b| b[8] = 1),
        Err(DecodeError::BadSock {
            kind: Kind::Heartbeat,
            sock: 1
        })
    );
    let acc = Msg::Accepted {
        listener: 4,
        sock: INSTANCE_SOCK_BIT | 1,
        peer: sa("[2001:db8::2]:5000"),
        local: sa("[2001:db8::1]:80"),
    };
    assert_eq!(Msg::decode(&enc(&acc).0[..enc(&acc).1]), Ok(acc));
    // New connection id without the instance bit.
    assert_eq!(
        mutate(&acc, |b| b[19] = 0),
        Err(DecodeError::BadSock {
            kind: Kind::Accepted,
            sock: 1
        })
    );
    // Listener with the instance bit.
    assert_eq!(
        mutate(&acc, |b| b[11] = 0x80),
        Err(DecodeError::BadSock {
            kind: Kind::Accepted,
            sock: 0x8000_0004
        })
    );
    // Encoding refuses the same.
    let bad = Msg::Close { sock: 0, req: 1 };
    assert_eq!(
        bad.encode(&mut [0u8; 64]),
        Err(EncodeError::Invalid(DecodeError::BadSock {
            kind: Kind::Close,
            sock: 0
        }))
    );
}

#[test]
fn req_only_on_requests_and_replies() {
    let eof = Msg::Eof { sock: 7 };
    assert_eq!(
        mutate(&eof, |b| b[12] = 1),
        Err(DecodeError::UnexpectedReq {
            kind: Kind::Eof,
            req: 1
        })
    );
    assert_eq!(eof.req(), 0);
    assert_eq!(LISTEN.req(), 9);
}

#[test]
fn bad_family() {
    let open = Msg::Open {
        sock: 3,
        req: 1,
        family: Family::Inet,
        ty: SockType::Stream,
        proto: 0,
    };
    assert_eq!(mutate(&open, |b| b[16] = 1), Err(DecodeError::BadFamily(1)));
    let conn = Msg::Connect {
        sock: 3,
        req: 1,
        addr: sa("1.2.3.4:5"),
    };
    assert_eq!(mutate(&conn, |b| b[16] = 3), Err(DecodeError::BadFamily(3)));
    // Connect needs an address: an all-zero one is family 0.
    assert_eq!(
        mutate(&conn, |b| b[16..48].fill(0)),
        Err(DecodeError::BadFamily(0))
    );
}

#[test]
fn enums_out_of_range() {
    let open = Msg::Open {
        sock: 3,
        req: 1,
        family: Family::Inet,
        ty: SockType::Stream,
        proto: 0,
    };
    assert_eq!(
        mutate(&open, |b| b[18] = 3),
        Err(DecodeError::BadEnum {
            field: "socket type",
            value: 3
        })
    );
    let sh = Msg::Shutdown {
        sock: 3,
        req: 1,
        how: Shutdown::Both,
    };
    assert_eq!(
        mutate(&sh, |b| b[16] = 3),
        Err(DecodeError::BadEnum {
            field: "shutdown how",
            value: 3
        })
    );
    let m = Msg::Mitigate {
        req: 1,
        cmd: Mitigation::Drain,
    };
    assert_eq!(
        mutate(&m, |b| b[16] = 0x77),
        Err(DecodeError::BadEnum {
            field: "mitigation op",
            value: 0x77
        })
    );
    let ts = TcpSettings {
        nodelay: TOGGLE_ON,
        ..TcpSettings::default()
    };
    let m = Msg::Mitigate {
        req: 1,
        cmd: Mitigation::TcpSettings(ts),
    };
    // nodelay sits at 16 (header) + 8 (op head) + 24.
    assert_eq!(
        mutate(&m, |b| b[48] = 3),
        Err(DecodeError::BadEnum {
            field: "nodelay",
            value: 3
        })
    );
}

fn flow() -> FlowRecord {
    FlowRecord {
        flow_id: 42,
        proto: IPPROTO_TCP,
        local: sa("10.0.0.1:80"),
        remote: sa("[2001:db8::9]:40000"),
        bytes_in: 1,
        bytes_out: 2,
        segs_in: 3,
        segs_out: 4,
        start_ns: 5,
        last_ns: 6,
        state: FlowState::Closed,
        reason: CloseReason::Mitigated,
        tcp_flags: 0x1b,
        sock: INSTANCE_SOCK_BIT | 3,
    }
}

#[test]
fn flow_record_fields() {
    let m = Msg::Flow(flow());
    let (buf, n) = enc(&m);
    assert_eq!(n, 16 + 128);
    assert_eq!(Msg::decode(&buf[..n]), Ok(m));
    assert_eq!(
        mutate(&m, |b| b[24] = 1),
        Err(DecodeError::BadEnum {
            field: "flow protocol",
            value: 1
        })
    );
    assert_eq!(
        mutate(&m, |b| b[25] = 2),
        Err(DecodeError::BadEnum {
            field: "flow state",
            value: 2
        })
    );
    assert_eq!(
        mutate(&m, |b| b[26] = 6),
        Err(DecodeError::BadEnum {
            field: "close reason",
            value: 6
        })
    );
    assert_eq!(
        mutate(&m, |b| b[32..64].fill(0)),
        Err(DecodeError::BadFamily(0))
    );
}

#[test]
fn bad_prefix() {
    let p = Prefix::new("10.1.0.0".parse().unwrap(), 16).unwrap();
    let m = Msg::Mitigate {
        req: 1,
        cmd: Mitigation::Block(p),
    };
    // Prefix length byte at 16 + 8 + 2.
    assert_eq!(mutate(&m, |b| b[26] = 33), Err(DecodeError::BadPrefix));
    assert_eq!(mutate(&m, |b| b[26] = 8), Err(DecodeError::BadPrefix));
    let bad = Msg::Mitigate {
        req: 1,
        cmd: Mitigation::Unblock(Prefix {
            addr: "10.1.2.3".parse().unwrap(),
            len: 16,
        }),
    };
    assert_eq!(
        bad.encode(&mut [0u8; 128]),
        Err(EncodeError::Invalid(DecodeError::BadPrefix))
    );
}

#[test]
fn option_value_limits() {
    let big = [0u8; MAX_OPT_LEN + 1];
    let m = Msg::SetOpt {
        sock: 1,
        req: 1,
        level: 1,
        name: 1,
        value: &big,
    };
    assert_eq!(
        m.encode(&mut [0u8; 1024]),
        Err(EncodeError::ValueTooLong {
            len: MAX_OPT_LEN + 1
        })
    );
    // Build the oversized frame by hand: decode must refuse it too.
    let mut f = [0u8; 16 + 8 + MAX_OPT_LEN + 1];
    f[0] = Kind::SetOpt as u8;
    f[4..8].copy_from_slice(&(8 + MAX_OPT_LEN as u32 + 1).to_le_bytes());
    f[8] = 1;
    assert_eq!(
        Msg::decode(&f),
        Err(DecodeError::ValueTooLong {
            len: MAX_OPT_LEN + 1
        })
    );
    let ok = Msg::SetOpt {
        sock: 1,
        req: 1,
        level: 1,
        name: 1,
        value: &big[..MAX_OPT_LEN],
    };
    let (buf, n) = enc(&ok);
    assert_eq!(Msg::decode(&buf[..n]), Ok(ok));
    let getopt = Msg::GetOpt {
        sock: 1,
        req: 2,
        level: 1,
        name: 2,
        max_len: MAX_OPT_LEN as u32,
    };
    assert_eq!(
        mutate(&getopt, |b| b[25] = 2),
        Err(DecodeError::ValueTooLong { len: 512 })
    );
}

#[test]
fn errno_rules() {
    let reset = Msg::Reset {
        sock: 1,
        errno: 104,
    };
    assert_eq!(mutate(&reset, |b| b[16] = 0), Err(DecodeError::BadErrno(0)));
    assert_eq!(
        mutate(&reset, |b| b[16..20]
            .copy_from_slice(&(-5i32).to_le_bytes())),
        Err(DecodeError::BadErrno(-5))
    );
    assert_eq!(
        mutate(&reset, |b| b[16..20]
            .copy_from_slice(&4096i32.to_le_bytes())),
        Err(DecodeError::BadErrno(4096))
    );
    let reply = Msg::Reply {
        sock: 1,
        req: 2,
        errno: 22,
        value: &[1],
    };
    assert_eq!(
        reply.encode(&mut [0u8; 64]),
        Err(EncodeError::Invalid(DecodeError::Inconsistent {
            kind: Kind::Reply
        }))
    );
    let failed = Msg::Connected {
        sock: 1,
        errno: 111,
        local: Some(sa("1.2.3.4:5")),
        peer: None,
    };
    assert_eq!(
        failed.encode(&mut [0u8; 128]),
        Err(EncodeError::Invalid(DecodeError::Inconsistent {
            kind: Kind::Connected
        }))
    );
}

#[test]
fn bad_congestion_name() {
    let mut ts = TcpSettings::default();
    ts.set_congestion("bbr").unwrap();
    assert_eq!(ts.congestion_name(), Some("bbr"));
    assert_eq!(TcpSettings::default().congestion_name(), None);
    assert!(ts.set_congestion("seventeen-chars!!").is_err());
    assert!(ts.set_congestion("has space").is_err());
    let m = Msg::Mitigate {
        req: 1,
        cmd: Mitigation::TcpSettings(ts),
    };
    // A byte after the NUL terminator.
    assert_eq!(
        mutate(&m, |b| b[24 + 5] = b'x'),
        Err(DecodeError::BadString {
            field: "congestion"
        })
    );
}

#[test]
fn empty_data_is_refused() {
    assert_eq!(
        Msg::Data {
            sock: 1,
            bytes: &[]
        }
        .encode(&mut [0u8; 32]),
        Err(EncodeError::Invalid(DecodeError::Inconsistent {
            kind: Kind::Data
        }))
    );
    // An empty datagram is fine.
    let m = Msg::DataTo {
        sock: 1,
        addr: None,
        info: PktInfo::NONE,
        bytes: &[],
    };
    let (buf, n) = enc(&m);
    assert_eq!(n, 88);
    assert_eq!(Msg::decode(&buf[..n]), Ok(m));
}

#[test]
fn buffer_too_small() {
    let m = Msg::Data {
        sock: 1,
        bytes: b"hello",
    };
    assert_eq!(
        m.encode(&mut [0u8; 20]),
        Err(EncodeError::BufferTooSmall { need: 21 })
    );
}

#[test]
fn data_header_matches_encode() {
    let payload = b"GET / HTTP/1.1\r\n";
    let m = Msg::Data {
        sock: 77,
        bytes: payload,
    };
    let (buf, n) = enc(&m);
    let mut h = [0u8; HEADER_LEN];
    encode_data_header(77, payload.len(), &mut h).unwrap();
    assert_eq!(&buf[..HEADER_LEN], &h);
    assert_eq!(&buf[HEADER_LEN..n], payload);
    assert!(encode_data_header(0, 1, &mut h).is_err());
    assert!(encode_data_header(1, 0, &mut h).is_err());

    let addr = Some(sa("[fe80::1%2]:53"));
    let info = PktInfo {
        v4: None,
        v6: Some(PktInfo6 {
            ifindex: 2,
            addr: "fe80::2".parse().unwrap(),
        }),
    };
    let m = Msg::DataTo {
        sock: 5,
        addr,
        info,
        bytes: payload,
    };
    let (buf, _) = enc(&m);
    let mut p = [0u8; DATA_TO_PREFIX_LEN];
    encode_data_to_header(5, addr, &info, payload.len(), &mut p).unwrap();
    assert_eq!(&buf[..DATA_TO_PREFIX_LEN], &p);
}

#[test]
fn accessors() {
    let acc = Msg::Accepted {
        listener: 4,
        sock: INSTANCE_SOCK_BIT | 1,
        peer: sa("1.1.1.1:1"),
        local: sa("2.2.2.2:2"),
    };
    assert_eq!(acc.sock(), 4);
    assert_eq!(acc.kind(), Kind::Accepted);
    assert_eq!(Kind::Accepted.direction(), Direction::ToDriver);
    assert_eq!(Kind::Mitigate.direction(), Direction::ToInstance);
    assert_eq!(Kind::Credit.direction(), Direction::Both);
    let m = Msg::Mitigate {
        req: 3,
        cmd: Mitigation::CloseFlow { flow_id: 9 },
    };
    assert_eq!((m.sock(), m.req()), (0, 3));
    assert!(Prefix::host(IpAddr::from([1, 2, 3, 4])).is_valid());
}

#[test]
fn errors_display() {
    extern crate std;
    use std::string::ToString;
    let s = DecodeError::NonZeroReserved { kind: Kind::Flow }.to_string();
    assert!(s.contains("Flow") && s.contains("reserved"), "{s}");
    let s = EncodeError::BufferTooSmall { need: 40 }.to_string();
    assert!(s.contains("40"), "{s}");
}

/// `SockOpt` is in band: a socket, no request id, an option value of at
/// most `MAX_OPT_LEN` bytes.
#[test]
fn sock_opt_rules() {
    let v = 1i32.to_ne_bytes();
    let m = Msg::SockOpt {
        sock: 7,
        level: 6,
        name: 3,
        value: &v,
    };
    let (buf, n) = enc(&m);
    assert_eq!(n, HEADER_LEN + 8 + 4);
    assert_eq!(Msg::decode(&buf[..n]), Ok(m));
    assert_eq!((m.sock(), m.req(), m.kind()), (7, 0, Kind::SockOpt));
    assert_eq!(Kind::SockOpt.direction(), Direction::ToInstance);
    // A request id is refused: nobody waits for an answer.
    assert_eq!(
        mutate(&m, |b| b[12] = 1),
        Err(DecodeError::UnexpectedReq {
            kind: Kind::SockOpt,
            req: 1
        })
    );
    // A socket is required.
    assert_eq!(
        mutate(&m, |b| b[8] = 0),
        Err(DecodeError::BadSock {
            kind: Kind::SockOpt,
            sock: 0
        })
    );
    // Shorter than level + name.
    let mut f = [0u8; HEADER_LEN + 4];
    f[0] = Kind::SockOpt as u8;
    f[4] = 4;
    f[8] = 1;
    assert_eq!(
        Msg::decode(&f),
        Err(DecodeError::BadLength {
            kind: Kind::SockOpt,
            len: 4
        })
    );
    let big = [0u8; MAX_OPT_LEN + 1];
    let m = Msg::SockOpt {
        sock: 1,
        level: 1,
        name: 1,
        value: &big,
    };
    assert_eq!(
        m.encode(&mut [0u8; 1024]),
        Err(EncodeError::ValueTooLong {
            len: MAX_OPT_LEN + 1
        })
    );
}
