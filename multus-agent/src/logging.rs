//! The agent's logging: stderr, text or JSON, at a level named like Multus's (`debug`,
//! `verbose`, `error`, `panic`) or given as a tracing filter; `RUST_LOG` wins when set.
use tracing_subscriber::EnvFilter;

/// The tracing filter for a Multus-style level name.
fn filter(level: &str) -> String {
    match level.to_ascii_lowercase().as_str() {
        "panic" => "off".to_owned(),
        "error" => "error".to_owned(),
        "verbose" | "info" => "info".to_owned(),
        // Our crates only: the eBPF loader's relocation notes would drown everything else.
        "debug" => "info,multus_agent=debug,multus_cni=debug,multus_kube=debug".to_owned(),
        other => other.to_owned(),
    }
}

/// Installs the process-wide logger.
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter(level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn multus_level_names() {
        assert_eq!(super::filter("verbose"), "info");
        assert_eq!(super::filter("panic"), "off");
        assert_eq!(super::filter("multus_agent=debug"), "multus_agent=debug");
    }
}
