//! Errors of the Kubernetes side, classified so the CNI engine can map them to CNI codes.
use std::{fmt, path::PathBuf};

/// What kind of failure an API call ended in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The object does not exist (HTTP 404).
    NotFound,
    /// The credentials are valid but RBAC does not allow the call (HTTP 403).
    Forbidden,
    /// The credentials were rejected: expired, revoked or wrong token (HTTP 401).
    Unauthorized,
    /// The API server could not be reached or did not answer in time, or said it is
    /// overloaded (connect errors, timeouts, 429, 5xx). CNI code 11, "try again later".
    Unavailable,
    /// Optimistic concurrency lost every retry (HTTP 409).
    Conflict,
    /// Anything else: bad configuration, invalid objects, unexpected answers.
    Other,
}

impl ErrorKind {
    /// Whether the caller should report "try again later" (CNI error code 11).
    pub fn is_try_again_later(self) -> bool {
        matches!(self, Self::Unavailable)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotFound => "not found",
            Self::Forbidden => "forbidden",
            Self::Unauthorized => "unauthorized",
            Self::Unavailable => "API server unavailable",
            Self::Conflict => "conflict",
            Self::Other => "failed",
        })
    }
}

/// An error of the client, the API facade or PodResources.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig file could not be read or used.
    #[error("loading kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The in-cluster service account could not be used.
    #[error("in-cluster configuration from {dir}: {message}")]
    InCluster {
        /// The service-account directory.
        dir: PathBuf,
        /// Why.
        message: String,
    },
    /// The bearer token file could not be read.
    #[error("reading token file {path}: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built (TLS settings, proxy).
    #[error("building the Kubernetes client: {source}")]
    Client {
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The facade's internal runtime could not start.
    #[error("starting the Kubernetes client runtime: {source}")]
    Runtime {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Device allocations could not be read (PodResources socket or checkpoint file).
    #[error("{op} {path}: {message}")]
    Devices {
        /// What was attempted.
        op: &'static str,
        /// `Unavailable` when kubelet's socket exists but does not answer (kubelet busy or
        /// restarting), `Other` for a missing source or an unreadable checkpoint.
        kind: ErrorKind,
        /// The socket or file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// An API call failed.
    #[error("{op} {object}: {kind}: {message}")]
    Api {
        /// What was attempted, e.g. "get pod".
        op: &'static str,
        /// The object, e.g. `ns/name`.
        object: String,
        /// The classification.
        kind: ErrorKind,
        /// The server's message or the transport error.
        message: String,
    },
}

impl Error {
    /// The classification the engine maps to a CNI error code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Api { kind, .. } | Self::Devices { kind, .. } => *kind,
            _ => ErrorKind::Other,
        }
    }
}

/// Classifies a kube-rs error and extracts a readable message.
pub(crate) fn classify(err: &kube::Error) -> (ErrorKind, String) {
    match err {
        kube::Error::Api(status) => {
            let kind = match status.code {
                404 => ErrorKind::NotFound,
                403 => ErrorKind::Forbidden,
                401 => ErrorKind::Unauthorized,
                409 => ErrorKind::Conflict,
                429 | 500 | 502 | 503 | 504 => ErrorKind::Unavailable,
                _ => ErrorKind::Other,
            };
            let mut message = if status.message.is_empty() {
                format!("HTTP {} {}", status.code, status.reason)
            } else {
                format!("{} (HTTP {})", status.message, status.code)
            };
            if kind == ErrorKind::Unauthorized {
                // The server says only "Unauthorized"; say what usually causes it.
                message.push_str(
                    ": the API server rejected the credentials (expired or revoked token?)",
                );
            }
            (kind, message)
        }
        // Connection refused or reset, TLS handshake, timeouts: the server is not usable now.
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            (ErrorKind::Unavailable, error_chain(err))
        }
        _ => (ErrorKind::Other, error_chain(err)),
    }
}

/// `err: cause: cause...`, since transport errors hide the useful part in their sources.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
