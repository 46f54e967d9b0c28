//! The instance supervisor: spawns `ins` children, reaps them, and knows
//! which core instance each became (by the instance id it announces in its
//! hello, which is the child's tag).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use driver_core::InstId;
use tracing::{info, warn};

/// One `ins` process started by the driver.
pub struct Kid {
    /// The process.
    pub child: Child,
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
        }
    }

    /// Children that count toward the target (not retiring).
    pub fn active(&self) -> usize {
        self.kids.iter().filter(|k| !k.retiring).count()
    }

    /// Starts one instance.
    pub fn spawn(&mut self) -> std::io::Result<u32> {
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
            child,
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
        self.kids.retain_mut(|k| match k.child.try_wait() {
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
                    let _ = k.child.kill();
                    k.stopped_at = None;
                }
                true
            }
            Err(e) => {
                warn!(tag = k.tag, error = %e, "waitpid");
                true
            }
        });
        if crash_loop {
            // Died within a second of starting: back off before respawning.
            self.hold_until = Some(Instant::now() + Duration::from_secs(1));
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
            let _ = k.child.kill();
        }
    }

    /// Stops every child: SIGTERM, then SIGKILL after `grace`.
    pub fn stop_all(&mut self, grace: Duration) {
        for k in &self.kids {
            if let Ok(pid) = i32::try_from(k.child.id())
                && let Some(pid) = rustix::process::Pid::from_raw(pid)
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let until = Instant::now() + grace;
        while !self.kids.is_empty() && Instant::now() < until {
            self.kids
                .retain_mut(|k| !matches!(k.child.try_wait(), Ok(Some(_))));
            std::thread::sleep(Duration::from_millis(20));
        }
        for k in &mut self.kids {
            let _ = k.child.kill();
            let _ = k.child.wait();
        }
        self.kids.clear();
    }
}
