//! `cargo xtask test`: formatting, the two clippy passes an aya workspace needs, every test, and
//! the end-to-end run on a real one-node Kubernetes (`cargo xtask e2e`).
use std::path::Path;

use crate::shell::{Cmd, step};

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub struct Args {
    /// Only run tests whose name contains this (formatting and clippy still run).
    filter: Option<String>,
}

/// Runs the suite; the first failing stage stops it.
/// `apiserver` is the kube-apiserver binary the Kubernetes tests start.
pub fn run(args: &Args, apiserver: &Path) -> anyhow::Result<()> {
    step("rustfmt");
    Cmd::new("cargo")
        .args(["fmt", "--all", "--", "--check"])
        .run()?;

    // Two passes: linting the eBPF crate together with the rest unifies features and compiles its
    // panic handler twice (aya-template does the same split).
    step("clippy: host crates");
    Cmd::new("cargo")
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "multus-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
        .run()?;
    step("clippy: eBPF crate, for the bpf target");
    Cmd::new("cargo")
        .args([
            "clippy",
            "--package",
            "multus-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
            "--",
            "-D",
            "warnings",
        ])
        // The pinned stable toolchain builds `core` for bpf targets only with this set.
        .env("RUSTC_BOOTSTRAP", "1")
        .run()?;

    step("tests (root tests included)");
    let mut test = Cmd::new("cargo")
        .args(["test", "--workspace", "--no-fail-fast"])
        .env(multus_testkit::cache::APISERVER_VAR, apiserver);
    if let Some(filter) = &args.filter {
        test = test.args(["--", filter.as_str()]);
    }
    test.run()?;
    // A filter picks tests; the stress run and the end-to-end run are not ones.
    if args.filter.is_some() {
        return Ok(());
    }
    // The full run (`cargo xtask stress`, 1000 cycles) takes longer than the suite should.
    step("stress, short: 100 cycles, one kill -9 round, both modes, debug binaries");
    crate::stress::run(&crate::stress::Args {
        cycles: 100,
        mode: "both".to_owned(),
        kill_rounds: 1,
        debug: true,
    })?;
    if !crate::shell::is_root()
        && std::env::var(multus_testkit::root::ALLOW_SKIP_VAR).is_ok_and(|v| v == "1")
    {
        step("SKIPPED end-to-end run: it needs root");
        return Ok(());
    }
    crate::e2e::run_all()
}
