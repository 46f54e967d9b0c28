//! A throwaway driver for a manual check of the `ins` binary:
//! `cargo run -p ins --example smoke_driver -- path/to/ins`.
//!
//! It spawns the instance, has it listen on loopback, connects with a
//! std `TcpStream`, expects `Accepted` and `Data`, then sends SIGTERM and
//! expects the connection's final flow record and exit code 0.
#![deny(unsafe_code)]

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ins_protocol::hello::{Hello, Role};
use ins_protocol::msg::{self, Msg};
use ins_transport::{ChannelConfig, Endpoint};

fn send(ep: &mut Endpoint, m: Msg<'_>) -> anyhow::Result<()> {
    let mut out = [0u8; 512];
    let n = m.encode(&mut out).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if !ep.send_wait(&out[..n], Some(Duration::from_secs(5)))? {
        bail!("ring full for 5 s");
    }
    Ok(())
}

fn until<T>(
    ep: &mut Endpoint,
    buf: &mut [u8],
    mut pick: impl FnMut(&Msg<'_>) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("timed out waiting for the instance");
        }
        if let Some(n) = ep.recv(buf, Some(left))? {
            let m = Msg::decode(&buf[..n]).map_err(|e| anyhow::anyhow!("{e:?}"))?;
            println!("<- {m:?}");
            if let Some(v) = pick(&m) {
                return Ok(v);
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let bin = std::env::args()
        .nth(1)
        .context("usage: smoke_driver PATH-TO-INS")?;
    let dir = std::env::temp_dir().join(format!("ins-smoke-driver-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("driver.sock");
    let listener = UnixListener::bind(&path)?;
    let mut child = Command::new(&bin)
        .args([
            "--driver",
            path.to_str().context("path")?,
            "--instance-id=9",
        ])
        .spawn()?;
    let (stream, _) = listener.accept()?;
    let cfg = ChannelConfig::default();
    let mut hello = Hello::new(Role::Driver);
    hello.window = 1 << 20;
    let mut ep =
        ins_transport::offer_channel(stream, &cfg)?.handshake(hello, cfg.handshake_timeout)?;
    println!("hello from instance: {:?}", ep.peer);
    let mut buf = vec![0u8; ep.max_frame];
    send(
        &mut ep,
        Msg::Open {
            sock: 1,
            req: 1,
            family: msg::Family::Inet,
            ty: msg::SockType::Stream,
            proto: 0,
        },
    )?;
    send(
        &mut ep,
        Msg::Bind {
            sock: 1,
            req: 2,
            addr: "127.0.0.1:0".parse()?,
        },
    )?;
    send(
        &mut ep,
        Msg::Listen {
            sock: 1,
            req: 3,
            backlog: 4,
        },
    )?;
    send(&mut ep, Msg::GetSockName { sock: 1, req: 4 })?;
    let at = until(&mut ep, &mut buf, |m| match *m {
        Msg::Reply {
            req: 4,
            errno: 0,
            value,
            ..
        } => msg::WireAddr::parse(value).ok().flatten(),
        _ => None,
    })?;
    let mut client = std::net::TcpStream::connect(at)?;
    client.write_all(b"smoke")?;
    let sock = until(&mut ep, &mut buf, |m| match *m {
        Msg::Accepted { sock, .. } => Some(sock),
        _ => None,
    })?;
    let same = until(&mut ep, &mut buf, |m| match *m {
        Msg::Data { sock: s, bytes } if s == sock => Some(bytes == b"smoke"),
        _ => None,
    })?;
    if !same {
        bail!("Data does not carry the bytes sent");
    }
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&child),
        rustix::process::Signal::TERM,
    )?;
    let rec = until(&mut ep, &mut buf, |m| match *m {
        Msg::Flow(f) if f.state == msg::FlowState::Closed && f.bytes_in == 5 => Some(f),
        _ => None,
    })?;
    println!("final flow record: {rec:?}");
    let status = child.wait()?;
    println!("instance exited: {status}");
    std::fs::remove_dir_all(&dir)?;
    if status.code() != Some(0) {
        bail!("instance exit status {status}");
    }
    Ok(())
}
