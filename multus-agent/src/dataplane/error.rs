//! Errors of the dataplane module; each names the operation and the object it failed on.
use std::{io, path::PathBuf};

use multus_cni::error::PathIoError;

/// A dataplane operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// Loading the embedded eBPF object into the kernel failed.
    #[error("loading the eBPF object (maps pinned under {pin_dir}): {source}")]
    Load {
        /// The map pin directory used.
        pin_dir: PathBuf,
        /// The loader's error.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// The kernel's BTF does not give the offsets the programs need.
    #[error("reading kernel BTF: {0}")]
    Btf(#[source] super::btf::BtfError),
    /// A program could not be found, converted or loaded.
    #[error("program {name}: {source}")]
    Program {
        /// The program's name.
        name: &'static str,
        /// The cause.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map is missing from the object or has the wrong type.
    #[error("map {name}: {source}")]
    Map {
        /// The map's name.
        name: &'static str,
        /// The cause.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The embedded eBPF object is not what this build expects.
    #[error("the eBPF object does not match this build: {0}")]
    ObjectMismatch(&'static str),
    /// A map is not in the eBPF object at all.
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    /// A filesystem operation failed.
    #[error(transparent)]
    Io(PathIoError),
    /// Entering a network namespace failed.
    #[error("entering network namespace {path}: {source}")]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The interface does not exist in the namespace.
    #[error("interface {ifname} not found in network namespace {netns}")]
    NoInterface {
        /// The interface name.
        ifname: String,
        /// The namespace file.
        netns: PathBuf,
    },
    /// The interface is not Ethernet: the programs parse a layer-2 header and would misread
    /// every packet.
    #[error(
        "interface {ifname} in network namespace {netns} has hardware type {hw_type}, not \
         Ethernet (1) or loopback (772): the dataplane parses Ethernet headers only"
    )]
    NotEthernet {
        /// The interface name.
        ifname: String,
        /// The namespace file.
        netns: PathBuf,
        /// Its `ARPHRD_*` type.
        hw_type: u16,
    },
    /// Attaching a program to an interface failed.
    #[error("attaching {program} ({mode}) to {ifname} in {netns}: {source}")]
    Attach {
        /// The program's name.
        program: &'static str,
        /// TCX or clsact.
        mode: super::AttachMode,
        /// The interface name.
        ifname: String,
        /// The namespace file.
        netns: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Pinning a link failed.
    #[error("pinning link at {path}: {source}")]
    Pin {
        /// The pin path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Every attachment id is in use.
    #[error("no free attachment id (limit {0})")]
    IdsExhausted(u32),
    /// The attachment id is not known.
    #[error("attachment {0} not found")]
    UnknownAttachment(u32),
    /// The interface already carries an attachment of this dataplane.
    #[error("interface {ifname} in {netns} is already attached as {id}")]
    AlreadyAttached {
        /// The interface name.
        ifname: String,
        /// The namespace file.
        netns: PathBuf,
        /// The existing attachment's id.
        id: u32,
    },
    /// One batch names the same interface twice.
    #[error("interface {ifname} in {netns} is named twice in one attach")]
    Duplicate {
        /// The interface name.
        ifname: String,
        /// The namespace file.
        netns: PathBuf,
    },
    /// A policy that is invalid or does not fit its trie.
    #[error("invalid policy: {0}")]
    Policy(#[source] crate::policy::model::PolicyError),
    /// A record file could not be parsed.
    #[error("attachment record {path}: {source}")]
    Record {
        /// The record file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Several errors (teardown keeps going and reports them all).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Multiple(Vec<Self>),
}

impl DataplaneError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io(PathIoError::new(op, path, source))
    }
}

/// Result alias of the dataplane module.
pub type Result<T, E = DataplaneError> = std::result::Result<T, E>;
