//! The daemon: one host of [`driver_core`] on one Linux machine. It owns
//! the tables that carry the core's decisions out and the sockets that
//! bring it events.
//!
//! | module | owns |
//! |---|---|
//! | this file | [`Daemon`]'s fields, startup (sockets, permissions, policy) and shutdown |
//! | [`event_loop`] | the epoll set and its tokens, the loop, the tick |
//! | [`host`] | the core's host traits over the daemon's tables ([`Daemon::apply`]), notes out |
//! | [`shim`] | shim connections: requests in, `socket()`, replies out with fds |
//! | [`instances`] | instance channels: handshakes, joins, frames out (and their overflow queue), frames in, failures |
//! | [`relay`] | the socket pairs and the bytes between them and the rings, per socket |
//! | [`ctl`] | `ctl.sock` / `monitor.sock`: connections, request parsing ([`ctl::command`]) and execution ([`ctl::exec`]), the monitor stream ([`ctl::monitor`]), mitigations ([`ctl::mitigation`]) |
//! | [`balancer`] | the target instance count, retirement, autoscale, rotation |
//! | [`supervisor`] | `ins` child processes |
//! | [`policy`] | the balancer's policy file |
//! | [`metrics`] | `GET /metrics` (Prometheus text format) on `--metrics` |
//! | [`xen`] | instances in other Xen domains: `attach-xen`, its offer threads, their channel names |
//!
//! One thread runs everything except instance handshakes (they block for
//! up to the handshake timeout, so each runs on a short-lived thread and
//! hands its endpoint back through a channel and the wake-up eventfd) and
//! Xen channels (offered, then torn down, on a thread each).

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use driver_core::{Action, Config, ConnId, Driver, Handle, InstId, Placement};
use ins_protocol::control::MAX_PACKET;
use ins_transport::{ChannelConfig, EventFd};
use rustix::event::epoll;
use tracing::info;

use crate::Args;
use crate::shimio;

mod balancer;
mod ctl;
mod event_loop;
mod host;
mod instances;
mod metrics;
pub mod policy;
mod relay;
mod shim;
mod supervisor;
mod xen;

pub use ctl::command::parse_prefix;

/// The daemon's state: the core and the tables of everything the core
/// names by number.
struct Daemon {
    /// The decisions.
    core: Driver,
    /// The epoll set ([`event_loop`]).
    epfd: OwnedFd,
    /// Instance channels by core instance number ([`instances`]).
    insts: HashMap<InstId, instances::Inst>,
    /// Socket pairs by core handle ([`relay`]).
    socks: HashMap<Handle, relay::SockIo>,
    /// Shim connections ([`shim`]).
    shims: HashMap<ConnId, shim::Shim>,
    next_conn: ConnId,
    /// The core's actions, reused ([`host`]).
    actions: Vec<Action>,
    /// Sockets whose app end must be read again ([`relay`]).
    resume: Vec<Handle>,
    /// Reset streams whose driver end is shut both ways (so the app's
    /// writes fail with EPIPE): hang-up no longer tells the app's close,
    /// so each tick looks for their app ends in `/proc/net/unix`.
    reset_watch: Vec<Handle>,
    /// App datagrams the relay could not send (see `app_dgram_dropped`).
    app_dgrams_dropped: u64,
    /// Relay buffer: app bytes on their way into a ring.
    scratch: Vec<u8>,
    /// A frame popped from a ring (the private copy that is decoded).
    frame_buf: Vec<u8>,
    /// A shim packet.
    ctl_buf: Vec<u8>,
    /// `st_dev` of socket-pair inodes (all pairs share it).
    sock_dev: Option<u64>,
    /// Zero of the core's clock.
    start: Instant,
    max_shims: usize,
    /// `--app-sndbuf` (resolved).
    app_sndbuf: usize,
    ctl: ctl::Ctl,
    bal: balancer::Balancer,
    sup: supervisor::Supervisor,
    run_dir: PathBuf,
    /// The `/metrics` endpoint (`--metrics`).
    metrics: Option<metrics::Metrics>,
    /// Instances in other Xen domains ([`xen`]).
    xen: xen::XenInstances,
}

/// Nanoseconds since `start`: the time the core is given.
fn now_ns(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Runs the daemon until SIGTERM/SIGINT or a `shutdown` request.
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
    chgrp(&shim_path, args.shim_group.as_deref(), "--shim-group")?;
    let ctl_mode = u32::from_str_radix(&args.ctl_mode, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .context("--ctl-mode is not an octal mode")?;
    let pol = crate::policy_from_args(args)?;
    let ctl_path = args.run_dir.join("ctl.sock");
    let _ = std::fs::remove_file(&ctl_path);
    let ctl_listener =
        UnixListener::bind(&ctl_path).with_context(|| format!("bind {}", ctl_path.display()))?;
    chgrp(&ctl_path, args.ctl_group.as_deref(), "--ctl-group")?;
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

    let core_cfg = Config {
        window: args.window,
        heartbeat_timeout_ns: args.heartbeat_timeout_ms.saturating_mul(1_000_000),
        placement: match args.placement {
            crate::PlacementArg::LeastBusy => Placement::LeastBusy,
            crate::PlacementArg::RoundRobin => Placement::RoundRobin,
        },
        max_sockets: args.max_sockets,
        // The instances run on this kernel: an IPv6 socket that does not
        // set IPV6_V6ONLY gets this default there.
        bindv6only: std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only")
            .is_ok_and(|v| v.trim() == "1"),
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
        resume: Vec::new(),
        reset_watch: Vec::new(),
        app_dgrams_dropped: 0,
        scratch: vec![0u8; args.max_frame as usize],
        frame_buf: vec![0u8; args.max_frame as usize],
        ctl_buf: vec![0u8; MAX_PACKET + 1],
        sock_dev: None,
        start: Instant::now(),
        max_shims: args.max_shims,
        app_sndbuf: args.app_sndbuf.unwrap_or_else(shimio::tcp_wmem_max),
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
        bal: balancer::Balancer::new(pol.clone(), args.instances),
        sup: supervisor::Supervisor::new(
            args.ins_bin.clone(),
            instance_args(args),
            args.netns.clone(),
            &inst_path,
            &args.run_dir,
        ),
        run_dir: args.run_dir.clone(),
        xen: xen::XenInstances::new(
            &wake,
            cfg.clone(),
            xen::SpawnTimes {
                agent: Duration::from_millis(args.xen_agent_timeout_ms),
                rendezvous: Duration::from_millis(args.xen_rendezvous_ms),
                teardown: Duration::from_millis(args.xen_teardown_ms),
            },
        )
        .context("xen attach state")?,
        metrics: match args.metrics {
            None => None,
            Some(addr) => Some(
                metrics::Metrics::bind(
                    addr,
                    metrics::MetricsConfig {
                        max_clients: args.metrics_max_clients,
                        max_request: args.metrics_max_request,
                        timeout: Duration::from_millis(args.metrics_timeout_ms),
                    },
                )
                .with_context(|| format!("--metrics {addr}"))?,
            ),
        },
    };
    let sources = event_loop::Sources {
        sig,
        wake,
        inst_listener,
        shim_listener,
        channel: cfg,
        window: args.window,
    };
    d.register_sources(&sources)?;
    drop_privileges(args)?;
    d.sup.random_profile = pol.rotate_s > 0;
    d.sup.xen = xen_spawn(args)?;
    if !d.sup.can_spawn() && args.instances > 0 {
        anyhow::bail!(
            "--instances needs --ins-bin or --xen-spawn (the driver spawns the instances)"
        );
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

    d.serve(&sources)?;

    // Graceful exit: closing the channels makes every instance exit.
    let n = d.insts.len();
    d.insts.clear();
    d.xen.wait_torn_down();
    d.socks.clear();
    d.shims.clear();
    let doomed = d.sup.stop_all(Duration::from_secs(3));
    // The requests stay for the agent if its answers take longer.
    d.xen_destroy_all(doomed, Duration::from_secs(5));
    let _ = std::fs::remove_file(&ctl_path);
    if d.ctl.monitor.is_some() {
        let _ = std::fs::remove_file(&mon_path);
    }
    let _ = std::fs::remove_file(&shim_path);
    let _ = std::fs::remove_file(&inst_path);
    info!(instances = n, "ins-driver stopped");
    Ok(())
}

/// Xen mode's settings from `--xen-spawn` and its options.
fn xen_spawn(args: &Args) -> anyhow::Result<Option<supervisor::XenSpawn>> {
    if !args.xen_spawn {
        return Ok(None);
    }
    let prefix = args
        .xen_channel_prefix
        .clone()
        .unwrap_or_else(|| format!("x{}-", std::process::id()));
    // The longest name it will make must be a valid channel name.
    ins_xen::agent::check_name(&format!("{prefix}{}", u32::MAX)).map_err(|e| {
        anyhow::anyhow!("--xen-channel-prefix {prefix:?}: with a number appended, {e}")
    })?;
    Ok(Some(supervisor::XenSpawn {
        prefix,
        retry: Duration::from_millis(args.xen_retry_ms),
        kind: if args.xen_unikernel {
            ins_xen::agent::Kind::Unikernel
        } else {
            ins_xen::agent::Kind::Linux
        },
    }))
}

/// Drops what the driver does not need once its sockets are bound
/// ([`crate::privs`]); called before any thread or child exists.
fn drop_privileges(args: &Args) -> anyhow::Result<()> {
    if !args.drop_privileges {
        info!("privileges kept (--drop-privileges=false)");
        return Ok(());
    }
    let spawns = args.ins_bin.is_some();
    let sandboxed = spawns && !args.no_sandbox && args.instance_sandbox != "off";
    let keep = crate::privs::needed(
        sandboxed,
        spawns && args.instance_low_ports,
        spawns && args.netns.is_some(),
        args.keep_caps,
    );
    let k = crate::privs::drop_to(keep).context("drop privileges")?;
    info!(
        permitted = %crate::privs::names(k.permitted),
        bounding = %crate::privs::names(k.bounding),
        bounding_dropped = k.bounding_dropped,
        "privileges dropped (no_new_privs set)"
    );
    Ok(())
}

/// Gives the socket file `path` the group `group` (name or number; the
/// `option` it came from names it in errors); `None` leaves it.
fn chgrp(path: &std::path::Path, group: Option<&str>, option: &str) -> anyhow::Result<()> {
    let Some(g) = group else {
        return Ok(());
    };
    let gid = ctl::group_id(g).with_context(|| format!("{option} {g}"))?;
    std::os::unix::fs::chown(path, None, Some(gid))
        .with_context(|| format!("chgrp {gid} {}", path.display()))?;
    info!(path = %path.display(), gid, "socket group");
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

impl Daemon {
    /// The core's clock now.
    fn now(&self) -> u64 {
        now_ns(self.start)
    }
}

/// The arguments every spawned `ins` gets: its sandbox, then the operator's
/// `--ins-arg`s (which come last, so they win).
pub fn instance_args(args: &Args) -> Vec<String> {
    let mode = if args.no_sandbox {
        "off"
    } else {
        args.instance_sandbox.as_str()
    };
    let mut v = vec![
        format!("--sandbox={mode}"),
        format!("--sandbox-user={}", args.instance_user),
    ];
    v.push(format!("--sandbox-low-ports={}", args.instance_low_ports));
    v.extend(args.ins_arg.iter().cloned());
    v
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::instance_args;
    use crate::Args;

    fn args(a: &[&str]) -> Vec<String> {
        let mut v = vec!["ins-driver"];
        v.extend_from_slice(a);
        instance_args(&Args::try_parse_from(v).unwrap())
    }

    #[test]
    fn spawned_instances_are_sandboxed_unless_told_otherwise() {
        assert_eq!(
            args(&[]),
            [
                "--sandbox=on",
                "--sandbox-user=nobody",
                "--sandbox-low-ports=true"
            ]
        );
        assert_eq!(
            args(&["--instance-sandbox=strict", "--instance-user=ins"]),
            [
                "--sandbox=strict",
                "--sandbox-user=ins",
                "--sandbox-low-ports=true"
            ]
        );
        assert_eq!(args(&["--no-sandbox"])[0], "--sandbox=off");
        assert_eq!(
            args(&["--instance-low-ports=false"]).last().unwrap(),
            "--sandbox-low-ports=false"
        );
        // The operator's own instance arguments come last and win.
        assert_eq!(
            args(&["--ins-arg=--no-sandbox"]).last().unwrap(),
            "--no-sandbox"
        );
        let bad = ["ins-driver", "--instance-sandbox=maybe"];
        assert!(Args::try_parse_from(bad).is_err());
    }
}
