//! The engine's error type. Every variant names what failed and on which object, and maps to
//! the CNI error code the runtime receives.
use std::{io, path::PathBuf};

use thiserror::Error;

use crate::{
    cni::{code, request::EnvError, result::ResultError},
    network::SourceError,
};

/// A file system operation that failed, and on which path: the I/O variant of the engine's
/// and the agent's error types.
#[derive(Debug, Error)]
#[error("{op} {path}: {source}")]
pub struct PathIoError {
    /// What was being done ("reading", "renaming into place", ...).
    pub op: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

impl PathIoError {
    /// `op` failed on `path` with `source`.
    pub fn new(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for the engine's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Something the engine could not do.
#[derive(Debug, Error)]
pub enum Error {
    /// The `CNI_*` environment is missing or invalid.
    #[error("invalid environment: {0}")]
    Env(#[from] EnvError),
    /// A spec version this plugin or a delegate does not support.
    #[error(
        "{context}: CNI version {version:?} is not supported (supported: 0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)"
    )]
    Version {
        /// Where the version came from.
        context: String,
        /// The version given.
        version: String,
    },
    /// The command needs a newer spec version than the configuration declares.
    #[error("{command} needs cniVersion {needs} or newer, the configuration declares {version}")]
    CommandVersion {
        /// The command.
        command: &'static str,
        /// The minimum version.
        needs: &'static str,
        /// The configured version.
        version: String,
    },
    /// Input that is not valid JSON (or YAML) of the expected shape.
    #[error("decoding {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// The parser's message.
        reason: String,
    },
    /// A configuration key with a wrong type or value.
    #[error("invalid configuration: {key}: {reason}")]
    Config {
        /// The key (with a path such as `delegates[1].type` where useful).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A pod annotation that cannot be used.
    #[error("invalid annotation {annotation}: {reason}")]
    Annotation {
        /// The annotation key.
        annotation: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A network that cannot be resolved or used.
    #[error("network {network}: {reason}")]
    Network {
        /// The network (`namespace/name` or a configuration name).
        network: String,
        /// What is wrong.
        reason: String,
    },
    /// A network that does not exist: no NetworkAttachmentDefinition (and, for
    /// `clusterNetwork`/`defaultNetworks`, no file or configuration) of that name.
    #[error("network {network}: {reason}")]
    NetworkNotFound {
        /// The network (`namespace/name` or a configuration name).
        network: String,
        /// What was looked for.
        reason: String,
    },
    /// A request (ips, mac, ...) that no plugin of the network declares as a capability.
    #[error(
        "network {network}: the pod asks for {field} but no plugin of the network declares the \
         capability {capability:?}"
    )]
    Capability {
        /// The network.
        network: String,
        /// The selection field.
        field: &'static str,
        /// The capability a plugin would have to declare.
        capability: &'static str,
    },
    /// An interface name that is invalid or taken.
    #[error("interface {ifname} for network {network}: {reason}")]
    Ifname {
        /// The interface name.
        ifname: String,
        /// The network asking for it.
        network: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A macvlan or ipvlan network whose `master` interface does not exist on this node.
    #[error(
        "network {network}: plugin {plugin}: master interface {master:?} does not exist on this node"
    )]
    MasterNotFound {
        /// The network.
        network: String,
        /// The plugin type.
        plugin: String,
        /// The `master` it names.
        master: String,
    },
    /// The pod or network source failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A delegate plugin binary was not found.
    #[error("network {network}: plugin {plugin:?} not found in {searched}")]
    PluginNotFound {
        /// The network.
        network: String,
        /// The plugin type.
        plugin: String,
        /// The directories searched.
        searched: String,
    },
    /// A delegate plugin could not be run.
    #[error("network {network}: running plugin {plugin}: {source}")]
    Exec {
        /// The network.
        network: String,
        /// The plugin binary.
        plugin: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A delegate plugin reported an error.
    #[error("network {network}: plugin {plugin} {command} failed: {msg}{}", details_suffix(.details))]
    Plugin {
        /// The network.
        network: String,
        /// The plugin type.
        plugin: String,
        /// The command.
        command: &'static str,
        /// The plugin's error code.
        code: u32,
        /// The plugin's message.
        msg: String,
        /// The plugin's details.
        details: String,
    },
    /// A delegate's output was not a valid result.
    #[error("network {network}: plugin {plugin} {command} returned an invalid result: {source}")]
    PluginOutput {
        /// The network.
        network: String,
        /// The plugin type.
        plugin: String,
        /// The command.
        command: &'static str,
        /// The cause.
        #[source]
        source: ResultError,
    },
    /// A file operation failed.
    #[error(transparent)]
    Io(PathIoError),
    /// The container's network namespace cannot be used.
    #[error("network namespace {path}: {reason}")]
    Netns {
        /// The namespace path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A netlink request inside the pod's namespace failed.
    #[error("netlink {op} in {netns}: {reason}")]
    Netlink {
        /// The request.
        op: String,
        /// The namespace path.
        netns: PathBuf,
        /// The kernel's or decoder's message.
        reason: String,
    },
    /// The cluster network is not ready (readiness indicator file missing).
    #[error("the cluster network is not ready: readiness indicator file {path} does not exist")]
    NotReady {
        /// The readiness indicator file.
        path: PathBuf,
        /// The code to report (11 for ADD, 50 for STATUS).
        code: u32,
    },
    /// The container already has cached attachments (ADD twice without DEL).
    #[error("container {container_id} already has attachments cached in {path}; DEL it first")]
    AlreadyAttached {
        /// The container.
        container_id: String,
        /// The cache file.
        path: PathBuf,
    },
    /// CHECK on a container the plugin has no record of.
    #[error("container {container_id}: no cached attachments in {path}")]
    UnknownContainer {
        /// The container.
        container_id: String,
        /// Where the cache should be.
        path: PathBuf,
    },
    /// The embedding application's hook refused or failed.
    #[error("{stage} hook failed: {message}")]
    Hook {
        /// `after ADD` or `DEL`.
        stage: &'static str,
        /// The CNI code to report.
        code: u32,
        /// What went wrong.
        message: String,
    },
    /// Several errors (DEL and GC try everything and report all).
    #[error("{}", join_errors(.0))]
    Many(Vec<Self>),
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

fn join_errors(errors: &[Error]) -> String {
    let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!("{} errors: {}", errors.len(), parts.join("; "))
}

impl Error {
    /// The CNI error code for the runtime.
    pub fn code(&self) -> u32 {
        match self {
            Self::Env(_) => code::INVALID_ENV,
            Self::Version { .. } | Self::CommandVersion { .. } => code::INCOMPATIBLE_VERSION,
            Self::Decode { .. } | Self::PluginOutput { .. } => code::DECODING_FAILURE,
            Self::Config { .. }
            | Self::Annotation { .. }
            | Self::Network { .. }
            | Self::NetworkNotFound { .. }
            | Self::Capability { .. }
            | Self::Ifname { .. }
            | Self::MasterNotFound { .. }
            | Self::PluginNotFound { .. }
            | Self::AlreadyAttached { .. } => code::INVALID_CONFIG,
            Self::Source(e) => e.code(),
            Self::Exec { .. } | Self::Io(_) | Self::Netlink { .. } => code::IO_FAILURE,
            Self::Netns { .. } | Self::UnknownContainer { .. } => code::UNKNOWN_CONTAINER,
            Self::Plugin { code, .. } | Self::NotReady { code, .. } | Self::Hook { code, .. } => {
                *code
            }
            Self::Many(errors) => errors.first().map_or(code::IO_FAILURE, Self::code),
        }
    }

    /// A configuration error on `key`.
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// A network error.
    pub fn network(network: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Network {
            network: network.into(),
            reason: reason.into(),
        }
    }

    /// An I/O error on `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io(PathIoError::new(op, path, source))
    }

    /// A decoding error.
    pub fn decode(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self::Decode {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
