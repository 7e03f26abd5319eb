//! `multus-cni`: the CNI binary a runtime calls, running the engine in-process (thin mode).
use multus_cni::cli;

fn main() {
    let code = cli::run(
        |key| std::env::var(key).ok(),
        std::io::stdin().lock(),
        std::io::stdout().lock(),
        cli::thin_engine,
    );
    std::process::exit(code);
}
