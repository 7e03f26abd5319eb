//! The long-running processes of the cluster (etcd, the control plane, containerd, kubelet): each
//! logs to a file of its own and dies with xtask (PR_SET_PDEATHSIG), even when xtask crashes.
use std::{
    fs::File,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::shell::note;

/// A started process and its log.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd` as `name`, its stdout and stderr going to `<logs>/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, logs: &Path) -> anyhow::Result<Self> {
        let log = logs.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicating {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        note(&format!(
            "started {name} (pid {}, log {})",
            child.id(),
            log.display()
        ));
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        })
    }

    /// Fails when the process has exited (a crash shows here instead of as a timeout later).
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        let Some(child) = self.child.as_mut() else {
            anyhow::bail!("{} was stopped", self.name);
        };
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "{} exited ({status}); see {}",
                self.name,
                self.log.display()
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`; waits for the exit. Stopping twice is a no-op.
    pub fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        note(&format!(
            "{} did not stop within {grace:?}: killing it",
            self.name
        ));
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
