//! kubectl, as a user runs it, against the cluster's admin kubeconfig.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// kubectl with a kubeconfig.
#[derive(Debug, Clone)]
pub struct Kubectl {
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// kubectl using `kubeconfig`.
    pub fn new(kubeconfig: &Path) -> Self {
        Self {
            kubeconfig: kubeconfig.to_owned(),
        }
    }

    /// The kubeconfig it uses.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs `kubectl ARGS` (with `input` on stdin); returns stdout, or fails with stderr.
    pub fn run_with(&self, args: &[&str], input: Option<&str>) -> anyhow::Result<String> {
        let shown = format!("kubectl {}", args.join(" "));
        let mut child = Command::new("kubectl")
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {shown}"))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .with_context(|| format!("writing to {shown}"))?;
        }
        let out = child
            .wait_with_output()
            .with_context(|| format!("running {shown}"))?;
        if !out.status.success() {
            bail!(
                "`{shown}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl ARGS`, echoed like the demo echoes its commands (an argument with blanks or
    /// newlines quoted, so the line can be pasted into a shell).
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let shown: Vec<String> = args
            .iter()
            .map(|a| {
                if a.contains(char::is_whitespace) {
                    format!(
                        "$'{}'",
                        a.replace('\\', "\\\\")
                            .replace('\'', "\\'")
                            .replace('\n', "\\n")
                    )
                } else {
                    (*a).to_owned()
                }
            })
            .collect();
        crate::shell::note(&format!("$ kubectl {}", shown.join(" ")));
        self.run_with(args, None)
    }

    /// `kubectl ARGS` quietly (polls and dumps).
    pub fn quiet(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run_with(args, None)
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let out = self.run_with(&all, None)?;
        serde_json::from_str(&out).with_context(|| format!("parsing kubectl {}", all.join(" ")))
    }
}
