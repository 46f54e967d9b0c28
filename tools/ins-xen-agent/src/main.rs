//! `ins-xen-agent`: arguments, the real xenstore connection and `xl`.
//!
//! Every `xl` call is an argument vector (no shell) with a timeout; its
//! output goes to a log file in `--state-dir` next to the configuration it
//! was given.

use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use ins_transport::sys::xen::XenbusStream;
use ins_xen::DomId;
use ins_xen::agent::Kind;
use ins_xen::agent::REQ_DIR;
use ins_xen::xenstore::perms::{Access, Permission};
use ins_xen::xenstore::{Client, TxId};
use ins_xen_agent::agent::{Agent, Flavour, Flavours, Limits, Store, Toolstack};
use ins_xen_agent::template::{Fixed, IpPool, Template, check_bridge, check_path};
use tracing::{info, warn};

/// Creates and destroys INS instance domains for a protected VM's driver.
#[derive(Debug, Parser)]
#[command(name = "ins-xen-agent", version)]
struct Args {
    /// The protected VM's domain id (whose requests are served).
    #[arg(long)]
    pvm: u16,
    /// The xl configuration template of Linux instance domains (requests
    /// `create`; placeholders: see the crate docs).
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "unikernel_template"
    )]
    template: Option<PathBuf>,
    /// Guest kernel (`@KERNEL@`).
    #[arg(long, value_name = "PATH")]
    kernel: Option<String>,
    /// Guest initramfs (`@RAMDISK@`).
    #[arg(long, value_name = "PATH")]
    ramdisk: Option<String>,
    /// Memory of each Linux instance domain (MiB, `@MEMORY@`).
    #[arg(long, default_value_t = 192, value_parser = clap::value_parser!(u32).range(16..=65536))]
    memory: u32,
    /// The xl configuration template of unikernel instance domains
    /// (requests `create unikernel`; `@INS_ARGS@` is then `driver=<pvm>
    /// channel=<name> seed=<random>`; no `@RAMDISK@`).
    #[arg(long, value_name = "FILE", requires = "unikernel_kernel")]
    unikernel_template: Option<PathBuf>,
    /// The unikernel image (`ins-pv`, `@KERNEL@` of its template).
    #[arg(long, value_name = "PATH", requires = "unikernel_template")]
    unikernel_kernel: Option<String>,
    /// Memory of each unikernel instance domain (MiB, `@MEMORY@` of its
    /// template): its heap holds the sockets' buffers and the ring's
    /// frames; the channel's pages are mapped in its foreign window.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(8..=65536))]
    unikernel_memory: u32,
    /// Bridge of each domain's vif (`@BRIDGE@`).
    #[arg(long)]
    bridge: Option<String>,
    /// Addresses for the domains (`@IP@`), FIRST-LAST; MACs (`@MAC@`)
    /// follow from them.
    #[arg(long, value_name = "FIRST-LAST")]
    ip_range: Option<String>,
    /// The MACs' first three octets.
    #[arg(long, default_value = "00:16:3e")]
    mac_prefix: String,
    /// Most instance domains at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_domains: u64,
    /// Most requests answered per pass.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_requests: u64,
    /// Configurations and xl logs go here.
    #[arg(long, default_value = "/run/ins-xen-agent")]
    state_dir: PathBuf,
    /// `xl` binary.
    #[arg(long, default_value = "xl")]
    xl: PathBuf,
    /// Longest `xl` call (s); it is killed after that.
    #[arg(long, default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    xl_timeout_s: u64,
    /// Look at the requests at least this often even without a watch
    /// event (ms).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60000))]
    poll_ms: u64,
    /// xenstore: `/dev/xen/xenbus` or xenstored's socket.
    #[arg(long, default_value = "/dev/xen/xenbus")]
    xenbus: String,
}

/// xenstore over the device or socket.
struct Xs(Client<XenbusStream>);

/// Attempts at a transaction the daemon answers `EAGAIN` (another writer
/// touched what it read).
const TX_ATTEMPTS: u32 = 8;

fn io(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Store for Xs {
    fn list(&mut self, dir: &str) -> std::io::Result<Vec<String>> {
        match self.0.directory(TxId::NONE, dir) {
            Ok(v) => Ok(v),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(io(e)),
        }
    }
    fn read(&mut self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        self.0.try_read(TxId::NONE, path).map_err(io)
    }
    /// In one transaction: the PVM polls for its answer and removes it as
    /// soon as it reads it, so a write and then a `set_perms` outside a
    /// transaction could find the node gone (`ENOENT`, which ended the
    /// agent in a lab run) or show it briefly with inherited permissions.
    fn write_owned(&mut self, path: &str, value: &[u8], owner: DomId) -> std::io::Result<()> {
        self.0
            .transaction(TX_ATTEMPTS, |c, tx| {
                c.write(tx, path, value)?;
                c.set_perms(tx, path, &[Permission::new(owner, Access::None)])
            })
            .map_err(io)
    }
    fn remove(&mut self, path: &str) -> std::io::Result<()> {
        match self.0.rm(TxId::NONE, path) {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(io(e)),
        }
    }
}

/// `xl`, one process per call.
struct Xl {
    bin: PathBuf,
    dir: PathBuf,
    timeout: Duration,
}

impl Xl {
    /// Runs `xl ARGS` with output to `log`; the last line of output on
    /// failure.
    fn run(&self, args: &[&str], log: &Path) -> Result<String, String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.bin.display()))?;
        let until = Instant::now() + self.timeout;
        let st = loop {
            match child.try_wait() {
                Ok(Some(st)) => break st,
                Ok(None) if Instant::now() >= until => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("timed out after {} s", self.timeout.as_secs()));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e.to_string()),
            }
        };
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if st.success() {
            Ok(text)
        } else {
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!("{st}: {last}"))
        }
    }
}

impl Toolstack for Xl {
    fn create(&mut self, name: &str, config: &str) -> Result<DomId, String> {
        let cfg = self.dir.join(format!("{name}.cfg"));
        std::fs::write(&cfg, config).map_err(|e| format!("{}: {e}", cfg.display()))?;
        let cfg_s = cfg.to_str().ok_or("state dir is not UTF-8")?;
        let t = Instant::now();
        self.run(&["create", cfg_s], &self.dir.join(format!("{name}.xl.log")))?;
        let id = self.run(&["domid", name], &self.dir.join(format!("{name}.domid")))?;
        info!(name, took_ms = t.elapsed().as_millis() as u64, "xl create");
        DomId::parse(id.trim().as_bytes())
            .ok_or_else(|| format!("xl domid {name}: {:?}", id.trim()))
    }

    fn destroy(&mut self, domid: DomId) -> Result<(), String> {
        let d = domid.to_string();
        self.run(&["destroy", &d], &self.dir.join(format!("destroy-{d}.log")))
            .map(|_| ())
    }

    fn seed(&mut self) -> Result<u64, String> {
        use std::io::Read as _;
        let mut b = [0u8; 8];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|e| format!("/dev/urandom: {e}"))?;
        Ok(u64::from_le_bytes(b))
    }
}

/// Loads and checks one kind's template against its values.
fn flavour(
    kind: Kind,
    opt: &str,
    path: &Path,
    fixed: Fixed,
    has_pool: bool,
) -> anyhow::Result<Flavour> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("{opt} {}", path.display()))?;
    let template = Template::parse(&text).with_context(|| format!("{opt} {}", path.display()))?;
    template
        .check_against(kind, &fixed, has_pool)
        .with_context(|| format!("{opt} {}", path.display()))?;
    Ok(Flavour { template, fixed })
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(&Args::parse()) {
        eprintln!("ins-xen-agent: {e:#}");
        std::process::exit(1);
    }
}

fn run(a: &Args) -> anyhow::Result<()> {
    let pvm = DomId(a.pvm);
    anyhow::ensure!(
        pvm.is_real() && a.pvm != 0,
        "--pvm {} is not a domU's id",
        a.pvm
    );
    let bridge = a.bridge.as_deref().map(check_bridge).transpose()?;
    let pool = a
        .ip_range
        .as_deref()
        .map(|r| IpPool::parse(r, &a.mac_prefix))
        .transpose()?;
    let mut flavours = Flavours::default();
    if let Some(t) = &a.template {
        let fixed = Fixed {
            memory_mib: a.memory,
            kernel: a
                .kernel
                .as_deref()
                .map(|k| check_path("--kernel", k))
                .transpose()?,
            ramdisk: a
                .ramdisk
                .as_deref()
                .map(|k| check_path("--ramdisk", k))
                .transpose()?,
            bridge: bridge.clone(),
        };
        flavours.linux = Some(flavour(
            Kind::Linux,
            "--template",
            t,
            fixed,
            pool.is_some(),
        )?);
    }
    if let Some(t) = &a.unikernel_template {
        let fixed = Fixed {
            memory_mib: a.unikernel_memory,
            kernel: a
                .unikernel_kernel
                .as_deref()
                .map(|k| check_path("--unikernel-kernel", k))
                .transpose()?,
            ramdisk: None,
            bridge,
        };
        flavours.unikernel = Some(flavour(
            Kind::Unikernel,
            "--unikernel-template",
            t,
            fixed,
            pool.is_some(),
        )?);
    }
    let kinds: Vec<&str> = [
        flavours.linux.as_ref().map(|_| Kind::Linux.name()),
        flavours.unikernel.as_ref().map(|_| Kind::Unikernel.name()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let kinds = kinds.join(",");
    std::fs::create_dir_all(&a.state_dir)
        .with_context(|| format!("--state-dir {}", a.state_dir.display()))?;
    let mut xs = XenbusStream::client(&a.xenbus, 64).with_context(|| a.xenbus.clone())?;
    let req_dir = format!("/local/domain/{pvm}/{REQ_DIR}");
    xs.watch(&req_dir, "ins-agent-req").map_err(io)?;
    xs.watch("@releaseDomain", "ins-agent-release")
        .map_err(io)?;
    let xl = Xl {
        bin: a.xl.clone(),
        dir: a.state_dir.clone(),
        timeout: Duration::from_secs(a.xl_timeout_s),
    };
    let limits = Limits {
        max_domains: a.max_domains as usize,
        max_requests: a.max_requests as usize,
    };
    let mut agent = Agent::new(Xs(xs), xl, pvm, flavours, pool, limits);
    println!("XAGENT ready pvm={pvm} kinds={kinds} watching {req_dir}");
    info!(%pvm, kinds = %kinds, max_domains = a.max_domains, "ins-xen-agent serving");
    let poll = Duration::from_millis(a.poll_ms);
    loop {
        let st = agent.step().context("xenstore")?;
        if st.pvm_gone {
            println!("XAGENT pvm gone; exiting");
            return Ok(());
        }
        if st.answered > 0 {
            continue;
        }
        wait_event(&mut agent.store.0, poll)?;
    }
}

/// Waits for a watch event (or `timeout`); the events themselves only
/// mean "look again" (watches may fire spuriously).
fn wait_event(xs: &mut Client<XenbusStream>, timeout: Duration) -> anyhow::Result<()> {
    if xs.take_event().is_some() {
        while xs.take_event().is_some() {}
        return Ok(());
    }
    let fd = xs.stream().as_fd();
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::event::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match rustix::event::poll(&mut fds, Some(&ts)) {
        Ok(n) if n > 0 => {
            xs.read_event().map_err(io)?;
            while xs.take_event().is_some() {}
        }
        Ok(_) => {}
        Err(rustix::io::Errno::INTR) => {}
        Err(e) => warn!(error = %e, "poll"),
    }
    Ok(())
}
