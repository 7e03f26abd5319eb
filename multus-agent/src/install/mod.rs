//! Node install: what the agent DaemonSet runs first on every node (`multus-agent install`).
//!
//! 1. Copies the `multus-cni` binary into the host's CNI bin directory under the name the
//!    generated configuration's `type` needs (`multus` thin, `multus-shim` thick), atomically.
//! 2. Writes the kubeconfig the binary uses, from the pod's service account (when in a pod).
//! 3. Waits until the primary CNI configuration exists (and the readiness indicator file, when
//!    configured), then writes `00-multus.conf` or `00-multus.conflist` from it.
//! 4. With `watch`, keeps both up to date: the configuration follows the primary, the token
//!    copy follows the service account. A removed primary leaves the last configuration in
//!    place, and so does a stop: a missing multus configuration would make kubelet fall back to
//!    the primary alone and start pods without their secondary networks.
pub mod atomic;
pub mod binary;
pub mod cli;
pub mod error;
pub mod generate;
pub mod kubeconfig;
pub mod primary;
pub mod watch;

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use error::{InstallError, Result};
pub use generate::{ConfigOptions, Mode, Rendered};
pub use kubeconfig::{KubeconfigOptions, TokenMode};

use self::{
    primary::{EXTENSIONS, Lookup},
    watch::{Wake, Waker},
};

/// A temp file this old was left by a killed writer.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60);
/// How often a wait that goes on is logged again.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(30);

/// Everything `multus-agent install` does, as data.
#[derive(Debug, Clone)]
pub struct Options {
    /// The host's CNI bin directory.
    pub cni_bin_dir: PathBuf,
    /// The host's CNI configuration directory, where 00-multus goes.
    pub cni_conf_dir: PathBuf,
    /// Where the primary configuration is looked for (normally `cni_conf_dir`).
    pub autoconfig_dir: PathBuf,
    /// A fixed primary file name in `autoconfig_dir` instead of the alphabetically first.
    pub master_cni_file_name: Option<String>,
    /// The binary to install; `None` skips the copy.
    pub multus_bin_file: Option<PathBuf>,
    /// The generated configuration's own keys.
    pub config: ConfigOptions,
    /// The kubeconfig to maintain, when running in a pod.
    pub kubeconfig: Option<KubeconfigOptions>,
    /// Keep running and follow changes.
    pub watch: bool,
    /// Without `watch`: how long to wait for the primary (and readiness file).
    pub primary_wait: Duration,
    /// Longest time between two checks (changes are normally seen at once through inotify).
    pub tick: Duration,
    /// Handle SIGTERM/SIGINT as a clean stop (the binary does; an embedder may not want it).
    pub stop_on_signals: bool,
}

/// Why the configuration cannot be generated yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waiting {
    /// The readiness indicator file does not exist.
    Readiness(PathBuf),
    /// No primary candidate in the directory.
    NoPrimary(PathBuf),
    /// The primary is being written or went away while read.
    Incomplete {
        /// The file.
        path: PathBuf,
        /// What is wrong with it for now.
        reason: String,
    },
}

impl fmt::Display for Waiting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Readiness(p) => write!(f, "readiness indicator file {} is missing", p.display()),
            Self::NoPrimary(dir) => write!(
                f,
                "no primary CNI configuration (*.{}) in {}",
                EXTENSIONS.join(", *."),
                dir.display()
            ),
            Self::Incomplete { path, reason } => {
                write!(f, "primary CNI configuration {}: {reason}", path.display())
            }
        }
    }
}

/// The result of one configuration sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// The configuration matches the primary; `written` when the file was (re)written now.
    Ready {
        /// The multus configuration file.
        file: PathBuf,
        /// The primary it came from.
        primary: PathBuf,
        /// Whether it was written by this sync.
        written: bool,
    },
    /// Nothing to generate from (yet); whatever is on disk stays.
    Waiting(Waiting),
}

/// The node installer; keeps what it last generated from.
#[derive(Debug)]
pub struct Installer {
    opts: Options,
    primary: Option<PathBuf>,
}

impl Installer {
    /// An installer for `opts`.
    pub fn new(opts: Options) -> Self {
        Self {
            opts,
            primary: None,
        }
    }

    /// Fails early and clearly when a host directory is not there (a missing mount).
    pub fn check_dirs(&self) -> Result<()> {
        let mut dirs = vec![("CNI configuration directory", &self.opts.cni_conf_dir)];
        if self.opts.multus_bin_file.is_some() {
            dirs.push(("CNI bin directory", &self.opts.cni_bin_dir));
        }
        for (what, path) in dirs {
            if !path.is_dir() {
                return Err(InstallError::MissingDir {
                    what,
                    path: path.clone(),
                });
            }
        }
        Ok(())
    }

    /// Removes temp files that killed writers left in the directories this installer writes.
    pub fn sweep_temp_files(&self) {
        let mut plans: Vec<(PathBuf, Vec<String>)> = vec![
            (
                self.opts.cni_bin_dir.clone(),
                vec![self.opts.config.mode.plugin_type().to_owned()],
            ),
            (
                self.opts.cni_conf_dir.clone(),
                vec![
                    generate::CONF_FILE.to_owned(),
                    generate::CONFLIST_FILE.to_owned(),
                ],
            ),
        ];
        if let Some(k) = &self.opts.kubeconfig
            && let Some(dir) = k.path.parent()
        {
            let names = [k.path.clone(), k.token_path(), k.ca_path()]
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            plans.push((dir.to_owned(), names));
        }
        for (dir, names) in plans {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            for removed in atomic::sweep(&dir, &names, STALE_TEMP_AGE) {
                tracing::info!(file = %removed.display(), "removed a stale temp file");
            }
        }
    }

    /// Installs the binary (unless skipped).
    pub fn install_binary(&self) -> Result<()> {
        let Some(source) = &self.opts.multus_bin_file else {
            return Ok(());
        };
        let name = self.opts.config.mode.plugin_type();
        let target = self.opts.cni_bin_dir.join(name);
        match binary::install(source, &self.opts.cni_bin_dir, name)? {
            binary::Copied::Installed => {
                tracing::info!(source = %source.display(), target = %target.display(), "installed the CNI binary");
            }
            binary::Copied::Unchanged => {
                tracing::info!(target = %target.display(), "CNI binary already up to date");
            }
        }
        Ok(())
    }

    /// Brings the kubeconfig up to date (when configured).
    pub fn sync_kubeconfig(&self) -> Result<Vec<PathBuf>> {
        let Some(k) = &self.opts.kubeconfig else {
            return Ok(Vec::new());
        };
        let written = k.sync()?;
        for file in &written {
            tracing::info!(file = %file.display(), "wrote kubeconfig file");
        }
        Ok(written)
    }

    /// Generates the multus configuration from the current primary and writes it when it
    /// differs from what is on disk. Nothing is ever deleted except the other-format file
    /// (`.conf` vs `.conflist`) once its replacement is in place.
    pub fn sync_config(&mut self) -> Result<Synced> {
        if let Some(ready) = &self.opts.config.readiness_indicator_file
            && !ready.exists()
        {
            return Ok(Synced::Waiting(Waiting::Readiness(ready.clone())));
        }
        let primary = match primary::lookup(
            &self.opts.autoconfig_dir,
            self.opts.master_cni_file_name.as_deref(),
        )? {
            Lookup::Ready(p) => p,
            Lookup::Missing => {
                return Ok(Synced::Waiting(Waiting::NoPrimary(
                    self.opts.autoconfig_dir.clone(),
                )));
            }
            Lookup::Incomplete { path, reason } => {
                return Ok(Synced::Waiting(Waiting::Incomplete { path, reason }));
            }
        };
        let rendered = generate::render(&primary, &self.opts.config)?;
        let file = self.opts.cni_conf_dir.join(rendered.file_name);
        let written = atomic::read_optional(&file)?.as_deref() != Some(rendered.bytes.as_slice());
        if written {
            atomic::write(&file, &rendered.bytes, 0o600)?;
        }
        if written {
            tracing::info!(file = %file.display(), primary = %primary.path.display(), cni_version = %rendered.cni_version, "wrote the multus configuration");
            self.warn_if_shadowed(&file);
        }
        // Only once the replacement is in place: `00-multus.conf` sorts before
        // `00-multus.conflist`, so a leftover of the other format would be loaded instead.
        let other = match rendered.file_name {
            generate::CONF_FILE => generate::CONFLIST_FILE,
            _ => generate::CONF_FILE,
        };
        let other = self.opts.cni_conf_dir.join(other);
        match multus_cni::files::remove_if_exists(&other) {
            Ok(true) => {
                tracing::info!(removed = %other.display(), replaced_by = %file.display(), "removed the multus configuration of the other format");
            }
            Ok(false) => {}
            Err(e) => return Err(InstallError::io("removing", other, e)),
        }
        self.primary = Some(primary.path.clone());
        Ok(Synced::Ready {
            file,
            primary: primary.path,
            written,
        })
    }

    /// Runtimes load the alphabetically first configuration: say so when that is not ours.
    fn warn_if_shadowed(&self, ours: &Path) {
        let mut names: Vec<_> = fs::read_dir(&self.opts.cni_conf_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| {
                let n = n.to_string_lossy();
                EXTENSIONS.iter().any(|ext| n.ends_with(&format!(".{ext}")))
            })
            .collect();
        names.sort();
        if let Some(first) = names.first()
            && Some(first.as_os_str()) != ours.file_name()
        {
            tracing::warn!(
                first = %first.to_string_lossy(),
                ours = %ours.display(),
                "the container runtime loads the alphabetically first configuration, which is not the multus one; rename it"
            );
        }
    }

    /// Does the whole install; with `watch`, keeps following changes until SIGTERM/SIGINT.
    pub fn run(mut self) -> Result<()> {
        self.check_dirs()?;
        self.sweep_temp_files();
        // Signals are taken over before the first wait, so a stop is always a clean one.
        let mut dirs = vec![
            self.opts.autoconfig_dir.clone(),
            self.opts.cni_conf_dir.clone(),
        ];
        if let Some(k) = &self.opts.kubeconfig {
            dirs.push(k.service_account_dir.clone());
        }
        if let Some(parent) = self
            .opts
            .config
            .readiness_indicator_file
            .as_deref()
            .and_then(Path::parent)
        {
            dirs.push(parent.to_owned());
        }
        let mut waker = Waker::new(&dirs, self.opts.stop_on_signals)?;
        self.install_binary()?;
        self.sync_kubeconfig()?;
        if !self.initial_sync(&mut waker)? {
            return Ok(());
        }
        if !self.opts.watch {
            return Ok(());
        }
        self.follow(&mut waker)
    }

    /// Waits for something to generate from and generates it; `false` when stopped first.
    fn initial_sync(&mut self, waker: &mut Waker) -> Result<bool> {
        let started = Instant::now();
        let mut logged: Option<(Waiting, Instant)> = None;
        loop {
            let waiting = match self.sync_config()? {
                Synced::Ready { .. } => return Ok(true),
                Synced::Waiting(w) => w,
            };
            let waited = started.elapsed();
            if !self.opts.watch && waited >= self.opts.primary_wait {
                return Err(match waiting {
                    Waiting::Readiness(path) => InstallError::ReadinessTimeout { path, waited },
                    Waiting::NoPrimary(dir) => InstallError::PrimaryTimeout {
                        what: Waiting::NoPrimary(dir.clone()).to_string(),
                        dir,
                        waited,
                    },
                    w @ Waiting::Incomplete { .. } => InstallError::PrimaryTimeout {
                        what: w.to_string(),
                        dir: self.opts.autoconfig_dir.clone(),
                        waited,
                    },
                });
            }
            let due = logged
                .as_ref()
                .is_none_or(|(w, at)| *w != waiting || at.elapsed() >= WAIT_LOG_EVERY);
            if due {
                tracing::info!(waited_s = waited.as_secs(), "waiting: {waiting}");
                logged = Some((waiting, Instant::now()));
            }
            let tick = if self.opts.watch {
                self.opts.tick
            } else {
                self.opts.tick.min(self.opts.primary_wait - waited)
            };
            if let Wake::Stop(signal) = waker.wait(tick)? {
                tracing::info!(%signal, "stopped before a multus configuration was generated");
                return Ok(false);
            }
        }
    }

    /// Follows changes until stopped. Failures are logged (once per distinct failure) and the
    /// last good files stay in place.
    fn follow(&mut self, waker: &mut Waker) -> Result<()> {
        tracing::info!(
            "watching for changes of the primary CNI configuration and the service account"
        );
        let mut kube_problem: Option<String> = None;
        let mut conf_problem: Option<String> = None;
        loop {
            if let Wake::Stop(signal) = waker.wait(self.opts.tick)? {
                tracing::info!(%signal, "stopping; the multus configuration stays in place");
                return Ok(());
            }
            let kube = self.sync_kubeconfig().map(drop);
            report(&mut kube_problem, kube, "kubeconfig");
            let conf = self.sync_config().map(|synced| match synced {
                Synced::Waiting(w) => Some(format!(
                    "{w}; keeping the multus configuration generated from {}",
                    self.primary
                        .as_deref()
                        .map_or_else(|| "-".into(), |p| p.display().to_string())
                )),
                Synced::Ready { .. } => None,
            });
            match conf {
                Ok(None) => report(&mut conf_problem, Ok(()), "multus configuration"),
                Ok(Some(waiting)) => {
                    if conf_problem.as_deref() != Some(waiting.as_str()) {
                        tracing::warn!("{waiting}");
                        conf_problem = Some(waiting);
                    }
                }
                Err(e) => report(&mut conf_problem, Err(e), "multus configuration"),
            }
        }
    }
}

/// Logs a failure when it differs from the last one, and the recovery.
fn report(last: &mut Option<String>, result: Result<()>, what: &str) {
    match result {
        Ok(()) => {
            if last.take().is_some() {
                tracing::info!("{what} is in sync again");
            }
        }
        Err(e) => {
            let msg = e.to_string();
            if last.as_deref() != Some(msg.as_str()) {
                tracing::error!("{what} not updated, keeping the last one: {msg}");
                *last = Some(msg);
            }
        }
    }
}
