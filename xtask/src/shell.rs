//! Running commands from xtask: each is echoed before it runs, and a failure names it.
use std::{
    ffi::OsStr,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Prints a step header.
pub fn step(what: &str) {
    eprintln!("\x1b[1m==> {what}\x1b[0m");
}

/// Prints a detail line under a step.
pub fn note(what: &str) {
    eprintln!("    {what}");
}

/// A command line being built; `run` echoes and runs it, failing on a non-zero exit.
pub struct Cmd {
    inner: Command,
    shown: String,
}

impl Cmd {
    /// `program` with no arguments yet.
    pub fn new(program: &str) -> Self {
        Self {
            inner: Command::new(program),
            shown: program.to_owned(),
        }
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.shown.push(' ');
            self.shown.push_str(&a.as_ref().to_string_lossy());
            self.inner.arg(a);
        }
        self
    }

    /// Sets an environment variable (shown in the echo).
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.shown = format!("{key}={} {}", value.as_ref().to_string_lossy(), self.shown);
        self.inner.env(key, value);
        self
    }

    /// Runs with inherited stdio.
    pub fn run(mut self) -> anyhow::Result<()> {
        note(&format!("$ {}", self.shown));
        let status = self
            .inner
            .status()
            .with_context(|| format!("running `{}`", self.shown))?;
        if !status.success() {
            bail!("`{}` failed: {status}", self.shown);
        }
        Ok(())
    }

    /// Runs quietly and returns stdout; `None` when it cannot run or fails.
    pub fn probe(mut self) -> Option<String> {
        let out = self
            .inner
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Whether we run as root (installing packages and mounting need it).
pub fn is_root() -> bool {
    Cmd::new("id")
        .args(["-u"])
        .probe()
        .is_some_and(|u| u.trim() == "0")
}

/// The repository's root directory.
pub fn repo_root() -> std::path::PathBuf {
    let xtask = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_owned()
}

/// Where cargo puts what it builds for `profile` (`debug`, `release`): below `CARGO_TARGET_DIR`
/// when it is set (relative to the repository root, as cargo reads it there), else `target/`.
pub fn target_dir(profile: &str) -> std::path::PathBuf {
    let root = repo_root();
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target"), |d| root.join(d))
        .join(profile)
}

/// Builds the `multus-agent` binary (debug profile, shared with the tests) and returns its path.
pub fn build_agent() -> anyhow::Result<std::path::PathBuf> {
    step("building multus-agent");
    Cmd::new("cargo")
        .args(["build", "--package", "multus-agent"])
        .run()?;
    Ok(target_dir("debug").join("multus-agent"))
}
