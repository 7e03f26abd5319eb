//! Running code inside a test namespace: `setns` on a dedicated thread, so no other thread of the
//! test ever changes namespace. Sockets made there stay bound to that namespace afterwards and can
//! be used from any thread.
use crate::{inside, netns::Netns};

impl Netns {
    /// Runs `f` on a new thread inside this namespace and returns its result.
    #[track_caller]
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        inside::run_in(&path, f).unwrap_or_else(|e| panic!("entering {}: {e}", path.display()))
    }
}
