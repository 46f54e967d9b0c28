//! A stand-alone service over the stack (no driver ring yet): TCP echo on
//! port 7, UDP echo on port 7, and a minimal HTTP/1.0 responder on port 80
//! whose body reports the instance's counters. It exercises netfront and
//! smoltcp end to end from dom0 (ping, nc, wget).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;

use ins_core::Errno;
use ins_core::stack::{Family, Readiness, SockType, Stack};
use ins_netfront::front::Netfront;
use ins_smol_stack::{Handle, SmolStack};

use crate::platform::PvWaiter;

/// The stack the demo serves on.
pub type S = SmolStack<Netfront, PvWaiter>;

enum Kind {
    Echo,
    Http,
}

struct Conn {
    kind: Kind,
    /// Bytes waiting to be sent (echo backlog or the HTTP response).
    out: Vec<u8>,
    /// HTTP request bytes so far.
    req: Vec<u8>,
    eof: bool,
    answered: bool,
}

fn any(port: u16) -> core::net::SocketAddr {
    core::net::SocketAddr::new(core::net::Ipv4Addr::UNSPECIFIED.into(), port)
}

/// Serves forever.
pub fn serve(st: &mut S) -> ! {
    let l7 = st.open(Family::Inet, SockType::Stream).expect("socket");
    st.bind(l7, any(7)).expect("bind 7");
    st.listen(l7, 8).expect("listen 7");
    let l80 = st.open(Family::Inet, SockType::Stream).expect("socket");
    st.bind(l80, any(80)).expect("bind 80");
    st.listen(l80, 8).expect("listen 80");
    let u7 = st.open(Family::Inet, SockType::Datagram).expect("socket");
    st.bind(u7, any(7)).expect("bind udp 7");
    let mut conns: BTreeMap<Handle, Conn> = BTreeMap::new();
    let mut evs = Vec::new();
    let mut buf = alloc::vec![0u8; 16 * 1024];
    let (mut accepted, mut http) = (0u64, 0u64);
    loop {
        evs.clear();
        let _ = st.poll_events(None, &mut evs);
        for &(h, r) in &evs {
            if h == l7 || h == l80 {
                while let Ok(a) = st.accept(h) {
                    accepted += 1;
                    let kind = if h == l7 { Kind::Echo } else { Kind::Http };
                    conns.insert(
                        a.handle,
                        Conn {
                            kind,
                            out: Vec::new(),
                            req: Vec::new(),
                            eof: false,
                            answered: false,
                        },
                    );
                }
                continue;
            }
            if h == u7 {
                while let Ok((n, from)) = st.recv_from(u7, &mut buf) {
                    let _ = st.send_to(u7, &buf[..n], from);
                }
                continue;
            }
            let Some(c) = conns.get_mut(&h) else { continue };
            if r.intersects(Readiness::READABLE | Readiness::HANGUP | Readiness::ERROR) {
                loop {
                    match st.recv(h, &mut buf) {
                        Ok(0) => {
                            c.eof = true;
                            break;
                        }
                        Ok(n) => match c.kind {
                            Kind::Echo => c.out.extend_from_slice(&buf[..n]),
                            Kind::Http => c.req.extend_from_slice(&buf[..n]),
                        },
                        Err(Errno::EAGAIN) => break,
                        Err(_) => {
                            c.eof = true;
                            c.out.clear();
                            break;
                        }
                    }
                }
            }
            if matches!(c.kind, Kind::Http)
                && !c.answered
                && (c.req.windows(4).any(|w| w == b"\r\n\r\n") || c.eof)
            {
                http += 1;
                let n = st.counters();
                let nf = st.device().counters();
                let body = format!(
                    "ins-pv unikernel\naccepted {accepted} http {http}\nrx_frames {} tx_frames {} rx_dropped {} bad_ids {}\npolls {}\n",
                    nf.rx_frames, nf.tx_frames, nf.rx_dropped, nf.bad_ids, n.polls
                );
                c.out = format!("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}", body.len()).into_bytes();
                c.answered = true;
            }
            while !c.out.is_empty() {
                match st.send(h, &c.out) {
                    Ok(n) => {
                        c.out.drain(..n);
                    }
                    Err(Errno::EAGAIN) => break,
                    Err(_) => {
                        c.out.clear();
                        c.eof = true;
                    }
                }
            }
            let done = c.out.is_empty() && (c.eof || (matches!(c.kind, Kind::Http) && c.answered));
            if done {
                let _ = st.shutdown(h, ins_core::stack::Shutdown::Write);
                if c.eof {
                    let _ = st.close(h);
                    conns.remove(&h);
                }
            }
        }
    }
}
