//! `cargo xtask bench <what>`: benchmarks that print numbers and ratios against a baseline run
//! in the same process. Never timed assertions.
use std::path::Path;

use crate::{bench_cni, bench_kube};

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// multus-cni ADD/DEL latency with 1 and 4 secondary networks, against calling the same
    /// plugins directly.
    Cni(bench_cni::Args),
    /// The thin binary's ADD/DEL against a real kube-apiserver, against local files.
    Kube(bench_kube::Args),
}

/// Runs the chosen benchmark; `apiserver` gives the kube-apiserver for `bench kube`.
pub fn run(
    args: &Args,
    apiserver: impl FnOnce() -> anyhow::Result<std::path::PathBuf>,
) -> anyhow::Result<()> {
    match &args.what {
        What::Cni(a) => bench_cni::run(a),
        What::Kube(a) => bench_kube::run(a, Path::new(&apiserver()?)),
    }
}
