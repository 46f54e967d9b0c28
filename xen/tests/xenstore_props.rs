//! Property tests of the xenstore codec and client: requests always encode
//! to well-formed, bounded messages; replies decode only when they answer
//! the request and have the exact syntax of their type; the client matches
//! replies across interleaved watch events and retries conflicting
//! transactions.

use std::collections::VecDeque;

use ins_xen::DomId;
use ins_xen::xenstore::wire::{self, HEADER_LEN, Header, MSG_MAX, PAYLOAD_MAX, split_message};
use ins_xen::xenstore::{
    Access, Client, DecodeError, MsgType, Permission, Reply, Request, Stream, TxId, XsErrno,
};
use proptest::prelude::*;

fn element() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_@-]{1,12}"
}

fn abs_path() -> impl Strategy<Value = String> {
    prop::collection::vec(element(), 1..6).prop_map(|v| format!("/{}", v.join("/")))
}

fn msg_type() -> impl Strategy<Value = MsgType> {
    (0u32..23).prop_map(|t| MsgType::try_from(t).unwrap())
}

fn any_request() -> impl Strategy<Value = (u8, String, Vec<u8>, Vec<(u16, u8)>, String)> {
    (
        0u8..13,
        abs_path(),
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec((0u16..0x7FF0, 0u8..4), 1..5),
        "[!-~]{1,20}",
    )
}

fn build<'a>(
    kind: u8,
    path: &'a str,
    value: &'a [u8],
    perms: &'a [Permission],
    token: &'a str,
) -> Request<'a> {
    match kind {
        0 => Request::Read(path),
        1 => Request::Write(path, value),
        2 => Request::Mkdir(path),
        3 => Request::Rm(path),
        4 => Request::Directory(path),
        5 => Request::GetPerms(path),
        6 => Request::SetPerms(path, perms),
        7 => Request::Watch(path, token),
        8 => Request::Unwatch(path, token),
        9 => Request::TransactionStart,
        10 => Request::TransactionEnd(value.len().is_multiple_of(2)),
        11 => Request::GetDomainPath(DomId(value.len() as u16)),
        _ => Request::ResetWatches,
    }
}

const ACCESS: [Access; 4] = [Access::None, Access::Read, Access::Write, Access::Both];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every valid request encodes to one message whose header announces
    /// exactly its payload, within the protocol's limit.
    #[test]
    fn requests_encode_to_bounded_messages(
        (kind, path, value, perms, token) in any_request(), req_id: u32, tx: u32,
    ) {
        let perms: Vec<Permission> =
            perms.iter().map(|&(d, a)| Permission::new(DomId(d), ACCESS[a as usize])).collect();
        let req = build(kind, &path, &value, &perms, &token);
        let mut buf = [0u8; MSG_MAX];
        let (n, sent) = req.encode(req_id, tx, &mut buf).unwrap();
        let (h, payload) = split_message(&buf[..n]).unwrap();
        prop_assert_eq!(h, sent);
        prop_assert_eq!(h.ty, req.msg_type());
        prop_assert!(payload.len() <= PAYLOAD_MAX);
        prop_assert_eq!(h.req_id, req_id);
        // Paths are NUL-terminated on the wire.
        if kind <= 8 {
            prop_assert!(payload.starts_with(path.as_bytes()));
            prop_assert_eq!(payload[path.len()], 0);
        }
    }

    /// Replies to one request: anything whose ids differ is refused, and
    /// nothing panics on arbitrary bytes.
    #[test]
    fn replies_must_answer_the_request(
        ty in msg_type(), req_id: u32, tx_id: u32, other_id: u32,
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let sent = Header { ty, req_id, tx_id, len: 0 };
        let reply = Header { ty, req_id: other_id, tx_id, len: payload.len() as u32 };
        let r = wire::decode_reply(&sent, &reply, &payload);
        if other_id != req_id {
            prop_assert_eq!(r, Err(DecodeError::ReqIdMismatch { expected: req_id, got: other_id }));
        }
        let short = Header { len: payload.len() as u32 + 1, ..reply };
        prop_assert_eq!(wire::decode_reply(&sent, &short, &payload), Err(DecodeError::Truncated));
    }

    /// A directory listing decodes to exactly the names it was built from.
    #[test]
    fn directory_round_trip(names in prop::collection::vec(element(), 0..40)) {
        let payload: Vec<u8> = names.iter().flat_map(|n| n.bytes().chain([0])).collect();
        let sent = Header { ty: MsgType::Directory, req_id: 3, tx_id: 0, len: 0 };
        let reply = Header { len: payload.len() as u32, ..sent };
        let Ok(Reply::Names(got)) = wire::decode_reply(&sent, &reply, &payload) else {
            return Err(TestCaseError::fail("refused a valid listing"));
        };
        prop_assert_eq!(got.map(String::from).collect::<Vec<_>>(), names);
    }

    /// Permission entries format and parse back; GET_PERMS replies decode.
    #[test]
    fn perms_round_trip(perms in prop::collection::vec((0u16..0x7FF0, 0u8..4), 1..10)) {
        let perms: Vec<Permission> =
            perms.iter().map(|&(d, a)| Permission::new(DomId(d), ACCESS[a as usize])).collect();
        let mut payload = Vec::new();
        for p in &perms {
            let mut s = [0u8; Permission::MAX_LEN];
            let s = p.format(&mut s);
            prop_assert_eq!(Permission::parse(s), Some(*p));
            payload.extend_from_slice(s);
            payload.push(0);
        }
        let sent = Header { ty: MsgType::GetPerms, req_id: 1, tx_id: 0, len: 0 };
        let reply = Header { len: payload.len() as u32, ..sent };
        let Ok(Reply::Perms(got)) = wire::decode_reply(&sent, &reply, &payload) else {
            return Err(TestCaseError::fail("refused valid permissions"));
        };
        prop_assert_eq!(got.collect::<Vec<_>>(), perms);
    }

    /// Whatever the reply, decoding never panics and what it accepts obeys
    /// the type's syntax.
    #[test]
    fn decode_reply_total(ty in msg_type(), rty in msg_type(), payload in prop::collection::vec(any::<u8>(), 0..80)) {
        let sent = Header { ty, req_id: 1, tx_id: 0, len: 0 };
        let reply = Header { ty: rty, req_id: 1, tx_id: 0, len: payload.len() as u32 };
        match wire::decode_reply(&sent, &reply, &payload) {
            Ok(Reply::Ok) => prop_assert_eq!(&payload[..], b"OK\0"),
            Ok(Reply::TxId(id)) => prop_assert!(id != 0),
            Ok(Reply::Path(p)) => prop_assert!(p.starts_with('/')),
            Ok(Reply::Names(n)) => for name in n { prop_assert!(!name.is_empty() && !name.contains('/')) },
            Ok(_) | Err(_) => {}
        }
    }
}

/// A scripted daemon: answers each request from a queue of canned replies
/// (fault injection for conflicts and interleavings a real daemon cannot
/// produce on demand), recording what it was sent.
/// Messages delivered before a reply, the reply's type and payload.
type Step = (Vec<(MsgType, Vec<u8>)>, MsgType, Vec<u8>);

struct Scripted {
    sent: Vec<Vec<u8>>,
    /// For each request: messages to deliver before its reply, and the
    /// reply's (type, payload).
    script: VecDeque<Step>,
    out: VecDeque<u8>,
}

impl Stream for Scripted {
    type Error = String;
    fn write_all(&mut self, buf: &[u8]) -> Result<(), String> {
        let (h, _) = split_message(buf).map_err(|e| e.to_string())?;
        self.sent.push(buf.to_vec());
        let (before, ty, payload) = self.script.pop_front().ok_or("unexpected request")?;
        for (t, p) in before {
            self.push(
                Header {
                    ty: t,
                    req_id: 0,
                    tx_id: 0,
                    len: p.len() as u32,
                },
                &p,
            );
        }
        self.push(
            Header {
                ty,
                req_id: h.req_id,
                tx_id: h.tx_id,
                len: payload.len() as u32,
            },
            &payload,
        );
        Ok(())
    }
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), String> {
        if self.out.len() < buf.len() {
            return Err("read past the script".into());
        }
        for b in buf.iter_mut() {
            *b = self.out.pop_front().unwrap();
        }
        Ok(())
    }
}

impl Scripted {
    fn new() -> Self {
        Scripted {
            sent: Vec::new(),
            script: VecDeque::new(),
            out: VecDeque::new(),
        }
    }
    fn push(&mut self, h: Header, payload: &[u8]) {
        self.out.extend(h.encode());
        self.out.extend(payload);
    }
    fn expect(mut self, before: Vec<(MsgType, Vec<u8>)>, ty: MsgType, payload: &[u8]) -> Self {
        self.script.push_back((before, ty, payload.to_vec()));
        self
    }
}

proptest! {
    /// Watch events interleaved before replies are queued in order and
    /// never taken for replies.
    #[test]
    fn client_queues_interleaved_events(events in prop::collection::vec(("/[a-z]{1,8}", "[a-z]{1,8}"), 0..20)) {
        let before: Vec<(MsgType, Vec<u8>)> = events
            .iter()
            .map(|(p, t)| (MsgType::WatchEvent, format!("{p}\0{t}\0").into_bytes()))
            .collect();
        let s = Scripted::new().expect(before, MsgType::Read, b"value");
        let mut c = Client::new(s, 64);
        prop_assert_eq!(c.read(TxId::NONE, "/x").unwrap(), b"value".to_vec());
        for (p, t) in &events {
            let ev = c.take_event().unwrap();
            prop_assert_eq!(&ev.path, p);
            prop_assert_eq!(&ev.token, t);
        }
        prop_assert!(c.take_event().is_none());
    }

    /// A transaction that conflicts `k` times runs its body `k + 1` times
    /// and commits once; with fewer attempts allowed it reports the
    /// conflict.
    #[test]
    fn transactions_retry_on_eagain(k in 0u32..5, allowed in 1u32..7) {
        let mut s = Scripted::new();
        let attempts = (k + 1).min(allowed);
        for i in 0..attempts {
            let id = format!("{}\0", 10 + i);
            s = s.expect(vec![], MsgType::TransactionStart, id.as_bytes())
                .expect(vec![], MsgType::Write, b"OK\0");
            if i < k {
                s = s.expect(vec![], MsgType::Error, b"EAGAIN\0");
            } else {
                s = s.expect(vec![], MsgType::TransactionEnd, b"OK\0");
            }
        }
        let mut c = Client::new(s, 8);
        let mut runs = 0;
        let r = c.transaction(allowed, |c, tx| {
            runs += 1;
            c.write(tx, "/a", b"1")
        });
        prop_assert_eq!(runs, attempts);
        if k < allowed {
            prop_assert!(r.is_ok());
        } else {
            let conflicted = matches!(r, Err(ins_xen::xenstore::Error::Conflict { .. }));
            prop_assert!(conflicted);
        }
    }
}

#[test]
fn client_reports_daemon_errors_and_refuses_foreign_replies() {
    let s = Scripted::new().expect(vec![], MsgType::Error, b"EACCES\0");
    let mut c = Client::new(s, 8);
    let e = c.read(TxId::NONE, "/local/domain/3/data/x").unwrap_err();
    assert!(matches!(e, ins_xen::xenstore::Error::Xs(XsErrno::EACCES)));
    assert_eq!(e.errno(), 13);

    let s = Scripted::new().expect(vec![], MsgType::Read, b"").expect(
        vec![],
        MsgType::Directory,
        b"a\0",
    );
    let mut c = Client::new(s, 8);
    assert_eq!(c.try_read(TxId::NONE, "/a").unwrap(), Some(vec![]));
    // A reply of the wrong type (a DIRECTORY answer to a READ) is refused.
    let e = c.read(TxId::NONE, "/a").unwrap_err();
    assert!(matches!(
        e,
        ins_xen::xenstore::Error::Decode(DecodeError::UnexpectedType { .. })
    ));
    let _ = HEADER_LEN;
}
