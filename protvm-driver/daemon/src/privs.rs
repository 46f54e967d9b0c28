//! What the driver keeps of its privileges once its sockets are bound.
//!
//! After start-up (run directory, `instance.sock`, `shim.sock`,
//! `ctl.sock`, `monitor.sock`, the metrics listener, their groups and
//! modes) the driver still needs, at run time:
//!
//! * `CAP_NET_ADMIN`: `SO_SNDBUFFORCE` on the app end of every new socket
//!   pair (`--app-sndbuf` beyond `net.core.wmem_max`);
//! * `CAP_KILL`: stopping, rotating and reaping sandboxed instances, which
//!   run as another user;
//! * for the instances it spawns (`--ins-bin`), which get at `exec` what
//!   the driver keeps (with `no_new_privs`, no more than its permitted
//!   set): `CAP_SETUID`, `CAP_SETGID` (the sandbox switches user),
//!   `CAP_SETPCAP` (the sandbox empties its bounding set), and
//!   `CAP_NET_BIND_SERVICE` with `--instance-low-ports` (the default);
//!   `CAP_SYS_ADMIN` only with `--netns` (`ip netns exec`);
//! * anything named with `--keep-caps`.
//!
//! Everything else leaves the effective, permitted and bounding sets; the
//! inheritable and ambient sets are emptied and `no_new_privs` is set
//! (spawned instances still start: as uid 0 they get the kept set at
//! `exec`, which is all their sandbox needs). The uid stays 0 (the run
//! directory's files are root's). A driver that lacks a capability keeps
//! lacking it (nothing is ever added). `--drop-privileges=false` keeps
//! everything.
//!
//! Invariant: called on the main thread before any other thread or child
//! exists, so every thread and child inherits the reduced sets.

use std::io;

use rustix::thread::{self, CapabilitySet, CapabilitySets};

/// `CAP_CHOWN` … numbers from `linux/capability.h`, by name.
const NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// The number of capability `name` (`net_admin`, `CAP_NET_ADMIN`, any
/// case).
pub fn cap_number(name: &str) -> Option<u32> {
    let n = name.trim().to_ascii_lowercase();
    let n = n.strip_prefix("cap_").unwrap_or(&n);
    NAMES.iter().position(|x| *x == n).map(|i| i as u32)
}

/// The name of capability `cap` (`cap_net_admin`), or its number.
pub fn cap_name(cap: u32) -> String {
    NAMES
        .get(cap as usize)
        .map_or_else(|| cap.to_string(), |n| format!("cap_{n}"))
}

/// Parses `--keep-caps` (comma-separated names).
pub fn parse_caps(list: &str) -> Result<u64, String> {
    let mut m = 0u64;
    for n in list.split(',').filter(|s| !s.trim().is_empty()) {
        let c = cap_number(n).ok_or_else(|| format!("unknown capability {n:?}"))?;
        m |= 1 << c;
    }
    Ok(m)
}

/// What the driver keeps, given how it spawns instances (see the module
/// docs). `spawn_sandboxed`: instances sandbox themselves (switch user);
/// `low_ports`: they keep `CAP_NET_BIND_SERVICE`; `netns`: they start
/// through `ip netns exec`.
pub fn needed(spawn_sandboxed: bool, low_ports: bool, netns: bool, extra: u64) -> u64 {
    let cap = |n: &str| 1u64 << cap_number(n).expect("known capability");
    let mut m = cap("net_admin") | cap("kill") | extra;
    if spawn_sandboxed {
        m |= cap("setuid") | cap("setgid") | cap("setpcap");
    }
    if low_ports {
        m |= cap("net_bind_service");
    }
    if netns {
        m |= cap("sys_admin");
    }
    m
}

/// The sets after [`drop_to`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    /// Effective = permitted.
    pub permitted: u64,
    /// The bounding set.
    pub bounding: u64,
    /// Capabilities dropped from the bounding set.
    pub bounding_dropped: u32,
}

/// Formats a mask as capability names.
pub fn names(mask: u64) -> String {
    let v: Vec<String> = (0..64)
        .filter(|c| mask & (1 << c) != 0)
        .map(cap_name)
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(",")
    }
}

/// Reduces the process to `keep` (see the module docs): the bounding set
/// first (while `CAP_SETPCAP` is still effective), then the effective,
/// permitted and inheritable sets, the ambient set, `no_new_privs`.
pub fn drop_to(keep: u64) -> io::Result<Kept> {
    let permitted = thread::capabilities(None)?.permitted.bits();
    let can_setpcap = permitted & CapabilitySet::SETPCAP.bits() != 0;
    let mut bounding = 0u64;
    let mut dropped = 0;
    for cap in 0u32..64 {
        let one = CapabilitySet::from_bits_retain(1 << cap);
        match thread::capability_is_in_bounding_set(one) {
            // EINVAL: past the kernel's last capability.
            Err(rustix::io::Errno::INVAL) => break,
            Err(e) => return Err(e.into()),
            Ok(false) => {}
            Ok(true) if keep & (1 << cap) != 0 || !can_setpcap => bounding |= 1 << cap,
            Ok(true) => {
                thread::remove_capability_from_bounding_set(one)?;
                dropped += 1;
            }
        }
    }
    let kept = CapabilitySet::from_bits_retain(permitted & keep);
    thread::set_capabilities(
        None,
        CapabilitySets {
            effective: kept,
            permitted: kept,
            inheritable: CapabilitySet::empty(),
        },
    )?;
    thread::clear_ambient_capability_set()?;
    thread::set_no_new_privs(true)?;
    Ok(Kept {
        permitted: kept.bits(),
        bounding,
        bounding_dropped: dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(cap_number("net_admin"), Some(12));
        assert_eq!(cap_number("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(cap_number("checkpoint_restore"), Some(40));
        assert_eq!(cap_number("nope"), None);
        assert_eq!(cap_name(5), "cap_kill");
        assert_eq!(parse_caps("sys_ptrace, CAP_CHOWN"), Ok((1 << 19) | 1));
        assert!(parse_caps("bogus").is_err());
        assert_eq!(names(0), "none");
        assert_eq!(names((1 << 5) | (1 << 12)), "cap_kill,cap_net_admin");
    }

    #[test]
    fn needs_follow_the_options() {
        let base = (1 << 5) | (1 << 12);
        assert_eq!(needed(false, false, false, 0), base);
        assert_eq!(
            needed(true, true, false, 0),
            base | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10)
        );
        assert_eq!(needed(false, false, true, 1), base | (1 << 21) | 1);
    }
}
