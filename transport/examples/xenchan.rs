//! `xenchan`: opens an INS channel between two Xen domains over the Xen
//! transport and exercises it; used by the Xen lab (`make test-xen`).
//!
//! ```text
//! xenchan driver   --peer DOMID --name NAME [options]   grant, offer, run the exchange
//! xenchan instance --peer DOMID --name NAME [options]   map, bind, run the exchange
//! xenchan snoop    --driver D --instance I --name NAME  every read/write of the pair's keys must be refused
//! xenchan tcp-server --listen ADDR:PORT                  the same figures over plain TCP
//! xenchan tcp-client --connect ADDR:PORT [options]
//! xenchan serve-ins --peer DOMID --name NAME --seconds S  driver side for a real `ins --xen-driver`:
//!                                                        offer, hello, count its heartbeats, close
//! xenchan local [options]                               both ends in one process over memfd (self-check)
//! xenchan kprobe-peer --peer DOMID --grefs "G0 G1 …" --port P --rtt N --seconds S
//!                        the peer of the kernel module's ins_xenprobe: map its pages,
//!                        check the pattern, N request/answer rounds over its port,
//!                        keep the mapping S more seconds (its unload then defers)
//! ```
//!
//! `--idle` skips the exchange; `--until-peer-gone` then waits for the
//! peer to leave or die (the driver's death tests).
//!
//! The exchange: `--messages N` random frames each way at once (sizes
//! 1..=`--max-size`, contents derived from the seed and sequence number,
//! each carrying an FNV-1a checksum; the receiver checks order, checksum
//! and contents), then `--rtt N` ping-pongs of 64 bytes, then
//! `--bulk-mib M` MiB driver→instance in 16 KiB frames. The driver (or TCP
//! client) prints `FIGURE name value unit` lines.

use std::error::Error as StdError;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use ins_protocol::hello::{Hello, Role};
use ins_protocol::ring::RingError;
use ins_transport::channel::Transport;
use ins_transport::sys::xen::rendezvous::probe_access;
use ins_transport::sys::xen::{XenConfig, XenbusStream, connect_xen, offer_xen};
use ins_transport::{ChannelConfig, Endpoint, Error};
use ins_xen::DomId;
use ins_xen::channel::ChannelId;

type Res<T> = Result<T, Box<dyn StdError>>;

#[derive(Debug, Clone)]
struct Opts {
    peer: u16,
    driver: u16,
    instance: u16,
    name: String,
    messages: u64,
    max_size: usize,
    rtt: u64,
    bulk_mib: u64,
    seed: u64,
    ring_kib: u32,
    spin_us: u64,
    hold: Option<String>,
    addr: String,
    seconds: u64,
    idle: bool,
    until_peer_gone: bool,
    grefs: String,
    port: u32,
}

fn parse(args: &[String]) -> Res<Opts> {
    let mut o = Opts {
        peer: 0,
        driver: 0,
        instance: 0,
        name: "xch0".into(),
        messages: 2000,
        max_size: 4000,
        rtt: 200,
        bulk_mib: 16,
        seed: 1,
        ring_kib: 256,
        spin_us: 50,
        hold: None,
        addr: String::new(),
        seconds: 5,
        idle: false,
        until_peer_gone: false,
        grefs: String::new(),
        port: 0,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--peer" => o.peer = v()?.parse()?,
            "--driver" => o.driver = v()?.parse()?,
            "--instance" => o.instance = v()?.parse()?,
            "--name" => o.name = v()?,
            "--messages" => o.messages = v()?.parse()?,
            "--max-size" => o.max_size = v()?.parse()?,
            "--rtt" => o.rtt = v()?.parse()?,
            "--bulk-mib" => o.bulk_mib = v()?.parse()?,
            "--seed" => o.seed = v()?.parse()?,
            "--ring-kib" => o.ring_kib = v()?.parse()?,
            "--spin-us" => o.spin_us = v()?.parse()?,
            "--hold-until" => o.hold = Some(v()?),
            "--listen" | "--connect" => o.addr = v()?,
            "--seconds" => o.seconds = v()?.parse()?,
            "--grefs" => o.grefs = v()?,
            "--port" => o.port = v()?.parse()?,
            "--idle" => o.idle = true,
            "--until-peer-gone" => o.until_peer_gone = true,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(o)
}

fn channel_config(o: &Opts) -> ChannelConfig {
    ChannelConfig {
        ring_capacity: o.ring_kib * 1024,
        max_frame: (o.ring_kib * 1024 / 4).min(64 * 1024),
        handshake_timeout: Duration::from_secs(60),
        spin: Duration::from_micros(o.spin_us),
        ..ChannelConfig::default()
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Deterministic frame `seq` of stream `stream`: 16-byte header
/// (seq u64, checksum u64) then the payload.
fn frame(seed: u64, stream: u64, seq: u64, max: usize, out: &mut Vec<u8>) {
    let mut x = seed ^ (stream << 56) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x1234_5678;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let len = 1 + (next() as usize % max);
    out.clear();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend((0..len).map(|_| next() as u8));
    let sum = fnv(&out[16..]);
    out[8..16].copy_from_slice(&sum.to_le_bytes());
}

fn full(e: &Error) -> bool {
    matches!(e, Error::Ring(RingError::Full))
}

/// Sends `n` frames of stream `mine` while receiving `n` of stream
/// `theirs`, checking each; returns bytes each way.
fn exchange<T: Transport>(
    ep: &mut Endpoint<T>,
    o: &Opts,
    mine: u64,
    theirs: u64,
) -> Res<(u64, u64)> {
    let (mut sent, mut got, mut sent_b, mut got_b) = (0u64, 0u64, 0u64, 0u64);
    let mut out = Vec::new();
    let mut want = Vec::new();
    let mut buf = vec![0u8; ep.max_frame];
    let mut pending = false;
    let deadline = Instant::now() + Duration::from_secs(600);
    while sent < o.messages || got < o.messages {
        let mut progressed = false;
        while sent < o.messages {
            if !pending {
                frame(o.seed, mine, sent, o.max_size, &mut out);
                pending = true;
            }
            match ep.push(&out) {
                Ok(()) => {
                    sent += 1;
                    sent_b += out.len() as u64;
                    pending = false;
                    progressed = true;
                }
                Err(e) if full(&e) => break,
                Err(e) => return Err(e.into()),
            }
        }
        ep.flush()?;
        let mut bad = None;
        // Never take the peer's frames of the next phase.
        let room = (o.messages - got).min(256) as usize;
        let n = ep.recv_batch(&mut buf, room, |f| {
            frame(o.seed, theirs, got, o.max_size, &mut want);
            if bad.is_none() && f != want.as_slice() {
                let seq = f
                    .get(..8)
                    .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])));
                let sum_ok = f.len() >= 16 && fnv(&f[16..]).to_le_bytes() == f[8..16];
                bad = Some(format!(
                    "frame {got}: seq {seq:?}, checksum ok {sum_ok}, len {}",
                    f.len()
                ));
            }
            got += 1;
            got_b += f.len() as u64;
        })?;
        if let Some(b) = bad {
            return Err(format!("corrupt or misordered frame: {b}").into());
        }
        progressed |= n > 0;
        if progressed {
            continue;
        }
        if Instant::now() > deadline {
            return Err(format!("exchange stuck: sent {sent}, got {got}").into());
        }
        let space = sent < o.messages && ep.tx.prepare_wait_space(out.len())?;
        let data = got < o.messages && ep.rx.prepare_wait()?;
        if !space && !data {
            // Sleep on our doorbell: it rings for data and for space alike.
            if got < o.messages {
                ep.wait_readable(Some(Duration::from_millis(200)))?;
            } else {
                ep.rx_bell_wait()?;
            }
        }
    }
    Ok((sent_b, got_b))
}

fn recv_one<T: Transport>(ep: &mut Endpoint<T>, buf: &mut [u8]) -> Res<usize> {
    ep.recv(buf, Some(Duration::from_secs(60)))?
        .ok_or_else(|| "timed out waiting for a frame".into())
}

fn send_one<T: Transport>(ep: &mut Endpoint<T>, f: &[u8]) -> Res<()> {
    if ep.send_wait(f, Some(Duration::from_secs(60)))? {
        Ok(())
    } else {
        Err("timed out waiting for ring space".into())
    }
}

/// Driver side of the figures: round trips, then bulk.
fn measure<T: Transport>(ep: &mut Endpoint<T>, o: &Opts) -> Res<()> {
    let mut buf = vec![0u8; ep.max_frame];
    let ping = [7u8; 64];
    let t = Instant::now();
    for _ in 0..o.rtt {
        send_one(ep, &ping)?;
        let n = recv_one(ep, &mut buf)?;
        if buf[..n] != ping {
            return Err("bad pong".into());
        }
    }
    let rtt = t.elapsed().as_secs_f64() * 1e6 / o.rtt.max(1) as f64;
    println!(
        "FIGURE ring_rtt_us {rtt:.1} us ({} round trips of 64 B)",
        o.rtt
    );
    let chunk = vec![0x5au8; 16 * 1024];
    let total = o.bulk_mib * 1024 * 1024;
    let t = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        match ep.push(&chunk[..n]) {
            Ok(()) => left -= n as u64,
            Err(e) if full(&e) => {
                ep.flush()?;
                if !ep.tx.prepare_wait_space(n)? {
                    ep.rx_bell_wait()?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    ep.flush()?;
    let n = recv_one(ep, &mut buf)?;
    let acked = u64::from_le_bytes(buf[..n.min(8)].try_into().map_err(|_| "bad bulk ack")?);
    let secs = t.elapsed().as_secs_f64();
    if acked != total {
        return Err(format!("peer acknowledged {acked} of {total} bytes").into());
    }
    println!(
        "FIGURE ring_mib_s {:.1} MiB/s ({} MiB in 16 KiB frames)",
        total as f64 / secs / 1048576.0,
        o.bulk_mib
    );
    Ok(())
}

/// Instance side of the figures: echo, then count and acknowledge.
fn answer<T: Transport>(ep: &mut Endpoint<T>, o: &Opts) -> Res<()> {
    let mut buf = vec![0u8; ep.max_frame];
    for _ in 0..o.rtt {
        let n = recv_one(ep, &mut buf)?;
        send_one(ep, &buf[..n])?;
    }
    let total = o.bulk_mib * 1024 * 1024;
    let mut got = 0u64;
    while got < total {
        let n = recv_one(ep, &mut buf)?;
        got += n as u64;
        while let Some(n) = ep.try_recv(&mut buf)? {
            got += n as u64;
        }
    }
    send_one(ep, &got.to_le_bytes())
}

trait BellWait {
    fn rx_bell_wait(&mut self) -> Res<()>;
}

impl<T: Transport> BellWait for Endpoint<T> {
    fn rx_bell_wait(&mut self) -> Res<()> {
        use ins_transport::Doorbell;
        self.rx_bell.wait(Some(Duration::from_millis(200)))?;
        Ok(())
    }
}

fn run_pair<T: Transport>(ep: &mut Endpoint<T>, o: &Opts, role: Role) -> Res<()> {
    let (mine, theirs) = if role == Role::Driver { (1, 2) } else { (2, 1) };
    let t = Instant::now();
    let (s, r) = exchange(ep, o, mine, theirs)?;
    println!(
        "XENCHAN_EXCHANGE_OK {:?}: {} frames each way, sent {} B, received {} B, all checksummed and in order, {:.2} s",
        role,
        o.messages,
        s,
        r,
        t.elapsed().as_secs_f64()
    );
    if role == Role::Driver {
        measure(ep, o)
    } else {
        answer(ep, o)
    }
}

fn hold(o: &Opts, xcfg: &XenConfig) -> Res<()> {
    let Some(path) = &o.hold else { return Ok(()) };
    let mut xs = XenbusStream::client(&xcfg.xenbus, 16)?;
    let end = Instant::now() + Duration::from_secs(300);
    while xs.try_read(ins_xen::xenstore::TxId::NONE, path)?.is_none() {
        if Instant::now() > end {
            return Err(format!("{path} never appeared").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn xen_side(o: &Opts, role: Role) -> Res<()> {
    let xcfg = XenConfig::default();
    let cfg = channel_config(o);
    let mut xs = XenbusStream::client(&xcfg.xenbus, 16)?;
    let me = DomId::parse(&xs.read(ins_xen::xenstore::TxId::NONE, "domid")?).ok_or("bad domid")?;
    drop(xs);
    let peer = DomId(o.peer);
    let (id, t) = if role == Role::Driver {
        (ChannelId::new(me, peer, &o.name)?, Instant::now())
    } else {
        (ChannelId::new(peer, me, &o.name)?, Instant::now())
    };
    let mut ch = if role == Role::Driver {
        offer_xen(&id, Hello::new(Role::Driver), &cfg, &xcfg)?
    } else {
        connect_xen(&id, Hello::new(Role::Instance), &cfg, &xcfg)?
    };
    println!(
        "XENCHAN_CONNECTED {role:?} dom{} <-> dom{} name {} in {:.2} s (ring {} KiB each way, peer version {})",
        id.driver,
        id.instance,
        id.name,
        t.elapsed().as_secs_f64(),
        o.ring_kib,
        ch.endpoint.version
    );
    if !o.idle {
        run_pair(&mut ch.endpoint, o, role)?;
    }
    if o.until_peer_gone {
        // Nothing is sent: the only way out is the peer's departure, which
        // the link reports as a hang-up.
        let mut buf = vec![0u8; ch.endpoint.max_frame];
        let t = Instant::now();
        loop {
            match ch.endpoint.recv(&mut buf, Some(Duration::from_secs(300))) {
                Err(Error::PeerClosed) => break,
                Ok(None) => return Err("the peer never left".into()),
                Ok(Some(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        println!(
            "XENCHAN_PEER_GONE {role:?}: noticed after {:.2} s",
            t.elapsed().as_secs_f64()
        );
    }
    hold(o, &xcfg)?;
    let td = ch.close()?;
    println!(
        "XENCHAN_CLOSED {role:?}: peer_left={} unmapped_before_revoke={} waited={:.3} s",
        td.peer_left,
        td.unmapped_before_revoke,
        td.waited.as_secs_f64()
    );
    Ok(())
}

/// The driver side for a real instance (`ins --xen-driver`): offers the
/// channel, checks the instance's hello, counts the heartbeats it sends
/// for `--seconds`, then closes (the instance exits on the hang-up).
fn serve_ins(o: &Opts) -> Res<()> {
    use ins_protocol::msg::Msg;
    let xcfg = XenConfig::default();
    let cfg = channel_config(o);
    let mut xs = XenbusStream::client(&xcfg.xenbus, 16)?;
    let me = DomId::parse(&xs.read(ins_xen::xenstore::TxId::NONE, "domid")?).ok_or("bad domid")?;
    drop(xs);
    let id = ChannelId::new(me, DomId(o.peer), &o.name)?;
    let mut hello = Hello::new(Role::Driver);
    hello.window = 256 * 1024;
    let t = Instant::now();
    let mut ch = offer_xen(&id, hello, &cfg, &xcfg)?;
    let peer = ch.endpoint.peer;
    println!(
        "XENCHAN_INS_JOINED dom{} in {:.2} s: hello from instance id {}, max_sockets {}, window {}, version {}",
        id.instance,
        t.elapsed().as_secs_f64(),
        peer.instance_id,
        peer.max_sockets,
        peer.window,
        ch.endpoint.version
    );
    let mut buf = vec![0u8; ch.endpoint.max_frame];
    let (mut frames, mut heartbeats) = (0u64, 0u64);
    let end = Instant::now() + Duration::from_secs(o.seconds);
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let Some(n) = ch.endpoint.recv(&mut buf, Some(left))? else {
            break;
        };
        frames += 1;
        match Msg::decode(&buf[..n]) {
            Ok(Msg::Heartbeat(_)) => heartbeats += 1,
            Ok(_) => {}
            Err(e) => return Err(format!("undecodable frame from the instance: {e:?}").into()),
        }
    }
    if heartbeats == 0 {
        return Err(format!(
            "no heartbeat from the instance in {} s ({frames} frames)",
            o.seconds
        )
        .into());
    }
    let td = ch.close()?;
    println!(
        "XENCHAN_INS_SERVED {frames} frames ({heartbeats} heartbeats) in {} s; closed: unmapped_before_revoke={} waited={:.3} s",
        o.seconds,
        td.unmapped_before_revoke,
        td.waited.as_secs_f64()
    );
    Ok(())
}

fn snoop(o: &Opts) -> Res<()> {
    let xcfg = XenConfig::default();
    let id = ChannelId::new(DomId(o.driver), DomId(o.instance), &o.name)?;
    let mut xs = XenbusStream::client(&xcfg.xenbus, 16)?;
    let mut allowed = 0;
    let results = probe_access(&mut xs, &id);
    for (path, op, r) in &results {
        match r {
            Ok(()) => {
                allowed += 1;
                println!("SNOOP ALLOWED {op} {path}");
            }
            Err(e) => println!("SNOOP refused {op} {path}: {e}"),
        }
    }
    if allowed > 0 {
        return Err(format!("{allowed} of {} accesses were allowed", results.len()).into());
    }
    println!(
        "XENCHAN_SNOOP_REFUSED all {} reads/writes/listings refused",
        results.len()
    );
    Ok(())
}

fn tcp_rtt_bulk(s: &mut TcpStream, o: &Opts) -> Res<()> {
    s.set_nodelay(true)?;
    let mut pong = [0u8; 64];
    let t = Instant::now();
    for _ in 0..o.rtt {
        s.write_all(&[7u8; 64])?;
        s.read_exact(&mut pong)?;
    }
    let rtt = t.elapsed().as_secs_f64() * 1e6 / o.rtt.max(1) as f64;
    println!(
        "FIGURE tcp_rtt_us {rtt:.1} us ({} round trips of 64 B)",
        o.rtt
    );
    let total = o.bulk_mib * 1024 * 1024;
    let chunk = vec![0x5au8; 16 * 1024];
    let t = Instant::now();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack)?;
    let secs = t.elapsed().as_secs_f64();
    if u64::from_le_bytes(ack) != total {
        return Err("bad TCP bulk ack".into());
    }
    println!(
        "FIGURE tcp_mib_s {:.1} MiB/s ({} MiB)",
        total as f64 / secs / 1048576.0,
        o.bulk_mib
    );
    Ok(())
}

fn tcp_server(o: &Opts) -> Res<()> {
    let l = TcpListener::bind(&o.addr)?;
    println!("XENCHAN_TCP_LISTENING {}", o.addr);
    let (mut s, _) = l.accept()?;
    s.set_nodelay(true)?;
    let mut ping = [0u8; 64];
    for _ in 0..o.rtt {
        s.read_exact(&mut ping)?;
        s.write_all(&ping)?;
    }
    let total = o.bulk_mib * 1024 * 1024;
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while got < total {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err("TCP peer closed early".into());
        }
        got += n as u64;
    }
    s.write_all(&got.to_le_bytes())?;
    Ok(())
}

fn local(o: &Opts) -> Res<()> {
    let dir = std::env::temp_dir().join(format!("xenchan-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("s");
    let listener = std::os::unix::net::UnixListener::bind(&path)?;
    let cfg = channel_config(o);
    let o2 = o.clone();
    let cfg2 = cfg.clone();
    let inst = std::thread::spawn(move || -> Result<(), String> {
        let mut ep = ins_transport::connect_channel_with(&path, Hello::new(Role::Instance), &cfg2)
            .map_err(|e| e.to_string())?;
        run_pair(&mut ep, &o2, Role::Instance).map_err(|e| e.to_string())
    });
    let mut ep = ins_transport::accept_channel(&listener, &cfg)?;
    let driver = run_pair(&mut ep, o, Role::Driver);
    drop(ep);
    let instance = inst.join().map_err(|_| "instance thread panicked")?;
    instance.map_err(|e| format!("instance: {e}"))?;
    driver?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The byte ins_xenprobe (protvm-driver/kmod/xenprobe.rs) writes at
/// `offset` of page `page`.
fn kprobe_pattern(page: usize, offset: usize) -> u8 {
    (page.wrapping_mul(31).wrapping_add(offset.wrapping_mul(7)) & 0xff) as u8
}

fn kprobe_peer(o: &Opts) -> Res<()> {
    use ins_protocol::region::RegionView;
    use ins_transport::sys::xen::{Evtchn, MappedPages};
    use ins_xen::Port;
    use ins_xen::gnttab::GrantRef;
    use std::sync::atomic::Ordering;
    const PAGE: usize = 4096;
    let peer = DomId(o.peer);
    let grefs = o
        .grefs
        .split_whitespace()
        .map(|g| g.parse().map(GrantRef))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--grefs: {e}"))?;
    if grefs.is_empty() {
        return Err("--grefs: no grant references".into());
    }
    let pages = MappedPages::map("/dev/xen/gntdev", peer, &grefs)?;
    let view = RegionView::new(&pages);
    let mut page = vec![0u8; PAGE];
    let mut bad = 0usize;
    for i in 0..grefs.len() {
        view.read(i * PAGE, &mut page)?;
        if i == 0 && &page[..8] != b"INSKPRB1" {
            return Err(format!("page 0 starts with {:?}, not INSKPRB1", &page[..8]).into());
        }
        let start = if i == 0 { 64 } else { 0 };
        bad += (start..PAGE)
            .filter(|&j| page[j] != kprobe_pattern(i, j))
            .count();
    }
    if bad != 0 {
        return Err(format!("{bad} bytes differ from the pattern").into());
    }
    println!(
        "KPROBE mapped {} pages of dom{}: pattern ok",
        grefs.len(),
        o.peer
    );
    let ev = Evtchn::bind_interdomain("/dev/xen/evtchn", peer, Port(o.port))?;
    let mut rtts = Vec::with_capacity(o.rtt as usize);
    for n in 1..=o.rtt {
        let req = n as u32;
        let t = Instant::now();
        view.store_u32(8, req, Ordering::Release)?;
        ev.notify()?;
        let deadline = t + Duration::from_secs(10);
        while view.load_u32(12, Ordering::Acquire)? != req {
            if !ev.wait_until(Some(deadline))? {
                return Err(format!("no answer to request {req} within 10 s").into());
            }
            ev.drain()?;
        }
        rtts.push(t.elapsed());
    }
    rtts.sort();
    if let Some(p50) = rtts.get(rtts.len() / 2) {
        println!(
            "KPROBE {} rounds answered by the module's handler, p50 {} us",
            rtts.len(),
            p50.as_micros()
        );
        println!("FIGURE kprobe_rtt_us {} us", p50.as_micros());
    }
    if o.seconds > 0 {
        println!("KPROBE holding the mapping {} s", o.seconds);
        std::thread::sleep(Duration::from_secs(o.seconds));
    }
    drop(ev);
    drop(pages);
    println!("KPROBE_DONE unmapped");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let r = match (args.get(1).map(String::as_str), parse(args.get(2..).unwrap_or(&[]))) {
        (_, Err(e)) => Err(e),
        (Some("driver"), Ok(o)) => xen_side(&o, Role::Driver),
        (Some("instance"), Ok(o)) => xen_side(&o, Role::Instance),
        (Some("snoop"), Ok(o)) => snoop(&o),
        (Some("serve-ins"), Ok(o)) => serve_ins(&o),
        (Some("tcp-server"), Ok(o)) => tcp_server(&o),
        (Some("tcp-client"), Ok(o)) => TcpStream::connect(&o.addr).map_err(Into::into).and_then(|mut s| tcp_rtt_bulk(&mut s, &o)),
        (Some("local"), Ok(o)) => local(&o),
        (Some("kprobe-peer"), Ok(o)) => kprobe_peer(&o),
        _ => Err("usage: xenchan driver|instance|snoop|tcp-server|tcp-client|local|kprobe-peer [options] (see the source's docs)".into()),
    };
    if let Err(e) = r {
        eprintln!("xenchan: {e}");
        println!("XENCHAN_FAILED {e}");
        std::process::exit(1);
    }
}
