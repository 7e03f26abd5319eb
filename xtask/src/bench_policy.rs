//! `cargo xtask bench policy`: the policy compiler on a synthetic cluster (10,000 pods and 200
//! MultiNetworkPolicies by default), built in release mode as the agent crate's `policy_bench`
//! example. It prints the time to compile every local attachment, and the time per change when
//! only the attachments the change index reports are recompiled, against recompiling all of
//! them after every change. No root needed; nothing touches the network.
use crate::shell::{Cmd, step};

/// Options of `cargo xtask bench policy`: passed on to the example (`--pods`, `--policies`,
/// `--locals`, `--events`; `-- --help` lists them).
#[derive(clap::Args)]
pub struct Args {
    /// Options for the example.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    options: Vec<String>,
}

/// Builds and runs the benchmark.
pub fn run(args: &Args) -> anyhow::Result<()> {
    step("bench policy: the compiler on a synthetic cluster");
    Cmd::new("cargo")
        .args([
            "run",
            "--release",
            "--quiet",
            "--package",
            "multus-agent",
            "--example",
            "policy_bench",
            "--",
        ])
        .args(&args.options)
        .run()
}
