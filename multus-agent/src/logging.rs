//! The agent's logging: stderr (`logToStderr`) and/or `logFile` (rotated by size with
//! `logOptions`, by the CNI binary's own [`RotatingFile`]), text or JSON, at a level named like
//! Multus's (`debug`, `verbose`, `error`, `panic`) or given as a tracing filter; `RUST_LOG` wins
//! when set.
use std::path::Path;

use multus_cni::{
    cli::logging::{LogSink, RotatingFile},
    config::LogOptions,
};
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

/// Where the log goes: stderr and/or a file rotated by size.
#[derive(Debug, Clone)]
pub struct Destination<'a> {
    /// `logToStderr`.
    pub stderr: bool,
    /// `logFile` with its `logOptions`.
    pub file: Option<(&'a Path, &'a LogOptions)>,
}

/// Installs the process-wide logger. A log file that cannot be opened is said on stderr and
/// the log goes to stderr instead.
pub fn init(level: &str, json: bool, to: &Destination<'_>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter(level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let file = to
        .file
        .and_then(|(path, opts)| match RotatingFile::open(path, opts) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("multus-agent: cannot open logFile {}: {e}", path.display());
                None
            }
        });
    // Nothing may be lost: without a file, stderr whatever logToStderr says.
    let stderr = to.stderr || file.is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogSink::new(stderr, file).into_make_writer())
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
