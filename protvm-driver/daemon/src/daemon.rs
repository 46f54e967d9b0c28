//! The event loop. See the crate docs for the picture.
//!
//! Epoll data words: the top byte is the kind ([`K_INST_BELL`] …), the rest
//! an instance number, shim connection number or socket handle. Socket
//! ends are edge-triggered: the relay reads until `EAGAIN` (or until the
//! instance's credit or the ring's space runs out; a `Credit` or a doorbell
//! then resumes it).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use driver_core::{
    Action, Config, ConnId, Driver, Handle, InstId, Note, Placement, ReplyFd, Violation,
};
use ins_protocol::control::{Control, MAX_PACKET, Op};
use ins_protocol::hello::{Hello, Role};
use ins_protocol::msg::{self, DATA_TO_PREFIX_LEN, HEADER_LEN, Msg, WireAddr};
use ins_protocol::ring::RingError;
use ins_transport::{ChannelConfig, Doorbell, Endpoint, EventFd};
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::net::{RecvFlags, SendFlags, Shutdown};
use tracing::{debug, info, warn};

use crate::Args;
use crate::shimio::{self, Packet};

mod ctl;
pub mod policy;
mod supervisor;

pub use ctl::parse_prefix;

const K_INST_LISTENER: u64 = 1 << 56;
const K_SHIM_LISTENER: u64 = 2 << 56;
const K_SIGNAL: u64 = 3 << 56;
const K_WAKE: u64 = 4 << 56;
const K_INST_BELL: u64 = 5 << 56;
const K_INST_CTL: u64 = 6 << 56;
const K_SHIM: u64 = 7 << 56;
const K_SOCK: u64 = 8 << 56;
const K_CTL_LISTENER: u64 = 9 << 56;
const K_CTL: u64 = 10 << 56;
const K_MON_LISTENER: u64 = 11 << 56;
const KIND: u64 = 0xff << 56;

/// Frames popped per instance before other work gets a turn.
const RX_BATCH: usize = 256;

struct Inst {
    ep: Endpoint,
    hello_id: u32,
    /// Control frames that did not fit the ring, in order.
    outq: VecDeque<Vec<u8>>,
    /// Sockets whose relay stopped for ring space.
    blocked: Vec<Handle>,
    dirty: bool,
    /// Largest `Data` payload we may push.
    max_payload: usize,
    /// Its pid (from the hello).
    pid: u32,
    /// When it joined.
    joined: Instant,
}

struct SockIo {
    drv: OwnedFd,
    stream: bool,
    /// App end kept by the driver: an accepted connection's until `Accept`,
    /// or the copy received with a non-blocking connect (filler).
    app: Option<OwnedFd>,
    filler: usize,
    old_sndbuf: usize,
    /// Instance bytes the pair did not take yet.
    inbuf: Vec<u8>,
    inbuf_off: usize,
    shut_after_drain: bool,
    tokens_owed: u32,
    /// A datagram waiting for credit.
    held: Option<Vec<u8>>,
    hup: bool,
}

struct Shim {
    fd: OwnedFd,
    pid: i32,
    uid: u32,
}

struct Daemon {
    core: Driver,
    epfd: OwnedFd,
    insts: HashMap<InstId, Inst>,
    socks: HashMap<Handle, SockIo>,
    shims: HashMap<ConnId, Shim>,
    next_conn: ConnId,
    actions: Vec<Action>,
    notes: Vec<Note>,
    resume: Vec<Handle>,
    scratch: Vec<u8>,
    frame_buf: Vec<u8>,
    ctl_buf: Vec<u8>,
    sock_dev: Option<u64>,
    start: Instant,
    max_shims: usize,
    ctl: ctl::Ctl,
    bal: ctl::Balancer,
    sup: supervisor::Supervisor,
    run_dir: std::path::PathBuf,
}

fn now_ns(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn add(ep: &OwnedFd, fd: BorrowedFd<'_>, data: u64, flags: EventFlags) -> io::Result<()> {
    epoll::add(ep, fd, EventData::new_u64(data), flags)?;
    Ok(())
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let sig = crate::sys::signal_fd().context("signalfd")?;
    std::fs::create_dir_all(&args.run_dir)
        .with_context(|| format!("create {}", args.run_dir.display()))?;
    let mode = u32::from_str_radix(&args.shim_mode, 8).context("--shim-mode is not octal")?;
    let cfg = ChannelConfig {
        ring_capacity: args.ring_capacity,
        max_frame: args.max_frame,
        handshake_timeout: Duration::from_millis(args.handshake_timeout_ms),
        ..ChannelConfig::default()
    };
    ins_transport::Layout::from_config(&cfg)
        .context("ring geometry (--ring-capacity, --max-frame)")?;
    let inst_path = args.run_dir.join("instance.sock");
    let shim_path = args.run_dir.join("shim.sock");
    let _ = std::fs::remove_file(&inst_path);
    let inst_listener =
        UnixListener::bind(&inst_path).with_context(|| format!("bind {}", inst_path.display()))?;
    inst_listener.set_nonblocking(true)?;
    let shim_listener = shimio::seqpacket_listener(&shim_path, mode)
        .with_context(|| format!("bind {}", shim_path.display()))?;
    let ctl_mode = u32::from_str_radix(&args.ctl_mode, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .context("--ctl-mode is not an octal mode")?;
    let pol = crate::policy_from_args(args)?;
    let ctl_path = args.run_dir.join("ctl.sock");
    let _ = std::fs::remove_file(&ctl_path);
    let ctl_listener =
        UnixListener::bind(&ctl_path).with_context(|| format!("bind {}", ctl_path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&ctl_path, std::fs::Permissions::from_mode(ctl_mode))
            .with_context(|| format!("chmod {}", ctl_path.display()))?;
    }
    ctl_listener.set_nonblocking(true)?;
    let monitor = monitor_listener(args)?;
    let mon_path = args.run_dir.join("monitor.sock");
    let wake = EventFd::new()?;
    let epfd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    add(
        &epfd,
        inst_listener.as_fd(),
        K_INST_LISTENER,
        EventFlags::IN,
    )?;
    add(
        &epfd,
        shim_listener.as_fd(),
        K_SHIM_LISTENER,
        EventFlags::IN,
    )?;
    add(&epfd, sig.as_fd(), K_SIGNAL, EventFlags::IN)?;
    add(&epfd, ctl_listener.as_fd(), K_CTL_LISTENER, EventFlags::IN)?;
    add(&epfd, wake.as_fd(), K_WAKE, EventFlags::IN)?;
    if let Some((l, _, _)) = &monitor {
        add(&epfd, l.as_fd(), K_MON_LISTENER, EventFlags::IN)?;
    }

    let core_cfg = Config {
        window: args.window,
        heartbeat_timeout_ns: args.heartbeat_timeout_ms.saturating_mul(1_000_000),
        placement: match args.placement {
            crate::PlacementArg::LeastBusy => Placement::LeastBusy,
            crate::PlacementArg::RoundRobin => Placement::RoundRobin,
        },
        max_sockets: args.max_sockets,
        ..Config::default()
    };
    let mut d = Daemon {
        core: Driver::new(core_cfg),
        epfd,
        insts: HashMap::new(),
        socks: HashMap::new(),
        shims: HashMap::new(),
        next_conn: 1,
        actions: Vec::with_capacity(64),
        notes: Vec::new(),
        resume: Vec::new(),
        scratch: vec![0u8; args.max_frame as usize],
        frame_buf: vec![0u8; args.max_frame as usize],
        ctl_buf: vec![0u8; MAX_PACKET + 1],
        sock_dev: None,
        start: Instant::now(),
        max_shims: args.max_shims,
        ctl: ctl::Ctl::new(
            ctl_listener,
            ctl::CtlConfig {
                mode: ctl_mode,
                monitor,
                flow_cap: args.flow_ring,
                max_out: args.monitor_buffer,
                max_line: args.ctl_max_line,
            },
        ),
        bal: ctl::Balancer::new(pol.clone(), args.instances),
        sup: supervisor::Supervisor::new(
            args.ins_bin.clone(),
            args.ins_arg.clone(),
            args.netns.clone(),
            &inst_path,
            &args.run_dir,
        ),
        run_dir: args.run_dir.clone(),
    };
    d.sup.random_profile = pol.rotate_s > 0;
    if d.sup.bin.is_none() && args.instances > 0 {
        anyhow::bail!("--instances needs --ins-bin (the driver spawns the instances)");
    }
    if args.instances > pol.max_instances {
        anyhow::bail!(
            "--instances {} is above max_instances = {}",
            args.instances,
            pol.max_instances
        );
    }
    d.balance();
    info!(
        instance_socket = %inst_path.display(),
        shim_socket = %shim_path.display(),
        window = args.window,
        ring_capacity = args.ring_capacity,
        max_frame = args.max_frame,
        "ins-driver listening"
    );

    let (tx, rx) = mpsc::channel::<(Endpoint, u32)>();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(1024);
    let tick = Duration::from_millis(100);
    let mut last_tick = Instant::now();
    'main: loop {
        let ts = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        events.clear();
        match epoll::wait(
            &d.epfd,
            rustix::buffer::spare_capacity(&mut events),
            Some(&ts),
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).context("epoll_wait"),
        }
        for ev in &events {
            let data = ev.data.u64();
            let flags = ev.flags;
            let id = data & !KIND;
            match data & KIND {
                K_SIGNAL => {
                    info!("signal received, shutting down");
                    break 'main;
                }
                K_WAKE => {
                    let _ = wake.drain();
                    while let Ok((ep, window)) = rx.try_recv() {
                        d.join(ep, window);
                    }
                }
                K_INST_LISTENER => loop {
                    match inst_listener.accept() {
                        Ok((stream, _)) => {
                            spawn_handshake(stream, cfg.clone(), args.window, tx.clone(), &wake)?
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            warn!(error = %e, "accept on the instance socket");
                            break;
                        }
                    }
                },
                K_SHIM_LISTENER => loop {
                    match shimio::accept(shim_listener.as_fd()) {
                        Ok(Some(fd)) => d.new_shim(fd)?,
                        Ok(None) => break,
                        Err(e) => {
                            warn!(error = %e, "accept on the shim socket");
                            break;
                        }
                    }
                },
                K_INST_BELL => d.instance_bell(id as InstId),
                K_INST_CTL => {
                    let inst = id as InstId;
                    // Deliver what it published before it went away.
                    d.instance_bell(inst);
                    d.fail_instance(inst, Violation::ChannelFailed);
                }
                K_SHIM => d.shim_readable(id),
                K_CTL_LISTENER => d.ctl_accept(false),
                K_MON_LISTENER => d.ctl_accept(true),
                K_CTL => d.ctl_readable(id),
                K_SOCK => {
                    let h = id as Handle;
                    if let Some(s) = d.socks.get_mut(&h)
                        && flags.contains(EventFlags::HUP)
                    {
                        s.hup = true;
                    }
                    if flags.contains(EventFlags::OUT) {
                        d.sock_writable(h);
                    }
                    if flags.intersects(
                        EventFlags::IN | EventFlags::HUP | EventFlags::RDHUP | EventFlags::ERR,
                    ) {
                        d.relay_out(h);
                    }
                }
                _ => {}
            }
        }
        d.run_resumes();
        if last_tick.elapsed() >= tick {
            last_tick = Instant::now();
            let now = now_ns(d.start);
            d.core.tick(now, &mut d.actions);
            d.apply(None, None);
            d.run_resumes();
            d.log_notes();
            d.balancer_tick();
        }
        d.flush_all();
        d.log_notes();
        d.ctl_flush();
        if d.ctl.shutdown {
            info!("shutdown requested on the control socket");
            break 'main;
        }
    }
    // Graceful exit: closing the channels makes every instance exit.
    let n = d.insts.len();
    d.insts.clear();
    d.socks.clear();
    d.shims.clear();
    d.sup.stop_all(Duration::from_secs(3));
    let _ = std::fs::remove_file(&ctl_path);
    if d.ctl.monitor.is_some() {
        let _ = std::fs::remove_file(&mon_path);
    }
    let _ = std::fs::remove_file(&shim_path);
    let _ = std::fs::remove_file(&inst_path);
    info!(instances = n, "ins-driver stopped");
    Ok(())
}

/// Binds `DIR/monitor.sock` with `--monitor-mode` and `--monitor-group`
/// (mode 0 turns it off). Returns the listener, its mode and group.
fn monitor_listener(args: &Args) -> anyhow::Result<Option<(UnixListener, u32, Option<u32>)>> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = u32::from_str_radix(&args.monitor_mode, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .context("--monitor-mode is not an octal mode")?;
    let group = match &args.monitor_group {
        None => None,
        Some(g) => Some(ctl::group_id(g).with_context(|| format!("--monitor-group {g}"))?),
    };
    let path = args.run_dir.join("monitor.sock");
    let _ = std::fs::remove_file(&path);
    if mode == 0 {
        return Ok(None);
    }
    let l = UnixListener::bind(&path).with_context(|| format!("bind {}", path.display()))?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(&path, None, Some(gid))
            .with_context(|| format!("chgrp {gid} {}", path.display()))?;
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    l.set_nonblocking(true)?;
    info!(path = %path.display(), mode = format!("{mode:o}"), group, "monitor socket");
    Ok(Some((l, mode, group)))
}

fn spawn_handshake(
    stream: UnixStream,
    cfg: ChannelConfig,
    window: u32,
    tx: mpsc::Sender<(Endpoint, u32)>,
    wake: &EventFd,
) -> anyhow::Result<()> {
    let wake_fd = wake.as_fd().try_clone_to_owned()?;
    std::thread::Builder::new()
        .name("ins-handshake".into())
        .spawn(move || {
            let mut hello = Hello::new(Role::Driver);
            hello.window = window;
            let r = ins_transport::offer_channel(stream, &cfg)
                .and_then(|raw| raw.handshake(hello, cfg.handshake_timeout));
            match r {
                Ok(ep) => {
                    let id = ep.peer.instance_id;
                    if tx.send((ep, id)).is_ok() {
                        let _ = rustix::io::write(&wake_fd, &1u64.to_ne_bytes());
                    }
                }
                Err(e) => warn!(error = %e, "instance handshake failed"),
            }
        })?;
    Ok(())
}

impl Daemon {
    fn now(&self) -> u64 {
        now_ns(self.start)
    }

    fn join(&mut self, ep: Endpoint, hello_id: u32) {
        let peer_pid = ep.peer.pid;
        let mut window = ep.peer.window;
        if window == 0 {
            warn!(
                hello_id,
                "instance announced a zero window; using the driver's window"
            );
            window = self.core.config().window;
        }
        let now = self.now();
        let inst = self.core.instance_joined(now, window, &mut self.actions);
        let Some(bell) = ep.rx_bell.as_raw_fd() else {
            warn!("doorbell without fd");
            return;
        };
        let _ = bell;
        let max_payload = ep.tx.config().max_frame as usize - HEADER_LEN;
        let r = add(
            &self.epfd,
            ep.rx_bell.as_fd(),
            K_INST_BELL | u64::from(inst),
            EventFlags::IN,
        )
        .and_then(|()| {
            add(
                &self.epfd,
                ep.control.as_fd(),
                K_INST_CTL | u64::from(inst),
                EventFlags::RDHUP | EventFlags::IN,
            )
        });
        info!(
            inst,
            hello_id,
            pid = ep.peer.pid,
            window,
            max_sockets = ep.peer.max_sockets,
            "instance joined"
        );
        self.insts.insert(
            inst,
            Inst {
                ep,
                hello_id,
                outq: VecDeque::new(),
                blocked: Vec::new(),
                dirty: false,
                max_payload,
                pid: peer_pid,
                joined: Instant::now(),
            },
        );
        if let Some(k) = self.sup.by_tag(hello_id)
            && k.inst.is_none()
        {
            k.inst = Some(inst);
        }
        if let Err(e) = r {
            warn!(inst, error = %e, "epoll registration");
            self.fail_instance(inst, Violation::ChannelFailed);
            return;
        }
        self.apply(None, None);
        self.ctl_instance_event(
            "joined",
            Some(inst),
            serde_json::json!({"tag": hello_id, "pid": peer_pid}),
        );
        self.ctl_replay(inst);
        self.instance_bell(inst);
    }

    fn fail_instance(&mut self, inst: InstId, why: Violation) {
        self.core.instance_failed(inst, why, &mut self.actions);
        self.apply(None, None);
    }

    fn log_notes(&mut self) {
        self.core.take_notes(&mut self.notes);
        let mut notes = std::mem::take(&mut self.notes);
        for n in notes.drain(..) {
            match n {
                Note::InstanceDied { inst, why, reset } => {
                    warn!(inst, %why, connections_reset = reset, event = "instance-dead", "instance declared dead");
                    self.ctl_instance_event(
                        "died",
                        Some(inst),
                        serde_json::json!({"why": why.to_string(), "connections_reset": reset}),
                    );
                }
                Note::InternalFailed { inst, sock, errno } => {
                    warn!(inst, sock, errno, "internal request failed on instance")
                }
                Note::Replicated { inst, sock } => info!(inst, sock, "listener replicated"),
                Note::MitigateDone { inst, tag, errno } => self.ctl_mitigate_done(inst, tag, errno),
            }
        }
        self.notes = notes;
    }

    // ----- shims -----

    fn new_shim(&mut self, fd: OwnedFd) -> anyhow::Result<()> {
        let cred = rustix::net::sockopt::socket_peercred(&fd).ok();
        let (pid, uid) = cred.map_or((0, 0), |c| (c.pid.as_raw_nonzero().get(), c.uid.as_raw()));
        if self.shims.len() >= self.max_shims {
            warn!(pid, uid, "too many shim connections; refused");
            return Ok(());
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        add(
            &self.epfd,
            fd.as_fd(),
            K_SHIM | conn,
            EventFlags::IN | EventFlags::RDHUP | EventFlags::ET,
        )?;
        info!(conn, pid, uid, "shim connected");
        self.shims.insert(conn, Shim { fd, pid, uid });
        Ok(())
    }

    fn drop_shim(&mut self, conn: ConnId) {
        if let Some(s) = self.shims.remove(&conn) {
            let _ = epoll::delete(&self.epfd, &s.fd);
            debug!(conn, pid = s.pid, uid = s.uid, "shim disconnected");
        }
    }

    fn shim_readable(&mut self, conn: ConnId) {
        loop {
            let Some(shim) = self.shims.get(&conn) else {
                return;
            };
            let mut buf = std::mem::take(&mut self.ctl_buf);
            let r = shimio::recv_packet(shim.fd.as_fd(), &mut buf);
            let keep = match r {
                Ok(Packet::None) => {
                    self.ctl_buf = buf;
                    return;
                }
                Ok(Packet::Closed) | Err(_) => {
                    self.ctl_buf = buf;
                    self.drop_shim(conn);
                    return;
                }
                Ok(Packet::Data { len, fd, bad }) => {
                    let ok = !bad && len <= MAX_PACKET;
                    match (ok, Control::decode(&buf[..len])) {
                        (true, Ok(req)) if req.status == 0 => {
                            self.shim_request(conn, &req, fd);
                            true
                        }
                        _ => {
                            warn!(conn, "malformed shim request; connection closed");
                            false
                        }
                    }
                }
            };
            self.ctl_buf = buf;
            if !keep {
                self.drop_shim(conn);
                return;
            }
        }
    }

    fn reply_now(
        &mut self,
        conn: ConnId,
        req: &Control<'_>,
        status: i32,
        pass: Option<BorrowedFd<'_>>,
    ) {
        let mut r = Control::reply_to(req, status);
        r.args = [0; 4];
        self.send_reply(conn, &r, pass);
    }

    fn send_reply(&self, conn: ConnId, r: &Control<'_>, pass: Option<BorrowedFd<'_>>) {
        let Some(shim) = self.shims.get(&conn) else {
            return;
        };
        let mut out = [0u8; MAX_PACKET];
        match r.encode(&mut out) {
            Ok(n) => {
                if let Err(e) = shimio::send_packet(shim.fd.as_fd(), &out[..n], pass) {
                    debug!(conn, error = %e, "reply to shim lost");
                }
            }
            Err(e) => warn!(conn, error = %e, "reply encoding"),
        }
    }

    fn shim_request(&mut self, conn: ConnId, req: &Control<'_>, fd: Option<OwnedFd>) {
        if req.op == Op::Socket {
            self.op_socket(conn, req);
            return;
        }
        let Some(fd) = fd else {
            self.reply_now(conn, req, driver_core::errno::EBADF, None);
            return;
        };
        let sock = match shimio::socket_id(fd.as_fd()) {
            Ok(Some((dev, ino))) if Some(dev) == self.sock_dev => self.core.lookup_inode(ino),
            _ => None,
        };
        self.core.shim_request(conn, req, sock, &mut self.actions);
        self.apply(Some(fd.as_fd()), sock);
    }

    fn op_socket(&mut self, conn: ConnId, req: &Control<'_>) {
        let [domain, ty, proto, _] = req.args;
        let stream = ty == 1;
        let (drv, app) = match shimio::pair(stream) {
            Ok(p) => p,
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(driver_core::errno::EIO);
                self.reply_now(conn, req, errno, None);
                return;
            }
        };
        let (dev, ino) = match shimio::socket_id(app.as_fd()) {
            Ok(Some(id)) => id,
            _ => {
                self.reply_now(conn, req, driver_core::errno::EIO, None);
                return;
            }
        };
        self.sock_dev.get_or_insert(dev);
        match self.core.new_socket(ino, domain, ty, proto) {
            Ok(h) => {
                if let Err(e) = self.register_sock(h, drv, stream, None) {
                    warn!(error = %e, "epoll registration of a socket");
                    self.core.app_eof(h, true, &mut self.actions);
                    self.apply(None, None);
                    self.reply_now(conn, req, driver_core::errno::ENOMEM, None);
                    return;
                }
                self.reply_now(conn, req, 0, Some(app.as_fd()));
                debug!(conn, sock = h, domain, ty, "socket");
            }
            Err(errno) => self.reply_now(conn, req, errno, None),
        }
    }

    fn register_sock(
        &mut self,
        h: Handle,
        drv: OwnedFd,
        stream: bool,
        app: Option<OwnedFd>,
    ) -> io::Result<()> {
        add(
            &self.epfd,
            drv.as_fd(),
            K_SOCK | u64::from(h),
            EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET,
        )?;
        self.socks.insert(
            h,
            SockIo {
                drv,
                stream,
                app,
                filler: 0,
                old_sndbuf: 0,
                inbuf: Vec::new(),
                inbuf_off: 0,
                shut_after_drain: false,
                tokens_owed: 0,
                held: None,
                hup: false,
            },
        );
        Ok(())
    }

    // ----- actions -----

    /// Carries out the queued actions. `req_fd`/`req_sock`: the fd received
    /// with the shim request being handled, and its socket.
    fn apply(&mut self, req_fd: Option<BorrowedFd<'_>>, req_sock: Option<Handle>) {
        let mut i = 0;
        while i < self.actions.len() {
            let a = self.actions[i];
            i += 1;
            match a {
                Action::Send { inst, frame } => self.send_frame(inst, &frame),
                Action::Reply(r) => {
                    if r.ctl.op == Op::Connect
                        && r.ctl.status == driver_core::errno::EINPROGRESS
                        && let (Some(fd), Some(h)) = (req_fd, req_sock)
                    {
                        self.start_filler(h, fd);
                    }
                    match r.fd {
                        ReplyFd::None => self.send_reply(r.conn, &r.ctl.borrowed(), None),
                        ReplyFd::AppEnd(c) => {
                            let app = self.socks.get_mut(&c).and_then(|s| s.app.take());
                            match app {
                                Some(app) => {
                                    self.send_reply(r.conn, &r.ctl.borrowed(), Some(app.as_fd()))
                                }
                                None => {
                                    let mut c2 = r.ctl;
                                    c2.status = driver_core::errno::EAGAIN;
                                    self.send_reply(r.conn, &c2.borrowed(), None);
                                }
                            }
                        }
                    }
                }
                Action::NewConnection { sock, listener } => self.new_connection(sock, listener),
                Action::Token { listener } => {
                    if let Some(s) = self.socks.get_mut(&listener) {
                        s.tokens_owed += 1;
                    }
                    self.sock_writable(listener);
                }
                Action::ConnectDone { sock, errno } => {
                    if let Some(s) = self.socks.get_mut(&sock) {
                        if let Some(app) = s.app.take()
                            && let Err(e) =
                                shimio::unfill(s.drv.as_fd(), app.as_fd(), s.filler, s.old_sndbuf)
                        {
                            warn!(sock, error = %e, "undoing the connect filler");
                        }
                        s.filler = 0;
                        if errno != 0 {
                            let _ = rustix::net::shutdown(&s.drv, Shutdown::Write);
                        }
                    }
                }
                Action::PeerEof { sock } => {
                    if let Some(s) = self.socks.get_mut(&sock) {
                        if s.inbuf.len() == s.inbuf_off {
                            let _ = rustix::net::shutdown(&s.drv, Shutdown::Write);
                        } else {
                            s.shut_after_drain = true;
                        }
                    }
                }
                Action::PeerReset { sock, errno } => {
                    if let Some(s) = self.socks.get_mut(&sock) {
                        debug!(sock, errno, "reset");
                        s.inbuf = Vec::new();
                        s.inbuf_off = 0;
                        s.held = None;
                        let _ = rustix::net::shutdown(&s.drv, Shutdown::Write);
                    }
                    // Read (and discard) what the app still writes, and
                    // notice its close.
                    self.resume.push(sock);
                }
                Action::AppShutdownWrite { .. } => {
                    if let Some(fd) = req_fd {
                        let _ = rustix::net::shutdown(fd, Shutdown::Write);
                    }
                }
                Action::Resume { sock } => self.resume.push(sock),
                Action::Forget { sock } => {
                    if let Some(s) = self.socks.remove(&sock) {
                        let _ = epoll::delete(&self.epfd, &s.drv);
                    }
                }
                Action::InstanceDead { inst } => {
                    if let Some(x) = self.insts.remove(&inst) {
                        let _ = epoll::delete(&self.epfd, x.ep.rx_bell.as_fd());
                        let _ = epoll::delete(&self.epfd, &x.ep.control);
                        warn!(inst, hello_id = x.hello_id, "instance channel closed");
                    }
                }
            }
        }
        self.actions.clear();
    }

    fn start_filler(&mut self, h: Handle, fd: BorrowedFd<'_>) {
        let Some(s) = self.socks.get_mut(&h) else {
            return;
        };
        let Ok(copy) = fd.try_clone_to_owned() else {
            return;
        };
        match shimio::fill(copy.as_fd()) {
            Ok((filler, old)) => {
                s.filler = filler;
                s.old_sndbuf = old;
                s.app = Some(copy);
            }
            Err(e) => warn!(sock = h, error = %e, "connect filler"),
        }
    }

    fn new_connection(&mut self, sock: Handle, listener: Handle) {
        let made = shimio::pair(true).and_then(|(drv, app)| {
            let id =
                shimio::socket_id(app.as_fd())?.ok_or_else(|| io::Error::other("not a socket"))?;
            Ok((drv, app, id.1))
        });
        match made {
            Ok((drv, app, ino)) => {
                self.core.attach_inode(sock, ino);
                if let Err(e) = self.register_sock(sock, drv, true, Some(app)) {
                    warn!(sock, error = %e, "epoll registration");
                    self.core.connection_failed(sock, &mut self.actions);
                }
                let inst = self.core.socket(sock).and_then(|i| i.inst);
                debug!(sock, listener, inst, "connection announced");
            }
            Err(e) => {
                warn!(sock, error = %e, "socket pair for an accepted connection");
                self.core.connection_failed(sock, &mut self.actions);
            }
        }
    }

    fn send_frame(&mut self, inst: InstId, frame: &ins_protocol::msg::OwnedMsg) {
        let Some(x) = self.insts.get_mut(&inst) else {
            return;
        };
        let mut buf = [0u8; HEADER_LEN + 80 + msg::MAX_OPT_LEN];
        let n = match frame.encode(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                warn!(inst, error = %e, ?frame, "frame encoding");
                return;
            }
        };
        x.dirty = true;
        if x.outq.is_empty() {
            match x.ep.tx.try_push(&buf[..n]) {
                Ok(()) => return,
                Err(RingError::Full) => {}
                Err(e) => {
                    warn!(inst, error = %e, "ring push");
                    self.fail_instance(inst, Violation::ChannelFailed);
                    return;
                }
            }
        }
        x.outq.push_back(buf[..n].to_vec());
        let _ = x.ep.tx.flush();
        let _ = x.ep.tx.prepare_wait_space(n);
    }

    fn flush_all(&mut self) {
        let mut failed = Vec::new();
        for (&id, x) in self.insts.iter_mut() {
            if !x.dirty {
                continue;
            }
            x.dirty = false;
            match x.ep.tx.flush() {
                Ok(true) => {
                    if let Err(e) = x.ep.tx_bell.notify() {
                        warn!(inst = id, error = %e, "doorbell");
                    }
                }
                Ok(false) => {}
                Err(_) => failed.push(id),
            }
        }
        for id in failed {
            self.fail_instance(id, Violation::ChannelFailed);
        }
    }

    fn run_resumes(&mut self) {
        while let Some(h) = self.resume.pop() {
            self.relay_out(h);
        }
        self.flush_all();
    }

    // ----- instance → app -----

    fn instance_bell(&mut self, inst: InstId) {
        let Some(x) = self.insts.get_mut(&inst) else {
            return;
        };
        let _ = x.ep.rx_bell.drain();
        // Ring space may have come back.
        while let Some(f) = x.outq.front() {
            match x.ep.tx.try_push(f) {
                Ok(()) => {
                    x.outq.pop_front();
                    x.dirty = true;
                }
                Err(RingError::Full) => {
                    let need = f.len();
                    let _ = x.ep.tx.flush();
                    if let Ok(true) = x.ep.tx.prepare_wait_space(need) {
                        continue;
                    }
                    break;
                }
                Err(_) => {
                    self.fail_instance(inst, Violation::ChannelFailed);
                    return;
                }
            }
        }
        if x.outq.is_empty() {
            self.resume.append(&mut x.blocked);
        }
        let mut buf = std::mem::take(&mut self.frame_buf);
        let mut failed = None;
        'outer: loop {
            let mut count = 0;
            while count < RX_BATCH {
                let Some(x) = self.insts.get_mut(&inst) else {
                    break 'outer;
                };
                let n = match x.ep.rx.pop(&mut buf) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(e) => {
                        warn!(inst, error = %e, "ring from instance");
                        failed = Some(Violation::ChannelFailed);
                        break 'outer;
                    }
                };
                count += 1;
                let m = match Msg::decode(&buf[..n]) {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(inst, error = %e, "undecodable frame from instance");
                        failed = Some(Violation::ChannelFailed);
                        break 'outer;
                    }
                };
                let now = now_ns(self.start);
                match self.core.instance_frame(inst, &m, now, &mut self.actions) {
                    Ok(Some(h)) => self.deliver(h, &m),
                    Ok(None) => {}
                    Err(v) => {
                        warn!(inst, violation = %v, "instance broke the protocol");
                    }
                }
                if let Msg::Flow(ref r) = m {
                    debug!(inst, ?r, "flow record");
                    self.ctl_flow(inst, *r);
                }
                self.apply(None, None);
            }
            let Some(x) = self.insts.get_mut(&inst) else {
                break;
            };
            match x.ep.rx.release() {
                Ok(true) => {
                    let _ = x.ep.tx_bell.notify();
                }
                Ok(false) => {}
                Err(_) => {
                    failed = Some(Violation::ChannelFailed);
                    break;
                }
            }
            if count == RX_BATCH {
                continue;
            }
            match x.ep.rx.prepare_wait() {
                Ok(true) => continue,
                Ok(false) => break,
                Err(_) => {
                    failed = Some(Violation::ChannelFailed);
                    break;
                }
            }
        }
        self.frame_buf = buf;
        if let Some(v) = failed {
            self.fail_instance(inst, v);
        }
    }

    /// Writes instance bytes into the pair (what does not fit is buffered;
    /// the core bounded it by the window).
    fn deliver(&mut self, h: Handle, m: &Msg<'_>) {
        let Some(s) = self.socks.get_mut(&h) else {
            return;
        };
        match *m {
            Msg::Data { bytes, .. } => {
                let mut written = 0;
                if s.inbuf.len() == s.inbuf_off {
                    while written < bytes.len() {
                        match rustix::io::write(&s.drv, &bytes[written..]) {
                            Ok(n) => written += n,
                            Err(rustix::io::Errno::INTR) => {}
                            Err(rustix::io::Errno::AGAIN) => break,
                            Err(_) => {
                                // The app is gone; the hang-up closes it.
                                written = bytes.len();
                                break;
                            }
                        }
                    }
                }
                if written < bytes.len() {
                    if s.inbuf_off > 0 && s.inbuf_off == s.inbuf.len() {
                        s.inbuf.clear();
                        s.inbuf_off = 0;
                    }
                    s.inbuf.extend_from_slice(&bytes[written..]);
                }
                let drained = s.inbuf.len() == s.inbuf_off;
                self.core
                    .delivered(h, written as u32, drained, &mut self.actions);
            }
            Msg::DataTo { addr, bytes, .. } => {
                let wa = WireAddr::from(addr);
                let r = rustix::net::sendmsg(
                    &s.drv,
                    &[
                        io::IoSlice::new(zerocopy_bytes(&wa)),
                        io::IoSlice::new(bytes),
                    ],
                    &mut rustix::net::SendAncillaryBuffer::default(),
                    SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
                );
                if let Err(e) = r {
                    debug!(sock = h, error = %e, "datagram dropped (app queue full)");
                }
                self.core
                    .delivered(h, bytes.len() as u32, true, &mut self.actions);
            }
            _ => {}
        }
    }

    fn sock_writable(&mut self, h: Handle) {
        let Some(s) = self.socks.get_mut(&h) else {
            return;
        };
        while s.tokens_owed > 0 {
            match rustix::io::write(&s.drv, &[1u8]) {
                Ok(_) => s.tokens_owed -= 1,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => break,
            }
        }
        let mut written = 0usize;
        while s.inbuf_off < s.inbuf.len() {
            match rustix::io::write(&s.drv, &s.inbuf[s.inbuf_off..]) {
                Ok(n) => {
                    s.inbuf_off += n;
                    written += n;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => break,
                Err(_) => {
                    written += s.inbuf.len() - s.inbuf_off;
                    s.inbuf_off = s.inbuf.len();
                }
            }
        }
        let drained = s.inbuf_off == s.inbuf.len();
        if drained && !s.inbuf.is_empty() {
            s.inbuf = Vec::new();
            s.inbuf_off = 0;
        }
        if drained && s.shut_after_drain {
            s.shut_after_drain = false;
            let _ = rustix::net::shutdown(&s.drv, Shutdown::Write);
        }
        if written > 0 {
            self.core
                .delivered(h, written as u32, drained, &mut self.actions);
            self.apply(None, None);
        }
    }

    // ----- app → instance -----

    fn relay_out(&mut self, h: Handle) {
        let Some(stream) = self.socks.get(&h).map(|s| s.stream) else {
            return;
        };
        if stream {
            self.relay_stream(h);
        } else {
            self.relay_dgram(h);
        }
        if !self.actions.is_empty() {
            self.apply(None, None);
        }
    }

    fn relay_stream(&mut self, h: Handle) {
        loop {
            let credit = self.core.send_credit(h, &mut self.actions);
            let Some(s) = self.socks.get_mut(&h) else {
                return;
            };
            let Some((inst, wire, credit)) = credit else {
                // Not connected: read only to discard after a reset and to
                // notice the app's close.
                if self
                    .core
                    .socket(h)
                    .is_some_and(|i| i.state == driver_core::SockState::Dead)
                {
                    loop {
                        match rustix::io::read(&s.drv, &mut self.scratch[..]) {
                            Ok(0) => {
                                let hup = s.hup || shimio::hung_up(s.drv.as_fd());
                                if hup {
                                    self.core.app_eof(h, true, &mut self.actions);
                                }
                                return;
                            }
                            Ok(_) => {}
                            Err(rustix::io::Errno::INTR) => {}
                            Err(_) => return,
                        }
                    }
                }
                // A listener or a socket never connected: the app's close
                // shows as hang-up (a listener's end carries only tokens).
                if (s.hup || shimio::hung_up(s.drv.as_fd())) && s.filler == 0 {
                    self.core.app_eof(h, true, &mut self.actions);
                }
                return;
            };
            if credit == 0 {
                return;
            }
            let Some(x) = self.insts.get_mut(&inst) else {
                return;
            };
            if !x.outq.is_empty() {
                if !x.blocked.contains(&h) {
                    x.blocked.push(h);
                }
                return;
            }
            let space = match x.ep.tx.free_frame_space() {
                Ok(sp) => sp,
                Err(_) => return,
            };
            let max = (credit as usize)
                .min(x.max_payload)
                .min(space.saturating_sub(HEADER_LEN));
            if max == 0 {
                let _ = x.ep.tx.flush();
                x.dirty = true;
                match x.ep.tx.prepare_wait_space(HEADER_LEN + 1) {
                    Ok(true) => continue,
                    _ => {
                        if !x.blocked.contains(&h) {
                            x.blocked.push(h);
                        }
                        return;
                    }
                }
            }
            let n = match rustix::io::read(&s.drv, &mut self.scratch[..max]) {
                Ok(0) => {
                    let hup = s.hup || shimio::hung_up(s.drv.as_fd());
                    self.core.app_eof(h, hup, &mut self.actions);
                    return;
                }
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => return,
            };
            let mut hdr = [0u8; HEADER_LEN];
            if msg::encode_data_header(wire, n, &mut hdr).is_err() {
                return;
            }
            match x.ep.tx.try_push_parts(&[&hdr, &self.scratch[..n]]) {
                Ok(()) => {
                    x.dirty = true;
                    self.core.consume_credit(h, n as u32);
                }
                Err(e) => {
                    // Space was checked; only a corrupt ring gets here.
                    warn!(inst, error = %e, "ring push");
                    self.fail_instance(inst, Violation::ChannelFailed);
                    return;
                }
            }
        }
    }

    fn relay_dgram(&mut self, h: Handle) {
        loop {
            let Some(s) = self.socks.get_mut(&h) else {
                return;
            };
            // A held datagram first, else the next one from the pair.
            let len = if let Some(held) = s.held.take() {
                let n = held.len();
                self.scratch[..n].copy_from_slice(&held);
                n
            } else {
                match rustix::net::recv(
                    &s.drv,
                    &mut self.scratch[..],
                    RecvFlags::DONTWAIT | RecvFlags::TRUNC,
                ) {
                    Ok((_, 0)) => {
                        let hup = s.hup || shimio::hung_up(s.drv.as_fd());
                        if hup {
                            self.core.app_eof(h, true, &mut self.actions);
                        }
                        return;
                    }
                    Ok((_, full)) if full > self.scratch.len() => continue, // too big: dropped
                    Ok((n, _)) => n,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(_) => return,
                }
            };
            if len < WireAddr::LEN {
                continue; // malformed from the app: dropped
            }
            let Ok(addr) = WireAddr::parse(&self.scratch[..WireAddr::LEN]) else {
                continue;
            };
            let payload = len - WireAddr::LEN;
            let credit = self.core.send_credit(h, &mut self.actions);
            let Some(s) = self.socks.get_mut(&h) else {
                return;
            };
            let Some((inst, wire, credit)) = credit else {
                if self.core.socket(h).is_some() {
                    // Not placed (no instance): keep it until one is.
                    s.held = Some(self.scratch[..len].to_vec());
                }
                return;
            };
            let Some(x) = self.insts.get_mut(&inst) else {
                s.held = Some(self.scratch[..len].to_vec());
                return;
            };
            // Frames queued for ring space (e.g. the Open) go first.
            if !x.outq.is_empty() || (payload as u32) > credit {
                s.held = Some(self.scratch[..len].to_vec());
                if !x.outq.is_empty() && !x.blocked.contains(&h) {
                    x.blocked.push(h);
                }
                return;
            }
            if payload + DATA_TO_PREFIX_LEN > x.max_payload + HEADER_LEN {
                continue; // larger than a frame: dropped
            }
            let mut pre = [0u8; DATA_TO_PREFIX_LEN];
            if msg::encode_data_to_header(wire, addr, payload, &mut pre).is_err() {
                continue;
            }
            match x
                .ep
                .tx
                .try_push_parts(&[&pre, &self.scratch[WireAddr::LEN..len]])
            {
                Ok(()) => {
                    x.dirty = true;
                    self.core.consume_credit(h, payload as u32);
                }
                Err(RingError::Full) => {
                    s.held = Some(self.scratch[..len].to_vec());
                    let _ = x.ep.tx.flush();
                    x.dirty = true;
                    if !matches!(
                        x.ep.tx.prepare_wait_space(payload + DATA_TO_PREFIX_LEN),
                        Ok(true)
                    ) {
                        if !x.blocked.contains(&h) {
                            x.blocked.push(h);
                        }
                        return;
                    }
                }
                Err(_) => {
                    self.fail_instance(inst, Violation::ChannelFailed);
                    return;
                }
            }
            if !self.actions.is_empty() {
                self.apply(None, None);
            }
        }
    }
}

fn zerocopy_bytes(wa: &WireAddr) -> &[u8] {
    zerocopy::IntoBytes::as_bytes(wa)
}
