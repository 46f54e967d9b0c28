//! The commands, one function each; `main.rs` only parses arguments.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    Client, CtlError, Progress, Result, call, flow_header, format_flow, format_list, instances,
    pid_alive, read_pid, refusals, sibling, terminate, wait_for,
};

/// Options of `up`.
#[derive(Debug, Clone, Default)]
pub struct UpOpts {
    /// Instances to start.
    pub instances: usize,
    /// Network namespace for the instances.
    pub netns: Option<String>,
    /// Stay attached (driver logs to stderr).
    pub foreground: bool,
    /// The sandboxed instances' user (driver `--instance-user`).
    pub instance_user: Option<String>,
    /// No instance sandbox (driver `--no-sandbox`).
    pub no_sandbox: bool,
    /// Policy file.
    pub policy: Option<PathBuf>,
    /// `--metrics ADDR:PORT` for the driver.
    pub metrics: Option<std::net::SocketAddr>,
    /// Instances are Xen domains (driver `--xen-spawn`).
    pub xen: bool,
    /// Those domains are PV unikernels (driver `--xen-unikernel`).
    pub unikernel: bool,
    /// How long to wait for the instances (s).
    pub timeout_s: Option<u64>,
    /// Extra driver arguments.
    pub driver_args: Vec<String>,
}

/// How long a Xen domain may take to boot and join, by default.
const XEN_JOIN_S: u64 = 600;
/// How long a local instance may take to join, by default.
const LOCAL_JOIN_S: u64 = 15;

/// Whether the driver creates Xen domains (`status`).
fn xen_mode(run_dir: &Path) -> bool {
    call(run_dir, json!({"cmd": "status"}))
        .ok()
        .and_then(|v| v.pointer("/instances/xen_spawn").and_then(Value::as_bool))
        .unwrap_or(false)
}

/// `spawn`/`scale --xen [--unikernel]`: the instances the driver makes
/// must be of that kind (it was chosen when the driver started, `up --xen
/// [--unikernel]`); otherwise a usage error that says how the driver runs,
/// before anything is asked of it.
pub fn expect_kind(run_dir: &Path, xen: bool, unikernel: bool) -> Result<()> {
    if !xen {
        return Ok(());
    }
    let st = call(run_dir, json!({"cmd": "status"}))?;
    let spawns_xen = st.pointer("/instances/xen_spawn").and_then(Value::as_bool) == Some(true);
    let kind = st
        .pointer("/instances/xen_kind")
        .and_then(Value::as_str)
        .unwrap_or("linux");
    if !spawns_xen {
        return Err(CtlError::Usage(format!(
            "--xen: the driver in {} makes local instances, not Xen domains \
             (start it with `ins-ctl up --xen`, after `ins-ctl down`)",
            run_dir.display()
        )));
    }
    if unikernel && kind != "unikernel" {
        return Err(CtlError::Usage(format!(
            "--unikernel: the driver in {} makes {kind} instance domains \
             (start it with `ins-ctl up --xen --unikernel`, after `ins-ctl down`)",
            run_dir.display()
        )));
    }
    Ok(())
}

fn running(run_dir: &Path) -> bool {
    Client::connect(run_dir)
        .and_then(|mut c| c.call(&json!({"cmd": "status"})))
        .is_ok()
}

/// `up`: starts the driver (which spawns the instances) and waits until
/// they joined. Idempotent: a running driver is left alone.
pub fn up(run_dir: &Path, o: &UpOpts) -> Result<()> {
    if running(run_dir) {
        crate::outln!("INS already running in {}", run_dir.display());
        return Ok(());
    }
    let driver = sibling("ins-driver")?;
    std::fs::create_dir_all(run_dir)
        .map_err(|e| CtlError::Failed(format!("create {}: {e}", run_dir.display())))?;
    let mut cmd = Command::new(&driver);
    cmd.arg("--run-dir")
        .arg(run_dir)
        .arg("--log")
        .arg(run_dir.join("driver.log"));
    if o.xen {
        cmd.arg("--xen-spawn");
        if o.unikernel {
            cmd.arg("--xen-unikernel");
        }
    } else {
        cmd.arg("--ins-bin").arg(sibling("ins")?);
    }
    cmd.arg("--instances").arg(o.instances.to_string());
    if let Some(ns) = &o.netns {
        cmd.arg("--netns").arg(ns);
    }
    if let Some(u) = &o.instance_user {
        cmd.arg("--instance-user").arg(u);
    }
    if o.no_sandbox {
        cmd.arg("--no-sandbox");
    }
    if let Some(p) = &o.policy {
        cmd.arg("--policy").arg(p);
    }
    if let Some(m) = &o.metrics {
        cmd.arg("--metrics").arg(m.to_string());
    }
    cmd.args(&o.driver_args).stdin(Stdio::null());
    if o.foreground {
        let st = cmd
            .status()
            .map_err(|e| CtlError::Failed(format!("{}: {e}", driver.display())))?;
        return if st.success() {
            Ok(())
        } else {
            Err(CtlError::Failed(format!("ins-driver exited: {st}")))
        };
    }
    let log = run_dir.join("driver.log");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| CtlError::Failed(format!("{}: {e}", log.display())))?;
    let f2 = f.try_clone().map_err(|e| CtlError::Failed(e.to_string()))?;
    {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
    }
    let mut child = cmd
        .stdout(f)
        .stderr(f2)
        .spawn()
        .map_err(|e| CtlError::Failed(format!("{}: {e}", driver.display())))?;
    let pid = child.id();
    std::fs::write(run_dir.join("driver.pid"), format!("{pid}\n"))
        .map_err(|e| CtlError::Failed(format!("pid file: {e}")))?;
    // Wait for the control socket.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !running(run_dir) {
        if let Ok(Some(st)) = child.try_wait() {
            let _ = std::fs::remove_file(run_dir.join("driver.pid"));
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .find(|l| l.starts_with("ins-driver:"))
                .or_else(|| tail.lines().last())
                .unwrap_or("")
                .to_string();
            return Err(CtlError::Failed(format!(
                "ins-driver exited at start ({st}): {last} (log: {})",
                log.display()
            )));
        }
        if std::time::Instant::now() >= until {
            return Err(CtlError::Timeout("the driver's control socket".into()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    crate::outln!("driver started (pid {pid}), run dir {}", run_dir.display());
    let n = o.instances;
    let mut p = Progress::default();
    let default_s = if o.xen { XEN_JOIN_S } else { LOCAL_JOIN_S };
    wait_for(
        run_dir,
        Duration::from_secs(o.timeout_s.unwrap_or(default_s)),
        "instances to join",
        Some(0),
        |v| live_with_heartbeat(v) >= n,
        |v| p.update(v).iter().for_each(|l| crate::outln!("{l}")),
    )?;
    crate::outln!("INS up: {n} instance(s)");
    Ok(())
}

fn live_with_heartbeat(v: &[Value]) -> usize {
    v.iter()
        .filter(|i| {
            i.get("state").and_then(Value::as_str) == Some("live")
                && i.get("heartbeat").and_then(Value::as_bool) == Some(true)
        })
        .count()
}

/// `down`: graceful stop. Idempotent: nothing running is success.
pub fn down(run_dir: &Path) -> Result<()> {
    // A driver in Xen mode tears its channels down and has its domains
    // destroyed before it exits.
    let mut wait_s = 10;
    let pid = match Client::connect(run_dir) {
        Ok(mut c) => {
            let st = c.call(&json!({"cmd": "status"}))?;
            let pid = st.get("pid").and_then(Value::as_u64).map(|p| p as u32);
            if st.pointer("/instances/xen_spawn").and_then(Value::as_bool) == Some(true) {
                wait_s = 60;
            }
            c.call(&json!({"cmd": "shutdown"}))?;
            pid
        }
        Err(CtlError::NotRunning { .. }) => match read_pid(run_dir) {
            Some(p) if pid_alive(p) => {
                terminate(p);
                Some(p)
            }
            _ => {
                let _ = std::fs::remove_file(run_dir.join("driver.pid"));
                crate::outln!("INS is not running");
                return Ok(());
            }
        },
        Err(e) => return Err(e),
    };
    if let Some(pid) = pid {
        let until = std::time::Instant::now() + Duration::from_secs(wait_s);
        while pid_alive(pid) {
            if std::time::Instant::now() >= until {
                return Err(CtlError::Timeout(format!("driver pid {pid} to exit")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let _ = std::fs::remove_file(run_dir.join("driver.pid"));
    crate::outln!("INS stopped");
    Ok(())
}

/// `list`.
pub fn list(run_dir: &Path, as_json: bool) -> Result<()> {
    let v = call(run_dir, json!({"cmd": "list"}))?;
    if as_json {
        crate::outln!("{}", Value::Array(instances(&v)));
    } else {
        crate::out!("{}", format_list(&v));
    }
    Ok(())
}

/// `status`.
pub fn status(run_dir: &Path, as_json: bool) -> Result<()> {
    let v = call(run_dir, json!({"cmd": "status"}))?;
    if as_json {
        crate::outln!("{v}");
        return Ok(());
    }
    let g = |p: &str| v.pointer(p).cloned().unwrap_or(Value::Null);
    crate::outln!("driver pid      {}", g("/pid"));
    crate::outln!("uptime          {} s", g("/uptime_s"));
    crate::outln!("run dir         {}", g("/run_dir").as_str().unwrap_or(""));
    crate::outln!(
        "instances       {} live, {} draining, target {}",
        g("/instances/live"),
        g("/instances/draining"),
        g("/instances/target")
    );
    crate::outln!("sockets         {}", g("/sockets"));
    crate::outln!("shim conns      {}", g("/shims"));
    crate::outln!("flows kept      {}", g("/flows_kept"));
    crate::outln!(
        "dropped         {} app datagrams the relay could not send",
        g("/app_datagrams_dropped")
    );
    crate::outln!("mitigations     {}", g("/mitigations"));
    crate::outln!("policy          {}", g("/policy"));
    Ok(())
}

fn drain_limit(run_dir: &Path) -> Duration {
    let ms = call(run_dir, json!({"cmd": "status"}))
        .ok()
        .and_then(|v| {
            v.pointer("/policy/drain_timeout_ms")
                .and_then(Value::as_u64)
        })
        .unwrap_or(10_000);
    Duration::from_millis(ms) + Duration::from_secs(15)
}

/// `scale N`: up or down, with progress lines.
pub fn scale(run_dir: &Path, n: usize, timeout_s: Option<u64>) -> Result<()> {
    let extra = if xen_mode(run_dir) { XEN_JOIN_S } else { 0 };
    let limit = timeout_s.map_or_else(
        || drain_limit(run_dir) + Duration::from_secs(extra),
        Duration::from_secs,
    );
    let mut p = Progress::default();
    let before = call(run_dir, json!({"cmd": "list"}))?;
    let _ = p.update(&instances(&before));
    let r = call(run_dir, json!({"cmd": "scale", "n": n}))?;
    crate::outln!(
        "scaling to {n} (retiring {})",
        r.get("retiring").cloned().unwrap_or(Value::Null)
    );
    wait_for(
        run_dir,
        limit,
        "scale",
        Some(refusals(&before)),
        |v| v.len() == n && live_with_heartbeat(v) == n,
        |v| p.update(v).iter().for_each(|l| crate::outln!("{l}")),
    )?;
    crate::outln!("scaled to {n}");
    Ok(())
}

/// `spawn --count N`.
pub fn spawn(run_dir: &Path, count: usize, timeout_s: Option<u64>) -> Result<()> {
    let default_s = if xen_mode(run_dir) {
        XEN_JOIN_S
    } else {
        LOCAL_JOIN_S
    };
    let l = call(run_dir, json!({"cmd": "list"}))?;
    let (before, refused) = (instances(&l).len(), refusals(&l));
    let r = call(run_dir, json!({"cmd": "spawn", "count": count}))?;
    let target = r.get("target").and_then(Value::as_u64).unwrap_or(0) as usize;
    let mut p = Progress::default();
    let _ = p.update(&instances(&call(run_dir, json!({"cmd": "list"}))?));
    let want = before + count;
    wait_for(
        run_dir,
        Duration::from_secs(timeout_s.unwrap_or(default_s)),
        "spawn",
        Some(refused),
        |v| live_with_heartbeat(v) >= want.min(target.max(want)),
        |v| p.update(v).iter().for_each(|l| crate::outln!("{l}")),
    )?;
    crate::outln!("spawned {count}; target {target}");
    Ok(())
}

/// `stop ID`: drain, then close the channel.
pub fn stop(run_dir: &Path, id: u64) -> Result<()> {
    let limit = drain_limit(run_dir);
    call(run_dir, json!({"cmd": "stop", "id": id}))?;
    crate::outln!("instance {id} draining");
    let mut p = Progress::default();
    wait_for(
        run_dir,
        limit,
        "stop",
        None,
        |v| {
            !v.iter()
                .any(|i| i.get("id").and_then(Value::as_u64) == Some(id))
        },
        |v| {
            p.update(v)
                .iter()
                .filter(|l| l.starts_with(&format!("instance {id} ")))
                .for_each(|l| crate::outln!("{l}"))
        },
    )?;
    crate::outln!("instance {id} stopped");
    Ok(())
}

/// `attach-xen --domid D --channel N`: the driver offers a Xen channel
/// to an instance in domain `domid` (running `ins --xen-driver <this
/// domain> --xen-channel N`); answers once the instance joined.
pub fn attach_xen(run_dir: &Path, domid: u16, channel: &str, rendezvous_s: u64) -> Result<()> {
    let r = call(
        run_dir,
        json!({"cmd": "attach-xen", "domid": domid, "channel": channel,
               "rendezvous_ms": rendezvous_s.saturating_mul(1000)}),
    )?;
    crate::outln!(
        "instance {} joined from dom{domid} over xen channel {channel:?}",
        r.get("id").and_then(Value::as_u64).unwrap_or(0)
    );
    Ok(())
}

/// `attach-xen --kmod DEVICE --domid D --channel N`: the kernel module
/// at `device` grants a channel to domain `domid` (`INS_IOC_XEN_OFFER`);
/// this publishes the offer in xenstore, says when the instance joined,
/// and holds the channel until the instance leaves or the module declares
/// it dead (then tears down and says how it ended).
pub fn attach_xen_kmod(
    device: &Path,
    domid: u16,
    channel: &str,
    rendezvous_s: u64,
    ring_capacity: Option<u32>,
) -> Result<()> {
    use ins_transport::ChannelConfig;
    use ins_transport::sys::xen::{XenConfig, offer_kmod, own_domid};
    use ins_xen::DomId;
    use ins_xen::channel::ChannelId;

    let xcfg = XenConfig {
        rendezvous_timeout: Duration::from_secs(rendezvous_s),
        ..XenConfig::default()
    };
    let mut cfg = ChannelConfig::default();
    if let Some(c) = ring_capacity {
        cfg.ring_capacity = c;
    }
    fn failed(what: String) -> impl FnOnce(ins_transport::Error) -> CtlError {
        move |e| CtlError::Failed(format!("{what}: {e}"))
    }
    let me = own_domid(&xcfg).map_err(failed("this domain's id".into()))?;
    let id = ChannelId::new(me, DomId(domid), channel)
        .map_err(|e| CtlError::Usage(format!("--domid {domid} --channel {channel:?}: {e}")))?;
    let ko = ins_transport::sys::kmod::xen_offer(device, domid, &cfg)
        .map_err(failed(device.display().to_string()))?;
    crate::outln!(
        "{}: {} pages granted to dom{domid}, ports {} and {}; offer published as {}",
        device.display(),
        ko.grefs.len(),
        ko.port,
        ko.live_port,
        id.driver_dir()
    );
    let t = offer_kmod(&id, ko, &xcfg, |v| {
        crate::outln!(
            "instance joined from dom{domid} over xen channel {channel:?} (rendezvous version {v}); holding it"
        )
    })
    .map_err(failed(format!("xen channel {channel:?}")))?;
    crate::outln!(
        "xen channel {channel:?} ended: {}; channel file closed (the module ended the grants: at once, or deferred until the instance's mappings go), keys removed (waited {} ms)",
        match (t.peer_left, t.unmapped_before_revoke) {
            (true, _) => "the instance left",
            (false, true) => "the module declared the instance dead; the instance closed its side",
            (false, false) =>
                "the module declared the instance dead; the instance did not close its side in time",
        },
        t.waited.as_millis()
    );
    Ok(())
}

/// `drain ID`.
pub fn drain(run_dir: &Path, id: u64) -> Result<()> {
    call(run_dir, json!({"cmd": "drain", "id": id}))?;
    crate::outln!("instance {id} draining (takes no new connections)");
    Ok(())
}

/// A mitigation command (`block`, `unblock`, `limit`, `close`).
pub fn mitigate(run_dir: &Path, req: Value) -> Result<()> {
    let r = call(run_dir, req.clone())?;
    let n = r.get("instances").and_then(Value::as_u64).unwrap_or(0);
    let failed = r
        .get("failed")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    crate::outln!(
        "{}: applied on {} instance(s){}",
        req.get("cmd").and_then(Value::as_str).unwrap_or(""),
        n as usize - failed.min(n as usize),
        if failed > 0 {
            format!(", refused by {failed}: {}", r["failed"])
        } else {
            String::new()
        }
    );
    Ok(())
}

/// `flows [--follow] [--json]`.
pub fn flows(run_dir: &Path, follow: bool, as_json: bool) -> Result<()> {
    let mut c = Client::connect(run_dir)?;
    let r = c.call(&json!({"cmd": "flows", "follow": follow}))?;
    if !as_json {
        crate::outln!("{}", flow_header());
    }
    let print = |f: &Value| {
        if as_json {
            crate::outln!("{f}");
        } else {
            crate::outln!("{}", format_flow(f));
        }
    };
    for f in r
        .get("flows")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        print(f);
    }
    if follow {
        while let Some(f) = c.next_line()? {
            print(&f);
        }
    }
    Ok(())
}

/// `run [--isolate] -- CMD ARGS…`: replaces this process with the program
/// running under the shim; returns only on failure.
pub fn run(run_dir: &Path, isolate: bool, argv: &[String]) -> Result<std::convert::Infallible> {
    if argv.is_empty() {
        return Err(CtlError::Usage(
            "run: no command given (ins-ctl run -- CMD ARGS…)".into(),
        ));
    }
    // Fail early and clearly when no driver listens. Only the shim socket
    // is needed: a plain run works for any user the driver's
    // `--shim-mode` lets in, without access to ctl.sock.
    crate::probe_shim(run_dir)?;
    let shim = sibling("libshim.so")?;
    let preload = match std::env::var("LD_PRELOAD") {
        Ok(p) if !p.is_empty() => format!("{}:{p}", shim.display()),
        _ => shim.display().to_string(),
    };
    let mut cmd = if isolate {
        let mut c = Command::new("unshare");
        if rustix::process::geteuid().as_raw() == 0 {
            c.arg("-n");
        } else {
            c.arg("-rn");
        }
        c.args([
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$@\"",
            "ins-run",
        ]);
        c.args(argv);
        c
    } else {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    cmd.env("LD_PRELOAD", preload)
        .env("INS_SHIM_SOCKET", crate::shim_socket(run_dir));
    // exec: the program replaces ins-ctl, so signals and the exit status
    // are its own.
    use std::os::unix::process::CommandExt as _;
    let e = cmd.exec();
    Err(CtlError::Failed(format!("{}: {e}", argv[0])))
}
