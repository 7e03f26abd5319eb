//! `cargo xtask bench <what>`: benchmarks that print numbers and ratios against a baseline run
//! in the same process. Never timed assertions.
use crate::{bench_agent, bench_cni, bench_dataplane, bench_kube, bench_policy};

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(clap::Subcommand)]
enum What {
    /// The thin binary's ADD/DEL against a real kube-apiserver, against local files.
    Kube(bench_kube::Args),
    /// multus-cni ADD/DEL latency with 1 and 4 secondary networks, against calling the same
    /// plugins directly.
    Cni(bench_cni::Args),
    /// The eBPF dataplane against no program and against iptables with the same rules, between
    /// two pods on macvlan.
    Dataplane(bench_dataplane::Args),
    /// Thick mode: ADD latency through shim + agent against thin mode, agent RSS with 500
    /// attachments, /metrics scrape time with 1,000.
    Agent(bench_agent::Args),
    /// The policy compiler on a synthetic cluster: recompiling what the change index reports,
    /// against recompiling every attachment after each change.
    Policy(bench_policy::Args),
}

/// Runs the chosen benchmark.
pub fn run(args: &Args) -> anyhow::Result<()> {
    match &args.what {
        What::Kube(a) => bench_kube::run(a),
        What::Cni(a) => bench_cni::run(a),
        What::Dataplane(a) => bench_dataplane::run(a),
        What::Agent(a) => bench_agent::run(a),
        What::Policy(a) => bench_policy::run(a),
    }
}
