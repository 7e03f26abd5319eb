//! Running system commands with errors that say what ran and what it printed.
use std::{ffi::OsStr, fmt, process::Command};

/// A command that could not run or exited non-zero.
#[derive(Debug)]
pub struct CmdError {
    /// The command line.
    pub command: String,
    /// Exit status, or the spawn error.
    pub status: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` failed ({}): {}",
            self.command,
            self.status,
            self.stderr.trim()
        )
    }
}

impl std::error::Error for CmdError {}

/// Runs `program args...` and returns its stdout; a non-zero exit is an error.
pub fn run<I, S>(program: &str, args: I) -> Result<String, CmdError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let command = std::iter::once(program.to_owned())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(program)
        .args(&args)
        .output()
        .map_err(|e| CmdError {
            command: command.clone(),
            status: e.to_string(),
            stderr: String::new(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(CmdError {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Like [`run`] for test set-up, where a failure should stop the test with the full message.
#[track_caller]
pub fn run_ok<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    match run(program, args) {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    }
}
