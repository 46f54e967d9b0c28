//! The instance's sandbox (local mode and `--kmod`), applied once the channel with the
//! driver is open and before the instance serves:
//!
//! 1. the capability bounding set is emptied (while still root);
//! 2. every uid/gid becomes the sandbox user's, with no supplementary
//!    groups, which clears every capability;
//! 3. `no_new_privs`;
//! 4. Landlock with no rule: no file may be opened, created, removed or
//!    executed (when the kernel has Landlock);
//! 5. a seccomp allowlist of exactly the system calls the serving loop
//!    makes; any other call fails with `EPERM`. `socket()` is allowed for
//!    `AF_INET`/`AF_INET6` only, so no Unix socket (the driver's
//!    `ctl.sock`, `shim.sock`) can be reached; `open*`, `exec*`,
//!    `ptrace`, `fork`/`clone` are not on the list.
//!
//! A step the environment cannot take (no Landlock in the kernel, not
//! started as root) is logged in one line and skipped, unless the mode is
//! [`SandboxMode::Strict`], where it is an error.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use rustix::thread::{self, CapabilitySet, CapabilitySets};

use crate::sys::raw;

/// How much of the sandbox to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    /// No sandbox: the instance keeps the privileges it was started with.
    Off,
    /// Apply every step the environment supports; say which it cannot.
    On,
    /// Apply every step or fail.
    Strict,
}

/// The sandbox's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxUser {
    /// Its uid (never 0).
    pub uid: u32,
    /// Its gid.
    pub gid: u32,
}

/// Why the sandbox could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The user is unknown or is root.
    #[error("sandbox user {0}")]
    User(String),
    /// A step failed.
    #[error("sandbox: {step}: {source}")]
    Step {
        /// The step.
        step: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A step is not supported here and the mode is strict.
    #[error("sandbox (strict): {0}")]
    Unsupported(String),
}

fn step(step: &'static str) -> impl FnOnce(io::Error) -> SandboxError {
    move |source| SandboxError::Step { step, source }
}

/// Resolves `spec`: `UID`, `UID:GID`, or a user name looked up in
/// `passwd` (the text of `/etc/passwd`). Root is refused.
pub fn parse_user(spec: &str, passwd: &str) -> Result<SandboxUser, SandboxError> {
    let num = |s: &str| s.parse::<u32>().ok();
    let user = if let Some(uid) = num(spec) {
        // A bare uid: its passwd group if it has an entry, else the same id.
        let gid = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && num(f[2]) == Some(uid))
            .and_then(|f| num(f[3]))
            .unwrap_or(uid);
        SandboxUser { uid, gid }
    } else if let Some((u, g)) = spec.split_once(':')
        && let (Some(uid), Some(gid)) = (num(u), num(g))
    {
        SandboxUser { uid, gid }
    } else {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 4 && f[0] == spec)
            .and_then(|f| {
                Some(SandboxUser {
                    uid: num(f[2])?,
                    gid: num(f[3])?,
                })
            })
            .ok_or_else(|| SandboxError::User(format!("{spec:?} is not in /etc/passwd")))?
    };
    if user.uid == 0 || user.gid == 0 {
        return Err(SandboxError::User(format!(
            "{spec:?} is root (uid {}, gid {}): give an unprivileged user",
            user.uid, user.gid
        )));
    }
    Ok(user)
}

/// Resolves `spec` against the system's `/etc/passwd` (before the sandbox
/// is applied: afterwards no file can be read).
pub fn resolve_user(spec: &str) -> Result<SandboxUser, SandboxError> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    parse_user(spec, &passwd)
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The uid switched to (None: not started as root, kept as is).
    pub uid: Option<u32>,
    /// Whether Landlock is enforced (fully).
    pub landlock: bool,
    /// Syscalls on the seccomp allowlist.
    pub syscalls: usize,
}

/// Removes every capability but `keep` from the bounding set (needs
/// `CAP_SETPCAP`, i.e. call it while still root); stops at the first
/// number the kernel does not know (`EINVAL`). Returns how many were
/// removed.
fn drop_bounding_set(keep: CapabilitySet) -> io::Result<u32> {
    let mut n = 0;
    for cap in 0u32..64 {
        let one = CapabilitySet::from_bits_retain(1 << cap);
        if keep.contains(one) {
            continue;
        }
        match thread::remove_capability_from_bounding_set(one) {
            Ok(()) => n += 1,
            Err(rustix::io::Errno::INVAL) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

/// Applies the sandbox to the whole process (see the module docs). With
/// `low_ports`, `CAP_NET_BIND_SERVICE` is kept (and only it), so that an
/// application may listen on a port below 1024 through the instance.
pub fn apply(
    mode: SandboxMode,
    user: SandboxUser,
    low_ports: bool,
) -> Result<Applied, SandboxError> {
    let mut done = Applied::default();
    if mode == SandboxMode::Off {
        return Ok(done);
    }
    let strict = mode == SandboxMode::Strict;
    let skip = |what: String| -> Result<(), SandboxError> {
        if strict {
            Err(SandboxError::Unsupported(what))
        } else {
            tracing::warn!("sandbox: {what}; continuing without it");
            Ok(())
        }
    };
    if rustix::process::geteuid().is_root() {
        let keep = if low_ports {
            CapabilitySet::NET_BIND_SERVICE
        } else {
            CapabilitySet::empty()
        };
        drop_bounding_set(keep).map_err(step("empty the capability bounding set"))?;
        if keep.is_empty() {
            raw::become_user(user.uid, user.gid).map_err(step("switch user"))?;
        } else {
            let caps = |e: rustix::io::Errno| io::Error::from(e);
            thread::set_keep_capabilities(true)
                .map_err(caps)
                .map_err(step("keep capabilities"))?;
            raw::become_user(user.uid, user.gid).map_err(step("switch user"))?;
            let sets = CapabilitySets {
                effective: keep,
                permitted: keep,
                inheritable: CapabilitySet::empty(),
            };
            thread::set_capabilities(None, sets)
                .map_err(caps)
                .map_err(step("keep CAP_NET_BIND_SERVICE only"))?;
            thread::set_keep_capabilities(false)
                .map_err(caps)
                .map_err(step("keep capabilities"))?;
        }
        done.uid = Some(user.uid);
    } else {
        skip(format!(
            "not started as root (euid {}): the user is kept, not switched to uid {}",
            rustix::process::geteuid().as_raw(),
            user.uid
        ))?;
    }
    thread::set_no_new_privs(true).map_err(|e| step("no_new_privs")(e.into()))?;
    done.landlock = landlock_no_files(strict, &skip)?;
    let prog = allowlist()?;
    done.syscalls = allowed_syscalls().len();
    seccompiler::apply_filter_all_threads(&prog).map_err(|e| SandboxError::Step {
        step: "install the seccomp filter",
        source: io::Error::other(e.to_string()),
    })?;
    Ok(done)
}

/// Landlock handling every file access right, with no rule: nothing in
/// the file system may be opened. Returns whether it is fully enforced.
fn landlock_no_files(
    strict: bool,
    skip: &dyn Fn(String) -> Result<(), SandboxError>,
) -> Result<bool, SandboxError> {
    use landlock::{
        ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetStatus,
    };
    // Strict needs the first ABI's rights (every open, create, remove,
    // exec); otherwise every right the kernel knows is handled.
    let (level, abi) = if strict {
        (CompatLevel::HardRequirement, ABI::V1)
    } else {
        (CompatLevel::BestEffort, ABI::V5)
    };
    let ll = |e: landlock::RulesetError| SandboxError::Step {
        step: "landlock",
        source: io::Error::other(e.to_string()),
    };
    let status = Ruleset::default()
        .set_compatibility(level)
        .handle_access(AccessFs::from_all(abi))
        .map_err(ll)?
        .create()
        .map_err(ll)?
        .restrict_self()
        .map_err(ll)?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(true),
        RulesetStatus::PartiallyEnforced => {
            skip("Landlock is only partly supported by this kernel".into())?;
            Ok(false)
        }
        RulesetStatus::NotEnforced => {
            skip(
                "this kernel has no Landlock (file access is still refused by seccomp: \
                 no open/exec call is allowed)"
                    .into(),
            )?;
            Ok(false)
        }
    }
}

/// The system calls the instance makes once it serves (found by running
/// it under `strace -f -c` through the e2e tests), each allowed whatever
/// its arguments, except `socket` (`AF_INET`/`AF_INET6`) and `prctl` (`PR_GET_AUXV`).
fn allowed_syscalls() -> Vec<i64> {
    use libc::*;
    let mut v = vec![
        // I/O on sockets, the control socket, the eventfd doorbells, the
        // signalfd and the log (stderr).
        SYS_read,
        SYS_write,
        SYS_writev,
        SYS_recvfrom,
        SYS_sendto,
        SYS_recvmsg,
        SYS_sendmsg,
        SYS_close,
        SYS_shutdown,
        // Socket set-up (socket() itself is filtered by family).
        SYS_bind,
        SYS_listen,
        SYS_connect,
        SYS_accept4,
        SYS_getsockopt,
        SYS_setsockopt,
        SYS_getsockname,
        SYS_getpeername,
        SYS_fcntl,
        // The event loop.
        SYS_epoll_create1,
        SYS_epoll_ctl,
        SYS_epoll_pwait,
        SYS_epoll_pwait2,
        // The kernel module transport's hang-up watcher (one fd).
        SYS_ppoll,
        // Time (normally the vDSO) and the shutdown grace.
        SYS_clock_gettime,
        SYS_clock_nanosleep,
        SYS_nanosleep,
        SYS_sched_yield,
        // Memory (the allocator) and locks.
        SYS_futex,
        SYS_mmap,
        SYS_munmap,
        SYS_mremap,
        SYS_brk,
        SYS_madvise,
        SYS_mprotect,
        // Signals (the signalfd mask, a panic) and exit.
        SYS_rt_sigprocmask,
        SYS_rt_sigaction,
        SYS_rt_sigreturn,
        SYS_sigaltstack,
        SYS_restart_syscall,
        SYS_exit,
        SYS_exit_group,
        SYS_getpid,
        SYS_gettid,
        // Hash map keys.
        SYS_getrandom,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([SYS_epoll_wait, SYS_poll]);
    v
}

/// `prctl(PR_GET_AUXV, ...)` (Linux 6.4; not in every libc crate).
const PR_GET_AUXV: u64 = 0x4155_5856;

/// The seccomp program: the allowlist, `socket` for `AF_INET`/`AF_INET6`
/// only, `prctl` for `PR_GET_AUXV` only, and `EPERM` for everything else.
fn allowlist() -> Result<BpfProgram, SandboxError> {
    let bad = |e: seccompiler::Error| SandboxError::Step {
        step: "build the seccomp filter",
        source: io::Error::other(e.to_string()),
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = allowed_syscalls()
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    let family = |f: i32| -> Result<SeccompRule, seccompiler::Error> {
        SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Eq,
            f as u64,
        )?])
        .map_err(Into::into)
    };
    rules.insert(
        libc::SYS_socket,
        vec![
            family(libc::AF_INET).map_err(bad)?,
            family(libc::AF_INET6).map_err(bad)?,
        ],
    );
    // Reading the auxiliary vector (std's CPU feature detection); no other
    // prctl.
    rules.insert(
        libc::SYS_prctl,
        vec![
            SeccompRule::new(vec![
                SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, PR_GET_AUXV)
                    .map_err(|e| bad(e.into()))?,
            ])
            .map_err(|e| bad(e.into()))?,
        ],
    );
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| SandboxError::Step {
        step: "seccomp architecture",
        source: io::Error::other(e.to_string()),
    })?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| bad(e.into()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| bad(e.into()))
}

/// One forbidden action of the self-test and its outcome.
pub fn selftest_line(action: &str, r: io::Result<()>) -> String {
    match r {
        Ok(()) => format!("sandbox-selftest {action}: ALLOWED"),
        Err(e) => format!(
            "sandbox-selftest {action}: refused errno={} ({e})",
            e.raw_os_error().unwrap_or(0)
        ),
    }
}

/// Connects to a Unix socket of either type the driver uses (stream:
/// `ctl.sock`, `instance.sock`; seqpacket: `shim.sock`).
fn connect_unix(path: &Path) -> io::Result<()> {
    use rustix::net::{
        AddressFamily, SocketAddrUnix, SocketFlags, SocketType, connect, socket_with,
    };
    let addr = SocketAddrUnix::new(path)?;
    let mut first = None;
    for ty in [SocketType::STREAM, SocketType::SEQPACKET] {
        let r = socket_with(AddressFamily::UNIX, ty, SocketFlags::CLOEXEC, None)
            .and_then(|fd| connect(&fd, &addr));
        match r {
            Ok(()) => return Ok(()),
            // The other type may be the right one.
            Err(rustix::io::Errno::PROTOTYPE) => {
                first.get_or_insert(rustix::io::Errno::PROTOTYPE);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(first.unwrap_or(rustix::io::Errno::PROTOTYPE).into())
}

/// Tries each action the sandbox must refuse, and one it must allow
/// (a TCP socket), printing one line per action on stdout. `run_dir` is
/// the driver's run directory (its `ctl.sock` and `shim.sock`; none for
/// the kernel module); `trace_pid` the process to try to trace (the
/// driver's; init for the module); `device` a device to try to open
/// again (the module's `/dev/ins`: a sandboxed instance must not open a
/// second connection to it).
pub fn selftest(run_dir: Option<&Path>, trace_pid: u32, device: Option<&Path>) {
    use std::io::Write;
    let mut lines = Vec::new();
    let open = |p: &str| std::fs::File::open(p).map(drop);
    lines.push(selftest_line("open /etc/passwd", open("/etc/passwd")));
    lines.push(selftest_line(
        "open /proc/self/status",
        open("/proc/self/status"),
    ));
    let tmp = format!("/tmp/ins-sandbox-selftest-{}", std::process::id());
    lines.push(selftest_line(
        "create /tmp file",
        std::fs::File::create(&tmp).map(drop),
    ));
    let _ = std::fs::remove_file(&tmp);
    if let Some(run_dir) = run_dir {
        for sock in ["ctl.sock", "shim.sock", "instance.sock"] {
            let p = run_dir.join(sock);
            lines.push(selftest_line(&format!("connect {sock}"), connect_unix(&p)));
        }
    }
    if let Some(dev) = device {
        lines.push(selftest_line(
            &format!("open {}", dev.display()),
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(dev)
                .map(drop),
        ));
    }
    lines.push(selftest_line(
        if run_dir.is_some() {
            "ptrace driver"
        } else {
            "ptrace init"
        },
        raw::ptrace_seize(i32::try_from(trace_pid).unwrap_or(-1)),
    ));
    lines.push(selftest_line(
        "tcp socket (must be allowed)",
        std::net::TcpListener::bind("127.0.0.1:0").map(drop),
    ));
    // Last: on success this replaces the process.
    let mut out = std::io::stdout().lock();
    for l in &lines {
        let _ = writeln!(out, "{l}");
    }
    let _ = out.flush();
    drop(out);
    let e = {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("/bin/true").exec()
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", selftest_line("exec /bin/true", Err(e)));
    let _ = writeln!(out, "sandbox-selftest done");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
        ins:x:990:985::/:/usr/sbin/nologin\n";

    #[test]
    fn users_resolve_and_root_is_refused() {
        let u = |s| parse_user(s, PASSWD);
        assert_eq!(
            u("nobody").unwrap(),
            SandboxUser {
                uid: 65534,
                gid: 65534
            }
        );
        assert_eq!(u("ins").unwrap(), SandboxUser { uid: 990, gid: 985 });
        assert_eq!(u("990").unwrap(), SandboxUser { uid: 990, gid: 985 });
        assert_eq!(
            u("4000").unwrap(),
            SandboxUser {
                uid: 4000,
                gid: 4000
            }
        );
        assert_eq!(u("4000:5").unwrap(), SandboxUser { uid: 4000, gid: 5 });
        assert!(u("root").unwrap_err().to_string().contains("root"));
        assert!(u("0").is_err());
        assert!(u("7:0").is_err());
        assert!(u("nosuchuser").unwrap_err().to_string().contains("not in"));
    }

    #[test]
    fn the_allowlist_compiles_and_refuses_unix_sockets_and_exec() {
        let prog = allowlist().unwrap();
        assert!(!prog.is_empty());
        let list = allowed_syscalls();
        for nr in [
            libc::SYS_execve,
            libc::SYS_openat,
            libc::SYS_ptrace,
            libc::SYS_socket,
            libc::SYS_clone,
            libc::SYS_prctl,
            libc::SYS_ioctl,
        ] {
            assert!(
                !list.contains(&nr),
                "{nr} must not be allowed unconditionally"
            );
        }
    }
}
