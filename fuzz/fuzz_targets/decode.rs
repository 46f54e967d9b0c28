//! Decodes arbitrary bytes as one message frame. Decoding must never panic;
//! whatever it accepts must re-encode to exactly the same bytes (the encoding
//! is canonical) and decode again to the same value. The same holds for
//! the datagram pair header the driver decodes from the app.

#![no_main]

use ins_protocol::msg::{Msg, decode_pair_header, encode_pair_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((addr, info)) = decode_pair_header(data) {
        assert_eq!(
            encode_pair_header(addr, &info, 0).as_slice(),
            data,
            "pair header is not canonical"
        );
    }
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
