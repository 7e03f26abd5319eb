//! What node install can fail on; every variant names the file or option involved.
use std::{path::PathBuf, time::Duration};

use multus_cni::error::PathIoError;

/// A node install failure.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// A file system operation failed.
    #[error(transparent)]
    Io(PathIoError),
    /// A directory the install needs does not exist (usually a missing host mount).
    #[error("{what} {} does not exist or is not a directory", path.display())]
    MissingDir {
        /// Which directory ("CNI bin directory", ...).
        what: &'static str,
        /// Its path.
        path: PathBuf,
    },
    /// The primary CNI configuration cannot be used.
    #[error("primary CNI configuration {}: {reason}", path.display())]
    Primary {
        /// The primary's file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The CNI versions of the primary and of the multus configuration do not fit together.
    #[error("primary CNI configuration {}: {reason}", path.display())]
    Version {
        /// The primary's file.
        path: PathBuf,
        /// What does not fit, and what to do about it.
        reason: String,
    },
    /// An option has a value that cannot work.
    #[error("{option}: {reason}")]
    Option {
        /// The option's flag name.
        option: &'static str,
        /// Why.
        reason: String,
    },
    /// Nothing to generate from within the bounded wait.
    #[error(
        "no primary CNI configuration ({what}) appeared in {} within {waited:?}; \
         is the cluster network's CNI installed on this node?",
        dir.display()
    )]
    PrimaryTimeout {
        /// The directory searched.
        dir: PathBuf,
        /// The file looked for.
        what: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The readiness indicator file did not appear within the bounded wait.
    #[error("readiness indicator file {} did not appear within {waited:?}", path.display())]
    ReadinessTimeout {
        /// The file.
        path: PathBuf,
        /// How long it waited.
        waited: Duration,
    },
    /// The kubeconfig cannot be built.
    #[error("kubeconfig {}: {reason}", path.display())]
    Kubeconfig {
        /// The kubeconfig being written.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Watching for changes (inotify, signals, poll) failed.
    #[error("{op}: {source}")]
    Watch {
        /// What was being set up or waited on.
        op: String,
        /// The OS error.
        source: nix::Error,
    },
}

impl InstallError {
    /// An I/O error on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io(PathIoError::new(op, path, source))
    }
}

/// Results of this module.
pub type Result<T, E = InstallError> = std::result::Result<T, E>;
