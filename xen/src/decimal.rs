//! Strict decimal numbers as xenstore carries them.
//!
//! Canonical form only: ASCII digits, no sign, no spaces, no leading zero
//! (except `0` itself), no overflow. A value that parses re-formats to the
//! same bytes, so what one side writes the other reads back exactly.

/// Parses a canonical unsigned decimal that fits in `u64`.
pub(crate) fn parse_u64(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 20 || (bytes.len() > 1 && bytes[0] == b'0') {
        return None;
    }
    let mut v: u64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

/// Parses a canonical unsigned decimal that fits in `u32`.
pub(crate) fn parse_u32(bytes: &[u8]) -> Option<u32> {
    parse_u64(bytes).and_then(|v| u32::try_from(v).ok())
}

/// Writes `v` in decimal into `out`, returning the digits used.
pub(crate) fn format_u64(v: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    let mut v = v;
    loop {
        i -= 1;
        out[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &out[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_only() {
        assert_eq!(parse_u32(b"0"), Some(0));
        assert_eq!(parse_u32(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_u32(b"4294967296"), None);
        for bad in [
            &b""[..],
            b"01",
            b"+1",
            b"-1",
            b" 1",
            b"1 ",
            b"1a",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
        }
        let mut buf = [0u8; 20];
        assert_eq!(format_u64(u64::MAX, &mut buf), b"18446744073709551615");
        assert_eq!(format_u64(0, &mut buf), b"0");
    }
}
