// SPDX-License-Identifier: GPL-2.0

//! Kernel interfaces that Linux 6.12's `kernel` crate neither wraps nor
//! binds (its bindgen input has no miscdevice.h, anon_inodes.h or poll.h),
//! declared by hand from those headers, plus thin wrappers over bound ones.
//!
//! Every declaration here mirrors a C definition of Linux 6.12 exactly
//! (header named on each); modpost checks the function names at build time,
//! the struct layouts are this file's responsibility.

use core::ffi::c_void;

use core::marker::PhantomPinned;
use kernel::ffi::{c_char, c_int, c_long};

use kernel::bindings;
use kernel::prelude::*;
use kernel::types::Opaque;

/// `struct miscdevice` (include/linux/miscdevice.h).
#[repr(C)]
pub(crate) struct MiscDevice {
    pub(crate) minor: c_int,
    pub(crate) name: *const c_char,
    pub(crate) fops: *const bindings::file_operations,
    pub(crate) list: bindings::list_head,
    pub(crate) parent: *mut bindings::device,
    pub(crate) this_device: *mut bindings::device,
    pub(crate) groups: *mut *const bindings::attribute_group,
    pub(crate) nodename: *const c_char,
    pub(crate) mode: bindings::umode_t,
}

/// `MISC_DYNAMIC_MINOR` (include/linux/miscdevice.h).
pub(crate) const MISC_DYNAMIC_MINOR: c_int = 255;

/// `struct poll_table_struct` (include/linux/poll.h).
#[repr(C)]
pub(crate) struct PollTable {
    qproc: Option<
        unsafe extern "C" fn(*mut bindings::file, *mut bindings::wait_queue_head, *mut PollTable),
    >,
    key: u32,
}

// Poll bits (include/uapi/linux/eventpoll.h).
pub(crate) const EPOLLIN: u32 = 0x001;
pub(crate) const EPOLLOUT: u32 = 0x004;
pub(crate) const EPOLLERR: u32 = 0x008;
pub(crate) const EPOLLHUP: u32 = 0x010;
pub(crate) const EPOLLRDNORM: u32 = 0x040;
pub(crate) const EPOLLWRNORM: u32 = 0x100;
pub(crate) const EPOLLRDHUP: u32 = 0x2000;

// `improper_ctypes`: the structs reached through these pointers contain
// `lock_class_key`, an empty struct in this configuration (no lockdep); only
// pointers cross.
#[allow(improper_ctypes)]
extern "C" {
    // drivers/char/misc.c
    pub(crate) fn misc_register(misc: *mut MiscDevice) -> c_int;
    pub(crate) fn misc_deregister(misc: *mut MiscDevice);
    // fs/anon_inodes.c
    pub(crate) fn anon_inode_getfile(
        name: *const c_char,
        fops: *const bindings::file_operations,
        private: *mut c_void,
        flags: c_int,
    ) -> *mut bindings::file;
}

/// `poll_wait()` (include/linux/poll.h, inline there).
///
/// # Safety
///
/// `file` is the file being polled, `wq` a wait queue that outlives every
/// registration on it (until the file's release), `pt` the poll table the
/// VFS passed (may be null).
pub(crate) unsafe fn poll_wait(
    file: *mut bindings::file,
    wq: *mut bindings::wait_queue_head,
    pt: *mut PollTable,
) {
    if pt.is_null() || wq.is_null() {
        return;
    }
    // SAFETY: `pt` is a valid poll table (caller's contract) that nothing
    // else writes during the call.
    let qproc = unsafe { (*pt).qproc };
    if let Some(f) = qproc {
        // SAFETY: the VFS's queueing callback, called as poll_wait() does.
        unsafe { f(file, wq, pt) };
    }
}

/// `iov_iter_count()` (include/linux/uio.h, inline there).
///
/// # Safety
///
/// `iter` is a valid iterator the VFS passed.
pub(crate) unsafe fn iov_iter_count(iter: *mut bindings::iov_iter) -> usize {
    // SAFETY: `iter` is valid (caller's contract).
    let union = unsafe { &(*iter).__bindgen_anon_1 };
    // SAFETY: `count` overlays the second word of `__ubuf_iovec` for every
    // iterator type, as the C accessor reads it.
    unsafe { union.__bindgen_anon_1.as_ref() }.count
}

/// A `wait_queue_head` for readiness: blocking callers sleep on it and
/// `poll`/`epoll` register on it; wake-ups carry the poll bits as the key.
#[pin_data]
pub(crate) struct WaitQueue {
    #[pin]
    wq: Opaque<bindings::wait_queue_head>,
    #[pin]
    _pin: PhantomPinned,
}

/// The lock class of every [`WaitQueue`] (lockdep wants a static key).
struct StaticKey(Opaque<bindings::lock_class_key>);
// SAFETY: lockdep synchronises its own use of class keys.
unsafe impl Sync for StaticKey {}
static WAIT_KEY: StaticKey = StaticKey(Opaque::uninit());

// SAFETY: a wait queue head has its own spinlock; it is used from any thread.
unsafe impl Send for WaitQueue {}
// SAFETY: as above.
unsafe impl Sync for WaitQueue {}

impl WaitQueue {
    /// An initialiser for a new wait queue.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for the closure's duration; the name
            // and key are static.
            wq <- Opaque::ffi_init(|slot| unsafe {
                bindings::__init_waitqueue_head(
                    slot,
                    c"ins-socket".as_ptr().cast(),
                    WAIT_KEY.0.get(),
                )
            }),
            _pin: PhantomPinned,
        })
    }

    /// The C wait queue head.
    pub(crate) fn as_ptr(&self) -> *mut bindings::wait_queue_head {
        self.wq.get()
    }

    /// Wakes every waiter (and epoll entries whose events intersect `bits`).
    pub(crate) fn wake(&self, bits: u32) {
        // SAFETY: the head is initialised and pinned; the key is the poll
        // mask, as `wake_up_interruptible_poll()` passes it.
        unsafe {
            bindings::__wake_up(
                self.wq.get(),
                bindings::TASK_NORMAL,
                1,
                bits as usize as *mut c_void,
            )
        };
    }

    /// Sleeps until `ready()` holds (checked with the task running, so it
    /// may take mutexes: the `wait_woken()` pattern) or a signal arrives
    /// (`ERESTARTSYS`).
    pub(crate) fn wait_until(&self, mut ready: impl FnMut() -> bool) -> Result {
        let entry = Opaque::<bindings::wait_queue_entry>::uninit();
        // SAFETY: `entry` is valid memory; this sets private = current and
        // an empty list entry.
        unsafe { bindings::init_wait_entry(entry.get(), 0) };
        // SAFETY: `entry` was initialised just above and nothing else
        // references it yet.
        unsafe { (*entry.get()).func = Some(bindings::woken_wake_function) };
        // SAFETY: head and entry are valid; the entry is removed below
        // before it goes out of scope.
        unsafe { bindings::add_wait_queue(self.wq.get(), entry.get()) };
        let result = loop {
            if ready() {
                break Ok(());
            }
            if kernel::current!().signal_pending() {
                break Err(ERESTARTSYS);
            }
            // SAFETY: `entry` is on this queue with woken_wake_function;
            // the WOKEN flag makes a wake-up between `ready()` and here
            // return at once.
            unsafe { bindings::wait_woken(entry.get(), bindings::TASK_INTERRUPTIBLE, c_long::MAX) };
        };
        // SAFETY: the entry was added to this queue above.
        unsafe { bindings::remove_wait_queue(self.wq.get(), entry.get()) };
        result
    }
}

/// A new anonymous-inode file whose private data is `private` (an
/// `Arc::into_raw` reference the file's `release` must take back with
/// `Arc::from_raw`), and a reserved fd for it (`O_CLOEXEC` if asked), not
/// installed: the caller installs it with `fd_install` once nothing else
/// can fail, or drops both with [`discard_file`]. On failure nothing is
/// left (the reference is dropped here, not through `release`).
pub(crate) fn new_anon_file<T>(
    name: &'static core::ffi::CStr,
    fops: *const bindings::file_operations,
    private: kernel::sync::Arc<T>,
    cloexec: bool,
) -> Result<(i32, *mut bindings::file)> {
    let flags = if cloexec { bindings::O_CLOEXEC } else { 0 };
    // SAFETY: plain fd reservation for the current task.
    let fd = unsafe { bindings::get_unused_fd_flags(flags) };
    if fd < 0 {
        return Err(Error::from_errno(fd));
    }
    let raw = kernel::sync::Arc::into_raw(private);
    // SAFETY: `fops` is one of our operation tables (module lifetime, owner
    // set) whose `release` takes back `raw`, the file's private data.
    let f = unsafe {
        anon_inode_getfile(
            name.as_ptr().cast(),
            fops,
            raw.cast_mut().cast::<c_void>(),
            bindings::O_RDWR as i32,
        )
    };
    // NULL or an ERR_PTR (the top 4095 addresses).
    let errno = f as isize;
    if f.is_null() || (-4095..0).contains(&errno) {
        // SAFETY: the file was not made: we still own the reference.
        drop(unsafe { kernel::sync::Arc::from_raw(raw) });
        // SAFETY: `fd` was reserved above and not installed.
        unsafe { bindings::put_unused_fd(fd as u32) };
        return Err(if f.is_null() {
            ENOMEM
        } else {
            Error::from_errno(errno as i32)
        });
    }
    // Reads and writes honour `IOCB_NOWAIT` (a socket file's do): let
    // `preadv2`/`pwritev2` ask for it per call with `RWF_NOWAIT` (the
    // shim's `MSG_DONTWAIT` on datagrams), as eventfd allows.
    // SAFETY: a new file nobody else sees yet.
    unsafe { (*f).f_mode |= FMODE_NOWAIT };
    Ok((fd, f))
}

/// `FMODE_NOWAIT` (include/linux/fs.h, Linux 6.12).
const FMODE_NOWAIT: bindings::fmode_t = 1 << 27;

/// Drops a file and fd made by [`new_anon_file`] but not installed (the
/// file's `release` runs).
pub(crate) fn discard_file(fd: i32, f: *mut bindings::file) {
    // SAFETY: a file we made and did not install: this drops the only
    // reference.
    unsafe { bindings::fput(f) };
    // SAFETY: reserved by us and not installed.
    unsafe { bindings::put_unused_fd(fd as u32) };
}
