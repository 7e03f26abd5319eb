//! Logging for the CNI binary: `logFile` and/or stderr (`logToStderr`) at `logLevel`, never
//! stdout. The log file is rotated by size (`logOptions.maxSize`, `maxBackups`) when opened.
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogLevel, LogOptions, NetConf};

/// Where log lines go.
struct Sink {
    stderr: bool,
    file: Option<Mutex<File>>,
}

/// A writer over a [`Sink`], one per log event.
struct SinkWriter<'a>(&'a Sink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.stderr {
            let _ = io::stderr().write_all(buf);
        }
        if let Some(file) = &self.0.file
            && let Ok(mut f) = file.lock()
        {
            let _ = f.write_all(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct SharedSink(Arc<Sink>);

impl<'a> MakeWriter<'a> for SharedSink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(&self.0)
    }
}

fn level(l: LogLevel) -> LevelFilter {
    match l {
        LogLevel::Panic => LevelFilter::OFF,
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Verbose => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
    }
}

/// Installs the process-wide logger for `conf`. Later calls do nothing.
pub fn init(conf: &NetConf) {
    let level = level(conf.log_level);
    // Nothing is logged at `panic`: no file to open (and rotate) on every call.
    let file = conf
        .log_file
        .as_deref()
        .filter(|_| level != LevelFilter::OFF)
        .and_then(|p| open_rotated(p, &conf.log_options));
    let sink = Sink {
        stderr: conf.log_to_stderr,
        file: file.map(Mutex::new),
    };
    install(sink, level);
    // The fallback level logs nothing, so this one line goes to stderr directly.
    if let Some(unknown) = &conf.unknown_log_level
        && conf.log_to_stderr
    {
        eprintln!("logLevel {unknown:?} is not one of debug, verbose, error, panic; using panic");
    }
}

/// Installs an error-level stderr logger, for failures before the configuration is known.
pub fn init_fallback() {
    install(
        Sink {
            stderr: true,
            file: None,
        },
        LevelFilter::ERROR,
    );
}

fn install(sink: Sink, level: LevelFilter) {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(SharedSink(Arc::new(sink)))
        .with_max_level(level)
        .with_ansi(false)
        .with_target(false)
        .finish();
    let _ = tracing::subscriber::set_global_default(subscriber);
}

fn backup(path: &Path, n: u64) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Opens `path` for appending, first rotating it when it reached `maxSize` MB.
fn open_rotated(path: &Path, opts: &LogOptions) -> Option<File> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let limit = opts.max_size.saturating_mul(1024 * 1024);
    if limit > 0 && std::fs::metadata(path).is_ok_and(|m| m.len() >= limit) {
        if opts.max_backups == 0 {
            let _ = std::fs::remove_file(path);
        } else {
            for n in (1..opts.max_backups).rev() {
                let _ = std::fs::rename(backup(path, n), backup(path, n + 1));
            }
            let _ = std::fs::rename(path, backup(path, 1));
        }
    }
    match OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => Some(f),
        Err(e) => {
            // stderr is the only place left to say it.
            eprintln!("multus-cni: cannot open logFile {}: {e}", path.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_when_large() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("multus.log");
        std::fs::write(&log, vec![b'x'; 2 * 1024 * 1024]).unwrap();
        std::fs::write(backup(&log, 1), "old").unwrap();
        let opts = LogOptions {
            max_size: 1,
            max_backups: 2,
            ..LogOptions::default()
        };
        let f = open_rotated(&log, &opts).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 0);
        assert_eq!(std::fs::read_to_string(backup(&log, 2)).unwrap(), "old");
        assert_eq!(
            std::fs::metadata(backup(&log, 1)).unwrap().len(),
            2 * 1024 * 1024
        );
    }
}
