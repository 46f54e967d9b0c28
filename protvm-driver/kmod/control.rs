// SPDX-License-Identifier: GPL-2.0

//! The shim's control messages on `/dev/ins`, driven by driver-core, and
//! the socket files they make.
//!
//! `INS_IOC_CONTROL` (`_IOWR('I', 3, struct ins_control)`) carries one
//! ins-protocol control packet (`ins_protocol::control`, the same bytes the
//! shim sends the daemon) and the fd of the socket it is about, and
//! returns the reply packet in place:
//!
//! ```c
//! struct ins_control {
//!         __s32 fd;           /* in: the socket, -1 for none; out: the fd the reply passes, or -1 */
//!         __u32 len;          /* in: request length; out: reply length */
//!         __u8 packet[368];   /* in: request; out: reply (header + value) */
//! };
//! ```
//!
//! * `Socket` (args `[domain, type, protocol, 0]`) is answered here: a new
//!   socket file (`[ins-socket]`, anonymous inode) registered with
//!   driver-core (`Driver::new_socket`, keyed by a per-file number since all
//!   anonymous-inode files share one inode), installed as `fd` in the
//!   reply (not close-on-exec, as `socket()` without `SOCK_CLOEXEC`).
//! * Every other request goes to `Driver::shim_request` with the socket
//!   the fd names (only our socket files name one; anything else is
//!   `ENOTSOCK` from driver-core). The caller then sleeps until
//!   driver-core's reply for its `(connection, seq)` arrives, usually when
//!   an instance answers over its ring; a signal ends the wait with
//!   `EINTR` (the request stays in flight; its late reply is dropped when
//!   the `/dev/ins` file that sent it closes). The connection is the open
//!   `/dev/ins` file.
//! * The last close of a socket file is the app letting go
//!   (`Driver::app_eof(hup)`: the instances close their replicas).
//!
//! Not yet: the socket files' data path (read/write through the rings,
//! accept tokens, in-band options), so a socket can be made, bound and
//! listened on, but not carry bytes: `Connect`, `Accept` and `SockOpt`
//! are `EOPNOTSUPP`, `read`/`write` `ENOTCONN`; a connection an instance
//! announces gets no app side (driver-core drops it).

use driver_core::{Handle, ReplyFd};
use ins_protocol::control::{Control, Op, MAX_PACKET};
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::uaccess::UserSlice;

use crate::instance::{now_ns, Core};
use crate::ksys;

/// `struct ins_control` size.
pub(crate) const CONTROL_LEN: usize = 8 + MAX_PACKET;
/// `_IOWR('I', 3, struct ins_control)`.
pub(crate) const INS_IOC_CONTROL: u32 =
    (3 << 30) | ((CONTROL_LEN as u32) << 16) | ((b'I' as u32) << 8) | 3;
/// `EOPNOTSUPP`.
const EOPNOTSUPP_N: i32 = 95;

/// What a socket file points to.
pub(crate) struct SockFile {
    core: Arc<Core>,
    handle: Handle,
}

/// One control request from the `/dev/ins` file `conn`.
pub(crate) fn control_ioctl(
    core: &Arc<Core>,
    sock_fops: *const bindings::file_operations,
    conn: u64,
    arg: usize,
) -> Result<kernel::ffi::c_long> {
    let mut io = KVec::from_elem(0u8, CONTROL_LEN, GFP_KERNEL)?;
    UserSlice::new(arg, CONTROL_LEN)
        .reader()
        .read_slice(&mut io)?;
    let fd = i32::from_ne_bytes([io[0], io[1], io[2], io[3]]);
    let len = u32::from_ne_bytes([io[4], io[5], io[6], io[7]]) as usize;
    let packet = io.get(8..8 + len.min(MAX_PACKET)).ok_or(EINVAL)?;
    if len > MAX_PACKET {
        return Err(EINVAL);
    }
    let req = Control::decode(packet).map_err(|_| EINVAL)?;
    let mut out = KVec::from_elem(0u8, CONTROL_LEN, GFP_KERNEL)?;
    let (ctl_len, new_file) = match req.op {
        Op::Socket => socket_op(core, sock_fops, &req, &mut out)?,
        // These need the socket files' data path (not yet).
        Op::SockOpt | Op::Connect | Op::Accept => {
            (reply_status(&req, EOPNOTSUPP_N, &mut out)?, None)
        }
        _ => (shim_op(core, sock_fops, conn, &req, fd, &mut out)?, None),
    };
    out[4..8].copy_from_slice(&(ctl_len as u32).to_ne_bytes());
    let (newfd, file) = match new_file {
        Some((nfd, f)) => (nfd, f),
        None => (-1, core::ptr::null_mut()),
    };
    out[0..4].copy_from_slice(&newfd.to_ne_bytes());
    if let Err(e) = UserSlice::new(arg, CONTROL_LEN).writer().write_slice(&out) {
        if !file.is_null() {
            ksys::discard_file(newfd, file);
        }
        return Err(e);
    }
    if !file.is_null() {
        // SAFETY: `newfd` was reserved for this task and `file` is ours;
        // this hands our reference to the fd table.
        unsafe { bindings::fd_install(newfd as u32, file) };
    }
    Ok(0)
}

/// Encodes a reply to `req` with `status` and nothing else into `out[8..]`.
fn reply_status(req: &Control<'_>, status: i32, out: &mut [u8]) -> Result<usize> {
    let r = Control::reply_to(req, status);
    r.encode(out.get_mut(8..).ok_or(EINVAL)?)
        .map_err(|_| EINVAL)
}

/// `socket()`: a socket file registered with driver-core.
fn socket_op(
    core: &Arc<Core>,
    sock_fops: *const bindings::file_operations,
    req: &Control<'_>,
    out: &mut [u8],
) -> Result<(usize, Option<(i32, *mut bindings::file)>)> {
    let [domain, ty, proto, _] = req.args;
    let handle = {
        let mut inner = core.inner.lock();
        let id = inner.next_sock;
        inner.next_sock += 1;
        match inner.driver.new_socket(id, domain, ty, proto) {
            Ok(h) => h,
            Err(errno) => return Ok((reply_status(req, errno, out)?, None)),
        }
    };
    let sock = Arc::new(
        SockFile {
            core: core.clone(),
            handle,
        },
        GFP_KERNEL,
    );
    let sock = match sock {
        Ok(s) => s,
        Err(e) => {
            let_go(core, handle);
            return Err(e.into());
        }
    };
    // Not close-on-exec, as socket() without SOCK_CLOEXEC (the shim sets
    // FD_CLOEXEC when the app asked for it).
    let (fd, f) = ksys::new_anon_file(c"[ins-socket]", sock_fops, sock, false)
        .inspect_err(|_| let_go(core, handle))?;
    Ok((reply_status(req, 0, out)?, Some((fd, f))))
}

/// The app let go of `handle` (its file is gone, or was never made).
fn let_go(core: &Core, handle: Handle) {
    let mut guard = core.inner.lock();
    let inner = &mut *guard;
    inner.driver.app_eof(handle, true, &mut inner.actions);
    if inner.execute() {
        core.replies_wq.wake(ksys::EPOLLIN);
    }
}

/// The handle of the socket file `fd` names, if it is one of ours.
fn handle_of(fd: i32, sock_fops: *const bindings::file_operations) -> Option<Handle> {
    if fd < 0 {
        return None;
    }
    // SAFETY: plain lookup in the current task's table; a non-null result
    // is a reference we drop below.
    let f = unsafe { bindings::fget(fd as u32) };
    if f.is_null() {
        return None;
    }
    // SAFETY: `f` is a valid file we hold a reference on.
    let ours = core::ptr::eq(unsafe { (*f).f_op }, sock_fops);
    let h = if ours {
        // SAFETY: `f` is valid (as above).
        let private = unsafe { (*f).private_data };
        // SAFETY: one of our socket files: `private_data` is a live
        // `SockFile` while the file is (we hold a reference).
        let s = unsafe { &*(private as *const SockFile) };
        Some(s.handle)
    } else {
        None
    };
    // SAFETY: the reference fget() took.
    unsafe { bindings::fput(f) };
    h
}

/// Every other request: through driver-core; waits for its reply.
fn shim_op(
    core: &Arc<Core>,
    sock_fops: *const bindings::file_operations,
    conn: u64,
    req: &Control<'_>,
    fd: i32,
    out: &mut [u8],
) -> Result<usize> {
    let sock = handle_of(fd, sock_fops);
    {
        let mut guard = core.inner.lock();
        let inner = &mut *guard;
        inner.driver.tick(now_ns(), &mut inner.actions);
        inner
            .driver
            .shim_request(conn, req, sock, &mut inner.actions);
        if inner.execute() {
            core.replies_wq.wake(ksys::EPOLLIN);
        }
    }
    let mut reply = None;
    let waited = core.replies_wq.wait_until(|| {
        let mut inner = core.inner.lock();
        if let Some(i) = inner
            .replies
            .iter()
            .position(|r| r.conn == conn && r.ctl.seq == req.seq)
        {
            reply = Some(inner.replies.swap_remove(i));
        }
        reply.is_some()
    });
    if waited.is_err() {
        return Err(EINTR);
    }
    let Some(r) = reply else {
        return Err(EINTR);
    };
    let mut ctl = r.ctl;
    if r.fd != ReplyFd::None {
        // A reply passing a connection's fd needs the data path.
        ctl.status = EOPNOTSUPP_N;
    }
    ctl.borrowed()
        .encode(out.get_mut(8..).ok_or(EINVAL)?)
        .map_err(|_| EINVAL)
}

/// Drops the replies nobody will take: `conn`'s `/dev/ins` file closed.
pub(crate) fn conn_closed(core: &Core, conn: u64) {
    core.inner.lock().replies.retain(|r| r.conn != conn);
}

/// `read`/`write` of socket files: no data path yet.
///
/// # Safety
///
/// Called by the VFS; nothing is dereferenced.
unsafe extern "C" fn sock_read_iter(
    _iocb: *mut bindings::kiocb,
    _iter: *mut bindings::iov_iter,
) -> isize {
    -(bindings::ENOTCONN as isize)
}

/// `release` of socket files: the app let go.
///
/// # Safety
///
/// Called by the VFS once, when the last reference to one of our socket
/// files goes; no other operation on it follows.
unsafe extern "C" fn sock_release(_inode: *mut bindings::inode, file: *mut bindings::file) -> i32 {
    // SAFETY: the VFS passes the file being released.
    let private = unsafe { (*file).private_data };
    // SAFETY: last reference to one of our socket files: `private_data` is
    // the `Arc<SockFile>` reference from `Arc::into_raw`, never used again.
    let sock = unsafe { Arc::from_raw(private as *const SockFile) };
    let_go(&sock.core, sock.handle);
    0
}

/// The socket files' operations (module lifetime).
pub(crate) fn sock_fops(owner: *mut bindings::module) -> bindings::file_operations {
    bindings::file_operations {
        owner,
        read_iter: Some(sock_read_iter),
        write_iter: Some(sock_read_iter),
        release: Some(sock_release),
        llseek: Some(bindings::noop_llseek),
        // SAFETY: all-zero is a valid `file_operations` (no operation).
        ..unsafe { core::mem::zeroed() }
    }
}
