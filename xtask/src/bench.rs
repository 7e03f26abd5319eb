//! `cargo xtask bench <what>`: benchmarks that print numbers and ratios against a baseline run
//! in the same process. Never timed assertions.
use crate::bench_cni;

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// The thin binary's ADD/DEL against a real kube-apiserver, against local files.
    Kube(crate::bench_kube::Args),
    /// multus-cni ADD/DEL latency with 1 and 4 secondary networks, against calling the same
    /// plugins directly.
    Cni(bench_cni::Args),
}

/// Runs the chosen benchmark.
pub fn run(args: &Args) -> anyhow::Result<()> {
    match &args.what {
        What::Kube(a) => crate::bench_kube::run(a),
        What::Cni(a) => bench_cni::run(a),
    }
}
