//! netif requests and responses (`io/netif.h`), and the hardened parsing
//! of responses.
//!
//! Every response is parsed from a private copy (see
//! [`crate::ring::FrontRing::take_response`]) and checked before anything
//! in it is used:
//! * the id must name a request we have outstanding ([`Slots`]), and it is
//!   completed exactly once (a repeated or invented id is refused);
//! * a negative status is an error (the slot is still completed, so its
//!   buffer can be reused);
//! * for rx, `offset + length` must stay inside the page, the length must
//!   be non-zero, and flags we did not negotiate (`more_data`,
//!   `extra_info`: no scatter-gather, no GSO) make the packet an error.

use core::fmt;

use crate::ring::RING_SIZE;

/// Bytes of a tx ring entry (`netif_tx_request`: 12, response: 4).
pub const TX_ENTRY: usize = 12;
/// Bytes of a tx response.
pub const TX_RSP: usize = 4;
/// Bytes of an rx ring entry (request and response: 8).
pub const RX_ENTRY: usize = 8;
/// Bytes of a page: no packet part may cross it.
pub const PAGE: usize = 4096;

/// `NETRXF_csum_blank`: the checksum was not filled in (offload).
pub const RXF_CSUM_BLANK: u16 = 1 << 1;
/// `NETRXF_data_validated`.
pub const RXF_DATA_VALIDATED: u16 = 1 << 0;
/// `NETRXF_more_data`: the packet continues (scatter-gather).
pub const RXF_MORE_DATA: u16 = 1 << 2;
/// `NETRXF_extra_info`: extra descriptors follow (GSO).
pub const RXF_EXTRA_INFO: u16 = 1 << 3;

/// A `netif_tx_request`.
pub fn tx_request(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> [u8; TX_ENTRY] {
    let mut b = [0u8; TX_ENTRY];
    b[0..4].copy_from_slice(&gref.to_le_bytes());
    b[4..6].copy_from_slice(&offset.to_le_bytes());
    b[6..8].copy_from_slice(&flags.to_le_bytes());
    b[8..10].copy_from_slice(&id.to_le_bytes());
    b[10..12].copy_from_slice(&size.to_le_bytes());
    b
}

/// A `netif_rx_request`.
pub fn rx_request(id: u16, gref: u32) -> [u8; RX_ENTRY] {
    let mut b = [0u8; RX_ENTRY];
    b[0..2].copy_from_slice(&id.to_le_bytes());
    b[4..8].copy_from_slice(&gref.to_le_bytes());
    b
}

/// Which request ids are outstanding (at most [`RING_SIZE`]).
#[derive(Clone, Debug, Default)]
pub struct Slots {
    out: [u64; (RING_SIZE / 64) as usize],
}

impl Slots {
    /// Marks `id` outstanding; `false` if it already was or is out of range.
    pub fn start(&mut self, id: u16) -> bool {
        if u32::from(id) >= RING_SIZE || self.is_out(id) {
            return false;
        }
        self.out[usize::from(id / 64)] |= 1 << (id % 64);
        true
    }

    /// Whether `id` is outstanding.
    pub fn is_out(&self, id: u16) -> bool {
        u32::from(id) < RING_SIZE && self.out[usize::from(id / 64)] & (1 << (id % 64)) != 0
    }

    /// Completes `id`; `false` if it was not outstanding.
    pub fn complete(&mut self, id: u16) -> bool {
        if !self.is_out(id) {
            return false;
        }
        self.out[usize::from(id / 64)] &= !(1 << (id % 64));
        true
    }

    /// Outstanding ids.
    pub fn count(&self) -> u32 {
        self.out.iter().map(|w| w.count_ones()).sum()
    }
}

/// What is wrong with a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RespError {
    /// The id names no outstanding request (invented or repeated).
    UnknownId(u16),
    /// The backend reported an error (`NETIF_RSP_*` < 0).
    Status(i16),
    /// An rx packet of length 0 (or `NETIF_RSP_NULL`).
    Empty,
    /// `offset + length` leaves the page.
    OutOfPage {
        /// Claimed offset.
        offset: u16,
        /// Claimed length.
        len: u16,
    },
    /// Flags we did not negotiate.
    Unsupported(u16),
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::UnknownId(id) => write!(f, "response for unknown request id {id}"),
            RespError::Status(s) => write!(f, "backend error status {s}"),
            RespError::Empty => f.write_str("empty packet"),
            RespError::OutOfPage { offset, len } => {
                write!(f, "packet at {offset}+{len} leaves the page")
            }
            RespError::Unsupported(fl) => write!(f, "unnegotiated flags {fl:#x}"),
        }
    }
}

/// A parsed tx response: the slot to reclaim and whether it was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxDone {
    /// The completed request id.
    pub id: u16,
    /// `Err` when the backend reported a failure (the slot is free anyway).
    pub result: Result<(), RespError>,
}

/// Parses a tx response copied out of the ring, completing its id.
pub fn parse_tx(entry: &[u8; TX_RSP], slots: &mut Slots) -> Result<TxDone, RespError> {
    let id = u16::from_le_bytes([entry[0], entry[1]]);
    let status = i16::from_le_bytes([entry[2], entry[3]]);
    if !slots.complete(id) {
        return Err(RespError::UnknownId(id));
    }
    let result = if status < 0 {
        Err(RespError::Status(status))
    } else {
        Ok(())
    };
    Ok(TxDone { id, result })
}

/// A parsed rx response: the buffer to re-post, and where the packet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RxDone {
    /// The completed request id (its buffer is ours again).
    pub id: u16,
    /// Offset and length of the packet in the page, or why it is dropped.
    pub packet: Result<(u16, u16), RespError>,
    /// The response's flags (`NETRXF_*`).
    pub flags: u16,
}

/// Parses an rx response copied out of the ring, completing its id.
pub fn parse_rx(entry: &[u8; RX_ENTRY], slots: &mut Slots) -> Result<RxDone, RespError> {
    let id = u16::from_le_bytes([entry[0], entry[1]]);
    let offset = u16::from_le_bytes([entry[2], entry[3]]);
    let flags = u16::from_le_bytes([entry[4], entry[5]]);
    let status = i16::from_le_bytes([entry[6], entry[7]]);
    if !slots.complete(id) {
        return Err(RespError::UnknownId(id));
    }
    let packet = if status < 0 {
        Err(RespError::Status(status))
    } else if flags & (RXF_MORE_DATA | RXF_EXTRA_INFO) != 0 {
        Err(RespError::Unsupported(flags))
    } else if status == 0 {
        Err(RespError::Empty)
    } else if usize::from(offset) + status as usize > PAGE {
        Err(RespError::OutOfPage {
            offset,
            len: status as u16,
        })
    } else {
        Ok((offset, status as u16))
    };
    Ok(RxDone { id, packet, flags })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rx(id: u16, offset: u16, flags: u16, status: i16) -> [u8; RX_ENTRY] {
        let mut b = [0u8; RX_ENTRY];
        b[0..2].copy_from_slice(&id.to_le_bytes());
        b[2..4].copy_from_slice(&offset.to_le_bytes());
        b[4..6].copy_from_slice(&flags.to_le_bytes());
        b[6..8].copy_from_slice(&status.to_le_bytes());
        b
    }

    #[test]
    fn rx_checks() {
        let mut s = Slots::default();
        assert!(s.start(3));
        assert!(!s.start(3), "already out");
        assert!(!s.start(256), "out of range");
        assert_eq!(
            parse_rx(&rx(4, 0, 0, 60), &mut s),
            Err(RespError::UnknownId(4))
        );
        assert_eq!(
            parse_rx(&rx(3, 10, 0, 60), &mut s),
            Ok(RxDone {
                id: 3,
                packet: Ok((10, 60)),
                flags: 0
            })
        );
        assert_eq!(
            parse_rx(&rx(3, 10, 0, 60), &mut s),
            Err(RespError::UnknownId(3)),
            "only once"
        );
        for (off, flags, st, want) in [
            (
                4000,
                0,
                100,
                RespError::OutOfPage {
                    offset: 4000,
                    len: 100,
                },
            ),
            (0, 0, -1, RespError::Status(-1)),
            (0, 0, 0, RespError::Empty),
            (0, RXF_MORE_DATA, 100, RespError::Unsupported(RXF_MORE_DATA)),
        ] {
            s.start(7);
            let d = parse_rx(&rx(7, off, flags, st), &mut s).unwrap();
            assert_eq!(d.packet, Err(want));
            assert!(!s.is_out(7), "the slot is free again");
        }
        assert_eq!(
            parse_rx(&rx(9, 0, 0, 4096), &mut s),
            Err(RespError::UnknownId(9))
        );
        s.start(9);
        assert_eq!(
            parse_rx(&rx(9, 0, 0, 4096), &mut s).unwrap().packet,
            Ok((0, 4096))
        );
    }

    #[test]
    fn tx_checks() {
        let mut s = Slots::default();
        s.start(1);
        let e = |id: u16, st: i16| {
            let mut b = [0u8; TX_RSP];
            b[0..2].copy_from_slice(&id.to_le_bytes());
            b[2..4].copy_from_slice(&st.to_le_bytes());
            b
        };
        assert_eq!(parse_tx(&e(2, 0), &mut s), Err(RespError::UnknownId(2)));
        assert_eq!(
            parse_tx(&e(1, -2), &mut s),
            Ok(TxDone {
                id: 1,
                result: Err(RespError::Status(-2))
            })
        );
        assert_eq!(s.count(), 0);
        assert_eq!(
            tx_request(0x01020304, 5, 6, 7, 8),
            [4, 3, 2, 1, 5, 0, 6, 0, 7, 0, 8, 0]
        );
        assert_eq!(
            rx_request(0x0102, 0x0a0b0c0d),
            [2, 1, 0, 0, 0xd, 0xc, 0xb, 0xa]
        );
    }

    proptest! {
        /// Arbitrary responses never panic, never yield a packet outside
        /// the page, and complete only ids that were outstanding, once.
        #[test]
        fn rx_responses_from_a_hostile_backend(
            out in proptest::collection::btree_set(0u16..256, 0..64),
            entries in proptest::collection::vec(any::<[u8; RX_ENTRY]>(), 0..300),
        ) {
            let mut s = Slots::default();
            for &id in &out { s.start(id); }
            let mut done = std::collections::BTreeSet::new();
            for e in &entries {
                if let Ok(d) = parse_rx(e, &mut s) {
                    prop_assert!(out.contains(&d.id));
                    prop_assert!(done.insert(d.id), "completed twice");
                    if let Ok((off, len)) = d.packet {
                        prop_assert!(len > 0 && usize::from(off) + usize::from(len) <= PAGE);
                    }
                }
            }
            prop_assert_eq!(s.count() as usize, out.len() - done.len());
        }

        #[test]
        fn tx_responses_from_a_hostile_backend(
            out in proptest::collection::btree_set(0u16..256, 0..64),
            entries in proptest::collection::vec(any::<[u8; TX_RSP]>(), 0..300),
        ) {
            let mut s = Slots::default();
            for &id in &out { s.start(id); }
            let mut done = std::collections::BTreeSet::new();
            for e in &entries {
                if let Ok(d) = parse_tx(e, &mut s) {
                    prop_assert!(out.contains(&d.id) && done.insert(d.id));
                }
            }
        }
    }
}
