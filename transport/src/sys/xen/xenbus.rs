//! A xenstore connection over Linux's `/dev/xen/xenbus` (in a domU) or
//! xenstored's Unix socket (in the domain running xenstored).
//!
//! The device accepts whole messages on `write` and returns replies and
//! watch events on `read`; the kernel tracks our requests, transactions and
//! watches and drops them when the descriptor closes. It is pollable:
//! readable when a message (a watch event, outside requests) is queued.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;

use ins_xen::xenstore::{Client, Stream};

/// The default device.
pub const XENBUS_DEV: &str = "/dev/xen/xenbus";

/// A byte stream to xenstored.
#[derive(Debug)]
pub struct XenbusStream {
    fd: OwnedFd,
}

impl XenbusStream {
    /// Opens `path`: a character device (`/dev/xen/xenbus`) or a Unix
    /// socket (xenstored's `/run/xenstored/socket`).
    pub fn open(path: &str) -> io::Result<XenbusStream> {
        let meta = std::fs::metadata(path)?;
        use std::os::unix::fs::FileTypeExt;
        let fd: OwnedFd = if meta.file_type().is_socket() {
            UnixStream::connect(path)?.into()
        } else {
            let f: File = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)?;
            f.into()
        };
        Ok(XenbusStream { fd })
    }

    /// A client over a fresh connection to `path`.
    pub fn client(path: &str, max_events: usize) -> io::Result<Client<XenbusStream>> {
        Ok(Client::new(Self::open(path)?, max_events))
    }
}

impl Stream for XenbusStream {
    type Error = io::Error;

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut sent = 0;
        while sent < buf.len() {
            match rustix::io::write(&self.fd, &buf[sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            match rustix::io::read(&self.fd, &mut buf[filled..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => filled += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

impl AsFd for XenbusStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
