//! `multus-cni`: the CNI binary a runtime calls, running the engine in-process (thin mode).
use multus_cni::{Engine, cli};

fn main() {
    let code = cli::run(
        |key| std::env::var(key).ok(),
        std::io::stdin().lock(),
        std::io::stdout().lock(),
        |conf| Engine::new(cli::thin_source(conf)),
    );
    std::process::exit(code);
}
