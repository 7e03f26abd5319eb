//! Logging for the CNI binary: `logFile` and/or stderr (`logToStderr`) at `logLevel`, never
//! stdout. The log file is rotated by size (`logOptions.maxSize`, `maxBackups`) when opened and
//! whenever a write would take it past the limit; the agent's `logFile` uses the same
//! [`RotatingFile`] and [`LogSink`].
use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{LogLevel, LogOptions, NetConf};

/// A log file rotated by size: `path` is renamed to `path.1` (and `path.1` to `path.2`, up to
/// `maxBackups`) when it reached `maxSize` MB, at opening and before a write that would pass it.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    opts: LogOptions,
    file: File,
    size: u64,
}

impl RotatingFile {
    /// Opens `path` for appending (creating its directory), rotating it first when it is full.
    pub fn open(path: &Path, opts: &LogOptions) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if std::fs::metadata(path).is_ok_and(|m| limit(opts).is_some_and(|l| m.len() >= l)) {
            rotate(path, opts);
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            opts: opts.clone(),
            file,
            size,
        })
    }

    /// Appends `buf` (one log line), rotating first when it would take the file past the
    /// limit.
    pub fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let len = buf.len() as u64;
        if self.size > 0 && limit(&self.opts).is_some_and(|l| self.size + len > l) {
            rotate(&self.path, &self.opts);
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.size = 0;
        }
        self.file.write_all(buf)?;
        self.size += len;
        Ok(())
    }
}

/// `maxSize` in bytes; `None`: never rotate.
fn limit(opts: &LogOptions) -> Option<u64> {
    Some(opts.max_size.saturating_mul(1024 * 1024)).filter(|l| *l > 0)
}

/// Shifts `path.N` to `path.N+1` up to `maxBackups` and `path` to `path.1` (or removes `path`
/// when no backups are kept). Best effort: a failed rename leaves the file growing.
fn rotate(path: &Path, opts: &LogOptions) {
    if opts.max_backups == 0 {
        let _ = std::fs::remove_file(path);
    } else {
        for n in (1..opts.max_backups).rev() {
            let _ = std::fs::rename(backup(path, n), backup(path, n + 1));
        }
        let _ = std::fs::rename(path, backup(path, 1));
    }
}

/// Where log lines go: stderr, a [`RotatingFile`], both or neither.
#[derive(Debug)]
pub struct LogSink {
    stderr: bool,
    file: Option<Mutex<RotatingFile>>,
}

impl LogSink {
    /// A sink writing to stderr when `stderr`, and to `file` when given.
    pub fn new(stderr: bool, file: Option<RotatingFile>) -> Self {
        Self {
            stderr,
            file: file.map(Mutex::new),
        }
    }

    /// The `tracing_subscriber` writer over this sink.
    pub fn into_make_writer(self) -> impl for<'a> MakeWriter<'a> + Send + Sync + 'static {
        SharedSink(Arc::new(self))
    }
}

/// A writer over a [`LogSink`], one per log event.
struct SinkWriter<'a>(&'a LogSink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.0.stderr {
            let _ = io::stderr().write_all(buf);
        }
        if let Some(file) = &self.0.file
            && let Ok(mut f) = file.lock()
        {
            let _ = f.append(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct SharedSink(Arc<LogSink>);

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
    install(LogSink::new(conf.log_to_stderr, file), level);
    // The fallback level logs nothing, so this one line goes to stderr directly.
    if let Some(unknown) = &conf.unknown_log_level
        && conf.log_to_stderr
    {
        eprintln!("logLevel {unknown:?} is not one of debug, verbose, error, panic; using panic");
    }
}

/// Installs an error-level stderr logger, for failures before the configuration is known.
pub fn init_fallback() {
    install(LogSink::new(true, None), LevelFilter::ERROR);
}

fn install(sink: LogSink, level: LevelFilter) {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(sink.into_make_writer())
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
fn open_rotated(path: &Path, opts: &LogOptions) -> Option<RotatingFile> {
    match RotatingFile::open(path, opts) {
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
        assert_eq!(f.size, 0);
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 0);
        assert_eq!(std::fs::read_to_string(backup(&log, 2)).unwrap(), "old");
        assert_eq!(
            std::fs::metadata(backup(&log, 1)).unwrap().len(),
            2 * 1024 * 1024
        );
    }

    #[test]
    fn rotates_while_writing_and_keeps_max_backups() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("sub").join("agent.log");
        let opts = LogOptions {
            max_size: 1,
            max_backups: 2,
            ..LogOptions::default()
        };
        let mut f = RotatingFile::open(&log, &opts).unwrap();
        let line = vec![b'y'; 300 * 1024];
        // 4 lines of 300 KiB fill 1 MiB three times over: rotations after lines 3, 6, 9.
        for _ in 0..10 {
            f.append(&line).unwrap();
        }
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        assert_eq!(size(&log), 300 * 1024);
        assert_eq!(size(&backup(&log, 1)), 900 * 1024);
        assert_eq!(size(&backup(&log, 2)), 900 * 1024);
        assert!(!backup(&log, 3).exists(), "only maxBackups old files");
    }
}
