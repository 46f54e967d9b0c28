//! Decodes arbitrary bytes as one message frame. Decoding must never panic;
//! whatever it accepts must re-encode to exactly the same bytes (the encoding
//! is canonical) and decode again to the same value.

#![no_main]

use ins_protocol::msg::Msg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Msg::decode(data) else {
        return;
    };
    let mut buf = vec![0u8; msg.encoded_len()];
    let n = msg.encode(&mut buf).expect("a decoded message must encode");
    assert_eq!(n, buf.len());
    assert_eq!(buf.as_slice(), data, "re-encoding is not canonical");
    assert_eq!(Msg::decode(&buf), Ok(msg));
    assert_eq!(msg.kind() as u16, u16::from_le_bytes([data[0], data[1]]));
});
