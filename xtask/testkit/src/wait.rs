//! Waiting in tests for something that happens asynchronously: a watch delivering, a file
//! appearing, the API server's caches catching up with a write.
use std::time::{Duration, Instant};

/// Upper bound for anything a test waits for (never a performance assertion).
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `f` every 20 ms until it gives a value; fails the test after [`PATIENCE`]. The API
/// server's caches lag behind writes: RBAC and accounts by milliseconds, token authentication by
/// up to 10 s (it caches successful token reviews that long, so a revocation takes as long).
#[track_caller]
pub fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
