//! `cargo xtask bench policy`: the policy compiler on a synthetic cluster (10,000 pods and 200
//! MultiNetworkPolicies by default), built in release mode as the agent crate's `policy_bench`
//! example. It prints the time to compile every local attachment, and the time per change when
//! only the attachments the change index reports are recompiled, against recompiling all of
//! them after every change. No root needed; nothing touches the network.
use crate::shell::{Cmd, step};

/// Options of `cargo xtask bench policy`, passed on to the example.
#[derive(clap::Args)]
pub struct Args {
    /// Pods in the cluster.
    #[arg(long, default_value_t = 10_000)]
    pods: u32,
    /// MultiNetworkPolicies.
    #[arg(long, default_value_t = 200)]
    policies: u32,
    /// Local attachments (pods on this node).
    #[arg(long, default_value_t = 110)]
    locals: u32,
    /// Changes replayed, with and without the change index.
    #[arg(long, default_value_t = 200)]
    events: u32,
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
        .args([
            "--pods".to_owned(),
            args.pods.to_string(),
            "--policies".to_owned(),
            args.policies.to_string(),
            "--locals".to_owned(),
            args.locals.to_string(),
            "--events".to_owned(),
            args.events.to_string(),
        ])
        .run()
}
