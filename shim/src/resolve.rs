//! Name resolution through INS: the `getaddrinfo` and `gethostbyname*`
//! hooks and the stub resolver's transport.
//!
//! glibc's resolver opens its sockets through internal calls
//! (`__socket`, `__connect`) no `LD_PRELOAD` hook sees, so left alone its
//! queries would leave through the host stack (and fail in an empty network
//! namespace). The hook answers instead:
//!
//! * `INS_DNS=host`, a null `node`, `AI_NUMERICHOST`, a numeric address
//!   (glibc's own `getaddrinfo` with `AI_NUMERICHOST` decides, so `127.1`
//!   and `fe80::1%lo` parse as natively), or a name `/etc/hosts` gives an
//!   address of the asked family: glibc's `getaddrinfo`, which answers
//!   from the file with no network involved. (A name listed only with the
//!   other family goes to DNS through INS, as glibc's `files dns` order
//!   would send it to DNS.) Bad flags, family, socket type or service fail
//!   there first, with glibc's own `EAI_*`.
//! * Otherwise A and/or AAAA queries (`AF_INET`: A; `AF_INET6`: AAAA, and A
//!   mapped to `::ffff:a.b.c.d` with `AI_V4MAPPED` when there is no AAAA or
//!   with `AI_ALL`; `AF_UNSPEC`: both, IPv4 first, where glibc would sort
//!   by RFC 6724) go over UDP to the
//!   nameservers of `/etc/resolv.conf` (or the file named by
//!   `INS_RESOLV_CONF`), honouring `search`/`domain`, `ndots`, `timeout`
//!   and `attempts`. The socket is made by the shim's own `socket` hook, so
//!   it is an INS socket and each query is an INS flow to port 53.
//!   Each address found is turned into `addrinfo` entries by glibc's
//!   `getaddrinfo` with `AI_NUMERICHOST`, so the list has glibc's layout
//!   (and its `freeaddrinfo` frees it: that function is not hooked) and its
//!   socket-type/protocol/port expansion; `AI_CANONNAME` gets the end of
//!   the CNAME chain.
//! * If no INS socket can be made (driver unreachable without
//!   `INS_FAIL_OPEN=1`), the lookup fails with `EAI_AGAIN`: nothing goes
//!   through the host stack. A server that never answers costs
//!   `timeout` per query (INS does not report ICMP port unreachable, where
//!   glibc natively moves on at once); the result is the same `EAI_AGAIN`.
//! * Errors as glibc maps them: NXDOMAIN on every candidate → `EAI_NONAME`;
//!   the name exists without addresses of the family → `EAI_NODATA`;
//!   timeouts, SERVFAIL/REFUSED or no server reachable → `EAI_AGAIN`.
//!
//! A truncated UDP answer (TC) is asked again over an INS TCP connection
//! to the same server (if that fails, the truncated answer's addresses are
//! used).
//!
//! Gaps: `AI_ADDRCONFIG` is ignored for every answer (the
//! program's own interfaces say nothing about what INS reaches; under
//! `--isolate` there are none); no `AI_IDN`; nsswitch sources other than
//! `files` (`/etc/hosts`) and `dns` are not consulted; `res_*` and
//! `getaddrinfo_a` are not hooked (they still use glibc's resolver and so
//! the host stack). Reverse lookups: see [`getnameinfo`] and
//! [`gethostbyaddr_r`].
//!
//! The `hostent` functions (`gethostbyname*`, `gethostbyaddr*`) are in
//! [`crate::hostent`] over the same resolver.

use std::ffi::{CStr, CString};
use std::net::{IpAddr, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libc::{addrinfo, c_char, c_int, c_void};

use crate::addr;
use crate::dns::{self, Failure, ResolvConf, TYPE_A, TYPE_AAAA};
use crate::hooks;
use crate::sys::{self, real};

const EAI_NONAME: c_int = -2;
pub(crate) const EAI_AGAIN: c_int = -3;
const EAI_FAIL: c_int = -4;
const EAI_NODATA: c_int = -5;
const EAI_MEMORY: c_int = -10;

/// Largest UDP answer read (larger ones are cut and fail to parse).
const MAX_ANSWER: usize = 4096;

pub(crate) fn env_is(name: &str, value: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == value)
}

pub(crate) fn resolv_conf() -> ResolvConf {
    let path = std::env::var_os("INS_RESOLV_CONF").unwrap_or_else(|| "/etc/resolv.conf".into());
    ResolvConf::parse(&std::fs::read_to_string(path).unwrap_or_default())
}

/// A query id: not predictable from outside (time, a counter, the stack).
fn query_id() -> u16 {
    static N: AtomicU32 = AtomicU32::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let local = 0u8;
    let mut x = t ^ N.fetch_add(0x9E37_79B9, Ordering::Relaxed) ^ (&local as *const u8 as u32);
    x ^= x >> 16;
    x = x.wrapping_mul(0x45D9_F3B5);
    x ^= x >> 16;
    x as u16
}

/// An fd closed on drop (through the shim's own `close` hook).
struct Fd(c_int);

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: the fd is ours.
        unsafe { hooks::close(self.0) };
    }
}

/// An INS socket of type `ty` (made through the shim's own hook)
/// connected to `server`.
fn connected(server: SocketAddr, ty: libc::c_int) -> Result<Fd, Failure> {
    let family = if server.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: no memory arguments; the hook makes an INS socket.
    let fd = unsafe { hooks::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Failure::Again);
    }
    let fd = Fd(fd);
    let (sa, len) = addr::encode(&server);
    // SAFETY: sa holds len bytes of a sockaddr.
    if unsafe { hooks::connect(fd.0, sa.as_ptr().cast(), len as libc::socklen_t) } < 0 {
        return Err(Failure::Again);
    }
    Ok(fd)
}

/// One query to one server over an INS UDP socket.
fn exchange(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    timeout: Duration,
) -> Result<dns::Answer, Failure> {
    let id = query_id();
    let q = dns::query(id, name, qtype)?;
    let fd = connected(server, libc::SOCK_DGRAM)?;
    // SAFETY: q is readable for its length.
    if unsafe { hooks::send(fd.0, q.as_ptr().cast(), q.len(), libc::MSG_NOSIGNAL) } < 0 {
        return Err(Failure::Again);
    }
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_ANSWER];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Again);
        }
        match sys::poll_in(fd.0, left.as_millis().min(i32::MAX as u128) as i32) {
            Ok(true) => {}
            Ok(false) => return Err(Failure::Again),
            Err(e) if e.0 == libc::EINTR => continue,
            Err(_) => return Err(Failure::Again),
        }
        let mut from = [0u8; 128];
        let mut from_len = from.len() as libc::socklen_t;
        // SAFETY: buf and from are writable for their lengths.
        let n = unsafe {
            hooks::recvfrom(
                fd.0,
                buf.as_mut_ptr().cast::<c_void>(),
                buf.len(),
                libc::MSG_DONTWAIT,
                from.as_mut_ptr().cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            match sys::errno() {
                libc::EAGAIN | libc::EINTR => continue,
                _ => return Err(Failure::Again),
            }
        }
        let from = &from[..(from_len as usize).min(from.len())];
        let got = match addr::parse(from, server.is_ipv6(), true, addr::Purpose::Connect) {
            Ok(addr::Parsed::Addr(a)) => Some(a),
            _ => None,
        };
        if got.is_some_and(|g| g.ip() != server.ip() || g.port() != server.port()) {
            continue; // not from the server: ignored as glibc does
        }
        // A reply for another id or question is ignored too.
        let m = &buf[..n as usize];
        if let Ok(a) = dns::parse(m, id, name, qtype) {
            return Ok(a);
        }
        if dns::truncated_reply(m, id) {
            // Cut mid-record: only the header counts; TCP follows.
            return Ok(dns::Answer {
                rcode: m[3] & 0x0F,
                truncated: true,
                addrs: Vec::new(),
                ptrs: Vec::new(),
                canon: name.to_string(),
            });
        }
    }
}

/// Waits for `fd` to be readable before `deadline`.
fn wait_in(fd: c_int, deadline: Instant) -> Result<(), Failure> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Again);
        }
        match sys::poll_in(fd, left.as_millis().min(i32::MAX as u128) as i32) {
            Ok(true) => return Ok(()),
            Ok(false) => return Err(Failure::Again),
            Err(e) if e.0 == libc::EINTR => continue,
            Err(_) => return Err(Failure::Again),
        }
    }
}

/// Reads exactly `buf.len()` bytes from a stream before `deadline`.
fn read_exact(fd: c_int, buf: &mut [u8], deadline: Instant) -> Result<(), Failure> {
    let mut done = 0;
    while done < buf.len() {
        wait_in(fd, deadline)?;
        let rest = &mut buf[done..];
        // SAFETY: rest is writable for its length.
        let n =
            unsafe { hooks::recv(fd, rest.as_mut_ptr().cast(), rest.len(), libc::MSG_DONTWAIT) };
        if n == 0 {
            return Err(Failure::Again);
        }
        if n < 0 {
            match sys::errno() {
                libc::EAGAIN | libc::EINTR => continue,
                _ => return Err(Failure::Again),
            }
        }
        done += n as usize;
    }
    Ok(())
}

/// One query to one server over an INS TCP connection (length-prefixed).
fn exchange_tcp(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    timeout: Duration,
) -> Result<dns::Answer, Failure> {
    let deadline = Instant::now() + timeout;
    let id = query_id();
    let q = dns::query(id, name, qtype)?;
    let fd = connected(server, libc::SOCK_STREAM)?;
    let mut msg = (q.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(&q);
    let mut sent = 0;
    while sent < msg.len() {
        let rest = &msg[sent..];
        // SAFETY: rest is readable for its length.
        let n = unsafe { hooks::send(fd.0, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
        if n <= 0 {
            if n < 0 && sys::errno() == libc::EINTR {
                continue;
            }
            return Err(Failure::Again);
        }
        sent += n as usize;
    }
    let mut len = [0u8; 2];
    read_exact(fd.0, &mut len, deadline)?;
    let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
    read_exact(fd.0, &mut m, deadline)?;
    dns::parse(&m, id, name, qtype).map_err(|_| Failure::Again)
}

/// Resolves one name and type over every server and attempt.
pub(crate) fn lookup(rc: &ResolvConf, name: &str, qtype: u16) -> Result<dns::Answer, Failure> {
    for _ in 0..rc.attempts {
        for &server in &rc.servers {
            let got = match exchange(server, name, qtype, rc.timeout) {
                // Truncated: the same question over TCP (RFC 7766).
                Ok(a) if a.truncated => exchange_tcp(server, name, qtype, rc.timeout).or(Ok(a)),
                r => r,
            };
            match got {
                Ok(a) => match dns::outcome(&a) {
                    Ok(()) => return Ok(a),
                    Err(Failure::Again) => continue, // SERVFAIL, REFUSED: next server
                    Err(f) => return Err(f),
                },
                Err(Failure::Fail) => return Err(Failure::Fail),
                Err(_) => continue,
            }
        }
    }
    Err(Failure::Again)
}

/// Addresses for `node` of `qtypes`, with the canonical name.
pub(crate) fn resolve(
    rc: &ResolvConf,
    node: &str,
    qtypes: &[u16],
) -> Result<(Vec<IpAddr>, String), Failure> {
    let (mut nodata, mut again) = (false, false);
    for cand in rc.candidates(node) {
        let mut addrs = Vec::new();
        let mut canon = None;
        for &t in qtypes {
            match lookup(rc, &cand, t) {
                Ok(a) => {
                    addrs.extend(a.addrs);
                    canon.get_or_insert(a.canon);
                }
                Err(Failure::NoData) => nodata = true,
                Err(Failure::Again) => again = true,
                Err(_) => {}
            }
        }
        if !addrs.is_empty() {
            return Ok((addrs, canon.unwrap_or(cand)));
        }
    }
    Err(if nodata {
        Failure::NoData
    } else if again {
        Failure::Again
    } else {
        Failure::NoName
    })
}

fn eai(f: Failure) -> c_int {
    match f {
        Failure::NoName => EAI_NONAME,
        Failure::NoData => EAI_NODATA,
        Failure::Again => EAI_AGAIN,
        Failure::Fail => EAI_FAIL,
    }
}

/// Frees a list glibc's `getaddrinfo` built.
///
/// # Safety
/// `ai` null or such a list.
pub(crate) unsafe fn free_list(ai: *mut addrinfo) {
    if !ai.is_null() {
        // SAFETY: per the contract.
        unsafe { libc::freeaddrinfo(ai) };
    }
}

/// The resolver path of the hook: `hints` already copied, `node` not numeric.
///
/// # Safety
/// `service` null or a C string; `res` writable.
unsafe fn getaddrinfo_ins(
    node: &str,
    service: *const c_char,
    hints: addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    let family = hints.ai_family;
    let v4mapped = family == libc::AF_INET6 && hints.ai_flags & libc::AI_V4MAPPED != 0;
    let all = hints.ai_flags & libc::AI_ALL != 0;
    let rc = resolv_conf();
    let found = match family {
        libc::AF_INET => resolve(&rc, node, &[TYPE_A]),
        libc::AF_INET6 if v4mapped && all => resolve(&rc, node, &[TYPE_AAAA, TYPE_A]),
        libc::AF_INET6 if v4mapped => {
            resolve(&rc, node, &[TYPE_AAAA]).or_else(|_| resolve(&rc, node, &[TYPE_A]))
        }
        libc::AF_INET6 => resolve(&rc, node, &[TYPE_AAAA]),
        _ => resolve(&rc, node, &[TYPE_A, TYPE_AAAA]),
    };
    let (addrs, canon) = match found {
        Ok(x) => x,
        Err(f) => return eai(f),
    };
    let mut head: *mut addrinfo = std::ptr::null_mut();
    let mut tail: *mut addrinfo = std::ptr::null_mut();
    let mut seen = Vec::new();
    for a in addrs {
        let a = match a {
            IpAddr::V4(v4) if family == libc::AF_INET6 => IpAddr::V6(v4.to_ipv6_mapped()),
            a => a,
        };
        if seen.contains(&a) {
            continue;
        }
        seen.push(a);
        let Ok(text) = CString::new(a.to_string()) else {
            continue;
        };
        // SAFETY: addrinfo is plain data; all-zero is valid.
        let mut h: addrinfo = unsafe { std::mem::zeroed() };
        h.ai_socktype = hints.ai_socktype;
        h.ai_protocol = hints.ai_protocol;
        h.ai_family = if a.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        h.ai_flags = (hints.ai_flags
            & !(libc::AI_CANONNAME | libc::AI_V4MAPPED | libc::AI_ALL | libc::AI_ADDRCONFIG))
            | libc::AI_NUMERICHOST;
        let mut part: *mut addrinfo = std::ptr::null_mut();
        // SAFETY: valid strings, hints and out pointer.
        let r = unsafe { real::getaddrinfo(text.as_ptr(), service, &h, &mut part) };
        if r != 0 {
            // SAFETY: head is a glibc list or null.
            unsafe { free_list(head) };
            return r;
        }
        if head.is_null() {
            head = part;
        } else {
            // SAFETY: tail is the last node of our list.
            unsafe { (*tail).ai_next = part };
        }
        tail = part;
        // SAFETY: walking a glibc list to its end.
        while unsafe { !(*tail).ai_next.is_null() } {
            // SAFETY: tail is a valid node of that list.
            tail = unsafe { (*tail).ai_next };
        }
    }
    if head.is_null() {
        return EAI_NODATA;
    }
    if hints.ai_flags & libc::AI_CANONNAME != 0 {
        let Ok(c) = CString::new(canon) else {
            // SAFETY: head is our list.
            unsafe { free_list(head) };
            return EAI_FAIL;
        };
        // SAFETY: strdup of a C string; malloc'd as glibc's freeaddrinfo expects.
        let p = unsafe { libc::strdup(c.as_ptr()) };
        if p.is_null() {
            // SAFETY: head is our list.
            unsafe { free_list(head) };
            return EAI_MEMORY;
        }
        // SAFETY: head is a valid node.
        let old = unsafe { (*head).ai_canonname };
        // SAFETY: null or malloc'd by glibc.
        unsafe { libc::free(old.cast()) };
        // SAFETY: head is a valid node.
        unsafe { (*head).ai_canonname = p };
    }
    // SAFETY: res writable per the contract.
    unsafe { *res = head };
    0
}

/// Whether glibc's `files` source (`/etc/hosts`) answers `name` for
/// `family` (with `mapped`: IPv4 entries count for `AF_INET6`), so that
/// glibc's own call never reaches its resolver.
pub(crate) fn in_hosts(name: &str, family: c_int, mapped: bool) -> bool {
    let text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    dns::hosts_addrs(&text, name).iter().any(|a| match family {
        libc::AF_INET => a.is_ipv4(),
        libc::AF_INET6 => a.is_ipv6() || mapped,
        _ => true,
    })
}

/// `getaddrinfo(3)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn getaddrinfo(
    node: *const c_char,
    service: *const c_char,
    hints: *const addrinfo,
    res: *mut *mut addrinfo,
) -> c_int {
    if hooks::in_shim() || env_is("INS_DNS", "host") {
        // SAFETY: forwarded.
        return unsafe { real::getaddrinfo(node, service, hints, res) };
    }
    let h: addrinfo = if hints.is_null() {
        // glibc's defaults for null hints.
        // SAFETY: addrinfo is plain data; all-zero is valid.
        let mut h: addrinfo = unsafe { std::mem::zeroed() };
        h.ai_flags = libc::AI_V4MAPPED | libc::AI_ADDRCONFIG;
        h
    } else {
        // SAFETY: the caller's hints.
        unsafe { *hints }
    };
    // glibc's answer (files, numeric, null node), AI_ADDRCONFIG ignored.
    let mut local = h;
    local.ai_flags &= !libc::AI_ADDRCONFIG;
    // SAFETY: forwarded with the hints copied.
    let host = || unsafe { real::getaddrinfo(node, service, &local, res) };
    if node.is_null() || h.ai_flags & libc::AI_NUMERICHOST != 0 {
        return host();
    }
    // Numeric addresses and every argument check: glibc's.
    let mut numeric = h;
    numeric.ai_flags = (h.ai_flags & !libc::AI_ADDRCONFIG) | libc::AI_NUMERICHOST;
    // SAFETY: valid arguments.
    let r = unsafe { real::getaddrinfo(node, service, &numeric, res) };
    if r != EAI_NONAME {
        return r;
    }
    // SAFETY: node is a C string.
    let Ok(name) = unsafe { CStr::from_ptr(node) }.to_str().map(str::to_owned) else {
        return EAI_NONAME;
    };
    let mapped = h.ai_flags & libc::AI_V4MAPPED != 0;
    if name.is_empty() || in_hosts(&name, h.ai_family, mapped) {
        return host();
    }
    let saved = sys::errno();
    // SAFETY: the caller's service and res.
    let r = catch_unwind(AssertUnwindSafe(|| unsafe {
        getaddrinfo_ins(&name, service, h, res)
    }))
    .unwrap_or(EAI_FAIL);
    sys::set_errno(saved);
    r
}

// ---------------------------------------------------------- getnameinfo

const EAI_OVERFLOW: c_int = -12;

/// Whether `/etc/hosts` lists `ip` (glibc's `files` source answers it).
pub(crate) fn hosts_lists(ip: IpAddr) -> bool {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    hosts.lines().any(|l| {
        l.split('#')
            .next()
            .and_then(|l| l.split_whitespace().next())
            .and_then(|a| a.parse::<IpAddr>().ok())
            == Some(ip)
    })
}

/// `getnameinfo(3)`: reverse lookups (PTR) through INS.
///
/// glibc answers when no host name is asked for, with `NI_NUMERICHOST`,
/// for anything but `AF_INET`/`AF_INET6`, and for addresses `/etc/hosts`
/// lists; otherwise a PTR query goes over INS. Its name is written
/// (`NI_NOFQDN` is not honoured: the full name); no name: `EAI_NONAME` with
/// `NI_NAMEREQD` (`EAI_AGAIN` if the servers did not answer), else the
/// numeric form, as glibc. The service part is always glibc's.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn getnameinfo(
    sa: *const libc::sockaddr,
    salen: libc::socklen_t,
    host: *mut c_char,
    hostlen: libc::socklen_t,
    serv: *mut c_char,
    servlen: libc::socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarded.
    let native =
        |f: c_int| unsafe { real::getnameinfo(sa, salen, host, hostlen, serv, servlen, f) };
    if hooks::in_shim()
        || env_is("INS_DNS", "host")
        || host.is_null()
        || hostlen == 0
        || flags & libc::NI_NUMERICHOST != 0
        || sa.is_null()
    {
        return native(flags);
    }
    // SAFETY: sa readable for salen bytes per the contract (at most 128 read).
    let bytes = unsafe { std::slice::from_raw_parts(sa.cast::<u8>(), (salen as usize).min(128)) };
    let ip = match bytes
        .get(0..2)
        .map(|f| u16::from_ne_bytes([f[0], f[1]]) as c_int)
    {
        Some(libc::AF_INET) if bytes.len() >= 16 => {
            IpAddr::from([bytes[4], bytes[5], bytes[6], bytes[7]])
        }
        Some(libc::AF_INET6) if bytes.len() >= 24 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&bytes[8..24]);
            IpAddr::from(o)
        }
        _ => return native(flags),
    };
    if hosts_lists(ip) {
        return native(flags);
    }
    // The service (and every argument check) first: glibc's.
    let r = native(flags | libc::NI_NUMERICHOST);
    if r != 0 {
        return r;
    }
    let saved = sys::errno();
    let rc = resolv_conf();
    let found = catch_unwind(AssertUnwindSafe(|| {
        match lookup(&rc, &dns::reverse_name(ip), dns::TYPE_PTR) {
            Ok(a) => Ok(a.ptrs.into_iter().next()),
            Err(Failure::Again) => Err(Failure::Again),
            Err(_) => Ok(None),
        }
    }))
    .unwrap_or(Err(Failure::Fail));
    sys::set_errno(saved);
    let name = match found {
        Ok(Some(n)) => n,
        Ok(None) | Err(_) if flags & libc::NI_NAMEREQD == 0 => return 0, // numeric, written above
        Err(Failure::Again) => return EAI_AGAIN,
        _ => return EAI_NONAME,
    };
    if name.len() + 1 > hostlen as usize {
        return EAI_OVERFLOW;
    }
    // SAFETY: host writable for hostlen > name.len() bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(host.cast::<u8>(), hostlen as usize) };
    out[..name.len()].copy_from_slice(name.as_bytes());
    out[name.len()] = 0;
    0
}
