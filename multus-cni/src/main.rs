//! `multus-cni`: the CNI binary a runtime calls, running the engine in-process (thin mode).
use multus_cni::cli;

fn main() {
    // Runtimes never pass arguments: this is an operator asking which shim the node has.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "--version" || a == "-V")
    {
        println!("multus-cni {}", multus_cni::build_info::VERSION_LINE);
        return;
    }
    // One malloc arena: the few short-lived threads of a CNI call would each map and tear down
    // an arena of their own. (glibc only: musl's malloc has no arenas.)
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a malloc tunable; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let code = cli::run(
        |key| std::env::var(key).ok(),
        std::io::stdin().lock(),
        std::io::stdout().lock(),
        cli::thin_engine,
    );
    std::process::exit(code);
}
