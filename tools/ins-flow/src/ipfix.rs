//! IPFIX (RFC 7011) layout: header, template fields, element ids.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |       Version = 0x000a        |        Message Length         |
//! |                         Export Time                           |
//! |                       Sequence Number                         |
//! |                  Observation Domain ID                        |
//! field specifier: |E| IE id (15) | length | [enterprise number if E]
//! ```
//!
//! Template (v4; v6 uses 27/28 with length 16): sourceIPv4Address 8,
//! destinationIPv4Address 12, sourceTransportPort 7, destinationTransportPort
//! 11, protocolIdentifier 4, tcpControlBits 6 (1 byte: reduced-size encoding,
//! RFC 7011 §6.2; pmacct reads only one byte), octetDeltaCount 1,
//! packetDeltaCount 2, reverseOctetDeltaCount 1/PEN 29305, reversePacketDeltaCount
//! 2/PEN 29305 (RFC 5103), flowStartMilliseconds 152, flowEndMilliseconds 153,
//! flowEndReason 136, then INS elements under the configured PEN:
//! [`INS_INSTANCE_ID`] (u32), [`INS_CLOSE_REASON`] (u8, `CloseReason` code),
//! [`INS_FLOW_ID`] (u64). The default PEN is 32473, the number RFC 5612
//! reserves for documentation; operators set their own.
//!
//! Connection-telemetry template (`ins-flow export --telemetry`, ids 258
//! for IPv4 and 259 for IPv6): addresses and ports as above,
//! protocolIdentifier, octetTotalCount 85 / packetTotalCount 86 (received
//! by INS) and their RFC 5103 reverses (sent), flowStartMilliseconds (the
//! connection's start), flowEndMilliseconds (the report's time), the INS
//! instance and flow ids, then under the INS PEN:
//!
//! | id | name | type |
//! |---|---|---|
//! | 10 | insReportCause (0 periodic, 1 on demand, 2 final) | u8 |
//! | 11 | insDirection (0 accepted, 1 initiated) | u8 |
//! | 12, 13 | insIdleInMilliseconds, insIdleOutMilliseconds | u32 |
//! | 14, 15 | insFirstInMilliseconds, insFirstOutMilliseconds (0xffffffff: none) | u32 |
//! | 16 | insPeerWindow (bytes) | u32 |
//! | 17 | insZeroWindowMilliseconds | u32 |
//! | 18 | insBytesAcked | u64 |
//! | 19 | insUnsentBytes | u32 |
//! | 20, 21 | insSampledIn, insSampledOut (bytes) | u32 |
//! | 22, 23 | insEntropyIn, insEntropyOut (millibits per byte) | u16 |
//! | 24, 25 | insPrintableIn, insPrintableOut (per mille) | u16 |
//! | 26, 27 | insLengthHistIn, insLengthHistOut (8 × u16 chunk counts, buckets ≤63, ≤127, ≤255, ≤511, ≤1023, ≤1499, ≤4095, larger) | octetArray (16) |

use crate::record::{ConnField, Content, Field};

/// IPFIX version number.
pub const VERSION: u16 = 10;
/// Message header length.
pub const HEADER_LEN: usize = 16;
/// Set id of a template set.
pub const SET_TEMPLATE: u16 = 2;
/// RFC 5103 reverse-element enterprise number.
pub const REVERSE_PEN: u32 = 29305;
/// Default enterprise number for INS elements (RFC 5612 documentation PEN).
pub const DEFAULT_PEN: u32 = 32473;
/// INS element: instance id.
pub const INS_INSTANCE_ID: u16 = 1;
/// INS element: close reason code.
pub const INS_CLOSE_REASON: u16 = 2;
/// INS element: flow id.
pub const INS_FLOW_ID: u16 = 3;
/// First INS telemetry element id (see the module docs for the list).
pub const INS_TELEMETRY_FIRST: u16 = 10;

const fn ie(id: u16, len: u16, content: Content) -> Field {
    Field {
        id,
        pen: None,
        len,
        content,
    }
}

const fn ent(id: u16, pen: u32, len: u16, content: Content) -> Field {
    Field {
        id,
        pen: Some(pen),
        len,
        content,
    }
}

/// The template fields for IPv4 (`true`) or IPv6 flows.
pub fn template(v4: bool, pen: u32) -> Vec<Field> {
    let (src, dst) = if v4 {
        (ie(8, 4, Content::SrcV4), ie(12, 4, Content::DstV4))
    } else {
        (ie(27, 16, Content::SrcV6), ie(28, 16, Content::DstV6))
    };
    vec![
        src,
        dst,
        ie(7, 2, Content::SrcPort),
        ie(11, 2, Content::DstPort),
        ie(4, 1, Content::Proto),
        ie(6, 1, Content::TcpFlags),
        ie(1, 8, Content::Octets),
        ie(2, 8, Content::Packets),
        ent(1, REVERSE_PEN, 8, Content::RevOctets),
        ent(2, REVERSE_PEN, 8, Content::RevPackets),
        ie(152, 8, Content::StartMs),
        ie(153, 8, Content::EndMs),
        ie(136, 1, Content::EndReason),
        ent(INS_INSTANCE_ID, pen, 4, Content::InstId),
        ent(INS_CLOSE_REASON, pen, 1, Content::InsReason),
        ent(INS_FLOW_ID, pen, 8, Content::FlowId),
    ]
}

/// The connection-telemetry template for IPv4 (`true`) or IPv6.
pub fn conn_template(v4: bool, pen: u32) -> Vec<Field> {
    let (src, dst) = if v4 {
        (ie(8, 4, Content::SrcV4), ie(12, 4, Content::DstV4))
    } else {
        (ie(27, 16, Content::SrcV6), ie(28, 16, Content::DstV6))
    };
    let mut v = vec![
        src,
        dst,
        ie(7, 2, Content::SrcPort),
        ie(11, 2, Content::DstPort),
        ie(4, 1, Content::Proto),
        ie(85, 8, Content::Octets),
        ie(86, 8, Content::Packets),
        ent(85, REVERSE_PEN, 8, Content::RevOctets),
        ent(86, REVERSE_PEN, 8, Content::RevPackets),
        ie(152, 8, Content::StartMs),
        ie(153, 8, Content::EndMs),
        ent(INS_INSTANCE_ID, pen, 4, Content::InstId),
        ent(INS_FLOW_ID, pen, 8, Content::FlowId),
    ];
    let t = |off: u16, len: u16, c: ConnField| {
        ent(INS_TELEMETRY_FIRST + off, pen, len, Content::Conn(c))
    };
    v.extend([
        t(0, 1, ConnField::Cause),
        t(1, 1, ConnField::Direction),
        t(2, 4, ConnField::IdleIn),
        t(3, 4, ConnField::IdleOut),
        t(4, 4, ConnField::FirstIn),
        t(5, 4, ConnField::FirstOut),
        t(6, 4, ConnField::PeerWindow),
        t(7, 4, ConnField::ZeroWindow),
        t(8, 8, ConnField::BytesAcked),
        t(9, 4, ConnField::Unsent),
        t(10, 4, ConnField::Sampled(0)),
        t(11, 4, ConnField::Sampled(1)),
        t(12, 2, ConnField::Entropy(0)),
        t(13, 2, ConnField::Entropy(1)),
        t(14, 2, ConnField::Printable(0)),
        t(15, 2, ConnField::Printable(1)),
        t(16, 16, ConnField::Hist(0)),
        t(17, 16, ConnField::Hist(1)),
    ]);
    v
}

/// A message header.
pub fn header(length: u16, export_secs: u32, seq: u32, domain: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..2].copy_from_slice(&VERSION.to_be_bytes());
    h[2..4].copy_from_slice(&length.to_be_bytes());
    h[4..8].copy_from_slice(&export_secs.to_be_bytes());
    h[8..12].copy_from_slice(&seq.to_be_bytes());
    h[12..16].copy_from_slice(&domain.to_be_bytes());
    h
}
