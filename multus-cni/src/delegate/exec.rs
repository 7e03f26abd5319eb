//! Process execution behind a small trait, so tests and benches can wrap or count it.
//!
//! [`ProcessExec`] runs plugins in the caller's filesystem; [`ChrootExec`] runs them with their
//! root changed to another directory (Multus's `chrootDir`: the agent's container sees the
//! node's `/` there), so every path a plugin opens, and the plugin's own path, is the node's.
use std::{
    ffi::CString,
    io::{self, Write as _},
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use tracing::warn;

/// How many times an exec failing with "text file busy" is tried (Multus's count): a plugin
/// binary being replaced on the node is busy for a moment.
pub const TEXT_BUSY_ATTEMPTS: u32 = 5;
/// The pause between two of those attempts.
pub const TEXT_BUSY_PAUSE: Duration = Duration::from_secs(1);

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

    /// The first executable named `name` in `dirs`, as the path [`Exec::run`] takes.
    fn find(&self, name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
        find_plugin(name, dirs)
    }

    /// The directory plugins run with as their root, when it is not the caller's.
    fn root(&self) -> Option<&Path> {
        None
    }
}

/// Runs plugins as child processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessExec;

impl Exec for ProcessExec {
    fn run(&self, plugin: &Path, env: &[(&str, String)], stdin: &[u8]) -> io::Result<ExecOutput> {
        run_command(Command::new(plugin), plugin, env, stdin)
    }
}

/// Runs plugins as child processes whose root is `root` (chroot, then chdir to `/`): plugin
/// paths, `CNI_PATH`, `CNI_NETNS` and every path in a plugin's configuration are read below
/// `root`. With `root` the node's `/` as the agent's container sees it, delegates run on the
/// node's filesystem as they would when the runtime called them directly.
#[derive(Debug, Clone)]
pub struct ChrootExec {
    root: PathBuf,
}

impl ChrootExec {
    /// Plugins run with `root` as their `/`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `path` (a path as the plugins see it) as seen from here.
    pub fn outside(&self, path: &Path) -> PathBuf {
        let rel = path.strip_prefix("/").unwrap_or(path);
        if rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }
}

impl Exec for ChrootExec {
    fn run(&self, plugin: &Path, env: &[(&str, String)], stdin: &[u8]) -> io::Result<ExecOutput> {
        let root = CString::new(self.root.as_os_str().as_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("chrootDir {} contains a NUL byte", self.root.display()),
            )
        })?;
        let mut cmd = Command::new(plugin);
        // SAFETY: chroot(2) and chdir(2) are async-signal-safe and the closure allocates
        // nothing: the path was made a C string above, in the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        run_command(cmd, plugin, env, stdin).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("{e} (run with its root at {})", self.root.display()),
            )
        })
    }

    /// Looks in each directory below the root; the path returned is the plugin's own (the
    /// exec resolves it after the chroot). A symbolic link is taken as found: it may point to
    /// a path that only resolves below the root.
    fn find(&self, name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
        dirs.iter().map(|d| d.join(name)).find(|p| {
            let here = self.outside(p);
            std::fs::symlink_metadata(&here).is_ok_and(|m| m.file_type().is_symlink())
                || is_executable(&here)
        })
    }

    fn root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

/// Spawns `cmd`, retrying "text file busy" like Multus does.
fn spawn(cmd: &mut Command, plugin: &Path) -> io::Result<Child> {
    let mut attempt = 1;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < TEXT_BUSY_ATTEMPTS => {
                warn!(plugin = %plugin.display(), attempt, "text file busy (being replaced?): trying again");
                attempt += 1;
                std::thread::sleep(TEXT_BUSY_PAUSE);
            }
            other => return other,
        }
    }
}

/// Runs `cmd` with `env` and `stdin`, collecting the output.
fn run_command(
    mut cmd: Command,
    plugin: &Path,
    env: &[(&str, String)],
    stdin: &[u8],
) -> io::Result<ExecOutput> {
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
    let mut child = spawn(&mut cmd, plugin)?;
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

    fn find(&self, name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
        self.inner.find(name, dirs)
    }

    fn root(&self) -> Option<&Path> {
        self.inner.root()
    }
}

impl<E: Exec> Exec for std::sync::Arc<E> {
    fn run(&self, plugin: &Path, env: &[(&str, String)], stdin: &[u8]) -> io::Result<ExecOutput> {
        (**self).run(plugin, env, stdin)
    }

    fn find(&self, name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
        (**self).find(name, dirs)
    }

    fn root(&self) -> Option<&Path> {
        (**self).root()
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable file named `name` in `dirs`.
pub fn find_plugin(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().map(|d| d.join(name)).find(|p| is_executable(p))
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

    /// A copy of `true` held open for writing by this process for `hold`: exec fails with
    /// ETXTBSY meanwhile, as when a plugin is being replaced on the node.
    fn busy_binary(dir: &Path, hold: Duration) -> (PathBuf, std::thread::JoinHandle<()>) {
        let exe = dir.join("busy");
        std::fs::copy("/bin/true", &exe).unwrap();
        let writer = std::fs::OpenOptions::new().write(true).open(&exe).unwrap();
        let handle = std::thread::spawn(move || {
            std::thread::sleep(hold);
            drop(writer);
        });
        (exe, handle)
    }

    #[test]
    fn a_text_busy_plugin_is_tried_again() {
        let dir = tempfile::tempdir().unwrap();
        let (exe, writer) = busy_binary(dir.path(), TEXT_BUSY_PAUSE + TEXT_BUSY_PAUSE / 2);
        let out = ProcessExec.run(&exe, &[], b"").unwrap();
        assert!(out.success, "{out:?}");
        writer.join().unwrap();
    }

    #[test]
    fn a_plugin_busy_for_longer_fails_with_text_file_busy() {
        let dir = tempfile::tempdir().unwrap();
        let (exe, writer) = busy_binary(dir.path(), TEXT_BUSY_PAUSE * (TEXT_BUSY_ATTEMPTS + 2));
        let err = ProcessExec.run(&exe, &[], b"").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ETXTBSY), "{err}");
        writer.join().unwrap();
    }

    #[test]
    fn chroot_finds_plugins_below_the_root_by_their_own_path() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("opt/cni/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("exe"), "x").unwrap();
        std::fs::set_permissions(bin.join("exe"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("/usr/lib/cni/macvlan", bin.join("link")).unwrap();
        let exec = ChrootExec::new(root.path());
        let dirs = vec![PathBuf::from("/nonexistent"), PathBuf::from("/opt/cni/bin")];
        assert_eq!(
            exec.find("exe", &dirs),
            Some(PathBuf::from("/opt/cni/bin/exe"))
        );
        // Resolved after the chroot, not here.
        assert_eq!(
            exec.find("link", &dirs),
            Some(PathBuf::from("/opt/cni/bin/link"))
        );
        assert_eq!(exec.find("missing", &dirs), None);
        assert_eq!(exec.root(), Some(root.path()));
        assert_eq!(exec.outside(Path::new("/")), root.path());
        // Not below the root: the caller's own /opt/cni/bin is not searched.
        assert_eq!(
            ChrootExec::new(root.path()).find("true", &[PathBuf::from("/bin")]),
            None
        );
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
