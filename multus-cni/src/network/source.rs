//! Where the engine learns about pods and networks.
//!
//! The engine is synchronous and calls the source once per lookup. Implementations: the
//! local-files source here (no cluster); a Kubernetes client (blocking calls into a client that
//! owns its runtime, retrying a pod that is not visible yet); the agent's watch caches.
use std::{collections::BTreeMap, path::PathBuf};

use thiserror::Error;

use super::nad::NetworkAttachmentDefinition;
use crate::cni::code;

/// The pod a request is for, from `CNI_ARGS`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PodKey {
    /// `K8S_POD_NAMESPACE`.
    pub namespace: String,
    /// `K8S_POD_NAME`.
    pub name: String,
    /// `K8S_POD_UID`, when the runtime gave it.
    pub uid: Option<String>,
}

/// What the engine needs to know about a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
}

impl PodInfo {
    /// A static pod: its API object is a mirror with a uid of its own (kubelet's is the one in
    /// `CNI_ARGS`).
    pub fn is_static(&self) -> bool {
        self.annotations.contains_key("kubernetes.io/config.mirror")
            || self
                .annotations
                .get("kubernetes.io/config.source")
                .is_some_and(|s| s != "api")
    }
}

/// A lookup that failed. Not-found is not an error: lookups return `None`.
#[derive(Debug, Error)]
pub enum SourceError {
    /// The source cannot answer now (API server down, cache not synced): code 11, so the
    /// runtime retries.
    #[error("{what}: source unavailable, try again later: {reason}")]
    Unavailable {
        /// What was looked up.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The object exists but cannot be used (a malformed file or object): code 7.
    #[error("{what}: {reason}")]
    Invalid {
        /// What was looked up.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read: code 5.
    #[error("{what}: reading {path}: {source}")]
    Io {
        /// What was looked up.
        what: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl SourceError {
    /// The CNI error code.
    pub fn code(&self) -> u32 {
        match self {
            Self::Unavailable { .. } => code::TRY_AGAIN_LATER,
            Self::Invalid { .. } => code::INVALID_CONFIG,
            Self::Io { .. } => code::IO_FAILURE,
        }
    }
}

/// Pod and network lookups for the engine.
pub trait NetworkSource: Send + Sync {
    /// The pod's uid and annotations; `Ok(None)` when the pod does not exist. A Kubernetes
    /// implementation may wait briefly for a pod its cache has not seen yet.
    fn pod(&self, pod: &PodKey) -> Result<Option<PodInfo>, SourceError>;

    /// The NetworkAttachmentDefinition `namespace/name`; `Ok(None)` when it does not exist.
    fn network(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<NetworkAttachmentDefinition>, SourceError>;
}

/// A source that knows no pods and no networks: only inline and on-disk configurations work.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSource;

impl NetworkSource for NoSource {
    fn pod(&self, _pod: &PodKey) -> Result<Option<PodInfo>, SourceError> {
        Ok(None)
    }

    fn network(
        &self,
        _namespace: &str,
        _name: &str,
    ) -> Result<Option<NetworkAttachmentDefinition>, SourceError> {
        Ok(None)
    }
}
