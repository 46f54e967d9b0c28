//! Unit tests of the xenstore codec.
use super::*;
use crate::xenstore::perms::Access;

fn req(r: Request<'_>, req_id: u32, tx: u32) -> (Header, [u8; MSG_MAX], usize) {
    let mut buf = [0u8; MSG_MAX];
    let (n, h) = r.encode(req_id, tx, &mut buf).unwrap();
    (h, buf, n)
}

fn reply(ty: MsgType, req_id: u32, tx_id: u32, payload: &[u8]) -> Header {
    Header {
        ty,
        req_id,
        tx_id,
        len: payload.len() as u32,
    }
}

#[test]
fn encodes_requests_exactly() {
    let (h, buf, n) = req(Request::Write("data/x", b"v"), 7, 3);
    assert_eq!(
        h,
        Header {
            ty: MsgType::Write,
            req_id: 7,
            tx_id: 3,
            len: 8
        }
    );
    assert_eq!(&buf[..16], &h.encode());
    assert_eq!(&buf[16..n], b"data/x\0v");
    let perms = [
        Permission::new(DomId(3), Access::None),
        Permission::new(DomId(5), Access::Read),
    ];
    let (_, buf, n) = req(Request::SetPerms("/a", &perms), 1, 0);
    assert_eq!(&buf[16..n], b"/a\0n3\0r5\0");
    let (h, buf, n) = req(Request::Watch("/a", "tok"), 1, 9);
    assert_eq!(h.tx_id, 0, "watches carry no transaction");
    assert_eq!(&buf[16..n], b"/a\0tok\0");
    let (_, buf, n) = req(Request::TransactionEnd(true), 1, 9);
    assert_eq!(&buf[16..n], b"T\0");
    let (_, buf, n) = req(Request::GetDomainPath(DomId(12)), 1, 0);
    assert_eq!(&buf[16..n], b"12\0");
}

#[test]
fn refuses_bad_requests() {
    let mut buf = [0u8; MSG_MAX];
    assert_eq!(
        Request::Read("/a//b").encode(1, 0, &mut buf),
        Err(EncodeError::Path(PathError::BadSlash))
    );
    let big = [b'x'; PAYLOAD_MAX];
    assert_eq!(
        Request::Write("/a", &big).encode(1, 0, &mut buf),
        Err(EncodeError::TooLong)
    );
    assert_eq!(
        Request::SetPerms("/a", &[]).encode(1, 0, &mut buf),
        Err(EncodeError::NoPermissions)
    );
    let mut small = [0u8; 20];
    assert_eq!(
        Request::Read("/abcdef").encode(1, 0, &mut small),
        Err(EncodeError::BufferTooSmall)
    );
}

#[test]
fn decodes_and_validates_replies() {
    let (rq, ..) = req(Request::Directory("/a"), 4, 0);
    let p = b"x\0y-1\0";
    let r = decode_reply(&rq, &reply(MsgType::Directory, 4, 0, p), p).unwrap();
    let Reply::Names(names) = r else {
        panic!("{r:?}")
    };
    assert!(names.eq(["x", "y-1"]));
    assert!(matches!(
        decode_reply(&rq, &reply(MsgType::Directory, 4, 0, b""), b""),
        Ok(Reply::Names(_))
    ));
    for bad in [&b"x"[..], b"x\0\0", b"a/b\0", b"\0"] {
        assert!(
            decode_reply(&rq, &reply(MsgType::Directory, 4, 0, bad), bad).is_err(),
            "{bad:?}"
        );
    }
    assert_eq!(
        decode_reply(&rq, &reply(MsgType::Directory, 5, 0, p), p),
        Err(DecodeError::ReqIdMismatch {
            expected: 4,
            got: 5
        })
    );
    assert_eq!(
        decode_reply(&rq, &reply(MsgType::Read, 4, 0, p), p),
        Err(DecodeError::UnexpectedType {
            expected: MsgType::Directory,
            got: MsgType::Read
        })
    );
    let e = b"EAGAIN\0";
    assert_eq!(
        decode_reply(&rq, &reply(MsgType::Error, 4, 0, e), e),
        Ok(Reply::Error(XsErrno::EAGAIN))
    );
    let e = b"ENEW\0";
    assert_eq!(
        decode_reply(&rq, &reply(MsgType::Error, 4, 0, e), e),
        Ok(Reply::Error(XsErrno::Other))
    );
    let e = b"eagain\0";
    assert!(decode_reply(&rq, &reply(MsgType::Error, 4, 0, e), e).is_err());

    let (rq, ..) = req(Request::TransactionStart, 1, 0);
    let p = b"17\0";
    assert_eq!(
        decode_reply(&rq, &reply(MsgType::TransactionStart, 1, 0, p), p),
        Ok(Reply::TxId(17))
    );
    let p = b"0\0";
    assert!(decode_reply(&rq, &reply(MsgType::TransactionStart, 1, 0, p), p).is_err());

    let (rq, ..) = req(Request::Write("/a", b""), 2, 6);
    assert_eq!(
        decode_reply(&rq, &reply(MsgType::Write, 2, 6, b"OK\0"), b"OK\0"),
        Ok(Reply::Ok)
    );
    assert!(decode_reply(&rq, &reply(MsgType::Write, 2, 6, b"OK"), b"OK").is_err());
    assert_eq!(
        decode_reply(&rq, &reply(MsgType::Write, 2, 0, b"OK\0"), b"OK\0"),
        Err(DecodeError::TxIdMismatch {
            expected: 6,
            got: 0
        })
    );

    let (rq, ..) = req(Request::GetPerms("/a"), 3, 0);
    let p = b"n3\0r5\0";
    let Reply::Perms(perms) = decode_reply(&rq, &reply(MsgType::GetPerms, 3, 0, p), p).unwrap()
    else {
        panic!()
    };
    assert_eq!(perms.count(), 2);
    assert!(decode_reply(&rq, &reply(MsgType::GetPerms, 3, 0, b""), b"").is_err());
}

#[test]
fn watch_events() {
    assert_eq!(
        decode_watch_event(b"/a/b\0tok\0"),
        Ok(WatchEventRef {
            path: "/a/b",
            token: "tok"
        })
    );
    assert!(decode_watch_event(b"/a/b\0").is_err());
    assert!(decode_watch_event(b"/a/b\0tok").is_err());
    assert!(decode_watch_event(b"/a b\0tok\0").is_err());
}

#[test]
fn headers() {
    let h = Header {
        ty: MsgType::Read,
        req_id: 1,
        tx_id: 2,
        len: 4096,
    };
    assert_eq!(Header::decode(&h.encode()), Ok(h));
    let mut b = h.encode();
    b[12..16].copy_from_slice(&4097u32.to_le_bytes());
    assert_eq!(Header::decode(&b), Err(DecodeError::TooLong(4097)));
    let mut b = h.encode();
    b[0..4].copy_from_slice(&23u32.to_le_bytes());
    assert_eq!(Header::decode(&b), Err(DecodeError::UnknownType(23)));
}
