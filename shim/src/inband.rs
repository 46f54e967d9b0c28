//! Socket options set *in band* on connected INS streams.
//!
//! `setsockopt(TCP_CORK)` twice per response made every nginx request wait
//! for two round trips through the driver and the instance. The program's
//! writes go straight into the kernel socket pair, so the shim cannot know
//! at which byte an option takes effect; the kernel's own ordering of the
//! pair tells the driver instead:
//!
//! ```text
//!  setsockopt(fd, IPPROTO_TCP, TCP_CORK, 1) on a connected INS stream
//!   1. validated here with Linux's errnos; the value cached for `fd`
//!   2. record  Control{SockOpt, seq, [level, name, inode]} ──▶ shim.sock, no reply
//!              (not for booleans: their marker byte carries option and value)
//!   3. marker  sendmsg(fd, [marker byte], SCM_RIGHTS(marker file), MSG_DONTWAIT)
//!              ──▶ the pair, after every byte the program wrote before
//!  driver: a read of the pair that brought an fd ends with the marker (an
//!          skb with SCM_RIGHTS ends a read, and one byte cannot be split):
//!          the bytes before it go to the ring, then the record as a
//!          `SockOpt` frame, then the bytes after it
//!  pair full (EAGAIN) or shut (EPIPE): the synchronous `SetOpt`, which
//!          cancels the posted record
//! ```
//!
//! The driver matches a marker to its record by the socket, the writer's
//! pid (`SCM_CREDENTIALS` on its end of the pair, `SO_PEERCRED` on the
//! control connection) and the marker's byte (`seq & 0x7f`), so threads of
//! one process may race and several processes may share a socket. The byte
//! layout is `ins_protocol::control::marker`'s.
//!
//! Before `connect`/`listen` the same options are answered at once too and
//! wait in the slot; they travel with that request ([`take_pending`]), so
//! the driver sets them on the instance before it connects or listens
//! (listeners pass them on to accepted connections, as Linux does).
//!
//! Which options: those that cannot fail on the instance once validated
//! here and whose value `getsockopt` reads back as a function of what was
//! set — `SO_KEEPALIVE`, `TCP_NODELAY`, `TCP_CORK`, `TCP_KEEPIDLE`,
//! `TCP_KEEPINTVL`, `TCP_KEEPCNT`, `TCP_USER_TIMEOUT`. `getsockopt` of
//! these is answered from the cache when this fd set them (Linux's
//! read-back: booleans as 0/1, the rest as set); everything else, and a
//! value this fd never set, asks the instance.
//!
//! The cache is per fd: one [`Slot`] in a two-level table allocated in
//! chunks on first use (never freed), atomics only (no lock a `fork` could
//! leave held). `dup*`/`F_DUPFD` copy a slot and mark both copies shared,
//! `fork` makes every slot stale (a generation bumped in the child): a
//! shared or stale slot answers no `getsockopt`, since another fd or
//! process may have changed the socket since.

use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use ins_protocol::control::{Op, marker};

use crate::ctl::{self, Request};
use crate::errno::Errno;
use crate::sys;
use crate::table::{Entry, FD_LIMIT, TABLE};

const CHUNK: usize = 1024;
const CHUNKS: usize = FD_LIMIT / CHUNK;

/// Option values cached for one fd.
struct Slot {
    /// The socket's inode (0: not looked up yet).
    inode: AtomicU64,
    /// [`GEN`] when the slot was last written.
    gen_: AtomicU32,
    /// Booleans: per option a known bit and a value bit; [`SHARED`].
    bools: AtomicU32,
    /// Integers: value + 1 (0: unknown).
    ints: [AtomicU32; 4],
    /// Options set before `connect`/`listen` and not sent yet: bit `i` for
    /// [`ALL`]`[i]`; they travel with that request.
    pending: AtomicU32,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            inode: AtomicU64::new(0),
            gen_: AtomicU32::new(0),
            bools: AtomicU32::new(0),
            ints: [const { AtomicU32::new(0) }; 4],
            pending: AtomicU32::new(0),
        }
    }

    fn clear(&self) {
        self.inode.store(0, Ordering::Relaxed);
        self.bools.store(0, Ordering::Relaxed);
        for i in &self.ints {
            i.store(0, Ordering::Relaxed);
        }
        self.pending.store(0, Ordering::Relaxed);
    }
}

/// Another fd or process may change the socket behind this slot.
const SHARED: u32 = 1 << 31;

static DIR: [AtomicPtr<Slot>; CHUNKS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; CHUNKS];
/// Bumped in the child after every `fork`.
static GEN: AtomicU32 = AtomicU32::new(0);
/// The marker file of this process (an eventfd), -1 before the first.
static MARKER: AtomicI32 = AtomicI32::new(-1);

/// The slot of `fd`; allocates its chunk if `make`.
fn slot(fd: i32, make: bool) -> Option<&'static Slot> {
    let i = usize::try_from(fd).ok().filter(|&i| i < FD_LIMIT)?;
    let dir = &DIR[i / CHUNK];
    let mut p = dir.load(Ordering::Acquire);
    if p.is_null() {
        if !make {
            return None;
        }
        let chunk: Box<[Slot]> = (0..CHUNK).map(|_| Slot::new()).collect();
        let fresh = Box::leak(chunk).as_mut_ptr();
        // AcqRel: publish the initialised chunk; on a lost race use the
        // winner's (ours leaks: at most one chunk per race, bounded).
        p = match dir.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => fresh,
            Err(winner) => winner,
        };
    }
    let at = p.wrapping_add(i % CHUNK);
    // SAFETY: p points at a leaked, never freed chunk of CHUNK slots (built
    // above, published with Release) and i % CHUNK is in bounds, so `at`
    // is a valid slot for 'static; Slot is all atomics, so shared
    // references are sound across threads.
    #[allow(unsafe_code)]
    let s = unsafe { &*at };
    Some(s)
}

extern "C" fn after_fork_in_child() {
    GEN.fetch_add(1, Ordering::Relaxed);
}

/// Registers the fork handler (called once from the constructor).
pub fn init() {
    sys::at_fork_child(after_fork_in_child);
}

/// A new socket, or a number closed: nothing cached.
pub fn forget(fd: i32) {
    if let Some(s) = slot(fd, false) {
        s.clear();
    }
}

/// `dup*(old) == new`: `new` gets a copy of `old`'s cache; both are shared
/// from now on.
pub fn on_dup(old: i32, new: i32) {
    let Some(o) = slot(old, false) else {
        forget(new);
        return;
    };
    let Some(n) = slot(new, true) else { return };
    o.bools.fetch_or(SHARED, Ordering::Relaxed);
    n.inode
        .store(o.inode.load(Ordering::Relaxed), Ordering::Relaxed);
    n.gen_
        .store(o.gen_.load(Ordering::Relaxed), Ordering::Relaxed);
    n.bools
        .store(o.bools.load(Ordering::Relaxed) | SHARED, Ordering::Relaxed);
    for (a, b) in n.ints.iter().zip(&o.ints) {
        a.store(b.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    n.pending
        .store(o.pending.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// An option carried in band.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Opt {
    /// Boolean option number `n` (bits `2n`, `2n + 1` of `bools`).
    Bool(u32),
    /// Integer option in `ints[idx]`, valid in `min..=max` (else `EINVAL`).
    Int { idx: usize, min: i32, max: i32 },
}

/// `MAX_TCP_KEEPIDLE`, `MAX_TCP_KEEPINTVL` (Linux `include/net/tcp.h`).
const MAX_TCP_KEEP_SECS: i32 = 32767;
/// `MAX_TCP_KEEPCNT`.
const MAX_TCP_KEEPCNT: i32 = 127;

fn classify(level: i32, name: i32) -> Option<Opt> {
    Some(match (level, name) {
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE) => Opt::Bool(0),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY) => Opt::Bool(1),
        (libc::IPPROTO_TCP, libc::TCP_CORK) => Opt::Bool(2),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE) => Opt::Int {
            idx: 0,
            min: 1,
            max: MAX_TCP_KEEP_SECS,
        },
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL) => Opt::Int {
            idx: 1,
            min: 1,
            max: MAX_TCP_KEEP_SECS,
        },
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT) => Opt::Int {
            idx: 2,
            min: 1,
            max: MAX_TCP_KEEPCNT,
        },
        (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT) => Opt::Int {
            idx: 3,
            min: 0,
            max: i32::MAX,
        },
        _ => return None,
    })
}

/// Every option of this module, by index: `Bool(n)` is `n`, `Int { idx }`
/// is `3 + idx`.
const ALL: [(i32, i32); 7] = [
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY),
    (libc::IPPROTO_TCP, libc::TCP_CORK),
    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
    (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
];

fn index(opt: Opt) -> usize {
    match opt {
        Opt::Bool(n) => n as usize,
        Opt::Int { idx, .. } => 3 + idx,
    }
}

/// Bytes of one option carried with `connect`/`listen`: level and name
/// (little-endian `i32`), the value (a native `int`, as `setsockopt`
/// takes it).
pub const CARRIED_LEN: usize = 12;

/// Whether options of `fd` go in band: a connected stream, not a listener.
fn eligible(e: Entry) -> bool {
    e.is_ins() && !e.dgram() && e.connected() && !e.listening()
}

/// Whether options of `fd` wait for its `connect`/`listen`: a stream that
/// is neither connected nor listening.
fn before_connect(e: Entry) -> bool {
    e.is_ins() && !e.dgram() && !e.connected() && !e.listening()
}

/// Checks a value as Linux does: an `int` (`optlen ≥ 4`, else `EINVAL`)
/// in the option's range.
fn validate(opt: Opt, val: &[u8]) -> Result<i32, Errno> {
    let v = val
        .first_chunk::<4>()
        .map(|b| i32::from_ne_bytes(*b))
        .ok_or(Errno::EINVAL)?;
    match opt {
        Opt::Bool(_) => Ok(v),
        Opt::Int { min, max, .. } if (min..=max).contains(&v) => Ok(v),
        Opt::Int { .. } => Err(Errno::EINVAL),
    }
}

fn remember(s: &Slot, opt: Opt, v: i32) {
    s.gen_.store(GEN.load(Ordering::Relaxed), Ordering::Relaxed);
    match opt {
        Opt::Bool(n) => {
            let (known, bit) = (1 << (2 * n), 1 << (2 * n + 1));
            let _ = s
                .bools
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(if v != 0 {
                        b | known | bit
                    } else {
                        (b | known) & !bit
                    })
                });
        }
        Opt::Int { idx, .. } => {
            // v ≥ 0 (checked), so v + 1 fits a u32.
            s.ints[idx].store(v as u32 + 1, Ordering::Relaxed);
        }
    }
}

/// The marker file: this process's eventfd, made on first use and again
/// if the program closed it.
fn marker_fd() -> Result<i32, Errno> {
    let m = MARKER.load(Ordering::Relaxed);
    if m >= 0 && TABLE.get(m) == Entry::MARKER {
        return Ok(m);
    }
    let fd = sys::eventfd()?;
    if !TABLE.fits(fd) {
        sys::close(fd);
        return Err(Errno(libc::EMFILE));
    }
    TABLE.set(fd, Entry::MARKER);
    match MARKER.compare_exchange(m, fd, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Ok(fd),
        Err(now) => {
            // Another thread made one at the same time: use it.
            TABLE.set(fd, Entry::HOST);
            sys::close(fd);
            Ok(now)
        }
    }
}

/// What [`set`] did.
pub enum Set {
    /// Handled: the option travels in band (or failed validation).
    Done(Result<(), Errno>),
    /// Not for the in-band path: ask the driver synchronously.
    Sync,
    /// The record `seq` was posted but its marker could not be written:
    /// ask synchronously, cancelling that record.
    SyncCancel(u32),
}

/// `setsockopt()` in band, if `fd` and the option allow it.
pub fn set(fd: i32, e: Entry, level: i32, name: i32, val: &[u8]) -> Set {
    if before_connect(e)
        && let Some(opt) = classify(level, name)
    {
        // Answered now, sent with the connect or listen that comes.
        let v = match validate(opt, val) {
            Ok(v) => v,
            Err(err) => return Set::Done(Err(err)),
        };
        let Some(s) = slot(fd, true) else {
            return Set::Sync;
        };
        remember(s, opt, v);
        s.pending.fetch_or(1 << index(opt), Ordering::Relaxed);
        return Set::Done(Ok(()));
    }
    if !eligible(e) {
        return Set::Sync;
    }
    let Some(opt) = classify(level, name) else {
        return Set::Sync;
    };
    let v = match validate(opt, val) {
        Ok(v) => v,
        Err(err) => return Set::Done(Err(err)),
    };
    let Some(s) = slot(fd, true) else {
        return Set::Sync;
    };
    let mut inode = s.inode.load(Ordering::Relaxed);
    if inode == 0 {
        match sys::fstat_sock(fd) {
            Ok((true, ino)) if ino != 0 => {
                inode = ino;
                s.inode.store(ino, Ordering::Relaxed);
            }
            _ => return Set::Sync,
        }
    }
    let Ok(mark) = marker_fd() else {
        return Set::Sync;
    };
    // A boolean travels in its marker; anything else as a record first.
    let (byte, posted) = match marker::boolean(level, name, v != 0) {
        Some(b) => (b, None),
        None => {
            let seq = ctl::next_seq();
            let value = v.to_ne_bytes();
            let rec = Request {
                op: Op::SockOpt,
                args: [
                    level,
                    name,
                    inode as u32 as i32,
                    (inode >> 32) as u32 as i32,
                ],
                addr: None,
                value: &value,
            };
            if ctl::post(&rec, seq).is_err() {
                return Set::Sync;
            }
            (marker::record(seq), Some(seq))
        }
    };
    match sys::send_with_fd(
        fd,
        &[byte],
        Some(mark),
        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
    ) {
        Ok(()) => {
            remember(s, opt, v);
            Set::Done(Ok(()))
        }
        Err(_) => match posted {
            Some(seq) => Set::SyncCancel(seq),
            None => Set::Sync,
        },
    }
}

/// The options of `fd` set before its `connect`/`listen` and not sent yet,
/// as that request's value (`CARRIED_LEN` bytes each), now taken.
pub fn take_pending(fd: i32) -> ([u8; CARRIED_LEN * ALL.len()], usize) {
    let mut out = [0u8; CARRIED_LEN * ALL.len()];
    let Some(s) = slot(fd, false) else {
        return (out, 0);
    };
    let bits = s.pending.swap(0, Ordering::Relaxed);
    let b = s.bools.load(Ordering::Relaxed);
    let mut n = 0;
    for (i, &(level, name)) in ALL.iter().enumerate() {
        if bits & (1 << i) == 0 {
            continue;
        }
        let v = if i < 3 {
            i32::from(b & (1 << (2 * i + 1)) != 0)
        } else {
            (s.ints[i - 3].load(Ordering::Relaxed).saturating_sub(1)) as i32
        };
        let e = &mut out[n..n + CARRIED_LEN];
        e[..4].copy_from_slice(&level.to_le_bytes());
        e[4..8].copy_from_slice(&name.to_le_bytes());
        e[8..].copy_from_slice(&v.to_ne_bytes());
        n += CARRIED_LEN;
    }
    (out, n)
}

/// The synchronous path set `level`/`name` to `val` on `fd`: keep the
/// cache true.
pub fn synced(fd: i32, level: i32, name: i32, val: &[u8]) {
    let Some(opt) = classify(level, name) else {
        return;
    };
    let Ok(v) = validate(opt, val) else { return };
    if let Some(s) = slot(fd, true) {
        remember(s, opt, v);
    }
}

/// `getsockopt()` from the cache: `Some((value, bytes to copy))` when this
/// fd set the option in this process and no other fd shares the socket.
/// `avail` is the caller's `*optlen` (Linux: `EINVAL` if negative at
/// `SOL_SOCKET`, clamped as unsigned at `IPPROTO_TCP`).
pub fn get(
    fd: i32,
    e: Entry,
    level: i32,
    name: i32,
    avail: i32,
) -> Option<Result<(i32, usize), Errno>> {
    if !e.is_ins() || e.dgram() {
        return None;
    }
    let opt = classify(level, name)?;
    let s = slot(fd, false)?;
    let b = s.bools.load(Ordering::Relaxed);
    if b & SHARED != 0 || s.gen_.load(Ordering::Relaxed) != GEN.load(Ordering::Relaxed) {
        return None;
    }
    let v = match opt {
        Opt::Bool(n) => {
            if b & (1 << (2 * n)) == 0 {
                return None;
            }
            i32::from(b & (1 << (2 * n + 1)) != 0)
        }
        Opt::Int { idx, .. } => {
            let raw = s.ints[idx].load(Ordering::Relaxed);
            if raw == 0 {
                return None;
            }
            (raw - 1) as i32
        }
    };
    let copy = if level == libc::SOL_SOCKET {
        if avail < 0 {
            return Some(Err(Errno::EINVAL));
        }
        (avail as usize).min(4)
    } else {
        // do_tcp_getsockopt: len = min_t(unsigned int, len, sizeof(int)).
        (avail as u32).min(4) as usize
    };
    Some(Ok((v, copy)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_follows_linux() {
        let one = 1i32.to_ne_bytes();
        let idle = classify(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE).unwrap();
        assert_eq!(validate(idle, &one), Ok(1));
        assert_eq!(validate(idle, &0i32.to_ne_bytes()), Err(Errno::EINVAL));
        assert_eq!(validate(idle, &32768i32.to_ne_bytes()), Err(Errno::EINVAL));
        let cnt = classify(libc::IPPROTO_TCP, libc::TCP_KEEPCNT).unwrap();
        assert_eq!(validate(cnt, &128i32.to_ne_bytes()), Err(Errno::EINVAL));
        let ut = classify(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT).unwrap();
        assert_eq!(validate(ut, &(-1i32).to_ne_bytes()), Err(Errno::EINVAL));
        assert_eq!(validate(ut, &0i32.to_ne_bytes()), Ok(0));
        let cork = classify(libc::IPPROTO_TCP, libc::TCP_CORK).unwrap();
        assert_eq!(validate(cork, &one[..2]), Err(Errno::EINVAL));
        assert_eq!(validate(cork, &[7, 0, 0, 0, 9, 9, 9, 9]), Ok(7));
        assert_eq!(classify(libc::IPPROTO_TCP, libc::TCP_CONGESTION), None);
        assert_eq!(classify(libc::SOL_SOCKET, libc::SO_SNDBUF), None);
    }

    /// The shim's in-band options are those the kernel module takes in
    /// order (ins-protocol's `marker::BOOLS` and `marker::INTS`), with the
    /// same ranges.
    #[test]
    fn same_options_as_the_protocol_lists() {
        for &(level, name) in &marker::BOOLS {
            assert!(matches!(classify(level, name), Some(Opt::Bool(_))));
        }
        for &(level, name, min, max) in &marker::INTS {
            assert!(
                matches!(classify(level, name), Some(Opt::Int { min: a, max: b, .. }) if (a, b) == (min, max)),
                "({level}, {name})"
            );
        }
        assert_eq!(ALL.len(), marker::BOOLS.len() + marker::INTS.len());
    }

    #[test]
    fn cache_reads_back_like_linux_and_dup_shares() {
        let e = Entry(Entry::ins(false, false).0 | Entry::CONNECTED);
        let fd = 4321;
        forget(fd);
        assert!(get(fd, e, libc::IPPROTO_TCP, libc::TCP_CORK, 4).is_none());
        let s = slot(fd, true).unwrap();
        remember(s, Opt::Bool(2), 7);
        remember(
            s,
            Opt::Int {
                idx: 0,
                min: 1,
                max: MAX_TCP_KEEP_SECS,
            },
            60,
        );
        assert_eq!(
            get(fd, e, libc::IPPROTO_TCP, libc::TCP_CORK, 4),
            Some(Ok((1, 4)))
        );
        // Not set: asked synchronously.
        assert!(get(fd, e, libc::IPPROTO_TCP, libc::TCP_NODELAY, 4).is_none());
        assert_eq!(
            get(fd, e, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 2),
            Some(Ok((60, 2)))
        );
        assert_eq!(
            get(fd, e, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, -1),
            Some(Ok((60, 4)))
        );
        remember(s, Opt::Bool(0), 0);
        assert_eq!(
            get(fd, e, libc::SOL_SOCKET, libc::SO_KEEPALIVE, -1),
            Some(Err(Errno::EINVAL))
        );
        assert_eq!(
            get(fd, e, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 8),
            Some(Ok((0, 4)))
        );
        on_dup(fd, fd + 1);
        assert!(get(fd, e, libc::IPPROTO_TCP, libc::TCP_CORK, 4).is_none());
        assert!(get(fd + 1, e, libc::IPPROTO_TCP, libc::TCP_CORK, 4).is_none());
        forget(fd);
        forget(fd + 1);
        // A fork makes every slot stale.
        remember(s, Opt::Bool(2), 1);
        assert!(get(fd, e, libc::IPPROTO_TCP, libc::TCP_CORK, 4).is_some());
        after_fork_in_child();
        assert!(get(fd, e, libc::IPPROTO_TCP, libc::TCP_CORK, 4).is_none());
    }
}
