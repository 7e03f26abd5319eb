//! `cargo xtask bench <what>`: benchmarks that print numbers and ratios against a baseline
//! measured in the same run. Nothing here asserts timings.
mod dataplane;

use clap::Subcommand;

/// What to measure.
#[derive(Subcommand)]
pub enum Bench {
    /// The eBPF dataplane against no program and against iptables, between two pods on macvlan.
    Dataplane(dataplane::Args),
}

/// Runs the chosen bench.
pub fn run(bench: &Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Dataplane(args) => dataplane::run(args),
    }
}
