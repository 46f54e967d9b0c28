//! Packs export records into IPFIX or NetFlow v9 messages of bounded size.
//!
//! ```text
//! message = header | [template set: v4 template, v6 template] | data set*
//! IPFIX header (16):  version=10 u16 | length u16 | export time u32 | sequence u32 | domain u32
//! v9 header (20):     version=9 u16 | count u16 | sysUptime u32 | unix secs u32 | sequence u32 | source id u32
//! set header (4):     set id u16 (IPFIX: 2 templates, v9: 0; data: template id) | length u16
//! ```
//!
//! Invariants: every message is at most `max_message` bytes; a data set
//! only follows a template of the same domain that was sent no longer than
//! `template_refresh` ago (templates go into the first message of a domain
//! and again whenever the refresh is due, time-based); one message holds
//! records of one observation domain (one INS instance) only.
//! Sequence numbers are kept per domain: IPFIX counts data records sent
//! before the message (RFC 7011 §3.1), v9 counts export packets (RFC 3954 §5.1).
//! v9 sets are padded to 4 bytes; IPFIX sets are not padded.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::record::{ExportRecord, Field, put_field, record_len};
use crate::{ipfix, netflow9};

/// Template id of the IPv4 template.
pub const TEMPLATE_V4: u16 = 256;
/// Template id of the IPv6 template.
pub const TEMPLATE_V6: u16 = 257;
/// Template id of the IPv4 connection-telemetry template (IPFIX only).
pub const TEMPLATE_CONN_V4: u16 = 258;
/// Template id of the IPv6 connection-telemetry template.
pub const TEMPLATE_CONN_V6: u16 = 259;

/// Which wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// IPFIX (RFC 7011) with RFC 5103 reverse counters; INS fields under `pen`.
    Ipfix {
        /// Private enterprise number of the INS fields.
        pen: u32,
    },
    /// NetFlow v9 (RFC 3954); INS fields in the vendor field-type range.
    NetflowV9,
}

/// Encoder settings.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Wire format.
    pub format: Format,
    /// Largest message (UDP payload) in bytes.
    pub max_message: usize,
    /// Resend templates when they were last sent this long ago.
    pub template_refresh: Duration,
    /// Also announce the connection-telemetry templates and encode
    /// telemetry records (IPFIX only; ignored for v9, whose records of this
    /// kind are dropped).
    pub telemetry: bool,
}

/// Why encoding failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    /// `max_message` cannot hold a header, the templates and one record.
    #[error("message size {0} is too small for the templates and one record")]
    TooSmall(usize),
}

#[derive(Debug, Default)]
struct Domain {
    /// IPFIX: data records sent; v9: packets sent.
    seq: u32,
    template_sent: Option<SystemTime>,
}

/// A stateful exporter-side encoder (one per transport session).
#[derive(Debug)]
pub struct Encoder {
    cfg: Config,
    v4: Vec<Field>,
    v6: Vec<Field>,
    /// Connection templates (empty unless IPFIX with telemetry).
    conn_v4: Vec<Field>,
    conn_v6: Vec<Field>,
    domains: HashMap<u32, Domain>,
    /// v9 sysUptime origin, Unix ms.
    boot_ms: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn be16(out: &mut [u8], at: usize, v: u16) {
    if let Some(d) = out.get_mut(at..at + 2) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

struct Msg {
    buf: Vec<u8>,
    /// Start of the open set and its id.
    set: Option<(usize, u16)>,
    /// Records (templates + data) in the message (v9 header count).
    count: u16,
    data: u32,
}

impl Encoder {
    /// A new encoder. `boot` is the v9 sysUptime origin (ignored for IPFIX);
    /// flows that started before it get wrapped uptime values, so pick it
    /// earlier than any flow you expect (the exporter uses start − 1 day).
    pub fn new(cfg: Config, boot: SystemTime) -> Result<Encoder, EncodeError> {
        let (v4, v6) = match cfg.format {
            Format::Ipfix { pen } => (ipfix::template(true, pen), ipfix::template(false, pen)),
            Format::NetflowV9 => (netflow9::template(true), netflow9::template(false)),
        };
        let (conn_v4, conn_v6) = match cfg.format {
            Format::Ipfix { pen } if cfg.telemetry => (
                ipfix::conn_template(true, pen),
                ipfix::conn_template(false, pen),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        let e = Encoder {
            cfg,
            v4,
            v6,
            conn_v4,
            conn_v6,
            domains: HashMap::new(),
            boot_ms: unix_ms(boot),
        };
        let need = e.header_len()
            + e.template_set_len()
            + e.set_overhead()
            + record_len(&e.v6).max(record_len(&e.conn_v6));
        if cfg.max_message < need || cfg.max_message > 65535 {
            return Err(EncodeError::TooSmall(cfg.max_message));
        }
        Ok(e)
    }

    /// The template fields for IPv4 (`true`) or IPv6.
    pub fn template(&self, v4: bool) -> &[Field] {
        if v4 { &self.v4 } else { &self.v6 }
    }

    fn header_len(&self) -> usize {
        match self.cfg.format {
            Format::Ipfix { .. } => ipfix::HEADER_LEN,
            Format::NetflowV9 => netflow9::HEADER_LEN,
        }
    }

    fn is_v9(&self) -> bool {
        self.cfg.format == Format::NetflowV9
    }

    /// Set header plus worst-case padding.
    fn set_overhead(&self) -> usize {
        if self.is_v9() { 4 + 3 } else { 4 }
    }

    fn spec_len(&self, f: &Field) -> usize {
        if f.pen.is_some() { 8 } else { 4 }
    }

    fn templates(&self) -> [(u16, &Vec<Field>); 4] {
        [
            (TEMPLATE_V4, &self.v4),
            (TEMPLATE_V6, &self.v6),
            (TEMPLATE_CONN_V4, &self.conn_v4),
            (TEMPLATE_CONN_V6, &self.conn_v6),
        ]
    }

    fn template_set_len(&self) -> usize {
        let rec = |fs: &[Field]| 4 + fs.iter().map(|f| self.spec_len(f)).sum::<usize>();
        4 + self
            .templates()
            .iter()
            .filter(|(_, f)| !f.is_empty())
            .map(|(_, f)| rec(f))
            .sum::<usize>()
    }

    /// The template id and fields a record is encoded with (`None`: no
    /// template for it, the record is skipped).
    fn template_of(&self, r: &ExportRecord) -> Option<(u16, &[Field])> {
        let (id, f) = match (r.conn.is_some(), r.is_v4()) {
            (false, true) => (TEMPLATE_V4, &self.v4),
            (false, false) => (TEMPLATE_V6, &self.v6),
            (true, true) => (TEMPLATE_CONN_V4, &self.conn_v4),
            (true, false) => (TEMPLATE_CONN_V6, &self.conn_v6),
        };
        (!f.is_empty()).then_some((id, f.as_slice()))
    }

    fn begin(&self) -> Msg {
        let mut buf = Vec::with_capacity(self.cfg.max_message);
        buf.resize(self.header_len(), 0);
        Msg {
            buf,
            set: None,
            count: 0,
            data: 0,
        }
    }

    fn close_set(&self, m: &mut Msg) {
        if let Some((start, _)) = m.set.take() {
            if self.is_v9() {
                while !(m.buf.len() - start).is_multiple_of(4) {
                    m.buf.push(0);
                }
            }
            let len = u16::try_from(m.buf.len() - start).unwrap_or(u16::MAX);
            be16(&mut m.buf, start + 2, len);
        }
    }

    fn open_set(&self, m: &mut Msg, id: u16) {
        self.close_set(m);
        m.set = Some((m.buf.len(), id));
        m.buf.extend_from_slice(&id.to_be_bytes());
        m.buf.extend_from_slice(&[0, 0]);
    }

    fn put_templates(&self, m: &mut Msg) {
        let set_id = if self.is_v9() { 0 } else { ipfix::SET_TEMPLATE };
        self.open_set(m, set_id);
        for (id, fields) in self.templates() {
            if fields.is_empty() {
                continue;
            }
            m.buf.extend_from_slice(&id.to_be_bytes());
            let n = u16::try_from(fields.len()).unwrap_or(u16::MAX);
            m.buf.extend_from_slice(&n.to_be_bytes());
            for f in fields {
                match f.pen {
                    Some(pen) => {
                        m.buf.extend_from_slice(&(f.id | 0x8000).to_be_bytes());
                        m.buf.extend_from_slice(&f.len.to_be_bytes());
                        m.buf.extend_from_slice(&pen.to_be_bytes());
                    }
                    None => {
                        m.buf.extend_from_slice(&f.id.to_be_bytes());
                        m.buf.extend_from_slice(&f.len.to_be_bytes());
                    }
                }
            }
            m.count += 1;
        }
        self.close_set(m);
    }

    /// Finishes `m`: closes its set, writes the header, advances the
    /// domain's sequence number.
    fn finish(&mut self, mut m: Msg, now: SystemTime, domain: u32) -> Vec<u8> {
        self.close_set(&mut m);
        let secs = u32::try_from(unix_ms(now) / 1000).unwrap_or(u32::MAX);
        let d = self.domains.entry(domain).or_default();
        let len = m.buf.len();
        let h = match self.cfg.format {
            Format::Ipfix { .. } => {
                let h = ipfix::header(u16::try_from(len).unwrap_or(u16::MAX), secs, d.seq, domain);
                d.seq = d.seq.wrapping_add(m.data);
                h.to_vec()
            }
            Format::NetflowV9 => {
                // sysUptime modulo 2^32 ms, as a router's, taken at the
                // whole second in the header: collectors compute
                // secs * 1000 - sysUptime + FIRST_SWITCHED, which is then
                // exact to the millisecond.
                let uptime = (u64::from(secs) * 1000).wrapping_sub(self.boot_ms) as u32;
                let h = netflow9::header(m.count, uptime, secs, d.seq, domain);
                d.seq = d.seq.wrapping_add(1);
                h.to_vec()
            }
        };
        if let Some(dst) = m.buf.get_mut(..h.len()) {
            dst.copy_from_slice(&h);
        }
        m.buf
    }

    fn templates_due(&self, now: SystemTime, domain: u32) -> bool {
        match self.domains.get(&domain).and_then(|d| d.template_sent) {
            None => true,
            Some(t) => now
                .duration_since(t)
                .map_or(true, |age| age >= self.cfg.template_refresh),
        }
    }

    /// Encodes `recs` (records of any domains; grouped per domain in order
    /// of first appearance) into messages.
    pub fn encode(&mut self, now: SystemTime, recs: &[ExportRecord]) -> Vec<Vec<u8>> {
        let mut order: Vec<u32> = Vec::new();
        for r in recs {
            if !order.contains(&r.inst) {
                order.push(r.inst);
            }
        }
        let mut out = Vec::new();
        for domain in order {
            let mut m = self.begin();
            if self.templates_due(now, domain) {
                self.put_templates(&mut m);
                self.domains.entry(domain).or_default().template_sent = Some(now);
            }
            for r in recs.iter().filter(|r| r.inst == domain) {
                let Some((tid, fields)) = self.template_of(r) else {
                    continue;
                };
                let rlen = record_len(fields);
                let need_set = m.set.map(|(_, id)| id) != Some(tid);
                let pad = if self.is_v9() { 3 } else { 0 };
                let extra = rlen + pad + if need_set { 4 } else { 0 };
                if m.buf.len() + extra > self.cfg.max_message {
                    out.push(self.finish(m, now, domain));
                    m = self.begin();
                    if self.templates_due(now, domain) {
                        self.put_templates(&mut m);
                        self.domains.entry(domain).or_default().template_sent = Some(now);
                    }
                }
                if m.set.map(|(_, id)| id) != Some(tid) {
                    self.open_set(&mut m, tid);
                }
                let Some((_, fields)) = self.template_of(r) else {
                    continue;
                };
                for f in fields {
                    put_field(&mut m.buf, f, r, self.boot_ms);
                }
                m.count = m.count.saturating_add(1);
                m.data += 1;
            }
            out.push(self.finish(m, now, domain));
        }
        out
    }

    /// Template-only messages for every known domain whose refresh is due
    /// (keeps collectors' templates alive while no data flows).
    pub fn refresh(&mut self, now: SystemTime) -> Vec<Vec<u8>> {
        let mut due: Vec<u32> = self
            .domains
            .keys()
            .copied()
            .filter(|&d| self.templates_due(now, d))
            .collect();
        due.sort_unstable();
        due.into_iter()
            .map(|domain| {
                let mut m = self.begin();
                self.put_templates(&mut m);
                self.domains.entry(domain).or_default().template_sent = Some(now);
                self.finish(m, now, domain)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfix::DEFAULT_PEN;
    use ins_protocol::msg::CloseReason;

    const T0: u64 = 1_700_000_000; // 0x6553f100

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn rec(inst: u32, src: &str, dst: &str) -> ExportRecord {
        ExportRecord {
            inst,
            flow_id: 0x0102_0304_0506_0708,
            proto: 6,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            octets: 1000,
            packets: 10,
            rev_octets: 20000,
            rev_packets: 20,
            start_ms: (T0 - 5) * 1000 + 250,
            end_ms: (T0 - 1) * 1000 + 500,
            tcp_flags: 0x1b,
            reason: CloseReason::Reset,
            conn: None,
        }
    }

    fn cfg(format: Format, max: usize) -> Config {
        Config {
            format,
            max_message: max,
            template_refresh: Duration::from_secs(30),
            telemetry: false,
        }
    }

    fn ipfix_enc(max: usize) -> Encoder {
        Encoder::new(cfg(Format::Ipfix { pen: DEFAULT_PEN }, max), at(T0 - 100)).unwrap()
    }

    /// Field specifiers of the IPFIX v4 template, as RFC 7011 §3.2 lays them out.
    const IPFIX_V4_SPECS: &[u8] = &[
        0x00, 0x08, 0x00, 0x04, // sourceIPv4Address
        0x00, 0x0c, 0x00, 0x04, // destinationIPv4Address
        0x00, 0x07, 0x00, 0x02, // sourceTransportPort
        0x00, 0x0b, 0x00, 0x02, // destinationTransportPort
        0x00, 0x04, 0x00, 0x01, // protocolIdentifier
        0x00, 0x06, 0x00, 0x01, // tcpControlBits (reduced size)
        0x00, 0x01, 0x00, 0x08, // octetDeltaCount
        0x00, 0x02, 0x00, 0x08, // packetDeltaCount
        0x80, 0x01, 0x00, 0x08, 0x00, 0x00, 0x72, 0x79, // reverseOctetDeltaCount (29305)
        0x80, 0x02, 0x00, 0x08, 0x00, 0x00, 0x72, 0x79, // reversePacketDeltaCount
        0x00, 0x98, 0x00, 0x08, // flowStartMilliseconds
        0x00, 0x99, 0x00, 0x08, // flowEndMilliseconds
        0x00, 0x88, 0x00, 0x01, // flowEndReason
        0x80, 0x01, 0x00, 0x04, 0x00, 0x00, 0x7e, 0xd9, // INS instance id (PEN 32473)
        0x80, 0x02, 0x00, 0x01, 0x00, 0x00, 0x7e, 0xd9, // INS close reason
        0x80, 0x03, 0x00, 0x08, 0x00, 0x00, 0x7e, 0xd9, // INS flow id
    ];

    fn ipfix_v4_data() -> Vec<u8> {
        let mut d = vec![10, 0, 0, 2, 10, 0, 0, 1, 0x13, 0x88, 0x00, 0x50, 6, 0x1b];
        d.extend_from_slice(&1000u64.to_be_bytes());
        d.extend_from_slice(&10u64.to_be_bytes());
        d.extend_from_slice(&20000u64.to_be_bytes());
        d.extend_from_slice(&20u64.to_be_bytes());
        d.extend_from_slice(&((T0 - 5) * 1000 + 250).to_be_bytes());
        d.extend_from_slice(&((T0 - 1) * 1000 + 500).to_be_bytes());
        d.push(3); // endOfFlowDetected
        d.extend_from_slice(&7u32.to_be_bytes());
        d.push(2); // CloseReason::Reset
        d.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        d
    }

    #[test]
    fn ipfix_first_message_exact_bytes() {
        let mut e = ipfix_enc(1472);
        let msgs = e.encode(at(T0), &[rec(7, "10.0.0.2:5000", "10.0.0.1:80")]);
        assert_eq!(msgs.len(), 1);
        let m = &msgs[0];
        let data = ipfix_v4_data();
        assert_eq!(data.len(), 76);
        // Header: version 10, length, export time, sequence 0, domain 7.
        let total = 16 + 4 + 2 * (4 + IPFIX_V4_SPECS.len()) + 4 + data.len();
        assert_eq!(m.len(), total);
        let mut want = vec![0x00, 0x0a];
        want.extend_from_slice(&(total as u16).to_be_bytes());
        want.extend_from_slice(&[0x65, 0x53, 0xf1, 0x00, 0, 0, 0, 0, 0, 0, 0, 7]);
        // Template set (id 2): v4 template 256 with 16 fields, then v6 257.
        want.extend_from_slice(&[0x00, 0x02]);
        want.extend_from_slice(&((4 + 2 * (4 + IPFIX_V4_SPECS.len())) as u16).to_be_bytes());
        want.extend_from_slice(&[0x01, 0x00, 0x00, 0x10]);
        want.extend_from_slice(IPFIX_V4_SPECS);
        want.extend_from_slice(&[0x01, 0x01, 0x00, 0x10]);
        let mut v6 = IPFIX_V4_SPECS.to_vec();
        v6[..8].copy_from_slice(&[0x00, 0x1b, 0x00, 0x10, 0x00, 0x1c, 0x00, 0x10]);
        want.extend_from_slice(&v6);
        // Data set 256.
        want.extend_from_slice(&[0x01, 0x00]);
        want.extend_from_slice(&((4 + data.len()) as u16).to_be_bytes());
        want.extend_from_slice(&data);
        assert_eq!(m, &want);
    }

    #[test]
    fn ipfix_sequence_counts_records_and_templates_refresh() {
        let mut e = ipfix_enc(1472);
        let r = rec(7, "10.0.0.2:5000", "10.0.0.1:80");
        e.encode(at(T0), &[r, r, r]);
        let m = e.encode(at(T0 + 1), &[r]).remove(0);
        // No template within the refresh interval; sequence = 3 records before.
        assert_eq!(&m[8..12], &3u32.to_be_bytes());
        assert_eq!(m.len(), 16 + 4 + 76);
        assert_eq!(&m[16..18], &[0x01, 0x00]);
        // Another domain has its own sequence and gets its own templates.
        let m = e
            .encode(at(T0 + 1), &[rec(8, "10.0.0.2:5000", "10.0.0.1:80")])
            .remove(0);
        assert_eq!(&m[8..16], &[0, 0, 0, 0, 0, 0, 0, 8]);
        assert_eq!(&m[16..18], &[0x00, 0x02]);
        // Refresh due after 30 s: a template-only message for both domains.
        assert!(e.refresh(at(T0 + 2)).is_empty());
        let t = e.refresh(at(T0 + 31));
        assert_eq!(t.len(), 2);
        assert_eq!(&t[0][8..16], &[0, 0, 0, 4, 0, 0, 0, 7]);
        assert_eq!(t[0].len(), 16 + 4 + 2 * (4 + IPFIX_V4_SPECS.len()));
    }

    #[test]
    fn ipfix_v6_record() {
        let mut e = ipfix_enc(1472);
        let m = e
            .encode(at(T0), &[rec(1, "[2001:db8::2]:5000", "[2001:db8::1]:443")])
            .remove(0);
        let set = 16 + 4 + 2 * (4 + IPFIX_V4_SPECS.len());
        assert_eq!(&m[set..set + 4], &[0x01, 0x01, 0x00, 4 + 76 + 24]);
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        src[15] = 2;
        assert_eq!(&m[set + 4..set + 20], &src);
        assert_eq!(&m[set + 36..set + 40], &[0x13, 0x88, 0x01, 0xbb]);
    }

    #[test]
    fn v9_first_packet_exact_bytes() {
        let boot = at(T0 - 100);
        let mut e = Encoder::new(cfg(Format::NetflowV9, 1472), boot).unwrap();
        let m = e
            .encode(at(T0), &[rec(5, "10.0.0.2:5000", "10.0.0.1:80")])
            .remove(0);
        let mut want = vec![0x00, 0x09, 0x00, 0x03]; // version 9, count 2 templates + 1 record
        want.extend_from_slice(&100_000u32.to_be_bytes()); // sysUptime ms
        want.extend_from_slice(&[0x65, 0x53, 0xf1, 0x00, 0, 0, 0, 0, 0, 0, 0, 5]);
        let specs: &[u8] = &[
            0x00, 0x08, 0x00, 0x04, 0x00, 0x0c, 0x00, 0x04, 0x00, 0x07, 0x00, 0x02, 0x00, 0x0b,
            0x00, 0x02, 0x00, 0x04, 0x00, 0x01, 0x00, 0x06, 0x00, 0x01, 0x00, 0x01, 0x00, 0x08,
            0x00, 0x02, 0x00, 0x08, 0x00, 0x17, 0x00, 0x08, 0x00, 0x18, 0x00, 0x08, 0x00, 0x16,
            0x00, 0x04, 0x00, 0x15, 0x00, 0x04, 0x61, 0xa9, 0x00, 0x04, 0x61, 0xaa, 0x00, 0x01,
            0x61, 0xab, 0x00, 0x08,
        ];
        want.extend_from_slice(&[0x00, 0x00, 0x00, (4 + 2 * (4 + specs.len())) as u8]);
        want.extend_from_slice(&[0x01, 0x00, 0x00, 0x0f]);
        want.extend_from_slice(specs);
        want.extend_from_slice(&[0x01, 0x01, 0x00, 0x0f]);
        let mut v6 = specs.to_vec();
        v6[..8].copy_from_slice(&[0x00, 0x1b, 0x00, 0x10, 0x00, 0x1c, 0x00, 0x10]);
        want.extend_from_slice(&v6);
        // Data flowset 256: header + 67-byte record, padded to 72.
        want.extend_from_slice(&[0x01, 0x00, 0x00, 72]);
        want.extend_from_slice(&[10, 0, 0, 2, 10, 0, 0, 1, 0x13, 0x88, 0x00, 0x50, 6, 0x1b]);
        for v in [1000u64, 10, 20000, 20] {
            want.extend_from_slice(&v.to_be_bytes());
        }
        want.extend_from_slice(&(95_250u32).to_be_bytes()); // FIRST_SWITCHED
        want.extend_from_slice(&(99_500u32).to_be_bytes()); // LAST_SWITCHED
        want.extend_from_slice(&5u32.to_be_bytes());
        want.push(2);
        want.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        want.push(0); // 4 + 67 = 71, one pad byte
        assert_eq!(m, want);
        // Second packet: sequence counts packets, no template.
        let m = e
            .encode(at(T0 + 1), &[rec(5, "10.0.0.2:5000", "10.0.0.1:80")])
            .remove(0);
        assert_eq!(&m[2..4], &[0, 1]);
        assert_eq!(&m[12..16], &1u32.to_be_bytes());
        assert_eq!(m.len(), 20 + 72);
    }

    /// Walks a message's sets; returns (set id, records) per set.
    fn sets(m: &[u8], hdr: usize, v4_len: usize, v6_len: usize) -> Vec<(u16, usize)> {
        let mut out = Vec::new();
        let mut at = hdr;
        while at < m.len() {
            let id = u16::from_be_bytes([m[at], m[at + 1]]);
            let len = usize::from(u16::from_be_bytes([m[at + 2], m[at + 3]]));
            assert!(len >= 4 && at + len <= m.len(), "set overruns message");
            let n = match id {
                256 => (len - 4) / v4_len,
                257 => (len - 4) / v6_len,
                _ => 0,
            };
            out.push((id, n));
            at += len;
        }
        assert_eq!(at, m.len());
        out
    }

    #[test]
    fn messages_respect_size_bound_and_carry_every_record() {
        for format in [Format::Ipfix { pen: 9 }, Format::NetflowV9] {
            let max = 600;
            let mut e = Encoder::new(cfg(format, max), at(T0 - 100)).unwrap();
            let (hdr, l4, l6) = match format {
                Format::Ipfix { .. } => (16, 76, 100),
                Format::NetflowV9 => (20, 67, 91),
            };
            let mut recs = Vec::new();
            for i in 0..40u16 {
                let r = if i % 3 == 0 {
                    rec(1, "[2001:db8::2]:1", "[2001:db8::1]:2")
                } else {
                    rec(1, "10.0.0.2:1", "10.0.0.1:2")
                };
                recs.push(r);
            }
            let msgs = e.encode(at(T0), &recs);
            assert!(msgs.len() > 3);
            let mut total = 0;
            for (i, m) in msgs.iter().enumerate() {
                assert!(m.len() <= max);
                let seq = u32::from_be_bytes(m[hdr - 8..hdr - 4].try_into().unwrap());
                match format {
                    Format::Ipfix { .. } => assert_eq!(seq as usize, total),
                    Format::NetflowV9 => assert_eq!(seq as usize, i),
                }
                total += sets(m, hdr, l4, l6).iter().map(|s| s.1).sum::<usize>();
            }
            assert_eq!(total, 40);
        }
    }

    #[test]
    fn telemetry_records_use_the_connection_template() {
        use crate::record::ConnExtra;
        let mut c = cfg(Format::Ipfix { pen: DEFAULT_PEN }, 1472);
        c.telemetry = true;
        let mut e = Encoder::new(c, at(T0 - 100)).unwrap();
        let mut t = rec(3, "10.0.0.2:5000", "10.0.0.1:80");
        t.conn = Some(ConnExtra {
            cause: 2,
            first_in_ms: 7,
            entropy: [7900, 5000],
            ..ConnExtra::default()
        });
        let m = e
            .encode(at(T0), &[rec(3, "10.0.0.2:5000", "10.0.0.1:80"), t])
            .remove(0);
        // Template set: four templates (flow v4/v6, connection v4/v6).
        let tset = u16::from_be_bytes([m[18], m[19]]) as usize;
        let ids: Vec<u16> = {
            let mut pos = 20;
            let mut v = Vec::new();
            while pos < 16 + tset {
                let id = u16::from_be_bytes([m[pos], m[pos + 1]]);
                let n = u16::from_be_bytes([m[pos + 2], m[pos + 3]]) as usize;
                let fields = if id >= 258 {
                    ipfix::conn_template(true, DEFAULT_PEN)
                } else {
                    ipfix::template(true, DEFAULT_PEN)
                };
                assert_eq!(n, fields.len());
                pos += 4 + fields
                    .iter()
                    .map(|f| if f.pen.is_some() { 8 } else { 4 })
                    .sum::<usize>();
                v.push(id);
            }
            v
        };
        assert_eq!(ids, vec![256, 257, 258, 259]);
        // Then a flow data set and a connection data set.
        let conn_len = record_len(&ipfix::conn_template(true, DEFAULT_PEN));
        let pos = 16 + tset;
        assert_eq!(&m[pos..pos + 2], &[0x01, 0x00]);
        let pos = pos + 4 + 76;
        assert_eq!(&m[pos..pos + 2], &[0x01, 0x02]);
        assert_eq!(
            u16::from_be_bytes([m[pos + 2], m[pos + 3]]) as usize,
            4 + conn_len
        );
        assert_eq!(m.len(), pos + 4 + conn_len);
        // NetFlow v9 has no connection template: such records are skipped.
        let mut v9 = Encoder::new(cfg(Format::NetflowV9, 1472), at(T0 - 100)).unwrap();
        let m = v9.encode(at(T0), &[t]).remove(0);
        assert_eq!(&m[2..4], &[0, 2], "two templates, no record");
    }

    #[test]
    fn too_small_message_is_rejected() {
        assert_eq!(
            Encoder::new(cfg(Format::NetflowV9, 200), at(T0)).unwrap_err(),
            EncodeError::TooSmall(200)
        );
    }
}
