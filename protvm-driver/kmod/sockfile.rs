// SPDX-License-Identifier: GPL-2.0

//! Per-socket files: anonymous-inode files whose `write` goes into an
//! ins-protocol ring and whose `read` comes out of one, with `poll`
//! readiness pushed by the side that changes the ring (never polled), so
//! `read`/`write`/`poll`/`epoll`/`dup`/`fork`/`splice`/`sendfile` work like
//! on a socket.
//!
//! Phase 1 connects two such files to each other ([`new_pair`], the
//! `INS_IOC_PAIR` ioctl): end 0 writes ring `a2b`, which end 1 reads, and
//! the reverse. In phase 2 the far side of each ring is an instance, and the
//! frames are driver-core's `Data`; the file side stays as it is.
//!
//! ```text
//!   end 0 ── write ──▶ [ring a2b] ── read ──▶ end 1
//!   end 0 ◀── read ─── [ring b2a] ◀── write ── end 1
//! ```
//!
//! Invariants and locking:
//! * Each ring has one producer and one consumer, each behind its own
//!   mutex (`Pipe::tx`, `Pipe::rx`): any number of threads or processes
//!   sharing a file (dup, fork) serialise per direction, and the two sides
//!   of a ring never block each other. No lock is held while sleeping.
//! * Frames are copied out of the ring into the private `Rx::buf` before
//!   use; a partly read frame stays there for the next read.
//! * `writer_gone`/`reader_gone` are set once, at release of the end that
//!   wrote/read the pipe; then reads drain and return 0, writes fail EPIPE.
//! * Every state change wakes the pair's wait queue with the poll bits that
//!   may have become true.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, Ordering};

use ins_protocol::region::SharedRegion;
use ins_protocol::ring::{init_ring, Consumer, Producer, RingConfig, RingError};
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

use crate::kregion::KRegion;
use crate::ksys::{self, WaitQueue};

/// Ring data bytes per direction.
pub(crate) const RING_CAPACITY: u32 = 64 * 1024;
/// Largest frame (one write puts at most this much in one frame).
pub(crate) const MAX_FRAME: u32 = 16 * 1024;

/// A shared handle on a ring's region.
struct Region(Arc<KRegion>);

// SAFETY: the Arc keeps the region (and its guarantees) alive as long as
// this handle lives.
unsafe impl SharedRegion for Region {
    fn base(&self) -> core::ptr::NonNull<u8> {
        self.0.base()
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

struct Tx {
    prod: Producer<Region>,
    /// Bytes copied from the writer's buffer before they go into a frame.
    bounce: KVec<u8>,
}

struct Rx {
    cons: Consumer<Region>,
    /// The frame being read, copied out of the ring.
    buf: KVec<u8>,
    start: usize,
    end: usize,
}

#[pin_data]
struct Pipe {
    #[pin]
    tx: Mutex<Tx>,
    #[pin]
    rx: Mutex<Rx>,
    writer_gone: AtomicBool,
    reader_gone: AtomicBool,
}

/// Two connected ends.
#[pin_data]
pub(crate) struct Pair {
    #[pin]
    wq: WaitQueue,
    #[pin]
    a2b: Pipe,
    #[pin]
    b2a: Pipe,
}

/// What a file's `private_data` points to.
pub(crate) struct End {
    pair: Arc<Pair>,
    side: usize,
}

fn pipe_parts(cfg: RingConfig) -> Result<(Tx, Rx)> {
    let region = Arc::new(KRegion::new(cfg.region_len())?, GFP_KERNEL)?;
    init_ring(&*region, 0, cfg).map_err(|_| EINVAL)?;
    let prod = Producer::new(Region(region.clone()), 0, cfg).map_err(|_| EINVAL)?;
    let cons = Consumer::new(Region(region), 0, cfg).map_err(|_| EINVAL)?;
    let bounce = KVec::from_elem(0u8, MAX_FRAME as usize, GFP_KERNEL)?;
    let buf = KVec::from_elem(0u8, MAX_FRAME as usize, GFP_KERNEL)?;
    Ok((
        Tx { prod, bounce },
        Rx {
            cons,
            buf,
            start: 0,
            end: 0,
        },
    ))
}

/// Two connected ends with a fresh ring each way.
pub(crate) fn new_pair() -> Result<(KBox<End>, KBox<End>)> {
    let cfg = RingConfig::new(RING_CAPACITY, MAX_FRAME).map_err(|_| EINVAL)?;
    let (tx_ab, rx_ab) = pipe_parts(cfg)?;
    let (tx_ba, rx_ba) = pipe_parts(cfg)?;
    let pair = Arc::pin_init(
        pin_init!(Pair {
            wq <- WaitQueue::new(),
            a2b <- pin_init!(Pipe {
                tx <- kernel::new_mutex!(tx_ab),
                rx <- kernel::new_mutex!(rx_ab),
                writer_gone: AtomicBool::new(false),
                reader_gone: AtomicBool::new(false),
            }),
            b2a <- pin_init!(Pipe {
                tx <- kernel::new_mutex!(tx_ba),
                rx <- kernel::new_mutex!(rx_ba),
                writer_gone: AtomicBool::new(false),
                reader_gone: AtomicBool::new(false),
            }),
        }),
        GFP_KERNEL,
    )?;
    let a = KBox::new(
        End {
            pair: pair.clone(),
            side: 0,
        },
        GFP_KERNEL,
    )?;
    let b = KBox::new(End { pair, side: 1 }, GFP_KERNEL)?;
    Ok((a, b))
}

impl End {
    /// The pipe this end writes.
    fn out(&self) -> &Pipe {
        if self.side == 0 {
            &self.pair.a2b
        } else {
            &self.pair.b2a
        }
    }

    /// The pipe this end reads.
    fn inp(&self) -> &Pipe {
        if self.side == 0 {
            &self.pair.b2a
        } else {
            &self.pair.a2b
        }
    }

    fn readable(&self) -> bool {
        let p = self.inp();
        let mut rx = p.rx.lock();
        rx.start < rx.end
            || !matches!(rx.cons.peek_len(), Ok(None))
            || p.writer_gone.load(Ordering::Acquire)
    }

    fn writable(&self) -> bool {
        let p = self.out();
        if p.reader_gone.load(Ordering::Acquire) {
            return true;
        }
        let mut tx = p.tx.lock();
        !matches!(tx.prod.free_frame_space(), Ok(0))
    }

    /// `read()`: copies frames (or the rest of one) into `iter`.
    ///
    /// # Safety
    ///
    /// `iter` is the valid destination iterator the VFS passed.
    unsafe fn read(&self, iter: *mut bindings::iov_iter, nonblock: bool) -> Result<usize> {
        // SAFETY: `iter` is valid (caller's contract).
        if unsafe { ksys::iov_iter_count(iter) } == 0 {
            return Ok(0);
        }
        let p = self.inp();
        loop {
            let mut done = 0usize;
            let mut fault = false;
            {
                let mut guard = p.rx.lock();
                let Rx {
                    cons,
                    buf,
                    start,
                    end,
                } = &mut *guard;
                loop {
                    if *start == *end {
                        match cons.pop(buf) {
                            Ok(Some(n)) => {
                                *start = 0;
                                *end = n;
                            }
                            Ok(None) => break,
                            Err(_) => return if done > 0 { Ok(done) } else { Err(EIO) },
                        }
                    }
                    let chunk = buf.get(*start..*end).ok_or(EIO)?;
                    // SAFETY: `chunk` is readable for its length; `iter` is
                    // valid (caller's contract).
                    let c = unsafe {
                        bindings::_copy_to_iter(chunk.as_ptr().cast(), chunk.len(), iter)
                    };
                    *start += c;
                    done += c;
                    if c < chunk.len() {
                        fault = c == 0 && done == 0;
                        break;
                    }
                    // SAFETY: as above.
                    if unsafe { ksys::iov_iter_count(iter) } == 0 {
                        break;
                    }
                }
                if done > 0 {
                    // Errors are sticky in the consumer; the next read
                    // reports them.
                    let _ = cons.release();
                }
            }
            if done > 0 {
                self.pair.wq.wake(ksys::EPOLLOUT | ksys::EPOLLWRNORM);
                return Ok(done);
            }
            if fault {
                return Err(EFAULT);
            }
            if p.writer_gone.load(Ordering::Acquire) {
                // Drained and the writer is gone: end of file. (Re-check
                // after the flag: the writer pushes before it leaves.)
                if !self.readable_data() {
                    return Ok(0);
                }
                continue;
            }
            if nonblock {
                return Err(EAGAIN);
            }
            self.pair.wq.wait_until(|| self.readable())?;
        }
    }

    fn readable_data(&self) -> bool {
        let mut rx = self.inp().rx.lock();
        rx.start < rx.end || !matches!(rx.cons.peek_len(), Ok(None))
    }

    /// `write()`: copies `iter` into frames of at most [`MAX_FRAME`] bytes.
    /// Blocking writes put everything in; non-blocking ones what fits.
    ///
    /// # Safety
    ///
    /// `iter` is the valid source iterator the VFS passed.
    unsafe fn write(&self, iter: *mut bindings::iov_iter, nonblock: bool) -> Result<usize> {
        let p = self.out();
        let mut done = 0usize;
        loop {
            // SAFETY: `iter` is valid (caller's contract).
            if unsafe { ksys::iov_iter_count(iter) } == 0 {
                return Ok(done);
            }
            if p.reader_gone.load(Ordering::Acquire) {
                return if done > 0 { Ok(done) } else { Err(EPIPE) };
            }
            let mut pushed = false;
            {
                let mut guard = p.tx.lock();
                let Tx { prod, bounce } = &mut *guard;
                loop {
                    // SAFETY: as above.
                    let remaining = unsafe { ksys::iov_iter_count(iter) };
                    if remaining == 0 {
                        break;
                    }
                    let room = prod.free_frame_space().map_err(|_| EIO)?;
                    let n = remaining.min(room).min(bounce.len());
                    if n == 0 {
                        break;
                    }
                    // SAFETY: `bounce` is writable for `n <= len` bytes;
                    // `iter` is valid.
                    let c =
                        unsafe { bindings::_copy_from_iter(bounce.as_mut_ptr().cast(), n, iter) };
                    if c == 0 {
                        if done == 0 {
                            return Err(EFAULT);
                        }
                        break;
                    }
                    let frame = bounce.get(..c).ok_or(EIO)?;
                    match prod.try_push(frame) {
                        Ok(()) => {}
                        // `room` was measured under the lock and only grows.
                        Err(RingError::Full) => return Err(EIO),
                        Err(_) => return Err(EIO),
                    }
                    done += c;
                    pushed = true;
                }
                if pushed {
                    prod.flush().map_err(|_| EIO)?;
                }
            }
            if pushed {
                self.pair.wq.wake(ksys::EPOLLIN | ksys::EPOLLRDNORM);
            }
            // SAFETY: as above.
            if unsafe { ksys::iov_iter_count(iter) } == 0 {
                return Ok(done);
            }
            if nonblock {
                return if done > 0 { Ok(done) } else { Err(EAGAIN) };
            }
            if let Err(e) = self.pair.wq.wait_until(|| self.writable()) {
                return if done > 0 { Ok(done) } else { Err(e) };
            }
        }
    }

    /// `poll()`: registers on the pair's queue and reports readiness.
    fn poll_bits(&self) -> u32 {
        let mut bits = 0;
        if self.readable_data() {
            bits |= ksys::EPOLLIN | ksys::EPOLLRDNORM;
        }
        if self.inp().writer_gone.load(Ordering::Acquire) {
            bits |= ksys::EPOLLIN | ksys::EPOLLRDNORM | ksys::EPOLLRDHUP | ksys::EPOLLHUP;
        }
        if self.out().reader_gone.load(Ordering::Acquire) {
            bits |= ksys::EPOLLOUT | ksys::EPOLLERR;
        } else if self.writable() {
            bits |= ksys::EPOLLOUT | ksys::EPOLLWRNORM;
        }
        bits
    }

    fn release(&self) {
        self.out().writer_gone.store(true, Ordering::Release);
        self.inp().reader_gone.store(true, Ordering::Release);
        self.pair.wq.wake(
            ksys::EPOLLIN | ksys::EPOLLRDNORM | ksys::EPOLLRDHUP | ksys::EPOLLHUP | ksys::EPOLLOUT,
        );
    }
}

/// The `End` behind a socket file.
///
/// # Safety
///
/// `file` is one of our socket files (its `private_data` came from
/// `KBox::into_raw` in [`prepare_pair`] and is released only in `release`).
unsafe fn end_of<'a>(file: *mut bindings::file) -> &'a End {
    // SAFETY: `file` is valid (caller's contract).
    let private = unsafe { (*file).private_data };
    // SAFETY: by the contract `private_data` is a live `End` until release,
    // and the VFS calls no other file operation after release.
    unsafe { &*(private as *const End) }
}

/// `IOCB_NOWAIT` (include/linux/fs.h: `RWF_NOWAIT`, a cast bindgen skips).
const IOCB_NOWAIT: i32 = 0x8;

/// Whether a read or write on `iocb` must not block.
///
/// # Safety
///
/// `iocb` is the valid kiocb the VFS passed.
unsafe fn nonblocking(iocb: *mut bindings::kiocb) -> bool {
    // SAFETY: `iocb` is valid during the call (caller's contract).
    let file = unsafe { (*iocb).ki_filp };
    // SAFETY: so is its file.
    let f_flags = unsafe { (*file).f_flags };
    // SAFETY: as above.
    let ki_flags = unsafe { (*iocb).ki_flags };
    f_flags & bindings::O_NONBLOCK != 0 || ki_flags & IOCB_NOWAIT != 0
}

fn to_ssize(r: Result<usize>) -> isize {
    match r {
        Ok(n) => n as isize,
        Err(e) => e.to_errno() as isize,
    }
}

/// `read_iter` of socket files.
///
/// # Safety
///
/// Called by the VFS with a valid kiocb for one of our files and a valid
/// destination iterator.
unsafe extern "C" fn sock_read_iter(
    iocb: *mut bindings::kiocb,
    to: *mut bindings::iov_iter,
) -> isize {
    // SAFETY: the VFS passes a valid kiocb.
    let file = unsafe { (*iocb).ki_filp };
    // SAFETY: the kiocb is for one of our files.
    let end = unsafe { end_of(file) };
    // SAFETY: `iocb` is valid.
    let nb = unsafe { nonblocking(iocb) };
    // SAFETY: `to` is the valid destination iterator.
    to_ssize(unsafe { end.read(to, nb) })
}

/// `write_iter` of socket files.
///
/// # Safety
///
/// Called by the VFS with a valid kiocb for one of our files and a valid
/// source iterator.
unsafe extern "C" fn sock_write_iter(
    iocb: *mut bindings::kiocb,
    from: *mut bindings::iov_iter,
) -> isize {
    // SAFETY: the VFS passes a valid kiocb.
    let file = unsafe { (*iocb).ki_filp };
    // SAFETY: the kiocb is for one of our files.
    let end = unsafe { end_of(file) };
    // SAFETY: `iocb` is valid.
    let nb = unsafe { nonblocking(iocb) };
    // SAFETY: `from` is the valid source iterator.
    to_ssize(unsafe { end.write(from, nb) })
}

/// `poll` of socket files.
///
/// # Safety
///
/// Called by the VFS with one of our files and its poll table (or null).
unsafe extern "C" fn sock_poll(
    file: *mut bindings::file,
    pt: *mut bindings::poll_table_struct,
) -> bindings::__poll_t {
    // SAFETY: the VFS passes one of our files.
    let end = unsafe { end_of(file) };
    // SAFETY: the queue lives in the pair, which this file keeps alive
    // until release, where epoll/poll entries are gone (eventpoll_release
    // runs before f_op->release).
    unsafe { ksys::poll_wait(file, end.pair.wq.as_ptr(), pt.cast()) };
    end.poll_bits()
}

/// `release` of socket files.
///
/// # Safety
///
/// Called by the VFS once, when the last reference to one of our files
/// goes; no other operation on it follows.
unsafe extern "C" fn sock_release(_inode: *mut bindings::inode, file: *mut bindings::file) -> i32 {
    // SAFETY: the VFS passes the file being released.
    let private = unsafe { (*file).private_data };
    // SAFETY: last reference to one of our files: `private_data` is the
    // `End` from `KBox::into_raw`, never used again.
    let end = unsafe { KBox::from_raw(private as *mut End) };
    end.release();
    0
}

/// The socket files' operations (module lifetime).
pub(crate) fn sock_fops(owner: *mut bindings::module) -> bindings::file_operations {
    bindings::file_operations {
        owner,
        read_iter: Some(sock_read_iter),
        write_iter: Some(sock_write_iter),
        poll: Some(sock_poll),
        release: Some(sock_release),
        llseek: Some(bindings::noop_llseek),
        // The generic helpers over read_iter/write_iter: splice and
        // sendfile from and to the socket.
        splice_read: Some(bindings::copy_splice_read),
        splice_write: Some(bindings::iter_file_splice_write),
        // SAFETY: all-zero is a valid `file_operations` (no operation).
        ..unsafe { core::mem::zeroed() }
    }
}

/// Makes a new pair's two files and reserves an fd for each (`O_CLOEXEC`
/// if asked), without installing them: the caller [`commit`]s once nothing
/// else can fail, or [`discard`]s, so a failure leaves nothing behind.
pub(crate) fn prepare_pair(
    fops: *const bindings::file_operations,
    cloexec: bool,
) -> Result<([i32; 2], [*mut bindings::file; 2])> {
    let (a, b) = new_pair()?;
    let flags = if cloexec { bindings::O_CLOEXEC } else { 0 };
    let mut fds = [-1i32; 2];
    let mut files: [*mut bindings::file; 2] = [core::ptr::null_mut(); 2];
    let ends = [a, b];
    let mut err = None;
    for (i, e) in ends.into_iter().enumerate() {
        // SAFETY: plain fd reservation for the current task.
        let fd = unsafe { bindings::get_unused_fd_flags(flags) };
        if fd < 0 {
            err = Some(Error::from_errno(fd));
            break;
        }
        let raw = KBox::into_raw(e);
        // SAFETY: `fops` is our socket fops (module lifetime, owner set);
        // `raw` becomes the file's private data, freed by sock_release.
        let f = unsafe {
            ksys::anon_inode_getfile(
                c"[ins-socket]".as_ptr().cast(),
                fops,
                raw.cast::<c_void>(),
                bindings::O_RDWR as i32,
            )
        };
        // NULL or an ERR_PTR (the top 4095 addresses).
        let errno = f as isize;
        if f.is_null() || (-4095..0).contains(&errno) {
            // SAFETY: the file was not made: we still own `raw` and `fd`.
            drop(unsafe { KBox::from_raw(raw) });
            // SAFETY: `fd` was reserved above and not installed.
            unsafe { bindings::put_unused_fd(fd as u32) };
            err = Some(if f.is_null() {
                ENOMEM
            } else {
                Error::from_errno(errno as i32)
            });
            break;
        }
        // SAFETY: `f` is a valid new file of ours.
        let inode = unsafe { (*f).f_inode };
        // SAFETY: as above; make it a stream (no file position: read and
        // write ignore offsets, like sockets).
        unsafe { bindings::stream_open(inode, f) };
        fds[i] = fd;
        files[i] = f;
    }
    if let Some(e) = err {
        discard(fds, files);
        return Err(e);
    }
    Ok((fds, files))
}

/// Drops files and fds that were made but not installed.
pub(crate) fn discard(fds: [i32; 2], files: [*mut bindings::file; 2]) {
    for f in files {
        if !f.is_null() {
            // SAFETY: a file we made and did not install: this drops the
            // only reference (its release frees the End).
            unsafe { bindings::fput(f) };
        }
    }
    for fd in fds {
        if fd >= 0 {
            // SAFETY: reserved by us and not installed.
            unsafe { bindings::put_unused_fd(fd as u32) };
        }
    }
}

/// Installs files made by [`prepare_pair`] at their fds.
pub(crate) fn commit(fds: [i32; 2], files: [*mut bindings::file; 2]) {
    for (fd, f) in fds.into_iter().zip(files) {
        // SAFETY: `fd` was reserved for this task and `f` is ours; this
        // hands our reference to the fd table.
        unsafe { bindings::fd_install(fd as u32, f) };
    }
}
