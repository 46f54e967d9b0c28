//! The instance supervisor: spawns `ins` children, reaps them, and knows
//! which core instance each became (by the instance id it announces in its
//! hello, which is the child's tag).
//!
//! In Xen mode (`--xen-spawn`) a child is an instance *domain* instead: the
//! supervisor names its channel (`<prefix><tag>`) and the daemon asks dom0's
//! toolstack agent for the domain and offers it the channel
//! ([`super::xen`]); such a child has ended when its channel was torn
//! down (a failed request, a failed offer, or its instance gone), and it
//! is joined by channel name, not by the hello's tag.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use driver_core::InstId;
use tracing::{info, warn};

/// What a child is.
pub enum Proc {
    /// An `ins` process on this machine.
    Local(Child),
    /// An instance domain asked of the toolstack agent.
    Xen(XenKid),
}

/// An instance domain, as far as the driver knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenKid {
    /// The channel offered to it (unique per driver).
    pub channel: String,
    /// Its domain, once the agent answered.
    pub domid: Option<u16>,
    /// Its channel is torn down (or was never set up): reaped next tick.
    pub ended: bool,
}

/// Xen mode's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenSpawn {
    /// Channel names are this prefix and the child's tag.
    pub prefix: String,
    /// After a domain that ended without joining, wait this long before
    /// asking for another.
    pub retry: Duration,
    /// What the domains run (`--xen-unikernel`: PV unikernels).
    pub kind: ins_xen::agent::Kind,
}

/// One instance started by the driver.
pub struct Kid {
    /// The process or domain.
    pub proc: Proc,
    /// Tag passed as `--instance-id` (echoed in its hello).
    pub tag: u32,
    /// When it was started.
    pub started: Instant,
    /// The core instance it became, once joined.
    pub inst: Option<InstId>,
    /// Being drained and stopped: not replaced when it exits.
    pub retiring: bool,
    /// When the channel was closed (stop); killed if still alive later.
    pub stopped_at: Option<Instant>,
}

/// Children and how to start them.
pub struct Supervisor {
    /// The `ins` binary (None: the driver spawns nothing).
    pub bin: Option<PathBuf>,
    /// Extra arguments for every instance.
    pub extra: Vec<String>,
    /// Network namespace for instances (`ip netns exec NAME`).
    pub netns: Option<String>,
    /// Instance socket path.
    pub inst_sock: PathBuf,
    /// Where instance logs go.
    pub log_dir: PathBuf,
    /// Children.
    pub kids: Vec<Kid>,
    next_tag: u32,
    /// No spawning before this (crash-loop back-off).
    pub hold_until: Option<Instant>,
    /// Give each new instance a fresh random TCP profile.
    pub random_profile: bool,
    /// Xen mode: instances are domains (see the module docs).
    pub xen: Option<XenSpawn>,
}

impl Kid {
    /// Its process id (local children).
    pub fn pid(&self) -> Option<u32> {
        match &self.proc {
            Proc::Local(c) => Some(c.id()),
            Proc::Xen(_) => None,
        }
    }

    /// Its Xen side (Xen children).
    pub fn xen(&self) -> Option<&XenKid> {
        match &self.proc {
            Proc::Xen(x) => Some(x),
            Proc::Local(_) => None,
        }
    }

    /// Kills a local child (a Xen child ends with its channel: dropping
    /// its endpoint tears the channel down, then its domain is destroyed).
    pub fn kill(&mut self) {
        if let Proc::Local(c) = &mut self.proc {
            let _ = c.kill();
        }
    }
}

impl Supervisor {
    /// A supervisor.
    pub fn new(
        bin: Option<PathBuf>,
        extra: Vec<String>,
        netns: Option<String>,
        inst_sock: &Path,
        log_dir: &Path,
    ) -> Supervisor {
        Supervisor {
            bin,
            extra,
            netns,
            inst_sock: inst_sock.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            kids: Vec::new(),
            next_tag: 1,
            hold_until: None,
            random_profile: false,
            xen: None,
        }
    }

    /// Whether it can start instances (`--ins-bin` or `--xen-spawn`).
    pub fn can_spawn(&self) -> bool {
        self.bin.is_some() || self.xen.is_some()
    }

    /// The Xen child of `channel`.
    pub fn by_channel(&mut self, channel: &str) -> Option<&mut Kid> {
        self.kids
            .iter_mut()
            .find(|k| k.xen().is_some_and(|x| x.channel == channel))
    }

    /// Children that count toward the target (not retiring).
    pub fn active(&self) -> usize {
        self.kids.iter().filter(|k| !k.retiring).count()
    }

    /// Starts one instance (Xen mode: names its channel; the daemon asks
    /// for the domain).
    pub fn spawn(&mut self) -> std::io::Result<u32> {
        if let Some(x) = &self.xen {
            let tag = self.next_tag;
            self.next_tag = self.next_tag.wrapping_add(1).max(1);
            let channel = format!("{}{tag}", x.prefix);
            self.kids.push(Kid {
                proc: Proc::Xen(XenKid {
                    channel,
                    domid: None,
                    ended: false,
                }),
                tag,
                started: Instant::now(),
                inst: None,
                retiring: false,
                stopped_at: None,
            });
            return Ok(tag);
        }
        let Some(bin) = self.bin.clone() else {
            return Err(std::io::Error::other(
                "the driver was started without --ins-bin; it cannot spawn instances",
            ));
        };
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        let log = self.log_dir.join(format!("ins-{tag}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let err = out.try_clone()?;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("--driver")
            .arg(&self.inst_sock)
            .arg("--instance-id")
            .arg(tag.to_string());
        if self.random_profile {
            cmd.arg("--random-profile");
        }
        cmd.args(&self.extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        crate::sys::unblock_signals_in_child(&mut cmd);
        let child = cmd.spawn()?;
        info!(tag, pid = child.id(), log = %log.display(), "instance spawned");
        self.kids.push(Kid {
            proc: Proc::Local(child),
            tag,
            started: Instant::now(),
            inst: None,
            retiring: false,
            stopped_at: None,
        });
        Ok(tag)
    }

    /// Reaps exited children; returns them (tag, instance, retiring).
    pub fn reap(&mut self) -> Vec<(u32, Option<InstId>, bool)> {
        let mut gone = Vec::new();
        let mut crash_loop = false;
        let mut xen_retry = None;
        let retry = self.xen.as_ref().map(|x| x.retry);
        self.kids.retain_mut(|k| {
            let child = match &mut k.proc {
                Proc::Local(c) => c,
                Proc::Xen(x) => {
                    if !x.ended {
                        return true;
                    }
                    if k.retiring {
                        info!(tag = k.tag, inst = k.inst, channel = %x.channel, domid = x.domid, "instance domain ended (stopped)");
                    } else {
                        warn!(tag = k.tag, inst = k.inst, channel = %x.channel, domid = x.domid, "instance domain ended; replacing it");
                        if k.inst.is_none() {
                            xen_retry = retry;
                        }
                    }
                    gone.push((k.tag, k.inst, k.retiring));
                    return false;
                }
            };
            match child.try_wait() {
            Ok(Some(status)) => {
                if !k.retiring && k.started.elapsed() < Duration::from_secs(1) {
                    crash_loop = true;
                }
                if k.retiring {
                    info!(tag = k.tag, inst = k.inst, %status, "instance exited (stopped)");
                } else {
                    warn!(tag = k.tag, inst = k.inst, %status, "instance exited unexpectedly; respawning");
                }
                gone.push((k.tag, k.inst, k.retiring));
                false
            }
            Ok(None) => {
                if let Some(t) = k.stopped_at
                    && t.elapsed() > Duration::from_secs(3)
                {
                    warn!(tag = k.tag, "stopped instance did not exit; killing it");
                    let _ = child.kill();
                    k.stopped_at = None;
                }
                true
            }
            Err(e) => {
                warn!(tag = k.tag, error = %e, "waitpid");
                true
            }
        }});
        if crash_loop {
            // Died within a second of starting: back off before respawning.
            self.hold_until = Some(Instant::now() + Duration::from_secs(1));
        }
        if let Some(r) = xen_retry {
            // A domain that never joined: back off before asking again.
            self.hold_until = Some(Instant::now() + r);
        }
        gone
    }

    /// The child that announced `tag`.
    pub fn by_tag(&mut self, tag: u32) -> Option<&mut Kid> {
        self.kids.iter_mut().find(|k| k.tag == tag)
    }

    /// The child that became `inst`.
    pub fn by_inst(&mut self, inst: InstId) -> Option<&mut Kid> {
        self.kids.iter_mut().find(|k| k.inst == Some(inst))
    }

    /// Kills a child (its instance was declared dead while it still runs).
    pub fn kill_inst(&mut self, inst: InstId) {
        if let Some(k) = self.by_inst(inst) {
            k.kill();
        }
    }

    /// Stops every local child: SIGTERM, then SIGKILL after `grace`.
    /// Returns the Xen children's channels and domains (for the daemon to
    /// have destroyed).
    pub fn stop_all(&mut self, grace: Duration) -> Vec<(String, u16)> {
        let xen: Vec<(String, u16)> = self
            .kids
            .iter()
            .filter_map(|k| k.xen())
            .filter(|x| !x.ended)
            .filter_map(|x| Some((x.channel.clone(), x.domid?)))
            .collect();
        self.kids.retain(|k| k.xen().is_none());
        for k in &self.kids {
            if let Some(p) = k.pid()
                && let Ok(pid) = i32::try_from(p)
                && let Some(pid) = rustix::process::Pid::from_raw(pid)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let until = Instant::now() + grace;
        let exited = |k: &mut Kid| match &mut k.proc {
            Proc::Local(c) => matches!(c.try_wait(), Ok(Some(_))),
            Proc::Xen(_) => true,
        };
        while !self.kids.is_empty() && Instant::now() < until {
            self.kids.retain_mut(|k| !exited(k));
            std::thread::sleep(Duration::from_millis(20));
        }
        for k in &mut self.kids {
            if let Proc::Local(c) = &mut k.proc {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.kids.clear();
        xen
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::{Proc, Supervisor, XenSpawn};

    fn xen_sup() -> Supervisor {
        let mut s = Supervisor::new(
            None,
            vec![],
            None,
            std::path::Path::new("/nonexistent/instance.sock"),
            std::path::Path::new("/nonexistent"),
        );
        s.xen = Some(XenSpawn {
            prefix: "x9-".into(),
            retry: Duration::from_secs(5),
            kind: ins_xen::agent::Kind::Linux,
        });
        s
    }

    fn end(s: &mut Supervisor, channel: &str, domid: Option<u16>) {
        let k = s.by_channel(channel).unwrap();
        let Proc::Xen(x) = &mut k.proc else { panic!() };
        x.domid = domid;
        x.ended = true;
    }

    #[test]
    fn xen_mode_names_channels_counts_reaps_and_backs_off() {
        let mut s = xen_sup();
        assert!(s.can_spawn());
        let (a, b) = (s.spawn().unwrap(), s.spawn().unwrap());
        assert_eq!((a, b), (1, 2));
        assert_eq!(s.active(), 2);
        assert!(s.by_tag(1).unwrap().pid().is_none());
        assert_eq!(s.by_tag(2).unwrap().xen().unwrap().channel, "x9-2");
        // Nothing ended: nothing reaped, no process to wait for.
        assert!(s.reap().is_empty());
        // One joined (instance 7), then its channel ended: replaced at once.
        s.by_channel("x9-1").unwrap().inst = Some(7);
        end(&mut s, "x9-1", Some(12));
        assert_eq!(s.reap(), [(1, Some(7), false)]);
        assert!(s.hold_until.is_none());
        assert_eq!(s.active(), 1);
        // One that never joined (the agent refused, or it never booted):
        // the next request waits --xen-retry-ms.
        end(&mut s, "x9-2", None);
        assert_eq!(s.reap(), [(2, None, false)]);
        assert!(
            s.hold_until
                .is_some_and(|t| t > Instant::now() + Duration::from_secs(4))
        );
        // Retired ones are reaped as stopped, without a back-off.
        s.hold_until = None;
        s.spawn().unwrap();
        s.by_tag(3).unwrap().retiring = true;
        end(&mut s, "x9-3", Some(14));
        assert_eq!(s.reap(), [(3, None, true)]);
        assert!(s.hold_until.is_none());
    }

    #[test]
    fn stop_all_hands_back_the_domains_still_in_use() {
        let mut s = xen_sup();
        for _ in 0..3 {
            s.spawn().unwrap();
        }
        {
            let Proc::Xen(x) = &mut s.by_channel("x9-1").unwrap().proc else {
                panic!()
            };
            x.domid = Some(21);
        }
        end(&mut s, "x9-2", Some(22)); // its destroy was already asked for
        // x9-3: no domain yet
        assert_eq!(s.stop_all(Duration::ZERO), [("x9-1".to_string(), 21)]);
        assert!(s.kids.is_empty());
    }
}
