// SPDX-License-Identifier: GPL-2.0

//! `ins`: the INS protected-VM driver as a kernel module.
//!
//! The misc device `/dev/ins`, per-socket files (sockfile.rs) whose data
//! goes through ins-protocol rings, and instances joining over the local
//! in-kernel transport (instance.rs, driver-core as their host).
//!
//! * `INS_IOC_PAIR` (`_IOWR('I', 1, struct ins_pair)`): makes two connected
//!   socket files and returns their fds, like `socketpair()`. It is how the
//!   file side is tested before the shim's messages reach the module.
//! * `INS_IOC_INSTANCE` (`_IOWR('I', 2, struct ins_instance)`, needs
//!   `CAP_NET_ADMIN`: an instance sees every socket placed on it): a new
//!   instance channel with rings of `ring_capacity` bytes (a power of two,
//!   2048 ..= 16 MiB) and frames of at most `max_frame` bytes (1024 ..=
//!   capacity / 2) each way. Returns the channel fd, the offset of the
//!   instance→driver ring and the region length to `mmap` (instance.rs
//!   says what the fd does).
//! * `INS_IOC_XEN_OFFER` (`_IOWR('I', 6, struct ins_xen_offer)`, needs
//!   `CAP_NET_ADMIN`; in a Xen guest, else `ENODEV`): a new instance
//!   channel for another *domain* (xenchan.rs): the region's pages
//!   (rings as for `INS_IOC_INSTANCE`, then a status page) granted to
//!   `domid`, two unbound event-channel ports for it. Returns the channel
//!   fd, the grant references (into the caller's `refs` array of
//!   `max_refs`; `E2BIG` if too small), the ports and the layout; the
//!   caller (`ins-ctl attach-xen --kmod`) publishes them in xenstore and
//!   holds the fd while the instance serves.
//! * `INS_IOC_CONTROL` (`_IOWR('I', 3, struct ins_control)`): one shim
//!   control request, through driver-core (control.rs).
//! * `INS_IOC_VERSION` (`_IOR('I', 4, __u32)`): the ins-protocol version
//!   the module speaks (`ins_protocol::hello::VERSION`); the shim uses the
//!   module only when this ioctl answers its own version.
//! * `read()`: a text snapshot: driver-core's settings (`config
//!   window=… heartbeat_timeout_ms=… …`), the instances it knows, one line
//!   each (`instance <id> live|draining|dead pid … version … frames …
//!   channel open|closed|<why it failed> heartbeat <seq> death "<why>"`),
//!   and channels still in their handshake.
//! * `write()` (`CAP_NET_ADMIN` of whoever opened the file): settings, `key=value` separated by white
//!   space, e.g. `echo heartbeat_timeout_ms=10000 > /dev/ins`: driver-core's
//!   limits (`Config::set`: `heartbeat_timeout_ms`, `placement`,
//!   `max_sockets`, `max_opts`, `max_inband`, `inband_stall_ms`;
//!   `window` and `bindv6only` cannot change). All or nothing; a bad one is
//!   `EINVAL` with the key and the reason in the kernel log. At most 4 KiB.
//!
//! ```c
//! struct ins_pair { __u32 flags; /* INS_PAIR_CLOEXEC = 1 */ __s32 fds[2]; };
//! struct ins_instance {
//!         __u32 flags;            /* in: INS_INSTANCE_CLOEXEC = 1 */
//!         __u32 ring_capacity;    /* in */
//!         __u32 max_frame;        /* in */
//!         __s32 fd;               /* out */
//!         __u64 to_driver_offset; /* out */
//!         __u64 region_len;       /* out */
//! };
//! struct ins_xen_offer {
//!         __u32 flags;            /* in: INS_INSTANCE_CLOEXEC = 1 */
//!         __u32 domid;            /* in: the instance's domain */
//!         __u32 ring_capacity;    /* in */
//!         __u32 max_frame;        /* in */
//!         __u32 max_refs;         /* in: entries at refs */
//!         __s32 fd;               /* out */
//!         __u64 refs;             /* in: __u32 array; out: one gref per page */
//!         __u32 pages;            /* out */
//!         __u32 port;             /* out: the rings' port */
//!         __u32 live_port;        /* out: the liveness port */
//!         __u32 to_driver_offset; /* out */
//!         __u32 region_len;       /* out: pages * 4096 (rings, status page) */
//!         __u32 reserved;         /* 0 */
//! };
//! ```
//!
//! Lifetime: the misc device and both `file_operations` live in one boxed
//! [`State`] from init to exit; every file made here holds a reference on
//! the module (`owner`), so exit never runs while one is open.

// `alloc` is linked in through deps.o (driver-core); its entry points are here.
#[allow(unused_extern_crates)]
extern crate alloc;

#[path = "control.rs"]
mod control;
#[path = "dgram.rs"]
mod dgram;
#[path = "instance.rs"]
mod instance;
#[path = "kalloc.rs"]
mod kalloc;
#[path = "kregion.rs"]
mod kregion;
#[path = "ksys.rs"]
mod ksys;
// ins_xenprobe.ko uses its xenstore helpers; ins.ko's Xen transport
// (xenchan.rs) the pages and ports.
#[allow(dead_code)]
#[path = "kxen.rs"]
mod kxen;
#[path = "sockfile.rs"]
mod sockfile;
#[path = "vregion.rs"]
mod vregion;
#[path = "xenchan.rs"]
mod xenchan;

use kernel::ffi::{c_int, c_long, c_uint, c_ulong, c_void};

use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::uaccess::UserSlice;

module! {
    type: Ins,
    name: "ins",
    author: "INS",
    description: "INS protected-VM driver: /dev/ins, ring-backed socket files, instances",
    license: "GPL",
}

/// `_IOWR('I', 1, struct ins_pair)`: dir 3 << 30, size 12 << 16, 'I' << 8, 1.
const INS_IOC_PAIR: c_uint = (3 << 30) | (12 << 16) | ((b'I' as c_uint) << 8) | 1;
/// `struct ins_pair` size.
const PAIR_LEN: usize = 12;
/// `ins_pair.flags`: make the fds close-on-exec.
const INS_PAIR_CLOEXEC: u32 = 1;

/// `_IOWR('I', 2, struct ins_instance)`: dir 3 << 30, size 32 << 16.
const INS_IOC_INSTANCE: c_uint = (3 << 30) | (32 << 16) | ((b'I' as c_uint) << 8) | 2;
/// `struct ins_instance` size.
const INSTANCE_LEN: usize = 32;
/// `ins_instance.flags`: make the fd close-on-exec.
const INS_INSTANCE_CLOEXEC: u32 = 1;

/// The misc device and the operations tables. `misc` is first so that the
/// `private_data` misc_open() stores (the miscdevice) is the `State`.
#[repr(C)]
struct State {
    misc: ksys::MiscDevice,
    misc_fops: bindings::file_operations,
    sock_fops: bindings::file_operations,
    chan_fops: bindings::file_operations,
    /// Xen channel files (xenchan.rs).
    xen_fops: bindings::file_operations,
    /// Socket files made by the shim's `Socket` request (control.rs).
    ctl_sock_fops: bindings::file_operations,
    /// The channel mappings' operations: none (no fault handler; every
    /// page is inserted at mmap), but not null, which means anonymous.
    chan_vm_ops: bindings::vm_operations_struct,
    core: Arc<instance::Core>,
}

struct Ins {
    state: KBox<State>,
    /// The `ins-tick` kernel thread ([`ticker_main`]).
    ticker: *mut bindings::task_struct,
}

/// The `ins-tick` kernel thread: runs driver-core's timers every
/// [`instance::Core::tick_ms`] until the module stops it.
///
/// # Safety
///
/// `data` is the module's `Core`, which outlives the thread: `Ins::drop`
/// stops the thread (`kthread_stop` waits for this function to return)
/// before the state that holds the core goes.
unsafe extern "C" fn ticker_main(data: *mut c_void) -> c_int {
    // SAFETY: see the function's contract.
    let core = unsafe { &*(data as *const instance::Core) };
    // SAFETY: called from this kernel thread.
    while !unsafe { bindings::kthread_should_stop() } {
        let ms = core.tick_ms();
        // SAFETY: process context; a `kthread_stop` wake-up ends the sleep
        // at the latest after `ms`.
        unsafe { bindings::msleep_interruptible(ms) };
        core.tick();
    }
    0
}

// SAFETY: `State` is only read after registration; the raw pointers in it
// point into the same box or to static data; `ticker` is used only by
// `drop`.
unsafe impl Send for Ins {}
// SAFETY: as above.
unsafe impl Sync for Ins {}

fn pair_ioctl(state: &State, arg: c_ulong) -> Result<c_long> {
    let mut req = [0u8; PAIR_LEN];
    UserSlice::new(arg, PAIR_LEN)
        .reader()
        .read_slice(&mut req)?;
    let flags = u32::from_ne_bytes([req[0], req[1], req[2], req[3]]);
    if flags & !INS_PAIR_CLOEXEC != 0 {
        return Err(EINVAL);
    }
    let (fds, files) = sockfile::prepare_pair(&state.sock_fops, flags & INS_PAIR_CLOEXEC != 0)?;
    let mut out = [0u8; PAIR_LEN];
    out[..4].copy_from_slice(&flags.to_ne_bytes());
    out[4..8].copy_from_slice(&fds[0].to_ne_bytes());
    out[8..].copy_from_slice(&fds[1].to_ne_bytes());
    if let Err(e) = UserSlice::new(arg, PAIR_LEN).writer().write_slice(&out) {
        sockfile::discard(fds, files);
        return Err(e);
    }
    sockfile::commit(fds, files);
    Ok(0)
}

fn instance_ioctl(state: &State, arg: c_ulong) -> Result<c_long> {
    // SAFETY: plain capability check of the current task.
    if !unsafe { bindings::capable(bindings::CAP_NET_ADMIN as i32) } {
        return Err(EPERM);
    }
    let mut req = [0u8; INSTANCE_LEN];
    UserSlice::new(arg, INSTANCE_LEN)
        .reader()
        .read_slice(&mut req)?;
    let u32_at = |i: usize| u32::from_ne_bytes([req[i], req[i + 1], req[i + 2], req[i + 3]]);
    let flags = u32_at(0);
    if flags & !INS_INSTANCE_CLOEXEC != 0 {
        return Err(EINVAL);
    }
    let layout = instance::Layout::new(u32_at(4), u32_at(8))?;
    let chan = state.core.new_channel(layout, &state.chan_vm_ops)?;
    let (fd, file) = instance::install(chan, &state.chan_fops, flags & INS_INSTANCE_CLOEXEC != 0)?;
    let mut out = req;
    out[12..16].copy_from_slice(&fd.to_ne_bytes());
    out[16..24].copy_from_slice(&(layout.to_driver_offset as u64).to_ne_bytes());
    out[24..32].copy_from_slice(&(layout.len as u64).to_ne_bytes());
    if let Err(e) = UserSlice::new(arg, INSTANCE_LEN).writer().write_slice(&out) {
        ksys::discard_file(fd, file);
        return Err(e);
    }
    // SAFETY: `fd` was reserved for this task and `file` is ours; this
    // hands our reference to the fd table.
    unsafe { bindings::fd_install(fd as u32, file) };
    Ok(0)
}

/// `_IOWR('I', 6, struct ins_xen_offer)` (5 is the socket files' `INS_IOC_PEEK`).
const INS_IOC_XEN_OFFER: c_uint =
    (3 << 30) | ((XEN_OFFER_LEN as c_uint) << 16) | ((b'I' as c_uint) << 8) | 6;
/// `sizeof(struct ins_xen_offer)`.
const XEN_OFFER_LEN: usize = 56;

/// `INS_IOC_XEN_OFFER`: a channel for an instance in another Xen domain
/// (xenchan.rs): pages granted to it, ports for it; the caller publishes
/// the offer in xenstore and holds the returned channel fd while the
/// instance serves.
fn xen_offer_ioctl(state: &State, arg: c_ulong) -> Result<c_long> {
    // SAFETY: plain capability check of the current task.
    if !unsafe { bindings::capable(bindings::CAP_NET_ADMIN as i32) } {
        return Err(EPERM);
    }
    let mut req = [0u8; XEN_OFFER_LEN];
    UserSlice::new(arg, XEN_OFFER_LEN)
        .reader()
        .read_slice(&mut req)?;
    let u32_at = |i: usize| u32::from_ne_bytes([req[i], req[i + 1], req[i + 2], req[i + 3]]);
    let flags = u32_at(0);
    if flags & !INS_INSTANCE_CLOEXEC != 0 || u32_at(52) != 0 {
        return Err(EINVAL);
    }
    let domid = u16::try_from(u32_at(4)).map_err(|_| EINVAL)?;
    let layout = instance::Layout::new(u32_at(8), u32_at(12))?;
    let max_refs = u32_at(16) as usize;
    let refs = u64::from_ne_bytes([
        req[24], req[25], req[26], req[27], req[28], req[29], req[30], req[31],
    ]) as usize;
    if layout.len / kxen::PAGE_SIZE + 1 > max_refs {
        return Err(E2BIG);
    }
    let o = xenchan::offer(
        &state.core,
        domid,
        layout,
        &state.xen_fops,
        flags & INS_INSTANCE_CLOEXEC != 0,
    )?;
    let mut out = req;
    out[20..24].copy_from_slice(&o.fd.to_ne_bytes());
    let words = [
        o.grefs.len() as u32,
        o.port,
        o.live_port,
        layout.to_driver_offset as u32,
        o.region_len as u32,
    ];
    for (i, w) in words.iter().enumerate() {
        out[32 + 4 * i..36 + 4 * i].copy_from_slice(&w.to_ne_bytes());
    }
    let written = (|| -> Result {
        let mut g = KVec::with_capacity(o.grefs.len() * 4, GFP_KERNEL)?;
        for r in o.grefs.iter() {
            g.extend_from_slice(&r.to_ne_bytes(), GFP_KERNEL)?;
        }
        UserSlice::new(refs, g.len()).writer().write_slice(&g)?;
        UserSlice::new(arg, XEN_OFFER_LEN)
            .writer()
            .write_slice(&out)
    })();
    if let Err(e) = written {
        ksys::discard_file(o.fd, o.file);
        return Err(e);
    }
    // SAFETY: `fd` was reserved for this task and `file` is ours; this
    // hands our reference to the fd table.
    unsafe { bindings::fd_install(o.fd as u32, o.file) };
    Ok(0)
}

/// One open file of `/dev/ins`: a shim connection (its replies are keyed
/// by `id`, never reused, so a late reply cannot reach a later file).
struct Conn {
    state: *const State,
    id: u64,
}

/// The `State` and connection id of an open `/dev/ins` file.
///
/// # Safety
///
/// `file` was opened through the misc device and `misc_open_conn` ran on
/// it; not called after its release.
unsafe fn conn_of<'a>(file: *mut bindings::file) -> (&'a State, u64) {
    // SAFETY: the VFS passes a valid file.
    let private = unsafe { (*file).private_data };
    // SAFETY: misc_open_conn set `private_data` to a live `Conn` until
    // release (caller's contract).
    let conn = unsafe { &*(private as *const Conn) };
    // SAFETY: `state` points to the `State` that lives until module exit
    // (the open file holds a module reference).
    (unsafe { &*conn.state }, conn.id)
}

/// `open` of `/dev/ins` (after misc_open() set `private_data` to our
/// miscdevice, the first field of the `State`): a new connection id.
///
/// # Safety
///
/// Called by the VFS through misc_open() for a new file of our device.
unsafe extern "C" fn misc_open_conn(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> i32 {
    // SAFETY: the VFS passes a valid file.
    let private = unsafe { (*file).private_data };
    let state = private as *const State;
    // SAFETY: misc_open() stored our miscdevice, the first field of the
    // `State` that lives until module exit.
    let id = match unsafe { &*state }.core.new_conn() {
        Ok(id) => id,
        Err(e) => return e.to_errno(),
    };
    match KBox::new(Conn { state, id }, GFP_KERNEL) {
        Ok(b) => {
            // SAFETY: as above; the box is taken back in misc_release.
            unsafe { (*file).private_data = KBox::into_raw(b).cast() };
            0
        }
        Err(_) => {
            // SAFETY: as above.
            control::conn_closed(&unsafe { &*state }.core, id);
            ENOMEM.to_errno()
        }
    }
}

/// `read` of `/dev/ins`: the instance table as text.
///
/// # Safety
///
/// Called by the VFS with a file opened through the misc device, a user
/// buffer of `len` bytes and the file position.
unsafe extern "C" fn misc_read(
    file: *mut bindings::file,
    buf: *mut kernel::ffi::c_char,
    len: usize,
    pos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: a file of our device, not released (VFS contract).
    let (state, _) = unsafe { conn_of(file) };
    let mut text = KVec::new();
    if let Err(e) = state.core.status(&mut text) {
        return e.to_errno() as isize;
    }
    // SAFETY: `buf`/`len` are the caller's user buffer, `pos` the file
    // position the VFS passed; `text` is readable for its length.
    unsafe {
        bindings::simple_read_from_buffer(buf.cast(), len, pos, text.as_ptr().cast(), text.len())
    }
}

/// Most bytes one `write` of settings may carry.
const MAX_SETTINGS: usize = 4096;

/// `write` of `/dev/ins`: settings (see the module docs).
///
/// # Safety
///
/// Called by the VFS with a file opened through the misc device and a user
/// buffer of `len` bytes.
unsafe extern "C" fn misc_write(
    file: *mut bindings::file,
    buf: *const kernel::ffi::c_char,
    len: usize,
    _pos: *mut bindings::loff_t,
) -> isize {
    // SAFETY: a file of our device, not released (VFS contract).
    let (state, _) = unsafe { conn_of(file) };
    // The opener's credentials, not the writer's (a file opened by anyone
    // may be handed to a privileged program as its output).
    // (Taking a static's address is safe.)
    let init_ns = core::ptr::addr_of_mut!(bindings::init_user_ns);
    // SAFETY: `file` is live; `init_ns` is the initial user namespace.
    let allowed =
        unsafe { bindings::file_ns_capable(file, init_ns, bindings::CAP_NET_ADMIN as i32) };
    if !allowed {
        return EPERM.to_errno() as isize;
    }
    if len > MAX_SETTINGS {
        return EINVAL.to_errno() as isize;
    }
    let mut text = KVec::new();
    let r = UserSlice::new(buf as usize, len)
        .reader()
        .read_all(&mut text, GFP_KERNEL)
        .and_then(|()| state.core.configure(&text));
    match r {
        Ok(()) => len as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// `release` of `/dev/ins`: its shim connection is gone.
///
/// # Safety
///
/// Called by the VFS once per open file of the misc device, last.
unsafe extern "C" fn misc_release(_inode: *mut bindings::inode, file: *mut bindings::file) -> i32 {
    // SAFETY: the VFS passes a valid file.
    let private = unsafe { (*file).private_data };
    // SAFETY: last use of the file: `private_data` is the `Conn` box from
    // misc_open_conn, taken back once.
    let conn = unsafe { KBox::from_raw(private as *mut Conn) };
    // SAFETY: the `State` lives until module exit (this file holds a
    // module reference until after release).
    control::conn_closed(&unsafe { &*conn.state }.core, conn.id);
    0
}

/// `_IOR('I', 4, __u32)`.
const INS_IOC_VERSION: c_uint = (2 << 30) | (4 << 16) | ((b'I' as c_uint) << 8) | 4;

/// `INS_IOC_VERSION`: the protocol version, for the shim's detection.
fn version_ioctl(arg: c_ulong) -> Result<c_long> {
    let v = u32::from(ins_protocol::hello::VERSION).to_ne_bytes();
    kernel::uaccess::UserSlice::new(arg, v.len())
        .writer()
        .write_slice(&v)?;
    Ok(0)
}

/// `unlocked_ioctl` of `/dev/ins`.
///
/// # Safety
///
/// Called by the VFS with a file opened through the misc device.
unsafe extern "C" fn misc_ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
    // SAFETY: a file of our device, not released (VFS contract).
    let (state, conn) = unsafe { conn_of(file) };
    let r = match cmd {
        INS_IOC_PAIR => pair_ioctl(state, arg),
        INS_IOC_INSTANCE => instance_ioctl(state, arg),
        INS_IOC_XEN_OFFER => xen_offer_ioctl(state, arg),
        INS_IOC_VERSION => version_ioctl(arg),
        control::INS_IOC_CONTROL => {
            control::control_ioctl(&state.core, &state.ctl_sock_fops, conn, arg)
        }
        _ => Err(ENOTTY),
    };
    match r {
        Ok(v) => v,
        Err(e) => e.to_errno() as c_long,
    }
}

impl kernel::Module for Ins {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let owner = module.as_ptr();
        let mut state = KBox::new(
            State {
                misc: ksys::MiscDevice {
                    minor: ksys::MISC_DYNAMIC_MINOR,
                    name: c"ins".as_ptr().cast(),
                    fops: core::ptr::null(),
                    // SAFETY: all-zero is a valid unlinked list head; misc
                    // registration initialises it.
                    list: unsafe { core::mem::zeroed() },
                    parent: core::ptr::null_mut(),
                    this_device: core::ptr::null_mut(),
                    groups: core::ptr::null_mut(),
                    nodename: core::ptr::null(),
                    mode: 0o666,
                },
                misc_fops: bindings::file_operations {
                    owner,
                    unlocked_ioctl: Some(misc_ioctl),
                    open: Some(misc_open_conn),
                    read: Some(misc_read),
                    write: Some(misc_write),
                    release: Some(misc_release),
                    llseek: Some(bindings::noop_llseek),
                    // SAFETY: all-zero is a valid `file_operations`.
                    ..unsafe { core::mem::zeroed() }
                },
                sock_fops: sockfile::sock_fops(owner),
                chan_fops: instance::chan_fops(owner),
                xen_fops: xenchan::xen_fops(owner),
                ctl_sock_fops: control::sock_fops(owner),
                // SAFETY: all-zero is a valid `vm_operations_struct`.
                chan_vm_ops: unsafe { core::mem::zeroed() },
                core: instance::Core::new()?,
            },
            GFP_KERNEL,
        )?;
        state.misc.fops = &state.misc_fops;
        // SAFETY: `state.misc` is fully initialised and stays at this
        // address (boxed, never moved out) until misc_deregister in drop.
        let r = unsafe { ksys::misc_register(&mut state.misc) };
        if r != 0 {
            return Err(Error::from_errno(r));
        }
        let data = &*state.core as *const instance::Core as *mut c_void;
        // SAFETY: `ticker_main` takes `data`, the core, which lives until
        // `Ins::drop` has stopped the thread; the name is a C string.
        let ticker = unsafe {
            bindings::kthread_create_on_node(
                Some(ticker_main),
                data,
                -1,
                c"ins-tick".as_ptr().cast(),
            )
        };
        // An `ERR_PTR` (the last page of the address space) carries the
        // errno.
        let err = ticker as isize;
        if ticker.is_null() || (-4095..0).contains(&err) {
            // SAFETY: registered just above; no file can be open yet.
            unsafe { ksys::misc_deregister(&mut state.misc) };
            return Err(if ticker.is_null() {
                ENOMEM
            } else {
                Error::from_errno(err as i32)
            });
        }
        // SAFETY: a kernel thread just created and not started yet.
        unsafe { bindings::wake_up_process(ticker) };
        pr_info!("/dev/ins registered\n");
        Ok(Ins { state, ticker })
    }
}

impl Drop for Ins {
    fn drop(&mut self) {
        // SAFETY: the thread made in init; it runs until told to stop, so
        // its task is still there; this waits until it has returned.
        unsafe { bindings::kthread_stop(self.ticker) };
        // SAFETY: registered in init; no file is open (each holds a module
        // reference), so nothing uses the device after this.
        unsafe { ksys::misc_deregister(&mut self.state.misc) };
        pr_info!("/dev/ins removed\n");
    }
}
