//! Running code inside a test namespace: `setns` on a dedicated thread, so no other thread of the
//! test ever changes namespace. Sockets made there stay bound to that namespace afterwards and can
//! be used from any thread.
use std::{fs::File, os::fd::AsRawFd as _};

use crate::netns::Netns;

impl Netns {
    /// Runs `f` on a new thread inside this namespace and returns its result.
    #[track_caller]
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        let file = File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                // SAFETY: plain setns(2) on a valid descriptor; it affects only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
                f()
            });
            match worker.join() {
                Ok(out) => out,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}
