//! Running a CNI binary the way a runtime does: only the given `CNI_*` variables (none
//! inherited from the test's own environment), the configuration on stdin, and everything it
//! printed kept for the assertions.
use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use serde_json::Value;

/// What a CNI invocation returned.
#[derive(Debug)]
pub struct CniRun {
    /// Exit status (-1 when killed by a signal).
    pub code: i32,
    /// stdout, trimmed.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl CniRun {
    /// Runs `cmd` with exactly `env` as its `CNI_*` variables and `stdin` as its input.
    #[track_caller]
    pub fn invoke(mut cmd: Command, env: &[(&str, &str)], stdin: &[u8]) -> Self {
        for (k, _) in std::env::vars() {
            if k.starts_with("CNI_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin)
                .unwrap_or_else(|e| panic!("writing the stdin of {cmd:?}: {e}"));
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"));
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Asserts success.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "CNI call failed: {self:?}");
        self
    }

    /// The error code of a failed call.
    #[track_caller]
    pub fn error_code(&self) -> u64 {
        assert_ne!(self.code, 0, "expected a failure: {self:?}");
        self.json()["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no code: {self:?}"))
    }
}
