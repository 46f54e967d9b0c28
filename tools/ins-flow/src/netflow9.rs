//! NetFlow v9 (RFC 3954) layout: header, template fields, field types.
//!
//! ```text
//! | Version = 9 u16 | Count u16 | sysUpTime u32 (ms) | UNIX Secs u32 | Sequence u32 | Source ID u32 |
//! template flowset: FlowSet ID 0 | Length | Template ID | Field Count | (Type u16, Length u16)*
//! data flowset:     FlowSet ID = template id | Length | records | padding to 4 bytes
//! ```
//!
//! Template (v4; v6 uses IPV6_SRC_ADDR 27 / IPV6_DST_ADDR 28, 16 bytes):
//! IPV4_SRC_ADDR 8, IPV4_DST_ADDR 12, L4_SRC_PORT 7, L4_DST_PORT 11,
//! PROTOCOL 4, TCP_FLAGS 6 (1 byte), IN_BYTES 1, IN_PKTS 2, OUT_BYTES 23,
//! OUT_PKTS 24 (8 bytes each), FIRST_SWITCHED 22, LAST_SWITCHED 21 (u32 ms
//! of sysUptime), then INS fields in the vendor-proprietary field-type range
//! (25000–32767; v9 has no enterprise numbers): [`INS_INSTANCE_ID`] (u32),
//! [`INS_CLOSE_REASON`] (u8, `CloseReason` code), [`INS_FLOW_ID`] (u64).
//! The Source ID is the INS instance id.

use crate::record::{Content, Field};

/// NetFlow version number.
pub const VERSION: u16 = 9;
/// Packet header length.
pub const HEADER_LEN: usize = 20;
/// Vendor field type: INS instance id.
pub const INS_INSTANCE_ID: u16 = 25001;
/// Vendor field type: INS close reason code.
pub const INS_CLOSE_REASON: u16 = 25002;
/// Vendor field type: INS flow id.
pub const INS_FLOW_ID: u16 = 25003;

const fn ty(id: u16, len: u16, content: Content) -> Field {
    Field {
        id,
        pen: None,
        len,
        content,
    }
}

/// The template fields for IPv4 (`true`) or IPv6 flows.
pub fn template(v4: bool) -> Vec<Field> {
    let (src, dst) = if v4 {
        (ty(8, 4, Content::SrcV4), ty(12, 4, Content::DstV4))
    } else {
        (ty(27, 16, Content::SrcV6), ty(28, 16, Content::DstV6))
    };
    vec![
        src,
        dst,
        ty(7, 2, Content::SrcPort),
        ty(11, 2, Content::DstPort),
        ty(4, 1, Content::Proto),
        ty(6, 1, Content::TcpFlags),
        ty(1, 8, Content::Octets),
        ty(2, 8, Content::Packets),
        ty(23, 8, Content::RevOctets),
        ty(24, 8, Content::RevPackets),
        ty(22, 4, Content::StartUptime),
        ty(21, 4, Content::EndUptime),
        ty(INS_INSTANCE_ID, 4, Content::InstId),
        ty(INS_CLOSE_REASON, 1, Content::InsReason),
        ty(INS_FLOW_ID, 8, Content::FlowId),
    ]
}

/// A packet header.
pub fn header(count: u16, uptime_ms: u32, secs: u32, seq: u32, source_id: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..2].copy_from_slice(&VERSION.to_be_bytes());
    h[2..4].copy_from_slice(&count.to_be_bytes());
    h[4..8].copy_from_slice(&uptime_ms.to_be_bytes());
    h[8..12].copy_from_slice(&secs.to_be_bytes());
    h[12..16].copy_from_slice(&seq.to_be_bytes());
    h[16..20].copy_from_slice(&source_id.to_be_bytes());
    h
}
