//! Where the agent's engine learns about pods and networks, and where network-status and pod
//! Events go.
//!
//! - [`kube`]: watch caches (pods of this node, trimmed; NADs; namespaces) over the API server,
//!   with a live GET when the cache has not seen an object yet; network-status and Events are
//!   published by the engine's `KubePublisher`, the same as thin mode's.
//! - [`standalone`]: NAD and pod files in a local directory the agent watches (no cluster);
//!   network-status is logged.
//!
//! Both publish a generation number that grows on every change they see, for whoever needs to
//! react to changes (policy updates).
pub mod kube;
pub mod standalone;

use std::sync::Arc;

use multus_cni::{NetworkSource, engine::Publisher};
use tokio::sync::watch;

/// Whether a pod is scheduled to this node: `None` while that is not known yet.
pub trait PodPlacement: Send + Sync {
    /// `Some(true)` when the pod `namespace/name` is on this node, `Some(false)` when it is
    /// not, `None` while the pod cache has not synced.
    fn on_this_node(&self, namespace: &str, name: &str) -> Option<bool>;
}

/// A running source.
pub struct AgentSource {
    /// Lookups for the engine.
    pub network: Arc<dyn NetworkSource>,
    /// Where network-status and pod Events go (the engine's publisher).
    pub publisher: Arc<dyn Publisher>,
    /// Pod placement (Kubernetes mode only: in standalone mode any pod may be unlisted).
    pub placement: Option<Arc<dyn PodPlacement>>,
    /// `true` once every cache has synced.
    pub synced: watch::Receiver<bool>,
    /// Grows with every change seen.
    pub changes: watch::Receiver<u64>,
}

impl std::fmt::Debug for AgentSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSource")
            .field("synced", &*self.synced.borrow())
            .field("changes", &*self.changes.borrow())
            .finish_non_exhaustive()
    }
}
