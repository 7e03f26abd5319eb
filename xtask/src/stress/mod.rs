//! `cargo xtask stress`: an operator's bad day on one node, as the demo builds it (the release
//! `multus-agent` in a node namespace, the release `multus-cni` shim, Debian's plugins), in
//! standalone mode over local files and in Kubernetes mode against the test kube-apiserver:
//!
//! 1. thick ADD/DEL cycles, one new pod each (`--cycles`), the agent's RSS sampled; over the
//!    second half a fitted slope must be flat (a plateau, not a leak);
//! 2. bursts of 40 and 80 concurrent ADDs, then their DELs;
//! 3. kill -9 of the agent in the middle of a burst, restarted at once; every failed ADD is
//!    DEL'd and retried, as kubelet does;
//! 4. the agent down: DEL through the shim's fallback, then the agent's start finishes the job;
//! 5. malformed inputs, each expecting its CNI code and leaving nothing.
//!
//! After each step nothing may be left: no lease, interface, pin, map entry, cache, record or
//! temp file. It prints its figures and ends with `N passed, M failed`.
mod node;
mod pods;
mod scenarios;

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::shell::{Cmd, is_root, note, step};

/// Options of `cargo xtask stress`.
#[derive(clap::Args)]
pub struct Args {
    /// ADD/DEL cycles per mode (the RSS plateau is judged over the second half).
    #[arg(long, default_value_t = 1000)]
    pub cycles: usize,
    /// Which modes: `standalone`, `kubernetes` or `both`.
    #[arg(long, default_value = "both")]
    pub mode: String,
    /// kill -9 rounds of the agent in the middle of a burst.
    #[arg(long, default_value_t = 3)]
    pub kill_rounds: usize,
    /// Run the debug binaries (those `cargo test` builds) instead of building release ones.
    #[arg(long)]
    pub debug: bool,
}

/// Passed and failed checks, and what failed.
#[derive(Default)]
pub struct Tally {
    passed: usize,
    failed: usize,
}

impl Tally {
    /// Counts one check; a failure is printed at once.
    pub fn check(&mut self, what: &str, ok: bool, detail: impl FnOnce() -> String) {
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
            note(&format!("FAILED {what}: {}", detail()));
        }
    }
}

/// Runs the stress scenario.
pub fn run(args: &Args) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the stress run creates network namespaces and loads eBPF: run it as root");
    }
    if args.cycles < 10 {
        bail!("--cycles must be at least 10");
    }
    let (standalone, kubernetes) = match args.mode.as_str() {
        "standalone" => (true, false),
        "kubernetes" => (false, true),
        "both" => (true, true),
        other => bail!("--mode {other:?}: expected standalone, kubernetes or both"),
    };
    let profile = if args.debug { "debug" } else { "release" };
    step(&format!("building multus-cni and multus-agent ({profile})"));
    let mut build = Cmd::new("cargo").args([
        "build",
        "--package",
        "multus-cni",
        "--package",
        "multus-agent",
    ]);
    if !args.debug {
        build = build.args(["--release"]);
    }
    build.run()?;
    let started = Instant::now();
    let mut tally = Tally::default();
    if standalone {
        let pods = pods::LocalPods::new();
        scenarios::run_mode("standalone", &pods, args, &mut tally)?;
    }
    if kubernetes {
        crate::apiserver::ensure()?;
        let Some(pods) = pods::KubePods::new()? else {
            bail!("the test kube-apiserver did not start");
        };
        scenarios::run_mode("kubernetes", &pods, args, &mut tally)?;
    }
    note(&format!(
        "stress took {:.0?}",
        Duration::from_secs(started.elapsed().as_secs())
    ));
    println!("{} passed, {} failed", tally.passed, tally.failed);
    if tally.failed > 0 {
        bail!("{} stress checks failed", tally.failed);
    }
    Ok(())
}
