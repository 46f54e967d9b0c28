//! The in-band header of UDP INS sockets.
//!
//! Every packet on a UDP pair (`SOCK_SEQPACKET`) starts with a 72-byte
//! pair header (`ins_protocol::msg::pktinfo`): a
//! [`WireAddr`](ins_protocol::msg::WireAddr), app→driver the destination
//! (family 0 = the connected peer), its `reserved` word set to
//! [`PAIR_HEADER_MAGIC`] (a packet without it was written past the shim:
//! the driver sends it, whole, to a connected socket's peer), driver→app
//! the source; then the datagram's [`PktInfo`], app→driver from
//! `sendmsg`'s control messages, driver→app what the instance's kernel
//! reported ([`crate::cmsg`]). The payload follows.

use std::net::SocketAddr;

use ins_protocol::msg::{
    PAIR_HEADER_LEN, PAIR_HEADER_MAGIC, PktInfo, decode_pair_header, encode_pair_header,
};

use crate::errno::Errno;

/// Header length.
pub const HEADER_LEN: usize = PAIR_HEADER_LEN;

/// Largest UDP payload over IPv4 (65535 − 20 − 8).
pub const MAX_UDP4: usize = 65507;
/// Largest UDP payload over IPv6 without jumbograms (65535 − 8).
pub const MAX_UDP6: usize = 65527;

/// The header for a datagram to `dest` (`None`: the connected peer) with
/// packet information `info`.
pub fn header(dest: Option<SocketAddr>, info: &PktInfo) -> [u8; HEADER_LEN] {
    encode_pair_header(dest, info, PAIR_HEADER_MAGIC)
}

/// The source address and packet information in a received header
/// (`EIO` if the driver sent an invalid one).
pub fn source(hdr: &[u8]) -> Result<(Option<SocketAddr>, PktInfo), Errno> {
    decode_pair_header(hdr).map_err(|_| Errno::EIO)
}

/// Checks a payload length against the UDP limit (`EMSGSIZE`).
pub fn check_len(len: usize, v6: bool) -> Result<(), Errno> {
    let max = if v6 { MAX_UDP6 } else { MAX_UDP4 };
    if len > max {
        Err(Errno(libc::EMSGSIZE))
    } else {
        Ok(())
    }
}

/// Payload length of a received packet of `n` bytes (with `MSG_TRUNC`, the
/// packet's real length); `EIO` for a packet shorter than the header.
pub fn payload_len(n: usize) -> Result<usize, Errno> {
    n.checked_sub(HEADER_LEN).ok_or(Errno::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        // What the driver decodes: the header with the magic cleared.
        let cleared = |mut h: [u8; HEADER_LEN]| {
            assert_eq!(h[28..32], PAIR_HEADER_MAGIC.to_le_bytes());
            h[28..32].fill(0);
            h
        };
        let info = PktInfo {
            v4: Some(ins_protocol::msg::PktInfo4 {
                ifindex: 1,
                spec_dst: "127.0.0.1".parse().unwrap(),
                addr: "127.0.0.2".parse().unwrap(),
            }),
            v6: None,
        };
        for s in ["192.0.2.1:53", "[2001:db8::1]:443"] {
            let a: SocketAddr = s.parse().unwrap();
            let h = cleared(header(Some(a), &PktInfo::NONE));
            assert_eq!(source(&h), Ok((Some(a), PktInfo::NONE)));
            let h = cleared(header(Some(a), &info));
            assert_eq!(source(&h), Ok((Some(a), info)));
        }
        let none = cleared(header(None, &PktInfo::NONE));
        assert_eq!(none, [0u8; HEADER_LEN]);
        assert_eq!(source(&none), Ok((None, PktInfo::NONE)));
        let mut bad = cleared(header(Some("192.0.2.1:53".parse().unwrap()), &info));
        bad[20] = 1; // a byte IPv4 leaves zero
        assert_eq!(source(&bad), Err(Errno::EIO));
        let mut bad = cleared(header(None, &PktInfo::NONE));
        bad[70] = 1; // a byte of absent packet information
        assert_eq!(source(&bad), Err(Errno::EIO));
        assert_eq!(source(&none[..HEADER_LEN - 1]), Err(Errno::EIO));
    }

    #[test]
    fn lengths() {
        assert_eq!(payload_len(72), Ok(0));
        assert_eq!(payload_len(80), Ok(8));
        assert_eq!(payload_len(71), Err(Errno::EIO));
        assert!(check_len(MAX_UDP4, false).is_ok());
        assert_eq!(check_len(MAX_UDP4 + 1, false), Err(Errno(libc::EMSGSIZE)));
        assert!(check_len(MAX_UDP4 + 1, true).is_ok());
        assert_eq!(check_len(MAX_UDP6 + 1, true), Err(Errno(libc::EMSGSIZE)));
    }
}
