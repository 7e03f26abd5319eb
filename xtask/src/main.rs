//! `cargo xtask`: the project's automation. Every command first makes sure the machine has what
//! it needs (see [`prereqs`]), so a fresh machine needs nothing but this repository and rustup.
mod agent_node;
mod apiserver;
mod bench;
mod bench_agent;
mod bench_cni;
mod bench_dataplane;
mod bench_kube;
mod bench_policy;
mod containerd_conf;
mod demo;
mod e2e;
mod fuzz;
mod image;
mod manifests;
#[cfg(test)]
mod modgraph;
mod oci;
mod prereqs;
mod shell;
mod static_build;
mod stress;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, test and demo the multus workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing (Debian packages, toolchain components, bpf-linker, bpffs).
    Setup,
    /// The whole suite: rustfmt, clippy (two passes), every test including the root ones.
    Test(test::Args),
    /// The local demo.
    Demo,
    /// A real one-node Kubernetes (built on the first run), and the product run on it as a user
    /// runs it: `kubectl apply -f deploy/`, the quickstart, policy, metrics, restart, uninstall.
    E2e,
    /// Regenerate the generated manifests in deploy/ (CRDs, the agent ConfigMap).
    Manifests,
    /// Build (first run only) and print the cached kube-apiserver the Kubernetes tests use.
    KubeApiserver,
    /// Benchmarks that print numbers against an in-process baseline (`bench cni`, `bench dataplane`, `bench policy`).
    Bench(bench::Args),
    /// Fuzz multus-cni's parsers with cargo-fuzz (installed when missing).
    Fuzz(fuzz::Args),
    /// A node's bad day: ADD/DEL cycles with the agent's RSS, bursts, kill -9 of the agent,
    /// the agent down, malformed inputs; nothing may be left (standalone and Kubernetes mode).
    Stress(stress::Args),
    /// Write the agent image as an OCI archive (static binaries; no container engine, no network).
    Image(image::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let started = std::time::Instant::now();
    let result = match cli.command {
        Command::Setup => prereqs::ensure(),
        // All four Kubernetes binaries in one build on a fresh machine: the tests need the API
        // server, the end-to-end run the others too.
        Command::Test(args) => prereqs::ensure()
            .and_then(|()| apiserver::ensure_all())
            .and_then(|apiserver| test::run(&args, &apiserver)),
        Command::Demo => prereqs::ensure().and_then(|()| demo::run()),
        Command::E2e => prereqs::ensure().and_then(|()| e2e::run_all()),
        Command::Manifests => manifests::run(),
        Command::KubeApiserver => apiserver::ensure().map(|path| println!("{}", path.display())),
        Command::Bench(args) => prereqs::ensure().and_then(|()| bench::run(&args)),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Stress(args) => prereqs::ensure().and_then(|()| stress::run(&args)),
        Command::Image(args) => prereqs::ensure().and_then(|()| image::run(&args)),
    };
    shell::step(&shell::outcome(result.is_ok(), started.elapsed()));
    result
}
