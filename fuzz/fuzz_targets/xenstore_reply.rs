//! Decodes arbitrary bytes as a xenstore daemon's message answering one of
//! our requests, and as a watch event. Decoding must never panic; what it
//! accepts must answer the request (same ids, same type or ERROR) and obey
//! its type's syntax.

#![no_main]

use ins_xen::xenstore::wire::{self, Header, MsgType, Reply, split_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else {
        return;
    };
    let _ = wire::decode_watch_event(msg);
    let Ok((reply, payload)) = split_message(msg) else {
        return;
    };
    assert_eq!(payload.len(), reply.len as usize);
    let Ok(ty) = MsgType::try_from(u32::from(sel % 23)) else {
        return;
    };
    // The request we "sent": same ids as the reply half of the time.
    let sent = if sel & 0x80 != 0 {
        Header {
            ty,
            req_id: reply.req_id,
            tx_id: reply.tx_id,
            len: 0,
        }
    } else {
        Header {
            ty,
            req_id: 1,
            tx_id: 0,
            len: 0,
        }
    };
    let Ok(r) = wire::decode_reply(&sent, &reply, payload) else {
        return;
    };
    assert_eq!(reply.req_id, sent.req_id);
    assert_eq!(reply.tx_id, sent.tx_id);
    assert!(reply.ty == sent.ty || reply.ty == MsgType::Error);
    match r {
        Reply::Ok => assert_eq!(payload, b"OK\0"),
        Reply::Value(v) => assert_eq!(v, payload),
        Reply::Names(names) => {
            for n in names {
                assert!(!n.is_empty() && !n.contains('/') && !n.contains('\0'));
            }
        }
        Reply::Perms(perms) => assert!(perms.count() >= 1),
        Reply::TxId(id) => assert_ne!(id, 0),
        Reply::Path(p) => assert!(p.starts_with('/')),
        Reply::Error(_) => assert_eq!(reply.ty, MsgType::Error),
    }
});
