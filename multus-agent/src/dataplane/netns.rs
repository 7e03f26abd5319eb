//! Running code inside other network namespaces.
//!
//! `setns(CLONE_NEWNET)` changes only the calling thread, so the work runs on dedicated scoped
//! threads that enter the namespace and then end: no thread of the agent is ever left in a pod's
//! namespace, and nothing async is involved.
use std::{fs::File, os::fd::AsFd as _, path::Path, thread};

use nix::sched::{CloneFlags, setns};

use super::error::{DataplaneError, Result};

/// Runs `f` on a new thread inside the network namespace at `netns` (a `/var/run/netns/<name>` or
/// `/proc/<pid>/ns/net` path) and returns its result.
pub fn run_in<T, F>(netns: &Path, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send,
    T: Send,
{
    // Opened here so a missing namespace fails before a thread exists.
    let file = open(netns)?;
    thread::scope(|scope| {
        let worker = thread::Builder::new()
            .spawn_scoped(scope, || {
                enter(&file, netns)?;
                f()
            })
            .map_err(|e| DataplaneError::io("starting a thread for", netns, e))?;
        match worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Runs every job at once, each on its own thread inside its namespace, and returns their
/// results in job order. Used where the kernel makes each job wait (TCX link creation), so the
/// waits of one batch overlap wherever the kernel lets them.
pub fn run_each<'a, T, F>(jobs: impl IntoIterator<Item = (&'a Path, F)>) -> Vec<Result<T>>
where
    F: FnOnce() -> Result<T> + Send,
    T: Send,
{
    thread::scope(|scope| {
        let started: Vec<Result<_>> = jobs
            .into_iter()
            .map(|(netns, f)| {
                let file = open(netns)?;
                thread::Builder::new()
                    .spawn_scoped(scope, move || {
                        enter(&file, netns)?;
                        f()
                    })
                    .map_err(|e| DataplaneError::io("starting a thread for", netns, e))
            })
            .collect();
        started
            .into_iter()
            .map(|worker| match worker?.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    })
}

fn open(netns: &Path) -> Result<File> {
    File::open(netns).map_err(|source| DataplaneError::Netns {
        path: netns.to_owned(),
        source,
    })
}

fn enter(file: &File, netns: &Path) -> Result<()> {
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| DataplaneError::Netns {
        path: netns.to_owned(),
        source: errno.into(),
    })
}

/// The cookie the kernel gives the calling thread's network namespace (`SO_NETNS_COOKIE`), the
/// same value `bpf_get_netns_cookie()` returns inside the TC programs.
pub fn current_cookie() -> std::io::Result<u64> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    // SAFETY: plain socket(2) call; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh, valid descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: the out-pointer and length describe `cookie`, which lives for the call.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &raw mut len,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}
