//! Running commands from xtask: each is echoed before it runs, and a failure names it.
use std::{
    ffi::OsStr,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Prints a step header (bold on a terminal).
pub fn step(what: &str) {
    use std::io::IsTerminal as _;
    let colour = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    eprintln!("{}", header(what, colour));
}

/// Whether to write colour codes: only to a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
fn use_colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

fn header(what: &str, colour: bool) -> String {
    if colour {
        format!("\x1b[1m==> {what}\x1b[0m")
    } else {
        format!("==> {what}")
    }
}

/// The last step header of a command: "done" only when it succeeded.
pub fn outcome(ok: bool, took: std::time::Duration) -> String {
    if ok {
        format!("done in {took:.0?}")
    } else {
        format!("failed after {took:.0?}")
    }
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

#[cfg(test)]
mod tests {
    use std::{ffi::OsString, time::Duration};

    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsString::new())));
        assert!(!use_colour(true, Some(OsString::from("1"))));
        assert!(!use_colour(false, None));
        assert_eq!(header("x", false), "==> x");
        assert!(!header("x", false).contains('\x1b'));
        assert_eq!(header("x", true), "\x1b[1m==> x\x1b[0m");
    }

    #[test]
    fn a_failed_command_does_not_say_done() {
        let took = Duration::from_secs(3);
        assert_eq!(outcome(true, took), "done in 3s");
        assert_eq!(outcome(false, took), "failed after 3s");
    }
}
