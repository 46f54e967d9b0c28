//! Socket options, by Linux `(level, name)` numbers and encodings.
//!
//! | option | effect |
//! |---|---|
//! | `SO_REUSEADDR`, `SO_REUSEPORT` | bind conflict rules (crate docs) |
//! | `SO_BROADCAST` | UDP may send to broadcast addresses |
//! | `SO_KEEPALIVE`, `TCP_KEEPIDLE` | smoltcp keep-alive, one probe per `TCP_KEEPIDLE` seconds of silence |
//! | `SO_LINGER` | `{1, 0}`: `close` resets; other values are stored |
//! | `SO_SNDBUF`, `SO_RCVBUF` | buffer sizes of smoltcp sockets created later (clamped to [`MIN_BUF`], the stack's maximum) |
//! | `SO_TYPE`, `SO_ERROR` | read-only |
//! | `IP_TTL` | hop limit (`-1`: default) |
//! | `IPV6_V6ONLY` | `AF_INET6` sockets take only IPv6 (set before bind) |
//! | `TCP_NODELAY` | disables Nagle |
//! | `TCP_QUICKACK` | no delayed ACKs while set |
//! | `TCP_USER_TIMEOUT` | smoltcp's timeout (ms, 0: none) |
//! | `TCP_CONGESTION` | `reno` (the only algorithm built in) |
//!
//! smoltcp has no equivalent for `IP_TOS`, `TCP_MAXSEG`, `TCP_KEEPINTVL`,
//! `TCP_KEEPCNT` or `TCP_INFO`: these, and every option not listed, are
//! answered `ENOPROTOOPT`, as Linux answers an option it does not know.
//! Integer options shorter than 4 bytes are `EINVAL`, as are out-of-range
//! values; an unknown congestion algorithm is `ENOENT` (Linux).

use ins_core::Errno;
use ins_core::stack::{SockType, opt, parse_int_opt};

/// Smallest buffer `SO_SNDBUF`/`SO_RCVBUF` can ask for.
pub const MIN_BUF: usize = 4096;

/// Congestion control algorithms built in, by Linux name.
pub const CONGESTION: &[&str] = &["reno"];

/// One socket's options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockOpts {
    /// `SO_REUSEADDR`.
    pub reuse_addr: bool,
    /// `SO_REUSEPORT`.
    pub reuse_port: bool,
    /// `SO_BROADCAST`.
    pub broadcast: bool,
    /// `SO_KEEPALIVE`.
    pub keepalive: bool,
    /// `TCP_KEEPIDLE` seconds.
    pub keepidle_s: u32,
    /// `SO_LINGER` as `(onoff, seconds)`.
    pub linger: (i32, i32),
    /// `SO_SNDBUF` (bytes), `None`: the stack's default.
    pub sndbuf: Option<usize>,
    /// `SO_RCVBUF` (bytes), `None`: the stack's default.
    pub rcvbuf: Option<usize>,
    /// `IP_TTL`, `None`: default.
    pub ttl: Option<u8>,
    /// `IPV6_V6ONLY`.
    pub v6only: bool,
    /// `TCP_NODELAY`.
    pub nodelay: bool,
    /// `TCP_QUICKACK`.
    pub quickack: bool,
    /// `TCP_USER_TIMEOUT` milliseconds (0: none).
    pub user_timeout_ms: u32,
}

impl Default for SockOpts {
    fn default() -> Self {
        SockOpts {
            reuse_addr: false,
            reuse_port: false,
            broadcast: false,
            keepalive: false,
            keepidle_s: 7200,
            linger: (0, 0),
            sndbuf: None,
            rcvbuf: None,
            ttl: None,
            v6only: false,
            nodelay: false,
            quickack: false,
            user_timeout_ms: 0,
        }
    }
}

impl SockOpts {
    /// Whether `close` must reset (`SO_LINGER{1, 0}`).
    pub fn linger_reset(&self) -> bool {
        self.linger.0 != 0 && self.linger.1 == 0
    }
}

fn flag(value: &[u8]) -> Result<bool, Errno> {
    Ok(parse_int_opt(value)? != 0)
}

/// What a successful `set` changed that the stack must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Nothing beyond the stored value.
    Stored,
    /// A TCP setting of the live smoltcp socket(s) changed.
    Tcp,
    /// The hop limit changed.
    Ttl,
}

/// Stores option `(level, name)` in `o`. `max_buf` caps buffer sizes.
pub fn set(
    o: &mut SockOpts,
    ty: SockType,
    level: i32,
    name: i32,
    value: &[u8],
    max_buf: usize,
) -> Result<Applied, Errno> {
    let tcp = ty == SockType::Stream;
    match (level, name) {
        (opt::SOL_SOCKET, opt::SO_REUSEADDR) => o.reuse_addr = flag(value)?,
        (opt::SOL_SOCKET, opt::SO_REUSEPORT) => o.reuse_port = flag(value)?,
        (opt::SOL_SOCKET, opt::SO_BROADCAST) => o.broadcast = flag(value)?,
        (opt::SOL_SOCKET, opt::SO_KEEPALIVE) => {
            o.keepalive = flag(value)?;
            return Ok(if tcp { Applied::Tcp } else { Applied::Stored });
        }
        (opt::SOL_SOCKET, opt::SO_LINGER) => {
            let (Some(a), Some(b)) = (value.get(..4), value.get(4..8)) else {
                return Err(Errno::EINVAL);
            };
            o.linger = (parse_int_opt(a)?, parse_int_opt(b)?);
        }
        (opt::SOL_SOCKET, opt::SO_SNDBUF | opt::SO_RCVBUF) => {
            let v = parse_int_opt(value)?;
            let bytes = usize::try_from(v.max(0))
                .unwrap_or(0)
                .clamp(MIN_BUF, max_buf.max(MIN_BUF));
            if name == opt::SO_SNDBUF {
                o.sndbuf = Some(bytes);
            } else {
                o.rcvbuf = Some(bytes);
            }
        }
        (opt::SOL_SOCKET, opt::SO_TYPE | opt::SO_ERROR) => return Err(Errno::ENOPROTOOPT),
        (opt::IPPROTO_IP, opt::IP_TTL) => {
            o.ttl = match parse_int_opt(value)? {
                -1 => None,
                v @ 1..=255 => Some(v as u8),
                _ => return Err(Errno::EINVAL),
            };
            return Ok(Applied::Ttl);
        }
        (opt::IPPROTO_IPV6, opt::IPV6_V6ONLY) => o.v6only = flag(value)?,
        (opt::IPPROTO_TCP, opt::TCP_NODELAY) if tcp => {
            o.nodelay = flag(value)?;
            return Ok(Applied::Tcp);
        }
        (opt::IPPROTO_TCP, opt::TCP_QUICKACK) if tcp => {
            o.quickack = flag(value)?;
            return Ok(Applied::Tcp);
        }
        (opt::IPPROTO_TCP, opt::TCP_KEEPIDLE) if tcp => {
            let v = parse_int_opt(value)?;
            if !(1..=32767).contains(&v) {
                return Err(Errno::EINVAL);
            }
            o.keepidle_s = v as u32;
            return Ok(Applied::Tcp);
        }
        (opt::IPPROTO_TCP, opt::TCP_USER_TIMEOUT) if tcp => {
            let v = parse_int_opt(value)?;
            o.user_timeout_ms = u32::try_from(v).map_err(|_| Errno::EINVAL)?;
            return Ok(Applied::Tcp);
        }
        (opt::IPPROTO_TCP, opt::TCP_CONGESTION) if tcp => {
            let name = value.split(|&b| b == 0).next().unwrap_or(&[]);
            if !CONGESTION.iter().any(|c| c.as_bytes() == name) {
                return Err(Errno::ENOENT);
            }
        }
        _ => return Err(Errno::ENOPROTOOPT),
    }
    Ok(Applied::Stored)
}

fn put(out: &mut [u8], bytes: &[u8]) -> usize {
    let n = out.len().min(bytes.len());
    out[..n].copy_from_slice(&bytes[..n]);
    n
}

fn int(out: &mut [u8], v: i32) -> usize {
    put(out, &v.to_ne_bytes())
}

/// Reads option `(level, name)`; `bufs` are the socket's effective
/// `(sndbuf, rcvbuf)`; `error` the pending error, taken by `SO_ERROR`.
pub fn get(
    o: &SockOpts,
    ty: SockType,
    level: i32,
    name: i32,
    bufs: (usize, usize),
    error: &mut Option<Errno>,
    out: &mut [u8],
) -> Result<usize, Errno> {
    let tcp = ty == SockType::Stream;
    let b = |v: bool| i32::from(v);
    Ok(match (level, name) {
        (opt::SOL_SOCKET, opt::SO_REUSEADDR) => int(out, b(o.reuse_addr)),
        (opt::SOL_SOCKET, opt::SO_REUSEPORT) => int(out, b(o.reuse_port)),
        (opt::SOL_SOCKET, opt::SO_BROADCAST) => int(out, b(o.broadcast)),
        (opt::SOL_SOCKET, opt::SO_KEEPALIVE) => int(out, b(o.keepalive)),
        (opt::SOL_SOCKET, opt::SO_LINGER) => {
            let mut v = [0u8; 8];
            v[..4].copy_from_slice(&o.linger.0.to_ne_bytes());
            v[4..].copy_from_slice(&o.linger.1.to_ne_bytes());
            put(out, &v)
        }
        (opt::SOL_SOCKET, opt::SO_SNDBUF) => int(out, i32::try_from(bufs.0).unwrap_or(i32::MAX)),
        (opt::SOL_SOCKET, opt::SO_RCVBUF) => int(out, i32::try_from(bufs.1).unwrap_or(i32::MAX)),
        (opt::SOL_SOCKET, opt::SO_TYPE) => int(out, if tcp { 1 } else { 2 }),
        (opt::SOL_SOCKET, opt::SO_ERROR) => int(out, error.take().map_or(0, |e| e.0)),
        (opt::IPPROTO_IP, opt::IP_TTL) => int(out, o.ttl.map_or(64, i32::from)),
        (opt::IPPROTO_IPV6, opt::IPV6_V6ONLY) => int(out, b(o.v6only)),
        (opt::IPPROTO_TCP, opt::TCP_NODELAY) if tcp => int(out, b(o.nodelay)),
        (opt::IPPROTO_TCP, opt::TCP_QUICKACK) if tcp => int(out, b(o.quickack)),
        (opt::IPPROTO_TCP, opt::TCP_KEEPIDLE) if tcp => int(out, o.keepidle_s as i32),
        (opt::IPPROTO_TCP, opt::TCP_USER_TIMEOUT) if tcp => int(out, o.user_timeout_ms as i32),
        (opt::IPPROTO_TCP, opt::TCP_CONGESTION) if tcp => {
            let mut v = [0u8; opt::TCP_CA_NAME_MAX];
            v[..CONGESTION[0].len()].copy_from_slice(CONGESTION[0].as_bytes());
            put(out, &v)
        }
        _ => return Err(Errno::ENOPROTOOPT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ins_core::stack::int_opt;

    #[test]
    fn set_get_and_refusals() {
        let mut o = SockOpts::default();
        let t = SockType::Stream;
        assert_eq!(
            set(
                &mut o,
                t,
                opt::IPPROTO_TCP,
                opt::TCP_NODELAY,
                &int_opt(1),
                1 << 20
            ),
            Ok(Applied::Tcp)
        );
        let mut out = [0u8; 8];
        let mut err = Some(Errno::ECONNREFUSED);
        assert_eq!(
            get(
                &o,
                t,
                opt::IPPROTO_TCP,
                opt::TCP_NODELAY,
                (1, 1),
                &mut err,
                &mut out
            ),
            Ok(4)
        );
        assert_eq!(i32::from_ne_bytes(out[..4].try_into().unwrap()), 1);
        assert_eq!(
            get(
                &o,
                t,
                opt::SOL_SOCKET,
                opt::SO_ERROR,
                (1, 1),
                &mut err,
                &mut out
            ),
            Ok(4)
        );
        assert_eq!(i32::from_ne_bytes(out[..4].try_into().unwrap()), 111);
        assert_eq!(err, None, "SO_ERROR takes the error");
        assert_eq!(
            set(&mut o, t, opt::IPPROTO_TCP, opt::TCP_NODELAY, &[1], 1 << 20),
            Err(Errno::EINVAL)
        );
        for (l, n) in [
            (opt::IPPROTO_IP, opt::IP_TOS),
            (opt::IPPROTO_TCP, opt::TCP_MAXSEG),
            (opt::IPPROTO_TCP, opt::TCP_KEEPCNT),
            (opt::IPPROTO_TCP, opt::TCP_KEEPINTVL),
            (opt::IPPROTO_TCP, opt::TCP_INFO),
            (99, 1),
        ] {
            assert_eq!(
                set(&mut o, t, l, n, &int_opt(1), 1 << 20),
                Err(Errno::ENOPROTOOPT),
                "({l}, {n})"
            );
        }
        assert_eq!(
            set(
                &mut o,
                SockType::Datagram,
                opt::IPPROTO_TCP,
                opt::TCP_NODELAY,
                &int_opt(1),
                1 << 20
            ),
            Err(Errno::ENOPROTOOPT)
        );
        assert_eq!(
            set(
                &mut o,
                t,
                opt::IPPROTO_TCP,
                opt::TCP_CONGESTION,
                b"cubic\0",
                1 << 20
            ),
            Err(Errno::ENOENT)
        );
        assert_eq!(
            set(
                &mut o,
                t,
                opt::IPPROTO_TCP,
                opt::TCP_CONGESTION,
                b"reno",
                1 << 20
            ),
            Ok(Applied::Stored)
        );
        assert_eq!(
            set(
                &mut o,
                t,
                opt::IPPROTO_IP,
                opt::IP_TTL,
                &int_opt(256),
                1 << 20
            ),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            set(
                &mut o,
                t,
                opt::IPPROTO_IP,
                opt::IP_TTL,
                &int_opt(9),
                1 << 20
            ),
            Ok(Applied::Ttl)
        );
        assert_eq!(o.ttl, Some(9));
        assert_eq!(
            set(
                &mut o,
                t,
                opt::SOL_SOCKET,
                opt::SO_RCVBUF,
                &int_opt(1),
                1 << 20
            ),
            Ok(Applied::Stored)
        );
        assert_eq!(o.rcvbuf, Some(MIN_BUF));
        assert_eq!(
            set(
                &mut o,
                t,
                opt::SOL_SOCKET,
                opt::SO_LINGER,
                &[1, 0, 0, 0, 0, 0, 0, 0],
                1 << 20
            ),
            Ok(Applied::Stored)
        );
        assert!(o.linger_reset());
        let mut short = [0u8; 2];
        assert_eq!(
            get(
                &o,
                t,
                opt::SOL_SOCKET,
                opt::SO_TYPE,
                (1, 1),
                &mut None,
                &mut short
            ),
            Ok(2),
            "truncated like Linux"
        );
    }
}
