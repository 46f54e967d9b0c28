//! The `hostent` resolver functions through INS: `gethostbyname`,
//! `gethostbyname2`, `gethostbyname_r`, `gethostbyname2_r`,
//! `gethostbyaddr` and `gethostbyaddr_r`, over [`crate::resolve`]'s stub
//! resolver and with its rules (numeric names and `/etc/hosts` entries
//! stay glibc's; `INS_DNS=host` turns it off).
//!
//! Forward lookups ask A for `AF_INET`, AAAA for `AF_INET6`
//! (`RES_USE_INET6` is not honoured); reverse ones a PTR, unless
//! `/etc/hosts` lists the address. Answers are laid out in the caller's
//! buffer as glibc does; `h_errno` is `HOST_NOT_FOUND` for NXDOMAIN,
//! `NO_DATA` for no address of the family, `TRY_AGAIN` (return `EAGAIN`)
//! for timeouts; a buffer too small is `ERANGE` with `NETDB_INTERNAL`. The
//! non-reentrant forms keep their result per thread.

use std::ffi::CStr;
use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};

use libc::{addrinfo, c_char, c_int, c_void};

use crate::dns::{self, Failure, TYPE_A, TYPE_AAAA};
use crate::hooks;
use crate::resolve::{env_is, free_list, hosts_lists, in_hosts, lookup, resolv_conf, resolve};
use crate::sys::{self, real};

const HOST_NOT_FOUND: c_int = 1;
const TRY_AGAIN: c_int = 2;
const NO_RECOVERY: c_int = 3;
const NO_DATA: c_int = 4;
const NETDB_INTERNAL: c_int = -1;

unsafe extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

/// Lays `name` and `addrs` out in `buf` as glibc does (alias list, address
/// pointers, addresses, name) and points `ret` at them.
///
/// # Safety
/// `ret` writable; `buf` writable for `buflen` bytes.
unsafe fn fill_hostent(
    ret: *mut libc::hostent,
    buf: *mut c_char,
    buflen: usize,
    name: &str,
    af: c_int,
    addrs: &[IpAddr],
) -> Result<(), c_int> {
    const P: usize = std::mem::size_of::<*mut c_char>();
    let len = if af == libc::AF_INET { 4 } else { 16 };
    let pad = buf.align_offset(P);
    let ptrs = (addrs.len() + 2) * P;
    let need = pad + ptrs + addrs.len() * len + name.len() + 1;
    if need > buflen || pad == usize::MAX {
        return Err(libc::ERANGE);
    }
    // SAFETY: the caller's buffer, writable for buflen bytes.
    let b = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), buflen) };
    let at = |off: usize| buf.wrapping_add(off);
    let mut put_ptr = |slot: usize, p: *mut c_char| {
        b[pad + slot * P..pad + (slot + 1) * P].copy_from_slice(&(p as usize).to_ne_bytes());
    };
    // Slot 0: the empty alias list; slots 1..=n: the addresses; n+1: null.
    put_ptr(0, std::ptr::null_mut());
    let mut data = pad + ptrs;
    for i in 0..addrs.len() {
        put_ptr(1 + i, at(data));
        data += len;
    }
    put_ptr(1 + addrs.len(), std::ptr::null_mut());
    let mut data = pad + ptrs;
    for a in addrs {
        match a {
            IpAddr::V4(v) => b[data..data + 4].copy_from_slice(&v.octets()),
            IpAddr::V6(v) => b[data..data + 16].copy_from_slice(&v.octets()),
        }
        data += len;
    }
    b[data..data + name.len()].copy_from_slice(name.as_bytes());
    b[data + name.len()] = 0;
    let ent = libc::hostent {
        h_name: at(data),
        h_aliases: at(pad).cast(),
        h_addrtype: af,
        h_length: len as c_int,
        h_addr_list: at(pad + P).cast(),
    };
    // SAFETY: ret is writable per the contract.
    unsafe { ret.write(ent) };
    Ok(())
}

/// Whether `name` is numeric for glibc (`inet_aton`/`inet_pton` forms).
fn numeric(name: &CStr) -> bool {
    // SAFETY: addrinfo is plain data; all-zero is valid.
    let mut h: addrinfo = unsafe { std::mem::zeroed() };
    h.ai_flags = libc::AI_NUMERICHOST;
    let mut res: *mut addrinfo = std::ptr::null_mut();
    // SAFETY: valid string, hints and out pointer.
    let r = unsafe { real::getaddrinfo(name.as_ptr(), std::ptr::null(), &h, &mut res) };
    // SAFETY: res is glibc's list or null.
    unsafe { free_list(res) };
    r == 0
}

/// `gethostbyname2_r` through the stub resolver (see the module docs).
///
/// # Safety
/// As the C function.
unsafe fn by_name_r(
    name: *const c_char,
    af: c_int,
    ret: *mut libc::hostent,
    buf: *mut c_char,
    buflen: usize,
    result: *mut *mut libc::hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: forwarded.
    let host = || unsafe { real::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop) };
    if name.is_null()
        || hooks::in_shim()
        || env_is("INS_DNS", "host")
        || !matches!(af, libc::AF_INET | libc::AF_INET6)
    {
        return host();
    }
    // SAFETY: name is a C string.
    let cname = unsafe { CStr::from_ptr(name) };
    let Ok(text) = cname.to_str() else {
        return host();
    };
    if text.is_empty() || numeric(cname) || in_hosts(text, af, false) {
        return host();
    }
    // glibc's `files` source needs room for a hosts line before DNS is
    // tried, so a tiny buffer is ERANGE whatever the name; the same here
    // for at least what the answer's layout needs without addresses.
    if buflen < 4 * std::mem::size_of::<*mut c_char>() + text.len() + 1 {
        if !h_errnop.is_null() {
            // SAFETY: writable per the contract.
            unsafe { *h_errnop = NETDB_INTERNAL };
        }
        // SAFETY: result writable per the contract.
        unsafe { *result = std::ptr::null_mut() };
        sys::set_errno(libc::ERANGE);
        return libc::ERANGE;
    }
    // SAFETY: result writable per the contract.
    unsafe { *result = std::ptr::null_mut() };
    let qtype = if af == libc::AF_INET {
        TYPE_A
    } else {
        TYPE_AAAA
    };
    let saved = sys::errno();
    let found = catch_unwind(AssertUnwindSafe(|| resolve(&resolv_conf(), text, &[qtype])))
        .unwrap_or(Err(Failure::Fail));
    sys::set_errno(saved);
    // SAFETY: the caller's arguments.
    unsafe { finish_r(found, af, ret, buf, buflen, result, h_errnop) }
}

/// Writes a lookup's outcome as the `_r` functions return it.
///
/// # Safety
/// `ret`, `result` writable, `buf` for `buflen` bytes, `h_errnop` null or
/// writable.
unsafe fn finish_r(
    found: Result<(Vec<IpAddr>, String), Failure>,
    af: c_int,
    ret: *mut libc::hostent,
    buf: *mut c_char,
    buflen: usize,
    result: *mut *mut libc::hostent,
    h_errnop: *mut c_int,
) -> c_int {
    let (h, rv) = match found {
        Ok((addrs, canon)) => {
            // SAFETY: the caller's ret and buf.
            match unsafe { fill_hostent(ret, buf, buflen, &canon, af, &addrs) } {
                Ok(()) => {
                    // SAFETY: result writable.
                    unsafe { *result = ret };
                    (0, 0)
                }
                Err(e) => (NETDB_INTERNAL, e),
            }
        }
        Err(Failure::NoName) => (HOST_NOT_FOUND, 0),
        Err(Failure::NoData) => (NO_DATA, 0),
        Err(Failure::Again) => (TRY_AGAIN, libc::EAGAIN),
        Err(Failure::Fail) => (NO_RECOVERY, 0),
    };
    if rv != 0 {
        sys::set_errno(rv);
    }
    if !h_errnop.is_null() {
        // SAFETY: writable per the contract.
        unsafe { *h_errnop = h };
    }
    rv
}

/// `gethostbyaddr_r(3)`: a PTR query through INS unless `/etc/hosts`
/// lists the address (then glibc's), with `getnameinfo`'s rules.
///
/// # Safety
/// As the C function.
#[allow(clippy::too_many_arguments)]
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn gethostbyaddr_r(
    addr: *const c_void,
    len: libc::socklen_t,
    ty: c_int,
    ret: *mut libc::hostent,
    buf: *mut c_char,
    buflen: libc::size_t,
    result: *mut *mut libc::hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: forwarded.
    let host =
        || unsafe { real::gethostbyaddr_r(addr, len, ty, ret, buf, buflen, result, h_errnop) };
    if addr.is_null() || hooks::in_shim() || env_is("INS_DNS", "host") {
        return host();
    }
    let ip = match (ty, len) {
        (libc::AF_INET, 4) => {
            // SAFETY: addr readable for 4 bytes.
            let b = unsafe { std::ptr::read_unaligned(addr.cast::<[u8; 4]>()) };
            IpAddr::from(b)
        }
        (libc::AF_INET6, 16) => {
            // SAFETY: addr readable for 16 bytes.
            let b = unsafe { std::ptr::read_unaligned(addr.cast::<[u8; 16]>()) };
            IpAddr::from(b)
        }
        _ => return host(),
    };
    if hosts_lists(ip) {
        return host();
    }
    // SAFETY: result writable per the contract.
    unsafe { *result = std::ptr::null_mut() };
    let saved = sys::errno();
    let found = catch_unwind(AssertUnwindSafe(|| {
        lookup(&resolv_conf(), &dns::reverse_name(ip), dns::TYPE_PTR).and_then(|a| {
            a.ptrs
                .into_iter()
                .next()
                .map(|n| (vec![ip], n))
                .ok_or(Failure::NoData)
        })
    }))
    .unwrap_or(Err(Failure::Fail));
    sys::set_errno(saved);
    // SAFETY: the caller's arguments.
    unsafe { finish_r(found, ty, ret, buf, buflen, result, h_errnop) }
}

/// `gethostbyaddr(3)` (its result per thread, as `gethostbyname`'s).
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn gethostbyaddr(
    addr: *const c_void,
    len: libc::socklen_t,
    ty: c_int,
) -> *mut libc::hostent {
    with_static(|ent, buf, size, result, h| {
        // SAFETY: our buffers; the caller's address.
        unsafe { gethostbyaddr_r(addr, len, ty, ent, buf, size, result, h) }
    })
}

/// `gethostbyname2_r(3)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    ret: *mut libc::hostent,
    buf: *mut c_char,
    buflen: libc::size_t,
    result: *mut *mut libc::hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { by_name_r(name, af, ret, buf, buflen, result, h_errnop) }
}

/// `gethostbyname_r(3)` (`AF_INET`).
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn gethostbyname_r(
    name: *const c_char,
    ret: *mut libc::hostent,
    buf: *mut c_char,
    buflen: libc::size_t,
    result: *mut *mut libc::hostent,
    h_errnop: *mut c_int,
) -> c_int {
    // SAFETY: the caller's arguments.
    unsafe { by_name_r(name, libc::AF_INET, ret, buf, buflen, result, h_errnop) }
}

/// Per-thread result of `gethostbyname`/`gethostbyname2` (glibc's is one
/// static for the process; per thread is at least as safe).
struct Static {
    ent: libc::hostent,
    buf: Vec<c_char>,
}

thread_local! {
    static STATIC: std::cell::UnsafeCell<Static> = const { std::cell::UnsafeCell::new(Static {
        ent: libc::hostent {
            h_name: std::ptr::null_mut(),
            h_aliases: std::ptr::null_mut(),
            h_addrtype: 0,
            h_length: 0,
            h_addr_list: std::ptr::null_mut(),
        },
        buf: Vec::new(),
    }) };
}

/// Largest buffer `gethostbyname` grows to.
const MAX_STATIC: usize = 1 << 16;

fn by_name(name: *const c_char, af: c_int) -> *mut libc::hostent {
    with_static(|ent, buf, size, result, h| {
        // SAFETY: our buffers; the caller's name.
        unsafe { by_name_r(name, af, ent, buf, size, result, h) }
    })
}

/// Runs an `_r` call on the thread's static result, growing the buffer on
/// `ERANGE`; sets `h_errno`.
fn with_static<F>(call: F) -> *mut libc::hostent
where
    F: Fn(*mut libc::hostent, *mut c_char, usize, *mut *mut libc::hostent, *mut c_int) -> c_int,
{
    STATIC.with(|s| {
        // SAFETY: only this thread touches its Static, and not re-entrantly
        // (the resolver does not call gethostbyname/gethostbyaddr).
        let s = unsafe { &mut *s.get() };
        let mut size = s.buf.len().max(1024);
        loop {
            s.buf.resize(size, 0);
            let mut result: *mut libc::hostent = std::ptr::null_mut();
            let mut h = 0;
            let r = call(&mut s.ent, s.buf.as_mut_ptr(), size, &mut result, &mut h);
            if r == libc::ERANGE && size < MAX_STATIC {
                size *= 2;
                continue;
            }
            // SAFETY: no arguments; returns the thread's h_errno slot.
            let slot = unsafe { __h_errno_location() };
            // SAFETY: the slot is valid for the thread's lifetime.
            unsafe { *slot = h };
            return result;
        }
    })
}

/// `gethostbyname(3)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut libc::hostent {
    by_name(name, libc::AF_INET)
}

/// `gethostbyname2(3)`.
///
/// # Safety
/// As the C function.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut libc::hostent {
    by_name(name, af)
}
