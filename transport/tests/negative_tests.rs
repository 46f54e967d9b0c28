//! Hostile or broken peers on either side of the rendezvous must produce
//! clear errors, never a hang or a mapping that can fault.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::{Duration, Instant};

use ins_protocol::hello::{Hello, HelloError, Role};
use ins_protocol::ring::RingConfig;
use ins_transport::rendezvous::{HEADER_LEN, Header};
use ins_transport::{
    ChannelConfig, Doorbell, Error, EventFd, Layout, MemfdRegion, accept_stream, connect_stream,
    receive_channel,
};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

fn cfg() -> ChannelConfig {
    ChannelConfig {
        ring_capacity: 1 << 16,
        max_frame: 1024,
        handshake_timeout: Duration::from_millis(500),
        ..ChannelConfig::default()
    }
}

/// An instance that receives the channel, then sends `first` as its hello.
fn hostile_instance(stream: UnixStream, first: Vec<u8>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut raw = receive_channel(stream, &cfg()).expect("receive");
        raw.tx.try_push(&first).expect("push");
        raw.tx.flush().expect("flush");
        raw.tx_bell.notify().expect("notify");
        // Keep the channel open until the driver has judged the hello.
        thread::sleep(Duration::from_millis(300));
    })
}

#[test]
fn wrong_magic_hello_is_refused() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut bad = Hello::new(Role::Instance).encode();
    bad[0] ^= 0xff;
    let peer = hostile_instance(b, bad.to_vec());
    match accept_stream(a, &cfg()) {
        Err(Error::Hello(HelloError::BadMagic(_))) => {}
        other => panic!("expected BadMagic, got {other:?}"),
    }
    peer.join().unwrap();
}

#[test]
fn same_role_hello_is_refused() {
    let (a, b) = UnixStream::pair().unwrap();
    let peer = hostile_instance(b, Hello::new(Role::Driver).encode().to_vec());
    match accept_stream(a, &cfg()) {
        Err(Error::Hello(HelloError::SameRole)) => {}
        other => panic!("expected SameRole, got {other:?}"),
    }
    peer.join().unwrap();
}

#[test]
fn short_hello_is_refused() {
    let (a, b) = UnixStream::pair().unwrap();
    let peer = hostile_instance(b, vec![0u8; 10]);
    match accept_stream(a, &cfg()) {
        Err(Error::Hello(HelloError::BadLength(10))) => {}
        other => panic!("expected BadLength, got {other:?}"),
    }
    peer.join().unwrap();
}

#[test]
fn silent_peer_times_out() {
    let (a, b) = UnixStream::pair().unwrap();
    let peer = thread::spawn(move || {
        let raw = receive_channel(b, &cfg()).expect("receive");
        thread::sleep(Duration::from_millis(1500));
        drop(raw);
    });
    let start = Instant::now();
    match accept_stream(a, &cfg()) {
        Err(Error::Timeout(_)) => {}
        other => panic!("expected Timeout, got {other:?}"),
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1400),
        "{took:?}"
    );
    peer.join().unwrap();
}

#[test]
fn peer_closing_during_handshake_is_reported() {
    let (a, b) = UnixStream::pair().unwrap();
    let peer = thread::spawn(move || drop(receive_channel(b, &cfg()).expect("receive")));
    match accept_stream(a, &cfg()) {
        Err(Error::PeerClosed) => {}
        other => panic!("expected PeerClosed, got {other:?}"),
    }
    peer.join().unwrap();
}

#[test]
fn instance_hello_with_driver_role_is_refused_locally() {
    let (a, b) = UnixStream::pair().unwrap();
    let driver = thread::spawn(move || accept_stream(a, &cfg()));
    match connect_stream(b, Hello::new(Role::Driver), &cfg()) {
        Err(Error::Config(_)) => {}
        other => panic!("expected Config, got {other:?}"),
    }
    // The driver then sees the instance go away.
    assert!(matches!(driver.join().unwrap(), Err(Error::PeerClosed)));
}

/// A hostile driver: sends `header` with `fds` attached.
fn send_offer(stream: &UnixStream, header: &[u8; HEADER_LEN], fds: &[BorrowedFd<'_>]) {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    assert!(control.push(SendAncillaryMessage::ScmRights(fds)));
    let n = rustix::net::sendmsg(
        stream,
        &[io::IoSlice::new(header)],
        &mut control,
        SendFlags::empty(),
    )
    .unwrap();
    assert_eq!(n, HEADER_LEN);
}

fn layout() -> Layout {
    let ring = RingConfig::new(1 << 16, 1024).unwrap();
    Layout::new(ring, ring).unwrap()
}

fn sealed_memfd(len: u64, seals: SealFlags) -> std::os::fd::OwnedFd {
    let fd = rustix::fs::memfd_create("hostile", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .unwrap();
    rustix::fs::ftruncate(&fd, len).unwrap();
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
    }
    fd
}

fn offer_and_receive(
    header: [u8; HEADER_LEN],
    region: BorrowedFd<'_>,
    extra: bool,
) -> Result<ins_transport::RawChannel, Error> {
    let (a, b) = UnixStream::pair().unwrap();
    let bell1 = EventFd::new().unwrap();
    let bell2 = EventFd::new().unwrap();
    let mut fds = vec![region, bell1.as_fd(), bell2.as_fd()];
    if extra {
        fds.push(region);
    }
    send_offer(&a, &header, &fds);
    receive_channel(b, &cfg())
}

#[test]
fn too_small_region_is_refused() {
    let l = layout();
    let fd = sealed_memfd(4096, MemfdRegion::REQUIRED_SEALS);
    match offer_and_receive(Header::for_layout(&l).encode(), fd.as_fd(), false) {
        Err(Error::BadRegion { size: 4096, .. }) => {}
        other => panic!("expected BadRegion, got {other:?}"),
    }
}

#[test]
fn unsealed_region_is_refused() {
    let l = layout();
    for seals in [
        SealFlags::empty(),
        SealFlags::GROW | SealFlags::SEAL,
        SealFlags::SHRINK,
    ] {
        let fd = sealed_memfd(l.len as u64, seals);
        match offer_and_receive(Header::for_layout(&l).encode(), fd.as_fd(), false) {
            Err(Error::BadRegion { .. }) => {}
            other => panic!("expected BadRegion for seals {seals:?}, got {other:?}"),
        }
    }
}

#[test]
fn well_formed_offer_is_accepted() {
    // The control case for the hostile-driver tests above: the same offer
    // with a proper region goes through.
    let l = layout();
    let fd = sealed_memfd(l.len as u64, MemfdRegion::REQUIRED_SEALS);
    let raw = offer_and_receive(Header::for_layout(&l).encode(), fd.as_fd(), false)
        .expect("a correct offer is accepted");
    assert_eq!(raw.layout.len, l.len);
}

#[test]
fn extra_descriptors_are_refused() {
    let l = layout();
    let fd = sealed_memfd(l.len as u64, MemfdRegion::REQUIRED_SEALS);
    match offer_and_receive(Header::for_layout(&l).encode(), fd.as_fd(), true) {
        Err(Error::BadFdCount {
            expected: 3,
            got: 4,
        }) => {}
        other => panic!("expected BadFdCount, got {other:?}"),
    }
}

#[test]
fn bad_header_and_limits_are_refused() {
    let l = layout();
    let fd = sealed_memfd(l.len as u64, MemfdRegion::REQUIRED_SEALS);
    let mut bad = Header::for_layout(&l).encode();
    bad[0] ^= 1;
    assert!(matches!(
        offer_and_receive(bad, fd.as_fd(), false),
        Err(Error::BadHeader(_))
    ));
    let mut huge = Header::for_layout(&l);
    huge.to_driver_max_frame = 1 << 30;
    assert!(matches!(
        offer_and_receive(huge.encode(), fd.as_fd(), false),
        Err(Error::Limit { .. })
    ));
    let mut odd = Header::for_layout(&l);
    odd.to_instance_capacity = 3000; // not a power of two
    assert!(matches!(
        offer_and_receive(odd.encode(), fd.as_fd(), false),
        Err(Error::Ring(_) | Error::BadHeader(_))
    ));
}

#[test]
fn non_eventfd_doorbell_is_refused() {
    let l = layout();
    let fd = sealed_memfd(l.len as u64, MemfdRegion::REQUIRED_SEALS);
    let (a, b) = UnixStream::pair().unwrap();
    let bell = EventFd::new().unwrap();
    let not_a_bell = sealed_memfd(4096, SealFlags::empty());
    send_offer(
        &a,
        &Header::for_layout(&l).encode(),
        &[fd.as_fd(), not_a_bell.as_fd(), bell.as_fd()],
    );
    assert!(matches!(receive_channel(b, &cfg()), Err(Error::BadFd(_))));
}
