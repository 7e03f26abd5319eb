//! `cargo xtask`: the project's automation. Every command first makes sure the machine has what
//! it needs (see [`prereqs`]), so a fresh machine needs nothing but this repository and rustup.
mod bench;
mod bench_dataplane;
mod demo;
mod prereqs;
mod shell;
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
    /// Benchmarks that print numbers against an in-process baseline (`bench dataplane`).
    Bench(bench::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let started = std::time::Instant::now();
    let result = match cli.command {
        Command::Setup => prereqs::ensure(),
        Command::Test(args) => prereqs::ensure().and_then(|()| test::run(&args)),
        Command::Demo => prereqs::ensure().and_then(|()| demo::run()),
        Command::Bench(args) => prereqs::ensure().and_then(|()| bench::run(&args)),
    };
    shell::step(&format!("done in {:.0?}", started.elapsed()));
    result
}
