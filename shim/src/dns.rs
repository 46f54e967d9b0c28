//! The stub resolver's safe half: `resolv.conf` and `/etc/hosts` parsing,
//! DNS query building and a strict answer parser.
//!
//! The answer comes from the network, so the parser never trusts it: every
//! read is bounds-checked, names are limited to 255 bytes and 127 labels,
//! and a compression pointer must point strictly backwards (so pointer
//! chains cannot loop) with at most [`MAX_JUMPS`] jumps per name. Any
//! malformed message is an [`Err`], never a panic (a unit test feeds it
//! arbitrary bytes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type CNAME.
pub const TYPE_CNAME: u16 = 5;
/// Record type AAAA.
pub const TYPE_AAAA: u16 = 28;
/// Record type PTR.
pub const TYPE_PTR: u16 = 12;
const CLASS_IN: u16 = 1;
/// Compression pointers followed per name at most.
pub const MAX_JUMPS: usize = 32;
/// Longest name in wire form (RFC 1035).
const MAX_NAME: usize = 255;

/// `/etc/resolv.conf` settings the stub resolver honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines (port 53), at most 3 as glibc (`MAXNS`).
    pub servers: Vec<SocketAddr>,
    /// `search` (or `domain`) list.
    pub search: Vec<String>,
    /// `options ndots:N` (default 1, at most 15).
    pub ndots: usize,
    /// `options timeout:N` seconds (default 5, at most 30).
    pub timeout: Duration,
    /// `options attempts:N` (default 2, at most 5).
    pub attempts: u32,
}

impl ResolvConf {
    /// Parses the file's text as glibc does for the keywords above; a file
    /// with no `nameserver` means the local host (`127.0.0.1:53`).
    pub fn parse(text: &str) -> ResolvConf {
        let mut rc = ResolvConf {
            servers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout: Duration::from_secs(5),
            attempts: 2,
        };
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut w = line.split_whitespace();
            match w.next() {
                Some("nameserver") => {
                    if let Some(ip) = w.next().and_then(|a| a.parse::<IpAddr>().ok())
                        && rc.servers.len() < 3
                    {
                        rc.servers.push(SocketAddr::new(ip, 53));
                    }
                }
                Some("search") | Some("domain") => {
                    rc.search = w
                        .map(|d| d.trim_end_matches('.').to_string())
                        .filter(|d| !d.is_empty())
                        .take(6)
                        .collect();
                }
                Some("options") => {
                    for o in w {
                        let num = |p: &str| o.strip_prefix(p).and_then(|v| v.parse::<u64>().ok());
                        if let Some(n) = num("ndots:") {
                            rc.ndots = n.min(15) as usize;
                        } else if let Some(n) = num("timeout:") {
                            rc.timeout = Duration::from_secs(n.clamp(1, 30));
                        } else if let Some(n) = num("attempts:") {
                            rc.attempts = n.clamp(1, 5) as u32;
                        }
                    }
                }
                _ => {}
            }
        }
        if rc.servers.is_empty() {
            rc.servers
                .push(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 53));
        }
        rc
    }

    /// The names to query for `name`, in glibc's order: an absolute name
    /// (trailing dot) only as is; one with at least `ndots` dots as is
    /// first, then with each search domain; otherwise the search domains
    /// first.
    pub fn candidates(&self, name: &str) -> Vec<String> {
        if let Some(abs) = name.strip_suffix('.') {
            return vec![abs.to_string()];
        }
        let dots = name.matches('.').count();
        let searched = self.search.iter().map(|d| format!("{name}.{d}"));
        if dots >= self.ndots {
            std::iter::once(name.to_string()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(name.to_string())).collect()
        }
    }
}

/// The addresses the hosts file `text` gives `name` as a host name or
/// alias (case-insensitive, as glibc's `files` source), in file order.
pub fn hosts_addrs(text: &str, name: &str) -> Vec<IpAddr> {
    let name = name.trim_end_matches('.');
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let mut w = line.split_whitespace();
            let a = w.next()?.parse::<IpAddr>().ok()?;
            w.any(|h| h.eq_ignore_ascii_case(name)).then_some(a)
        })
        .collect()
}

/// Why a name was not resolved (mapped to `EAI_*` by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// NXDOMAIN: the name does not exist.
    NoName,
    /// The name exists but has no address of the asked type.
    NoData,
    /// Timeout, SERVFAIL, REFUSED, no reachable server: try again later.
    Again,
    /// A bad name (too long, empty label) or a format error.
    Fail,
}

/// Builds a recursive query for `name`, `qtype` with id `id`.
pub fn query(id: u16, name: &str, qtype: u16) -> Result<Vec<u8>, Failure> {
    let mut q = Vec::with_capacity(18 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    let name = name.trim_end_matches('.');
    if name.len() + 2 > MAX_NAME {
        return Err(Failure::Fail);
    }
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(Failure::Fail);
            }
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(q)
}

/// A parsed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// RCODE.
    pub rcode: u8,
    /// The TC bit.
    pub truncated: bool,
    /// Addresses of the asked type owned by the name or its CNAME chain.
    pub addrs: Vec<IpAddr>,
    /// PTR targets (for a PTR question).
    pub ptrs: Vec<String>,
    /// The canonical name (end of the CNAME chain), lower-cased as sent.
    pub canon: String,
}

/// Malformed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

fn get<const N: usize>(m: &[u8], at: usize) -> Result<[u8; N], Malformed> {
    m.get(at..at.checked_add(N).ok_or(Malformed)?)
        .and_then(|s| s.try_into().ok())
        .ok_or(Malformed)
}

fn u16_at(m: &[u8], at: usize) -> Result<u16, Malformed> {
    Ok(u16::from_be_bytes(get::<2>(m, at)?))
}

/// Reads the name at `at`; returns it (dotted, no trailing dot) and the
/// offset just after it in place.
pub fn read_name(m: &[u8], mut at: usize) -> Result<(String, usize), Malformed> {
    let mut out = String::new();
    let mut wire_len = 1;
    let mut jumps = 0;
    let mut end = None;
    loop {
        let len = *m.get(at).ok_or(Malformed)?;
        match len & 0xC0 {
            0x00 => {
                if len == 0 {
                    return Ok((out, end.unwrap_or(at + 1)));
                }
                let label = m.get(at + 1..at + 1 + len as usize).ok_or(Malformed)?;
                wire_len += 1 + label.len();
                if wire_len > MAX_NAME {
                    return Err(Malformed);
                }
                if !out.is_empty() {
                    out.push('.');
                }
                for &b in label {
                    // Escape what cannot be a plain host name byte.
                    if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                        out.push(b as char);
                    } else {
                        out.push_str(&format!("\\{b:03}"));
                    }
                }
                at += 1 + label.len();
            }
            0xC0 => {
                let ptr = (u16_at(m, at)? & 0x3FFF) as usize;
                jumps += 1;
                // Only backwards: a chain of them always ends.
                if ptr >= at || jumps > MAX_JUMPS {
                    return Err(Malformed);
                }
                end.get_or_insert(at + 2);
                at = ptr;
            }
            _ => return Err(Malformed),
        }
    }
}

/// Parses `m`, an answer to query `id` for `qname`/`qtype`.
pub fn parse(m: &[u8], id: u16, qname: &str, qtype: u16) -> Result<Answer, Malformed> {
    if u16_at(m, 0)? != id {
        return Err(Malformed);
    }
    let flags = u16_at(m, 2)?;
    if flags & 0x8000 == 0 {
        return Err(Malformed); // not a response
    }
    let qd = u16_at(m, 4)?;
    let an = u16_at(m, 6)?;
    let mut at = 12;
    if qd != 1 {
        return Err(Malformed);
    }
    let (name, next) = read_name(m, at)?;
    if !name.eq_ignore_ascii_case(qname.trim_end_matches('.'))
        || u16_at(m, next)? != qtype
        || u16_at(m, next + 2)? != CLASS_IN
    {
        return Err(Malformed);
    }
    at = next + 4;
    let mut canon = name;
    let mut addrs = Vec::new();
    let mut ptrs = Vec::new();
    for _ in 0..an {
        let (owner, next) = read_name(m, at)?;
        let ty = u16_at(m, next)?;
        let class = u16_at(m, next + 2)?;
        let rdlen = u16_at(m, next + 8)? as usize;
        let rd_at = next + 10;
        let rdata = m.get(rd_at..rd_at + rdlen).ok_or(Malformed)?;
        at = rd_at + rdlen;
        if class != CLASS_IN || !owner.eq_ignore_ascii_case(&canon) {
            continue;
        }
        match ty {
            TYPE_CNAME => canon = read_name(m, rd_at)?.0,
            TYPE_A if ty == qtype => {
                let b: [u8; 4] = rdata.try_into().map_err(|_| Malformed)?;
                addrs.push(IpAddr::V4(Ipv4Addr::from(b)));
            }
            TYPE_PTR if ty == qtype => ptrs.push(read_name(m, rd_at)?.0),
            TYPE_AAAA if ty == qtype => {
                let b: [u8; 16] = rdata.try_into().map_err(|_| Malformed)?;
                addrs.push(IpAddr::V6(Ipv6Addr::from(b)));
            }
            _ => {}
        }
    }
    Ok(Answer {
        rcode: (flags & 0x000F) as u8,
        truncated: flags & 0x0200 != 0,
        addrs,
        ptrs,
        canon,
    })
}

/// The reverse-lookup name of `ip` (`in-addr.arpa` / `ip6.arpa`).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v) => {
            let mut s = String::with_capacity(72);
            for b in v.octets().iter().rev() {
                s += &format!("{:x}.{:x}.", b & 0xF, b >> 4);
            }
            s + "ip6.arpa"
        }
    }
}

/// Whether `m` is a reply to query `id` with the TC bit set (for a
/// truncated reply the parser refused).
pub fn truncated_reply(m: &[u8], id: u16) -> bool {
    m.len() >= 12 && m[0..2] == id.to_be_bytes() && m[2] & 0x80 != 0 && m[2] & 0x02 != 0
}

/// What an answer means for this query.
pub fn outcome(a: &Answer) -> Result<(), Failure> {
    match a.rcode {
        0 if a.addrs.is_empty() && a.ptrs.is_empty() => Err(Failure::NoData),
        0 => Ok(()),
        3 => Err(Failure::NoName),
        1 => Err(Failure::Fail),
        _ => Err(Failure::Again),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: u16, q: &[u8], rcode: u8, records: &[u8], an: u16) -> Vec<u8> {
        let mut m = q.to_vec();
        m[0..2].copy_from_slice(&id.to_be_bytes());
        m[2] = 0x81;
        m[3] = 0x80 | rcode;
        m[6..8].copy_from_slice(&an.to_be_bytes());
        m.extend_from_slice(records);
        m
    }

    #[test]
    fn resolv_conf() {
        let rc = ResolvConf::parse(
            "# c\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n\
             search a.test b.test\noptions ndots:2 timeout:1 attempts:3 edns0\n",
        );
        assert_eq!(rc.servers.len(), 3);
        assert_eq!(rc.servers[0], "127.0.0.53:53".parse().unwrap());
        assert_eq!(rc.servers[1], "[::1]:53".parse().unwrap());
        assert_eq!(rc.search, vec!["a.test", "b.test"]);
        assert_eq!(rc.ndots, 2);
        assert_eq!(rc.timeout, Duration::from_secs(1));
        assert_eq!(rc.attempts, 3);
        assert_eq!(
            rc.candidates("x.y"),
            vec!["x.y.a.test", "x.y.b.test", "x.y"]
        );
        assert_eq!(
            rc.candidates("x.y.z"),
            vec!["x.y.z", "x.y.z.a.test", "x.y.z.b.test"]
        );
        assert_eq!(rc.candidates("x."), vec!["x"]);
        let d = ResolvConf::parse("");
        assert_eq!(d.servers, vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!((d.ndots, d.attempts), (1, 2));
    }

    #[test]
    fn hosts() {
        let h = "127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback # x\n#10.0.0.1 gone\n";
        let h = format!("{h}127.0.1.1 x ip6-loopback\n");
        assert_eq!(
            hosts_addrs(&h, "LOCALHOST"),
            vec![IpAddr::from([127, 0, 0, 1])]
        );
        assert_eq!(
            hosts_addrs(&h, "ip6-loopback."),
            vec![
                IpAddr::from(Ipv6Addr::LOCALHOST),
                IpAddr::from([127, 0, 1, 1])
            ]
        );
        assert!(hosts_addrs(&h, "gone").is_empty());
        assert!(hosts_addrs(&h, "127.0.0.1").is_empty());
    }

    #[test]
    fn query_and_answer() {
        let q = query(0x1234, "Name.Test", TYPE_A).unwrap();
        assert_eq!(&q[12..23], b"\x04Name\x04Test\x00");
        assert_eq!(query(1, "a..b", TYPE_A), Err(Failure::Fail));
        assert_eq!(query(1, &"a".repeat(64), TYPE_A), Err(Failure::Fail));
        // name.test CNAME c.test (compressed), c.test A 10.0.0.7, an A of
        // an unrelated owner (ignored).
        let mut rr = Vec::new();
        rr.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 4, 1, b'c', 0xC0, 17]);
        let c_at = (q.len() + 12) as u8;
        rr.extend_from_slice(&[0xC0, c_at, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 7]);
        rr.extend_from_slice(&[1, b'z', 0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 9, 9, 9, 9]);
        let m = answer(0x1234, &q, 0, &rr, 3);
        let a = parse(&m, 0x1234, "name.test", TYPE_A).unwrap();
        assert_eq!(a.addrs, vec![IpAddr::from([10, 0, 0, 7])]);
        assert_eq!(a.canon, "c.Test");
        assert_eq!(outcome(&a), Ok(()));
        assert_eq!(parse(&m, 0x1235, "name.test", TYPE_A), Err(Malformed));
        assert_eq!(parse(&m, 0x1234, "other.test", TYPE_A), Err(Malformed));
        let nx = answer(7, &query(7, "n.test", TYPE_A).unwrap(), 3, &[], 0);
        assert_eq!(
            outcome(&parse(&nx, 7, "n.test", TYPE_A).unwrap()),
            Err(Failure::NoName)
        );
        let nd = answer(7, &query(7, "n.test", TYPE_AAAA).unwrap(), 0, &[], 0);
        assert_eq!(
            outcome(&parse(&nd, 7, "n.test", TYPE_AAAA).unwrap()),
            Err(Failure::NoData)
        );
        let mut tc = answer(
            7,
            &query(7, "n.test", TYPE_A).unwrap(),
            0,
            &[0xC0, 12, 0],
            3,
        );
        tc[2] |= 0x02;
        assert_eq!(parse(&tc, 7, "n.test", TYPE_A), Err(Malformed));
        assert!(
            truncated_reply(&tc, 7) && !truncated_reply(&tc, 8) && !truncated_reply(&m, 0x1234)
        );
        let sf = answer(7, &query(7, "n.test", TYPE_A).unwrap(), 2, &[], 0);
        assert_eq!(
            outcome(&parse(&sf, 7, "n.test", TYPE_A).unwrap()),
            Err(Failure::Again)
        );
    }

    #[test]
    fn reverse_names_and_ptr() {
        assert_eq!(
            reverse_name(IpAddr::from([10, 53, 0, 7])),
            "7.0.53.10.in-addr.arpa"
        );
        let six = reverse_name("2001:db8::1".parse().unwrap());
        assert!(six.starts_with("1.0.0.0.0.0.0.0.") && six.ends_with(".8.b.d.0.1.0.0.2.ip6.arpa"));
        assert_eq!(six.len(), 64 + 8);
        let name = "7.0.53.10.in-addr.arpa";
        let q = query(3, name, TYPE_PTR).unwrap();
        let rr = [
            0xC0, 12, 0, 12, 0, 1, 0, 0, 0, 60, 0, 8, 5, b's', b'e', b'v', b'e', b'n', 0xC0, 22,
        ];
        // The PTR target: "seven" then a pointer to the question's "in-addr.arpa".
        let m = answer(3, &q, 0, &rr, 1);
        let a = parse(&m, 3, name, TYPE_PTR).unwrap();
        assert_eq!(a.ptrs, vec!["seven.in-addr.arpa".to_string()]);
        assert_eq!(outcome(&a), Ok(()));
    }

    #[test]
    fn pointer_loops_and_bad_lengths_are_errors() {
        // A pointer to itself, forwards, and a chain of pointers.
        assert_eq!(read_name(&[0xC0, 0], 0), Err(Malformed));
        assert_eq!(read_name(&[0xC0, 2, 0], 0), Err(Malformed));
        let mut m = vec![0u8];
        for i in 0..40u8 {
            m.extend_from_slice(&[0xC0, if i == 0 { 0 } else { 1 + 2 * (i - 1) }]);
        }
        assert_eq!(read_name(&m, m.len() - 2), Err(Malformed));
        assert_eq!(read_name(&m, 3).unwrap().0, "");
        // Label beyond the end, reserved label types, 256-byte names.
        assert_eq!(read_name(&[5, b'a'], 0), Err(Malformed));
        assert_eq!(read_name(&[0x40], 0), Err(Malformed));
        let long: Vec<u8> = (0..5)
            .flat_map(|_| [63u8].into_iter().chain([b'a'; 63]))
            .collect();
        assert_eq!(read_name(&long, 0), Err(Malformed));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // xorshift over many lengths, plus mutations of a valid answer.
        let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let q = query(9, "a.test", TYPE_A).unwrap();
        let rr = [0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4];
        let valid = answer(9, &q, 0, &rr, 1);
        assert!(parse(&valid, 9, "a.test", TYPE_A).is_ok());
        for round in 0..200_000 {
            let m: Vec<u8> = if round % 2 == 0 {
                let len = (next() % 600) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut m = valid.clone();
                for _ in 0..1 + next() % 4 {
                    let i = (next() as usize) % m.len();
                    m[i] = next() as u8;
                }
                m.truncate((next() as usize) % (m.len() + 1));
                m
            };
            let _ = parse(&m, 9, "a.test", TYPE_A);
            let _ = read_name(&m, (next() as usize) % (m.len() + 2));
        }
    }
}
