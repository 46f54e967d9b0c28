//! `ins-ctl`: the INS controller. Parses arguments and calls the library.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use ins_ctl::{EXIT_HELP, cmds};
use serde_json::json;

/// Starts, scales and inspects the INS driver and its instances.
#[derive(Parser, Debug)]
#[command(name = "ins-ctl", version, after_help = EXIT_HELP)]
struct Cli {
    /// Runtime directory of the driver (ctl.sock, shim.sock, logs).
    #[arg(long, global = true, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// `--xen [--unikernel]` on `spawn` and `scale`.
#[derive(Args, Debug, Clone, Copy)]
struct Kind {
    /// Expect Xen instance domains: fails before asking for any unless
    /// the driver runs in Xen mode (the kind of instance is the
    /// driver's, chosen with `up --xen [--unikernel]`).
    #[arg(long)]
    xen: bool,
    /// With --xen: expect PV unikernel domains (`up --xen --unikernel`).
    #[arg(long, requires = "xen")]
    unikernel: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start the driver and N instances in the background (idempotent).
    Up {
        /// Instances to start.
        #[arg(long, default_value_t = 1)]
        instances: usize,
        /// Run the instances in this named network namespace (`ip netns
        /// add NAME` first): they and their sockets see only its
        /// interfaces, the driver and the programs stay where they are.
        #[arg(long, visible_alias = "instance-netns", value_name = "NAME")]
        netns: Option<String>,
        /// Stay attached; the driver logs to stderr.
        #[arg(long)]
        foreground: bool,
        /// The user the sandboxed instances run as (name, UID or UID:GID;
        /// default: the driver's, `nobody`).
        #[arg(long, value_name = "USER")]
        instance_user: Option<String>,
        /// Do not sandbox the instances (they keep the driver's privileges).
        #[arg(long)]
        no_sandbox: bool,
        /// Balancer policy file (TOML).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Serve Prometheus metrics (`GET /metrics`) on this TCP address
        /// (e.g. 127.0.0.1:9464); off by default.
        #[arg(long, value_name = "ADDR:PORT")]
        metrics: Option<std::net::SocketAddr>,
        /// Instances are Xen domains, created and destroyed by dom0's
        /// toolstack agent (`ins-xen-agent --pvm <this domain>`, which
        /// must be running); the driver runs with `--xen-spawn`.
        #[arg(long, conflicts_with = "netns")]
        xen: bool,
        /// With --xen: the instance domains are PV unikernels (`ins-pv`)
        /// instead of Linux guests; the agent must have been started with
        /// `--unikernel-template` and `--unikernel-kernel` (driver
        /// `--xen-unikernel`).
        #[arg(long, requires = "xen")]
        unikernel: bool,
        /// How long to wait for the instances to join (s; default 15,
        /// 600 with --xen: a domain boots first).
        #[arg(long, value_name = "S")]
        timeout_s: Option<u64>,
        /// Extra arguments for ins-driver (after `--`).
        #[arg(last = true)]
        driver_args: Vec<String>,
    },
    /// Stop everything gracefully (idempotent).
    Down,
    /// Start more instances (Xen domains when the driver runs in Xen
    /// mode, `up --xen`).
    Spawn {
        /// How many.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// How long to wait for them to join (s; default 15, 600 for Xen
        /// domains).
        #[arg(long, value_name = "S")]
        timeout_s: Option<u64>,
        #[command(flatten)]
        kind: Kind,
    },
    /// Scale to N instances (down: drain, then stop), with progress.
    Scale {
        /// Instances wanted.
        n: usize,
        /// How long to wait (s; default: the drain timeout plus 15, 600
        /// more for Xen domains).
        #[arg(long, value_name = "S")]
        timeout_s: Option<u64>,
        #[command(flatten)]
        kind: Kind,
    },
    /// Drain an instance, then stop it.
    Stop {
        /// Instance id (from `list`).
        id: u64,
    },
    /// Take an instance in another Xen domain: the driver grants it a
    /// channel (rendezvous in xenstore); it joins with
    /// `ins --xen-driver <driver's domid> --xen-channel NAME`. With
    /// `--kmod`, the driver is the kernel module: this command makes the
    /// offer through it and stays, holding the channel, until the instance
    /// leaves or the module declares it dead.
    AttachXen {
        /// The instance's domain id.
        #[arg(long)]
        domid: u16,
        /// The channel's name (a xenstore path element, unique per driver).
        #[arg(long)]
        channel: String,
        /// How long to wait for the instance to map the channel (1 ..= 3600).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
        rendezvous_s: u64,
        /// The kernel module's device (ins.ko) instead of a daemon.
        #[arg(long, value_name = "DEVICE", num_args = 0..=1, default_missing_value = "/dev/ins")]
        kmod: Option<PathBuf>,
        /// With --kmod: each ring's capacity in bytes (a power of two).
        #[arg(long, value_name = "BYTES")]
        ring_capacity: Option<u32>,
    },
    /// Stop giving an instance new connections.
    Drain {
        /// Instance id.
        id: u64,
    },
    /// The instance table.
    List {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The driver's state.
    Status {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Run a program under the shim.
    Run {
        /// In a network namespace with only loopback.
        #[arg(long)]
        isolate: bool,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// Block a source prefix (ADDR or ADDR/LEN) on every instance.
    Block {
        /// Prefix.
        prefix: String,
    },
    /// Remove a block.
    Unblock {
        /// Prefix.
        prefix: String,
    },
    /// Rate-limit a source prefix (both 0 removes the limit).
    Limit {
        /// Prefix.
        prefix: String,
        /// New connections per second.
        #[arg(long, default_value_t = 0)]
        conn_rate: u64,
        /// Bytes per second.
        #[arg(long, default_value_t = 0)]
        byte_rate: u64,
    },
    /// Close a flow (INST:FLOW_ID as `flows` shows it).
    Close {
        /// Flow.
        flow: String,
    },
    /// The detection daemon (ins-detect).
    Detect {
        #[command(subcommand)]
        cmd: DetectCmd,
    },
    /// Recent flow records.
    Flows {
        /// Keep printing new records.
        #[arg(long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum DetectCmd {
    /// Sources under suspicion, flags, mitigations in force and why.
    Status {
        /// JSON for scripts.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let dir = cli.run_dir.unwrap_or_else(ins_ctl::default_run_dir);
    let r = match cli.cmd {
        Cmd::Up {
            instances,
            netns,
            foreground,
            instance_user,
            no_sandbox,
            policy,
            metrics,
            xen,
            unikernel,
            timeout_s,
            driver_args,
        } => cmds::up(
            &dir,
            &cmds::UpOpts {
                instances,
                netns,
                foreground,
                instance_user,
                no_sandbox,
                policy,
                metrics,
                xen,
                unikernel,
                timeout_s,
                driver_args,
            },
        ),
        Cmd::Down => cmds::down(&dir),
        Cmd::Spawn {
            count,
            timeout_s,
            kind,
        } => cmds::expect_kind(&dir, kind.xen, kind.unikernel)
            .and_then(|()| cmds::spawn(&dir, count, timeout_s)),
        Cmd::Scale { n, timeout_s, kind } => cmds::expect_kind(&dir, kind.xen, kind.unikernel)
            .and_then(|()| cmds::scale(&dir, n, timeout_s)),
        Cmd::Stop { id } => cmds::stop(&dir, id),
        Cmd::Drain { id } => cmds::drain(&dir, id),
        Cmd::AttachXen {
            domid,
            channel,
            rendezvous_s,
            kmod: None,
            ring_capacity: None,
        } => cmds::attach_xen(&dir, domid, &channel, rendezvous_s),
        Cmd::AttachXen {
            ring_capacity: Some(_),
            kmod: None,
            ..
        } => Err(ins_ctl::CtlError::Usage(
            "--ring-capacity is for --kmod (a daemon sizes its own rings)".into(),
        )),
        Cmd::AttachXen {
            domid,
            channel,
            rendezvous_s,
            kmod: Some(device),
            ring_capacity,
        } => cmds::attach_xen_kmod(&device, domid, &channel, rendezvous_s, ring_capacity),
        Cmd::List { json } => cmds::list(&dir, json),
        Cmd::Status { json } => cmds::status(&dir, json),
        Cmd::Run { isolate, argv } => cmds::run(&dir, isolate, &argv).map(|_| ()),
        Cmd::Block { prefix } => cmds::mitigate(&dir, json!({"cmd": "block", "prefix": prefix})),
        Cmd::Unblock { prefix } => {
            cmds::mitigate(&dir, json!({"cmd": "unblock", "prefix": prefix}))
        }
        Cmd::Limit {
            prefix,
            conn_rate,
            byte_rate,
        } => cmds::mitigate(
            &dir,
            json!({"cmd": "limit", "prefix": prefix, "conn_rate": conn_rate, "byte_rate": byte_rate}),
        ),
        Cmd::Close { flow } => cmds::mitigate(&dir, json!({"cmd": "close", "flow": flow})),
        Cmd::Flows { follow, json } => cmds::flows(&dir, follow, json),
        Cmd::Detect {
            cmd: DetectCmd::Status { json },
        } => ins_ctl::detect::status(&dir, json),
    };
    if let Err(e) = r {
        eprintln!("ins-ctl: {e}");
        std::process::exit(e.exit_code());
    }
}
