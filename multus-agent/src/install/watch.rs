//! Waiting for something to change: inotify on the directories the install reads (the
//! autoconfig directory, the service-account directory, ...), a periodic tick as the safety net
//! (a missing directory is watched once it appears), and SIGTERM/SIGINT through a signalfd so a
//! stop is handled between two syncs, never in the middle of a write.
use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    time::Duration,
};

use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
    sys::{
        inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor},
        signal::{SigSet, Signal},
        signalfd::{SfdFlags, SignalFd},
    },
};

use super::error::{InstallError, Result};

/// Why [`Waker::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Something changed in a watched directory.
    Changed,
    /// The tick elapsed.
    Tick,
    /// SIGTERM or SIGINT arrived.
    Stop(Signal),
}

/// Directory watches plus an optional stop signal.
#[derive(Debug)]
pub struct Waker {
    inotify: Inotify,
    signals: Option<SignalFd>,
    dirs: Vec<(PathBuf, Option<WatchDescriptor>)>,
}

fn watch_err(op: String) -> impl FnOnce(Errno) -> InstallError {
    move |source| InstallError::Watch { op, source }
}

impl Waker {
    /// Watches `dirs`. With `stop_on_signals`, SIGTERM and SIGINT are blocked for the calling
    /// thread and reported by [`Waker::wait`] instead of killing the process; call this before
    /// any other thread is started so none of them takes the signal.
    pub fn new(dirs: &[PathBuf], stop_on_signals: bool) -> Result<Self> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(watch_err("creating an inotify instance".into()))?;
        let signals = if stop_on_signals {
            let mut mask = SigSet::empty();
            mask.add(Signal::SIGTERM);
            mask.add(Signal::SIGINT);
            mask.thread_block()
                .map_err(watch_err("blocking SIGTERM and SIGINT".into()))?;
            Some(
                SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
                    .map_err(watch_err("creating a signalfd".into()))?,
            )
        } else {
            None
        };
        let mut dirs: Vec<(PathBuf, Option<WatchDescriptor>)> =
            dirs.iter().map(|d| (d.clone(), None)).collect();
        dirs.dedup_by(|a, b| a.0 == b.0);
        let mut waker = Self {
            inotify,
            signals,
            dirs,
        };
        waker.add_missing_watches();
        Ok(waker)
    }

    /// Directories that do not exist yet are retried on every wait.
    fn add_missing_watches(&mut self) {
        let flags = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_ATTRIB
            | AddWatchFlags::IN_ONLYDIR;
        for (dir, wd) in &mut self.dirs {
            if wd.is_none() {
                *wd = self.inotify.add_watch(dir.as_path(), flags).ok();
                if wd.is_some() {
                    tracing::debug!(dir = %dir.display(), "watching");
                }
            }
        }
    }

    /// Whether `dir` has a live watch.
    pub fn is_watching(&self, dir: &Path) -> bool {
        self.dirs.iter().any(|(d, wd)| d == dir && wd.is_some())
    }

    /// Waits up to `tick` for a change or a stop signal. Events that arrived meanwhile are
    /// drained, so a burst of writes gives one wake-up.
    pub fn wait(&mut self, tick: Duration) -> Result<Wake> {
        self.add_missing_watches();
        let timeout = PollTimeout::try_from(tick).unwrap_or(PollTimeout::MAX);
        let (changed, stopped) = {
            let mut fds = vec![PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
            if let Some(signals) = &self.signals {
                fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(Errno::EINTR) => return Ok(Wake::Tick),
                Err(e) => return Err(watch_err("waiting for changes".into())(e)),
            }
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), fds.get(1).is_some_and(ready))
        };
        if stopped && let Some(signals) = &self.signals {
            match signals.read_signal() {
                Ok(Some(info)) => {
                    let signal = i32::try_from(info.ssi_signo)
                        .ok()
                        .and_then(|n| Signal::try_from(n).ok())
                        .unwrap_or(Signal::SIGTERM);
                    return Ok(Wake::Stop(signal));
                }
                Ok(None) => {}
                Err(e) => return Err(watch_err("reading the signalfd".into())(e)),
            }
        }
        if !changed {
            return Ok(Wake::Tick);
        }
        loop {
            match self.inotify.read_events() {
                Ok(events) => {
                    for event in events {
                        // The directory went away (or was unmounted): watch it again later.
                        if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                            for (_, wd) in &mut self.dirs {
                                if *wd == Some(event.wd) {
                                    *wd = None;
                                }
                            }
                        }
                    }
                }
                Err(Errno::EAGAIN) => break,
                Err(e) => return Err(watch_err("reading inotify events".into())(e)),
            }
        }
        Ok(Wake::Changed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use std::fs;

    use super::*;

    #[test]
    fn wakes_on_change_ticks_otherwise_and_rewatches_a_new_dir() {
        let dir = tempfile::tempdir().unwrap();
        let later = dir.path().join("later");
        let mut w = Waker::new(&[dir.path().to_owned(), later.clone()], false).unwrap();
        assert!(w.is_watching(dir.path()));
        assert!(!w.is_watching(&later));
        assert_eq!(w.wait(Duration::from_millis(10)).unwrap(), Wake::Tick);
        fs::write(dir.path().join("a.conf"), "{}").unwrap();
        assert_eq!(w.wait(Duration::from_secs(30)).unwrap(), Wake::Changed);
        // The create event and our own create of `later` are both drained or reported once.
        fs::create_dir(&later).unwrap();
        let _ = w.wait(Duration::from_secs(30)).unwrap();
        assert!(w.is_watching(&later));
        fs::write(later.join("token"), "t").unwrap();
        assert_eq!(w.wait(Duration::from_secs(30)).unwrap(), Wake::Changed);
        // Removed directory: the watch goes, and comes back when the directory does.
        fs::remove_file(later.join("token")).unwrap();
        fs::remove_dir(&later).unwrap();
        for _ in 0..300 {
            if !w.is_watching(&later) {
                break;
            }
            w.wait(Duration::from_millis(100)).unwrap();
        }
        assert!(!w.is_watching(&later), "IN_IGNORED not seen");
        fs::create_dir(&later).unwrap();
        let _ = w.wait(Duration::from_millis(10)).unwrap();
        assert!(w.is_watching(&later));
    }
}
