//! The kernel module's local transport: an instance joins the `ins`
//! module (protvm-driver/kmod) through its misc device instead of a
//! daemon's rendezvous socket.
//!
//! ```text
//!  instance                                         ins.ko
//!    │ open /dev/ins; ioctl INS_IOC_INSTANCE {capacity, max_frame}
//!    │ ◀── channel fd, to_driver_offset, region_len ── region + rings + Hello(Driver)
//!    │ validate the layout (`Header::layout`, this side's limits)
//!    │ mmap(channel fd, region_len, MAP_SHARED)
//!    │ ── Hello(Instance) on ring instance→driver, write(fd, 8 bytes) ──▶
//!    │ ◀── Hello(Driver), first frame on ring driver→instance
//! ```
//!
//! The result is an ordinary local [`Endpoint`]: the region is a shared
//! mapping of the channel file (`MemfdRegion::map_channel_file`), and the
//! channel file is both doorbells, speaking the eventfd protocol
//! (`EventFd::adopt_channel_file`): `write(8 bytes)` rings the module
//! (which reads the ring in that call), `POLLIN` says the module rang us
//! and `read(8 bytes)` consumes it. `POLLHUP` means the module declared the
//! channel dead. [`Endpoint::control`] is one end of a socket pair whose
//! other end a small watcher thread holds and drops when the channel file
//! hangs up, so that reaches the instance exactly as a daemon's socket
//! hang-up does (the Xen transport's link thread does the same).
//!
//! Invariants: the region is mapped exactly `region_len` bytes long, a
//! length this side recomputed from the ring sizes it asked for and
//! checked against its own limits; as with every transport, the ring code
//! treats the module's indices as untrusted too.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;

use ins_protocol::hello::{Hello, Role};
use ins_protocol::ring::{Consumer, Producer};
use rustix::event::{PollFd, PollFlags};
use rustix::fs::{Mode, OFlags};

use crate::config::ChannelConfig;
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::rendezvous::{FD_COUNT, HEADER_MAGIC, HEADER_VERSION, Header, Layout, RawChannel};
use crate::sys::linux::{EventFd, MemfdRegion, poll_until, retry};
use crate::sys::xen::ioctl;

/// The module's misc device.
pub const DEFAULT_DEVICE: &str = "/dev/ins";

/// `INS_IOC_INSTANCE`: `_IOWR('I', 2, struct ins_instance)`, 32 bytes:
/// `{u32 flags; u32 ring_capacity; u32 max_frame; s32 fd; u64
/// to_driver_offset; u64 region_len}` (protvm-driver/kmod/ins_main.rs).
pub const INS_IOC_INSTANCE: libc::c_ulong =
    (3 << 30) | (32 << 16) | ((b'I' as libc::c_ulong) << 8) | 2;
/// `ins_instance.flags`: the channel fd is close-on-exec.
const INS_INSTANCE_CLOEXEC: u32 = 1;

/// Asks the module at `device` for a channel with `cfg`'s ring sizes.
/// Returns the channel fd and the layout, validated against `cfg`'s limits.
fn open_channel(device: &Path, cfg: &ChannelConfig) -> Result<(OwnedFd, Layout), Error> {
    let dev = retry(|| rustix::fs::open(device, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()))
        .map_err(Error::io("open the module's device"))?;
    let mut words = [0u32; 8];
    words[0] = INS_INSTANCE_CLOEXEC;
    words[1] = cfg.ring_capacity;
    words[2] = cfg.max_frame;
    words[3] = u32::MAX;
    ioctl::call(dev.as_fd(), INS_IOC_INSTANCE, &mut words)
        .map_err(Error::io("ioctl INS_IOC_INSTANCE"))?;
    let raw = words[3] as i32;
    if raw < 0 {
        return Err(Error::BadFd("the module returned no channel fd"));
    }
    // SAFETY: the ioctl succeeded, so `raw` is a new descriptor the module
    // installed in our table for us alone.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let u64_at = |i: usize| u64::from(words[i]) | (u64::from(words[i + 1]) << 32);
    let layout = module_layout(cfg, u64_at(4), u64_at(6))?;
    Ok((fd, layout))
}

/// The module's answer (rings of `cfg`'s sizes, the second at
/// `to_driver_offset`, `region_len` bytes) in the rendezvous header's
/// terms (no fds travel here; the count is the header's), validated
/// against `cfg`'s limits as a daemon's would be.
fn module_layout(
    cfg: &ChannelConfig,
    to_driver_offset: u64,
    region_len: u64,
) -> Result<Layout, Error> {
    Header {
        magic: HEADER_MAGIC,
        version: HEADER_VERSION,
        fd_count: FD_COUNT as u16,
        to_instance_capacity: cfg.ring_capacity,
        to_instance_max_frame: cfg.max_frame,
        to_driver_capacity: cfg.ring_capacity,
        to_driver_max_frame: cfg.max_frame,
        to_driver_offset,
        region_len,
    }
    .layout(cfg)
}

/// `INS_IOC_XEN_OFFER`: `_IOWR('I', 6, struct ins_xen_offer)`, 56 bytes:
/// `{u32 flags; u32 domid; u32 ring_capacity; u32 max_frame; u32
/// max_refs; s32 fd; u64 refs; u32 pages; u32 port; u32 live_port; u32
/// to_driver_offset; u32 region_len; u32 reserved}`
/// (protvm-driver/kmod/ins_main.rs); `refs` points to `max_refs` u32s the
/// module fills with one grant reference per page.
pub const INS_IOC_XEN_OFFER: libc::c_ulong =
    (3 << 30) | (56 << 16) | ((b'I' as libc::c_ulong) << 8) | 6;

/// What the module granted for an instance domain (`INS_IOC_XEN_OFFER`).
#[derive(Debug)]
pub struct KmodXenOffer {
    /// The channel file: the channel lives while it is open; it hangs up
    /// when the module declares the channel dead.
    pub fd: OwnedFd,
    /// One grant reference per page of the region, in order.
    pub grefs: Vec<u32>,
    /// The ring's event-channel port (unbound, for the instance).
    pub port: u32,
    /// The liveness port (unbound, for the instance).
    pub live_port: u32,
    /// The ring layout (checked against this side's limits); the status
    /// page follows it.
    pub layout: Layout,
}

/// Driver side with the module: asks the module at `device` to grant a
/// channel with `cfg`'s ring sizes to domain `domid` (xenstore is the
/// caller's: [`crate::sys::xen::rendezvous::offer_kmod`]).
pub fn xen_offer(device: &Path, domid: u16, cfg: &ChannelConfig) -> Result<KmodXenOffer, Error> {
    let want = Layout::from_config(cfg)?;
    let pages = want.len / ins_xen::gnttab::PAGE_SIZE + 1;
    let dev = retry(|| rustix::fs::open(device, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty()))
        .map_err(Error::io("open the module's device"))?;
    let mut refs = vec![0u32; pages];
    let mut words = [0u32; 14];
    words[0] = INS_INSTANCE_CLOEXEC;
    words[1] = domid.into();
    words[2] = cfg.ring_capacity;
    words[3] = cfg.max_frame;
    words[4] = u32::try_from(pages).map_err(|_| Error::Config("too many pages"))?;
    words[5] = u32::MAX;
    let ptr = refs.as_mut_ptr() as u64;
    words[6] = ptr as u32;
    words[7] = (ptr >> 32) as u32;
    ioctl::call(dev.as_fd(), INS_IOC_XEN_OFFER, &mut words)
        .map_err(Error::io("ioctl INS_IOC_XEN_OFFER"))?;
    let raw = words[5] as i32;
    if raw < 0 {
        return Err(Error::BadFd("the module returned no channel fd"));
    }
    // SAFETY: the ioctl succeeded, so `raw` is a new descriptor the module
    // installed in our table for us alone.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let layout = module_layout(cfg, words[11].into(), want.len as u64)?;
    if words[8] as usize != pages || words[12] as usize != (pages * ins_xen::gnttab::PAGE_SIZE) {
        return Err(Error::BadHeader(
            "the module's region disagrees with the layout",
        ));
    }
    Ok(KmodXenOffer {
        fd,
        grefs: refs,
        port: words[9],
        live_port: words[10],
        layout,
    })
}

/// Instance side: joins the module at `device` (usually
/// [`DEFAULT_DEVICE`]) with `cfg`'s ring sizes, limits and timeouts, and
/// exchanges hellos.
pub fn connect_kmod(device: &Path, hello: Hello, cfg: &ChannelConfig) -> Result<Endpoint, Error> {
    let (fd, layout) = open_channel(device, cfg)?;
    let dup = || fd.try_clone().map_err(Error::io("dup the channel fd"));
    let region = Arc::new(
        MemfdRegion::map_channel_file(dup()?, layout.len)
            .map_err(Error::io("mmap the channel region"))?,
    );
    let tx = Producer::new(region.clone(), layout.to_driver_offset, layout.to_driver)?;
    let rx = Consumer::new(region.clone(), 0, layout.to_instance)?;
    let bell = |fd| EventFd::adopt_channel_file(fd).map_err(Error::io("fcntl F_SETFL"));
    let tx_bell = bell(dup()?)?;
    let watch = dup()?;
    let rx_bell = bell(fd)?;
    let (ep_end, link_end) = UnixStream::pair().map_err(Error::io("socketpair"))?;
    std::thread::Builder::new()
        .name("ins-kmod-link".into())
        .spawn(move || watch_hangup(watch, link_end))
        .map_err(Error::io("spawn the channel watcher"))?;
    RawChannel {
        role: Role::Instance,
        tx,
        rx,
        tx_bell,
        rx_bell,
        control: ep_end,
        layout,
        region,
        spin: cfg.spin,
    }
    .handshake(hello, cfg.handshake_timeout)
}

/// Waits until the channel file hangs up (the module declared the channel
/// dead), then drops `link`, which the endpoint sees as its peer's
/// hang-up; or until the endpoint is dropped (`link` hangs up), so the
/// watcher's copy of the fd does not outlive it.
fn watch_hangup(chan: OwnedFd, link: UnixStream) {
    let gone = PollFlags::HUP | PollFlags::ERR | PollFlags::NVAL;
    loop {
        let mut fds = [
            PollFd::new(&chan, PollFlags::empty()),
            PollFd::new(&link, PollFlags::RDHUP),
        ];
        match poll_until(&mut fds, None) {
            Ok(_) if fds[0].revents().intersects(gone) => break,
            Ok(_) if fds[1].revents().intersects(gone | PollFlags::RDHUP) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("watching the module's channel: {e}");
                break;
            }
        }
    }
    drop(chan);
    drop(link);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without the module there is no channel: a clear error, no fd left.
    #[test]
    fn no_module_no_channel() {
        let cfg = ChannelConfig::default();
        let hello = Hello::new(Role::Instance);
        let e = connect_kmod(Path::new("/nonexistent/ins"), hello, &cfg).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Io {
                    op: "open the module's device",
                    ..
                }
            ),
            "{e}"
        );
        // A device that is not the module refuses the ioctl (ENOTTY).
        let e = connect_kmod(Path::new("/dev/null"), hello, &cfg).unwrap_err();
        match e {
            Error::Io { op, source } => {
                assert_eq!(op, "ioctl INS_IOC_INSTANCE");
                assert_eq!(source.raw_os_error(), Some(libc::ENOTTY));
            }
            other => panic!("unexpected {other}"),
        }
    }

    /// The Xen offer needs the module too: a device that is not the
    /// module refuses it (ENOTTY), no fd is left.
    #[test]
    fn xen_offer_needs_the_module() {
        let cfg = ChannelConfig::default();
        let e = xen_offer(Path::new("/nonexistent/ins"), 1, &cfg).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Io {
                    op: "open the module's device",
                    ..
                }
            ),
            "{e}"
        );
        match xen_offer(Path::new("/dev/null"), 1, &cfg).unwrap_err() {
            Error::Io { op, source } => {
                assert_eq!(op, "ioctl INS_IOC_XEN_OFFER");
                assert_eq!(source.raw_os_error(), Some(libc::ENOTTY));
            }
            other => panic!("unexpected {other}"),
        }
    }
}
