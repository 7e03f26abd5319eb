//! Process execution behind a small trait, so tests and benches can wrap or count it.
use std::{
    io::{self, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

/// What a plugin process returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status 0.
    pub success: bool,
    /// The exit status as text, for messages.
    pub status: String,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
}

/// Runs a plugin binary with an environment and stdin.
pub trait Exec: Send + Sync {
    /// Runs `plugin` with `env` added to (and overriding) the inherited environment, writes
    /// `stdin` and collects the output.
    fn run(&self, plugin: &Path, env: &[(&str, String)], stdin: &[u8]) -> io::Result<ExecOutput>;
}

/// Runs plugins as child processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessExec;

impl Exec for ProcessExec {
    fn run(&self, plugin: &Path, env: &[(&str, String)], stdin: &[u8]) -> io::Result<ExecOutput> {
        let mut cmd = Command::new(plugin);
        // The runtime's own CNI_* variables must not leak into a delegate's request.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("CNI_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let input = child.stdin.take();
        let output = std::thread::scope(|scope| {
            // Writing from another thread: a plugin may answer before reading all of stdin.
            let writer = scope.spawn(move || -> io::Result<()> {
                if let Some(mut input) = input {
                    match input.write_all(stdin) {
                        // A plugin that exits without reading stdin is judged by its output.
                        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                        other => other?,
                    }
                }
                Ok(())
            });
            let output = child.wait_with_output();
            match writer.join() {
                Ok(r) => r?,
                Err(panic) => std::panic::resume_unwind(panic),
            }
            output
        })?;
        Ok(ExecOutput {
            success: output.status.success(),
            status: output.status.to_string(),
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }
}

/// Wraps an [`Exec`] and adds up the wall time spent in it, for benches and tests.
#[derive(Debug, Default)]
pub struct CountingExec<E> {
    inner: E,
    nanos: AtomicU64,
    calls: AtomicU64,
}

impl<E: Exec> CountingExec<E> {
    /// Counts calls to `inner`.
    pub fn new(inner: E) -> Self {
        Self {
            inner,
            nanos: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        }
    }

    /// Total time spent in plugins so far, in nanoseconds.
    pub fn nanos(&self) -> u64 {
        self.nanos.load(Ordering::Relaxed)
    }

    /// Plugin runs so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Resets both counters.
    pub fn reset(&self) {
        self.nanos.store(0, Ordering::Relaxed);
        self.calls.store(0, Ordering::Relaxed);
    }
}

impl<E: Exec> Exec for CountingExec<E> {
    fn run(&self, plugin: &Path, env: &[(&str, String)], stdin: &[u8]) -> io::Result<ExecOutput> {
        let start = Instant::now();
        let out = self.inner.run(plugin, env, stdin);
        let spent = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(spent, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
        out
    }
}

impl<E: Exec> Exec for std::sync::Arc<E> {
    fn run(&self, plugin: &Path, env: &[(&str, String)], stdin: &[u8]) -> io::Result<ExecOutput> {
        (**self).run(plugin, env, stdin)
    }
}

/// The first executable file named `name` in `dirs`.
pub fn find_plugin(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_a_process_with_env_and_stdin() {
        let exec = CountingExec::new(ProcessExec);
        let out = exec
            .run(
                Path::new("/bin/sh"),
                &[("CNI_COMMAND", "ADD".to_owned())],
                b"echo \"$CNI_COMMAND\"; cat >&2; exit 3",
            )
            .unwrap();
        // sh reads the script from stdin, so stdout is the variable and nothing is left for cat.
        assert!(!out.success);
        assert_eq!(out.stdout, b"ADD\n");
        assert_eq!(exec.calls(), 1);
        assert!(exec.nanos() > 0);
        exec.reset();
        assert_eq!(exec.calls(), 0);
    }

    #[test]
    fn finds_only_executables() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        let exe = dir.path().join("exe");
        std::fs::write(&exe, "x").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dirs = vec![PathBuf::from("/nonexistent"), dir.path().to_owned()];
        assert_eq!(find_plugin("exe", &dirs), Some(exe));
        assert_eq!(find_plugin("plain", &dirs), None);
        assert_eq!(find_plugin("missing", &dirs), None);
    }
}
