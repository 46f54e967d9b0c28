//! Name resolution through INS: the `getaddrinfo` hook and the stub
//! resolver's transport.
//!
//! glibc's resolver opens its sockets through internal calls
//! (`__socket`, `__connect`) no `LD_PRELOAD` hook sees, so left alone its
//! queries would leave through the host stack (and fail in an empty network
//! namespace). The hook answers instead:
//!
//! * `INS_DNS=host`, a null `node`, `AI_NUMERICHOST`, a numeric address
//!   (glibc's own `getaddrinfo` with `AI_NUMERICHOST` decides, so `127.1`
//!   and `fe80::1%lo` parse as natively), or a name listed in `/etc/hosts`:
//!   glibc's `getaddrinfo`, no network involved. Bad flags, family, socket
//!   type or service fail there first, with glibc's own `EAI_*`.
//! * Otherwise A and/or AAAA queries (`AF_INET`: A; `AF_INET6`: AAAA, and A
//!   mapped to `::ffff:a.b.c.d` with `AI_V4MAPPED` when there is no AAAA or
//!   with `AI_ALL`; `AF_UNSPEC`: both, IPv4 first) go over UDP to the
//!   nameservers of `/etc/resolv.conf` (or the file named by
//!   `INS_RESOLV_CONF`), honouring `search`/`domain`, `ndots`, `timeout`
//!   and `attempts`. The socket is made by the shim's own `socket` hook, so
//!   it is an INS socket and each query is an INS flow to port 53.
//!   Each address found is turned into `addrinfo` entries by glibc's
//!   `getaddrinfo` with `AI_NUMERICHOST`, so the list has glibc's layout
//!   (and its `freeaddrinfo` frees it: that function is not hooked) and its
//!   socket-type/protocol/port expansion; `AI_CANONNAME` gets the end of
//!   the CNAME chain.
//! * Errors as glibc maps them: NXDOMAIN on every candidate → `EAI_NONAME`;
//!   the name exists without addresses of the family → `EAI_NODATA`;
//!   timeouts, SERVFAIL/REFUSED or no server reachable → `EAI_AGAIN`.
//!
//! Gaps: no TCP retry of a truncated answer (the addresses in it are used);
//! `AI_ADDRCONFIG` is ignored for names and numeric addresses alike (the
//! program's own interfaces say nothing about what INS reaches; under
//! `--isolate` there are none); no `AI_IDN`; nsswitch sources other than
//! `files` (`/etc/hosts`) and `dns` are not consulted; `gethostbyname*`,
//! `getnameinfo` and `res_*` are not hooked yet (they still use glibc's
//! resolver and so the host stack).

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
const EAI_AGAIN: c_int = -3;
const EAI_FAIL: c_int = -4;
const EAI_NODATA: c_int = -5;
const EAI_MEMORY: c_int = -10;

/// Largest UDP answer read (larger ones are cut and fail to parse).
const MAX_ANSWER: usize = 4096;

fn env_is(name: &str, value: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| v == value)
}

fn resolv_conf() -> ResolvConf {
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

/// One query to one server over an INS UDP socket.
fn exchange(server: SocketAddr, name: &str, qtype: u16, timeout: Duration) -> Result<dns::Answer, Failure> {
    let id = query_id();
    let q = dns::query(id, name, qtype)?;
    let family = if server.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: no memory arguments; the hook makes an INS socket.
    let fd = unsafe { hooks::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Failure::Again);
    }
    let fd = Fd(fd);
    let (sa, len) = addr::encode(&server);
    // SAFETY: sa holds len bytes of a sockaddr.
    if unsafe { hooks::connect(fd.0, sa.as_ptr().cast(), len as libc::socklen_t) } < 0 {
        return Err(Failure::Again);
    }
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
        if let Ok(a) = dns::parse(&buf[..n as usize], id, name, qtype) {
            return Ok(a);
        }
    }
}

/// Resolves one name and type over every server and attempt.
fn lookup(rc: &ResolvConf, name: &str, qtype: u16) -> Result<dns::Answer, Failure> {
    for _ in 0..rc.attempts {
        for &server in &rc.servers {
            match exchange(server, name, qtype, rc.timeout) {
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
fn resolve(rc: &ResolvConf, node: &str, qtypes: &[u16]) -> Result<(Vec<IpAddr>, String), Failure> {
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
unsafe fn free_list(ai: *mut addrinfo) {
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
        libc::AF_INET6 if v4mapped => resolve(&rc, node, &[TYPE_AAAA])
            .or_else(|_| resolve(&rc, node, &[TYPE_A])),
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
        let mut h = hints;
        h.ai_family = if a.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
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
        // SAFETY: head is a valid node; its canonname is null or malloc'd.
        unsafe {
            libc::free((*head).ai_canonname.cast());
            (*head).ai_canonname = p;
        }
    }
    // SAFETY: res writable per the contract.
    unsafe { *res = head };
    0
}

/// Whether `name` is in the hosts file glibc's `files` source reads.
fn in_hosts(name: &str) -> bool {
    std::fs::read_to_string("/etc/hosts").is_ok_and(|t| dns::in_hosts(&t, name))
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
    // SAFETY: forwarded.
    let host = || unsafe { real::getaddrinfo(node, service, hints, res) };
    if node.is_null() || hooks::in_shim() || env_is("INS_DNS", "host") {
        return host();
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
    if h.ai_flags & libc::AI_NUMERICHOST != 0 {
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
    if name.is_empty() || in_hosts(&name) {
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
