//! The in-band address header of UDP INS sockets.
//!
//! Every packet on a UDP pair (`SOCK_SEQPACKET`) starts with a 32-byte
//! [`WireAddr`]: app→driver the destination (family 0 = the connected
//! peer), its `reserved` word set to [`PAIR_HEADER_MAGIC`] (a packet
//! without it was written past the shim: the driver sends it, whole, to a
//! connected socket's peer); driver→app the source. The payload follows.

use std::net::SocketAddr;

use ins_protocol::msg::{PAIR_HEADER_MAGIC, WireAddr};
use zerocopy::IntoBytes;

use crate::errno::Errno;

/// Header length.
pub const HEADER_LEN: usize = WireAddr::LEN;

/// Largest UDP payload over IPv4 (65535 − 20 − 8).
pub const MAX_UDP4: usize = 65507;
/// Largest UDP payload over IPv6 without jumbograms (65535 − 8).
pub const MAX_UDP6: usize = 65527;

/// The header for a datagram to `dest` (`None`: the connected peer).
pub fn header(dest: Option<SocketAddr>) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out.copy_from_slice(WireAddr::from(dest).as_bytes());
    out[HEADER_LEN - 4..].copy_from_slice(&PAIR_HEADER_MAGIC.to_le_bytes());
    out
}

/// The source address in a received header (`EIO` if the driver sent an
/// invalid one).
pub fn source(hdr: &[u8]) -> Result<Option<SocketAddr>, Errno> {
    WireAddr::parse(hdr).map_err(|_| Errno::EIO)
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
            assert_eq!(h[HEADER_LEN - 4..], PAIR_HEADER_MAGIC.to_le_bytes());
            h[HEADER_LEN - 4..].fill(0);
            h
        };
        for s in ["192.0.2.1:53", "[2001:db8::1]:443"] {
            let a: SocketAddr = s.parse().unwrap();
            let h = cleared(header(Some(a)));
            assert_eq!(source(&h), Ok(Some(a)));
        }
        let none = cleared(header(None));
        assert_eq!(none, [0u8; HEADER_LEN]);
        assert_eq!(source(&none), Ok(None));
        let mut bad = cleared(header(Some("192.0.2.1:53".parse().unwrap())));
        bad[20] = 1; // a byte IPv4 leaves zero
        assert_eq!(source(&bad), Err(Errno::EIO));
        assert_eq!(source(&bad[..31]), Err(Errno::EIO));
    }

    #[test]
    fn lengths() {
        assert_eq!(payload_len(32), Ok(0));
        assert_eq!(payload_len(40), Ok(8));
        assert_eq!(payload_len(31), Err(Errno::EIO));
        assert!(check_len(MAX_UDP4, false).is_ok());
        assert_eq!(check_len(MAX_UDP4 + 1, false), Err(Errno(libc::EMSGSIZE)));
        assert!(check_len(MAX_UDP4 + 1, true).is_ok());
        assert_eq!(check_len(MAX_UDP6 + 1, true), Err(Errno(libc::EMSGSIZE)));
    }
}
